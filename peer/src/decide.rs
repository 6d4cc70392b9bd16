//! The engine's decisions as pure functions: what the folder's index holds
//! for a path and one input in, what to do out. No I/O, no sockets, no
//! clock (the time is an argument), so each rule is tested alone, in
//! microseconds; the engine only carries the plans out.

use zync_proto::{Causality, FileEntry, Hash, Resolution, VersionVector};

use crate::hashing::Stat;
use crate::index::LocalEntry;

/// What to do with a remote version of a path.
#[derive(Debug, PartialEq, Eq)]
pub enum RemotePlan {
    /// Nothing: ours is the same version or newer.
    Keep,
    /// Nothing: ours is concurrent and wins the conflict order; the other
    /// peers will keep the remote version as a conflict copy.
    OursWins,
    /// Its content is not here yet: download it, then decide again.
    Fetch,
    /// Change the folder to match `target` (the remote version with our
    /// version merged in), after moving our file aside as a conflict copy
    /// if `aside`.
    Apply {
        /// Move the local file aside first (a concurrent loser on disk).
        aside: bool,
        /// What to do.
        step: Step,
    },
}

/// How the folder comes to hold a remote version.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A deletion: remove the file if `on_disk`, record the tombstone.
    Delete {
        /// The tombstone to record.
        target: FileEntry,
        /// A file of ours is on disk at the path.
        on_disk: bool,
    },
    /// The bytes on disk already are its content: record the version only.
    Adopt {
        /// The version to record.
        target: FileEntry,
    },
    /// Put the downloaded bytes in place as `target`.
    Install {
        /// The version to record.
        target: FileEntry,
    },
}

/// Decides what to do with remote version `r`, given what the index holds
/// for its path right after the disk was looked at (`local`), and whether
/// its bytes have been downloaded (`have_bytes`).
pub fn plan_remote(local: Option<&LocalEntry>, r: &FileEntry, have_bytes: bool) -> RemotePlan {
    let (version, conflict) = match local {
        None => (r.version.clone(), false),
        Some(l) => match l.entry.resolve(r) {
            Resolution::Keep => return RemotePlan::Keep,
            Resolution::ConflictLocalWins => return RemotePlan::OursWins,
            Resolution::TakeRemote => (l.entry.version.merged(&r.version), false),
            Resolution::ConflictRemoteWins => (l.entry.version.merged(&r.version), true),
        },
    };
    let on_disk = local.filter(|l| !l.entry.deleted && l.stat.is_some());
    let same_bytes = on_disk.is_some_and(|l| !r.deleted && l.entry.sha256 == r.sha256);
    if !r.deleted && !same_bytes && !have_bytes {
        return RemotePlan::Fetch;
    }
    let target = FileEntry {
        version,
        ..r.clone()
    };
    let step = if target.deleted {
        Step::Delete {
            target,
            on_disk: on_disk.is_some(),
        }
    } else if same_bytes {
        Step::Adopt { target }
    } else {
        Step::Install { target }
    };
    RemotePlan::Apply {
        aside: conflict && on_disk.is_some(),
        step,
    }
}

/// What a finished download means, given the version wanted for its path
/// now (`None`: no longer wanted).
#[derive(Debug, PartialEq, Eq)]
pub enum DonePlan {
    /// Decide on it ([`plan_remote`] with its bytes).
    Apply,
    /// Another version is wanted meanwhile: fetch that one instead.
    FetchAgain,
    /// The version is gone from the tracker: forget it (what replaced it
    /// arrives as a notification).
    Forget,
    /// Try again after a backoff.
    Retry,
}

/// How a download ended, as far as deciding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified bytes are here.
    Fetched,
    /// The tracker no longer has this version (deleted or replaced).
    Superseded,
    /// Anything else: holders gone, disk full, …
    Failed,
}

/// Decides what to do when the download of version `got` ends with `outcome`.
pub fn plan_done(
    wanted: Option<&VersionVector>,
    got: &VersionVector,
    outcome: Outcome,
) -> DonePlan {
    if wanted.is_some_and(|w| w.compare(got) != Causality::Equal) {
        return DonePlan::FetchAgain;
    }
    match outcome {
        Outcome::Fetched => DonePlan::Apply,
        Outcome::Superseded => DonePlan::Forget,
        Outcome::Failed => DonePlan::Retry,
    }
}

