//! The controller against the real CRD API server named by KUBECONFIG (start it with
//! `eval "$(tests/k8s/testenv/up)"`, or run tests/k8s/controller.sh). Fails when CI=true
//! and KUBECONFIG is unset; skips (saying so) otherwise.
//!
//! One scenario, in order (the phases share the server's state, so they are one test):
//! every example policy becomes Accepted with observedGeneration; a policy the server accepts but
//! lint rejects gets Rejected with the diagnostic; a policy the node cannot load shows Failed with
//! the reason; a mode switch reaches the engine and bumps observedGeneration; a policy deleted
//! while the engine applies it does not upset anything; policy matches (`Violation`s) become PolicyViolations
//! (repeat raises the count, host processes go to bulwark-system) and Events regarding the policy;
//! a second node makes NODES read 2/2.

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bulwark_controller::{violation_channel, ControllerOptions, PolicyKind, Stats, Violation};
use bulwark_events::{Pod, Process};
use bulwark_policy::model::Mode;
use common::*;
use kube::api::{Api, ApiResource, DynamicObject};
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

const INVALID: &str = r#"apiVersion: bulwark.dev/v1alpha1
kind: TracingPolicy
metadata:
  name: ctl-test-rejected
spec:
  mode: enforce
  rules:
  - name: kill-bad
    hook: exec
    selectors:
    - matchBinaries:
      - operator: In
        values: ["curl"]
      matchActions:
      - action: Sigkill
"#;

fn policy_yaml(name: &str, mode: &str) -> String {
    format!(
        r#"apiVersion: bulwark.dev/v1alpha1
kind: TracingPolicy
metadata:
  name: {name}
spec:
  mode: {mode}
  rules:
  - name: deny-imds
    hook: connect
    selectors:
    - matchDestinations:
      - operator: In
        cidrs: ["169.254.169.254/32"]
      matchActions:
      - action: Block
"#
    )
}

fn apply_yaml(kc: &std::path::Path, yaml: &str, tag: &str) {
    let path = std::env::temp_dir().join(format!("bulwark-ctl-{tag}-{}.yaml", std::process::id()));
    std::fs::write(&path, yaml).unwrap();
    kubectl_ok(
        kc,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(path);
}

async fn get_policy(client: &kube::Client, ns: Option<&str>, name: &str) -> Option<DynamicObject> {
    let ar = match ns {
        None => ApiResource::erase::<bulwark_policy::model::TracingPolicy>(&()),
        Some(_) => ApiResource::erase::<bulwark_policy::model::TracingPolicyNamespaced>(&()),
    };
    let api: Api<DynamicObject> = match ns {
        None => Api::all_with(client.clone(), &ar),
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
    };
    api.get_opt(name).await.ok().flatten()
}

fn condition<'a>(obj: &'a DynamicObject, t: &str) -> Option<&'a Value> {
    obj.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == t)
}

/// Wait until the policy's status says `state` for its current generation; returns the object.
async fn wait_state(
    client: &kube::Client,
    ns: Option<&str>,
    name: &str,
    state: &str,
) -> DynamicObject {
    wait_for(
        &format!("{name} to be {state} with observedGeneration"),
        T,
        || async {
            let o = get_policy(client, ns, name).await?;
            let gen = o.metadata.generation?;
            let st = &o.data["status"];
            (st["state"] == state && st["observedGeneration"] == gen).then_some(o)
        },
    )
    .await
}

/// A blocked connect to the metadata service from `pod` (namespace, name), or from the host.
fn event(policy: &str, pod: Option<(&str, &str)>, port: u16, time: &str) -> Violation {
    let process = Process {
        exec_id: "eA".into(),
        pid: 4242,
        uid: Some(0),
        binary: "/usr/bin/curl".into(),
        arguments: "-s http://169.254.169.254/latest/meta-data".into(),
        arguments_truncated: false,
        cwd: Some("/".into()),
        start_time: time.into(),
        parent_exec_id: None,
        pod: pod.map(|(ns, name)| Pod {
            namespace: ns.into(),
            name: name.into(),
            container: "app".into(),
            labels: [("app".to_string(), name.to_string())].into(),
        }),
    };
    blocked_metadata_connect("ctl-node-a", policy, time, process, port)
}

