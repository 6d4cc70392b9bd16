//! Many holders at once: a file two peers hold comes from both, and a
//! holder frozen mid-transfer loses its share to the other within about a
//! second instead of stalling the download.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use zync_testkit::{self as common, wait_for, Cluster, CONVERGE};

const BLOCK: usize = 256 * 1024;

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(&format!(" {name}=")).unwrap() + name.len() + 2;
    line[start..].split(' ').next().unwrap()
}

/// Two peers holding `body` as `path`, and a third that joins after.
fn two_holders_and_a_newcomer(path: &str, body: &[u8]) -> Cluster {
    let mut c = Cluster::start(2);
    std::fs::write(c.dir(0).join(path), body).unwrap();
    common::wait_file_everywhere(&c, path, body);
    // The tracker must know p2 holds it before p3 asks.
    wait_for(
        CONVERGE,
        || {
            let out = c.cli(&["ls", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            v.as_array().is_some_and(|a| {
                a.iter().any(|f| {
                    f["path"] == path && f["holders"].as_array().is_some_and(|h| h.len() == 2)
                })
            })
        },
        "two holders listed",
        &c,
    );
    c.add_peer("p3");
    c
}

#[test]
fn a_file_held_by_two_peers_is_fetched_from_both() {
    let body = common::data(96 * BLOCK, 1);
    let c = two_holders_and_a_newcomer("both.bin", &body);
    common::wait_file_everywhere(&c, "both.bin", &body);
    let mut line = None;
    wait_for(
        CONVERGE,
        || {
            line = common::synced_line(&c, 2, "both.bin");
            line.is_some()
        },
        "synced on p3",
        &c,
    );
    let line = line.unwrap();
    let mut from: Vec<&str> = field(&line, "from").split(',').collect();
    from.sort_unstable();
    assert_eq!(from, ["p1", "p2"], "{line}");
    assert_eq!(
        field(&line, "fetched"),
        body.len().to_string(),
        "each block once: {line}"
    );
}

#[test]
fn a_frozen_holder_loses_its_share_within_about_a_second() {
    let body = common::data(1024 * BLOCK, 2); // 256 MiB: long enough to freeze a holder mid-way
    let c = two_holders_and_a_newcomer("big.bin", &body);
    let part_len = || common::partial_len(c.dir(2));
    wait_for(
        CONVERGE,
        || part_len() >= 32 * BLOCK as u64,
        "p3 downloading",
        &c,
    );
    c.peers[0].proc.signal("STOP");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        common::wait_file_everywhere(&c, "big.bin", &body);
        let log = c.peers[2].proc.log_text();
        // Its outstanding blocks were asked of p2 once they had waited a
        // fraction of a second (the endgame), rather than after p1's drop.
        let hedged = log
            .lines()
            .find(|l| l.contains("event=hedged") && l.contains("peer=p1"));
        let hedged = hedged.unwrap_or_else(|| panic!("p1's blocks were never asked of p2:\n{log}"));
        assert!(hedged.contains("to=p2"), "{hedged}");
        // If the download outlasted p1's silence, p1 was dropped on the
        // swarm's short silence, not the lone holder's 5 s.
        if let Some(dropped) = log
            .lines()
            .find(|l| l.contains("event=holder_failed") && l.contains("peer=p1"))
        {
            assert!(dropped.contains("silent for 1s"), "{dropped}");
        }
        let line = common::synced_line(&c, 2, "big.bin").unwrap();
        assert_eq!(
            field(&line, "fetched"),
            body.len().to_string(),
            "each block once: {line}"
        );
    }));
    c.peers[0].proc.signal("CONT");
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
