//! Test cgroups under the cgroup v2 mount (found where the daemon finds it,
//! `bulwark::engine::host`, never hard-coded): one per "pod", below `<mount>/bulwark-e2e/`. The
//! guard kills whatever still runs in the cgroup and removes it on drop.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Directory below the cgroup v2 mount that holds every test cgroup.
pub const PARENT: &str = "bulwark-e2e";

/// The cgroup v2 mount point the daemon uses, or a message saying what is wrong.
pub fn find_cgroup2_mount() -> Result<PathBuf, String> {
    bulwark::engine::host::require_cgroup2().map_err(|e| format!("{e:#}"))
}

/// The cgroup v2 mount point; panics with [`find_cgroup2_mount`]'s message when there is none.
pub fn cgroup2_mount() -> PathBuf {
    find_cgroup2_mount().unwrap_or_else(|e| panic!("{e}"))
}

/// A cgroup owned by one test.
#[derive(Debug)]
pub struct Cgroup {
    path: PathBuf,
    relative: String,
}

impl Cgroup {
    /// Creates `<mount>/bulwark-e2e/<name>`; `name` must be unique on the machine (callers put
    /// the pid and a counter in it). A leftover cgroup of the same name (from a killed run) is
    /// emptied and reused.
    pub fn create(name: &str) -> Cgroup {
        let mount = cgroup2_mount();
        let relative = format!("{PARENT}/{name}");
        let path = mount.join(&relative);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| {
            panic!(
                "cannot create cgroup {}: {e} (is the cgroup v2 mount writable by root?)",
                path.display()
            )
        });
        Cgroup { path, relative }
    }

    /// Absolute path of the cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the cgroup v2 mount, as the daemon's workloads file wants it.
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// `<cgroup>/cgroup.procs`: writing a pid there moves that process into the cgroup.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Pids currently in the cgroup.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.procs_file())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// Kills every process in the cgroup (cgroup.kill, or SIGKILL per pid on old kernels) and
    /// waits until it is empty.
    pub fn kill_all(&self) {
        if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            for pid in self.pids() {
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        crate::poll_until(Duration::from_secs(5), || {
            self.pids().is_empty().then_some(())
        });
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all();
        // rmdir can fail with EBUSY for a moment after the last process exits.
        let removed = crate::poll_until(Duration::from_secs(5), || {
            std::fs::remove_dir(&self.path).ok()
        });
        if removed.is_none() && self.path.exists() {
            eprintln!(
                "warning: could not remove test cgroup {} (processes left: {:?})",
                self.path.display(),
                self.pids()
            );
        }
    }
}
