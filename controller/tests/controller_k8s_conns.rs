//! What connection observation takes from the cluster, against the real CRD API server named by
//! KUBECONFIG (`tests/k8s/testenv`, which has no kubelet and no core/v1: the test creates the
//! Node as an object of a stand-in CRD with the same fields, `bulwark_controller::sim::node_stand_in_crd`,
//! and points the Node watch at it):
//! this node's pod CIDRs become cluster CIDRs, and EncryptedProtocol objects are linted, put in
//! force (a first payload carrying one is classified under its name, encrypted), reported in
//! their status, and taken out of force when deleted. The daemon side is a recording
//! `ConnObservation`; the classifier is `bulwark_conns::classify` with the set it received (the
//! daemon's request path from there on is tested in daemon/src/pipeline/daemon/conn_config.rs,
//! without the kernel). Fails when CI=true and KUBECONFIG is unset; skips otherwise.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulwark_conns::{classify, ClusterCidrs, Signatures};
use bulwark_controller::node::{start, NodeConfig};
use bulwark_controller::sim::{node_stand_in, node_stand_in_crd};
use bulwark_controller::{ConnConfig, ConnObservation, ControllerOptions};
use bulwark_events::{Protocol, Scope};
use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(90);
const NODE: &str = "ctl-conns-node";
/// The stand-in Node resource (`bulwark_controller::sim::node_stand_in`).
const NODES: &str = "nodes.testenv.bulwark.dev";

/// What the controller handed to the node, last.
#[derive(Default)]
struct Recorder {
    cidrs: Mutex<Option<ClusterCidrs>>,
    protocols: Mutex<Option<Signatures>>,
}

impl ConnObservation for Recorder {
    fn set_cluster_cidrs(&self, cidrs: ClusterCidrs) {
        *self.cidrs.lock().unwrap() = Some(cidrs);
    }
    fn set_declared_protocols(&self, protocols: Signatures) {
        *self.protocols.lock().unwrap() = Some(protocols);
    }
}

impl Recorder {
    fn scope(&self, addr: &str) -> Option<Scope> {
        let cidrs = self.cidrs.lock().unwrap();
        Some(cidrs.as_ref()?.scope(addr.parse().unwrap()))
    }
    fn protocols(&self) -> Option<Signatures> {
        self.protocols.lock().unwrap().clone()
    }
}

