//! The cluster's HTTP face (with `--tracker`).
//!
//! zync-web joins the cluster as a member: an embedded peer keeps its data
//! folder in sync, so an upload written there reaches every peer. Downloads
//! (`/files/…`, `/objects/…`) are streamed from a live holder over the
//! cluster's own transfer protocol, each block verified before it is sent.
//!
//! Routes: `/` (when the root has no index.html) and `/cluster/`: dashboard;
//! `/api/files`, `/api/peers`, `/api/hits`, `/api/resolve/<path>`,
//! `/api/events` (server-sent events); the dashboard's `/api/browse`,
//! `/api/status`, `/api/conflicts`, `/api/diff`, `POST /api/keep`,
//! `/api/versions` and `POST /api/restore` ([`view`], `conflicts`, `kept`); `GET|HEAD|PUT /files/<path>`, `POST /files`
//! (multipart); `GET|HEAD /objects/<sha256>`.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender};
use serde::Serialize;
use zync_peer::client::{Block, BlockStream, Client, ClientError, FetchError, Fetcher};
use zync_peer::Observed;
use zync_proto::{Event, FileEntry, Hash, RelPath};

use crate::http::{self, Range, Target};
use crate::reply::{Body, Reply};
use crate::request::Req;
use crate::state::State;

mod conflicts;
mod kept;
mod upload;
pub mod view;

const DASHBOARD: &str = include_str!("../dashboard.html");

/// The cluster face's state.
pub struct Cluster {
    client: Client,
    /// The member's folder, where uploads are placed like any user's write.
    data: zync_peer::fsops::Root,
    uploads: PathBuf,
    feeds: Mutex<Vec<Sender<String>>>,
    /// The listing the dashboard's pages and the metrics are built from.
    views: view::Views,
    /// The member's kept versions (what remote changes replaced or deleted).
    versions: zync_peer::versions::Versions,
}

/// How zync-web joins the cluster.
pub struct Join {
    /// Tracker `HOST:PORT`.
    pub tracker: String,
    /// Its own cluster folder.
    pub data: PathBuf,
    /// Its member name.
    pub name: String,
    /// Where its block server listens.
    pub listen: String,
    /// How peers reach it.
    pub advertise: Option<String>,
    /// The sockets' context (secured with the cluster key, or not).
    pub context: zync_net::Context,
}

/// Why zync-web could not join the cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// Its cluster folder is unusable, or a thread could not start.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Its embedded member could not start (say, its port is taken): an
    /// upload would then be kept where nobody syncs it.
    #[error("the embedded cluster member cannot start")]
    Member(#[from] zync_peer::StartError),
}

impl Cluster {
    /// Starts the embedded member (which stops when `shutdown` fires) and
    /// the event feed. Fails if the member cannot start.
    pub fn start(join: Join, shutdown: zync_net::Shutdown) -> Result<Arc<Cluster>, JoinError> {
        std::fs::create_dir_all(&join.data)?;
        let data = join.data.canonicalize()?;
        let uploads = data.join(zync_proto::STATE_DIR_NAME).join("uploads");
        std::fs::create_dir_all(&uploads)?;
        let (obs_tx, obs_rx) = bounded::<Observed>(1024);
        let cfg = zync_peer::Config {
            dir: data.clone(),
            tracker: join.tracker.clone(),
            listen: join.listen,
            advertise: join.advertise,
            name: join.name,
            workers: 4,
            backlog: zync_peer::DEFAULT_BACKLOG,
            debounce: Duration::from_millis(50),
            rescan: zync_peer::DEFAULT_RESCAN,
            keep_versions: zync_peer::versions::DEFAULT_KEEP,
            context: join.context.clone(),
            observer: Some(obs_tx),
        };
        let member = zync_peer::start(cfg, shutdown)?;
        std::thread::Builder::new()
            .name("zync-web-member".into())
            .spawn(move || member.wait())?;
        let root = zync_peer::fsops::Root::new(data)?;
        let c = Arc::new(Cluster {
            client: Client::new(&join.context, &join.tracker),
            versions: zync_peer::versions::Versions::new(&root, zync_peer::versions::DEFAULT_KEEP),
            data: root,
            uploads,
            feeds: Mutex::new(Vec::new()),
            views: view::Views::new(),
        });
        let c2 = Arc::clone(&c);
        std::thread::Builder::new()
            .name("zync-web-feed".into())
            .spawn(move || c2.broadcast(obs_rx))?;
        Ok(c)
    }

