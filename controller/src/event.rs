//! The engine's `policy_match` event as the controller receives it ([`ViolationEvent`], the same
//! JSON the daemon writes), and the bounded channel between the engine and the controller
//! ([`violation_channel`]): the sender never blocks the engine; when the queue is full the event
//! is counted in [`Stats::violations_dropped_queue_full`] and logged (rate-limited), never lost
//! silently.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bulwark_policy::model::{Action, Hook, Mode};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::mpsc;

use crate::stats::Stats;

/// What happened to the process or connection.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Killed,
    Blocked,
    WouldKill,
    WouldBlock,
    Reported,
}

impl Outcome {
    /// The JSON spelling (`would_block`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Killed => "killed",
            Outcome::Blocked => "blocked",
            Outcome::WouldKill => "would_kill",
            Outcome::WouldBlock => "would_block",
            Outcome::Reported => "reported",
        }
    }
}

/// One `policy_match` event from the engine.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ViolationEvent {
    /// Always `policy_match`.
    #[serde(rename = "type")]
    pub type_: String,
    /// RFC 3339 time of the match.
    pub time: String,
    pub node_name: String,
    /// `null` only if the engine no longer knows the rule set that matched; such events are
    /// counted as invalid and not turned into objects.
    pub policy_name: Option<String>,
    /// Namespace of a `TracingPolicyNamespaced`; `null` for a `TracingPolicy`.
    pub policy_namespace: Option<String>,
    pub rule: Option<String>,
    pub hook: Hook,
    pub action: Action,
    pub mode: Mode,
    /// True when the action was carried out (enforce mode and an enforcing action).
    pub enforced: bool,
    pub outcome: Outcome,
    pub process: ProcessInfo,
    #[serde(default)]
    pub destination: Option<Destination>,
    /// `plaintext` or `tls` (egress hook only).
    #[serde(default)]
    pub encryption: Option<String>,
}

/// The process that matched (the daemon's event carries more fields, e.g. `cwd`,
/// `start_time`, `parent_exec_id`; they are ignored here).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ProcessInfo {
    pub exec_id: String,
    pub pid: u32,
    /// Real uid at exec; `null` when unknown.
    #[serde(default)]
    pub uid: Option<u32>,
    pub binary: String,
    /// Arguments as one string; a JSON array of strings is accepted too (joined with spaces).
    #[serde(default, deserialize_with = "string_or_list")]
    pub arguments: String,
    /// `null` for host processes.
    #[serde(default)]
    pub pod: Option<PodInfo>,
}

/// The Kubernetes identity of the process.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub container: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Destination of a connection (`connect`, `egress`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Destination {
    pub ip: String,
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: String,
}

fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Args {
        One(String),
        Many(Vec<String>),
        Null(()),
    }
    Ok(match Args::deserialize(d)? {
        Args::One(s) => s,
        Args::Many(v) => v.join(" "),
        Args::Null(()) => String::new(),
    })
}

impl ViolationEvent {
    /// Parse one JSON line of the daemon's event stream. `Ok(None)` for other event types.
    pub fn from_json_line(line: &str) -> Result<Option<ViolationEvent>, String> {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("event line is not JSON ({e}): {}", truncate(line, 120)))?;
        if v.get("type").and_then(|t| t.as_str()) != Some("policy_match") {
            return Ok(None);
        }
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| format!("policy_match event does not match the expected shape: {e}"))
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The engine's end of the violation queue. Cheap to clone.
#[derive(Clone)]
pub struct ViolationSender {
    tx: mpsc::Sender<ViolationEvent>,
    stats: Arc<Stats>,
    last_warn: Arc<AtomicU64>,
}

impl ViolationSender {
    /// Queue an event without blocking. Returns false (and counts the drop) when the queue is
    /// full or the controller is gone.
    pub fn offer(&self, ev: ViolationEvent) -> bool {
        self.stats
            .violations_received
            .fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(ev) {
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

/// A bounded queue from the engine to [`crate::run`]; `capacity` events at most.
pub fn violation_channel(
    capacity: usize,
    stats: Arc<Stats>,
) -> (ViolationSender, mpsc::Receiver<ViolationEvent>) {
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

    pub(crate) const SAMPLE: &str = r#"{"type":"policy_match","time":"2026-11-22T03:00:00.123Z",
      "node_name":"node-a","policy_name":"block-cloud-metadata","policy_namespace":null,
      "rule":"deny-imds","hook":"connect","action":"Block","mode":"enforce","enforced":true,
      "outcome":"blocked","process":{"exec_id":"bm9kZS1hOjEyMzQ6NTY3OA","pid":1234,"uid":0,
      "binary":"/usr/bin/curl","arguments":"-s http://169.254.169.254/",
      "pod":{"namespace":"payments","name":"api-7d9","container":"app","labels":{"app":"api"}}},
      "destination":{"ip":"169.254.169.254","port":80,"protocol":"TCP"},"encryption":null}"#;

    #[test]
    fn parses_the_daemon_event_shape() {
        let ev = ViolationEvent::from_json_line(&SAMPLE.replace('\n', ""))
            .unwrap()
            .unwrap();
        assert_eq!(ev.outcome, Outcome::Blocked);
        assert_eq!(ev.hook, Hook::Connect);
        assert_eq!(ev.action, Action::Block);
        assert_eq!(ev.process.pod.as_ref().unwrap().namespace, "payments");
        assert_eq!(ev.destination.as_ref().unwrap().port, 80);
        // Round trip keeps the shape.
        let back: ViolationEvent =
            serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn other_event_types_are_skipped_and_bad_lines_explained() {
        assert_eq!(
            ViolationEvent::from_json_line(r#"{"type":"process_exec"}"#).unwrap(),
            None
        );
        let err = ViolationEvent::from_json_line("not json").unwrap_err();
        assert!(err.contains("not JSON"), "{err}");
        let err =
            ViolationEvent::from_json_line(r#"{"type":"policy_match","time":"x"}"#).unwrap_err();
        assert!(err.contains("expected shape"), "{err}");
    }

    #[test]
    fn arguments_may_be_a_list_and_host_processes_have_no_pod() {
        let line = SAMPLE
            .replace('\n', "")
            .replace(r#""-s http://169.254.169.254/""#, r#"["-s","http://x/"]"#)
            .replace(
                r#"{"namespace":"payments","name":"api-7d9","container":"app","labels":{"app":"api"}}"#,
                "null",
            );
        let ev = ViolationEvent::from_json_line(&line).unwrap().unwrap();
        assert_eq!(ev.process.arguments, "-s http://x/");
        assert!(ev.process.pod.is_none());
    }

    #[test]
    fn full_queue_counts_drops() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = violation_channel(1, stats.clone());
        let ev = ViolationEvent::from_json_line(&SAMPLE.replace('\n', ""))
            .unwrap()
            .unwrap();
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
