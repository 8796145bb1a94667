//! From the engine's violation stream to `PolicyViolation` objects and Events.
//!
//! [`Aggregator`] is the pure part: it deduplicates events by key (policy, rule, outcome, node,
//! workload, binary, destination), keeps count / firstSeen / lastSeen, decides which objects are
//! due for a write (at most one write per object per flush interval), rate-limits the creation
//! of new objects (token bucket), caps objects per namespace, bounds the number of keys waiting
//! to be written, and finds expired objects. Every event that does not end up in an object is
//! counted in [`Stats`] and logged, so nothing is lost silently.
//!
//! [`run`] is the I/O part: it seeds the aggregator from this node's existing objects (so counts
//! survive a restart), writes due objects with server-side apply (retrying failures with
//! backoff), publishes an `events.k8s.io/v1` Event regarding the policy through kube's
//! `Recorder`, deletes expired objects, and periodically re-lists to re-create objects the
//! server lost.

//!
//! This module: what a violation object is (its key, spec, labels, the Event about it);
//! [`aggregator`]: the pure state machine; [`writer`]: the I/O loop.

mod aggregator;
mod writer;

pub use aggregator::{Aggregator, Ingest, Limits, WriteJob};
pub use writer::run;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event as K8sEvent, EventType};

use crate::crd::{PolicyViolationSpec, ViolationDestination, ViolationFile, ViolationSyscall};
use crate::reconcile::truncate;
use crate::violation_queue::Violation;
use bulwark_events::Outcome;

/// Label holding the (possibly hashed) node name on every object a node writes.
pub const NODE_LABEL: &str = "bulwark.dev/node";
/// Label holding the policy name.
pub const POLICY_LABEL: &str = "bulwark.dev/policy";

/// FNV-1a, 64 bit: stable across runs and platforms (names must not change on restart).
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A label value (at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends);
/// long or odd values become a readable prefix plus a hash.
pub fn label_value(s: &str) -> String {
    let ok = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if ok {
        return s.to_string();
    }
    format!("{}-{:016x}", dns_prefix(s, 40), fnv64(s.as_bytes()))
}

/// Lower-case DNS-1123 characters of `s`, at most `max`, never ending in `-`; `x` when empty.
fn dns_prefix(s: &str, max: usize) -> String {
    let mut out: String = s
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(max)
        .collect();
    while out.ends_with('-') || out.starts_with('-') {
        if out.ends_with('-') {
            out.pop();
        } else {
            out.remove(0);
        }
    }
    if out.is_empty() {
        out.push('x');
    }
    out
}

/// The identity of a violation: events with the same key update one object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ViolationKey {
    /// Namespace the object lives in (the workload's, or the host namespace).
    pub namespace: String,
    /// Object name: `<policy>-<hash of the whole key>`.
    pub name: String,
}

/// Compute the key and object namespace of an event.
pub fn key_of(ev: &Violation, node: &str, host_namespace: &str) -> ViolationKey {
    let pod = ev.policy_match.process.pod.as_ref();
    let namespace = pod
        .map(|p| p.namespace.clone())
        .unwrap_or_else(|| host_namespace.to_string());
    let dest = ev
        .policy_match
        .destination
        .as_ref()
        .map(|d| format!("{}|{}|{}", d.ip, d.port, d.protocol))
        .unwrap_or_default();
    let subject = subject_key(ev);
    let mut identity = vec![
        ev.policy_match.policy_namespace.as_deref().unwrap_or(""),
        ev.policy_match.policy_name.as_deref().unwrap_or(""),
        ev.policy_match.rule.as_deref().unwrap_or(""),
        ev.policy_match.outcome.as_str(),
        node,
        &namespace,
        pod.map(|p| p.name.as_str()).unwrap_or(""),
        pod.map(|p| p.container.as_str()).unwrap_or(""),
        &ev.policy_match.process.binary,
        &dest,
        ev.policy_match.encryption.map_or("", |e| e.as_str()),
    ];
    if !subject.is_empty() {
        identity.push(&subject);
    }
    let identity = identity.join("\u{1f}");
    ViolationKey {
        namespace,
        name: format!(
            "{}-{:016x}",
            dns_prefix(ev.policy_match.policy_name.as_deref().unwrap_or(""), 40),
            fnv64(identity.as_bytes())
        ),
    }
}

