//! The JSON event schema written by `bulwark run` (one event per line) and read by
//! `bulwark events`. Documented field by field in `docs/events.md`; the e2e tests and the
//! Kubernetes side parse exactly these shapes, so change them only together with that document.
//! Names follow Tetragon where they overlap (`process_exec`, `exec_id`, `parent_exec_id`, ...).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kubernetes-style identity of the workload a process runs in.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub labels: BTreeMap<String, String>,
}

/// A process as events describe it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// base64("<node>:<start_ns>:<pid>"), unique on the node.
    pub exec_id: String,
    pub pid: u32,
    /// Real uid at exec; `null` when unknown.
    pub uid: Option<u32>,
    /// Path of the executable; empty when unknown.
    pub binary: String,
    /// argv[1..] joined by spaces (an argument with spaces or quotes is single-quoted).
    pub arguments: String,
    /// Working directory, best effort from /proc at event time; `null` when unavailable.
    pub cwd: Option<String>,
    /// RFC 3339 (UTC, nanoseconds).
    pub start_time: String,
    /// exec_id of the parent process; `null` when the parent is unknown (e.g. pid 1).
    pub parent_exec_id: Option<String>,
    /// Workload identity; `null` for host processes.
    pub pod: Option<Pod>,
}

/// `parent` of a `process_exec` event.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Parent {
    pub exec_id: String,
    pub pid: u32,
    pub binary: String,
}

/// Destination of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct DestinationJson {
    /// Dotted IPv4 or RFC 5952 IPv6 text.
    pub ip: String,
    pub port: u16,
    /// `TCP` or `UDP` (or `IP<n>` for anything else).
    pub protocol: String,
}

/// One line of the event stream. `type` selects the variant; `time` and `node_name` are on all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Event {
    /// RFC 3339 (UTC, nanoseconds) when it happened.
    pub time: String,
    pub node_name: String,
    #[serde(flatten)]
    pub body: Body,
}

/// The per-type fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
// Each event is built once and serialized at once: the size of the largest variant is fine.
#[allow(clippy::large_enum_variant)]
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
        destination: DestinationJson,
        /// True when a rule in enforce mode made `connect()` fail (EPERM).
        blocked: bool,
    },
    PolicyMatch(PolicyMatch),
    Status(Status),
}

/// A rule matched (`type: policy_match`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyMatch {
    /// `null` only if the rule set that matched is no longer known (should not happen).
    pub policy_name: Option<String>,
    /// Namespace of a TracingPolicyNamespaced; `null` for cluster-wide policies.
    pub policy_namespace: Option<String>,
    pub rule: Option<String>,
    /// `exec`, `connect` or `egress`.
    pub hook: String,
    /// The strongest action of the selector: `Sigkill`, `Block` or `Post`.
    pub action: String,
    /// `enforce` or `monitor`.
    pub mode: String,
    /// True when Sigkill/Block was carried out.
    pub enforced: bool,
    /// `killed`, `blocked`, `would_kill`, `would_block` or `reported`.
    pub outcome: String,
    pub process: Process,
    /// Destination for `connect` and `egress` rules, `null` for `exec`.
    pub destination: Option<DestinationJson>,
    /// `plaintext` or `tls` for `egress` rules (the stream's verdict), else `null` (also when
    /// the payload was never seen or the verdict is still undecided).
    pub encryption: Option<String>,
    /// Why the match happened outside the plain evaluation of a payload: `tcp_fast_open`,
    /// `unseen_payload`, `existing_connection` or `capacity`; `null` otherwise.
    pub reason: Option<String>,
}

/// Daemon state (`type: status`): the sync point for tests and operators.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Status {
    /// `ready`, `reloaded`, `reload_failed`, `running` (periodic loss report) or `stopping`.
    pub state: String,
    /// Number of rule sets applied to the kernel so far (1 after the first load).
    pub generation: u64,
    /// Names of the policies in force (`namespace/name` for namespaced ones), sorted.
    pub policies: Vec<String>,
    /// Lint diagnostics and load errors of this (re)load, as JSON objects.
    pub diagnostics: Vec<serde_json::Value>,
    /// Records the kernel could not deliver (ring buffer full) plus records userspace could
    /// not decode, since start.
    pub lost_events: u64,
    /// Enforcement the kernel could not keep by the usual means since start (full maps,
    /// connections refused for lack of room), one sentence each; empty when none.
    pub warnings: Vec<String>,
    /// Milliseconds the last policy load spent reading, linting and compiling the directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
    /// Milliseconds the last successful kernel apply took (write the inactive slot, reseed
    /// running processes, switch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_ms: Option<f64>,
}

impl Event {
    /// One JSON line (without the newline).
    pub fn to_json_line(&self) -> String {
        // Serializing these plain structs cannot fail (string keys, no non-finite floats).
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"type":"error","message":"event serialization failed: {e}"}}"#)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_line_has_exact_shape() {
        let ev = Event {
            time: "t".into(),
            node_name: "n".into(),
            body: Body::Status(Status {
                state: "ready".into(),
                generation: 1,
                policies: vec!["a".into()],
                diagnostics: vec![],
                lost_events: 0,
                warnings: vec![],
                load_ms: None,
                apply_ms: None,
            }),
        };
        let v: serde_json::Value = serde_json::from_str(&ev.to_json_line()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"time":"t","node_name":"n","type":"status","state":"ready",
                "generation":1,"policies":["a"],"diagnostics":[],"lost_events":0,"warnings":[]})
        );
        // And it reads back.
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn unknown_type_is_rejected() {
        let r: Result<Event, _> =
            serde_json::from_str(r#"{"time":"t","node_name":"n","type":"bogus"}"#);
        assert!(r.is_err());
    }
}
