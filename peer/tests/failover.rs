//! Failover to a backup tracker (`zync-tracker --backup-of`, the guide's
//! Binary Star): the backup keeps a live copy of the primary's index and
//! stands by while the primary is alive; when the primary dies (here in
//! the middle of a sync) it takes over as soon as a client comes, peers given `--tracker FIRST,BACKUP`
//! move to it and keep syncing; when the primary returns, the backup
//! stands by again and every peer goes back, so the cluster never stays
//! split.

use std::fs;

use zync_testkit::*;

fn names(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn logged(p: &Option<Proc>, what: &str) -> bool {
    p.as_ref().is_some_and(|p| p.log_text().contains(what))
}

#[test]
fn the_backup_tracker_copies_the_index_takes_over_and_stands_by_again() {
    let mut c = Cluster::start_with_backup(2);
    let (first, second) = (c.tracker_addr(), c.backup_addr());
    assert_eq!(c.peers_at(&first), names(&["p1", "p2"]));
    fs::write(c.dir(0).join("before.txt"), b"synced through the first").unwrap();
    wait_file_everywhere(&c, "before.txt", b"synced through the first");
    // The backup follows the first's index, and sends clients to it.
    wait_for(
        CONVERGE,
        || logged(&c.backup, "event=tracker_copied"),
        "the backup copied the first tracker's index",
        &c,
    );
    assert_eq!(
        c.peers_at(&second),
        None,
        "a backup standing by answers no client"
    );

    // Mid-sync: p1 writes many files, and before they have all travelled
    // the peers freeze (so none can tell the backup anything) and the
    // first tracker dies. A client that comes to the backup makes it take
    // over, and what it knows of the cluster it copied.
    let batch: Vec<(String, String)> = (0..300)
        .map(|i| {
            (
                format!("batch/f{i:03}.txt"),
                format!("file {i} written mid-sync"),
            )
        })
        .collect();
    fs::create_dir_all(c.dir(0).join("batch")).unwrap();
    for (path, body) in &batch {
        fs::write(c.dir(0).join(path), body).unwrap();
    }
    for p in &c.peers {
        p.proc.signal("STOP");
    }
    c.tracker.as_mut().unwrap().kill();
    wait_for(
        CONVERGE,
        || {
            let ls = c.cli_at(&second, &["ls"]);
            ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("before.txt")
        },
        "the backup lists, from its copy, the file only the first was told of",
        &c,
    );
    assert!(logged(&c.backup, "event=tracker_takeover"), "{}", c.logs());
    for p in &c.peers {
        p.proc.signal("CONT");
    }
    // (The copy lists them already: registering again is what counts.)
    wait_for(
        CONVERGE,
        || {
            c.peers
                .iter()
                .all(|p| p.proc.log_text().contains("event=tracker_failover"))
        },
        "both peers registered with the backup",
        &c,
    );
    assert_eq!(c.peers_at(&second), names(&["p1", "p2"]));
    // Every file written mid-sync arrives.
    for (path, body) in &batch {
        wait_file_everywhere(&c, path, body.as_bytes());
    }
    // Sync goes on through it: a new file, an edit and a deletion.
    fs::write(c.dir(1).join("during.txt"), b"synced through the backup").unwrap();
    fs::write(c.dir(0).join("before.txt"), b"edited while on the backup").unwrap();
    wait_file_everywhere(&c, "during.txt", b"synced through the backup");
    wait_file_everywhere(&c, "before.txt", b"edited while on the backup");
    fs::remove_file(c.dir(1).join("during.txt")).unwrap();
    wait_gone_everywhere(&c, "during.txt");
    // A reader given both finds the one serving.
    let ls = c.cli(&["ls"]);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    assert!(String::from_utf8_lossy(&ls.stdout).contains("before.txt"));

    // The first comes back (empty, on the same port): the backup stands by
    // and both peers go back to the first.
    c.start_tracker();
    wait_for(
        CONVERGE,
        || c.peers_at(&first) == names(&["p1", "p2"]),
        "both peers back with the first tracker",
        &c,
    );
    assert!(logged(&c.backup, "event=tracker_standby"), "{}", c.logs());
    assert_eq!(c.peers_at(&second), None, "the backup stands by again");
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
    assert_no_conflict_copy(&snap);
}
