//! The load generator runs end to end against a real tracker, small.

use std::process::Command;

#[test]
fn a_small_load_reaches_every_subscriber_and_keeps_every_peer() {
    // Built beside the load generator, where it looks for it.
    zync_testkit::tracker_bin();
    let out = Command::new(env!("CARGO_BIN_EXE_tracker-load"))
        .args(["--peers", "20", "--files", "3", "--subscribers", "8"])
        .args(["--clients", "2", "--seconds", "0.3", "--changes", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("registered 20 peers (60 entries)"), "{text}");
    assert!(
        text.contains("peers the tracker still holds live: 20 of 20"),
        "{text}"
    );
    assert!(
        text.contains("10 changes to 8 subscribers: 80 of 80 delivered"),
        "{text}"
    );
    let rate = |what: &str| -> f64 {
        let line = text.lines().find(|l| l.starts_with(what)).unwrap();
        let (_, tail) = line.rsplit_once(": ").unwrap();
        tail.trim_end_matches(" requests/s").parse().unwrap()
    };
    assert!(rate("locate") > 0.0 && rate("list") > 0.0, "{text}");
    assert!(text.contains("tracker process: peak RSS"), "{text}");
}
