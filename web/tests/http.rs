//! zync-web as a static server, against the real binary over raw sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use zync_testkit as common;
use zync_testkit::web::*;

struct Site {
    _tmp: tempfile::TempDir,
    web: Web,
    big: Vec<u8>,
}

fn site(extra: &[&str]) -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("site");
    std::fs::create_dir_all(root.join("docs/empty-dir")).unwrap();
    std::fs::write(root.join("index.html"), "<h1>home</h1>").unwrap();
    std::fs::write(root.join("style.css"), "body{}").unwrap();
    std::fs::write(root.join("docs/a <b> & c.txt"), "text").unwrap();
    let big = common::data(50 * 1024 * 1024 + 3, 9);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::write(tmp.path().join("secret.txt"), "TOP-SECRET").unwrap();
    symlink(tmp.path().join("secret.txt"), root.join("escape-link")).unwrap();
    symlink(tmp.path(), root.join("escape-dir")).unwrap();
    symlink(root.join("style.css"), root.join("inside-link.css")).unwrap();
    let mut args = vec!["--root", root.to_str().unwrap()];
    args.extend_from_slice(extra);
    let web = Web::start(&args, &tmp.path().join("web.log"));
    Site {
        _tmp: tmp,
        web,
        big,
    }
}

#[test]
fn get_carries_every_header() {
    let s = site(&[]);
    let r = get(&s.web.addr, "/style.css", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("Content-Length"), Some("6"));
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    assert!(r.header("Server").unwrap().starts_with("zync-web/"));
    for h in ["Date", "Last-Modified"] {
        let v = r.header(h).unwrap();
        assert!(
            httpdate::parse_http_date(v).is_ok() && v.ends_with(" GMT"),
            "{h}: {v}"
        );
    }
    let etag = r.header("ETag").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"));
    assert_eq!(r.body, b"body{}");
    // A directory serves its index.html.
    let r = get(&s.web.addr, "/", "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<h1>home</h1>"[..]));
}

#[test]
fn conditional_requests_give_304() {
    let s = site(&[]);
    let r = get(&s.web.addr, "/style.css", "");
    let etag = r.header("ETag").unwrap().to_owned();
    let lm = r.header("Last-Modified").unwrap().to_owned();
    let r = get(
        &s.web.addr,
        "/style.css",
        &format!("If-None-Match: {etag}\r\n"),
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("ETag"), Some(etag.as_str()));
    let r = get(
        &s.web.addr,
        "/style.css",
        &format!("If-Modified-Since: {lm}\r\n"),
    );
    assert_eq!(r.status, 304);
    let r = get(&s.web.addr, "/style.css", "If-None-Match: \"other\"\r\n");
    assert_eq!(r.status, 200);
    let r = get(
        &s.web.addr,
        "/style.css",
        "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n",
    );
    assert_eq!(r.status, 200);
}

#[test]
fn byte_ranges() {
    let s = site(&[]);
    let r = get(&s.web.addr, "/big.bin", "Range: bytes=100-199\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 100-199/{}", s.big.len()).as_str())
    );
    assert_eq!(r.body, &s.big[100..200]);
    let r = get(&s.web.addr, "/big.bin", "Range: bytes=-10\r\n");
    assert_eq!(r.body, &s.big[s.big.len() - 10..]);
    let r = get(
        &s.web.addr,
        "/big.bin",
        &format!("Range: bytes={}-\r\n", s.big.len()),
    );
    assert_eq!(r.status, 416);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes */{}", s.big.len()).as_str())
    );
    let r = get(&s.web.addr, "/style.css", "Range: bytes=0-1, 3-4\r\n");
    assert_eq!(
        (r.status, r.body.len()),
        (200, 6),
        "several ranges: the whole file"
    );
}

#[test]
fn keep_alive_close_and_http_1_0() {
    let s = site(&[]);
    let c = TcpStream::connect(&s.web.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    for _ in 0..2 {
        (&c).write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let resp = read_resp(&mut r, false);
        assert_eq!((resp.status, resp.body.as_slice()), (200, &b"body{}"[..]));
    }
    (&c).write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut r, false).status, 200);
    let mut rest = Vec::new();
    assert_eq!(
        r.read_to_end(&mut rest).unwrap(),
        0,
        "closed after Connection: close"
    );

    let resp = request(&s.web.addr, "GET /style.css HTTP/1.0\r\n\r\n");
    assert_eq!((resp.status, resp.body.as_slice()), (200, &b"body{}"[..]));
}

