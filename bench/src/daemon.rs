//! Starting and stopping the daemon under test, and reading its status events.

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
