//! Daemon lifecycle: a broken policy file at start-up is reported while the good ones load;
//! processes that were already running when the daemon started are known (seeded from /proc)
//! and policies apply to them; the workloads file is watched, so a pod registered after start
//! gets its namespace's policies without a restart.
//!
//! Enforcement outlives the daemon (pinned programs): a workload attempting a blocked connect
//! every millisecond gets through neither a `kill -9` + restart, nor a SIGTERM + new daemon
//! (rolling update), nor an upgrade to another build; a policy changed while the daemon was
//! dead takes effect at restart, and what the kernel recorded meanwhile is reported then;
//! `bulwark unload` removes every pin and program and is refused while a daemon runs.
//!
//! The syscall programs (`hook: syscall`) obey the same contract: a Sigkill rule keeps killing
//! while the daemon is dead, the restarted daemon adopts them, attaches them when its policies
//! need them and finds them detached, detaches them when they no longer do, and `bulwark
//! unload` removes them.

use crate::{assert_connected, assert_eperm, assert_killed_at_exec, assert_ran};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::{preflight, serial, Daemon, DaemonConfig, PolicyBuilder, RuleBuilder};
use bulwark_e2e::{PinDir, Running, TestServer, World, WorldConfig};
use serde_json::Value;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn block_8080(name: &str, ns: &str) -> String {
    PolicyBuilder::new(name)
        .rule(
            RuleBuilder::connect("block-8080")
                .namespaces("In", &[ns])
                .destinations("In", &["10.199.0.0/16", "fd99::/16"], &["8080"], None)
                .action("Block"),
        )
        .yaml()
}

#[test]
fn broken_policy_at_startup_is_reported_and_the_good_ones_load() {
    let _g = serial();
    let w = World::single("start-broken", "e2e-start");
    let _srv = TestServer::start(&w.net, &[8080]);
    let good = block_8080("e2e-good", "e2e-start");
    let d = Daemon::start(
        &w,
        &[
            ("good.yaml", &good),
            (
                "broken.yaml",
                "apiVersion: bulwark.dev/v1alpha1\nkind: [oops\n",
            ),
        ],
    );
    let ready = d.wait_event("ready", |e| ev::is(e, "status") && e["state"] == "ready");
    assert_eq!(
        ready["policies"],
        serde_json::json!(["e2e-good"]),
        "{ready}"
    );
    let diags = ready["diagnostics"].to_string();
    assert!(
        diags.contains("broken.yaml"),
        "the ready event's diagnostics must name the broken file: {ready}"
    );
    assert_eperm(&w.pod().probe(w.net.server_ip(false), 8080, &[]));
}

