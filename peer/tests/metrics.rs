//! `--metrics`: the tracker and the peers serve Prometheus metrics that a
//! Prometheus text-format parser reads, and their counters move with a sync.

use std::collections::BTreeMap;
use std::time::Duration;

use zync_testkit::{self as common, free_port, scrape, wait_for, Cluster, CONVERGE};

fn value(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[test]
fn tracker_and_peer_metrics_parse_and_count_a_sync() {
    let mut c = Cluster::start(0);
    let tracker_m = format!("127.0.0.1:{}", free_port());
    let (p1_m, p2_m) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    c.tracker.take().expect("tracker").kill();
    c.start_tracker_with(&[("ZYNC_METRICS", &tracker_m)]);
    c.add_peer_with("p1", &[("ZYNC_METRICS", &p1_m)]);
    c.add_peer_with("p2", &[("ZYNC_METRICS", &p2_m)]);
    c.wait_peers(2);

    let t = || scrape(&tracker_m).unwrap_or_default();
    wait_for(
        CONVERGE,
        || value(&t(), "zync_tracker_peers_live") == 2.0,
        "the tracker's metrics count two live peers",
        &c,
    );
    let before = t();
    assert!(
        value(&before, "zync_tracker_requests_total{type=\"Register\"}") >= 2.0,
        "{before:?}"
    );
    assert!(
        value(
            &before,
            "zync_tracker_request_duration_seconds{type=\"Register\"}"
        ) >= 2.0,
        "a latency histogram per type: {before:?}"
    );
    assert!(value(&before, "zync_tracker_active") == 1.0);
    assert!(
        before.contains_key("process_resident_memory_bytes"),
        "{before:?}"
    );
    let seq0 = value(&before, "zync_tracker_notification_seq");

    let body = common::data(300_000, 7);
    std::fs::write(c.dir(0).join("big.bin"), &body).expect("write");
    common::wait_file_everywhere(&c, "big.bin", &body);

    let p2 = || scrape(&p2_m).unwrap_or_default();
    wait_for(
        Duration::from_secs(10),
        || value(&p2(), "zync_peer_synced_total{kind=\"install\"}") >= 1.0,
        "p2's metrics count the install",
        &c,
    );
    let m2 = p2();
    assert!(
        value(&m2, "zync_peer_fetched_bytes_total") >= body.len() as f64,
        "{m2:?}"
    );
    assert_eq!(value(&m2, "zync_peer_conflicts_total"), 0.0);
    let m1 = scrape(&p1_m).expect("p1's metrics");
    assert!(
        value(&m1, "zync_peer_local_changes_total{kind=\"created\"}") >= 1.0,
        "{m1:?}"
    );
    assert!(
        value(&m1, "zync_peer_served_bytes_total") >= body.len() as f64,
        "{m1:?}"
    );
    assert!(
        value(&m1, "zync_peer_served_requests_total{type=\"GetBlock\"}") >= 1.0,
        "{m1:?}"
    );
    let after = t();
    assert!(
        value(&after, "zync_tracker_notification_seq") > seq0,
        "{after:?}"
    );
    assert!(value(&after, "zync_tracker_paths") >= 1.0, "{after:?}");
    assert!(
        value(&after, "zync_tracker_requests_total{type=\"Update\"}")
            > value(&before, "zync_tracker_requests_total{type=\"Update\"}"),
        "the new file's report is counted"
    );

    // The delete moves its counters too.
    std::fs::remove_file(c.dir(0).join("big.bin")).expect("rm");
    wait_for(
        CONVERGE,
        || value(&p2(), "zync_peer_synced_total{kind=\"delete\"}") >= 1.0,
        "p2's metrics count the delete",
        &c,
    );
    // Anything else is a 404.
    let other = zync_testkit::web::get(&p1_m, "/", "");
    assert_eq!(other.status, 404);
}
