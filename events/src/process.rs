//! The process an event is about, and where a connection goes: the parts shared by
//! `process_exec`, `process_exit`, `process_connect` and `policy_match` (the [`crate::Body`]
//! variants of this family).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Kubernetes identity of the workload a process runs in (`process.pod`). The daemon's
/// workload registry and the controller's Pod mapping hold this same type.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    /// Container name; empty when not known.
    #[serde(default)]
    pub container: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A process as events describe it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    /// base64("<node>:<start_ns>:<pid>"), unique on the node.
    pub exec_id: String,
    pub pid: u32,
    /// Real uid at exec; `null` when unknown.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Path of the executable; empty when unknown.
    pub binary: String,
    /// argv[1..] joined by spaces (an argument with spaces or quotes is single-quoted).
    #[serde(default)]
    pub arguments: String,
    /// True when `arguments` is cut short: the kernel copies the first 512 bytes of argv into
    /// its exec record (matching examines all of it). Written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub arguments_truncated: bool,
    /// Working directory, best effort from /proc at event time; `null` when unavailable.
    pub cwd: Option<String>,
    /// RFC 3339 (UTC, nanoseconds) of the exec (or fork) that created this process image.
    #[serde(default)]
    pub start_time: String,
    /// exec_id of the parent process; `null` when the parent is unknown (e.g. pid 1).
    pub parent_exec_id: Option<String>,
    /// Workload identity; `null` for host processes.
    #[serde(default)]
    pub pod: Option<Pod>,
}

impl Process {
    /// `binary` and `arguments` as one command line.
    pub fn command_line(&self) -> String {
        if self.arguments.is_empty() {
            self.binary.clone()
        } else {
            format!("{} {}", self.binary, self.arguments)
        }
    }
}

/// `parent` of a `process_exec` event.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Parent {
    pub exec_id: String,
    pub pid: u32,
    /// Empty when the parent's identity is known but its details are not.
    pub binary: String,
}

/// Destination of a connection.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Dotted IPv4 or RFC 5952 IPv6 text.
    pub ip: String,
    pub port: u16,
    /// `TCP` or `UDP` (or `IP<n>` for anything else).
    pub protocol: String,
}

impl std::fmt::Display for Destination {
    /// `10.0.0.2:80 TCP`, `[fd00::2]:80 TCP`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ip.contains(':') {
            write!(f, "[{}]:{} {}", self.ip, self.port, self.protocol)
        } else {
            write!(f, "{}:{} {}", self.ip, self.port, self.protocol)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_optional_parts_read_as_empty() {
        let p: Process =
            serde_json::from_str(r#"{"exec_id":"x","pid":1,"binary":"/bin/sh"}"#).unwrap();
        assert_eq!((p.uid, p.arguments.as_str(), p.pod), (None, "", None));
        assert_eq!(
            (p.cwd, p.start_time.as_str(), p.parent_exec_id),
            (None, "", None)
        );
        let pod: Pod = serde_json::from_str(r#"{"namespace":"a","name":"b"}"#).unwrap();
        assert!(pod.container.is_empty() && pod.labels.is_empty());
    }

    #[test]
    fn arguments_are_one_string() {
        // Nothing ever wrote them as a list; a list is not an event of this schema.
        let r: Result<Process, _> = serde_json::from_str(
            r#"{"exec_id":"x","pid":1,"binary":"/bin/sh","arguments":["-c","x"],"cwd":null,
                "start_time":"t","parent_exec_id":null}"#,
        );
        assert!(r.is_err());
    }

    #[test]
    fn command_lines_and_destinations_print_compactly() {
        let mut p = Process {
            binary: "/usr/bin/curl".into(),
            ..Process::default()
        };
        assert_eq!(p.command_line(), "/usr/bin/curl");
        p.arguments = "http://x".into();
        assert_eq!(p.command_line(), "/usr/bin/curl http://x");
        let mut d = Destination {
            ip: "10.0.0.2".into(),
            port: 80,
            protocol: "TCP".into(),
        };
        assert_eq!(d.to_string(), "10.0.0.2:80 TCP");
        d.ip = "fd00::2".into();
        assert_eq!(d.to_string(), "[fd00::2]:80 TCP");
    }
}
