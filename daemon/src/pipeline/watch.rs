//! Watching the policy directory (recursively) and the workloads file with inotify (plain libc),
//! debounced: a burst of changes (an editor's write + rename, `cp -r`) becomes one [`Change`]
//! sent once the tree has been quiet for the debounce period.

use super::daemon::Change;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::{Duration, Instant};

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

struct Inotify {
    fd: i32,
    /// wd -> (watched directory, is a policy directory)
    watches: HashMap<i32, (PathBuf, bool)>,
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: fd is owned by this struct and closed once.
        unsafe { libc::close(self.fd) };
    }
}

impl Inotify {
    fn new() -> std::io::Result<Self> {
        // SAFETY: plain syscall.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inotify {
            fd,
            watches: HashMap::new(),
        })
    }

    fn add(&mut self, dir: &Path, policy: bool) -> std::io::Result<()> {
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::other("path contains NUL"))?;
        // SAFETY: valid fd and NUL-terminated path.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), MASK) };
        if wd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let entry = self
            .watches
            .entry(wd)
            .or_insert((dir.to_path_buf(), policy));
        entry.1 |= policy;
        Ok(())
    }

    /// Adds `dir` and every non-hidden subdirectory as policy directories.
    fn add_tree(&mut self, dir: &Path) {
        let _ = self.add(dir, true);
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                if !hidden && std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir()) {
                    self.add_tree(&e.path());
                }
            }
        }
    }

    /// Waits up to `timeout` and classifies what changed.
    fn read(&mut self, timeout: Duration, workloads_name: Option<&[u8]>) -> Change {
        let mut change = Change::default();
        let mut pfd = libc::pollfd {
            fd: self.fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().min(60_000) as i32) };
        if n <= 0 {
            return change;
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            // SAFETY: buf is writable for its length.
            let len = unsafe { libc::read(self.fd, buf.as_mut_ptr().cast(), buf.len()) };
            if len <= 0 {
                break;
            }
            let mut off = 0usize;
            let hdr = std::mem::size_of::<libc::inotify_event>();
            while off + hdr <= len as usize {
                // SAFETY: bounds checked; inotify_event is POD, read unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name_end = (off + hdr + ev.len as usize).min(len as usize);
                let raw = &buf[off + hdr..name_end];
                let name = raw.split(|b| *b == 0).next().unwrap_or(&[]);
                if let Some((_, policy)) = self.watches.get(&ev.wd) {
                    if *policy && is_policy_relevant(name, ev.mask) {
                        change.policies = true;
                    }
                    if workloads_name.is_some_and(|w| w == name) {
                        change.workloads = true;
                    }
                }
                off += hdr + ev.len as usize;
            }
        }
        change
    }
}

/// Whether an inotify event in a policy directory can change the policy set: YAML files,
/// directories, the watched directory itself, and ConfigMap-style `..data` symlink swaps.
/// Anything else (an events file written next to the policies, editor swap files) is ignored,
/// so it cannot cause reload loops.
fn is_policy_relevant(name: &[u8], mask: u32) -> bool {
    name.is_empty()
        || mask & libc::IN_ISDIR != 0
        || name.starts_with(b"..")
        || name.ends_with(b".yaml")
        || name.ends_with(b".yml")
}

fn merge(a: &mut Change, b: Change) {
    a.policies |= b.policies;
    a.workloads |= b.workloads;
}

/// Starts the watcher thread. Errors when inotify or the policy directory cannot be watched.
/// `policy_dir` is `None` when policies come from elsewhere (Kubernetes mode): then only the
/// workloads file is watched.
pub fn spawn(
    policy_dir: Option<PathBuf>,
    workloads: Option<PathBuf>,
    debounce: Duration,
) -> anyhow::Result<Receiver<Change>> {
    let (tx, rx) = channel();
    let mut ino = Inotify::new().map_err(|e| anyhow::anyhow!("inotify_init1: {e}"))?;
    if let Some(dir) = &policy_dir {
        ino.add(dir, true).map_err(|e| {
            anyhow::anyhow!(
                "cannot watch policy directory {}: {e} (does it exist? raise \
                 fs.inotify.max_user_watches if the limit is hit)",
                dir.display()
            )
        })?;
        ino.add_tree(dir);
    }
    let wl_name: Option<Vec<u8>> = workloads
        .as_ref()
        .and_then(|w| w.file_name())
        .map(|n| n.as_bytes().to_vec());
    if let Some(w) = &workloads {
        let parent = match w.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        ino.add(&parent, false).map_err(|e| {
            anyhow::anyhow!(
                "cannot watch {} (for {}): {e}",
                parent.display(),
                w.display()
            )
        })?;
    }
    std::thread::Builder::new()
        .name("bulwark-watch".into())
        .spawn(move || watch_loop(ino, policy_dir, wl_name, debounce, tx))?;
    Ok(rx)
}

