//! bulwark's Kubernetes side, run inside the node daemon (`bulwark run --kubernetes`). This file
//! is only the front door: the module list, what callers use, and [`run`].
//!
//! This crate owns everything that talks to the Kubernetes API server:
//! - [`policy_watch`]: watches `TracingPolicy` and `TracingPolicyNamespaced`, validates them with
//!   the lint's checks ([`validate`]), hands the accepted set to the node's [`PolicyEngine`] and
//!   reports the outcome in this node's `BulwarkNode` object ([`node_report`]).
//! - [`aggregate`]: on the one node holding the `bulwark-status` Lease, turns every node's
//!   report into each policy's bounded status (counts plus a capped list of failing nodes; the
//!   pure function [`reconcile::reconcile`]) and prunes the reports of departed nodes
//!   ([`node_liveness`]: Node deleted, or no heartbeat within the TTL).
//! - [`violations`]: turns the engine's `policy_match` events ([`Violation`], typed from crate
//!   `bulwark-events`, with the file or system call of a `file` / `syscall` match, queued by
//!   [`violation_queue`]) into deduplicated, rate-limited, capped
//!   and expiring `PolicyViolation` objects ([`crd`]) and `events.k8s.io/v1` Events regarding
//!   the policy.
//! - [`node_identity`] (pure mapping Pod + cgroup tree -> cgroup id -> [`Workload`]) and
//!   [`pod_watch`] (the watch of this node's Pods feeding a [`WorkloadRegistry`]).
//! - [`watch_store`]: watched object caches that re-list when the server lost its data.
//! - [`conn_config`]: what connection observation takes from the cluster: this node's pod
//!   CIDRs ([`node_cidrs`]) and the `EncryptedProtocol` objects ([`protocol_watch`]), handed to
//!   the node's [`ConnObservation`]; what is in force is served on `/metrics` ([`in_force`]).
//! - [`health`]: the daemon's HTTP liveness/readiness/metrics endpoint.
//! - [`sim`]: N node controllers in one process with fake engines, for the scale harness and
//!   test (not used by the daemon).
//! - [`node`]: [`node::start`] runs all of it on its own thread for a non-async daemon, which
//!   hands each event it writes to [`ViolationSender::offer_event`].
//!
//! The shared vocabulary: [`engine`] (what the node implements: [`PolicyEngine`],
//! [`WorkloadRegistry`]), [`policy_key`] ([`PolicyKey`]), [`options`] ([`ControllerOptions`]),
//! [`client`] (connecting, API call time limit) and [`error`] ([`Error`]).
//!
//! The daemon wires it through [`run`] (or [`node::start`]) with its own implementations of
//! [`PolicyEngine`] and (optionally) [`WorkloadRegistry`]; nothing here touches the kernel.

pub mod aggregate;
pub mod client;
pub mod conn_config;
pub mod crd;
pub mod engine;
pub mod error;
pub mod health;
pub mod in_force;
pub mod node;
pub mod node_cidrs;
pub mod node_identity;
pub mod node_liveness;
pub mod node_report;
pub mod options;
pub mod pod_watch;
pub mod policy_key;
pub mod policy_watch;
pub mod protocol_watch;
pub mod reconcile;
pub mod sim;
pub mod stats;
pub mod validate;
pub mod violation_queue;
pub mod violations;
pub mod watch_store;

use std::sync::Arc;

pub(crate) use client::timed;
pub use client::{connect, API_CALL_TIMEOUT};
pub use crd::{
    bulwark_node_crd, policy_violation_crd, BulwarkNode, BulwarkNodeSpec, PolicyViolation,
    PolicyViolationSpec,
};
pub use engine::{ConnObservation, PolicyEngine, PolicyLoadResult, Workload, WorkloadRegistry};
pub use error::{Error, Result};
pub use options::{ConnConfig, ControllerOptions, PodWorkloads};
pub use policy_key::{PolicyKey, PolicyKind};
pub use stats::Stats;
pub use violation_queue::{violation_channel, Violation, ViolationSender};

/// Run the controller for node `node_name` until a component fails fatally (it retries API
/// errors forever, so in practice until the task is dropped or `violations` is closed and the
/// policy watch ends). Spawns the policy watch, the violation writer and, when
/// `opts.pod_workloads` is set, the Pod watch; when `opts.conn_config` is set, the Node and
/// `EncryptedProtocol` watches.
pub async fn run(
    client: kube::Client,
    node_name: String,
    engine: Arc<dyn PolicyEngine>,
    violations: tokio::sync::mpsc::Receiver<Violation>,
    opts: ControllerOptions,
) -> Result<()> {
    if node_name.trim().is_empty() {
        return Err(Error::EmptyNodeName);
    }
    let policies = tokio::spawn(policy_watch::run(
        client.clone(),
        node_name.clone(),
        engine,
        opts.clone(),
    ));
    let writer = tokio::spawn(violations::run(
        client.clone(),
        node_name.clone(),
        violations,
        opts.clone(),
    ));
    let pods = opts.pod_workloads.clone().map(|w| {
        tokio::spawn(pod_watch::run(
            client.clone(),
            node_name.clone(),
            w.cgroup_root,
            w.registry,
            opts.stats.clone(),
        ))
    });
    let conns = opts.conn_config.clone().map(|cfg| {
        tokio::spawn(conn_config::run(
            client.clone(),
            node_name.clone(),
            cfg,
            opts.clone(),
        ))
    });
    // Dropping this future (a task aborted, a runtime shut down) stops the parts too.
    let _parts = AbortOnDrop(
        [
            Some(&policies),
            Some(&writer),
            pods.as_ref(),
            conns.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|h| h.abort_handle())
        .collect(),
    );
    tokio::select! {
        r = policies => r?,
        r = writer => r?,
        r = async {
            match pods {
                Some(p) => p.await?,
                None => std::future::pending().await,
            }
        } => r,
        r = async {
            match conns {
                Some(c) => c.await?,
                None => std::future::pending().await,
            }
        } => r,
    }
}

/// Aborts the tasks it holds when dropped.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::model::AnyPolicy;

    #[tokio::test]
    async fn run_refuses_an_empty_node_name() {
        struct Nop;
        impl PolicyEngine for Nop {
            fn apply(
                &self,
                _: Vec<AnyPolicy>,
            ) -> std::result::Result<Vec<PolicyLoadResult>, String> {
                Ok(vec![])
            }
        }
        let kc = std::env::temp_dir().join(format!("bulwark-kc2-{}", std::process::id()));
        std::fs::write(
            &kc,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: \"https://127.0.0.1:1\"}\n\
             contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\nusers:\n- name: u\n  user: {token: t}\n",
        )
        .unwrap();
        let client = connect(Some(&kc)).await.unwrap();
        let (_tx, rx) = violation_channel(1, Arc::new(Stats::default()));
        let err = run(
            client,
            String::new(),
            Arc::new(Nop),
            rx,
            ControllerOptions::default(),
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("NODE_NAME"), "{err}");
        let _ = std::fs::remove_file(kc);
    }
}
