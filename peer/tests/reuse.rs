//! Only the bytes that changed cross the network: a receiver takes every
//! block it already holds (in the old version of the file, in another
//! file, in what a deletion just kept) from its own disk, checked against
//! the block's hash, and the `synced` line says how much came from where.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use zync_testkit::{self as common, wait_for, Cluster, CONVERGE};

const BLOCK: usize = 256 * 1024;

/// `data` cut as a peer cuts it: (offset, length, hash) of each chunk.
fn chunks(data: &[u8]) -> Vec<(usize, usize, zync_proto::Hash)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = zync_peer::hashing::next_cut(&data[at..]);
        out.push((at, n, zync_proto::Hash::of(&data[at..at + n])));
        at += n;
    }
    out
}

/// Bytes of `new` in chunks that `old` does not have.
fn fresh_bytes(old: &[u8], new: &[u8]) -> u64 {
    let have: std::collections::HashSet<_> = chunks(old).into_iter().map(|c| c.2).collect();
    chunks(new)
        .into_iter()
        .filter(|c| !have.contains(&c.2))
        .map(|c| c.1 as u64)
        .sum()
}

/// The (fetched, reused, from) of the last `synced` line for `path` in
/// peer `i`'s log that delivered content `sha_short`.
fn synced(c: &Cluster, i: usize, path: &str, sha_short: &str) -> Option<(u64, u64, String)> {
    let log = c.peers[i].proc.log_text();
    let line = log.lines().rev().find(|l| {
        l.contains("event=synced")
            && l.contains(&format!(" path={path} "))
            && l.contains(&format!("sha256={sha_short}"))
    })?;
    let field = |name: &str| common::log_field(line, name).map(str::to_owned);
    Some((
        field("fetched")?.parse().ok()?,
        field("reused")?.parse().ok()?,
        field("from")?,
    ))
}

fn wait_synced(c: &Cluster, i: usize, path: &str, content: &[u8]) -> (u64, u64, String) {
    let short = zync_proto::Hash::of(content).short();
    let mut got = None;
    wait_for(
        CONVERGE,
        || {
            got = synced(c, i, path, &short);
            got.is_some()
        },
        &format!("{path} ({short}) synced on {}", c.peers[i].name),
        c,
    );
    got.unwrap()
}

#[test]
fn an_edit_in_the_middle_fetches_only_its_blocks() {
    let c = Cluster::start(2);
    let mut body = common::data(40 * BLOCK + 1234, 7);
    // Whole, so that p2 never syncs a half-written version to reuse from.
    c.put_whole(0, "big.bin", &body);
    common::wait_file_everywhere(&c, "big.bin", &body);
    let (fetched, reused, from) = wait_synced(&c, 1, "big.bin", &body);
    assert_eq!(
        (fetched, reused, from.as_str()),
        (body.len() as u64, 0, "p1")
    );

    // Ten bytes changed in place, then 1 KiB inserted further on: each
    // costs the one or two chunks around it, not the rest of the file.
    let old = body.clone();
    body[17 * BLOCK + 100..17 * BLOCK + 110].copy_from_slice(b"0123456789");
    write_and_expect_fresh(&c, &old, &body, "only the changed chunks cross the network");
    let old = body.clone();
    body.splice(30 * BLOCK..30 * BLOCK, [0x5a; 1024]);
    write_and_expect_fresh(&c, &old, &body, "an insertion costs the chunks around it");
}

/// Writes `body` over `old` as big.bin on p1, and checks that p2 fetched
/// exactly the chunks `old` lacks (at most 2 MiB) and reused the rest.
fn write_and_expect_fresh(c: &Cluster, old: &[u8], body: &[u8], why: &str) {
    c.put_whole(0, "big.bin", body);
    common::wait_file_everywhere(c, "big.bin", body);
    let (fetched, reused, _) = wait_synced(c, 1, "big.bin", body);
    let want = fresh_bytes(old, body);
    assert!(want > 0 && want <= 2 * 1024 * 1024, "{want}");
    assert_eq!(fetched, want, "{why}");
    assert_eq!(reused, body.len() as u64 - want);
}