#[test]
fn head_has_headers_and_no_body() {
    let s = site(&[]);
    let c = TcpStream::connect(&s.web.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    (&c).write_all(b"HEAD /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let h = read_resp(&mut r, true);
    assert_eq!(h.status, 200);
    assert_eq!(
        h.header("Content-Length"),
        Some(s.big.len().to_string().as_str())
    );
    // The next response on the same connection starts right away: no body was sent.
    (&c).write_all(b"GET /style.css HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(read_resp(&mut r, false).body, b"body{}");
}

#[test]
fn errors_are_clean() {
    let s = site(&[]);
    let r = get(&s.web.addr, "/nope.txt", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    assert!(String::from_utf8_lossy(&r.body).contains("404"));
    let r = request(
        &s.web.addr,
        "POST /style.css HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = request(
        &s.web.addr,
        "BREW /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 501);
    let r = request(&s.web.addr, "this is not http\r\n\r\n");
    assert_eq!(r.status, 400);
    let r = get(&s.web.addr, &format!("/{}", "a".repeat(9000)), "");
    assert_eq!(r.status, 414);
    // Listing: names escaped.
    let r = get(&s.web.addr, "/docs/", "");
    let html = String::from_utf8_lossy(&r.body);
    assert!(
        html.contains("a &lt;b&gt; &amp; c.txt") && html.contains("a%20%3Cb%3E%20%26%20c.txt"),
        "{html}"
    );
    let r = get(&s.web.addr, "/docs", "");
    assert_eq!((r.status, r.header("Location")), (301, Some("/docs/")));
    // Still alive after all that.
    assert_eq!(get(&s.web.addr, "/style.css", "").status, 200);
}

#[test]
fn listing_can_be_switched_off() {
    let s = site(&["--no-listing"]);
    assert_eq!(get(&s.web.addr, "/docs/", "").status, 404);
}

#[test]
fn nothing_outside_the_root_is_ever_served() {
    let s = site(&[]);
    let attempts = [
        "/../secret.txt",
        "/../../../../etc/passwd",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e%2fsecret.txt",
        "/docs/..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/%5c..%5csecret.txt",
        "/secret.txt%00.css",
        "/docs/%00",
        "/escape-link",
        "/escape-dir/secret.txt",
        "//etc/passwd",
        "/etc/passwd",
        "http://evil/../secret.txt",
        "/.zync/index.msgpack",
    ];
    for a in attempts {
        let r = request(
            &s.web.addr,
            &format!("GET {a} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        );
        assert!(matches!(r.status, 400 | 404), "{a}: {}", r.status);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("TOP-SECRET"),
            "{a} leaked"
        );
        assert!(
            !String::from_utf8_lossy(&r.body).contains("root:"),
            "{a} leaked /etc/passwd"
        );
    }
    // A symlink that stays inside the root is fine.
    assert_eq!(get(&s.web.addr, "/inside-link.css", "").body, b"body{}");
}

#[test]
fn large_file_streams_with_content_length() {
    let s = site(&[]);
    let r = get(&s.web.addr, "/big.bin", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some(s.big.len().to_string().as_str())
    );
    assert!(r.header("Transfer-Encoding").is_none());
    assert!(r.body == s.big);
}

#[test]
fn many_concurrent_clients_and_a_slow_one() {
    let s = site(&[]);
    // A slow reader of the big file must not hold up anyone.
    let slow = TcpStream::connect(&s.web.addr).unwrap();
    (&slow)
        .write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    (&slow).read_exact(&mut buf).unwrap();
    let t = Instant::now();
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let addr = s.web.addr.clone();
            std::thread::spawn(move || {
                (0..20).all(|_| get(&addr, "/style.css", "").body == b"body{}")
            })
        })
        .collect();
    assert!(handles.into_iter().all(|h| h.join().unwrap()));
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "1000 requests took {:?}",
        t.elapsed()
    );
    drop(slow);
}

#[test]
fn slowloris_does_not_exhaust_the_server() {
    let s = site(&["--read-timeout-ms", "1500", "--head-timeout-ms", "2000"]);
    // 300 connections that say nothing, 30 that send a header a byte every
    // 200 ms: each byte resets a read timeout, so only the head deadline
    // can end those.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(&s.web.addr).unwrap())
        .collect();
    let opened = Instant::now();
    let tricklers: Vec<_> = (0..30)
        .map(|_| {
            let addr = s.web.addr.clone();
            std::thread::spawn(move || -> Option<(Duration, String)> {
                let mut c = TcpStream::connect(addr).unwrap();
                let t = Instant::now();
                for b in b"GET /style.css HTTP/1.1\r\nX-Slow: ".iter().cycle() {
                    if t.elapsed() > Duration::from_secs(15) {
                        return None; // never cut off
                    }
                    if c.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let took = t.elapsed();
                c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut answer = Vec::new();
                let _ = c.read_to_end(&mut answer);
                Some((took, String::from_utf8_lossy(&answer).into_owned()))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let r = get(&s.web.addr, "/style.css", "");
    assert_eq!(r.status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "normal request took {:?}",
        t.elapsed()
    );
    // Silent connections are closed by the read timeout (1.5 s): each is
    // given until 6 s after it was opened, ample on a loaded machine and
    // still far short of "never".
    let deadline = opened + Duration::from_secs(6);
    let mut closed = 0;
    for mut c in idle {
        let left = deadline.saturating_duration_since(Instant::now());
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut b = [0u8; 64];
        if c.read(&mut b).is_ok() {
            closed += 1; // EOF or a 408: the server let go
        }
    }
    assert!(
        closed >= 290,
        "only {closed} of 300 idle connections were closed"
    );
    // Tricklers are cut off by the head deadline (2 s from their first
    // byte), not left hanging, and told why.
    for t in tricklers {
        let (took, answer) = t.join().unwrap().expect("a trickler was never cut off");
        assert!(took < Duration::from_secs(6), "cut off only after {took:?}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "trickler got {answer:?}"
        );
    }
    assert_eq!(get(&s.web.addr, "/style.css", "").status, 200);
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn endless_header_line_is_refused_without_buffering_it() {
    // tiny_http 0.12 buffered a header line without limit (upstream #56):
    // 300 MiB sent, 313 MB resident. The patched copy stops at 16 KiB.
    let s = site(&[]);
    let mut c = TcpStream::connect(&s.web.addr).unwrap();
    c.write_all(b"GET /style.css HTTP/1.1\r\nX-Big: ").unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut sent = 0usize;
    while sent < 256 << 20 {
        if c.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    assert!(
        sent < 256 << 20,
        "the server took 256 MiB of one header line"
    );
    let hwm = peak_rss_kib(s.web.child.id());
    assert!(hwm < 64 * 1024, "zync-web grew to {hwm} KiB");
    assert_eq!(get(&s.web.addr, "/style.css", "").status, 200);
}

#[test]
fn oversized_heads_get_414_and_431() {
    let s = site(&[]);
    // Exactly one byte over the limit and nothing more, so the server has
    // read everything sent when it answers (no reset eats the answer).
    let limit = 16 * 1024;
    let line = format!("GET /{}", "a".repeat(limit + 1 - 5));
    let r = request(&s.web.addr, &line);
    assert_eq!(r.status, 414);
    let field = format!("GET / HTTP/1.1\r\nX-Big: {}", "b".repeat(limit + 1 - 7));
    let r = request(&s.web.addr, &field);
    assert_eq!(r.status, 431);
    // 128 fields are allowed; the 129th is refused.
    let many: String = (0..129).map(|i| format!("X-F{i}: v\r\n")).collect();
    let r = request(&s.web.addr, &format!("GET / HTTP/1.1\r\n{many}"));
    assert_eq!(r.status, 431);
    // Big but within limits is fine.
    let ok = format!(
        "GET /style.css HTTP/1.1\r\nCookie: {}\r\n\r\n",
        "c".repeat(12 * 1024)
    );
    assert_eq!(request(&s.web.addr, &ok).status, 200);
}

#[test]
fn connections_over_the_cap_get_503_and_the_server_recovers() {
    let s = site(&["--max-connections", "40"]);
    let held: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&s.web.addr).unwrap())
        .collect();
    // Once the server has accepted all 40 (on a loaded machine that can
    // take a moment), the next connection is refused at once. Until then a
    // try may be served (200), or lost to a reset or a slow reply: each of
    // those is one more try.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (r, took) = loop {
        let t = Instant::now();
        let r = try_request_within(
            &s.web.addr,
            &get_request("/style.css", ""),
            Duration::from_secs(5),
        );
        match r {
            Ok(r) if r.status != 200 => break (r, t.elapsed()),
            Ok(_) | Err(_) => {}
        }
        assert!(
            Instant::now() < deadline,
            "never refused over the cap: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(r.status, 503, "over the cap");
    assert_eq!(r.header("Retry-After"), Some("1"));
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
    drop(held);
    // Freed slots are taken again: a normal request is answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = try_get(&s.web.addr, "/style.css", "");
        if r.as_ref().is_ok_and(|r| r.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "still {r:?} after the burst");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn recovers_when_accept_fails_for_lack_of_descriptors() {
    // Few file descriptors: a burst of connections makes accept() (or the
    // clone of a new connection's descriptor) fail with EMFILE, which ended
    // tiny_http 0.12's accept loop or panicked its thread. The patched loop
    // backs off and carries on: zync-web must answer again once the burst
    // is gone, without rebuilding its listener.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ok.txt"), "ok").unwrap();
    let mut cmd = std::process::Command::new("prlimit");
    cmd.args(["--nofile=64:64", "--"])
        .arg(common::bin("zync-web"));
    let web = Web::start_with(
        cmd,
        &[
            "--root",
            tmp.path().to_str().unwrap(),
            "--read-timeout-ms",
            "1000",
        ],
        &tmp.path().join("web.log"),
    );
    let flood: Vec<TcpStream> = (0..150)
        .filter_map(|_| TcpStream::connect(&web.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    drop(flood);
    // Once the flood is gone, a normal request is answered again.
    // A refused, reset or timed-out try is one more try.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = try_request_within(
            &web.addr,
            &get_request("/ok.txt", ""),
            Duration::from_secs(5),
        );
        if r.as_ref().is_ok_and(|r| r.status == 200 && r.body == b"ok") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered (last try: {r:?}):\n{}",
            web.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = web.log_text();
    assert!(
        log.contains("Error accepting new client (retrying)")
            || log.contains("Cannot take a new client"),
        "the failure was not hit:\n{log}"
    );
    assert!(!log.contains("restarting the listener"), "{log}");
}

#[test]
fn access_log_has_one_line_per_request_with_a_running_hit_count() {
    let s = site(&[]);
    for _ in 0..3 {
        assert_eq!(get(&s.web.addr, "/style.css", "").status, 200);
    }
    assert_eq!(get(&s.web.addr, "/missing", "").status, 404);
    let t = Instant::now();
    let lines = || -> Vec<String> {
        s.web
            .log_text()
            .lines()
            .filter(|l| l.contains("zync_web::access"))
            .map(str::to_owned)
            .collect()
    };
    while lines().len() < 4 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Each line is written after its response, by whichever worker served
    // it: select by path, not by order.
    let lines = lines();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let css: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("path=/style.css "))
        .collect();
    assert_eq!(css.len(), 3, "{lines:#?}");
    for l in &css {
        for field in [
            "method=GET",
            "status=200",
            "bytes=6",
            "client=127.0.0.1:",
            "ms=",
        ] {
            assert!(l.contains(field), "{field} missing in {l}");
        }
    }
    let mut hits: Vec<&str> = css
        .iter()
        .filter_map(|l| l.split_whitespace().find(|f| f.starts_with("hits=")))
        .collect();
    hits.sort();
    assert_eq!(hits, ["hits=1", "hits=2", "hits=3"]);
    let missing = lines.iter().find(|l| l.contains("path=/missing ")).unwrap();
    assert!(
        missing.contains("status=404") && missing.contains("hits=0"),
        "{missing}"
    );
}

/// Regression (penetration test, low): the redirect to a folder's slash
/// copied the request's path into `Location`, so `//docs` sent a browser
/// to the site `docs`. It is made from the decoded path now.
#[test]
fn a_folder_redirect_stays_on_this_site() {
    let s = site(&[]);
    for (asked, to) in [
        ("/docs", "/docs/"),
        ("//docs", "/docs/"),
        ("//docs?x=1", "/docs/"),
        ("/docs/empty-dir", "/docs/empty-dir/"),
    ] {
        let r = get(&s.web.addr, asked, "");
        assert_eq!((r.status, r.header("Location")), (301, Some(to)), "{asked}");
    }
}
