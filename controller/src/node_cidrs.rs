//! This node's pod CIDRs as cluster CIDRs: the Node object's `spec.podCIDRs` (or the older
//! `spec.podCIDR`) added to the configured `--cluster-cidrs` ([`merge`], pure), so a peer in
//! a pod range of this node is `scope: cluster` even outside the documented defaults.
//!
//! Followed with a watch on this one Node (field selector `metadata.name`), not a timer: the
//! pod CIDRs are set once the node controller allocates them, usually just after the node
//! registers and so after the daemon started; a watch applies that at once, while the object's
//! other updates (status every few minutes) cost one event each and no API call. The
//! [`WatchStore`] re-lists when the server lost its data. A Node that does not exist (yet), or
//! that has no pod CIDR, leaves the configured ranges alone. The object is read untyped, only
//! its `spec` as a `NodeSpec`, so a test API server without core/v1 can serve a stand-in
//! (`ControllerOptions::node_resource`).

use std::time::{Duration, Instant};

use bulwark_conns::ClusterCidrs;
use bulwark_policy::values::parse_cidr;
use k8s_openapi::api::core::v1::NodeSpec;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher;
use kube::{Api, Client};
use std::sync::Arc;
use tokio::sync::Notify;

use crate::in_force::{CIDR_CONFIGURED, CIDR_NODE};
use crate::options::ConnConfig;
use crate::stats::Stats;
use crate::watch_store::WatchStore;

/// The cluster CIDRs in force: `configured` plus the Node's pod CIDRs, and the pod CIDRs that
/// could not be read (reported, left out).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    pub cidrs: ClusterCidrs,
    /// The Node's pod CIDRs as it lists them.
    pub pod_cidrs: Vec<String>,
    pub unreadable: Vec<String>,
}

/// The pod CIDRs a Node's spec lists: `podCIDRs`, else `podCIDR`.
pub fn pod_cidrs(spec: &NodeSpec) -> Vec<String> {
    match &spec.pod_cidrs {
        Some(list) if !list.is_empty() => list.clone(),
        _ => spec.pod_cidr.iter().cloned().collect(),
    }
}

/// The spec of a Node read untyped (`None` when it has none or it is not a Node's).
pub fn node_spec(obj: &DynamicObject) -> Option<NodeSpec> {
    serde_json::from_value(obj.data.get("spec")?.clone()).ok()
}

/// `configured` with the pod CIDRs of the Node's `spec` (if any) added.
pub fn merge(configured: &ClusterCidrs, spec: Option<&NodeSpec>) -> Merged {
    let pod = spec.map(pod_cidrs).unwrap_or_default();
    let mut cidrs = configured.clone();
    let mut unreadable = Vec::new();
    for text in &pod {
        match parse_cidr(text) {
            Ok(c) => cidrs.add(c.network),
            Err(_) => unreadable.push(text.clone()),
        }
    }
    Merged {
        cidrs,
        pod_cidrs: pod,
        unreadable,
    }
}

/// Each range in force with where it comes from (a configured range wins when both name it).
pub fn sources(configured: &ClusterCidrs, merged: &ClusterCidrs) -> Vec<(String, &'static str)> {
    merged
        .cidrs()
        .iter()
        .map(|c| {
            let source = if configured.cidrs().contains(c) {
                CIDR_CONFIGURED
            } else {
                CIDR_NODE
            };
            (c.to_string(), source)
        })
        .collect()
}

/// Field selector for the one Node named `node`.
pub fn node_field_selector(node: &str) -> String {
    format!("metadata.name={node}")
}

