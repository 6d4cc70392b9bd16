//! Regression tests for local changes that were once missed: each is named
//! after the cause it pins. Real tracker and peers, checked on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use zync_testkit::*;

/// Waits, without sleeping more than a millisecond at a time, until `path`
/// holds `bytes` (a download appears whole, by rename): the caller then acts
/// within a millisecond or two of the install.
fn the_moment_it_lands(c: &Cluster, path: &Path, bytes: &[u8]) {
    let t = Instant::now();
    while fs::read(path).ok().as_deref() != Some(bytes) {
        assert!(
            t.elapsed() < CONVERGE,
            "{} never arrived\n{}",
            path.display(),
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits until peer `i`, started with a `ZYNC_FAULT=kill-after-...`, has
/// killed itself.
fn wait_killed_by_fault(c: &mut Cluster, i: usize) {
    let t = Instant::now();
    while c.peers[i].proc.child.try_wait().unwrap().is_none() {
        assert!(
            t.elapsed() < CONVERGE,
            "{} was not killed by its fault\n{}",
            c.peers[i].name,
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn watcher_debounce_merging_dropped_a_delete_right_after_an_install() {
    // The merging debouncer saw the install's temp file created, renamed
    // into place, then removed by the user: "created, then removed" became
    // nothing at all, and the deletion was never reported.
    let c = Cluster::start(3);
    for round in 0..6 {
        let name = format!("del-{round}.txt");
        let body = format!("round {round}");
        fs::write(c.dir(0).join(&name), &body).unwrap();
        let on_p3 = c.dir(2).join(&name);
        the_moment_it_lands(&c, &on_p3, body.as_bytes());
        std::thread::sleep(Duration::from_millis(round * 8));
        fs::remove_file(&on_p3).unwrap();
        wait_gone_everywhere(&c, &name);
    }
}

#[test]
fn watcher_debounce_merging_lost_the_old_name_of_a_rename_right_after_an_install() {
    // Same cause: the temp file's pending "created" moved to the new name,
    // so only the new path was reported and the old one stayed everywhere.
    let c = Cluster::start(3);
    for round in 0..6 {
        let name = format!("ren-{round}.txt");
        let body = format!("round {round}");
        fs::write(c.dir(0).join(&name), &body).unwrap();
        let on_p2 = c.dir(1).join(&name);
        the_moment_it_lands(&c, &on_p2, body.as_bytes());
        std::thread::sleep(Duration::from_millis(round * 8));
        let moved = format!("moved-{round}/into/{name}");
        fs::create_dir_all(c.dir(1).join(format!("moved-{round}/into"))).unwrap();
        fs::rename(&on_p2, c.dir(1).join(&moved)).unwrap();
        wait_file_everywhere(&c, &moved, body.as_bytes());
        wait_gone_everywhere(&c, &name);
    }
}

#[test]
fn install_not_yet_in_the_saved_index_was_taken_for_a_local_edit_after_a_crash() {
    // The index is saved up to 50 ms after an install. A peer killed in
    // between restarted with a file its index did not know, minted a local
    // "created" version for it, and that version, concurrent with a deletion
    // made meanwhile, won ("an edit beats a deletion"): the deleted file
    // came back on every peer. The install is journaled first now.
    let mut c = Cluster::start(2);
    let n = c.registrations(1);
    c.restart_peer_with(1, &[("ZYNC_FAULT", "kill-after-install:doomed.txt")]);
    c.wait_registrations(1, n + 1);
    fs::write(c.dir(0).join("doomed.txt"), b"soon deleted").unwrap();
    wait_killed_by_fault(&mut c, 1);
    assert_eq!(
        fs::read(c.dir(1).join("doomed.txt")).unwrap(),
        b"soon deleted",
        "installed before the abort"
    );
    // While p2 is down, the file is deleted elsewhere.
    fs::remove_file(c.dir(0).join("doomed.txt")).unwrap();
    wait_for(
        CONVERGE,
        || {
            let o = c.cli(&["ls"]);
            o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("doomed.txt")
        },
        "the deletion known to the tracker",
        &c,
    );
    c.restart_peer(1);
    wait_gone_everywhere(&c, "doomed.txt");
    c.wait_peers(2);
    let log = c.peers[1].proc.log_text();
    assert!(
        !log.contains("path=doomed.txt kind=created"),
        "the install was taken for a local edit:\n{log}"
    );
    assert!(
        log.contains("adopted a change recorded just before the last stop"),
        "{log}"
    );
}

#[test]
fn periodic_rescan_finds_a_change_the_watcher_cannot_see() {
    // A write through a hard link outside the folder changes a synced file
    // without any event on the folder's watches (so do mmap writes and
    // changes on network file systems). The rescan behind the watcher finds
    // it, and says so.
    let mut c = Cluster::start(2);
    fs::write(c.dir(0).join("linked.txt"), b"before").unwrap();
    wait_file_everywhere(&c, "linked.txt", b"before");
    // The link is made while p2 is down: making it is an event of its own
    // (the link count changes), which would race with the write below.
    wait_index_saved(&c, 1);
    c.peers[1].proc.kill();
    let outside = c.tmp.path().join("outside-link");
    fs::hard_link(c.dir(1).join("linked.txt"), &outside).unwrap();
    let n = c.registrations(1);
    c.restart_peer_with(1, &[("ZYNC_RESCAN_INTERVAL", "1s")]);
    c.wait_registrations(1, n + 1);
    fs::write(&outside, b"written behind the watcher's back").unwrap();
    wait_file_everywhere(&c, "linked.txt", b"written behind the watcher's back");
    let log = c.peers[1].proc.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("event=missed_change") && l.contains("path=linked.txt")),
        "not reported as a missed change:\n{log}"
    );
}

#[test]
fn an_edit_on_top_of_an_install_the_index_had_not_recorded_is_an_edit_not_a_conflict() {
    // The journal says which inode was renamed into place: a file that is
    // still that inode was installed, whatever it holds now, so a change
    // made to it while the peer was down comes *after* that version.
    let mut c = Cluster::start(2);
    let n = c.registrations(1);
    c.restart_peer_with(1, &[("ZYNC_FAULT", "kill-after-install:doc.txt")]);
    c.wait_registrations(1, n + 1);
    fs::write(c.dir(0).join("doc.txt"), b"from p1").unwrap();
    wait_killed_by_fault(&mut c, 1);
    // Edited in place (same inode) while p2 is down.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(c.dir(1).join("doc.txt"))
        .unwrap();
    std::io::Write::write_all(&mut f, b", edited on p2").unwrap();
    drop(f);
    c.restart_peer(1);
    wait_file_everywhere(&c, "doc.txt", b"from p1, edited on p2");
    let snap = wait_identical(&c, "one file, no conflict copy");
    assert_eq!(snap.len(), 1, "{:?}", snap.keys());
}

#[test]
fn a_local_change_reported_but_not_yet_saved_was_forgotten_after_a_crash() {
    // Found by the model test. A local change was reported to the tracker
    // at once but saved to the index only later (save pacing: seconds on a
    // slow disk). Killed in between, the peer restarted not knowing the
    // file it had announced and others had fetched; renamed meanwhile, the
    // old name was never reported gone, and the cluster sent it back.
    // Local changes are journaled before they are reported now.
    let mut c = Cluster::start(2);
    let n = c.registrations(0);
    c.restart_peer_with(0, &[("ZYNC_FAULT", "no-saves-after-registering")]);
    c.wait_registrations(0, n + 1);
    fs::write(c.dir(0).join("announced.txt"), b"told the tracker").unwrap();
    wait_file_everywhere(&c, "announced.txt", b"told the tracker");
    c.peers[0].proc.kill();
    // While p1 is down its user renames the file.
    fs::rename(c.dir(0).join("announced.txt"), c.dir(0).join("renamed.txt")).unwrap();
    c.restart_peer(0);
    wait_file_everywhere(&c, "renamed.txt", b"told the tracker");
    wait_gone_everywhere(&c, "announced.txt");
}

#[test]
fn a_file_being_written_was_replaced_by_a_remote_version_it_had_not_been_compared_with() {
    // A file modified within the racy window cannot be hashed yet, so the
    // check before an install learned nothing, and the install replaced it
    // as if the disk still held the indexed version: the lines written so
    // far were gone. A remote version must wait until the file is still.
    let c = Cluster::start(2);
    let (ours, theirs) = (c.dir(1).join("log.txt"), c.dir(0).join("log.txt"));
    fs::write(&theirs, b"base\n").unwrap();
    wait_identical(&c, "base everywhere");
    let mut written = Vec::new();
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed() < Duration::from_millis(2500) {
        if n == 20 {
            fs::write(&theirs, b"p1's edit while p2 writes\n").unwrap();
        }
        let line = format!("p2 line {n}\n");
        let mut f = fs::OpenOptions::new().append(true).open(&ours).unwrap();
        std::io::Write::write_all(&mut f, line.as_bytes()).unwrap();
        written.push(line);
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    let snap = wait_identical(&c, "both edits settled");
    let kept: String = snap
        .values()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let lost: Vec<&String> = written
        .iter()
        .filter(|l| !kept.contains(l.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} lines written on p2 are in no file: {:?}\nfiles: {:?}\n{}",
        lost.len(),
        written.len(),
        lost.first(),
        snap.keys(),
        c.logs()
    );
    assert!(
        kept.contains("p1's edit while p2 writes"),
        "p1's edit is in no file: {:?}",
        snap.keys()
    );
}