/// The part of the key a match's subject adds: the file (path or identity), the kinds of
/// access and the call, or the system call and its table. Empty for the other hooks (and then
/// not part of the key at all: their object names stay what they were before subjects).
fn subject_key(ev: &Violation) -> String {
    match (file_of(ev), syscall_of(ev)) {
        (Some(f), _) => format!(
            "file|{}|{}|{}|{}|{}",
            f.path.as_deref().unwrap_or(""),
            f.device.as_deref().unwrap_or(""),
            f.inode.unwrap_or(0),
            f.access.join(","),
            f.syscall.as_deref().unwrap_or("")
        ),
        (None, Some(c)) => format!("syscall|{}|{}", c.name, c.abi),
        (None, None) => String::new(),
    }
}

fn file_of(ev: &Violation) -> Option<ViolationFile> {
    ev.policy_match.file.as_ref().map(|f| ViolationFile {
        path: f.path.clone(),
        access: f.access.iter().map(|a| a.to_string()).collect(),
        syscall: f.syscall.clone(),
        device: f.device.clone(),
        inode: f.inode.and_then(|i| i64::try_from(i).ok()),
    })
}

fn syscall_of(ev: &Violation) -> Option<ViolationSyscall> {
    ev.policy_match.syscall.as_ref().map(|c| ViolationSyscall {
        name: c.name.clone().unwrap_or_else(|| format!("#{}", c.number)),
        abi: c.abi.clone(),
    })
}

/// The spec of a new object for a first event.
pub fn spec_of(ev: &Violation, node: &str) -> PolicyViolationSpec {
    let pod = ev.policy_match.process.pod.as_ref();
    let destination = ev
        .policy_match
        .destination
        .as_ref()
        .map(|d| ViolationDestination {
            ip: d.ip.clone(),
            port: i32::from(d.port),
            protocol: d.protocol.clone(),
            address: if d.ip.contains(':') {
                format!("[{}]:{}/{}", d.ip, d.port, d.protocol)
            } else {
                format!("{}:{}/{}", d.ip, d.port, d.protocol)
            },
        });
    let mut spec = PolicyViolationSpec {
        policy: ev.policy_match.policy_name.clone().unwrap_or_default(),
        policy_kind: if ev.policy_match.policy_namespace.is_some() {
            "TracingPolicyNamespaced"
        } else {
            "TracingPolicy"
        }
        .into(),
        policy_namespace: ev.policy_match.policy_namespace.clone(),
        rule: ev.policy_match.rule.clone().unwrap_or_default(),
        hook: ev.policy_match.hook.to_string(),
        action: ev.policy_match.action.to_string(),
        mode: ev.policy_match.mode.to_string(),
        enforced: ev.policy_match.enforced,
        outcome: ev.policy_match.outcome.as_str().into(),
        node: node.to_string(),
        pod: pod.map(|p| p.name.clone()),
        container: pod.map(|p| p.container.clone()).filter(|c| !c.is_empty()),
        binary: ev.policy_match.process.binary.clone(),
        arguments: truncate(&ev.policy_match.process.arguments, 1024),
        destination,
        encryption: ev.policy_match.encryption.map(|e| e.to_string()),
        file: file_of(ev),
        syscall: syscall_of(ev),
        target: None,
        count: 1,
        first_seen: normalize_time(&ev.time),
        last_seen: normalize_time(&ev.time),
    };
    spec.target = target_of(&spec);
    spec
}

