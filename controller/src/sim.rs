//! A simulated cluster for the scale harness (`bulwark-bench cluster`) and the scale test: N
//! node controllers ([`crate::run`], everything but eBPF) in one process, each with its own
//! node name, client and [`SimEngine`] that accepts or fails policies by a rule, against a real
//! API server. Nothing here is used by the daemon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bulwark_events::{Action, Destination, Hook, Mode, Outcome, PolicyMatch, Process};
use bulwark_policy::model::{AnyPolicy, PolicyStatus};

use crate::stats::Stats;
use crate::violation_queue::{violation_channel, Violation, ViolationSender};
use crate::{ControllerOptions, PolicyEngine, PolicyKey, PolicyLoadResult};

/// Decides whether `node` fails to load `policy`: `Some(reason)` when it does.
pub type FailRule = Arc<dyn Fn(&str, &PolicyKey) -> Option<String> + Send + Sync>;

/// An engine that accepts every policy except those its [`FailRule`] fails on this node.
pub struct SimEngine {
    node: String,
    fail: FailRule,
    /// Applies so far.
    pub applies: AtomicU64,
}

impl PolicyEngine for SimEngine {
    fn apply(&self, policies: Vec<AnyPolicy>) -> Result<Vec<PolicyLoadResult>, String> {
        self.applies.fetch_add(1, Ordering::Relaxed);
        Ok(policies
            .iter()
            .filter_map(|p| {
                let key = PolicyKey::of(p);
                (self.fail)(&self.node, &key).map(|e| PolicyLoadResult {
                    key,
                    result: Err(e),
                })
            })
            .collect())
    }
}

/// One simulated node.
pub struct SimNode {
    pub name: String,
    /// The engine's end of the violation queue (what the daemon's event writer would use).
    pub sender: ViolationSender,
    pub stats: Arc<Stats>,
    pub engine: Arc<SimEngine>,
    task: tokio::task::JoinHandle<crate::Result<()>>,
}

impl SimNode {
    /// Start node `name` on the current tokio runtime.
    pub fn start(
        client: kube::Client,
        name: &str,
        fail: FailRule,
        queue_capacity: usize,
        mut opts: ControllerOptions,
    ) -> SimNode {
        let stats = Arc::new(Stats::default());
        opts.stats = stats.clone();
        opts.ready = Default::default();
        let (sender, rx) = violation_channel(queue_capacity, stats.clone());
        let engine = Arc::new(SimEngine {
            node: name.to_string(),
            fail,
            applies: AtomicU64::new(0),
        });
        let task = tokio::spawn(crate::run(
            client,
            name.to_string(),
            engine.clone(),
            rx,
            opts,
        ));
        SimNode {
            name: name.to_string(),
            sender,
            stats,
            engine,
            task,
        }
    }

    /// Stop the node as if it left the cluster without saying goodbye.
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for SimNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A minimal valid `TracingPolicy` named `name` (one connect rule), in `mode`, labelled
/// `bulwark.dev/sim=<label>` so a harness can clean up after itself.
pub fn policy_object(name: &str, mode: &str, label: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "bulwark.dev/v1alpha1",
        "kind": "TracingPolicy",
        "metadata": { "name": name, "labels": { "bulwark.dev/sim": label } },
        "spec": {
            "mode": mode,
            "rules": [{
                "name": "deny-imds",
                "hook": "connect",
                "selectors": [{
                    "matchDestinations": [{ "operator": "In", "cidrs": ["169.254.169.254/32"] }],
                    "matchActions": [{ "action": "Block" }]
                }]
            }]
        }
    })
}