fn violations_json(kc: &std::path::Path) -> Vec<Value> {
    let out = kubectl_ok(kc, &["get", "policyviolations", "-A", "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn options(stats: Arc<Stats>) -> ControllerOptions {
    ControllerOptions {
        resync_interval: Duration::from_secs(5),
        violation_flush_interval: Duration::from_millis(300),
        violation_create_rate: 50.0,
        violation_create_burst: 50,
        violation_write_rate: 100.0,
        violation_write_burst: 100,
        stats,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_against_real_server() {
    let Some(kc) = test_server_or_skip("controller_against_real_server") else {
        return;
    };
    // Leftovers of an earlier run on the same server.
    for name in [
        "ctl-test-rejected",
        "fail-ctl-capacity",
        "ctl-test-mode",
        "slow-ctl-delete",
    ] {
        let _ = kubectl(
            &kc,
            &[
                "delete",
                "tracingpolicy",
                name,
                "--ignore-not-found",
                "--wait=false",
            ],
        );
    }
    let _ = kubectl(
        &kc,
        &[
            "delete",
            "policyviolations",
            "-A",
            "-l",
            "bulwark.dev/node=ctl-node-a",
        ],
    );
    // Fresh objects, so no node entries of an earlier run linger in status.
    kubectl_ok(
        &kc,
        &[
            "delete",
            "--ignore-not-found",
            "--wait=true",
            "-f",
            "policies/examples/",
        ],
    );
    let examples = examples();
    assert!(
        examples.len() >= 5,
        "expected the example policies in policies/examples/"
    );
    kubectl_ok(
        &kc,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "policies/examples/",
        ],
    );
    apply_yaml(&kc, INVALID, "invalid");
    apply_yaml(&kc, &policy_yaml("fail-ctl-capacity", "enforce"), "fail");
    apply_yaml(&kc, &policy_yaml("ctl-test-mode", "monitor"), "mode");

    let client = client(&kc).await;
    let engine = fake_engine();
    let stats = Arc::new(Stats::default());
    let opts = options(stats.clone());
    let ready = opts.ready.clone();
    let (tx, rx) = violation_channel(1024, stats.clone());
    let ctl = tokio::spawn(bulwark_controller::run(
        client.clone(),
        "ctl-node-a".into(),
        engine.clone(),
        rx,
        opts,
    ));

    // 1. Every example is Accepted, loaded on this node, observedGeneration current.
    for (_, name, ns, _) in &examples {
        let o = wait_state(&client, ns.as_deref(), name, "Accepted").await;
        let st = &o.data["status"];
        assert_eq!(
            condition(&o, "Accepted").unwrap()["status"],
            "True",
            "{name}: {st}"
        );
        assert_eq!(
            condition(&o, "Loaded").unwrap()["status"],
            "True",
            "{name}: {st}"
        );
        assert_eq!(st["nodes"], "1/1", "{name}: {st}");
        assert_eq!(st["nodeCounts"]["loaded"], 1, "{name}: {st}");
        assert_eq!(st["nodeCounts"]["failed"], 0, "{name}: {st}");
        assert!(st.get("failedNodes").is_none(), "{name}: {st}");
    }
    // This node's report lists each example as in force at its generation.
    let report: Value = serde_json::from_str(&kubectl_ok(
        &kc,
        &["get", "bulwarknode", "ctl-node-a", "-o", "json"],
    ))
    .unwrap();
    for (_, name, ns, _) in &examples {
        let e = report["spec"]["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name.as_str() && e["namespace"].as_str() == ns.as_deref())
            .unwrap_or_else(|| panic!("{name} missing from the report: {report}"));
        assert!(e.get("error").is_none(), "{e}");
        assert!(e["generation"].as_i64().is_some(), "{e}");
    }
    assert!(
        ready.load(Ordering::Relaxed),
        "ready once the first apply is done"
    );
    let last = engine.last().expect("engine was called");
    for (_, name, ns, _) in &examples {
        assert!(
            last.policies
                .iter()
                .any(|(k, _)| &k.name == name && k.namespace == *ns),
            "{name} handed to the engine"
        );
    }
    // Namespaced example keeps its namespace.
    assert!(last
        .policies
        .iter()
        .any(|(k, _)| k.kind == PolicyKind::Namespaced));

    // 2. Invalid for lint, valid for the server: Rejected with the diagnostic, not loaded.
    let o = wait_state(&client, None, "ctl-test-rejected", "Rejected").await;
    let acc = condition(&o, "Accepted").unwrap();
    assert_eq!(acc["status"], "False");
    assert_eq!(acc["reason"], "Rejected");
    let msg = acc["message"].as_str().unwrap();
    assert!(msg.contains("BW054") && msg.contains("`curl`"), "{msg}");
    assert_eq!(o.data["status"]["nodes"], "0/1");
    assert!(!engine
        .last()
        .unwrap()
        .policies
        .iter()
        .any(|(k, _)| k.name == "ctl-test-rejected"));

    // 3. Accepted but this node cannot load it: Failed with the engine's reason.
    let o = wait_state(&client, None, "fail-ctl-capacity", "Accepted").await;
    let loaded = condition(&o, "Loaded").unwrap();
    assert_eq!(loaded["status"], "False", "{}", o.data["status"]);
    assert!(loaded["message"]
        .as_str()
        .unwrap()
        .contains("ctl-node-a: needs 80 selectors"));
    let failed = &o.data["status"]["failedNodes"][0];
    assert_eq!(failed["node"], "ctl-node-a");
    assert_eq!(failed["state"], "Failed");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("needs 80 selectors"),
        "{failed}"
    );
    assert_eq!(o.data["status"]["nodeCounts"]["failed"], 1);
    assert_eq!(o.data["status"]["nodes"], "0/1");

    // kubectl's printer columns: MODE, STATE, NODES.
    let table = kubectl_ok(&kc, &["get", "tracingpolicies"]);
    let header = table.lines().next().unwrap();
    for col in ["NAME", "MODE", "STATE", "NODES", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("ctl-test-rejected"))
        .unwrap();
    assert!(
        row.contains("enforce") && row.contains("Rejected") && row.contains("0/1"),
        "{row}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("block-cloud-metadata"))
        .unwrap();
    assert!(row.contains("Accepted") && row.contains("1/1"), "{row}");

    // 4. Mode switch: monitor -> enforce reaches the engine; observedGeneration follows.
    let before = wait_state(&client, None, "ctl-test-mode", "Accepted").await;
    let gen1 = before.metadata.generation.unwrap();
    apply_yaml(&kc, &policy_yaml("ctl-test-mode", "enforce"), "mode2");
    let after = wait_for("ctl-test-mode generation 2 observed", T, || async {
        let o = get_policy(&client, None, "ctl-test-mode").await?;
        (o.metadata.generation? > gen1
            && o.data["status"]["observedGeneration"] == o.metadata.generation?)
            .then_some(o)
    })
    .await;
    assert_eq!(after.data["status"]["nodes"], "1/1");
    let report: Value = serde_json::from_str(&kubectl_ok(
        &kc,
        &["get", "bulwarknode", "ctl-node-a", "-o", "json"],
    ))
    .unwrap();
    let entry = report["spec"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "ctl-test-mode")
        .cloned()
        .unwrap();
    assert_eq!(entry["generation"], after.metadata.generation.unwrap());
    assert!(engine
        .last()
        .unwrap()
        .policies
        .iter()
        .any(|(k, m)| k.name == "ctl-test-mode" && *m == Mode::Enforce));

    // 5. Deleted while the engine is applying it.
    let n = engine.applies();
    apply_yaml(&kc, &policy_yaml("slow-ctl-delete", "enforce"), "slow");
    wait_for("engine called with slow-ctl-delete", T, || async {
        (engine.applies() > n
            && engine
                .last()
                .unwrap()
                .policies
                .iter()
                .any(|(k, _)| k.name == "slow-ctl-delete"))
        .then_some(())
    })
    .await;
    kubectl_ok(
        &kc,
        &["delete", "tracingpolicy", "slow-ctl-delete", "--wait=false"],
    );
    wait_for("engine set without slow-ctl-delete", T, || async {
        (!engine
            .last()
            .unwrap()
            .policies
            .iter()
            .any(|(k, _)| k.name == "slow-ctl-delete"))
        .then_some(())
    })
    .await;
    assert!(
        !ctl.is_finished(),
        "controller still running after a delete mid-apply"
    );
    assert!(get_policy(&client, None, "slow-ctl-delete").await.is_none());

    // 6. Violations: a workload's and a host process's; a repeat raises the count.
    assert!(tx.offer(event(
        "block-cloud-metadata",
        Some(("payments", "api-7d9")),
        80,
        &recent(0)
    )));
    assert!(tx.offer(event("block-cloud-metadata", None, 80, &recent(1))));
    let pv = wait_for("PolicyViolation in payments", T, || async {
        violations_json(&kc).into_iter().find(|v| {
            v["metadata"]["namespace"] == "payments"
                && v["spec"]["policy"] == "block-cloud-metadata"
        })
    })
    .await;
    assert_eq!(pv["spec"]["count"], 1);
    assert_eq!(pv["spec"]["outcome"], "blocked");
    assert_eq!(pv["spec"]["pod"], "api-7d9");
    assert_eq!(
        pv["spec"]["destination"]["address"],
        "169.254.169.254:80/TCP"
    );
    assert_eq!(pv["metadata"]["labels"]["bulwark.dev/node"], "ctl-node-a");
    wait_for("host violation in bulwark-system", T, || async {
        violations_json(&kc).into_iter().find(|v| {
            v["metadata"]["namespace"] == "bulwark-system" && v["spec"]["node"] == "ctl-node-a"
        })
    })
    .await;
    for s in [recent(5), recent(9)] {
        assert!(tx.offer(event(
            "block-cloud-metadata",
            Some(("payments", "api-7d9")),
            80,
            &s
        )));
    }
    let pv2 = wait_for("count 3", T, || async {
        violations_json(&kc)
            .into_iter()
            .find(|v| v["metadata"]["name"] == pv["metadata"]["name"] && v["spec"]["count"] == 3)
    })
    .await;
    assert_eq!(pv2["spec"]["firstSeen"], recent(0));
    assert_eq!(pv2["spec"]["lastSeen"], recent(9));
    // One object per key: still exactly one for this pod.
    let same: Vec<_> = violations_json(&kc)
        .into_iter()
        .filter(|v| v["spec"]["pod"] == "api-7d9" && v["spec"]["node"] == "ctl-node-a")
        .collect();
    assert_eq!(same.len(), 1);
    // Printer columns of `kubectl get policyviolations -A`.
    let table = kubectl_ok(&kc, &["get", "policyviolations", "-n", "payments"]);
    let header = table.lines().next().unwrap();
    for col in [
        "POLICY",
        "HOOK",
        "OUTCOME",
        "POD",
        "BINARY",
        "TARGET",
        "COUNT",
        "LAST SEEN",
    ] {
        assert!(header.contains(col), "{table}");
    }
    let row = table.lines().find(|l| l.contains("api-7d9")).unwrap();
    assert!(
        row.contains("blocked")
            && row.contains("connect")
            && row.contains("/usr/bin/curl")
            && row.contains("169.254.169.254:")
            && row.contains(" 3 "),
        "{row}"
    );

    // Events regarding the policy (events.k8s.io/v1).
    let ev = wait_for("an Event regarding block-cloud-metadata", T, || async {
        find_event(&kc, |e| {
            e["regarding"]["name"] == "block-cloud-metadata" && e["reason"] == "ConnectionBlocked"
        })
    })
    .await;
    assert_eq!(ev["regarding"]["kind"], "TracingPolicy");
    assert_eq!(ev["reportingController"], "bulwark");
    assert!(
        ev["note"].as_str().unwrap().contains("/usr/bin/curl"),
        "{ev}"
    );
    assert_eq!(
        stats.violations_dropped_queue_full.load(Ordering::Relaxed),
        0
    );

    // Expiry: a violation last seen long ago (beyond the 24 h TTL) is deleted by the sweep.
    assert!(tx.offer(event(
        "block-cloud-metadata",
        Some(("payments", "old-pod")),
        80,
        &recent(-3 * 86_400)
    )));
    wait_for("the old violation written and expired", T, || async {
        let gone = !violations_json(&kc)
            .iter()
            .any(|v| v["spec"]["pod"] == "old-pod");
        (stats.violation_objects_expired.load(Ordering::Relaxed) >= 1 && gone).then_some(())
    })
    .await;
    assert!(stats.violation_objects_created.load(Ordering::Relaxed) >= 3);
    // The recent ones are kept.
    assert!(violations_json(&kc)
        .iter()
        .any(|v| v["spec"]["pod"] == "api-7d9"));

    // 7. A second node: NODES reads 2/2 for accepted policies, each node in its own report.
    let engine_b = fake_engine();
    let (_tx_b, rx_b) = violation_channel(16, Arc::new(Stats::default()));
    let ctl_b = tokio::spawn(bulwark_controller::run(
        client.clone(),
        "ctl-node-b".into(),
        engine_b,
        rx_b,
        options(Arc::new(Stats::default())),
    ));
    let o = wait_for("block-cloud-metadata on 2/2 nodes", T, || async {
        let o = get_policy(&client, None, "block-cloud-metadata").await?;
        (o.data["status"]["nodes"] == "2/2").then_some(o)
    })
    .await;
    assert_eq!(o.data["status"]["nodeCounts"]["total"], 2);
    for node in ["ctl-node-a", "ctl-node-b"] {
        kubectl_ok(&kc, &["get", "bulwarknode", node]);
    }
    let o = wait_for("fail-ctl-capacity 0/2", T, || async {
        let o = get_policy(&client, None, "fail-ctl-capacity").await?;
        (o.data["status"]["nodes"] == "0/2").then_some(o)
    })
    .await;
    assert_eq!(condition(&o, "Loaded").unwrap()["reason"], "NotLoaded");
    let failing: Vec<&str> = o.data["status"]["failedNodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert_eq!(failing, ["ctl-node-a", "ctl-node-b"]);

    ctl_b.abort();
    ctl.abort();
    for name in ["ctl-test-rejected", "fail-ctl-capacity", "ctl-test-mode"] {
        let _ = kubectl(
            &kc,
            &[
                "delete",
                "tracingpolicy",
                name,
                "--ignore-not-found",
                "--wait=false",
            ],
        );
    }
}
