//! The daemon under test, driven only through its command line and its JSON-lines events:
//! `bulwark run --policy-dir DIR --events FILE --workloads FILE --node-name e2e` (or, with
//! [`DaemonConfig::kubernetes`], `--kubernetes` instead of `--policy-dir`). [`Daemon`]
//! starts it with a temp policy dir, waits for the `ready` status event, waits for events
//! matching predicates, replaces policy files and waits for the reload status, and stops it with
//! SIGTERM (also on drop). Every timeout panics with what was awaited, the last events and the
//! daemon's stderr, so a failing test says why. Every line is read as a typed
//! [`bulwark_events::Event`]; a line that is not one is kept aside ([`Daemon::bad_lines`]).
//!
//! The daemon pins its programs so they outlive it; every daemon here pins under a [`PinDir`]
//! of its own test (`--pin-dir /sys/fs/bpf/bulwark-e2e-...`), which `bulwark unload` empties
//! when it is dropped, so no test adopts or inherits another test's programs. A test can crash
//! and restart the daemon on the same pins ([`Daemon::kill9`], [`Daemon::terminate_async`],
//! [`Daemon::respawn`]).

use crate::world::World;
use crate::TempDir;
use bulwark_events::State;
use serde_json::Value;
use std::cell::RefCell;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One event the daemon wrote: typed ([`Event::typed`], what the [`ev`] accessors read), and
/// as its JSON (`e["process"]["pod"]`, through `Deref`) for the checks of the wire format.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    typed: bulwark_events::Event,
    json: Value,
}

impl Event {
    /// Reads one line of the event stream; an error says why it is not an event.
    pub fn parse(line: &str) -> Result<Event, String> {
        let json: Value =
            serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        let typed = serde_json::from_value(json.clone())
            .map_err(|e| format!("not an event of the schema ({e}): {line}"))?;
        Ok(Event { typed, json })
    }

    /// The event as the schema types it.
    pub fn typed(&self) -> &bulwark_events::Event {
        &self.typed
    }
}

impl std::ops::Deref for Event {
    type Target = Value;
    fn deref(&self) -> &Value {
        &self.json
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.json.fmt(f)
    }
}

/// The node name the harness passes (`--node-name`); every event must carry it.
pub const NODE_NAME: &str = "e2e";

/// How to start the daemon.
#[derive(Clone, Debug, Default)]
pub struct DaemonConfig {
    /// Policy files: (file name in the policy dir, content).
    pub policies: Vec<(String, String)>,
    /// Content of the `--workloads` file.
    pub workloads: String,
    /// Extra command-line arguments after the standard ones.
    pub extra_args: Vec<String>,
    /// `--kubernetes` instead of `--policy-dir` (policies come from the API server; pass
    /// `--kubeconfig` in `extra_args`); `policies` must then be empty. `ready` is written once
    /// the first policy set from the server is applied.
    pub kubernetes: bool,
    /// Event lines containing this text are counted ([`Daemon::skipped_lines`]) but neither
    /// parsed nor kept: for a flood of events a test does not look at (a million kept events
    /// would exhaust the test's memory).
    pub skip_lines_containing: Option<String>,
}

