//! `policy_match`: a selector of a policy matched. Its hook, action, mode and encryption are
//! words of the policy language, defined once in the policy model and re-exported here; the
//! [`Outcome`] is the event's own. A `file` or `syscall` match carries the access or call it
//! matched ([`FileAccessed`], [`Syscall`]), so a reader needs no other event to name it.

pub use bulwark_policy::model::{Action, Encryption, Hook, Mode};
use serde::{Deserialize, Serialize};

use crate::file::FileAccessed;
use crate::process::{Destination, Process};
use crate::syscall::Syscall;

bulwark_policy::words! {
    /// What happened to the process or connection.
    pub enum Outcome ("outcome") {
        /// `Sigkill` carried out.
        Killed = "killed",
        /// `Block` carried out.
        Blocked = "blocked",
        /// `Sigkill` in monitor mode: what would have happened.
        WouldKill = "would_kill",
        /// `Block` in monitor mode: what would have happened.
        WouldBlock = "would_block",
        /// `Post` only: reported.
        Reported = "reported",
    }
}

bulwark_policy::words! {
    /// Why a rule acted outside the plain evaluation of its hook (`reason`; `null` otherwise);
    /// docs/enforcement.md says what each guards against.
    pub enum Reason ("reason") {
        /// TCP Fast Open refused at connect: its data would leave in the SYN, unseen.
        TcpFastOpen = "tcp_fast_open",
        /// Payload the egress verdict never saw, refused on the wire by the backstop.
        UnseenPayload = "unseen_payload",
        /// A connection older than the rule set, whose first payload was never seen.
        ExistingConnection = "existing_connection",
        /// No room in a kernel map for the state enforcement needs: refused instead.
        Capacity = "capacity",
        /// The socket guard refused a raw IP socket in a process a `Block` rule on `connect`
        /// or `egress` covers: `socket()` failed with EPERM.
        RawSocket = "raw_socket",
        /// The socket guard refused an ICMP datagram ("ping") socket: EPERM.
        IcmpSocket = "icmp_socket",
        /// The socket guard refused an MPTCP socket: EPERM.
        Mptcp = "mptcp",
        /// The process asked for a packet socket (`AF_PACKET`, `SOCK_PACKET`, `AF_XDP`): it
        /// was killed.
        PacketSocket = "packet_socket",
        /// The exec's arguments were not all examined (more than the kernel walks), so the
        /// rule's argument conditions were taken to hold (fail closed).
        ArgumentsIncomplete = "arguments_incomplete",
    }
}

impl Reason {
    /// Reasons of the socket guard: the event is about a socket that was asked for, so it has
    /// no destination.
    pub fn is_socket_guard(self) -> bool {
        matches!(
            self,
            Reason::RawSocket | Reason::IcmpSocket | Reason::Mptcp | Reason::PacketSocket
        )
    }
}

impl Outcome {
    /// The outcome of a selector whose strongest action is `action`, carried out or not.
    pub fn of(action: Action, enforced: bool) -> Outcome {
        match (action, enforced) {
            (Action::Sigkill, true) => Outcome::Killed,
            (Action::Sigkill, false) => Outcome::WouldKill,
            (Action::Block, true) => Outcome::Blocked,
            (Action::Block, false) => Outcome::WouldBlock,
            (Action::Post, _) => Outcome::Reported,
        }
    }
}

/// A rule matched (`type: policy_match`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyMatch {
    /// `null` only if the rule set that matched is no longer known (should not happen).
    pub policy_name: Option<String>,
    /// Namespace of a TracingPolicyNamespaced; `null` for cluster-wide policies.
    pub policy_namespace: Option<String>,
    pub rule: Option<String>,
    pub hook: Hook,
    /// The strongest action of the selector: `Sigkill` > `Block` > `Post`.
    pub action: Action,
    /// The policy's `spec.mode`.
    pub mode: Mode,
    /// True when Sigkill/Block was carried out.
    pub enforced: bool,
    pub outcome: Outcome,
    pub process: Process,
    /// Destination for `connect` and `egress` rules, `null` for `exec`.
    #[serde(default)]
    pub destination: Option<Destination>,
    /// The stream's verdict for `egress` rules, else `null` (also when the payload was never
    /// seen or the verdict is still undecided).
    #[serde(default)]
    pub encryption: Option<Encryption>,
    /// Why the match happened outside the plain evaluation of an exec, connect or payload;
    /// `null` otherwise.
    #[serde(default)]
    pub reason: Option<Reason>,
    /// The file access a `file` rule matched: the `file` of the `process_file` event written
    /// just before, the same access. `null` for other hooks, and when that event was lost.
    #[serde(default)]
    pub file: Option<FileAccessed>,
    /// The system call a `syscall` rule matched: the `syscall` of the `process_syscall` event
    /// written just before, the same call. `null` for other hooks, and when that event was
    /// lost.
    #[serde(default)]
    pub syscall: Option<Syscall>,
}

