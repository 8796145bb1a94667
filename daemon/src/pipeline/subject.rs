//! What a `file` or `syscall` match is about. The kernel writes one `process_file` /
//! `process_syscall` record per judged access or call, then one match record per selector that
//! matched it, each with the subject record's thread and time (`MatchEvent::tid`,
//! `header.time_ns`). Other CPUs' records can come in between, so the join is by that key, never
//! by "the latest of the process": [`RecentSubjects`] keeps the last few subjects and hands a
//! match the one it names.

use bulwark_events::{FileAccessed, Syscall};
use std::collections::VecDeque;

/// The access or call one subject record described.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    File(FileAccessed),
    Syscall(Syscall),
}

/// What links a match record to its subject record: thread-group id, thread id and the
/// kernel's time of the judgement (read once for both records).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubjectKey {
    pub tgid: u32,
    pub tid: u32,
    pub time_ns: u64,
}

/// The last [`RecentSubjects::CAPACITY`] subject records. A record's matches follow it within
/// what other CPUs write meanwhile (each CPU writes its record and matches in order), so a few
/// records per CPU are plenty; a match whose subject was lost or pushed out gets none.
#[derive(Debug, Default)]
pub struct RecentSubjects {
    recent: VecDeque<(SubjectKey, Subject)>,
}

impl RecentSubjects {
    /// Subjects remembered at most.
    pub const CAPACITY: usize = 256;

    /// Remembers the subject of the record written under `key` (the oldest goes when full).
    pub fn record(&mut self, key: SubjectKey, subject: Subject) {
        if self.recent.len() >= Self::CAPACITY {
            self.recent.pop_front();
        }
        self.recent.push_back((key, subject));
    }

    /// The subject of the record `key` names (the newest first: usually the last one).
    pub fn get(&self, key: SubjectKey) -> Option<&Subject> {
        self.recent
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s)
    }

    /// Subjects remembered.
    pub fn len(&self) -> usize {
        self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.recent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_events::SyscallPhase;

    fn call(name: &str) -> Subject {
        Subject::Syscall(Syscall {
            name: Some(name.into()),
            number: 0,
            abi: "x86_64".into(),
            phase: SyscallPhase::Entry,
            arguments: Vec::new(),
            return_value: None,
            error: None,
        })
    }

    fn key(tid: u32, time_ns: u64) -> SubjectKey {
        SubjectKey {
            tgid: 10,
            tid,
            time_ns,
        }
    }

    #[test]
    fn a_key_names_its_own_subject_and_the_oldest_goes_first() {
        let mut r = RecentSubjects::default();
        assert!(r.is_empty());
        r.record(key(11, 5), call("ptrace"));
        r.record(key(12, 5), call("mount"));
        assert_eq!(
            r.get(key(11, 5)),
            Some(&call("ptrace")),
            "same time, other thread"
        );
        assert_eq!(r.get(key(12, 5)), Some(&call("mount")));
        assert_eq!(r.get(key(11, 6)), None, "another call of the thread");
        assert_eq!(
            r.get(SubjectKey {
                tgid: 9,
                ..key(11, 5)
            }),
            None
        );
        for t in 0..RecentSubjects::CAPACITY as u64 - 1 {
            r.record(key(13, 100 + t), call("getppid"));
        }
        assert_eq!(r.len(), RecentSubjects::CAPACITY);
        assert_eq!(r.get(key(11, 5)), None, "pushed out");
        assert_eq!(r.get(key(12, 5)), Some(&call("mount")));
    }
}
