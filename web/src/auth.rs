//! Who may use the cluster face: one password, the sessions it opens, and
//! the login page.
//!
//! - **API clients** send the password with every request, as HTTP Basic
//!   auth (any user name) or `Authorization: Bearer <password>`.
//! - **People** get a login page. A right password opens a session: a
//!   random 256-bit id in a cookie (`HttpOnly`, `SameSite=Strict`,
//!   `Max-Age`, `Secure` over TLS), kept here only as its SHA-256, ended
//!   by `POST /logout` or by its age.
//! - **Refusals** are `401` with `WWW-Authenticate`, never data. A browser
//!   asking for a page gets the login form as that `401`'s body, with a
//!   `Bearer` challenge (a `Basic` one would make it pop its own dialog).
//! - **Guessing** is slowed: an address that sends [`MAX_FAILURES`] wrong
//!   passwords within [`FAILURE_WINDOW`] gets `429` for every credential
//!   until the window ends, the right one included, so the answer tells a
//!   guesser nothing.
//! - **The password** is kept only as its SHA-256 and compared in constant
//!   time; the bytes read from its file or from a login form are zeroed
//!   once hashed.
//!
//! [`same_origin`] is the cross-site check the router applies to every
//! state-changing request, with or without a login.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::http::escape;
use crate::reply::Reply;
use crate::request::Req;

/// The session cookie's name.
pub const COOKIE: &str = "zync_session";

/// Wrong passwords an address may send within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;

/// The window over which wrong passwords are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// Most sessions kept at once; past it, the one closest to its end goes.
const MAX_SESSIONS: usize = 10_000;

/// Most client addresses whose failures are remembered at once.
const MAX_TRACKED: usize = 10_000;

/// Largest login form accepted, in bytes.
const MAX_LOGIN_BODY: u64 = 4096;

/// Where a login goes when it names no page of its own.
const HOME: &str = "/cluster";

/// Why the password could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The file cannot be read.
    #[error("password file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no password.
    #[error("password file {0} is empty")]
    Empty(String),
}

/// The password, as its SHA-256.
pub struct Password([u8; 32]);

impl Password {
    /// Reads the password from the first line of `path` (without its line
    /// end). Warns if other users of the machine may read the file.
    pub fn load(path: &Path) -> Result<Password, PasswordError> {
        let name = path.display().to_string();
        let mut text = Zeroizing::new(Vec::new());
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut text))
            .map_err(|source| PasswordError::Io {
                path: name.clone(),
                source,
            })?;
        let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return Err(PasswordError::Empty(name));
        }
        zync_net::warn_if_shared(path, "web password file");
        Ok(Password::new(line))
    }

    /// The password `secret`.
    pub fn new(secret: &[u8]) -> Password {
        Password(Sha256::digest(secret).into())
    }

    /// True if `candidate` is the password, in time that does not depend
    /// on where they differ.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let digest: [u8; 32] = Sha256::digest(candidate).into();
        digest.ct_eq(&self.0).into()
    }
}

