//! CURVE between real sockets on loopback: members of a cluster talk;
//! a process with another cluster's key, or none, gets nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use zync_net::{ClusterKey, Context, Socket};

const WAIT: Duration = Duration::from_millis(1500);

/// A ROUTER on an ephemeral port that echoes every request back until
/// one says `stop` (or 20 s pass); returns how many it echoed.
fn echo_server(ctx: &Context) -> (String, std::thread::JoinHandle<usize>) {
    let server = ctx
        .router("tcp://127.0.0.1:*", zync_proto::MAX_MESSAGE_SIZE)
        .unwrap();
    let ep = server.endpoint().unwrap();
    let h = std::thread::spawn(move || {
        let mut served = 0;
        while server.wait_readable(Duration::from_secs(20)).unwrap() {
            let frames = server.recv_frames().unwrap();
            if frames.last().map(Vec::as_slice) == Some(b"stop") {
                break;
            }
            server.send_frames(frames).unwrap();
            served += 1;
        }
        served
    });
    (ep, h)
}

/// Ends an echo server (from a context it admits).
fn stop(ctx: &Context, ep: &str) {
    let client = ctx.dealer(ep).unwrap();
    client.send_frames([&b""[..], b"stop"]).unwrap();
    // Give the message time to leave before the socket is dropped.
    let _ = client.wait_readable(Duration::from_millis(200));
}

/// Sends one request from `ctx` to `ep`; the reply, if one comes within WAIT.
fn ask(ctx: &Context, ep: &str, body: &[u8]) -> Option<Vec<u8>> {
    let client: Socket = ctx.dealer(ep).unwrap();
    client.send_frames([&b""[..], body]).unwrap();
    if !client.wait_readable(WAIT).unwrap() {
        return None;
    }
    client
        .try_recv_frames()
        .unwrap()
        .and_then(|f| f.last().cloned())
}

#[test]
fn members_talk_and_everyone_else_gets_nothing() {
    let key = ClusterKey::generate();
    let server_ctx = Context::secured(&key).unwrap();
    let (ep, served) = echo_server(&server_ctx);

    // A member (another process would load the same key file).
    let member = Context::secured(&key).unwrap();
    assert_eq!(ask(&member, &ep, b"hello").as_deref(), Some(&b"hello"[..]));

    // Another cluster's key: refused at the handshake.
    let stranger = Context::secured(&ClusterKey::generate()).unwrap();
    assert_eq!(ask(&stranger, &ep, b"let me in"), None);

    // No key at all (plaintext): refused too.
    assert_eq!(ask(&Context::new(), &ep, b"plaintext"), None);

    // The member still gets through, and only its two requests were served.
    assert_eq!(ask(&member, &ep, b"again").as_deref(), Some(&b"again"[..]));
    stop(&member, &ep);
    assert_eq!(served.join().unwrap(), 2);
}

#[test]
fn a_member_does_not_talk_to_a_server_without_the_key() {
    // A plaintext server (or one of another cluster) never gets a member's
    // request: the member insists on CURVE with the cluster's server key.
    let plain = Context::new();
    let (ep, served) = echo_server(&plain);
    let member = Context::secured(&ClusterKey::generate()).unwrap();
    assert_eq!(ask(&member, &ep, b"secret"), None);
    stop(&plain, &ep);
    assert_eq!(served.join().unwrap(), 0);
}

#[test]
fn notifications_reach_members_only() {
    let key = ClusterKey::generate();
    let ctx = Context::secured(&key).unwrap();
    let publisher = ctx.publisher("tcp://127.0.0.1:*").unwrap();
    let ep = publisher.endpoint().unwrap();
    let member = Context::secured(&key).unwrap().subscriber(&ep).unwrap();
    let stranger_ctx = Context::secured(&ClusterKey::generate()).unwrap();
    let stranger = stranger_ctx.subscriber(&ep).unwrap();
    let plain_ctx = Context::new();
    let plain = plain_ctx.subscriber(&ep).unwrap();
    // Subscriptions travel asynchronously: publish until the member has one.
    let t = std::time::Instant::now();
    loop {
        publisher.send(&b"note"[..]).unwrap();
        if member.wait_readable(Duration::from_millis(50)).unwrap() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "nothing reached the member"
        );
    }
    for _ in 0..20 {
        publisher.send(&b"note"[..]).unwrap();
    }
    assert_eq!(&*member.try_recv_body().unwrap().unwrap(), b"note");
    assert!(!stranger.wait_readable(Duration::from_millis(300)).unwrap());
    assert!(!plain.wait_readable(Duration::from_millis(300)).unwrap());
}

#[test]
fn a_key_file_is_private_never_overwritten_and_read_back_the_same() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.key");
    let written = ClusterKey::write_new(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&path).unwrap();
    assert!(
        ClusterKey::write_new(&path).is_err(),
        "an existing key is never replaced"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let read = ClusterKey::load(&path).unwrap();
    assert_eq!(read.server().public, written.server().public);
    assert_eq!(read.member().public, written.member().public);
    assert_ne!(
        read.server().public,
        read.member().public,
        "one pair per role"
    );
    assert!(!format!("{read:?}").contains(&String::from_utf8_lossy(&before).trim().to_string()));

    // A file that does not hold a key says so.
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let err = ClusterKey::load(&bad).unwrap_err().to_string();
    assert!(err.contains("does not hold a Zync cluster key"), "{err}");
    assert!(ClusterKey::load(&dir.path().join("missing")).is_err());
}
