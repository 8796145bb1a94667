//! `bulwark-bench syscalls`: what the system-call hooks cost syscall-heavy workloads (issue 13):
//! a `getppid` loop, an `open`/`close` loop of one file and a build-like mix (a process spawn
//! plus stat/open/read/close of 200 small files), each against no daemon in the same run,
//! interleaved over rounds, with the daemon running
//! - with no syscall or file policy (the syscall programs are not attached; target <= 1.01),
//! - with a `matchSyscalls` policy on calls the workloads do not make (target <= 1.05), and the
//!   same decided at the call's exit (`matchReturn`: the exit program is attached too),
//! - with a `hook: file` policy on unrelated paths (target <= 1.10; "not built" while the
//!   bulwark under test refuses the policy),
//!
//! and two floors without any daemon, which say what a design pays before its own work: an
//! empty BPF program on the raw `sys_enter`/`sys_exit` tracepoints (what bulwark attaches to),
//! and the per-call tracepoints `syscalls:sys_enter_ptrace`/`sys_exit_ptrace` enabled through
//! tracefs (the alternative of attaching only to the named calls' tracepoints: any syscall
//! tracepoint sets TIF_SYSCALL_TRACEPOINT on every task, so every call takes the slow path and
//! passes the per-call dispatch, whichever calls are named). After the rounds, one pass with
//! `kernel.bpf_stats_enabled` reads what bulwark's two programs cost per run, and one daemon
//! with a `Post` policy on the workload's `getppid` gives the daemon's CPU per matched call.
//! Each configuration is a policy file, so another hook is one more entry in [`configs`].

use crate::daemon::{count_events, Daemon};
use crate::{bulwark_binary, median, worker, RunArgs};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How a configuration is set up.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Setup {
    NoDaemon,
    /// `bulwark run` with the configuration's policy file (none: an empty policy directory).
    Daemon,
    /// No daemon; an empty BPF program on raw `sys_enter`, and on `sys_exit` when `true`.
    EmptyRawTracepoint(bool),
    /// No daemon; tracefs `syscalls/sys_{enter,exit}_ptrace` enabled.
    CallTracepoint,
}

struct Config {
    name: &'static str,
    about: &'static str,
    setup: Setup,
    policy: Option<String>,
    target: Option<f64>,
}

fn policy(name: &str, hook: &str, selector: &str) -> String {
    format!(
        "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  rules:\n  - name: r\n    hook: {hook}\n    selectors:\n    - {selector}\n      matchActions: [{{action: Post}}]\n"
    )
}

/// The configurations, baseline first.
fn configs() -> Vec<Config> {
    vec![
        Config {
            name: "baseline",
            about: "no daemon",
            setup: Setup::NoDaemon,
            policy: None,
            target: None,
        },
        Config {
            name: "no_syscall_policy",
            about:
                "daemon, no syscall or file policy (nothing attached to the syscall tracepoints)",
            setup: Setup::Daemon,
            policy: None,
            target: Some(1.01),
        },
        Config {
            name: "syscall_policy_unused_call",
            about: "daemon, `matchSyscalls: [ptrace, mount]` (calls the workloads do not make)",
            setup: Setup::Daemon,
            policy: Some(policy(
                "bench-unused-call",
                "syscall",
                "matchSyscalls: [{operator: In, values: [ptrace, mount]}]",
            )),
            target: Some(1.05),
        },
        Config {
            name: "syscall_policy_unused_call_at_exit",
            about: "the same with `matchReturn` (decided at the call's exit: bulwark_sys_exit attached too)",
            setup: Setup::Daemon,
            policy: Some(policy(
                "bench-unused-call-at-exit",
                "syscall",
                "matchSyscalls: [{operator: In, values: [ptrace, mount]}]\n      matchReturn: [{operator: LessThan, values: [0]}]",
            )),
            target: None,
        },
        Config {
            name: "file_policy_unrelated_paths",
            about: "daemon, `hook: file` policy on paths the workloads do not touch",
            setup: Setup::Daemon,
            policy: Some(policy(
                "bench-unrelated-paths",
                "file",
                "matchPaths: [{operator: Prefix, values: [/nonexistent/bulwark-bench/]}]",
            )),
            target: Some(1.10),
        },
        Config {
            name: "floor_empty_raw_tracepoint",
            about: "no daemon, an empty BPF program on raw sys_enter and sys_exit",
            setup: Setup::EmptyRawTracepoint(true),
            policy: None,
            target: None,
        },
        Config {
            name: "floor_empty_raw_sys_enter",
            about: "no daemon, an empty BPF program on raw sys_enter only",
            setup: Setup::EmptyRawTracepoint(false),
            policy: None,
            target: None,
        },
        Config {
            name: "floor_other_call_tracepoint",
            about: "no daemon, tracefs syscalls/sys_enter_ptrace and sys_exit_ptrace enabled",
            setup: Setup::CallTracepoint,
            policy: None,
            target: None,
        },
    ]
}