    fn broadcast(&self, rx: Receiver<Observed>) {
        for seen in rx {
            let n = match seen {
                Observed::Note(n) => *n,
                // Changes came in a snapshot, not one by one: pages take
                // everything again.
                Observed::Snapshot => {
                    self.views.changed();
                    self.send_to_feeds(serde_json::json!({"event": "resync"}).to_string());
                    continue;
                }
            };
            let line = match &n.event {
                Event::FileChanged { file } => serde_json::json!({
                    "event": if file.entry.deleted { "deleted" } else { "changed" },
                    "path": file.entry.path.as_str(), "size": file.entry.size,
                    "by": file.entry.modified_by, "sha256": file.entry.sha256.to_hex(),
                }),
                Event::PeerJoined { peer } => {
                    serde_json::json!({"event": "peer_joined", "peer": peer.name})
                }
                Event::PeerLeft { name } => serde_json::json!({"event": "peer_left", "peer": name}),
                Event::Hugz | Event::Forgotten { .. } => continue,
            };
            self.views.changed();
            self.send_to_feeds(line.to_string());
        }
    }

    /// Passes an event's JSON to every open event stream.
    fn send_to_feeds(&self, text: String) {
        if let Ok(mut feeds) = self.feeds.lock() {
            // A feed that is gone or not keeping up is dropped.
            feeds.retain(|f| f.try_send(text.clone()).is_ok());
        }
    }

    /// True for the paths this face answers (everything [`Cluster::route`]
    /// handles): the router guards them with the login.
    pub fn owns(&self, state: &State, target: &Target) -> bool {
        let first = target.path.as_ref().and_then(|p| p.components().next());
        match first {
            None => !root_has_index(state),
            Some(c) => {
                matches!(c, "api" | "files" | "objects")
                    || (c == "cluster"
                        && target
                            .path
                            .as_ref()
                            .is_some_and(|p| p.as_str() == "cluster"))
            }
        }
    }

    /// Handles the routes this face owns; `None` means "not mine".
    pub fn route(
        &self,
        state: &State,
        req: &Req,
        rq: &mut tiny_http::Request,
        target: &Target,
    ) -> Option<Reply> {
        let comps: Vec<&str> = target
            .path
            .as_ref()
            .map(|p| p.components().collect())
            .unwrap_or_default();
        let rest = |n: usize| -> Option<RelPath> { RelPath::new(comps.get(n..)?.join("/")).ok() };
        let get = req.is_get_or_head();
        Some(match comps.as_slice() {
            [] if !root_has_index(state) => self.only_get(req, dashboard),
            ["cluster"] => self.only_get(req, dashboard),
            ["api", "files"] => self.only_get(req, || self.api(self.client.files())),
            ["api", "peers"] => self.only_get(req, || self.api(self.client.peers())),
            ["api", "hits"] => self.only_get(req, || Reply::json(200, &state.hits())),
            ["api", "events"] => self.only_get(req, || self.events()),
            ["api", "browse"] => self.only_get(req, || self.browse(req)),
            ["api", "status"] => self.only_get(req, || self.status()),
            ["api", "conflicts"] => self.only_get(req, || self.with_view(|v| conflicts_json(&v))),
            ["api", "diff"] => self.only_get(req, || {
                let q = |k| http::query_value(&req.url, k).unwrap_or_default();
                self.diff(&q("a"), &q("b"))
            }),
            ["api", "versions"] => self.only_get(req, || {
                self.kept_versions(&http::query_value(&req.url, "dir").unwrap_or_default())
            }),
            ["api", "restore"] => match req.method {
                tiny_http::Method::Post => {
                    let form = read_form(rq);
                    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
                    self.restore_version(field("path"), field("kept_at_ns"), field("sha256"))
                }
                _ => Reply::page(405, "Method Not Allowed", "POST a form here.")
                    .header("Allow", "POST"),
            },
            ["api", "keep"] => match req.method {
                tiny_http::Method::Post => self.keep(rq),
                _ => Reply::page(405, "Method Not Allowed", "POST a form here.")
                    .header("Allow", "POST"),
            },
            ["api", "resolve", ..] if get => match rest(2) {
                Some(p) => self.resolve(&p),
                None => Reply::page(400, "Bad Request", "missing path"),
            },
            ["files"] => match req.method {
                tiny_http::Method::Post => self.upload_multipart(state, req, rq),
                _ => Reply::page(405, "Method Not Allowed", "POST a multipart form here.")
                    .header("Allow", "POST"),
            },
            ["files", ..] => match (&req.method, rest(1)) {
                (_, None) => Reply::page(400, "Bad Request", "invalid path"),
                (tiny_http::Method::Get | tiny_http::Method::Head, Some(p)) => {
                    self.download(state, req, &p)
                }
                (tiny_http::Method::Put, Some(p)) => self.upload_put(state, req, rq, &p),
                _ => Reply::page(405, "Method Not Allowed", "GET, HEAD or PUT.")
                    .header("Allow", "GET, HEAD, PUT"),
            },
            ["objects", hex] if get => match Hash::from_hex(hex) {
                Ok(h) => self.object(state, req, h),
                Err(_) => Reply::page(400, "Bad Request", "not a SHA-256 hex digest"),
            },
            ["objects", ..] | ["api", ..] => {
                Reply::page(405, "Method Not Allowed", "GET or HEAD.").header("Allow", "GET, HEAD")
            }
            _ => return None,
        })
    }

