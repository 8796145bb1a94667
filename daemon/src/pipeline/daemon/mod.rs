//! The daemon core: owns the process cache and event output (through the [`Pipeline`]), the
//! workload registry, the policy set in force and the status events, and drives a kernel
//! engine and a policy backend through small traits ([`Kernel`], [`PolicyBackend`]) so it is
//! tested with fakes. `bulwark run` builds one around the real engine and the real lint and
//! compiler. Its concerns, one module each:
//!
//! - [`policy_set`]: the one apply path of a policy set, from a directory or from Kubernetes
//!   (validate -> compile -> atomic A/B apply -> status);
//! - [`workloads`]: the workloads file and Pods -> registry and the kernel's workload map;
//! - [`main_loop`]: start-up, the loop (records, changes, requests, ticks) and shutdown.
//!
//! Sequence: seed processes from /proc, load workloads, load policies and apply them (status
//! `ready`), then loop: drain ring-buffer records into JSON events, apply policy/workload
//! changes on demand (status `reloaded` / `reload_failed`), report growing losses (status
//! `running`), until asked to stop (status `stopping`).

pub mod main_loop;
pub mod policy_set;
pub mod workloads;

pub use main_loop::{Change, Request};
pub use policy_set::{LeftOut, SetError, SetOutcome};

use super::kernel::{Kernel, Rules};
use super::policy_backend::PolicyBackend;
use super::policy_dir::PolicyDir;
use super::translate::Pipeline;
use super::workload::{WorkloadChange, WorkloadSpec};
use super::{binary_ids, exec_facts};
use bulwark_compiler::{BinaryIdentities, FileId};
use bulwark_conns::Signatures;
use bulwark_events::Diagnostic;
use bulwark_events::{State, Status};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Static configuration of a daemon.
pub struct Config {
    pub node_name: String,
    /// The policy directory; `None` when the policy set arrives as [`Request::ApplySet`]
    /// (Kubernetes mode).
    pub policy_dir: Option<PathBuf>,
    pub workloads_file: Option<PathBuf>,
    /// `/proc` (tests may point elsewhere).
    pub proc_root: PathBuf,
    /// cgroup v2 mount; without it workloads cannot be resolved.
    pub cgroup_mount: Option<PathBuf>,
    /// How often a status event reports grown losses.
    pub loss_report_every: Duration,
}

/// The daemon: pipeline + kernel + policy backend.
pub struct Daemon<B: PolicyBackend, K: Kernel<B::Rules>>
where
    B::Rules: Rules,
{
    pub cfg: Config,
    pub backend: B,
    pub kernel: K,
    pub pipeline: Pipeline<B::Rules>,
    /// `None` in Kubernetes mode (no policy directory).
    policies: Option<PolicyDir<B::Policy>>,
    /// Whether the `ready` status was written (in Kubernetes mode it waits for the first set).
    ready_written: bool,
    /// Diagnostics of start-up (workloads file) waiting for the first status event.
    startup_diagnostics: Vec<Diagnostic>,
    /// The rule set in force and the labels of its policies (sorted).
    current: Option<Arc<B::Rules>>,
    in_force: Vec<String>,
    pub generation: u64,
    workload_specs: Vec<WorkloadSpec>,
    /// Workload map writes held back until the first apply, on a kernel taken over from a
    /// previous daemon (see [`Daemon::write_workload`]); `None` once they go straight through.
    deferred_workloads: Option<Vec<WorkloadChange>>,
    last_lost: u64,
    /// Capacity warnings of the last status event.
    last_warnings: Vec<String>,
    last_stale: u64,
    ticks: u64,
    /// Timings of the last policy load, reported in status events.
    last_load_ms: Option<f64>,
    last_apply_ms: Option<f64>,
    /// The files the rule set in force matches, as resolved when it was applied.
    files: NodeFiles,
}

/// The files the kernel matches executed files against, as resolved on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NodeFiles {
    /// The files of the binary values of the rule set in force.
    binaries: BinaryIdentities,
    /// The dynamic loaders.
    loaders: BTreeSet<FileId>,
}

