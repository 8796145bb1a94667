//! End-to-end tests of `bulwark run` (issue 3, "End-to-end tests"): real kernel, real processes,
//! real sockets. Each test builds its own world (network namespaces, cgroups, servers), starts
//! the daemon on it, acts from inside a pod and checks both what the workload saw and the
//! daemon's JSON events. Tests share global kernel hooks: each takes `bulwark_e2e::serial()`.
//!
//! Run: `cargo build -p bulwark && cargo test -p bulwark-e2e -- --test-threads=1` as root.

mod attacks;
mod attacks_groups;
mod connect;
mod conns;
mod conns_report;
mod egress;
mod events;
mod examples;
mod exec;
mod files;
mod ingress;
mod kubernetes;
mod lifecycle;
mod monitor;
mod namespace;
mod reload;
mod sockets;

use bulwark_e2e::daemon::ev;
use bulwark_e2e::{Daemon, Event, RunOutput, World};
use std::path::{Path, PathBuf};

/// The process was SIGKILLed at exec by `policy` before it ran: its side effect (`marker`)
/// never happened, a `policy_match` says `killed`/enforced, and its exit event says SIGKILL.
/// Returns the policy_match event.
pub fn assert_killed_at_exec(
    d: &Daemon,
    out: &RunOutput,
    binary: &Path,
    policy: &str,
    marker: &Path,
) -> Event {
    assert!(
        out.sigkilled(),
        "{} should have been SIGKILLed: {out}",
        binary.display()
    );
    assert!(
        !marker.exists(),
        "{} was killed but its side effect happened ({} exists): it ran user code",
        binary.display(),
        marker.display()
    );
    let pid = out.pid as u64;
    let bin = binary.to_str().unwrap().to_string();
    let m = d.wait_event(
        &format!("policy_match of {policy} killing pid {pid}"),
        |e| ev::is_match(e, policy, "exec") && ev::pid(e) == Some(pid),
    );
    assert_eq!(m["outcome"], "killed", "{m}");
    assert_eq!(m["enforced"], true, "{m}");
    assert_eq!(m["action"], "Sigkill", "{m}");
    assert_eq!(m["mode"], "enforce", "{m}");
    assert!(same_file(ev::binary(&m), &bin), "binary {bin}: {m}");
    let exit = d.wait_event(&format!("process_exit of pid {pid} by SIGKILL"), |e| {
        ev::is(e, "process_exit") && ev::pid(e) == Some(pid)
    });
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    assert!(same_file(ev::binary(&exit), &bin), "binary {bin}: {exit}");
    m
}

/// The process ran normally (exit 0, its side effect happened), and no policy_match names it.
pub fn assert_ran(d: &Daemon, out: &RunOutput, binary: &Path, marker: &Path) {
    assert!(
        out.success(),
        "{} should have run normally: {out}",
        binary.display()
    );
    assert!(
        marker.exists(),
        "{} ran but {} is missing",
        binary.display(),
        marker.display()
    );
    let pid = out.pid as u64;
    let exit = d.wait_event(&format!("process_exit of pid {pid}"), |e| {
        ev::is(e, "process_exit") && ev::pid(e) == Some(pid)
    });
    assert_eq!(exit["status"], 0, "{exit}");
    assert!(exit["signal"].is_null(), "{exit}");
    d.assert_no_event(&format!("policy_match for pid {pid}"), |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(pid)
    });
}

/// The e2e helper binary (`src/bin/bulwark-e2e-helper.rs`): workload programs for the pods.
pub fn helper() -> &'static str {
    env!("CARGO_BIN_EXE_bulwark-e2e-helper")
}

/// Runs `bulwark-e2e-helper syscall CALL MARKER` in the pod of `w`: the workload makes that one
/// system call, prints its result and then creates MARKER (`marker` in the world's directory),
/// so the marker exists only if the process lived past the call's return. Returns the output
/// and the marker's path.
pub fn run_syscall(w: &World, call: &str, marker: &str) -> (RunOutput, PathBuf) {
    let marker = w.dir().join(marker);
    let out = w
        .pod()
        .run(&[helper(), "syscall", call, marker.to_str().unwrap()]);
    (out, marker)
}

/// The probe's connect failed with EPERM.
pub fn assert_eperm(out: &RunOutput) {
    assert_eq!(
        out.json()["connect"],
        "EPERM",
        "connect should fail with EPERM: {out}"
    );
    assert_eq!(out.code, Some(3), "{out}");
}

/// The probe connected (and, when it sent, got an answer).
pub fn assert_connected(out: &RunOutput) {
    assert_eq!(out.json()["connect"], "ok", "connect should work: {out}");
    assert!(out.success(), "{out}");
}

/// Waits for the `policy_match` of `policy`/`hook` for process `pid` towards `port`.
pub fn wait_match(d: &Daemon, policy: &str, hook: &str, pid: u32, port: u16) -> Event {
    d.wait_event(
        &format!("policy_match of {policy} ({hook}) for pid {pid} to port {port}"),
        |e| {
            ev::is_match(e, policy, hook)
                && ev::pid(e) == Some(pid as u64)
                && ev::dest(e).1 == port as u64
        },
    )
}

/// The two paths name the same file (an event may carry `/bin/sh` or its target `/usr/bin/dash`).
pub fn same_file(a: &str, b: &str) -> bool {
    a == b
        || match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
}
