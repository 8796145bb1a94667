//! `hook: file` selectors compiled (daemon-common `file`): every distinct `matchPaths` entry of
//! a rule set is one path condition bit (at most [`dc::MAX_FILE_PATH_CONDS`]), its values exact
//! keys, prefixes or reversed postfixes (at most [`dc::MAX_FILE_VALUES`] per map; both limits
//! are [`Limit`]s, counted by the builder like the others, so the lint reports them); a selector requires its entries' bits and acts on the
//! accesses its `matchAccess` leaves. The calls the hook watches, and what each does to a file,
//! are a table of the kernel's call names ([`CALLS`]) turned into filter bits of the target
//! architecture (x86_64: native and i386 compat). [`RuleSet::evaluate_file`] is the reference
//! semantics of one access; the kernel simulation in the tests checks the map entries against it.

use crate::builder::bit;
use crate::capacity::Limit;
use crate::error::{ErrorKind, Location};
use crate::identities::{BinaryIdentities, FileId};
use crate::lpm::LpmBuilder;
use crate::ruleset::RuleSet;
use bulwark_policy::syscalls::{self, Arch};
use bulwark_policy::values::ValueLimit;
use bulwark_policy::{MatchKind, Selector};
use daemon_common::{self as dc, FileCall};
use std::collections::{BTreeMap, BTreeSet};

const NONE: u32 = dc::FILE_ARG_NONE;

/// The calls the file hook watches: name, what it does, and where its dirfd, path and flags
/// are (argument indices in the C signature, the same in the native and compat tables). A
/// rename's `flags` is the index of the new path, whose dirfd is the argument before it (when
/// the old one has a dirfd). Names missing from an architecture's table are skipped. Exec is
/// the exec hook's (it matches the file executed, by path and identity, and fileless execs).
pub const CALLS: &[(&str, FileCall)] = &[
    ("open", call(dc::FILE_OP_OPEN, NONE, 0, 1)),
    ("creat", call(dc::FILE_OP_OPEN, NONE, 0, NONE)),
    ("openat", call(dc::FILE_OP_OPEN, 0, 1, 2)),
    ("openat2", call(dc::FILE_OP_OPEN_HOW, 0, 1, 2)),
    ("open_by_handle_at", call(dc::FILE_OP_OPEN, NONE, NONE, 2)),
    ("unlink", call(dc::FILE_OP_DELETE, NONE, 0, NONE)),
    ("rmdir", call(dc::FILE_OP_DELETE, NONE, 0, NONE)),
    ("unlinkat", call(dc::FILE_OP_DELETE, 0, 1, NONE)),
    ("rename", call(dc::FILE_OP_RENAME, NONE, 0, 1)),
    ("renameat", call(dc::FILE_OP_RENAME, 0, 1, 3)),
    ("renameat2", call(dc::FILE_OP_RENAME, 0, 1, 3)),
    ("link", call(dc::FILE_OP_CREATE, NONE, 1, NONE)),
    ("linkat", call(dc::FILE_OP_CREATE, 2, 3, NONE)),
    ("symlink", call(dc::FILE_OP_CREATE, NONE, 1, NONE)),
    ("symlinkat", call(dc::FILE_OP_CREATE, 1, 2, NONE)),
    ("mkdir", call(dc::FILE_OP_CREATE, NONE, 0, NONE)),
    ("mkdirat", call(dc::FILE_OP_CREATE, 0, 1, NONE)),
    ("mknod", call(dc::FILE_OP_CREATE, NONE, 0, NONE)),
    ("mknodat", call(dc::FILE_OP_CREATE, 0, 1, NONE)),
    ("chmod", call(dc::FILE_OP_METADATA, NONE, 0, NONE)),
    ("fchmodat", call(dc::FILE_OP_METADATA, 0, 1, NONE)),
    ("fchmodat2", call(dc::FILE_OP_METADATA, 0, 1, NONE)),
    ("chown", call(dc::FILE_OP_METADATA, NONE, 0, NONE)),
    ("lchown", call(dc::FILE_OP_METADATA, NONE, 0, NONE)),
    ("chown32", call(dc::FILE_OP_METADATA, NONE, 0, NONE)),
    ("lchown32", call(dc::FILE_OP_METADATA, NONE, 0, NONE)),
    ("fchownat", call(dc::FILE_OP_METADATA, 0, 1, NONE)),
    ("fchmod", call(dc::FILE_OP_METADATA_FD, 0, NONE, NONE)),
    ("fchown", call(dc::FILE_OP_METADATA_FD, 0, NONE, NONE)),
    ("fchown32", call(dc::FILE_OP_METADATA_FD, 0, NONE, NONE)),
    ("truncate", call(dc::FILE_OP_TRUNCATE, NONE, 0, NONE)),
    ("truncate64", call(dc::FILE_OP_TRUNCATE, NONE, 0, NONE)),
    ("ftruncate", call(dc::FILE_OP_TRUNCATE_FD, 0, NONE, NONE)),
    ("ftruncate64", call(dc::FILE_OP_TRUNCATE_FD, 0, NONE, NONE)),
];