#[test]
fn processes_running_before_the_daemon_are_known_and_policed() {
    let _g = serial();
    let w = World::single("seeded", "e2e-seeded");
    let srv = TestServer::start(&w.net, &[8080]);
    let trigger = w.dir().join("go");
    let trig = trigger.to_str().unwrap();
    let ip = w.net.server_ip(false);
    // Started before the daemon: a python probe waiting for the trigger, and a shell that will
    // then fork a curl.
    let probe = w.pod().probe_argv(ip, 8080, &["--wait-for", trig]);
    let probe_refs: Vec<&str> = probe.iter().map(String::as_str).collect();
    let early_probe = w.pod().spawn(&probe_refs);
    let curl = preflight().curl.display().to_string();
    let script = format!(
        "while [ ! -e {trig} ]; do sleep 0.05; done; {curl} -sS --noproxy '*' http://{ip}:8080/seeded; echo done"
    );
    let early_shell = w.pod().spawn(&["sh", "-c", &script]);
    let python = preflight().python3.display().to_string();
    // Both have exec'd their final image before the daemon starts.
    let execd = |pid: u32, bin: &str| {
        std::fs::canonicalize(format!("/proc/{pid}/exe"))
            .map(|p| crate::same_file(p.to_str().unwrap_or(""), bin))
            .unwrap_or(false)
    };
    let ready = bulwark_e2e::poll_until(Duration::from_secs(10), || {
        (execd(early_probe.pid(), &python) && execd(early_shell.pid(), "/bin/sh")).then_some(())
    });
    assert!(ready.is_some(), "the early processes did not start");
    let policy = PolicyBuilder::new("e2e-seeded")
        .rule(
            RuleBuilder::connect("python-may-not-connect")
                .namespaces("In", &["e2e-seeded"])
                .binaries("In", &[&python])
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("seeded.yaml", &policy)]);
    std::fs::write(&trigger, "").unwrap();

    // The python that exec'd before the daemon started is matched by binary and namespace.
    let pid = early_probe.pid();
    let out = early_probe.wait(bulwark_e2e::timeout());
    assert_eperm(&out);
    let m = crate::wait_match(&d, "e2e-seeded", "connect", pid, 8080);
    assert!(crate::same_file(ev::binary(&m), &python), "{m}");
    assert_eq!(m["process"]["pod"]["namespace"], "e2e-seeded", "{m}");

    // The shell's child curl is new, its parent (seeded from /proc) is known.
    let shell_pid = early_shell.pid();
    let out = early_shell.wait(bulwark_e2e::timeout());
    assert!(out.success() && out.stdout.ends_with("done\n"), "{out}");
    assert_eq!(srv.log().requests_for("/seeded").len(), 1);
    let exec = d.wait_event("process_exec of the seeded shell's curl", |e| {
        ev::is(e, "process_exec") && ev::arguments(e).contains("/seeded") && ev::binary(e) == curl
    });
    assert!(
        ev::parent_exec_id(&exec).is_some(),
        "the parent was running before the daemon and must be known: {exec}"
    );
    assert_eq!(exec["parent"]["pid"], shell_pid, "{exec}");
}

#[test]
fn workloads_registered_after_start_get_their_policies() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "late-pod".into(),
        pods: vec![
            ("e2e-early".into(), "early".into()),
            ("e2e-late".into(), "late".into()),
        ],
    });
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let policy = PolicyBuilder::new("e2e-late-pods")
        .rule(
            RuleBuilder::exec("kill-touch")
                .namespaces("In", &["e2e-late"])
                .binaries("In", &[touch.to_str().unwrap()])
                .action("Sigkill"),
        )
        .yaml();
    let only_early = format!("workloads:\n{}", w.pods[0].workload_yaml());
    let d = Daemon::start_with(DaemonConfig {
        policies: vec![("late.yaml".into(), policy)],
        workloads: only_early,
        ..DaemonConfig::default()
    });
    let late = &w.pods[1];
    // Not registered yet: the late pod's cgroup is just a host cgroup, nothing matches.
    let marker = w.dir().join("before");
    let out = late.run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &touch, &marker);

    let st = d.replace_workloads(&w.workloads_yaml());
    assert_eq!(st["state"], "reloaded", "{st}");
    let marker = w.dir().join("after");
    let out = late.run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    let m = assert_killed_at_exec(&d, &out, &touch, "e2e-late-pods", &marker);
    assert_eq!(m["process"]["pod"]["name"], "late", "{m}");
}

/// A workload process in the pod attempting a connect every millisecond (client.py
/// `--attempt-until`), from before a daemon change until after it. It reports each attempt as
/// it makes it, and the test waits for those reports rather than counting on the loop to keep
/// pace: on a loaded machine the loop can stall for milliseconds anywhere, also between an
/// attempt and its check of the stop file.
struct Attempts {
    running: Running,
    stop_file: PathBuf,
}

/// What the attempts saw: every attempt's time and each one that connected.
struct AttemptLog {
    pid: u32,
    attempts: usize,
    outcomes: Value,
    times_us: Vec<u64>,
    ok_us: Vec<u64>,
    max_interval_us: u64,
}

impl Attempts {
    /// Starts the loop and waits for its first attempt.
    fn start(w: &World, ip: IpAddr, port: u16) -> Attempts {
        let stop_file = w
            .dir()
            .join(format!("stop-attempts-{}", bulwark_e2e::next_id()));
        let argv = w
            .pod()
            .probe_argv(ip, port, &["--attempt-until", stop_file.to_str().unwrap()]);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let attempts = Attempts {
            running: w.pod().spawn(&refs),
            stop_file,
        };
        attempts.wait_for_one_after(0, "its start");
        attempts
    }