/// The login state of the cluster face.
pub struct Auth {
    password: Password,
    session_age: Duration,
    secure_cookie: bool,
    /// SHA-256 of each live session id, and when it ends.
    sessions: Mutex<HashMap<[u8; 32], Instant>>,
    /// Per client address: wrong passwords in the current window, and when
    /// the window began.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// What a request carries to prove itself.
enum Credential {
    None,
    Session([u8; 32]),
    Password(Zeroizing<Vec<u8>>),
    Malformed,
}

impl Auth {
    /// Logins for `password`; sessions last `session_age`. With
    /// `secure_cookie` (served over TLS) the cookie is marked `Secure`.
    pub fn new(password: Password, session_age: Duration, secure_cookie: bool) -> Auth {
        Auth {
            password,
            session_age,
            secure_cookie,
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Lets a request to the cluster face through, or says how to refuse it.
    pub fn admit(&self, req: &Req) -> Result<(), Reply> {
        match credential(req) {
            Credential::Session(id) if self.session_live(&id) => Ok(()),
            Credential::Session(_) => Err(challenge(req, "your session has ended; log in again")),
            Credential::Password(pw) => {
                if let Some(wait) = self.blocked(req.remote.map(|a| a.ip())) {
                    return Err(too_many(wait));
                }
                if self.password.matches(&pw) {
                    Ok(())
                } else {
                    self.failed(req, "header");
                    Err(challenge(req, "wrong password"))
                }
            }
            Credential::Malformed => Err(challenge(req, "malformed Authorization header")),
            Credential::None => Err(challenge(req, "log in first")),
        }
    }

    /// `GET /login`: the form, or straight on for a live session.
    pub fn login_page(&self, req: &Req) -> Reply {
        let next = next_of(crate::http::query_value(&req.url, "next").as_deref());
        if let Credential::Session(id) = credential(req) {
            if self.session_live(&id) {
                return Reply::new(303, crate::reply::Body::Empty).header("Location", next);
            }
        }
        login_form(200, &next, None)
    }

    /// `POST /login`: checks the form's password; a right one opens a
    /// session and goes on to the form's `next` page.
    pub fn login(&self, req: &Req, rq: &mut tiny_http::Request) -> Reply {
        let mut body = Zeroizing::new(Vec::new());
        if rq
            .as_reader()
            .take(MAX_LOGIN_BODY + 1)
            .read_to_end(&mut body)
            .is_err()
        {
            return Reply::page(400, "Bad Request", "the login form did not arrive whole");
        }
        if body.len() as u64 > MAX_LOGIN_BODY {
            return Reply::page(413, "Content Too Large", "the login form is too large");
        }
        let mut password = Zeroizing::new(Vec::new());
        let mut next = None;
        for (k, v) in form_urlencoded::parse(&body) {
            match &*k {
                "password" => password = Zeroizing::new(v.into_owned().into_bytes()),
                "next" => next = Some(v.into_owned()),
                _ => {}
            }
        }
        let next = next_of(next.as_deref());
        if let Some(wait) = self.blocked(req.remote.map(|a| a.ip())) {
            return too_many(wait);
        }
        if !self.password.matches(&password) {
            self.failed(req, "form");
            return login_form(401, &next, Some("Wrong password."))
                .header("WWW-Authenticate", "Bearer realm=\"zync\"");
        }
        let token = self.open_session();
        let client = req.remote.map(|a| a.ip().to_string()).unwrap_or_default();
        tracing::info!(event = "login", client = %client, "web session opened");
        Reply::new(303, crate::reply::Body::Empty)
            .header("Location", next)
            .header("Set-Cookie", self.cookie(&token, self.session_age))
            .header("Cache-Control", "no-store")
    }

    /// `POST /logout`: ends the request's session and clears its cookie.
    pub fn logout(&self, req: &Req) -> Reply {
        if let Credential::Session(id) = credential(req) {
            if let Ok(mut s) = self.sessions.lock() {
                s.remove(&id);
            }
        }
        Reply::new(303, crate::reply::Body::Empty)
            .header("Location", "/login")
            .header("Set-Cookie", self.cookie("", Duration::ZERO))
    }

    fn open_session(&self) -> String {
        use rand::RngCore;
        let mut id = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(&mut *id);
        let token = hex::encode(*id);
        let now = Instant::now();
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, end| *end > now);
            if s.len() >= MAX_SESSIONS {
                if let Some(k) = s.iter().min_by_key(|(_, end)| **end).map(|(k, _)| *k) {
                    s.remove(&k);
                }
            }
            s.insert(
                Sha256::digest(token.as_bytes()).into(),
                now + self.session_age,
            );
        }
        token
    }

    fn session_live(&self, id: &[u8; 32]) -> bool {
        let Ok(mut s) = self.sessions.lock() else {
            return false;
        };
        match s.get(id) {
            Some(end) if *end > Instant::now() => true,
            Some(_) => {
                s.remove(id);
                false
            }
            None => false,
        }
    }

    fn cookie(&self, value: &str, age: Duration) -> String {
        cookie::Cookie::build((COOKIE, value.to_owned()))
            .path("/")
            .http_only(true)
            .same_site(cookie::SameSite::Strict)
            .secure(self.secure_cookie)
            .max_age(cookie::time::Duration::seconds(age.as_secs() as i64))
            .build()
            .to_string()
    }

    /// How long `ip` must wait before a credential from it is looked at.
    fn blocked(&self, ip: Option<IpAddr>) -> Option<Duration> {
        let ip = ip?;
        let f = self.failures.lock().ok()?;
        let (count, since) = f.get(&ip)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then_some(left)
    }

