//! The controllers of many nodes against the real API server (`tests/k8s/testenv`), in one
//! process ([`bulwark_controller::sim`]): every node's status converges after a batch of
//! creates and changes; the status stays bounded (counts plus at most 20 failing nodes) with
//! one field manager; report writes coalesce (never more than one per node per change); a node
//! that stops heartbeating is pruned; a violation storm is capped per node, aggregated into
//! counts, and never makes the engine's offer wait (a full queue drops and counts instead).
//! Skipped without KUBECONFIG (panics under CI=true).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bulwark_controller::sim::{converged, policy_object, FailRule, SimNode};
use bulwark_controller::{ControllerOptions, PolicyKey};
use bulwark_events::Process;
use bulwark_policy::model::{PolicyStatus, TracingPolicy, MAX_FAILED_NODES};
use common::*;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
const NODES: usize = 24;
const POLICIES: usize = 20;
const LABEL: &str = "scale-test";

fn node(i: usize) -> String {
    format!("scale-{i:03}")
}

fn policy(i: usize) -> String {
    format!("scale-p-{i:03}")
}

/// Policy 0 fails on every node (more failing nodes than the status lists); policy 1 on every
/// fourth node; the rest load everywhere.
fn fail_rule() -> FailRule {
    Arc::new(|node: &str, key: &PolicyKey| {
        let n: usize = node.rsplit('-').next()?.parse().ok()?;
        let fails = match key.name.as_str() {
            "scale-p-000" => true,
            "scale-p-001" => n.is_multiple_of(4),
            _ => false,
        };
        fails.then(|| "needs 1100 selectors, the kernel maps hold 1024 (BW092)".to_string())
    })
}

fn expected_failed(p: usize, live: usize) -> i64 {
    match p {
        0 => live as i64,
        1 => (0..live).filter(|n| n.is_multiple_of(4)).count() as i64,
        _ => 0,
    }
}

fn status_of(o: &DynamicObject) -> PolicyStatus {
    o.data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default()
}

async fn all_converged(api: &Api<DynamicObject>, generation: i64, live: usize) -> Option<()> {
    let lp = ListParams::default().labels(&format!("bulwark.dev/sim={LABEL}"));
    let list = api.list(&lp).await.ok()?;
    (list.items.len() == POLICIES).then_some(())?;
    list.items
        .iter()
        .all(|o| {
            let i: usize = o
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.rsplit('-').next()?.parse().ok())
                .unwrap_or(usize::MAX);
            o.metadata.generation == Some(generation)
                && converged(
                    &status_of(o),
                    Some(generation),
                    live as i64,
                    expected_failed(i, live),
                )
        })
        .then_some(())
}