/// (name, worker args), sized by `--quick`.
fn workloads(quick: bool, dir: &Path) -> Vec<(&'static str, Vec<String>)> {
    let k = if quick { 5 } else { 1 };
    let w = |kind: &str, n: u64, chunks: u64| {
        [
            "syscalls",
            "--kind",
            kind,
            "--n",
            &(n / k).max(1).to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            "--chunks".into(),
            chunks.to_string(),
            "--dir".into(),
            dir.display().to_string(),
        ])
        .collect::<Vec<String>>()
    };
    vec![
        ("getppid", w("getppid", 200_000, 10)),
        ("open_close", w("open-close", 40_000, 10)),
        ("build_mix", w("build", 40, 10)),
    ]
}

/// The files the workloads read: `one`, and 200 files of 1-4 KiB under `tree/`.
fn make_files(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("tree"))?;
    std::fs::write(dir.join("one"), b"x")?;
    for i in 0..200 {
        let body = vec![b'a' + (i % 26) as u8; 1024 * (1 + i % 4)];
        std::fs::write(dir.join("tree").join(format!("f{i:03}.c")), body)?;
    }
    Ok(())
}

/// Whether the bulwark under test accepts a policy file (lint clean of errors).
fn accepts(bulwark: &Path, dir: &Path) -> Result<bool> {
    let out = std::process::Command::new(bulwark)
        .arg("lint")
        .arg(dir)
        .output()?;
    Ok(out.status.success())
}

/// `bpf(2)`.
fn bpf(cmd: u32, attr: &mut [u64; 16]) -> std::io::Result<i32> {
    // SAFETY: attr is a zeroed, writable bpf_attr of 128 bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i32)
    }
}

/// An empty program (`r0 = 0; exit`) attached to raw `sys_enter` (and `sys_exit`) while held.
struct EmptyRawTracepoint {
    _links: Vec<OwnedFd>,
}

impl EmptyRawTracepoint {
    fn attach(exit: bool) -> Result<EmptyRawTracepoint> {
        const BPF_PROG_LOAD: u32 = 5;
        const BPF_RAW_TRACEPOINT_OPEN: u32 = 17;
        const BPF_PROG_TYPE_RAW_TRACEPOINT: u64 = 17;
        // mov64 r0, 0; exit
        let insns: [u64; 2] = [0xb7, 0x95];
        let license = c"GPL";
        let mut attr = [0u64; 16];
        attr[0] = BPF_PROG_TYPE_RAW_TRACEPOINT | (2 << 32);
        attr[1] = insns.as_ptr() as u64;
        attr[2] = license.as_ptr() as u64;
        let prog = bpf(BPF_PROG_LOAD, &mut attr).context("loading an empty raw_tp program")?;
        // SAFETY: a new descriptor this process owns.
        let prog = unsafe { OwnedFd::from_raw_fd(prog) };
        let mut links = Vec::new();
        let tps = if exit {
            &[c"sys_enter", c"sys_exit"][..]
        } else {
            &[c"sys_enter"][..]
        };
        for tp in tps {
            let mut attr = [0u64; 16];
            attr[0] = tp.as_ptr() as u64;
            attr[1] = std::os::fd::AsRawFd::as_raw_fd(&prog) as u64;
            let l = bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
                .with_context(|| format!("attaching the empty program to {tp:?}"))?;
            // SAFETY: as above.
            links.push(unsafe { OwnedFd::from_raw_fd(l) });
        }
        Ok(EmptyRawTracepoint { _links: links })
    }
}