const fn call(op: u32, dirfd: u32, path: u32, flags: u32) -> FileCall {
    FileCall {
        op,
        dirfd,
        path,
        flags,
    }
}

/// The filter entries of the file hook on `arch`: filter index -> [`FileCall::bits`].
pub fn file_calls(arch: Arch) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for (name, c) in CALLS {
        if let Some(nr) = syscalls::table(arch).number(name) {
            out.push((nr, c.bits()));
        }
        if let Some(compat) = arch.compat() {
            if let Some(nr) = syscalls::table(compat).number(name) {
                out.push((dc::SYSCALL_COMPAT_BASE + nr, c.bits()));
            }
        }
    }
    out.sort();
    out
}

/// One `matchPaths` entry: its values compared whole, as a prefix or as a postfix, negated or
/// not. Identical entries share a bit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathCondition {
    pub kind: MatchKind,
    pub negated: bool,
    /// Sorted, deduplicated.
    pub values: Vec<String>,
}

/// A compiled `hook: file` selector.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileSelector {
    /// Selector index in the rule set.
    pub index: u8,
    /// Path condition bits that must all hold.
    pub path_required: u64,
    /// `FILE_ACCESS_*` bits it acts on.
    pub access: u32,
}

/// The file hook's part of a rule set.
#[derive(Clone, Debug, Default)]
pub(crate) struct FileRules {
    pub selectors: Vec<FileSelector>,
    pub conditions: Vec<PathCondition>,
    index: BTreeMap<PathCondition, usize>,
    exact: BTreeMap<Vec<u8>, u64>,
    prefix: LpmBuilder,
    postfix: LpmBuilder,
    /// Identities of the `In` values, once resolved ([`RuleSet::resolve_binaries`]).
    pub inode: BTreeMap<FileId, u64>,
    /// The filter entries of the target architecture's file calls.
    pub calls: Vec<(u32, u32)>,
}

impl FileRules {
    /// Compiles the file fields of selector `index`. `enforce_limits`: refuse a set past
    /// [`Limit::FilePathConds`] or [`Limit::FileValues`]; when only counting (the lint's
    /// capacity check) conditions past 64 get no bit and selectors past 64 are not kept, but
    /// their conditions and values are counted.
    pub(crate) fn add_selector(
        &mut self,
        loc: &Location,
        index: usize,
        sel: &Selector,
        arch: Arch,
        enforce_limits: bool,
    ) -> Result<(), crate::error::CompileError> {
        if sel.match_paths.is_empty() {
            return Err(loc.error(ErrorKind::NoPaths));
        }
        let mut path_required = 0u64;
        for m in &sel.match_paths {
            let kind = m.operator.kind();
            let limit = ValueLimit::binary(kind);
            let mut values = Vec::with_capacity(m.values.len());
            for v in &m.values {
                if v.as_bytes().contains(&0) {
                    return Err(loc.error(ErrorKind::NulByte {
                        field: "matchPaths",
                        value: v.clone(),
                    }));
                }
                if v.len() > limit.max {
                    return Err(loc.error(ErrorKind::ValueTooLong {
                        field: "matchPaths",
                        limit,
                        len: v.len(),
                        preview: v.chars().take(32).collect(),
                    }));
                }
                values.push(v.clone());
            }
            values.sort();
            values.dedup();
            let cond = PathCondition {
                kind,
                negated: m.operator.is_negated(),
                values,
            };
            path_required |= bit(self.condition(loc, cond, enforce_limits)?);
        }
        if self.calls.is_empty() {
            self.calls = file_calls(arch);
        }
        if let Some(index) = u8::try_from(index)
            .ok()
            .filter(|&i| usize::from(i) < dc::MAX_SELECTORS)
        {
            self.selectors.push(FileSelector {
                index,
                path_required,
                access: sel.access_bits(),
            });
        }
        Ok(())
    }

