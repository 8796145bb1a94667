//! The daemon's main loop: start-up (seed processes, workloads, the first policy set, `ready`),
//! then until stopped: drain kernel records into events ([`Daemon::pump`]), apply on-disk
//! [`Change`]s and serve [`Request`]s from other threads, and once a second [`Daemon::tick`];
//! at the end drain, let go of the kernel (pinned programs stay and keep enforcing) and write
//! `stopping`. Everything that changes the kernel runs on
//! this loop's thread, so one place applies rule sets and writes status events.

use super::{Daemon, SetError, SetOutcome};
use crate::pipeline::clock::BootClock;
use crate::pipeline::kernel::{Kernel, Rules};
use crate::pipeline::policy_backend::PolicyBackend;
use crate::pipeline::workload::process_cgroup_id;
use bulwark_conns::{ClusterCidrs, Signatures};
use bulwark_events::{DaemonCode, Diagnostic, Pod, State};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

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
        reply: Sender<SetOutcome>,
    },
    /// Processes in this cgroup belong to this Pod (see [`Daemon::on_requests`]).
    AddWorkload { cgroup_id: u64, pod: Pod },
    /// The cgroup no longer belongs to a Pod of this node.
    RemoveWorkload { cgroup_id: u64 },
    /// The declared encrypted protocols now in force (see [`Daemon::set_declared_protocols`]).
    DeclaredProtocols(Signatures),
    /// The cluster CIDRs now in force (see [`Daemon::set_cluster_cidrs`]).
    ClusterCidrs(ClusterCidrs),
}

/// Longest wait for kernel records: routine records do not wake the reader (the kernel batches
/// them, see `daemon-ebpf/src/maps.rs`), so this bounds how late they are written.
const POLL_PERIOD: Duration = Duration::from_millis(50);

/// How long an exec-hook match waits for its exec record.
const PENDING_MATCH_WAIT: Duration = Duration::from_millis(500);

