//! The bounded queue between the daemon's event writer and the controller's violation writer.
//! The daemon hands over every event it writes, typed ([`ViolationSender::offer_event`]); the
//! `policy_match` ones are queued as [`Violation`]s, a `file` or `syscall` match with the
//! access or call it was about ([`Subject`], from the `process_file` / `process_syscall` event
//! the daemon writes right before its matches: [`RecentSubjects`]). The sender never blocks the
//! engine: when the queue is full the violation is counted in
//! [`Stats::violations_dropped_queue_full`] and logged (rate-limited), never lost silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bulwark_events::{Body, Event, FileAccessed, Hook, PolicyMatch, Syscall};
use tokio::sync::mpsc;

use crate::stats::Stats;

/// One `policy_match` event, as the controller takes it: the match, and when and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// RFC 3339 time of the match.
    pub time: String,
    pub node_name: String,
    pub policy_match: PolicyMatch,
    /// What a `file` or `syscall` match was about; `None` for the other hooks, and when the
    /// event describing it was not seen.
    pub subject: Option<Subject>,
}

/// The file access or system call a `file` / `syscall` match was about.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    File(FileAccessed),
    Syscall(Syscall),
}

impl Violation {
    /// The violation of a `policy_match` event (without its [`Subject`]: see
    /// [`RecentSubjects`]); `None` for other events.
    pub fn of(ev: &Event) -> Option<Violation> {
        ev.policy_match().map(|m| Violation {
            time: ev.time.clone(),
            node_name: ev.node_name.clone(),
            policy_match: m.clone(),
            subject: None,
        })
    }
}

/// The latest `process_file` and `process_syscall` of each process, by `exec_id`: the daemon
/// writes one such event per access or call and then the `policy_match` of every selector that
/// matched it, with the same `exec_id`, so a match's subject is its process's latest one. An
/// entry goes with its process's `process_exit`; at most [`RecentSubjects::CAPACITY`] processes
/// are remembered (the oldest is forgotten first: its matches would then carry no subject).
#[derive(Debug, Default)]
pub struct RecentSubjects {
    by_exec_id: HashMap<String, Recent>,
    seq: u64,
}

#[derive(Debug, Default)]
struct Recent {
    /// When the entry last changed (for eviction).
    seq: u64,
    file: Option<FileAccessed>,
    syscall: Option<Syscall>,
}

impl RecentSubjects {
    /// Processes remembered at most.
    pub const CAPACITY: usize = 4096;

    /// Takes note of an event the daemon wrote.
    pub fn observe(&mut self, ev: &Event) {
        let (process, subject) = match &ev.body {
            Body::ProcessFile { process, file } => (process, Subject::File(file.clone())),
            Body::ProcessSyscall { process, syscall } => {
                (process, Subject::Syscall(syscall.clone()))
            }
            Body::ProcessExit { process, .. } => {
                self.by_exec_id.remove(&process.exec_id);
                return;
            }
            _ => return,
        };
        self.seq += 1;
        if !self.by_exec_id.contains_key(&process.exec_id)
            && self.by_exec_id.len() >= Self::CAPACITY
        {
            let oldest = self
                .by_exec_id
                .iter()
                .min_by_key(|(_, r)| r.seq)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.by_exec_id.remove(&k);
            }
        }
        let r = self.by_exec_id.entry(process.exec_id.clone()).or_default();
        r.seq = self.seq;
        match subject {
            Subject::File(f) => r.file = Some(f),
            Subject::Syscall(c) => r.syscall = Some(c),
        }
    }

    /// The subject of a match: its process's latest file access for `hook: file`, system call
    /// for `hook: syscall`; `None` for the other hooks.
    pub fn subject_of(&self, m: &PolicyMatch) -> Option<Subject> {
        let r = self.by_exec_id.get(&m.process.exec_id)?;
        match m.hook {
            Hook::File => r.file.clone().map(Subject::File),
            Hook::Syscall => r.syscall.clone().map(Subject::Syscall),
            _ => None,
        }
    }

    /// Processes remembered.
    pub fn len(&self) -> usize {
        self.by_exec_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_exec_id.is_empty()
    }
}

/// The engine's end of the violation queue. Cheap to clone.
#[derive(Clone)]
pub struct ViolationSender {
    tx: mpsc::Sender<Violation>,
    stats: Arc<Stats>,
    last_warn: Arc<AtomicU64>,
    subjects: Arc<Mutex<RecentSubjects>>,
}

