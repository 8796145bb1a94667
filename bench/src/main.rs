//! `bulwark-bench`: runs each workload with and without bulwark in the same run, interleaved,
//! several rounds, and reports median ratios (with bulwark / without) plus the raw figures as
//! JSON and a markdown table. A "floor" configuration loads do-nothing programs on the same
//! hooks, so the report separates the cost of the hooks from the cost of bulwark's own work.
//! Needs root. Not part of the test suite: timings are reported, never asserted.
//!
//!     sudo target/release/bulwark-bench run --rounds 5
//!     target/release/bulwark-bench lint     # lint scaling, no root
//!     sudo target/release/bulwark-bench selectors --rounds 5   # 10/100/1,000 selectors
//!     sudo target/release/bulwark-bench syscalls --rounds 9    # the system-call hooks' cost
//!     target/release/bulwark-bench cluster  # simulated cluster vs an API server, no root

mod cluster;
mod conns;
mod daemon;
mod lint;
mod policies;
mod selectors;
mod syscalls;
mod workers;

use anyhow::{bail, Context, Result};
use clap::Parser;
use daemon::Daemon;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "bulwark-bench",
    about = "Overhead and throughput of bulwark, as ratios against a same-run baseline"
)]
enum Cli {
    /// Run every benchmark and write report.json and report.md.
    Run(RunArgs),
    /// Run one workload (used by `run`; prints one JSON object).
    #[command(subcommand)]
    Worker(workers::Worker),
    /// How `bulwark lint` scales: 1k, 10k and 40k policies and 10 MB of comments (no root).
    Lint(lint::LintArgs),
    /// What observing every TCP connection costs (no policy): no daemon vs observing vs
    /// `--no-conn-observe`; writes conns-report.json and conns-report.md.
    Conns(RunArgs),
    /// Exec and connect with 10, 100 and 1,000 selectors loaded (most namespaced to other
    /// namespaces), against no daemon in the same run; writes selectors.json and selectors.md.
    Selectors(RunArgs),
    /// Syscall-heavy workloads (getppid, open/close, a build-like mix) against no daemon with
    /// no syscall policy, a syscall policy on unused calls and a file policy on unrelated
    /// paths, plus the floors of the tracepoint designs; writes syscalls.json and syscalls.md.
    Syscalls(RunArgs),
    /// N simulated node controllers against an API server (KUBECONFIG): convergence, API
    /// writes, status size, pruning, violation storm; projection to 5,000 nodes (no root).
    Cluster(cluster::ClusterArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Rounds of the configurations (run: baseline, bulwark, floor; conns: no daemon,
    /// observing, not observing), interleaved.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The bulwark binary under test.
    #[arg(long, default_value = "target/release/bulwark")]
    bulwark: PathBuf,
    /// Where the reports go (run: report.json and report.md; conns: conns-report.*).
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
    /// Fewer iterations per workload (a quick look, noisier).
    #[arg(long)]
    quick: bool,
    /// conns: also observe with this other bulwark binary (e.g. the build before a change),
    /// interleaved in the same rounds, so a change is measured against its predecessor in one
    /// run rather than across runs on a machine whose load moves.
    #[arg(long, value_name = "PATH")]
    compare: Option<PathBuf>,
    /// conns: run only the workloads whose name contains this (e.g. `request_1k`), for a
    /// quicker comparison of one row; the report then has only those rows.
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    /// conns: run the measured client on CPU 0 and the servers it talks to on CPU 1 (the
    /// daemon unpinned). On a 2-vCPU VM back-to-back runs of the 1 KB workload then agree
    /// within ~2% (88-98 µs unpinned); the spread across daemon restarts stays, and TCP
    /// connect times keep their two modes, so more rounds are still what narrows a row.
    #[arg(long)]
    pin: bool,
}

fn main() -> Result<()> {
    match Cli::parse() {
        Cli::Worker(w) => workers::run(w),
        Cli::Run(args) => run(args),
        Cli::Lint(args) => lint::run(args),
        Cli::Conns(args) => conns::run(args),
        Cli::Selectors(args) => selectors::run(args),
        Cli::Syscalls(args) => syscalls::run(args),
        Cli::Cluster(args) => cluster::run(args),
    }
}

/// Two network namespaces joined by a veth pair (10.250.0.1 <-> 10.250.0.2), removed on drop.
struct VethPair;
const NS_CLIENT: &str = "bwbench-c";
const NS_SERVER: &str = "bwbench-s";

impl VethPair {
    fn create() -> Result<VethPair> {
        let _ = VethPair::teardown();
        for cmd in [
            format!("ip netns add {NS_CLIENT}"),
            format!("ip netns add {NS_SERVER}"),
            format!(
                "ip link add bwb0 netns {NS_CLIENT} type veth peer name bwb1 netns {NS_SERVER}"
            ),
            format!("ip -n {NS_CLIENT} addr add 10.250.0.1/30 dev bwb0"),
            format!("ip -n {NS_SERVER} addr add 10.250.0.2/30 dev bwb1"),
            format!("ip -n {NS_CLIENT} link set bwb0 up"),
            format!("ip -n {NS_SERVER} link set bwb1 up"),
            format!("ip -n {NS_CLIENT} link set lo up"),
            format!("ip -n {NS_SERVER} link set lo up"),
        ] {
            sh(&cmd)?;
        }
        Ok(VethPair)
    }
    fn teardown() -> Result<()> {
        let _ = Command::new("ip")
            .args(["netns", "del", NS_CLIENT])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", NS_SERVER])
            .status();
        Ok(())
    }
}
impl Drop for VethPair {
    fn drop(&mut self) {
        let _ = VethPair::teardown();
    }
}

fn sh(cmd: &str) -> Result<()> {
    let st = Command::new("sh").args(["-c", cmd]).status()?;
    if !st.success() {
        bail!("`{cmd}` failed: {st}");
    }
    Ok(())
}

/// A background child killed on drop (the sinks).
struct Bg(Child);
impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This bench binary as a command, run inside `netns` when given.
fn self_command(netns: Option<&str>) -> Result<Command> {
    let me = std::env::current_exe()?;
    Ok(match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(&me);
            c
        }
        None => Command::new(&me),
    })
}

