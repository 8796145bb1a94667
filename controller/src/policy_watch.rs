//! The policy watch: reflectors over `TracingPolicy` and `TracingPolicyNamespaced` (read as
//! untyped objects so one malformed object can never stall the list or crash the node: it is
//! reported as Rejected instead), a reconcile pass that validates every object, hands the
//! accepted set to the [`PolicyEngine`] when it changed, and applies the status that
//! [`reconcile::reconcile`] decides through server-side apply on the status subresource.
//!
//! Recovery: kube-runtime's watcher re-lists after 410 Gone and after API-server restarts (with
//! backoff); every change and a periodic resync trigger a full pass, so status that vanished
//! (e.g. the server lost its data) is written again. A status write that fails with 404 means
//! the policy was deleted while being applied and is ignored; other failures are retried.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_policy::model::{AnyPolicy, PolicyStatus, TracingPolicy, TracingPolicyNamespaced};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::reconcile::{self, Action, PolicyObject, ReconcileContext};
use crate::validate::{self, Verdict};
use crate::watch_store::WatchStore;
use crate::{ControllerOptions, PolicyEngine, PolicyKey, PolicyKind, PolicyLoadResult};

/// One object of either kind, parsed as far as possible.
pub struct ParsedPolicy {
    pub object: PolicyObject,
    /// The typed policy, or why the object could not be read as one.
    pub policy: Result<AnyPolicy, String>,
    /// Identity of the spec for change detection (uid + spec JSON).
    pub fingerprint: String,
}

/// Read one untyped object as a policy of `kind`. Never fails: an unreadable object comes back
/// with `policy: Err(reason)`.
pub fn parse_object(kind: PolicyKind, obj: &DynamicObject) -> ParsedPolicy {
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
        .and_then(|s| serde_json::from_value::<PolicyStatus>(s.clone()).ok());
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
    let fingerprint = format!(
        "{}|{}",
        obj.metadata.uid.as_deref().unwrap_or(""),
        obj.data
            .get("spec")
            .map(|s| s.to_string())
            .unwrap_or_default()
    );
    ParsedPolicy {
        object: PolicyObject {
            key,
            generation: obj.metadata.generation,
            status,
        },
        policy,
        fingerprint,
    }
}

/// The result of deciding what to hand to the engine: verdicts for every object and the
/// accepted policies, sorted by key.
pub struct Plan {
    pub verdicts: BTreeMap<PolicyKey, Verdict>,
    pub accepted: Vec<AnyPolicy>,
    /// Changes whenever the accepted set or any accepted spec changes.
    pub fingerprint: Vec<String>,
}

