//! The path sanitizer: whatever it accepts is relative, `/`-separated, free
//! of `.`/`..`/empty components, NUL and backslash, and bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zync_proto::RelPath;

fuzz_target!(|s: &str| {
    if let Ok(p) = RelPath::new(s) {
        let p = p.as_str();
        assert!(!p.is_empty() && !p.starts_with('/') && p.len() <= 4096);
        assert!(!p.contains('\0') && !p.contains('\\'));
        for c in p.split('/') {
            assert!(!c.is_empty() && c != "." && c != ".." && c.len() <= 255, "{p:?}");
        }
        assert!(RelPath::new(p).is_ok(), "accepted paths are stable");
    }
});
