//! bulwark's JSON event schema: the one definition of every event `bulwark run` writes (one JSON
//! object per line) and that the Kubernetes controller, `bulwark events` and the e2e tests read.
//! docs/events.md documents it field by field; `tests/docs.rs` parses every example there, so
//! the two cannot drift. Names follow Cilium Tetragon where they overlap (`process_exec`,
//! `exec_id`, `parent_exec_id`, `binary`, `arguments`, `pod`).
//!
//! One module per event family; a new event type is a new [`Body`] variant (and its word in
//! [`EventType`]) whose fields live in its family's module:
//! - [`process`]: the process an event is about ([`Process`], [`Parent`], [`Pod`]) and the
//!   destination of a connection ([`Destination`]); `process_exec`, `process_exit`,
//!   `process_connect`.
//! - [`policy_match`]: a rule matched ([`PolicyMatch`], [`Outcome`], [`Reason`]), with the
//!   policy language's words ([`Hook`], [`Action`], [`Mode`], [`Encryption`]) from the policy
//!   model.
//! - [`connection`]: a TCP connection observed on the wire ([`Connection`], [`Payload`],
//!   [`Protocol`], [`Window`]); `process_close`, `conn_stats`.
//! - [`syscall`]: a system call a `hook: syscall` rule matched ([`Syscall`]); `process_syscall`.
//! - [`file`]: a file access a `hook: file` rule matched ([`FileAccessed`]); `process_file`.
//! - [`status`]: the daemon's own state ([`Status`], [`State`], [`Diagnostic`], with the lint's
//!   [`Severity`]).
//!
//! [`Event::write_json`] (module `json`) writes the connection events by hand, byte for byte as
//! serde_json would (they are most of the lines a node writes).
//!
//! Reading is strict about what identifies an event (an unknown `type` is an error) and
//! tolerant where readers always were (a missing `arguments`, `pod`, `destination`, ... reads
//! as empty).

pub mod connection;
pub mod file;
mod json;
pub mod policy_match;
pub mod process;
pub mod status;
pub mod syscall;

pub use connection::{
    Connection, Endpoint, Family, Payload, Protocol, Role, Scope, TlsInfo, Window,
};
pub use file::FileAccessed;
pub use policy_match::{Action, Encryption, Hook, Mode, Outcome, PolicyMatch, Reason};
pub use process::{Destination, Parent, Pod, Process};
pub use status::{
    DaemonCode, DaemonDiagnostic, Diagnostic, LintDiagnostic, Severity, State, Status,
};
pub use syscall::{Syscall, SyscallArg, SyscallPhase};

use serde::{Deserialize, Serialize};

/// One line of the event stream. `type` selects the [`Body`]; `time` and `node_name` are on all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// RFC 3339 (UTC, nanoseconds) when it happened.
    pub time: String,
    /// `--node-name` of the daemon that wrote it.
    pub node_name: String,
    #[serde(flatten)]
    pub body: Body,
}

/// The fields of each event type. The serde tag is the word of [`EventType`] (a test holds
/// them together).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Body {
    ProcessExec {
        process: Process,
        /// `null` when the parent is unknown.
        parent: Option<Parent>,
    },
    ProcessExit {
        process: Process,
        /// Exit status (0..255); 0 when killed by a signal.
        status: u32,
        /// Terminating signal (`SIGKILL`), `null` on a normal exit.
        signal: Option<String>,
    },
    ProcessConnect {
        process: Process,
        destination: Destination,
        /// True when a rule in enforce mode made `connect()` fail (EPERM).
        blocked: bool,
    },
    /// A TCP connection ended: its totals and classification.
    ProcessClose {
        process: Process,
        connection: Connection,
    },
    /// A connection still open moved bytes in the last `--conn-interval`.
    ConnStats {
        process: Process,
        connection: Connection,
        window: Window,
    },
    /// A system call a `hook: syscall` rule matched (the `policy_match` events follow).
    ProcessSyscall {
        process: Process,
        syscall: Syscall,
    },
    /// A file access a `hook: file` rule matched (the `policy_match` events follow).
    ProcessFile {
        process: Process,
        file: FileAccessed,
    },
    PolicyMatch(PolicyMatch),
    Status(Status),
}

