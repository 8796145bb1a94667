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
) -> crate::Result<()> {
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
        current = sync(&pods, &idx, &current, registry.as_ref());
        stats
            .workloads
            .store(current.len() as u64, Ordering::Relaxed);
    }
}

/// One step: map `pods` onto `idx`, tell `registry` what changed since `current`, return the
/// new mapping.
pub fn sync(
    pods: &[Pod],
    idx: &CgroupIndex,
    current: &BTreeMap<u64, Workload>,
    registry: &dyn WorkloadRegistry,
) -> BTreeMap<u64, Workload> {
    let next = node_identity::mapping(pods, idx);
    let (upserts, removals) = node_identity::diff(current, &next);
    for (id, w) in upserts {
        registry.upsert(id, w);
    }
    for id in removals {
        registry.remove(id);
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::node_identity::ContainerCgroup;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);
    impl WorkloadRegistry for Recorder {
        fn upsert(&self, id: u64, w: Workload) {
            self.0.lock().unwrap().push(format!(
                "+{id} {}/{}/{}",
                w.pod.namespace, w.pod.name, w.pod.container
            ));
        }
        fn remove(&self, id: u64) {
            self.0.lock().unwrap().push(format!("-{id}"));
        }
    }

    fn pod(name: &str, uid: &str, cid: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "web", "uid": uid},
            "status": {"containerStatuses": [{"name": "app", "image": "x", "imageID": "",
                "ready": true, "restartCount": 0, "containerID": format!("containerd://{cid}")}]}
        }))
        .unwrap()
    }

    #[test]
    fn sync_tells_the_registry_only_what_changed() {
        let (c1, c2) = ("a".repeat(64), "b".repeat(64));
        let (u1, u2) = (
            "11111111-1111-1111-1111-111111111111",
            "22222222-2222-2222-2222-222222222222",
        );
        let mut idx = CgroupIndex::default();
        idx.containers.insert(
            c1.clone(),
            ContainerCgroup {
                pod_uid: Some(u1.into()),
                qos: None,
                cgroups: vec![(PathBuf::from("/x"), 10)],
            },
        );
        let reg = Recorder::default();
        let m = sync(
            &[pod("p1", u1, &c1), pod("p2", u2, &c2)],
            &idx,
            &BTreeMap::new(),
            &reg,
        );
        assert_eq!(
            *reg.0.lock().unwrap(),
            vec!["+10 web/p1/app"],
            "p2 has no cgroup yet"
        );
        // p2's container cgroup appears: only it is added.
        idx.containers.insert(
            c2.clone(),
            ContainerCgroup {
                pod_uid: Some(u2.into()),
                qos: None,
                cgroups: vec![(PathBuf::from("/y"), 20)],
            },
        );
        reg.0.lock().unwrap().clear();
        let m = sync(&[pod("p1", u1, &c1), pod("p2", u2, &c2)], &idx, &m, &reg);
        assert_eq!(*reg.0.lock().unwrap(), vec!["+20 web/p2/app"]);
        // p1 is deleted: its cgroup is removed from the registry.
        reg.0.lock().unwrap().clear();
        let m = sync(&[pod("p2", u2, &c2)], &idx, &m, &reg);
        assert_eq!(*reg.0.lock().unwrap(), vec!["-10"]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn selects_pods_of_this_node() {
        assert_eq!(node_field_selector("node-a"), "spec.nodeName=node-a");
    }
}
