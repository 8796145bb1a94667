//! The process cache: every process the daemon knows, keyed by its identity (tgid, start_ns),
//! with its Tetragon-style `exec_id`, parent link, binary, arguments, cwd, uid and cgroup.
//! Fed by exec/fork/exit records, seeded from `/proc` at start so processes that were already
//! running are known (and can have their selector bits computed on every rule-set apply).
//! Exited entries stay for a grace period (late connect/match records still resolve), and the
//! whole cache is bounded.

use crate::record::{exec_argv, exec_path, split_nul};
use base64::Engine as _;
use daemon_common::{ExecEvent, ForkEvent, EXEC_ARGS_INCOMPLETE, MAX_ARG_BYTES, MAX_ARG_ELEMENTS};
use std::collections::HashMap;
use std::path::Path;

/// `exec_id`: base64 of `"<node>:<start_ns>:<pid>"` (standard alphabet, padded), unique on the
/// node because (pid, start_ns) is.
pub fn exec_id(node: &str, start_ns: u64, pid: u32) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{node}:{start_ns}:{pid}"))
}

/// One known process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: u32,
    /// Boot-time ns of the exec (or fork, or /proc start time for seeded ones): the identity.
    pub start_ns: u64,
    pub exec_id: String,
    pub ppid: u32,
    pub parent_exec_id: Option<String>,
    pub binary: String,
    /// argv (argv[0] included) as the exec record has it (its first 512 bytes).
    pub argv: Vec<String>,
    /// `argv` is cut short (the exec record holds its first 512 bytes).
    pub arguments_truncated: bool,
    /// The kernel did not examine all of argv (past its bounds): argument conditions held.
    pub arguments_incomplete: bool,
    pub cwd: Option<String>,
    pub uid: Option<u32>,
    /// cgroup v2 id (inode of the cgroup directory); 0 when unknown.
    pub cgroup_id: u64,
    /// Boot-time ns when it exited (or was replaced by an exec), `None` while alive.
    pub exited_ns: Option<u64>,
}

impl ProcInfo {
    /// Tetragon-style `arguments`: argv[1..] joined by spaces; arguments that contain
    /// whitespace or quotes, or are empty, are single-quoted shell-style.
    pub fn arguments(&self) -> String {
        join_args(self.argv.get(1..).unwrap_or(&[]))
    }
}

/// Joins arguments for display (see [`ProcInfo::arguments`]).
pub fn join_args(args: &[String]) -> String {
    // Every event describing the process joins them again: one string, no copy per argument.
    let mut out = String::with_capacity(args.iter().map(|a| a.len() + 1).sum());
    for (i, a) in args.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if a.is_empty()
            || a.chars()
                .any(|c| c.is_whitespace() || c == '\'' || c == '"')
        {
            out.push('\'');
            out.push_str(&a.replace('\'', r"'\''"));
            out.push('\'');
        } else {
            out.push_str(a);
        }
    }
    out
}

/// Bounded map of processes by (tgid, start_ns).
pub struct ProcessCache {
    node: String,
    entries: HashMap<(u32, u64), ProcInfo>,
    /// Most recent identity of each tgid, for records that carry no start_ns.
    latest: HashMap<u32, u64>,
    capacity: usize,
    retention_ns: u64,
}

/// Default bound: twice the kernel's live-process limit (exited entries linger).
pub const DEFAULT_CAPACITY: usize = 2 * daemon_common::MAX_PROCESSES as usize;
/// Default time exited processes are kept for late records.
pub const DEFAULT_RETENTION_NS: u64 = 30_000_000_000;