fn watch_loop(
    mut ino: Inotify,
    policy_dir: Option<PathBuf>,
    wl_name: Option<Vec<u8>>,
    debounce: Duration,
    tx: Sender<Change>,
) {
    loop {
        let mut change = ino.read(Duration::from_secs(1), wl_name.as_deref());
        if change == Change::default() {
            continue;
        }
        // Debounce: keep collecting until quiet for `debounce`.
        let mut quiet_since = Instant::now();
        while quiet_since.elapsed() < debounce {
            let more = ino.read(debounce, wl_name.as_deref());
            if more != Change::default() {
                merge(&mut change, more);
                quiet_since = Instant::now();
            }
        }
        if let (true, Some(dir)) = (change.policies, &policy_dir) {
            // New subdirectories (or a recreated directory) get watched too.
            ino.add_tree(dir);
        }
        if tx.send(change).is_err() {
            return; // daemon gone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bulwark-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn reports_debounced_policy_and_workload_changes() {
        let dir = tmpdir("a");
        let pol = dir.join("policies");
        std::fs::create_dir(&pol).unwrap();
        let wl = dir.join("workloads.yaml");
        std::fs::write(&wl, "workloads: []\n").unwrap();
        let rx = spawn(
            Some(pol.clone()),
            Some(wl.clone()),
            Duration::from_millis(200),
        )
        .unwrap();
        // Nothing happened: nothing reported.
        assert!(rx.recv_timeout(Duration::from_millis(400)).is_err());
        // A burst of policy writes: one change.
        for i in 0..5 {
            std::fs::write(pol.join(format!("p{i}.yaml")), "x").unwrap();
        }
        let c = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(
            c,
            Change {
                policies: true,
                workloads: false
            }
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(500)).is_err(),
            "burst not debounced"
        );
        // Workloads file replaced by rename (as editors do).
        std::fs::write(dir.join("tmp"), "workloads: []\n").unwrap();
        std::fs::rename(dir.join("tmp"), &wl).unwrap();
        let c = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(
            c,
            Change {
                policies: false,
                workloads: true
            }
        );
        // Another file next to the workloads file is ignored.
        std::fs::write(dir.join("unrelated"), "x").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(600)).is_err());
        // A non-policy file in the policy directory (e.g. the events file) is ignored.
        std::fs::write(pol.join("events.jsonl"), "{}").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(600)).is_err());
        // A new subdirectory and a file inside it.
        std::fs::create_dir(pol.join("sub")).unwrap();
        let _ = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        std::fs::write(pol.join("sub/q.yaml"), "x").unwrap();
        let c = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert!(c.policies);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_policy_relevant_names_count() {
        assert!(is_policy_relevant(b"a.yaml", 0));
        assert!(is_policy_relevant(b"a.yml", 0));
        assert!(is_policy_relevant(b"sub", libc::IN_ISDIR));
        assert!(is_policy_relevant(b"..data", 0));
        assert!(is_policy_relevant(b"", libc::IN_DELETE_SELF));
        assert!(!is_policy_relevant(b"events.jsonl", 0));
        assert!(!is_policy_relevant(b".a.yaml.swp", 0));
        assert!(!is_policy_relevant(b"README.md", 0));
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let err = spawn(
            Some(PathBuf::from("/nonexistent/bulwark")),
            None,
            Duration::from_millis(10),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/bulwark") && err.contains("does it exist"),
            "{err}"
        );
    }

    #[test]
    fn without_a_policy_dir_only_the_workloads_file_is_watched() {
        let dir = tmpdir("k8s");
        let wl = dir.join("workloads.yaml");
        std::fs::write(&wl, "workloads: []\n").unwrap();
        let rx = spawn(None, Some(wl.clone()), Duration::from_millis(100)).unwrap();
        // A YAML file next to it is no policy: nothing reported.
        std::fs::write(dir.join("p.yaml"), "x").unwrap();
        assert!(rx.recv_timeout(Duration::from_millis(500)).is_err());
        std::fs::write(&wl, "workloads: [] # changed\n").unwrap();
        let c = rx.recv_timeout(Duration::from_secs(3)).unwrap();
        assert_eq!(
            c,
            Change {
                policies: false,
                workloads: true
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