/// What a violation was about, for `kubectl get`: the destination's address, the file's path
/// (its identity when it has none), or the system call's name.
fn target_of(spec: &PolicyViolationSpec) -> Option<String> {
    if let Some(d) = &spec.destination {
        return Some(d.address.clone());
    }
    if let Some(f) = &spec.file {
        return Some(match (&f.path, &f.device, f.inode) {
            (Some(p), _, _) => p.clone(),
            (None, Some(dev), Some(ino)) => format!("inode {ino} on {dev}"),
            _ => "?".into(),
        });
    }
    spec.syscall.as_ref().map(|c| c.name.clone())
}

/// RFC 3339 in UTC; the current time when the event's time does not parse.
fn normalize_time(t: &str) -> String {
    t.parse::<jiff::Timestamp>()
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

fn parse_time(t: &str) -> Option<jiff::Timestamp> {
    t.parse::<jiff::Timestamp>().ok()
}

fn object_of(key: &ViolationKey, spec: &PolicyViolationSpec, node: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "bulwark.dev/v1alpha1",
        "kind": "PolicyViolation",
        "metadata": {
            "name": key.name,
            "namespace": key.namespace,
            "labels": {
                NODE_LABEL: label_value(node),
                POLICY_LABEL: label_value(&spec.policy),
                "app.kubernetes.io/managed-by": "bulwark",
            },
        },
        "spec": spec,
    })
}

fn policy_reference(spec: &PolicyViolationSpec) -> ObjectReference {
    ObjectReference {
        api_version: Some("bulwark.dev/v1alpha1".into()),
        kind: Some(spec.policy_kind.clone()),
        name: Some(spec.policy.clone()),
        namespace: spec.policy_namespace.clone(),
        ..Default::default()
    }
}

