//! End-to-end sync: a real tracker and real peers on loopback, checked by
//! the bytes on disk.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::time::Duration;

use zync_testkit::*;

#[test]
fn create_modify_rename_delete_nested_empty_unicode_across_three_peers() {
    let c = Cluster::start(3);
    let a = c.dir(0);
    fs::create_dir_all(a.join("deep/er/still")).unwrap();
    fs::write(a.join("hello.txt"), b"hello").unwrap();
    fs::write(a.join("deep/er/still/nested.bin"), data(300_000, 1)).unwrap();
    fs::write(a.join("empty"), b"").unwrap();
    fs::write(a.join("naïve café ✓ with spaces.md"), "ünïcødé".as_bytes()).unwrap();
    let snap = wait_identical(&c, "first files everywhere");
    assert_eq!(snap.len(), 4, "{snap:?}");
    assert_eq!(snap["hello.txt"], b"hello");
    assert_eq!(snap["empty"], b"");
    assert_eq!(snap["deep/er/still/nested.bin"], data(300_000, 1));

    // Modify on another peer.
    fs::write(c.dir(1).join("hello.txt"), b"hello, modified on p2").unwrap();
    wait_file_everywhere(&c, "hello.txt", b"hello, modified on p2");

    // Rename on a third.
    fs::rename(
        c.dir(2).join("deep/er/still/nested.bin"),
        c.dir(2).join("renamed.bin"),
    )
    .unwrap();
    wait_file_everywhere(&c, "renamed.bin", &data(300_000, 1));
    wait_gone_everywhere(&c, "deep/er/still/nested.bin");

    // Delete.
    fs::remove_file(a.join("naïve café ✓ with spaces.md")).unwrap();
    wait_gone_everywhere(&c, "naïve café ✓ with spaces.md");

    // Folder renamed as a whole.
    fs::create_dir_all(a.join("dir1")).unwrap();
    fs::write(a.join("dir1/x"), b"x").unwrap();
    wait_file_everywhere(&c, "dir1/x", b"x");
    fs::rename(a.join("dir1"), a.join("dir2")).unwrap();
    wait_file_everywhere(&c, "dir2/x", b"x");
    wait_gone_everywhere(&c, "dir1/x");

    let snap = wait_identical(&c, "final state");
    let names: Vec<&str> = snap.keys().map(String::as_str).collect();
    assert_eq!(names, ["dir2/x", "empty", "hello.txt", "renamed.bin"]);

    // The log tells the story with stable fields.
    let log = c.peers[2].proc.log_text();
    assert!(log.contains("event=synced path=hello.txt from=p"), "{log}");
    assert!(log.contains("event=deleted"), "{log}");
    assert!(c.peers[0]
        .proc
        .log_text()
        .contains("event=local_change path=hello.txt kind=created bytes=5"));
}

#[test]
fn large_file_arrives_intact() {
    let c = Cluster::start(3);
    let size = 200 * 1024 * 1024 + 12345; // several blocks and a ragged end
    let bytes = data(size, 7);
    // Write to a temp name outside, then move in: the file appears at once.
    let staging = c.tmp.path().join("big.staging");
    fs::write(&staging, &bytes).unwrap();
    fs::rename(&staging, c.dir(0).join("big.bin")).unwrap();
    wait_for(
        Duration::from_secs(120),
        || {
            (1..3).all(|i| {
                fs::metadata(c.dir(i).join("big.bin")).is_ok_and(|m| m.len() == size as u64)
            })
        },
        "big file everywhere",
        &c,
    );
    for i in 1..3 {
        assert!(
            fs::read(c.dir(i).join("big.bin")).unwrap() == bytes,
            "peer {i} has different bytes"
        );
    }
    // Staging folders are empty afterwards.
    for i in 0..3 {
        assert_eq!(staged_files(c.dir(i)), Vec::<String>::new());
    }
}

