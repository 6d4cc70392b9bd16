//! Any bytes, decoded as every wire message: an error is fine, a panic or an
//! unbounded allocation is a bug. Whatever decodes must re-encode and decode
//! to the same value (every path in it already validated).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zync_proto::{decode, encode, Notification, PeerReply, PeerRequest, TrackerReply, TrackerRequest};

fn round_trip<T>(bytes: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + PartialEq,
{
    if let Ok(v) = decode::<T>(bytes) {
        let again: T = decode(&encode(&v)).expect("re-encoded message must decode");
        assert_eq!(again, v);
    }
}

fuzz_target!(|bytes: &[u8]| {
    round_trip::<TrackerRequest>(bytes);
    round_trip::<TrackerReply>(bytes);
    round_trip::<Notification>(bytes);
    round_trip::<PeerRequest>(bytes);
    round_trip::<PeerReply>(bytes);
});
