//! zync-web's request-target decoder: never panics, and any path it accepts
//! is one the wire's path rules accept too.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    if let Ok(t) = zync_web::http::decode_target(s) {
        if let Some(p) = t.path {
            assert!(zync_proto::RelPath::new(p.as_str()).is_ok(), "{p:?}");
        }
    }
});