#[test]
fn late_joiner_catches_up() {
    let mut c = Cluster::start(2);
    fs::write(c.dir(0).join("a.txt"), b"a").unwrap();
    fs::create_dir_all(c.dir(1).join("sub")).unwrap();
    fs::write(c.dir(1).join("sub/b.txt"), b"b").unwrap();
    fs::write(c.dir(0).join("doomed"), b"d").unwrap();
    wait_file_everywhere(&c, "doomed", b"d");
    fs::remove_file(c.dir(0).join("doomed")).unwrap();
    wait_gone_everywhere(&c, "doomed");
    c.add_peer("p3");
    let snap = wait_identical(&c, "late joiner caught up");
    assert_eq!(snap.keys().collect::<Vec<_>>(), ["a.txt", "sub/b.txt"]);
}

#[test]
fn an_index_larger_than_one_message_travels_in_pages() {
    // Registration, `ls` and a late joiner's snapshot each cut the index into
    // messages of PAGE_BYTES. Long paths make 2,300 files span two of them.
    let deep: String = (0..15)
        .map(|d| format!("{d:02}{}/", "d".repeat(248)))
        .collect();
    let files = 2300;
    assert!(
        files * deep.len() > zync_proto::PAGE_BYTES,
        "the index must not fit one page"
    );
    let mut c = Cluster::start(0);
    let dir = c.dir_of("p1").join(&deep);
    fs::create_dir_all(&dir).unwrap();
    for i in 0..files {
        fs::write(dir.join(format!("f{i:04}")), i.to_string()).unwrap();
    }
    c.add_peer("p1");
    wait_for(
        CONVERGE,
        || {
            let out = c.cli(&["ls", "--json"]);
            serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v.as_array().map(|a| a.len() == files))
                .unwrap_or(false)
        },
        "`ls` lists every file p1 registered",
        &c,
    );
    c.add_peer("p2");
    c.add_peer("p3");
    // 4,600 downloads: minutes on a loaded two-core machine, seconds otherwise.
    let snap = wait_identical_within(
        Duration::from_secs(240),
        &c,
        "late joiners hold every page's files",
    );
    assert_eq!(snap.len(), files);
    let last = format!("{deep}f{:04}", files - 1);
    assert_eq!(snap[&last], (files - 1).to_string().as_bytes());
}

#[test]
fn restarted_peer_catches_up_both_ways() {
    let mut c = Cluster::start(3);
    for (name, body) in [
        ("keep", "k"),
        ("edit-elsewhere", "v1"),
        ("del-elsewhere", "x"),
        ("edit-here", "v1"),
        ("del-here", "y"),
    ] {
        fs::write(c.dir(0).join(name), body).unwrap();
    }
    wait_identical(&c, "initial files");
    wait_index_saved(&c, 2);
    c.peers[2].proc.kill();

    // While p3 is down: changes elsewhere...
    fs::write(c.dir(0).join("edit-elsewhere"), "v2").unwrap();
    fs::remove_file(c.dir(1).join("del-elsewhere")).unwrap();
    fs::write(c.dir(0).join("new-elsewhere"), "n").unwrap();
    // ...and changes in p3's folder with nobody watching.
    let d3 = c.dir(2).to_path_buf();
    fs::write(d3.join("edit-here"), "v2 from p3").unwrap();
    fs::remove_file(d3.join("del-here")).unwrap();
    fs::write(d3.join("new-here"), "h").unwrap();
    wait_gone_everywhere_but(&c, 2, "del-elsewhere");

    c.restart_peer(2);
    let snap = wait_identical(&c, "restarted peer converged");
    let want: Vec<(&str, &[u8])> = vec![
        ("edit-elsewhere", b"v2"),
        ("edit-here", b"v2 from p3"),
        ("keep", b"k"),
        ("new-elsewhere", b"n"),
        ("new-here", b"h"),
    ];
    let got: Vec<(&str, &[u8])> = snap
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(got, want);
}

