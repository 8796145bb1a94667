//! The daemon core: owns the process cache, the workload registry, the policy directory state
//! and the event output, and drives a kernel engine through the small [`Kernel`] trait (so it
//! is tested with a fake engine). `bulwark run` builds one of these around the real engine.
//!
//! Sequence: seed processes from /proc, load workloads, load policies and apply them (status
//! `ready`), then loop: drain ring-buffer records into JSON events, apply policy/workload
//! changes on demand (status `reloaded` / `reload_failed`), report growing losses (status
//! `running`), until asked to stop (status `stopping`).

use super::clock::BootClock;
use super::event::{Body, DestinationJson, Event, Parent, PolicyMatch, Process, Status};
use super::policy_dir::{daemon_diagnostic, PolicyBackend, PolicyDir};
use super::process::{read_cwd, ProcInfo, ProcessCache};
#[cfg(test)]
use super::record::decode;
use super::record::{decode_exit_code, signal_name, DecodeError, Record};
use super::workload::{
    parse_workloads, process_cgroup_id, resolve, WorkloadChange, WorkloadRegistry, WorkloadSpec,
};
use daemon_common::{
    Destination, MatchEvent, ACTION_BLOCK, ACTION_SIGKILL, ENC_PLAINTEXT, ENC_TLS, HOOK_CONNECT,
    HOOK_EGRESS, HOOK_EXEC, PROTO_TCP, PROTO_UDP, REASON_CAPACITY, REASON_EXISTING_CONNECTION,
    REASON_TCP_FAST_OPEN, REASON_UNSEEN_PAYLOAD,
};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

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
}

/// What changed on disk (from the watcher).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub policies: bool,
    pub workloads: bool,
}

/// A request from another thread to the main loop (the Kubernetes controller's thread in
/// `bulwark run --kubernetes`): everything that changes the kernel goes through the loop, so
/// there is one place that applies rule sets and writes status events.
pub enum Request<P> {
    /// Replace the whole policy set (see [`Daemon::apply_set`]); the outcome is sent to
    /// `reply` (per policy, in the order given; `Err` when nothing changed).
    ApplySet {
        policies: Vec<P>,
        reply: std::sync::mpsc::Sender<SetOutcome>,
    },
    /// Processes in this cgroup belong to this Pod (see [`Daemon::on_requests`]).
    AddWorkload {
        cgroup_id: u64,
        pod: super::event::Pod,
    },
    /// The cgroup no longer belongs to a Pod of this node.
    RemoveWorkload { cgroup_id: u64 },
}

/// Outcome of [`Daemon::apply_set`]: `Ok` with one entry per policy (in the order given;
/// `Err(reason)` for a policy left out because it does not compile on its own, the others are
/// in force), or `Err(reason)` when the set in force did not change at all.
pub type SetOutcome = Result<Vec<Result<(), String>>, String>;

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

/// Turns records into events and writes them.
pub struct Pipeline<R> {
    node: String,
    clock: BootClock,
    proc_root: PathBuf,
    pub cache: ProcessCache,
    pub registry: WorkloadRegistry,
    /// Rule set last applied to each slot (match records name their slot).
    slots: [Option<std::sync::Arc<R>>; 2],
    out: Box<dyn Write + Send>,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    /// Exec-hook matches waiting for their exec record.
    pending: Vec<(Instant, MatchEvent)>,
    write_failed: bool,
}

impl<R: Rules> Pipeline<R> {
    pub fn new(node: &str, proc_root: PathBuf, out: Box<dyn Write + Send>) -> Self {
        Pipeline {
            node: node.to_string(),
            clock: BootClock::now(),
            proc_root,
            cache: ProcessCache::new(
                node,
                super::process::DEFAULT_CAPACITY,
                super::process::DEFAULT_RETENTION_NS,
            ),
            registry: WorkloadRegistry::new(),
            slots: [None, None],
            out,
            decode_errors: 0,
            pending: Vec::new(),
            write_failed: false,
        }
    }

    fn process_json(&self, p: &ProcInfo) -> Process {
        Process {
            exec_id: p.exec_id.clone(),
            pid: p.pid,
            uid: p.uid,
            binary: p.binary.clone(),
            arguments: p.arguments(),
            cwd: p.cwd.clone(),
            start_time: self.clock.rfc3339(p.start_ns),
            parent_exec_id: p.parent_exec_id.clone(),
            pod: self.registry.get(p.cgroup_id).map(|w| w.pod.clone()),
        }
    }

    fn lookup(&self, tgid: u32, start_ns: u64, cgroup_id: u64) -> ProcInfo {
        match self.cache.get(tgid, start_ns) {
            Some(p) => p.clone(),
            None => {
                let mut p = self.cache.unknown(tgid, start_ns, &self.proc_root);
                if p.cgroup_id == 0 {
                    p.cgroup_id = cgroup_id;
                }
                p
            }
        }
    }

    fn event(&self, time_ns: u64, body: Body) -> Event {
        Event {
            time: self.clock.rfc3339(time_ns),
            node_name: self.node.clone(),
            body,
        }
    }

