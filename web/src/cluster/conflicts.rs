//! The conflict view's actions: a line diff of two small text files, and
//! keeping either side of a conflict.
//!
//! Keeping a side is an ordinary edit of this member's folder, which its
//! embedded peer reports like any other: keeping the copy's content writes
//! it (read from the member's own copy, hashed as it is copied) over the
//! original (every peer then keeps the replaced content among
//! its versions), and either way the copy is deleted (likewise kept as a
//! version where it is deleted). Both sides are named with the content the
//! page showed: if either changed since, nothing is done (409).

use std::io::{self, Read};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tracing::info;
use zync_peer::client::{FetchError, Fetcher};
use zync_proto::{Hash, RelPath};

use super::{Cluster, StreamReader};
use crate::reply::Reply;

/// Largest file the conflict view diffs.
pub const MAX_DIFF: u64 = 256 * 1024;

/// One line of a diff: `-` (only in the first file), `+` (only in the
/// second), ` ` (both), or `…` (unchanged lines left out).
#[derive(Debug, Serialize, PartialEq)]
pub struct DiffLine {
    /// `-`, `+`, ` ` or `…`.
    pub tag: &'static str,
    /// The line, without its end.
    pub text: String,
}

/// The lines that differ between `a` and `b`, with three lines of context.
pub fn diff_lines(a: &str, b: &str) -> Vec<DiffLine> {
    let diff = similar::TextDiff::from_lines(a, b);
    let mut out = Vec::new();
    for (i, group) in diff.grouped_ops(3).iter().enumerate() {
        if i > 0 {
            out.push(DiffLine {
                tag: "…",
                text: String::new(),
            });
        }
        for op in group {
            for change in diff.iter_changes(op) {
                let tag = match change.tag() {
                    similar::ChangeTag::Delete => "-",
                    similar::ChangeTag::Insert => "+",
                    similar::ChangeTag::Equal => " ",
                };
                let text = change.value().trim_end_matches(['\n', '\r']).to_owned();
                out.push(DiffLine { tag, text });
            }
        }
    }
    out
}

/// Why a side of a conflict could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The request names no conflict copy, or a side that is not one.
    #[error("{0}")]
    Bad(String),
    /// A side changed since the page showed it, or this member does not
    /// hold the copy yet.
    #[error("{0}")]
    Changed(String),
    /// The cluster could not be asked, or a holder could not send.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// This member's folder could not be written.
    #[error("cannot change the folder: {0}")]
    Io(#[from] io::Error),
}

impl ResolveError {
    /// The HTTP answer.
    pub fn reply(&self) -> Reply {
        let status = match self {
            ResolveError::Bad(_) => 400,
            ResolveError::Changed(_) => 409,
            ResolveError::Fetch(_) | ResolveError::Io(_) => 503,
        };
        Reply::json(status, &serde_json::json!({"error": self.to_string()}))
    }
}

/// What to keep of a conflict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Keep {
    /// The file at the original path, as it is.
    Original,
    /// The conflict copy's content, at the original path.
    Copy,
}