impl ProcessCache {
    pub fn new(node: &str, capacity: usize, retention_ns: u64) -> Self {
        ProcessCache {
            node: node.to_string(),
            entries: HashMap::new(),
            latest: HashMap::new(),
            capacity: capacity.max(1),
            retention_ns,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The process (tgid, start_ns); with `start_ns == 0` or an identity not seen, the most
    /// recent process of that tgid.
    pub fn get(&self, tgid: u32, start_ns: u64) -> Option<&ProcInfo> {
        if start_ns != 0 {
            if let Some(p) = self.entries.get(&(tgid, start_ns)) {
                return Some(p);
            }
        }
        let latest = self.latest.get(&tgid)?;
        let p = self.entries.get(&(tgid, *latest))?;
        // A different identity of a reused pid is not the process asked for.
        if start_ns != 0 && p.start_ns > start_ns {
            return None;
        }
        Some(p)
    }

    /// True when the exact identity (tgid, start_ns) is known.
    pub fn contains(&self, tgid: u32, start_ns: u64) -> bool {
        self.entries.contains_key(&(tgid, start_ns))
    }

    /// A process moved to cgroup `cgroup_id` without exec: its events name the workload it is
    /// in now.
    pub fn on_move(&mut self, tgid: u32, start_ns: u64, cgroup_id: u64) {
        if let Some(p) = self.entries.get_mut(&(tgid, start_ns)) {
            p.cgroup_id = cgroup_id;
        }
    }

    /// Processes that have not exited.
    pub fn live(&self) -> impl Iterator<Item = &ProcInfo> {
        self.entries.values().filter(|p| p.exited_ns.is_none())
    }

    fn parent_id(&self, ppid: u32, parent_start_ns: u64) -> Option<String> {
        if ppid == 0 {
            return None;
        }
        if let Some(p) = self.get(ppid, parent_start_ns) {
            return Some(p.exec_id.clone());
        }
        (parent_start_ns != 0).then(|| exec_id(&self.node, parent_start_ns, ppid))
    }

    fn insert(&mut self, info: ProcInfo) {
        let key = (info.pid, info.start_ns);
        match self.latest.get(&info.pid) {
            Some(&cur) if cur > info.start_ns => {}
            _ => {
                self.latest.insert(info.pid, info.start_ns);
            }
        }
        self.entries.insert(key, info);
        if self.entries.len() > self.capacity {
            self.evict(self.entries.len() - self.capacity);
        }
    }

    /// Records an exec; a previous identity of the same tgid counts as gone from now on.
    /// `cwd` is read by the caller from /proc (best effort).
    pub fn on_exec(&mut self, e: &ExecEvent, cwd: Option<String>) -> ProcInfo {
        let tgid = e.header.tgid;
        let now = e.header.time_ns;
        if let Some(&prev) = self.latest.get(&tgid) {
            if prev != e.header.start_ns {
                if let Some(p) = self.entries.get_mut(&(tgid, prev)) {
                    p.exited_ns.get_or_insert(now);
                }
            }
        }
        let info = ProcInfo {
            pid: tgid,
            start_ns: e.header.start_ns,
            exec_id: exec_id(&self.node, e.header.start_ns, tgid),
            ppid: e.ppid,
            parent_exec_id: self.parent_id(e.ppid, e.parent_start_ns),
            binary: exec_path(e),
            argv: exec_argv(e),
            arguments_truncated: e.args_truncated != 0,
            arguments_incomplete: e.flags & EXEC_ARGS_INCOMPLETE != 0,
            cwd,
            uid: Some(e.uid),
            cgroup_id: e.cgroup_id,
            exited_ns: None,
        };
        self.insert(info.clone());
        info
    }

    /// Records a fork: the child starts as a copy of its parent (same image), new identity.
    pub fn on_fork(&mut self, f: &ForkEvent) {
        let parent = self.get(f.parent_tgid, f.parent_start_ns).cloned();
        let tgid = f.header.tgid;
        let info = ProcInfo {
            pid: tgid,
            start_ns: f.header.start_ns,
            exec_id: exec_id(&self.node, f.header.start_ns, tgid),
            ppid: f.parent_tgid,
            parent_exec_id: self.parent_id(f.parent_tgid, f.parent_start_ns),
            binary: parent
                .as_ref()
                .map(|p| p.binary.clone())
                .unwrap_or_default(),
            argv: parent.as_ref().map(|p| p.argv.clone()).unwrap_or_default(),
            arguments_truncated: parent.as_ref().is_some_and(|p| p.arguments_truncated),
            arguments_incomplete: parent.as_ref().is_some_and(|p| p.arguments_incomplete),
            cwd: parent.as_ref().and_then(|p| p.cwd.clone()),
            uid: parent.as_ref().and_then(|p| p.uid),
            cgroup_id: parent.as_ref().map(|p| p.cgroup_id).unwrap_or(0),
            exited_ns: None,
        };
        self.insert(info);
    }

    /// Marks a process exited at `now_ns`; returns it (still cached for late records).
    pub fn on_exit(&mut self, tgid: u32, start_ns: u64, now_ns: u64) -> Option<ProcInfo> {
        let key = {
            let p = self.get(tgid, start_ns)?;
            (p.pid, p.start_ns)
        };
        let p = self.entries.get_mut(&key)?;
        p.exited_ns.get_or_insert(now_ns);
        Some(p.clone())
    }

    /// A stand-in for a process the cache never saw: its identity and, best effort, what
    /// /proc still says about it. Pid 0 (an owner the kernel did not know, e.g. the listener
    /// of a server connection opened before the daemon) is no process: /proc is not asked,
    /// which would cost a failed path walk for every such event.
    pub fn unknown(&self, tgid: u32, start_ns: u64, proc_root: &Path) -> ProcInfo {
        let from_proc = if tgid == 0 {
            None
        } else {
            read_proc_entry(proc_root, tgid, &self.node)
        };
        let mut info = from_proc.unwrap_or_else(|| ProcInfo {
            pid: tgid,
            start_ns,
            exec_id: String::new(),
            ppid: 0,
            parent_exec_id: None,
            binary: String::new(),
            argv: Vec::new(),
            arguments_truncated: false,
            arguments_incomplete: false,
            cwd: None,
            uid: None,
            cgroup_id: 0,
            exited_ns: None,
        });
        if start_ns != 0 {
            info.start_ns = start_ns;
        }
        info.exec_id = exec_id(&self.node, info.start_ns, tgid);
        info
    }

    /// Marks live entries whose pid no longer exists under `proc_root` as exited at `now_ns`
    /// (their exit record was lost); returns how many. Entries whose pid now belongs to a
    /// newer process are left to that process's own records.
    pub fn sweep_dead(&mut self, proc_root: &Path, now_ns: u64) -> usize {
        let mut n = 0;
        for p in self.entries.values_mut() {
            if p.exited_ns.is_none() && !proc_root.join(p.pid.to_string()).exists() {
                p.exited_ns = Some(now_ns);
                n += 1;
            }
        }
        n
    }

    /// Drops exited entries older than the retention period.
    pub fn gc(&mut self, now_ns: u64) {
        let retention = self.retention_ns;
        self.entries.retain(|_, p| {
            p.exited_ns
                .is_none_or(|t| now_ns.saturating_sub(t) < retention)
        });
        let entries = &self.entries;
        self.latest
            .retain(|pid, start| entries.contains_key(&(*pid, *start)));
    }

    /// Evicts `n` entries: exited ones first (oldest exit first), then the oldest live ones.
    fn evict(&mut self, n: usize) {
        let mut keys: Vec<_> = self
            .entries
            .values()
            .map(|p| {
                (
                    p.exited_ns.is_none(),
                    p.exited_ns.unwrap_or(p.start_ns),
                    p.pid,
                    p.start_ns,
                )
            })
            .collect();
        keys.sort_unstable();
        for (_, _, pid, start) in keys.into_iter().take(n) {
            self.entries.remove(&(pid, start));
            if self.latest.get(&pid) == Some(&start) {
                self.latest.remove(&pid);
            }
        }
    }

    /// Adds every process under `proc_root` (normally `/proc`); kernel threads are skipped.
    /// Returns how many were added. Parents are linked once all are read.
    pub fn seed_from_proc(
        &mut self,
        proc_root: &Path,
        cgroup_id_of: &dyn Fn(u32) -> Option<u64>,
    ) -> usize {
        let Ok(dir) = std::fs::read_dir(proc_root) else {
            return 0;
        };
        let mut found = Vec::new();
        for ent in dir.flatten() {
            let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(mut info) = read_proc_entry(proc_root, pid, &self.node) {
                info.cgroup_id = cgroup_id_of(pid).unwrap_or(0);
                found.push(info);
            }
        }
        let starts: HashMap<u32, u64> = found.iter().map(|p| (p.pid, p.start_ns)).collect();
        let n = found.len();
        for mut p in found {
            p.parent_exec_id = starts.get(&p.ppid).map(|s| exec_id(&self.node, *s, p.ppid));
            self.insert(p);
        }
        n
    }
}

fn clock_ticks_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000
    }
}

