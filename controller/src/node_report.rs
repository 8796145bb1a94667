//! This node's `BulwarkNode` report: what it has in force and what it failed to load
//! ([`entries`], pure), written by [`ReportWriter`] with server-side apply when it changes,
//! debounced ([`Debounce`]), and its heartbeat renewed by its own task ([`Heartbeat`]). One
//! object per node, written only by that node: a burst of policy changes costs one write per
//! node whatever the number of policies changed, and the status aggregator
//! ([`crate::aggregate`]) reads all reports to compute bounded policy statuses.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// This node's report as it is now (what it would write), heartbeat now.
pub fn current(node: &str, entries: Vec<NodePolicyReport>) -> BulwarkNode {
    let mut r = BulwarkNode::new(node, spec(entries));
    r.metadata.name = Some(node.to_string());
    r
}

/// The report's spec for `entries`, heartbeat now.
fn spec(entries: Vec<NodePolicyReport>) -> BulwarkNodeSpec {
    let loaded = entries.iter().filter(|e| e.error.is_none()).count() as i64;
    BulwarkNodeSpec {
        heartbeat: jiff::Timestamp::now().to_string(),
        loaded,
        failed: entries.len() as i64 - loaded,
        policies: entries,
    }
}

/// Whether to write the report now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Write,
    /// What was written is what the node has.
    Wait,
    /// Changed, but still changing: written once it has been quiet for the debounce interval
    /// or the change has waited the longest delay, whichever comes first (the instant).
    HoldBack(Instant),
}

/// When to write the report, as pure state: what was written, and since when what the node
/// has differs from it.
#[derive(Clone, Debug, Default)]
pub struct Debounce {
    written: Option<Vec<NodePolicyReport>>,
    /// The entries last seen that differ from `written`: first seen at, last changed at.
    unwritten: Option<(Vec<NodePolicyReport>, Instant, Instant)>,
}

impl Debounce {
    /// Look at `entries` at `now`: write when nothing was written yet, or the change has been
    /// quiet for `quiet`, or has waited `max_delay`. (Not at once on a lone change: on a loaded
    /// API server the changes of a batch arrive more than `quiet` apart, and every node would
    /// write once per change.)
    pub fn decide(
        &mut self,
        entries: &[NodePolicyReport],
        now: Instant,
        quiet: Duration,
        max_delay: Duration,
    ) -> Decision {
        let Some(written) = &self.written else {
            return Decision::Write;
        };
        if written.as_slice() == entries {
            self.unwritten = None;
            return Decision::Wait;
        }
        let (first, last) = match &mut self.unwritten {
            Some((seen, first, last)) => {
                if seen.as_slice() != entries {
                    *seen = entries.to_vec();
                    *last = now;
                }
                (*first, *last)
            }
            None => {
                self.unwritten = Some((entries.to_vec(), now, now));
                (now, now)
            }
        };
        let due = (last + quiet).min(first + max_delay);
        if now >= due {
            Decision::Write
        } else {
            Decision::HoldBack(due)
        }
    }

    /// `entries` are on the server now.
    pub fn written(&mut self, entries: Vec<NodePolicyReport>) {
        self.written = Some(entries);
        self.unwritten = None;
    }

    /// Forget what was written: the next look writes.
    pub fn invalidate(&mut self) {
        self.written = None;
        self.unwritten = None;
    }
}

/// Writes this node's report when its entries change, debounced: a burst of policy changes in
/// one write once it is over (or one every `max_delay` while it lasts), not one per change. The heartbeat is not written here ([`Heartbeat`]).
pub struct ReportWriter {
    api: Api<BulwarkNode>,
    node: String,
    manager: String,
    quiet: Duration,
    max_delay: Duration,
    debounce: Debounce,
    held_back: Option<Instant>,
    retry_at: Option<Instant>,
    failures: u32,
}

impl ReportWriter {
    pub fn new(
        client: kube::Client,
        node: &str,
        manager: &str,
        quiet: Duration,
        max_delay: Duration,
    ) -> Self {
        ReportWriter {
            api: Api::all(client),
            node: node.to_string(),
            manager: manager.to_string(),
            quiet,
            max_delay,
            debounce: Debounce::default(),
            held_back: None,
            retry_at: None,
            failures: 0,
        }
    }

    /// Write on the next [`ReportWriter::sync`] even if nothing changed (the server lost data).
    pub fn invalidate(&mut self) {
        self.debounce.invalidate();
    }

    /// When the next write is due: a retry, or a change held back by the debounce.
    pub fn next_due(&self) -> Option<Instant> {
        self.retry_at.or(self.held_back)
    }