#[test]
fn a_renamed_or_copied_file_fetches_nothing() {
    let c = Cluster::start(2);
    let body = common::data(9 * BLOCK + 77, 3);
    std::fs::write(c.dir(0).join("first.bin"), &body).unwrap();
    common::wait_file_everywhere(&c, "first.bin", &body);

    std::fs::copy(c.dir(0).join("first.bin"), c.dir(0).join("copy.bin")).unwrap();
    common::wait_file_everywhere(&c, "copy.bin", &body);
    assert_eq!(
        wait_synced(&c, 1, "copy.bin", &body),
        (0, body.len() as u64, "-".to_owned())
    );

    // A rename: whichever of the deletion and the new path arrives first,
    // the content is on p2's disk (its folder, or what the deletion kept).
    std::fs::create_dir_all(c.dir(0).join("moved")).unwrap();
    std::fs::rename(
        c.dir(0).join("first.bin"),
        c.dir(0).join("moved/renamed.bin"),
    )
    .unwrap();
    common::wait_file_everywhere(&c, "moved/renamed.bin", &body);
    common::wait_gone_everywhere(&c, "first.bin");
    let (fetched, reused, _) = wait_synced(&c, 1, "moved/renamed.bin", &body);
    assert_eq!((fetched, reused), (0, body.len() as u64));
    // The whole file again under its new name, byte for byte.
    assert_eq!(
        std::fs::read(c.dir(1).join("moved/renamed.bin")).unwrap(),
        body
    );
}

#[test]
fn a_rotted_local_block_is_fetched_not_reused() {
    let c = Cluster::start(2);
    let mut body = common::data(6 * BLOCK, 11);
    std::fs::write(c.dir(0).join("r.bin"), &body).unwrap();
    common::wait_file_everywhere(&c, "r.bin", &body);
    common::wait_index_saved(&c, 1);

    // p2's copy rots in block 2 (same size, same mtime: no watcher can tell),
    // then p1 changes block 4.
    let file = c.dir(1).join("r.bin");
    let mtime = filetime::FileTime::from_last_modification_time(&std::fs::metadata(&file).unwrap());
    let original = body.clone();
    let mut rotten = body.clone();
    rotten[2 * BLOCK + 5] ^= 0xff;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(
            &rotten[2 * BLOCK + 5..2 * BLOCK + 6],
            (2 * BLOCK + 5) as u64,
        )
        .unwrap();
    }
    filetime::set_file_mtime(&file, mtime).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    body[4 * BLOCK] ^= 0x55;
    c.put_whole(0, "r.bin", &body);

    // p2 ends with the right bytes: the rotted block came from p1, not its disk.
    wait_for(
        CONVERGE,
        || std::fs::read(&file).ok().as_deref() == Some(&body[..]),
        "the new version on p2",
        &c,
    );
    let (fetched, reused, _) = wait_synced(&c, 1, "r.bin", &body);
    // The chunks the change made, and the one the rotted byte is in.
    let old = chunks(&original);
    let rotted = old
        .iter()
        .find(|&&(at, n, _)| (at..at + n).contains(&(2 * BLOCK + 5)))
        .unwrap()
        .2;
    let want: u64 = chunks(&body)
        .into_iter()
        .filter(|c| c.2 == rotted || !old.iter().any(|o| o.2 == c.2))
        .map(|c| c.1 as u64)
        .sum();
    assert_eq!(fetched, want, "the changed chunks and the rotted one");
    assert_eq!(reused, body.len() as u64 - want);
}

#[test]
fn a_receiver_killed_mid_download_resumes_without_fetching_a_block_twice() {
    let mut c = Cluster::start(2);
    let body = common::data(512 * BLOCK, 5); // 128 MiB
    let p2 = c.dir(1).to_owned();
    let part_len = || common::partial_len(&p2);
    std::fs::write(c.dir(0).join("huge.bin"), &body).unwrap();
    // Once part of it is on p2's disk, freeze the holder and kill p2.
    wait_for(
        CONVERGE,
        // A chunk may end up to 1 MiB past what is on disk.
        || part_len() >= 24 * BLOCK as u64,
        "a partial download on p2",
        &c,
    );
    c.peers[0].proc.signal("STOP");
    let had = part_len();
    assert!(
        had < body.len() as u64,
        "the download finished before it could be cut"
    );
    c.peers[1].proc.kill();
    c.peers[0].proc.signal("CONT");
    assert!(
        !c.dir(1).join("huge.bin").exists(),
        "a partial file under the real name"
    );

    c.restart_peer(1);
    common::wait_file_everywhere(&c, "huge.bin", &body);
    let line = common::synced_line(&c, 1, "huge.bin").expect("a synced line");
    let field = |name: &str| -> u64 {
        common::log_field(&line, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line}"))
    };
    let (fetched, reused, resumed) = (field("fetched"), field("reused"), field("resumed"));
    assert!(
        resumed >= 16 * BLOCK as u64,
        "resumed {resumed} of {had} on disk: {line}"
    );
    assert_eq!(
        fetched + reused + resumed,
        body.len() as u64,
        "a block came twice: {line}"
    );
    // Nothing is left in staging once the file is in place.
    wait_for(CONVERGE, || part_len() == 0, "the partial file gone", &c);
}