impl ViolationSender {
    /// Queue the event if it is a `policy_match` (others are not the controller's, but a
    /// `process_file` / `process_syscall` is remembered for the matches that follow it); never
    /// blocks. False when it was not queued.
    pub fn offer_event(&self, ev: &Event) -> bool {
        self.stats.record_event(ev);
        let mut subjects = self
            .subjects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        subjects.observe(ev);
        match Violation::of(ev) {
            Some(mut v) => {
                v.subject = subjects.subject_of(&v.policy_match);
                drop(subjects);
                self.offer(v)
            }
            None => false,
        }
    }

    /// Queue a violation without blocking. Returns false (and counts the drop) when the queue
    /// is full or the controller is gone.
    pub fn offer(&self, v: Violation) -> bool {
        self.stats
            .violations_received
            .fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(v) {
            Ok(()) => true,
            Err(e) => {
                let n = self
                    .stats
                    .violations_dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed)
                    + 1;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                if self.last_warn.swap(now, Ordering::Relaxed) != now {
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => {
                            "the queue is full (API server slow or down)"
                        }
                        mpsc::error::TrySendError::Closed(_) => "the controller has stopped",
                    };
                    log::warn!(
                        "dropped a policy violation because {why}; {n} dropped so far (metric \
                         bulwark_violations_dropped_total); raise the queue capacity if this persists"
                    );
                }
                false
            }
        }
    }
}

