//! Raw-socket HTTP client and a zync-web process for the tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate as common;

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
/// Panics on any I/O error or malformed reply: for a server that must answer.
pub fn read_resp(r: &mut BufReader<TcpStream>, head: bool) -> Resp {
    try_read_resp(r, head).unwrap_or_else(|e| panic!("reading a response: {e}"))
}

/// Reads one response, returning I/O errors (a reset, a read timeout, a
/// connection closed before the reply) for loops that wait them out. A
/// reply that is not HTTP is an error too (`InvalidData`).
pub fn try_read_resp(r: &mut BufReader<TcpStream>, head: bool) -> std::io::Result<Resp> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| bad(format!("header line {l:?}")))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let mut body = Vec::new();
    let len = match headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        Some((_, v)) => Some(
            v.parse::<usize>()
                .map_err(|_| bad(format!("Content-Length {v:?}")))?,
        ),
        None => None,
    };
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if !head && status != 304 && status != 204 {
        if let Some(n) = len {
            body.resize(n, 0);
            r.read_exact(&mut body)?;
        } else if chunked {
            return Err(bad("unexpected chunked response".into()));
        } else {
            r.read_to_end(&mut body)?;
        }
    }
    Ok(Resp {
        status,
        headers,
        body,
    })
}

/// How long a test waits for one reply. Generous: on a loaded two-core
/// machine a busy server can take seconds, and a late reply is not a wrong one.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One request on a fresh connection. Panics on any I/O error.
pub fn request(addr: &str, raw: &str) -> Resp {
    try_request(addr, raw).unwrap_or_else(|e| panic!("{addr}: {e}"))
}

/// One request on a fresh connection, for loops that wait out a refused,
/// reset or timed-out connection: each of those is an `Err`, not a panic.
pub fn try_request(addr: &str, raw: &str) -> std::io::Result<Resp> {
    try_request_within(addr, raw, REPLY_TIMEOUT)
}

/// [`try_request`] with its own read timeout.
pub fn try_request_within(addr: &str, raw: &str, timeout: Duration) -> std::io::Result<Resp> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(timeout))?;
    (&s).write_all(raw.as_bytes())?;
    let head = raw.starts_with("HEAD ");
    try_read_resp(&mut BufReader::new(s), head)
}

/// `GET path` with extra header lines, as a raw request.
pub fn get_request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n")
}

/// `GET path` with extra header lines.
pub fn get(addr: &str, path: &str, extra: &str) -> Resp {
    request(addr, &get_request(path, extra))
}

/// [`get`] for loops that wait out connection errors.
pub fn try_get(addr: &str, path: &str, extra: &str) -> std::io::Result<Resp> {
    try_request(addr, &get_request(path, extra))
}

/// The web password of the zync-web that [`Web::for_cluster`] starts.
pub const PASSWORD: &str = "test-web-password";

/// The request header line that carries [`PASSWORD`].
pub const AUTH: &str = "Authorization: Bearer test-web-password\r\n";

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

    /// zync-web joined to `c` with the cluster key and a login
    /// ([`PASSWORD`]), its folder `web-data` and its log `web.log` in the
    /// cluster's temp dir, and `extra` flags.
    pub fn for_cluster(c: &common::Cluster, extra: &[&str]) -> Web {
        let tmp = c.tmp.path();
        let pw = tmp.join("web.password");
        std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
        let data = tmp.join("web-data");
        let mut args = vec![
            "--tracker".to_owned(),
            c.tracker_addr(),
            "--data".to_owned(),
            data.display().to_string(),
            "--peer-listen".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--name".to_owned(),
            "web".to_owned(),
        ];
        if !extra.contains(&"--no-login") {
            args.extend(["--password-file".to_owned(), pw.display().to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        Web::start_with(
            c.command(common::bin("zync-web")),
            &refs,
            &tmp.join("web.log"),
        )
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
