//! Static files under the root: GET and HEAD, index.html, listings,
//! conditional requests, byte ranges. Files are opened with
//! `openat2(RESOLVE_BENEATH)` from the root's directory descriptor, so no
//! `..` or symlink can reach outside the root: the kernel enforces it.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::http::{self, Range, Target};
use crate::reply::{Body, Reply};
use crate::request::Req;
use crate::state::State;

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
    let rel = target.path.as_ref().map_or(".", |p| p.as_str());
    // A Zync folder's state (its index names every file) is never served,
    // at any depth: the root may hold synced folders.
    if rel.split('/').any(|c| c == zync_proto::STATE_DIR_NAME) {
        return not_found();
    }
    let Some((file, path)) = open_beneath(state, root, rel) else {
        return not_found();
    };
    let Ok(meta) = file.metadata() else {
        return not_found();
    };
    if meta.is_dir() {
        if !target.trailing_slash {
            // Made from the decoded path, never copied from the request:
            // `//evil.example/dir` must not become a redirect to that site.
            let loc = format!("/{}/", http::encode_path(rel));
            return Reply::page(301, "Moved Permanently", &loc).header("Location", loc);
        }
        let index = if rel == "." {
            "index.html".to_owned()
        } else {
            format!("{rel}/index.html")
        };
        if let Some((f, p)) = open_beneath(state, root, &index) {
            if let Ok(m) = f.metadata() {
                if m.is_file() {
                    return send_file(state, req, f, &p, &m);
                }
            }
        }
        if !state.listing {
            return not_found();
        }
        return listing(&path, rel == ".", req);
    }
    if meta.is_file() {
        return send_file(state, req, file, &path, &meta);
    }
    not_found()
}

/// Opens `rel` below the root so that nothing outside it can be reached,
/// by `..` or by symlink: one `openat2(RESOLVE_BENEATH)` from the root's
/// directory descriptor. Kernels without openat2 (before 5.6), and
/// absolute symlinks, get the slower canonicalize-and-check-the-prefix.
fn open_beneath(state: &State, root: &Path, rel: &str) -> Option<(File, PathBuf)> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let path = root.join(rel);
    if let Some(dir) = &state.root_fd {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        match openat2(
            dir,
            rel,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Some((File::from(fd), path)),
            // No openat2, or an absolute symlink (which RESOLVE_BENEATH never
            // follows): decide by the canonical path instead.
            Err(rustix::io::Errno::NOSYS | rustix::io::Errno::XDEV) => {}
            Err(_) => return None,
        }
    }
    let real = path.canonicalize().ok()?;
    if !real.starts_with(root) {
        return None;
    }
    Some((File::open(&real).ok()?, real))
}

/// 404 with a small HTML body.
pub fn not_found() -> Reply {
    Reply::page(404, "Not Found", "Nothing here.")
}

/// A regular file (already open) with validators, conditional requests and ranges.
pub fn send_file(state: &State, req: &Req, mut f: File, path: &Path, meta: &fs::Metadata) -> Reply {
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
    let range = match http::decide(|h| req.header(h), &etag, mtime, size) {
        http::Decision::NotModified => return common(Reply::new(304, Body::Empty)),
        http::Decision::Send(range) => range,
    };
    let ctype = http::content_type(&name);
    match range {
        Range::Unsatisfiable => common(Reply::page(
            416,
            "Range Not Satisfiable",
            "The range is outside the file.",
        ))
        .header("Content-Range", format!("bytes */{size}")),
        Range::Full => {
            let hits = state.hit(&req.path_for_log());
            common(Reply::new(200, Body::Reader(reader(f, size), Some(size))))
                .header("Content-Type", ctype)
                .counted(hits)
        }
        Range::Part { start, end } => {
            let hits = state.hit(&req.path_for_log());
            let len = end - start + 1;
            match f.seek(SeekFrom::Start(start)) {
                Ok(_) => common(Reply::new(206, Body::Reader(reader(f, len), Some(len))))
                    .header("Content-Type", ctype)
                    .header("Content-Range", format!("bytes {start}-{end}/{size}"))
                    .counted(hits),
                Err(_) => not_found(),
            }
        }
    }
}

/// The body reader for `len` bytes of `f` from its current position.
/// tiny_http's writer hides the socket, so std's sendfile path cannot apply;
/// a large buffer makes `io::copy` move 256 KiB per system call instead of 8.
fn reader(f: File, len: u64) -> Box<dyn Read + Send> {
    const BIG: usize = 256 * 1024;
    if len > 64 * 1024 {
        Box::new(std::io::BufReader::with_capacity(BIG, f.take(len)))
    } else {
        Box::new(f.take(len))
    }
}

fn listing(dir: &Path, is_root: bool, req: &Req) -> Reply {
    let Ok(rd) = fs::read_dir(dir) else {
        return not_found();
    };
    let mut names: Vec<(String, bool)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name == zync_proto::STATE_DIR_NAME {
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
    if !is_root {
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