/// Whether remote version `r` should replace `wanted` as the version to
/// download for its path.
pub fn worth_wanting(wanted: Option<&FileEntry>, r: &FileEntry) -> bool {
    !wanted.is_some_and(|w| w.version == r.version || w.supersedes(r))
}

/// Whether a file found on disk with stat `st` must be hashed: only if its
/// content may not be what the index recorded (a new mode alone is
/// [`plan_unhashed`]'s).
pub fn needs_hash(local: Option<&LocalEntry>, st: Stat) -> bool {
    !local.is_some_and(|l| l.stat.is_some_and(|r| r.same_content(&st)))
}

/// Whether the mode on disk (`st`) is not the one recorded. A stat recorded
/// before modes were kept has none: nothing to compare, no change.
fn mode_changed(local: Option<&LocalEntry>, st: Stat) -> bool {
    let recorded = local.and_then(|l| l.stat).and_then(|r| r.mode);
    matches!((recorded, st.mode), (Some(r), Some(now)) if r != now)
}

/// What the disk says about a path, compared with the index.
#[derive(Debug, PartialEq, Eq)]
pub enum LocalPlan {
    /// Nothing changed.
    Unchanged,
    /// Same content, another stat (touched, or moved aside and back):
    /// record the stat, no new version.
    Touched,
    /// A new version of ours: `kind` is `created` or `modified`.
    NewVersion {
        /// `created` (nothing live was indexed here) or `modified`.
        kind: &'static str,
        /// The version to record: it dominates whatever the index held.
        version: VersionVector,
    },
    /// The file is gone: record a deletion with this version.
    Deleted {
        /// It dominates the version that was deleted.
        version: VersionVector,
    },
}

/// A file whose content is as recorded ([`needs_hash`] said no) found
/// with stat `st`: a new version of `replica`'s at `now` if only its mode
/// changed (`chmod`), else only the stat to record, if it differs.
pub fn plan_unhashed(local: Option<&LocalEntry>, st: Stat, replica: &str, now: u64) -> LocalPlan {
    match local {
        Some(l) if l.stat == Some(st) => LocalPlan::Unchanged,
        Some(l) if !l.entry.deleted && mode_changed(local, st) => LocalPlan::NewVersion {
            kind: "mode",
            version: next_version(Some(l), replica, now),
        },
        Some(_) => LocalPlan::Touched,
        None => LocalPlan::Unchanged,
    }
}

/// A file hashed to `sha256`, found with stat `st`, at a path where the
/// index holds `local`: a new version of `replica`'s at `now` (Unix
/// seconds) if its content or its mode changed, or only a stat.
pub fn plan_hashed(
    local: Option<&LocalEntry>,
    sha256: Hash,
    st: Stat,
    replica: &str,
    now: u64,
) -> LocalPlan {
    if local.is_some_and(|l| !l.entry.deleted && l.entry.sha256 == sha256) {
        if mode_changed(local, st) {
            return LocalPlan::NewVersion {
                kind: "mode",
                version: next_version(local, replica, now),
            };
        }
        return LocalPlan::Touched;
    }
    let kind = if local.is_some_and(|l| !l.entry.deleted) {
        "modified"
    } else {
        "created"
    };
    LocalPlan::NewVersion {
        kind,
        version: next_version(local, replica, now),
    }
}

/// No file at a path where the index holds `local`: a deletion of ours if
/// a file of ours was there.
pub fn plan_missing(local: Option<&LocalEntry>, replica: &str, now: u64) -> LocalPlan {
    match local {
        Some(l) if !l.entry.deleted && l.stat.is_some() => LocalPlan::Deleted {
            version: next_version(local, replica, now),
        },
        _ => LocalPlan::Unchanged,
    }
}

