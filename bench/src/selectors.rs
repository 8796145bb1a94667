//! `bulwark-bench selectors`: exec and connect cost with 10, 100 and 1,000 selectors loaded
//! (most namespaced to namespaces the bench does not run in), each against no daemon in the
//! same round, interleaved. With selector groups (daemon-common "Groups") a process is judged
//! by its own group only, so the ratios should not grow with the number of selectors.

use crate::daemon::Daemon;
use crate::{median, policies, spawn_sink, worker, RunArgs};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::Duration;

/// The selector counts measured (besides no daemon).
pub const SIZES: [usize; 3] = [10, 100, 1000];

/// Rounds of (no daemon, 10, 100, 1,000 selectors), interleaved; `--out` gets selectors.json
/// and selectors.md.
pub fn run(args: RunArgs) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("bulwark-bench selectors needs root (it runs the daemon)");
    }
    crate::daemon::ensure_machine_free()?;
    let bulwark = std::fs::canonicalize(&args.bulwark)
        .with_context(|| format!("{} not found", args.bulwark.display()))?;
    let work = std::env::temp_dir().join(format!("bulwark-bench-sel-{}", std::process::id()));
    let mut dirs = Vec::new();
    for n in SIZES {
        let d = work.join(format!("sel-{n}"));
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("policies.yaml"), policies::node_selectors(n))?;
        dirs.push(d);
    }
    let events_file = work.join("events.jsonl");
    let _sink = spawn_sink(None, "127.0.0.1:9100")?;
    let k = if args.quick { 5 } else { 1 };
    let workloads: [(&str, Vec<String>); 2] = [
        (
            "exec",
            vec!["exec".into(), "--n".into(), (2000 / k).to_string()],
        ),
        (
            "connect_loopback",
            vec![
                "connect".into(),
                "--addr".into(),
                "127.0.0.1:9100".into(),
                "--n".into(),
                (20000 / k).to_string(),
            ],
        ),
    ];
    // raw[workload][config]: config 0 = no daemon, 1.. = SIZES.
    let configs = SIZES.len() + 1;
    let mut raw = vec![vec![Vec::<f64>::new(); configs]; workloads.len()];
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..configs).collect();
        order.rotate_left(round % configs);
        for cfg in order {
            eprintln!("round {}/{}: config {cfg}", round + 1, args.rounds);
            let daemon = match cfg {
                0 => None,
                c => {
                    let d = Daemon::start(&bulwark, &dirs[c - 1], &events_file, &[])?;
                    // The set must really be in force, not refused (a daemon is ready either way).
                    let ready = crate::daemon::last_status(&events_file, &["ready"]);
                    let loaded = ready
                        .as_ref()
                        .and_then(|r| r["policies"].as_array())
                        .map_or(0, Vec::len);
                    let want = 1 + (SIZES[c - 1] - 2) / 2;
                    if loaded != want {
                        bail!(
                            "{} selectors: {loaded} policies in force, not {want}: {ready:?}",
                            SIZES[c - 1]
                        );
                    }
                    Some(d)
                }
            };
            for (i, (name, wargs)) in workloads.iter().enumerate() {
                std::thread::sleep(Duration::from_secs(1));
                let v = worker(None, wargs).with_context(|| format!("workload {name}"))?;
                raw[i][cfg].push(v["ns_per_op"].as_f64().unwrap_or(f64::NAN));
            }
            if let Some(d) = daemon {
                d.stop()?;
            }
        }
    }
    let mut rows = Vec::new();
    for (i, (name, _)) in workloads.iter().enumerate() {
        let base = &raw[i][0];
        for (c, n) in SIZES.iter().enumerate() {
            let ratios: Vec<f64> = raw[i][c + 1].iter().zip(base).map(|(x, b)| x / b).collect();
            let ratio = median(ratios);
            rows.push(json!({
                "workload": name, "selectors": n,
                "baseline_ns_per_op": median(base.clone()),
                "bulwark_ns_per_op": median(raw[i][c + 1].clone()),
                "ratio": ratio, "target_ratio": 1.05, "met": ratio <= 1.05,
                "raw": { "baseline": base, "bulwark": raw[i][c + 1] },
            }));
        }
    }
    let report = json!({
        "machine": crate::machine(), "rounds": args.rounds, "quick": args.quick, "rows": rows,
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("selectors.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("selectors.md"), &md)?;
    println!("{md}");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn markdown(r: &Value) -> String {
    let mut s = format!(
        "Selectors per node (most namespaced to other namespaces): {} rounds{}\n\n| workload | selectors | no daemon ns/op | bulwark ns/op | ratio | target | met |\n|---|---|---|---|---|---|---|\n",
        r["rounds"],
        if r["quick"].as_bool() == Some(true) { " (quick)" } else { "" }
    );
    for w in r["rows"].as_array().into_iter().flatten() {
        s += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | <= 1.05 | {} |\n",
            w["workload"].as_str().unwrap_or("?"),
            w["selectors"],
            w["baseline_ns_per_op"].as_f64().unwrap_or(f64::NAN),
            w["bulwark_ns_per_op"].as_f64().unwrap_or(f64::NAN),
            w["ratio"].as_f64().unwrap_or(f64::NAN),
            if w["met"].as_bool() == Some(true) {
                "yes"
            } else {
                "NO"
            }
        );
    }
    s
}