/// A bounded queue from the engine to [`crate::run`]; `capacity` violations at most.
pub fn violation_channel(
    capacity: usize,
    stats: Arc<Stats>,
) -> (ViolationSender, mpsc::Receiver<Violation>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        ViolationSender {
            tx,
            stats,
            last_warn: Arc::new(AtomicU64::new(0)),
            subjects: Arc::default(),
        },
        rx,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bulwark_events::{Pod, Process};

    /// A `Block` of a connect rule in a Pod, as the daemon reports it.
    pub(crate) fn sample() -> Violation {
        let process = Process {
            exec_id: "bm9kZS1hOjEyMzQ6NTY3OA".into(),
            pid: 1234,
            uid: Some(0),
            binary: "/usr/bin/curl".into(),
            arguments: "-s http://169.254.169.254/".into(),
            pod: Some(Pod {
                namespace: "payments".into(),
                name: "api-7d9".into(),
                container: "app".into(),
                labels: [("app".to_string(), "api".to_string())].into(),
            }),
            ..Process::default()
        };
        crate::sim::blocked_metadata_connect(
            "node-a",
            "block-cloud-metadata",
            "2026-11-22T03:00:00.123Z",
            process,
            80,
        )
    }

    /// A read of `path` by the sample's process, as the daemon reports it.
    pub(crate) fn file_read(process: &bulwark_events::Process, path: &str) -> Event {
        Event {
            time: "2026-11-22T03:00:00.100Z".into(),
            node_name: "node-a".into(),
            body: Body::ProcessFile {
                process: process.clone(),
                file: FileAccessed {
                    path: Some(path.into()),
                    path_resolved: true,
                    access: vec![bulwark_policy::FileAccess::Read],
                    syscall: Some("openat".into()),
                    io_uring: None,
                    unjudged: None,
                    abi: "x86_64".into(),
                    flags: Some("O_RDONLY".into()),
                    return_value: Some(3),
                    device: Some("8:1".into()),
                    inode: Some(1834),
                },
            },
        }
    }

    /// A call of `name` by the sample's process, at its entry.
    pub(crate) fn syscall_call(process: &bulwark_events::Process, name: &str) -> Event {
        Event {
            time: "2026-11-22T03:00:00.100Z".into(),
            node_name: "node-a".into(),
            body: Body::ProcessSyscall {
                process: process.clone(),
                syscall: Syscall {
                    name: Some(name.into()),
                    number: 101,
                    abi: "x86_64".into(),
                    phase: bulwark_events::SyscallPhase::Entry,
                    arguments: Vec::new(),
                    return_value: None,
                    error: None,
                },
            },
        }
    }

    /// The sample turned into a match of `hook` (no destination), as an event.
    pub(crate) fn match_of(hook: Hook) -> Event {
        let v = sample();
        let mut m = v.policy_match;
        m.hook = hook;
        m.destination = None;
        m.action = bulwark_events::Action::Sigkill;
        m.outcome = bulwark_events::Outcome::Killed;
        Event {
            time: v.time,
            node_name: v.node_name,
            body: Body::PolicyMatch(m),
        }
    }

    fn exit_of(process: &bulwark_events::Process) -> Event {
        Event {
            time: "2026-11-22T03:00:01Z".into(),
            node_name: "node-a".into(),
            body: Body::ProcessExit {
                process: process.clone(),
                status: 0,
                signal: Some("SIGKILL".into()),
            },
        }
    }

    #[test]
    fn a_file_or_syscall_match_carries_what_its_process_last_did() {
        let p = sample().policy_match.process;
        let mut r = RecentSubjects::default();
        let file_match = match_of(Hook::File);
        let syscall_match = match_of(Hook::Syscall);
        let pm = |e: &Event| e.policy_match().unwrap().clone();
        assert_eq!(r.subject_of(&pm(&file_match)), None, "nothing seen yet");
        r.observe(&file_read(&p, "/etc/shadow"));
        r.observe(&syscall_call(&p, "ptrace"));
        // Another process's access is not this one's.
        let mut other = p.clone();
        other.exec_id = "b3RoZXI".into();
        r.observe(&file_read(&other, "/etc/passwd"));
        match r.subject_of(&pm(&file_match)) {
            Some(Subject::File(f)) => assert_eq!(f.path.as_deref(), Some("/etc/shadow")),
            s => panic!("{s:?}"),
        }
        match r.subject_of(&pm(&syscall_match)) {
            Some(Subject::Syscall(c)) => assert_eq!(c.name.as_deref(), Some("ptrace")),
            s => panic!("{s:?}"),
        }
        // The next access replaces it; a connect match has no subject.
        r.observe(&file_read(&p, "/root/.ssh/id_ed25519"));
        match r.subject_of(&pm(&file_match)) {
            Some(Subject::File(f)) => {
                assert_eq!(f.path.as_deref(), Some("/root/.ssh/id_ed25519"))
            }
            s => panic!("{s:?}"),
        }
        assert_eq!(r.subject_of(&sample().policy_match), None);
        // Its exit forgets the process.
        assert_eq!(r.len(), 2);
        r.observe(&exit_of(&p));
        assert_eq!(r.len(), 1);
        assert_eq!(r.subject_of(&pm(&file_match)), None);
    }

    #[test]
    fn recent_subjects_are_bounded_and_forget_the_oldest() {
        let p = sample().policy_match.process;
        let mut r = RecentSubjects::default();
        let mut first = p.clone();
        first.exec_id = "first".into();
        r.observe(&file_read(&first, "/a"));
        for i in 0..RecentSubjects::CAPACITY {
            let mut q = p.clone();
            q.exec_id = format!("p{i}");
            r.observe(&file_read(&q, "/b"));
        }
        assert_eq!(r.len(), RecentSubjects::CAPACITY);
        let mut m = match_of(Hook::File).policy_match().unwrap().clone();
        m.process.exec_id = "first".into();
        assert_eq!(r.subject_of(&m), None, "the oldest went first");
        m.process.exec_id = format!("p{}", RecentSubjects::CAPACITY - 1);
        assert!(r.subject_of(&m).is_some());
    }

    #[test]
    fn offered_file_matches_are_queued_with_their_file() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = violation_channel(8, stats);
        let p = sample().policy_match.process;
        assert!(!tx.offer_event(&file_read(&p, "/etc/shadow")));
        assert!(tx.offer_event(&match_of(Hook::File)));
        let v = rx.try_recv().unwrap();
        assert_eq!(v.policy_match.hook, Hook::File);
        match v.subject {
            Some(Subject::File(f)) => assert_eq!(f.path.as_deref(), Some("/etc/shadow")),
            s => panic!("{s:?}"),
        }
        // A clone of the sender shares what was seen.
        let tx2 = tx.clone();
        assert!(tx2.offer_event(&match_of(Hook::File)));
        assert!(rx.try_recv().unwrap().subject.is_some());
    }

    #[test]
    fn only_policy_matches_are_queued_as_violations() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = violation_channel(8, stats.clone());
        let v = sample();
        let matched = Event {
            time: v.time.clone(),
            node_name: v.node_name.clone(),
            body: Body::PolicyMatch(v.policy_match.clone()),
        };
        let exec = Event {
            body: Body::ProcessExec {
                process: v.policy_match.process.clone(),
                parent: None,
            },
            ..matched.clone()
        };
        assert!(!tx.offer_event(&exec), "not a violation");
        assert!(tx.offer_event(&matched));
        assert_eq!(rx.try_recv().unwrap(), v);
        assert!(rx.try_recv().is_err(), "only the match was queued");
        assert_eq!(stats.violations_received.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn full_queue_counts_drops() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = violation_channel(1, stats.clone());
        let ev = sample();
        assert!(tx.offer(ev.clone()));
        assert!(!tx.offer(ev.clone()));
        assert_eq!(
            stats.violations_dropped_queue_full.load(Ordering::Relaxed),
            1
        );
        assert_eq!(stats.violations_received.load(Ordering::Relaxed), 2);
        assert!(rx.try_recv().is_ok());
        assert!(tx.offer(ev));
    }
}