    /// Waits until the loop has made an attempt that began after `after_ns` (a
    /// [`bulwark_e2e::monotonic_ns`] moment, which `what` names).
    fn wait_for_one_after(&self, after_ns: u64, what: &str) {
        let last_begun_us = || {
            // The last complete line (the file may end in half a line).
            let out = self.running.stdout_so_far();
            out.lines().rev().find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()
                    .and_then(|v| v["attempt_us"].as_u64())
            })
        };
        let seen = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
            last_begun_us().filter(|t| *t > after_ns / 1000)
        });
        assert!(
            seen.is_some(),
            "the connect loop made no attempt after {what} ({} µs) within {:?}; its last began \
             at {:?} µs",
            after_ns / 1000,
            bulwark_e2e::timeout(),
            last_begun_us()
        );
    }

    /// Stops the loop after one more attempt, one that begins after this call (so the attempts
    /// outlast whatever the test measured before), and reads what it saw.
    fn finish(self) -> AttemptLog {
        self.wait_for_one_after(bulwark_e2e::monotonic_ns(), "the stop request");
        std::fs::write(&self.stop_file, "").unwrap();
        let pid = self.running.pid();
        let out = self.running.wait(bulwark_e2e::timeout());
        assert!(out.success(), "the connect loop failed: {out}");
        let last = out.stdout.lines().last().unwrap_or_default();
        let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {out}"));
        let us = |k: &str| -> Vec<u64> {
            v[k].as_array()
                .unwrap_or_else(|| panic!("no {k}: {last}"))
                .iter()
                .filter_map(Value::as_u64)
                .collect()
        };
        AttemptLog {
            pid,
            attempts: v["attempts"].as_u64().unwrap() as usize,
            outcomes: v["outcomes"].clone(),
            times_us: us("times_us"),
            ok_us: us("ok_us"),
            max_interval_us: v["max_interval_us"].as_u64().unwrap(),
        }
    }
}

impl AttemptLog {
    /// Attempts made between two [`bulwark_e2e::monotonic_ns`] moments.
    fn between(&self, from_ns: u64, to_ns: u64) -> usize {
        self.times_us
            .iter()
            .filter(|t| (from_ns / 1000..=to_ns / 1000).contains(*t))
            .count()
    }

    /// Every attempt failed with EPERM, the attempts covered the window — one or more began
    /// before its first phase, within each phase and after its last — and the server accepted
    /// nothing. A phase is (what happened, from, to) in [`bulwark_e2e::monotonic_ns`] moments,
    /// the phases in order. Prints the measurement.
    fn assert_no_escape(&self, what: &str, srv: &TestServer, phases: &[(&str, u64, u64)]) {
        let (from_ns, to_ns) = (phases[0].1, phases[phases.len() - 1].2);
        let within: Vec<usize> = phases
            .iter()
            .map(|&(_, from, to)| self.between(from, to))
            .collect();
        let each: Vec<String> = phases
            .iter()
            .zip(&within)
            .map(|(&(phase, from, to), n)| {
                format!("{n} {phase} ({:.1} ms)", (to - from) as f64 / 1e6)
            })
            .collect();
        eprintln!(
            "{what}: {} attempts in all; in the window {}; {} connected \
             (outcomes {}, longest interval between attempts {:.1} ms)",
            self.attempts,
            each.join(", "),
            self.ok_us.len(),
            self.outcomes,
            self.max_interval_us as f64 / 1e3
        );
        assert!(
            self.ok_us.is_empty(),
            "{what}: {} of {} attempts connected, at µs {:?} (window {}..{} µs)",
            self.ok_us.len(),
            self.attempts,
            self.ok_us,
            from_ns / 1000,
            to_ns / 1000
        );
        assert_eq!(
            self.outcomes,
            serde_json::json!({ "EPERM": self.attempts }),
            "{what}: every attempt is refused by the policy"
        );
        let (first, last) = (self.times_us[0], *self.times_us.last().unwrap());
        assert!(
            first < from_ns / 1000 && last > to_ns / 1000 && within.iter().all(|n| *n > 0),
            "{what}: the attempts must cover the window (first {first}, last {last}, window \
             {}..{} µs: {})",
            from_ns / 1000,
            to_ns / 1000,
            each.join(", ")
        );
        assert!(
            srv.log().accepts().is_empty(),
            "{what}: the server accepted {:?}",
            srv.log().accepts()
        );
    }
}