    /// Write `entries` if they differ from what was written and the debounce allows (or at
    /// once when `at_once`: the status aggregator's own report, one node, so the statuses it
    /// writes never run ahead of the reports on the server). True when it wrote; a failure is
    /// retried with backoff on a later call.
    pub async fn sync(
        &mut self,
        entries: Vec<NodePolicyReport>,
        at_once: bool,
    ) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let decision = match self
            .debounce
            .decide(&entries, now, self.quiet, self.max_delay)
        {
            Decision::HoldBack(_) if at_once => Decision::Write,
            d => d,
        };
        self.held_back = match decision {
            Decision::HoldBack(t) => Some(t),
            _ => None,
        };
        if decision != Decision::Write || self.retry_at.is_some_and(|t| now < t) {
            return Ok(false);
        }
        let spec = spec(entries.clone());
        let body = serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1",
            "kind": "BulwarkNode",
            "metadata": { "name": self.node },
            "spec": spec,
        });
        let params = PatchParams::apply(&self.manager).force();
        match crate::timed(self.api.patch(&self.node, &params, &Patch::Apply(&body))).await {
            Ok(_) => {
                self.debounce.written(entries);
                self.retry_at = None;
                self.failures = 0;
                Ok(true)
            }
            Err(e) => {
                self.failures += 1;
                self.retry_at = Some(now + Duration::from_millis(500u64 << self.failures.min(6)));
                Err(e)
            }
        }
    }
}

/// The node's heartbeat: its own task renews `spec.heartbeat` of the report every interval
/// with a small merge patch, apart from the policy loop, so a node busy applying policies (or
/// waiting for its debounced report) is never taken for departed. A report that is gone (404:
/// pruned, or the server lost it) is signalled through `lost` for the policy loop to rewrite.
pub struct Heartbeat;

impl Heartbeat {
    /// Renew every `interval` until the returned handle is aborted.
    pub fn spawn(
        client: kube::Client,
        node: &str,
        manager: &str,
        interval: Duration,
        lost: Arc<AtomicBool>,
        wake: Arc<tokio::sync::Notify>,
        stats: Arc<crate::Stats>,
    ) -> tokio::task::AbortHandle {
        let api: Api<BulwarkNode> = Api::all(client);
        let (node, manager) = (node.to_string(), manager.to_string());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let body = serde_json::json!({
                    "spec": { "heartbeat": jiff::Timestamp::now().to_string() }
                });
                let params = PatchParams {
                    field_manager: Some(manager.clone()),
                    ..Default::default()
                };
                match crate::timed(api.patch(&node, &params, &Patch::Merge(&body))).await {
                    Ok(_) => {
                        stats.node_heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        log::info!("the BulwarkNode report of node {node} is gone; rewriting it");
                        lost.store(true, Ordering::Relaxed);
                        wake.notify_one();
                    }
                    Err(e) => {
                        stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                        log::warn!(
                            "renewing the heartbeat of node {node} failed (will retry): {e}"
                        );
                    }
                }
            }
        })
        .abort_handle()
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
            legacy_status: false,
        }
    }

    #[test]
    fn changes_are_written_once_quiet_or_after_the_longest_delay() {
        let quiet = Duration::from_secs(1);
        let max = Duration::from_secs(10);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let e = |names: &[&str]| -> Vec<NodePolicyReport> {
            names
                .iter()
                .map(|n| NodePolicyReport {
                    kind: "TracingPolicy".into(),
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect()
        };
        let mut d = Debounce::default();
        // The first report is written at once.
        assert_eq!(d.decide(&e(&["a"]), t0, quiet, max), Decision::Write);
        d.written(e(&["a"]));
        assert_eq!(d.decide(&e(&["a"]), at(100), quiet, max), Decision::Wait);
        // A change waits for quiet; each further change pushes it back.
        assert_eq!(
            d.decide(&e(&["a", "b"]), at(200), quiet, max),
            Decision::HoldBack(at(1200))
        );
        assert_eq!(
            d.decide(&e(&["a", "b", "c"]), at(900), quiet, max),
            Decision::HoldBack(at(1900))
        );
        // Unchanged since: written once quiet.
        assert_eq!(
            d.decide(&e(&["a", "b", "c"]), at(1900), quiet, max),
            Decision::Write
        );
        d.written(e(&["a", "b", "c"]));
        // A lone change long after the last write waits for quiet too.
        assert_eq!(
            d.decide(&e(&["a"]), at(5000), quiet, max),
            Decision::HoldBack(at(6000))
        );
        assert_eq!(d.decide(&e(&["a"]), at(6000), quiet, max), Decision::Write);
        // Changes every half second forever: written after the longest delay all the same.
        d.written(e(&["a"]));
        let mut names = vec!["a".to_string()];
        let mut wrote_at = None;
        for k in 0..40u64 {
            names.push(format!("x{k}"));
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let now = at(5500 + 500 * k);
            if d.decide(&e(&refs), now, quiet, max) == Decision::Write {
                wrote_at = Some(now);
                break;
            }
        }
        assert_eq!(
            wrote_at,
            Some(at(15500)),
            "first unwritten change at 5.5 s + 10 s"
        );
        // Back to what was written: nothing to write.
        let mut d2 = Debounce::default();
        d2.written(e(&["a"]));
        assert!(matches!(
            d2.decide(&e(&["b"]), t0, quiet, max),
            Decision::HoldBack(_)
        ));
        assert_eq!(d2.decide(&e(&["a"]), at(10), quiet, max), Decision::Wait);
        d2.invalidate();
        assert_eq!(d2.decide(&e(&["a"]), at(20), quiet, max), Decision::Write);
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
