//! Which paths a folder does not sync: those `.zyncignore` at its root
//! names (gitignore syntax: `*`, `**`, `dir/`, `!negation`, `# comment`),
//! and common temp files. `.zyncignore` itself syncs like any file, so
//! the whole cluster ignores the same paths.
//!
//! An ignored path is never reported, fetched, deleted or overwritten: a
//! peer leaves whatever it holds there alone, so a path that becomes
//! ignored keeps every peer's copy as it was.

use std::path::Path;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use zync_proto::RelPath;

/// The file at a folder's root that lists the ignored paths.
pub const IGNORE_FILE: &str = ".zyncignore";

/// Ignored everywhere unless `.zyncignore` says otherwise (`!*.tmp`):
/// editor swap files, Office lock files, Finder's metadata, temp files.
pub const DEFAULTS: &[&str] = &["*.swp", "*.swo", "~$*", ".DS_Store", "*.tmp"];

/// The ignore rules of one folder.
pub struct Ignore {
    rules: Gitignore,
    /// The `.zyncignore` text they were read from (empty: none).
    source: String,
}

impl Ignore {
    /// The rules of the folder at `root`: the defaults, then its
    /// `.zyncignore` if it has one. A line that is not a valid pattern is
    /// logged and left out; the rest still apply.
    pub fn load(root: &Path) -> Ignore {
        let source = match std::fs::read_to_string(root.join(IGNORE_FILE)) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                tracing::warn!(file = IGNORE_FILE, error = %e, "cannot read the ignore file; only the default patterns apply");
                String::new()
            }
        };
        Ignore::from_text(root, source)
    }

    fn from_text(root: &Path, source: String) -> Ignore {
        let mut b = GitignoreBuilder::new(root);
        for line in DEFAULTS.iter().copied().chain(source.lines()) {
            if let Err(e) = b.add_line(None, line) {
                tracing::warn!(file = IGNORE_FILE, line, error = %e, "not a pattern; left out");
            }
        }
        let rules = b.build().unwrap_or_else(|e| {
            tracing::warn!(file = IGNORE_FILE, error = %e, "cannot use the ignore patterns; only the state folder is skipped");
            Gitignore::empty()
        });
        Ignore { rules, source }
    }

    /// Reads the folder's rules again; whether they changed.
    pub fn reload(&mut self, root: &Path) -> bool {
        let again = Ignore::load(root);
        let changed = again.source != self.source;
        *self = again;
        changed
    }

    /// Whether `path` (a file, or anything within an ignored folder) is
    /// not synced. `.zyncignore` itself always syncs, whatever it says.
    /// (The state folder is never a synced path: [`RelPath`] refuses it.)
    pub fn is_ignored(&self, path: &RelPath) -> bool {
        if path.as_str() == IGNORE_FILE {
            return false;
        }
        self.rules
            .matched_path_or_any_parents(path.as_str(), false)
            .is_ignore()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Ignore {
        Ignore::from_text(Path::new("/f"), text.to_owned())
    }

    fn ignored(ig: &Ignore, p: &str) -> bool {
        ig.is_ignored(&RelPath::new(p).unwrap())
    }

    #[test]
    fn the_defaults_skip_temp_files_and_nothing_else() {
        let ig = rules("");
        for p in [
            ".report.txt.swp",
            "a/b/.x.swo",
            "~$budget.xlsx",
            "d/.DS_Store",
            "x.tmp",
        ] {
            assert!(ignored(&ig, p), "{p}");
        }
        for p in ["report.txt", "a/tmp/x", "swp", ".zyncignore", "tmp.txt"] {
            assert!(!ignored(&ig, p), "{p}");
        }
    }

    #[test]
    fn gitignore_syntax_negation_folders_and_double_stars() {
        let ig = rules(
            "# build output\n\
             node_modules/\n\
             /build\n\
             **/cache/**\n\
             *.log\n\
             !keep.log\n\
             !important.tmp\n\
             [invalid\n",
        );
        for p in [
            "node_modules/x/y.js",
            "app/node_modules/z",
            "build/out.o",
            "a/cache/b/c",
            "x.log",
            "deep/y.log",
        ] {
            assert!(ignored(&ig, p), "{p}");
        }
        for p in [
            "src/build/out.o",
            "keep.log",
            "important.tmp",
            "cachefile",
            "README",
        ] {
            assert!(!ignored(&ig, p), "{p}");
        }
        // The ignore file syncs whatever it says.
        assert!(!ignored(&rules(".zyncignore\n*\n"), ".zyncignore"));
    }

    #[test]
    fn a_reload_says_whether_the_rules_changed() {
        let dir = tempfile::tempdir().unwrap();
        let mut ig = Ignore::load(dir.path());
        assert!(!ig.reload(dir.path()), "still no file");
        std::fs::write(dir.path().join(IGNORE_FILE), "*.bak\n").unwrap();
        assert!(ig.reload(dir.path()));
        assert!(ignored(&ig, "a.bak"));
        assert!(!ig.reload(dir.path()), "same text");
        std::fs::remove_file(dir.path().join(IGNORE_FILE)).unwrap();
        assert!(ig.reload(dir.path()));
        assert!(!ignored(&ig, "a.bak"));
    }
}
