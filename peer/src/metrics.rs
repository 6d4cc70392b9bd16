//! The peer's Prometheus series (served with `run --metrics HOST:PORT`;
//! zync-web's `/metrics` carries its embedded member's): what this peer
//! synced, fetched, reused and served, conflicts, what it still needs and
//! what is in flight.

use std::sync::LazyLock;

use zync_net::metrics::prometheus::{
    histogram_opts, opts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
};
use zync_net::metrics::{register, LATENCY_BUCKETS};

/// The peer's series, registered in the process's registry on first use.
pub struct Metrics {
    /// Remote versions applied here, by kind: `install` (content
    /// downloaded), `delete`, `mode` (a chmod alone).
    pub synced: IntCounterVec,
    /// Bytes of installed files downloaded from peers.
    pub fetched_bytes: IntCounter,
    /// Bytes of installed files taken from blocks already here.
    pub reused_bytes: IntCounter,
    /// Concurrent edits resolved by keeping the losing version as a copy.
    pub conflicts: IntCounter,
    /// Local changes reported to the cluster, by kind (`new`, `edit`,
    /// `delete`, `mode`, ...).
    pub local_changes: IntCounterVec,
    /// Downloads that failed (each is tried again later).
    pub fetch_failures: IntCounter,
    /// Files this peer still needs (wanted or being downloaded).
    pub needed_files: IntGauge,
    /// Bytes this peer still needs.
    pub needed_bytes: IntGauge,
    /// Download slots in use (a batch of small files takes one each).
    pub transfers_in_flight: IntGauge,
    /// Downloads waiting to be tried again after a failure.
    pub failing_files: IntGauge,
    /// Entries in the local index (files and deletions it remembers).
    pub index_entries: IntGauge,
    /// 1 while registered with a tracker.
    pub registered: IntGauge,
    /// Requests the block server answered, by type.
    pub served: IntCounterVec,
    /// Time the block server took per request, by type.
    pub serve_latency: HistogramVec,
    /// Bytes of blocks the block server sent.
    pub served_bytes: IntCounter,
}

/// The peer's series.
pub fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

impl Metrics {
    // The names and labels are constants: a failure here is a bug found by
    // the first test that runs a peer.
    #[allow(clippy::expect_used)]
    fn new() -> Metrics {
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("metric");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("metric");
        let by = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(opts!(name, help), &[label]).expect("metric")
        };
        let m = Metrics {
            synced: by(
                "zync_peer_synced_total",
                "Remote versions applied here, by kind (install, delete, mode).",
                "kind",
            ),
            fetched_bytes: counter(
                "zync_peer_fetched_bytes_total",
                "Bytes of installed files downloaded from peers.",
            ),
            reused_bytes: counter(
                "zync_peer_reused_bytes_total",
                "Bytes of installed files taken from blocks already here.",
            ),
            conflicts: counter(
                "zync_peer_conflicts_total",
                "Concurrent edits kept as a conflict copy here.",
            ),
            local_changes: by(
                "zync_peer_local_changes_total",
                "Local changes reported to the cluster, by kind.",
                "kind",
            ),
            fetch_failures: counter(
                "zync_peer_fetch_failures_total",
                "Downloads that failed (each is tried again).",
            ),
            needed_files: gauge(
                "zync_peer_needed_files",
                "Files this peer still needs (wanted or downloading).",
            ),
            needed_bytes: gauge("zync_peer_needed_bytes", "Bytes this peer still needs."),
            transfers_in_flight: gauge(
                "zync_peer_transfers_in_flight",
                "Download slots in use (a batch of small files takes one each).",
            ),
            failing_files: gauge(
                "zync_peer_failing_files",
                "Downloads waiting to be tried again after a failure.",
            ),
            index_entries: gauge(
                "zync_peer_index_entries",
                "Entries in the local index (files and remembered deletions).",
            ),
            registered: gauge("zync_peer_registered", "1 while registered with a tracker."),
            served: by(
                "zync_peer_served_requests_total",
                "Requests the block server answered, by type.",
                "type",
            ),
            serve_latency: HistogramVec::new(
                histogram_opts!(
                    "zync_peer_served_request_duration_seconds",
                    "Time the block server took per request, by type.",
                    LATENCY_BUCKETS.to_vec()
                ),
                &["type"],
            )
            .expect("metric"),
            served_bytes: counter(
                "zync_peer_served_bytes_total",
                "Bytes of blocks the block server sent.",
            ),
        };
        register(&m.synced);
        register(&m.fetched_bytes);
        register(&m.reused_bytes);
        register(&m.conflicts);
        register(&m.local_changes);
        register(&m.fetch_failures);
        register(&m.needed_files);
        register(&m.needed_bytes);
        register(&m.transfers_in_flight);
        register(&m.failing_files);
        register(&m.index_entries);
        register(&m.registered);
        register(&m.served);
        register(&m.serve_latency);
        register(&m.served_bytes);
        m
    }
}