/// `bpftool -j ARGS` as JSON; `None` when bpftool fails (e.g. no such id).
fn bpftool(args: &[&str]) -> Option<Value> {
    let out = Command::new(&preflight().bpftool)
        .arg("-j")
        .args(args)
        .output()
        .expect("run bpftool");
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Field `field` of what `bpftool KIND show pinned PATH` says about a pinned object.
fn pinned_id(kind: &str, field: &str, p: &std::path::Path) -> u64 {
    let v = bpftool(&[kind, "show", "pinned", p.to_str().unwrap()])
        .unwrap_or_else(|| panic!("bpftool {kind} show pinned {}", p.display()));
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} of {v}"))
}

/// Ids of the programs and maps pinned in a build directory (through its pinned links, the
/// pinned syscall programs and its maps), as the kernel numbers them.
fn pinned_ids(build: &std::path::Path) -> (Vec<u64>, Vec<u64>) {
    let entries = |d: &str| -> Vec<PathBuf> {
        std::fs::read_dir(build.join(d))
            .unwrap_or_else(|e| panic!("{}/{d}: {e}", build.display()))
            .flatten()
            .map(|e| e.path())
            .collect()
    };
    let mut progs: Vec<u64> = entries("links")
        .iter()
        .map(|l| pinned_id("link", "prog_id", l))
        .chain(entries("progs").iter().map(|p| pinned_id("prog", "id", p)))
        .collect();
    progs.sort_unstable();
    progs.dedup();
    let maps = entries("maps")
        .iter()
        .map(|m| pinned_id("map", "id", m))
        .collect();
    (progs, maps)
}

/// Which of `ids` the kernel still has (`bpftool prog|map show`).
fn still_loaded(kind: &str, ids: &[u64]) -> Vec<u64> {
    let all = bpftool(&[kind, "show"]).unwrap_or(Value::Null);
    let live: Vec<u64> = all
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x["id"].as_u64())
        .collect();
    ids.iter().copied().filter(|i| live.contains(i)).collect()
}

/// None of these programs and maps is left in the kernel (`what` says whose they were). The
/// kernel frees them asynchronously (deferred work) once the last reference is gone: waits.
fn assert_gone(progs: &[u64], maps: &[u64], what: &str) {
    let left = || (still_loaded("prog", progs), still_loaded("map", maps));
    let gone = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let (p, m) = left();
        (p.is_empty() && m.is_empty()).then_some(())
    });
    assert!(
        gone.is_some(),
        "programs and maps of {what} left: {:?}",
        left()
    );
}

/// A daemon of `w` on `pins` enforcing `policy` (file `p.yaml`).
fn start_on(w: &World, pins: &PinDir, policy: &str) -> Daemon {
    Daemon::start_pinned(
        DaemonConfig {
            policies: vec![("p.yaml".into(), policy.to_string())],
            workloads: w.workloads_yaml(),
            ..DaemonConfig::default()
        },
        pins,
    )
}

/// A world whose pod may not connect to its server's port 8080 (policy and namespace
/// `e2e-<tag>`), enforced by a daemon pinned in a pin directory of the test. Fields drop in
/// order: the daemon stops before its pins are unloaded and its world goes (use the fields in
/// place: moved out, they would drop in another order).
struct Blocked {
    d: Daemon,
    pins: PinDir,
    srv: TestServer,
    w: World,
}

fn blocked(tag: &str) -> Blocked {
    let name = format!("e2e-{tag}");
    let w = World::single(tag, &name);
    let srv = TestServer::start(&w.net, &[8080]);
    let pins = PinDir::new(tag);
    let d = start_on(&w, &pins, &block_8080(&name, &name));
    Blocked { d, pins, srv, w }
}

