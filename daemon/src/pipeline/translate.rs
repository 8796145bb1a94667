//! Record-to-event translation: the one place that turns the kernel's records into the JSON
//! events of docs/events.md, and writes them. It keeps the process cache (so every event names
//! its process by `exec_id`, with parent and workload), the rule set of each slot (so a match
//! names its policy and rule) and the words of outcomes, actions, hooks and signals.

use super::clock::BootClock;
use super::conn::{ConnOutput, ConnReport, Conns};
use super::kernel::Rules;
use super::process::{self, read_cwd, ProcInfo, ProcessCache};
use super::subject::{RecentSubjects, Subject, SubjectKey};
use super::workload::WorkloadRegistry;
use crate::record::{decode_exit_code, DecodeError, Record};
use bulwark_events::{
    Action, Body, Destination, Encryption, Event, Hook, Mode, Outcome, Parent, PolicyMatch,
    Process, Reason, Status, Window,
};
use daemon_common::{
    MatchEvent, ACTION_BLOCK, ACTION_SIGKILL, ENC_PLAINTEXT, ENC_TLS, HOOK_CONNECT, HOOK_EGRESS,
    HOOK_EXEC, HOOK_INGRESS, PROTO_TCP, PROTO_UDP, REASON_ARGS_INCOMPLETE, REASON_CAPACITY,
    REASON_EXISTING_CONNECTION, REASON_ICMP_SOCKET, REASON_MPTCP, REASON_NONE,
    REASON_PACKET_SOCKET, REASON_RAW_SOCKET, REASON_TCP_FAST_OPEN, REASON_UNSEEN_PAYLOAD,
};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sees every event the pipeline writes, as a typed value, right after its line (the
/// Kubernetes controller's violation queue in `bulwark run --kubernetes`). Must not block.
pub type EventObserver = Box<dyn FnMut(&Event) + Send>;

/// Turns records into events and writes them.
pub struct Pipeline<R> {
    node: String,
    clock: BootClock,
    proc_root: PathBuf,
    pub cache: ProcessCache,
    pub registry: WorkloadRegistry,
    /// Rule set last applied to each slot (match records name their slot).
    slots: [Option<Arc<R>>; 2],
    out: Box<dyn Write + Send>,
    /// The event line being written (kept to reuse its allocation).
    line: Vec<u8>,
    /// Records userspace could not decode.
    pub decode_errors: u64,
    /// Exec-hook matches waiting for their exec record.
    pending: Vec<(Instant, MatchEvent)>,
    /// The last file accesses and calls, for the `file` / `syscall` matches that follow them.
    subjects: RecentSubjects,
    write_failed: bool,
    observer: Option<EventObserver>,
    /// Open connections (connection observation's records joined by socket cookie).
    pub conns: Conns,
    /// Processes moved to a cgroup of another namespace (`EVENT_PROCESS_MOVED`), by tgid: the
    /// daemon recomputes their selector bits after the poll that brought them.
    pub moved: Vec<u32>,
}

impl<R: Rules> Pipeline<R> {
    pub fn new(node: &str, proc_root: PathBuf, out: Box<dyn Write + Send>) -> Self {
        Pipeline {
            node: node.to_string(),
            clock: BootClock::now(),
            proc_root,
            cache: ProcessCache::new(
                node,
                process::DEFAULT_CAPACITY,
                process::DEFAULT_RETENTION_NS,
            ),
            registry: WorkloadRegistry::new(),
            slots: [None, None],
            out,
            line: Vec::with_capacity(4096),
            decode_errors: 0,
            pending: Vec::new(),
            subjects: RecentSubjects::default(),
            write_failed: false,
            observer: None,
            conns: Conns::new(
                bulwark_conns::ClusterCidrs::defaults(),
                bulwark_conns::Signatures::default(),
            ),
            moved: Vec::new(),
        }
    }

    /// Hands every event written from now on to `observer` as well.
    pub fn observe(&mut self, observer: EventObserver) {
        self.observer = Some(observer);
    }

    /// Records the rule set now in `slot` (match records name the slot they matched in).
    pub fn set_slot(&mut self, slot: u8, rules: Arc<R>) {
        if let Some(s) = self.slots.get_mut(usize::from(slot)) {
            *s = Some(rules);
        }
    }

    fn process_json(&self, p: &ProcInfo) -> Process {
        Process {
            exec_id: p.exec_id.clone(),
            pid: p.pid,
            uid: p.uid,
            binary: p.binary.clone(),
            arguments: p.arguments(),
            arguments_truncated: p.arguments_truncated,
            cwd: p.cwd.clone(),
            start_time: self.clock.rfc3339(p.start_ns),
            parent_exec_id: p.parent_exec_id.clone(),
            pod: self.registry.get(p.cgroup_id).map(|w| w.pod.clone()),
        }
    }

    /// The `process` of an event by `tgid`/`start_ns`: a cached process is described in place
    /// (no copy of its entry first), any other as [`Pipeline::lookup`] finds it.
    fn process_of(&self, tgid: u32, start_ns: u64, cgroup_id: u64) -> Process {
        match self.cache.get(tgid, start_ns) {
            Some(info) => self.process_json(info),
            None => self.process_json(&self.lookup(tgid, start_ns, cgroup_id)),
        }
    }

    fn lookup(&self, tgid: u32, start_ns: u64, cgroup_id: u64) -> ProcInfo {
        match self.cache.get(tgid, start_ns) {
            Some(p) => p.clone(),
            None => {
                let mut p = self.cache.unknown(tgid, start_ns, &self.proc_root);
                if p.cgroup_id == 0 {
                    p.cgroup_id = cgroup_id;
                }
                p
            }
        }
    }

    fn event(&self, time_ns: u64, body: Body) -> Event {
        self.event_at(self.clock.rfc3339(time_ns), body)
    }

    /// An event whose time is already formatted (a close's `close_time`, a window's `end`).
    fn event_at(&self, time: String, body: Body) -> Event {
        Event {
            time,
            node_name: self.node.clone(),
            body,
        }
    }

    /// Turns one record into events. The kernel reports an exec-hook match before the exec
    /// itself; such a match waits (see [`Pipeline::flush_pending`]) and is emitted right after
    /// its process's `process_exec`, so it describes the new image, not the forked parent.
    pub fn handle_record(&mut self, rec: Result<Record, DecodeError>) -> Vec<Event> {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                self.decode_errors += 1;
                if self.decode_errors == 1 {
                    eprintln!("bulwark: warning: {e} (counted in lost_events)");
                }
                return Vec::new();
            }
        };
        if let Record::Match(m) = &rec {
            let h = m.header;
            if m.hook == HOOK_EXEC && h.start_ns != 0 && !self.cache.contains(h.tgid, h.start_ns) {
                self.pending.push((Instant::now(), *m));
                return Vec::new();
            }
        }
        let exec_key = match &rec {
            Record::Exec(e) => Some((e.header.tgid, e.header.start_ns)),
            _ => None,
        };
        let mut out: Vec<Event> = self.event_for(rec).into_iter().collect();
        if let Some((tgid, start)) = exec_key {
            if !self.pending.is_empty() {
                let (ready, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
                    .into_iter()
                    .partition(|(_, m)| m.header.tgid == tgid && m.header.start_ns == start);
                self.pending = keep;
                out.extend(ready.iter().filter_map(|(_, m)| self.match_event(m)));
            }
        }
        out
    }

    /// Emits waiting exec-hook matches older than `max_age` (their exec record never came:
    /// lost, or the process is described as well as the cache and /proc allow).
    pub fn flush_pending(&mut self, max_age: Duration) -> Vec<Event> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let (old, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(t, _)| t.elapsed() >= max_age);
        self.pending = keep;
        old.iter()
            .filter_map(|(_, m)| self.match_event(m))
            .collect()
    }

    fn event_for(&mut self, rec: Record) -> Option<Event> {
        match rec {
            Record::Exec(e) => {
                let cwd = read_cwd(&self.proc_root, e.header.tgid);
                let info = self.cache.on_exec(&e, cwd);
                let parent = info.parent_exec_id.as_ref().map(|id| {
                    let binary = self
                        .cache
                        .get(e.ppid, e.parent_start_ns)
                        .map(|p| p.binary.clone())
                        .unwrap_or_default();
                    Parent {
                        exec_id: id.clone(),
                        pid: e.ppid,
                        binary,
                    }
                });
                let process = self.process_json(&info);
                Some(self.event(e.header.time_ns, Body::ProcessExec { process, parent }))
            }
            Record::Fork(f) => {
                self.cache.on_fork(&f);
                None
            }
            Record::Exit(x) => {
                let h = x.header;
                let info = match self.cache.on_exit(h.tgid, h.start_ns, h.time_ns) {
                    Some(p) => p,
                    None => self.lookup(h.tgid, h.start_ns, 0),
                };
                let (status, sig) = decode_exit_code(x.exit_code);
                let process = self.process_json(&info);
                Some(self.event(
                    h.time_ns,
                    Body::ProcessExit {
                        process,
                        status,
                        signal: sig.map(signal_name),
                    },
                ))
            }
            Record::Connect(c) => {
                let h = c.header;
                let process = self.process_of(h.tgid, h.start_ns, c.cgroup_id);
                Some(self.event(
                    h.time_ns,
                    Body::ProcessConnect {
                        process,
                        destination: destination(&c.dest),
                        blocked: c.blocked != 0,
                    },
                ))
            }
            Record::Match(m) => self.match_event(&m),
            Record::Syscall(c) => {
                let h = c.header;
                let info = self.lookup(h.tgid, h.start_ns, c.cgroup_id);
                let process = self.process_json(&info);
                let syscall = syscall_of(&c);
                self.subjects
                    .record(subject_key(&h, c.tid), Subject::Syscall(syscall.clone()));
                Some(self.event(h.time_ns, Body::ProcessSyscall { process, syscall }))
            }
            Record::File(f) => {
                let h = f.header;
                let info = self.lookup(h.tgid, h.start_ns, f.cgroup_id);
                let process = self.process_json(&info);
                let file = file_accessed(&f);
                self.subjects
                    .record(subject_key(&h, f.tid), Subject::File(file.clone()));
                Some(self.event(h.time_ns, Body::ProcessFile { process, file }))
            }
            Record::ConnPayload(p) => {
                self.conns.on_payload(&p);
                None
            }
            Record::Conn(c) => {
                let out = self.conns.on_conn(&c)?;
                Some(self.conn_event(out))
            }
            Record::ProcessMoved(m) => {
                let h = m.header;
                self.cache.on_move(h.tgid, h.start_ns, m.cgroup_id);
                self.moved.push(h.tgid);
                None
            }
        }
    }

    /// The `process_close` or `conn_stats` event of a connection.
    fn conn_event(&mut self, out: ConnOutput) -> Event {
        // The report is ours: its connection moves into the event.
        let named = |p: &Self, r: ConnReport| {
            let process = p.process_of(r.tgid, r.start_ns, 0);
            let mut connection = r.connection;
            connection.open_time = p.clock.rfc3339(r.open_ns);
            (process, connection)
        };
        match out {
            ConnOutput::Close(r) => {
                let time_ns = r.time_ns;
                let (process, mut connection) = named(self, r);
                let time = self.clock.rfc3339(time_ns);
                connection.close_time = Some(time.clone());
                self.event_at(
                    time,
                    Body::ProcessClose {
                        process,
                        connection,
                    },
                )
            }
            ConnOutput::Stats {
                report,
                window_start_ns,
                window_sent,
                window_received,
            } => {
                let time_ns = report.time_ns;
                let (process, connection) = named(self, report);
                let time = self.clock.rfc3339(time_ns);
                let window = Window {
                    start: self.clock.rfc3339(window_start_ns),
                    end: time.clone(),
                    bytes_sent: window_sent,
                    bytes_received: window_received,
                };
                self.event_at(
                    time,
                    Body::ConnStats {
                        process,
                        connection,
                        window,
                    },
                )
            }
        }
    }

    /// The `policy_match` event of a match record; `None` (counted as undecodable) for a hook
    /// this daemon does not know.
    fn match_event(&mut self, m: &MatchEvent) -> Option<Event> {
        let h = m.header;
        let info = self.lookup(h.tgid, h.start_ns, m.cgroup_id);
        let process = self.process_json(&info);
        // The record names a table: its slot and group (daemon-common "Groups").
        let rules = self
            .slots
            .get(usize::from(m.slot & 1))
            .and_then(|s| s.as_ref());
        let mi = rules.and_then(|r| r.match_info(u32::from(m.slot >> 1), m.selector));
        let enforced = m.enforced != 0;
        let (action, mut outcome) = action_outcome(m.actions, enforced);
        let reason = match reason(m.reason) {
            Ok(r) => r,
            Err(other) => {
                eprintln!(
                    "bulwark: warning: match record with unknown reason {other} (daemon and eBPF \
                     object out of sync?); reported with reason null"
                );
                None
            }
        };
        if reason == Some(Reason::Capacity) && enforced {
            // No room for its state: the process was killed at exec (or at the apply).
            outcome = Outcome::Killed;
        } else if reason == Some(Reason::PacketSocket) {
            // No hook can refuse a packet socket: the process was (or would have been) killed.
            outcome = if enforced {
                Outcome::Killed
            } else {
                Outcome::WouldKill
            };
        }
        let hook = match m.hook {
            HOOK_EXEC => Hook::Exec,
            HOOK_CONNECT => Hook::Connect,
            HOOK_EGRESS => Hook::Egress,
            HOOK_INGRESS => Hook::Ingress,
            daemon_common::HOOK_SYSCALL => Hook::Syscall,
            daemon_common::HOOK_FILE => Hook::File,
            other => {
                self.decode_errors += 1;
                eprintln!(
                    "bulwark: warning: match record with unknown hook {other} (counted in \
                     lost_events)"
                );
                return None;
            }
        };
        let monitor = mi
            .as_ref()
            .map_or(!enforced && action != Action::Post, |i| i.monitor);
        // The access or call the kernel judged: the record of this thread at this instant.
        let subject = match hook {
            Hook::File | Hook::Syscall => self.subjects.get(subject_key(&h, m.tid)),
            _ => None,
        };
        let (file, syscall) = match subject {
            Some(Subject::File(f)) if hook == Hook::File => (Some(f.clone()), None),
            Some(Subject::Syscall(c)) if hook == Hook::Syscall => (None, Some(c.clone())),
            _ => (None, None),
        };
        let body = Body::PolicyMatch(PolicyMatch {
            policy_name: mi.as_ref().map(|i| i.policy_name.clone()),
            policy_namespace: mi.as_ref().and_then(|i| i.policy_namespace.clone()),
            rule: mi.as_ref().map(|i| i.rule.clone()),
            hook,
            action,
            mode: if monitor {
                Mode::Monitor
            } else {
                Mode::Enforce
            },
            enforced,
            outcome,
            process,
            // A socket the guard refused never had a destination.
            destination: (matches!(hook, Hook::Connect | Hook::Egress | Hook::Ingress)
                && !reason.is_some_and(Reason::is_socket_guard))
            .then(|| destination(&m.dest)),
            encryption: match (hook, m.encryption) {
                (Hook::Egress | Hook::Ingress, ENC_PLAINTEXT) => Some(Encryption::Plaintext),
                (Hook::Egress | Hook::Ingress, ENC_TLS) => Some(Encryption::Tls),
                _ => None,
            },
            // The exec program knows which selectors held only because the arguments were
            // incomplete; for later hooks (syscall too) the process's exec says its arguments
            // were.
            reason: if reason.is_none()
                && hook != Hook::Exec
                && info.arguments_incomplete
                && mi.as_ref().is_some_and(|i| i.uses_arguments)
            {
                Some(Reason::ArgumentsIncomplete)
            } else {
                reason
            },
            file,
            syscall,
        });
        Some(self.event(h.time_ns, body))
    }

    /// Writes one event line (flushed by [`Pipeline::flush`]).
    pub fn emit(&mut self, ev: &Event) {
        // Serialized into a reused line buffer, then written whole: the serializer's many
        // small writes stay plain appends instead of calls through the boxed output.
        self.line.clear();
        let written = ev
            .write_json(&mut self.line)
            .map_err(std::io::Error::from)
            .and_then(|()| {
                self.line.push(b'\n');
                self.out.write_all(&self.line)
            });
        if let Err(e) = written {
            if !self.write_failed {
                eprintln!("bulwark: error: cannot write events: {e}");
                self.write_failed = true;
            }
        }
        if let Some(observe) = self.observer.as_mut() {
            observe(ev);
        }
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            if !self.write_failed {
                eprintln!("bulwark: error: cannot write events: {e}");
                self.write_failed = true;
            }
        }
    }

    /// Status event now.
    pub fn status(&mut self, status: Status) {
        let ev = Event {
            time: self.clock.rfc3339_now(),
            node_name: self.node.clone(),
            body: Body::Status(status),
        };
        self.emit(&ev);
        self.flush();
    }
}

