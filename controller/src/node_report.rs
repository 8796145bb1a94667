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

/// Writes this node's report when its entries change or its heartbeat is due.
pub struct ReportWriter {
    api: Api<BulwarkNode>,
    node: String,
    manager: String,
    heartbeat: Duration,
    written: Option<(Vec<NodePolicyReport>, Instant)>,
    retry_at: Option<Instant>,
    failures: u32,
}

impl ReportWriter {
    pub fn new(client: kube::Client, node: &str, manager: &str, heartbeat: Duration) -> Self {
        ReportWriter {
            api: Api::all(client),
            node: node.to_string(),
            manager: manager.to_string(),
            heartbeat,
            written: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// Write on the next [`ReportWriter::sync`] even if nothing changed (the server lost data).
    pub fn invalidate(&mut self) {
        self.written = None;
    }

    /// When the next write is due if nothing changes.
    pub fn next_due(&self) -> Option<Instant> {
        match (&self.written, self.retry_at) {
            (_, Some(t)) => Some(t),
            (Some((_, at)), None) => Some(*at + self.heartbeat),
            (None, None) => None,
        }
    }

    /// Write `entries` if they differ from what was written or the heartbeat is due. Returns
    /// what was written; a failure is retried with backoff on a later call.
    pub async fn sync(&mut self, entries: Vec<NodePolicyReport>) -> Result<Written, kube::Error> {
        let now = Instant::now();
        let changed = self.written.as_ref().is_none_or(|(e, _)| *e != entries);
        let beat_due = self
            .written
            .as_ref()
            .is_none_or(|(_, at)| now >= *at + self.heartbeat);
        if !(changed || beat_due) || self.retry_at.is_some_and(|t| now < t) {
            return Ok(Written::Nothing);
        }
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
                Ok(if changed {
                    Written::Change
                } else {
                    Written::Heartbeat
                })
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
