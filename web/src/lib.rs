//! zync-web: a static HTTP/1.1 server on tiny_http, and the cluster's HTTP face.
//!
//! Without a tracker it serves a folder (GET/HEAD, index.html, listings,
//! validators, conditional and range requests) and nothing else. With one,
//! it also joins the cluster as a member ([`cluster`]): a dashboard, JSON
//! APIs, live sync events, verified downloads from the peers and uploads
//! that every peer syncs. [`server`] owns the connection handling and what
//! tiny_http leaves to its user (timeouts, bounded threads, accept errors);
//! it hands each request to the [`router`], which picks the face. The
//! faces share [`state`] and see a request as a [`request::Req`].

pub mod auth;
pub mod cluster;
pub mod http;
pub mod metrics;
pub mod reply;
pub mod request;
pub mod router;
pub mod server;
pub mod state;
pub mod statics;

pub use router::Router;
pub use state::{Limits, State};

/// Why a static root and a cluster folder cannot be served together.
#[derive(Debug, thiserror::Error)]
pub enum RootsError {
    /// The cluster folder cannot be made or resolved.
    #[error("cluster folder {path}: {source}")]
    Data {
        /// The folder.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// One is inside the other.
    #[error(
        "--data {data} and --root {root} overlap: the static root would publish the cluster's \
         files and its index without login; give them folders apart"
    )]
    Overlap {
        /// The static root (canonical).
        root: std::path::PathBuf,
        /// The cluster folder (canonical).
        data: std::path::PathBuf,
    },
}

/// Checks that the static root `root` (canonical) and the cluster folder
/// `data` (made if missing) do not overlap.
pub fn separate_roots(root: &std::path::Path, data: &std::path::Path) -> Result<(), RootsError> {
    let err = |source| RootsError::Data {
        path: data.to_owned(),
        source,
    };
    std::fs::create_dir_all(data).map_err(err)?;
    let data = data.canonicalize().map_err(err)?;
    if data.starts_with(root) || root.starts_with(&data) {
        return Err(RootsError::Overlap {
            root: root.to_owned(),
            data,
        });
    }
    Ok(())
}