fn next_version(local: Option<&LocalEntry>, replica: &str, now: u64) -> VersionVector {
    let mut v = local.map(|l| l.entry.version.clone()).unwrap_or_default();
    if v.get(replica) == u64::MAX {
        // Never from an honest cluster: counters from the network are kept
        // near the clock (`FileEntry::acceptable`).
        tracing::error!(replica, version = %v, "version counter exhausted; this change cannot be made newer");
    }
    v.bump_at(replica, now);
    v
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use zync_proto::RelPath;

    const ME: &str = "me@0001";
    const THEM: &str = "them@0002";
    const NOW: u64 = 1_800_000_000;

    fn vv(counters: &[(&str, u64)]) -> VersionVector {
        let mut v = VersionVector::new();
        for (r, n) in counters {
            v.bump_at(r, *n);
        }
        v
    }

    fn file(content: &str, version: VersionVector, mtime: i64, by: &str) -> FileEntry {
        FileEntry {
            path: RelPath::new("doc.txt").unwrap(),
            size: content.len() as u64,
            mtime_ns: mtime,
            sha256: Hash::of(content.as_bytes()),
            blocks: vec![Hash::of(content.as_bytes())],
            version,
            deleted: false,
            modified_by: by.into(),
            lengths: Vec::new(),
            mode: None,
        }
    }

    fn tomb(version: VersionVector, mtime: i64, by: &str) -> FileEntry {
        FileEntry {
            size: 0,
            sha256: Hash::EMPTY,
            blocks: vec![],
            deleted: true,
            ..file("", version, mtime, by)
        }
    }

    fn st() -> Stat {
        Stat {
            size: 4,
            mtime_ns: 10,
            ino: 3,
            mode: Some(0o644),
        }
    }

    /// What the index holds: `entry`, with a file on disk or not.
    fn held(entry: FileEntry, on_disk: bool) -> LocalEntry {
        LocalEntry {
            stat: (on_disk && !entry.deleted).then(st),
            entry,
        }
    }

    fn target_of(plan: &RemotePlan) -> &FileEntry {
        match plan {
            RemotePlan::Apply {
                step:
                    Step::Delete { target, .. } | Step::Adopt { target } | Step::Install { target },
                ..
            } => target,
            other => panic!("no target in {other:?}"),
        }
    }

    // ---- remote versions ------------------------------------------------

    #[test]
    fn a_new_path_is_fetched_then_installed_as_is() {
        let r = file("theirs", vv(&[(THEM, 5)]), 1, "them");
        assert_eq!(plan_remote(None, &r, false), RemotePlan::Fetch);
        let plan = plan_remote(None, &r, true);
        assert_eq!(
            plan,
            RemotePlan::Apply {
                aside: false,
                step: Step::Install { target: r.clone() }
            }
        );
    }

    #[test]
    fn a_deletion_of_a_path_never_held_is_recorded_without_touching_the_disk() {
        let r = tomb(vv(&[(THEM, 5)]), 1, "them");
        assert_eq!(
            plan_remote(None, &r, false),
            RemotePlan::Apply {
                aside: false,
                step: Step::Delete {
                    target: r.clone(),
                    on_disk: false
                }
            }
        );
    }

    #[test]
    fn a_newer_version_replaces_ours_with_the_versions_merged() {
        let ours = held(file("base", vv(&[(ME, 1), (THEM, 1)]), 1, "me"), true);
        let r = file("edit", vv(&[(ME, 1), (THEM, 2)]), 2, "them");
        assert_eq!(plan_remote(Some(&ours), &r, false), RemotePlan::Fetch);
        let plan = plan_remote(Some(&ours), &r, true);
        assert!(matches!(
            plan,
            RemotePlan::Apply {
                aside: false,
                step: Step::Install { .. }
            }
        ));
        assert_eq!(target_of(&plan).version, vv(&[(ME, 1), (THEM, 2)]));
    }

    #[test]
    fn the_same_version_or_an_older_one_changes_nothing() {
        let ours = held(file("mine", vv(&[(ME, 3), (THEM, 1)]), 3, "me"), true);
        let same = ours.entry.clone();
        let older = file("old", vv(&[(ME, 1), (THEM, 1)]), 1, "them");
        assert_eq!(plan_remote(Some(&ours), &same, false), RemotePlan::Keep);
        assert_eq!(plan_remote(Some(&ours), &older, true), RemotePlan::Keep);
    }

    #[test]
    fn content_already_on_disk_is_adopted_not_downloaded() {
        let ours = held(file("same", vv(&[(ME, 1)]), 1, "me"), true);
        let r = file("same", vv(&[(ME, 1), (THEM, 1)]), 2, "them");
        let plan = plan_remote(Some(&ours), &r, false);
        assert!(matches!(
            plan,
            RemotePlan::Apply {
                aside: false,
                step: Step::Adopt { .. }
            }
        ));
    }

    #[test]
    fn concurrent_edits_with_the_same_content_merge_without_a_conflict() {
        let ours = held(file("same", vv(&[(ME, 2)]), 5, "me"), true);
        let r = file("same", vv(&[(THEM, 2)]), 9, "them");
        let plan = plan_remote(Some(&ours), &r, false);
        assert!(matches!(
            plan,
            RemotePlan::Apply {
                aside: false,
                step: Step::Adopt { .. }
            }
        ));
        assert_eq!(target_of(&plan).version, vv(&[(ME, 2), (THEM, 2)]));
    }

    #[test]
    fn a_concurrent_later_edit_wins_and_ours_is_moved_aside() {
        let ours = held(file("mine", vv(&[(ME, 2), (THEM, 1)]), 5, "me"), true);
        let r = file("theirs", vv(&[(ME, 1), (THEM, 2)]), 9, "them");
        assert_eq!(plan_remote(Some(&ours), &r, false), RemotePlan::Fetch);
        let plan = plan_remote(Some(&ours), &r, true);
        assert!(matches!(
            plan,
            RemotePlan::Apply {
                aside: true,
                step: Step::Install { .. }
            }
        ));
        let v = &target_of(&plan).version;
        assert_eq!(v.compare(&ours.entry.version), Causality::Dominates);
        assert_eq!(v.compare(&r.version), Causality::Dominates);
    }

    #[test]
    fn a_concurrent_earlier_edit_loses_to_ours() {
        let ours = held(file("mine", vv(&[(ME, 2), (THEM, 1)]), 9, "me"), true);
        let r = file("theirs", vv(&[(ME, 1), (THEM, 2)]), 5, "them");
        assert_eq!(plan_remote(Some(&ours), &r, true), RemotePlan::OursWins);
    }

    #[test]
    fn equal_mtimes_are_ordered_by_content_hash_the_same_everywhere() {
        let a = file("aaa", vv(&[(ME, 2)]), 7, "me");
        let b = file("bbb", vv(&[(THEM, 2)]), 7, "them");
        let on_me = plan_remote(Some(&held(a.clone(), true)), &b, true);
        let on_them = plan_remote(Some(&held(b.clone(), true)), &a, true);
        // Exactly one side gives way.
        let gives_way = |p: &RemotePlan| matches!(p, RemotePlan::Apply { aside: true, .. });
        assert_ne!(
            gives_way(&on_me),
            gives_way(&on_them),
            "{on_me:?} / {on_them:?}"
        );
    }

    #[test]
    fn a_newer_deletion_removes_our_file() {
        let ours = held(file("mine", vv(&[(ME, 1)]), 1, "me"), true);
        let r = tomb(vv(&[(ME, 1), (THEM, 1)]), 2, "them");
        let plan = plan_remote(Some(&ours), &r, false);
        assert!(
            matches!(
                plan,
                RemotePlan::Apply {
                    aside: false,
                    step: Step::Delete { on_disk: true, .. }
                }
            ),
            "{plan:?}"
        );
    }

    #[test]
    fn a_deletion_concurrent_with_our_edit_loses_to_the_edit() {
        let ours = held(file("edited", vv(&[(ME, 2)]), 1, "me"), true);
        let r = tomb(vv(&[(ME, 1), (THEM, 1)]), 99, "them");
        assert_eq!(plan_remote(Some(&ours), &r, false), RemotePlan::OursWins);
    }

    #[test]
    fn an_edit_concurrent_with_our_deletion_brings_the_file_back_without_a_copy() {
        let ours = held(tomb(vv(&[(ME, 2)]), 99, "me"), false);
        let r = file("edited", vv(&[(ME, 1), (THEM, 1)]), 1, "them");
        assert_eq!(plan_remote(Some(&ours), &r, false), RemotePlan::Fetch);
        assert!(matches!(
            plan_remote(Some(&ours), &r, true),
            RemotePlan::Apply {
                aside: false,
                step: Step::Install { .. }
            }
        ));
    }

    #[test]
    fn two_deletions_merge_their_versions() {
        let ours = held(tomb(vv(&[(ME, 2)]), 1, "me"), false);
        let r = tomb(vv(&[(ME, 1), (THEM, 2)]), 2, "them");
        let plan = plan_remote(Some(&ours), &r, false);
        assert!(matches!(
            plan,
            RemotePlan::Apply {
                step: Step::Delete { on_disk: false, .. },
                ..
            }
        ));
        assert_eq!(target_of(&plan).version, vv(&[(ME, 2), (THEM, 2)]));
    }

    #[test]
    fn content_awaited_is_downloaded_even_if_the_index_knows_its_hash() {
        // Moved aside as a conflict copy, or never arrived: no file on disk.
        let ours = held(file("same", vv(&[(ME, 1)]), 1, "me"), false);
        let r = file("same", vv(&[(ME, 1), (THEM, 1)]), 2, "them");
        assert_eq!(plan_remote(Some(&ours), &r, false), RemotePlan::Fetch);
        assert!(matches!(
            plan_remote(Some(&ours), &r, true),
            RemotePlan::Apply {
                aside: false,
                step: Step::Install { .. }
            }
        ));
    }

    #[test]
    fn a_conflict_with_nothing_on_disk_moves_nothing_aside() {
        let ours = held(file("mine", vv(&[(ME, 2), (THEM, 1)]), 5, "me"), false);
        let r = file("theirs", vv(&[(ME, 1), (THEM, 2)]), 9, "them");
        assert!(matches!(
            plan_remote(Some(&ours), &r, true),
            RemotePlan::Apply {
                aside: false,
                step: Step::Install { .. }
            }
        ));
    }

    // ---- finished downloads ---------------------------------------------

    #[test]
    fn a_download_of_the_version_still_wanted_is_applied() {
        let v = vv(&[(THEM, 3)]);
        assert_eq!(plan_done(Some(&v), &v, Outcome::Fetched), DonePlan::Apply);
    }

    #[test]
    fn a_change_arriving_mid_download_is_fetched_instead() {
        let (got, newer) = (vv(&[(THEM, 3)]), vv(&[(THEM, 4)]));
        assert_eq!(
            plan_done(Some(&newer), &got, Outcome::Fetched),
            DonePlan::FetchAgain
        );
        assert_eq!(
            plan_done(Some(&newer), &got, Outcome::Failed),
            DonePlan::FetchAgain
        );
    }

    #[test]
    fn a_download_no_longer_wanted_is_still_decided_on() {
        let got = vv(&[(THEM, 3)]);
        assert_eq!(plan_done(None, &got, Outcome::Fetched), DonePlan::Apply);
    }

    #[test]
    fn a_superseded_download_is_forgotten_and_a_failed_one_retried() {
        let v = vv(&[(THEM, 3)]);
        assert_eq!(
            plan_done(Some(&v), &v, Outcome::Superseded),
            DonePlan::Forget
        );
        assert_eq!(plan_done(Some(&v), &v, Outcome::Failed), DonePlan::Retry);
    }

    #[test]
    fn only_a_newer_version_replaces_the_one_wanted() {
        let w = file("v2", vv(&[(THEM, 2)]), 2, "them");
        let older = file("v1", vv(&[(THEM, 1)]), 1, "them");
        let newer = file("v3", vv(&[(THEM, 3)]), 3, "them");
        assert!(worth_wanting(None, &w));
        assert!(!worth_wanting(Some(&w), &w.clone()));
        assert!(!worth_wanting(Some(&w), &older));
        assert!(worth_wanting(Some(&w), &newer));
    }

    // ---- local changes ----------------------------------------------------

    #[test]
    fn only_a_file_whose_stat_changed_is_hashed() {
        let ours = held(file("mine", vv(&[(ME, 1)]), 1, "me"), true);
        assert!(!needs_hash(Some(&ours), st()));
        assert!(needs_hash(Some(&ours), Stat { ino: 4, ..st() }));
        assert!(needs_hash(
            Some(&ours),
            Stat {
                mtime_ns: 11,
                ..st()
            }
        ));
        assert!(needs_hash(None, st()));
        let awaited = held(file("mine", vv(&[(ME, 1)]), 1, "me"), false);
        assert!(needs_hash(Some(&awaited), st()));
    }

    #[test]
    fn the_same_content_under_a_new_stat_is_no_new_version() {
        let ours = held(file("mine", vv(&[(ME, 1)]), 1, "me"), true);
        let h = Hash::of(b"mine");
        assert_eq!(
            plan_hashed(Some(&ours), h, st(), ME, NOW),
            LocalPlan::Touched
        );
    }

    #[test]
    fn a_new_mode_alone_is_a_version_without_a_hash_and_an_unknown_one_is_only_recorded() {
        let ours = held(file("mine", vv(&[(ME, 1), (THEM, 4)]), 1, "me"), true);
        let exec = Stat {
            mode: Some(0o755),
            ..st()
        };
        assert!(!needs_hash(Some(&ours), exec), "chmod changes no content");
        assert_eq!(
            plan_unhashed(Some(&ours), st(), ME, NOW),
            LocalPlan::Unchanged
        );
        let LocalPlan::NewVersion { kind, version } = plan_unhashed(Some(&ours), exec, ME, NOW)
        else {
            panic!("no new version");
        };
        assert_eq!(kind, "mode");
        assert_eq!(version.compare(&ours.entry.version), Causality::Dominates);
        // Hashed anyway (touched too): the same content, a new mode.
        assert!(matches!(
            plan_hashed(Some(&ours), Hash::of(b"mine"), exec, ME, NOW),
            LocalPlan::NewVersion { kind: "mode", .. }
        ));
        // Recorded before modes were kept: nothing to compare with.
        let old = LocalEntry {
            stat: Some(Stat { mode: None, ..st() }),
            ..ours.clone()
        };
        assert_eq!(plan_unhashed(Some(&old), exec, ME, NOW), LocalPlan::Touched);
        assert_eq!(
            plan_hashed(Some(&old), Hash::of(b"mine"), exec, ME, NOW),
            LocalPlan::Touched
        );
    }

    #[test]
    fn new_content_is_a_version_that_dominates_the_old_one() {
        let ours = held(file("mine", vv(&[(ME, 1), (THEM, 4)]), 1, "me"), true);
        let LocalPlan::NewVersion { kind, version } =
            plan_hashed(Some(&ours), Hash::of(b"edited"), st(), ME, NOW)
        else {
            panic!("no new version");
        };
        assert_eq!(kind, "modified");
        assert_eq!(version.compare(&ours.entry.version), Causality::Dominates);
        assert_eq!(version.get(ME), NOW, "stamped with the clock");
        assert_eq!(version.get(THEM), 4);
    }

    #[test]
    fn a_new_file_and_a_file_over_a_deletion_are_created() {
        assert!(matches!(
            plan_hashed(None, Hash::of(b"new"), st(), ME, NOW),
            LocalPlan::NewVersion {
                kind: "created",
                ..
            }
        ));
        let gone = held(tomb(vv(&[(THEM, 7)]), 1, "them"), false);
        let LocalPlan::NewVersion { kind, version } =
            plan_hashed(Some(&gone), Hash::EMPTY, st(), ME, NOW)
        else {
            panic!("no new version");
        };
        // Even the empty file, whose hash a tombstone carries, is a creation.
        assert_eq!(kind, "created");
        assert_eq!(version.compare(&gone.entry.version), Causality::Dominates);
    }

    #[test]
    fn a_clock_behind_the_counter_still_moves_it_forward() {
        let ours = held(file("mine", vv(&[(ME, NOW + 50)]), 1, "me"), true);
        let LocalPlan::NewVersion { version, .. } =
            plan_hashed(Some(&ours), Hash::of(b"edited"), st(), ME, NOW)
        else {
            panic!("no new version");
        };
        assert_eq!(version.get(ME), NOW + 51);
    }

    #[test]
    fn a_file_of_ours_gone_from_disk_is_a_deletion() {
        let ours = held(file("mine", vv(&[(ME, 1), (THEM, 2)]), 1, "me"), true);
        let LocalPlan::Deleted { version } = plan_missing(Some(&ours), ME, NOW) else {
            panic!("no deletion");
        };
        assert_eq!(version.compare(&ours.entry.version), Causality::Dominates);
    }

    #[test]
    fn nothing_on_disk_where_nothing_of_ours_was_is_no_change() {
        assert_eq!(plan_missing(None, ME, NOW), LocalPlan::Unchanged);
        let gone = held(tomb(vv(&[(THEM, 7)]), 1, "them"), false);
        assert_eq!(plan_missing(Some(&gone), ME, NOW), LocalPlan::Unchanged);
        // Content awaited from the cluster is not a deletion of ours.
        let awaited = held(file("theirs", vv(&[(THEM, 1)]), 1, "them"), false);
        assert_eq!(plan_missing(Some(&awaited), ME, NOW), LocalPlan::Unchanged);
    }
}