/// tracefs `syscalls/sys_enter_<call>` and `sys_exit_<call>` enabled while held.
struct CallTracepoint {
    files: Vec<PathBuf>,
}

impl CallTracepoint {
    fn enable(call: &str) -> Result<CallTracepoint> {
        let base = Path::new("/sys/kernel/tracing/events/syscalls");
        let mut t = CallTracepoint { files: Vec::new() };
        for phase in ["enter", "exit"] {
            let f = base.join(format!("sys_{phase}_{call}")).join("enable");
            std::fs::write(&f, "1").with_context(|| format!("enabling {}", f.display()))?;
            t.files.push(f);
        }
        Ok(t)
    }
}

impl Drop for CallTracepoint {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::write(f, "0");
        }
    }
}

/// What a configuration holds while its workloads run (dropping it detaches and disables).
struct Running {
    daemon: Option<Daemon>,
    _empty: Option<EmptyRawTracepoint>,
    _call: Option<CallTracepoint>,
}

fn start(
    cfg: &Config,
    bulwark: &Path,
    policy_dir: Option<&PathBuf>,
    events: &Path,
) -> Result<Running> {
    let mut r = Running {
        daemon: None,
        _empty: None,
        _call: None,
    };
    match cfg.setup {
        Setup::NoDaemon => {}
        Setup::Daemon => {
            let dir = policy_dir.context("a daemon configuration without a policy directory")?;
            r.daemon = Some(Daemon::start(bulwark, dir, events, &[])?);
        }
        Setup::EmptyRawTracepoint(exit) => r._empty = Some(EmptyRawTracepoint::attach(exit)?),
        Setup::CallTracepoint => r._call = Some(CallTracepoint::enable("ptrace")?),
    }
    Ok(r)
}

/// Spread of per-round ratios: (min, max).
fn spread(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
            (lo.min(*x), hi.max(*x))
        })
}