#[test]
fn kill_9_and_restart_lets_no_blocked_connect_through() {
    let _g = serial();
    let mut b = blocked("crash");
    let (w, srv, d) = (&b.w, &b.srv, &mut b.d);
    assert!(
        d.stderr().contains("loaded fresh and pinned"),
        "{}",
        d.stderr()
    );
    let attempts = Attempts::start(w, w.net.server_ip(false), 8080);
    let before_kill = d.mark();
    let killed = d.kill9();
    // Dead and reaped: before the next daemon starts, an attempt is judged by the pinned
    // programs alone.
    attempts.wait_for_one_after(bulwark_e2e::monotonic_ns(), "the daemon's death");
    let (ready, ready_at) = d.respawn(&[]);
    let restarted = d.spawned_ns();
    let log = attempts.finish();
    assert_eq!(
        ready["policies"],
        serde_json::json!(["e2e-crash"]),
        "{ready}"
    );
    assert!(
        d.stderr().contains("programs adopted from"),
        "the restarted daemon adopts the pins: {}",
        d.stderr()
    );
    log.assert_no_escape(
        "kill -9 + restart",
        srv,
        &[
            ("while dead", killed, restarted),
            ("while restarting", restarted, ready_at),
        ],
    );
    // The restarted daemon enforces through its own rule set too.
    assert_eperm(&w.pod().probe(w.net.server_ip(false), 8080, &[]));
    // The matches recorded while no daemon ran are reported by the restarted one, and name
    // the policy: its rule set is the one that was in force.
    d.sync();
    let reported: Vec<_> = d.events()[before_kill..]
        .iter()
        .filter(|e| ev::is(e, "policy_match") && ev::pid(e) == Some(u64::from(log.pid)))
        .cloned()
        .collect();
    assert!(
        !reported.is_empty(),
        "the restarted daemon reported no match of the loop"
    );
    let unnamed: Vec<_> = reported
        .iter()
        .filter(|e| !ev::is_match(e, "e2e-crash", "connect"))
        .collect();
    assert!(
        unnamed.is_empty(),
        "matches without their policy: {unnamed:?}"
    );
}

#[test]
fn a_rolling_update_sigterm_then_new_daemon_lets_no_blocked_connect_through() {
    let _g = serial();
    let mut b = blocked("rolling");
    let (w, srv, d) = (&b.w, &b.srv, &mut b.d);
    let attempts = Attempts::start(w, w.net.server_ip(false), 8080);
    let stopped = d.terminate_async();
    let (_, ready_at) = d.respawn(&[]);
    let log = attempts.finish();
    assert!(
        d.stderr().contains("programs adopted from"),
        "the new daemon adopts what the stopped one left pinned: {}",
        d.stderr()
    );
    log.assert_no_escape(
        "SIGTERM + new daemon",
        srv,
        &[("while one stops and the next starts", stopped, ready_at)],
    );
}

#[test]
fn an_upgrade_loads_next_to_the_old_build_and_retires_it_after_its_first_apply() {
    let _g = serial();
    let mut b = blocked("upgrade");
    let (w, srv, pins, d) = (&b.w, &b.srv, &b.pins, &mut b.d);
    let old = pins.entries();
    assert!(
        old.len() == 1 && old[0].starts_with("build-"),
        "one build pinned: {old:?}"
    );
    let (old_progs, old_maps) = pinned_ids(&pins.path().join(&old[0]));
    assert!(
        old_progs.len() >= 8 && !old_maps.is_empty(),
        "{old_progs:?} {old_maps:?}"
    );

    let attempts = Attempts::start(w, w.net.server_ip(false), 8080);
    let stopped = d.terminate_async();
    let (_, ready_at) = d.respawn(&["--test-build-id", "e2e-next"]);
    let log = attempts.finish();
    assert!(
        d.stderr().contains("loaded fresh and pinned"),
        "another build loads its own programs: {}",
        d.stderr()
    );
    log.assert_no_escape(
        "upgrade to another build",
        srv,
        &[("while one stops and the next starts", stopped, ready_at)],
    );

    // Only the new build is left: its first apply retired the old pins and programs.
    assert_eq!(pins.entries(), ["build-test-e2e-next"]);
    assert_gone(&old_progs, &old_maps, "the old build");
    // One blocked connect, one event: the old programs no longer report it.
    let out = w.pod().probe(w.net.server_ip(false), 8080, &[]);
    assert_eperm(&out);
    crate::wait_match(d, "e2e-upgrade", "connect", out.pid, 8080);
    d.sync();
    let matches = d.find(|e| ev::is(e, "policy_match") && ev::pid(e) == Some(out.pid as u64));
    assert_eq!(matches.len(), 1, "exactly one policy_match: {matches:?}");
}

