//! The login in front of zync-web's cluster face, against a real cluster:
//! every cluster route refuses a request without the password, the static
//! site stays public, a browser's session opens and ends, another site's
//! page cannot upload, and guessing is held back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use zync_proto::Hash;
use zync_testkit::web::*;
use zync_testkit::{self as common, wait_for, Cluster, CONVERGE};

const SECRET: &[u8] = b"the cluster's private bytes";

fn put_request(path: &str, extra: &str, body: &str) -> String {
    format!(
        "PUT {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

fn login_form(addr: &str, password: &str, extra: &str) -> Resp {
    let body = format!("password={password}&next=%2Ffiles%2Fsecret.txt");
    request(
        addr,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        ),
    )
}

/// A cluster with one file, and zync-web in front of it with a login and
/// a public static site.
fn setup() -> (Cluster, Web, tempfile::TempDir) {
    let c = Cluster::start(1);
    std::fs::write(c.dir(0).join("secret.txt"), SECRET).unwrap();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("about.html"), b"<p>public page</p>").unwrap();
    let web = Web::for_cluster(&c, &["--root", site.path().to_str().unwrap()]);
    wait_for(
        CONVERGE,
        || {
            try_get(&web.addr, "/api/files", AUTH)
                .is_ok_and(|r| String::from_utf8_lossy(&r.body).contains("secret.txt"))
        },
        "secret.txt listed",
        &c,
    );
    (c, web, site)
}

#[test]
fn every_cluster_route_needs_the_password_and_the_static_site_does_not() {
    let (_c, web, _site) = setup();
    let hex = Hash::of(SECRET).to_hex();
    let gets = [
        "/cluster".to_owned(),
        "/api/files".to_owned(),
        "/api/peers".to_owned(),
        "/api/hits".to_owned(),
        "/api/events".to_owned(),
        "/api/resolve/secret.txt".to_owned(),
        "/files/secret.txt".to_owned(),
        format!("/objects/{hex}"),
    ];
    let basic = format!(
        "Authorization: Basic {}\r\n",
        b64(&format!("admin:{PASSWORD}"))
    );
    // One wrong password per route: fewer than the guessing limit in all.
    let wrong = [
        ("Authorization: Bearer wrong\r\n", "a wrong password"),
        (
            "Authorization: Basic YWRtaW46d3Jvbmc=\r\n",
            "a wrong Basic password",
        ),
    ];
    for (i, path) in gets.iter().enumerate() {
        for (creds, what) in [
            ("", "no credential"),
            wrong[i % 2],
            (
                "Cookie: zync_session=0123456789abcdef\r\n",
                "a made-up session",
            ),
        ] {
            let r = get(&web.addr, path, creds);
            assert_eq!(r.status, 401, "GET {path} with {what}");
            let challenge = r.header("WWW-Authenticate").unwrap_or_default();
            assert!(
                challenge.starts_with("Basic realm=\"zync\""),
                "GET {path}: {challenge}"
            );
            assert!(
                !contains(&r.body, SECRET) && !contains(&r.body, b"secret.txt"),
                "GET {path} with {what} leaked data"
            );
        }
        if path != "/api/events" {
            assert_eq!(
                get(&web.addr, path, AUTH).status,
                200,
                "GET {path} with the password"
            );
            assert_eq!(
                get(&web.addr, path, &basic).status,
                200,
                "GET {path} with Basic auth"
            );
        }
    }
    assert_eq!(get(&web.addr, "/files/secret.txt", AUTH).body, SECRET);

    // Writes are refused too, and leave nothing behind.
    let r = request(&web.addr, &put_request("/files/planted.txt", "", "planted"));
    assert_eq!(r.status, 401);
    let form = "--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"planted2.txt\"\r\n\r\nx\r\n--b--\r\n";
    let r = request(
        &web.addr,
        &format!(
            "POST /files HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=b\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    assert_eq!(r.status, 401);
    std::thread::sleep(Duration::from_millis(300));
    let names: Vec<String> = common::snapshot(&_c.tmp.path().join("web-data"))
        .into_keys()
        .collect();
    assert_eq!(names, ["secret.txt"], "nothing planted");

    // A browser asking for the dashboard gets the login form, without a
    // challenge that would make it pop its own dialog.
    let r = get(&web.addr, "/cluster", "Accept: text/html,*/*\r\n");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("WWW-Authenticate"), Some("Bearer realm=\"zync\""));
    let page = String::from_utf8_lossy(&r.body);
    assert!(
        page.contains("type=\"password\"") && page.contains("value=\"/cluster\""),
        "{page}"
    );

    // The static site is public.
    let r = get(&web.addr, "/about.html", "");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, &b"<p>public page</p>"[..])
    );
}