/// Validate every object (pure; the lint's checks are pure).
pub fn plan(objects: &[ParsedPolicy]) -> Plan {
    let mut verdicts = BTreeMap::new();
    let mut accepted: Vec<(PolicyKey, AnyPolicy, String)> = Vec::new();
    for p in objects {
        let verdict = match &p.policy {
            Ok(policy) => validate::validate(policy),
            Err(e) => Verdict::unreadable(e.clone()),
        };
        if verdict.accepted() {
            if let Ok(policy) = &p.policy {
                accepted.push((p.object.key.clone(), policy.clone(), p.fingerprint.clone()));
            }
        }
        verdicts.insert(p.object.key.clone(), verdict);
    }
    accepted.sort_by(|a, b| a.0.cmp(&b.0));
    Plan {
        verdicts,
        fingerprint: accepted
            .iter()
            .map(|(k, _, f)| format!("{k}|{f}"))
            .collect(),
        accepted: accepted.into_iter().map(|(_, p, _)| p).collect(),
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
    let store_c = WatchStore::spawn(
        Api::all_with(client.clone(), &ar_c),
        watcher::Config::default(),
        notify.clone(),
        "tracingpolicies.bulwark.dev".into(),
    );
    let store_n = WatchStore::spawn(
        Api::all_with(client.clone(), &ar_n),
        watcher::Config::default(),
        notify.clone(),
        "tracingpoliciesnamespaced.bulwark.dev".into(),
    );
    store_c.wait_ready().await;
    store_n.wait_ready().await;
    log::info!("policy watch synced on node {node}");

    let manager = format!("{}/{}", opts.field_manager, node);
    let mut state = LoopState::default();
    let mut next_audit = Instant::now() + opts.resync_interval;
    loop {
        if Instant::now() >= next_audit {
            // Catch a server that lost its data: resumed watches would miss new objects.
            for (store, what) in [
                (&store_c, "TracingPolicies"),
                (&store_n, "TracingPoliciesNamespaced"),
            ] {
                match store.audit().await {
                    Ok(true) => log::warn!("the watch of {what} was out of sync with the API server (data restored or lost?); re-listed"),
                    Ok(false) => {}
                    Err(e) => log::debug!("audit list of {what} failed: {e}"),
                }
            }
            next_audit = Instant::now() + opts.resync_interval;
        }
        let retry_in = pass(
            &client, &node, &manager, &engine, &opts, &store_c, &store_n, &ar_c, &ar_n, &mut state,
        )
        .await;
        opts.ready
            .store(state.engine_applied_once, Ordering::Relaxed);
        let wait = retry_in.unwrap_or(opts.resync_interval);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Coalesce bursts (our own status writes come back as watch events).
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

#[derive(Default)]
struct LoopState {
    applied_fingerprint: Option<Vec<String>>,
    load: BTreeMap<PolicyKey, Result<(), String>>,
    engine_failures: u32,
    engine_applied_once: bool,
}

#[allow(clippy::too_many_arguments)]
async fn pass(
    client: &Client,
    node: &str,
    manager: &str,
    engine: &Arc<dyn PolicyEngine>,
    opts: &ControllerOptions,
    store_c: &WatchStore<DynamicObject>,
    store_n: &WatchStore<DynamicObject>,
    ar_c: &ApiResource,
    ar_n: &ApiResource,
    st: &mut LoopState,
) -> Option<Duration> {
    let mut objects: Vec<ParsedPolicy> = store_c
        .state()
        .iter()
        .map(|o| parse_object(PolicyKind::Cluster, o))
        .collect();
    objects.extend(
        store_n
            .state()
            .iter()
            .map(|o| parse_object(PolicyKind::Namespaced, o)),
    );
    let plan = plan(&objects);
    let mut retry: Option<Duration> = None;

    if st.applied_fingerprint.as_ref() != Some(&plan.fingerprint) {
        let keys: Vec<PolicyKey> = plan.accepted.iter().map(PolicyKey::of).collect();
        let eng = engine.clone();
        let set = plan.accepted.clone();
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

    let now = jiff::Timestamp::now().to_string();
    for p in &objects {
        let verdict = &plan.verdicts[&p.object.key];
        let load = if verdict.accepted() {
            Some(
                st.load
                    .get(&p.object.key)
                    .cloned()
                    .unwrap_or_else(|| Err("not handed to the engine yet".into())),
            )
        } else {
            None
        };
        let ctx = ReconcileContext {
            node,
            verdict,
            load: load.as_ref(),
            now: &now,
        };
        let Action::ApplyStatus(status) = reconcile::reconcile(&p.object, &ctx) else {
            continue;
        };
        let (api, ar): (Api<DynamicObject>, &ApiResource) = match &p.object.key.namespace {
            Some(ns) => (Api::namespaced_with(client.clone(), ns, ar_n), ar_n),
            None => (Api::all_with(client.clone(), ar_c), ar_c),
        };
        let mut metadata = serde_json::json!({ "name": p.object.key.name });
        if let Some(ns) = &p.object.key.namespace {
            metadata["namespace"] = ns.clone().into();
        }
        let body = serde_json::json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": metadata,
            "status": status,
        });
        let params = PatchParams::apply(manager).force();
        match crate::timed(api.patch_status(&p.object.key.name, &params, &Patch::Apply(&body)))
            .await
        {
            Ok(_) => {
                opts.stats.status_writes.fetch_add(1, Ordering::Relaxed);
                log::debug!("status of {} written", p.object.key);
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                log::debug!(
                    "{} was deleted while its status was being written",
                    p.object.key
                );
            }
            Err(e) => {
                opts.stats.api_write_errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "writing the status of {} failed (will retry): {e}",
                    p.object.key
                );
                retry =
                    Some(retry.map_or(Duration::from_secs(5), |r| r.min(Duration::from_secs(5))));
            }
        }
    }
    retry
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
