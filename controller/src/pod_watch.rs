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

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::Notify;

use crate::node_identity::{self, CgroupIndex};
use crate::stats::Stats;
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
    let writer: Writer<Pod> = Writer::default();
    let store = writer.as_reader();
    let notify = Arc::new(Notify::new());
    let n2 = notify.clone();
    tokio::spawn(async move {
        let stream = reflector::reflector(writer, watcher(api, cfg)).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut last_err: Option<Instant> = None;
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => n2.notify_one(),
                Err(e) => {
                    if last_err.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        log::warn!("watch of Pods on this node failed (retrying with backoff): {e}; the daemon's ServiceAccount needs list/watch on pods");
                        last_err = Some(Instant::now());
                    }
                }
            }
        }
    });
    let mut current: BTreeMap<u64, Workload> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
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