/// Strongest action of a match's action bits, and its outcome.
pub fn action_outcome(actions: u8, enforced: bool) -> (Action, Outcome) {
    let action = if actions & ACTION_SIGKILL != 0 {
        Action::Sigkill
    } else if actions & ACTION_BLOCK != 0 {
        Action::Block
    } else {
        Action::Post
    };
    (action, Outcome::of(action, enforced))
}

/// The word of a match record's `REASON_*` byte (`Ok(None)` for none), or the unknown byte.
pub fn reason(byte: u8) -> Result<Option<Reason>, u8> {
    Ok(Some(match byte {
        REASON_NONE => return Ok(None),
        REASON_TCP_FAST_OPEN => Reason::TcpFastOpen,
        REASON_UNSEEN_PAYLOAD => Reason::UnseenPayload,
        REASON_EXISTING_CONNECTION => Reason::ExistingConnection,
        REASON_CAPACITY => Reason::Capacity,
        REASON_RAW_SOCKET => Reason::RawSocket,
        REASON_ICMP_SOCKET => Reason::IcmpSocket,
        REASON_MPTCP => Reason::Mptcp,
        REASON_PACKET_SOCKET => Reason::PacketSocket,
        REASON_ARGS_INCOMPLETE => Reason::ArgumentsIncomplete,
        other => return Err(other),
    }))
}

