//! zync-web's Prometheus series, served at `/metrics` with every other
//! series of the process (its embedded member's `zync_peer_*`, and
//! `process_*`): HTTP requests by route and status and their latency,
//! bytes sent, and, joined to a cluster, the cluster as the tracker sees
//! it: files, bytes, conflicts, live peers, and each peer's part.

use std::sync::LazyLock;

use zync_net::metrics::prometheus::{
    histogram_opts, opts, Gauge, GaugeVec, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec,
};
use zync_net::metrics::{register, LATENCY_BUCKETS};
use zync_peer::cli::ClusterStatus;

/// zync-web's series, registered in the process's registry on first use.
pub struct Metrics {
    /// Requests answered, by route and status.
    pub requests: IntCounterVec,
    /// Time to answer a request (until its body is sent), by route.
    pub latency: HistogramVec,
    /// Bytes of response bodies sent.
    pub sent_bytes: IntCounter,
    cluster_files: IntGauge,
    cluster_bytes: IntGauge,
    cluster_conflicts: IntGauge,
    cluster_unavailable: IntGauge,
    cluster_peers: IntGauge,
    peer_held_files: IntGaugeVec,
    peer_held_bytes: IntGaugeVec,
    peer_needed_files: IntGaugeVec,
    peer_needed_bytes: IntGaugeVec,
    peer_complete: GaugeVec,
    /// 1 when the last look at the cluster got an answer from a tracker.
    cluster_up: Gauge,
}

/// zync-web's series.
pub fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

/// The route label of a request path: the first segment for the routes
/// zync-web owns, `static` for the rest (files of the served folder).
pub fn route_of(path: &str) -> &'static str {
    let first = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    match first {
        "" | "cluster" => "dashboard",
        "api" => "api",
        "files" => "files",
        "objects" => "objects",
        "login" | "logout" => "login",
        "metrics" => "metrics",
        _ => "static",
    }
}

impl Metrics {
    // The names and labels are constants: a failure here is a bug found by
    // the first test that starts zync-web.
    #[allow(clippy::expect_used)]
    fn new() -> Metrics {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("metric");
        let per_peer = |name: &str, help: &str| {
            IntGaugeVec::new(opts!(name, help), &["peer"]).expect("metric")
        };
        let m = Metrics {
            requests: IntCounterVec::new(
                opts!(
                    "zync_web_http_requests_total",
                    "HTTP requests answered, by route and status."
                ),
                &["route", "status"],
            )
            .expect("metric"),
            latency: HistogramVec::new(
                histogram_opts!(
                    "zync_web_http_request_duration_seconds",
                    "Time to answer an HTTP request, body sent, by route.",
                    LATENCY_BUCKETS.to_vec()
                ),
                &["route"],
            )
            .expect("metric"),
            sent_bytes: IntCounter::new(
                "zync_web_http_sent_bytes_total",
                "Bytes of HTTP bodies sent.",
            )
            .expect("metric"),
            cluster_files: gauge("zync_cluster_files", "The cluster's current files."),
            cluster_bytes: gauge(
                "zync_cluster_bytes",
                "Bytes of the cluster's current files.",
            ),
            cluster_conflicts: gauge("zync_cluster_conflicts", "Conflict copies in the cluster."),
            cluster_unavailable: gauge(
                "zync_cluster_unavailable_files",
                "Current files no live peer holds.",
            ),
            cluster_peers: gauge("zync_cluster_peers_live", "Live peers."),
            peer_held_files: per_peer(
                "zync_cluster_peer_held_files",
                "Current files each live peer holds.",
            ),
            peer_held_bytes: per_peer(
                "zync_cluster_peer_held_bytes",
                "Bytes of current files each live peer holds.",
            ),
            peer_needed_files: per_peer(
                "zync_cluster_peer_needed_files",
                "Current files each live peer does not hold yet.",
            ),
            peer_needed_bytes: per_peer(
                "zync_cluster_peer_needed_bytes",
                "Bytes each live peer does not hold yet.",
            ),
            peer_complete: GaugeVec::new(
                opts!(
                    "zync_cluster_peer_complete_ratio",
                    "Part of the cluster's current bytes each live peer holds (0 to 1)."
                ),
                &["peer"],
            )
            .expect("metric"),
            cluster_up: Gauge::new(
                "zync_cluster_tracker_up",
                "1 when the last look at the cluster got a tracker's answer.",
            )
            .expect("metric"),
        };
        register(&m.requests);
        register(&m.latency);
        register(&m.sent_bytes);
        register(&m.cluster_files);
        register(&m.cluster_bytes);
        register(&m.cluster_conflicts);
        register(&m.cluster_unavailable);
        register(&m.cluster_peers);
        register(&m.peer_held_files);
        register(&m.peer_held_bytes);
        register(&m.peer_needed_files);
        register(&m.peer_needed_bytes);
        register(&m.peer_complete);
        register(&m.cluster_up);
        m
    }

    /// Sets the cluster's series from `status` (`None`: no tracker answered,
    /// and the per-peer series are dropped rather than left stale).
    pub fn set_cluster(&self, status: Option<&ClusterStatus>) {
        for v in [
            &self.peer_held_files,
            &self.peer_held_bytes,
            &self.peer_needed_files,
            &self.peer_needed_bytes,
        ] {
            v.reset();
        }
        self.peer_complete.reset();
        let Some(s) = status else {
            self.cluster_up.set(0.0);
            return;
        };
        self.cluster_up.set(1.0);
        self.cluster_files.set(s.files as i64);
        self.cluster_bytes.set(s.bytes as i64);
        self.cluster_conflicts.set(s.conflicts as i64);
        self.cluster_unavailable.set(s.unavailable as i64);
        self.cluster_peers.set(s.peers.len() as i64);
        for p in &s.peers {
            let l = [p.name.as_str()];
            for (series, v) in [
                (&self.peer_held_files, p.files_held),
                (&self.peer_held_bytes, p.bytes_held),
                (&self.peer_needed_files, p.files_needed),
                (&self.peer_needed_bytes, p.bytes_needed),
            ] {
                series.with_label_values(&l).set(v as i64);
            }
            self.peer_complete
                .with_label_values(&l)
                .set(p.complete_percent / 100.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_named_by_their_first_segment() {
        assert_eq!(route_of("/"), "dashboard");
        assert_eq!(route_of("/cluster"), "dashboard");
        assert_eq!(route_of("/api/files?x=1"), "api");
        assert_eq!(route_of("/files/a/b.txt"), "files");
        assert_eq!(route_of("/metrics"), "metrics");
        assert_eq!(route_of("/docs/index.html"), "static");
        assert_eq!(route_of("/apiary"), "static");
    }
}