/// (ppid, starttime in ticks) from the text of `/proc/PID/stat` (comm may hold spaces and
/// parentheses, so parse after the last `)`).
pub fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After comm: state(0) ppid(1) ... starttime is field 22 of the line, index 19 here.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start))
}

/// Reads one process from /proc (`None` for kernel threads and vanished pids).
pub fn read_proc_entry(proc_root: &Path, pid: u32, node: &str) -> Option<ProcInfo> {
    let base = proc_root.join(pid.to_string());
    let stat = std::fs::read_to_string(base.join("stat")).ok()?;
    let (ppid, ticks) = parse_stat(&stat)?;
    let argv = split_nul(&std::fs::read(base.join("cmdline")).ok()?);
    let exe = std::fs::read_link(base.join("exe")).ok();
    if exe.is_none() && argv.is_empty() {
        return None; // kernel thread
    }
    let binary = exec_path_of(exe.as_deref(), argv.first().map(String::as_str));
    let uid = std::fs::read_to_string(base.join("status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
        });
    let start_ns = ticks * clock_ticks_ns();
    Some(ProcInfo {
        pid,
        start_ns,
        exec_id: exec_id(node, start_ns, pid),
        ppid,
        parent_exec_id: None,
        binary,
        // What /proc shows is all of it, and past the kernel's bounds as a reseed sees it.
        arguments_incomplete: argv.len() > MAX_ARG_ELEMENTS
            || argv.iter().map(|a| a.len() + 1).sum::<usize>() > MAX_ARG_BYTES,
        argv,
        arguments_truncated: false,
        cwd: read_cwd(proc_root, pid),
        uid,
        cgroup_id: 0,
        exited_ns: None,
    })
}

