//! The status aggregator: one node at a time (the holder of the `bulwark-status` Lease,
//! [`LeaseElector`]) watches every node's `BulwarkNode` report and writes each policy's status
//! ([`crate::reconcile::reconcile`]) with one field manager. Departed nodes (Node deleted, or
//! heartbeat older than the TTL: [`crate::node_liveness`]) are left out and their reports
//! deleted. Progress while nodes catch up is written at most every
//! [`crate::ControllerOptions::status_progress_interval`] per policy ([`write_now`]).
//!
//! Why one writer: with a per-node entry in every policy's status, status size and
//! `managedFields` grow with the cluster, and each node's change of the `loaded/total` count
//! makes every other node rewrite it (N² writes to converge). With reports and one writer, a
//! policy change costs one report write per node plus a few status writes per policy (at most
//! one per [`crate::ControllerOptions::status_interval`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_policy::model::PolicyStatus;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::Notify;

use crate::crd::{BulwarkNode, NodePolicyReport};
use crate::node_liveness::{live_reports, NodeWatch, STALE_REASON};
use crate::policy_watch::{ParsedPolicy, Plan};
use crate::reconcile::{self, Action, NodeView, ReconcileContext};
use crate::watch_store::WatchStore;
use crate::{ControllerOptions, PolicyKey, PolicyKind};

/// Name of the aggregator's Lease (in the host namespace).
pub const LEASE_NAME: &str = "bulwark-status";
/// Field manager of every policy status write.
pub const STATUS_MANAGER: &str = "bulwark-aggregator";

/// Lease-based election (coordination.k8s.io/v1), optimistic concurrency on the Lease's
/// resourceVersion: whoever replaces it first wins. [`LeaseElector::spawn`] keeps trying and
/// renewing in its own task, so a long status pass can never let the Lease lapse.
pub struct LeaseElector {
    api: Api<Lease>,
    identity: String,
    duration: Duration,
}

impl LeaseElector {
    pub fn new(client: Client, namespace: &str, identity: &str, duration: Duration) -> Self {
        LeaseElector {
            api: Api::namespaced(client, namespace),
            identity: identity.to_string(),
            duration,
        }
    }

    /// Try (every `duration`) or renew (every third of it) in a background task; the flag says
    /// whether this node holds the Lease. The task ends once the flag is dropped.
    pub fn spawn(self, notify: Arc<Notify>) -> Arc<AtomicBool> {
        let leader = Arc::new(AtomicBool::new(false));
        let flag = Arc::downgrade(&leader);
        tokio::spawn(async move {
            while let Some(flag) = flag.upgrade() {
                let held = match self.try_acquire_or_renew().await {
                    Ok(h) => h,
                    Err(e) => {
                        log::warn!("the status Lease could not be read or renewed: {e}");
                        false
                    }
                };
                if flag.swap(held, Ordering::Relaxed) != held {
                    notify.notify_one();
                }
                drop(flag);
                let next = if held {
                    self.duration / 3
                } else {
                    self.duration
                };
                tokio::time::sleep(next).await;
            }
        });
        leader
    }

    /// Take or renew the Lease. True when this node holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = jiff::Timestamp::now();
        let secs = self.duration.as_secs().max(1) as i32;
        let Some(mut lease) = crate::timed(self.api.get_opt(LEASE_NAME)).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(
                crate::timed(self.api.create(&PostParams::default(), &lease)).await,
            );
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours && !lease_expired(spec, now) {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(secs);
        conflict_is_false(
            crate::timed(self.api.replace(LEASE_NAME, &PostParams::default(), &lease)).await,
        )
    }
}

/// A Lease without a holder, or whose renew time plus duration has passed, is free.
pub(crate) fn lease_expired(spec: &LeaseSpec, now: jiff::Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return true;
    };
    let dur = jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    spec.holder_identity.as_deref().is_none_or(str::is_empty) || now.duration_since(renewed) > dur
}

