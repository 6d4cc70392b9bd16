//! Nothing a sync replaces or deletes is lost: the real binaries keep what
//! a remote change replaced, `versions` lists it, `restore` brings it back
//! on every peer (one file, a file as it was at a time, or a whole folder
//! after `rm -rf`), and old versions are pruned.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;
use std::time::{Duration, SystemTime};

use zync_proto::Hash;
use zync_testkit::{self as common, wait_for, Cluster, CONVERGE};

fn run(c: &Cluster, args: &[&str]) -> String {
    let out = c.cli(args);
    assert!(
        out.status.success(),
        "zync-peer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn versions(c: &Cluster, i: usize, path: &str) -> Vec<serde_json::Value> {
    let dir = c.dir(i).to_str().unwrap().to_owned();
    let out = run(c, &["versions", path, "--folder", &dir, "--json"]);
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

fn wait_versions(c: &Cluster, i: usize, path: &str, n: usize) -> Vec<serde_json::Value> {
    let mut last = Vec::new();
    wait_for(
        CONVERGE,
        || {
            last = versions(c, i, path);
            last.len() >= n
        },
        &format!("{n} kept versions of {path} on {}", c.peers[i].name),
        c,
    );
    last
}

#[test]
fn replaced_and_deleted_content_is_kept_and_restored_everywhere() {
    let c = Cluster::start(3);
    let doc = "notes/doc.txt";
    std::fs::create_dir_all(c.dir(0).join("notes")).unwrap();
    std::fs::write(c.dir(0).join(doc), b"version one").unwrap();
    common::wait_file_everywhere(&c, doc, b"version one");
    std::thread::sleep(Duration::from_millis(20));
    let between = SystemTime::now();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(c.dir(0).join(doc), b"version two, longer").unwrap();
    common::wait_file_everywhere(&c, doc, b"version two, longer");

    // p2 and p3 kept what p1's change replaced; p1's own edit is not versioned.
    for i in [1, 2] {
        let v = wait_versions(&c, i, doc, 1);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0]["path"], doc);
        assert_eq!(v[0]["sha256"], Hash::of(b"version one").to_hex());
        assert_eq!(v[0]["size"], 11);
        assert_eq!(v[0]["replaced_by"], "p1");
        assert_eq!(v[0]["reason"], "replaced");
        let kept = Path::new(v[0]["file"].as_str().unwrap());
        assert!(
            kept.starts_with(c.dir(i).join(".zync/versions/notes")),
            "{kept:?}"
        );
        assert_eq!(std::fs::read(kept).unwrap(), b"version one");
    }
    assert!(
        versions(&c, 0, doc).is_empty(),
        "a local edit is the user's own"
    );

    // A remote delete keeps the last content too.
    std::fs::remove_file(c.dir(0).join(doc)).unwrap();
    common::wait_gone_everywhere(&c, doc);
    let v = wait_versions(&c, 2, doc, 2);
    assert_eq!(v[1]["reason"], "deleted");
    assert_eq!(v[1]["sha256"], Hash::of(b"version two, longer").to_hex());
    let table = run(&c, &["versions", "--folder", c.dir(2).to_str().unwrap()]);
    assert!(
        table.contains("deleted by p1") && table.contains("2 kept versions"),
        "{table}"
    );

    // Restore on p3: a new local change that reaches everyone.
    let out = c.cli(&["restore", doc, "--folder", c.dir(2).to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("restored notes/doc.txt"));
    common::wait_file_everywhere(&c, doc, b"version two, longer");

    // The content at a time, written elsewhere: the folder is left alone.
    let out_dir = c.tmp.path().join("restored");
    let at = humantime::format_rfc3339_nanos(between).to_string();
    let out = c.cli(&[
        "restore",
        doc,
        "--at",
        &at,
        "--dir",
        out_dir.to_str().unwrap(),
        "--folder",
        c.dir(1).to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(out_dir.join(doc)).unwrap(), b"version one");
    assert_eq!(
        std::fs::read(c.dir(1).join(doc)).unwrap(),
        b"version two, longer"
    );

    // Nothing to restore is a clear error, not a silent success.
    let out = c.cli(&[
        "restore",
        "no/such.txt",
        "--folder",
        c.dir(1).to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to restore"));
}

#[test]
fn rm_rf_on_one_peer_is_undone_from_another_peers_versions() {
    let c = Cluster::start(3);
    let files: Vec<(String, Vec<u8>)> = [
        "a.txt",
        "photos/2026/one.jpg",
        "photos/2026/two.jpg",
        "src/deep/er/main.rs",
        "big.bin",
    ]
    .iter()
    .enumerate()
    .map(|(i, p)| {
        let len = if *p == "big.bin" { 700_000 } else { 100 + i };
        (p.to_string(), common::data(len, i as u64))
    })
    .collect();
    for (p, b) in &files {
        let f = c.dir(0).join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, b).unwrap();
    }
    for (p, b) in &files {
        common::wait_file_everywhere(&c, p, b);
    }

    // `rm -rf *` on p1.
    for entry in std::fs::read_dir(c.dir(0)).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() == ".zync" {
            continue;
        }
        let p = entry.path();
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }
    for (p, _) in &files {
        common::wait_gone_everywhere(&c, p);
    }
    assert!(common::snapshot(c.dir(1)).is_empty());

    // From p2, everything comes back, on every peer.
    wait_versions(&c, 1, ".", files.len());
    let out = c.cli(&["restore", ".", "--folder", c.dir(1).to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("restored ").count(), files.len(), "{err}");
    for (p, b) in &files {
        common::wait_file_everywhere(&c, p, b);
    }
    common::wait_identical(&c, "after the restore");
}

#[test]
fn old_versions_are_pruned_and_zero_keeps_none() {
    let mut c = Cluster::start(3);
    // p2 keeps versions for ~2.6 s; p3 keeps none.
    c.restart_peer_with(1, &[("ZYNC_KEEP_VERSIONS", "0.00003")]);
    c.restart_peer_with(2, &[("ZYNC_KEEP_VERSIONS", "0")]);
    c.wait_registrations(1, 2);
    c.wait_registrations(2, 2);
    std::fs::write(c.dir(0).join("f.txt"), b"old").unwrap();
    common::wait_file_everywhere(&c, "f.txt", b"old");
    std::fs::write(c.dir(0).join("f.txt"), b"new!").unwrap();
    common::wait_file_everywhere(&c, "f.txt", b"new!");
    wait_versions(&c, 1, "f.txt", 1);
    wait_for(
        CONVERGE,
        || versions(&c, 1, "f.txt").is_empty(),
        "p2's version pruned",
        &c,
    );
    wait_for(
        CONVERGE,
        || c.peers[1].proc.log_text().contains("pruned=1"),
        "the prune logged",
        &c,
    );
    assert!(versions(&c, 2, "f.txt").is_empty(), "p3 keeps none");
    assert!(!c.dir(2).join(".zync/versions").join("f.txt").exists());
}
