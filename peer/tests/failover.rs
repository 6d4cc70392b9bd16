//! Failover between trackers: peers given `--tracker FIRST,SECOND` register
//! with the first that answers, move to the second when the first dies
//! (and keep syncing through it), and come back to the first when it
//! returns, so every peer ends up with the same tracker.

use std::fs;

use zync_testkit::*;

fn names(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

#[test]
fn peers_fail_over_to_the_backup_tracker_keep_syncing_and_come_back() {
    let mut c = Cluster::start_with_backup(2);
    let (first, second) = (c.tracker_addr(), c.backup_addr());
    // Both trackers run; the first is preferred.
    assert_eq!(c.peers_at(&first), names(&["p1", "p2"]));
    assert_eq!(
        c.peers_at(&second),
        names(&[]),
        "nobody registers with the backup while the first answers"
    );
    fs::write(c.dir(0).join("before.txt"), b"synced through the first").unwrap();
    wait_file_everywhere(&c, "before.txt", b"synced through the first");

    // The first tracker dies: both peers move to the second.
    c.tracker.as_mut().unwrap().kill();
    wait_for(
        CONVERGE,
        || c.peers_at(&second) == names(&["p1", "p2"]),
        "both peers registered with the backup",
        &c,
    );
    for i in 0..2 {
        assert!(
            c.peers[i]
                .proc
                .log_text()
                .contains("event=tracker_failover"),
            "{} logs its failover:\n{}",
            c.peers[i].name,
            c.logs()
        );
    }
    // Sync goes on through it: a new file, an edit and a deletion.
    fs::write(c.dir(1).join("during.txt"), b"synced through the backup").unwrap();
    fs::write(c.dir(0).join("before.txt"), b"edited while on the backup").unwrap();
    wait_file_everywhere(&c, "during.txt", b"synced through the backup");
    wait_file_everywhere(&c, "before.txt", b"edited while on the backup");
    fs::remove_file(c.dir(1).join("during.txt")).unwrap();
    wait_gone_everywhere(&c, "during.txt");
    // A reader given both finds the live one.
    let ls = c.cli(&["ls"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(String::from_utf8_lossy(&ls.stdout).contains("before.txt"));

    // The first comes back (empty, on the same port): both peers return to
    // it, and sync goes through it again.
    c.start_tracker();
    wait_for(
        CONVERGE,
        || c.peers_at(&first) == names(&["p1", "p2"]),
        "both peers back with the first tracker",
        &c,
    );
    wait_for(
        CONVERGE,
        || c.peers_at(&second) == names(&[]),
        "the backup told they left",
        &c,
    );
    assert!(c.peers[0]
        .proc
        .log_text()
        .contains("event=tracker_failback"));
    // The backup goes away, so what follows can only go through the first.
    c.backup.as_mut().unwrap().kill();
    fs::write(
        c.dir(1).join("after.txt"),
        b"synced through the first again",
    )
    .unwrap();
    wait_file_everywhere(&c, "after.txt", b"synced through the first again");
    let snap = wait_identical(&c, "after failing back");
    assert_eq!(
        snap.get("before.txt").map(Vec::as_slice),
        Some(&b"edited while on the backup"[..])
    );
    assert!(
        !snap.contains_key("during.txt"),
        "the deletion made on the backup holds"
    );
}
