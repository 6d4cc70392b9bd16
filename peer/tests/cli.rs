//! The one-shot commands against a real cluster: output shape and every
//! failure case, each a non-zero exit with a one-line reason.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::fs;
use std::time::{Duration, Instant};

use zync_proto::Hash;
use zync_testkit::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

#[test]
fn ls_json_lists_every_live_file_with_holders() {
    let c = Cluster::start(3);
    fs::create_dir_all(c.dir(0).join("d")).unwrap();
    fs::write(c.dir(0).join("d/one.txt"), b"one").unwrap();
    fs::write(c.dir(1).join("two"), b"").unwrap();
    fs::write(c.dir(1).join("gone"), b"x").unwrap();
    wait_identical(&c, "files everywhere");
    fs::remove_file(c.dir(1).join("gone")).unwrap();
    wait_gone_everywhere(&c, "gone");
    wait_for(
        CONVERGE,
        || {
            let o = c.cli(&["ls", "--json"]);
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
            v.as_array().is_some_and(|a| {
                a.len() == 2
                    && a.iter()
                        .all(|f| f["holders"].as_array().map(Vec::len) == Some(3))
            })
        },
        "ls to show 2 files held by 3 peers",
        &c,
    );
    let o = c.cli(&["ls", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let one = &v[0];
    assert_eq!(one["path"], "d/one.txt");
    assert_eq!(one["size"], 3);
    assert_eq!(one["sha256"], Hash::of(b"one").to_hex());
    assert!(one["mtime"].as_str().unwrap().ends_with('Z'));
    assert_eq!(one["holders"], serde_json::json!(["p1", "p2", "p3"]));
    assert_eq!(v[1]["path"], "two");
    assert_eq!(v[1]["sha256"], Hash::EMPTY.to_hex());

    let table = c.cli(&["ls"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.lines().next().unwrap().starts_with("PATH"));
    assert!(
        text.contains("d/one.txt") && text.contains("p1,p2,p3"),
        "{text}"
    );
}

#[test]
fn peers_json_lists_live_peers() {
    let c = Cluster::start(2);
    let o = c.cli(&["peers", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["p1", "p2"]);
    for p in v.as_array().unwrap() {
        assert!(p["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.1:"));
        assert!(p["last_seen_ms"].as_u64().unwrap() < 5_000);
    }
}

#[test]
fn get_downloads_verified_and_fails_cleanly() {
    let mut c = Cluster::start(1);
    let body = data(1_000_000, 5);
    fs::write(c.dir(0).join("file.bin"), &body).unwrap();
    wait_for(
        CONVERGE,
        || String::from_utf8_lossy(&c.cli(&["ls"]).stdout).contains("file.bin"),
        "file listed",
        &c,
    );

    let out = c.tmp.path().join("out.bin");
    let o = c.cli(&["get", "file.bin", "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&out).unwrap(), body);

    // Missing path.
    let o = c.cli(&["get", "nope.txt", "-o", "x"]);
    assert!(!o.status.success());
    assert_eq!(stderr(&o).lines().count(), 1);
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));

    // Invalid path.
    let o = c.cli(&["get", "../../etc/passwd"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("invalid path"), "{}", stderr(&o));

    // Corrupted holder (bit rot that kept size and mtime): verification fails.
    let p = c.dir(0).join("file.bin");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    let mut bad = body.clone();
    bad[700_000] ^= 0xff;
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &bad[700_000..700_001], 700_000).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    let o = c.cli(&[
        "get",
        "file.bin",
        "-o",
        c.tmp.path().join("bad.bin").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("failed verification"), "{}", stderr(&o));
    assert!(
        !c.tmp.path().join("bad.bin").exists(),
        "nothing half-written"
    );

    // No live holder.
    c.peers[0].proc.kill();
    c.wait_peers(0);
    let o = c.cli(&["get", "file.bin", "-o", "y"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no live peer holds"), "{}", stderr(&o));
}

#[test]
fn one_shot_commands_fail_fast_without_a_tracker() {
    let port = free_port();
    for args in [&["ls"][..], &["peers"], &["get", "x"]] {
        let t = Instant::now();
        let o = std::process::Command::new(peer_bin())
            .args(["--insecure", "--tracker", &format!("127.0.0.1:{port}")])
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "{args:?} took {:?}",
            t.elapsed()
        );
        assert!(stderr(&o).contains("did not answer"), "{}", stderr(&o));
    }
}

#[test]
fn json_logs_carry_the_stable_fields() {
    let c = Cluster::start(1);
    let log = c.tmp.path().join("pj.log");
    let mut child = c
        .command(peer_bin())
        .args([
            "--tracker",
            &c.tracker_addr(),
            "--log-format",
            "json",
            "run",
            "--listen",
            "127.0.0.1:0",
            "--name",
            "pj",
            "--dir",
        ])
        .arg(c.tmp.path().join("pj"))
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    c.wait_peers(2);
    fs::write(c.dir(0).join("j.txt"), b"json").unwrap();
    let synced = || -> Option<serde_json::Value> {
        fs::read_to_string(&log)
            .ok()?
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON"))
            .find(|v| v["event"] == "synced")
    };
    wait_for(CONVERGE, || synced().is_some(), "a synced line", &c);
    let v = synced().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(v["path"], "j.txt");
    assert_eq!(v["from"], "p1");
    assert_eq!(v["bytes"], 4);
    assert!(v["ms"].is_u64(), "{v}");
    assert_eq!(v["level"], "INFO");
}

#[test]
fn a_reader_that_goes_away_is_not_an_error() {
    // `zync-peer ls | grep -q x` or `| head`: when the reader quits early,
    // the listing stops quietly with status 0, like any Unix filter.
    let c = Cluster::start(1);
    fs::write(c.dir(0).join("f.txt"), b"x").unwrap();
    wait_for(
        CONVERGE,
        || String::from_utf8_lossy(&c.cli(&["ls"]).stdout).contains("f.txt"),
        "f.txt listed",
        &c,
    );
    for args in [&["ls", "--json"][..], &["ls"], &["peers", "--json"]] {
        let mut child = c
            .command(peer_bin())
            .arg("--tracker")
            .arg(c.tracker_addr())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader is gone before a byte is written
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {:?} {}",
            out.status,
            stderr(&out)
        );
        assert_eq!(stderr(&out), "", "{args:?}");
    }
}

#[test]
fn a_peer_says_when_the_tracker_knows_every_file_it_started_with() {
    // More files than are hashed at once: the last of them reach the
    // tracker as updates after the registration, and the line waits for
    // them.
    const FILES: usize = 3_000;
    let mut c = Cluster::start(0);
    write_small_files(&c.dir_of("p1"), FILES);
    let p1 = c.add_peer("p1");
    let line = || {
        c.peers[p1]
            .proc
            .log_text()
            .lines()
            .find(|l| l.contains("event=scan_reported"))
            .map(str::to_owned)
    };
    wait_for(CONVERGE, || line().is_some(), "p1's scan_reported line", &c);
    // Asked once, at once: the tracker must have every file already.
    let ls = c.cli(&["ls", "--json"]);
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(listed.len(), FILES, "{}", stderr(&ls));
    let line = line().unwrap();
    assert_eq!(log_field(&line, "files"), Some("3000"), "{line}");
    let registered = c.peers[p1].proc.log_text();
    assert_eq!(
        registered.matches("event=scan_reported").count(),
        1,
        "said once"
    );
}

/// `status --json` for `who` (or `--all`), parsed.
fn status(c: &Cluster, who: Option<&str>) -> serde_json::Value {
    let mut args = vec!["status", "--json"];
    match who {
        Some(name) => args.extend(["--name", name]),
        None => args.push("--all"),
    }
    let out = c.cli(&args);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn status_says_which_peer_still_needs_what_and_when_all_are_in_sync() {
    let c = Cluster::start(2);
    // p2 has a file where p1 is about to make a folder: neither can take
    // the other's path, so neither is in sync until p2's file goes.
    fs::create_dir_all(c.dir(0).join("blocked")).unwrap();
    fs::write(c.dir(1).join("blocked"), b"a file on p2").unwrap();
    wait_listed(&c, 1);
    let body = data(300_000, 5);
    fs::write(c.dir(0).join("blocked/inside.bin"), &body).unwrap();
    wait_listed(&c, 2);
    wait_for(
        CONVERGE,
        || status(&c, Some("p1"))["peers"][0]["files_held"] == 1,
        "p1's own file counted as held",
        &c,
    );
    let s = status(&c, Some("p2"));
    assert_eq!(s["files"], 2, "{s}");
    let p2 = &s["peers"][0];
    assert_eq!(p2["name"], "p2");
    assert_eq!(p2["in_sync"], false, "{s}");
    assert_eq!(p2["files_needed"], 1, "{s}");
    assert_eq!(p2["bytes_needed"], body.len() as u64, "{s}");
    assert_eq!(
        s["peers"].as_array().unwrap().len(),
        1,
        "only the one asked for"
    );
    let all = status(&c, None);
    assert_eq!(all["peers"].as_array().unwrap().len(), 2, "{all}");
    assert!(!c.cli(&["status", "--name", "nobody"]).status.success());
    // p2 keeps failing to put the file in place, and says why.
    let mut seen = serde_json::Value::Null;
    wait_for(
        CONVERGE,
        || {
            seen = status(&c, Some("p2"));
            seen["peers"][0]["failing"] == 1
                && seen["peers"][0]["errors"][0]["path"] == "blocked/inside.bin"
        },
        "p2's failing download in status",
        &c,
    );
    assert!(
        !seen["peers"][0]["errors"][0]["error"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{seen}"
    );
    let table = String::from_utf8(c.cli(&["status", "--name", "p2"]).stdout).unwrap();
    assert!(
        table.contains("!! 1 download failing") && table.contains("blocked/inside.bin:"),
        "{table}"
    );

    // p2's file goes: every peer ends with everything, and says so.
    fs::remove_file(c.dir(1).join("blocked")).unwrap();
    wait_file_everywhere(&c, "blocked/inside.bin", &body);
    wait_for(
        CONVERGE,
        || {
            let s = status(&c, None);
            s["files"] == 1
                && s["peers"].as_array().unwrap().iter().all(|p| {
                    p["in_sync"] == true && p["complete_percent"] == 100.0 && p["failing"] == 0
                })
        },
        "every peer in sync, nothing failing",
        &c,
    );
    let table = String::from_utf8(c.cli(&["status", "--all"]).stdout).unwrap();
    assert!(
        table.contains("p1") && table.contains("p2") && table.contains("yes"),
        "{table}"
    );
    assert!(table.contains("no conflict copies"), "{table}");
}

#[test]
fn status_shows_a_large_file_moving_with_its_progress_and_then_in_sync() {
    let mut c = Cluster::start(1);
    // The sender is reached through a valve that lets 2 MB through, then
    // holds the rest: the download stops part-way until the valve opens.
    let listen = format!("127.0.0.1:{}", free_port());
    let valve = Valve::start(listen.clone(), 2 << 20);
    let src = c.add_peer_advertised("src", &listen, &valve.addr());
    c.wait_peers(2);
    let body = data(24 << 20, 11);
    fs::write(c.dir(src).join("big.bin"), &body).unwrap();
    let mut seen = serde_json::Value::Null;
    wait_for(
        CONVERGE,
        || {
            seen = status(&c, Some("p1"));
            let t = &seen["peers"][0]["transfers"][0];
            t["path"] == "big.bin" && t["done"].as_u64().is_some_and(|d| d > 0)
        },
        "p1's download of big.bin under way in status",
        &c,
    );
    let p1 = &seen["peers"][0];
    assert_eq!(p1["in_sync"], false, "{seen}");
    assert_eq!(p1["bytes_needed"], body.len() as u64, "{seen}");
    let t = &p1["transfers"][0];
    assert_eq!(t["size"], body.len() as u64, "{seen}");
    assert!(t["done"].as_u64().unwrap() < body.len() as u64, "{seen}");
    let table = String::from_utf8(c.cli(&["status", "--all"]).stdout).unwrap();
    assert!(table.contains("<- big.bin"), "{table}");

    valve.open();
    wait_file_everywhere(&c, "big.bin", &body);
    wait_for(
        CONVERGE,
        || {
            let s = status(&c, None);
            s["peers"].as_array().unwrap().iter().all(|p| {
                p["in_sync"] == true && p["transfers"].as_array().is_some_and(|t| t.is_empty())
            })
        },
        "every peer in sync, nothing under way",
        &c,
    );
}
