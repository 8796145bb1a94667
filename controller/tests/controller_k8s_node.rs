//! The wiring the daemon uses, against the real CRD API server named by KUBECONFIG:
//! `node::start` on its own thread with the health endpoint, policy status for this node, and a
//! `policy_match` event handed over as the daemon does (every event it writes, typed, to the
//! sender) turning into a PolicyViolation.
//! Fails when CI=true and KUBECONFIG is unset; skips otherwise.

mod common;

use std::time::Duration;

use bulwark_controller::node::{start, NodeConfig};
use bulwark_controller::ControllerOptions;
use bulwark_events::{Action, Body, Event, Hook, Mode, Outcome, Pod, PolicyMatch, Process};
use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_start_and_violation_handover() {
    let Some(kc) = test_server_or_skip("node_start_and_violation_handover") else {
        return;
    };
    kubectl_ok(
        &kc,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "policies/examples/kill-crypto-miners.yaml",
        ],
    );
    let _ = kubectl(
        &kc,
        &[
            "delete",
            "policyviolations",
            "-A",
            "-l",
            "bulwark.dev/node=ctl-node-tap",
        ],
    );

    let addr = free_local_addr();
    let engine = fake_engine();
    let handle = start(
        NodeConfig {
            node_name: "ctl-node-tap".into(),
            kubeconfig: Some(kc.clone()),
            health_addr: Some(addr),
            queue_capacity: 64,
            options: ControllerOptions {
                resync_interval: Duration::from_secs(5),
                violation_flush_interval: Duration::from_millis(300),
                ..Default::default()
            },
        },
        engine.clone(),
    )
    .expect("controller starts");

    assert!(http_get(addr, "/healthz")
        .unwrap()
        .starts_with("HTTP/1.1 200"));
    wait_for("/readyz 200", T, || async {
        http_get(addr, "/readyz").filter(|r| r.starts_with("HTTP/1.1 200"))
    })
    .await;
    assert!(handle.is_ready());
    wait_for("kill-crypto-miners loaded on ctl-node-tap", T, || async {
        let out = kubectl_ok(
            &kc,
            &["get", "tracingpolicy", "kill-crypto-miners", "-o", "json"],
        );
        let v: Value = serde_json::from_str(&out).ok()?;
        (v["status"]["nodes"] == "1/1").then_some(())?;
        let report: Value = serde_json::from_str(&kubectl_ok(
            &kc,
            &["get", "bulwarknode", "ctl-node-tap", "-o", "json"],
        ))
        .ok()?;
        report["spec"]["policies"]
            .as_array()?
            .iter()
            .find(|e| e["name"] == "kill-crypto-miners" && e.get("error").is_none())
            .cloned()
    })
    .await;

    // The daemon hands over every event it writes: the process_exec is not a violation, the
    // policy_match reaches the API.
    let process = Process {
        exec_id: "Y3RsOjE6Mg".into(),
        pid: 2,
        uid: None,
        binary: "/tmp/xmrig".into(),
        arguments: "--donate-level 1".into(),
        arguments_truncated: false,
        cwd: None,
        start_time: recent(-1),
        parent_exec_id: None,
        pod: Some(Pod {
            namespace: "mining".into(),
            name: "miner-0".into(),
            container: "main".into(),
            labels: Default::default(),
        }),
    };
    let exec = Event {
        time: recent(-1),
        node_name: "ctl-node-tap".into(),
        body: Body::ProcessExec {
            process: process.clone(),
            parent: None,
        },
    };
    let killed = Event {
        time: recent(0),
        node_name: "ctl-node-tap".into(),
        body: Body::PolicyMatch(PolicyMatch {
            policy_name: Some("kill-crypto-miners".into()),
            policy_namespace: None,
            rule: Some("kill-miner-binaries".into()),
            hook: Hook::Exec,
            action: Action::Sigkill,
            mode: Mode::Enforce,
            enforced: true,
            outcome: Outcome::Killed,
            process,
            destination: None,
            encryption: None,
            reason: None,
            file: None,
            syscall: None,
        }),
    };
    let sender = handle.sender();
    assert!(!sender.offer_event(&exec), "a process_exec is not queued");
    assert!(sender.offer_event(&killed), "the policy_match is queued");
    let pv = wait_for("PolicyViolation for miner-0", T, || async {
        let out = kubectl_ok(
            &kc,
            &["get", "policyviolations", "-n", "mining", "-o", "json"],
        );
        let v: Value = serde_json::from_str(&out).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .find(|o| o["spec"]["pod"] == "miner-0")
            .cloned()
    })
    .await;
    assert_eq!(pv["spec"]["outcome"], "killed");
    assert_eq!(pv["spec"]["hook"], "exec");
    assert_eq!(pv["spec"]["binary"], "/tmp/xmrig");
    assert!(pv["spec"].get("destination").is_none());
    // A status event's health figures become metrics too (nothing of it is queued).
    let status: Event = serde_json::from_value(serde_json::json!({
        "time": recent(-1), "node_name": "ctl-node-tap", "type": "status", "state": "running",
        "generation": 1, "policies": [], "diagnostics": [], "lost_events": 4,
        "warnings": ["the process map was full: raise --max-processes"], "stale_processes": 0
    }))
    .unwrap();
    assert!(!sender.offer_event(&status), "a status event is not queued");
    let metrics = http_get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains("bulwark_violation_objects_total{op=\"created\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bulwark_capacity_warnings 1\n")
            && metrics.contains("bulwark_events_lost_total 4\n"),
        "{metrics}"
    );
    assert!(!handle.is_finished());
    handle.stop().expect("clean stop");
    assert!(
        http_get(addr, "/healthz").is_none(),
        "health endpoint gone after stop"
    );
}
