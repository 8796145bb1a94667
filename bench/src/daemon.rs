//! Starting and stopping the daemon under test, reading its status events, and refusing to
//! measure while another bulwark enforces on the machine.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `bulwark run`, stopped (SIGTERM) on drop.
pub struct Daemon {
    child: Child,
    pub events: PathBuf,
}

impl Daemon {
    /// Start `bulwark run` on `policy_dir` and wait for its `ready` status event.
    pub fn start(
        bulwark: &Path,
        policy_dir: &Path,
        events: &Path,
        extra: &[&str],
    ) -> Result<Daemon> {
        let _ = std::fs::remove_file(events);
        let stderr = std::fs::File::create(events.with_extension("stderr"))?;
        let child = Command::new(bulwark)
            // Ephemeral: a pinned daemon would keep enforcing into the next configuration.
            .args(["run", "--no-pin", "--node-name", "bench", "--policy-dir"])
            .arg(policy_dir)
            .arg("--events")
            .arg(events)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {}", bulwark.display()))?;
        let mut d = Daemon {
            child,
            events: events.to_path_buf(),
        };
        d.wait_status(&["ready"], Duration::from_secs(120))?;
        Ok(d)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until a status event with one of `states` appears; returns it.
    pub fn wait_status(&mut self, states: &[&str], timeout: Duration) -> Result<serde_json::Value> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Some(st) = self.child.try_wait()? {
                let err = std::fs::read_to_string(self.events.with_extension("stderr"))
                    .unwrap_or_default();
                bail!("bulwark exited ({st}) before becoming ready:\n{err}");
            }
            if let Some(v) = last_status(&self.events, states) {
                return Ok(v);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("bulwark: no status event {states:?} within {timeout:?}")
    }

    /// Resident set size now, at its peak, and the anonymous part (heap, stacks: the daemon's
    /// own memory, without file and ring-buffer mappings), in bytes (from /proc/PID/status).
    pub fn rss(&self) -> Result<(u64, u64, u64)> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .unwrap_or(0)
        };
        Ok((field("VmRSS:"), field("VmHWM:"), field("RssAnon:")))
    }

    /// CPU time (user + system) the daemon has used so far, in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the `(comm)`; utime and stime are fields 14 and 15 of the line.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok((ticks(11) + ticks(12)) / hz)
    }

    /// SIGTERM, wait, and return the last status event (it carries `lost_events`).
    pub fn stop(mut self) -> Result<Option<serde_json::Value>> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if self.child.try_wait()?.is_some() {
                return Ok(last_status(&self.events, &["stopping"]));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        bail!("bulwark did not stop within 20 s of SIGTERM")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// The last status event in `events` whose state is one of `states`.
pub fn last_status(events: &Path, states: &[&str]) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(events).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["type"] == "status" && states.iter().any(|s| v["state"] == *s))
}

/// Count events by type in the events file.
pub fn count_events(events: &Path) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(events) {
        for l in text.lines() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(l) {
                *m.entry(v["type"].as_str().unwrap_or("?").to_string())
                    .or_insert(0) += 1;
            }
        }
    }
    m
}

/// Fails when another bulwark would run its programs in every configuration of a run, the
/// no-daemon baseline included: a daemon still running, or programs a daemon left pinned and
/// attached after it stopped (one started without `--no-pin`). Every ratio of such a run
/// would be wrong without anything looking amiss. The kernel's list of loaded programs is the
/// truth (its names are bulwark's own: `bulwark_*`, and `noop_*` for the floor).
pub fn ensure_machine_free() -> Result<()> {
    // Programs whose last link or pin just went (a daemon stopping, `bulwark unload`) are
    // freed by the kernel shortly after: give them a few seconds.
    let deadline = Instant::now() + Duration::from_secs(5);
    let loaded = loop {
        let loaded = loaded_bulwark_programs();
        if loaded.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            break loaded;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let first = &loaded[0];
    let pins = bulwark_pins(Path::new("/sys/fs/bpf"));
    let fix = match pins.first() {
        Some(dir) => format!(
            "they are pinned in {}: stop the daemon that owns them, if any, then `bulwark \
             unload --pin-dir {}`",
            dir.display(),
            dir.display()
        ),
        None => "stop the bulwark daemon that runs them".to_string(),
    };
    bail!(
        "{} bulwark program(s) are loaded ({first}, ...) and would run in every configuration, \
         the no-daemon baseline included: {fix}, and run again",
        loaded.len()
    )
}

/// The names of the loaded BPF programs that are bulwark's (`bulwark_*`, `noop_*`), from the
/// kernel's program list (aya's `loaded_programs`). Programs it cannot read are skipped.
fn loaded_bulwark_programs() -> Vec<String> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_string))
        .filter(|name| name.starts_with("bulwark_") || name.starts_with("noop_"))
        .collect()
}

/// The pin directories under `bpffs` that hold something and are bulwark's (named `bulwark*`,
/// as `bulwark run --pin-dir`'s default and the e2e tests' are).
fn bulwark_pins(bpffs: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(bpffs) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("bulwark"))
        .map(|e| e.path())
        .filter(|p| std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some()))
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bulwark-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn pins_found_only_when_a_bulwark_dir_holds_something() {
        let fs = scratch("pins");
        std::fs::create_dir_all(fs.join("bulwark-empty")).unwrap();
        std::fs::create_dir_all(fs.join("other/x")).unwrap();
        std::fs::create_dir_all(fs.join("progs.debug")).unwrap();
        assert!(bulwark_pins(&fs).is_empty());
        std::fs::create_dir_all(fs.join("bulwark/build-1/links")).unwrap();
        assert_eq!(bulwark_pins(&fs), vec![fs.join("bulwark")]);
        std::fs::remove_dir_all(&fs).unwrap();
    }
}
