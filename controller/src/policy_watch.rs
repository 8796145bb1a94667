//! The policy watch: reflectors over `TracingPolicy` and `TracingPolicyNamespaced` (read as
//! untyped objects so one malformed object can never stall the list or crash the node: it is
//! reported as Rejected instead), a pass that validates every object, hands the accepted set to
//! the [`PolicyEngine`] when it changed, writes this node's report ([`crate::node_report`]) and,
//! on the node that holds the status Lease, the policies' statuses ([`crate::aggregate`]).
//!
//! Recovery: kube-runtime's watcher re-lists after 410 Gone and after API-server restarts (with
//! backoff); every change and a periodic resync trigger a full pass, so status that vanished
//! (e.g. the server lost its data) is written again. A status write that fails with 404 means
//! the policy was deleted while being applied and is ignored; other failures are retried.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_policy::model::{AnyPolicy, PolicyStatus, TracingPolicy, TracingPolicyNamespaced};
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::Deserialize;
use tokio::sync::Notify;

use crate::aggregate::Aggregator;
use crate::node_report::{self, Heartbeat, ReportWriter};
use crate::reconcile::PolicyObject;
use crate::validate::{self, Verdict};
use crate::watch_store::{Wake, WatchStore};
use crate::{ControllerOptions, PolicyEngine, PolicyKey, PolicyKind, PolicyLoadResult};

/// One object of either kind, parsed as far as possible.
pub struct ParsedPolicy {
    pub object: PolicyObject,
    /// The typed policy, or why the object could not be read as one.
    pub policy: Result<AnyPolicy, String>,
    /// Identity of the spec for change detection: uid + generation (the API server bumps the
    /// generation exactly when the spec changes), uid + spec JSON for an object without one.
    pub fingerprint: String,
    /// The status still has (or `managedFields` still track) the per-node list written before
    /// `BulwarkNode` reports ([`has_legacy_status`]); the aggregator rewrites it.
    pub legacy_status: bool,
}

/// True when `obj`'s status is in the format from before `BulwarkNode` reports: a per-node
/// `status.nodeStatus` list, each entry owned by its node's field manager (`bulwark/<node>`),
/// which grows with the cluster in the object and in its `managedFields`. The list may already
/// be pruned from the object by the new schema while its managers still own it.
pub fn has_legacy_status(obj: &DynamicObject) -> bool {
    let in_status = obj
        .data
        .get("status")
        .is_some_and(|s| s.get(LEGACY_NODE_LIST).is_some());
    in_status || !legacy_status_managers(obj).is_empty()
}

/// The field managers of `obj`'s status that own part of the per-node list from before
/// reports (`bulwark/<node>`, one per node that wrote it).
pub fn legacy_status_managers(obj: &DynamicObject) -> Vec<String> {
    let legacy_key = format!("f:{}", LEGACY_NODE_LIST);
    obj.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.subresource.as_deref() == Some("status")
                && m.fields_v1.as_ref().is_some_and(|f| {
                    f.0.get("f:status")
                        .is_some_and(|s| s.get(&legacy_key).is_some())
                })
        })
        .filter_map(|m| m.manager.clone())
        .collect()
}

/// The per-node status list of the format before `BulwarkNode` reports.
pub const LEGACY_NODE_LIST: &str = "nodeStatus";