fn spawn_sink(netns: Option<&str>, addr: &str) -> Result<Bg> {
    spawn_in(netns, &["sink", "--addr", addr])
}

fn spawn_in(netns: Option<&str>, args: &[&str]) -> Result<Bg> {
    spawn_on(netns, args, None)
}

/// Runs `cmd`'s child (and every thread it makes) on CPU `cpu` only, when given.
fn on_cpu(cmd: &mut Command, cpu: Option<usize>) {
    use std::os::unix::process::CommandExt;
    let Some(cpu) = cpu else { return };
    // SAFETY: only async-signal-safe calls (sched_setaffinity on a stack copy) between fork
    // and exec.
    unsafe {
        cmd.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A background worker, pinned to `cpu` when given.
fn spawn_on(netns: Option<&str>, args: &[&str], cpu: Option<usize>) -> Result<Bg> {
    let mut cmd = self_command(netns)?;
    cmd.arg("worker").args(args).stdout(Stdio::null());
    on_cpu(&mut cmd, cpu);
    let child = cmd.spawn()?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(Bg(child))
}

/// Run one worker (optionally inside a netns) and return its JSON result.
fn worker(netns: Option<&str>, args: &[String]) -> Result<Value> {
    worker_on(netns, args, None)
}

/// [`worker`], pinned to `cpu` when given.
fn worker_on(netns: Option<&str>, args: &[String], cpu: Option<usize>) -> Result<Value> {
    let mut cmd = self_command(netns)?;
    cmd.arg("worker").args(args);
    on_cpu(&mut cmd, cpu);
    let out = cmd.output()?;
    if !out.status.success() {
        bail!(
            "worker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("worker {args:?} output"))
}

/// A distribution-free interval for the median of `v` (order statistics, coverage >= 90%):
/// `[x(j), x(n+1-j)]` (1-based, sorted) for the largest `j` whose coverage,
/// `1 - 2 P(Binomial(n, 1/2) <= j - 1)`, is still at least 0.9. Five rounds give the range
/// (93.8%), nine the second-smallest to the second-largest (96.1%); under five rounds not even
/// the range covers 90%, and the range is what is returned. `(NAN, NAN)` when empty.
/// Single rounds on a small VM vary by up to ±25%, so a median alone over-states what a run
/// shows; a comparison with `--compare` is resolved when its round-by-round interval
/// excludes 1.
fn median_interval(mut v: Vec<f64>) -> (f64, f64) {
    let n = v.len();
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    // P(X <= k) for X ~ Binomial(n, 1/2), accumulated term by term.
    let half_n = 0.5f64.powi(n as i32);
    let (mut term, mut below) = (half_n, half_n); // P(X = 0), P(X <= 0)
    let mut j = 1;
    for k in 1..n {
        // Coverage of j = k + 1 needs P(X <= k) <= 0.05.
        term *= (n - k + 1) as f64 / k as f64;
        if below + term > 0.05 {
            break;
        }
        below += term;
        j = k + 1;
    }
    // Under five rounds P(X = 0) alone exceeds 0.05, so the loop stops at once: j = 1, the range.
    (v[j - 1], v[n - j])
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Config {
    Baseline,
    Bulwark,
    Floor,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::Baseline => "baseline",
            Config::Bulwark => "bulwark",
            Config::Floor => "floor",
        }
    }
}

/// Workloads measured in every configuration: (name, netns, worker args, target ratio).
fn workloads(quick: bool) -> Vec<(&'static str, Option<&'static str>, Vec<String>, f64)> {
    let k = if quick { 5 } else { 1 };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let n = |x: u64| (x / k).to_string();
    vec![
        ("exec", None, s(&["exec", "--n", &n(2000)]), 1.05),
        (
            "connect_loopback",
            None,
            s(&["connect", "--addr", "127.0.0.1:9100", "--n", &n(20000)]),
            1.05,
        ),
        (
            "connect_veth",
            Some(NS_CLIENT),
            s(&["connect", "--addr", "10.250.0.2:9100", "--n", &n(20000)]),
            1.05,
        ),
        (
            "send_unwatched",
            None,
            s(&[
                "send",
                "--addr",
                "127.0.0.1:9100",
                "--n",
                &n(300_000),
                "--first",
                "none",
            ]),
            1.02,
        ),
        (
            "send_watched_classified",
            None,
            s(&[
                "send",
                "--addr",
                &format!("127.0.0.1:{}", policies::WATCHED_PORT),
                "--n",
                &n(300_000),
                "--first",
                "tls",
            ]),
            1.10,
        ),
        (
            "send_watched_plaintext",
            None,
            s(&[
                "send",
                "--addr",
                &format!("127.0.0.1:{}", policies::WATCHED_PLAIN_PORT),
                "--n",
                &n(300_000),
                "--first",
                "plain",
            ]),
            2.0,
        ),
    ]
}

/// The bulwark binary under test, as an absolute path, or what to build.
fn bulwark_binary(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| {
        format!(
            "{} not found: build it with `cargo build --release -p bulwark`",
            path.display()
        )
    })
}

fn run(args: RunArgs) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bulwark-bench run needs root (it runs the daemon and creates network namespaces)");
    }
    crate::daemon::ensure_machine_free()?;
    let bulwark = bulwark_binary(&args.bulwark)?;
    let work = std::env::temp_dir().join(format!("bulwark-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let dir = |name: &str, yaml: String| -> Result<PathBuf> {
        let d = work.join(name);
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("policies.yaml"), yaml)?;
        Ok(d)
    };
    let realistic = dir("realistic", policies::realistic())?;
    let events_dir = dir("events", policies::event_flood())?;
    let large = dir("large", policies::large())?;
    let lint_docs = dir("lint", policies::many_documents(1000))?;
    let events_file = work.join("events.jsonl");

    let help = Command::new(&bulwark).args(["run", "--help"]).output()?;
    let floor_supported = String::from_utf8_lossy(&help.stdout).contains("--noop-programs");

    let _veth = VethPair::create()?;
    let _sinks = [
        spawn_sink(None, "127.0.0.1:9100")?,
        spawn_sink(None, &format!("127.0.0.1:{}", policies::WATCHED_PORT))?,
        spawn_sink(None, &format!("127.0.0.1:{}", policies::WATCHED_PLAIN_PORT))?,
        spawn_sink(Some(NS_SERVER), "10.250.0.2:9100")?,
    ];

    let wl = workloads(args.quick);
    let mut configs = vec![Config::Baseline, Config::Bulwark];
    if floor_supported {
        configs.push(Config::Floor);
    }
    // raw[workload][config] = ns/op per round
    let mut raw: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 3]; wl.len()];
    let mut rss_idle = Vec::new();
    let mut rss_peak = Vec::new();
    let mut anon_idle = Vec::new();
    let mut anon_after_exec = Vec::new();
    for round in 0..args.rounds {
        // Rotate the order so no configuration always runs first (cache/thermal bias).
        let mut order = configs.clone();
        order.rotate_left(round % configs.len());
        for cfg in order {
            eprintln!("round {}/{}: {}", round + 1, args.rounds, cfg.name());
            let daemon = match cfg {
                Config::Baseline => None,
                Config::Bulwark => Some(Daemon::start(&bulwark, &realistic, &events_file, &[])?),
                Config::Floor => Some(Daemon::start(
                    &bulwark,
                    &realistic,
                    &events_file,
                    &["--noop-programs"],
                )?),
            };
            if let (Config::Bulwark, Some(d)) = (cfg, &daemon) {
                std::thread::sleep(Duration::from_secs(1));
                let (rss, _, anon) = d.rss()?;
                rss_idle.push(rss as f64);
                anon_idle.push(anon as f64);
            }
            for (i, (name, ns, wargs, _)) in wl.iter().enumerate() {
                // Let the daemon finish the previous workload's events (tens of thousands of
                // connect records): each workload measures its own steady state. Same pause in
                // every configuration.
                std::thread::sleep(Duration::from_secs(1));
                let v = worker(*ns, wargs)
                    .with_context(|| format!("workload {name} ({})", cfg.name()))?;
                raw[i][cfg as usize].push(v["ns_per_op"].as_f64().unwrap_or(f64::NAN));
            }
            if let Some(d) = daemon {
                if cfg == Config::Bulwark {
                    let (_, peak, anon) = d.rss()?;
                    rss_peak.push(peak as f64);
                    anon_after_exec.push(anon as f64);
                }
                d.stop()?;
            }
        }
    }

    let mut rows = Vec::new();
    for (i, (name, _, _, target)) in wl.iter().enumerate() {
        let base = &raw[i][Config::Baseline as usize];
        let ratio_of = |cfg: Config| {
            median(
                raw[i][cfg as usize]
                    .iter()
                    .zip(base)
                    .map(|(x, b)| x / b)
                    .collect(),
            )
        };
        let ratio = ratio_of(Config::Bulwark);
        let floor = if floor_supported {
            Some(ratio_of(Config::Floor))
        } else {
            None
        };
        rows.push(json!({
            "workload": name, "target_ratio": target,
            "baseline_ns_per_op": median(base.clone()),
            "bulwark_ns_per_op": median(raw[i][Config::Bulwark as usize].clone()),
            "floor_ns_per_op": floor.map(|_| median(raw[i][Config::Floor as usize].clone())),
            "ratio": ratio, "floor_ratio": floor, "met": ratio <= *target,
            "raw": { "baseline": base, "bulwark": raw[i][Config::Bulwark as usize], "floor": raw[i][Config::Floor as usize] },
        }));
    }

    let events = event_pipeline(&bulwark, &events_dir, &events_file, args.quick)?;
    let load = compile_and_load(&bulwark, &large, &events_file)?;
    let lint = lint_speed(&bulwark, &lint_docs)?;
    let rss = json!({
        "idle_bytes": median(rss_idle), "peak_under_exec_bytes": median(rss_peak), "target_bytes": 50_000_000,
        "anon_idle_bytes": median(anon_idle), "anon_after_exec_bytes": median(anon_after_exec),
        // Userspace maps the ring's data area twice (reads across the wrap need no copy).
        "ring_buffer_mapping_bytes": 2 * u64::from(daemon_common::EVENTS_RING_BYTES),
    });

    let report = json!({
        "machine": machine(), "rounds": args.rounds, "quick": args.quick,
        "floor_measured": floor_supported,
        "workloads": rows, "event_pipeline": events, "compile_and_load": load, "lint": lint, "memory": rss,
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("report.md"), &md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Drive unconnected UDP sends that a `Post` policy reports, at rising rates; each step runs a
/// fresh daemon so its final `lost_events` belongs to that step alone.
fn event_pipeline(bulwark: &Path, dir: &Path, events: &Path, quick: bool) -> Result<Value> {
    let secs = if quick { 1.0 } else { 3.0 };
    let mut steps = Vec::new();
    let mut best_lossless = 0.0f64;
    let mut best_capacity = 0.0f64;
    for rate in [50_000u64, 100_000, 200_000, 400_000, 0] {
        let d = Daemon::start(bulwark, dir, events, &[])?;
        let cpu_before = d.cpu_seconds()?;
        let r = worker(
            None,
            &[
                "udp-flood",
                "--addr",
                &format!("127.0.0.1:{}", policies::EVENT_PORT),
                "--seconds",
                &secs.to_string(),
                "--rate",
                &rate.to_string(),
            ]
            .map(String::from),
        )?;
        std::thread::sleep(Duration::from_secs(1)); // let the daemon drain
        let cpu = d.cpu_seconds()? - cpu_before;
        let last = d.stop()?;
        let counts = daemon::count_events(events);
        let written = counts.get("policy_match").copied().unwrap_or(0)
            + counts.get("process_connect").copied().unwrap_or(0);
        let lost = last.as_ref().and_then(|s| s["lost_events"].as_u64());
        let per_sec = written as f64 / r["seconds"].as_f64().unwrap_or(secs);
        if lost == Some(0) {
            best_lossless = best_lossless.max(per_sec);
        }
        // What one core of the daemon can sustain, whatever the generator managed to offer on
        // the cores it shares with the daemon.
        let per_cpu_second = if cpu > 0.0 {
            written as f64 / cpu
        } else {
            f64::NAN
        };
        best_capacity = best_capacity.max(per_cpu_second);
        steps.push(json!({
            "target_sends_per_sec": rate, "sends": r["ops"], "events_written": written,
            "events_per_sec": per_sec, "lost_events": lost,
            "daemon_cpu_seconds": cpu, "events_per_daemon_cpu_second": per_cpu_second,
        }));
    }
    Ok(json!({
        "steps": steps, "max_lossless_events_per_sec": best_lossless,
        "events_per_daemon_cpu_second": best_capacity, "target_events_per_sec": 200_000,
    }))
}

/// 10,000 CIDRs and 1,000 binary matchers: compile time (`bulwark compile`) and the daemon's
/// own compile/apply timings from its status event when it reports them.
fn compile_and_load(bulwark: &Path, dir: &Path, events: &Path) -> Result<Value> {
    let t = Instant::now();
    let out = Command::new(bulwark)
        .arg("compile")
        .arg(dir)
        .stdout(Stdio::null())
        .output()?;
    let compile_wall = t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    let d = Daemon::start(bulwark, dir, events, &[])?;
    let start_to_ready = t.elapsed().as_secs_f64() * 1000.0;
    let ready = daemon::last_status(events, &["ready"]).unwrap_or(Value::Null);
    d.stop()?;
    Ok(json!({
        "compile_cli_wall_ms": compile_wall, "compile_cli_ok": out.status.success(),
        "daemon_start_to_ready_ms": start_to_ready,
        "daemon_load_ms": ready.get("load_ms"), "daemon_apply_ms": ready.get("apply_ms"),
        "target_ms": 500,
    }))
}

fn lint_speed(bulwark: &Path, dir: &Path) -> Result<Value> {
    let mut times = Vec::new();
    let mut ok = true;
    for _ in 0..3 {
        let t = Instant::now();
        let out = Command::new(bulwark)
            .arg("lint")
            .arg(dir)
            .stdout(Stdio::null())
            .output()?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        ok &= out.status.success();
    }
    Ok(
        json!({ "documents": 1000, "wall_ms_median": median(times), "all_clean": ok, "target_ms": 1000 }),
    )
}

fn machine() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string());
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%dT%H:%M:%SZ")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({ "kernel": read("/proc/sys/kernel/osrelease").trim(), "cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "date": date })
}

