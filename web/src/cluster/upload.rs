//! Uploads: `PUT /files/<path>` and multipart `POST /files`. A body is
//! streamed into a temp file under the member's state folder, hashed as it
//! comes, bounded by `--max-upload`, and renamed into the data folder,
//! where the embedded member picks it up as a local change.

use std::io::{self, Read, Write};

use crossbeam_channel::{bounded, Receiver};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use zync_proto::{Hash, RelPath};

use super::Cluster;
use crate::http;
use crate::reply::Reply;
use crate::request::Req;
use crate::state::State;

impl Cluster {
    pub(super) fn upload_put(
        &self,
        state: &State,
        req: &Req,
        rq: &mut tiny_http::Request,
        path: &RelPath,
    ) -> Reply {
        let max = state.limits.max_upload;
        if declared_too_large(req, max) {
            return too_large(max);
        }
        match self
            .receive(rq.as_reader(), max)
            .and_then(|(tmp, size, sha)| self.place(tmp, path, None).map(|_| (size, sha)))
        {
            Ok((size, sha)) => {
                info!(event = %"uploaded", path = %path, bytes = size, sha256 = %sha.short(), "upload joined the cluster");
                Reply::json(201, &serde_json::json!({"path": path.as_str(), "size": size, "sha256": sha.to_hex()}))
                    .header("Location", format!("/files/{}", http::encode_path(path.as_str())))
            }
            Err(e) => e.reply(max),
        }
    }

    pub(super) fn upload_multipart(
        &self,
        state: &State,
        req: &Req,
        rq: &mut tiny_http::Request,
    ) -> Reply {
        let max = state.limits.max_upload;
        if declared_too_large(req, max) {
            return too_large(max);
        }
        let Some(boundary) = req
            .header("Content-Type")
            .and_then(|ct| multer::parse_boundary(ct).ok())
        else {
            return Reply::page(
                400,
                "Bad Request",
                "expected multipart/form-data with a boundary",
            );
        };
        // multer wants a Send stream and tiny_http's reader is not Send: read
        // here, parse on a scoped thread, with a small bounded queue between.
        let result = std::thread::scope(|s| {
            let (tx, rx) = bounded::<Result<bytes::Bytes, io::Error>>(4);
            let parser = s.spawn(move || self.parse_multipart(rx, boundary, max));
            let body = rq.as_reader();
            for chunk in (ChunkIter { r: body }) {
                if tx.send(chunk).is_err() {
                    break; // the parser is done (or gave up)
                }
            }
            drop(tx);
            parser
                .join()
                .unwrap_or_else(|_| Err(UploadError::Bad("multipart parser failed".into())))
        });
        let files = match result {
            Ok(files) if !files.is_empty() => files,
            Ok(_) => return Reply::page(400, "Bad Request", "no file in the form"),
            Err(e) => return e.reply(max),
        };
        let mut done = Vec::new();
        for (tmp, path, size, sha) in files {
            if let Err(e) = self.place(tmp, &path, None) {
                warn!(path = %path, error = ?e, "upload failed");
                return Reply::page(500, "Internal Server Error", "could not store the upload");
            }
            info!(event = %"uploaded", path = %path, bytes = size, sha256 = %sha.short(), "upload joined the cluster");
            done.push(
                serde_json::json!({"path": path.as_str(), "size": size, "sha256": sha.to_hex()}),
            );
        }
        if req
            .header("Accept")
            .is_some_and(|a| a.contains("text/html"))
        {
            return Reply::page(303, "See Other", "Uploaded.").header("Location", "/cluster/");
        }
        Reply::json(201, &done)
    }

