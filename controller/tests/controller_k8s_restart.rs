//! The controller survives the API server going away and coming back empty
//! (`k8s-testenv/down` stops etcd and the server and wipes the data; `up` starts them again):
//! status is written again, PolicyViolations known before are re-created with their counts, and
//! violations that arrived while the server was down are written once it is back.
//!
//! Runs its own server instance (own state dir and ports) so restarting it never disturbs other
//! users of the shared one. Needs the k8s-testenv kit (`tests/k8s/testenv`, or
//! `BULWARK_K8S_TESTENV`); fails when CI=true and the kit is missing, skips otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bulwark_controller::{violation_channel, ControllerOptions, Stats, Violation};
use bulwark_events::{Pod, Process};
use common::*;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);

struct Server {
    kit: PathBuf,
    envs: Vec<(&'static str, String)>,
    kubeconfig: PathBuf,
}

impl Server {
    fn cmd(&self, script: &str) -> Command {
        let mut c = Command::new(self.kit.join(script));
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    fn up(&mut self) {
        let out = self.cmd("up").output().expect("run k8s-testenv/up");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "k8s-testenv/up failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        let kc = text
            .split_whitespace()
            .find_map(|w| w.strip_prefix("KUBECONFIG="))
            .expect("up prints KUBECONFIG=");
        self.kubeconfig = PathBuf::from(kc);
    }

    fn down(&self) {
        let st = self.cmd("down").status().expect("run k8s-testenv/down");
        assert!(st.success(), "k8s-testenv/down failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.down();
    }
}

fn kit_or_skip() -> Option<PathBuf> {
    let kit = std::env::var_os("BULWARK_K8S_TESTENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("tests/k8s/testenv"));
    if kit.join("up").exists() && kit.join("down").exists() {
        return Some(kit);
    }
    assert!(
        !in_ci(),
        "the k8s-testenv kit is missing at {} but CI=true; set BULWARK_K8S_TESTENV",
        kit.display()
    );
    eprintln!(
        "controller_recovers_from_server_restart: SKIPPED: no k8s-testenv kit at {}",
        kit.display()
    );
    None
}

/// A blocked connect to the metadata service from Pod `web/<pod>`.
fn event(pod: &str, time: &str) -> Violation {
    let process = Process {
        exec_id: "e".into(),
        pid: 7,
        uid: Some(0),
        binary: "/usr/bin/wget".into(),
        pod: Some(Pod {
            namespace: "web".into(),
            name: pod.into(),
            container: "c".into(),
            labels: Default::default(),
        }),
        ..Process::default()
    };
    blocked_metadata_connect("restart-node", "block-cloud-metadata", time, process, 80)
}

fn violation(kc: &Path, pod: &str) -> Option<Value> {
    let (ok, out, _) = kubectl(kc, &["get", "policyviolations", "-n", "web", "-o", "json"]);
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    v["items"]
        .as_array()?
        .iter()
        .find(|o| o["spec"]["pod"] == pod)
        .cloned()
}

fn policy_status(kc: &Path) -> Option<Value> {
    let (ok, out, _) = kubectl(
        kc,
        &["get", "tracingpolicy", "block-cloud-metadata", "-o", "json"],
    );
    if !ok {
        return None;
    }
    let v: Value = serde_json::from_str(&out).ok()?;
    let gen = v["metadata"]["generation"].clone();
    (v["status"]["state"] == "Accepted"
        && v["status"]["observedGeneration"] == gen
        && v["status"]["nodes"] == "1/1")
        .then_some(v)
}

fn install(kc: &Path) {
    install_crds(kc);
    kubectl_ok(
        kc,
        &[
            "apply",
            "--server-side",
            "-f",
            "policies/examples/block-cloud-metadata.yaml",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_recovers_from_server_restart() {
    let _ = env_logger::builder().is_test(true).try_init();
    let Some(kit) = kit_or_skip() else { return };
    let run_dir = std::env::temp_dir().join("bulwark-ctl-restart");
    let mut server = Server {
        kit,
        envs: vec![
            ("K8S_TESTENV_RUN", run_dir.display().to_string()),
            ("K8S_TESTENV_PORT", "16743".into()),
            ("K8S_TESTENV_ETCD_PORT", "23990".into()),
        ],
        kubeconfig: PathBuf::new(),
    };
    server.down(); // leftovers of an aborted run
    server.up();
    let kc = server.kubeconfig.clone();
    install(&kc);
    forget_other_nodes(&kc);

    let client = client(&kc).await;
    let stats = Arc::new(Stats::default());
    let opts = ControllerOptions {
        resync_interval: Duration::from_secs(3),
        violation_flush_interval: Duration::from_millis(300),
        stats: stats.clone(),
        ..Default::default()
    };
    let (tx, rx) = violation_channel(256, stats.clone());
    let engine = fake_engine();
    let ctl = tokio::spawn(bulwark_controller::run(
        client,
        "restart-node".into(),
        engine,
        rx,
        opts,
    ));

    wait_for("status before the restart", T, || async {
        policy_status(&kc)
    })
    .await;
    assert!(tx.offer(event("before", &recent(0))));
    assert!(tx.offer(event("before", &recent(1))));
    wait_for("violation 'before' with count 2", T, || async {
        violation(&kc, "before").filter(|v| v["spec"]["count"] == 2)
    })
    .await;

    // The server goes away and loses everything.
    server.down();
    let errors_before = stats.api_write_errors.load(Ordering::Relaxed);
    assert!(tx.offer(event("during", &recent(60))));
    assert!(tx.offer(event("before", &recent(61))));
    // The controller tries to write them while the server is gone, and fails.
    wait_for("a failed write while the server is down", T, || async {
        (stats.api_write_errors.load(Ordering::Relaxed) > errors_before).then_some(())
    })
    .await;
    assert!(
        !ctl.is_finished(),
        "the controller must keep running while the server is down"
    );

    server.up();
    install(&kc);
    let st = wait_for("status written again after the restart", T, || async {
        policy_status(&kc)
    })
    .await;
    // The node's report was lost with the rest: `1/1` above means it wrote it again.
    assert_eq!(st["status"]["nodeCounts"]["loaded"], 1);
    kubectl_ok(&kc, &["get", "bulwarknode", "restart-node"]);
    let before = wait_for("violation 'before' re-created with count 3", T, || async {
        violation(&kc, "before").filter(|v| v["spec"]["count"] == 3)
    })
    .await;
    assert_eq!(before["spec"]["firstSeen"], recent(0));
    assert_eq!(before["spec"]["lastSeen"], recent(61));
    wait_for(
        "violation 'during' written after the restart",
        T,
        || async { violation(&kc, "during") },
    )
    .await;
    assert!(!ctl.is_finished());
    assert_eq!(
        stats.violations_dropped_queue_full.load(Ordering::Relaxed),
        0
    );
    assert_eq!(
        stats
            .violations_dropped_pending_full
            .load(Ordering::Relaxed),
        0
    );
    ctl.abort();
}
