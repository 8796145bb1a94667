//! `bulwark-bench lint`: how `bulwark lint` scales. Generates 1k, 10k and 40k policies (one
//! multi-document file each), the same 10k as one file per policy, and a 10 MB file of
//! comments, runs the given (release) `bulwark lint` on each several times and reports the
//! best and median wall time and the child's peak RSS (`wait4` rusage). Needs no root and
//! loads nothing into the kernel. Timings are reported, never asserted.
//!
//!     cargo build --release -p bulwark -p bulwark-bench
//!     target/release/bulwark-bench lint

use crate::{median, policies};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// The bulwark binary under test (build it with `--release`).
    #[arg(long, default_value = "target/release/bulwark")]
    bulwark: PathBuf,
    /// Runs of each input.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Policy counts, one multi-document file each.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 40_000])]
    sizes: Vec<usize>,
    /// Where lint-report.json and lint-report.md go.
    #[arg(long, default_value = "bench/out")]
    out: PathBuf,
}

/// One lint run: wall seconds, peak RSS of the child in KiB, exit status.
struct Run {
    secs: f64,
    max_rss_kib: i64,
    exit: i32,
}

/// Runs `bulwark lint --format json PATH` and measures it (output discarded).
fn lint_once(bulwark: &Path, input: &Path) -> Result<Run> {
    let t = Instant::now();
    let child = Command::new(bulwark)
        .args(["lint", "--format", "json"])
        .arg(input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {}", bulwark.display()))?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = t.elapsed().as_secs_f64();
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) {
        bail!(
            "`bulwark lint {}` was killed (status {status})",
            input.display()
        );
    }
    Ok(Run {
        secs,
        max_rss_kib: usage.ru_maxrss,
        exit: libc::WEXITSTATUS(status),
    })
}

/// A 10 MB file that is nothing but comments.
fn comments(bytes: usize) -> String {
    let line = "# a comment line of a policy file, long enough to look like one written by hand\n";
    line.repeat(bytes / line.len() + 1)
}

pub fn run(args: LintArgs) -> Result<()> {
    let bulwark = crate::bulwark_binary(&args.bulwark)?;
    let work = std::env::temp_dir().join(format!("bulwark-bench-lint-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut inputs: Vec<(String, usize, PathBuf)> = Vec::new();
    for &n in &args.sizes {
        let path = work.join(format!("policies-{n}.yaml"));
        std::fs::write(&path, policies::lint_mix(n))?;
        inputs.push((format!("{n} policies, one file"), n, path));
    }
    let per_file = 10_000;
    let dir = work.join(format!("files-{per_file}"));
    std::fs::create_dir_all(&dir)?;
    let mixed = policies::lint_mix(per_file);
    for (i, doc) in mixed.split("---\n").filter(|d| !d.is_empty()).enumerate() {
        std::fs::write(dir.join(format!("p{i:05}.yaml")), doc)?;
    }
    inputs.push((format!("{per_file} policies, one file each"), per_file, dir));
    let path = work.join("comments-10mb.yaml");
    std::fs::write(&path, comments(10 * 1024 * 1024))?;
    inputs.push(("10 MB of comments".into(), 0, path));

    let mut rows = Vec::new();
    for (name, n, input) in &inputs {
        let bytes = size_of(input)?;
        let mut secs = Vec::new();
        let mut rss = 0;
        let mut exit = 0;
        for _ in 0..args.runs.max(1) {
            let r = lint_once(&bulwark, input)?;
            if r.exit > 1 {
                bail!(
                    "`bulwark lint {}` failed (exit {})",
                    input.display(),
                    r.exit
                );
            }
            secs.push(r.secs);
            rss = rss.max(r.max_rss_kib);
            exit = r.exit;
        }
        let best = secs.iter().copied().fold(f64::MAX, f64::min);
        let row = json!({
            "input": name, "policies": n, "bytes": bytes, "runs": secs.len(),
            "wall_s_best": best, "wall_s_median": median(secs),
            "peak_rss_mib": rss as f64 / 1024.0, "exit": exit,
        });
        eprintln!("{row}");
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&work);
    let report = json!({ "bulwark": bulwark.display().to_string(), "machine": crate::machine(), "lint": rows });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("lint-report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    let md = markdown(&report);
    std::fs::write(args.out.join("lint-report.md"), &md)?;
    print!("{md}");
    Ok(())
}

/// Bytes of a file, or of the files directly in a directory.
fn size_of(p: &Path) -> Result<u64> {
    let meta = std::fs::metadata(p)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for e in std::fs::read_dir(p)? {
        total += e?.metadata()?.len();
    }
    Ok(total)
}

fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let mut s = format!(
        "`bulwark lint --format json` ({}), {} cores, {}, kernel {}, {}\n\n| input | size | best s | median s | peak RSS MiB | exit |\n|---|---|---|---|---|---|\n",
        r["bulwark"].as_str().unwrap_or("?"),
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
    );
    for row in r["lint"].as_array().into_iter().flatten() {
        s.push_str(&format!(
            "| {} | {:.1} MB | {:.3} | {:.3} | {:.1} | {} |\n",
            row["input"].as_str().unwrap_or("?"),
            row["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            row["wall_s_best"].as_f64().unwrap_or(f64::NAN),
            row["wall_s_median"].as_f64().unwrap_or(f64::NAN),
            row["peak_rss_mib"].as_f64().unwrap_or(f64::NAN),
            row["exit"],
        ));
    }
    s
}
