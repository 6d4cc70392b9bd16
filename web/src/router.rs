//! The router: the one place that knows which face answers which request.
//! It sits above the static face ([`crate::statics`]) and the cluster face
//! ([`crate::cluster`]); neither knows of the other or of the connection
//! handling (`server`), which only calls [`Router::route`].

use std::sync::Arc;

use crate::cluster::Cluster;
use crate::http::{self, TargetError, MAX_URI};
use crate::reply::Reply;
use crate::request::Req;
use crate::state::State;

/// Both faces and their shared state.
pub struct Router {
    /// The shared state.
    pub state: State,
    /// The cluster face, when joined to a tracker.
    pub cluster: Option<Arc<Cluster>>,
}

impl Router {
    /// A router over `state`, with the cluster face if there is one.
    pub fn new(state: State, cluster: Option<Arc<Cluster>>) -> Router {
        Router { state, cluster }
    }

    /// Routes one request: the cluster face first (its paths: `/cluster`,
    /// `/api/`, `/files/`, `/objects/`, and `/` without an `index.html`), then
    /// the static folder.
    pub fn route(&self, req: &Req, rq: &mut tiny_http::Request) -> Reply {
        let state = &self.state;
        if req.url.len() > MAX_URI {
            return Reply::page(414, "URI Too Long", "The request target is too long.");
        }
        if let tiny_http::Method::NonStandard(m) = &req.method {
            return Reply::page(
                501,
                "Not Implemented",
                &format!("Method {m} is not supported."),
            );
        }
        let target = match http::decode_target(&req.url) {
            Ok(t) => t,
            Err(TargetError::Bad(why)) => return Reply::page(400, "Bad Request", why),
            Err(TargetError::Hidden) => return crate::statics::not_found(),
        };
        if let Some(c) = &self.cluster {
            if let Some(reply) = c.route(state, req, rq, &target) {
                return reply;
            }
        }
        crate::statics::serve(state, req, &target)
    }
}
