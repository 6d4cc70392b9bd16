//! Any bytes, decoded as every wire message: an error is fine, a panic or an
//! unbounded allocation is a bug. Whatever decodes must re-encode and decode
//! to the same value (every path in it already validated).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zync_proto::{decode, encode, Notification, PeerReply, PeerRequest, TrackerReply, TrackerRequest};

/// A macro rather than a generic function: `PeerReply` borrows from the
/// bytes it is decoded from, so each decode picks its own lifetime.
macro_rules! round_trip {
    ($t:ty, $bytes:expr) => {
        if let Ok(v) = decode::<$t>($bytes) {
            let wire = encode(&v);
            let again: $t = decode(&wire).expect("re-encoded message must decode");
            assert_eq!(again, v);
        }
    };
}

fuzz_target!(|bytes: &[u8]| {
    round_trip!(TrackerRequest, bytes);
    round_trip!(TrackerReply, bytes);
    round_trip!(Notification, bytes);
    round_trip!(PeerRequest, bytes);
    round_trip!(PeerReply, bytes);
});