    fn only_get(&self, req: &Req, f: impl FnOnce() -> Reply) -> Reply {
        if req.is_get_or_head() {
            f()
        } else {
            Reply::page(405, "Method Not Allowed", "GET or HEAD.").header("Allow", "GET, HEAD")
        }
    }

    fn api<T: Serialize>(&self, r: Result<T, ClientError>) -> Reply {
        match r {
            Ok(v) => Reply::json(200, &v),
            Err(e) => Reply::json(503, &serde_json::json!({"error": e.to_string()})),
        }
    }

    /// Sets the cluster's metrics from a (cached) listing.
    pub fn note_metrics(&self) {
        let view = self.views.get(&self.client).ok();
        crate::metrics::metrics().set_cluster(view.as_ref().map(|v| &v.status));
    }

    fn with_view(&self, f: impl FnOnce(std::sync::Arc<view::View>) -> Reply) -> Reply {
        match self.views.get(&self.client) {
            Ok(v) => f(v),
            Err(e) => Reply::json(503, &serde_json::json!({"error": e.to_string()})),
        }
    }

    /// `GET /api/status`: every live peer's part, from the cached listing
    /// and the peers as they are now (their transfers move without any
    /// notification saying so).
    fn status(&self) -> Reply {
        let peers = match self.client.peers() {
            Ok(p) => p,
            Err(e) => return Reply::json(503, &serde_json::json!({"error": e.to_string()})),
        };
        self.with_view(
            |v| match zync_peer::cli::cluster_status(&v.files, &peers, None) {
                Ok(s) => Reply::json(200, &s),
                Err(e) => Reply::json(500, &serde_json::json!({"error": e.to_string()})),
            },
        )
    }

    /// `GET /api/browse?dir=D&q=Q&offset=N&limit=M`: a page of folder `D`
    /// (its folders and files), or of the files below it whose path holds
    /// `Q`; at most 500 files a page (100 by default).
    fn browse(&self, req: &Req) -> Reply {
        let q = |k| http::query_value(&req.url, k).unwrap_or_default();
        let offset = q("offset").parse().unwrap_or(0);
        let limit = q("limit").parse().unwrap_or(100).clamp(1, 500);
        self.with_view(|v| Reply::json(200, &v.page(&q("dir"), q("q").trim(), offset, limit)))
    }

    /// `POST /api/keep` (form: `copy`, `keep` = `original` or `copy`,
    /// `copy_sha256`, `original_sha256`): keeps one side of a conflict.
    fn keep(&self, rq: &mut tiny_http::Request) -> Reply {
        let form = read_form(rq);
        let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        let keep = match field("keep") {
            "original" => conflicts::Keep::Original,
            "copy" => conflicts::Keep::Copy,
            _ => {
                return Reply::json(
                    400,
                    &serde_json::json!({"error": "keep is original or copy"}),
                )
            }
        };
        match self.resolve_conflict(
            field("copy"),
            keep,
            field("copy_sha256"),
            field("original_sha256"),
        ) {
            Ok(path) => {
                self.views.changed();
                Reply::json(
                    200,
                    &serde_json::json!({"path": path.as_str(), "kept": field("keep")}),
                )
            }
            Err(e) => e.reply(),
        }
    }

    fn events(&self) -> Reply {
        let (tx, rx) = bounded::<String>(256);
        if let Ok(mut f) = self.feeds.lock() {
            f.push(tx);
        }
        Reply::new(200, Body::Events(rx))
    }

