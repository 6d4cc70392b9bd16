use serde::{Deserialize, Serialize};

use crate::{ErrorKind, PathError, MAX_MESSAGE_SIZE, PROTOCOL_VERSION};

/// Why a message could not be decoded. Decoding never panics.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The message was empty.
    #[error("empty message")]
    Empty,
    /// The message exceeds [`MAX_MESSAGE_SIZE`].
    #[error("message of {0} bytes exceeds the {MAX_MESSAGE_SIZE}-byte limit")]
    TooLarge(usize),
    /// The message ends before it is complete.
    #[error("truncated message")]
    Truncated,
    /// The message carries another protocol version.
    #[error("protocol version {got} (this build speaks {PROTOCOL_VERSION})")]
    BadVersion {
        /// The version the sender spoke.
        got: u64,
    },
    /// A path in the message broke a validation rule.
    #[error(transparent)]
    InvalidPath(#[from] PathError),
    /// Anything else: not MessagePack, wrong shape, unknown variant.
    #[error("malformed message: {0}")]
    Malformed(String),
}

impl DecodeError {
    /// The error kind to send back to the sender.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DecodeError::TooLarge(_) => ErrorKind::TooLarge,
            DecodeError::BadVersion { .. } => ErrorKind::BadVersion,
            DecodeError::InvalidPath(_) => ErrorKind::Invalid,
            _ => ErrorKind::Malformed,
        }
    }
}

/// Encodes a message as MessagePack `[PROTOCOL_VERSION, body]`, with
/// struct fields by name so later versions can add fields.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Serializing our own types into a Vec cannot fail: every type is a
    // plain tree with string keys, and Vec writes are infallible.
    rmp_serde::to_vec_named(&(PROTOCOL_VERSION, msg)).unwrap_or_default()
}

/// The bytes [`encode`] writes for `PeerReply::Block { id, index, data }`
/// before `data`, when `data` is `len` bytes long, in a buffer with room
/// for them: a holder reads the block from disk straight in after them, so
/// the bytes it serves are not copied once more to be encoded. `None` if
/// the encoding does not end with the block's bytes (it always does; the
/// caller then encodes the usual way).
///
/// [`encode`]: encode
pub fn block_reply_head(id: u64, index: u64, len: usize) -> Option<Vec<u8>> {
    let empty = crate::PeerReply::Block {
        id,
        index,
        data: std::borrow::Cow::Borrowed(&[]),
    };
    let mut head = encode(&empty);
    // The block's bytes come last, as a `bin` whose length comes first:
    // `c4 00` when empty. Put the real length there instead.
    if !head.ends_with(&[0xc4, 0x00]) {
        return None;
    }
    head.truncate(head.len() - 2);
    let len32 = u32::try_from(len).ok()?;
    rmp::encode::write_bin_len(&mut head, len32).ok()?;
    head.reserve_exact(len);
    Some(head)
}

/// Decodes a message produced by [`encode`], checking size and version first.
/// A message may borrow from `bytes` ([`PeerReply::Block`]'s data does), so
/// a block is checked and written straight from the buffer it arrived in.
///
/// [`PeerReply::Block`]: crate::PeerReply::Block
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() > MAX_MESSAGE_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    // The envelope is an array whose first element is the version. Read just
    // that much by hand, so a future version with another shape is reported
    // as a version mismatch, not as garbage.
    let mut rd = bytes;
    let len = rmp::decode::read_array_len(&mut rd).map_err(|e| marker_error(&e))?;
    if len == 0 {
        return Err(DecodeError::Malformed("empty envelope".into()));
    }
    let version: u64 = rmp::decode::read_int(&mut rd).map_err(|e| match e {
        rmp::decode::NumValueReadError::InvalidMarkerRead(io)
        | rmp::decode::NumValueReadError::InvalidDataRead(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            DecodeError::Truncated
        }
        other => DecodeError::Malformed(format!("version: {other}")),
    })?;
    if version != u64::from(PROTOCOL_VERSION) {
        return Err(DecodeError::BadVersion { got: version });
    }
    crate::path::take_refusal();
    let (_, msg): (u64, T) = rmp_serde::from_slice(bytes).map_err(|e| {
        // A refused path surfaces from serde as text only; the path type
        // noted what it refused.
        match crate::path::take_refusal() {
            Some(p) => DecodeError::InvalidPath(p),
            None => classify(e),
        }
    })?;
    Ok(msg)
}