impl<B, K> Daemon<B, K>
where
    B: PolicyBackend,
    B::Rules: Rules,
    K: Kernel<B::Rules>,
{
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
        self.status(State::Ready, diags);
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
            if let Err(e) = self.reapply() {
                let msg = format!("re-applying rules after a workload change failed: {e:#}");
                eprintln!("bulwark: error: {msg}");
                diags.push(Diagnostic::error(DaemonCode::Apply, None, msg));
            }
            diags.iter().any(|d| d.is_error())
        };
        self.status(
            if failed {
                State::ReloadFailed
            } else {
                State::Reloaded
            },
            diags,
        );
    }

    /// Handles requests from other threads (all queued ones; workload changes are batched into
    /// one re-apply).
    pub fn on_requests(&mut self, requests: &Receiver<Request<B::Policy>>) {
        let mut reapply = false;
        while let Ok(req) = requests.try_recv() {
            match req {
                Request::ApplySet { policies, reply } => {
                    let outcome = if self.policies.is_some() {
                        Err(SetError::NotFromElsewhere)
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
                Request::DeclaredProtocols(protocols) => {
                    if let Err(e) = self.set_declared_protocols(protocols) {
                        eprintln!("bulwark: error: the cluster's EncryptedProtocol objects were not put in force (the previous set stays): {e:#}");
                    }
                }
                Request::ClusterCidrs(cidrs) => self.set_cluster_cidrs(cidrs),
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

    /// Once a second: forget old exits, re-resolve workload cgroups (created later, or
    /// re-created with a new id) and the files binary values name (re-applying the rules when
    /// one changed), report grown losses and stale-process connects.
    /// Every 30th tick also sweeps processes whose exit record was lost, and the kernel's
    /// io_uring opens in flight of exited processes.
    pub fn tick(&mut self, report_losses: bool) {
        let now = BootClock::boot_now_ns();
        self.ticks += 1;
        if self.ticks.is_multiple_of(30) {
            let n = self.pipeline.cache.sweep_dead(&self.cfg.proc_root, now);
            if n > 0 {
                log::info!("{n} processes vanished without an exit record");
            }
            let n = self.kernel.reap_uring_inflight(&self.cfg.proc_root);
            if n > 0 {
                log::info!("{n} io_uring opens of exited processes left FILE_URING_INFLIGHT");
            }
        }
        self.pipeline.cache.gc(now);
        self.re_resolve_workloads();
        match self.refresh_files() {
            Ok(true) => {
                log::info!("a file a binary value or a loader names changed: rules re-applied");
                self.status(State::Reloaded, Vec::new());
            }
            Ok(false) => {}
            Err(e) => {
                let msg = format!("re-applying rules for changed binary files failed: {e:#}");
                eprintln!("bulwark: error: {msg}");
                self.status(
                    State::ReloadFailed,
                    vec![Diagnostic::error(DaemonCode::Apply, None, msg)],
                );
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
        let lost = self.lost_events();
        let stale = self.kernel.stale_processes();
        if report_losses && (lost > self.last_lost || stale > self.last_stale) {
            if lost > self.last_lost {
                eprintln!(
                    "bulwark: warning: {lost} events lost so far (ring buffer full or undecodable)"
                );
            }
            if stale > self.last_stale {
                eprintln!(
                    "bulwark: warning: {stale} connects by processes with stale selector bits \
                     (a policy switch left them behind)"
                );
            }
            self.status(State::Running, Vec::new());
        } else if new_warnings {
            self.status(State::Running, Vec::new());
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
        self.refresh_moved();
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
        self.status(State::Stopping, Vec::new());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fakes::{adopting_daemon, cluster_daemon, daemon, only_status, tmpdir};
    use crate::record::as_bytes;
    use crate::record::tests::exec_record;
    use daemon_common::{EventHeader, MatchEvent, ACTION_SIGKILL, EVENT_MATCH, HOOK_EXEC};

    #[test]
    fn the_observer_sees_every_written_event_and_unknown_hooks_are_lost() {
        use bulwark_events::Event;
        use daemon_common::{ACTION_BLOCK, HOOK_CONNECT};
        use std::sync::{Arc, Mutex};
        let dir = tmpdir("observe");
        std::fs::write(dir.join("policies/p.yaml"), "no-curl").unwrap();
        let (mut d, out) = daemon(&dir, None);
        let seen: Arc<Mutex<Vec<Event>>> = Arc::default();
        let sink = seen.clone();
        d.pipeline
            .observe(Box::new(move |ev| sink.lock().unwrap().push(ev.clone())));
        d.start();
        let curl = exec_record(5_000_001, 1_000, 1, 0, "/usr/bin/curl", &["curl", "x"]);
        let matched = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 5_000_001,
                time_ns: 1_500,
                start_ns: 1_000,
            },
            slot: d.kernel.active,
            selector: 0,
            hook: HOOK_CONNECT,
            actions: ACTION_BLOCK,
            enforced: 1,
            ..Default::default()
        };
        let unknown_hook = MatchEvent {
            hook: 99,
            ..matched
        };
        d.kernel.queue = vec![as_bytes(&curl), as_bytes(&unknown_hook), as_bytes(&matched)];
        d.pump(Duration::ZERO).unwrap();
        let written: Vec<Event> = out
            .take()
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("every line is an event"))
            .collect();
        let types: Vec<&str> = written.iter().map(|e| e.event_type().as_str()).collect();
        assert_eq!(types, ["status", "process_exec", "policy_match"]);
        assert_eq!(
            *seen.lock().unwrap(),
            written,
            "the observer saw exactly what was written"
        );
        assert_eq!(
            d.lost_events(),
            1,
            "the match with an unknown hook is counted as lost"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn matches_recorded_before_a_restart_name_their_policy_when_the_rule_set_is_unchanged() {
        use daemon_common::{ACTION_BLOCK, HOOK_CONNECT};
        let blocked = |slot: u8, tgid: u32| MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid,
                time_ns: 1_500,
                start_ns: 1_000,
            },
            slot,
            selector: 0,
            hook: HOOK_CONNECT,
            actions: ACTION_BLOCK,
            enforced: 1,
            ..Default::default()
        };
        for (before, named) in [("block-x", Some("block-x")), ("other", None)] {
            let dir = tmpdir("adopted");
            std::fs::write(dir.join("policies/p.yaml"), "block-x").unwrap();
            // The previous daemon left `before` enforcing in slot 1.
            let (mut d, out) = adopting_daemon(Some(&dir), &[before], 1);
            d.start();
            assert_eq!(
                d.kernel.active, 0,
                "the set is re-applied into the other slot"
            );
            out.take();
            d.kernel.queue = vec![as_bytes(&blocked(1, 5_000_002))];
            d.pump(Duration::ZERO).unwrap();
            let ev = out.take();
            let m = ev
                .iter()
                .find(|e| e["type"] == "policy_match")
                .unwrap_or_else(|| panic!("{ev:?}"));
            assert_eq!(m["policy_name"].as_str(), named, "{before}: {m}");
            assert_eq!(m["outcome"], "blocked", "{m}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn the_main_loop_serves_requests_until_stopped() {
        let (mut d, out) = cluster_daemon();
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
    }

    #[test]
    fn records_are_pumped_into_events_and_losses_reported() {
        let dir = tmpdir("pump");
        std::fs::write(dir.join("policies/p.yaml"), "no-curl").unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        out.take();
        let sh = exec_record(4_000_001, 1_000, 1, 0, "/bin/sh", &["sh", "-c", "curl x"]);
        d.kernel.queue = vec![
            as_bytes(&sh),
            vec![1, 2, 3], // garbage: counted as lost
        ];
        d.pump(Duration::ZERO).unwrap();
        let ev = out.take();
        assert_eq!(ev.len(), 1, "{ev:#?}");
        assert_eq!(ev[0]["type"], "process_exec");
        assert_eq!(ev[0]["process"]["binary"], "/bin/sh");
        assert_eq!(d.lost_events(), 1);
        // Grown losses are reported in a `running` status; shutdown says `stopping`.
        d.kernel.lost = 4;
        d.tick(true);
        let st = only_status(out.take());
        assert_eq!(st["state"], "running");
        assert_eq!(st["lost_events"], 5);
        d.tick(true);
        assert!(out.take().is_empty(), "no new losses, no report");
        // So is a grown count of stale processes.
        d.kernel.stale = 2;
        d.tick(true);
        let st = only_status(out.take());
        assert_eq!(st["state"], "running");
        assert_eq!(st["stale_processes"], 2);
        d.tick(true);
        assert!(out.take().is_empty());
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
    fn a_process_moved_between_namespaces_gets_its_bits_recomputed_from_proc() {
        use daemon_common::{ProcessMovedEvent, EVENT_PROCESS_MOVED};
        let moved = |tgid: u32| {
            as_bytes(&ProcessMovedEvent {
                header: EventHeader {
                    kind: EVENT_PROCESS_MOVED,
                    tgid,
                    ..Default::default()
                },
                cgroup_id: 77,
                ..Default::default()
            })
        };
        let me = std::process::id();
        let dir = tmpdir("moved");
        // A policy whose name ends the test binary's path: selector 0 holds for this process.
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::write(dir.join("policies/p.yaml"), &name).unwrap();
        let (mut d, out) = daemon(&dir, None);
        // Before any rule set is in force there is nothing to recompute.
        d.kernel.queue = vec![moved(me)];
        d.pump(Duration::ZERO).unwrap();
        assert!(d.kernel.refreshed.is_empty(), "{:?}", d.kernel.refreshed);
        d.start();
        out.take();
        // Twice in one poll (moved back and forth) is recomputed once; a process that is gone
        // cannot be described.
        let gone = u32::MAX - 1;
        d.kernel.queue = vec![moved(me), moved(gone), moved(me)];
        d.pump(Duration::ZERO).unwrap();
        assert!(out.take().is_empty(), "a move is not an event of its own");
        assert_eq!(
            d.kernel.refreshed,
            vec![(me, Some((1, 0))), (gone, None)],
            "described from /proc with the rules in force, in no workload's namespace"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_exec_match_whose_exec_never_comes_is_written_at_shutdown() {
        let dir = tmpdir("orphan");
        std::fs::write(dir.join("policies/p.yaml"), "kill-x").unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        out.take();
        let orphan = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_100_002,
                time_ns: 300,
                start_ns: 300,
            },
            slot: d.kernel.active,
            selector: 0,
            hook: HOOK_EXEC,
            actions: ACTION_SIGKILL,
            enforced: 1,
            ..Default::default()
        };
        d.kernel.queue = vec![as_bytes(&orphan)];
        d.pump(Duration::ZERO).unwrap();
        assert!(out.take().is_empty(), "the match waits for its exec");
        // Written once it has waited long enough (here: at shutdown).
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
        assert_eq!(orphan_ev["policy_name"], "kill-x");
        assert_eq!(lines.last().unwrap()["state"], "stopping");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
