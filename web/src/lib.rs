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
