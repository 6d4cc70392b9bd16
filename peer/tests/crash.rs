//! The index survives SIGKILL at random moments during a large sync: no
//! record is lost (a lost one would make the restart take an installed
//! file for a new local edit) and no installed file is fetched again.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use rand::{Rng, SeedableRng};
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