fn conflict_is_false(r: Result<Lease, kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn report_key(r: &NodePolicyReport) -> Option<PolicyKey> {
    let kind = match r.kind.as_str() {
        "TracingPolicy" => PolicyKind::Cluster,
        "TracingPolicyNamespaced" => PolicyKind::Namespaced,
        _ => return None,
    };
    Some(PolicyKey {
        kind,
        namespace: r.namespace.clone(),
        name: r.name.clone(),
    })
}

/// The status of every policy that needs a write, from the live reports (pure).
pub fn statuses(
    objects: &[ParsedPolicy],
    plan: &Plan,
    live: &[Arc<BulwarkNode>],
    stale: &BTreeSet<String>,
    now: &str,
) -> Vec<(PolicyKey, PolicyStatus)> {
    // Policy -> (node index -> view), built in one walk over every report entry.
    let mut by_policy: HashMap<PolicyKey, HashMap<usize, NodeView<'_>>> = HashMap::new();
    for (i, r) in live.iter().enumerate() {
        for e in &r.spec.policies {
            if let Some(k) = report_key(e) {
                by_policy.entry(k).or_default().insert(
                    i,
                    NodeView::Reported {
                        generation: e.generation,
                        error: e.error.as_deref(),
                    },
                );
            }
        }
    }
    let names: Vec<&str> = live
        .iter()
        .map(|r| r.metadata.name.as_deref().unwrap_or(""))
        .collect();
    let empty = HashMap::new();
    let mut out = Vec::new();
    for p in objects {
        let views = by_policy.get(&p.object.key).unwrap_or(&empty);
        let nodes: Vec<(&str, NodeView<'_>)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let view = if stale.contains(*n) {
                    // Whatever it reported, a node that stopped heartbeating fails the policy.
                    NodeView::Reported {
                        generation: p.object.generation,
                        error: Some(STALE_REASON),
                    }
                } else {
                    views.get(&i).cloned().unwrap_or(NodeView::Unreported)
                };
                (*n, view)
            })
            .collect();
        let ctx = ReconcileContext {
            verdict: &plan.verdicts[&p.object.key],
            nodes: &nodes,
            now,
        };
        if let Action::ApplyStatus(s) = reconcile::reconcile(&p.object, &ctx) {
            out.push((p.object.key.clone(), s));
        }
    }
    out
}

/// The aggregator's state inside the policy loop of one node.
pub struct Aggregator {
    client: Client,
    /// Set while this node holds the Lease (renewed by [`LeaseElector::spawn`]).
    leader: Arc<AtomicBool>,
    notify: Arc<Notify>,
    /// Present while this node holds the Lease.
    reports: Option<WatchStore<BulwarkNode>>,
    nodes: Option<NodeWatch>,
    next_pass: Instant,
    /// What was last written per policy, and when: the watch may not have delivered our own
    /// write yet, and writing the same status again would only cost the API server.
    written: HashMap<PolicyKey, (PolicyStatus, Instant)>,
    /// When the per-node status of a policy from before reports was last dropped (the watch
    /// may show it again until our change arrives).
    cleaned: HashMap<PolicyKey, Instant>,
}

