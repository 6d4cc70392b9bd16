//! Pure HTTP helpers: URL-path decoding and normalization, byte ranges,
//! conditional requests, ETags, dates, MIME types, escaping. No I/O.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zync_proto::{PathError, RelPath};

/// Longest request target accepted (bytes); longer gets `414`.
pub const MAX_URI: usize = 8 * 1024;

/// Why a request target was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TargetError {
    /// Malformed: not origin-form, bad percent-encoding, not UTF-8, NUL,
    /// backslash, or `..` above the root. Answer `400`.
    Bad(&'static str),
    /// Names the reserved state folder. Answer `404`.
    Hidden,
}

/// A decoded, normalized request path.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// The path below the root; `None` for the root itself.
    pub path: Option<RelPath>,
    /// The URL path ended with `/`.
    pub trailing_slash: bool,
}

/// The value of `key` in the query string of `url` (decoded), if given.
pub fn query_value(url: &str, key: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or("");
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Decodes the path of a request target once, normalizes it (`.` and empty
/// segments dropped, `..` resolved, never above the root) and validates it
/// with [`RelPath`], the same rules as every path on the wire.
pub fn decode_target(url: &str) -> Result<Target, TargetError> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = match path
        .strip_prefix("http://")
        .or_else(|| path.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => path,
    };
    if !path.starts_with('/') {
        return Err(TargetError::Bad("request target must be an absolute path"));
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let decoded = String::from_utf8(bytes).map_err(|_| TargetError::Bad("path is not UTF-8"))?;
    if decoded.contains(['\0', '\\']) {
        return Err(TargetError::Bad("path contains NUL or backslash"));
    }
    let mut segs: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if segs.pop().is_none() {
                    return Err(TargetError::Bad("path escapes the root"));
                }
            }
            s => segs.push(s),
        }
    }
    let trailing_slash =
        decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    if segs.is_empty() {
        return Ok(Target {
            path: None,
            trailing_slash: true,
        });
    }
    match RelPath::new(segs.join("/")) {
        Ok(p) => Ok(Target {
            path: Some(p),
            trailing_slash,
        }),
        Err(PathError::Reserved) => Err(TargetError::Hidden),
        Err(_) => Err(TargetError::Bad("invalid path")),
    }
}

/// Percent-encodes a relative path for use in a URL (keeps `/`).
pub fn encode_path(p: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(p, SET).to_string()
}

/// What a `Range` header asks for, for a representation of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// No (usable) range: send everything. Also the answer to several
    /// ranges, as nginx may give.
    Full,
    /// Bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive).
        end: u64,
    },
    /// Cannot be satisfied: `416`.
    Unsatisfiable,
}

/// Parses a `Range` header value (RFC 9110 §14.2). Syntax errors mean the
/// header is ignored.
pub fn parse_range(value: &str, size: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Full;
    };
    if spec.contains(',') {
        return Range::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), num(a), num(b)) {
        (true, _, Some(n)) => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Part {
                    start: size.saturating_sub(n),
                    end: size - 1,
                }
            }
        }
        (false, Some(start), last) if b.is_empty() || last.is_some() => {
            if let Some(l) = last {
                if l < start {
                    return Range::Full;
                }
            }
            if start >= size {
                return Range::Unsatisfiable;
            }
            Range::Part {
                start,
                end: last.map_or(size - 1, |l| l.min(size - 1)),
            }
        }
        _ => Range::Full,
    }
}

/// What a GET or HEAD of one representation answers, given its validators:
/// the one conditional-request decision both faces use.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// `304 Not Modified`.
    NotModified,
    /// Send this range of it (`200`, `206` or `416`).
    Send(Range),
}