fn mb(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN) / 1e6
}

fn markdown(r: &Value) -> String {
    let mut s = format!(
        "Machine: {} cores, {}, kernel {}, {}; {} rounds{}\n\n| workload | baseline ns/op | bulwark ns/op | ratio | floor ratio | target | met |\n|---|---|---|---|---|---|---|\n",
        r["machine"]["cores"], r["machine"]["cpu"].as_str().unwrap_or("?"), r["machine"]["kernel"].as_str().unwrap_or("?"),
        r["machine"]["date"].as_str().unwrap_or("?"), r["rounds"], if r["quick"].as_bool() == Some(true) { " (quick)" } else { "" }
    );
    for w in r["workloads"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {:.0} | {:.0} | {:.3} | {} | <= {} | {} |\n",
            w["workload"].as_str().unwrap_or("?"),
            w["baseline_ns_per_op"].as_f64().unwrap_or(f64::NAN),
            w["bulwark_ns_per_op"].as_f64().unwrap_or(f64::NAN),
            w["ratio"].as_f64().unwrap_or(f64::NAN),
            w["floor_ratio"]
                .as_f64()
                .map(|f| format!("{f:.3}"))
                .unwrap_or_else(|| "not measured".into()),
            w["target_ratio"],
            if w["met"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            }
        );
    }
    let e = &r["event_pipeline"];
    s += &format!(
        "\nEvent pipeline: max lossless {:.0} events/s (target >= 200000).\n",
        e["max_lossless_events_per_sec"].as_f64().unwrap_or(0.0)
    );
    s += &format!(
        "Daemon capacity: {:.0} events per daemon CPU-second (decode + JSON + write).\n",
        e["events_per_daemon_cpu_second"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
    for st in e["steps"].as_array().into_iter().flatten() {
        s += &format!(
            "- offered {} sends/s: {:.0} events/s written, lost {}\n",
            st["target_sends_per_sec"],
            st["events_per_sec"].as_f64().unwrap_or(0.0),
            st["lost_events"]
        );
    }
    let c = &r["compile_and_load"];
    s += &format!(
        "\nCompile + load (10,000 CIDRs, 1,000 binaries): `bulwark compile` {:.0} ms wall; daemon load (lint + compile) {} ms, kernel apply {} ms, start-to-ready {:.0} ms (target < 500 ms).\n",
        c["compile_cli_wall_ms"].as_f64().unwrap_or(f64::NAN), c["daemon_load_ms"], c["daemon_apply_ms"], c["daemon_start_to_ready_ms"].as_f64().unwrap_or(f64::NAN)
    );
    s += &format!(
        "Lint of 1,000 documents: {:.0} ms wall (target < 1000 ms).\n",
        r["lint"]["wall_ms_median"].as_f64().unwrap_or(f64::NAN)
    );
    s += &format!(
        "Daemon memory: RSS idle {:.1} MB, peak under exec {:.1} MB (target < 50 MB); of that, the daemon's own (anonymous) memory is {:.1} MB idle and {:.1} MB after exec, the rest is the binary and the ring buffer's double mapping ({:.1} MB).\n",
        mb(&r["memory"]["idle_bytes"]),
        mb(&r["memory"]["peak_under_exec_bytes"]),
        mb(&r["memory"]["anon_idle_bytes"]),
        mb(&r["memory"]["anon_after_exec_bytes"]),
        mb(&r["memory"]["ring_buffer_mapping_bytes"]),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::median_interval;

    #[test]
    fn the_median_interval_is_the_range_for_five_rounds_and_narrows_with_more() {
        let five = vec![1.3, 1.1, 1.2, 1.0, 1.4];
        assert_eq!(median_interval(five), (1.0, 1.4));
        let nine: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_eq!(median_interval(nine), (2.0, 8.0));
        // n = 20: P(X <= 5) = 0.0207, P(X <= 6) = 0.0577, so j = 6.
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(median_interval(twenty), (6.0, 15.0));
        assert_eq!(median_interval(vec![2.0, 1.0]), (1.0, 2.0));
        assert!(median_interval(Vec::new()).0.is_nan());
    }
}
