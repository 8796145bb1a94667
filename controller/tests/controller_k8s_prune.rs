//! Node objects and upgrades against the real API server (`tests/k8s/testenv`), with simulated
//! nodes ([`bulwark_controller::sim`]):
//! - a deleted Node's report is removed and leaves every policy's status at once (the heartbeat
//!   TTL is long and the node still heartbeats), while a node whose daemon stopped but whose
//!   Node exists is never pruned, however old its heartbeat: it is counted as failed, with the
//!   stale-heartbeat reason, instead of loaded;
//! - a policy whose status still has the per-node list from before `BulwarkNode` reports
//!   (`status.nodeStatus`, one field manager per node) is rewritten by the aggregator to the
//!   bounded status, and the per-node managers leave `managedFields`.
//!
//! The test API server serves no core/v1, so the Nodes are a stand-in resource with kind Node
//! (`nodes.testenv.bulwark.dev`), named through `ControllerOptions::node_resource`.
//! Skipped without KUBECONFIG (panics under CI=true).

mod common;

use std::sync::Arc;
use std::time::Duration;

use bulwark_controller::node_liveness::STALE_REASON;
use bulwark_controller::sim::{
    converged, node_object, node_stand_in, node_stand_in_crd, policy_object, SimNode,
};
use bulwark_controller::{BulwarkNode, ControllerOptions};
use bulwark_policy::model::{PolicyStatus, TracingPolicy};
use common::*;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const LABEL: &str = "prune-test";

fn status_of(o: &DynamicObject) -> PolicyStatus {
    o.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

fn status_managers(o: &DynamicObject) -> Vec<String> {
    o.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager.clone())
        .collect()
}

