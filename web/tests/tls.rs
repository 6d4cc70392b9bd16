//! zync-web over HTTPS with a self-signed certificate made in the test:
//! the static site and the cluster face answer over TLS, the login's cookie
//! is `Secure`, plain HTTP on the TLS port gets no answer, and an unusable
//! certificate or key stops zync-web at start with one clear line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use zync_testkit::web::*;
use zync_testkit::{self as common, wait_for, Cluster, CONVERGE};

/// A self-signed certificate for 127.0.0.1 and localhost: (cert, key) files.
fn self_signed(dir: &Path) -> (String, String, Vec<u8>) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (
        cert.display().to_string(),
        key.display().to_string(),
        ck.cert.der().to_vec(),
    )
}

/// One HTTPS request that trusts only `der`; returns (status, head, body).
fn https(addr: &str, der: &[u8], raw: &str) -> (u16, String, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.to_vec().into()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(raw.as_bytes()).unwrap();
    let mut all = Vec::new();
    // The server closes after `Connection: close`; a missing close_notify
    // at the end is not an error here.
    let _ = tls.read_to_end(&mut all);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head, all[split + 4..].to_vec())
}

#[test]
fn the_cluster_face_and_the_site_answer_over_tls_with_a_secure_cookie() {
    let c = Cluster::start(1);
    std::fs::write(c.dir(0).join("over-tls.txt"), b"sealed in transit").unwrap();
    let (cert, key, der) = self_signed(c.tmp.path());
    let site = c.tmp.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), b"<p>hello over TLS</p>").unwrap();
    let web = Web::for_cluster(
        &c,
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--root",
            site.to_str().unwrap(),
        ],
    );
    let get_raw = |path: &str, extra: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n{extra}\r\n",
            web.addr
        )
    };

    let (status, _, body) = https(&web.addr, &der, &get_raw("/", ""));
    assert_eq!(
        (status, body.as_slice()),
        (200, &b"<p>hello over TLS</p>"[..])
    );
    wait_for(
        CONVERGE,
        || {
            let (s, _, b) = https(&web.addr, &der, &get_raw("/api/files", AUTH));
            s == 200 && String::from_utf8_lossy(&b).contains("over-tls.txt")
        },
        "over-tls.txt listed over TLS",
        &c,
    );
    let (status, _, body) = https(&web.addr, &der, &get_raw("/files/over-tls.txt", AUTH));
    assert_eq!((status, body.as_slice()), (200, &b"sealed in transit"[..]));
    assert_eq!(
        https(&web.addr, &der, &get_raw("/files/over-tls.txt", "")).0,
        401
    );

    let form = format!("password={PASSWORD}");
    let (status, head, _) = https(
        &web.addr,
        &der,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{form}",
            web.addr,
            form.len()
        ),
    );
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    if let Ok(r) = try_get(&web.addr, "/", "") {
        panic!("a plaintext request was answered: {}", r.status);
    }
    // The server is still serving after that.
    assert_eq!(https(&web.addr, &der, &get_raw("/", "")).0, 200);
}

#[test]
fn an_unusable_certificate_or_key_stops_zync_web_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, _) = self_signed(tmp.path());
    let junk = tmp.path().join("junk.pem");
    std::fs::write(&junk, "not a PEM file\n").unwrap();
    let junk = junk.display().to_string();
    let missing = tmp.path().join("missing.pem").display().to_string();
    for (c, k, says) in [
        (&cert, &junk, "private key"),
        (&junk, &key, "no PEM certificate"),
        (&cert, &missing, "missing.pem"),
        (&key, &cert, "no PEM certificate"),
    ] {
        let out = std::process::Command::new(common::bin("zync-web"))
            .args([
                "--root",
                tmp.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
            ])
            .args(["--tls-cert", c, "--tls-key", k])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "started with {c} / {k}");
        assert!(
            err.contains(says) && err.lines().count() == 1,
            "{c} / {k}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = std::process::Command::new(common::bin("zync-web"))
        .args(["--root", tmp.path().to_str().unwrap(), "--tls-cert", &cert])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--tls-cert without --tls-key");
}