    fn failed(&self, req: &Req, via: &'static str) {
        let client = req.remote.map(|a| a.ip());
        let mut count = 0;
        if let (Some(ip), Ok(mut f)) = (client, self.failures.lock()) {
            let now = Instant::now();
            if f.len() >= MAX_TRACKED {
                f.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            }
            let e = f.entry(ip).or_insert((0, now));
            if now.duration_since(e.1) >= FAILURE_WINDOW {
                *e = (0, now);
            }
            e.0 += 1;
            count = e.0;
        }
        let client = client.map(|c| c.to_string()).unwrap_or_default();
        tracing::warn!(event = "login_failed", client = %client, via, failures = count, "wrong web password");
    }
}

/// True unless the request comes from another site's page: a browser
/// marks a cross-site request with `Sec-Fetch-Site` and names the page's
/// origin in `Origin`, which must then be this server (its `Host`). A
/// request with neither comes from a program, not from a page.
pub fn same_origin(req: &Req) -> bool {
    if let Some(site) = req.header("Sec-Fetch-Site") {
        if !matches!(site.trim(), "same-origin" | "none") {
            return false;
        }
    }
    let Some(origin) = req.header("Origin") else {
        return true;
    };
    let authority = origin
        .trim()
        .split_once("://")
        .map(|(_, a)| a.trim_end_matches('/'));
    match (authority, req.header("Host")) {
        (Some(a), Some(host)) => a.eq_ignore_ascii_case(host.trim()),
        _ => false,
    }
}

/// The `403` for a request [`same_origin`] refuses.
pub fn cross_origin() -> Reply {
    Reply::page(
        403,
        "Forbidden",
        "This request came from another site's page, so it was refused.",
    )
}

fn credential(req: &Req) -> Credential {
    if let Some(h) = req.header("Authorization") {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
            return Credential::Password(Zeroizing::new(rest.as_bytes().to_vec()));
        }
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return Credential::Malformed;
            };
            let raw = Zeroizing::new(raw);
            return match raw.iter().position(|&b| b == b':') {
                Some(i) => Credential::Password(Zeroizing::new(raw[i + 1..].to_vec())),
                None => Credential::Malformed,
            };
        }
        return Credential::Malformed;
    }
    for header in req
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
    {
        for c in cookie::Cookie::split_parse(header.1.as_str()).flatten() {
            if c.name() == COOKIE {
                return Credential::Session(Sha256::digest(c.value().as_bytes()).into());
            }
        }
    }
    Credential::None
}

/// The refusal of a request without a valid credential.
fn challenge(req: &Req, why: &str) -> Reply {
    let page = req.is_get_or_head()
        && req
            .header("Accept")
            .is_some_and(|a| a.contains("text/html"));
    if page {
        login_form(401, &next_of(Some(&req.url)), None)
            .header("WWW-Authenticate", "Bearer realm=\"zync\"")
    } else {
        Reply::json(401, &serde_json::json!({ "error": why }))
            .header(
                "WWW-Authenticate",
                "Basic realm=\"zync\", charset=\"UTF-8\"",
            )
            .header("WWW-Authenticate", "Bearer realm=\"zync\"")
    }
}

fn too_many(wait: Duration) -> Reply {
    let secs = wait.as_secs().max(1);
    Reply::page(
        429,
        "Too Many Requests",
        &format!("Too many wrong passwords from your address; try again in {secs} s."),
    )
    .header("Retry-After", secs.to_string())
}

/// Where to go after a login: a path on this server, never another site
/// (`//host` and `/\host` are other sites to a browser). Every byte outside
/// printable ASCII is percent-encoded first: a browser drops a tab or a
/// newline from a URL, so `/\t/evil.example` would be `//evil.example`,
/// and a header value must be ASCII.
fn next_of(next: Option<&str>) -> String {
    const OUTSIDE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ');
    let Some(n) = next else {
        return HOME.to_owned();
    };
    let n = percent_encoding::utf8_percent_encode(n, OUTSIDE).to_string();
    if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') {
        n
    } else {
        HOME.to_owned()
    }
}