#[test]
fn unload_removes_every_pin_and_program_and_is_refused_while_a_daemon_runs() {
    let _g = serial();
    let w = World::single("unload", "e2e-unload");
    let srv = TestServer::start(&w.net, &[8080]);
    let pins = PinDir::new("unload");
    let d = start_on(&w, &pins, &block_8080("e2e-unload", "e2e-unload"));
    let builds = pins.entries();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let (progs, maps) = pinned_ids(&pins.path().join(&builds[0]));

    let refused = pins.unload(false);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "unload must refuse while the daemon runs"
    );
    assert!(
        err.contains("is running") && err.contains(&format!("pid {}", d.pid())),
        "{err}"
    );
    assert_eq!(pins.entries(), builds, "nothing removed");

    d.stop();
    // Stopped, not unloaded: the rules stay enforced.
    assert_eperm(&w.pod().probe(w.net.server_ip(false), 8080, &[]));
    let out = pins.unload(false);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!(
            "removed {}",
            pins.path().join(&builds[0]).display()
        )) && said.contains("program(s) detached")
            && said.contains("bulwark_connect4"),
        "unload says what it removed: {said}"
    );
    assert!(!pins.path().exists(), "the pin directory is gone");
    assert_gone(&progs, &maps, &said);
    assert_connected(&w.pod().probe(w.net.server_ip(false), 8080, &[]));
    assert_eq!(srv.log().accepts().len(), 1);
    let again = pins.unload(false);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing pinned"));
}

#[test]
fn a_policy_changed_while_the_daemon_was_dead_takes_effect_at_restart() {
    let _g = serial();
    let w = World::single("dead-edit", "e2e-dead-edit");
    let _srv = TestServer::start(&w.net, &[8080, 8081]);
    let ip = w.net.server_ip(false);
    let pins = PinDir::new("dead-edit");
    let block = |port: &str| {
        PolicyBuilder::new("e2e-dead-edit")
            .rule(
                RuleBuilder::connect("block-one-port")
                    .namespaces("In", &["e2e-dead-edit"])
                    .destinations("In", &["10.199.0.0/16"], &[port], None)
                    .action("Block"),
            )
            .yaml()
    };
    let mut d = start_on(&w, &pins, &block("8080"));
    assert_eperm(&w.pod().probe(ip, 8080, &[]));
    assert_connected(&w.pod().probe(ip, 8081, &[]));

    d.kill9();
    d.write_policy("p.yaml", &block("8081"));
    // Dead daemon: the rules in force when it died still hold, and the kernel keeps the record.
    let while_dead = w.pod().probe(ip, 8080, &[]);
    assert_eperm(&while_dead);
    assert_connected(&w.pod().probe(ip, 8081, &[]));

    let (ready, _) = d.respawn(&[]);
    assert_eq!(
        ready["policies"],
        serde_json::json!(["e2e-dead-edit"]),
        "{ready}"
    );
    assert_connected(&w.pod().probe(ip, 8080, &[]));
    assert_eperm(&w.pod().probe(ip, 8081, &[]));
    // What was blocked while no daemon ran is reported by the next one (from the pinned ring
    // buffer).
    let m = d.wait_event("the match recorded while the daemon was dead", |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(while_dead.pid as u64)
    });
    assert_eq!(ev::dest(&m).1, 8080, "{m}");
    assert_eq!(m["outcome"], "blocked", "{m}");
}

