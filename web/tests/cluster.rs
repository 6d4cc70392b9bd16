//! zync-web joined to a real cluster (tracker + two peers) on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use zync_proto::Hash;
use zync_testkit::web::*;
use zync_testkit::{self as common, wait_for, Cluster, CONVERGE};

fn web_for(c: &Cluster, extra: &[&str]) -> Web {
    Web::for_cluster(c, extra)
}

fn put(addr: &str, path: &str, body: &[u8]) -> Resp {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\n{AUTH}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    (&s).write_all(head.as_bytes()).unwrap();
    let _ = (&s).write_all(body);
    read_resp(&mut BufReader::new(s), false)
}

fn multipart(addr: &str, dir: &str, name: &str, body: &[u8], boundary_ok: bool) -> Resp {
    let b = "zyncBOUNDARY42";
    let mut form = Vec::new();
    write!(
        form,
        "--{b}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\n{dir}\r\n"
    )
    .unwrap();
    write!(form, "--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").unwrap();
    form.extend_from_slice(body);
    if boundary_ok {
        write!(form, "\r\n--{b}--\r\n").unwrap();
    }
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /files HTTP/1.1\r\nHost: t\r\n{AUTH}Content-Type: multipart/form-data; boundary={b}\r\nContent-Length: {}\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        form.len()
    );
    (&s).write_all(head.as_bytes()).unwrap();
    (&s).write_all(&form).unwrap();
    read_resp(&mut BufReader::new(s), false)
}

#[test]
fn cluster_files_are_listed_and_downloadable() {
    let c = Cluster::start(2);
    let web = web_for(&c, &[]);
    let body = common::data(3 * 256 * 1024 + 99, 21);
    std::fs::create_dir_all(c.dir(0).join("pics")).unwrap();
    std::fs::write(c.dir(0).join("pics/cat photo.bin"), &body).unwrap();
    wait_for(
        CONVERGE,
        || {
            try_get(&web.addr, "/api/files", AUTH)
                .is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("pics/cat photo.bin"))
        },
        "file in /api/files",
        &c,
    );

    let r = get(&web.addr, "/files/pics/cat%20photo.bin", AUTH);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        r.header("ETag"),
        Some(format!("\"{}\"", Hash::of(&body).to_hex()).as_str())
    );
    assert!(r.body == body);

    let r = request(
        &web.addr,
        &format!("HEAD /files/pics/cat%20photo.bin HTTP/1.1\r\nHost: t\r\n{AUTH}Connection: close\r\n\r\n"),
    );
    assert_eq!(
        (r.status, r.header("Content-Length")),
        (200, Some(body.len().to_string().as_str()))
    );

    let r = get(
        &web.addr,
        "/files/pics/cat%20photo.bin",
        &format!("{AUTH}Range: bytes=262140-262150\r\n"),
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.body,
        &body[262140..=262150],
        "a range across a block boundary"
    );

    let hex = Hash::of(&body).to_hex();
    let r = get(&web.addr, &format!("/objects/{hex}"), AUTH);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Cache-Control"),
        Some("private, max-age=31536000, immutable")
    );
    assert_eq!(r.header("ETag"), Some(format!("\"{hex}\"").as_str()));
    assert!(r.body == body);
    assert_eq!(
        get(
            &web.addr,
            &format!("/objects/{}", Hash::of(b"nothing").to_hex()),
            AUTH
        )
        .status,
        404
    );

    let r = get(&web.addr, "/api/resolve/pics/cat%20photo.bin", AUTH);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["url"], "/files/pics/cat%20photo.bin");
    assert!(v["holders"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h["name"] == "p1"));

    let peers: serde_json::Value =
        serde_json::from_slice(&get(&web.addr, "/api/peers", AUTH).body).unwrap();
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p1", "p2", "web"]);

    assert_eq!(get(&web.addr, "/files/no/such.file", AUTH).status, 404);
    let dash = get(&web.addr, "/", AUTH);
    assert!(String::from_utf8_lossy(&dash.body).contains("Zync cluster"));
    assert_eq!(get(&web.addr, "/cluster/", AUTH).status, 200);
}