#[test]
fn a_browser_logs_in_uses_its_session_and_logs_out() {
    let (c, web, _site) = setup();
    let r = login_form(&web.addr, "wrong", "");
    assert_eq!(r.status, 401);
    assert!(String::from_utf8_lossy(&r.body).contains("Wrong password"));
    assert!(r.header("Set-Cookie").is_none());
    assert!(
        web.log_text().contains("event=\"login_failed\"")
            || web.log_text().contains("event=login_failed"),
        "{}",
        web.log_text()
    );

    let r = login_form(&web.addr, PASSWORD, "");
    assert_eq!(r.status, 303, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("Location"), Some("/files/secret.txt"));
    let set = r.header("Set-Cookie").unwrap().to_owned();
    for part in ["HttpOnly", "SameSite=Strict", "Max-Age=43200", "Path=/"] {
        assert!(set.contains(part), "{set} lacks {part}");
    }
    let session = set.split(';').next().unwrap().to_owned();
    assert!(
        session.starts_with("zync_session=") && session.len() == "zync_session=".len() + 64,
        "{session}"
    );
    let cookie = format!("Cookie: {session}\r\n");
    assert_eq!(get(&web.addr, "/files/secret.txt", &cookie).body, SECRET);
    assert_eq!(get(&web.addr, "/cluster", &cookie).status, 200);

    // A same-origin upload with the session lands on the peer.
    let origin = format!("Origin: http://{}\r\n{cookie}", web.addr);
    let r = request(
        &web.addr,
        &put_request("/files/from-browser.txt", &origin, "hello")
            .replace("Host: t", &format!("Host: {}", web.addr)),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    common::wait_file_everywhere(&c, "from-browser.txt", b"hello");

    // GET /login with a live session goes straight on.
    let r = get(&web.addr, "/login?next=/api/peers", &cookie);
    assert_eq!((r.status, r.header("Location")), (303, Some("/api/peers")));

    let r = request(
        &web.addr,
        &format!("POST /logout HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n{cookie}\r\n", web.addr),
    );
    assert_eq!(r.status, 303);
    assert!(r.header("Set-Cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(
        get(&web.addr, "/files/secret.txt", &cookie).status,
        401,
        "the session ended"
    );
}

#[test]
fn another_sites_page_cannot_upload_even_with_a_session() {
    let (c, web, _site) = setup();
    let r = login_form(&web.addr, PASSWORD, "");
    let session = r
        .header("Set-Cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for (headers, what) in [
        (
            format!("Origin: http://evil.example\r\nCookie: {session}\r\n"),
            "a foreign Origin",
        ),
        (format!("Origin: null\r\n{AUTH}"), "an opaque Origin"),
        (
            format!("Sec-Fetch-Site: cross-site\r\nCookie: {session}\r\n"),
            "Sec-Fetch-Site: cross-site",
        ),
    ] {
        let r = request(
            &web.addr,
            &put_request("/files/csrf.txt", &headers, "forged"),
        );
        assert_eq!(r.status, 403, "{what}");
    }
    // A login from another site is refused as well (login CSRF).
    assert_eq!(
        login_form(&web.addr, PASSWORD, "Origin: http://evil.example\r\n").status,
        403
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!c.dir(0).join("csrf.txt").exists());
    assert!(!c.tmp.path().join("web-data/csrf.txt").exists());
}

#[test]
fn guessing_is_held_back_per_address() {
    let (_c, web, _site) = setup();
    for i in 0..10 {
        assert_eq!(
            get(
                &web.addr,
                "/api/files",
                &format!("Authorization: Bearer guess{i}\r\n")
            )
            .status,
            401
        );
    }
    // Past the limit even the right password gets 429, so an answer tells
    // a guesser nothing, and the form is held back the same way.
    let r = get(&web.addr, "/api/files", AUTH);
    assert_eq!(r.status, 429);
    let wait: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(login_form(&web.addr, PASSWORD, "").status, 429);
    assert!(web.log_text().contains("failures=10"), "{}", web.log_text());
}

#[test]
fn zync_web_will_not_open_the_cluster_face_without_a_password_unless_told() {
    let c = Cluster::start(1);
    let out = c
        .command(common::bin("zync-web"))
        .args(["--tracker", &c.tracker_addr(), "--listen", "127.0.0.1:0"])
        .args(["--data", c.tmp.path().join("web-data").to_str().unwrap()])
        .args(["--peer-listen", "127.0.0.1:0"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "it started: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--password-file") && err.contains("--no-login"),
        "{err}"
    );

    let empty = c.tmp.path().join("empty.password");
    std::fs::write(&empty, "\n").unwrap();
    let out = c
        .command(common::bin("zync-web"))
        .args([
            "--tracker",
            &c.tracker_addr(),
            "--password-file",
            empty.to_str().unwrap(),
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is empty"));

    // --no-login opens it, and says so.
    let web = Web::for_cluster(&c, &["--no-login"]);
    c.wait_peers(2);
    assert_eq!(get(&web.addr, "/api/peers", "").status, 200);
    assert!(web.log_text().contains("no login"), "{}", web.log_text());
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn b64(s: &str) -> String {
    // Test-side encoder, so the test does not share zync-web's decoder.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | (x as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
