//! Which paths a folder does not sync: those its `.zyncignore` files name
//! (gitignore syntax: `*`, `**`, `dir/`, `!negation`, `# comment`), and
//! common temp files. A `.zyncignore` in a sub-folder holds patterns
//! relative to that folder, and decides before the ones above it (a
//! `!negation` there brings back what a parent's pattern hid), except
//! that nothing within an ignored folder syncs, as with git. Every
//! `.zyncignore` syncs like any file, so the whole cluster ignores the
//! same paths.
//!
//! An ignored path is never reported, fetched, deleted or overwritten: a
//! peer leaves whatever it holds there alone, so a path that becomes
//! ignored keeps every peer's copy as it was.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use zync_proto::RelPath;

/// The file, in a folder or any folder within it, that lists the ignored
/// paths.
pub const IGNORE_FILE: &str = ".zyncignore";

/// Ignored everywhere unless a `.zyncignore` says otherwise (`!*.tmp`):
/// editor swap files, Office lock files, Finder's metadata, temp files.
pub const DEFAULTS: &[&str] = &["*.swp", "*.swo", "~$*", ".DS_Store", "*.tmp"];

/// Most bytes of a `.zyncignore` read; the rest is left out (and logged).
const MAX_IGNORE_FILE: u64 = 1 << 20;

/// The rules of one `.zyncignore`.
struct Rules {
    matcher: Gitignore,
    /// The text they were read from (empty: none).
    source: String,
}

/// The ignore rules of one folder.
pub struct Ignore {
    root: PathBuf,
    /// The defaults and the root's `.zyncignore`.
    top: Rules,
    /// Each sub-folder's `.zyncignore`, read the first time a path in it is
    /// asked about (`None`: it has none), kept until it changes.
    nested: RefCell<HashMap<String, Option<Rules>>>,
}

impl Ignore {
    /// The rules of the folder at `root`: the defaults, then its
    /// `.zyncignore` if it has one (those of sub-folders are read when
    /// needed). A line that is not a valid pattern is logged and left out;
    /// the rest still apply.
    pub fn load(root: &Path) -> Ignore {
        let source = read_rules(&root.join(IGNORE_FILE));
        Ignore::from_text(root, source)
    }

    fn from_text(root: &Path, source: String) -> Ignore {
        Ignore {
            root: root.to_owned(),
            top: Rules::build(root, DEFAULTS.iter().copied(), source),
            nested: RefCell::new(HashMap::new()),
        }
    }

    /// Reads the rules of the `.zyncignore` at `file` (the root's, or a
    /// sub-folder's) again; whether they changed.
    pub fn reload(&mut self, file: &RelPath) -> bool {
        let dir = match file.as_str().rsplit_once('/') {
            None => {
                let again = Ignore::load(&self.root);
                let changed = again.top.source != self.top.source;
                self.top = again.top;
                return changed;
            }
            Some((dir, _)) => dir,
        };
        let again = self.read_nested(dir);
        let text = again.as_ref().map(|r| r.source.clone()).unwrap_or_default();
        match self.nested.get_mut().insert(dir.to_owned(), again) {
            Some(before) => before.map(|r| r.source).unwrap_or_default() != text,
            // No path in that folder was asked about yet: no decision
            // was made with the old rules.
            None => false,
        }
    }

    fn read_nested(&self, dir: &str) -> Option<Rules> {
        let base = self.root.join(dir);
        let source = read_rules(&base.join(IGNORE_FILE));
        (!source.is_empty()).then(|| Rules::build(&base, std::iter::empty(), source))
    }

    /// Whether `path` (a file, or anything within an ignored folder) is
    /// not synced. A `.zyncignore` itself always syncs, whatever it says.
    /// (The state folder is never a synced path: [`RelPath`] refuses it.)
    pub fn is_ignored(&self, path: &RelPath) -> bool {
        let p = path.as_str();
        if p.rsplit('/').next() == Some(IGNORE_FILE) {
            return false;
        }
        // Where each component ends: the first n components are p[..ends[n - 1]].
        let ends: Vec<usize> = p
            .match_indices('/')
            .map(|(i, _)| i)
            .chain([p.len()])
            .collect();
        // Nothing within an ignored folder syncs; then the path itself.
        (1..ends.len()).any(|n| self.decide(p, &ends, n, true) == Some(true))
            || self.decide(p, &ends, ends.len(), false) == Some(true)
    }

    /// What the rules say of the first `n` components of `p` (which end at
    /// `ends`): those of the deepest folder above it that has a say first,
    /// the root's (and the defaults) last; `None` when no pattern matches.
    fn decide(&self, p: &str, ends: &[usize], n: usize, is_dir: bool) -> Option<bool> {
        let upto = &p[..ends[n - 1]];
        for depth in (1..n).rev() {
            let (dir, rel) = (&upto[..ends[depth - 1]], &upto[ends[depth - 1] + 1..]);
            let mut nested = self.nested.borrow_mut();
            if !nested.contains_key(dir) {
                let rules = self.read_nested(dir);
                nested.insert(dir.to_owned(), rules);
            }
            let said = nested
                .get(dir)
                .and_then(Option::as_ref)
                .and_then(|r| verdict(r.matcher.matched(rel, is_dir)));
            if said.is_some() {
                return said;
            }
        }
        verdict(self.top.matcher.matched(upto, is_dir))
    }
}