/// Runs the rounds and the two extra passes; `args.out` gets syscalls.json and syscalls.md.
pub fn run(args: RunArgs) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bulwark-bench syscalls needs root (it runs the daemon and attaches programs)");
    }
    crate::daemon::ensure_machine_free()?;
    let bulwark = bulwark_binary(&args.bulwark)?;
    let work = std::env::temp_dir().join(format!("bulwark-bench-sys-{}", std::process::id()));
    let files = work.join("files");
    make_files(&files)?;
    let events = work.join("events.jsonl");
    let all = configs();
    // Policy directories, and which configurations this bulwark can run.
    let mut dirs: Vec<Option<PathBuf>> = Vec::new();
    let mut built = Vec::new();
    for (i, c) in all.iter().enumerate() {
        let d = (c.setup == Setup::Daemon).then(|| work.join(format!("policies-{i}")));
        if let Some(d) = &d {
            std::fs::create_dir_all(d)?;
            if let Some(p) = &c.policy {
                std::fs::write(d.join("policy.yaml"), p)?;
            }
        }
        built.push(match &d {
            Some(d) => accepts(&bulwark, d)?,
            None => true,
        });
        dirs.push(d);
    }
    let run_cfgs: Vec<usize> = (0..all.len()).filter(|&i| built[i]).collect();
    let wl = workloads(args.quick, &files);
    // raw[workload][config]: ns/op per round.
    let mut raw = vec![vec![Vec::<f64>::new(); all.len()]; wl.len()];
    for round in 0..args.rounds {
        let mut order = run_cfgs.clone();
        let turn = round % order.len();
        order.rotate_left(turn);
        for c in order {
            eprintln!(
                "syscalls round {}/{}: {}",
                round + 1,
                args.rounds,
                all[c].name
            );
            let running = start(&all[c], &bulwark, dirs[c].as_ref(), &events)?;
            for (i, (name, wargs)) in wl.iter().enumerate() {
                let v = worker(None, wargs).with_context(|| format!("{name} ({})", all[c].name))?;
                raw[i][c].push(v["ns_per_op"].as_f64().unwrap_or(f64::NAN));
            }
            if let Some(d) = running.daemon {
                d.stop()?;
            }
        }
    }
    let mut rows = Vec::new();
    for (i, (name, _)) in wl.iter().enumerate() {
        let base = &raw[i][0];
        let mut cols = serde_json::Map::new();
        for (c, cfg) in all.iter().enumerate().skip(1) {
            if !built[c] {
                cols.insert(cfg.name.into(), json!("not built"));
                continue;
            }
            let ratios: Vec<f64> = raw[i][c].iter().zip(base).map(|(x, b)| x / b).collect();
            let (lo, hi) = spread(&ratios);
            let ratio = median(ratios.clone());
            cols.insert(
                cfg.name.into(),
                json!({
                    "ratio": ratio, "min": lo, "max": hi, "ratios": ratios,
                    "ns_per_op": median(raw[i][c].clone()),
                    "target": cfg.target, "met": cfg.target.map(|t| ratio <= t),
                }),
            );
        }
        rows.push(json!({
            "workload": name, "baseline_ns_per_op": median(base.clone()),
            "baseline_raw": base, "configs": cols,
        }));
    }
    let unused = all
        .iter()
        .position(|c| c.name == "syscall_policy_unused_call")
        .expect("configured");
    let program_cost = program_cost(&bulwark, dirs[unused].as_ref(), &events, &wl[0].1)?;
    let matched = matched_cost(&bulwark, &work, &events, &files, args.quick)?;
    let report = json!({
        "machine": crate::machine(), "rounds": args.rounds, "quick": args.quick,
        "configs": all.iter().zip(&built).map(|(c, b)| json!({
            "name": c.name, "about": c.about, "target": c.target, "built": b,
        })).collect::<Vec<_>>(),
        "workloads": rows, "programs_per_run": program_cost, "matched_post": matched,
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("syscalls.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("syscalls.md"), &md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// `kernel.bpf_stats_enabled` on while held (it costs every program run two clock reads, so
/// the timed rounds run without it).
struct BpfStats;

impl BpfStats {
    fn enable() -> Result<BpfStats> {
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
            .context("enabling kernel.bpf_stats_enabled")?;
        Ok(BpfStats)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    }
}

/// Run time per run of `bulwark_sys_enter` / `bulwark_sys_exit` (`bpftool prog show`) over the
/// getppid workload, with the daemon of the unused-call configuration.
fn program_cost(
    bulwark: &Path,
    dir: Option<&PathBuf>,
    events: &Path,
    getppid: &[String],
) -> Result<Value> {
    let Some(dir) = dir else {
        return Ok(Value::Null);
    };
    let d = Daemon::start(bulwark, dir, events, &[])?;
    let stats = BpfStats::enable()?;
    let read = || -> Result<Vec<(String, u64, u64)>> {
        let out = std::process::Command::new("bpftool")
            .args(["-j", "prog", "show"])
            .output()
            .context("running bpftool")?;
        let v: Value = serde_json::from_slice(&out.stdout)?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("bulwark_sys_"))
            })
            .map(|p| {
                (
                    p["name"].as_str().unwrap_or("?").to_string(),
                    p["run_time_ns"].as_u64().unwrap_or(0),
                    p["run_cnt"].as_u64().unwrap_or(0),
                )
            })
            .collect())
    };
    let before = read()?;
    let w = worker(None, getppid)?;
    let after = read()?;
    drop(stats);
    d.stop()?;
    let mut out = serde_json::Map::new();
    for (name, t1, c1) in after {
        let (t0, c0) = before
            .iter()
            .find(|(n, ..)| *n == name)
            .map_or((0, 0), |(_, t, c)| (*t, *c));
        let runs = c1.saturating_sub(c0);
        out.insert(
            name,
            json!({ "runs": runs, "ns_per_run": (t1.saturating_sub(t0)) as f64 / runs.max(1) as f64 }),
        );
    }
    out.insert(
        "getppid_ns_per_op_with_stats".into(),
        w["ns_per_op"].clone(),
    );
    Ok(Value::Object(out))
}