#[test]
fn uploads_reach_every_peer_verified() {
    let c = Cluster::start(2);
    let web = web_for(&c, &["--max-upload", "2000000"]);
    c.wait_peers(3);
    let body = common::data(1_500_000, 3);
    let r = put(&web.addr, "/files/up/loaded.bin", &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["sha256"], Hash::of(&body).to_hex());
    common::wait_file_everywhere(&c, "up/loaded.bin", &body);
    // An upload is a new file like any other: the umask's mode, on every
    // peer, not its temp file's 0600.
    {
        use std::os::unix::fs::PermissionsExt;
        let want = 0o666 & !zync_peer::fsops::umask();
        for dir in [
            c.tmp.path().join("web-data"),
            c.dir(0).to_path_buf(),
            c.dir(1).to_path_buf(),
        ] {
            let m = std::fs::metadata(dir.join("up/loaded.bin")).unwrap();
            assert_eq!(m.permissions().mode() & 0o777, want, "{}", dir.display());
        }
    }

    let r = multipart(&web.addr, "forms", "hello wörld.txt", b"from a form", true);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    common::wait_file_everywhere(&c, "forms/hello wörld.txt", b"from a form");

    // Refusals leave nothing behind.
    assert_eq!(
        put(&web.addr, "/files/too/big.bin", &common::data(2_500_000, 1)).status,
        413
    );
    assert_eq!(
        multipart(&web.addr, "", "big.bin", &common::data(2_500_000, 2), true).status,
        413
    );
    assert_eq!(
        multipart(&web.addr, "", "cut.bin", b"no end boundary", false).status,
        400
    );
    assert_eq!(
        multipart(&web.addr, "../..", "evil.txt", b"x", true).status,
        400
    );
    // The state folder is not a cluster path.
    let r = put(&web.addr, "/files/.zync/index.msgpack", b"x");
    assert_eq!(r.status, 400);
    let r = put(&web.addr, "/files/../../escape.txt", b"x");
    assert_eq!(r.status, 400);
    std::thread::sleep(Duration::from_millis(500));
    let data = c.tmp.path().join("web-data");
    let mut names: Vec<String> = common::snapshot(&data).into_keys().collect();
    names.sort();
    assert_eq!(names, ["forms/hello wörld.txt", "up/loaded.bin"]);
    assert_eq!(
        std::fs::read_dir(data.join(".zync/uploads"))
            .unwrap()
            .count(),
        0,
        "no temp files left"
    );
    assert!(!c.tmp.path().join("escape.txt").exists());
}

#[test]
fn no_live_holder_is_a_503() {
    let mut c = Cluster::start(1);
    std::fs::write(c.dir(0).join("gone.txt"), b"g").unwrap();
    wait_for(
        CONVERGE,
        || String::from_utf8_lossy(&c.cli(&["ls"]).stdout).contains("gone.txt"),
        "listed",
        &c,
    );
    c.peers[0].proc.kill();
    c.wait_peers(0);
    // zync-web joins after the only holder died: the file is known, nobody has it.
    let web = web_for(&c, &[]);
    let r = get(&web.addr, "/files/gone.txt", AUTH);
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    assert!(String::from_utf8_lossy(&r.body).contains("no live peer"));
    assert_eq!(r.header("Retry-After"), Some("5"));
    let r = get(&web.addr, "/api/resolve/gone.txt", AUTH);
    assert_eq!(r.status, 503);
}

/// Opens zync-web's event stream; its lines arrive on a thread of their
/// own, so waiting for one never costs a line half read. The status line
/// is checked.
fn event_lines(addr: &str) -> std::sync::mpsc::Receiver<String> {
    let s = TcpStream::connect(addr).unwrap();
    (&s).write_all(format!("GET /api/events HTTP/1.1\r\nHost: t\r\n{AUTH}\r\n").as_bytes())
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = lines.recv_timeout(CONVERGE).unwrap();
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    lines
}

