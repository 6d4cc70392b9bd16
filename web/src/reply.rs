//! One response type for every route, turned into a tiny_http response with
//! `Content-Length` whenever the length is known (never chunked for files).

use std::io::{self, Read};

/// A response body.
pub enum Body {
    /// Nothing.
    Empty,
    /// Bytes in memory (small pages, JSON).
    Bytes(Vec<u8>),
    /// A reader, with its length when known (file, cluster stream).
    Reader(Box<dyn Read + Send>, Option<u64>),
    /// Server-sent events, one per message, until the sender goes away.
    /// Written on the raw connection and flushed per event (tiny_http's
    /// chunked encoder would hold small events back).
    Events(crossbeam_channel::Receiver<String>),
}

/// A response: status, headers, body.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers beyond the common ones.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Body,
    /// Running hit count of the resource served, for the access log.
    pub hits: Option<u64>,
}

impl Reply {
    /// A response with no headers yet.
    pub fn new(status: u16, body: Body) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            hits: None,
        }
    }

    /// Records the resource's running hit count (logged with the request).
    pub fn counted(mut self, hits: u64) -> Reply {
        self.hits = Some(hits);
        self
    }

    /// Adds a header.
    pub fn header(mut self, k: &str, v: impl Into<String>) -> Reply {
        self.headers.push((k.to_owned(), v.into()));
        self
    }

    /// A small HTML page (errors, redirects).
    pub fn page(status: u16, title: &str, message: &str) -> Reply {
        let html = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>{status} {t}</title></head>\
             <body><h1>{status} {t}</h1><p>{m}</p><hr><small>zync-web</small></body></html>\n",
            t = crate::http::escape(title),
            m = crate::http::escape(message)
        );
        Reply::new(status, Body::Bytes(html.into_bytes()))
            .header("Content-Type", "text/html; charset=utf-8")
    }

    /// A JSON body.
    pub fn json(status: u16, v: &impl serde::Serialize) -> Reply {
        let body = serde_json::to_vec_pretty(v).unwrap_or_default();
        Reply::new(status, Body::Bytes(body)).header("Content-Type", "application/json")
    }

    /// Body length, when known.
    pub fn body_len(&self) -> Option<u64> {
        match &self.body {
            Body::Empty => Some(0),
            Body::Bytes(b) => Some(b.len() as u64),
            Body::Reader(_, n) => *n,
            Body::Events(_) => None,
        }
    }

    /// True for bodies worth a thread of their own (large or open-ended).
    pub fn is_long(&self) -> bool {
        self.body_len().is_none_or(|n| n > 1024 * 1024)
    }

    /// Into a tiny_http response.
    pub fn into_response(self) -> tiny_http::Response<Box<dyn Read + Send>> {
        let len = self.body_len();
        let reader: Box<dyn Read + Send> = match self.body {
            Body::Empty => Box::new(io::empty()),
            Body::Bytes(b) => Box::new(io::Cursor::new(b)),
            Body::Reader(r, _) => r,
            Body::Events(_) => Box::new(io::empty()),
        };
        let mut headers: Vec<tiny_http::Header> = Vec::with_capacity(self.headers.len() + 2);
        for (k, v) in self
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain([
                ("Server", concat!("zync-web/", env!("CARGO_PKG_VERSION"))),
                (
                    "Date",
                    &crate::http::http_date(std::time::SystemTime::now()),
                ),
            ])
        {
            if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                headers.push(h);
            }
        }
        tiny_http::Response::new(
            tiny_http::StatusCode(self.status),
            headers,
            reader,
            len.map(|n| n as usize),
            None,
        )
        // tiny_http would switch to chunked encoding above 32 KiB: a file
        // download must carry its Content-Length.
        .with_chunked_threshold(usize::MAX)
    }
}
