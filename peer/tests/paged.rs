//! A late joiner takes the cluster's index page by page, and only as its
//! download queue has room: however large the index, it never queues
//! more than its backlog (and one page), and changes made while it pages
//! still reach it.
//!
//! One test in its own binary: small pages (`ZYNC_PAGE_BYTES`, for the
//! tracker) and a small backlog (`ZYNC_BACKLOG`, for the peers) reach the
//! processes through the environment, which every process of this test
//! inherits.

use std::fs;

use zync_testkit::*;

const FILES: usize = 1_500;
const BACKLOG: usize = 64;

/// Each "applying snapshot page" line of `log`: how many downloads were
/// queued when the page was fetched, and whether more pages followed.
fn pages(log: &str) -> Vec<(usize, bool)> {
    log.lines()
        .filter(|l| l.contains("applying snapshot page"))
        .filter_map(|l| {
            let queued = log_field(l, "queued")?.parse().ok()?;
            Some((queued, log_field(l, "more")? == "true"))
        })
        .collect()
}

#[test]
fn a_late_joiner_pages_the_index_as_its_queue_drains_and_misses_no_change() {
    std::env::set_var("ZYNC_PAGE_BYTES", "4096");
    std::env::set_var("ZYNC_BACKLOG", BACKLOG.to_string());
    let mut c = Cluster::start(1);
    write_small_files(c.dir(0), FILES);
    wait_listed(&c, FILES);

    let p2 = c.add_peer("p2");
    // Changes while p2 pages: one at each end of the index, and a deletion.
    wait_for(
        CONVERGE,
        || !pages(&c.peers[p2].proc.log_text()).is_empty(),
        "p2's first page",
        &c,
    );
    fs::write(c.dir(0).join("d00/f00000.txt"), "changed while p2 paged").unwrap();
    fs::write(c.dir(0).join("d14/f01499.txt"), "changed too").unwrap();
    fs::remove_file(c.dir(0).join("d07/f00700.txt")).unwrap();

    let snap = wait_identical(&c, "p2 holds every file");
    assert_eq!(snap["d00/f00000.txt"], b"changed while p2 paged");
    assert_eq!(snap["d14/f01499.txt"], b"changed too");
    assert!(!snap.contains_key("d07/f00700.txt"));
    assert_eq!(snap.len(), FILES - 1);

    let seen = pages(&c.peers[p2].proc.log_text());
    assert!(
        seen.iter().filter(|(_, more)| *more).count() >= 10,
        "the index came in many pages: {seen:?}"
    );
    assert!(
        seen.iter().all(|(queued, _)| *queued < BACKLOG),
        "every page waited until fewer than {BACKLOG} downloads were queued: {seen:?}"
    );
}
