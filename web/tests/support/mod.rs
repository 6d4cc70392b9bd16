//! Raw-socket HTTP client and a zync-web process for the tests.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../peer/tests/common/mod.rs"]
pub mod common;

/// A parsed response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from a connection (`head`: response to HEAD, no body).
pub fn read_resp(r: &mut BufReader<TcpStream>, head: bool) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("status line {line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut body = Vec::new();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if !head && status != 304 && status != 204 {
        if let Some(n) = len {
            body.resize(n, 0);
            r.read_exact(&mut body).unwrap();
        } else if chunked {
            panic!("unexpected chunked response");
        } else {
            r.read_to_end(&mut body).unwrap();
        }
    }
    Resp {
        status,
        headers,
        body,
    }
}

/// One request on a fresh connection.
pub fn request(addr: &str, raw: &str) -> Resp {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(raw.as_bytes()).unwrap();
    let head = raw.starts_with("HEAD ");
    read_resp(&mut BufReader::new(s), head)
}

/// `GET path` with extra header lines.
pub fn get(addr: &str, path: &str, extra: &str) -> Resp {
    request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"),
    )
}

/// A zync-web process, killed on drop.
pub struct Web {
    pub child: Child,
    pub addr: String,
    pub log: std::path::PathBuf,
}

impl Web {
    pub fn start(args: &[&str], log: &Path) -> Web {
        Self::start_with(Command::new(common::bin("zync-web")), args, log)
    }

    pub fn start_with(mut cmd: Command, args: &[&str], log: &Path) -> Web {
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let f = std::fs::File::create(log).unwrap();
        let child = cmd
            .args(args)
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        let t = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "zync-web did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Web {
            child,
            addr,
            log: log.to_path_buf(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