/// The Event published for a written violation.
pub fn event_for(key: &ViolationKey, spec: &PolicyViolationSpec) -> K8sEvent {
    let outcome = spec.outcome.parse().unwrap_or(Outcome::Reported);
    let reason = match outcome {
        Outcome::Killed => "ProcessKilled",
        Outcome::Blocked => "ConnectionBlocked",
        Outcome::WouldKill => "WouldKillProcess",
        Outcome::WouldBlock => "WouldBlockConnection",
        Outcome::Reported => "PolicyMatched",
    };
    let who = match (&spec.pod, &spec.container) {
        (Some(p), Some(c)) => format!("pod {}/{} container {}", key.namespace, p, c),
        (Some(p), None) => format!("pod {}/{}", key.namespace, p),
        _ => format!("a host process on node {}", spec.node),
    };
    let target = match (&spec.destination, &spec.file, &spec.syscall) {
        (Some(d), _, _) => format!(" to {}", d.address),
        (None, Some(f), _) => format!(
            ": {} {} ({})",
            f.access.join("+"),
            spec.target.as_deref().unwrap_or("?"),
            f.syscall.as_deref().unwrap_or("?")
        ),
        (None, None, Some(c)) => format!(": {} ({})", c.name, c.abi),
        (None, None, None) => String::new(),
    };
    let enc = spec
        .encryption
        .as_ref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    K8sEvent {
        type_: if outcome == Outcome::Reported {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: reason.into(),
        note: Some(truncate(
            &format!(
                "rule {}: {} {} by {} in {}{}{}; count and last time in PolicyViolation {}/{}",
                spec.rule,
                spec.outcome.replace('_', " "),
                spec.hook,
                spec.binary,
                who,
                target,
                enc,
                key.namespace,
                key.name
            ),
            1000,
        )),
        action: if spec.enforced { "Enforce" } else { "Monitor" }.into(),
        secondary: Some(ObjectReference {
            api_version: Some("bulwark.dev/v1alpha1".into()),
            kind: Some("PolicyViolation".into()),
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::violation_queue::tests::{file_match, sample, syscall_match};
    use bulwark_events::Hook;

    fn ev() -> Violation {
        sample()
    }

    fn with_pod(name: &str) -> Violation {
        let mut e = ev();
        e.policy_match.process.pod.as_mut().unwrap().name = name.into();
        e
    }

    #[test]
    fn key_is_stable_dns_and_separates_what_matters() {
        let a = key_of(&ev(), "node-a", "bulwark-system");
        assert_eq!(a, key_of(&ev(), "node-a", "bulwark-system"));
        assert_eq!(a.namespace, "payments");
        assert!(a.name.starts_with("block-cloud-metadata-"), "{}", a.name);
        assert!(
            a.name.len() <= 63
                && a.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        // Arguments and pid do not split a violation; pod, node and destination do.
        let mut b = ev();
        b.policy_match.process.arguments = "other".into();
        b.policy_match.process.pid = 9;
        assert_eq!(key_of(&b, "node-a", "x"), a);
        assert_ne!(key_of(&with_pod("other"), "node-a", "x"), a);
        assert_ne!(key_of(&ev(), "node-b", "x"), a);
        let mut c = ev();
        c.policy_match.destination.as_mut().unwrap().port = 443;
        assert_ne!(key_of(&c, "node-a", "x"), a);
        // fnv64 is the published FNV-1a (so names never change between builds).
        assert_eq!(fnv64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv64(b"a"), 0xaf63dc4c8601ec8c);
    }

    fn file_violation(path: &str) -> Violation {
        Violation::of(&file_match(path)).unwrap()
    }

    fn syscall_violation(name: &str) -> Violation {
        Violation::of(&syscall_match(name)).unwrap()
    }

    #[test]
    fn connect_object_names_do_not_change() {
        // Objects already on a server are found again by name after an upgrade.
        assert_eq!(
            key_of(&ev(), "node-a", "bulwark-system").name,
            "block-cloud-metadata-3b3cfaca62f81066"
        );
    }

    #[test]
    fn file_and_syscall_matches_are_keyed_by_their_subject() {
        let a = key_of(&file_violation("/etc/shadow"), "node-a", "x");
        assert_eq!(a, key_of(&file_violation("/etc/shadow"), "node-a", "x"));
        assert_ne!(a, key_of(&file_violation("/etc/gshadow"), "node-a", "x"));
        let mut write = file_violation("/etc/shadow");
        if let Some(f) = write.policy_match.file.as_mut() {
            f.access = vec![bulwark_policy::FileAccess::Write];
        }
        assert_ne!(a, key_of(&write, "node-a", "x"));
        // The descriptor an open returned is not part of it.
        let mut fd = file_violation("/etc/shadow");
        if let Some(f) = fd.policy_match.file.as_mut() {
            f.return_value = Some(9);
        }
        assert_eq!(a, key_of(&fd, "node-a", "x"));
        let p = key_of(&syscall_violation("ptrace"), "node-a", "x");
        assert_ne!(p, key_of(&syscall_violation("mount"), "node-a", "x"));
        assert_ne!(p.name, a.name);
    }

    #[test]
    fn file_spec_names_the_file_and_the_call() {
        let s = spec_of(&file_violation("/etc/shadow"), "node-a");
        assert_eq!(s.hook, "file");
        assert_eq!(s.outcome, "killed");
        assert_eq!(s.destination, None);
        assert_eq!(s.syscall, None);
        let f = s.file.as_ref().unwrap();
        assert_eq!(f.path.as_deref(), Some("/etc/shadow"));
        assert_eq!(f.access, ["read"]);
        assert_eq!(f.syscall.as_deref(), Some("openat"));
        assert_eq!((f.device.as_deref(), f.inode), (Some("8:1"), Some(1834)));
        assert_eq!(s.target.as_deref(), Some("/etc/shadow"));
        // No path (too deep for the kernel's walk): the file's identity.
        let mut deep = file_violation("/x");
        if let Some(f) = deep.policy_match.file.as_mut() {
            f.path = None;
        }
        assert_eq!(
            spec_of(&deep, "n").target.as_deref(),
            Some("inode 1834 on 8:1")
        );
        let key = key_of(&file_violation("/etc/shadow"), "node-a", "x");
        let note = event_for(&key, &s).note.unwrap();
        assert!(
            note.contains("killed file by /usr/bin/curl in pod payments/api-7d9 container app: read /etc/shadow (openat)"),
            "{note}"
        );
    }

    #[test]
    fn syscall_spec_names_the_call() {
        let s = spec_of(&syscall_violation("ptrace"), "node-a");
        assert_eq!(s.hook, "syscall");
        assert_eq!(s.file, None);
        let c = s.syscall.as_ref().unwrap();
        assert_eq!((c.name.as_str(), c.abi.as_str()), ("ptrace", "x86_64"));
        assert_eq!(s.target.as_deref(), Some("ptrace"));
        // A number its table lacks.
        let mut unnamed = syscall_violation("ptrace");
        if let Some(c) = unnamed.policy_match.syscall.as_mut() {
            c.name = None;
        }
        assert_eq!(spec_of(&unnamed, "n").target.as_deref(), Some("#101"));
        let key = key_of(&syscall_violation("ptrace"), "node-a", "x");
        let note = event_for(&key, &s).note.unwrap();
        assert!(note.contains("container app: ptrace (x86_64)"), "{note}");
        // A file or syscall match whose call's record was lost: no subject, still an object.
        let bare = Violation::of(&crate::violation_queue::tests::match_of(Hook::Syscall)).unwrap();
        let s = spec_of(&bare, "n");
        assert_eq!((s.syscall, s.target), (None, None));
    }

    #[test]
    fn host_processes_go_to_the_host_namespace() {
        let mut e = ev();
        e.policy_match.process.pod = None;
        let k = key_of(&e, "node-a", "bulwark-system");
        assert_eq!(k.namespace, "bulwark-system");
        let s = spec_of(&e, "node-a");
        assert_eq!(s.pod, None);
        assert_eq!(s.container, None);
    }

    #[test]
    fn spec_carries_every_field() {
        let s = spec_of(&ev(), "node-a");
        assert_eq!(s.policy, "block-cloud-metadata");
        assert_eq!(s.policy_kind, "TracingPolicy");
        assert_eq!(s.hook, "connect");
        assert_eq!(s.action, "Block");
        assert_eq!(s.mode, "enforce");
        assert!(s.enforced);
        assert_eq!(s.outcome, "blocked");
        assert_eq!(s.pod.as_deref(), Some("api-7d9"));
        assert_eq!(s.container.as_deref(), Some("app"));
        assert_eq!(
            s.destination.as_ref().unwrap().address,
            "169.254.169.254:80/TCP"
        );
        assert_eq!(s.first_seen, "2026-11-22T03:00:00.123Z");
        assert_eq!(s.count, 1);
        let mut e6 = ev();
        e6.policy_match.destination.as_mut().unwrap().ip = "2001:db8::1".into();
        assert_eq!(
            spec_of(&e6, "n").destination.unwrap().address,
            "[2001:db8::1]:80/TCP"
        );
        assert_eq!(s.target.as_deref(), Some("169.254.169.254:80/TCP"));
        assert_eq!((s.file, s.syscall), (None, None));
    }

    #[test]
    fn event_names_the_story() {
        let key = key_of(&ev(), "node-a", "bulwark-system");
        let e = event_for(&key, &spec_of(&ev(), "node-a"));
        assert_eq!(e.reason, "ConnectionBlocked");
        assert_eq!(e.type_, EventType::Warning);
        let note = e.note.unwrap();
        assert!(note.contains("blocked connect by /usr/bin/curl in pod payments/api-7d9 container app to 169.254.169.254:80/TCP"), "{note}");
        let mut host = ev();
        host.policy_match.process.pod = None;
        host.policy_match.outcome = Outcome::Reported;
        let e = event_for(&key, &spec_of(&host, "node-a"));
        assert_eq!(e.type_, EventType::Normal);
        assert!(e.note.unwrap().contains("a host process on node node-a"));
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(label_value("node-a"), "node-a");
        let long = "n".repeat(100);
        let v = label_value(&long);
        assert!(v.len() <= 63, "{v}");
        assert_ne!(label_value("a/b"), "a/b");
    }
}
