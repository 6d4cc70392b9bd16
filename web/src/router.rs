//! The router: the one place that knows which face answers which request,
//! and which requests must prove themselves first. It sits above the static
//! face ([`crate::statics`]), the cluster face ([`crate::cluster`]) and the
//! login ([`crate::auth`]); none of them knows of the others or of the
//! connection handling (`server`), which only calls [`Router::route`].
//!
//! `/metrics` (the process's Prometheus series) is answered here, before
//! either face, behind the login when there is one.
//!
//! The static face is public. The cluster face (and `/login`, `/logout`)
//! refuses a state-changing request from another site's page, and, with a
//! password set, any request without a valid credential.

use std::sync::Arc;

use crate::auth::{self, Auth};
use crate::cluster::Cluster;
use crate::http::{self, Target, TargetError, MAX_URI};
use crate::reply::Reply;
use crate::request::Req;
use crate::state::State;

/// Both faces and their shared state.
pub struct Router {
    /// The shared state.
    pub state: State,
    /// The cluster face, when joined to a tracker.
    pub cluster: Option<Arc<Cluster>>,
    /// The login in front of the cluster face; `None` leaves it open.
    pub auth: Option<Auth>,
}

impl Router {
    /// A router over `state`, with the cluster face if there is one,
    /// behind `auth` if given.
    pub fn new(state: State, cluster: Option<Arc<Cluster>>, auth: Option<Auth>) -> Router {
        Router {
            state,
            cluster,
            auth,
        }
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
        if target
            .path
            .as_ref()
            .is_some_and(|p| p.as_str() == "metrics")
        {
            return self.metrics(req);
        }
        if let Some(c) = &self.cluster {
            if let Some(reply) = self.cluster_face(c, req, rq, &target) {
                return reply;
            }
        }
        crate::statics::serve(state, req, &target)
    }

    /// The login routes and the cluster face, each behind its guards;
    /// `None` for a path neither answers.
    fn cluster_face(
        &self,
        c: &Cluster,
        req: &Req,
        rq: &mut tiny_http::Request,
        target: &Target,
    ) -> Option<Reply> {
        let changes = !req.is_get_or_head();
        if changes && !auth::same_origin(req) && self.guards(c, target) {
            return Some(auth::cross_origin());
        }
        if let Some(a) = &self.auth {
            match (target.path.as_ref().map(|p| p.as_str()), &req.method) {
                (Some("login"), tiny_http::Method::Post) => return Some(a.login(req, rq)),
                (Some("login"), _) if !changes => return Some(a.login_page(req)),
                (Some("logout"), tiny_http::Method::Post) => return Some(a.logout(req)),
                (Some("login" | "logout"), _) => {
                    return Some(
                        Reply::page(405, "Method Not Allowed", "POST the form here.")
                            .header("Allow", "GET, HEAD, POST"),
                    )
                }
                _ => {}
            }
        } else if target.path.as_ref().is_some_and(|p| p.as_str() == "logout") && changes {
            // The dashboard's "Log out" with no login in effect: nothing to end.
            return Some(Reply::new(303, crate::reply::Body::Empty).header("Location", "/cluster"));
        }
        if !c.owns(&self.state, target) {
            return None;
        }
        if let Some(a) = &self.auth {
            if let Err(refusal) = a.admit(req) {
                return Some(refusal);
            }
        }
        c.route(&self.state, req, rq, target)
    }

    /// `/metrics`: every series of the process in the Prometheus text
    /// format, behind the login when there is one (a scraper sends the
    /// password as a bearer token or with basic auth).
    fn metrics(&self, req: &Req) -> Reply {
        if let Some(a) = &self.auth {
            if let Err(refusal) = a.admit(req) {
                return refusal;
            }
        }
        if !req.is_get_or_head() {
            return Reply::page(405, "Method Not Allowed", "GET or HEAD.")
                .header("Allow", "GET, HEAD");
        }
        if let Some(c) = &self.cluster {
            c.note_metrics();
        }
        Reply::new(200, crate::reply::Body::Bytes(zync_net::metrics::render()))
            .header("Content-Type", zync_net::metrics::CONTENT_TYPE)
            .header("Cache-Control", "no-store")
    }

    /// True for the paths the cross-site check covers.
    fn guards(&self, c: &Cluster, target: &Target) -> bool {
        let login = matches!(
            target.path.as_ref().map(|p| p.as_str()),
            Some("login" | "logout")
        );
        (login && self.auth.is_some()) || c.owns(&self.state, target)
    }
}