/// Read one untyped object as a policy of `kind`. Never fails: an unreadable object comes back
/// with `policy: Err(reason)`.
pub fn parse_object(kind: PolicyKind, obj: &DynamicObject) -> ParsedPolicy {
    let value = serde_json::to_value(obj).unwrap_or_default();
    let policy = match kind {
        PolicyKind::Cluster => {
            serde_json::from_value::<TracingPolicy>(value).map(AnyPolicy::Cluster)
        }
        PolicyKind::Namespaced => {
            serde_json::from_value::<TracingPolicyNamespaced>(value).map(AnyPolicy::Namespaced)
        }
    }
    .map_err(|e| format!("the object cannot be read as a {}: {e}", kind.kind()));
    let fingerprint = match (&obj.metadata.uid, obj.metadata.generation) {
        (Some(uid), Some(g)) => format!("{uid}|{g}"),
        (uid, _) => format!(
            "{}|{}",
            uid.as_deref().unwrap_or(""),
            obj.data
                .get("spec")
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
    };
    ParsedPolicy {
        object: policy_object(kind, obj, true),
        policy,
        fingerprint,
        legacy_status: has_legacy_status(obj),
    }
}

/// The key, generation and (when `with_status`) status of `obj`, without reading its spec.
fn policy_object(kind: PolicyKind, obj: &DynamicObject, with_status: bool) -> PolicyObject {
    let key = PolicyKey {
        kind,
        namespace: match kind {
            PolicyKind::Cluster => None,
            PolicyKind::Namespaced => Some(
                obj.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
        },
        name: obj.metadata.name.clone().unwrap_or_default(),
    };
    let status = obj
        .data
        .get("status")
        .filter(|_| with_status)
        .and_then(|s| PolicyStatus::deserialize(s).ok());
    PolicyObject {
        key,
        generation: obj.metadata.generation,
        status,
    }
}

/// Kind, uid and generation: what identifies one spec.
type SpecId = (PolicyKind, String, i64);
/// The spec read as a policy (or why not), and its fingerprint.
type ParsedSpec = (Result<AnyPolicy, String>, String);

/// Parsed specs by (kind, uid, generation) and verdicts by spec fingerprint, kept from one pass
/// to the next: the generation changes exactly when the spec does, so the watch events that
/// only change status (every status write of the aggregator reaches every node) cost neither a
/// re-parse nor a re-validation of every policy.
#[derive(Default)]
pub struct ParseCache {
    parsed: HashMap<SpecId, ParsedSpec>,
    verdicts: HashMap<String, Verdict>,
    used_parsed: HashMap<SpecId, ParsedSpec>,
    used_verdicts: HashMap<String, Verdict>,
}

impl ParseCache {
    /// [`parse_object`], reusing the spec parsed for the same uid and generation. The status
    /// is read only `with_status` (only the status aggregator needs it).
    pub fn parse(
        &mut self,
        kind: PolicyKind,
        obj: &DynamicObject,
        with_status: bool,
    ) -> ParsedPolicy {
        let key = match (&obj.metadata.uid, obj.metadata.generation) {
            (Some(uid), Some(g)) => (kind, uid.clone(), g),
            _ => return parse_object(kind, obj),
        };
        if let Some((policy, fingerprint)) = self
            .used_parsed
            .get(&key)
            .or_else(|| self.parsed.get(&key))
            .cloned()
        {
            self.used_parsed
                .insert(key, (policy.clone(), fingerprint.clone()));
            return ParsedPolicy {
                object: policy_object(kind, obj, with_status),
                policy,
                fingerprint,
                legacy_status: with_status && has_legacy_status(obj),
            };
        }
        let p = parse_object(kind, obj);
        self.used_parsed
            .insert(key, (p.policy.clone(), p.fingerprint.clone()));
        p
    }

    /// [`verdict_of`], reusing the verdict on the same spec.
    pub fn verdict(&mut self, p: &ParsedPolicy) -> Verdict {
        if p.fingerprint.is_empty() {
            return verdict_of(p);
        }
        let v = match self
            .used_verdicts
            .get(&p.fingerprint)
            .or_else(|| self.verdicts.get(&p.fingerprint))
        {
            Some(v) => v.clone(),
            None => verdict_of(p),
        };
        self.used_verdicts.insert(p.fingerprint.clone(), v.clone());
        v
    }

    /// Forget what the last pass did not use (deleted or changed objects).
    pub fn end_pass(&mut self) {
        self.parsed = std::mem::take(&mut self.used_parsed);
        self.verdicts = std::mem::take(&mut self.used_verdicts);
    }
}

/// The result of deciding what to hand to the engine: verdicts for every object and which
/// objects are accepted, sorted by key.
pub struct Plan {
    pub verdicts: BTreeMap<PolicyKey, Verdict>,
    /// Indices into the objects the plan was made from, sorted by key.
    pub accepted: Vec<usize>,
    /// Changes whenever the accepted set or any accepted spec changes.
    pub fingerprint: Vec<String>,
}

impl Plan {
    /// The accepted policies of `objects` (the slice the plan was made from), sorted by key:
    /// cloned only when they go to the engine.
    pub fn accepted_policies(&self, objects: &[ParsedPolicy]) -> Vec<AnyPolicy> {
        self.accepted
            .iter()
            .filter_map(|i| objects.get(*i)?.policy.as_ref().ok().cloned())
            .collect()
    }
}

/// Validate every object (pure; the lint's checks are pure).
pub fn plan(objects: &[ParsedPolicy]) -> Plan {
    plan_with(objects, verdict_of)
}

/// The lint's verdict on one object.
pub fn verdict_of(p: &ParsedPolicy) -> Verdict {
    match &p.policy {
        Ok(policy) => validate::validate(policy),
        Err(e) => Verdict::unreadable(e.clone()),
    }
}

/// [`plan`] with verdicts from `verdict` (e.g. a [`ParseCache`]).
pub fn plan_with(
    objects: &[ParsedPolicy],
    mut verdict: impl FnMut(&ParsedPolicy) -> Verdict,
) -> Plan {
    let mut verdicts = BTreeMap::new();
    let mut accepted: Vec<usize> = Vec::new();
    for (i, p) in objects.iter().enumerate() {
        let verdict = verdict(p);
        if verdict.accepted() && p.policy.is_ok() {
            accepted.push(i);
        }
        verdicts.insert(p.object.key.clone(), verdict);
    }
    accepted.sort_by(|a, b| objects[*a].object.key.cmp(&objects[*b].object.key));
    Plan {
        verdicts,
        fingerprint: accepted
            .iter()
            .map(|i| format!("{}|{}", objects[*i].object.key, objects[*i].fingerprint))
            .collect(),
        accepted,
    }
}

/// Run the policy watch and reconcile loop forever.
pub async fn run(
    client: Client,
    node: String,
    engine: Arc<dyn PolicyEngine>,
    opts: ControllerOptions,
) -> crate::Result<()> {
    let ar_c = ApiResource::erase::<TracingPolicy>(&());
    let ar_n = ApiResource::erase::<TracingPolicyNamespaced>(&());
    let notify = Arc::new(Notify::new());
    let store_c = WatchStore::spawn_waking(
        Api::all_with(client.clone(), &ar_c),
        watcher::Config::default(),
        notify.clone(),
        "tracingpolicies.bulwark.dev".into(),
        // Status writes reach every node; only a new spec needs a pass.
        Wake::SpecChange,
    );
    let store_n = WatchStore::spawn_waking(
        Api::all_with(client.clone(), &ar_n),
        watcher::Config::default(),
        notify.clone(),
        "tracingpoliciesnamespaced.bulwark.dev".into(),
        // Status writes reach every node; only a new spec needs a pass.
        Wake::SpecChange,
    );
    store_c.wait_ready().await;
    store_n.wait_ready().await;
    log::info!("policy watch synced on node {node}");

    let manager = format!("{}/{}", opts.field_manager, node);
    let mut state = LoopState {
        report: ReportWriter::new(
            client.clone(),
            &node,
            &manager,
            opts.report_min_interval,
            opts.report_max_delay,
        ),
        aggregator: opts
            .aggregate_status
            .then(|| Aggregator::new(client.clone(), &node, &opts, notify.clone())),
        applied_fingerprint: None,
        cache: ParseCache::default(),
        load: BTreeMap::new(),
        engine_failures: 0,
        engine_applied_once: false,
    };
    let report_lost = Arc::new(AtomicBool::new(false));
    // Stops with this task (dropped when the controller is).
    let _heartbeat = AbortOnDrop(Heartbeat::spawn(
        client.clone(),
        &node,
        &manager,
        opts.report_heartbeat,
        report_lost.clone(),
        notify.clone(),
        opts.stats.clone(),
    ));
    let mut next_audit = Instant::now() + opts.resync_interval;
    loop {
        if report_lost.swap(false, Ordering::Relaxed) {
            state.report.invalidate();
        }
        if Instant::now() >= next_audit {
            // Catch a server that lost its data: resumed watches would miss new objects.
            let mut lost = false;
            for (store, what) in [
                (&store_c, "TracingPolicies"),
                (&store_n, "TracingPoliciesNamespaced"),
            ] {
                match store.audit().await {
                    Ok(true) => {
                        lost = true;
                        log::warn!("the watch of {what} was out of sync with the API server (data restored or lost?); re-listed")
                    }
                    Ok(false) => {}
                    Err(e) => log::debug!("audit list of {what} failed: {e}"),
                }
            }
            if let Some(agg) = state.aggregator.as_mut() {
                lost |= agg.audit().await;
            }
            if lost {
                // The server lost data: our report may be gone with it.
                state.report.invalidate();
            }
            next_audit = Instant::now() + opts.resync_interval;
        }
        let come_back = pass(
            &node, &engine, &opts, &store_c, &store_n, &ar_c, &ar_n, &mut state,
        )
        .await;
        opts.ready
            .store(state.engine_applied_once, Ordering::Relaxed);
        let wait = come_back
            .saturating_duration_since(Instant::now())
            .min(opts.resync_interval);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Coalesce bursts (our own status writes come back as watch events).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct LoopState {
    report: ReportWriter,
    /// `None` when this node does not take part in the status election.
    aggregator: Option<Aggregator>,
    applied_fingerprint: Option<Vec<String>>,
    cache: ParseCache,
    load: BTreeMap<PolicyKey, Result<(), String>>,
    engine_failures: u32,
    engine_applied_once: bool,
}

/// One pass: engine apply when the accepted set changed, this node's report, the aggregator's
/// turn. Returns when the next pass is due at the latest.
#[allow(clippy::too_many_arguments)]
async fn pass(
    node: &str,
    engine: &Arc<dyn PolicyEngine>,
    opts: &ControllerOptions,
    store_c: &WatchStore<DynamicObject>,
    store_n: &WatchStore<DynamicObject>,
    ar_c: &ApiResource,
    ar_n: &ApiResource,
    st: &mut LoopState,
) -> Instant {
    // Only the status aggregator reads the policies' statuses.
    let aggregating = st.aggregator.as_ref().is_some_and(Aggregator::holds_lease);
    let mut objects: Vec<ParsedPolicy> = store_c
        .state()
        .iter()
        .map(|o| st.cache.parse(PolicyKind::Cluster, o, aggregating))
        .collect();
    objects.extend(
        store_n
            .state()
            .iter()
            .map(|o| st.cache.parse(PolicyKind::Namespaced, o, aggregating)),
    );
    let plan = plan_with(&objects, |p| st.cache.verdict(p));
    st.cache.end_pass();
    let mut retry: Option<Duration> = None;

    if st.applied_fingerprint.as_ref() != Some(&plan.fingerprint) {
        let set = plan.accepted_policies(&objects);
        let keys: Vec<PolicyKey> = set.iter().map(PolicyKey::of).collect();
        let eng = engine.clone();
        let res = tokio::task::spawn_blocking(move || eng.apply(set))
            .await
            .unwrap_or_else(|e| Err(format!("the engine panicked while applying policies: {e}")));
        st.load.clear();
        match res {
            Ok(results) => {
                opts.stats.engine_applies.fetch_add(1, Ordering::Relaxed);
                for k in &keys {
                    st.load.insert(k.clone(), Ok(()));
                }
                for PolicyLoadResult { key, result } in results {
                    if let Err(e) = &result {
                        log::warn!("policy {key} not loaded on node {node}: {e}");
                    }
                    st.load.insert(key, result);
                }
                st.applied_fingerprint = Some(plan.fingerprint.clone());
                st.engine_failures = 0;
                st.engine_applied_once = true;
                log::info!("engine now enforces {} policies on node {node}", keys.len());
            }
            Err(e) => {
                opts.stats
                    .engine_apply_errors
                    .fetch_add(1, Ordering::Relaxed);
                st.engine_failures += 1;
                log::error!("engine rejected the policy set on node {node} (will retry): {e}");
                for k in &keys {
                    st.load.insert(
                        k.clone(),
                        Err(format!(
                            "the node's engine failed to apply the policy set: {e}"
                        )),
                    );
                }
                let backoff = Duration::from_secs(1u64 << st.engine_failures.min(6));
                retry = Some(backoff);
            }
        }
    }

    let reporting = st.engine_applied_once || st.engine_failures > 0;
    let entries = node_report::entries(&objects, &st.load);
    if reporting {
        match st.report.sync(entries.clone(), aggregating).await {
            Ok(true) => {
                opts.stats
                    .node_report_writes
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {}
            Err(e) => {
                opts.stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("writing the BulwarkNode report of node {node} failed (will retry): {e}; is the BulwarkNode CRD installed?");
            }
        }
    }
    let mut come_back = Instant::now() + retry.unwrap_or(opts.resync_interval);
    if let Some(t) = st.report.next_due() {
        come_back = come_back.min(t);
    }
    if let Some(agg) = st.aggregator.as_mut() {
        let own = reporting.then(|| node_report::current(node, entries));
        come_back = come_back.min(agg.tick(&objects, &plan, own, ar_c, ar_n, opts).await);
    }
    come_back
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynobj(v: serde_json::Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn malformed_object_is_rejected_not_fatal() {
        let o = dynobj(serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": "broken", "generation": 2, "uid": "u1"},
            "spec": {"rules": "not-a-list"}
        }));
        let p = parse_object(PolicyKind::Cluster, &o);
        assert_eq!(p.object.key.name, "broken");
        assert_eq!(p.object.generation, Some(2));
        let err = p.policy.as_ref().unwrap_err();
        assert!(err.contains("cannot be read as a TracingPolicy"), "{err}");
        let plan = plan(&[p]);
        assert!(plan.accepted.is_empty());
        assert!(!plan.verdicts.values().next().unwrap().accepted());
    }

    #[test]
    fn well_formed_objects_are_parsed_with_status_and_namespace() {
        let o = dynobj(serde_json::json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicyNamespaced",
            "metadata": {"name": "ok", "namespace": "payments", "generation": 1, "uid": "u2"},
            "spec": {"mode": "monitor", "rules": []},
            "status": {"state": "Accepted", "nodes": "1/1"}
        }));
        let p = parse_object(PolicyKind::Namespaced, &o);
        assert_eq!(p.object.key.namespace.as_deref(), Some("payments"));
        assert_eq!(
            p.object.status.as_ref().unwrap().nodes.as_deref(),
            Some("1/1")
        );
        let policy = p.policy.as_ref().unwrap();
        assert_eq!(policy.scope_namespace(), Some("payments"));
    }

    #[test]
    fn the_cache_reuses_spec_and_verdict_while_status_changes_and_rereads_a_new_generation() {
        let mk = |generation: i64, cidr: &str, state: &str| {
            dynobj(serde_json::json!({
                "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
                "metadata": {"name": "p", "uid": "u", "generation": generation},
                "spec": {"mode": "enforce", "rules": [{"name": "r", "hook": "connect",
                    "selectors": [{"matchDestinations": [{"operator": "In", "cidrs": [cidr]}],
                                   "matchActions": [{"action": "Block"}]}]}]},
                "status": {"state": state}
            }))
        };
        let mut cache = ParseCache::default();
        let a = cache.parse(PolicyKind::Cluster, &mk(1, "10.0.0.0/8", "Accepted"), true);
        assert!(cache.verdict(&a).accepted());
        cache.end_pass();
        // Same generation, other status: the cached spec and verdict, the new status.
        let b = cache.parse(PolicyKind::Cluster, &mk(1, "10.0.0.0/8", "Rejected"), true);
        assert_eq!(b.object.status.unwrap().state.as_deref(), Some("Rejected"));
        assert_eq!(b.fingerprint, a.fingerprint);
        assert!(b.policy.is_ok());
        assert_eq!(b.object.generation, Some(1));
        cache.end_pass();
        // A new generation is parsed and validated afresh.
        let c = cache.parse(PolicyKind::Cluster, &mk(2, "10.0.0.0/33", "Accepted"), true);
        assert_ne!(c.fingerprint, a.fingerprint);
        assert!(
            !cache.verdict(&c).accepted(),
            "the /33 is judged, not the cached verdict"
        );
    }

    #[test]
    fn fingerprint_changes_with_spec_but_not_status() {
        let mk = |mode: &str, state: &str| {
            parse_object(
                PolicyKind::Cluster,
                &dynobj(serde_json::json!({
                    "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
                    "metadata": {"name": "p", "uid": "u"},
                    "spec": {"mode": mode, "rules": []},
                    "status": {"state": state}
                })),
            )
        };
        let a = plan(&[mk("monitor", "Accepted")]).fingerprint;
        let b = plan(&[mk("monitor", "Rejected")]).fingerprint;
        let c = plan(&[mk("enforce", "Accepted")]).fingerprint;
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
