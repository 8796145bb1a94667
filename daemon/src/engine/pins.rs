//! The pin directory: where bulwark's maps and links live on bpffs so that enforcement outlives
//! the daemon. Owns its layout, the ownership lock, and what `bulwark unload` and
//! `bulwark probe` need to know about it. The engine ([`super::Engine`]) loads, adopts and
//! retires through it.
//!
//! # Layout
//! ```text
//! <root>/                          flock()ed by the daemon that owns it (LOCK_EX)
//!   build-<id>/maps/<NAME>         every map of the eBPF object
//!   build-<id>/links/<program>     every linked program (removing the pin detaches it)
//!   build-<id>-partial/            a load in progress: renamed to build-<id> when complete
//! ```
//! A `build-<id>` directory exists only once all of it is pinned (it is renamed into place),
//! so a daemon killed mid-load leaves at most a `-partial` that the next one retires. (bpffs
//! refuses names with dots.)
//!
//! # Ownership
//! A running daemon holds an exclusive `flock` on `<root>`. The kernel drops it when the
//! process ends, however it ends (`kill -9` included), so the lock says exactly whether a
//! daemon owns the pins. A second daemon waits for it (a rolling update that starts the new
//! daemon before the old one has stopped); `bulwark unload` refuses while it is held.

use anyhow::{bail, Context};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The default pin directory (`bulwark run --pin-dir`, `bulwark unload --pin-dir`).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/bulwark";

/// `statfs.f_type` of bpffs.
const BPF_FS_MAGIC: u32 = 0xcafe_4a11;

/// Prefix of every build directory under the root.
const BUILD_PREFIX: &str = "build-";

/// Suffix of a build directory still being pinned.
const PARTIAL_SUFFIX: &str = "-partial";

/// Whether `path` (or, when it does not exist yet, its nearest existing ancestor) is on bpffs.
pub fn on_bpffs(path: &Path) -> bool {
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(path);
    let Ok(c) = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string, st is writable.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    rc == 0 && st.f_type as u32 == BPF_FS_MAGIC
}

/// Fails, saying how to fix it, unless `root` can hold pins.
fn require_bpffs(root: &Path) -> anyhow::Result<()> {
    if !on_bpffs(root) {
        bail!(
            "pin directory {} is not on a bpf filesystem (bpffs), so programs cannot be pinned \
             to outlive the daemon; mount it (`mount -t bpf bpf /sys/fs/bpf`, as \
             scripts/bootstrap.sh does; in a container, mount the host's /sys/fs/bpf), choose \
             a directory under a bpffs mount with --pin-dir, or run ephemeral with --no-pin \
             (enforcement then ends with the daemon)",
            root.display()
        );
    }
    Ok(())
}

/// Whether a directory entry name is a build directory (complete or partial).
fn is_build_dir(name: &str) -> bool {
    name.starts_with(BUILD_PREFIX)
}