fn login_form(status: u16, next: &str, error: Option<&str>) -> Reply {
    let error = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    let html = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in · Zync cluster</title>
<style>
  body {{ font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #f7f8fa; margin: 0; }}
  main {{ max-width: 360px; margin: 12vh auto; background: #fff; border: 1px solid #e3e6ec; border-radius: 8px; padding: 24px; }}
  h1 {{ font-size: 20px; margin: 0 0 16px; }}
  label {{ display: block; font-weight: 600; margin-bottom: 6px; }}
  input[type=password] {{ width: 100%; padding: 8px; border: 1px solid #c9ced8; border-radius: 4px; font-size: 15px; }}
  button {{ margin-top: 14px; padding: 8px 18px; border: 0; border-radius: 4px; background: #2f6fed; color: #fff; font-size: 15px; cursor: pointer; }}
  .error {{ color: #b42318; margin: 0 0 12px; }}
</style>
</head>
<body>
<main>
  <h1>Zync cluster</h1>
  {error}
  <form method="post" action="/login">
    <input type="hidden" name="next" value="{next}">
    <label for="password">Password</label>
    <input type="password" id="password" name="password" autocomplete="current-password" required autofocus>
    <button type="submit" id="login">Log in</button>
  </form>
</main>
</body>
</html>
"#,
        next = escape(next),
    );
    Reply::new(status, crate::reply::Body::Bytes(html.into_bytes()))
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // test code: a panic is a failure report
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Req {
        Req {
            method: tiny_http::Method::Post,
            url: "/files".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            remote: Some("10.0.0.7:4000".parse().unwrap()),
        }
    }

    #[test]
    fn the_password_matches_only_itself() {
        let p = Password::new(b"correct horse");
        assert!(p.matches(b"correct horse"));
        assert!(!p.matches(b"correct hors"));
        assert!(!p.matches(b""));
    }

    #[test]
    fn basic_and_bearer_carry_the_password() {
        let a = Auth::new(Password::new(b"pw"), Duration::from_secs(60), false);
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("anyone:pw")
        );
        assert!(a.admit(&req(&[("Authorization", &basic)])).is_ok());
        assert!(a.admit(&req(&[("authorization", "Bearer pw")])).is_ok());
        for bad in ["Bearer nope", "Basic !!!", "Basic cHc=", "Digest pw"] {
            let r = a.admit(&req(&[("Authorization", bad)])).err();
            assert_eq!(r.map(|r| r.status), Some(401), "{bad}");
        }
        let r = a.admit(&req(&[])).err();
        assert!(r.is_some_and(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "WWW-Authenticate" && v.starts_with("Basic"))));
    }

    #[test]
    fn a_guesser_is_held_back_even_with_the_right_password() {
        let a = Auth::new(Password::new(b"pw"), Duration::from_secs(60), false);
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                a.admit(&req(&[("Authorization", "Bearer guess")]))
                    .err()
                    .map(|r| r.status),
                Some(401)
            );
        }
        assert_eq!(
            a.admit(&req(&[("Authorization", "Bearer pw")]))
                .err()
                .map(|r| r.status),
            Some(429)
        );
        let mut other = req(&[("Authorization", "Bearer pw")]);
        other.remote = "10.0.0.8:1".parse().ok();
        assert!(a.admit(&other).is_ok(), "another address is not held back");
    }

    #[test]
    fn sessions_are_known_by_their_cookie_and_end() {
        let a = Auth::new(Password::new(b"pw"), Duration::from_secs(60), false);
        let token = a.open_session();
        let cookie = format!("theme=dark; {COOKIE}={token}");
        assert!(a.admit(&req(&[("Cookie", &cookie)])).is_ok());
        let forged = format!("{COOKIE}={}", "0".repeat(64));
        assert_eq!(
            a.admit(&req(&[("Cookie", &forged)]))
                .err()
                .map(|r| r.status),
            Some(401)
        );
        a.logout(&req(&[("Cookie", &cookie)]));
        assert!(a.admit(&req(&[("Cookie", &cookie)])).is_err(), "logged out");

        let short = Auth::new(Password::new(b"pw"), Duration::ZERO, false);
        let t = short.open_session();
        assert!(
            short
                .admit(&req(&[("Cookie", &format!("{COOKIE}={t}"))]))
                .is_err(),
            "expired"
        );
    }

    #[test]
    fn the_cookie_is_http_only_and_strict() {
        let a = Auth::new(Password::new(b"pw"), Duration::from_secs(3600), true);
        let c = a.cookie("abc", Duration::from_secs(3600));
        for part in [
            "zync_session=abc",
            "HttpOnly",
            "SameSite=Strict",
            "Secure",
            "Max-Age=3600",
            "Path=/",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let host = ("Host", "zync.local:8080");
        assert!(same_origin(&req(&[host])));
        assert!(same_origin(&req(&[
            host,
            ("Origin", "http://zync.local:8080")
        ])));
        assert!(same_origin(&req(&[
            host,
            ("Origin", "https://ZYNC.local:8080"),
            ("Sec-Fetch-Site", "same-origin")
        ])));
        assert!(!same_origin(&req(&[
            host,
            ("Origin", "http://evil.example")
        ])));
        assert!(!same_origin(&req(&[host, ("Origin", "null")])));
        assert!(!same_origin(&req(&[
            host,
            ("Sec-Fetch-Site", "cross-site")
        ])));
        assert!(
            !same_origin(&req(&[("Origin", "http://zync.local:8080")])),
            "no Host"
        );
    }

    #[test]
    fn a_login_goes_on_only_to_this_server() {
        assert_eq!(next_of(Some("/files/a.txt")), "/files/a.txt");
        for other in [
            None,
            Some("//evil.example/"),
            Some("/\\evil.example"),
            Some("https://evil.example"),
        ] {
            assert_eq!(next_of(other), HOME, "{other:?}");
        }
        // What a browser would strip, or a header cannot hold, is encoded.
        for (given, safe) in [
            ("/\t/evil.example", "/%09/evil.example"),
            ("/\n/evil.example", "/%0A/evil.example"),
            ("/a\r\nSet-Cookie: x", "/a%0D%0ASet-Cookie:%20x"),
            ("/fichier-é", "/fichier-%C3%A9"),
        ] {
            assert_eq!(next_of(Some(given)), safe, "{given:?}");
        }
    }
}
