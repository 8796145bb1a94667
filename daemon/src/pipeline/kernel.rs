//! What the daemon core needs from the kernel side, as traits so the core is tested with fakes:
//! a compiled rule set's answers ([`Rules`]: who a match belongs to, the process selector bits
//! of running processes) and the engine ([`Kernel`]: atomic apply, the workload map, records).
//! `bulwark run` implements them with the compiler's rule set and the real engine
//! ([`crate::lint_compiler`], [`crate::engine_kernel`]).

use crate::record::{DecodeError, Record};
use bulwark_compiler::{BinaryIdentities, ExecFacts, FileId};
use std::collections::BTreeSet;
use std::time::Duration;

/// What userspace needs from a compiled rule set.
pub trait Rules {
    /// Who matched: selector `index` of group `group` of this rule set (a match record's
    /// table is `slot + 2 * group`, daemon-common "Groups").
    fn match_info(&self, group: u32, selector: u8) -> Option<MatchInfo>;
    /// Selector bits whose process conditions hold for an exec with these facts (the kernel's
    /// exec-time evaluation, done in userspace for processes that exec'd before the apply).
    fn evaluate_exec(&self, facts: &ExecFacts) -> u64;
    /// The binary paths whose files the rule set matches (`In`/`NotIn` values).
    fn binary_paths(&self) -> BTreeSet<String>;
    /// The rule set matching these files for its binary paths.
    fn with_files(&self, ids: &BinaryIdentities) -> anyhow::Result<Self>
    where
        Self: Sized;
}

/// The policy side of a selector, for `policy_match` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchInfo {
    pub policy_name: String,
    pub policy_namespace: Option<String>,
    pub rule: String,
    pub monitor: bool,
    /// The selector has argument conditions (they all hold when an exec's arguments are
    /// incomplete).
    pub uses_arguments: bool,
}

/// What the daemon needs from the kernel engine.
pub trait Kernel<R> {
    /// Writes `rules` into the inactive slot, gives every running process whose kernel state
    /// is stale for it the bits `describe(tgid)` returns with the namespace id they are for
    /// (`None`: the process cannot be described, e.g. it exited), switches atomically; returns
    /// the slot now active. On error nothing changed.
    fn apply(
        &mut self,
        rules: &R,
        describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
    ) -> anyhow::Result<u8>;
    /// Recomputes the bits in force of one process moved to a cgroup of another namespace
    /// without exec (the kernel gave it that namespace with every selector bit meanwhile) with
    /// what `describe(tgid)` returns, as `apply` does for a stale process. A process that
    /// cannot be described (it exited) is left alone.
    fn refresh_process(
        &mut self,
        tgid: u32,
        describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
    ) -> anyhow::Result<()>;
    fn set_workload(&mut self, cgroup_id: u64, namespace_id: u32) -> anyhow::Result<()>;
    fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()>;
    /// Replaces the set of dynamic loader files.
    fn set_loaders(&mut self, loaders: &[FileId]) -> anyhow::Result<()>;
    /// Replaces the declared encrypted protocols the payload verdicts know (the kernel's
    /// `DECLARED_PROTOCOLS` table, at most `MAX_DECLARED_PROTOCOLS` entries).
    fn set_encrypted_protocols(
        &mut self,
        protocols: &[daemon_common::SignatureEntry],
    ) -> anyhow::Result<()>;
    /// Waits up to `timeout` for records and passes each one, decoded, to `sink` (a record
    /// that could not be decoded is passed as the error, and counted as lost).
    fn poll(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(Result<Record, DecodeError>),
    ) -> anyhow::Result<()>;
    /// Records the kernel dropped (ring buffer full) since start.
    fn lost_events(&self) -> u64;
    /// Enforcement kept by refusing for lack of room (full maps), one sentence each.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Connects by processes whose selector bits were stale for the rule set in force, since
    /// start (the kernel's safety net of a switch, `COUNTER_STALE_PROCESS`).
    fn stale_processes(&self) -> u64;
    /// Forgets the kernel's io_uring opens in flight of processes no longer under
    /// `proc_root`; how many.
    fn reap_uring_inflight(&mut self, _proc_root: &std::path::Path) -> usize {
        0
    }
    /// Detaches everything (called once, at shutdown).
    fn shutdown(&mut self) {}
    /// The slot that already holds exactly `rules`, when the kernel side was taken over from a
    /// previous daemon (pinned programs) that enforced the same rule set: match records it
    /// wrote before this daemon applied anything then name their policies. `None` otherwise.
    fn slot_holding(&self, _rules: &R) -> Option<u8> {
        None
    }
    /// Whether the kernel side was taken over from a previous daemon (pinned programs still
    /// enforcing its rule set, with its workload map).
    fn adopted(&self) -> bool {
        false
    }
    /// The cgroups the kernel's workload map holds (what a previous daemon left there).
    fn workload_cgroups(&self) -> anyhow::Result<Vec<u64>> {
        Ok(Vec::new())
    }
}