impl Aggregator {
    pub fn new(client: Client, node: &str, opts: &ControllerOptions, notify: Arc<Notify>) -> Self {
        let leader = LeaseElector::new(
            client.clone(),
            &opts.host_namespace,
            node,
            opts.lease_duration,
        )
        .spawn(notify.clone());
        Aggregator {
            leader,
            client,
            notify,
            reports: None,
            nodes: None,
            next_pass: Instant::now(),
            written: HashMap::new(),
            cleaned: HashMap::new(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.reports.is_some()
    }

    /// This node holds the Lease (it aggregates from its next pass on).
    pub fn holds_lease(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Re-list the reports when the watch missed a change (the server lost or restored its
    /// data); also forget what was written. True when it was out of sync.
    pub async fn audit(&mut self) -> bool {
        let Some(store) = &self.reports else {
            return false;
        };
        match store.audit().await {
            Ok(true) => {
                log::warn!("the watch of BulwarkNode reports was out of sync with the API server; re-listed");
                self.written.clear();
                true
            }
            Ok(false) => false,
            Err(e) => {
                log::debug!("audit list of BulwarkNode reports failed: {e}");
                false
            }
        }
    }

    /// Follow the Lease flag (start or stop watching reports), then, as the holder, write the
    /// statuses that changed. Returns when to come back.
    /// `own` is this node's report as it is now (it counts in place of the watched one, which
    /// may lag behind or wait for its debounce).
    pub async fn tick(
        &mut self,
        objects: &[ParsedPolicy],
        plan: &Plan,
        own: Option<BulwarkNode>,
        ar_c: &ApiResource,
        ar_n: &ApiResource,
        opts: &ControllerOptions,
    ) -> Instant {
        let now = Instant::now();
        let leader = self.leader.load(Ordering::Relaxed);
        match (leader, self.reports.is_some()) {
            (true, false) => {
                log::info!("this node now aggregates policy status (holds the {LEASE_NAME} Lease)");
                self.reports = Some(WatchStore::spawn(
                    Api::all(self.client.clone()),
                    watcher::Config::default(),
                    self.notify.clone(),
                    "bulwarknodes.bulwark.dev".into(),
                ));
                self.nodes = Some(NodeWatch::spawn(
                    self.client.clone(),
                    &opts.node_resource,
                    self.notify.clone(),
                ));
            }
            (false, true) => {
                log::info!("this node no longer aggregates policy status");
                self.reports = None;
                self.nodes = None;
                self.written.clear();
            }
            _ => {}
        }
        let Some(store) = &self.reports else {
            return now + opts.resync_interval;
        };
        if !store.is_ready() || now < self.next_pass {
            return self.next_pass.max(now + Duration::from_millis(100));
        }
        self.next_pass = now + opts.status_interval;
        let mut reports = store.state();
        if let Some(own) = own {
            reports.retain(|r| r.metadata.name != own.metadata.name);
            reports.push(Arc::new(own));
        }
        let node_set = self
            .nodes
            .as_ref()
            .map(NodeWatch::snapshot)
            .unwrap_or_default();
        let liveness = live_reports(&reports, &node_set, jiff::Timestamp::now(), opts.node_ttl);
        let (live, departed) = (liveness.live, liveness.departed);
        if !liveness.stale.is_empty() {
            log::warn!(
                "{} node(s) have not renewed their heartbeat within {:?} while their Node exists (counted as failed): {}",
                liveness.stale.len(),
                opts.node_ttl,
                liveness.stale.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
            );
        }
        let reports_api: Api<BulwarkNode> = Api::all(self.client.clone());
        for name in departed {
            if node_set.deleted.contains(&name) {
                log::info!("node {name} was deleted; removing its report");
            } else {
                log::info!(
                    "node {name} departed (no heartbeat within {:?}); removing its report",
                    opts.node_ttl
                );
            }
            match crate::timed(reports_api.delete(&name, &DeleteParams::default())).await {
                Ok(_) => opts
                    .stats
                    .node_reports_pruned
                    .fetch_add(1, Ordering::Relaxed),
                Err(e) => {
                    log::debug!("deleting the report of departed node {name}: {e}");
                    0
                }
            };
        }
        // Statuses in the format from before reports: drop the per-node list and its
        // managers, then write the bounded status afresh.
        let mut rewrite = std::collections::HashSet::new();
        for p in objects.iter().filter(|p| p.legacy_status) {
            let key = &p.object.key;
            if self
                .cleaned
                .get(key)
                .is_some_and(|t| now.saturating_duration_since(*t) < LEGACY_RETRY)
            {
                continue;
            }
            self.cleaned.insert(key.clone(), now);
            match drop_legacy_status(&self.client, key, ar_c, ar_n).await {
                Ok(writes) => {
                    log::info!("dropped the per-node status of {key} (from before BulwarkNode reports) in {writes} writes; writing the bounded one");
                    opts.stats
                        .status_writes
                        .fetch_add(writes, Ordering::Relaxed);
                    self.written.remove(key);
                    rewrite.insert(key.clone());
                }
                Err(e) => {
                    opts.stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("dropping the per-node status of {key} failed (will retry): {e}");
                }
            }
        }
        // Compare with what we wrote recently rather than a watch that may lag behind it.
        let basis: Vec<ParsedPolicy> = objects
            .iter()
            .map(|p| {
                let mut object = p.object.clone();
                if rewrite.contains(&object.key) {
                    object.status = None;
                } else if let Some((s, at)) = self.written.get(&object.key) {
                    if now.saturating_duration_since(*at) < opts.resync_interval {
                        object.status = Some(s.clone());
                    }
                }
                ParsedPolicy {
                    object,
                    policy: Err(String::new()),
                    fingerprint: String::new(),
                    legacy_status: false,
                }
            })
            .collect();
        let stamp = jiff::Timestamp::now().to_string();
        // A few writes in flight at once: a pass over many changed policies stays short.
        let client = &self.client;
        let results: Vec<(PolicyKey, PolicyStatus, Result<(), kube::Error>)> =
            futures::stream::iter(
                statuses(&basis, plan, &live, &liveness.stale, &stamp)
                    .into_iter()
                    .filter(|(key, status)| {
                        let last = self.written.get(key).map(|(s, at)| (s, *at));
                        write_now(last, status, now, opts.status_progress_interval)
                    }),
            )
            .map(|(key, status)| async move {
                let r = write_status(client, &key, &status, ar_c, ar_n).await;
                (key, status, r)
            })
            .buffer_unordered(STATUS_WRITES_IN_FLIGHT)
            .collect()
            .await;
        for (key, status, r) in results {
            match r {
                Ok(()) => {
                    opts.stats.status_writes.fetch_add(1, Ordering::Relaxed);
                    self.written.insert(key, (status, Instant::now()));
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    log::debug!("{key} was deleted while its status was being written");
                }
                Err(e) => {
                    opts.stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("writing the status of {key} failed (will retry): {e}");
                    self.written.remove(&key);
                }
            }
        }
        let present: std::collections::HashSet<&PolicyKey> =
            objects.iter().map(|p| &p.object.key).collect();
        self.written.retain(|k, _| present.contains(k));
        self.cleaned.retain(|k, _| present.contains(k));
        self.next_pass
    }
}

/// Whether a changed `status` is written now, given the last write of this policy's status
/// (what, when): a new generation, a change of verdict and the final counts (no node pending)
/// at once; progress while nodes catch up at most once per `progress_interval`, so a policy
/// change costs a few status writes (each delivered to every node's watch) however many nodes
/// report in between.
pub fn write_now(
    last: Option<(&PolicyStatus, Instant)>,
    status: &PolicyStatus,
    now: Instant,
    progress_interval: Duration,
) -> bool {
    let Some((last, at)) = last else {
        return true;
    };
    let settled = status.node_counts.as_ref().is_none_or(|c| c.pending == 0);
    settled
        || last.observed_generation != status.observed_generation
        || last.state != status.state
        || now >= at + progress_interval
}

/// A failed or not yet visible drop of a legacy status is tried again after this long.
const LEGACY_RETRY: Duration = Duration::from_secs(10);

/// Drop the status format from before reports from policy `key`: the `status.nodeStatus`
/// list (if the schema still keeps it) and the `managedFields` entries of its per-node writers
/// (which would otherwise stay, growing with the cluster). Each per-node manager applies an
/// empty status, which releases what it owned and removes its entry: one write per node that
/// wrote the old status, once, with no more access than status writes need (the status
/// subresource keeps no `managedFields` sent to it, and the policy itself is not ours to
/// patch). Returns the writes done; the caller writes the bounded status afterwards.
async fn drop_legacy_status(
    client: &Client,
    key: &PolicyKey,
    ar_c: &ApiResource,
    ar_n: &ApiResource,
) -> Result<u64, kube::Error> {
    let (api, ar): (Api<DynamicObject>, &ApiResource) = match &key.namespace {
        Some(ns) => (Api::namespaced_with(client.clone(), ns, ar_n), ar_n),
        None => (Api::all_with(client.clone(), ar_c), ar_c),
    };
    let obj = crate::timed(api.get(&key.name)).await?;
    let list = crate::policy_watch::LEGACY_NODE_LIST;
    let mut writes = 0;
    if obj
        .data
        .get("status")
        .is_some_and(|s| s.get(list).is_some())
    {
        let body = serde_json::json!({ "status": { list: null } });
        let params = PatchParams {
            field_manager: Some(STATUS_MANAGER.into()),
            ..Default::default()
        };
        crate::timed(api.patch_status(&key.name, &params, &Patch::Merge(&body))).await?;
        writes += 1;
    }
    let mut metadata = serde_json::json!({ "name": key.name });
    if let Some(ns) = &key.namespace {
        metadata["namespace"] = ns.clone().into();
    }
    let empty = serde_json::json!({
        "apiVersion": ar.api_version, "kind": ar.kind, "metadata": metadata,
    });
    let managers = crate::policy_watch::legacy_status_managers(&obj);
    let results: Vec<Result<(), kube::Error>> = futures::stream::iter(managers)
        .map(|m| {
            let (api, empty) = (&api, &empty);
            async move {
                let params = PatchParams::apply(&m);
                crate::timed(api.patch_status(&key.name, &params, &Patch::Apply(empty)))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(STATUS_WRITES_IN_FLIGHT)
        .collect()
        .await;
    for r in results {
        r?;
        writes += 1;
    }
    Ok(writes)
}

/// Status writes the aggregator keeps in flight at once.
const STATUS_WRITES_IN_FLIGHT: usize = 8;

/// Server-side apply `status` to the policy `key`.
async fn write_status(
    client: &Client,
    key: &PolicyKey,
    status: &PolicyStatus,
    ar_c: &ApiResource,
    ar_n: &ApiResource,
) -> Result<(), kube::Error> {
    let (api, ar): (Api<DynamicObject>, &ApiResource) = match &key.namespace {
        Some(ns) => (Api::namespaced_with(client.clone(), ns, ar_n), ar_n),
        None => (Api::all_with(client.clone(), ar_c), ar_c),
    };
    let mut metadata = serde_json::json!({ "name": key.name });
    if let Some(ns) = &key.namespace {
        metadata["namespace"] = ns.clone().into();
    }
    let body = serde_json::json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": metadata,
        "status": status,
    });
    let params = PatchParams::apply(STATUS_MANAGER).force();
    crate::timed(api.patch_status(&key.name, &params, &Patch::Apply(&body)))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::PolicyObject;

    #[test]
    fn an_expired_or_unheld_lease_is_free() {
        let now = jiff::Timestamp::now();
        let spec = |holder: Option<&str>, renewed_ago: i64| LeaseSpec {
            holder_identity: holder.map(str::to_string),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(
                now - jiff::SignedDuration::from_secs(renewed_ago),
            )),
            ..Default::default()
        };
        assert!(!lease_expired(&spec(Some("node-a"), 5), now));
        assert!(lease_expired(&spec(Some("node-a"), 16), now));
        assert!(lease_expired(&spec(None, 1), now));
        assert!(lease_expired(&LeaseSpec::default(), now));
    }

    #[test]
    fn statuses_count_every_live_node_and_only_changed_ones_are_written() {
        use crate::validate::Verdict;
        use std::collections::BTreeMap;
        let key = PolicyKey {
            kind: PolicyKind::Cluster,
            namespace: None,
            name: "p".into(),
        };
        let object = |status: Option<PolicyStatus>| ParsedPolicy {
            object: PolicyObject {
                key: key.clone(),
                generation: Some(2),
                status,
            },
            policy: Err(String::new()),
            fingerprint: String::new(),
            legacy_status: false,
        };
        let plan = Plan {
            verdicts: BTreeMap::from([(key.clone(), Verdict::default())]),
            accepted: vec![],
            fingerprint: vec![],
        };
        let now = jiff::Timestamp::now().to_string();
        let entry = |generation: i64, error: Option<&str>| NodePolicyReport {
            kind: "TracingPolicy".into(),
            namespace: None,
            name: "p".into(),
            generation: Some(generation),
            error: error.map(str::to_string),
        };
        use crate::node_report::current;
        let a = current("node-a", vec![entry(2, None)]);
        let b = current("node-b", vec![entry(2, Some("over capacity"))]);
        let c = current("node-c", vec![]);
        let live: Vec<Arc<BulwarkNode>> = vec![Arc::new(a), Arc::new(b), Arc::new(c)];
        let out = statuses(&[object(None)], &plan, &live, &BTreeSet::new(), &now);
        assert_eq!(out.len(), 1);
        let s = &out[0].1;
        assert_eq!(s.nodes.as_deref(), Some("1/3"));
        let counts = s.node_counts.as_ref().unwrap();
        assert_eq!((counts.failed, counts.pending), (1, 1));
        assert_eq!(s.failed_nodes[0].node, "node-b");
        // Written already: nothing to do.
        assert!(statuses(
            &[object(Some(s.clone()))],
            &plan,
            &live,
            &BTreeSet::new(),
            &now
        )
        .is_empty());
        // node-a stops heartbeating while its Node exists: its "loaded" is no longer vouched
        // for, so it fails the policy with the reason, and the status says so.
        let stale = BTreeSet::from(["node-a".to_string()]);
        let out = statuses(&[object(Some(s.clone()))], &plan, &live, &stale, &now);
        let s = &out[0].1;
        assert_eq!(s.nodes.as_deref(), Some("0/3"));
        let counts = s.node_counts.as_ref().unwrap();
        assert_eq!((counts.loaded, counts.failed, counts.pending), (0, 2, 1));
        let a = s.failed_nodes.iter().find(|n| n.node == "node-a").unwrap();
        assert_eq!(a.reason.as_deref(), Some(STALE_REASON));
    }

    #[test]
    fn progress_is_written_at_most_once_per_interval_but_news_and_the_end_at_once() {
        use bulwark_policy::model::NodeCounts;
        let t0 = Instant::now();
        let every = Duration::from_secs(5);
        let st = |generation: i64, loaded: i64, pending: i64| PolicyStatus {
            observed_generation: Some(generation),
            state: Some("Accepted".into()),
            node_counts: Some(NodeCounts {
                total: loaded + pending,
                loaded,
                failed: 0,
                pending,
            }),
            ..Default::default()
        };
        let last = st(2, 10, 190);
        let after = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(write_now(None, &st(2, 0, 200), t0, every), "first");
        assert!(
            !write_now(Some((&last, t0)), &st(2, 50, 150), after(1000), every),
            "progress within the interval waits"
        );
        assert!(write_now(
            Some((&last, t0)),
            &st(2, 50, 150),
            after(5000),
            every
        ));
        assert!(
            write_now(Some((&last, t0)), &st(2, 200, 0), after(1000), every),
            "converged: at once"
        );
        assert!(
            write_now(Some((&last, t0)), &st(3, 0, 200), after(1000), every),
            "new generation: at once"
        );
        let mut rejected = st(2, 50, 150);
        rejected.state = Some("Rejected".into());
        assert!(write_now(Some((&last, t0)), &rejected, after(1000), every));
    }

    #[test]
    fn the_per_node_writers_of_before_are_found_and_others_are_not() {
        let entry = |manager: &str, sub: Option<&str>, fields: serde_json::Value| {
            let mut e = serde_json::json!({
                "manager": manager, "operation": "Apply", "apiVersion": "bulwark.dev/v1alpha1",
                "fieldsType": "FieldsV1", "fieldsV1": fields,
            });
            if let Some(sub) = sub {
                e["subresource"] = sub.into();
            }
            e
        };
        let per_node = |node: &str| {
            entry(
                &format!("bulwark/{node}"),
                Some("status"),
                serde_json::json!({"f:status": {"f:nodeStatus": {
                    format!("k:{{\"node\":\"{node}\"}}"): {".": {}}}, "f:state": {}}}),
            )
        };
        let obj = |managed: Vec<serde_json::Value>, status: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
                "metadata": {"name": "p", "managedFields": managed},
                "status": status,
            }))
            .unwrap()
        };
        let spec_writer = entry("kubectl", None, serde_json::json!({"f:spec": {}}));
        let aggregator = entry(
            STATUS_MANAGER,
            Some("status"),
            serde_json::json!({"f:status": {"f:nodeCounts": {}}}),
        );
        let old = obj(
            vec![
                spec_writer.clone(),
                per_node("a"),
                per_node("b"),
                aggregator.clone(),
            ],
            serde_json::json!({"state": "Accepted"}),
        );
        // The list itself already pruned by the new schema: the managers still tell.
        assert!(crate::policy_watch::has_legacy_status(&old));
        assert_eq!(
            crate::policy_watch::legacy_status_managers(&old),
            ["bulwark/a", "bulwark/b"]
        );
        let only = obj(vec![per_node("a")], serde_json::json!({}));
        assert_eq!(
            crate::policy_watch::legacy_status_managers(&only),
            ["bulwark/a"]
        );
        // The list in the status is enough, and the bounded status alone is not legacy.
        let listed = obj(
            vec![],
            serde_json::json!({"nodeStatus": [{"node": "a", "state": "Loaded"}]}),
        );
        assert!(crate::policy_watch::has_legacy_status(&listed));
        let new = obj(
            vec![spec_writer, aggregator],
            serde_json::json!({"nodes": "1/1"}),
        );
        assert!(!crate::policy_watch::has_legacy_status(&new));
    }
}
