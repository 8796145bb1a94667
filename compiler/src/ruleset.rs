//! The compiled rule set and `compile()`: policies become numbered selectors, deduplicated
//! process and destination conditions ([`crate::conditions`], one bit each), and
//! slot-independent matcher entries (exact keys and LPM prefixes with their covering unions
//! already applied). This file holds what a rule set is and answers; the [`Builder`] that lays
//! policies out is the one counter of kernel capacity: `compile` refuses a set past a limit,
//! with errors naming the policy and rule, and the lint's capacity check ([`crate::capacity`])
//! counts with it too.

use crate::builder::Builder;
use crate::conditions::{DestCondition, ProcCondition};
use crate::error::CompileError;
use crate::identities::FileId;
use crate::ids::NamespaceIds;
use bulwark_policy::{Action, AnyPolicy, Encryption, Hook, Mode};
use daemon_common as dc;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One policy of the rule set (`SelectorEntry::policy_id` indexes these).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    pub name: String,
    /// Namespace of a `TracingPolicyNamespaced`; `None` for cluster-wide policies.
    pub namespace: Option<String>,
    pub mode: Mode,
}

/// Everything userspace needs to turn a kernel match of selector `index` into an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SelectorInfo {
    /// Selector index in the slot (0..64).
    pub index: u8,
    pub policy_id: u32,
    pub policy_name: String,
    /// Namespace of a `TracingPolicyNamespaced`; `None` for cluster-wide policies.
    pub policy_namespace: Option<String>,
    pub rule_name: String,
    pub rule_index: u16,
    /// Index within the rule's `selectors`.
    pub selector_index: u16,
    pub hook: Hook,
    /// As written (deduplicated); `[Post]` when the selector had no `matchActions`.
    pub actions: Vec<Action>,
    /// `ACTION_*` bits.
    pub action_bits: u8,
    pub mode: Mode,
    pub encryption: Option<Encryption>,
    /// Process conditions that must hold (bit i = `proc_conditions()[i]`).
    pub proc_required: u64,
    /// Destination conditions that must hold (bit i = `dest_conditions()[i]`).
    pub dest_required: u64,
}

/// Slot-independent matcher entries: keys without the slot byte, LPM lengths without its 8 bits.
#[derive(Clone, Debug, Default)]
pub(crate) struct Compiled {
    pub bin_exact: Vec<(Vec<u8>, u64)>,
    /// Files of the `In`/`NotIn` binary values ([`RuleSet::resolve_binaries`]).
    pub bin_inode: Vec<(FileId, u64)>,
    /// (bytes, bits, mask); postfix bytes are reversed.
    pub bin_prefix: Vec<(Vec<u8>, u32, u64)>,
    pub bin_postfix: Vec<(Vec<u8>, u32, u64)>,
    pub arg_exact: Vec<((u8, Vec<u8>), u64)>,
    /// Bytes start with the argv index byte.
    pub arg_prefix: Vec<(Vec<u8>, u32, u64)>,
    pub arg_postfix: Vec<(Vec<u8>, u32, u64)>,
    pub namespaces: Vec<(u32, u64)>,
    pub v4: Vec<(Vec<u8>, u32, u64)>,
    pub v6: Vec<(Vec<u8>, u32, u64)>,
    pub ports: Vec<(Vec<u8>, u32, u64)>,
}

/// A compiled set of policies: what one slot of the kernel maps holds.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub(crate) policies: Vec<PolicyInfo>,
    pub(crate) selectors: Vec<SelectorInfo>,
    pub(crate) entries: Vec<dc::SelectorEntry>,
    pub(crate) proc: Vec<ProcCondition>,
    pub(crate) dest: Vec<DestCondition>,
    pub(crate) compiled: Compiled,
    /// Everything but nothing slot-specific (SlotMeta has no slot field).
    pub(crate) meta: dc::SlotMeta,
    /// The files each binary condition (by index) names, once resolved.
    pub(crate) binary_files: BTreeMap<usize, BTreeSet<FileId>>,
    /// The `hook: syscall` selectors' calls and conditions ([`crate::syscall`]).
    pub(crate) syscalls: Vec<crate::syscall::SyscallSelector>,
    /// The `hook: file` selectors, path conditions and calls ([`crate::file`]).
    pub(crate) files: crate::file::FileRules,
}

impl RuleSet {
    /// The policies, in input order (`policy_id` order).
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.policies
    }
    /// All selectors, by index.
    pub fn selectors(&self) -> &[SelectorInfo] {
        &self.selectors
    }
    /// Process conditions, by bit.
    pub fn proc_conditions(&self) -> &[ProcCondition] {
        &self.proc
    }
    /// Destination conditions, by bit.
    pub fn dest_conditions(&self) -> &[DestCondition] {
        &self.dest
    }
    /// The selector table entries as the kernel sees them, by index.
    pub fn selector_entries(&self) -> &[dc::SelectorEntry] {
        &self.entries
    }
    /// Describes selector `selector` of this rule set (for events); `None` past the end.
    pub fn selector_info(&self, selector: u8) -> Option<SelectorInfo> {
        self.selectors.get(usize::from(selector)).cloned()
    }
    /// Bits of the selectors on `hook`.
    pub fn hook_mask(&self, hook: Hook) -> u64 {
        match hook {
            Hook::Exec => self.meta.hook_exec,
            Hook::Connect => self.meta.hook_connect,
            Hook::Egress => self.meta.hook_egress,
            Hook::Ingress => self.meta.hook_ingress,
            // SlotMeta has no room for it; the syscall programs look calls up by number.
            Hook::Syscall => self.syscalls.iter().fold(0, |m, s| m | (1 << s.index)),
            Hook::File => self
                .files
                .selectors
                .iter()
                .fold(0, |m, s| m | (1 << s.index)),
        }
    }
}

/// Compiles `policies` (in order; `policy_id` is the position) into one rule set, interning the
/// namespace names it mentions in `ns`. Fails on anything the kernel side cannot represent,
/// naming the policy and rule; never panics, whatever the input.
pub fn compile(policies: &[AnyPolicy], ns: &mut NamespaceIds) -> Result<RuleSet, CompileError> {
    let mut b = Builder::new(ns);
    for (pid, policy) in policies.iter().enumerate() {
        b.policy(pid, policy, &mut |_, _, _| {})?;
    }
    Ok(b.finish())
}
