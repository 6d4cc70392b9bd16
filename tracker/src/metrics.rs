//! The tracker's Prometheus series (served with `--metrics HOST:PORT`):
//! requests by type and their latency, live peers, paths in the index,
//! and the notification sequence.

use std::sync::LazyLock;

use zync_net::metrics::prometheus::{
    histogram_opts, opts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
};
use zync_net::metrics::{register, LATENCY_BUCKETS};

/// The tracker's series, registered in the process's registry on first use.
pub(crate) struct Metrics {
    /// Requests answered, by type (`Register`, `List`, ...; `malformed`
    /// for one that did not decode, `standby` for one a backup refused).
    pub requests: IntCounterVec,
    /// Time to answer a request, by type.
    pub latency: HistogramVec,
    /// Peers registered and not yet expired.
    pub peers_live: IntGauge,
    /// Paths in the index (current files and deletions not yet forgotten).
    pub paths: IntGauge,
    /// The sequence number of the last notification.
    pub seq: IntGauge,
    /// Notifications published (heartbeats included).
    pub published: IntCounter,
    /// 1 while this tracker serves (a primary, or a backup that took over),
    /// 0 while it stands by.
    pub active: IntGauge,
}

/// The tracker's series.
pub(crate) fn metrics() -> &'static Metrics {
    static M: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &M
}

impl Metrics {
    // The names and labels are constants: a failure here is a bug found by
    // the first test that runs a tracker.
    #[allow(clippy::expect_used)]
    fn new() -> Metrics {
        let m = Metrics {
            requests: IntCounterVec::new(
                opts!("zync_tracker_requests_total", "Requests answered, by type."),
                &["type"],
            )
            .expect("metric"),
            latency: HistogramVec::new(
                histogram_opts!(
                    "zync_tracker_request_duration_seconds",
                    "Time to answer a request, by type.",
                    LATENCY_BUCKETS.to_vec()
                ),
                &["type"],
            )
            .expect("metric"),
            peers_live: IntGauge::new("zync_tracker_peers_live", "Live peers.").expect("metric"),
            paths: IntGauge::new(
                "zync_tracker_paths",
                "Paths in the index: files and deletions not yet forgotten.",
            )
            .expect("metric"),
            seq: IntGauge::new(
                "zync_tracker_notification_seq",
                "Sequence number of the last notification.",
            )
            .expect("metric"),
            published: IntCounter::new(
                "zync_tracker_notifications_total",
                "Notifications published, heartbeats included.",
            )
            .expect("metric"),
            active: IntGauge::new(
                "zync_tracker_active",
                "1 while serving, 0 while a backup stands by.",
            )
            .expect("metric"),
        };
        register(&m.requests);
        register(&m.latency);
        register(&m.peers_live);
        register(&m.paths);
        register(&m.seq);
        register(&m.published);
        register(&m.active);
        m
    }
}
