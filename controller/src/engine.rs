//! What the controller needs from the node it runs on, implemented by the daemon: a
//! [`PolicyEngine`] that puts policy sets in force, a [`WorkloadRegistry`] that learns
//! which cgroup belongs to which Pod ([`Workload`]), and a [`ConnObservation`] that takes the
//! cluster CIDRs and declared encrypted protocols in force.

use bulwark_conns::{ClusterCidrs, Signatures};
use bulwark_events::Pod;
use bulwark_policy::model::AnyPolicy;

use crate::policy_key::PolicyKey;

/// Outcome of loading one policy on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyLoadResult {
    pub key: PolicyKey,
    /// `Ok` when the policy is in force on this node; `Err(reason)` when this node rejected it
    /// (e.g. over kernel map capacity). The reason is shown in the policy's status.
    pub result: Result<(), String>,
}

/// What the controller needs from the node's engine (the daemon implements it).
pub trait PolicyEngine: Send + Sync {
    /// Replace the full set of policies in force on this node, atomically. Returns per-policy
    /// load results (a policy may be rejected for this node, e.g. over kernel capacity).
    /// Policies missing from the result are treated as loaded. An `Err` means nothing changed
    /// on the node; the controller retries with backoff and reports the reason in status.
    fn apply(&self, policies: Vec<AnyPolicy>) -> Result<Vec<PolicyLoadResult>, String>;
}

/// The Kubernetes identity of the processes in one cgroup: the [`Pod`] their events carry,
/// and what else the mapping knows about the container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// Namespace, Pod name, container name and labels, as events show them (`process.pod`).
    pub pod: Pod,
    pub pod_uid: String,
    /// Container ID without the runtime prefix (`containerd://`, `cri-o://`).
    pub container_id: String,
}

/// Workload identity the node-identity mapping feeds (cgroup id -> namespace/pod/container/labels).
pub trait WorkloadRegistry: Send + Sync {
    /// Processes in cgroup `cgroup_id` belong to `w` (replaces any earlier identity).
    fn upsert(&self, cgroup_id: u64, w: Workload);
    /// The cgroup is gone or no longer belongs to a pod on this node.
    fn remove(&self, cgroup_id: u64);
}

/// What the controller tells the node's connection observation (the daemon implements it).
/// Each call carries the whole set in force, replacing the previous one.
pub trait ConnObservation: Send + Sync {
    /// The ranges whose peers are `scope: cluster`: the configured ones plus this node's pod
    /// CIDRs.
    fn set_cluster_cidrs(&self, cidrs: ClusterCidrs);
    /// The declared encrypted protocols: the `--protocols` file's plus the accepted
    /// `EncryptedProtocol` objects.
    fn set_declared_protocols(&self, protocols: Signatures);
}
