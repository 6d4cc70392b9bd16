//! `zync-net`: the only crate of the workspace that touches ZeroMQ.
//!
//! It owns every socket Zync opens: one constructor per role
//! ([`Context::router`], [`Context::publisher`], [`Context::subscriber`],
//! [`Context::dealer`], [`Context::requester`]), each with the project's
//! defaults (linger 0, a bounded incoming message size, TCP keepalive), so no
//! crate can open a socket configured another way; the request client that
//! never hangs ([`TrackerClient`], [`ask`]); and the endpoint helpers. Other
//! crates see bytes and frames, never a `zmq` type.
//!
//! Security lives here too, in one place: a [`Context`] made with
//! [`Context::secured`] puts CURVE, with key pairs derived from one
//! [`ClusterKey`], on every socket it makes, and admits only members
//! through its ZAP handler (the guide's Ironhouse).
//!
//! It also holds the process plumbing every binary shares: the log setup
//! ([`logging`]), the metrics endpoint ([`metrics`]) and the shutdown token
//! ([`Shutdown`]).

mod client;
mod endpoint;
pub mod logging;
pub mod metrics;
mod monitor;
mod security;
mod shutdown;
mod socket;

pub use client::{ask, tracker_endpoints, Choice, NetError, TrackerClient};
pub use endpoint::{host_of, pick_endpoint, port_of, reachable, tcp};
pub use security::{warn_if_shared, ClusterKey, KeyArgs, KeyError, KeyPair, TrustError};
pub use shutdown::Shutdown;
pub use socket::{has_curve, wait_any, Context, Error, Message, SecureError, Socket};