/// Event form of a kernel destination.
pub fn destination(d: &daemon_common::Destination) -> Destination {
    let ip = match d.family as i32 {
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(d.addr)),
        _ => IpAddr::V4(Ipv4Addr::new(d.addr[0], d.addr[1], d.addr[2], d.addr[3])),
    };
    Destination {
        ip: ip.to_string(),
        port: d.port,
        protocol: match d.protocol {
            PROTO_TCP => "TCP".into(),
            PROTO_UDP => "UDP".into(),
            p => format!("IP{p}"),
        },
    }
}

/// Conventional name of a signal number (`SIGKILL`), or `SIG<n>` for unnamed ones.
pub fn signal_name(sig: u32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGURG",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        n => return format!("SIG{n}"),
    };
    name.to_string()
}

/// The key that links a `file` / `syscall` record (`header`, thread `tid`) and its matches.
fn subject_key(header: &daemon_common::EventHeader, tid: u32) -> SubjectKey {
    SubjectKey {
        tgid: header.tgid,
        tid,
        time_ns: header.time_ns,
    }
}

/// The `file` of a file record: the path as the kernel wrote it, the call's name from the table
/// of its ABI.
fn file_accessed(f: &daemon_common::FileEvent) -> bulwark_events::FileAccessed {
    use bulwark_events::file::{accesses, device, open_flags, uring_op_name};
    let arch = bulwark_compiler::target_arch();
    let index = if f.compat != 0 {
        daemon_common::SYSCALL_COMPAT_BASE + f.nr
    } else {
        f.nr
    };
    let abi = match (f.compat != 0, arch.compat()) {
        (true, Some(compat)) => compat.as_str(),
        _ => arch.as_str(),
    };
    let len = (f.path_len as usize).min(f.path.len());
    let open = u32::from(f.op) == daemon_common::FILE_OP_OPEN;
    let uring = f.via != daemon_common::FILE_VIA_SYSCALL;
    bulwark_events::FileAccessed {
        path: (len > 0).then(|| String::from_utf8_lossy(&f.path[..len]).into_owned()),
        path_resolved: f.resolved != 0,
        access: accesses(f.access),
        syscall: if uring {
            None
        } else {
            bulwark_compiler::call_name(arch, index).map(|(n, _)| n.to_string())
        },
        io_uring: uring.then(|| uring_op_name(f.nr)),
        unjudged: daemon_common::file_unjudged_reason(f.via).map(str::to_string),
        abi: abi.to_string(),
        flags: open.then(|| open_flags(f.flags)),
        return_value: (f.at_exit != 0).then_some(f.ret),
        device: (f.ino != 0).then(|| device(f.dev)),
        inode: (f.ino != 0).then_some(f.ino),
    }
}