    /// Turns one record into events. The kernel reports an exec-hook match before the exec
    /// itself; such a match waits (see [`Pipeline::flush_pending`]) and is emitted right after
    /// its process's `process_exec`, so it describes the new image, not the forked parent.
    pub fn handle_record(&mut self, rec: Result<Record, DecodeError>) -> Vec<Event> {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors == 1 {
                    eprintln!("bulwark: warning: {e} (counted in lost_events)");
                }
                return Vec::new();
            }
        };
        if let Record::Match(m) = &rec {
            let h = m.header;
            if m.hook == HOOK_EXEC && h.start_ns != 0 && !self.cache.contains(h.tgid, h.start_ns) {
                self.pending.push((Instant::now(), *m));
                return Vec::new();
            }
        }
        let exec_key = match &rec {
            Record::Exec(e) => Some((e.header.tgid, e.header.start_ns)),
            _ => None,
        };
        let mut out: Vec<Event> = self.event_for(rec).into_iter().collect();
        if let Some((tgid, start)) = exec_key {
            if !self.pending.is_empty() {
                let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|(_, m)| m.header.tgid == tgid && m.header.start_ns == start);
                self.pending = keep;
                out.extend(ready.iter().map(|(_, m)| self.match_event(m)));
            }
        }
        out
    }

    /// Emits waiting exec-hook matches older than `max_age` (their exec record never came:
    /// lost, or the process is described as well as the cache and /proc allow).
    pub fn flush_pending(&mut self, max_age: Duration) -> Vec<Event> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(t, _)| t.elapsed() >= max_age);
        self.pending = keep;
        old.iter().map(|(_, m)| self.match_event(m)).collect()
    }

    fn event_for(&mut self, rec: Record) -> Option<Event> {
        match rec {
            Record::Exec(e) => {
                let cwd = read_cwd(&self.proc_root, e.header.tgid);
                let info = self.cache.on_exec(&e, cwd);
                let parent = info.parent_exec_id.as_ref().map(|id| {
                    let binary = self
                        .cache
                        .get(e.ppid, e.parent_start_ns)
                        .map(|p| p.binary.clone())
                        .unwrap_or_default();
                    Parent {
                        exec_id: id.clone(),
                        pid: e.ppid,
                        binary,
                    }
                });
                let process = self.process_json(&info);
                Some(self.event(e.header.time_ns, Body::ProcessExec { process, parent }))
            }
            Record::Fork(f) => {
                self.cache.on_fork(&f);
                None
            }
            Record::Exit(x) => {
                let h = x.header;
                let info = match self.cache.on_exit(h.tgid, h.start_ns, h.time_ns) {
                    Some(p) => p,
                    None => self.lookup(h.tgid, h.start_ns, 0),
                };
                let (status, sig) = decode_exit_code(x.exit_code);
                let process = self.process_json(&info);
                Some(self.event(
                    h.time_ns,
                    Body::ProcessExit {
                        process,
                        status,
                        signal: sig.map(signal_name),
                    },
                ))
            }
            Record::Connect(c) => {
                let h = c.header;
                let info = self.lookup(h.tgid, h.start_ns, c.cgroup_id);
                let process = self.process_json(&info);
                Some(self.event(
                    h.time_ns,
                    Body::ProcessConnect {
                        process,
                        destination: destination_json(&c.dest),
                        blocked: c.blocked != 0,
                    },
                ))
            }
            Record::Match(m) => Some(self.match_event(&m)),
        }
    }

    fn match_event(&self, m: &MatchEvent) -> Event {
        let h = m.header;
        let info = self.lookup(h.tgid, h.start_ns, m.cgroup_id);
        let process = self.process_json(&info);
        let rules = self.slots.get(usize::from(m.slot)).and_then(|s| s.as_ref());
        let mi = rules.and_then(|r| r.match_info(m.selector));
        let enforced = m.enforced != 0;
        let (action, mut outcome) = action_outcome(m.actions, enforced);
        if m.reason == REASON_CAPACITY && enforced {
            // No room for its state: the process was killed at exec (or at the apply).
            outcome = "killed";
        }
        let hook = match m.hook {
            HOOK_EXEC => "exec",
            HOOK_CONNECT => "connect",
            HOOK_EGRESS => "egress",
            _ => "unknown",
        };
        let monitor = mi
            .as_ref()
            .map_or(!enforced && action != "Post", |i| i.monitor);
        let body = Body::PolicyMatch(PolicyMatch {
            policy_name: mi.as_ref().map(|i| i.policy_name.clone()),
            policy_namespace: mi.as_ref().and_then(|i| i.policy_namespace.clone()),
            rule: mi.as_ref().map(|i| i.rule.clone()),
            hook: hook.into(),
            action: action.into(),
            mode: if monitor { "monitor" } else { "enforce" }.into(),
            enforced,
            outcome: outcome.into(),
            process,
            destination: (m.hook != HOOK_EXEC).then(|| destination_json(&m.dest)),
            encryption: match (m.hook, m.encryption) {
                (HOOK_EGRESS, ENC_PLAINTEXT) => Some("plaintext".into()),
                (HOOK_EGRESS, ENC_TLS) => Some("tls".into()),
                _ => None,
            },
            reason: reason_name(m.reason).map(Into::into),
        });
        self.event(h.time_ns, body)
    }

    /// Writes one event line (flushed by [`Pipeline::flush`]).
    pub fn emit(&mut self, ev: &Event) {
        let line = ev.to_json_line();
        if let Err(e) = writeln!(self.out, "{line}") {
            if !self.write_failed {
                eprintln!("bulwark: error: cannot write events: {e}");
                self.write_failed = true;
            }
        }
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            if !self.write_failed {
                eprintln!("bulwark: error: cannot write events: {e}");
                self.write_failed = true;
            }
        }
    }

    /// Status event now.
    pub fn status(&mut self, status: Status) {
        let ev = Event {
            time: self.clock.rfc3339_now(),
            node_name: self.node.clone(),
            body: Body::Status(status),
        };
        self.emit(&ev);
        self.flush();
    }
}

/// The `reason` of a `policy_match` (`REASON_*`), `None` for a plain match.
pub fn reason_name(reason: u8) -> Option<&'static str> {
    match reason {
        REASON_TCP_FAST_OPEN => Some("tcp_fast_open"),
        REASON_UNSEEN_PAYLOAD => Some("unseen_payload"),
        REASON_EXISTING_CONNECTION => Some("existing_connection"),
        REASON_CAPACITY => Some("capacity"),
        _ => None,
    }
}

/// Strongest action and the outcome word of a match.
pub fn action_outcome(actions: u8, enforced: bool) -> (&'static str, &'static str) {
    if actions & ACTION_SIGKILL != 0 {
        ("Sigkill", if enforced { "killed" } else { "would_kill" })
    } else if actions & ACTION_BLOCK != 0 {
        ("Block", if enforced { "blocked" } else { "would_block" })
    } else {
        ("Post", "reported")
    }
}

/// JSON form of a kernel destination.
pub fn destination_json(d: &Destination) -> DestinationJson {
    let ip = match d.family as i32 {
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(d.addr)),
        _ => IpAddr::V4(Ipv4Addr::new(d.addr[0], d.addr[1], d.addr[2], d.addr[3])),
    };
    DestinationJson {
        ip: ip.to_string(),
        port: d.port,
        protocol: match d.protocol {
            PROTO_TCP => "TCP".into(),
            PROTO_UDP => "UDP".into(),
            p => format!("IP{p}"),
        },
    }
}

/// The `message` of a diagnostic object.
fn diag_message(d: &serde_json::Value) -> String {
    d.get("message")
        .and_then(|m| m.as_str())
        .unwrap_or("unknown error")
        .to_string()
}

/// Longest wait for kernel records: routine records do not wake the reader (the kernel batches
/// them, see `daemon-ebpf/src/maps.rs`), so this bounds how late they are written.
const POLL_PERIOD: Duration = Duration::from_millis(50);

