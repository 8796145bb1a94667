//! What the daemon core needs from the kernel side, as traits so the core is tested with fakes:
//! a compiled rule set's answers ([`Rules`]: who a match belongs to, the process selector bits
//! of running processes) and the engine ([`Kernel`]: atomic apply, the workload map, records).
//! `bulwark run` implements them with the compiler's rule set and the real engine
//! ([`crate::lint_compiler`], [`crate::engine_kernel`]).

use crate::record::{DecodeError, Record};
use std::time::Duration;

/// What userspace needs from a compiled rule set.
pub trait Rules {
    /// Who matched: selector `index` of this rule set.
    fn match_info(&self, selector: u8) -> Option<MatchInfo>;
    /// Selector bits whose process conditions hold for a process (the kernel's exec-time
    /// evaluation, done in userspace for processes that were running before the apply).
    fn evaluate_process(&self, binary: &str, argv: &[&str], namespace_id: u32) -> u64;
}

/// The policy side of a selector, for `policy_match` events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatchInfo {
    pub policy_name: String,
    pub policy_namespace: Option<String>,
    pub rule: String,
    pub monitor: bool,
}

/// Selector bits of one running process, computed for a new rule set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reseed {
    pub tgid: u32,
    pub start_ns: u64,
    pub namespace_id: u32,
    pub selectors: u64,
}

/// What the daemon needs from the kernel engine.
pub trait Kernel<R> {
    /// Writes `rules` into the inactive slot, seeds the running processes' selector bits for
    /// it, switches atomically; returns the slot now active. On error nothing changed.
    fn apply(&mut self, rules: &R, reseed: &[Reseed]) -> anyhow::Result<u8>;
    fn set_workload(&mut self, cgroup_id: u64, namespace_id: u32) -> anyhow::Result<()>;
    fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()>;
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