fn sum(nodes: &[SimNode], f: impl Fn(&bulwark_controller::Stats) -> u64) -> u64 {
    nodes.iter().map(|n| f(&n.stats)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_nodes_converge_with_bounded_status_pruning_and_capped_storms() {
    let Some(kc) =
        test_server_or_skip("many_nodes_converge_with_bounded_status_pruning_and_capped_storms")
    else {
        return;
    };
    let _ = kubectl(
        &kc,
        &[
            "delete",
            "tracingpolicies",
            "-l",
            &format!("bulwark.dev/sim={LABEL}"),
            "--wait=true",
        ],
    );
    let _ = kubectl(
        &kc,
        &["delete", "policyviolations", "-n", "scale-storm", "--all"],
    );

    let client = client(&kc).await;
    let opts = ControllerOptions {
        report_heartbeat: Duration::from_secs(1),
        node_ttl: Duration::from_secs(5),
        resync_interval: Duration::from_secs(3),
        violation_flush_interval: Duration::from_millis(300),
        violation_write_rate: 4.0,
        violation_write_burst: 4,
        ..Default::default()
    };
    let mut nodes: Vec<SimNode> = Vec::new();
    for i in 0..NODES {
        // Node 0 gets a tiny violation queue: the storm fills it.
        let queue = if i == 0 { 16 } else { 4096 };
        nodes.push(SimNode::start(
            common::client(&kc).await,
            &node(i),
            fail_rule(),
            queue,
            opts.clone(),
        ));
    }
    let ar = ApiResource::erase::<TracingPolicy>(&());
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let ssa = PatchParams::apply("scale-test").force();

    // 1. A batch of creates converges on every node; failing nodes are counted, listed up to
    // the cap, the rest counted as omitted.
    let before_reports = sum(&nodes, |s| s.node_report_writes.load(Ordering::Relaxed));
    let t0 = Instant::now();
    for i in 0..POLICIES {
        api.patch(
            &policy(i),
            &ssa,
            &Patch::Apply(policy_object(&policy(i), "enforce", LABEL)),
        )
        .await
        .unwrap();
    }
    wait_for("every policy converged on every node", T, || {
        all_converged(&api, 1, NODES)
    })
    .await;
    let created_in = t0.elapsed();
    let o = api.get(&policy(0)).await.unwrap();
    let s = status_of(&o);
    assert_eq!(s.nodes.as_deref(), Some("0/24"));
    assert_eq!(s.failed_nodes.len(), MAX_FAILED_NODES);
    assert_eq!(
        s.failed_nodes_omitted,
        Some((NODES - MAX_FAILED_NODES) as i64)
    );
    assert_eq!(s.failed_nodes[0].node, node(0), "sorted by name");
    let status_bytes = serde_json::to_vec(&o.data["status"]).unwrap().len();
    assert!(status_bytes < 16 * 1024, "status of {status_bytes} bytes");
    // One writer of status, whatever the number of nodes.
    let managers: Vec<String> = o
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.subresource.as_deref() == Some("status"))
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["bulwark-aggregator"], "{managers:?}");
    let o1 = status_of(&api.get(&policy(1)).await.unwrap());
    assert_eq!(o1.nodes.as_deref(), Some("18/24"));
    assert_eq!(o1.failed_nodes.len(), 6);
    let table = kubectl_ok(&kc, &["get", "tracingpolicies", "-o", "wide"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("scale-p-000"))
        .unwrap();
    assert!(row.contains("0/24") && row.contains(" 24 "), "{table}");

    // Reports coalesce: a node writes its report at most once per change it saw, not once per
    // policy and node (N entries) plus every other node's count change (N²) as before.
    let report_writes =
        sum(&nodes, |s| s.node_report_writes.load(Ordering::Relaxed)) - before_reports;
    assert!(
        report_writes <= (NODES * POLICIES) as u64,
        "{report_writes} report writes for {POLICIES} policies on {NODES} nodes"
    );

    // 2. A batch of changes (generation 2) converges too, with a bounded number of status
    // writes per policy (at most one per status interval while nodes catch up, plus one).
    let status_before = sum(&nodes, |s| s.status_writes.load(Ordering::Relaxed));
    let t1 = Instant::now();
    for i in 0..POLICIES {
        api.patch(
            &policy(i),
            &ssa,
            &Patch::Apply(policy_object(&policy(i), "monitor", LABEL)),
        )
        .await
        .unwrap();
    }
    wait_for("every change converged on every node", T, || {
        all_converged(&api, 2, NODES)
    })
    .await;
    let changed_in = t1.elapsed();
    let status_writes = sum(&nodes, |s| s.status_writes.load(Ordering::Relaxed)) - status_before;
    let per_policy_bound = changed_in.as_secs_f64() / opts.status_interval.as_secs_f64() + 2.0;
    assert!(
        (status_writes as f64) <= POLICIES as f64 * per_policy_bound,
        "{status_writes} status writes for {POLICIES} changes converged in {changed_in:?}"
    );
    eprintln!(
        "scale: {NODES} nodes, {POLICIES} policies: created in {created_in:?}, changed in \
         {changed_in:?}; {report_writes} report writes for the creates, {status_writes} status \
         writes for the changes; status {status_bytes} bytes"
    );

    // 3. A node that stops (no heartbeat) is pruned: its report goes, the counts drop.
    let last = NODES - 1;
    nodes[last].kill();
    wait_for("the departed node pruned", T, || async {
        let s = status_of(&api.get(&policy(2)).await.ok()?);
        let (gone, _, _) = kubectl(&kc, &["get", "bulwarknode", &node(last)]);
        (!gone && s.node_counts?.total == (NODES - 1) as i64).then_some(())
    })
    .await;
    wait_for("every policy converged on the remaining nodes", T, || {
        all_converged(&api, 2, NODES - 1)
    })
    .await;
    assert!(sum(&nodes, |s| s.node_reports_pruned.load(Ordering::Relaxed)) >= 1);

    // 4. Storm: three nodes offer 3,000 violations each as fast as they can.
    let storm_nodes = [0usize, 1, 2];
    let t_storm = Instant::now();
    let mut accepted: BTreeMap<usize, u64> = BTreeMap::new();
    for &i in &storm_nodes {
        let mut ok = 0;
        for k in 0..3000u32 {
            let process = Process {
                exec_id: format!("storm-{i}-{k}"),
                pid: 100 + k % 7,
                binary: "/usr/bin/curl".into(),
                pod: Some(bulwark_events::Pod {
                    namespace: "scale-storm".into(),
                    name: format!("storm-{}", k % 10),
                    container: "app".into(),
                    labels: Default::default(),
                }),
                ..Process::default()
            };
            let v = blocked_metadata_connect(
                &node(i),
                &policy(5),
                &recent(i64::from(k % 60)),
                process,
                80,
            );
            if nodes[i].sender.offer(v) {
                ok += 1;
            }
        }
        accepted.insert(i, ok);
    }
    // The offer never waits: node 0's queue of 16 was full at once and it dropped, counted.
    let dropped0 = nodes[0]
        .stats
        .violations_dropped_queue_full
        .load(Ordering::Relaxed);
    assert!(dropped0 > 0, "node 0's full queue dropped nothing");
    assert_eq!(accepted[&0] + dropped0, 3000);
    assert!(nodes[0].stats.render_prometheus().contains(&format!(
        "bulwark_violations_dropped_total{{reason=\"queue_full\"}} {dropped0}\n"
    )));
    // Everything accepted ends up as counts on 10 objects per node (one per pod).
    for &i in &storm_nodes {
        let want = accepted[&i] as i64;
        wait_for(
            &format!("node {i}'s storm aggregated into counts"),
            T,
            || async {
                let out = kubectl_ok(
                    &kc,
                    &[
                        "get",
                        "policyviolations",
                        "-n",
                        "scale-storm",
                        "-l",
                        &format!("bulwark.dev/node={}", node(i)),
                        "-o",
                        "json",
                    ],
                );
                let v: Value = serde_json::from_str(&out).ok()?;
                let items = v["items"].as_array()?;
                let total: i64 = items
                    .iter()
                    .filter_map(|o| o["spec"]["count"].as_i64())
                    .sum();
                (total == want).then_some(items.len())
            },
        )
        .await;
    }
    let elapsed = t_storm.elapsed().as_secs_f64();
    for &i in &storm_nodes {
        let s = &nodes[i].stats;
        let writes = s.violation_objects_created.load(Ordering::Relaxed)
            + s.violation_objects_updated.load(Ordering::Relaxed);
        // Each object write costs 2 of the budget (the object and its Event).
        let budget =
            (f64::from(opts.violation_write_burst) + opts.violation_write_rate * elapsed) / 2.0;
        assert!(
            writes as f64 <= budget + 1.0,
            "node {i}: {writes} object writes in {elapsed:.1} s, budget {budget:.1}"
        );
        assert!(writes >= 10, "node {i}: {writes} writes for 10 objects");
    }
    assert!(
        sum(&nodes, |s| s
            .violation_writes_deferred
            .load(Ordering::Relaxed))
            > 0
    );
    // The drops are reported in a Warning Event regarding the node.
    wait_for(
        "a ViolationsDropped Event regarding scale-000",
        T,
        || async {
            let out = kubectl_ok(&kc, &["get", "events.events.k8s.io", "-A", "-o", "json"]);
            let v: Value = serde_json::from_str(&out).ok()?;
            v["items"]
                .as_array()?
                .iter()
                .find(|e| {
                    e["reason"] == "ViolationsDropped" && e["regarding"]["name"] == node(0).as_str()
                })
                .cloned()
        },
    )
    .await;

    drop(nodes);
    for i in 0..POLICIES {
        let _ = api.delete(&policy(i), &DeleteParams::default()).await;
    }
    forget_other_nodes(&kc);
}