/// The current `CLOCK_MONOTONIC` time in ns (the clock of Python's `time.monotonic_ns()`, so a
/// test can compare its own moments with a probe's timestamps).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A pin directory of one test under /sys/fs/bpf (`bulwark run --pin-dir`). Dropping it runs
/// `bulwark unload --force` on it, so whatever a daemon pinned there (and left enforcing after
/// it stopped) is detached and removed, also when the test fails.
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// A fresh, not yet existing directory (a leftover of the same name is unloaded first).
    pub fn new(tag: &str) -> PinDir {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/bulwark-e2e-{}-{}-{tag}",
            std::process::id(),
            crate::next_id()
        ));
        let pins = PinDir { path };
        if pins.path.exists() {
            pins.unload(true);
        }
        pins
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `bulwark unload --pin-dir <this>` (with `--force` when asked); its output.
    pub fn unload(&self, force: bool) -> std::process::Output {
        let mut cmd = Command::new(bulwark_bin());
        cmd.arg("unload").arg("--pin-dir").arg(&self.path);
        if force {
            cmd.arg("--force");
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run bulwark unload: {e}"))
    }

    /// Names of the entries in the directory (the daemon's `build-<id>` directories), sorted.
    pub fn entries(&self) -> Vec<String> {
        bulwark::engine::pins::entry_names(&self.path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if !self.path.exists() {
            return;
        }
        let out = self.unload(true);
        if !out.status.success() || self.path.exists() {
            eprintln!(
                "warning: bulwark unload {} failed: {}{}",
                self.path.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// A running `bulwark run`.
pub struct Daemon {
    child: Option<Child>,
    /// [`monotonic_ns`] just before `child` was spawned.
    spawned_ns: u64,
    /// A daemon told to stop ([`Daemon::terminate_async`]) that may still be running.
    stopping: Option<Child>,
    /// The command line (without the program), to start it again.
    argv: Vec<OsString>,
    /// The daemon's own pin directory (dropped, so unloaded, after the daemon is stopped);
    /// `None` when the test passed one ([`Daemon::start_pinned`]).
    _own_pins: Option<PinDir>,
    dir: TempDir,
    policy_dir: PathBuf,
    workloads_path: PathBuf,
    events_path: PathBuf,
    stderr_path: PathBuf,
    skip_lines_containing: Option<String>,
    state: RefCell<EventState>,
}

#[derive(Default)]
struct EventState {
    offset: u64,
    partial: String,
    skipped: u64,
    events: Vec<Event>,
    /// Lines that were not events of the schema (a contract violation, reported by tests).
    bad_lines: Vec<String>,
}

/// The `bulwark` binary: `$BULWARK_BIN`, else `<target>/debug/bulwark`, built with
/// `cargo build -p bulwark` when missing.
pub fn bulwark_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("BULWARK_BIN") {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "BULWARK_BIN={} is not a file: build it or unset BULWARK_BIN",
                p.display()
            );
            return p;
        }
        let root = crate::workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let bin = target.join("debug/bulwark");
        if !bin.is_file() {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = Command::new(cargo)
                .args(["build", "-p", "bulwark"])
                .current_dir(&root)
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build bulwark: {e}"));
            assert!(
                status.success() && bin.is_file(),
                "`cargo build -p bulwark` failed ({status}); fix the build or set BULWARK_BIN"
            );
        }
        bin
    })
}

impl Daemon {
    /// Starts the daemon for `world` with `policies` as (file name, YAML) and waits until ready.
    pub fn start(world: &World, policies: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(DaemonConfig {
            policies: policies
                .iter()
                .map(|(n, c)| (n.to_string(), c.to_string()))
                .collect(),
            workloads: world.workloads_yaml(),
            extra_args: Vec::new(),
            kubernetes: false,
            skip_lines_containing: None,
        })
    }

    /// Starts the daemon as configured, pinning under a pin directory of its own, and waits for
    /// its `ready` status event.
    pub fn start_with(cfg: DaemonConfig) -> Daemon {
        let pins = PinDir::new("daemon");
        let pin_dir = pins.path().to_path_buf();
        Daemon::spawn(cfg, &pin_dir, Some(pins))
    }

    /// [`Daemon::start_with`] on the test's pin directory, which outlives this daemon (to look
    /// at what stays after it stops, or to start another daemon on the same pins).
    pub fn start_pinned(cfg: DaemonConfig, pins: &PinDir) -> Daemon {
        Daemon::spawn(cfg, pins.path(), None)
    }

    fn spawn(cfg: DaemonConfig, pin_dir: &Path, own_pins: Option<PinDir>) -> Daemon {
        crate::preflight();
        let bin = bulwark_bin();
        let dir = TempDir::new("daemon");
        let policy_dir = dir.join("policies");
        std::fs::create_dir_all(&policy_dir).expect("create policy dir");
        for (name, content) in &cfg.policies {
            std::fs::write(policy_dir.join(name), content).expect("write policy");
        }
        let workloads = dir.join("workloads.yaml");
        std::fs::write(&workloads, &cfg.workloads).expect("write workloads");
        let events_path = dir.join("events.jsonl");
        let stderr_path = dir.join("daemon.stderr");
        assert!(
            !cfg.kubernetes || cfg.policies.is_empty(),
            "DaemonConfig: policy files and kubernetes mode exclude each other"
        );
        let mut argv: Vec<OsString> = vec!["run".into()];
        if cfg.kubernetes {
            argv.push("--kubernetes".into());
        } else {
            argv.extend(["--policy-dir".into(), policy_dir.clone().into()]);
        }
        argv.extend([
            "--events".into(),
            events_path.clone().into(),
            "--workloads".into(),
            workloads.clone().into(),
            "--node-name".into(),
            NODE_NAME.into(),
            "--pin-dir".into(),
            pin_dir.into(),
        ]);
        argv.extend(cfg.extra_args.iter().map(OsString::from));
        let spawned_ns = monotonic_ns();
        let child = spawn_daemon(bin, &argv, &dir);
        let daemon = Daemon {
            child: Some(child),
            spawned_ns,
            stopping: None,
            argv,
            _own_pins: own_pins,
            dir,
            policy_dir,
            workloads_path: workloads,
            events_path,
            stderr_path,
            skip_lines_containing: cfg.skip_lines_containing.clone(),
            state: RefCell::new(EventState::default()),
        };
        daemon.wait_event("the daemon's ready status event", |e| {
            e["type"] == "status" && e["state"] == "ready"
        });
        daemon
    }

    /// SIGKILLs the daemon (a crash: it cleans up nothing) and reaps it; returns
    /// [`monotonic_ns`] at the signal. Start the next one with [`Daemon::respawn`].
    pub fn kill9(&mut self) -> u64 {
        let mut child = self.child.take().expect("a running daemon to kill");
        let at = monotonic_ns();
        child.kill().expect("SIGKILL the daemon");
        child.wait().expect("reap the killed daemon");
        at
    }

    /// Sends SIGTERM (as a rolling update does) without waiting for the exit; returns
    /// [`monotonic_ns`] at the signal. [`Daemon::respawn`] starts the next daemon while this one
    /// may still be stopping, then waits for it to exit.
    pub fn terminate_async(&mut self) -> u64 {
        let child = self.child.take().expect("a running daemon to stop");
        let at = monotonic_ns();
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        self.stopping = Some(child);
        at
    }

    /// Starts a new daemon with the same command line plus `extra` (same policy dir,
    /// workloads, events file and pin dir), after [`Daemon::kill9`] or
    /// [`Daemon::terminate_async`]; waits for the stopping one to exit (it must exit 0) and for
    /// the new one's `ready`. Returns that event and [`monotonic_ns`] when it was seen.
    pub fn respawn(&mut self, extra: &[&str]) -> (Event, u64) {
        assert!(self.child.is_none(), "respawn: the daemon is still running");
        let mark = self.mark();
        let mut argv = self.argv.clone();
        argv.extend(extra.iter().map(OsString::from));
        self.spawned_ns = monotonic_ns();
        self.child = Some(spawn_daemon(bulwark_bin(), &argv, &self.dir));
        if let Some(mut old) = self.stopping.take() {
            let exited = crate::poll_until(crate::timeout(), || old.try_wait().ok().flatten());
            let Some(status) = exited else {
                let _ = old.kill();
                let _ = old.wait();
                panic!(
                    "the old daemon did not exit after SIGTERM\n{}",
                    self.diagnostics()
                );
            };
            assert!(
                status.success(),
                "the old daemon exited with {status}\n{}",
                self.diagnostics()
            );
        }
        let ready = self.wait_event_after(mark, "the restarted daemon's ready status", |e| {
            e["type"] == "status" && e["state"] == "ready"
        });
        (ready, monotonic_ns())
    }

    /// [`monotonic_ns`] just before the current daemon process was spawned (by the start or the
    /// last [`Daemon::respawn`]): no moment before it belongs to that process's life.
    pub fn spawned_ns(&self) -> u64 {
        self.spawned_ns
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The policy directory the daemon watches.
    pub fn policy_dir(&self) -> &Path {
        &self.policy_dir
    }

    /// The events file the daemon writes (`--events`).
    pub fn events_path(&self) -> &Path {
        &self.events_path
    }

    /// Ids of the BPF maps the daemon holds open, from `/proc/PID/fdinfo` (`map_id:` lines).
    pub fn map_ids(&self) -> Vec<u32> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let info = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in info.lines() {
                if let Some(id) = line.strip_prefix("map_id:") {
                    if let Ok(id) = id.trim().parse() {
                        ids.push(id);
                    }
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The daemon's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Reads newly written events. Lines that are not events of the schema are kept in
    /// [`Daemon::bad_lines`] (with why) for the contract test, so one bad line does not hide
    /// the behaviour every other test checks.
    fn refresh(&self) {
        let mut st = self.state.borrow_mut();
        let Ok(mut f) = std::fs::File::open(&self.events_path) else {
            return;
        };
        if f.seek(SeekFrom::Start(st.offset)).is_err() {
            return;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            return;
        }
        st.offset += buf.len() as u64;
        let text = String::from_utf8_lossy(&buf);
        let mut pending = std::mem::take(&mut st.partial);
        pending.push_str(&text);
        let mut lines: Vec<&str> = pending.split('\n').collect();
        let tail = lines.pop().unwrap_or("").to_string();
        for line in lines {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(skip) = &self.skip_lines_containing {
                if line.contains(skip.as_str()) {
                    st.skipped += 1;
                    continue;
                }
            }
            match Event::parse(line) {
                Ok(e) => st.events.push(e),
                Err(why) => st.bad_lines.push(why),
            }
        }
        st.partial = tail;
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.refresh();
        self.state.borrow().events.clone()
    }

    /// Event lines left out by [`DaemonConfig::skip_lines_containing`] so far.
    pub fn skipped_lines(&self) -> u64 {
        self.refresh();
        self.state.borrow().skipped
    }

    /// Lines of the events file that were not events of the schema, each with why.
    pub fn bad_lines(&self) -> Vec<String> {
        self.refresh();
        self.state.borrow().bad_lines.clone()
    }

    /// Events for which `pred` holds.
    pub fn find(&self, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events().into_iter().filter(|e| pred(e)).collect()
    }

    /// Waits up to `limit` for an event matching `pred` (searching all events so far); `None`
    /// on timeout. Panics, naming `what`, when the daemon exits first.
    pub fn try_wait_event(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        self.wait_from(0, what, limit, pred)
    }

    fn wait_from(
        &self,
        mark: usize,
        what: &str,
        limit: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + limit;
        let find = || {
            self.refresh();
            self.state
                .borrow()
                .events
                .iter()
                .skip(mark)
                .find(|e| pred(e))
                .cloned()
        };
        loop {
            if let Some(e) = find() {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            if let Some(status) = self.exited() {
                // One last read: the daemon may have written the event as it exited.
                if let Some(e) = find() {
                    return Some(e);
                }
                panic!(
                    "the daemon exited ({status}) while the test waited for {what}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits up to [`crate::timeout()`] for an event matching `pred`; panics naming `what`,
    /// with the recent events and the daemon's stderr, when none comes.
    pub fn wait_event(&self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
        match self.try_wait_event(what, crate::timeout(), pred) {
            Some(e) => e,
            None => panic!(
                "timed out after {:?} waiting for {what}\n{}",
                crate::timeout(),
                self.diagnostics()
            ),
        }
    }

    /// Waits until the daemon has written every event of what happened before this call: it
    /// execs a sentinel (`/bin/true` with a unique argument) and waits for its `process_exec`.
    /// The kernel's ring buffer is one queue in reservation order and the daemon writes records
    /// in that order, so once the sentinel is out, every earlier record is out too.
    pub fn sync(&self) {
        let token = format!(
            "bulwark-e2e-sync-{}-{}",
            std::process::id(),
            crate::next_id()
        );
        let status = Command::new("/bin/true")
            .arg(&token)
            .status()
            .expect("run /bin/true as the sync sentinel");
        assert!(status.success(), "the sync sentinel failed: {status}");
        self.wait_event(
            &format!("the sync sentinel's process_exec ({token})"),
            |e| ev::is(e, "process_exec") && ev::arguments(e).contains(&token),
        );
    }

    /// Asserts that no event matches `pred` among everything written up to now (after
    /// [`Daemon::sync`], so a late event cannot slip past the check).
    pub fn assert_no_event(&self, what: &str, pred: impl Fn(&Event) -> bool) {
        self.sync();
        let found = self.find(pred);
        assert!(
            found.is_empty(),
            "expected no {what}, got: {}\n{}",
            serde_json::to_string_pretty(&found.iter().map(|e| &**e).collect::<Vec<_>>())
                .unwrap_or_default(),
            self.diagnostics()
        );
    }

    /// The largest `generation` of any status event so far (0 when none).
    pub fn generation(&self) -> u64 {
        self.events()
            .iter()
            .filter_map(|e| e.typed().status().map(|s| s.generation))
            .max()
            .unwrap_or(0)
    }

    /// Policy names of the most recent status event that lists them (`ready` or `reloaded`),
    /// waiting for one if none was written yet.
    pub fn loaded_policies(&self) -> Vec<String> {
        self.wait_event("a status event listing the loaded policies", |e| {
            ev::is(e, "status")
        });
        self.events()
            .iter()
            .rev()
            .filter_map(|e| e.typed().status())
            .find(|s| matches!(s.state, State::Ready | State::Reloaded))
            .map(|s| s.policies.clone())
            .unwrap_or_default()
    }

    /// Writes a policy file atomically (a temp file outside the policy dir, then rename) without
    /// waiting for the daemon.
    pub fn write_policy(&self, name: &str, content: &str) {
        let tmp = self.dir.join(format!(".{name}.tmp-{}", crate::next_id()));
        std::fs::write(&tmp, content).expect("write temp policy");
        std::fs::rename(&tmp, self.policy_dir.join(name)).expect("rename policy into place");
    }

    /// Replaces (or adds) a policy file and waits for the daemon's next `reloaded` or
    /// `reload_failed` status event (the first one written after the file), which it returns.
    pub fn replace_policy(&self, name: &str, content: &str) -> Event {
        let mark = self.mark();
        self.write_policy(name, content);
        self.wait_reload(mark)
    }

    /// Replaces the `--workloads` file (atomically) and waits for the status event the daemon
    /// writes after applying it, which it returns.
    pub fn replace_workloads(&self, content: &str) -> Event {
        let mark = self.mark();
        let tmp = self
            .dir
            .join(format!(".workloads.tmp-{}", crate::next_id()));
        std::fs::write(&tmp, content).expect("write temp workloads");
        std::fs::rename(&tmp, &self.workloads_path).expect("rename workloads into place");
        self.wait_reload(mark)
    }

    /// Removes a policy file and waits for the reload status.
    pub fn remove_policy(&self, name: &str) -> Event {
        let mark = self.mark();
        std::fs::remove_file(self.policy_dir.join(name)).expect("remove policy file");
        self.wait_reload(mark)
    }

    /// The number of events read so far: pass it to [`Daemon::wait_event_after`] to wait only
    /// for events written after this point.
    pub fn mark(&self) -> usize {
        self.refresh();
        self.state.borrow().events.len()
    }

    /// [`Daemon::wait_event`] over the events after `mark` only.
    pub fn wait_event_after(
        &self,
        mark: usize,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Event {
        self.wait_from(mark, what, crate::timeout(), pred)
            .unwrap_or_else(|| {
                panic!(
                    "timed out after {:?} waiting for {what}\n{}",
                    crate::timeout(),
                    self.diagnostics()
                )
            })
    }

    fn wait_reload(&self, mark: usize) -> Event {
        self.wait_event_after(
            mark,
            "a reloaded/reload_failed status event after the policy change",
            |e| {
                e.typed()
                    .status()
                    .is_some_and(|s| matches!(s.state, State::Reloaded | State::ReloadFailed))
            },
        )
    }

    fn exited(&self) -> Option<ExitStatus> {
        // try_wait needs &mut; the pid check through waitid(WNOWAIT) keeps the child reapable.
        let pid = self.pid() as libc::id_t;
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc == 0 && unsafe { info.si_pid() } != 0 {
            let code = unsafe { info.si_status() };
            use std::os::unix::process::ExitStatusExt;
            let raw = if info.si_code == libc::CLD_EXITED {
                (code & 0xff) << 8
            } else {
                code & 0x7f
            };
            Some(ExitStatus::from_raw(raw))
        } else {
            None
        }
    }

    /// Text for failure messages: the last events and the daemon's stderr.
    pub fn diagnostics(&self) -> String {
        self.refresh();
        let st = self.state.borrow();
        let start = st.events.len().saturating_sub(25);
        let recent: Vec<String> = st.events[start..].iter().map(|e| e.to_string()).collect();
        let stderr = self.stderr();
        let stderr_tail: String = {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- last {} of {} daemon events ---\n{}\n--- daemon stderr (tail) ---\n{}\n---",
            recent.len(),
            st.events.len(),
            recent.join("\n"),
            stderr_tail
        )
    }

    /// Sends SIGTERM and waits for the exit; panics when it does not exit within the timeout.
    pub fn stop(mut self) -> ExitStatus {
        self.terminate().unwrap_or_else(|| {
            panic!(
                "the daemon did not exit after SIGTERM\n{}",
                self.diagnostics()
            )
        })
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + crate::timeout();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Starts `bulwark ARGV` with stdout/stderr appended to `dir`'s `daemon.stdout` and
/// `daemon.stderr` (a restarted daemon continues them).
fn spawn_daemon(bin: &Path, argv: &[OsString], dir: &TempDir) -> Child {
    let append = |name: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(name))
            .unwrap_or_else(|e| panic!("create {name}: {e}"))
    };
    let mut cmd = Command::new(bin);
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(append("daemon.stdout"))
        .stderr(append("daemon.stderr"));
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut old) = self.stopping.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        if std::thread::panicking() && self.child.is_some() {
            // The assertion that failed may not show what the daemon said: print it here.
            eprintln!("the test failed; daemon state:\n{}", self.diagnostics());
        }
        if self.terminate().is_none() && self.child.is_some() {
            eprintln!("warning: the daemon had to be SIGKILLed");
        }
    }
}

/// Helpers to read fields of events (through the typed event).
pub mod ev {
    use super::Event;

    /// `e.type == t`
    pub fn is(e: &Event, t: &str) -> bool {
        e.typed().event_type().as_str() == t
    }

    /// `process.pid` of an event.
    pub fn pid(e: &Event) -> Option<u64> {
        e.typed().process().map(|p| u64::from(p.pid))
    }

    /// `process.binary`
    pub fn binary(e: &Event) -> &str {
        e.typed().process().map_or("", |p| p.binary.as_str())
    }

    /// `process.exec_id`; `None` when empty.
    pub fn exec_id(e: &Event) -> Option<String> {
        e.typed()
            .process()
            .map(|p| p.exec_id.clone())
            .filter(|id| !id.is_empty())
    }

    /// `process.parent_exec_id`; `None` when null or empty.
    pub fn parent_exec_id(e: &Event) -> Option<String> {
        e.typed()
            .process()
            .and_then(|p| p.parent_exec_id.clone())
            .filter(|id| !id.is_empty())
    }

    /// `process.arguments` (argv[1..] as one string).
    pub fn arguments(e: &Event) -> String {
        e.typed()
            .process()
            .map(|p| p.arguments.clone())
            .unwrap_or_default()
    }

    /// A `policy_match` event of `policy` on `hook`.
    pub fn is_match(e: &Event, policy: &str, hook: &str) -> bool {
        e.typed()
            .policy_match()
            .is_some_and(|m| m.policy_name.as_deref() == Some(policy) && m.hook.as_str() == hook)
    }

    /// `destination.ip` / `destination.port` (empty and 0 when there is none).
    pub fn dest(e: &Event) -> (String, u64) {
        e.typed()
            .destination()
            .map(|d| (d.ip.clone(), u64::from(d.port)))
            .unwrap_or_default()
    }
}