    fn fetcher(&self) -> Fetcher {
        self.client.fetcher()
    }

    fn resolve(&self, path: &RelPath) -> Reply {
        let mut f = self.fetcher();
        let entry = match f.lookup(path) {
            Ok(e) if !e.deleted => e,
            Ok(_) | Err(FetchError::NotFound(_)) => {
                return Reply::json(404, &serde_json::json!({"error": "no such file"}))
            }
            Err(e) => return Reply::json(503, &serde_json::json!({"error": e.to_string()})),
        };
        let holders = f.holders(&entry).unwrap_or_default();
        let status = if holders.is_empty() { 503 } else { 200 };
        Reply::json(
            status,
            &serde_json::json!({
                "path": entry.path.as_str(), "size": entry.size, "sha256": entry.sha256.to_hex(),
                "mtime": humantime::format_rfc3339_seconds(http::from_ns(entry.mtime_ns)).to_string(),
                "holders": holders.iter().map(|h| serde_json::json!({"name": h.name, "endpoint": h.endpoint})).collect::<Vec<_>>(),
                "url": format!("/files/{}", http::encode_path(entry.path.as_str())),
                "object_url": format!("/objects/{}", entry.sha256.to_hex()),
            }),
        )
    }

    fn download(&self, state: &State, req: &Req, path: &RelPath) -> Reply {
        let mut f = self.fetcher();
        match f.lookup(path) {
            Ok(e) if !e.deleted => self.send_entry(state, req, f, e, false),
            Ok(_) | Err(FetchError::NotFound(_)) => Reply::page(
                404,
                "Not Found",
                &format!("{path}: no such file in the cluster"),
            ),
            Err(e) => Reply::page(503, "Service Unavailable", &e.to_string()),
        }
    }

    fn object(&self, state: &State, req: &Req, h: Hash) -> Reply {
        let mut f = self.fetcher();
        match f.find(h) {
            Ok(e) => self.send_entry(state, req, f, e, true),
            Err(FetchError::NoSuchContent(_)) => {
                Reply::page(404, "Not Found", "no file in the cluster has this content")
            }
            Err(e) => Reply::page(503, "Service Unavailable", &e.to_string()),
        }
    }

    /// Streams an entry's content (or a range of it) from its holders.
    fn send_entry(
        &self,
        state: &State,
        req: &Req,
        mut f: Fetcher,
        e: FileEntry,
        immutable: bool,
    ) -> Reply {
        let etag = format!("\"{}\"", e.sha256.to_hex());
        let mtime = http::from_ns(e.mtime_ns);
        let name = e.path.components().last().unwrap_or("").to_owned();
        let common = |r: Reply| {
            r.header("ETag", etag.clone())
                .header("Last-Modified", http::http_date(mtime))
                .header("Accept-Ranges", "bytes")
                // Behind the login: never kept by a shared cache.
                .header(
                    "Cache-Control",
                    if immutable {
                        "private, max-age=31536000, immutable"
                    } else {
                        "private, no-cache"
                    },
                )
        };
        let range = match http::decide(|h| req.header(h), &etag, mtime, e.size) {
            http::Decision::NotModified => return common(Reply::new(304, Body::Empty)),
            http::Decision::Send(range) => range,
        };
        let (status, start, len) = match range {
            Range::Unsatisfiable => {
                return common(Reply::page(
                    416,
                    "Range Not Satisfiable",
                    "outside the file",
                ))
                .header("Content-Range", format!("bytes */{}", e.size))
            }
            Range::Full => (200, 0, e.size),
            Range::Part { start, end } => (206, start, end - start + 1),
        };
        let ctype = http::content_type(&name);
        let active = is_active(&ctype);
        let finish = |r: Reply| {
            let r = common(r)
                .header("Content-Type", ctype.clone())
                .header("Content-Security-Policy", CONTENT_POLICY)
                .header("X-Content-Type-Options", "nosniff");
            // A page or image that can carry script is a download, not a
            // page of this origin (the sandbox above holds it too).
            let r = if active {
                r.header(
                    "Content-Disposition",
                    format!("attachment; filename*=UTF-8''{}", http::encode_path(&name)),
                )
            } else {
                r
            };
            if status == 206 {
                r.header(
                    "Content-Range",
                    format!("bytes {}-{}/{}", start, start + len - 1, e.size),
                )
            } else {
                r
            }
        };
        if req.method == tiny_http::Method::Head {
            return finish(Reply::new(
                status,
                Body::Reader(Box::new(io::empty()), Some(len)),
            ));
        }
        // The blocks the range touches, and where the first starts.
        let spans: Vec<(u64, u64)> = e.spans().collect();
        let first = spans.partition_point(|&(at, n)| at + n <= start);
        let end = if len == 0 {
            first
        } else {
            spans.partition_point(|&(at, _)| at < start + len)
        };
        let first_at = spans.get(first).map_or(0, |&(at, _)| at);
        let (first, end) = (first as u64, end as u64);
        // Pull the first block before committing to a status: a stale holder
        // list then gives a clean 503 instead of a 200 with a cut body.
        let opened = f.stream(&e, first, end).and_then(|mut s| {
            let head = if first < end {
                s.next_block()?.unwrap_or_default()
            } else {
                Block::default()
            };
            Ok((s, head))
        });
        match opened {
            Ok((stream, head)) => {
                let hits = state.hit(&format!("/files/{}", e.path));
                let pos = ((start - first_at) as usize).min(head.len());
                let reader = StreamReader {
                    stream,
                    left: len,
                    buf: head,
                    pos,
                };
                finish(Reply::new(status, Body::Reader(Box::new(reader), Some(len))).counted(hits))
            }
            Err(FetchError::NoHolder { .. }) => Reply::page(
                503,
                "Service Unavailable",
                &format!("{}: no live peer holds this file right now", e.path),
            )
            .header("Retry-After", "5"),
            Err(err) => Reply::page(503, "Service Unavailable", &err.to_string()),
        }
    }
}