/// The daemon's CPU per matched call: a `Post` policy on `getppid` of the bench's own binary,
/// the getppid loop, and the daemon's CPU time until it has written every call's event.
fn matched_cost(
    bulwark: &Path,
    work: &Path,
    events: &Path,
    files: &Path,
    quick: bool,
) -> Result<Value> {
    let me = std::env::current_exe()?.canonicalize()?;
    let dir = work.join("policies-matched");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("policy.yaml"),
        policy(
            "bench-matched-getppid",
            "syscall",
            &format!(
                "matchSyscalls: [{{operator: In, values: [getppid]}}]\n      matchBinaries: [{{operator: In, values: [{}]}}]",
                me.display()
            ),
        ),
    )?;
    let calls: u64 = if quick { 4_000 } else { 20_000 };
    let d = Daemon::start(bulwark, &dir, events, &[])?;
    let cpu0 = d.cpu_seconds()?;
    let args: Vec<String> = [
        "syscalls",
        "--kind",
        "getppid",
        "--n",
        &calls.to_string(),
        "--chunks",
        "1",
        "--dir",
        &files.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let w = worker(None, &args)?;
    // Until the daemon has written every call's event (or gives up: lost records).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut written = 0;
    while Instant::now() < deadline {
        written = count_events(events)
            .get("process_syscall")
            .copied()
            .unwrap_or(0);
        if written >= calls {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let cpu = d.cpu_seconds()? - cpu0;
    let last = d.stop()?;
    Ok(json!({
        "calls": calls, "events_written": written,
        "lost_events": last.as_ref().and_then(|s| s["lost_events"].as_u64()),
        "daemon_cpu_seconds": cpu,
        "daemon_cpu_us_per_event": cpu * 1e6 / written.max(1) as f64,
        "getppid_ns_per_op_matched": w["ns_per_op"],
    }))
}

fn markdown(r: &Value) -> String {
    let cfgs: Vec<&Value> = r["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(1)
        .collect();
    let mut s = format!(
        "System-call hooks, ratio to no daemon (median of {} interleaved rounds, min-max in brackets){}\n\n| workload | no daemon ns/op |",
        r["rounds"],
        if r["quick"].as_bool() == Some(true) { ", quick" } else { "" }
    );
    for c in &cfgs {
        s += &format!(" {} |", c["name"].as_str().unwrap_or("?"));
    }
    s += "\n|---|---|";
    s += &"---|".repeat(cfgs.len());
    s += "\n";
    for w in r["workloads"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {:.0} |",
            w["workload"].as_str().unwrap_or("?"),
            w["baseline_ns_per_op"].as_f64().unwrap_or(f64::NAN)
        );
        for c in &cfgs {
            let v = &w["configs"][c["name"].as_str().unwrap_or("?")];
            s += &match v.as_str() {
                Some(text) => format!(" {text} |"),
                None => format!(
                    " {:.3} ({:.3}-{:.3}){} |",
                    v["ratio"].as_f64().unwrap_or(f64::NAN),
                    v["min"].as_f64().unwrap_or(f64::NAN),
                    v["max"].as_f64().unwrap_or(f64::NAN),
                    match v["met"].as_bool() {
                        Some(true) => " yes",
                        Some(false) => " NO",
                        None => "",
                    }
                ),
            };
        }
        s += "\n";
    }
    s += "\nTargets: ";
    for c in cfgs.iter().filter(|c| c["target"].is_number()) {
        s += &format!("{} <= {}; ", c["name"].as_str().unwrap_or("?"), c["target"]);
    }
    s += "\nConfigurations:\n";
    for c in &cfgs {
        s += &format!(
            "- {}: {}\n",
            c["name"].as_str().unwrap_or("?"),
            c["about"].as_str().unwrap_or("?")
        );
    }
    if let Some(p) = r["programs_per_run"].as_object() {
        s += "\nbulwark's programs per run (bpf_stats, getppid loop, unused-call policy): ";
        for (name, v) in p {
            if let Some(ns) = v["ns_per_run"].as_f64() {
                s += &format!("{name} {ns:.1} ns over {} runs; ", v["runs"]);
            }
        }
        s += "\n";
    }
    let m = &r["matched_post"];
    s += &format!(
        "\nDaemon CPU per matched call (`Post` on the loop's getppid): {:.2} µs ({} calls, {} events written, {} lost); the loop ran at {:.0} ns per call.\n",
        m["daemon_cpu_us_per_event"].as_f64().unwrap_or(f64::NAN),
        m["calls"],
        m["events_written"],
        m["lost_events"],
        m["getppid_ns_per_op_matched"].as_f64().unwrap_or(f64::NAN),
    );
    s
}