fn wait_gone_everywhere_but(c: &Cluster, skip: usize, rel: &str) {
    wait_for(
        CONVERGE,
        || {
            (0..c.peers.len())
                .filter(|i| *i != skip)
                .all(|i| !c.dir(i).join(rel).exists())
        },
        rel,
        c,
    );
}

#[test]
fn tracker_restart_does_not_stop_the_cluster() {
    let mut c = Cluster::start(3);
    fs::write(c.dir(0).join("before"), b"1").unwrap();
    wait_file_everywhere(&c, "before", b"1");
    c.tracker.as_mut().unwrap().kill();
    // A change while there is no tracker at all...
    fs::write(c.dir(1).join("during"), b"2").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    c.start_tracker();
    // ...reaches everyone once it is back, and so do later ones.
    wait_file_everywhere(&c, "during", b"2");
    fs::write(c.dir(2).join("after"), b"3").unwrap();
    wait_file_everywhere(&c, "after", b"3");
    c.wait_peers(3);
    for p in &c.peers {
        assert!(
            p.proc.log_text().contains("event=tracker_restarted"),
            "{}",
            c.logs()
        );
    }
}

#[test]
fn concurrent_edits_keep_both_versions() {
    let c = Cluster::start(3);
    fs::write(c.dir(0).join("doc.txt"), b"base").unwrap();
    wait_file_everywhere(&c, "doc.txt", b"base");

    edit_doc_while_p3_is_frozen(
        &c,
        b"edit made on p3 (older)",
        None,
        b"edit made on p1 (newer)",
    );

    let snap = wait_for_conflict_copy(&c);
    assert_eq!(
        snap["doc.txt"], b"edit made on p1 (newer)",
        "newer mtime wins"
    );
    let copies: Vec<_> = snap
        .iter()
        .filter(|(k, _)| k.starts_with("doc.conflict-p3-"))
        .collect();
    assert_eq!(copies.len(), 1, "{:?}", snap.keys());
    assert!(copies[0].0.ends_with(".txt"));
    assert_eq!(copies[0].1, b"edit made on p3 (older)", "losing edit kept");
    assert_eq!(snap.len(), 2, "{:?}", snap.keys());
    assert!(
        c.peers[2]
            .proc
            .log_text()
            .contains("event=conflict path=doc.txt"),
        "{}",
        c.logs()
    );

    // The CLI lists the copy, what it is a copy of, and who made it.
    let copy = copies[0].0.clone();
    wait_listed(&c, 2);
    let out = c.cli(&["ls", "--conflicts", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["path"], copy.as_str());
    assert_eq!(rows[0]["conflict_of"], "doc.txt");
    assert_eq!(rows[0]["modified_by"], "p3");
    let table = String::from_utf8(c.cli(&["ls", "--conflicts"]).stdout).unwrap();
    assert!(
        table.contains(&copy) && table.contains("doc.txt"),
        "{table}"
    );
    // `ls PATH`: the file itself, nothing else.
    let out = c.cli(&["ls", "doc.txt", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 1, "{rows}");
    assert_eq!(rows[0]["path"], "doc.txt");
    assert!(rows[0].get("conflict_of").is_none());
}

/// p3, frozen with SIGSTOP so it sees nothing, writes `p3_edit` to doc.txt
/// (with mtime `p3_mtime` if given); then p1 writes `p1_edit` (a newer
/// mtime); p3 resumes once p2 holds p1's edit.
fn edit_doc_while_p3_is_frozen(
    c: &Cluster,
    p3_edit: &[u8],
    p3_mtime: Option<filetime::FileTime>,
    p1_edit: &[u8],
) {
    c.peers[2].proc.signal("STOP");
    let p3_doc = c.dir(2).join("doc.txt");
    fs::write(&p3_doc, p3_edit).unwrap();
    match p3_mtime {
        Some(t) => filetime::set_file_mtime(&p3_doc, t).unwrap(),
        None => std::thread::sleep(Duration::from_millis(50)),
    }
    fs::write(c.dir(0).join("doc.txt"), p1_edit).unwrap();
    wait_for(
        CONVERGE,
        || fs::read(c.dir(1).join("doc.txt")).ok().as_deref() == Some(p1_edit),
        "p1's edit at p2",
        c,
    );
    c.peers[2].proc.signal("CONT");
}

fn wait_for_conflict_copy(c: &Cluster) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut snap = Default::default();
    wait_for(
        CONVERGE,
        || {
            let s = snapshot(c.dir(0));
            let ok = s.len() == 2 && (1..3).all(|i| snapshot(c.dir(i)) == s);
            snap = s;
            ok
        },
        "conflict resolved the same way everywhere",
        c,
    );
    snap
}

#[test]
fn local_edit_during_a_pull_is_never_overwritten() {
    // The edit lands on p2 while p1's newer version is announced: whatever
    // the interleaving, p2's bytes must survive somewhere in the cluster.
    let c = Cluster::start(2);
    fs::write(c.dir(0).join("f"), b"v0").unwrap();
    wait_file_everywhere(&c, "f", b"v0");
    c.peers[1].proc.signal("STOP");
    fs::write(c.dir(0).join("f"), data(5_000_000, 3)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(c.dir(1).join("f"), b"precious local edit").unwrap();
    c.peers[1].proc.signal("CONT");
    wait_for(
        CONVERGE,
        || {
            let s = snapshot(c.dir(0));
            s.len() == 2 && snapshot(c.dir(1)) == s
        },
        "both versions everywhere",
        &c,
    );
    let snap = snapshot(c.dir(1));
    assert!(
        snap.values().any(|v| v == b"precious local edit"),
        "{:?}",
        snap.keys()
    );
    assert!(snap.values().any(|v| *v == data(5_000_000, 3)));
}

#[test]
fn sigterm_stops_a_peer_promptly() {
    let mut c = Cluster::start(1);
    let took = c.peers[0].proc.terminate();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert!(c.tracker.as_mut().unwrap().terminate() < Duration::from_secs(3));
}

/// Waits until every folder holds the same files and one of them has
/// `content`; returns that snapshot.
fn wait_converged_with(
    c: &Cluster,
    contents: &[&[u8]],
) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut snap = Default::default();
    wait_for(
        CONVERGE,
        || {
            let s = snapshot(c.dir(0));
            let ok = (1..c.peers.len()).all(|i| snapshot(c.dir(i)) == s)
                && contents.iter().all(|want| s.values().any(|v| v == want));
            snap = s;
            ok
        },
        "every edit kept, everywhere",
        c,
    );
    snap
}

#[test]
fn lost_or_corrupt_index_never_costs_a_local_edit() {
    // A peer whose index is gone forgets which versions it had seen. Its
    // files must then count as concurrent with the cluster's, never as
    // older: an edit made while it was down survives (as a conflict copy if
    // it loses), and unchanged files do not grow conflict copies.
    let mut c = Cluster::start(2);
    fs::write(c.dir(0).join("doc.txt"), b"base").unwrap();
    fs::write(c.dir(0).join("same.txt"), b"untouched").unwrap();
    wait_identical(&c, "initial files");
    let index = c.dir(1).join(".zync").join("index.redb");
    for (round, damage) in ["lost", "corrupt"].into_iter().enumerate() {
        wait_index_saved(&c, 1);
        c.peers[1].proc.kill();
        let theirs = format!("round {round}: edit on p1 while p2 was down");
        let ours = format!("round {round}: edit on p2 with its index {damage}");
        fs::write(c.dir(0).join("doc.txt"), &theirs).unwrap();
        let want = zync_proto::Hash::of(theirs.as_bytes()).to_hex();
        wait_for(
            CONVERGE,
            || String::from_utf8_lossy(&c.cli(&["ls", "--json"]).stdout).contains(&want),
            "p1's edit known to the tracker",
            &c,
        );
        fs::write(c.dir(1).join("doc.txt"), &ours).unwrap();
        match damage {
            "lost" => fs::remove_file(&index).unwrap(),
            _ => fs::write(&index, b"\x93garbage, not an index").unwrap(),
        }
        c.restart_peer(1);
        let snap = wait_converged_with(&c, &[theirs.as_bytes(), ours.as_bytes()]);
        assert_eq!(snap["same.txt"], b"untouched");
        assert!(
            !snap.keys().any(|k| k.starts_with("same.conflict")),
            "an unchanged file got a conflict copy: {:?}",
            snap.keys()
        );
    }
}

#[test]
fn index_restored_from_a_backup_never_costs_a_local_edit() {
    // A `.zync/` restored from a backup keeps its replica id but its counters
    // are behind the versions the cluster has seen from it since. An edit
    // made on top of it must still supersede them, not lose to them.
    let mut c = Cluster::start(2);
    fs::write(c.dir(0).join("doc.txt"), b"base").unwrap();
    wait_identical(&c, "base everywhere");
    let index = c.dir(1).join(".zync").join("index.redb");
    wait_index_saved(&c, 1);
    c.peers[1].proc.kill();
    let backup = fs::read(&index).unwrap();
    c.restart_peer(1);
    for edit in ["p2's first edit", "p2's second edit"] {
        fs::write(c.dir(1).join("doc.txt"), edit).unwrap();
        wait_for(
            CONVERGE,
            || fs::read(c.dir(0).join("doc.txt")).ok().as_deref() == Some(edit.as_bytes()),
            "p2's edit on p1",
            &c,
        );
    }
    // Counters are stamped with the clock in seconds; a change made within
    // the same second as the last one can only count on `+ 1`.
    std::thread::sleep(Duration::from_millis(2100));
    c.peers[1].proc.kill();
    fs::write(&index, backup).unwrap();
    let ours = b"p2's edit on its restored index";
    fs::write(c.dir(1).join("doc.txt"), ours).unwrap();
    c.restart_peer(1);
    let snap = wait_converged_with(&c, &[ours]);
    assert_eq!(snap["doc.txt"], ours);
    assert_eq!(snap.len(), 1, "no conflict: {:?}", snap.keys());
}

#[test]
fn conflict_copy_never_replaces_a_file_already_at_its_name() {
    // The losing edit's copy is named after its peer and mtime; a different
    // file already at that name must survive, and the copy takes `-2`.
    let c = Cluster::start(3);
    fs::write(c.dir(0).join("doc.txt"), b"base").unwrap();
    let squatter = "doc.conflict-p3-20200102-030405.txt";
    fs::write(c.dir(0).join(squatter), b"a file that merely has that name").unwrap();
    wait_identical(&c, "base and squatter everywhere");

    let old = filetime::FileTime::from_unix_time(1_577_934_245, 0); // 2020-01-02 03:04:05 UTC
    edit_doc_while_p3_is_frozen(&c, b"p3's losing edit", Some(old), b"p1's winning edit");

    let snap = wait_converged_with(&c, &[b"p3's losing edit"]);
    assert_eq!(snap["doc.txt"], b"p1's winning edit");
    assert_eq!(snap[squatter], b"a file that merely has that name");
    assert_eq!(
        snap.get("doc.conflict-p3-20200102-030405-2.txt")
            .map(Vec::as_slice),
        Some(&b"p3's losing edit"[..]),
        "{:?}",
        snap.keys()
    );
    assert_eq!(snap.len(), 3, "{:?}", snap.keys());
}

#[test]
fn a_large_file_being_hashed_holds_up_no_sync_decision() {
    // Hashing runs off the engine's thread: while p1 hashes a large file
    // of its own, a small file written on p2 is still installed on p1
    // straight away. When the engine hashed inline, the small file waited
    // for the whole hash (seconds), so p1's log had the large file's
    // local_change first.
    use std::io::Write;
    let c = Cluster::start(2);
    let chunk = data(1 << 20, 7);
    let mut big = fs::File::create(c.dir(0).join("big.bin")).unwrap();
    for i in 0..512u32 {
        big.write_all(&i.to_le_bytes()).unwrap();
        big.write_all(&chunk).unwrap();
    }
    big.sync_all().unwrap();
    drop(big);
    // p1's watcher hands the big file over 50 ms after the last write.
    std::thread::sleep(Duration::from_millis(150));
    fs::write(c.dir(1).join("small.txt"), b"not held up").unwrap();
    wait_for(
        CONVERGE,
        || {
            c.peers[0]
                .proc
                .log_text()
                .contains("event=synced path=small.txt")
        },
        "small.txt installed on p1",
        &c,
    );
    wait_for(
        CONVERGE,
        || c.peers[0].proc.log_text().contains("path=big.bin"),
        "big.bin recorded on p1",
        &c,
    );
    let log = c.peers[0].proc.log_text();
    let small = log.find("event=synced path=small.txt").unwrap();
    let big = log.find("event=local_change path=big.bin").unwrap();
    assert!(
        small < big,
        "small.txt was installed only after big.bin was hashed:\n{}",
        c.logs()
    );
    let bytes = fs::read(c.dir(0).join("big.bin")).unwrap();
    wait_file_everywhere(&c, "big.bin", &bytes);
}

fn mode_of(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).map_or(0, |m| m.permissions().mode() & 0o777)
}

