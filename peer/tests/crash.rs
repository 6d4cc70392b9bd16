//! The local index across crashes and upgrades. It survives SIGKILL at
//! random moments during a large sync: no record is lost (a lost one would
//! make the restart take an installed file for a new local edit) and no
//! installed file is fetched again. And an index in the format before the
//! database is carried over in place, every record as it was.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde::Serialize;
use zync_peer::hashing::Stat;
use zync_peer::index::LocalEntry;
use zync_proto::{FileEntry, Hash, RelPath, VersionVector};
use zync_testkit::*;

const FILES: usize = 4000;

/// Files in `dir`, not counting the peer's state.
fn held(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() && e.file_name() != ".zync" => held(&e.path()),
            Ok(t) if t.is_file() => 1,
            _ => 0,
        })
        .sum()
}

#[test]
fn sigkill_during_a_large_sync_loses_no_record_and_fetches_nothing_twice() {
    let seed: u64 = std::env::var("ZYNC_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (ZYNC_CRASH_SEED={seed} replays it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut c = Cluster::start(1);
    write_small_files(c.dir(0), FILES);
    wait_listed(&c, FILES);
    // A late joiner, killed three times while it fetches.
    let p2 = c.add_peer("p2");
    for share in [0.2, 0.45, 0.7] {
        let at = (FILES as f64 * share) as usize;
        wait_for(
            CONVERGE,
            || held(c.dir(p2)) >= at,
            "p2 holding its share",
            &c,
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..50)));
        let had = held(c.dir(p2));
        c.restart_peer(p2);
        println!("killed p2 holding {had} of {FILES} files");
    }
    wait_identical(&c, "p2 holds every file");
    // A clean restart once in sync finds nothing to do. (A kill may have
    // come before a start registered: count from here.)
    let registered = c.registrations(p2);
    c.peers[p2].proc.terminate();
    c.restart_peer(p2);
    wait_for(
        CONVERGE,
        || c.registrations(p2) > registered,
        "p2 registered after its last restart",
        &c,
    );
    wait_identical(&c, "still in sync");

    let log = c.peers[p2].proc.log_text();
    assert!(
        !log.contains("event=local_change"),
        "an installed file was taken for a local edit (its record was lost):\n{}",
        c.logs()
    );
    let mut fetched: BTreeMap<&str, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("event=synced")) {
        if let Some(path) = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("path="))
        {
            *fetched.entry(path).or_default() += 1;
        }
    }
    let twice: Vec<_> = fetched.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "fetched more than once: {twice:?}");
    assert!(fetched.len() <= FILES);
}

/// The index of the format before the database (`.zync/index.msgpack`,
/// written whole, with field names), as a release of that format wrote
/// it: before modes were kept, so no entry or stat has one.
#[derive(Serialize)]
struct IndexOfTheOldFormat {
    format: u32,
    device: u64,
    entries: Vec<LocalEntry>,
}

#[test]
fn an_index_of_the_old_format_is_upgraded_in_place_and_nothing_is_hashed_again() {
    let mut c = Cluster::start(1);
    let dir = c.dir_of("old");
    let by = "old@5eed1e55";
    let mut entries = Vec::new();
    for i in 0..40 {
        let rel = format!("d{}/f{i:02}.txt", i % 4);
        let body = format!("file {i}, recorded by the old index");
        fs::create_dir_all(dir.join(format!("d{}", i % 4))).unwrap();
        fs::write(dir.join(&rel), &body).unwrap();
        let meta = fs::metadata(dir.join(&rel)).unwrap();
        let mut version = VersionVector::new();
        version.bump(by);
        let sha256 = Hash::of(body.as_bytes());
        entries.push(LocalEntry {
            entry: FileEntry {
                path: RelPath::new(rel).unwrap(),
                size: meta.len(),
                mtime_ns: Stat::of(&meta).mtime_ns,
                sha256,
                blocks: vec![sha256],
                version,
                deleted: false,
                modified_by: by.into(),
                lengths: Vec::new(),
                mode: None,
            },
            stat: Some(Stat {
                mode: None,
                ..Stat::of(&meta)
            }),
        });
    }
    // And a deletion it remembered.
    let mut version = VersionVector::new();
    version.bump(by);
    version.bump(by);
    entries.push(LocalEntry {
        entry: FileEntry {
            path: RelPath::new("gone.txt").unwrap(),
            size: 0,
            mtime_ns: 0,
            sha256: Hash::EMPTY,
            blocks: Vec::new(),
            version,
            deleted: true,
            modified_by: by.into(),
            lengths: Vec::new(),
            mode: None,
        },
        stat: None,
    });
    let old = IndexOfTheOldFormat {
        format: 1,
        device: 0x5eed_1e55_0000_0001,
        entries,
    };
    fs::create_dir_all(dir.join(".zync")).unwrap();
    fs::write(
        dir.join(".zync/index.msgpack"),
        rmp_serde::to_vec_named(&old).unwrap(),
    )
    .unwrap();

    let i = c.add_peer("old");
    wait_for(
        CONVERGE,
        || c.peers[i].proc.log_text().contains("event=scan_reported"),
        "the upgraded peer to report its files",
        &c,
    );
    let log = c.peers[i].proc.log_text();
    assert!(
        log.contains("event=index_upgraded entries=41"),
        "every record carried over:\n{log}"
    );
    let scan = log.lines().find(|l| l.contains("scanned folder")).unwrap();
    assert!(
        scan.contains("to_hash=0"),
        "the recorded stats were kept, so nothing is hashed again: {scan}"
    );
    assert!(
        !dir.join(".zync/index.msgpack").exists(),
        "the old file goes"
    );
    // The cluster has each version as the old index recorded it, and the
    // other peer fetches every file, but not the one deleted.
    let snap = wait_identical(&c, "the other peer holds the old index's files");
    assert_eq!(snap.len(), 40);
    assert!(!snap.contains_key("gone.txt"));
    let ls = c.cli(&["ls", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 40, "{rows:?}");
    assert!(
        rows.iter().all(|r| r["modified_by"] == by),
        "no file became a new version: {rows:?}"
    );
    // It goes on as any peer: an edit there reaches the other.
    fs::write(dir.join("d0/f00.txt"), b"edited after the upgrade").unwrap();
    wait_file_everywhere(&c, "d0/f00.txt", b"edited after the upgrade");
}