    /// Entries of the largest path map (exact, prefix or postfix): what
    /// [`Limit::FileValues`] counts.
    pub(crate) fn values(&self) -> usize {
        self.exact
            .len()
            .max(self.prefix.len())
            .max(self.postfix.len())
    }

    /// The bit of `cond`, adding it and its values if it is new.
    fn condition(
        &mut self,
        loc: &Location,
        cond: PathCondition,
        enforce_limits: bool,
    ) -> Result<usize, crate::error::CompileError> {
        if let Some(&i) = self.index.get(&cond) {
            return Ok(i);
        }
        let i = self.conditions.len();
        if enforce_limits {
            Limit::FilePathConds.check(loc, i + 1)?;
        }
        let bit = bit(i);
        for v in &cond.values {
            let bytes = v.as_bytes().to_vec();
            let bits = 8 * bytes.len() as u32;
            match cond.kind {
                MatchKind::Exact => *self.exact.entry(bytes).or_default() |= bit,
                MatchKind::Prefix => {
                    self.prefix.insert(bytes, bits, bit);
                }
                MatchKind::Postfix => {
                    self.postfix
                        .insert(bytes.into_iter().rev().collect(), bits, bit);
                }
            }
        }
        if enforce_limits {
            Limit::FileValues.check(loc, self.values())?;
        }
        self.index.insert(cond.clone(), i);
        self.conditions.push(cond);
        Ok(i)
    }

    /// The `In` paths whose files are matched by identity too.
    pub(crate) fn identity_paths(&self) -> BTreeSet<String> {
        self.conditions
            .iter()
            .filter(|c| c.kind == MatchKind::Exact)
            .flat_map(|c| c.values.iter().cloned())
            .collect()
    }

    /// Records the files the `In` / `NotIn` values name (replacing earlier ones).
    pub(crate) fn resolve(&mut self, ids: &BinaryIdentities) {
        self.inode.clear();
        for (i, c) in self.conditions.iter().enumerate() {
            if c.kind != MatchKind::Exact {
                continue;
            }
            for f in c.values.iter().flat_map(|v| ids.of(v)) {
                *self.inode.entry(f).or_default() |= 1 << i;
            }
        }
    }

