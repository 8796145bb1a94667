//! This node's `BulwarkNode` report: what it has in force and what it failed to load
//! ([`entries`], pure), written by [`ReportWriter`] with server-side apply when it changes and
//! at least every heartbeat interval. One object per node, written only by that node: a policy
//! change costs one write per node whatever the number of policies changed, and the status
//! aggregator ([`crate::aggregate`]) reads all reports to compute bounded policy statuses.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};

use crate::crd::{BulwarkNode, BulwarkNodeSpec, NodePolicyReport};
use crate::policy_watch::ParsedPolicy;
use crate::reconcile::truncate;
use crate::PolicyKey;

/// A node's reason is cut to this many bytes in its report (a report holds one entry per
/// policy: 1,000 policies at most ~1 MiB even if every one fails with a long reason).
const MAX_REPORT_REASON: usize = 512;

/// The report entries for the policies handed to the engine: one per key of `load` that is
/// still among `objects`, with the object's generation, sorted by key.
pub fn entries(
    objects: &[ParsedPolicy],
    load: &BTreeMap<PolicyKey, Result<(), String>>,
) -> Vec<NodePolicyReport> {
    let mut out: Vec<(PolicyKey, NodePolicyReport)> = objects
        .iter()
        .filter_map(|p| {
            let key = &p.object.key;
            let result = load.get(key)?;
            Some((
                key.clone(),
                NodePolicyReport {
                    kind: key.kind.kind().into(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    generation: p.object.generation,
                    error: result
                        .as_ref()
                        .err()
                        .map(|e| truncate(e, MAX_REPORT_REASON)),
                },
            ))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, r)| r).collect()
}

/// What [`ReportWriter::sync`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    Nothing,
    /// The entries changed.
    Change,
    /// Same entries, heartbeat renewed.
    Heartbeat,
}

/// Whether to write the report now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Write(Written),
    /// Unchanged and the heartbeat is not due.
    Wait,
    /// Changed, but the last write is more recent than the minimum interval.
    HoldBack,
}

/// What [`ReportWriter::sync`] does given the last write (entries, when) and the entries now.
pub fn decide(
    last: Option<(&[NodePolicyReport], Instant)>,
    entries: &[NodePolicyReport],
    now: Instant,
    heartbeat: Duration,
    min_interval: Duration,
) -> Decision {
    let Some((written, at)) = last else {
        return Decision::Write(Written::Change);
    };
    let changed = written != entries;
    let beat_due = now >= at + heartbeat;
    match (changed, beat_due) {
        (true, _) if now < at + min_interval && !beat_due => Decision::HoldBack,
        (true, _) => Decision::Write(Written::Change),
        (false, true) => Decision::Write(Written::Heartbeat),
        (false, false) => Decision::Wait,
    }
}

/// Writes this node's report when its entries change or its heartbeat is due.
pub struct ReportWriter {
    api: Api<BulwarkNode>,
    node: String,
    manager: String,
    heartbeat: Duration,
    /// Changes are written at most this often (a burst of policy changes costs one write per
    /// interval, not one per change).
    min_interval: Duration,
    written: Option<(Vec<NodePolicyReport>, Instant)>,
    /// A change waits for the minimum interval.
    held_back: bool,
    retry_at: Option<Instant>,
    failures: u32,
}

impl ReportWriter {
    pub fn new(
        client: kube::Client,
        node: &str,
        manager: &str,
        heartbeat: Duration,
        min_interval: Duration,
    ) -> Self {
        ReportWriter {
            api: Api::all(client),
            node: node.to_string(),
            manager: manager.to_string(),
            heartbeat,
            min_interval,
            written: None,
            held_back: false,
            retry_at: None,
            failures: 0,
        }
    }

    /// Write on the next [`ReportWriter::sync`] even if nothing changed (the server lost data).
    pub fn invalidate(&mut self) {
        self.written = None;
    }

    /// When the next write is due: a retry, a change held back by the minimum interval, or
    /// the heartbeat.
    pub fn next_due(&self) -> Option<Instant> {
        match (&self.written, self.retry_at) {
            (_, Some(t)) => Some(t),
            (Some((_, at)), None) if self.held_back => Some(*at + self.min_interval),
            (Some((_, at)), None) => Some(*at + self.heartbeat),
            (None, None) => None,
        }
    }

