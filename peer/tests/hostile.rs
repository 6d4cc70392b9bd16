//! Hostile input: garbage, wrong versions, oversized messages and escaping
//! paths sent to the tracker's and a peer's sockets; a holder that serves
//! bad blocks. Every process keeps serving and nothing is written outside
//! a peer's folder.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

mod common;

use std::fs;
use std::io::Write;
use std::time::Duration;

use common::*;
use serde::Serialize;
use zync_proto::{
    decode, encode, ErrorKind, FileEntry, Hash, PeerReply, PeerRequest, RelPath, TrackerReply,
    TrackerRequest, VersionVector, BLOCK_SIZE,
};

fn req_socket(ctx: &zmq::Context, endpoint: &str) -> zmq::Socket {
    let s = ctx.socket(zmq::REQ).unwrap();
    s.set_linger(0).unwrap();
    s.set_rcvtimeo(3000).unwrap();
    s.connect(endpoint).unwrap();
    s
}

fn ask(ctx: &zmq::Context, endpoint: &str, bytes: &[u8]) -> Vec<u8> {
    let s = req_socket(ctx, endpoint);
    s.send(bytes, 0).unwrap();
    s.recv_bytes(0).expect("a reply, not silence")
}

fn tracker_error(bytes: &[u8]) -> ErrorKind {
    match decode::<TrackerReply>(bytes).unwrap() {
        TrackerReply::Error { kind, .. } => kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn peer_error(bytes: &[u8]) -> ErrorKind {
    match decode::<PeerReply>(bytes).unwrap() {
        PeerReply::Error { kind, .. } => kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A raw Register whose file path is whatever we like (bypassing RelPath).
fn raw_register(path: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct RawEntry<'a> {
        path: &'a str,
        size: u64,
        mtime_ns: i64,
        #[serde(with = "serde_bytes_compat")]
        sha256: [u8; 32],
        blocks: Vec<serde_bytes_compat::B>,
        version: std::collections::BTreeMap<String, u64>,
        deleted: bool,
        modified_by: &'a str,
    }
    #[derive(Serialize)]
    enum Raw<'a> {
        Register {
            name: &'a str,
            device: u64,
            endpoint: &'a str,
            files: Vec<RawEntry<'a>>,
        },
    }
    let h = *Hash::of(b"pwned").as_bytes();
    let e = RawEntry {
        path,
        size: 5,
        mtime_ns: 1,
        sha256: h,
        blocks: vec![serde_bytes_compat::B(h)],
        version: [("evil".to_owned(), 9)].into(),
        deleted: false,
        modified_by: "evil",
    };
    encode(&Raw::Register {
        name: "evil",
        device: 1,
        endpoint: "tcp://127.0.0.1:1",
        files: vec![e],
    })
}

mod serde_bytes_compat {
    use serde::Serializer;
    pub fn serialize<S: Serializer>(b: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }
    pub struct B(pub [u8; 32]);
    impl serde::Serialize for B {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }
}

#[test]
fn tracker_rejects_garbage_and_keeps_serving() {
    let c = Cluster::start(2);
    let ctx = zmq::Context::new();
    let ep = format!("tcp://{}", c.tracker_addr());

    assert_eq!(
        tracker_error(&ask(&ctx, &ep, b"certainly not msgpack")),
        ErrorKind::Malformed
    );
    assert_eq!(tracker_error(&ask(&ctx, &ep, b"")), ErrorKind::Malformed);
    let future = rmp_serde::to_vec(&(99u16, "Register", 1)).unwrap();
    assert_eq!(
        tracker_error(&ask(&ctx, &ep, &future)),
        ErrorKind::BadVersion
    );
    let truncated = encode(&TrackerRequest::Heartbeat {
        name: "p1".into(),
        device: 1,
    });
    assert_eq!(
        tracker_error(&ask(&ctx, &ep, &truncated[..truncated.len() - 2])),
        ErrorKind::Malformed
    );

    // A peer announcing a path that escapes its folder is refused outright.
    for bad in [
        "../../etc/passwd",
        "/etc/passwd",
        ".zync/index.msgpack",
        "a/../../b",
    ] {
        assert_eq!(
            tracker_error(&ask(&ctx, &ep, &raw_register(bad))),
            ErrorKind::Invalid,
            "{bad}"
        );
    }

    // Oversized: libzmq drops the connection; nothing is allocated for it.
    let big = ctx.socket(zmq::DEALER).unwrap();
    big.set_linger(0).unwrap();
    big.connect(&ep).unwrap();
    big.send_multipart([Vec::new(), vec![0u8; zync_proto::MAX_MESSAGE_SIZE + 1]], 0)
        .unwrap();

    // Not even ZeroMQ: raw bytes on the TCP port.
    let mut tcp = std::net::TcpStream::connect(c.tracker_addr()).unwrap();
    let _ = tcp.write_all(&[0xff; 4096]);
    drop(tcp);

    // Still serving, and the cluster still syncs.
    std::thread::sleep(Duration::from_millis(300));
    let o = c.cli(&["peers", "--json"]);
    assert!(o.status.success());
    fs::write(c.dir(0).join("after-garbage"), b"ok").unwrap();
    wait_file_everywhere(&c, "after-garbage", b"ok");
    let names: Vec<String> = fs::read_dir(c.tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n == "passwd" || n == "b"),
        "{names:?}"
    );
    assert!(c
        .tracker
        .as_ref()
        .unwrap()
        .log_text()
        .contains("rejected request"));
}

#[test]
fn peer_rejects_garbage_and_keeps_serving() {
    let c = Cluster::start(2);
    let ctx = zmq::Context::new();
    let o = c.cli(&["peers", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ep = v[0]["endpoint"].as_str().unwrap().to_owned();

    assert_eq!(
        peer_error(&ask(&ctx, &ep, b"\x00\x01garbage")),
        ErrorKind::Malformed
    );
    let future = rmp_serde::to_vec(&(2u16, "GetBlock")).unwrap();
    assert_eq!(peer_error(&ask(&ctx, &ep, &future)), ErrorKind::BadVersion);
    // A well-formed request for something it does not have.
    let req = PeerRequest::GetBlock {
        id: 7,
        path: RelPath::new("nothing").unwrap(),
        sha256: Hash::EMPTY,
        index: 0,
    };
    assert_eq!(
        peer_error(&ask(&ctx, &ep, &encode(&req))),
        ErrorKind::NotFound
    );
    // A path that escapes: refused while decoding, never looked up on disk.
    #[derive(Serialize)]
    enum Raw<'a> {
        GetBlock {
            id: u64,
            path: &'a str,
            sha256: &'a serde_bytes_ref::Bytes,
            index: u64,
        },
    }
    mod serde_bytes_ref {
        pub struct Bytes(pub [u8; 32]);
        impl serde::Serialize for Bytes {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
    }
    let h = serde_bytes_ref::Bytes([0; 32]);
    let raw = encode(&Raw::GetBlock {
        id: 1,
        path: "../../../../etc/passwd",
        sha256: &h,
        index: 0,
    });
    assert_eq!(peer_error(&ask(&ctx, &ep, &raw)), ErrorKind::Invalid);
    assert!(matches!(
        decode::<PeerReply>(&ask(&ctx, &ep, &encode(&PeerRequest::Ping))).unwrap(),
        PeerReply::Pong
    ));

    fs::write(c.dir(1).join("still-works"), b"yes").unwrap();
    wait_file_everywhere(&c, "still-works", b"yes");
}

/// A fake holder that registers a real file's metadata with the tracker but
/// serves corrupted blocks. The receiver must skip it and get the file from
/// the honest holder.
#[test]
fn bad_holder_is_skipped_for_a_good_one() {
    let mut c = Cluster::start(1);
    let body = data(3 * BLOCK_SIZE as usize + 10, 11);
    fs::write(c.dir(0).join("shared.bin"), &body).unwrap();
    wait_for(
        CONVERGE,
        || String::from_utf8_lossy(&c.cli(&["ls"]).stdout).contains("shared.bin"),
        "listed",
        &c,
    );
    let o = c.cli(&["ls", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut version = VersionVector::new();
    version.bump("p1");
    let entry = FileEntry {
        path: RelPath::new("shared.bin").unwrap(),
        size: body.len() as u64,
        mtime_ns: v[0]["mtime_ns"].as_i64().unwrap(),
        sha256: Hash::of(&body),
        blocks: body.chunks(BLOCK_SIZE as usize).map(Hash::of).collect(),
        version,
        deleted: false,
        modified_by: "p1".into(),
    };

    // The liar: "a-evil" sorts before "p1", so it is asked first.
    let ctx = zmq::Context::new();
    let router = ctx.socket(zmq::ROUTER).unwrap();
    router.set_linger(0).unwrap();
    router.bind("tcp://127.0.0.1:*").unwrap();
    let evil_ep = router.get_last_endpoint().unwrap().unwrap();
    let tracker_ep = format!("tcp://{}", c.tracker_addr());
    let reg = TrackerRequest::Register {
        name: "a-evil".into(),
        device: 66,
        endpoint: evil_ep,
        files: vec![entry],
    };
    assert!(matches!(
        decode::<TrackerReply>(&ask(&ctx, &tracker_ep, &encode(&reg))).unwrap(),
        TrackerReply::Registered { .. }
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let liar = {
        let (stop, served, ctx) = (stop.clone(), served.clone(), ctx.clone());
        std::thread::spawn(move || {
            let hb = req_socket(&ctx, &tracker_ep);
            let mut last_hb = std::time::Instant::now();
            router.set_rcvtimeo(100).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if last_hb.elapsed() > Duration::from_millis(200) {
                    hb.send(
                        encode(&TrackerRequest::Heartbeat {
                            name: "a-evil".into(),
                            device: 66,
                        }),
                        0,
                    )
                    .unwrap();
                    let _ = hb.recv_bytes(0);
                    last_hb = std::time::Instant::now();
                }
                let Ok(mut frames) = router.recv_multipart(0) else {
                    continue;
                };
                let body = frames.pop().unwrap();
                if let Ok(PeerRequest::GetBlock { id, index, .. }) = decode::<PeerRequest>(&body) {
                    served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let len = zync_proto::block_len(3 * BLOCK_SIZE + 10, index) as usize;
                    frames.push(encode(&PeerReply::Block {
                        id,
                        index,
                        data: vec![0xEE; len],
                    }));
                    router.send_multipart(frames, 0).unwrap();
                }
            }
        })
    };

    c.add_peer("p2");
    wait_for(
        CONVERGE,
        || fs::read(c.dir(1).join("shared.bin")).ok().as_deref() == Some(&body[..]),
        "p2 has the file",
        &c,
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    liar.join().unwrap();
    assert!(
        served.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the liar was asked first"
    );
    let log = c.peers[1].proc.log_text();
    assert!(
        log.contains("event=holder_failed") && log.contains("peer=a-evil"),
        "{log}"
    );
    assert!(
        log.contains("event=synced path=shared.bin from=p1"),
        "{log}"
    );
}
