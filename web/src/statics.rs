//! Static files under the root: GET and HEAD, index.html, listings,
//! conditional requests, byte ranges, symlink containment.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::http::{self, Range, Target};
use crate::reply::{Body, Reply};
use crate::server::{Req, State};

/// Answers a request for a static file or folder.
pub fn serve(state: &State, req: &Req, target: &Target) -> Reply {
    if !req.is_get_or_head() {
        return Reply::page(
            405,
            "Method Not Allowed",
            "Only GET and HEAD are allowed here.",
        )
        .header("Allow", "GET, HEAD");
    }
    let Some(root) = &state.root else {
        return not_found();
    };
    let joined = match &target.path {
        Some(p) => root.join(p.as_str()),
        None => root.clone(),
    };
    // Resolve symlinks, then insist the result is still inside the root.
    let Ok(real) = joined.canonicalize() else {
        return not_found();
    };
    if !real.starts_with(root) {
        return not_found();
    }
    let Ok(meta) = fs::metadata(&real) else {
        return not_found();
    };
    if meta.is_dir() {
        if !target.trailing_slash {
            let loc = format!("{}/", req.url.split('?').next().unwrap_or("/"));
            return Reply::page(301, "Moved Permanently", &loc).header("Location", loc);
        }
        let index = real.join("index.html");
        if let Ok(m) = fs::metadata(&index) {
            if m.is_file() {
                return file(state, req, &index, &m);
            }
        }
        if !state.listing {
            return not_found();
        }
        return listing(&real, root, req);
    }
    if meta.is_file() {
        return file(state, req, &real, &meta);
    }
    not_found()
}

/// 404 with a small HTML body.
pub fn not_found() -> Reply {
    Reply::page(404, "Not Found", "Nothing here.")
}

/// A regular file with validators, conditional requests and ranges.
pub fn file(state: &State, req: &Req, path: &Path, meta: &fs::Metadata) -> Reply {
    let size = meta.len();
    let mtime = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
    let etag = format!(
        "\"{:x}-{:x}-{:x}\"",
        size,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ino()
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let common = |r: Reply| {
        r.header("ETag", etag.clone())
            .header("Last-Modified", http::http_date(mtime))
            .header("Accept-Ranges", "bytes")
    };
    if let Some(inm) = req.header("If-None-Match") {
        if http::etag_matches(inm, &etag) {
            return common(Reply::new(304, Body::Empty));
        }
    } else if let Some(ims) = req.header("If-Modified-Since") {
        if http::not_modified_since(ims, mtime) {
            return common(Reply::new(304, Body::Empty));
        }
    }
    let range = match (req.header("Range"), req.header("If-Range")) {
        (Some(r), None) => http::parse_range(r, size),
        (Some(r), Some(ir)) if http::etag_matches(ir, &etag) => http::parse_range(r, size),
        _ => Range::Full,
    };
    let ctype = http::content_type(&name);
    let open = || File::open(path);
    match range {
        Range::Unsatisfiable => common(Reply::page(
            416,
            "Range Not Satisfiable",
            "The range is outside the file.",
        ))
        .header("Content-Range", format!("bytes */{size}")),
        Range::Full => {
            state.hit(&req.path_for_log());
            match open() {
                Ok(f) => common(Reply::new(200, Body::Reader(Box::new(f), Some(size))))
                    .header("Content-Type", ctype),
                Err(_) => not_found(),
            }
        }
        Range::Part { start, end } => {
            state.hit(&req.path_for_log());
            let len = end - start + 1;
            match open().and_then(|mut f| f.seek(SeekFrom::Start(start)).map(|_| f)) {
                Ok(f) => common(Reply::new(
                    206,
                    Body::Reader(Box::new(f.take(len)), Some(len)),
                ))
                .header("Content-Type", ctype)
                .header("Content-Range", format!("bytes {start}-{end}/{size}")),
                Err(_) => not_found(),
            }
        }
    }
}

fn listing(dir: &Path, root: &Path, req: &Req) -> Reply {
    let Ok(rd) = fs::read_dir(dir) else {
        return not_found();
    };
    let mut names: Vec<(String, bool)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if dir == root && name == zync_proto::STATE_DIR_NAME {
                return None;
            }
            Some((name, e.file_type().is_ok_and(|t| t.is_dir())))
        })
        .collect();
    names.sort();
    let base = req.url.split('?').next().unwrap_or("/");
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Index of {b}</title></head><body><h1>Index of {b}</h1><ul>\n",
        b = http::escape(&percent_encoding::percent_decode_str(base).decode_utf8_lossy())
    );
    if dir != root {
        html.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for (name, is_dir) in names {
        let slash = if is_dir { "/" } else { "" };
        html.push_str(&format!(
            "<li><a href=\"{}{slash}\">{}{slash}</a></li>\n",
            http::encode_path(&name),
            http::escape(&name)
        ));
    }
    html.push_str("</ul></body></html>\n");
    Reply::new(200, Body::Bytes(html.into_bytes()))
        .header("Content-Type", "text/html; charset=utf-8")
}