/// Build directories under `root` (complete and partial), sorted; none when it is unreadable.
fn build_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| is_build_dir(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// `flock` on an open file; `Ok(false)` when another open file holds a conflicting lock and
/// `wait` is false.
fn flock(f: &File, wait: bool) -> std::io::Result<bool> {
    let op = libc::LOCK_EX | if wait { 0 } else { libc::LOCK_NB };
    loop {
        // SAFETY: a valid fd.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Pid of the process holding a `flock` on the file with this device and inode, from the text
/// of /proc/locks (`1: FLOCK  ADVISORY  WRITE 1234 00:1d:5678 0 EOF`). Pids are those of the
/// reader's pid namespace (0 when the holder is outside it).
pub fn flock_holder(proc_locks: &str, dev_major: u32, dev_minor: u32, ino: u64) -> Option<u32> {
    let want = format!("{dev_major:02x}:{dev_minor:02x}:{ino}");
    proc_locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // A blocked waiter's line has `->` after the index; it does not hold the lock.
        if f.get(1) != Some(&"FLOCK") {
            return None;
        }
        (f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// Who holds the ownership lock of `root`: `Some(pid)` when a process does (pid 0 when it is
/// not visible from here), `None` when nobody does.
fn owner_pid(f: &File) -> Option<u32> {
    let meta = f.metadata().ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    Some(flock_holder(&locks, major, minor, meta.ino()).unwrap_or(0))
}

fn open_dir(root: &Path) -> anyhow::Result<File> {
    File::open(root).with_context(|| format!("cannot open pin directory {}", root.display()))
}

/// The pin directory as owned by this daemon: checked to be on bpffs, created, locked. The lock
/// lasts as long as this value (and the process).
pub struct PinRoot {
    root: PathBuf,
    _lock: File,
}

impl PinRoot {
    /// Checks, creates and locks `root`. When another daemon holds it, says so on stderr and
    /// waits until that one stops (a rolling update may start us first).
    pub fn acquire(root: &Path) -> anyhow::Result<PinRoot> {
        require_bpffs(root)?;
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create pin directory {}", root.display()))?;
        let f = open_dir(root)?;
        if !flock(&f, false)? {
            let who = match owner_pid(&f) {
                Some(pid) if pid > 0 => format!("pid {pid}"),
                _ => "another process".to_string(),
            };
            eprintln!(
                "bulwark: pin directory {} is owned by a running daemon ({who}); waiting for it \
                 to stop",
                root.display()
            );
            flock(&f, true)
                .with_context(|| format!("cannot lock pin directory {}", root.display()))?;
        }
        Ok(PinRoot {
            root: root.to_path_buf(),
            _lock: f,
        })
    }

    /// Where the complete pins of build `id` live.
    pub fn build_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Where build `id` is pinned while it loads (see [`PinRoot::publish`]).
    pub fn partial_dir(&self, id: &str) -> PathBuf {
        self.root.join(format!("{id}{PARTIAL_SUFFIX}"))
    }

    /// Every build directory but `keep` (other builds, and partial loads of any build).
    pub fn others(&self, keep: &Path) -> Vec<PathBuf> {
        build_dirs(&self.root)
            .into_iter()
            .filter(|p| p != keep)
            .collect()
    }

    /// Makes a completely pinned `partial` directory the build directory `dir` (one rename:
    /// the build directory is never seen half pinned).
    pub fn publish(&self, partial: &Path, dir: &Path) -> anyhow::Result<()> {
        std::fs::rename(partial, dir)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))
    }
}

/// One build's pins, as `bulwark unload` removed them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedBuild {
    pub dir: PathBuf,
    /// Programs whose pinned link was removed (they are detached now).
    pub links: Vec<String>,
    /// Number of pinned maps removed.
    pub maps: usize,
}

/// What `bulwark unload` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unloaded {
    pub removed: Vec<RemovedBuild>,
    /// Whether the (then empty) pin directory itself was removed.
    pub root_removed: bool,
}

/// Names of the entries of `dir`, sorted (none when it cannot be read).
pub fn entry_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Removes every build's pins under `root` (detaching their programs: nothing else holds
/// them once the daemon is gone), then `root` itself when it is left empty. Refuses while a
/// daemon owns `root`, unless `force` (its programs are then detached under it). Touches only
/// `build-*` entries, and only on bpffs. A missing `root` is nothing to do.
pub fn unload(root: &Path, force: bool) -> anyhow::Result<Unloaded> {
    if !root.exists() {
        return Ok(Unloaded::default());
    }
    if !on_bpffs(root) || !root.is_dir() {
        bail!(
            "{} is not a directory on a bpf filesystem, so it holds no pins of bulwark's; pass \
             the --pin-dir the daemon ran with",
            root.display()
        );
    }
    let f = open_dir(root)?;
    if !flock(&f, false)? && !force {
        let who = match owner_pid(&f) {
            Some(pid) if pid > 0 => format!(" (pid {pid})"),
            _ => String::new(),
        };
        bail!(
            "a bulwark daemon{who} is running with pin directory {}: stop it first (its \
             programs keep enforcing after it stops, until this command removes them), or pass \
             --force to detach them under it",
            root.display()
        );
    }
    let mut out = Unloaded::default();
    for dir in build_dirs(root) {
        let links = entry_names(&dir.join("links"));
        let maps = entry_names(&dir.join("maps")).len();
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove pins in {}", dir.display()))?;
        out.removed.push(RemovedBuild { dir, links, maps });
    }
    // Only an empty directory goes: whatever else someone keeps there is theirs.
    out.root_removed = std::fs::remove_dir(root).is_ok();
    Ok(out)
}

/// What a pin directory holds, for `bulwark probe` and the daemon's start-up line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PinStatus {
    pub dir: PathBuf,
    /// Whether the directory (or where it would be created) is on bpffs.
    pub bpffs: bool,
    /// Build directories there (`build-<id>`, `-partial` for an interrupted load).
    pub builds: Vec<String>,
    /// This binary's build id (what a daemon started now would adopt).
    pub this_build: String,
    /// Pid of the daemon that owns the pins (0: one does, its pid is not visible here);
    /// `None` when no daemon runs on them.
    pub owner: Option<u32>,
}

