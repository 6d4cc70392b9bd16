//! Only members reach the data: real processes with a cluster key, and
//! processes without it (or with another cluster's) that must get nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::time::{Duration, Instant};

use zync_net::Context;
use zync_proto::{encode, PeerRequest, TrackerRequest};
use zync_testkit::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_cli_without_the_key_is_refused_at_once_and_the_tracker_says_so() {
    let c = Cluster::start(1);
    fs::write(c.dir(0).join("secret.txt"), b"members only").unwrap();
    wait_for(
        CONVERGE,
        || String::from_utf8_lossy(&c.cli(&["ls"]).stdout).contains("secret.txt"),
        "a member lists secret.txt",
        &c,
    );
    let other = c.tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let other_key = keygen(&other);
    for (how, args) in [
        ("no key", vec!["--insecure"]),
        ("another key", vec!["--key", other_key.to_str().unwrap()]),
    ] {
        for cmd in [&["ls"][..], &["peers"], &["get", "secret.txt"]] {
            let t = Instant::now();
            let o = std::process::Command::new(peer_bin())
                .args(["--tracker", &c.tracker_addr()])
                .args(&args)
                .args(cmd)
                .current_dir(c.tmp.path())
                .output()
                .unwrap();
            let err = stderr(&o);
            assert!(!o.status.success(), "{how} {cmd:?}: it worked");
            assert!(o.stdout.is_empty(), "{how} {cmd:?}: printed data");
            assert!(
                err.contains("not a member of this cluster: wrong or missing key"),
                "{how} {cmd:?}: {err}"
            );
            // One line of error (--insecure adds its warning before it).
            let errors: Vec<&str> = err.lines().filter(|l| !l.contains(" WARN ")).collect();
            assert_eq!(errors.len(), 1, "{how} {cmd:?}: one line: {err}");
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{how}: {:?}",
                t.elapsed()
            );
        }
    }
    assert!(!c.tmp.path().join("secret.txt").exists());
    // Without --key or --insecure, nothing starts.
    let o = std::process::Command::new(peer_bin())
        .args(["--tracker", &c.tracker_addr(), "ls"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("zync-peer keygen"), "{}", stderr(&o));
    let log = c.tracker.as_ref().unwrap().log_text();
    assert!(log.contains("event=refused"), "{log}");
}

#[test]
fn a_peer_with_another_key_gets_nothing_and_changes_nothing() {
    let mut c = Cluster::start(2);
    let other = c.tmp.path().join("other");
    fs::create_dir(&other).unwrap();
    let other_key = keygen(&other);
    let stranger_dir = c.dir_of("stranger");
    fs::create_dir_all(&stranger_dir).unwrap();
    fs::write(stranger_dir.join("planted.txt"), b"from outside").unwrap();
    let mut cmd = std::process::Command::new(peer_bin());
    cmd.env("ZYNC_KEY_FILE", &other_key)
        .args(["--tracker", &c.trackers(), "run", "--listen", "127.0.0.1:0"])
        .args(["--name", "stranger", "--dir"])
        .arg(&stranger_dir);
    let log = c.tmp.path().join("stranger.log");
    let _stranger = Proc::spawn_logged(cmd, log.clone());

    fs::write(c.dir(0).join("a.txt"), b"for members").unwrap();
    wait_file_everywhere(&c, "a.txt", b"for members");
    // A member edit after the stranger has had time to try everything.
    wait_for(
        CONVERGE,
        || fs::read_to_string(&log).is_ok_and(|l| l.contains("not a member")),
        "the stranger's refusal in its log",
        &c,
    );
    fs::write(c.dir(1).join("b.txt"), b"later").unwrap();
    wait_file_everywhere(&c, "b.txt", b"later");
    assert!(!stranger_dir.join("a.txt").exists());
    assert!(!stranger_dir.join("b.txt").exists());
    let ls = String::from_utf8_lossy(&c.cli(&["ls"]).stdout).into_owned();
    assert!(!ls.contains("planted.txt"), "{ls}");
    assert_eq!(c.peers_at(&c.tracker_addr()).unwrap(), ["p1", "p2"]);
    for p in 0..2 {
        assert!(!c.dir(p).join("planted.txt").exists());
    }
    c.peers.truncate(2);
}