/// The `syscall` of a syscall record: names from the table of the call's ABI (this daemon's
/// architecture, or its compat table).
fn syscall_of(c: &daemon_common::SyscallEvent) -> bulwark_events::Syscall {
    use bulwark_events::syscall::{arguments, error_of};
    use bulwark_events::{Syscall, SyscallPhase};
    let arch = bulwark_compiler::target_arch();
    let index = if c.compat != 0 {
        daemon_common::SYSCALL_COMPAT_BASE + c.nr
    } else {
        c.nr
    };
    let named = bulwark_compiler::call_name(arch, index);
    let abi = match (c.compat != 0, arch.compat()) {
        (true, Some(compat)) => compat.as_str(),
        _ => arch.as_str(),
    };
    let name = named.map(|(n, _)| n);
    let at_exit = c.at_exit != 0;
    Syscall {
        name: name.map(str::to_string),
        number: c.nr,
        abi: abi.to_string(),
        phase: if at_exit {
            SyscallPhase::Exit
        } else {
            SyscallPhase::Entry
        },
        arguments: arguments(name, &c.args),
        return_value: at_exit.then_some(c.ret),
        error: if at_exit { error_of(c.ret) } else { None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fakes::{Buf, FakeRules};
    use crate::record::tests::exec_record;
    use crate::record::{as_bytes, decode};
    use daemon_common::{
        ConnectEvent, EventHeader, ExitEvent, ACTION_POST, EVENT_CONNECT, EVENT_EXIT, EVENT_MATCH,
    };

    /// A pipeline of node `node-1` over this host's /proc, writing to the returned buffer.
    fn pipeline() -> (Pipeline<FakeRules>, Buf) {
        let out = Buf::default();
        let p = Pipeline::new("node-1", PathBuf::from("/proc"), Box::new(out.clone()));
        (p, out)
    }

    /// Decodes and translates raw records as the main loop does, writing the events.
    fn feed(p: &mut Pipeline<FakeRules>, records: &[Vec<u8>]) {
        for r in records {
            for ev in p.handle_record(decode(r)) {
                p.emit(&ev);
            }
        }
        p.flush();
    }

    #[test]
    fn records_become_events_with_correlated_ids() {
        let (mut p, out) = pipeline();
        let slot = 1;
        p.set_slot(
            slot,
            Arc::new(FakeRules(vec!["no-curl".into(), "monitor-nc".into()])),
        );
        let sh = exec_record(4_000_001, 1_000, 1, 0, "/bin/sh", &["sh", "-c", "curl x"]);
        let curl = exec_record(
            4_000_002,
            2_000,
            4_000_001,
            1_000,
            "/usr/bin/curl",
            &["curl", "x"],
        );
        let conn = ConnectEvent {
            header: EventHeader {
                kind: EVENT_CONNECT,
                tgid: 4_000_002,
                time_ns: 2_500,
                start_ns: 2_000,
            },
            cgroup_id: 0,
            dest: daemon_common::Destination {
                addr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                port: 80,
                family: 2,
                protocol: PROTO_TCP,
            },
            blocked: 1,
            _pad: [0; 3],
        };
        let m = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_000_002,
                time_ns: 2_600,
                start_ns: 2_000,
            },
            slot,
            selector: 0,
            hook: HOOK_CONNECT,
            actions: ACTION_POST | ACTION_BLOCK,
            enforced: 1,
            encryption: 0,
            dest: conn.dest,
            ..Default::default()
        };
        let monitor = MatchEvent {
            selector: 1,
            hook: HOOK_EGRESS,
            actions: ACTION_BLOCK,
            enforced: 0,
            encryption: ENC_PLAINTEXT,
            ..m
        };
        let exit = ExitEvent {
            header: EventHeader {
                kind: EVENT_EXIT,
                tgid: 4_000_002,
                time_ns: 3_000,
                start_ns: 2_000,
            },
            exit_code: 9,
            _pad: 0,
        };
        let records = [
            as_bytes(&sh),
            as_bytes(&curl),
            as_bytes(&conn),
            as_bytes(&m),
            as_bytes(&monitor),
            as_bytes(&exit),
            vec![1, 2, 3], // garbage: counted as lost
        ];
        feed(&mut p, &records);
        let ev = out.take();
        assert_eq!(ev.len(), 6, "{ev:#?}");
        let ids = |e: &serde_json::Value| e["process"]["exec_id"].as_str().unwrap().to_string();
        assert_eq!(ev[0]["type"], "process_exec");
        assert_eq!(ev[0]["process"]["binary"], "/bin/sh");
        assert_eq!(ev[0]["process"]["arguments"], "-c 'curl x'");
        assert_eq!(ev[1]["process"]["parent_exec_id"], ids(&ev[0]).as_str());
        assert_eq!(ev[1]["parent"]["binary"], "/bin/sh");
        assert_eq!(ev[1]["parent"]["pid"], 4_000_001);
        assert_eq!(ev[2]["type"], "process_connect");
        assert_eq!(ids(&ev[2]), ids(&ev[1]));
        assert_eq!(
            ev[2]["destination"],
            serde_json::json!({"ip":"10.0.0.2","port":80,"protocol":"TCP"})
        );
        assert_eq!(ev[2]["blocked"], true);
        assert_eq!(ev[3]["type"], "policy_match");
        assert_eq!(ev[3]["policy_name"], "no-curl");
        assert_eq!(ev[3]["rule"], "no-curl-rule");
        assert_eq!(ev[3]["hook"], "connect");
        assert_eq!(ev[3]["action"], "Block");
        assert_eq!(ev[3]["mode"], "enforce");
        assert_eq!(ev[3]["outcome"], "blocked");
        assert_eq!(ev[3]["encryption"], serde_json::Value::Null);
        assert_eq!(ev[3]["reason"], serde_json::Value::Null);
        assert_eq!(ids(&ev[3]), ids(&ev[1]));
        assert_eq!(ev[4]["policy_name"], "monitor-nc");
        assert_eq!(ev[4]["mode"], "monitor");
        assert_eq!(ev[4]["outcome"], "would_block");
        assert_eq!(ev[4]["encryption"], "plaintext");
        assert_eq!(ev[5]["type"], "process_exit");
        assert_eq!(ev[5]["signal"], "SIGKILL");
        assert_eq!(ev[5]["status"], 0);
        assert_eq!(ids(&ev[5]), ids(&ev[1]));
        for e in &ev {
            assert_eq!(e["node_name"], "node-1");
            assert!(e["time"].as_str().unwrap().ends_with('Z'));
        }
        assert_eq!(p.decode_errors, 1);
    }

    #[test]
    fn exec_matches_wait_for_their_exec() {
        let (mut p, out) = pipeline();
        let slot = 0;
        p.set_slot(slot, Arc::new(FakeRules(vec!["kill-x".into()])));
        // bash (4_100_000) forked 4_100_001, which execs /tmp/x; the kernel reports the kill
        // match before the exec record.
        let bash = exec_record(4_100_000, 100, 1, 0, "/bin/bash", &["bash"]);
        let fork = daemon_common::ForkEvent {
            header: EventHeader {
                kind: daemon_common::EVENT_FORK,
                tgid: 4_100_001,
                time_ns: 150,
                start_ns: 150,
            },
            parent_tgid: 4_100_000,
            _pad: 0,
            parent_start_ns: 100,
        };
        let kill = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_100_001,
                time_ns: 200,
                start_ns: 200,
            },
            slot,
            selector: 0,
            hook: HOOK_EXEC,
            actions: ACTION_SIGKILL,
            enforced: 1,
            ..Default::default()
        };
        let x = exec_record(4_100_001, 200, 4_100_000, 100, "/tmp/x", &["x", "-y"]);
        // A match whose exec never arrives.
        let orphan = MatchEvent {
            header: EventHeader {
                tgid: 4_100_002,
                start_ns: 300,
                ..kill.header
            },
            ..kill
        };
        feed(
            &mut p,
            &[
                as_bytes(&bash),
                as_bytes(&fork),
                as_bytes(&kill),
                as_bytes(&orphan),
                as_bytes(&x),
            ],
        );
        let ev = out.take();
        let kinds: Vec<_> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            vec!["process_exec", "process_exec", "policy_match"],
            "{ev:#?}"
        );
        assert_eq!(ev[2]["process"]["binary"], "/tmp/x");
        assert_eq!(ev[2]["process"]["arguments"], "-y");
        assert_eq!(ev[2]["process"]["exec_id"], ev[1]["process"]["exec_id"]);
        assert_eq!(ev[2]["outcome"], "killed");
        assert_eq!(ev[2]["policy_name"], "kill-x");
        // The orphan waits until it is old enough, then describes what is known of it.
        assert!(p.flush_pending(Duration::from_secs(60)).is_empty());
        let flushed = p.flush_pending(Duration::ZERO);
        assert_eq!(flushed.len(), 1);
        let orphan_ev = serde_json::to_value(&flushed[0]).unwrap();
        assert_eq!(orphan_ev["type"], "policy_match");
        assert_eq!(orphan_ev["process"]["pid"], 4_100_002);
        assert_eq!(
            orphan_ev["process"]["exec_id"],
            crate::pipeline::process::exec_id("node-1", 300, 4_100_002).as_str()
        );
        assert!(p.flush_pending(Duration::ZERO).is_empty(), "written once");
    }

    /// A file record of `path` by thread `tid` of process 4_300_000 at `time_ns`.
    fn file_record(tid: u32, time_ns: u64, path: &str) -> daemon_common::FileEvent {
        let mut bytes = [0u8; daemon_common::PATH_LEN];
        bytes[..path.len()].copy_from_slice(path.as_bytes());
        daemon_common::FileEvent {
            header: EventHeader {
                kind: daemon_common::EVENT_FILE,
                tgid: 4_300_000,
                time_ns,
                start_ns: 100,
            },
            selectors: 1,
            cgroup_id: 0,
            ino: 0,
            flags: 0,
            ret: 3,
            dev: 0,
            access: daemon_common::FILE_ACCESS_READ,
            nr: 257,
            tid,
            table: 0,
            path_len: path.len() as u32,
            op: daemon_common::FILE_OP_OPEN as u8,
            compat: 0,
            at_exit: 1,
            enforced: 1,
            resolved: 1,
            via: daemon_common::FILE_VIA_SYSCALL,
            _pad: [0; 2],
            path: bytes,
        }
    }

    /// Two threads of one process judged at once on two CPUs: their records and matches come
    /// interleaved, and each match carries its own thread's file or call (not the process's
    /// latest), one whose record was lost carries none, and other hooks carry neither.
    #[test]
    fn file_and_syscall_matches_carry_their_own_threads_subject() {
        let (mut p, out) = pipeline();
        p.set_slot(
            0,
            Arc::new(FakeRules(vec!["protect-shadow".into(), "watch".into()])),
        );
        let proc_exec = exec_record(4_300_000, 100, 1, 0, "/usr/bin/python3", &["python3"]);
        let (main, worker) = (4_300_000, 4_300_001);
        let shadow = file_record(main, 1_000, "/etc/shadow");
        let harmless = file_record(worker, 1_000, "/tmp/harmless");
        let file_match = |tid: u32, time_ns: u64, selector: u8| MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_300_000,
                time_ns,
                start_ns: 100,
            },
            selector,
            hook: daemon_common::HOOK_FILE,
            actions: ACTION_SIGKILL,
            enforced: 1,
            tid,
            ..Default::default()
        };
        let ptrace = daemon_common::SyscallEvent {
            header: EventHeader {
                kind: daemon_common::EVENT_SYSCALL,
                tgid: 4_300_000,
                time_ns: 1_001,
                start_ns: 100,
            },
            nr: 101,
            tid: worker,
            selectors: 2,
            ..Default::default()
        };
        let ptrace_match = MatchEvent {
            hook: daemon_common::HOOK_SYSCALL,
            actions: ACTION_POST,
            enforced: 0,
            ..file_match(worker, 1_001, 1)
        };
        let connect_match = MatchEvent {
            hook: HOOK_CONNECT,
            actions: ACTION_BLOCK,
            ..file_match(main, 1_000, 0)
        };
        feed(
            &mut p,
            &[
                as_bytes(&proc_exec),
                as_bytes(&shadow),
                as_bytes(&harmless),
                as_bytes(&ptrace),
                // The worker's matches before main's, both selectors of main's after.
                as_bytes(&file_match(worker, 1_000, 0)),
                as_bytes(&ptrace_match),
                as_bytes(&file_match(main, 1_000, 0)),
                as_bytes(&file_match(main, 1_000, 1)),
                // Main's later access, whose record was lost.
                as_bytes(&file_match(main, 2_000, 0)),
                as_bytes(&connect_match),
            ],
        );
        let ev = out.take();
        let matches: Vec<_> = ev.iter().filter(|e| e["type"] == "policy_match").collect();
        assert_eq!(matches.len(), 6, "{ev:#?}");
        let path = |e: &serde_json::Value| e["file"]["path"].as_str().map(str::to_string);
        assert_eq!(path(matches[0]).as_deref(), Some("/tmp/harmless"));
        assert_eq!(matches[0]["syscall"], serde_json::Value::Null);
        assert_eq!(matches[1]["hook"], "syscall");
        assert_eq!(matches[1]["syscall"]["name"], "ptrace");
        assert_eq!(matches[1]["file"], serde_json::Value::Null);
        for m in &matches[2..4] {
            assert_eq!(path(m).as_deref(), Some("/etc/shadow"), "{m}");
            assert_eq!(m["file"]["access"], serde_json::json!(["read"]));
            assert_eq!(m["file"]["return_value"], 3);
        }
        assert_eq!(matches[4]["file"], serde_json::Value::Null, "record lost");
        assert_eq!(matches[4]["outcome"], "killed");
        assert_eq!(matches[5]["hook"], "connect");
        assert_eq!(
            (&matches[5]["file"], &matches[5]["syscall"]),
            (&serde_json::Value::Null, &serde_json::Value::Null)
        );
        // The process_file events say the same.
        let files: Vec<_> = ev.iter().filter(|e| e["type"] == "process_file").collect();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0]["file"], matches[2]["file"]);
        assert_eq!(files[1]["file"], matches[0]["file"]);
    }

    /// Matches that held because the arguments were incomplete say so: exec matches as the
    /// kernel marks them, connect matches of a selector with argument conditions when the
    /// process's exec had incomplete arguments; a cut argument copy is flagged on `process`.
    #[test]
    fn incomplete_and_truncated_arguments_are_reported() {
        let (mut p, out) = pipeline();
        let slot = 0;
        p.set_slot(
            slot,
            Arc::new(FakeRules(vec![
                "kill-args".into(),
                "block-args".into(),
                "block".into(),
            ])),
        );
        let mut bash = exec_record(4_200_000, 100, 1, 0, "/bin/bash", &["bash", "-x"]);
        bash.flags = daemon_common::EXEC_ARGS_INCOMPLETE;
        bash.args_truncated = 1;
        let kill = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                tgid: 4_200_000,
                time_ns: 100,
                start_ns: 100,
            },
            slot,
            selector: 0,
            hook: HOOK_EXEC,
            actions: ACTION_SIGKILL,
            enforced: 1,
            reason: REASON_ARGS_INCOMPLETE,
            ..Default::default()
        };
        let block = MatchEvent {
            selector: 1,
            hook: HOOK_CONNECT,
            actions: ACTION_BLOCK,
            reason: daemon_common::REASON_NONE,
            ..kill
        };
        let plain = MatchEvent {
            selector: 2,
            ..block
        };
        let other = exec_record(4_200_001, 200, 1, 0, "/bin/sh", &["sh"]);
        let other_block = MatchEvent {
            header: EventHeader {
                tgid: 4_200_001,
                start_ns: 200,
                ..kill.header
            },
            ..block
        };
        feed(
            &mut p,
            &[
                as_bytes(&bash),
                as_bytes(&kill),
                as_bytes(&block),
                as_bytes(&plain),
                as_bytes(&other),
                as_bytes(&other_block),
            ],
        );
        let ev = out.take();
        let matches: Vec<_> = ev.iter().filter(|e| e["type"] == "policy_match").collect();
        assert_eq!(matches.len(), 4, "{ev:#?}");
        assert_eq!(matches[0]["reason"], "arguments_incomplete");
        assert_eq!(matches[0]["process"]["arguments_truncated"], true);
        assert_eq!(
            matches[1]["reason"], "arguments_incomplete",
            "selector with args"
        );
        assert_eq!(
            matches[2]["reason"],
            serde_json::Value::Null,
            "no argument conditions"
        );
        assert_eq!(
            matches[3]["reason"],
            serde_json::Value::Null,
            "complete arguments"
        );
        assert!(matches[3]["process"].get("arguments_truncated").is_none());
    }

    #[test]
    fn socket_guard_matches_name_their_reason_and_no_destination() {
        let (mut p, out) = pipeline();
        p.set_slot(
            0,
            Arc::new(FakeRules(vec!["net".into(), "monitor-net".into()])),
        );
        let header = EventHeader {
            kind: EVENT_MATCH,
            tgid: 4_200_000,
            time_ns: 10,
            start_ns: 5,
        };
        let raw = MatchEvent {
            header,
            selector: 0,
            hook: HOOK_CONNECT,
            actions: ACTION_BLOCK,
            enforced: 1,
            reason: REASON_RAW_SOCKET,
            ..Default::default()
        };
        let packet = MatchEvent {
            hook: HOOK_EGRESS,
            reason: REASON_PACKET_SOCKET,
            ..raw
        };
        let packet_monitor = MatchEvent {
            selector: 1,
            enforced: 0,
            ..packet
        };
        let unknown = MatchEvent { reason: 200, ..raw };
        let records: Vec<Vec<u8>> = [raw, packet, packet_monitor, unknown]
            .iter()
            .map(as_bytes)
            .collect();
        feed(&mut p, &records);
        let ev = out.take();
        assert_eq!(ev.len(), 4, "{ev:#?}");
        assert_eq!(
            (&ev[0]["reason"], &ev[0]["outcome"], &ev[0]["hook"]),
            (&"raw_socket".into(), &"blocked".into(), &"connect".into())
        );
        assert_eq!(ev[0]["destination"], serde_json::Value::Null, "{}", ev[0]);
        assert_eq!(ev[1]["reason"], "packet_socket");
        assert_eq!(
            ev[1]["outcome"], "killed",
            "a packet socket is refused by SIGKILL"
        );
        assert_eq!(ev[1]["action"], "Block");
        assert_eq!(ev[2]["outcome"], "would_kill");
        assert_eq!(ev[2]["mode"], "monitor");
        // A reason this daemon does not know keeps the event, with reason null.
        assert_eq!(ev[3]["reason"], serde_json::Value::Null);
        assert_eq!(ev[3]["outcome"], "blocked");
        assert_eq!(reason(REASON_NONE), Ok(None));
        assert_eq!(reason(REASON_MPTCP), Ok(Some(Reason::Mptcp)));
        assert_eq!(reason(REASON_ICMP_SOCKET), Ok(Some(Reason::IcmpSocket)));
        assert_eq!(reason(200), Err(200));
    }

    #[test]
    fn words_of_actions_destinations_and_signals() {
        assert_eq!(
            action_outcome(ACTION_SIGKILL | ACTION_POST, true),
            (Action::Sigkill, Outcome::Killed)
        );
        assert_eq!(
            action_outcome(ACTION_SIGKILL, false),
            (Action::Sigkill, Outcome::WouldKill)
        );
        assert_eq!(
            action_outcome(ACTION_BLOCK, false),
            (Action::Block, Outcome::WouldBlock)
        );
        assert_eq!(
            action_outcome(ACTION_POST, false),
            (Action::Post, Outcome::Reported)
        );
        let mut d = daemon_common::Destination {
            port: 443,
            family: libc::AF_INET6 as u8,
            protocol: PROTO_UDP,
            ..Default::default()
        };
        d.addr[15] = 1;
        let j = destination(&d);
        assert_eq!(
            (j.ip.as_str(), j.port, j.protocol.as_str()),
            ("::1", 443, "UDP")
        );
        d.protocol = 132;
        assert_eq!(destination(&d).protocol, "IP132");
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "SIG40");
    }
}