/// Looks at `root` without changing it.
pub fn status(root: &Path, this_build: &str) -> PinStatus {
    let owner = File::open(root).ok().and_then(|f| match flock(&f, false) {
        // Got it: nobody owns it (closing `f` releases it again).
        Ok(true) => None,
        Ok(false) => owner_pid(&f),
        Err(_) => None,
    });
    PinStatus {
        dir: root.to_path_buf(),
        bpffs: on_bpffs(root),
        builds: build_dirs(root)
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        this_build: this_build.to_string(),
        owner,
    }
}

impl PinStatus {
    /// One line for people: what is pinned and what the next `bulwark run` does with it.
    pub fn describe(&self) -> String {
        let dir = self.dir.display();
        if !self.bpffs {
            return format!(
                "{dir} is not on bpffs: `bulwark run` cannot pin there (mount bpffs, or run \
                 with --no-pin)"
            );
        }
        if self.builds.is_empty() {
            return format!("nothing pinned in {dir}: the next `bulwark run` loads fresh");
        }
        let owner = match self.owner {
            Some(0) => "owned by a running daemon".to_string(),
            Some(pid) => format!("owned by a running daemon (pid {pid})"),
            None => "no daemon running: the programs keep enforcing their last rules until \
                     `bulwark unload`"
                .to_string(),
        };
        let next = if self.builds.contains(&self.this_build) {
            "a daemon of this build adopts them with no gap"
        } else {
            "a daemon of this build loads next to them and retires them after its first apply"
        };
        let next = match self.owner {
            Some(_) => format!("once it stops, {next}"),
            None => next.to_string(),
        };
        format!(
            "pinned in {dir}: {} ({owner}); {next}",
            self.builds.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_holder_is_found_by_device_and_inode() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:1d:5678 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:1f:1234 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 999 00:1f:1234 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 13 00:1f:12345 0 EOF\n";
        assert_eq!(flock_holder(locks, 0, 0x1f, 1234), Some(4242));
        assert_eq!(flock_holder(locks, 0, 0x1f, 12345), Some(13));
        assert_eq!(
            flock_holder(locks, 0, 0x1d, 5678),
            None,
            "POSIX locks are not ours"
        );
        assert_eq!(flock_holder(locks, 0, 0x20, 1234), None, "other device");
        assert_eq!(flock_holder("", 0, 0x1f, 1234), None);
    }

    #[test]
    fn a_directory_off_bpffs_is_refused_with_how_to_fix_it() {
        let dir = std::env::temp_dir().join(format!("bulwark-pins-{}", std::process::id()));
        assert!(!on_bpffs(&dir));
        let err = PinRoot::acquire(&dir).err().expect("refused").to_string();
        assert!(
            err.contains("not on a bpf filesystem")
                && err.contains("mount -t bpf bpf /sys/fs/bpf")
                && err.contains("--no-pin"),
            "{err}"
        );
        assert!(!dir.exists(), "nothing created off bpffs");
        assert_eq!(
            unload(&dir, false).unwrap(),
            Unloaded::default(),
            "missing: nothing to do"
        );
        std::fs::create_dir_all(&dir).unwrap();
        let err = unload(&dir, false)
            .expect_err("refused off bpffs")
            .to_string();
        assert!(err.contains("not a directory on a bpf filesystem"), "{err}");
        assert!(dir.exists(), "unload removes nothing off bpffs");
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn status_says_what_the_next_daemon_does() {
        let mut st = PinStatus {
            dir: PathBuf::from("/sys/fs/bpf/bulwark"),
            bpffs: true,
            builds: vec![],
            this_build: "build-a".into(),
            owner: None,
        };
        assert!(st.describe().contains("loads fresh"), "{}", st.describe());
        st.builds = vec!["build-a".into()];
        assert!(st.describe().contains("adopts"), "{}", st.describe());
        assert!(
            st.describe().contains("bulwark unload"),
            "{}",
            st.describe()
        );
        st.builds = vec!["build-b".into()];
        st.owner = Some(42);
        let d = st.describe();
        assert!(
            d.contains("once it stops, a daemon of this build loads next to them")
                && d.contains("pid 42"),
            "{d}"
        );
        st.bpffs = false;
        assert!(st.describe().contains("--no-pin"), "{}", st.describe());
    }
}