#[test]
fn file_modes_travel_and_a_chmod_alone_syncs_without_moving_content() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let c = Cluster::start(2);
    // The peers run with this process's umask.
    let umask = zync_peer::fsops::umask();
    let (a, b) = (c.dir(0), c.dir(1));
    for (name, mode) in [("run.sh", 0o755), ("doc.txt", 0o644), ("secret", 0o600)] {
        let staging = c.tmp.path().join(name);
        fs::write(&staging, name.as_bytes()).unwrap();
        fs::set_permissions(&staging, fs::Permissions::from_mode(mode)).unwrap();
        fs::rename(&staging, a.join(name)).unwrap();
    }
    wait_identical(&c, "three files with their modes");
    let want = |mode: u32| mode & !umask;
    wait_for(
        CONVERGE,
        || {
            mode_of(&b.join("run.sh")) == want(0o755)
                && mode_of(&b.join("doc.txt")) == want(0o644)
                && mode_of(&b.join("secret")) == 0o600
        },
        "p2's files to have p1's modes",
        &c,
    );

    // `chmod +x` alone, on either side: the mode arrives, the file stays
    // the same file (nothing downloaded, nothing renamed over it).
    let ino = fs::metadata(b.join("doc.txt")).unwrap().ino();
    fs::set_permissions(a.join("doc.txt"), fs::Permissions::from_mode(0o755)).unwrap();
    wait_for(
        CONVERGE,
        || mode_of(&b.join("doc.txt")) == want(0o755),
        "the chmod on p1 to reach p2",
        &c,
    );
    assert_eq!(fs::metadata(b.join("doc.txt")).unwrap().ino(), ino);
    let log = c.peers[0].proc.log_text();
    assert!(
        log.contains("event=local_change path=doc.txt kind=mode"),
        "{log}"
    );
    assert!(c.peers[1]
        .proc
        .log_text()
        .contains("event=mode_synced path=doc.txt from=p1"));

    fs::set_permissions(b.join("run.sh"), fs::Permissions::from_mode(0o700)).unwrap();
    wait_for(
        CONVERGE,
        || mode_of(&a.join("run.sh")) == 0o700,
        "the chmod on p2 to reach p1",
        &c,
    );
    let snap = wait_identical(&c, "content untouched by mode changes");
    assert_eq!(snap["run.sh"], b"run.sh");
    assert_no_conflict_copy(&snap);
}