/// What one file's rules say of a path: ignored, kept, or nothing.
fn verdict<T>(m: Match<T>) -> Option<bool> {
    match m {
        Match::Ignore(_) => Some(true),
        Match::Whitelist(_) => Some(false),
        Match::None => None,
    }
}

impl Rules {
    /// `defaults`, then `source`'s lines, as patterns relative to `base`.
    fn build<'a>(base: &Path, defaults: impl Iterator<Item = &'a str>, source: String) -> Rules {
        let mut b = GitignoreBuilder::new(base);
        let lines: Vec<&str> = defaults.collect();
        for line in lines.into_iter().chain(source.lines()) {
            if let Err(e) = b.add_line(None, line) {
                tracing::warn!(file = %base.join(IGNORE_FILE).display(), line, error = %e, "not a pattern; left out");
            }
        }
        let matcher = b.build().unwrap_or_else(|e| {
            tracing::warn!(file = %base.join(IGNORE_FILE).display(), error = %e, "cannot use these ignore patterns");
            Gitignore::empty()
        });
        Rules { matcher, source }
    }
}

/// The text of the ignore file at `file`: empty when there is none, or it
/// is not a plain file (a FIFO would block, a link could point anywhere),
/// or it cannot be read (logged); at most [`MAX_IGNORE_FILE`] bytes.
fn read_rules(file: &Path) -> String {
    let plain = match std::fs::symlink_metadata(file) {
        Ok(m) => m.is_file(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return String::new(),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "cannot read the ignore file; its patterns do not apply");
            return String::new();
        }
    };
    if !plain {
        tracing::warn!(file = %file.display(), "the ignore file is not a plain file; its patterns do not apply");
        return String::new();
    }
    let mut text = String::new();
    let read =
        std::fs::File::open(file).and_then(|f| f.take(MAX_IGNORE_FILE).read_to_string(&mut text));
    if let Err(e) = read {
        tracing::warn!(file = %file.display(), error = %e, "cannot read the ignore file; its patterns do not apply");
        return String::new();
    }
    text
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
        let top = RelPath::new(IGNORE_FILE).unwrap();
        assert!(!ig.reload(&top), "still no file");
        std::fs::write(dir.path().join(IGNORE_FILE), "*.bak\n").unwrap();
        assert!(ig.reload(&top));
        assert!(ignored(&ig, "a.bak"));
        assert!(!ig.reload(&top), "same text");
        std::fs::remove_file(dir.path().join(IGNORE_FILE)).unwrap();
        assert!(ig.reload(&top));
        assert!(!ignored(&ig, "a.bak"));
    }

    #[test]
    fn a_sub_folders_file_decides_first_for_its_paths_but_cannot_reopen_an_ignored_folder() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(IGNORE_FILE), "*.bak\nbuild/\n").unwrap();
        for sub in ["keep", "logs/deep", "build"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("keep").join(IGNORE_FILE), "!*.bak\n").unwrap();
        std::fs::write(d.join("logs").join(IGNORE_FILE), "*.log\n/top-only\n").unwrap();
        std::fs::write(d.join("build").join(IGNORE_FILE), "!*\n").unwrap();
        let ig = Ignore::load(d);
        for p in [
            "x.bak",
            "other/y.bak",
            "logs/a.log",
            "logs/deep/b.log",
            "logs/top-only",
            "build/out.o",
            "keep/.DS_Store",
        ] {
            assert!(ignored(&ig, p), "{p}");
        }
        for p in [
            "keep/x.bak",
            "keep/sub/y.bak",
            "a.log",
            "other/a.log",
            "logs/deep/top-only",
            "logs/.zyncignore",
            "build/.zyncignore",
        ] {
            assert!(!ignored(&ig, p), "{p}");
        }
    }

    #[test]
    fn a_sub_folders_file_is_read_again_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        let mut ig = Ignore::load(d);
        let file = RelPath::new("sub/.zyncignore").unwrap();
        assert!(!ignored(&ig, "sub/a.log"));
        std::fs::write(d.join("sub").join(IGNORE_FILE), "*.log\n").unwrap();
        assert!(ig.reload(&file), "new rules for a folder already looked at");
        assert!(ignored(&ig, "sub/a.log") && !ignored(&ig, "a.log"));
        assert!(!ig.reload(&file), "same text");
        std::fs::remove_file(d.join("sub").join(IGNORE_FILE)).unwrap();
        assert!(ig.reload(&file));
        assert!(!ignored(&ig, "sub/a.log"));
        // A FIFO named like the file is not read (it would block).
        rustix::fs::mknodat(
            rustix::fs::CWD,
            d.join("sub").join(IGNORE_FILE),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(!ig.reload(&file));
        assert!(!ignored(&ig, "sub/a.log"));
    }
}
