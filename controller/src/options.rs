//! The controller's knobs ([`ControllerOptions`]); `Default` gives production values.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bulwark_conns::{ClusterCidrs, Signatures};
use kube::api::ApiResource;

use crate::engine::{ConnObservation, WorkloadRegistry};
use crate::stats::Stats;

/// Where the identities of this node's Pods go, and where their cgroups are found.
#[derive(Clone)]
pub struct PodWorkloads {
    /// Told which cgroup belongs to which Pod.
    pub registry: Arc<dyn WorkloadRegistry>,
    /// The host's cgroup v2 mount, scanned for container cgroups. The caller knows it (the
    /// daemon's engine attaches its programs there); the controller does not look for it.
    pub cgroup_root: PathBuf,
}

/// What connection observation takes from the cluster ([`crate::conn_config`]): this node's pod
/// CIDRs on top of `cluster_cidrs`, accepted `EncryptedProtocol` objects on top of `protocols`.
#[derive(Clone)]
pub struct ConnConfig {
    /// Told the whole set in force whenever it changes.
    pub observation: Arc<dyn ConnObservation>,
    /// `--cluster-cidrs` (or its defaults).
    pub cluster_cidrs: ClusterCidrs,
    /// The `--protocols` file's declarations (a cluster object of the same name is left out).
    pub protocols: Signatures,
}

/// Knobs of [`crate::run`]. `Default` gives production values.
#[derive(Clone)]
pub struct ControllerOptions {
    /// Namespace for violations of host processes (no pod), default `bulwark-system`.
    pub host_namespace: String,
    /// Server-side-apply field manager prefix; the node name is appended.
    pub field_manager: String,
    /// New `PolicyViolation` objects per second (token bucket rate) and burst.
    pub violation_create_rate: f64,
    pub violation_create_burst: u32,
    /// At most this many `PolicyViolation` objects per namespace from this node; further new
    /// keys are counted in [`Stats::violations_capped`] and logged, not created.
    pub violation_namespace_cap: usize,
    /// Violations whose `lastSeen` is older than this are deleted.
    pub violation_ttl: Duration,
    /// Pending count updates are written at most this often per object.
    pub violation_flush_interval: Duration,
    /// Distinct violation keys waiting to be written before new keys are dropped (counted).
    pub violation_max_pending: usize,
    /// API writes for violations from this node (objects and their Events together) per second
    /// (token bucket rate) and burst: a violation storm costs the API server at most this.
    /// Counts keep aggregating in memory while writes wait.
    pub violation_write_rate: f64,
    pub violation_write_burst: u32,
    /// Also publish an events.k8s.io/v1 Event regarding the policy for each flushed violation.
    pub publish_events: bool,
    /// Full re-reconcile of every policy at least this often (heals lost writes).
    pub resync_interval: Duration,
    /// This node renews the heartbeat of its `BulwarkNode` report this often, from a task of
    /// its own (a small patch; never held up by policy work).
    pub report_heartbeat: Duration,
    /// A change of what this node reports is written once it has been unchanged this long (a
    /// burst of policy changes costs each node one write when it is over) ...
    pub report_min_interval: Duration,
    /// ... or once the change has waited this long, whichever comes first.
    pub report_max_delay: Duration,
    /// A node whose report's heartbeat is older than this (measured from now) has departed: the
    /// status aggregator leaves it out of every policy's status and deletes its report. Not
    /// applied while the node's Node object exists ([`crate::node_liveness`]).
    pub node_ttl: Duration,
    /// The resource whose objects are the cluster's nodes: core/v1 Node. A deleted Node's
    /// report is removed at once. (Tests point this at a stand-in: the test API server serves
    /// no core/v1.)
    pub node_resource: ApiResource,
    /// Take part in the election of the status aggregator (the holder of the `bulwark-status`
    /// Lease in `host_namespace` writes every policy's status from the node reports).
    pub aggregate_status: bool,
    /// The aggregator's Lease lasts this long; the holder renews it every third of it, other
    /// nodes try to take it over once per duration.
    pub lease_duration: Duration,
    /// The aggregator recomputes policy statuses at most this often (bounds status writes per
    /// policy change whatever the number of nodes).
    pub status_interval: Duration,
    /// While nodes are still catching up with a policy (some pending), its status is rewritten
    /// with the progress at most this often; a new generation and the final counts (none
    /// pending) are written at the next pass.
    pub status_progress_interval: Duration,
    /// Set once both policy kinds are listed and the first engine apply is done.
    pub ready: Arc<AtomicBool>,
    /// Counters shared with the health endpoint and the daemon.
    pub stats: Arc<Stats>,
    /// When set, watch this node's Pods and feed their cgroup identities to the registry.
    pub pod_workloads: Option<PodWorkloads>,
    /// When set, follow this node's pod CIDRs and the `EncryptedProtocol` objects.
    pub conn_config: Option<ConnConfig>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            host_namespace: "bulwark-system".into(),
            field_manager: "bulwark".into(),
            violation_create_rate: 5.0,
            violation_create_burst: 20,
            violation_namespace_cap: 500,
            violation_ttl: Duration::from_secs(24 * 3600),
            violation_flush_interval: Duration::from_secs(2),
            violation_max_pending: 10_000,
            violation_write_rate: 1.0,
            violation_write_burst: 20,
            publish_events: true,
            resync_interval: Duration::from_secs(300),
            report_heartbeat: Duration::from_secs(60),
            report_min_interval: Duration::from_secs(1),
            report_max_delay: Duration::from_secs(10),
            node_ttl: Duration::from_secs(300),
            node_resource: ApiResource::erase::<k8s_openapi::api::core::v1::Node>(&()),
            aggregate_status: true,
            lease_duration: Duration::from_secs(15),
            status_interval: Duration::from_secs(1),
            status_progress_interval: Duration::from_secs(5),
            ready: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(Stats::default()),
            pod_workloads: None,
            conn_config: None,
        }
    }
}
