//! bulwark's Kubernetes side, run inside the node daemon (`bulwark run --kubernetes`).
//!
//! This crate owns everything that talks to the Kubernetes API server:
//! - [`policy_watch`]: watches `TracingPolicy` and `TracingPolicyNamespaced`, validates them with
//!   the lint's checks ([`validate`]), hands the accepted set to the node's [`PolicyEngine`] and
//!   writes status through server-side apply; the status computation itself is the pure
//!   function [`reconcile::reconcile`].
//! - [`violations`]: turns the engine's `policy_match` events ([`event::ViolationEvent`]) into
//!   deduplicated, rate-limited, capped and expiring `PolicyViolation` objects ([`crd`]) and
//!   `events.k8s.io/v1` Events regarding the policy.
//! - [`node_identity`] (pure mapping Pod + cgroup tree -> cgroup id -> [`Workload`]) and
//!   [`pod_watch`] (the watch of this node's Pods feeding a [`WorkloadRegistry`]).
//! - [`watch_store`]: watched object caches that re-list when the server lost its data.
//! - [`health`]: the daemon's HTTP liveness/readiness/metrics endpoint.
//!
//! - [`node`]: [`node::start`] runs all of it on its own thread for a non-async daemon, and
//!   [`node::ViolationTap`] feeds it from the daemon's event writer.
//!
//! The daemon wires it through [`run`] (or [`node::start`]) with its own implementations of [`PolicyEngine`] and
//! (optionally) [`WorkloadRegistry`]; nothing here touches the kernel.

pub mod crd;
pub mod event;
pub mod health;
pub mod node;
pub mod node_identity;
pub mod pod_watch;
pub mod policy_watch;
pub mod reconcile;
pub mod stats;
pub mod validate;
pub mod violations;
pub mod watch_store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use bulwark_policy::model::AnyPolicy;

pub use crd::{policy_violation_crd, PolicyViolation, PolicyViolationSpec};
pub use event::{violation_channel, ViolationEvent, ViolationSender};
pub use stats::Stats;

/// Which of the two policy kinds an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `TracingPolicy` (cluster-wide).
    Cluster,
    /// `TracingPolicyNamespaced`.
    Namespaced,
}

impl PolicyKind {
    /// The Kubernetes `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            PolicyKind::Cluster => "TracingPolicy",
            PolicyKind::Namespaced => "TracingPolicyNamespaced",
        }
    }
}

/// Identity of one policy object: kind, namespace (namespaced kind only) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyKey {
    /// The key of a loaded policy.
    pub fn of(policy: &AnyPolicy) -> PolicyKey {
        match policy {
            AnyPolicy::Cluster(p) => PolicyKey {
                kind: PolicyKind::Cluster,
                namespace: None,
                name: p.metadata.name.clone().unwrap_or_default(),
            },
            AnyPolicy::Namespaced(p) => PolicyKey {
                kind: PolicyKind::Namespaced,
                namespace: Some(
                    p.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                ),
                name: p.metadata.name.clone().unwrap_or_default(),
            },
        }
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind.kind(), ns, self.name),
            None => write!(f, "{}/{}", self.kind.kind(), self.name),
        }
    }
}

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

/// The Kubernetes identity of the processes in one cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub container: String,
    /// Container ID without the runtime prefix (`containerd://`, `cri-o://`).
    pub container_id: String,
    pub labels: BTreeMap<String, String>,
}

/// Workload identity the node-identity mapping feeds (cgroup id -> namespace/pod/container/labels).
pub trait WorkloadRegistry: Send + Sync {
    /// Processes in cgroup `cgroup_id` belong to `w` (replaces any earlier identity).
    fn upsert(&self, cgroup_id: u64, w: Workload);
    /// The cgroup is gone or no longer belongs to a pod on this node.
    fn remove(&self, cgroup_id: u64);
}

/// Knobs of [`run`]. `Default` gives production values.
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
    /// Also publish an events.k8s.io/v1 Event regarding the policy for each flushed violation.
    pub publish_events: bool,
    /// Full re-reconcile of every policy at least this often (heals lost writes).
    pub resync_interval: Duration,
    /// Set once both policy kinds are listed and the first engine apply is done.
    pub ready: Arc<AtomicBool>,
    /// Counters shared with the health endpoint and the daemon.
    pub stats: Arc<Stats>,
    /// When set, watch this node's Pods and feed cgroup identities to the registry.
    pub workload_registry: Option<Arc<dyn WorkloadRegistry>>,
    /// cgroup v2 mount to scan for container cgroups; `None`: found from /proc/self/mountinfo.
    pub cgroup_root: Option<PathBuf>,
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
            publish_events: true,
            resync_interval: Duration::from_secs(300),
            ready: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(Stats::default()),
            workload_registry: None,
            cgroup_root: None,
        }
    }
}