/// Evaluates the request's conditional and range headers against a
/// representation of `size` bytes with `etag` and `mtime` (RFC 9110 §13.2.2
/// order): `If-None-Match`, or else `If-Modified-Since`, may make it a
/// `304`; `Range` is honoured only if an `If-Range` present matches the ETag.
pub fn decide<'a>(
    header: impl Fn(&str) -> Option<&'a str>,
    etag: &str,
    mtime: SystemTime,
    size: u64,
) -> Decision {
    if let Some(inm) = header("If-None-Match") {
        if etag_matches(inm, etag) {
            return Decision::NotModified;
        }
    } else if let Some(ims) = header("If-Modified-Since") {
        if not_modified_since(ims, mtime) {
            return Decision::NotModified;
        }
    }
    Decision::Send(match (header("Range"), header("If-Range")) {
        (Some(r), None) => parse_range(r, size),
        (Some(r), Some(ir)) if etag_matches(ir, etag) => parse_range(r, size),
        _ => Range::Full,
    })
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 200 OK` → 200);
/// `None` for anything else, however short.
pub fn status_code(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// True if an `If-None-Match` value matches `etag` (weak comparison).
pub fn etag_matches(header: &str, etag: &str) -> bool {
    let strip = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let want = strip(etag);
    header
        .split(',')
        .any(|t| t.trim() == "*" || strip(t) == want)
}

/// True if a resource modified at `mtime` is unmodified since `header`.
pub fn not_modified_since(header: &str, mtime: SystemTime) -> bool {
    match httpdate::parse_http_date(header.trim()) {
        Ok(since) => secs(mtime) <= secs(since),
        Err(_) => false,
    }
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// IMF-fixdate.
pub fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

/// A `SystemTime` from nanoseconds since the epoch.
pub fn from_ns(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// `Content-Type` for a file name: the maintained MIME table, with
/// `charset=utf-8` for text.
pub fn content_type(name: &str) -> String {
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let textual = mime.type_() == "text"
        || matches!(
            mime.essence_str(),
            "application/javascript" | "application/json" | "image/svg+xml" | "application/xml"
        );
    if textual {
        format!("{}; charset=utf-8", mime.essence_str())
    } else {
        mime.essence_str().to_owned()
    }
}

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditional_decision_follows_rfc_9110_order() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = http_date(t + Duration::from_secs(10));
        let earlier = http_date(t - Duration::from_secs(10));
        let ask = |hs: &[(&str, &str)]| {
            decide(
                |n| hs.iter().find(|(k, _)| *k == n).map(|(_, v)| *v),
                "\"e1\"",
                t,
                100,
            )
        };
        use Decision::*;
        let (range, part) = (
            ("Range", "bytes=0-9"),
            Send(Range::Part { start: 0, end: 9 }),
        );
        assert_eq!(ask(&[]), Send(Range::Full));
        assert_eq!(ask(&[("If-None-Match", "\"e1\"")]), NotModified);
        assert_eq!(ask(&[("If-None-Match", "W/\"e1\"")]), NotModified);
        assert_eq!(ask(&[("If-Modified-Since", &later)]), NotModified);
        assert_eq!(ask(&[("If-Modified-Since", &earlier)]), Send(Range::Full));
        // If-None-Match wins over If-Modified-Since when both are sent.
        let both = [
            ("If-None-Match", "\"other\""),
            ("If-Modified-Since", &later),
        ];
        assert_eq!(ask(&both), Send(Range::Full));
        assert_eq!(ask(&[range]), part);
        assert_eq!(ask(&[range, ("If-Range", "\"e1\"")]), part);
        assert_eq!(ask(&[range, ("If-Range", "\"old\"")]), Send(Range::Full));
        assert_eq!(ask(&[("Range", "bytes=500-")]), Send(Range::Unsatisfiable));
    }

    #[test]
    fn status_code_of_a_status_line_and_of_anything_shorter() {
        assert_eq!(status_code("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(status_code("HTTP/1.0 503 Service Unavailable"), Some(503));
        assert_eq!(status_code("HTTP/1.1 404"), Some(404));
        for bad in [
            "",
            "H",
            "HTTP/1.",
            "HTTP/1.1",
            "HTTP/1.1 ",
            "HTTP/1.1 2",
            "HTTP/2 200 OK",
            "SSH-2.0 200",
        ] {
            assert_eq!(status_code(bad), None, "{bad:?}");
        }
    }

    fn path(url: &str) -> Option<String> {
        decode_target(url)
            .ok()
            .map(|t| t.path.map_or(String::new(), |p| p.to_string()))
    }

    #[test]
    fn decodes_and_normalizes() {
        assert_eq!(path("/"), Some(String::new()));
        assert_eq!(path("/a/b.txt?x=1#f"), Some("a/b.txt".into()));
        assert_eq!(path("/a//./b/../c"), Some("a/c".into()));
        assert_eq!(path("/caf%C3%A9%20menu.txt"), Some("café menu.txt".into()));
        assert_eq!(path("http://host:8080/x/y"), Some("x/y".into()));
        assert_eq!(path("/%2e%2e%2fok"), None, "decoded once: ../ok escapes");
        assert_eq!(path("/a/%2e%2e/b"), Some("b".into()));
        assert!(decode_target("/dir/").unwrap().trailing_slash);
    }

    #[test]
    fn refuses_escapes_and_bad_bytes() {
        for url in [
            "/..",
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2fetc/passwd",
            "/a%5c..%5c..%5cetc",
            "/a%00b",
            "/%ff",
            "relative",
            "*",
        ] {
            assert!(
                matches!(decode_target(url), Err(TargetError::Bad(_))),
                "{url}"
            );
        }
        assert_eq!(
            decode_target("/.zync/index.msgpack"),
            Err(TargetError::Hidden)
        );
        assert_eq!(decode_target("/%2ezync/x"), Err(TargetError::Hidden));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse_range("bytes=0-9", 100),
            Range::Part { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range("bytes=90-", 100),
            Range::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            Range::Part { start: 90, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=-1000", 100),
            Range::Part { start: 0, end: 99 }
        );
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            Range::Part { start: 50, end: 99 }
        );
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Full);
        assert_eq!(parse_range("bytes=9-1", 100), Range::Full);
        assert_eq!(parse_range("items=0-1", 100), Range::Full);
        assert_eq!(parse_range("bytes=x-1", 100), Range::Full);
    }

    #[test]
    fn conditionals() {
        assert!(etag_matches("\"abc\"", "\"abc\""));
        assert!(etag_matches("W/\"abc\", \"x\"", "\"abc\""));
        assert!(etag_matches("*", "\"abc\""));
        assert!(!etag_matches("\"abd\"", "\"abc\""));
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert!(not_modified_since(
            &http_date(t),
            t + Duration::from_millis(300)
        ));
        assert!(!not_modified_since(
            &http_date(t),
            t + Duration::from_secs(2)
        ));
        assert!(!not_modified_since("garbage", t));
    }

    #[test]
    fn mime_and_escape() {
        assert_eq!(content_type("a.html"), "text/html; charset=utf-8");
        assert_eq!(content_type("a.css"), "text/css; charset=utf-8");
        assert_eq!(content_type("a.png"), "image/png");
        assert_eq!(content_type("noext"), "application/octet-stream");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(encode_path("a b/ü?.txt"), "a%20b/%C3%BC%3F.txt");
    }
}