/// `kubectl apply` of a manifest given as text.
fn apply(kc: &std::path::Path, name: &str, yaml: &str) {
    let f = std::env::temp_dir().join(format!("bulwark-conns-{name}-{}.yaml", std::process::id()));
    std::fs::write(&f, yaml).unwrap();
    kubectl_ok(kc, &["apply", "-f", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(f);
}

fn protocol_status(kc: &std::path::Path, name: &str) -> Option<Value> {
    let (ok, out, _) = kubectl(kc, &["get", "encryptedprotocol", name, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).ok().filter(|_| ok)?;
    let status = v.get("status")?.clone();
    (status["observedGeneration"] == v["metadata"]["generation"]).then_some(status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_cidrs_and_encrypted_protocols_from_the_cluster() {
    let Some(kc) = test_server_or_skip("pod_cidrs_and_encrypted_protocols_from_the_cluster") else {
        return;
    };
    for leftover in ["ctl-acme", "ctl-bad-mask"] {
        kubectl_ok(
            &kc,
            &[
                "delete",
                "encryptedprotocol",
                leftover,
                "--ignore-not-found",
            ],
        );
    }
    apply_crd(&client(&kc).await, &node_stand_in_crd()).await;
    kubectl_ok(&kc, &["delete", NODES, NODE, "--ignore-not-found"]);
    // No kubelet here: the Node is created as the node controller would leave it, with its pod
    // ranges (dual stack, outside every default cluster CIDR).
    apply(
        &kc,
        "node",
        &format!(
            "apiVersion: testenv.bulwark.dev/v1\nkind: Node\nmetadata:\n  name: {NODE}\nspec:\n  podCIDR: 198.51.100.0/24\n  podCIDRs: [198.51.100.0/24, \"2001:db8:42::/64\"]\n"
        ),
    );

    let addr = free_local_addr();
    let recorder = Arc::new(Recorder::default());
    let handle = start(
        NodeConfig {
            node_name: NODE.into(),
            kubeconfig: Some(kc.clone()),
            health_addr: Some(addr),
            queue_capacity: 16,
            options: ControllerOptions {
                resync_interval: Duration::from_secs(5),
                conn_config: Some(ConnConfig {
                    observation: recorder.clone(),
                    cluster_cidrs: ClusterCidrs::defaults(),
                    protocols: Signatures::default(),
                }),
                node_resource: node_stand_in(),
                ..Default::default()
            },
        },
        fake_engine(),
    )
    .expect("controller starts");

    // Pod CIDRs: a peer in the Node's pod range is `cluster`, the configured ranges stay.
    wait_for("the Node's pod CIDRs in force", T, || async {
        (recorder.scope("198.51.100.7") == Some(Scope::Cluster)).then_some(())
    })
    .await;
    assert_eq!(recorder.scope("2001:db8:42::9"), Some(Scope::Cluster));
    assert_eq!(recorder.scope("10.1.2.3"), Some(Scope::Cluster));
    assert_eq!(recorder.scope("198.51.101.7"), Some(Scope::Internet));
    let metrics = http_get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains("bulwark_cluster_cidr_info{cidr=\"198.51.100.0/24\",source=\"node\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("bulwark_cluster_cidr_info{cidr=\"10.0.0.0/8\",source=\"configured\"} 1\n"),
        "{metrics}"
    );

    // A valid declaration: in force, and a first payload carrying it is that protocol, encrypted.
    apply(
        &kc,
        "acme",
        "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: ctl-acme\nspec:\n  signature: \"ac 3e\"\n  offset: 2\n",
    );
    let first = [0x00, 0x01, 0xac, 0x3e, 0x10, 0x20];
    let set = wait_for("ctl-acme in force", T, || async {
        recorder
            .protocols()
            .filter(|s| s.iter().any(|p| p.name() == "ctl-acme"))
    })
    .await;
    let payload = classify(&first, &set);
    assert_eq!(payload.protocol, Protocol::Custom("ctl-acme".into()));
    assert_eq!(payload.encrypted, Some(true));
    let status = wait_for("ctl-acme Accepted", T, || async {
        protocol_status(&kc, "ctl-acme").filter(|s| s["state"] == "Accepted")
    })
    .await;
    assert_eq!(status["conditions"][0]["type"], "Accepted");
    assert_eq!(status["conditions"][0]["status"], "True");
    let metrics = http_get(addr, "/metrics").unwrap();
    assert!(
        metrics.contains(
            "bulwark_declared_protocol_info{protocol=\"ctl-acme\",source=\"kubernetes\"} 1\n"
        ),
        "{metrics}"
    );

    // A declaration the API server's schema lets through but the lint rejects (BW100: one mask
    // byte for two signature bytes): rejected with the lint's message, never in force.
    apply(
        &kc,
        "bad",
        "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: ctl-bad-mask\nspec:\n  signature: \"ac 3e\"\n  mask: \"ff\"\n",
    );
    let status = wait_for("ctl-bad-mask Rejected", T, || async {
        protocol_status(&kc, "ctl-bad-mask").filter(|s| s["state"] == "Rejected")
    })
    .await;
    let cond = &status["conditions"][0];
    assert_eq!(cond["status"], "False");
    let lint_message = bulwark_policy::protocol::SignatureError::MaskLength {
        signature: 2,
        mask: 1,
    }
    .to_string();
    let msg = cond["message"].as_str().unwrap();
    assert!(
        msg.contains("error BW100 at spec.mask") && msg.contains(&lint_message),
        "{msg}"
    );
    assert!(recorder
        .protocols()
        .unwrap()
        .iter()
        .all(|p| p.name() != "ctl-bad-mask"));
    let out = kubectl_ok(&kc, &["get", "encryptedprotocols"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ctl-bad-mask") && l.contains("Rejected")),
        "the STATE column shows the verdict: {out}"
    );

    // Deleted: out of force, without a restart.
    kubectl_ok(&kc, &["delete", "encryptedprotocol", "ctl-acme"]);
    let set = wait_for("ctl-acme out of force", T, || async {
        recorder
            .protocols()
            .filter(|s| s.iter().all(|p| p.name() != "ctl-acme"))
    })
    .await;
    assert_eq!(classify(&first, &set).protocol, Protocol::Other);

    // The Node gone: back to the configured ranges.
    kubectl_ok(&kc, &["delete", NODES, NODE]);
    wait_for("pod CIDRs out of force", T, || async {
        (recorder.scope("198.51.100.7") == Some(Scope::Internet)).then_some(())
    })
    .await;
    assert_eq!(recorder.scope("10.1.2.3"), Some(Scope::Cluster));

    kubectl_ok(
        &kc,
        &[
            "delete",
            "encryptedprotocol",
            "ctl-bad-mask",
            "--ignore-not-found",
        ],
    );
    handle.stop().expect("controller stops cleanly");
}
