//! Kept versions on the dashboard: what remote changes replaced or deleted
//! in this member's folder (its `.zync/versions`, the same store as
//! `zync-peer versions`), and putting one back. A restore is an ordinary
//! local change of the member, which every peer syncs; what it replaces
//! is kept in turn.

use serde::Serialize;
use tracing::info;
use zync_peer::versions::{Kept, Reason, RestoreError};

use super::Cluster;
use crate::reply::Reply;

/// Most kept versions one answer lists (newest first).
const MAX_ROWS: usize = 200;

/// One kept version as the page shows it.
#[derive(Serialize)]
struct Row<'a> {
    path: &'a str,
    /// A string: nanoseconds since the epoch do not fit a JavaScript number.
    kept_at_ns: String,
    kept_at: String,
    size: u64,
    sha256: &'a str,
    replaced_by: &'a str,
    reason: Reason,
    /// No current file has this path: the file is deleted.
    gone: bool,
}

impl Cluster {
    /// `GET /api/versions?dir=D`: the newest kept versions at or below `D`
    /// (all without it), newest first, at most 200.
    pub(super) fn kept_versions(&self, dir: &str) -> Reply {
        let under = dir.trim_matches('/');
        let mut all = match self.versions.list((!under.is_empty()).then_some(under)) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                return Reply::json(400, &serde_json::json!({"error": e.to_string()}))
            }
            Err(e) => {
                return Reply::json(
                    500,
                    &serde_json::json!({"error": format!("cannot read the kept versions: {e}")}),
                )
            }
        };
        all.sort_by_key(|k| std::cmp::Reverse(k.kept_at_ns));
        let view = self.views.get(&self.client).ok();
        let rows: Vec<Row> = all
            .iter()
            .take(MAX_ROWS)
            .map(|k| Row {
                path: &k.path,
                kept_at_ns: k.kept_at_ns.to_string(),
                kept_at: humantime::format_rfc3339_seconds(k.kept_at()).to_string(),
                size: k.size,
                sha256: &k.sha256,
                replaced_by: &k.replaced_by,
                reason: k.reason,
                gone: view.as_ref().is_some_and(|v| v.file(&k.path).is_none()),
            })
            .collect();
        Reply::json(
            200,
            &serde_json::json!({"versions": rows, "total": all.len()}),
        )
    }

    /// `POST /api/restore` (form: `path`, `kept_at_ns`, `sha256`): puts that
    /// kept version back at its path.
    pub(super) fn restore_version(&self, path: &str, kept_at_ns: &str, sha256: &str) -> Reply {
        let listed = match self.versions.list(Some(path)) {
            Ok(v) => v,
            Err(e) => return Reply::json(500, &serde_json::json!({"error": e.to_string()})),
        };
        let Some(k): Option<&Kept> = listed.iter().find(|k| {
            k.path == path && k.kept_at_ns.to_string() == kept_at_ns && k.sha256 == sha256
        }) else {
            return Reply::json(
                404,
                &serde_json::json!({"error": format!("{path}: no such kept version here (pruned?)")}),
            );
        };
        match self.versions.restore(&self.data, k, None) {
            Ok(_) => {
                self.views.changed();
                info!(event = %"restored", path = %k.path, bytes = k.size, kept_at = %humantime::format_rfc3339_seconds(k.kept_at()),
                      "kept version restored from the dashboard");
                Reply::json(200, &serde_json::json!({"path": k.path, "size": k.size}))
            }
            Err(e @ RestoreError::Damaged { .. }) => {
                Reply::json(409, &serde_json::json!({"error": e.to_string()}))
            }
            Err(e) => Reply::json(500, &serde_json::json!({"error": e.to_string()})),
        }
    }
}
