//! Fixed 256 KiB blocks against content-defined chunking (FastCDC, the
//! `fastcdc` crate, 64 KiB / 256 KiB / 1 MiB), on the edits users make to
//! a large file: how many bytes a receiver holding the old version must
//! fetch, and what cutting costs. Prints a table; asserts nothing.
//!
//! ```sh
//! cargo run --release -p zync-peer --example chunking [SIZE_MIB]
//! ```

use std::collections::HashSet;
use std::time::Instant;

use sha2::{Digest, Sha256};

const BLOCK: usize = 256 * 1024;

fn fixed(data: &[u8]) -> Vec<(usize, usize)> {
    (0..data.len())
        .step_by(BLOCK)
        .map(|o| (o, (data.len() - o).min(BLOCK)))
        .collect()
}

fn cdc(data: &[u8]) -> Vec<(usize, usize)> {
    fastcdc::v2020::FastCDC::new(data, 64 * 1024, 256 * 1024, 1024 * 1024)
        .map(|c| (c.offset, c.length))
        .collect()
}

fn hashes(data: &[u8], cuts: &[(usize, usize)]) -> Vec<[u8; 32]> {
    cuts.iter()
        .map(|&(o, n)| Sha256::digest(&data[o..o + n]).into())
        .collect()
}

/// Bytes of `new` in chunks the holder of `old` does not have.
fn to_fetch(old: &[u8], new: &[u8], cut: fn(&[u8]) -> Vec<(usize, usize)>) -> (u64, usize) {
    let have: HashSet<[u8; 32]> = hashes(old, &cut(old)).into_iter().collect();
    let cuts = cut(new);
    let bytes = cuts
        .iter()
        .zip(hashes(new, &cuts))
        .filter(|(_, h)| !have.contains(h))
        .map(|(&(_, n), _)| n as u64)
        .sum();
    (bytes, cuts.len())
}

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(256);
    let size = mib * 1024 * 1024;
    // Deterministic pseudo-random content (incompressible, like media).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let old: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let mid = size / 2 + 12_345;
    let edits: Vec<(&str, Vec<u8>)> = vec![
        ("1 MiB overwritten in the middle", {
            let mut v = old.clone();
            v[mid..mid + (1 << 20)].iter_mut().for_each(|b| *b = !*b);
            v
        }),
        ("1 KiB inserted in the middle", {
            let mut v = old[..mid].to_vec();
            v.extend_from_slice(&[7u8; 1024]);
            v.extend_from_slice(&old[mid..]);
            v
        }),
        ("1 KiB deleted in the middle", {
            let mut v = old[..mid].to_vec();
            v.extend_from_slice(&old[mid + 1024..]);
            v
        }),
        ("1 byte inserted at the start", {
            let mut v = vec![1u8];
            v.extend_from_slice(&old);
            v
        }),
        ("1 MiB appended", {
            let mut v = old.clone();
            v.extend_from_slice(&old[..1 << 20]);
            v
        }),
    ];
    println!("{mib} MiB of random bytes; bytes a holder of the old version must fetch:\n");
    println!(
        "{:<34} {:>16} {:>16}",
        "edit", "fixed 256 KiB", "FastCDC 256 KiB"
    );
    for (name, new) in &edits {
        let (f, _) = to_fetch(&old, new, fixed);
        let (c, _) = to_fetch(&old, new, cdc);
        let m = |b: u64| format!("{:.2} MiB", b as f64 / 1048576.0);
        println!("{name:<34} {:>16} {:>16}", m(f), m(c));
    }
    let t = Instant::now();
    let n = cdc(&old).len();
    let cut_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = Sha256::digest(&old);
    let sha_s = t.elapsed().as_secs_f64();
    println!(
        "\nFastCDC cutting: {:.0} MiB/s ({n} chunks, mean {:.0} KiB); SHA-256 on the same core: {:.0} MiB/s",
        mib as f64 / cut_s,
        size as f64 / n as f64 / 1024.0,
        mib as f64 / sha_s
    );
}