/// A policy on `hook: syscall`: the e2e helper in namespace `ns` calling `unshare` gets
/// `action` (`Sigkill` or `Post`), at the call's entry, or with `at_exit` when it returned 0.
fn on_unshare(name: &str, ns: &str, action: &str, at_exit: bool) -> String {
    let mut rule = RuleBuilder::syscall("unshare")
        .syscalls("In", &["unshare"])
        .namespaces("In", &[ns])
        // `ip netns exec`, which starts every pod command, calls unshare itself.
        .binaries("In", &[crate::helper()]);
    if at_exit {
        rule = rule.returns("Equal", &["0"]);
    }
    PolicyBuilder::new(name).rule(rule.action(action)).yaml()
}

/// Runs the helper's `syscall CALL` (`unshare`, or `unshare-int80` through the i386 entry) in
/// the pod; returns its output and whether it was killed at the call (nothing after the call
/// ran). Anything but killed-at-the-call or ran-to-the-end fails the test.
fn unshare_in_pod(w: &World, call: &str) -> (bulwark_e2e::RunOutput, bool) {
    let marker = w
        .dir()
        .join(format!("{call}-ran-{}", bulwark_e2e::next_id()));
    let out = w
        .pod()
        .run(&[crate::helper(), "syscall", call, marker.to_str().unwrap()]);
    let killed = out.sigkilled() && !marker.exists() && out.stdout.is_empty();
    assert!(
        killed || (out.success() && marker.exists()),
        "{call}: neither killed at the call nor ran to the end: {out}"
    );
    (out, killed)
}

/// The syscall programs' pinned links in the one build directory of `pins`, and their link
/// ids.
fn syscall_links(pins: &PinDir) -> (Vec<String>, Vec<u64>) {
    let builds = pins.entries();
    assert_eq!(builds.len(), 1, "one build pinned: {builds:?}");
    let dir = pins.path().join(&builds[0]).join("links");
    let names: Vec<String> = bulwark::engine::pins::entry_names(&dir)
        .into_iter()
        .filter(|n| n.starts_with("bulwark_sys_"))
        .collect();
    let ids = names
        .iter()
        .map(|n| pinned_id("link", "id", &dir.join(n)))
        .collect();
    (names, ids)
}

/// The syscall links of rules decided at a call's entry, and with one decided at its exit.
const ENTRY_LINKS: [&str; 1] = ["bulwark_sys_enter"];
const EXIT_LINKS: [&str; 2] = ["bulwark_sys_enter", "bulwark_sys_exit"];

/// Waits until none of these link ids is left in the kernel (`bpftool link show`).
fn assert_links_gone(ids: &[u64]) {
    let left = || still_loaded("link", ids);
    let gone = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || left().is_empty().then_some(()));
    assert!(gone.is_some(), "links left: {:?}", left());
}

#[test]
fn kill_9_leaves_syscall_rules_killing_and_the_restarted_daemon_adopts_them() {
    let _g = serial();
    let ns = "e2e-sys-crash";
    let w = World::single("sys-crash", ns);
    let pins = PinDir::new("sys-crash");
    let mut d = start_on(&w, &pins, &on_unshare(ns, ns, "Sigkill", false));
    assert_eq!(
        syscall_links(&pins).0,
        ENTRY_LINKS,
        "attached and pinned (sys_exit only when a call is decided at its exit)"
    );
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(killed, "{out}");

    let before_kill = d.mark();
    d.kill9();
    // No daemon: the pinned programs keep killing, through the compat entry too.
    let mut while_dead = Vec::new();
    for call in ["unshare", "unshare-int80"] {
        let (out, killed) = unshare_in_pod(&w, call);
        assert!(killed, "{call} while no daemon runs: {out}");
        while_dead.push(u64::from(out.pid));
    }
    let (ready, _) = d.respawn(&[]);
    assert_eq!(ready["policies"], serde_json::json!([ns]), "{ready}");
    assert!(
        d.stderr().contains("programs adopted from"),
        "the restarted daemon adopts the pins: {}",
        d.stderr()
    );
    // What the kernel did meanwhile is reported by the restarted daemon, naming the policy.
    for pid in while_dead {
        let m = d.wait_event_after(before_kill, "a kill made while no daemon ran", |e| {
            ev::is_match(e, ns, "syscall") && ev::pid(e) == Some(pid)
        });
        assert_eq!(
            (&m["outcome"], &m["enforced"]),
            (&"killed".into(), &true.into()),
            "{m}"
        );
    }
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(killed, "the adopted programs enforce: {out}");

    // An apply with syscall rules on the adopted engine (one that could not attach the
    // programs used to refuse it): the same call, reported only now.
    let st = d.replace_policy("p.yaml", &on_unshare(ns, ns, "Post", false));
    assert_eq!(st["state"], "reloaded", "{st}\n{}", d.diagnostics());
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(!killed, "Post kills nothing: {out}");
    let m = d.wait_event("the reported unshare", |e| {
        ev::is_match(e, ns, "syscall") && ev::pid(e) == Some(u64::from(out.pid))
    });
    assert_eq!(m["outcome"], "reported", "{m}");
    assert_eq!(syscall_links(&pins).0, ENTRY_LINKS);
}