impl<B, K> Daemon<B, K>
where
    B: PolicyBackend,
    B::Rules: Rules,
    K: Kernel<B::Rules>,
{
    /// A daemon writing events to `out`; nothing happens until [`Daemon::start`] / `run`.
    pub fn new(cfg: Config, backend: B, kernel: K, out: Box<dyn Write + Send>) -> Self {
        let pipeline = Pipeline::new(&cfg.node_name, cfg.proc_root.clone(), out);
        let policies = cfg
            .policy_dir
            .clone()
            .map(|d| PolicyDir::new(d, cfg.workloads_file.clone()));
        let deferred_workloads = kernel.adopted().then(Vec::new);
        Daemon {
            cfg,
            backend,
            kernel,
            pipeline,
            policies,
            ready_written: false,
            startup_diagnostics: Vec::new(),
            current: None,
            in_force: Vec::new(),
            generation: 0,
            workload_specs: Vec::new(),
            deferred_workloads,
            last_lost: 0,
            last_warnings: Vec::new(),
            last_stale: 0,
            ticks: 0,
            last_load_ms: None,
            last_apply_ms: None,
            files: NodeFiles::default(),
        }
    }

    /// The declared encrypted protocols (`--protocols` at start; Kubernetes `EncryptedProtocol`
    /// objects whenever they change): the one entry point. The classifier and the kernel's
    /// payload verdicts (`matchEncryption`) get the same set; on error (a set that does not fit
    /// the kernel table) neither changes.
    pub fn set_encrypted_protocols(&mut self, protocols: Signatures) -> anyhow::Result<()> {
        let table = protocols
            .kernel_table()
            .map_err(|e| anyhow::anyhow!("declared encrypted protocols: {e}; {}", e.hint()))?;
        self.kernel.set_encrypted_protocols(&table)?;
        self.pipeline.conns.set_signatures(protocols);
        Ok(())
    }

    /// Total losses: kernel drops plus undecodable records.
    pub fn lost_events(&self) -> u64 {
        self.kernel.lost_events() + self.pipeline.decode_errors
    }

    /// Writes a status event.
    fn status(&mut self, state: State, diagnostics: Vec<Diagnostic>) {
        let lost = self.lost_events();
        self.last_lost = lost;
        let warnings = self.kernel.warnings();
        self.last_warnings = warnings.clone();
        let stale = self.kernel.stale_processes();
        self.last_stale = stale;
        let st = Status {
            state,
            generation: self.generation,
            policies: self.in_force.clone(),
            diagnostics,
            lost_events: lost,
            warnings,
            stale_processes: stale,
            load_ms: self.last_load_ms,
            apply_ms: self.last_apply_ms,
        };
        self.pipeline.status(st);
    }

    /// The files the binary values of `rules` and the dynamic loaders name now, on the host
    /// and in every mount namespace ([`binary_ids`]).
    fn node_files(&self, rules: &B::Rules) -> NodeFiles {
        let roots = binary_ids::namespace_roots(&self.cfg.proc_root);
        NodeFiles {
            binaries: binary_ids::resolve(&rules.binary_paths(), &roots),
            loaders: binary_ids::loaders(&roots),
        }
    }

    /// The kernel's atomic A/B apply of `rules`, matching the files its binary values name
    /// now; every running process whose kernel state is stale for the new slot gets the bits
    /// of its /proc facts ([`exec_facts`]), evaluated with the compiler's reference evaluator.
    /// On success the rules are in force (a new generation).
    fn apply_rules(&mut self, rules: Arc<B::Rules>) -> anyhow::Result<()> {
        let files = self.node_files(&rules);
        let rules = Arc::new(rules.with_files(&files.binaries)?);
        let loaders: Vec<FileId> = files.loaders.iter().copied().collect();
        self.kernel.set_loaders(&loaders)?;
        if self.current.is_none() {
            // Restarted on pinned programs that still enforce this very rule set: the matches
            // recorded before this apply (waiting in the ring buffer) name their policies.
            if let Some(slot) = self.kernel.slot_holding(&rules) {
                self.pipeline.set_slot(slot, rules.clone());
            }
        }
        let proc_root = self.cfg.proc_root.clone();
        let mount = self.cfg.cgroup_mount.clone();
        let registry = &self.pipeline.registry;
        let namespace_of = |cgroup_id: u64| registry.namespace_id(cgroup_id);
        let is_loader = |f: FileId| files.loaders.contains(&f);
        let mut describe = |tgid: u32| {
            exec_facts::gather(
                &proc_root,
                mount.as_deref(),
                tgid,
                &namespace_of,
                &is_loader,
            )
            .map(|facts| (rules.evaluate_exec(&facts), facts.namespace_id))
        };
        let slot = self.kernel.apply(&rules, &mut describe)?;
        self.files = files;
        self.flush_deferred_workloads();
        self.pipeline.set_slot(slot, rules.clone());
        self.current = Some(rules);
        self.generation += 1;
        Ok(())
    }

    /// Re-applies the set in force when a file its binary values or the loaders name changed
    /// (a package upgrade replaced it, a mount namespace with another copy appeared). Returns
    /// whether it did.
    fn refresh_files(&mut self) -> anyhow::Result<bool> {
        let Some(rules) = self.current.clone() else {
            return Ok(false);
        };
        let now = self.node_files(&rules);
        if now == self.files {
            return Ok(false);
        }
        let applied = self.apply_rules(rules);
        if applied.is_err() {
            // Reported once: retried when the files change again, or at the next apply.
            self.files = now;
        }
        applied.map(|()| true)
    }

    /// Re-applies the set in force (namespace ids of running processes changed).
    fn reapply(&mut self) -> anyhow::Result<()> {
        match self.current.clone() {
            Some(rules) => self.apply_rules(rules),
            None => Ok(()),
        }
    }
}