/// An enforced `Block` by rule `deny-imds` of cluster policy `policy` (as [`policy_object`]
/// writes it): `process` connecting to the cloud metadata service on `port`, at `time` on `node`.
pub fn blocked_metadata_connect(
    node: &str,
    policy: &str,
    time: &str,
    process: Process,
    port: u16,
) -> Violation {
    Violation {
        time: time.into(),
        node_name: node.into(),
        policy_match: PolicyMatch {
            policy_name: Some(policy.into()),
            policy_namespace: None,
            rule: Some("deny-imds".into()),
            hook: Hook::Connect,
            action: Action::Block,
            mode: Mode::Enforce,
            enforced: true,
            outcome: Outcome::Blocked,
            process,
            destination: Some(Destination {
                ip: "169.254.169.254".into(),
                port,
                protocol: "TCP".into(),
            }),
            encryption: None,
            reason: None,
            file: None,
            syscall: None,
        },
    }
}

/// The stand-in for core/v1 Node on a test API server that serves no core/v1 (the CRD test
/// server of `tests/k8s/testenv`): cluster-scoped objects of kind Node in group
/// `testenv.bulwark.dev`, any content. Point [`ControllerOptions::node_resource`] at it.
pub fn node_stand_in() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "testenv.bulwark.dev".into(),
        version: "v1".into(),
        api_version: "testenv.bulwark.dev/v1".into(),
        kind: "Node".into(),
        plural: "nodes".into(),
    }
}

/// The CustomResourceDefinition of [`node_stand_in`].
pub fn node_stand_in_crd() -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "nodes.testenv.bulwark.dev" },
        "spec": {
            "group": "testenv.bulwark.dev",
            "scope": "Cluster",
            "names": { "plural": "nodes", "singular": "node", "kind": "Node", "listKind": "NodeList" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": true } }
            }]
        }
    })
}

/// A [`node_stand_in`] object named `name`, labelled `bulwark.dev/sim=<label>`.
pub fn node_object(name: &str, label: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "testenv.bulwark.dev/v1", "kind": "Node",
        "metadata": { "name": name, "labels": { "bulwark.dev/sim": label } }
    })
}

/// `Some` once the CustomResourceDefinition `name` is Established (for a wait loop).
pub async fn crd_established(
    api: &kube::Api<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >,
    name: &str,
) -> Option<()> {
    let c = api.get(name).await.ok()?;
    c.status?
        .conditions?
        .iter()
        .any(|c| c.type_ == "Established" && c.status == "True")
        .then_some(())
}

/// True when `status` describes `generation` on exactly `nodes` live nodes, every one of
/// them done (loaded or failed, none pending) and `failed` of them failing.
pub fn converged(status: &PolicyStatus, generation: Option<i64>, nodes: i64, failed: i64) -> bool {
    status.observed_generation == generation
        && status.node_counts.as_ref().is_some_and(|c| {
            c.total == nodes && c.pending == 0 && c.failed == failed && c.loaded == nodes - failed
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::model::NodeCounts;

    #[test]
    fn converged_needs_every_node_done_at_the_generation() {
        let mut s = PolicyStatus {
            observed_generation: Some(2),
            node_counts: Some(NodeCounts {
                total: 20,
                loaded: 15,
                failed: 5,
                pending: 0,
            }),
            ..Default::default()
        };
        assert!(converged(&s, Some(2), 20, 5));
        assert!(!converged(&s, Some(3), 20, 5), "older generation");
        assert!(!converged(&s, Some(2), 21, 5), "a node missing");
        assert!(!converged(&s, Some(2), 20, 4), "wrong failures");
        s.node_counts.as_mut().unwrap().pending = 1;
        s.node_counts.as_mut().unwrap().loaded = 14;
        assert!(!converged(&s, Some(2), 20, 5), "one pending");
    }

    #[test]
    fn the_policy_object_is_a_valid_policy() {
        let v = policy_object("p1", "enforce", "t");
        let p: bulwark_policy::model::TracingPolicy = serde_json::from_value(v).unwrap();
        let any = AnyPolicy::Cluster(p);
        assert!(crate::validate::validate(&any).accepted());
    }
}