/// The path a running process was most likely exec'd by. The kernel matches (and reports)
/// the path as passed to execve (`/bin/sh`), while `/proc/PID/exe` has symlinks resolved
/// (`/usr/bin/dash`); argv[0] is used when it is an absolute path naming the same file as
/// `exe`, so seeded processes are matched and shown the way an exec would have been.
pub fn exec_path_of(exe: Option<&Path>, argv0: Option<&str>) -> String {
    let Some(exe) = exe else {
        return argv0.unwrap_or_default().to_string();
    };
    if let Some(a0) = argv0.filter(|a| a.starts_with('/')) {
        if let (Ok(x), Ok(y)) = (std::fs::canonicalize(a0), std::fs::canonicalize(exe)) {
            if x == y {
                return a0.to_string();
            }
        }
    }
    exe.to_string_lossy().into_owned()
}

/// `/proc/PID/cwd`, best effort.
pub fn read_cwd(proc_root: &Path, pid: u32) -> Option<String> {
    std::fs::read_link(proc_root.join(pid.to_string()).join("cwd"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::exec_record;
    use daemon_common::{EventHeader, EVENT_FORK};

    #[test]
    fn arguments_quote_empty_spaced_and_quoted_ones_shell_style() {
        let args: Vec<String> = ["-s", "", "a b", "it's", "x\"y", "tab\there"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(
            join_args(&args),
            "-s '' 'a b' 'it'\\''s' 'x\"y' 'tab\there'"
        );
        assert_eq!(join_args(&[]), "");
        assert_eq!(join_args(&args[..1]), "-s");
    }

    #[test]
    fn exec_id_is_base64_of_node_start_pid() {
        assert_eq!(exec_id("n1", 5, 42), "bjE6NTo0Mg==");
        assert_ne!(exec_id("n1", 5, 42), exec_id("n2", 5, 42));
        assert_ne!(exec_id("n1", 5, 42), exec_id("n1", 6, 42));
    }

    #[test]
    fn parent_correlation_through_fork_and_exec() {
        let mut c = ProcessCache::new("node", 100, 1_000);
        let sh = c.on_exec(&exec_record(10, 100, 1, 0, "/bin/sh", &["sh"]), None);
        assert_eq!(sh.exec_id, exec_id("node", 100, 10));
        assert_eq!(sh.parent_exec_id, None); // pid 1 unknown, no parent start
                                             // sh forks 11, which execs curl.
        c.on_fork(&ForkEvent {
            header: EventHeader {
                kind: EVENT_FORK,
                tgid: 11,
                time_ns: 150,
                start_ns: 150,
            },
            parent_tgid: 10,
            _pad: 0,
            parent_start_ns: 100,
        });
        assert_eq!(c.get(11, 150).unwrap().binary, "/bin/sh");
        let curl = c.on_exec(
            &exec_record(11, 200, 10, 100, "/usr/bin/curl", &["curl", "-s", "a b"]),
            Some("/tmp".into()),
        );
        assert_eq!(curl.parent_exec_id.as_deref(), Some(sh.exec_id.as_str()));
        assert_eq!(curl.arguments(), "-s 'a b'");
        // The fork identity of 11 is gone once it execs; lookups without start find curl.
        assert!(c.get(11, 150).unwrap().exited_ns.is_some());
        assert_eq!(c.get(11, 0).unwrap().binary, "/usr/bin/curl");
        assert_eq!(c.get(11, 999).unwrap().binary, "/usr/bin/curl");
        // A parent identity the cache never saw still yields a consistent id.
        let orphan = c.on_exec(&exec_record(20, 300, 19, 77, "/bin/true", &["true"]), None);
        assert_eq!(orphan.parent_exec_id, Some(exec_id("node", 77, 19)));
    }

    #[test]
    fn exited_entries_linger_then_go_and_cache_is_bounded() {
        let mut c = ProcessCache::new("n", 3, 1_000);
        c.on_exec(&exec_record(1, 10, 0, 0, "/a", &["a"]), None);
        c.on_exec(&exec_record(2, 20, 0, 0, "/b", &["b"]), None);
        let gone = c.on_exit(1, 10, 500).unwrap();
        assert_eq!(gone.exited_ns, Some(500));
        c.gc(1_400); // 900 ns after exit: kept
        assert!(c.get(1, 10).is_some());
        c.gc(1_500); // retention reached: dropped
        assert!(c.get(1, 10).is_none());
        assert!(c.on_exit(1, 10, 1_600).is_none());
        // Bound: the 4th insert evicts the oldest.
        c.on_exec(&exec_record(3, 30, 0, 0, "/c", &["c"]), None);
        c.on_exec(&exec_record(4, 40, 0, 0, "/d", &["d"]), None);
        c.on_exec(&exec_record(5, 50, 0, 0, "/e", &["e"]), None);
        assert_eq!(c.len(), 3);
        assert!(c.get(2, 20).is_none());
        assert!(c.get(5, 50).is_some());
    }

    #[test]
    fn stat_parsing_handles_odd_comm() {
        let line = "123 (a) b (c)) S 77 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 4242 1 1";
        assert_eq!(parse_stat(line), Some((77, 4242)));
        assert_eq!(parse_stat("123 (x) S"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn seeded_binary_is_the_exec_path_when_argv0_names_it() {
        let dir = std::env::temp_dir().join(format!("bulwark-seed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("sleep-link");
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        let real = std::fs::canonicalize("/bin/sleep").unwrap();
        // Run through the symlink: argv[0] is the link, exe the resolved file.
        let mut child = std::process::Command::new(&link).arg("5").spawn().unwrap();
        // Same file, but argv[0] is not a path: exe is all we know.
        use std::os::unix::process::CommandExt;
        let mut other = std::process::Command::new(&link)
            .arg0("renamed")
            .arg("5")
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let proc_root = Path::new("/proc");
        let a = read_proc_entry(proc_root, child.id(), "n").unwrap();
        let b = read_proc_entry(proc_root, other.id(), "n").unwrap();
        let _ = (child.kill(), other.kill(), child.wait(), other.wait());
        assert_eq!(a.binary, link.to_str().unwrap());
        assert_eq!(a.argv, vec![link.to_str().unwrap(), "5"]);
        assert_eq!(b.binary, real.to_str().unwrap());
        assert_eq!(b.argv, vec!["renamed", "5"]);
        // argv[0] naming another file does not win.
        assert_eq!(
            exec_path_of(Some(real.as_path()), Some("/bin/true")),
            real.to_str().unwrap()
        );
        assert_eq!(exec_path_of(None, Some("x")), "x");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seeds_from_real_proc_with_own_binary() {
        let mut c = ProcessCache::new("n", DEFAULT_CAPACITY, DEFAULT_RETENTION_NS);
        let n = c.seed_from_proc(Path::new("/proc"), &|_| Some(7));
        assert!(n > 1, "only {n} processes seeded from /proc");
        let me = std::process::id();
        let own = c.get(me, 0).expect("the test's own pid is in the cache");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(own.binary, exe.to_string_lossy());
        assert_eq!(own.cgroup_id, 7);
        assert_eq!(own.uid, Some(unsafe { libc::getuid() }));
        assert_eq!(
            own.cwd.as_deref(),
            Some(std::env::current_dir().unwrap().to_str().unwrap())
        );
        // Our parent (cargo / the shell) is known too, and linked.
        let ppid = std::os::unix::process::parent_id();
        let parent = c.get(ppid, 0).expect("parent seeded");
        assert_eq!(own.parent_exec_id.as_deref(), Some(parent.exec_id.as_str()));
        // Nothing seeded is dead; a pid that does not exist is swept.
        assert_eq!(c.sweep_dead(Path::new("/proc"), 1), 0);
        c.on_exec(
            &crate::record::tests::exec_record(u32::MAX - 1, 5, 0, 0, "/x", &["x"]),
            None,
        );
        assert_eq!(c.sweep_dead(Path::new("/proc"), 1), 1);
        assert_eq!(c.get(u32::MAX - 1, 5).unwrap().exited_ns, Some(1));
        // Kernel threads (kthreadd, pid 2) are skipped.
        assert!(c.get(2, 0).is_none());
        // A missing /proc seeds nothing rather than failing.
        let mut empty = ProcessCache::new("n", 10, 10);
        assert_eq!(
            empty.seed_from_proc(Path::new("/nonexistent"), &|_| None),
            0
        );
    }
}