impl Cluster {
    /// The content of the current file at `path` when it is at most `max`
    /// bytes; `None` when larger (or deleted).
    fn small_content(&self, path: &RelPath, max: u64) -> Result<Option<Vec<u8>>, FetchError> {
        let mut f = self.fetcher();
        let e = match f.lookup(path) {
            Ok(e) if !e.deleted => e,
            Ok(_) | Err(FetchError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if e.size > max {
            return Ok(None);
        }
        let blocks = e.spans().count() as u64;
        let mut reader = StreamReader {
            stream: f.stream(&e, 0, blocks)?,
            left: e.size,
            buf: Default::default(),
            pos: 0,
        };
        let mut out = Vec::with_capacity(e.size as usize);
        reader.read_to_end(&mut out).map_err(FetchError::Io)?;
        Ok(Some(out))
    }

    /// `GET /api/diff?a=PATH&b=PATH`: the line diff of two text files of at
    /// most [`MAX_DIFF`] bytes; `{"text": false}` for others.
    pub(super) fn diff(&self, a: &str, b: &str) -> Reply {
        let (Ok(a), Ok(b)) = (RelPath::new(a), RelPath::new(b)) else {
            return Reply::json(
                400,
                &serde_json::json!({"error": "give two paths: a and b"}),
            );
        };
        let read = |p: &RelPath| self.small_content(p, MAX_DIFF);
        match (read(&a), read(&b)) {
            (Ok(Some(x)), Ok(Some(y))) => match (String::from_utf8(x), String::from_utf8(y)) {
                (Ok(x), Ok(y)) => Reply::json(
                    200,
                    &serde_json::json!({"text": true, "lines": diff_lines(&x, &y)}),
                ),
                _ => Reply::json(200, &serde_json::json!({"text": false})),
            },
            (Ok(_), Ok(_)) => Reply::json(200, &serde_json::json!({"text": false})),
            (Err(e), _) | (_, Err(e)) => {
                Reply::json(503, &serde_json::json!({"error": e.to_string()}))
            }
        }
    }

    /// Keeps one side of the conflict whose copy is `copy`, which the page
    /// showed with content `copy_sha` (and the original with `original_sha`,
    /// empty if it had none).
    pub(super) fn resolve_conflict(
        &self,
        copy: &str,
        keep: Keep,
        copy_sha: &str,
        original_sha: &str,
    ) -> Result<RelPath, ResolveError> {
        let copy = RelPath::new(copy).map_err(|e| ResolveError::Bad(e.to_string()))?;
        let (original, _) = copy
            .conflict_original()
            .ok_or_else(|| ResolveError::Bad(format!("{copy} is not a conflict copy")))?;
        let mut f = self.fetcher();
        let current = |f: &mut Fetcher, p: &RelPath| match f.lookup(p) {
            Ok(e) if !e.deleted => Ok(Some(e)),
            Ok(_) | Err(FetchError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        };
        let copy_entry = current(&mut f, &copy)?
            .filter(|e| e.sha256.to_hex() == copy_sha)
            .ok_or_else(|| {
                ResolveError::Changed(format!(
                    "{copy} changed since the page showed it; look again"
                ))
            })?;
        let shown = current(&mut f, &original)?
            .map(|e| e.sha256.to_hex())
            .unwrap_or_default();
        if shown != original_sha {
            return Err(ResolveError::Changed(format!(
                "{original} changed since the page showed it; look again"
            )));
        }
        // The copy is read, and removed, here, where this member holds it:
        // it must be the content the page showed, never an edit made since.
        let mut local = match self.data.open(&copy) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ResolveError::Changed(format!(
                    "{copy} has not reached this node yet; try again in a moment"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let differs = || {
            ResolveError::Changed(format!(
                "{copy} here differs from the cluster's; look again in a moment"
            ))
        };
        match keep {
            Keep::Copy => {
                // Copied and hashed in one read; placed only if it hashed right.
                let (tmp, _, sha) = self
                    .receive(&mut local, u64::MAX)
                    .map_err(|e| ResolveError::Io(e.into_io()))?;
                if sha != copy_entry.sha256 {
                    return Err(differs());
                }
                // The kept content keeps its own mode too.
                self.place(tmp, &original, copy_entry.mode)
                    .map_err(|e| ResolveError::Io(e.into_io()))?;
            }
            Keep::Original => {
                let mut h = Sha256::new();
                io::copy(&mut local, &mut h)?;
                if Hash::from(h) != copy_entry.sha256 {
                    return Err(differs());
                }
            }
        }
        self.data.remove_and_prune(&copy)?;
        let kept = match keep {
            Keep::Original => "original",
            Keep::Copy => "copy",
        };
        info!(event = %"conflict_resolved", path = %original, copy = %copy, kept = %kept,
              "conflict resolved from the dashboard");
        Ok(original)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diff_shows_changed_lines_with_context_and_elides_the_rest() {
        let a: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let b = a.replace("line 2\n", "line two\n").replace("line 19\n", "");
        let d = diff_lines(&a, &b);
        let tags: String = d.iter().map(|l| l.tag).collect();
        assert!(
            d.contains(&DiffLine {
                tag: "-",
                text: "line 2".into()
            }),
            "{d:?}"
        );
        assert!(
            d.contains(&DiffLine {
                tag: "+",
                text: "line two".into()
            }),
            "{d:?}"
        );
        assert!(
            d.contains(&DiffLine {
                tag: "-",
                text: "line 19".into()
            }),
            "{d:?}"
        );
        assert!(tags.contains('…'), "unchanged middle left out: {tags}");
        assert!(!d.iter().any(|l| l.text == "line 10"), "{d:?}");
        assert!(diff_lines("same\n", "same\n").is_empty());
    }
}