impl PolicyMatch {
    /// `namespace/name` of a namespaced policy, `name` of a cluster-wide one (`?` when the
    /// rule set is no longer known).
    pub fn policy_label(&self) -> String {
        match (&self.policy_namespace, &self.policy_name) {
            (Some(ns), Some(p)) => format!("{ns}/{p}"),
            (None, Some(p)) => p.clone(),
            _ => "?".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_action_and_enforcement() {
        assert_eq!(Outcome::of(Action::Sigkill, true), Outcome::Killed);
        assert_eq!(Outcome::of(Action::Sigkill, false), Outcome::WouldKill);
        assert_eq!(Outcome::of(Action::Block, true), Outcome::Blocked);
        assert_eq!(Outcome::of(Action::Block, false), Outcome::WouldBlock);
        assert_eq!(Outcome::of(Action::Post, false), Outcome::Reported);
        assert_eq!(Outcome::of(Action::Post, true), Outcome::Reported);
        let words: Vec<String> = Outcome::ALL.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            words,
            ["killed", "blocked", "would_kill", "would_block", "reported"]
        );
        assert_eq!("would_block".parse(), Ok(Outcome::WouldBlock));
    }

    #[test]
    fn reasons_read_and_write_their_words() {
        let words: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            words,
            [
                "tcp_fast_open",
                "unseen_payload",
                "existing_connection",
                "capacity",
                "raw_socket",
                "icmp_socket",
                "mptcp",
                "packet_socket",
                "arguments_incomplete"
            ]
        );
        assert_eq!(
            "arguments_incomplete".parse(),
            Ok(Reason::ArgumentsIncomplete)
        );
        assert_eq!("packet_socket".parse(), Ok(Reason::PacketSocket));
        assert_eq!("tcp_fast_open".parse(), Ok(Reason::TcpFastOpen));
        assert!("raw".parse::<Reason>().is_err());
        let guard: Vec<Reason> = Reason::ALL
            .iter()
            .copied()
            .filter(|r| r.is_socket_guard())
            .collect();
        assert_eq!(
            guard,
            [
                Reason::RawSocket,
                Reason::IcmpSocket,
                Reason::Mptcp,
                Reason::PacketSocket
            ]
        );
    }

    /// A `policy_match` as the controller's tests always had it: fields the controller does
    /// not use (`cwd`, `start_time`, `parent_exec_id`) left out still read.
    const CONNECT_BLOCK: &str = r#"{"type":"policy_match","time":"2026-11-22T03:00:00.123Z",
      "node_name":"node-a","policy_name":"block-cloud-metadata","policy_namespace":null,
      "rule":"deny-imds","hook":"connect","action":"Block","mode":"enforce","enforced":true,
      "outcome":"blocked","process":{"exec_id":"bm9kZS1hOjEyMzQ6NTY3OA","pid":1234,"uid":0,
      "binary":"/usr/bin/curl","arguments":"-s http://169.254.169.254/",
      "pod":{"namespace":"payments","name":"api-7d9","container":"app","labels":{"app":"api"}}},
      "destination":{"ip":"169.254.169.254","port":80,"protocol":"TCP"},"encryption":null}"#;

    #[test]
    fn parses_the_daemon_event_shape() {
        let ev = crate::Event::from_json_line(&CONNECT_BLOCK.replace('\n', "")).unwrap();
        let m = ev.policy_match().expect("a policy_match");
        assert_eq!(m.outcome, Outcome::Blocked);
        assert_eq!(m.hook, Hook::Connect);
        assert_eq!(m.action, Action::Block);
        assert_eq!(m.process.pod.as_ref().unwrap().namespace, "payments");
        assert_eq!(m.destination.as_ref().unwrap().port, 80);
        // Round trip keeps the shape.
        let back = crate::Event::from_json_line(&ev.to_json_line()).unwrap();
        assert_eq!(back, ev);
        // A host process has no pod.
        let host = CONNECT_BLOCK.replace(
            r#"{"namespace":"payments","name":"api-7d9","container":"app","labels":{"app":"api"}}"#,
            "null",
        );
        let ev = crate::Event::from_json_line(&host).unwrap();
        assert!(ev.process().unwrap().pod.is_none());
        // A wrong word is not read as something else.
        let bad = CONNECT_BLOCK.replace(r#""outcome":"blocked""#, r#""outcome":"stopped""#);
        let err = crate::Event::from_json_line(&bad).unwrap_err().to_string();
        assert!(err.contains("stopped"), "{err}");
    }

    #[test]
    fn policy_labels() {
        let mut m: PolicyMatch = serde_json::from_str(
            r#"{"policy_name":"p","policy_namespace":"ns","rule":"r","hook":"egress",
                "action":"Post","mode":"monitor","enforced":false,"outcome":"reported",
                "process":{"exec_id":"x","pid":1,"binary":"/b","cwd":null,"start_time":"t",
                "parent_exec_id":null},"encryption":"tls"}"#,
        )
        .unwrap();
        assert_eq!(m.encryption, Some(Encryption::Tls));
        assert_eq!(m.destination, None);
        assert_eq!(m.reason, None, "an event without `reason` reads as null");
        assert_eq!(
            (&m.file, &m.syscall),
            (&None, &None),
            "an event without `file` / `syscall` reads as null"
        );
        assert_eq!(m.policy_label(), "ns/p");
        m.policy_namespace = None;
        assert_eq!(m.policy_label(), "p");
        m.policy_name = None;
        assert_eq!(m.policy_label(), "?");
    }
}