/// Run forever: keep the observation's cluster CIDRs equal to [`merge`] of the configured ones
/// and this node's Node object.
pub async fn run(
    client: Client,
    node: String,
    cfg: ConnConfig,
    resource: ApiResource,
    stats: Arc<Stats>,
    resync: Duration,
) -> crate::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let notify = Arc::new(Notify::new());
    let store = WatchStore::spawn(
        api,
        watcher::Config::default().fields(&node_field_selector(&node)),
        notify.clone(),
        format!("Node {node} (its pod CIDRs)"),
    );
    let mut in_force: Option<ClusterCidrs> = None;
    let mut next_audit = Instant::now() + resync;
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(resync) => {}
        }
        if Instant::now() >= next_audit {
            next_audit = Instant::now() + resync;
            if let Ok(true) = store.audit().await {
                log::warn!(
                    "the watch of Node {node} was out of sync with the API server; re-listed"
                );
            }
        }
        if !store.is_ready() {
            continue;
        }
        let objects = store.state();
        let spec = objects.first().and_then(|n| node_spec(n));
        let merged = merge(&cfg.cluster_cidrs, spec.as_ref());
        if in_force.as_ref() == Some(&merged.cidrs) {
            continue;
        }
        for bad in &merged.unreadable {
            log::warn!("Node {node} lists pod CIDR `{bad}`, which is not a CIDR; left out of the cluster CIDRs");
        }
        if objects.is_empty() {
            log::info!("no Node object named {node}: the cluster CIDRs are the configured ones ({}); check --node-name", merged.cidrs);
        } else {
            log::info!(
                "cluster CIDRs in force: {} (pod CIDRs of Node {node}: {})",
                merged.cidrs,
                if merged.pod_cidrs.is_empty() {
                    "none".to_string()
                } else {
                    merged.pod_cidrs.join(",")
                }
            );
        }
        stats
            .in_force
            .set_cluster_cidrs(sources(&cfg.cluster_cidrs, &merged.cidrs));
        cfg.observation.set_cluster_cidrs(merged.cidrs.clone());
        in_force = Some(merged.cidrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_events::Scope;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node(pod_cidrs: Option<&[&str]>, pod_cidr: Option<&str>) -> NodeSpec {
        NodeSpec {
            pod_cidrs: pod_cidrs.map(|l| l.iter().map(|s| s.to_string()).collect()),
            pod_cidr: pod_cidr.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn pod_cidrs_are_added_to_the_configured_ranges() {
        let configured = ClusterCidrs::parse("10.0.0.0/8,fd00::/8").unwrap();
        // Dual stack: both families; one inside a configured range adds nothing.
        let m = merge(
            &configured,
            Some(&node(
                Some(&["10.244.1.0/24", "203.0.113.0/24", "2001:db8:1::/64"]),
                Some("10.244.1.0/24"),
            )),
        );
        assert_eq!(
            m.cidrs.to_string(),
            "10.0.0.0/8,fd00::/8,203.0.113.0/24,2001:db8:1::/64"
        );
        assert_eq!(
            m.cidrs.scope("203.0.113.9".parse().unwrap()),
            Scope::Cluster
        );
        assert_eq!(
            m.cidrs.scope("2001:db8:1::5".parse().unwrap()),
            Scope::Cluster
        );
        assert_eq!(
            m.cidrs.scope("203.0.114.1".parse().unwrap()),
            Scope::Internet
        );
        assert!(m.unreadable.is_empty());
        assert_eq!(
            sources(&configured, &m.cidrs),
            [
                ("10.0.0.0/8".to_string(), CIDR_CONFIGURED),
                ("fd00::/8".to_string(), CIDR_CONFIGURED),
                ("203.0.113.0/24".to_string(), CIDR_NODE),
                ("2001:db8:1::/64".to_string(), CIDR_NODE),
            ]
        );
    }

    #[test]
    fn the_single_pod_cidr_is_the_fallback_and_no_node_changes_nothing() {
        let configured = ClusterCidrs::empty();
        let m = merge(&configured, Some(&node(None, Some("198.51.100.0/24"))));
        assert_eq!(m.cidrs.to_string(), "198.51.100.0/24");
        assert_eq!(m.pod_cidrs, ["198.51.100.0/24"]);
        let m = merge(&configured, Some(&node(Some(&[]), Some("198.51.100.0/24"))));
        assert_eq!(m.cidrs.to_string(), "198.51.100.0/24");
        assert_eq!(merge(&configured, None).cidrs, configured);
        assert_eq!(
            merge(&configured, Some(&NodeSpec::default())).cidrs,
            configured
        );
        // Read untyped, as the watch does.
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
            "spec": {"podCIDR": "192.0.2.0/24", "podCIDRs": ["192.0.2.0/24"], "taints": []}
        }))
        .unwrap();
        assert_eq!(pod_cidrs(&node_spec(&obj).unwrap()), ["192.0.2.0/24"]);
        let m = merge(
            &configured,
            Some(&node(Some(&["not-a-cidr", "192.0.2.0/24"]), None)),
        );
        assert_eq!(m.cidrs.to_string(), "192.0.2.0/24");
        assert_eq!(m.unreadable, ["not-a-cidr"]);
    }
}