/// A small URL-encoded form (at most 64 KiB; an unreadable body reads as
/// an empty form, which every handler refuses field by field).
fn read_form(rq: &mut tiny_http::Request) -> std::collections::HashMap<String, String> {
    let mut body = Vec::new();
    let _ = rq.as_reader().take(64 * 1024).read_to_end(&mut body);
    form_urlencoded::parse(&body).into_owned().collect()
}

/// `GET /api/conflicts`: every conflict copy with the file it is a copy
/// of (`null` when that is gone).
fn conflicts_json(v: &view::View) -> Reply {
    let list: Vec<_> = v
        .conflicts()
        .into_iter()
        .map(|(copy, original)| serde_json::json!({"copy": copy, "original": original}))
        .collect();
    Reply::json(200, &list)
}

fn root_has_index(state: &State) -> bool {
    state
        .root
        .as_ref()
        .is_some_and(|r| r.join("index.html").is_file())
}

/// What cluster content is served with. It comes from any member, so it
/// must never run as this origin, where the dashboard's session lives: the
/// sandbox (without `allow-scripts`) runs no script and gives the document
/// an opaque origin; nothing is loaded from elsewhere.
const CONTENT_POLICY: &str =
    "sandbox; default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'";

/// Whether content of type `ctype` can carry script when shown inline.
fn is_active(ctype: &str) -> bool {
    let essence = ctype.split(';').next().unwrap_or("").trim();
    matches!(
        essence,
        "text/html" | "image/svg+xml" | "application/xhtml+xml" | "text/xml" | "application/xml"
    )
}

/// The dashboard's own policy: its one inline script, by hash, and
/// nothing from elsewhere; no framing, no other form target.
fn dashboard_policy() -> &'static str {
    static POLICY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let script = DASHBOARD
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map_or("", |(s, _)| s);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; \
             img-src 'self' data:; connect-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

fn dashboard() -> Reply {
    Reply::new(200, Body::Bytes(DASHBOARD.as_bytes().to_vec()))
        .header("Content-Type", "text/html; charset=utf-8")
        .header("Cache-Control", "no-cache")
        .header("Content-Security-Policy", dashboard_policy())
        .header("X-Content-Type-Options", "nosniff")
}

/// Verified blocks as a `Read`, trimmed to the requested range.
struct StreamReader {
    stream: BlockStream,
    left: u64,
    buf: Block,
    pos: usize,
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            if self.left == 0 {
                return Ok(0);
            }
            match self.stream.next_block() {
                Ok(Some(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(None) => return Ok(0),
                Err(e) => return Err(io::Error::other(e.to_string())),
            }
        }
        let n = out
            .len()
            .min(self.buf.len() - self.pos)
            .min(self.left as usize);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.left -= n as u64;
        Ok(n)
    }
}