/// Writes files at peer 0 until one streams as a `changed` event (zync-web's
/// member hears of changes through its tracker subscription, which may
/// still be connecting: a change published before that is caught up by a
/// snapshot, not streamed); returns how long the one that did took.
fn until_a_change_streams(c: &Cluster, lines: &std::sync::mpsc::Receiver<String>) -> Duration {
    let deadline = Instant::now() + CONVERGE;
    for n in 0.. {
        assert!(Instant::now() < deadline, "no event streamed");
        let name = format!("live-{n}.txt");
        let t = Instant::now();
        std::fs::write(c.dir(0).join(&name), b"now").unwrap();
        let until = t + Duration::from_secs(3);
        while let Ok(line) = lines.recv_timeout(until.saturating_duration_since(Instant::now())) {
            if line.starts_with("data: ") && line.contains(&name) {
                assert!(line.contains("\"changed\""), "{line}");
                return t.elapsed();
            }
        }
    }
    unreachable!()
}

#[test]
fn events_stream_live() {
    let c = Cluster::start(1);
    let web = web_for(&c, &[]);
    c.wait_peers(2);
    let lines = event_lines(&web.addr);
    let took = until_a_change_streams(&c, &lines);
    assert!(took < Duration::from_secs(2), "event took {took:?}");
}