#[test]
fn crafted_plaintext_messages_to_every_socket_get_no_answer() {
    let c = Cluster::start(2);
    fs::write(c.dir(0).join("keep.txt"), b"keep me").unwrap();
    wait_file_everywhere(&c, "keep.txt", b"keep me");
    let o = c.cli(&["peers", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let block_server = v[0]["endpoint"].as_str().unwrap().to_owned();
    let tracker = format!("tcp://{}", c.tracker_addr());
    let plain = Context::new();
    let silent = |ep: &str, body: Vec<u8>| {
        let s = plain.dealer(ep).unwrap();
        s.send_frames([Vec::new(), body]).unwrap();
        assert!(
            !s.wait_readable(Duration::from_millis(1500)).unwrap(),
            "{ep} answered a plaintext request"
        );
    };
    silent(&tracker, encode(&TrackerRequest::Peers));
    silent(&tracker, encode(&TrackerRequest::List { after: None }));
    silent(
        &block_server,
        encode(&PeerRequest::GetBlock {
            id: 1,
            path: zync_proto::RelPath::new("keep.txt").unwrap(),
            sha256: zync_proto::Hash::of(b"keep me"),
            index: 0,
            offset: 0,
            len: 7,
        }),
    );
    // And the members carry on, with the file where it was.
    fs::write(c.dir(1).join("after.txt"), b"still syncing").unwrap();
    wait_file_everywhere(&c, "after.txt", b"still syncing");
    assert_eq!(fs::read(c.dir(0).join("keep.txt")).unwrap(), b"keep me");
}

/// Two peers whose every connection (to the tracker and to each other)
/// goes through a recording relay; a distinctive file synced between them.
/// Returns whether its bytes or its name were seen on the wire, and how
/// many bytes crossed.
fn capture(secure: bool) -> (bool, bool, usize) {
    let mut c = if secure {
        Cluster::start(0)
    } else {
        Cluster::start_insecure(0)
    };
    let tracker_tap = Tap::start(c.tracker_addr());
    let body: Vec<u8> = (0..200_000u32)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761)).to_le_bytes())
        .collect();
    let name = "wire-visible-name-0123456789.bin";
    let mut taps = Vec::new();
    for p in ["p1", "p2"] {
        let port = free_port();
        let tap = Tap::start(format!("127.0.0.1:{port}"));
        let mut cmd = c.command(peer_bin());
        cmd.args(["--tracker", &tracker_tap.addr(), "run"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--advertise", &tap.addr(), "--name", p, "--dir"])
            .arg(c.dir_of(p));
        let proc = Proc::spawn_logged(cmd, c.tmp.path().join(format!("{p}.log")));
        c.peers.push(Peer {
            name: p.into(),
            dir: c.dir_of(p),
            proc,
        });
        taps.push(tap);
    }
    c.wait_peers(2);
    fs::write(c.dir(0).join(name), &body).unwrap();
    let target = c.dir(1).join(name);
    wait_for(
        CONVERGE,
        || fs::read(&target).is_ok_and(|b| b == body),
        "the file on p2",
        &c,
    );
    let window = &body[100_000..100_032];
    let content = taps.iter().any(|t| t.saw(window)) || tracker_tap.saw(window);
    let named = taps.iter().any(|t| t.saw(name.as_bytes())) || tracker_tap.saw(name.as_bytes());
    let bytes = taps.iter().map(Tap::bytes).sum::<usize>() + tracker_tap.bytes();
    (content, named, bytes)
}

#[test]
fn nothing_of_a_synced_file_crosses_the_wire_in_clear() {
    // The capture sees a plaintext cluster's file: the check can fail.
    let (content, named, _) = capture(false);
    assert!(
        content && named,
        "the relay saw nothing of a plaintext sync"
    );
    let (content, named, bytes) = capture(true);
    assert!(
        bytes > 800_000,
        "the file did not cross the relay ({bytes} bytes)"
    );
    assert!(!content, "the file's bytes crossed in clear");
    assert!(!named, "the file's name crossed in clear");
}