    /// Write `entries` if they differ from what was written or the heartbeat is due. Returns
    /// what was written; a failure is retried with backoff on a later call.
    pub async fn sync(&mut self, entries: Vec<NodePolicyReport>) -> Result<Written, kube::Error> {
        let now = Instant::now();
        let last = self.written.as_ref().map(|(e, at)| (e.as_slice(), *at));
        let decision = decide(last, &entries, now, self.heartbeat, self.min_interval);
        self.held_back = decision == Decision::HoldBack;
        let kind = match decision {
            Decision::Write(kind) if self.retry_at.is_none_or(|t| now >= t) => kind,
            _ => return Ok(Written::Nothing),
        };
        let loaded = entries.iter().filter(|e| e.error.is_none()).count() as i64;
        let spec = BulwarkNodeSpec {
            heartbeat: jiff::Timestamp::now().to_string(),
            loaded,
            failed: entries.len() as i64 - loaded,
            policies: entries.clone(),
        };
        let body = serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1",
            "kind": "BulwarkNode",
            "metadata": { "name": self.node },
            "spec": spec,
        });
        let params = PatchParams::apply(&self.manager).force();
        match crate::timed(self.api.patch(&self.node, &params, &Patch::Apply(&body))).await {
            Ok(_) => {
                self.written = Some((entries, now));
                self.retry_at = None;
                self.failures = 0;
                Ok(kind)
            }
            Err(e) => {
                self.failures += 1;
                self.retry_at = Some(now + Duration::from_millis(500u64 << self.failures.min(6)));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::PolicyObject;
    use crate::PolicyKind;

    fn parsed(name: &str, ns: Option<&str>, generation: i64) -> ParsedPolicy {
        ParsedPolicy {
            object: PolicyObject {
                key: PolicyKey {
                    kind: if ns.is_some() {
                        PolicyKind::Namespaced
                    } else {
                        PolicyKind::Cluster
                    },
                    namespace: ns.map(str::to_string),
                    name: name.into(),
                },
                generation: Some(generation),
                status: None,
            },
            policy: Err("not needed here".into()),
            fingerprint: String::new(),
        }
    }

    #[test]
    fn changes_are_written_at_most_once_per_interval_and_heartbeats_renew() {
        let hb = Duration::from_secs(60);
        let min = Duration::from_secs(1);
        let t0 = Instant::now();
        let a = vec![NodePolicyReport {
            kind: "TracingPolicy".into(),
            name: "a".into(),
            ..Default::default()
        }];
        let b = vec![];
        assert_eq!(
            decide(None, &a, t0, hb, min),
            Decision::Write(Written::Change)
        );
        let last = Some((a.as_slice(), t0));
        assert_eq!(decide(last, &a, t0 + min, hb, min), Decision::Wait);
        assert_eq!(
            decide(last, &b, t0 + Duration::from_millis(300), hb, min),
            Decision::HoldBack
        );
        assert_eq!(
            decide(last, &b, t0 + min, hb, min),
            Decision::Write(Written::Change)
        );
        assert_eq!(
            decide(last, &a, t0 + hb, hb, min),
            Decision::Write(Written::Heartbeat)
        );
        // A heartbeat due carries a change through even within the interval.
        assert_eq!(
            decide(last, &b, t0 + hb, hb, Duration::from_secs(120)),
            Decision::Write(Written::Change)
        );
    }

    #[test]
    fn entries_cover_what_the_engine_was_handed_with_generations() {
        let objects = vec![
            parsed("b", None, 2),
            parsed("a", Some("team"), 5),
            parsed("rejected", None, 1),
        ];
        let mut load = BTreeMap::new();
        load.insert(objects[0].object.key.clone(), Ok(()));
        load.insert(
            objects[1].object.key.clone(),
            Err("x".repeat(2 * MAX_REPORT_REASON)),
        );
        // A key the engine was handed that has since been deleted is not reported.
        load.insert(
            PolicyKey {
                kind: PolicyKind::Cluster,
                namespace: None,
                name: "gone".into(),
            },
            Ok(()),
        );
        let e = entries(&objects, &load);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(e[0].name, "b");
        assert_eq!(e[0].kind, "TracingPolicy");
        assert_eq!(e[0].generation, Some(2));
        assert_eq!(e[0].error, None);
        assert_eq!(e[1].name, "a");
        assert_eq!(e[1].namespace.as_deref(), Some("team"));
        assert_eq!(e[1].generation, Some(5));
        assert!(e[1].error.as_ref().unwrap().len() <= MAX_REPORT_REASON + 4);
    }
}