fn opts() -> ControllerOptions {
    ControllerOptions {
        report_heartbeat: Duration::from_secs(1),
        node_ttl: Duration::from_secs(4),
        lease_duration: Duration::from_secs(3),
        resync_interval: Duration::from_secs(3),
        node_resource: node_stand_in(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_nodes_leave_status_at_once_and_per_node_status_is_rewritten_bounded() {
    let Some(kc) = test_server_or_skip(
        "deleted_nodes_leave_status_at_once_and_per_node_status_is_rewritten_bounded",
    ) else {
        return;
    };
    let client = client(&kc).await;
    apply_crd(&client, &node_stand_in_crd()).await;
    let k8s_nodes: Api<DynamicObject> = Api::all_with(client.clone(), &node_stand_in());
    let reports: Api<BulwarkNode> = Api::all(client.clone());
    let ar = ApiResource::erase::<TracingPolicy>(&());
    let policies: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    for name in ["prune-p", "prune-legacy"] {
        let _ = policies.delete(name, &DeleteParams::default()).await;
    }
    let node = |i: usize| format!("prune-{i:03}");
    let create_node = |name: String| {
        let api = k8s_nodes.clone();
        async move {
            let _ = api.delete(&name, &DeleteParams::default()).await;
            let obj: DynamicObject = serde_json::from_value(node_object(&name, LABEL)).unwrap();
            wait_for(&format!("Node {name} created"), T, || async {
                api.create(&PostParams::default(), &obj).await.ok()
            })
            .await;
        }
    };
    for i in 0..4 {
        create_node(node(i)).await;
    }
    let never_fails: bulwark_controller::sim::FailRule = Arc::new(|_, _| None);
    let mut sims: Vec<SimNode> = Vec::new();
    for i in 0..4 {
        sims.push(SimNode::start(
            common::client(&kc).await,
            &node(i),
            never_fails.clone(),
            64,
            opts(),
        ));
    }
    let ssa = PatchParams::apply("prune-test").force();
    policies
        .patch(
            "prune-p",
            &ssa,
            &Patch::Apply(policy_object("prune-p", "enforce", LABEL)),
        )
        .await
        .unwrap();
    let converged_on = |n: i64| {
        let policies = policies.clone();
        async move {
            let o = policies.get("prune-p").await.ok()?;
            converged(&status_of(&o), o.metadata.generation, n, 0).then_some(())
        }
    };
    wait_for("the policy converged on 4 nodes", T, || converged_on(4)).await;

    // 1. Node 2's daemon stops; its Node stays. Wait until its heartbeat is well past the TTL.
    sims[2].kill();
    let ttl = opts().node_ttl;
    wait_for("node 2's heartbeat older than the TTL", T, || async {
        let r = reports.get(&node(2)).await.ok()?;
        let hb: jiff::Timestamp = r.spec.heartbeat.parse().ok()?;
        let age = jiff::Timestamp::now().duration_since(hb);
        (age > jiff::SignedDuration::try_from(ttl * 2).unwrap()).then_some(())
    })
    .await;
    // Its last report said "loaded", but nobody vouches for it now: failed, with the reason.
    wait_for(
        "node 2 counted as failed for its stale heartbeat",
        T,
        || async {
            let o = policies.get("prune-p").await.ok()?;
            let s = status_of(&o);
            let stale = s
                .failed_nodes
                .iter()
                .any(|n| n.node == node(2) && n.reason.as_deref() == Some(STALE_REASON));
            (converged(&s, o.metadata.generation, 4, 1) && stale).then_some(())
        },
    )
    .await;

    // 2. Node 3's Node is deleted while its daemon still heartbeats (TTL irrelevant): its
    // report goes and the status counts 3 nodes, among them node 2 (kept per its Node, failed).
    let t_delete = std::time::Instant::now();
    k8s_nodes
        .delete(&node(3), &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the deleted Node's node left the status", T, || async {
        let gone = reports.get_opt(&node(3)).await.ok()?.is_none();
        let o = policies.get("prune-p").await.ok()?;
        (gone && converged(&status_of(&o), o.metadata.generation, 3, 1)).then_some(())
    })
    .await;
    eprintln!("deleted Node pruned after {:?}", t_delete.elapsed());
    assert!(
        reports.get_opt(&node(2)).await.unwrap().is_some(),
        "node 2's report was pruned although its Node exists"
    );
    sims[3].kill();
    drop(sims);

    // 3. Upgrade: a policy with the per-node status of before (its schema still had
    // `nodeStatus`), written by one field manager per node.
    let mut old_crd = serde_json::to_value(
        bulwark_policy::crds()
            .into_iter()
            .find(|c| c.metadata.name.as_deref() == Some("tracingpolicies.bulwark.dev"))
            .unwrap(),
    )
    .unwrap();
    old_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
        ["properties"]["nodeStatus"] = json!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["node"],
        "items": { "type": "object", "required": ["node", "state"], "properties": {
            "node": { "type": "string" }, "state": { "type": "string" },
            "reason": { "type": "string" }, "observedGeneration": { "type": "integer" } } }
    });
    apply_crd(&client, &old_crd).await;
    policies
        .patch(
            "prune-legacy",
            &ssa,
            &Patch::Apply(policy_object("prune-legacy", "enforce", LABEL)),
        )
        .await
        .unwrap();
    let old_nodes = ["old-a", "old-b", "old-c"];
    wait_for("the per-node status of before written", T, || async {
        for n in old_nodes {
            let body = json!({
                "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
                "metadata": { "name": "prune-legacy" },
                "status": { "observedGeneration": 1, "state": "Accepted", "nodes": "3/3",
                            "nodeStatus": [{ "node": n, "state": "Loaded", "observedGeneration": 1 }] }
            });
            policies
                .patch_status(
                    "prune-legacy",
                    &PatchParams::apply(&format!("bulwark/{n}")).force(),
                    &Patch::Apply(&body),
                )
                .await
                .ok()?;
        }
        let o = policies.get("prune-legacy").await.ok()?;
        let listed = o.data["status"]["nodeStatus"].as_array().map_or(0, Vec::len);
        (listed == 3 && status_managers(&o).len() == 3).then_some(())
    })
    .await;
    // The new schema, then two nodes of the new version.
    install_crds(&kc);
    forget_other_nodes(&kc);
    let mut sims = Vec::new();
    for i in 0..2 {
        create_node(node(10 + i)).await;
        sims.push(SimNode::start(
            common::client(&kc).await,
            &node(10 + i),
            never_fails.clone(),
            64,
            opts(),
        ));
    }
    let o = wait_for("the per-node status rewritten bounded", T, || async {
        let o = policies.get("prune-legacy").await.ok()?;
        let managers = status_managers(&o);
        let bounded = o.data["status"].get("nodeStatus").is_none()
            && managers == ["bulwark-aggregator"]
            && converged(&status_of(&o), o.metadata.generation, 2, 0);
        bounded.then_some(o)
    })
    .await;
    assert!(!bulwark_controller::policy_watch::has_legacy_status(&o));
    assert_eq!(status_of(&o).nodes.as_deref(), Some("2/2"));
    drop(sims);
    for name in ["prune-p", "prune-legacy"] {
        let _ = policies.delete(name, &DeleteParams::default()).await;
    }
    for i in [0, 1, 2, 10, 11] {
        let _ = k8s_nodes.delete(&node(i), &DeleteParams::default()).await;
    }
    forget_other_nodes(&kc);
}