/// Longest wait for one API request (watches excepted): a server that accepts connections but
/// does not answer must not stall status or violation writes.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Run one API call with [`API_CALL_TIMEOUT`]; a timeout becomes a `kube::Error::Service`.
pub(crate) async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    timed_with(API_CALL_TIMEOUT, f).await
}

async fn timed_with<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the API server within {limit:?}"),
        )))),
    }
}

/// A client for the API server: from `kubeconfig` when given, else the usual inference
/// (in-cluster ServiceAccount, then `KUBECONFIG` / `~/.kube/config`).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read kubeconfig {}: {e}; pass an existing kubeconfig file",
                    path.display()
                )
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| anyhow::anyhow!("kubeconfig {} is not usable: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot find Kubernetes credentials: {e}; in a pod, mount the ServiceAccount token \
                 (automountServiceAccountToken); outside, set KUBECONFIG"
            )
        })?,
    };
    kube::Client::try_from(config)
        .map_err(|e| anyhow::anyhow!("cannot build a Kubernetes client: {e}"))
}

/// Run the controller for node `node_name` until a component fails fatally (it retries API
/// errors forever, so in practice until the task is dropped or `violations` is closed and the
/// policy watch ends). Spawns the policy watch, the violation writer and, when
/// `opts.workload_registry` is set, the Pod watch.
pub async fn run(
    client: kube::Client,
    node_name: String,
    engine: Arc<dyn PolicyEngine>,
    violations: tokio::sync::mpsc::Receiver<ViolationEvent>,
    opts: ControllerOptions,
) -> anyhow::Result<()> {
    if node_name.is_empty() {
        anyhow::bail!(
            "node name is empty: pass the Kubernetes node name (in a DaemonSet, set NODE_NAME from \
             the downward API field spec.nodeName)"
        );
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
    let pods = match opts.workload_registry.clone() {
        Some(registry) => {
            let root = match opts.cgroup_root.clone() {
                Some(r) => r,
                None => node_identity::find_cgroup2_mount_on_host()?,
            };
            Some(tokio::spawn(pod_watch::run(
                client.clone(),
                node_name.clone(),
                root,
                registry,
                opts.stats.clone(),
            )))
        }
        None => None,
    };
    let res = tokio::select! {
        r = policies => r.map_err(anyhow::Error::from).and_then(|r| r),
        r = writer => r.map_err(anyhow::Error::from).and_then(|r| r),
        r = async {
            match pods {
                Some(p) => p.await.map_err(anyhow::Error::from).and_then(|r| r),
                None => std::future::pending().await,
            }
        } => r,
    };
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn api_calls_time_out_with_a_clear_error() {
        let hang = std::future::pending::<Result<(), kube::Error>>();
        let err = timed_with(Duration::from_millis(20), hang)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no answer from the API server"),
            "{err}"
        );
        let quick = async { Ok::<_, kube::Error>(7) };
        assert_eq!(
            timed_with(Duration::from_millis(20), quick).await.unwrap(),
            7
        );
    }

    #[tokio::test]
    async fn connect_explains_a_bad_kubeconfig() {
        let missing = std::path::Path::new("/nonexistent/bulwark/kubeconfig");
        let Err(err) = connect(Some(missing)).await else {
            panic!("a missing kubeconfig must fail")
        };
        let err = err.to_string();
        assert!(err.contains("/nonexistent/bulwark/kubeconfig"), "{err}");
        let dir = std::env::temp_dir().join(format!("bulwark-kc-{}", std::process::id()));
        std::fs::write(
            &dir,
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
        )
        .unwrap();
        let Err(err) = connect(Some(&dir)).await else {
            panic!("an empty kubeconfig must fail")
        };
        let err = err.to_string();
        assert!(err.contains("not usable"), "{err}");
        let _ = std::fs::remove_file(dir);
    }

    #[tokio::test]
    async fn run_refuses_an_empty_node_name() {
        struct Nop;
        impl PolicyEngine for Nop {
            fn apply(&self, _: Vec<AnyPolicy>) -> Result<Vec<PolicyLoadResult>, String> {
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
