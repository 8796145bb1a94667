//! bulwark's policy compiler: a pure translation (no kernel, no root, no I/O) from policies to a
//! compiled [`RuleSet`] and the exact eBPF map entries of one slot ([`MapEntries`]), following
//! the matching design documented in `daemon-common` ("How matching works").
//!
//! - Selectors are numbered 0..64 across all policies; each becomes a `SelectorEntry` with the
//!   process and destination conditions it requires, its hook, actions (`[Post]` when it has no
//!   `matchActions`), mode and encryption.
//! - Every `matchBinaries` / `matchArgs` / `matchNamespaces` entry (plus, for a
//!   `TracingPolicyNamespaced`, an implicit `In [own namespace]`) is one process condition bit;
//!   every `matchDestinations` entry one destination condition bit. Identical entries share a bit.
//! - Values go into exact hash keys or LPM prefixes (postfixes reversed); LPM entries carry the
//!   union of the masks of all shorter prefixes covering them, since a trie returns only the
//!   longest match. Port ranges become aligned prefix blocks. IPv6 CIDRs inside
//!   `::ffff:0:0/96` are folded into IPv4 CIDRs; the kernel folds IPv4-mapped destinations the
//!   same way before its lookup. Values arrive parsed by the policy crate
//!   (`bulwark_policy::values`, the one parser); the compiler never reads them as text.
//! - The builder that lays a set out is the one counter of kernel capacity ([`Limit`]):
//!   [`compile`] refuses a set past a limit ([`CompileError`]), and [`capacity`] is the lint's
//!   check of the same (BW092); [`lint_paths`] / [`lint_source`] / [`validate_set`] are the
//!   policy crate's lint with that check added, for every caller that lints.
//! - `hook: syscall` selectors ([`SyscallSelector`]) name calls by filter index of the target
//!   architecture (x86_64: native and i386 compat numbers) and carry integer conditions on the
//!   call's arguments and return value; [`RuleSet::evaluate_syscall`] is their reference
//!   semantics.
//! - `hook: file` selectors ([`FileSelector`]) require path conditions (one bit per distinct
//!   `matchPaths` entry; `In` values also by the identity of the file they named when the rules
//!   were resolved) and act on accesses; the calls the hook watches are filter bits of the
//!   target architecture ([`file_calls`]); [`RuleSet::evaluate_file`] is their reference
//!   semantics.
//! - [`RuleSet::evaluate_process`] / [`RuleSet::evaluate_destination`] are the reference
//!   semantics; the tests check the map entries against them with a simulated kernel.
//! - A node's policies are compiled with [`compile_node`] into a [`NodeRuleSet`]: groups of at
//!   most 64 selectors by namespace (each a [`RuleSet`]) and the watch group, laid out as the
//!   tables of one slot ([`NodeRuleSet::slot_entries`]); see daemon-common "Groups".

mod builder;
mod capacity;
mod conditions;
mod entries;
mod error;
mod eval;
mod file;
mod identities;
mod ids;
mod lint;
mod lpm;
mod node;
mod ruleset;
mod syscall;

/// Re-exported: the parsed values and match kinds the compiled conditions hold.
pub use bulwark_policy::values::{normalize_addr, Cidr, PortRange};
pub use bulwark_policy::MatchKind;
pub use capacity::{capacity, Limit};
pub use conditions::{DestCondition, ProcCondition, StringMatch};
pub use daemon_common::LOADER_OPTIONS_WITH_VALUE;
/// Re-exported so callers need not depend on `daemon-common` for these types.
pub use daemon_common::{Destination, MapEntries};
pub use error::{CompileError, ErrorKind, Location};
pub use eval::{destination, destination_addr, ExecFacts, PayloadMatch};
pub use file::{file_calls, FileFacts, FileSelector, PathCondition, CALLS as FILE_CALLS};
pub use identities::{binary_paths, BinaryIdentities, FileId, TooManyIdentities};
pub use ids::NamespaceIds;
pub use lint::{lint_paths, lint_source, validate_set};
pub use node::{compile_node, Group, NodeRuleSet};
pub use ruleset::{compile, PolicyInfo, RuleSet, SelectorInfo};
pub use syscall::{
    call_index, call_name, target_arch, SyscallCondition, SyscallFacts, SyscallOperand,
    SyscallSelector,
};
