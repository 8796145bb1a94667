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
use super::record::{decode, decode_exit_code, signal_name, Record};
use super::workload::{
    parse_workloads, process_cgroup_id, resolve, WorkloadChange, WorkloadRegistry, WorkloadSpec,
};
use daemon_common::{
    Destination, ACTION_BLOCK, ACTION_SIGKILL, ENC_PLAINTEXT, ENC_TLS, HOOK_CONNECT, HOOK_EGRESS,
    HOOK_EXEC, PROTO_TCP, PROTO_UDP,
};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
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
    /// Waits up to `timeout` for records and passes each one's bytes to `sink`.
    fn poll(&mut self, timeout: Duration, sink: &mut dyn FnMut(&[u8])) -> anyhow::Result<()>;
    /// Records the kernel dropped (ring buffer full) since start.
    fn lost_events(&self) -> u64;
    /// Detaches everything (called once, at shutdown).
    fn shutdown(&mut self) {}
}

/// What changed on disk (from the watcher).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    pub policies: bool,
    pub workloads: bool,
}

/// Static configuration of a daemon.
pub struct Config {
    pub node_name: String,
    pub policy_dir: PathBuf,
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

    /// Decodes one record into an event (fork records only update the cache).
    pub fn handle(&mut self, bytes: &[u8]) -> Option<Event> {
        let rec = match decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors == 1 {
                    eprintln!("bulwark: warning: {e} (counted in lost_events)");
                }
                return None;
            }
        };
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
            Record::Match(m) => {
                let h = m.header;
                let info = self.lookup(h.tgid, h.start_ns, m.cgroup_id);
                let process = self.process_json(&info);
                let rules = self.slots.get(usize::from(m.slot)).and_then(|s| s.as_ref());
                let mi = rules.and_then(|r| r.match_info(m.selector));
                let enforced = m.enforced != 0;
                let (action, outcome) = action_outcome(m.actions, enforced);
                let hook = match m.hook {
                    HOOK_EXEC => "exec",
                    HOOK_CONNECT => "connect",
                    HOOK_EGRESS => "egress",
                    _ => "unknown",
                };
                let monitor = mi.as_ref().map_or(!enforced && action != "Post", |i| i.monitor);
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
                });
                Some(self.event(h.time_ns, body))
            }
        }
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

/// The daemon: pipeline + kernel + policy backend.
pub struct Daemon<B: PolicyBackend, K: Kernel<B::Rules>>
where
    B::Rules: Rules,
{
    pub cfg: Config,
    pub backend: B,
    pub kernel: K,
    pub pipeline: Pipeline<B::Rules>,
    policies: PolicyDir<B::Policy>,
    current: Option<std::sync::Arc<B::Rules>>,
    in_force: Vec<String>,
    pub generation: u64,
    workload_specs: Vec<WorkloadSpec>,
    unresolved_workloads: bool,
    last_lost: u64,
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
        let policies = PolicyDir::new(cfg.policy_dir.clone());
        Daemon {
            cfg,
            backend,
            kernel,
            pipeline,
            policies,
            current: None,
            in_force: Vec::new(),
            generation: 0,
            workload_specs: Vec::new(),
            unresolved_workloads: false,
            last_lost: 0,
        }
    }

    /// Total losses: kernel drops plus undecodable records.
    pub fn lost_events(&self) -> u64 {
        self.kernel.lost_events() + self.pipeline.decode_errors
    }

    fn status(&mut self, state: &str, diagnostics: Vec<serde_json::Value>) {
        let lost = self.lost_events();
        self.last_lost = lost;
        let st = Status {
            state: state.into(),
            generation: self.generation,
            policies: self.in_force.clone(),
            diagnostics,
            lost_events: lost,
        };
        self.pipeline.status(st);
    }

    fn reseed(&self, rules: &B::Rules) -> Vec<Reseed> {
        self.pipeline
            .cache
            .live()
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
    pub fn load_policies(&mut self) -> (bool, Vec<serde_json::Value>) {
        let mut stderr = std::io::stderr();
        let res = self.policies.load(&mut self.backend, &mut stderr);
        let mut diags = res.diagnostics;
        let mut failed = res.failed;
        if let Some((rules, files, names)) = res.candidate {
            match self.apply_rules(std::sync::Arc::new(rules)) {
                Ok(()) => {
                    self.policies.commit(files);
                    self.in_force = names;
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
                self.sync_workloads()
            }
            Err(e) => {
                let msg = format!("{e:#}\n  the previous workloads stay registered");
                eprintln!("bulwark: error: {msg}");
                vec![daemon_diagnostic("workloads", Some(&file), msg)]
            }
        }
    }

    /// Resolves the current workload specs and pushes changes to the kernel.
    fn sync_workloads(&mut self) -> Vec<serde_json::Value> {
        let mut diags = Vec::new();
        let Some(mount) = self.cfg.cgroup_mount.clone() else {
            let msg = "no cgroup v2 mount found: workloads cannot be resolved; mount one with \
                       `mount -t cgroup2 none /sys/fs/cgroup`"
                .to_string();
            return vec![daemon_diagnostic("workloads", None, msg)];
        };
        let resolved = resolve(&self.workload_specs, &mount);
        self.unresolved_workloads = !resolved.missing.is_empty();
        for m in &resolved.missing {
            diags.push(serde_json::json!({"code": "workloads", "severity": "warning",
                "message": m, "file": self.cfg.workloads_file.as_ref().map(|f| f.display().to_string())}));
        }
        let backend = &mut self.backend;
        let changes = self
            .pipeline
            .registry
            .sync_file(resolved.entries, &mut |ns| backend.intern_namespace(ns));
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
        diags
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
        let (_, d) = self.load_policies();
        diags.extend(d);
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

    /// Once a second: forget old exits, retry unresolved workloads, report grown losses.
    pub fn tick(&mut self, report_losses: bool) {
        self.pipeline.cache.gc(BootClock::boot_now_ns());
        if self.unresolved_workloads {
            let before = self.pipeline.registry.len();
            let _ = self.sync_workloads();
            if self.pipeline.registry.len() != before {
                if let Some(rules) = self.current.clone() {
                    if let Err(e) = self.apply_rules(rules) {
                        eprintln!("bulwark: error: re-applying rules for new workloads: {e:#}");
                    }
                }
            }
        }
        if report_losses && self.lost_events() > self.last_lost {
            let lost = self.lost_events();
            eprintln!("bulwark: warning: {lost} events lost so far (ring buffer full or undecodable)");
            self.status("running", Vec::new());
        }
    }

    /// Drains records for up to `timeout`, writing events.
    pub fn pump(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let pipeline = &mut self.pipeline;
        self.kernel.poll(timeout, &mut |bytes| {
            if let Some(ev) = pipeline.handle(bytes) {
                pipeline.emit(&ev);
            }
        })?;
        self.pipeline.flush();
        Ok(())
    }

    /// The main loop, until `stop` is set; then detaches and writes `stopping`.
    pub fn run(&mut self, stop: &AtomicBool, changes: &Receiver<Change>) -> anyhow::Result<()> {
        self.start();
        let mut last_tick = Instant::now();
        let mut last_loss_report = Instant::now();
        let result = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            if let Err(e) = self.pump(Duration::from_millis(100)) {
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
        self.kernel.shutdown();
        self.status("stopping", Vec::new());
        result
    }
}

/// Path helper used by callers building a [`Config`].
pub fn default_proc_root() -> PathBuf {
    Path::new("/proc").to_path_buf()
}
