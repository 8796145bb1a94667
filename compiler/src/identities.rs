//! The files binary values name. A `matchBinaries` `In`/`NotIn` value is matched by the path of
//! the executed file and by the file itself: the kernel looks the executed file's identity up
//! (`BIN_INODE`), so a hard link, a bind mount or a copy of the path in another mount namespace
//! names the same binary. Resolving a path to files is I/O (stat on the host and in every mount
//! namespace), done by the caller; the compiler takes the result as input
//! ([`RuleSet::resolve_binaries`]) and stays pure.

use crate::conditions::ProcCondition;
use crate::ruleset::RuleSet;
use bulwark_policy::{AnyPolicy, MatchKind};
use daemon_common as dc;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A file as the kernel names it: `i_sb->s_dev` (`MAJOR << 20 | MINOR`) and `i_ino`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FileId {
    pub dev: u32,
    pub ino: u64,
}

impl FileId {
    /// The identity of a file `stat` describes: `st_dev` in glibc's `dev_t` encoding (the
    /// `major()`/`minor()` split), `st_ino`.
    pub fn from_stat(st_dev: u64, st_ino: u64) -> FileId {
        let major = ((st_dev >> 8) & 0xfff) | ((st_dev >> 32) & !0xfff);
        let minor = (st_dev & 0xff) | ((st_dev >> 12) & !0xff);
        FileId {
            dev: ((major << 20) | (minor & 0xf_ffff)) as u32,
            ino: st_ino,
        }
    }
}

/// The files each binary path names, as the caller resolved them (on the host and in every
/// mount namespace; a path may name several files).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BinaryIdentities {
    by_path: BTreeMap<String, BTreeSet<FileId>>,
}

impl BinaryIdentities {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `path` names `file` (somewhere).
    pub fn insert(&mut self, path: &str, file: FileId) {
        self.by_path
            .entry(path.to_string())
            .or_default()
            .insert(file);
    }

    /// The files `path` names (empty when none was found).
    pub fn of(&self, path: &str) -> impl Iterator<Item = FileId> + '_ {
        self.by_path.get(path).into_iter().flatten().copied()
    }

    /// Number of (path, file) pairs.
    pub fn len(&self) -> usize {
        self.by_path.values().map(BTreeSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The paths whose files a set of policies needs resolved: every `In`/`NotIn`/`Equal`
/// `matchBinaries` value.
pub fn binary_paths(policies: &[AnyPolicy]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for p in policies {
        for rule in &p.spec().rules {
            for sel in &rule.selectors {
                for b in &sel.match_binaries {
                    if b.operator.kind() == MatchKind::Exact {
                        out.extend(b.values.iter().cloned());
                    }
                }
            }
        }
    }
    out
}

/// More file identities than one slot's `BIN_INODE` holds, or (`file_paths`) than its
/// `FILE_INODE` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManyIdentities {
    pub needed: usize,
    /// The identities of the `hook: file` `In` paths of all groups (`FILE_INODE`), not of the
    /// binary values.
    pub file_paths: bool,
}

impl std::fmt::Display for TooManyIdentities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.file_paths {
            return write!(
                f,
                "the `In` matchPaths values of the policy set name {} files in all selector \
                 groups together (over all mount namespaces; a value that applies regardless of \
                 namespace counts once per group), more than the kernel map holds \
                 (MAX_FILE_VALUES x NODE_MAP_FACTOR = {}); use fewer `In` paths (a Prefix \
                 covering several), or scope cluster-wide file policies to the namespaces they \
                 concern",
                self.needed,
                dc::MAX_FILE_VALUES * dc::NODE_MAP_FACTOR
            );
        }
        write!(
            f,
            "the binary values of the policy set name {} distinct files (over all mount \
             namespaces), more than the kernel map holds (MAX_BINARY_IDENTITIES = {}); use \
             fewer `In` binary values",
            self.needed,
            dc::MAX_BINARY_IDENTITIES
        )
    }
}

impl std::error::Error for TooManyIdentities {}

impl RuleSet {
    /// The paths this rule set needs resolved to files: its `In`/`NotIn` `matchBinaries`
    /// values ([`binary_paths`] of its policies) and its `In`/`NotIn` `matchPaths` values (a
    /// file hook matches those files by identity too, so a hard link made before the rules were
    /// loaded is caught).
    pub fn binary_paths(&self) -> BTreeSet<String> {
        let mut out = self.files.identity_paths();
        for c in &self.proc {
            if let ProcCondition::Binary(m) = c {
                if m.kind == MatchKind::Exact {
                    out.extend(m.values.iter().cloned());
                }
            }
        }
        out
    }

    /// Adds the file identities of every `In`/`NotIn` binary value: an exec of one of those
    /// files hits the value's condition whatever path it was run by. Replaces the identities
    /// of an earlier call.
    pub fn resolve_binaries(&mut self, ids: &BinaryIdentities) -> Result<(), TooManyIdentities> {
        let mut by_file: BTreeMap<FileId, u64> = BTreeMap::new();
        let mut per_condition = BTreeMap::new();
        for (i, c) in self.proc.iter().enumerate() {
            let ProcCondition::Binary(m) = c else {
                continue;
            };
            if m.kind != MatchKind::Exact {
                continue;
            }
            let files: BTreeSet<FileId> = m.values.iter().flat_map(|v| ids.of(v)).collect();
            for f in &files {
                *by_file.entry(*f).or_default() |= 1u64 << i;
            }
            if !files.is_empty() {
                per_condition.insert(i, files);
            }
        }
        if by_file.len() > dc::MAX_BINARY_IDENTITIES as usize {
            return Err(TooManyIdentities {
                needed: by_file.len(),
                file_paths: false,
            });
        }
        self.compiled.bin_inode = by_file.into_iter().collect();
        self.files.resolve(ids);
        self.binary_files = per_condition;
        if self.compiled.bin_inode.is_empty() {
            self.meta.lookups &= !dc::LOOKUP_BIN_INODE;
        } else {
            self.meta.lookups |= dc::LOOKUP_BIN_INODE;
        }
        Ok(())
    }

    /// The files binary condition `i` names (empty before [`RuleSet::resolve_binaries`]).
    pub fn binary_files(&self, i: usize) -> impl Iterator<Item = FileId> + '_ {
        self.binary_files.get(&i).into_iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc's `makedev`.
    fn makedev(major: u64, minor: u64) -> u64 {
        ((major & 0xfff) << 8) | ((major & !0xfff) << 32) | (minor & 0xff) | ((minor & !0xff) << 12)
    }

    #[test]
    fn stat_devices_become_kernel_devices() {
        for (major, minor) in [(8u64, 1u64), (0, 0x123), (259, 0x1_0003), (0xfff, 5)] {
            assert_eq!(
                FileId::from_stat(makedev(major, minor), 7),
                FileId {
                    dev: ((major << 20) | minor) as u32,
                    ino: 7
                },
                "{major}:{minor}"
            );
        }
    }
}