    fn parse_multipart(
        &self,
        chunks: Receiver<Result<bytes::Bytes, io::Error>>,
        boundary: String,
        max: u64,
    ) -> Result<Vec<(tempfile::TempPath, RelPath, u64, Hash)>, UploadError> {
        let stream = futures_util::stream::iter(chunks);
        let constraints = multer::Constraints::new()
            .size_limit(multer::SizeLimit::new().whole_stream(max.saturating_add(64 * 1024)));
        let mut mp = multer::Multipart::with_constraints(stream, boundary, constraints);
        pollster::block_on(async {
            let mut dir = String::new();
            let mut out = Vec::new();
            while let Some(mut field) = mp.next_field().await.map_err(UploadError::from_multer)? {
                match (
                    field.name().map(str::to_owned),
                    field.file_name().map(str::to_owned),
                ) {
                    (Some(n), None) if n == "path" => {
                        dir = field
                            .text()
                            .await
                            .map_err(UploadError::from_multer)?
                            .trim()
                            .trim_matches('/')
                            .to_owned();
                    }
                    (_, Some(fname)) => {
                        let base = fname.rsplit(['/', '\\']).next().unwrap_or("").to_owned();
                        let full = if dir.is_empty() {
                            base
                        } else {
                            format!("{dir}/{base}")
                        };
                        let path =
                            RelPath::new(full).map_err(|e| UploadError::Bad(e.to_string()))?;
                        let mut tmp = tempfile::NamedTempFile::new_in(&self.uploads)?;
                        let (mut size, mut h) = (0u64, Sha256::new());
                        while let Some(chunk) =
                            field.chunk().await.map_err(UploadError::from_multer)?
                        {
                            size += chunk.len() as u64;
                            if size > max {
                                return Err(UploadError::TooLarge);
                            }
                            h.update(&chunk);
                            tmp.write_all(&chunk)?;
                        }
                        tmp.as_file().sync_data()?;
                        out.push((tmp.into_temp_path(), path, size, Hash::from(h)));
                    }
                    _ => {}
                }
            }
            Ok(out)
        })
    }

    /// Streams a body into a temp file, hashing it; refuses more than `max` bytes.
    pub(super) fn receive(
        &self,
        body: &mut dyn Read,
        max: u64,
    ) -> Result<(tempfile::TempPath, u64, Hash), UploadError> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.uploads)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(UploadError::Bad(format!("body: {e}"))),
            };
            size += n as u64;
            if size > max {
                return Err(UploadError::TooLarge);
            }
            h.update(&buf[..n]);
            tmp.write_all(&buf[..n])?;
        }
        tmp.as_file().sync_data()?;
        Ok((tmp.into_temp_path(), size, h.into()))
    }

    /// Renames a finished upload into the data folder, where the member
    /// picks it up, with `mode` masked by the umask (`None`: that of any
    /// new file; never the temp file's 0600).
    pub(super) fn place(
        &self,
        tmp: tempfile::TempPath,
        path: &RelPath,
        mode: Option<u32>,
    ) -> Result<(), UploadError> {
        use std::os::unix::fs::PermissionsExt;
        let mode = zync_peer::fsops::mode_for(mode);
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
            .map_err(UploadError::Io)?;
        self.data
            .place(tmp, path)
            .map(|_| ())
            .map_err(UploadError::Io)
    }
}

/// True when the request announces a body larger than `max`.
fn declared_too_large(req: &Req, max: u64) -> bool {
    req.header("Content-Length")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > max)
}

fn too_large(max: u64) -> Reply {
    Reply::page(
        413,
        "Content Too Large",
        &format!("Uploads are limited to {max} bytes."),
    )
}

#[derive(Debug)]
pub(super) enum UploadError {
    TooLarge,
    Bad(String),
    Io(io::Error),
}

impl From<io::Error> for UploadError {
    fn from(e: io::Error) -> Self {
        UploadError::Io(e)
    }
}

impl UploadError {
    /// As an I/O error, for callers that are not uploads.
    pub(super) fn into_io(self) -> io::Error {
        match self {
            UploadError::TooLarge => io::Error::other("too large"),
            UploadError::Bad(why) => io::Error::other(why),
            UploadError::Io(e) => e,
        }
    }

    /// The response for a failed upload.
    fn reply(self, max: u64) -> Reply {
        match self {
            UploadError::TooLarge => too_large(max),
            UploadError::Bad(why) => Reply::page(400, "Bad Request", &why),
            UploadError::Io(e) => {
                warn!(error = %e, "upload failed");
                Reply::page(500, "Internal Server Error", "could not store the upload")
            }
        }
    }

    fn from_multer(e: multer::Error) -> Self {
        match e {
            multer::Error::StreamSizeExceeded { .. } | multer::Error::FieldSizeExceeded { .. } => {
                UploadError::TooLarge
            }
            other => UploadError::Bad(format!("bad multipart body: {other}")),
        }
    }
}

/// A blocking reader as a stream of chunks, for multer.
struct ChunkIter<'a> {
    r: &'a mut dyn Read,
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<bytes::Bytes, io::Error>;
    fn next(&mut self) -> Option<Self::Item> {
        let mut buf = vec![0u8; 64 * 1024];
        match self.r.read(&mut buf) {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(Ok(bytes::Bytes::from(buf)))
            }
            Err(e) => Some(Err(e)),
        }
    }
}
