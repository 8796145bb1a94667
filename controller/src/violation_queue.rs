//! The bounded queue between the daemon's event writer and the controller's violation writer.
//! The daemon hands over every event it writes, typed ([`ViolationSender::offer_event`]); the
//! `policy_match` ones are queued as [`Violation`]s (a `file` or `syscall` match carries the
//! access or call it matched in its own `file` / `syscall` field). The sender never blocks the
//! engine: when the queue is full the violation is counted in
//! [`Stats::violations_dropped_queue_full`] and logged (rate-limited), never lost silently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bulwark_events::{Event, PolicyMatch};
use tokio::sync::mpsc;

use crate::stats::Stats;

/// One `policy_match` event, as the controller takes it: the match, and when and where.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// RFC 3339 time of the match.
    pub time: String,
    pub node_name: String,
    pub policy_match: PolicyMatch,
}

impl Violation {
    /// The violation of a `policy_match` event; `None` for other events.
    pub fn of(ev: &Event) -> Option<Violation> {
        ev.policy_match().map(|m| Violation {
            time: ev.time.clone(),
            node_name: ev.node_name.clone(),
            policy_match: m.clone(),
        })
    }
}

/// The engine's end of the violation queue. Cheap to clone.
#[derive(Clone)]
pub struct ViolationSender {
    tx: mpsc::Sender<Violation>,
    stats: Arc<Stats>,
    last_warn: Arc<AtomicU64>,
}

impl ViolationSender {
    /// Queue the event if it is a `policy_match` (others are not the controller's); never
    /// blocks. False when it was not queued.
    pub fn offer_event(&self, ev: &Event) -> bool {
        self.stats.record_event(ev);
        match Violation::of(ev) {
            Some(v) => self.offer(v),
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
        },
        rx,
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use bulwark_events::{Body, FileAccessed, Hook, Pod, Process, Syscall};

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

    /// A read of `path`, as the daemon reports it.
    pub(crate) fn file_read(path: &str) -> FileAccessed {
        FileAccessed {
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
        }
    }

    /// A call of `name`, at its entry.
    pub(crate) fn syscall_call(name: &str) -> Syscall {
        Syscall {
            name: Some(name.into()),
            number: 101,
            abi: "x86_64".into(),
            phase: bulwark_events::SyscallPhase::Entry,
            arguments: Vec::new(),
            return_value: None,
            error: None,
        }
    }

    /// The sample turned into a killing match of `hook` (no destination, no file or call), as
    /// an event.
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

    /// A `file` match of a read of `path`, carrying it as the daemon writes it.
    pub(crate) fn file_match(path: &str) -> Event {
        let mut ev = match_of(Hook::File);
        if let Body::PolicyMatch(m) = &mut ev.body {
            m.file = Some(file_read(path));
        }
        ev
    }

    /// A `syscall` match of a call of `name`, carrying it as the daemon writes it.
    pub(crate) fn syscall_match(name: &str) -> Event {
        let mut ev = match_of(Hook::Syscall);
        if let Body::PolicyMatch(m) = &mut ev.body {
            m.syscall = Some(syscall_call(name));
        }
        ev
    }

    #[test]
    fn offered_file_and_syscall_matches_are_queued_with_their_subject() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = violation_channel(8, stats);
        // The daemon's `process_file` is not a violation.
        let access = Event {
            body: Body::ProcessFile {
                process: sample().policy_match.process,
                file: file_read("/etc/passwd"),
            },
            ..match_of(Hook::File)
        };
        assert!(!tx.offer_event(&access));
        assert!(tx.offer_event(&file_match("/etc/shadow")));
        let v = rx.try_recv().unwrap();
        assert_eq!(v.policy_match.hook, Hook::File);
        let f = v.policy_match.file.expect("the match's own file");
        assert_eq!(f.path.as_deref(), Some("/etc/shadow"));
        assert!(tx.offer_event(&syscall_match("ptrace")));
        let c = rx.try_recv().unwrap().policy_match.syscall.unwrap();
        assert_eq!(c.name.as_deref(), Some("ptrace"));
        // A clone of the sender queues into the same queue.
        let tx2 = tx.clone();
        assert!(tx2.offer_event(&match_of(Hook::File)));
        assert_eq!(
            rx.try_recv().unwrap().policy_match.file,
            None,
            "none carried"
        );
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