    /// The kernel's entries of this rule set as table `table`.
    pub(crate) fn entries(&self, table: u32) -> dc::FileEntries {
        if self.selectors.is_empty() {
            return dc::FileEntries::default();
        }
        let t8 = table as u8;
        let lpm = |v: Vec<(Vec<u8>, u32, u64)>| -> Vec<(u32, dc::PathLpmData, u64)> {
            v.into_iter()
                .map(|(bytes, bits, mask)| {
                    let mut data = dc::PathLpmData {
                        slot: t8,
                        bytes: [0; dc::PATH_AFFIX_LEN],
                    };
                    data.bytes[..bytes.len()].copy_from_slice(&bytes);
                    (8 + bits, data, mask)
                })
                .collect()
        };
        let mut lookups = 0;
        let exact: Vec<_> = self
            .exact
            .iter()
            .map(|(path, mask)| {
                let mut key = dc::PathKey {
                    slot: table,
                    path: [0; dc::PATH_LEN],
                };
                key.path[..path.len()].copy_from_slice(path);
                (key, *mask)
            })
            .collect();
        let prefix = lpm(self.prefix.finish());
        let postfix = lpm(self.postfix.finish());
        let inode: Vec<_> = self
            .inode
            .iter()
            .map(|(f, mask)| {
                (
                    dc::BinInodeKey {
                        slot: table,
                        dev: f.dev,
                        ino: f.ino,
                    },
                    *mask,
                )
            })
            .collect();
        for (present, bit) in [
            (!exact.is_empty(), dc::FILE_LOOKUP_EXACT),
            (!prefix.is_empty(), dc::FILE_LOOKUP_PREFIX),
            (!postfix.is_empty(), dc::FILE_LOOKUP_POSTFIX),
            (!inode.is_empty(), dc::FILE_LOOKUP_INODE),
        ] {
            if present {
                lookups |= bit;
            }
        }
        dc::FileEntries {
            table: dc::FileTable {
                selectors: self.selectors.iter().fold(0, |m, s| m | 1 << s.index),
                path_negate: self
                    .conditions
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.negated)
                    .fold(0, |m, (i, _)| m | 1 << i),
                lookups,
                _pad: 0,
            },
            selectors: self
                .selectors
                .iter()
                .map(|s| {
                    (
                        table * dc::MAX_SELECTORS as u32 + u32::from(s.index),
                        dc::FileSelectorEntry {
                            path_required: s.path_required,
                            access: s.access,
                            _pad: 0,
                        },
                    )
                })
                .collect(),
            exact,
            prefix,
            postfix,
            inode,
            calls: self.calls.clone(),
        }
    }
}

/// One file access as the file hook sees it: the input of [`RuleSet::evaluate_file`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileFacts {
    /// The absolute path (the kernel's walk of the file, or for calls judged at entry the
    /// dirfd's path joined with the caller's string); `None` when it could not be built.
    pub path: Option<String>,
    /// The file's identity, when the call had a file (opens, fd calls).
    pub file: Option<FileId>,
    /// `FILE_ACCESS_*` bits.
    pub access: u32,
}

impl PathCondition {
    /// Is one of the values hit by this path or file (before negation)?
    fn hit(&self, facts: &FileFacts, files: &BTreeMap<FileId, u64>, bit: u64) -> bool {
        let by_id = facts
            .file
            .and_then(|f| files.get(&f))
            .is_some_and(|m| m & bit != 0);
        let Some(path) = &facts.path else {
            return by_id;
        };
        by_id
            || self.values.iter().any(|v| match self.kind {
                MatchKind::Exact => path == v,
                MatchKind::Prefix => path.starts_with(v.as_str()),
                MatchKind::Postfix => path.ends_with(v.as_str()),
            })
    }
}

impl RuleSet {
    /// The compiled `hook: file` selectors.
    pub fn file_selectors(&self) -> &[FileSelector] {
        &self.files.selectors
    }

    /// The path conditions, by bit.
    pub fn path_conditions(&self) -> &[PathCondition] {
        &self.files.conditions
    }

    /// The subset of `process` (a process's cached selector bits) whose `hook: file` selectors
    /// match this access: it is one they act on, and each of their path conditions holds.
    pub fn evaluate_file(&self, process: u64, facts: &FileFacts) -> u64 {
        let f = &self.files;
        let holds: u64 = f
            .conditions
            .iter()
            .enumerate()
            .filter(|(i, c)| c.hit(facts, &f.inode, 1 << i) != c.negated)
            .fold(0, |m, (i, _)| m | 1 << i);
        f.selectors
            .iter()
            .filter(|s| process & (1 << s.index) != 0)
            .filter(|s| s.access & facts.access != 0 && s.path_required & !holds == 0)
            .fold(0, |bits, s| bits | (1 << s.index))
    }
}