bulwark_policy::words! {
    /// The `type` of an event.
    pub enum EventType ("event type") {
        ProcessExec = "process_exec",
        ProcessExit = "process_exit",
        ProcessConnect = "process_connect",
        ProcessClose = "process_close",
        ConnStats = "conn_stats",
        ProcessSyscall = "process_syscall",
        ProcessFile = "process_file",
        PolicyMatch = "policy_match",
        Status = "status",
    }
}

impl Body {
    /// The `type` of this event.
    pub fn event_type(&self) -> EventType {
        match self {
            Body::ProcessExec { .. } => EventType::ProcessExec,
            Body::ProcessExit { .. } => EventType::ProcessExit,
            Body::ProcessConnect { .. } => EventType::ProcessConnect,
            Body::ProcessClose { .. } => EventType::ProcessClose,
            Body::ConnStats { .. } => EventType::ConnStats,
            Body::ProcessSyscall { .. } => EventType::ProcessSyscall,
            Body::ProcessFile { .. } => EventType::ProcessFile,
            Body::PolicyMatch(_) => EventType::PolicyMatch,
            Body::Status(_) => EventType::Status,
        }
    }
}

impl Event {
    /// The `type` of this event.
    pub fn event_type(&self) -> EventType {
        self.body.event_type()
    }

    /// The process the event is about; `None` for `status`.
    pub fn process(&self) -> Option<&Process> {
        match &self.body {
            Body::ProcessExec { process, .. }
            | Body::ProcessExit { process, .. }
            | Body::ProcessConnect { process, .. }
            | Body::ProcessClose { process, .. }
            | Body::ConnStats { process, .. }
            | Body::ProcessSyscall { process, .. }
            | Body::ProcessFile { process, .. } => Some(process),
            Body::PolicyMatch(m) => Some(&m.process),
            Body::Status(_) => None,
        }
    }

    /// The destination of a connection (`process_connect`, and `policy_match` of `connect`
    /// and `egress` rules).
    pub fn destination(&self) -> Option<&Destination> {
        match &self.body {
            Body::ProcessConnect { destination, .. } => Some(destination),
            Body::PolicyMatch(m) => m.destination.as_ref(),
            _ => None,
        }
    }

    /// The connection, for `process_close` and `conn_stats`.
    pub fn connection(&self) -> Option<&Connection> {
        match &self.body {
            Body::ProcessClose { connection, .. } | Body::ConnStats { connection, .. } => {
                Some(connection)
            }
            _ => None,
        }
    }

    /// The match, for a `policy_match` event.
    pub fn policy_match(&self) -> Option<&PolicyMatch> {
        match &self.body {
            Body::PolicyMatch(m) => Some(m),
            _ => None,
        }
    }

    /// The daemon's state, for a `status` event.
    pub fn status(&self) -> Option<&Status> {
        match &self.body {
            Body::Status(s) => Some(s),
            _ => None,
        }
    }