fn marker_error(e: &rmp::decode::ValueReadError) -> DecodeError {
    use rmp::decode::ValueReadError as V;
    match e {
        V::InvalidMarkerRead(io) | V::InvalidDataRead(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            DecodeError::Truncated
        }
        other => DecodeError::Malformed(format!("envelope: {other}")),
    }
}

fn classify(e: rmp_serde::decode::Error) -> DecodeError {
    use rmp_serde::decode::Error as E;
    match &e {
        E::InvalidMarkerRead(io) | E::InvalidDataRead(io)
            if io.kind() == std::io::ErrorKind::UnexpectedEof =>
        {
            DecodeError::Truncated
        }
        _ => DecodeError::Malformed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::*;
    use proptest::prelude::*;

    fn sample_entry() -> FileEntry {
        let mut version = VersionVector::new();
        version.bump("p1");
        FileEntry {
            path: RelPath::new("docs/ünï code.txt").unwrap(),
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            sha256: Hash::of(b"abc"),
            blocks: vec![Hash::of(b"abc")],
            version,
            deleted: false,
            modified_by: "p1".into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    #[test]
    fn a_block_reply_head_and_the_bytes_are_the_encoded_reply() {
        // Every width of msgpack's `bin` length: 8, 16 and 32 bits.
        for len in [0, 1, 255, 256, 65_535, 65_536, MAX_BLOCK_SIZE as usize] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            for (id, index) in [(0, 0), (7, 3), (u64::MAX, 1 << 40)] {
                let mut head = block_reply_head(id, index, len).unwrap();
                assert!(head.capacity() - head.len() >= len, "room for the block");
                head.extend_from_slice(&data);
                let whole = encode(&PeerReply::Block {
                    id,
                    index,
                    data: std::borrow::Cow::Borrowed(&data),
                });
                assert_eq!(head, whole, "len {len}, id {id}, index {index}");
            }
        }
    }

    #[test]
    fn an_entry_without_lengths_is_one_of_fixed_blocks_in_either_encoding() {
        // What protocol 1 and a version 1 index wrote: no `lengths` at all,
        // by name (messages, the index file) or by position (the journal).
        #[derive(Serialize)]
        struct Old<'a> {
            path: &'a str,
            size: u64,
            mtime_ns: i64,
            sha256: Hash,
            blocks: Vec<Hash>,
            version: VersionVector,
            deleted: bool,
            modified_by: &'a str,
        }
        let e = sample_entry();
        let old = Old {
            path: e.path.as_str(),
            size: e.size,
            mtime_ns: e.mtime_ns,
            sha256: e.sha256,
            blocks: e.blocks.clone(),
            version: e.version.clone(),
            deleted: e.deleted,
            modified_by: &e.modified_by,
        };
        let named: FileEntry =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&old).unwrap()).unwrap();
        let positional: FileEntry =
            rmp_serde::from_slice(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(named, e);
        assert_eq!(positional, e);
        // And an entry of fixed blocks is still written without it.
        assert_eq!(
            rmp_serde::to_vec_named(&e).unwrap(),
            rmp_serde::to_vec_named(&old).unwrap()
        );
        let mut cut = e.clone();
        cut.lengths = vec![3];
        let back: FileEntry = rmp_serde::from_slice(&rmp_serde::to_vec(&cut).unwrap()).unwrap();
        assert_eq!(back, cut);
        // A mode travels by name, and an entry without one is written as
        // before modes were kept.
        let mut script = e.clone();
        script.mode = Some(0o755);
        let back: FileEntry =
            rmp_serde::from_slice(&rmp_serde::to_vec_named(&script).unwrap()).unwrap();
        assert_eq!(back.mode, Some(0o755));
    }

    fn all_messages() -> Vec<Vec<u8>> {
        let e = sample_entry();
        let moving = crate::Transfer {
            path: RelPath::new("big/video.mkv").unwrap(),
            size: 1 << 30,
            done: 1 << 20,
            rate: 50 << 20,
        };
        let peer = PeerInfo {
            name: "p1".into(),
            endpoint: "tcp://1.2.3.4:5".into(),
            last_seen_ms: 7,
            transfers: vec![moving.clone()],
            failing: 3,
            errors: vec![crate::Failure::new(
                RelPath::new("a/b").unwrap(),
                "every holder failed",
            )],
        };
        let cf = ClusterFile {
            entry: e.clone(),
            holders: vec!["p1".into()],
        };
        vec![
            encode(&TrackerRequest::Register {
                name: "p1".into(),
                device: 9,
                endpoint: "tcp://x:1".into(),
                files: vec![e.clone()],
            }),
            encode(&TrackerRequest::Heartbeat {
                name: "p1".into(),
                device: 9,
                transfers: vec![],
                failing: 0,
                errors: vec![],
            }),
            encode(&TrackerRequest::Heartbeat {
                name: "p1".into(),
                device: 9,
                transfers: vec![moving],
                failing: 1,
                errors: vec![crate::Failure::new(RelPath::new("x").unwrap(), "disk full")],
            }),
            encode(&TrackerRequest::Update {
                name: "p1".into(),
                device: 9,
                files: vec![e.clone()],
            }),
            encode(&TrackerRequest::Unregister {
                name: "p1".into(),
                device: 9,
            }),
            encode(&TrackerRequest::List { after: None }),
            encode(&TrackerRequest::List {
                after: Some(e.path.clone()),
            }),
            encode(&TrackerRequest::Locate {
                path: e.path.clone(),
                sha256: e.sha256,
            }),
            encode(&TrackerRequest::Peers),
            encode(&TrackerRequest::Find { sha256: e.sha256 }),
            encode(&TrackerRequest::Follow),
            encode(&TrackerReply::Following {
                epoch: 1,
                seq: 2,
                publish: "tcp://*:5556".into(),
                heartbeat_ms: 1000,
            }),
            encode(&TrackerReply::Error {
                kind: ErrorKind::Standby,
                message: "ask the primary".into(),
            }),
            encode(&TrackerReply::Registered {
                epoch: 1,
                publish: "tcp://*:5556".into(),
                heartbeat_ms: 1000,
            }),
            encode(&TrackerReply::Ok),
            encode(&TrackerReply::Snapshot {
                epoch: 1,
                seq: 2,
                files: vec![cf.clone()],
                peers: vec![peer.clone()],
                next: Some(e.path.clone()),
            }),
            encode(&TrackerReply::Holders {
                entry: Some(e.clone()),
                holders: vec![peer.clone()],
            }),
            encode(&TrackerReply::Peers {
                peers: vec![peer.clone()],
            }),
            encode(&TrackerReply::Error {
                kind: ErrorKind::UnknownPeer,
                message: "who?".into(),
            }),
            encode(&Notification {
                epoch: 1,
                seq: 3,
                event: Event::FileChanged { file: cf },
            }),
            encode(&Notification {
                epoch: 1,
                seq: 4,
                event: Event::PeerJoined { peer },
            }),
            encode(&Notification {
                epoch: 1,
                seq: 5,
                event: Event::PeerLeft { name: "p1".into() },
            }),
            encode(&Notification {
                epoch: 1,
                seq: 5,
                event: Event::Hugz,
            }),
            encode(&Notification {
                epoch: 1,
                seq: 6,
                event: Event::Forgotten { entry: e.clone() },
            }),
            encode(&PeerRequest::GetBlock {
                id: 1,
                path: e.path.clone(),
                sha256: e.sha256,
                index: 0,
                offset: 0,
                len: 3,
            }),
            encode(&PeerRequest::Ping),
            encode(&PeerReply::Block {
                id: 1,
                index: 0,
                data: b"abc"[..].into(),
            }),
            encode(&PeerReply::Pong),
            encode(&PeerReply::Error {
                id: 1,
                kind: ErrorKind::NotFound,
                message: "gone".into(),
            }),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = all_messages();
        // Decode each with its own type and re-encode: identical bytes.
        let reenc: Vec<Vec<u8>> = msgs[..11]
            .iter()
            .map(|b| encode(&decode::<TrackerRequest>(b).unwrap()))
            .chain(
                msgs[11..19]
                    .iter()
                    .map(|b| encode(&decode::<TrackerReply>(b).unwrap())),
            )
            .chain(
                msgs[19..24]
                    .iter()
                    .map(|b| encode(&decode::<Notification>(b).unwrap())),
            )
            .chain(
                msgs[24..26]
                    .iter()
                    .map(|b| encode(&decode::<PeerRequest>(b).unwrap())),
            )
            .chain(
                msgs[26..]
                    .iter()
                    .map(|b| encode(&decode::<PeerReply>(b).unwrap())),
            )
            .collect();
        assert_eq!(msgs, reenc);
    }

    #[test]
    fn golden_bytes_are_stable() {
        // [2, {"Heartbeat": {"name": "p1", "device": 9}}]
        assert_eq!(
            hex::encode(encode(&TrackerRequest::Heartbeat {
                name: "p1".into(),
                device: 9,
                transfers: vec![],
                failing: 0,
                errors: vec![],
            })),
            "9202 81a9486561727462656174 82a46e616d65a27031a6646576696365 09".replace(' ', "")
        );
        // [2, "List"]
        // [2, {"List": {"after": nil}}]
        assert_eq!(
            hex::encode(encode(&TrackerRequest::List { after: None })),
            "9202 81a44c697374 81a56166746572 c0".replace(' ', "")
        );
        // [2, {"Find": {"sha256": bin 32}}]
        assert_eq!(
            hex::encode(encode(&TrackerRequest::Find {
                sha256: Hash::from_hex(&"ab".repeat(32)).unwrap()
            })),
            format!("9202 81a446696e64 81a6736861323536 c420{}", "ab".repeat(32)).replace(' ', "")
        );
        // Block data travels as a MessagePack bin, not an array of integers.
        let b = encode(&PeerReply::Block {
            id: 1,
            index: 2,
            data: vec![0xAA; 3].into(),
        });
        assert!(hex::encode(&b).ends_with("c403aaaaaa"));
    }

    #[test]
    fn rejects_empty_oversized_truncated_and_garbage() {
        assert!(matches!(
            decode::<TrackerRequest>(&[]),
            Err(DecodeError::Empty)
        ));
        let huge = vec![0u8; MAX_MESSAGE_SIZE + 1];
        assert!(matches!(
            decode::<TrackerRequest>(&huge),
            Err(DecodeError::TooLarge(_))
        ));
        let full = encode(&TrackerRequest::Heartbeat {
            name: "p1".into(),
            device: 9,
            transfers: vec![],
            failing: 0,
            errors: vec![],
        });
        for cut in 1..full.len() {
            let r = decode::<TrackerRequest>(&full[..cut]);
            assert!(
                matches!(r, Err(DecodeError::Truncated)),
                "cut at {cut}: {r:?}"
            );
        }
        assert!(matches!(
            decode::<TrackerRequest>(b"\xc1garbage"),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode::<TrackerRequest>(b"hello world"),
            Err(DecodeError::Malformed(_))
        ));
        // Right version, unknown variant.
        let unknown = rmp_serde::to_vec(&(PROTOCOL_VERSION, "Explode")).unwrap();
        assert!(matches!(
            decode::<TrackerRequest>(&unknown),
            Err(DecodeError::Malformed(_))
        ));
        // A reply decoded as a request.
        assert!(decode::<TrackerRequest>(&encode(&TrackerReply::Ok)).is_err());
    }

    #[test]
    fn rejects_wrong_version_before_looking_at_the_body() {
        // Version 1, whose GetBlock meant a fixed block.
        let msg = rmp_serde::to_vec_named(&(1u16, TrackerRequest::List { after: None })).unwrap();
        assert!(matches!(
            decode::<TrackerRequest>(&msg),
            Err(DecodeError::BadVersion { got: 1 })
        ));
        let future = rmp_serde::to_vec(&(99u16, "SomethingNew", [1, 2, 3])).unwrap();
        let err = decode::<TrackerRequest>(&future).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadVersion);
    }

    #[test]
    fn rejects_hostile_paths_inside_messages() {
        #[derive(Serialize)]
        enum Raw<'a> {
            Locate {
                path: &'a str,
                sha256: &'a serde_bytes::Bytes,
            },
        }
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../../b",
            ".zync/index",
            "a\\b",
            "",
        ] {
            let msg = encode(&Raw::Locate {
                path: bad,
                sha256: serde_bytes::Bytes::new(&[0; 32]),
            });
            let err = decode::<TrackerRequest>(&msg).unwrap_err();
            assert!(
                matches!(err, DecodeError::InvalidPath(_)),
                "{bad:?}: {err:?}"
            );
            assert_eq!(err.kind(), ErrorKind::Invalid);
        }
    }

    #[test]
    fn rejects_wrong_hash_length() {
        #[derive(Serialize)]
        enum Raw<'a> {
            Locate {
                path: &'a str,
                sha256: &'a serde_bytes::Bytes,
            },
        }
        let msg = encode(&Raw::Locate {
            path: "ok",
            sha256: serde_bytes::Bytes::new(&[0; 31]),
        });
        assert!(matches!(
            decode::<TrackerRequest>(&msg),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn huge_length_prefix_does_not_allocate() {
        // An array header claiming 2^32-1 elements, with nothing behind it.
        let msg = [
            0x92, 0x01, 0x81, 0xa4, b'L', b'i', b's', b't', 0xdd, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(decode::<TrackerRequest>(&msg).is_err());
        let msg = [0x92, 0x01, 0xdb, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<TrackerRequest>(&msg).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<TrackerRequest>(&bytes);
            let _ = decode::<TrackerReply>(&bytes);
            let _ = decode::<Notification>(&bytes);
            let _ = decode::<PeerRequest>(&bytes);
            let _ = decode::<PeerReply>(&bytes);
        }

        #[test]
        fn block_replies_round_trip(id: u64, index: u64, data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let msg = PeerReply::Block { id, index, data: data.into() };
            let bytes = encode(&msg);
            let back = decode::<PeerReply>(&bytes).unwrap();
            // The data is borrowed from the message, not copied out of it.
            if let PeerReply::Block { data: std::borrow::Cow::Owned(_), .. } = back {
                prop_assert!(false, "block data was copied");
            }
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn entries_round_trip(
            path in "[a-zA-Z0-9 _é]{1,12}(/[a-zA-Z0-9 ._-]{1,12}){0,3}",
            size in 0u64..(1 << 40),
            mtime_ns: i64,
            deleted: bool,
            bumps in proptest::collection::vec("[a-c]", 0..6),
            mode in proptest::option::of(0u32..=0o777),
        ) {
            if let Ok(path) = RelPath::new(path) {
                let mut version = VersionVector::new();
                for b in &bumps { version.bump(b); }
                let e = FileEntry {
                    path, size, mtime_ns, sha256: Hash::of(&size.to_le_bytes()),
                    blocks: vec![Hash::EMPTY; (size % 7) as usize], version, deleted,
                    modified_by: "x".into(),
                    lengths: vec![7; (size % 5) as usize],
                    mode,
                };
                let msg = TrackerRequest::Update { name: "n".into(), device: 1, files: vec![e] };
                prop_assert_eq!(decode::<TrackerRequest>(&encode(&msg)).unwrap(), msg);
            }
        }
    }
}
