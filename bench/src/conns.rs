//! `bulwark-bench conns`: what observing every TCP connection costs (issue 11), with no policy:
//! the same workloads with no daemon, with the daemon observing (the default), with the daemon
//! started with `--no-conn-observe`, and with the daemon observing but paused (SIGSTOP) while
//! the workload runs — the kernel programs' own cost, no userspace competing for the CPUs —
//! interleaved over rounds in one run; median ratios against no daemon next to the issue's
//! targets, and the daemon's CPU per connection with and without observation. Loopback only.
//! A paused daemon drains nothing: with `--quick` the records fit the ring buffer, a full run
//! may overflow it (lost records are cheaper than kept ones). With `--compare OTHER`, a fifth
//! configuration observes with another build (the one before a change) in the same rounds.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::time::Duration;

use crate::daemon::Daemon;
use crate::{bulwark_binary, median, median_interval, spawn_on, worker_on, Bg, RunArgs};

const SINK: &str = "127.0.0.1:9300";
const ECHO: &str = "127.0.0.1:9301";
const CONFIGS: [&str; 5] = [
    "baseline",
    "observing",
    "not_observing",
    "observing_paused",
    "observing_compared",
];

/// (name, worker args, target ratio, operations per run for the daemon's CPU per operation:
/// connections, or sends for the send workload — whose one connection made the report print
/// the whole run's daemon CPU, one 10 ms tick, as "10000 µs per op").
fn workloads(quick: bool) -> Vec<(&'static str, Vec<String>, f64, u64)> {
    let k = if quick { 5 } else { 1 };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let (conns, rr, sends) = (20_000 / k, 10_000 / k, 300_000 / k);
    vec![
        (
            "connect_close",
            s(&["connect", "--addr", SINK, "--n", &conns.to_string()]),
            1.05,
            conns,
        ),
        (
            "request_1k_new_connection",
            s(&["request", "--addr", ECHO, "--n", &rr.to_string()]),
            1.10,
            rr,
        ),
        (
            "send_64b_classified",
            s(&[
                "send",
                "--addr",
                SINK,
                "--n",
                &sends.to_string(),
                "--first",
                "plain",
            ]),
            1.02,
            sends,
        ),
    ]
}