#[test]
fn a_change_caught_up_by_a_snapshot_reaches_the_event_stream() {
    let mut c = Cluster::start(1);
    let web = web_for(&c, &[]);
    c.wait_peers(2);
    let lines = event_lines(&web.addr);
    // Live: its first snapshot (and word of it) is behind it.
    until_a_change_streams(&c, &lines);
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([format!("-{sig}"), web.child.id().to_string()])
            .status();
        assert!(ok.is_ok_and(|s| s.success()), "kill -{sig}");
    };
    // While zync-web is stopped, the tracker restarts (a new start, a new
    // publish port) and learns a change from the peer: zync-web's member
    // can only hear of it in the index snapshot it takes when it
    // registers again, never as a notification.
    signal("STOP");
    c.tracker.as_mut().unwrap().kill();
    std::fs::write(c.dir(0).join("while-away.txt"), b"away").unwrap();
    c.start_tracker();
    wait_for(
        CONVERGE,
        || String::from_utf8_lossy(&c.cli(&["ls"]).stdout).contains("while-away.txt"),
        "the restarted tracker to list the change",
        &c,
    );
    signal("CONT");
    // An open page hears of it (a resync makes it take everything again).
    let deadline = Instant::now() + CONVERGE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no event told of the change\n{}", c.logs()));
        if line.starts_with("data: ")
            && (line.contains("\"resync\"") || line.contains("while-away.txt"))
        {
            break;
        }
    }
    let r = get(&web.addr, "/api/browse", AUTH);
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body).contains("while-away.txt"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn zync_web_refuses_to_start_when_its_cluster_member_cannot() {
    // Its block server's port is taken: uploads would be kept where nobody
    // syncs them, so zync-web must not serve at all.
    let c = Cluster::start(1);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = c
        .command(common::bin("zync-web"))
        .args(["--tracker", &c.tracker_addr(), "--listen", "127.0.0.1:0"])
        .args(["--data", c.tmp.path().join("web-data").to_str().unwrap()])
        .args(["--peer-listen", &format!("127.0.0.1:{port}"), "--no-login"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started anyway: {err}");
    assert!(
        err.contains("cluster member cannot start") && err.contains(&port),
        "{err}"
    );
}

#[test]
fn health_check_says_unhealthy_for_a_short_or_foreign_reply_without_panicking() {
    for (reply, healthy) in [
        (&b"HTTP/1.1 200 OK\r\n\r\n"[..], true),
        (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
        (b"HTTP/1.1", false),
        (b"HTTP/", false),
        (b"", false),
        (b"SSH-2.0-OpenSSH_9.2\r\n", false),
    ] {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let answer = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = std::io::Read::read(&mut s, &mut buf);
            s.write_all(reply).unwrap();
        });
        let out = std::process::Command::new(common::bin("zync-web"))
            .args(["--health", &addr])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        answer.join().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{reply:?}: {err}");
        assert_eq!(out.status.success(), healthy, "{reply:?}: {err}");
    }
}

fn json(addr: &str, path: &str) -> serde_json::Value {
    let r = get(addr, path, AUTH);
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

fn post_form(addr: &str, path: &str, form: &str) -> Resp {
    request(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{AUTH}Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
}

/// Two concurrent edits of `doc.txt`: p2 stopped (SIGSTOP) while both p1
/// and p2 write it, then let go; returns the conflict copy's path.
fn make_conflict(c: &Cluster, web: &Web) -> (String, String) {
    std::fs::write(c.dir(0).join("doc.txt"), b"line 1\nline 2\nline 3\n").unwrap();
    common::wait_file_everywhere(c, "doc.txt", b"line 1\nline 2\nline 3\n");
    c.peers[1].proc.signal("STOP");
    std::fs::write(c.dir(1).join("doc.txt"), b"line 1\nline two (p2)\nline 3\n").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(c.dir(0).join("doc.txt"), b"line 1\nline 2 (p1)\nline 3\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.peers[1].proc.signal("CONT");
    let mut pair = (String::new(), String::new());
    wait_for(
        CONVERGE,
        || {
            let list = json(&web.addr, "/api/conflicts");
            let Some(first) = list.as_array().and_then(|a| a.first()) else {
                return false;
            };
            pair = (
                first["copy"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                first["copy"]["sha256"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
            first["original"]["path"] == "doc.txt"
                && std::fs::exists(c.tmp.path().join("web-data").join(&pair.0)).unwrap_or(false)
        },
        "a conflict in /api/conflicts, held by web",
        c,
    );
    pair
}

#[test]
fn the_dashboard_browses_searches_shows_status_and_resolves_a_conflict_everywhere() {
    let c = Cluster::start(2);
    let web = web_for(&c, &[]);
    for (p, n) in [
        ("docs/a.md", 10),
        ("docs/deep/report.md", 20),
        ("top.txt", 5),
    ] {
        let f = c.dir(0).join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, common::data(n, 1)).unwrap();
    }
    wait_for(
        CONVERGE,
        || {
            json(&web.addr, "/api/browse")
                .get("files")
                .and_then(|f| f.as_array())
                .is_some_and(|f| f.len() == 1)
        },
        "the root listed",
        &c,
    );
    let root = json(&web.addr, "/api/browse");
    assert_eq!(root["folders"][0]["name"], "docs");
    assert_eq!(root["folders"][0]["files"], 2);
    assert_eq!(root["folders"][0]["bytes"], 30);
    assert_eq!(root["files"][0]["path"], "top.txt");
    let docs = json(&web.addr, "/api/browse?dir=docs&limit=1");
    assert_eq!(docs["folders"][0]["path"], "docs/deep");
    assert_eq!(
        (
            docs["total"].as_u64(),
            docs["files"].as_array().unwrap().len()
        ),
        (Some(1), 1)
    );
    let hits = json(&web.addr, "/api/browse?q=REPORT");
    assert_eq!(hits["total"], 1);
    assert_eq!(hits["files"][0]["path"], "docs/deep/report.md");

    // Status: every live peer, in sync once all hold everything.
    wait_for(
        CONVERGE,
        || {
            let s = json(&web.addr, "/api/status");
            s["peers"].as_array().is_some_and(|p| {
                p.len() == 3
                    && p.iter()
                        .all(|p| p["in_sync"] == true && p["complete_percent"] == 100.0)
            })
        },
        "every peer in sync in /api/status",
        &c,
    );

    // A conflict, its diff, and keeping the copy's side from the page.
    let (copy, copy_sha) = make_conflict(&c, &web);
    let diff = json(
        &web.addr,
        &format!("/api/diff?a=doc.txt&b={}", percent(&copy)),
    );
    assert_eq!(diff["text"], true, "{diff}");
    let lines = diff["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["tag"] == "-" && l["text"].as_str().unwrap().starts_with("line 2")),
        "{diff}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["tag"] == "+" && l["text"].as_str().unwrap().starts_with("line two")),
        "{diff}"
    );
    let original_sha = json(&web.addr, "/api/conflicts")[0]["original"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    // A stale page (a side that changed since) is refused, and changes nothing.
    let stale = post_form(
        &web.addr,
        "/api/keep",
        &format!(
            "copy={}&keep=copy&copy_sha256={copy_sha}&original_sha256={}",
            percent(&copy),
            "0".repeat(64)
        ),
    );
    assert_eq!(
        stale.status,
        409,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    let copy_bytes = std::fs::read(c.tmp.path().join("web-data").join(&copy)).unwrap();
    let kept = post_form(
        &web.addr,
        "/api/keep",
        &format!(
            "copy={}&keep=copy&copy_sha256={copy_sha}&original_sha256={original_sha}",
            percent(&copy)
        ),
    );
    assert_eq!(kept.status, 200, "{}", String::from_utf8_lossy(&kept.body));
    // Every peer ends with the chosen content and no copy.
    common::wait_file_everywhere(&c, "doc.txt", &copy_bytes);
    common::wait_gone_everywhere(&c, &copy);
    wait_for(
        CONVERGE,
        || {
            json(&web.addr, "/api/conflicts")
                .as_array()
                .is_some_and(|a| a.is_empty())
        },
        "no conflict left in /api/conflicts",
        &c,
    );
    assert!(
        web.log_text().contains("event=conflict_resolved"),
        "{}",
        web.log_text()
    );
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn metrics_parse_behind_the_login_and_count_a_sync() {
    let c = Cluster::start(1);
    let web = web_for(&c, &[]);
    let refused = get(&web.addr, "/metrics", "");
    assert_eq!(refused.status, 401, "metrics are behind the login");
    let scrape = || common::scrape_with(&web.addr, AUTH).unwrap_or_default();
    let value =
        |m: &std::collections::BTreeMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
    wait_for(
        CONVERGE,
        || value(&scrape(), "zync_cluster_peers_live") == 2.0,
        "two live peers in the metrics",
        &c,
    );
    let before = scrape();
    std::fs::write(c.dir(0).join("m.bin"), common::data(50_000, 3)).unwrap();
    wait_for(
        CONVERGE,
        || {
            let m = scrape();
            value(&m, "zync_peer_synced_total{kind=\"install\"}") >= 1.0
                && value(&m, "zync_cluster_files") == 1.0
                && value(&m, "zync_cluster_peer_complete_ratio{peer=\"web\"}") == 1.0
        },
        "web's member counts the install, the cluster the file",
        &c,
    );
    let after = scrape();
    assert!(
        value(&after, "zync_peer_fetched_bytes_total") >= 50_000.0,
        "{after:?}"
    );
    assert_eq!(value(&after, "zync_cluster_bytes"), 50_000.0);
    assert_eq!(
        value(&after, "zync_cluster_peer_held_files{peer=\"p1\"}"),
        1.0
    );
    assert!(
        value(
            &after,
            "zync_web_http_requests_total{route=\"metrics\",status=\"200\"}"
        ) > value(
            &before,
            "zync_web_http_requests_total{route=\"metrics\",status=\"200\"}"
        ),
        "{after:?}"
    );
    assert!(after.contains_key("zync_web_http_request_duration_seconds{route=\"metrics\"}"));
}

#[test]
fn a_deleted_file_is_among_the_kept_versions_and_a_restore_from_the_page_brings_it_back_everywhere()
{
    let c = Cluster::start(2);
    let web = web_for(&c, &[]);
    let body = common::data(7_000, 9);
    std::fs::create_dir_all(c.dir(0).join("old")).unwrap();
    std::fs::write(c.dir(0).join("old/report.txt"), &body).unwrap();
    common::wait_file_everywhere(&c, "old/report.txt", &body);
    let at_web = c.tmp.path().join("web-data/old/report.txt");
    wait_for(
        CONVERGE,
        || std::fs::read(&at_web).is_ok_and(|b| b == body),
        "the file at web",
        &c,
    );
    std::fs::remove_file(c.dir(0).join("old/report.txt")).unwrap();
    common::wait_gone_everywhere(&c, "old/report.txt");
    let mut kept = serde_json::Value::Null;
    wait_for(
        CONVERGE,
        || {
            kept = json(&web.addr, "/api/versions?dir=old")["versions"][0].clone();
            kept["path"] == "old/report.txt" && kept["gone"] == true
        },
        "the deletion kept at web, the file gone from the listing",
        &c,
    );
    assert_eq!(kept["reason"], "deleted");
    assert_eq!(kept["size"], 7_000);
    let form = |sha: &str| {
        format!(
            "path=old%2Freport.txt&kept_at_ns={}&sha256={sha}",
            kept["kept_at_ns"].as_str().unwrap()
        )
    };
    let missing = post_form(&web.addr, "/api/restore", &form(&"0".repeat(64)));
    assert_eq!(
        missing.status,
        404,
        "{}",
        String::from_utf8_lossy(&missing.body)
    );
    let restored = post_form(
        &web.addr,
        "/api/restore",
        &form(kept["sha256"].as_str().unwrap()),
    );
    assert_eq!(
        restored.status,
        200,
        "{}",
        String::from_utf8_lossy(&restored.body)
    );
    common::wait_file_everywhere(&c, "old/report.txt", &body);
    assert!(
        web.log_text().contains("event=restored"),
        "{}",
        web.log_text()
    );
}

/// Regression (penetration test, medium): with `--data` inside `--root`,
/// the static face served `/data/.zync/index.redb` (every path, size and
/// hash of the cluster) and the cluster's files to anyone, without login.
/// Overlapping folders are refused at start, both ways round, and a
/// `.zync` folder is never served or listed at any depth.
#[test]
fn a_cluster_folder_inside_the_static_root_is_refused_and_zync_state_never_served() {
    let c = Cluster::start(1);
    let site = c.tmp.path().join("site");
    for (root, data) in [
        (site.clone(), site.join("data")),
        (site.join("inner"), site.clone()),
        (site.clone(), site.clone()),
    ] {
        std::fs::create_dir_all(&root).unwrap();
        let mut web = c
            .command(common::bin("zync-web"))
            .args(["--tracker", &c.tracker_addr(), "--listen", "127.0.0.1:0"])
            .args(["--root", root.to_str().unwrap()])
            .args(["--data", data.to_str().unwrap()])
            .args(["--peer-listen", "127.0.0.1:0", "--no-login"])
            .env("RUST_BACKTRACE", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while web.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = web.kill();
        let out = web.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "it started anyway: {err}");
        assert!(err.contains("overlap"), "{err}");
    }
    // A static root holding a synced folder of its own: its state stays
    // hidden wherever it is.
    let state = site.join("photos").join(zync_proto::STATE_DIR_NAME);
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("index.redb"), b"SECRET INDEX").unwrap();
    std::fs::write(site.join("photos/a.jpg"), b"jpg").unwrap();
    let web = Web::start(
        &["--root", site.to_str().unwrap()],
        &c.tmp.path().join("static.log"),
    );
    for path in [
        "/photos/.zync/index.redb",
        "/photos/%2ezync/index.redb",
        "/photos/.zync/",
    ] {
        let r = get(&web.addr, path, "");
        assert_eq!(r.status, 404, "{path}");
    }
    let listing = String::from_utf8_lossy(&get(&web.addr, "/photos/", "").body).into_owned();
    assert!(
        listing.contains("a.jpg") && !listing.contains(".zync"),
        "{listing}"
    );
}

/// Regression (penetration test, medium): a synced or uploaded `.html` or
/// `.svg` was served inline as a page of the dashboard's origin, with no
/// policy, so opening it ran its script with the viewer's session; and
/// `/objects/` told shared caches to keep cluster content (`public`).
#[test]
fn cluster_content_cannot_script_the_dashboard() {
    let c = Cluster::start(1);
    let web = web_for(&c, &[]);
    let page = b"<script>fetch('/api/files').then(r=>r.text()).then(t=>alert(t))</script>";
    let svg = b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>";
    std::fs::write(c.dir(0).join("evil.html"), page).unwrap();
    std::fs::write(c.dir(0).join("evil.svg"), svg).unwrap();
    std::fs::write(c.dir(0).join("notes.txt"), b"plain").unwrap();
    wait_for(
        CONVERGE,
        || {
            try_get(&web.addr, "/api/files", AUTH).is_ok_and(|r| {
                let t = String::from_utf8_lossy(&r.body).into_owned();
                ["evil.html", "evil.svg", "notes.txt"]
                    .iter()
                    .all(|n| t.contains(n))
            })
        },
        "files in /api/files",
        &c,
    );
    for (path, body, active) in [
        ("/files/evil.html", &page[..], true),
        ("/files/evil.svg", &svg[..], true),
        ("/files/notes.txt", &b"plain"[..], false),
        (
            &*format!("/objects/{}", Hash::of(page).to_hex()),
            &page[..],
            true,
        ),
    ] {
        let r = get(&web.addr, path, AUTH);
        assert_eq!((r.status, &r.body[..]), (200, body), "{path}");
        let csp = r.header("Content-Security-Policy").unwrap_or("");
        assert!(
            csp.contains("sandbox") && csp.contains("default-src 'none'"),
            "{path}: {csp:?}"
        );
        assert!(!csp.contains("allow-scripts"), "{path}: {csp:?}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
        let disposition = r.header("Content-Disposition").unwrap_or("");
        assert_eq!(
            disposition.starts_with("attachment"),
            active,
            "{path}: {disposition:?}"
        );
        let cache = r.header("Cache-Control").unwrap_or("");
        assert!(cache.starts_with("private"), "{path}: {cache:?}");
    }
    // The dashboard runs its own script and nothing else.
    let r = get(&web.addr, "/cluster", AUTH);
    assert_eq!(r.status, 200);
    let html = String::from_utf8_lossy(&r.body).into_owned();
    let script = html
        .split_once("<script>")
        .and_then(|(_, rest)| rest.split_once("</script>"))
        .map(|(s, _)| s)
        .unwrap();
    let csp = r.header("Content-Security-Policy").unwrap_or("");
    use base64::Engine as _;
    use sha2::Digest as _;
    let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
    let scripts = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .unwrap_or("");
    assert_eq!(scripts, format!("script-src 'sha256-{hash}'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
}

/// Regression (penetration test, low): `/api/versions?dir=../..` walked the
/// disk outside the versions area. A folder that is not a synced path is
/// refused now.
#[test]
fn the_kept_versions_api_never_walks_outside_its_area() {
    let c = Cluster::start(1);
    let web = web_for(&c, &[]);
    for dir in ["../..", "..", "a/../../..", "../../../../etc"] {
        let r = get(
            &web.addr,
            &format!("/api/versions?dir={}", percent(dir)),
            AUTH,
        );
        assert_eq!(r.status, 400, "{dir}: {}", String::from_utf8_lossy(&r.body));
    }
    let r = get(&web.addr, "/api/versions?dir=docs", AUTH);
    assert_eq!(r.status, 200);
}
