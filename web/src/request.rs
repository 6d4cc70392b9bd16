//! What routes see of a request.

use std::net::SocketAddr;

/// What routes see of a request.
pub struct Req {
    /// Method.
    pub method: tiny_http::Method,
    /// Raw request target.
    pub url: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Client address.
    pub remote: Option<SocketAddr>,
}

impl Req {
    /// The parts of `rq` routes look at.
    pub fn of(rq: &tiny_http::Request) -> Req {
        Req {
            method: rq.method().clone(),
            url: rq.url().to_owned(),
            headers: rq
                .headers()
                .iter()
                .map(|h| {
                    (
                        h.field.as_str().as_str().to_owned(),
                        h.value.as_str().to_owned(),
                    )
                })
                .collect(),
            remote: rq.remote_addr().copied(),
        }
    }

    /// A header's value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// GET or HEAD.
    pub fn is_get_or_head(&self) -> bool {
        matches!(
            self.method,
            tiny_http::Method::Get | tiny_http::Method::Head
        )
    }

    /// The path part of the target, for logs and hit counts.
    pub fn path_for_log(&self) -> String {
        self.url.split('?').next().unwrap_or("").to_owned()
    }
}