/// Runs the rounds; `args.out` gets conns-report.json and conns-report.md.
pub fn run(args: RunArgs) -> Result<()> {
    crate::daemon::ensure_machine_free()?;
    let bulwark = bulwark_binary(&args.bulwark)?;
    let compared = args.compare.as_deref().map(bulwark_binary).transpose()?;
    // The fifth configuration (observing with `--compare`'s binary) only when given.
    let configs = if compared.is_some() { 5 } else { 4 };
    let work = std::env::temp_dir().join(format!("bulwark-bench-conns-{}", std::process::id()));
    let policies = work.join("policies");
    std::fs::create_dir_all(&policies)?;
    let events = work.join("events.jsonl");
    // With --pin the servers run on CPU 1 and the measured client on CPU 0.
    let (client_cpu, server_cpu) = if args.pin {
        (Some(0), Some(1))
    } else {
        (None, None)
    };
    if args.pin && std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        anyhow::bail!("--pin needs at least two CPUs (client on CPU 0, servers on CPU 1)");
    }
    let _sinks: [Bg; 2] = [
        spawn_on(None, &["sink", "--addr", SINK], server_cpu)?,
        spawn_on(
            None,
            &["echo", "--addr", ECHO, "--size", "1024"],
            server_cpu,
        )?,
    ];
    let mut wl = workloads(args.quick);
    if let Some(only) = &args.workload {
        wl.retain(|(name, ..)| name.contains(only.as_str()));
        if wl.is_empty() {
            anyhow::bail!(
                "--workload {only:?} names no workload (connect_close, request_1k_new_connection, \
                 send_64b_classified)"
            );
        }
    }
    // raw[workload][config]: ns/op per round; cpu[workload][config]: daemon CPU s per op.
    let mut raw = vec![vec![Vec::new(); CONFIGS.len()]; wl.len()];
    let mut cpu = vec![vec![Vec::new(); CONFIGS.len()]; wl.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..configs).collect();
        order.rotate_left(round % configs);
        for c in order {
            eprintln!("conns round {}/{}: {}", round + 1, args.rounds, CONFIGS[c]);
            let daemon = match (c, &compared) {
                (0, _) => None,
                (1 | 3, _) => Some(Daemon::start(&bulwark, &policies, &events, &[])?),
                (4, Some(other)) => Some(Daemon::start(other, &policies, &events, &[])?),
                _ => Some(Daemon::start(
                    &bulwark,
                    &policies,
                    &events,
                    &["--no-conn-observe"],
                )?),
            };
            for (i, (name, wargs, _, ops)) in wl.iter().enumerate() {
                std::thread::sleep(Duration::from_secs(1));
                let before = daemon.as_ref().map(|d| d.cpu_seconds()).transpose()?;
                let paused = daemon.as_ref().filter(|_| c == 3).map(|d| d.pid() as i32);
                if let Some(pid) = paused {
                    // SAFETY: signals our own child.
                    unsafe { libc::kill(pid, libc::SIGSTOP) };
                }
                let v = worker_on(None, wargs, client_cpu)
                    .with_context(|| format!("{name} ({})", CONFIGS[c]));
                if let Some(pid) = paused {
                    // SAFETY: signals our own child.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                }
                let v = v?;
                // The daemon's share includes draining this workload's records.
                std::thread::sleep(Duration::from_millis(500));
                if let (Some(d), Some(b)) = (&daemon, before) {
                    cpu[i][c].push((d.cpu_seconds()? - b) / *ops as f64);
                }
                raw[i][c].push(v["ns_per_op"].as_f64().unwrap_or(f64::NAN));
            }
            if let Some(d) = daemon {
                d.stop()?;
            }
        }
    }
    let mut rows = Vec::new();
    for (i, (name, _, target, _)) in wl.iter().enumerate() {
        let base = &raw[i][0];
        let ratios =
            |c: usize| -> Vec<f64> { raw[i][c].iter().zip(base).map(|(x, b)| x / b).collect() };
        let ratio = |c: usize| median(ratios(c));
        let observing = ratio(1);
        let (lo, hi) = median_interval(ratios(1));
        // The compared build against this one, round by round (both observing).
        let paired: Vec<f64> = raw[i][4]
            .iter()
            .zip(&raw[i][1])
            .map(|(x, o)| x / o)
            .collect();
        let (plo, phi) = median_interval(paired.clone());
        rows.push(json!({
            "workload": name, "target_ratio": target,
            "observing_ratio_interval": [lo, hi],
            "compared_over_observing": median(paired),
            "compared_over_observing_interval": [plo, phi],
            "baseline_ns_per_op": median(base.clone()),
            "observing_ns_per_op": median(raw[i][1].clone()),
            "not_observing_ns_per_op": median(raw[i][2].clone()),
            "observing_ratio": observing, "not_observing_ratio": ratio(2),
            "observing_paused_ns_per_op": median(raw[i][3].clone()),
            "kernel_only_ratio": ratio(3),
            "met": observing <= *target,
            "daemon_cpu_us_per_op_observing": median(cpu[i][1].clone()) * 1e6,
            "daemon_cpu_us_per_op_not_observing": median(cpu[i][2].clone()) * 1e6,
            "compared_observing_ratio": ratio(4),
            "daemon_cpu_us_per_op_compared": median(cpu[i][4].clone()) * 1e6,
            "raw": raw[i],
        }));
    }
    let report = json!({
        "rounds": args.rounds, "quick": args.quick, "pinned": args.pin, "workloads": rows,
        "compared": compared.map(|p| p.display().to_string()),
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("conns-report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("conns-report.md"), &md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn markdown(r: &Value) -> String {
    let mut s = format!(
        "Connection observation, no policy; {} rounds{}{}; the interval is the median ratio's (order statistics, >= 90%)\n\n| workload | no daemon ns/op | observing ns/op | ratio | interval | not observing ratio | kernel only ratio (daemon paused) | target | met | daemon CPU µs/op observing | not observing |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
        r["rounds"],
        if r["quick"].as_bool() == Some(true) { " (quick)" } else { "" },
        if r["pinned"].as_bool() == Some(true) {
            "; client on CPU 0, servers on CPU 1"
        } else {
            ""
        }
    );
    for w in r["workloads"].as_array().into_iter().flatten() {
        let f = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
        s += &format!(
            "| {} | {:.0} | {:.0} | {:.3} | {:.3}-{:.3} | {:.3} | {:.3} | <= {} | {} | {:.2} | {:.2} |\n",
            w["workload"].as_str().unwrap_or("?"),
            f("baseline_ns_per_op"),
            f("observing_ns_per_op"),
            f("observing_ratio"),
            w["observing_ratio_interval"][0].as_f64().unwrap_or(f64::NAN),
            w["observing_ratio_interval"][1].as_f64().unwrap_or(f64::NAN),
            f("not_observing_ratio"),
            f("kernel_only_ratio"),
            w["target_ratio"],
            if w["met"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            },
            f("daemon_cpu_us_per_op_observing"),
            f("daemon_cpu_us_per_op_not_observing"),
        );
    }
    if let Some(other) = r["compared"].as_str() {
        s += &format!(
            "\nObserving with {other} in the same rounds (its time over this build's, round by round: below 1 is faster; the interval is the median's):\n\n| workload | ratio | this build's ratio | its time / this build's | interval | daemon CPU µs/op | this build's |\n|---|---|---|---|---|---|---|\n"
        );
        for w in r["workloads"].as_array().into_iter().flatten() {
            let f = |k: &str| w[k].as_f64().unwrap_or(f64::NAN);
            s += &format!(
                "| {} | {:.3} | {:.3} | {:.3} | {:.3}-{:.3} | {:.2} | {:.2} |\n",
                w["workload"].as_str().unwrap_or("?"),
                f("compared_observing_ratio"),
                f("observing_ratio"),
                f("compared_over_observing"),
                w["compared_over_observing_interval"][0]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                w["compared_over_observing_interval"][1]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                f("daemon_cpu_us_per_op_compared"),
                f("daemon_cpu_us_per_op_observing"),
            );
        }
    }
    s
}
