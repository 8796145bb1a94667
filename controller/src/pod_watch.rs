//! The watch of this node's Pods (field selector `spec.nodeName=<node>`), feeding the engine's
//! [`WorkloadRegistry`]. All decisions are in [`crate::node_identity`] (pure, unit-tested with
//! fixture Pods and cgroup trees); this module only drives them: on every Pod change, and every
//! few seconds (containers get their cgroup after the Pod status names them), it rescans the
//! cgroup tree, recomputes the mapping and applies the difference to the registry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::node_identity::{self, CgroupIndex};
use crate::stats::Stats;
use crate::watch_store::WatchStore;
use crate::{Workload, WorkloadRegistry};

/// Field selector for the Pods scheduled on `node`.
pub fn node_field_selector(node: &str) -> String {
    format!("spec.nodeName={node}")
}

/// Run forever: keep `registry` equal to the mapping of this node's Pods onto `cgroup_root`.
pub async fn run(
    client: Client,
    node: String,
    cgroup_root: PathBuf,
    registry: Arc<dyn WorkloadRegistry>,
    stats: Arc<Stats>,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::all(client);
    let cfg = watcher::Config::default().fields(&node_field_selector(&node));
    let notify = Arc::new(Notify::new());
    let store = WatchStore::spawn(api, cfg, notify.clone(), format!("Pods on node {node}"));
    let mut next_audit = Instant::now() + Duration::from_secs(300);
    let mut current: BTreeMap<u64, Workload> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        if Instant::now() >= next_audit {
            next_audit = Instant::now() + Duration::from_secs(300);
            if let Ok(true) = store.audit().await {
                log::warn!("the Pod watch was out of sync with the API server; re-listed");
            }
        }
        let pods: Vec<Pod> = store.state().iter().map(|p| (**p).clone()).collect();
        let root = cgroup_root.clone();
        let scanned = tokio::task::spawn_blocking(move || CgroupIndex::scan(&root)).await?;
        let idx = match scanned {
            Ok(i) => i,
            Err(e) => {
                log::warn!(
                    "cannot scan the cgroup tree at {}: {e}",
                    cgroup_root.display()
                );
                continue;
            }
        };
        let next = node_identity::mapping(&pods, &idx);
        let (upserts, removals) = node_identity::diff(&current, &next);
        for (id, w) in upserts {
            registry.upsert(id, w);
        }
        for id in removals {
            registry.remove(id);
        }
        stats.workloads.store(next.len() as u64, Ordering::Relaxed);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_pods_of_this_node() {
        assert_eq!(node_field_selector("node-a"), "spec.nodeName=node-a");
    }
}
