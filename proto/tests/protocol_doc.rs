//! PROTOCOL.md cannot drift from the code: every hex example in it is
//! decoded with the real codec into the type its marker names, and encoding
//! the result gives back the same bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use zync_proto::{
    decode, encode, Notification, PeerReply, PeerRequest, TrackerReply, TrackerRequest,
};

/// (type name, bytes) of every `<!-- example: TYPE -->` + hex block.
fn examples() -> Vec<(String, Vec<u8>)> {
    let doc = include_str!("../../PROTOCOL.md");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(ty) = line
            .strip_prefix("<!-- example: ")
            .and_then(|r| r.strip_suffix(" -->"))
        else {
            continue;
        };
        assert_eq!(
            lines.next(),
            Some("```hex"),
            "example {ty}: a hex block must follow"
        );
        let mut hex = String::new();
        for l in lines.by_ref() {
            if l == "```" {
                break;
            }
            hex.extend(l.split_whitespace());
        }
        let bytes = hex::decode(&hex).unwrap_or_else(|e| panic!("example {ty}: {e}"));
        out.push((ty.to_owned(), bytes));
    }
    out
}

fn round_trip<'a, T>(ty: &str, bytes: &'a [u8]) -> String
where
    T: serde::Deserialize<'a> + serde::Serialize + std::fmt::Debug,
{
    let msg: T = decode(bytes).unwrap_or_else(|e| panic!("example {ty}: {e}"));
    assert_eq!(
        encode(&msg),
        bytes,
        "example {ty} ({msg:?}) re-encodes differently"
    );
    format!("{msg:?}")
}

#[test]
fn every_example_in_protocol_md_decodes_and_re_encodes_to_the_same_bytes() {
    let all = examples();
    let mut seen = Vec::new();
    for (ty, bytes) in &all {
        let shown = match ty.as_str() {
            "TrackerRequest" => round_trip::<TrackerRequest>(ty, bytes),
            "TrackerReply" => round_trip::<TrackerReply>(ty, bytes),
            "Notification" => round_trip::<Notification>(ty, bytes),
            "PeerRequest" => round_trip::<PeerRequest>(ty, bytes),
            "PeerReply" => round_trip::<PeerReply>(ty, bytes),
            other => panic!("unknown example type {other}"),
        };
        seen.push(shown);
    }
    assert!(all.len() >= 14, "examples went missing: {seen:#?}");
    for kind in [
        "TrackerRequest",
        "TrackerReply",
        "Notification",
        "PeerRequest",
        "PeerReply",
    ] {
        assert!(all.iter().any(|(t, _)| t == kind), "no {kind} example");
    }
    // The walk-through in the text names what these bytes are.
    assert!(seen.iter().any(|s| s == "Peers"), "{seen:#?}");
    assert!(
        seen.iter().any(|s| s.starts_with("Register {")),
        "{seen:#?}"
    );
    assert!(seen.iter().any(|s| s.starts_with("Block {")), "{seen:#?}");
}
