//! bulwark's end-to-end test harness: it builds, for each test, a throw-away world of real kernel
//! objects — a "pod" and a "server" network namespace joined by a veth pair, cgroups under the
//! cgroup v2 mount mapped to Kubernetes-style identities, HTTP/HTTPS servers that record every
//! byte they receive — runs the real `bulwark run` daemon against it, and reads its JSON events.
//!
//! Every object is owned by an RAII guard that removes it on drop, even when the test panics.
//! Tests share global kernel hooks, so each takes [`serial()`] first: one test at a time per
//! process (a mutex) and per machine (an `flock` on a lock file), whatever `--test-threads` says.
//!
//! The daemon is tested only through its command line and its JSON events (the contract in
//! `tests/e2e/README.md`); nothing here links the daemon's crates.

pub mod cgroup;
pub mod daemon;
pub mod netns;
pub mod pod;
pub mod policy;
pub mod preflight;
pub mod raw;
pub mod servers;
pub mod world;

pub use cgroup::{cgroup2_mount, Cgroup};
pub use daemon::{monotonic_ns, Daemon, DaemonConfig, Event, PinDir};
pub use netns::NetPair;
pub use pod::{Pod, RunOutput, Running};
pub use policy::{PolicyBuilder, RuleBuilder};
pub use preflight::{preflight, Tools};
pub use raw::{socket_result, Sniffer};
pub use servers::{ServerLog, TestServer};
pub use world::{World, WorldConfig};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Held for the whole of a test: serializes tests within this process and across processes.
pub struct SerialGuard {
    _local: MutexGuard<'static, ()>,
    lock_fd: libc::c_int,
}

impl Drop for SerialGuard {
    fn drop(&mut self) {
        // Closing the descriptor releases the flock.
        unsafe {
            libc::close(self.lock_fd);
        }
    }
}

static LOCAL: Mutex<()> = Mutex::new(());

/// Path of the machine-wide lock file that serializes e2e tests across test binaries.
pub const LOCK_FILE: &str = "/run/bulwark-e2e.lock";

/// Checks the machine ([`preflight()`]) and takes the global test lock (see the module docs). A test that panicked while holding the
/// mutex does not poison it for the others: every test builds its own world from scratch.
pub fn serial() -> SerialGuard {
    // Say everything that is missing (root, tools, cgroup v2) before touching the lock file.
    preflight();
    let local = LOCAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = std::ffi::CString::new(LOCK_FILE).expect("lock path has no NUL");
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        panic!(
            "cannot open the e2e lock file {LOCK_FILE}: {} (the e2e tests must run as root)",
            std::io::Error::last_os_error()
        );
    }
    if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
        let err = std::io::Error::last_os_error();
        unsafe { libc::close(fd) };
        panic!("cannot lock {LOCK_FILE}: {err}");
    }
    SerialGuard {
        _local: local,
        lock_fd: fd,
    }
}

/// A number unique within this process, combined with the pid wherever names must be unique
/// on the machine.
pub fn next_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Default time to wait for anything asynchronous (daemon start, an event, a server). Override
/// with `BULWARK_E2E_TIMEOUT_SECS` on slow machines.
pub fn timeout() -> Duration {
    let secs = std::env::var("BULWARK_E2E_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the e2e crate lives at <workspace>/tests/e2e")
}

/// Polls `f` every 25 ms until it returns `Some`, or `None` after `limit`.
pub fn poll_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// A temporary directory removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/bulwark-e2e-<pid>-<n>-<tag>`, mode 0755 so processes of any uid can run
    /// binaries copied into it.
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "bulwark-e2e-{}-{}-{tag}",
            std::process::id(),
            next_id()
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(rel)`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("BULWARK_E2E_KEEP").is_some() {
            eprintln!("BULWARK_E2E_KEEP set: keeping {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Runs a host command (not in any test namespace) and returns its stdout; panics with the
/// command, status and stderr when it fails. For harness plumbing (`ip`, `openssl`).
pub fn host_cmd(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e} (is it installed and on PATH?)"));
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}