    /// One JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Serializing these plain structs cannot fail (string keys, no non-finite floats).
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","message":"event serialization failed: {e}"}}"#)
        })
    }

    /// Reads one line of the event stream (surrounding whitespace ignored).
    pub fn from_json_line(line: &str) -> Result<Event, serde_json::Error> {
        serde_json::from_str(line.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn process() -> Process {
        Process {
            exec_id: "bm9kZTox".into(),
            pid: 7,
            uid: Some(0),
            binary: "/usr/bin/curl".into(),
            arguments: "-s http://x/".into(),
            arguments_truncated: false,
            cwd: None,
            start_time: "t".into(),
            parent_exec_id: None,
            pod: None,
        }
    }

    fn connection() -> Connection {
        let sent = Payload::new(
            Protocol::Tls,
            Some(TlsInfo {
                record_version: "1.0".into(),
                sni: Some("a.example".into()),
                alpn: vec!["h2".into()],
            }),
        );
        let received = Payload::none();
        Connection {
            role: Role::Client,
            family: Family::Ipv4,
            local: Endpoint {
                ip: "10.0.0.1".into(),
                port: 40000,
            },
            remote: Endpoint {
                ip: "10.0.0.2".into(),
                port: 443,
            },
            scope: Scope::Cluster,
            encrypted: Connection::verdict(&sent, &received),
            sent,
            received,
            bytes_sent: 517,
            bytes_received: 0,
            open_time: "t0".into(),
            close_time: None,
        }
    }

    fn one_of_each() -> Vec<Body> {
        let destination = Destination {
            ip: "10.0.0.2".into(),
            port: 80,
            protocol: "TCP".into(),
        };
        vec![
            Body::ProcessExec {
                process: process(),
                parent: None,
            },
            Body::ProcessExit {
                process: process(),
                status: 0,
                signal: Some("SIGKILL".into()),
            },
            Body::ProcessConnect {
                process: process(),
                destination: destination.clone(),
                blocked: false,
            },
            Body::ProcessClose {
                process: process(),
                connection: connection(),
            },
            Body::ConnStats {
                process: process(),
                connection: connection(),
                window: Window {
                    start: "t0".into(),
                    end: "t1".into(),
                    bytes_sent: 1,
                    bytes_received: 2,
                },
            },
            Body::ProcessSyscall {
                process: process(),
                syscall: Syscall {
                    name: Some("ptrace".into()),
                    number: 101,
                    abi: "x86_64".into(),
                    phase: SyscallPhase::Exit,
                    arguments: syscall::arguments(Some("ptrace"), &[16, 42, 0, 0, 0, 0]),
                    return_value: Some(-1),
                    error: syscall::error_of(-1),
                },
            },
            Body::ProcessFile {
                process: process(),
                file: FileAccessed {
                    path: Some("/etc/shadow".into()),
                    path_resolved: true,
                    access: vec![bulwark_policy::FileAccess::Read],
                    syscall: Some("openat".into()),
                    io_uring: None,
                    unjudged: None,
                    abi: "x86_64".into(),
                    flags: Some(file::open_flags(0o2000000)),
                    return_value: Some(3),
                    device: Some(file::device(8 << 20 | 1)),
                    inode: Some(1234),
                },
            },
            Body::PolicyMatch(PolicyMatch {
                policy_name: Some("p".into()),
                policy_namespace: None,
                rule: Some("r".into()),
                hook: Hook::Connect,
                action: Action::Block,
                mode: Mode::Enforce,
                enforced: true,
                outcome: Outcome::Blocked,
                process: process(),
                destination: Some(destination),
                encryption: None,
                reason: None,
                file: None,
                syscall: None,
            }),
            Body::Status(Status {
                state: State::Ready,
                generation: 1,
                policies: vec!["a".into()],
                diagnostics: vec![],
                lost_events: 0,
                warnings: vec![],
                stale_processes: 0,
                load_ms: None,
                apply_ms: None,
            }),
        ]
    }

    #[test]
    fn the_type_word_is_the_event_type_and_every_type_reads_back() {
        let bodies = one_of_each();
        assert_eq!(bodies.len(), EventType::ALL.len(), "one of each type");
        for body in bodies {
            let ev = Event {
                time: "t".into(),
                node_name: "n".into(),
                body,
            };
            let v: serde_json::Value = serde_json::from_str(&ev.to_json_line()).unwrap();
            assert_eq!(v["type"], ev.event_type().as_str(), "{v}");
            assert_eq!(Event::from_json_line(&ev.to_json_line()).unwrap(), ev);
        }
    }

    #[test]
    fn status_line_has_exact_shape() {
        let ev = Event {
            time: "t".into(),
            node_name: "n".into(),
            body: one_of_each().pop().unwrap(),
        };
        let v: serde_json::Value = serde_json::from_str(&ev.to_json_line()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"time":"t","node_name":"n","type":"status","state":"ready",
                "generation":1,"policies":["a"],"diagnostics":[],"lost_events":0,"warnings":[],
                "stale_processes":0})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn unknown_type_is_rejected() {
        let r = Event::from_json_line(r#"{"time":"t","node_name":"n","type":"bogus"}"#);
        assert!(r.is_err());
        let r = Event::from_json_line(r#"{"time":"t","node_name":"n"}"#);
        assert!(r.is_err());
    }

    #[test]
    fn accessors_reach_the_shared_parts() {
        for body in one_of_each() {
            let ev = Event {
                time: "t".into(),
                node_name: "n".into(),
                body,
            };
            let ty = ev.event_type();
            assert_eq!(ev.process().is_some(), ty != EventType::Status);
            assert_eq!(
                ev.destination().is_some(),
                matches!(ty, EventType::ProcessConnect | EventType::PolicyMatch)
            );
            assert_eq!(ev.policy_match().is_some(), ty == EventType::PolicyMatch);
            assert_eq!(ev.status().is_some(), ty == EventType::Status);
        }
    }
}
