//! Tombstone collection: a deletion every live peer has applied is
//! forgotten everywhere once older than the tracker's
//! `--forget-deleted-after`; a peer that was away longer than that and
//! comes back with the file offers it as a new file.
//!
//! One test in its own binary: the age reaches the tracker through the
//! environment (`ZYNC_FORGET_DELETED_AFTER`), which every process of this
//! test inherits.

use std::fs;
use std::path::Path;

use zync_testkit::*;

fn logged(log: &str, event: &str, path: &str) -> bool {
    log.lines()
        .any(|l| l.contains(&format!("event={event}")) && l.contains(&format!("path={path}")))
}

#[test]
fn a_deletion_seen_by_every_live_peer_is_forgotten_and_a_returning_peer_brings_the_file_back() {
    std::env::set_var("ZYNC_FORGET_DELETED_AFTER", "2s");
    let mut c = Cluster::start(3);
    fs::write(c.dir(0).join("a.txt"), b"kept by the peer away").unwrap();
    fs::write(c.dir(0).join("b.txt"), b"never deleted").unwrap();
    wait_file_everywhere(&c, "a.txt", b"kept by the peer away");
    wait_file_everywhere(&c, "b.txt", b"never deleted");

    // p3 goes away; a.txt is deleted while it is gone.
    c.peers[2].proc.terminate();
    fs::remove_file(c.dir(0).join("a.txt")).unwrap();
    let gone = |d: &Path| !d.join("a.txt").exists();
    wait_for(
        CONVERGE,
        || gone(c.dir(0)) && gone(c.dir(1)),
        "a.txt deleted on p1 and p2",
        &c,
    );

    // Both live peers applied it: once 2 s old it is forgotten by the
    // tracker and by both.
    wait_for(
        CONVERGE,
        || {
            logged(
                &c.tracker.as_ref().unwrap().log_text(),
                "forgotten",
                "a.txt",
            ) && (0..2).all(|i| logged(&c.peers[i].proc.log_text(), "forgotten", "a.txt"))
        },
        "the tracker, p1 and p2 forgot the deletion",
        &c,
    );
    let ls = c.cli(&["ls", "--json"]);
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("a.txt"));

    // p3, away longer than that, comes back with the file: it is a new
    // file to the cluster, and every peer has it again.
    assert!(c.dir(2).join("a.txt").exists());
    c.restart_peer(2);
    wait_file_everywhere(&c, "a.txt", b"kept by the peer away");
    let snap = wait_identical(&c, "after p3 came back");
    assert_eq!(
        snap.get("b.txt").map(Vec::as_slice),
        Some(&b"never deleted"[..])
    );
    assert_no_conflict_copy(&snap);
}