/// How long an exec-hook match waits for its exec record.
const PENDING_MATCH_WAIT: Duration = Duration::from_millis(500);

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
    startup_diagnostics: Vec<serde_json::Value>,
    current: Option<std::sync::Arc<B::Rules>>,
    in_force: Vec<String>,
    pub generation: u64,
    workload_specs: Vec<WorkloadSpec>,
    last_lost: u64,
    /// Capacity warnings of the last status event.
    last_warnings: Vec<String>,
    ticks: u64,
    /// Timings of the last policy load, reported in status events.
    last_load_ms: Option<f64>,
    last_apply_ms: Option<f64>,
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
            last_lost: 0,
            last_warnings: Vec::new(),
            ticks: 0,
            last_load_ms: None,
            last_apply_ms: None,
        }
    }

    /// Total losses: kernel drops plus undecodable records.
    pub fn lost_events(&self) -> u64 {
        self.kernel.lost_events() + self.pipeline.decode_errors
    }

    fn status(&mut self, state: &str, diagnostics: Vec<serde_json::Value>) {
        let lost = self.lost_events();
        self.last_lost = lost;
        let warnings = self.kernel.warnings();
        self.last_warnings = warnings.clone();
        let st = Status {
            state: state.into(),
            generation: self.generation,
            policies: self.in_force.clone(),
            diagnostics,
            lost_events: lost,
            warnings,
            load_ms: self.last_load_ms,
            apply_ms: self.last_apply_ms,
        };
        self.pipeline.status(st);
    }

    fn reseed(&self, rules: &B::Rules) -> Vec<Reseed> {
        self.pipeline
            .cache
            .live()
            // A process whose exit record was lost must not get kernel state.
            .filter(|p| self.cfg.proc_root.join(p.pid.to_string()).exists())
            .map(|p| {
                let ns = self.pipeline.registry.namespace_id(p.cgroup_id);
                let argv: Vec<&str> = p.argv.iter().map(String::as_str).collect();
                Reseed {
                    tgid: p.pid,
                    start_ns: p.start_ns,
                    namespace_id: ns,
                    selectors: rules.evaluate_process(&p.binary, &argv, ns),
                }
            })
            .collect()
    }

    fn apply_rules(&mut self, rules: std::sync::Arc<B::Rules>) -> anyhow::Result<()> {
        let reseed = self.reseed(&rules);
        let slot = self.kernel.apply(&rules, &reseed)?;
        if let Some(s) = self.pipeline.slots.get_mut(usize::from(slot)) {
            *s = Some(rules.clone());
        }
        self.current = Some(rules);
        self.generation += 1;
        Ok(())
    }

    /// Loads the policy directory and applies it; returns (failed, diagnostics).
    /// Without a policy directory (Kubernetes mode) there is nothing to load: (false, []).
    pub fn load_policies(&mut self) -> (bool, Vec<serde_json::Value>) {
        let Some(policies) = self.policies.as_ref() else {
            return (false, Vec::new());
        };
        let mut stderr = std::io::stderr();
        let t = std::time::Instant::now();
        let res = policies.load(&mut self.backend, &mut stderr);
        self.last_load_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        let mut diags = res.diagnostics;
        let mut failed = res.failed;
        if let Some(c) = res.candidate {
            let t = std::time::Instant::now();
            match self.apply_rules(std::sync::Arc::new(c.rules)) {
                Ok(()) => {
                    self.last_apply_ms = Some(t.elapsed().as_secs_f64() * 1e3);
                    if let Some(p) = self.policies.as_mut() {
                        p.commit(c.files);
                    }
                    self.in_force = c.names;
                }
                Err(e) => {
                    let msg = format!(
                        "the kernel refused the new rule set: {e:#}; the previous set stays in force"
                    );
                    eprintln!("bulwark: error: {msg}");
                    diags.push(daemon_diagnostic("apply", None, msg));
                    failed = true;
                }
            }
        }
        (failed, diags)
    }

    /// Reads the workloads file (if any) and syncs the registry and kernel.
    pub fn load_workloads(&mut self) -> Vec<serde_json::Value> {
        let Some(file) = self.cfg.workloads_file.clone() else {
            return Vec::new();
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!(
                    "cannot read workloads file {}: {e}; the previous workloads stay registered",
                    file.display()
                );
                eprintln!("bulwark: error: {msg}");
                return vec![daemon_diagnostic("workloads", Some(&file), msg)];
            }
        };
        match parse_workloads(&text, &file) {
            Ok(specs) => {
                self.workload_specs = specs;
                self.sync_workloads().0
            }
            Err(e) => {
                let msg = format!("{e:#}\n  the previous workloads stay registered");
                eprintln!("bulwark: error: {msg}");
                vec![daemon_diagnostic("workloads", Some(&file), msg)]
            }
        }
    }

    /// Resolves the current workload specs and pushes changes to the kernel; returns the
    /// diagnostics and whether the registry changed.
    fn sync_workloads(&mut self) -> (Vec<serde_json::Value>, bool) {
        let mut diags = Vec::new();
        let Some(mount) = self.cfg.cgroup_mount.clone() else {
            let msg = "no cgroup v2 mount found: workloads cannot be resolved; mount one with \
                       `mount -t cgroup2 none /sys/fs/cgroup`"
                .to_string();
            return (vec![daemon_diagnostic("workloads", None, msg)], false);
        };
        let resolved = resolve(&self.workload_specs, &mount);
        for m in &resolved.missing {
            diags.push(serde_json::json!({"code": "workloads", "severity": "warning",
                "message": m, "file": self.cfg.workloads_file.as_ref().map(|f| f.display().to_string())}));
        }
        let backend = &mut self.backend;
        let changes = self
            .pipeline
            .registry
            .sync_file(resolved.entries, &mut |ns| backend.intern_namespace(ns));
        let changed = !changes.is_empty();
        for ch in changes {
            let r = match ch {
                WorkloadChange::Set {
                    cgroup_id,
                    namespace_id,
                } => self.kernel.set_workload(cgroup_id, namespace_id),
                WorkloadChange::Remove { cgroup_id } => self.kernel.remove_workload(cgroup_id),
            };
            if let Err(e) = r {
                let msg = format!("workload map update {ch:?} failed: {e:#}");
                eprintln!("bulwark: error: {msg}");
                diags.push(daemon_diagnostic("workloads", None, msg));
            }
        }
        (diags, changed)
    }

    /// Registers a workload from another source than the workloads file (the Kubernetes side,
    /// from Pods, through [`Request::AddWorkload`]): interns its namespace and writes the
    /// kernel's workload map. True when the namespace of the cgroup changed: running processes
    /// then need a re-apply ([`Daemon::on_requests`] does one per batch) so namespace selectors
    /// apply to processes already in the cgroup.
    fn register_workload(
        &mut self,
        cgroup_id: u64,
        pod: super::event::Pod,
    ) -> anyhow::Result<bool> {
        let namespace_id = self.backend.intern_namespace(&pod.namespace);
        let change = self
            .pipeline
            .registry
            .add(cgroup_id, super::workload::Workload { pod, namespace_id });
        if change.is_some() {
            self.kernel.set_workload(cgroup_id, namespace_id)?;
        }
        Ok(change.is_some())
    }

    /// Forgets a workload (see [`Daemon::register_workload`]).
    fn unregister_workload(&mut self, cgroup_id: u64) -> anyhow::Result<bool> {
        if self.pipeline.registry.remove(cgroup_id).is_some() {
            self.kernel.remove_workload(cgroup_id)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Re-applies the set in force (namespace ids of running processes changed).
    fn reapply(&mut self) -> anyhow::Result<()> {
        match self.current.clone() {
            Some(rules) => self.apply_rules(rules),
            None => Ok(()),
        }
    }

    /// Replaces the whole policy set with `policies` (Kubernetes mode: the controller's
    /// accepted set) through the same path as a policy-directory reload: set-level validation,
    /// compilation, the kernel's atomic A/B apply, then a status event — `ready` for the first
    /// set, then `reloaded` / `reload_failed`. A policy that does not compile on its own is left
    /// out (its entry says why) and the rest is applied; when the set fails as a whole
    /// (validation, compilation of the combination, the kernel), nothing changes.
    pub fn apply_set(&mut self, policies: Vec<B::Policy>) -> SetOutcome {
        let mut diags = std::mem::take(&mut self.startup_diagnostics);
        let outcome = self.try_apply_set(&policies, &mut diags);
        let failed = match &outcome {
            Ok(r) => r.iter().any(Result::is_err),
            Err(_) => true,
        };
        let state = if !self.ready_written {
            "ready"
        } else if failed {
            "reload_failed"
        } else {
            "reloaded"
        };
        self.ready_written = true;
        self.status(state, diags);
        outcome
    }

    fn try_apply_set(
        &mut self,
        policies: &[B::Policy],
        diags: &mut Vec<serde_json::Value>,
    ) -> SetOutcome {
        let t = Instant::now();
        let mut results: Vec<Result<(), String>> = vec![Ok(()); policies.len()];
        let rules = match self.build(policies) {
            Ok((rules, warnings)) => {
                diags.extend(warnings);
                rules
            }
            Err((whole, whole_diags)) => {
                // Which policies fail on their own? Those are left out; the rest is applied.
                for (i, p) in policies.iter().enumerate() {
                    if let Err((why, _)) = self.build(std::slice::from_ref(p)) {
                        eprintln!("bulwark: error: policy {} left out: {why}", B::label(p));
                        results[i] = Err(format!("rejected on this node: {why}"));
                        diags.push(daemon_diagnostic(
                            "compile",
                            None,
                            format!("{}: {why}", B::label(p)),
                        ));
                    }
                }
                let rest: Vec<B::Policy> = policies
                    .iter()
                    .zip(&results)
                    .filter(|(_, r)| r.is_ok())
                    .map(|(p, _)| p.clone())
                    .collect();
                let retry = if rest.len() < policies.len() {
                    self.build(&rest)
                } else {
                    Err((whole, whole_diags))
                };
                match retry {
                    Ok((rules, warnings)) => {
                        diags.extend(warnings);
                        rules
                    }
                    Err((why, d)) => {
                        let msg = format!(
                            "the policy set cannot be loaded on this node: {why}; the previous \
                             set stays in force"
                        );
                        eprintln!("bulwark: error: {msg}");
                        diags.extend(d);
                        return Err(msg);
                    }
                }
            }
        };
        self.last_load_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        if let Err(e) = self.apply_rules(std::sync::Arc::new(rules)) {
            let msg = format!(
                "the kernel refused the new rule set: {e:#}; the previous set stays in force"
            );
            eprintln!("bulwark: error: {msg}");
            diags.push(daemon_diagnostic("apply", None, msg.clone()));
            return Err(msg);
        }
        self.last_apply_ms = Some(t.elapsed().as_secs_f64() * 1e3);
        let mut names: Vec<String> = policies
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| B::label(p))
            .collect();
        names.sort();
        self.in_force = names;
        Ok(results)
    }

    /// Set-level validation and compilation of `set`: the rules and the validation warnings, or
    /// why not (the error messages) and the diagnostics.
    #[allow(clippy::type_complexity)]
    fn build(
        &mut self,
        set: &[B::Policy],
    ) -> Result<(B::Rules, Vec<serde_json::Value>), (String, Vec<serde_json::Value>)> {
        let check = self.backend.validate_set(set);
        if check.has_errors {
            let why: Vec<String> = check
                .diagnostics
                .iter()
                .filter(|d| d.get("severity").and_then(|s| s.as_str()) == Some("error"))
                .map(diag_message)
                .collect();
            let why = if why.is_empty() {
                check.text.trim().to_string()
            } else {
                why.join("; ")
            };
            return Err((why, check.diagnostics));
        }
        match self.backend.compile(set) {
            Ok(rules) => Ok((rules, check.diagnostics)),
            Err(d) => Err((diag_message(&d), vec![d])),
        }
    }

    /// Handles requests from other threads (all queued ones; workload changes are batched into
    /// one re-apply).
    pub fn on_requests(&mut self, requests: &Receiver<Request<B::Policy>>) {
        let mut reapply = false;
        while let Ok(req) = requests.try_recv() {
            match req {
                Request::ApplySet { policies, reply } => {
                    let outcome = if self.policies.is_some() {
                        Err(
                            "this daemon enforces the policies of its --policy-dir and takes no \
                             policy set from elsewhere"
                                .to_string(),
                        )
                    } else {
                        // The set is applied with the workloads registered so far.
                        if std::mem::take(&mut reapply) {
                            self.log_reapply();
                        }
                        self.apply_set(policies)
                    };
                    let _ = reply.send(outcome);
                }
                Request::AddWorkload { cgroup_id, pod } => {
                    match self.register_workload(cgroup_id, pod) {
                        Ok(changed) => reapply |= changed,
                        Err(e) => eprintln!(
                            "bulwark: error: registering the workload of cgroup {cgroup_id}: {e:#}"
                        ),
                    }
                }
                Request::RemoveWorkload { cgroup_id } => {
                    match self.unregister_workload(cgroup_id) {
                        Ok(changed) => reapply |= changed,
                        Err(e) => eprintln!(
                            "bulwark: error: removing the workload of cgroup {cgroup_id}: {e:#}"
                        ),
                    }
                }
            }
        }
        if reapply {
            self.log_reapply();
        }
    }

    fn log_reapply(&mut self) {
        if let Err(e) = self.reapply() {
            eprintln!("bulwark: error: re-applying rules after a workload change: {e:#}");
        }
    }

    /// Start-up: seed processes, workloads, policies; writes the `ready` status.
    pub fn start(&mut self) {
        let mount = self.cfg.cgroup_mount.clone();
        let proc_root = self.cfg.proc_root.clone();
        let n = self.pipeline.cache.seed_from_proc(&proc_root, &|pid| {
            mount
                .as_deref()
                .and_then(|m| process_cgroup_id(m, &proc_root, pid))
        });
        log::info!("seeded {n} running processes from {}", proc_root.display());
        let mut diags = self.load_workloads();
        if self.policies.is_none() {
            // Kubernetes mode: `ready` comes with the first policy set (`apply_set`).
            self.startup_diagnostics = diags;
            return;
        }
        let (_, d) = self.load_policies();
        diags.extend(d);
        self.ready_written = true;
        self.status("ready", diags);
    }

    /// Applies on-disk changes and reports the outcome.
    pub fn on_change(&mut self, change: Change) {
        let mut diags = Vec::new();
        if change.workloads {
            diags.extend(self.load_workloads());
        }
        let failed = if change.policies {
            let (failed, d) = self.load_policies();
            diags.extend(d);
            failed
        } else {
            // Namespace ids of running processes may have changed: re-apply the same set.
            if let Some(rules) = self.current.clone() {
                if let Err(e) = self.apply_rules(rules) {
                    let msg = format!("re-applying rules after a workload change failed: {e:#}");
                    eprintln!("bulwark: error: {msg}");
                    diags.push(daemon_diagnostic("apply", None, msg));
                }
            }
            diags
                .iter()
                .any(|d| d.get("severity").and_then(|s| s.as_str()) == Some("error"))
        };
        self.status(if failed { "reload_failed" } else { "reloaded" }, diags);
    }

    /// Once a second: forget old exits, re-resolve workload cgroups (created later, or
    /// re-created with a new id), report grown losses.
    /// Every 30th tick also sweeps processes whose exit record was lost.
    pub fn tick(&mut self, report_losses: bool) {
        let now = BootClock::boot_now_ns();
        self.ticks += 1;
        if self.ticks.is_multiple_of(30) {
            let n = self.pipeline.cache.sweep_dead(&self.cfg.proc_root, now);
            if n > 0 {
                log::info!("{n} processes vanished without an exit record");
            }
        }
        self.pipeline.cache.gc(now);
        if !self.workload_specs.is_empty() {
            let (_, changed) = self.sync_workloads();
            if changed {
                if let Some(rules) = self.current.clone() {
                    if let Err(e) = self.apply_rules(rules) {
                        eprintln!("bulwark: error: re-applying rules for new workloads: {e:#}");
                    }
                }
            }
        }
        // Capacity warnings: said at once the first time, then at most every loss report.
        let warnings = self.kernel.warnings();
        let new_warnings =
            warnings != self.last_warnings && (self.last_warnings.is_empty() || report_losses);
        if new_warnings {
            for w in &warnings {
                eprintln!("bulwark: warning: {w}");
            }
        }
        if report_losses && self.lost_events() > self.last_lost {
            let lost = self.lost_events();
            eprintln!(
                "bulwark: warning: {lost} events lost so far (ring buffer full or undecodable)"
            );
            self.status("running", Vec::new());
        } else if new_warnings {
            self.status("running", Vec::new());
        }
    }

    /// Drains records for up to `timeout`, writing events.
    pub fn pump(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let pipeline = &mut self.pipeline;
        self.kernel.poll(timeout, &mut |rec| {
            for ev in pipeline.handle_record(rec) {
                pipeline.emit(&ev);
            }
        })?;
        for ev in self.pipeline.flush_pending(PENDING_MATCH_WAIT) {
            self.pipeline.emit(&ev);
        }
        self.pipeline.flush();
        Ok(())
    }

    /// The main loop, until `stop` is set; then detaches and writes `stopping`. Between polls
    /// it applies on-disk `changes` and serves `requests` (Kubernetes mode: the controller's
    /// policy sets and Pod workloads).
    pub fn run_with(
        &mut self,
        stop: &AtomicBool,
        changes: &Receiver<Change>,
        requests: Option<&Receiver<Request<B::Policy>>>,
    ) -> anyhow::Result<()> {
        self.start();
        let mut last_tick = Instant::now();
        let mut last_loss_report = Instant::now();
        let result = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            if let Err(e) = self.pump(POLL_PERIOD) {
                break Err(e);
            }
            let mut change = Change::default();
            while let Ok(c) = changes.try_recv() {
                change.policies |= c.policies;
                change.workloads |= c.workloads;
            }
            if change != Change::default() {
                self.on_change(change);
            }
            if let Some(r) = requests {
                self.on_requests(r);
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                let report = last_loss_report.elapsed() >= self.cfg.loss_report_every;
                if report {
                    last_loss_report = Instant::now();
                }
                self.tick(report);
            }
        };
        // Drain what is already queued, then detach and say so.
        let _ = self.pump(Duration::ZERO);
        for ev in self.pipeline.flush_pending(Duration::ZERO) {
            self.pipeline.emit(&ev);
        }
        self.kernel.shutdown();
        self.status("stopping", Vec::new());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::policy_dir::FileLint;
    use crate::pipeline::record::as_bytes;
    use crate::pipeline::record::tests::exec_record;
    use daemon_common::{
        ConnectEvent, EventHeader, ExitEvent, MatchEvent, ACTION_POST, EVENT_CONNECT, EVENT_EXIT,
        EVENT_MATCH,
    };
    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// Policies are files whose text is a policy name; `error` in the text is a lint error,
    /// a name containing `nocompile` fails compilation.
    struct FakeBackend {
        ns: HashMap<String, u32>,
    }
    #[derive(Debug, PartialEq)]
    struct FakeRules(Vec<String>);

    impl Rules for FakeRules {
        fn match_info(&self, selector: u8) -> Option<MatchInfo> {
            self.0.get(usize::from(selector)).map(|n| MatchInfo {
                policy_name: n.clone(),
                policy_namespace: None,
                rule: format!("{n}-rule"),
                monitor: n.contains("monitor"),
            })
        }
        fn evaluate_process(&self, binary: &str, _argv: &[&str], _ns: u32) -> u64 {
            self.0
                .iter()
                .enumerate()
                .filter(|(_, n)| binary.ends_with(n.as_str()))
                .fold(0, |m, (i, _)| m | 1 << i)
        }
    }

    impl PolicyBackend for FakeBackend {
        type Policy = String;
        type Rules = FakeRules;
        fn lint_file(&self, path: &Path) -> FileLint<String> {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let bad = text.contains("error");
            FileLint {
                policies: if bad {
                    vec![]
                } else {
                    text.split_whitespace().map(String::from).collect()
                },
                has_errors: bad,
                diagnostics: if bad {
                    vec![serde_json::json!({"severity":"error","file":path.display().to_string()})]
                } else {
                    vec![]
                },
                text: if bad {
                    format!("{}: error: bad\n", path.display())
                } else {
                    String::new()
                },
            }
        }
        fn validate_set(&self, policies: &[String]) -> FileLint<String> {
            let mut seen = std::collections::HashSet::new();
            let dup = policies.iter().any(|p| !seen.insert(p));
            FileLint {
                policies: vec![],
                has_errors: dup,
                diagnostics: if dup {
                    vec![serde_json::json!({"severity":"error","message":"duplicate"})]
                } else {
                    vec![]
                },
                text: String::new(),
            }
        }
        fn compile(&mut self, policies: &[String]) -> Result<FakeRules, serde_json::Value> {
            if policies.iter().any(|p| p.contains("nocompile")) {
                return Err(daemon_diagnostic("compile", None, "nope".into()));
            }
            Ok(FakeRules(policies.to_vec()))
        }
        fn intern_namespace(&mut self, name: &str) -> u32 {
            let next = self.ns.len() as u32 + 1;
            *self.ns.entry(name.into()).or_insert(next)
        }
        fn label(p: &String) -> String {
            p.clone()
        }
    }

    #[derive(Default)]
    struct FakeKernel {
        active: u8,
        applied: Vec<(Vec<String>, Vec<Reseed>)>,
        fail_apply: bool,
        workloads: HashMap<u64, u32>,
        queue: Vec<Vec<u8>>,
        lost: u64,
        shut: bool,
    }

    impl Kernel<FakeRules> for FakeKernel {
        fn apply(&mut self, rules: &FakeRules, reseed: &[Reseed]) -> anyhow::Result<u8> {
            if self.fail_apply {
                anyhow::bail!("map full");
            }
            self.active ^= 1;
            self.applied.push((rules.0.clone(), reseed.to_vec()));
            Ok(self.active)
        }
        fn set_workload(&mut self, cgroup_id: u64, ns: u32) -> anyhow::Result<()> {
            self.workloads.insert(cgroup_id, ns);
            Ok(())
        }
        fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
            self.workloads.remove(&cgroup_id);
            Ok(())
        }
        fn poll(
            &mut self,
            _t: Duration,
            sink: &mut dyn FnMut(Result<Record, DecodeError>),
        ) -> anyhow::Result<()> {
            for r in self.queue.drain(..) {
                sink(decode(&r));
            }
            Ok(())
        }
        fn lost_events(&self) -> u64 {
            self.lost
        }
        fn shutdown(&mut self) {
            self.shut = true;
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        /// Lines written since the last call.
        fn take(&self) -> Vec<serde_json::Value> {
            let bytes = std::mem::take(&mut *self.0.lock().unwrap());
            String::from_utf8(bytes)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).expect("every line is JSON"))
                .collect()
        }
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bulwark-daemon-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("policies")).unwrap();
        d
    }

    fn daemon(dir: &Path, workloads: Option<PathBuf>) -> (Daemon<FakeBackend, FakeKernel>, Buf) {
        let buf = Buf::default();
        let cfg = Config {
            node_name: "node-1".into(),
            policy_dir: Some(dir.join("policies")),
            workloads_file: workloads,
            proc_root: PathBuf::from("/proc"),
            cgroup_mount: super::super::workload::find_cgroup2_mount(),
            loss_report_every: Duration::from_secs(0),
        };
        let d = Daemon::new(
            cfg,
            FakeBackend { ns: HashMap::new() },
            FakeKernel::default(),
            Box::new(buf.clone()),
        );
        (d, buf)
    }

    fn only_status(lines: Vec<serde_json::Value>) -> serde_json::Value {
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["type"], "status");
        assert_eq!(lines[0]["node_name"], "node-1");
        lines.into_iter().next().unwrap()
    }

    /// A daemon in Kubernetes mode (no policy directory).
    fn cluster_daemon(dir: &Path) -> (Daemon<FakeBackend, FakeKernel>, Buf) {
        let (mut d, buf) = daemon(dir, None);
        d.cfg.policy_dir = None;
        d.policies = None;
        (d, buf)
    }

    fn apply(
        d: &mut Daemon<FakeBackend, FakeKernel>,
        tx: &std::sync::mpsc::Sender<Request<String>>,
        rx: &Receiver<Request<String>>,
        set: &[&str],
    ) -> SetOutcome {
        let (reply, answer) = std::sync::mpsc::channel();
        tx.send(Request::ApplySet {
            policies: set.iter().map(|s| s.to_string()).collect(),
            reply,
        })
        .unwrap();
        d.on_requests(rx);
        answer.try_recv().expect("answered at once")
    }

    #[test]
    fn cluster_sets_go_through_the_same_apply_and_status_path() {
        let dir = tmpdir("cluster");
        let (mut d, out) = cluster_daemon(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        d.start();
        // No status before the first set: `ready` means the first set is in force.
        assert!(out.take().is_empty());
        assert_eq!(
            apply(&mut d, &tx, &rx, &["beta", "alpha"]),
            Ok(vec![Ok(()), Ok(())])
        );
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready", "{st}");
        assert_eq!(st["generation"], 1);
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert!(st["apply_ms"].is_number(), "{st}");
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["beta", "alpha"]);

        // Mode switch (a changed policy): one more atomic A/B apply, `reloaded`.
        assert_eq!(
            apply(&mut d, &tx, &rx, &["alpha-monitor", "beta"]),
            Ok(vec![Ok(()), Ok(())])
        );
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded", "{st}");
        assert_eq!(st["generation"], 2);
        assert_eq!(d.kernel.applied.len(), 2);
        assert_eq!(d.kernel.active, 0, "the other slot is active now");

        // One policy that does not compile on its own: left out, the rest applied.
        let r = apply(&mut d, &tx, &rx, &["alpha", "nocompile-x", "gamma"]).unwrap();
        assert_eq!(r[0], Ok(()));
        assert!(r[1].as_ref().unwrap_err().contains("nope"), "{r:?}");
        assert_eq!(r[2], Ok(()));
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed", "{st}");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "gamma"]));
        assert!(st["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("nocompile-x: "));
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha", "gamma"]);

        // A set invalid as a whole: nothing changes, the reason goes back.
        let err = apply(&mut d, &tx, &rx, &["alpha", "alpha"]).unwrap_err();
        assert!(
            err.contains("cannot be loaded on this node: duplicate"),
            "{err}"
        );
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "gamma"]));
        assert_eq!(st["generation"], 3);

        // The kernel refusing: nothing changes.
        d.kernel.fail_apply = true;
        let err = apply(&mut d, &tx, &rx, &["delta"]).unwrap_err();
        assert!(err.contains("the kernel refused"), "{err}");
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "gamma"]));
        d.kernel.fail_apply = false;

        // The empty set (every policy deleted) is a set like any other.
        assert_eq!(apply(&mut d, &tx, &rx, &[]), Ok(vec![]));
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded");
        assert_eq!(st["policies"], serde_json::json!([]));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pod_workloads_are_registered_with_one_reapply_per_batch() {
        let dir = tmpdir("cluster-wl");
        let (mut d, out) = cluster_daemon(&dir);
        let (tx, rx) = std::sync::mpsc::channel();
        d.start();
        apply(&mut d, &tx, &rx, &["alpha"]).unwrap();
        out.take();
        let pod = |ns: &str, name: &str| super::super::event::Pod {
            namespace: ns.into(),
            name: name.into(),
            container: "app".into(),
            labels: Default::default(),
        };
        tx.send(Request::AddWorkload {
            cgroup_id: 11,
            pod: pod("web", "a"),
        })
        .unwrap();
        tx.send(Request::AddWorkload {
            cgroup_id: 12,
            pod: pod("db", "b"),
        })
        .unwrap();
        d.on_requests(&rx);
        assert_eq!(d.kernel.workloads.len(), 2);
        assert_ne!(d.kernel.workloads[&11], d.kernel.workloads[&12]);
        assert_eq!(d.pipeline.registry.get(11).unwrap().pod.name, "a");
        assert_eq!(d.kernel.applied.len(), 2, "one re-apply for the batch");
        // The same identity again changes nothing; removal re-applies.
        tx.send(Request::AddWorkload {
            cgroup_id: 11,
            pod: pod("web", "a"),
        })
        .unwrap();
        d.on_requests(&rx);
        assert_eq!(d.kernel.applied.len(), 2);
        tx.send(Request::RemoveWorkload { cgroup_id: 11 }).unwrap();
        d.on_requests(&rx);
        assert!(!d.kernel.workloads.contains_key(&11));
        assert!(d.pipeline.registry.get(11).is_none());
        assert_eq!(d.kernel.applied.len(), 3);
        // Workload changes write no status events.
        assert!(out.take().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_policy_dir_daemon_refuses_sets_from_elsewhere() {
        let dir = tmpdir("dir-refuses");
        std::fs::write(dir.join("policies/a.yaml"), "alpha").unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        out.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = apply(&mut d, &tx, &rx, &["beta"]).unwrap_err();
        assert!(err.contains("--policy-dir"), "{err}");
        assert_eq!(d.kernel.applied.len(), 1);
        assert!(out.take().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_main_loop_serves_requests_until_stopped() {
        let dir = tmpdir("cluster-loop");
        let (mut d, out) = cluster_daemon(&dir);
        let (_changes_tx, changes) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let (d, stop) = (&mut d, &stop);
            let h = s.spawn(move || d.run_with(stop, &changes, Some(&rx)));
            let (reply, answer) = std::sync::mpsc::channel();
            tx.send(Request::ApplySet {
                policies: vec!["alpha".into()],
                reply,
            })
            .unwrap();
            let got = answer.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(got, Ok(vec![Ok(())]));
            stop.store(true, Ordering::SeqCst);
            h.join().unwrap().unwrap();
        });
        let states: Vec<String> = out
            .take()
            .iter()
            .filter(|e| e["type"] == "status")
            .map(|e| e["state"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(states, ["ready", "stopping"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_keeps_the_old_set_on_error() {
        let dir = tmpdir("reload");
        let pol = dir.join("policies");
        std::fs::write(pol.join("a.yaml"), "alpha").unwrap();
        std::fs::write(pol.join("broken.yaml"), "error").unwrap();
        std::fs::write(pol.join("README.md"), "error").unwrap(); // not a policy file
        let (mut d, out) = daemon(&dir, None);
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        assert_eq!(st["generation"], 1);
        assert_eq!(st["policies"], serde_json::json!(["alpha"]));
        assert_eq!(st["diagnostics"].as_array().unwrap().len(), 1);
        // The load's timings are reported (the benchmark reads them).
        assert!(st["load_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{st}");
        assert!(st["apply_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{st}");
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha"]);
        // The running test process was seeded and reseeded.
        assert!(d.kernel.applied[0]
            .1
            .iter()
            .any(|r| r.tgid == std::process::id()));

        // A good change applies.
        std::fs::remove_file(pol.join("broken.yaml")).unwrap();
        std::fs::write(pol.join("b.yaml"), "beta").unwrap();
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded");
        assert_eq!(st["generation"], 2);
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));

        // Breaking b.yaml keeps its previous version in force.
        std::fs::write(pol.join("b.yaml"), "error").unwrap();
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha", "beta"]);

        // A set that does not compile changes nothing in the kernel.
        let applies = d.kernel.applied.len();
        std::fs::write(pol.join("c.yaml"), "nocompile").unwrap();
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert!(st["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["code"] == "compile"));
        assert_eq!(d.kernel.applied.len(), applies);

        // Nor does a set-level error (duplicate), nor a kernel refusal.
        std::fs::write(pol.join("c.yaml"), "alpha").unwrap();
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        assert_eq!(only_status(out.take())["state"], "reload_failed");
        assert_eq!(d.kernel.applied.len(), applies);
        std::fs::write(pol.join("c.yaml"), "gamma").unwrap();
        std::fs::write(pol.join("b.yaml"), "beta").unwrap();
        d.kernel.fail_apply = true;
        let generation = d.generation;
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert_eq!(st["generation"], generation);
        // Once the kernel accepts it, the new set is in force.
        d.kernel.fail_apply = false;
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded");
        assert_eq!(
            st["policies"],
            serde_json::json!(["alpha", "beta", "gamma"])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workloads_file_feeds_registry_and_kernel() {
        let dir = tmpdir("wl");
        // Kept inside the policy directory: it must not be linted as a policy.
        let wl = dir.join("policies/workloads.yaml");
        std::fs::write(
            &wl,
            "workloads:\n- {cgroup: /, namespace: production, pod: web-1, container: app, labels: {app: web}}\n",
        )
        .unwrap();
        let (mut d, out) = daemon(&dir, Some(wl.clone()));
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        assert_eq!(st["diagnostics"], serde_json::json!([]), "{st}");
        assert_eq!(st["policies"], serde_json::json!([]), "{st}");
        let root_id = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(d.cfg.cgroup_mount.clone().unwrap()).unwrap(),
        );
        assert_eq!(d.kernel.workloads.get(&root_id), Some(&1));
        // A broken file keeps the registry; the status says why.
        std::fs::write(&wl, "workloads: [{cgroup: /}]\n").unwrap();
        d.on_change(Change {
            policies: false,
            workloads: true,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(d.kernel.workloads.get(&root_id), Some(&1));
        // Another source (Kubernetes) adds and removes by cgroup id.
        let pod = crate::pipeline::event::Pod {
            namespace: "kube-ns".into(),
            name: "p".into(),
            ..Default::default()
        };
        let applies = d.kernel.applied.len();
        let (tx, rx) = std::sync::mpsc::channel();
        let send = |r: Request<String>| tx.send(r).unwrap();
        send(Request::AddWorkload {
            cgroup_id: 777,
            pod: pod.clone(),
        });
        d.on_requests(&rx);
        assert_eq!(d.kernel.workloads.get(&777), Some(&2));
        assert_eq!(
            d.kernel.applied.len(),
            applies + 1,
            "running processes re-evaluated"
        );
        send(Request::AddWorkload {
            cgroup_id: 777,
            pod,
        });
        d.on_requests(&rx);
        assert_eq!(d.kernel.applied.len(), applies + 1, "no change, no apply");
        send(Request::RemoveWorkload { cgroup_id: 777 });
        d.on_requests(&rx);
        assert!(!d.kernel.workloads.contains_key(&777));
        send(Request::RemoveWorkload { cgroup_id: 777 });
        d.on_requests(&rx);
        // An emptied file removes it.
        std::fs::write(&wl, "workloads: []\n").unwrap();
        d.on_change(Change {
            policies: false,
            workloads: true,
        });
        assert_eq!(only_status(out.take())["state"], "reloaded");
        assert!(d.kernel.workloads.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workload_cgroups_are_re_resolved_every_tick() {
        let dir = tmpdir("reresolve");
        // A stand-in cgroup mount: resolution only looks at directories and inode numbers.
        let mount = dir.join("cgroup");
        std::fs::create_dir_all(&mount).unwrap();
        let wl = dir.join("workloads.yaml");
        std::fs::write(
            &wl,
            "workloads:\n- {cgroup: /pod-a, namespace: prod, pod: a}\n",
        )
        .unwrap();
        let (mut d, out) = daemon(&dir, Some(wl));
        d.cfg.cgroup_mount = Some(mount.clone());
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        let diags = st["diagnostics"].as_array().unwrap();
        assert!(
            diags
                .iter()
                .any(|x| x["severity"] == "warning"
                    && x["message"].as_str().unwrap().contains("/pod-a")),
            "{st}"
        );
        assert!(d.kernel.workloads.is_empty());
        // The cgroup appears: picked up on the next tick, processes re-evaluated.
        std::fs::create_dir(mount.join("pod-a")).unwrap();
        let id1 =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(mount.join("pod-a")).unwrap());
        let applies = d.kernel.applied.len();
        d.tick(false);
        assert_eq!(d.kernel.workloads.get(&id1), Some(&1));
        assert_eq!(d.kernel.applied.len(), applies + 1);
        // Nothing changed: no kernel writes.
        d.tick(false);
        assert_eq!(d.kernel.applied.len(), applies + 1);
        // Re-created with a new inode: the old id goes, the new one comes.
        std::fs::remove_dir(mount.join("pod-a")).unwrap();
        std::fs::create_dir(mount.join("keep-inode-busy")).unwrap();
        std::fs::create_dir(mount.join("pod-a")).unwrap();
        let id2 =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(mount.join("pod-a")).unwrap());
        assert_ne!(id1, id2);
        d.tick(false);
        assert_eq!(d.kernel.workloads.get(&id2), Some(&1));
        assert!(!d.kernel.workloads.contains_key(&id1));
        assert!(
            out.take().is_empty(),
            "ticks write no status without losses"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn records_become_events_with_correlated_ids() {
        let dir = tmpdir("events");
        std::fs::write(dir.join("policies/p.yaml"), "no-curl monitor-nc").unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        out.take();
        let slot = d.kernel.active;
        let sh = exec_record(4_000_001, 1_000, 1, 0, "/bin/sh", &["sh", "-c", "curl x"]);
        let curl = exec_record(
            4_000_002,
            2_000,
            4_000_001,
            1_000,
            "/usr/bin/curl",
            &["curl", "x"],
        );
        let conn = ConnectEvent {
            header: EventHeader {
                kind: EVENT_CONNECT,
                tgid: 4_000_002,
                time_ns: 2_500,
                start_ns: 2_000,
            },
            cgroup_id: 0,
            dest: Destination {
                addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                port: 80,
                family: 2,
                protocol: PROTO_TCP,
            },
            blocked: 1,
            _pad: [0; 3],
        };
        let m = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_000_002,
                time_ns: 2_600,
                start_ns: 2_000,
            },
            slot,
            selector: 0,
            hook: HOOK_CONNECT,
            actions: ACTION_POST | ACTION_BLOCK,
            enforced: 1,
            encryption: 0,
            dest: conn.dest,
            ..Default::default()
        };
        let monitor = MatchEvent {
            selector: 1,
            hook: HOOK_EGRESS,
            actions: ACTION_BLOCK,
            enforced: 0,
            encryption: ENC_PLAINTEXT,
            ..m
        };
        let exit = ExitEvent {
            header: EventHeader {
                kind: EVENT_EXIT,
                tgid: 4_000_002,
                time_ns: 3_000,
                start_ns: 2_000,
            },
            exit_code: 9,
            _pad: 0,
        };
        d.kernel.queue = vec![
            as_bytes(&sh),
            as_bytes(&curl),
            as_bytes(&conn),
            as_bytes(&m),
            as_bytes(&monitor),
            as_bytes(&exit),
            vec![1, 2, 3], // garbage: counted as lost
        ];
        d.pump(Duration::ZERO).unwrap();
        let ev = out.take();
        assert_eq!(ev.len(), 6, "{ev:#?}");
        let ids = |e: &serde_json::Value| e["process"]["exec_id"].as_str().unwrap().to_string();
        assert_eq!(ev[0]["type"], "process_exec");
        assert_eq!(ev[0]["process"]["binary"], "/bin/sh");
        assert_eq!(ev[0]["process"]["arguments"], "-c 'curl x'");
        assert_eq!(ev[1]["process"]["parent_exec_id"], ids(&ev[0]).as_str());
        assert_eq!(ev[1]["parent"]["binary"], "/bin/sh");
        assert_eq!(ev[1]["parent"]["pid"], 4_000_001);
        assert_eq!(ev[2]["type"], "process_connect");
        assert_eq!(ids(&ev[2]), ids(&ev[1]));
        assert_eq!(
            ev[2]["destination"],
            serde_json::json!({"ip":"10.0.0.2","port":80,"protocol":"TCP"})
        );
        assert_eq!(ev[2]["blocked"], true);
        assert_eq!(ev[3]["type"], "policy_match");
        assert_eq!(ev[3]["policy_name"], "no-curl");
        assert_eq!(ev[3]["rule"], "no-curl-rule");
        assert_eq!(ev[3]["hook"], "connect");
        assert_eq!(ev[3]["action"], "Block");
        assert_eq!(ev[3]["mode"], "enforce");
        assert_eq!(ev[3]["outcome"], "blocked");
        assert_eq!(ev[3]["encryption"], serde_json::Value::Null);
        assert_eq!(ids(&ev[3]), ids(&ev[1]));
        assert_eq!(ev[4]["policy_name"], "monitor-nc");
        assert_eq!(ev[4]["mode"], "monitor");
        assert_eq!(ev[4]["outcome"], "would_block");
        assert_eq!(ev[4]["encryption"], "plaintext");
        assert_eq!(ev[5]["type"], "process_exit");
        assert_eq!(ev[5]["signal"], "SIGKILL");
        assert_eq!(ev[5]["status"], 0);
        assert_eq!(ids(&ev[5]), ids(&ev[1]));
        for e in &ev {
            assert_eq!(e["node_name"], "node-1");
            assert!(e["time"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(d.lost_events(), 1);
        // Grown losses are reported in a `running` status; shutdown says `stopping`.
        d.kernel.lost = 4;
        d.tick(true);
        let st = only_status(out.take());
        assert_eq!(st["state"], "running");
        assert_eq!(st["lost_events"], 5);
        d.tick(true);
        assert!(out.take().is_empty(), "no new losses, no report");
        let stop = AtomicBool::new(true);
        let (_tx, rx) = std::sync::mpsc::channel();
        d.run_with(&stop, &rx, None).unwrap();
        let lines = out.take();
        assert_eq!(lines.first().unwrap()["state"], "ready");
        assert_eq!(lines.last().unwrap()["state"], "stopping");
        assert!(d.kernel.shut);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exec_matches_wait_for_their_exec() {
        let dir = tmpdir("order");
        std::fs::write(dir.join("policies/p.yaml"), "kill-x").unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        out.take();
        let slot = d.kernel.active;
        // bash (4_100_000) forked 4_100_001, which execs /tmp/x; the kernel reports the kill
        // match before the exec record.
        let bash = exec_record(4_100_000, 100, 1, 0, "/bin/bash", &["bash"]);
        let fork = daemon_common::ForkEvent {
            header: EventHeader {
                kind: daemon_common::EVENT_FORK,
                tgid: 4_100_001,
                time_ns: 150,
                start_ns: 150,
            },
            parent_tgid: 4_100_000,
            _pad: 0,
            parent_start_ns: 100,
        };
        let kill = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_100_001,
                time_ns: 200,
                start_ns: 200,
            },
            slot,
            selector: 0,
            hook: HOOK_EXEC,
            actions: ACTION_SIGKILL,
            enforced: 1,
            ..Default::default()
        };
        let x = exec_record(4_100_001, 200, 4_100_000, 100, "/tmp/x", &["x", "-y"]);
        // A match whose exec never arrives.
        let orphan = MatchEvent {
            header: EventHeader {
                tgid: 4_100_002,
                start_ns: 300,
                ..kill.header
            },
            ..kill
        };
        d.kernel.queue = vec![
            as_bytes(&bash),
            as_bytes(&fork),
            as_bytes(&kill),
            as_bytes(&orphan),
            as_bytes(&x),
        ];
        d.pump(Duration::ZERO).unwrap();
        let ev = out.take();
        let kinds: Vec<_> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            vec!["process_exec", "process_exec", "policy_match"],
            "{ev:#?}"
        );
        assert_eq!(ev[2]["process"]["binary"], "/tmp/x");
        assert_eq!(ev[2]["process"]["arguments"], "-y");
        assert_eq!(ev[2]["process"]["exec_id"], ev[1]["process"]["exec_id"]);
        assert_eq!(ev[2]["outcome"], "killed");
        // The orphan is written once it has waited long enough (here: at shutdown).
        let stop = AtomicBool::new(true);
        let (_tx, rx) = std::sync::mpsc::channel();
        d.run_with(&stop, &rx, None).unwrap();
        let lines = out.take();
        let orphan_ev = lines
            .iter()
            .find(|e| e["type"] == "policy_match")
            .expect("orphan match flushed");
        assert_eq!(orphan_ev["process"]["pid"], 4_100_002);
        assert_eq!(
            orphan_ev["process"]["exec_id"],
            crate::pipeline::process::exec_id("node-1", 300, 4_100_002).as_str()
        );
        assert_eq!(lines.last().unwrap()["state"], "stopping");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn actions_and_destinations() {
        assert_eq!(
            action_outcome(ACTION_SIGKILL | ACTION_POST, true),
            ("Sigkill", "killed")
        );
        assert_eq!(
            action_outcome(ACTION_SIGKILL, false),
            ("Sigkill", "would_kill")
        );
        assert_eq!(
            action_outcome(ACTION_BLOCK, false),
            ("Block", "would_block")
        );
        assert_eq!(action_outcome(ACTION_POST, false), ("Post", "reported"));
        let mut d = Destination {
            port: 443,
            family: libc::AF_INET6 as u8,
            protocol: PROTO_UDP,
            ..Default::default()
        };
        d.addr[15] = 1;
        let j = destination_json(&d);
        assert_eq!(
            (j.ip.as_str(), j.port, j.protocol.as_str()),
            ("::1", 443, "UDP")
        );
        d.protocol = 132;
        assert_eq!(destination_json(&d).protocol, "IP132");
    }
}