#[test]
fn syscall_programs_follow_policies_changed_while_the_daemon_was_dead_and_unload_removes_them() {
    let _g = serial();
    let ns = "e2e-sys-follow";
    let w = World::single("sys-follow", ns);
    let pins = PinDir::new("sys-follow");
    let mut d = start_on(&w, &pins, &block_8080(ns, ns));
    assert!(
        syscall_links(&pins).0.is_empty(),
        "no syscall rule: nothing attached"
    );

    // Needed at restart and not attached: the adopting daemon attaches the pinned programs.
    d.kill9();
    d.write_policy("p.yaml", &on_unshare(ns, ns, "Sigkill", false));
    let (ready, _) = d.respawn(&[]);
    assert_eq!(ready["policies"], serde_json::json!([ns]), "{ready}");
    assert!(
        d.stderr().contains("programs adopted from"),
        "{}",
        d.stderr()
    );
    let (names, ids) = syscall_links(&pins);
    assert_eq!(names, ENTRY_LINKS, "attached and pinned at restart");
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(killed, "{out}");

    // No longer needed at restart: the adopting daemon's first apply detaches them.
    d.kill9();
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(killed, "still killing while no daemon runs: {out}");
    d.write_policy("p.yaml", &block_8080(ns, ns));
    d.respawn(&[]);
    assert!(syscall_links(&pins).0.is_empty(), "links unpinned");
    assert_links_gone(&ids);
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(!killed, "no syscall rule left: {out}");

    // Needed again (a live apply), decided at the call's exit: both programs attached.
    let st = d.replace_policy("p.yaml", &on_unshare(ns, ns, "Sigkill", true));
    assert_eq!(st["state"], "reloaded", "{st}\n{}", d.diagnostics());
    let (names, ids) = syscall_links(&pins);
    assert_eq!(names, EXIT_LINKS);
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(killed, "killed when the call returned 0: {out}");
    // Decided at entry again: the exit program is detached.
    let st = d.replace_policy("p.yaml", &on_unshare(ns, ns, "Sigkill", false));
    assert_eq!(st["state"], "reloaded", "{st}\n{}", d.diagnostics());
    assert_eq!(syscall_links(&pins).0, ENTRY_LINKS);
    assert_links_gone(&ids[1..]);

    // The daemon stops: its programs keep killing until `bulwark unload`, which says it
    // detached them and leaves nothing in the kernel (the pinned programs included).
    let build = pins.path().join(&pins.entries()[0]);
    let (progs, maps) = pinned_ids(&build);
    let (_, ids) = syscall_links(&pins);
    d.stop();
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(killed, "still killing after the daemon stopped: {out}");
    let out = pins.unload(false);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("bulwark_sys_enter"),
        "unload names the syscall program it detached: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_links_gone(&ids);
    assert_gone(&progs, &maps, &said);
    let (out, killed) = unshare_in_pod(&w, "unshare");
    assert!(!killed, "unloaded: {out}");
}