#[test]
fn ignored_paths_never_leave_their_peer_and_a_pattern_added_or_dropped_later_takes_effect() {
    let c = Cluster::start(2);
    let (a, b) = (c.dir(0), c.dir(1));
    fs::write(a.join(".zyncignore"), "# ours\n*.log\nbuild/\n!keep.log\n").unwrap();
    fs::write(a.join("notes.bak"), b"synced before it is ignored").unwrap();
    wait_file_everywhere(&c, "notes.bak", b"synced before it is ignored");
    wait_file_everywhere(&c, ".zyncignore", b"# ours\n*.log\nbuild/\n!keep.log\n");

    // Ignored by the file, by a folder pattern and by default; a negation
    // and everything else sync.
    fs::write(a.join("a.log"), b"p1's log").unwrap();
    fs::create_dir_all(a.join("build")).unwrap();
    fs::write(a.join("build/out.o"), b"object").unwrap();
    fs::write(a.join(".doc.txt.swp"), b"swap").unwrap();
    fs::write(b.join("local.log"), b"p2's log").unwrap();
    fs::write(a.join("keep.log"), b"kept").unwrap();
    fs::write(a.join("doc.txt"), b"doc").unwrap();
    wait_file_everywhere(&c, "keep.log", b"kept");
    wait_file_everywhere(&c, "doc.txt", b"doc");
    wait_listed(&c, 4); // .zyncignore, notes.bak, keep.log, doc.txt
    let listed = String::from_utf8(c.cli(&["ls", "--json"]).stdout).unwrap();
    for never in ["a.log", "build/out.o", ".doc.txt.swp", "local.log"] {
        assert!(!listed.contains(never), "{never} reported: {listed}");
    }
    assert!(!b.join("a.log").exists() && !b.join("build").exists());
    assert!(!b.join(".doc.txt.swp").exists() && !a.join("local.log").exists());

    // A pattern added later: the file's copies stay where they are, and its
    // deletion on p1 is not a deletion for the cluster.
    fs::write(
        a.join(".zyncignore"),
        "# ours\n*.log\nbuild/\n!keep.log\n*.bak\n",
    )
    .unwrap();
    wait_file_everywhere(
        &c,
        ".zyncignore",
        b"# ours\n*.log\nbuild/\n!keep.log\n*.bak\n",
    );
    fs::remove_file(a.join("notes.bak")).unwrap();
    fs::write(a.join("marker"), b"after the delete").unwrap();
    wait_file_everywhere(&c, "marker", b"after the delete");
    assert_eq!(
        fs::read(b.join("notes.bak")).unwrap(),
        b"synced before it is ignored"
    );

    // A pattern dropped: what it hid on either peer is found and synced.
    fs::write(a.join(".zyncignore"), "build/\n").unwrap();
    wait_file_everywhere(&c, "a.log", b"p1's log");
    wait_file_everywhere(&c, "local.log", b"p2's log");
    assert!(!b.join("build").exists(), "still ignored");
    assert!(c.peers[0].proc.log_text().contains("event=ignore_changed"));

    // A sub-folder's own file: its patterns are relative to it, and its
    // negation brings back there what the root's file hides.
    fs::write(a.join(".zyncignore"), "build/\n*.bak\n").unwrap();
    wait_file_everywhere(&c, ".zyncignore", b"build/\n*.bak\n");
    fs::create_dir_all(a.join("logs/deep")).unwrap();
    fs::write(a.join("logs/.zyncignore"), "*.txt\n!*.bak\n").unwrap();
    wait_file_everywhere(&c, "logs/.zyncignore", b"*.txt\n!*.bak\n");
    fs::write(a.join("logs/deep/x.txt"), b"ignored in logs/").unwrap();
    fs::write(a.join("logs/y.bak"), b"kept in logs/").unwrap();
    fs::write(a.join("z.bak"), b"ignored at the top").unwrap();
    fs::write(a.join("top.txt"), b"synced at the top").unwrap();
    wait_file_everywhere(&c, "logs/y.bak", b"kept in logs/");
    wait_file_everywhere(&c, "top.txt", b"synced at the top");
    fs::write(a.join("logs/after.md"), b"last").unwrap();
    wait_file_everywhere(&c, "logs/after.md", b"last");
    assert!(!b.join("logs/deep").exists() && !b.join("z.bak").exists());
}
