//! Node identity, the pure part: which cgroup (v2) ids belong to which pod container.
//!
//! [`CgroupIndex::scan`] walks a cgroup v2 tree once and recognises container and pod cgroups
//! by name, for both cgroup drivers and both runtimes:
//!
//! | driver   | runtime    | container cgroup                                                                  |
//! |----------|------------|-----------------------------------------------------------------------------------|
//! | systemd  | containerd | `kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd  | CRI-O      | `.../kubepods-<qos>-pod<uid_>.slice/crio-<id>.scope` (`crio-conmon-<id>.scope` is the monitor, not the container) |
//! | cgroupfs | containerd | `kubepods/<qos>/pod<uid>/<id>`                                                     |
//! | cgroupfs | CRI-O      | `kubepods/<qos>/pod<uid>/crio-<id>`                                               |
//!
//! `<qos>` is `burstable` or `besteffort`; Guaranteed pods sit directly under `kubepods`. The
//! systemd driver writes the pod UID with `_` for `-`. Cgroups nested below a container cgroup
//! (e.g. crun's `container` sub-cgroup) belong to the same container. The cgroup id the kernel
//! reports (`bpf_get_current_cgroup_id`) is the inode number of the cgroup directory.
//!
//! [`workloads_for_pod`] then maps a Pod's container statuses onto the index, and [`diff`]
//! turns two mappings into registry upserts and removals. The Pod watch lives in
//! [`crate::pod_watch`].

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use crate::Workload;

/// A container cgroup found in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerCgroup {
    /// Pod UID in its canonical form (with `-`), from the enclosing pod cgroup.
    pub pod_uid: Option<String>,
    /// QoS class from the path: `Guaranteed`, `Burstable` or `BestEffort`.
    pub qos: Option<String>,
    /// The container cgroup and every cgroup below it: (path, cgroup id).
    pub cgroups: Vec<(PathBuf, u64)>,
}

/// Container ID -> its cgroups.
#[derive(Clone, Debug, Default)]
pub struct CgroupIndex {
    pub containers: BTreeMap<String, ContainerCgroup>,
}

/// Deepest directory level examined below the root (kubepods trees are 3-5 deep; nested kubelets
/// add a few).
const MAX_DEPTH: usize = 10;

/// A container ID from a cgroup directory name: `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `docker-<id>.scope`, `crio-<id>`, or a bare 64-hex id. `crio-conmon-*` is not a container.
pub fn container_id_from_name(name: &str) -> Option<String> {
    let base = name.strip_suffix(".scope").unwrap_or(name);
    let id = if let Some(rest) = base.strip_prefix("cri-containerd-") {
        rest
    } else if base.starts_with("crio-conmon-") {
        return None;
    } else if let Some(rest) = base.strip_prefix("crio-") {
        rest
    } else if let Some(rest) = base.strip_prefix("docker-") {
        rest
    } else if name == base {
        base
    } else {
        return None;
    };
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// Pod UID and QoS from a pod cgroup directory name: `kubepods-burstable-pod<uid_>.slice`,
/// `kubepods-pod<uid_>.slice`, or `pod<uid>` (cgroupfs; QoS comes from the parent then).
pub fn pod_from_name(name: &str, parent: Option<&str>) -> Option<(String, String)> {
    let (raw, qos) = if let Some(s) = name.strip_suffix(".slice") {
        let rest = s.strip_prefix("kubepods-")?;
        if let Some(u) = rest.strip_prefix("burstable-pod") {
            (u, "Burstable")
        } else if let Some(u) = rest.strip_prefix("besteffort-pod") {
            (u, "BestEffort")
        } else if let Some(u) = rest.strip_prefix("pod") {
            (u, "Guaranteed")
        } else {
            return None;
        }
    } else {
        let u = name.strip_prefix("pod")?;
        let qos = match parent {
            Some("burstable") => "Burstable",
            Some("besteffort") => "BestEffort",
            _ => "Guaranteed",
        };
        (u, qos)
    };
    let uid = raw.replace('_', "-");
    let ok = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    ok.then(|| (uid.to_ascii_lowercase(), qos.to_string()))
}

impl CgroupIndex {
    /// Walk the cgroup v2 tree under `root`. Unreadable directories are skipped (a container
    /// may exit while we walk); only a missing root is an error.
    pub fn scan(root: &Path) -> std::io::Result<CgroupIndex> {
        let meta = std::fs::metadata(root)?;
        if !meta.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} is not a directory; pass the cgroup v2 mount (e.g. /sys/fs/cgroup)",
                root.display()
            )));
        }
        let mut idx = CgroupIndex::default();
        walk(root, 0, None, None, &mut idx);
        Ok(idx)
    }
}

/// The pod context inherited from ancestors: (uid, qos) and the current container id.
fn walk(
    dir: &Path,
    depth: usize,
    pod: Option<&(String, String)>,
    container: Option<&str>,
    idx: &mut CgroupIndex,
) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let parent_name = dir.file_name().and_then(|n| n.to_str());
    for ent in rd.flatten() {
        let Ok(ft) = ent.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let path = ent.path();
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(md) = ent.metadata() else { continue };
        let ino = md.ino();
        if let Some(cid) = container {
            // Below a container cgroup: same container.
            if let Some(c) = idx.containers.get_mut(cid) {
                c.cgroups.push((path.clone(), ino));
            }
            walk(&path, depth + 1, pod, Some(cid), idx);
            continue;
        }
        if let Some(p) = pod_from_name(name, parent_name) {
            walk(&path, depth + 1, Some(&p), None, idx);
            continue;
        }
        if let Some(cid) = container_id_from_name(name) {
            // A bare 64-hex directory outside any pod cgroup is not a pod container.
            let typed = name != cid;
            if pod.is_some() || typed {
                idx.containers.insert(
                    cid.clone(),
                    ContainerCgroup {
                        pod_uid: pod.map(|p| p.0.clone()),
                        qos: pod.map(|p| p.1.clone()),
                        cgroups: vec![(path.clone(), ino)],
                    },
                );
                walk(&path, depth + 1, pod, Some(&cid), idx);
                continue;
            }
        }
        walk(&path, depth + 1, pod, None, idx);
    }
}

/// Strip the runtime prefix from a status `containerID` (`containerd://<id>`, `cri-o://<id>`).
pub fn strip_runtime(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map(|(_, id)| id)
        .unwrap_or(container_id)
}

/// Every (cgroup id, workload) of the running containers of `pod` found in `idx`. Containers
/// whose cgroup is in the index but under a different pod UID are skipped (stale status).
pub fn workloads_for_pod(pod: &Pod, idx: &CgroupIndex) -> Vec<(u64, Workload)> {
    let mut out = Vec::new();
    let Some(status) = pod.status.as_ref() else {
        return out;
    };
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod
        .metadata
        .uid
        .clone()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .chain(status.ephemeral_container_statuses.iter().flatten());
    for cs in statuses {
        let Some(cid) = cs.container_id.as_deref() else {
            continue;
        };
        let cid = strip_runtime(cid).to_ascii_lowercase();
        let Some(cg) = idx.containers.get(&cid) else {
            continue;
        };
        if cg.pod_uid.as_deref().is_some_and(|u| u != uid) {
            continue;
        }
        for (_, id) in &cg.cgroups {
            out.push((
                *id,
                Workload {
                    pod: bulwark_events::Pod {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        container: cs.name.clone(),
                        labels: labels.clone(),
                    },
                    pod_uid: uid.clone(),
                    container_id: cid.clone(),
                },
            ));
        }
    }
    out
}

/// The full mapping for a set of pods.
pub fn mapping(pods: &[Pod], idx: &CgroupIndex) -> BTreeMap<u64, Workload> {
    pods.iter()
        .flat_map(|p| workloads_for_pod(p, idx))
        .collect()
}

/// Registry calls that take `old` to `new`: (upserts, removals).
pub fn diff(
    old: &BTreeMap<u64, Workload>,
    new: &BTreeMap<u64, Workload>,
) -> (Vec<(u64, Workload)>, Vec<u64>) {
    let upserts = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let removals = old
        .keys()
        .filter(|k| !new.contains_key(k))
        .copied()
        .collect();
    (upserts, removals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const UID: &str = "8f1c2a7e-3b4d-4e5f-9a0b-1c2d3e4f5a6b";
    const CID_APP: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const CID_SIDE: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("bulwark-cg-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn mk(&self, rel: &str) -> u64 {
            let p = self.0.join(rel);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::metadata(&p).unwrap().ino()
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pod(runtime: &str, qos: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "api-7d9", "namespace": "payments", "uid": UID,
                          "labels": {"app": "api", "tier": "backend"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "x"}, {"name": "sidecar", "image": "y"}],
                      "initContainers": [{"name": "init", "image": "z"}]},
            "status": {"phase": "Running", "qosClass": qos,
              "initContainerStatuses": [{"name": "init", "image": "z", "imageID": "", "ready": false, "restartCount": 0,
                  "containerID": format!("{runtime}://{}", "3".repeat(64)),
                  "state": {"terminated": {"exitCode": 0}}}],
              "containerStatuses": [
                {"name": "app", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
                 "containerID": format!("{runtime}://{CID_APP}")},
                {"name": "sidecar", "image": "y", "imageID": "", "ready": true, "restartCount": 0,
                 "containerID": format!("{runtime}://{CID_SIDE}")},
                {"name": "pending", "image": "y", "imageID": "", "ready": false, "restartCount": 0}
              ]}
        }))
        .unwrap()
    }

    fn by_container(m: &[(u64, Workload)]) -> HashMap<String, Vec<u64>> {
        let mut out: HashMap<String, Vec<u64>> = HashMap::new();
        for (id, w) in m {
            out.entry(w.pod.container.clone()).or_default().push(*id);
        }
        out
    }

    /// (driver, runtime, qos) -> (pod dir, container dir for id)
    fn layout(driver: &str, runtime: &str, qos: &str, cid: &str) -> String {
        let u_ = UID.replace('-', "_");
        match driver {
            "systemd" => {
                let pod = match qos {
                    "Guaranteed" => format!("kubepods.slice/kubepods-pod{u_}.slice"),
                    "Burstable" => format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u_}.slice"),
                    _ => format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u_}.slice"),
                };
                let c = if runtime == "containerd" {
                    format!("cri-containerd-{cid}.scope")
                } else {
                    format!("crio-{cid}.scope")
                };
                format!("{pod}/{c}")
            }
            _ => {
                let pod = match qos {
                    "Guaranteed" => format!("kubepods/pod{UID}"),
                    "Burstable" => format!("kubepods/burstable/pod{UID}"),
                    _ => format!("kubepods/besteffort/pod{UID}"),
                };
                let c = if runtime == "containerd" {
                    cid.to_string()
                } else {
                    format!("crio-{cid}")
                };
                format!("{pod}/{c}")
            }
        }
    }

    #[test]
    fn every_driver_runtime_and_qos_maps_containers_to_cgroup_ids() {
        for driver in ["systemd", "cgroupfs"] {
            for (runtime, prefix) in [("containerd", "containerd"), ("crio", "cri-o")] {
                for qos in ["Guaranteed", "Burstable", "BestEffort"] {
                    let tag = format!("{driver}-{runtime}-{qos}");
                    let t = TempDir::new(&tag);
                    let app = t.mk(&layout(driver, runtime, qos, CID_APP));
                    let side = t.mk(&layout(driver, runtime, qos, CID_SIDE));
                    // crun's nested cgroup belongs to the container too.
                    let nested = t.mk(&format!(
                        "{}/container",
                        layout(driver, runtime, qos, CID_APP)
                    ));
                    if runtime == "crio" && driver == "systemd" {
                        // The conmon monitor is not a container.
                        let pod_dir = layout(driver, runtime, qos, CID_APP);
                        let pod_dir = pod_dir.rsplit_once('/').unwrap().0;
                        t.mk(&format!("{pod_dir}/crio-conmon-{CID_APP}.scope"));
                    }
                    // Unrelated system cgroups.
                    t.mk("system.slice/containerd.service");
                    let idx = CgroupIndex::scan(&t.0).unwrap();
                    let cg = &idx.containers[CID_APP];
                    assert_eq!(cg.pod_uid.as_deref(), Some(UID), "{tag}");
                    assert_eq!(cg.qos.as_deref(), Some(qos), "{tag}");
                    let m = workloads_for_pod(&pod(prefix, qos), &idx);
                    let bc = by_container(&m);
                    let mut app_ids = bc["app"].clone();
                    app_ids.sort();
                    let mut want = vec![app, nested];
                    want.sort();
                    assert_eq!(app_ids, want, "{tag}");
                    assert_eq!(bc["sidecar"], vec![side], "{tag}");
                    assert!(!bc.contains_key("pending"), "{tag}: no container id yet");
                    assert!(!bc.contains_key("init"), "{tag}: exited init has no cgroup");
                    let w = &m[0].1;
                    assert_eq!(w.pod.namespace, "payments");
                    assert_eq!(w.pod.name, "api-7d9");
                    assert_eq!(w.pod_uid, UID);
                    assert_eq!(w.pod.labels["app"], "api");
                }
            }
        }
    }

    #[test]
    fn container_of_another_pod_uid_is_not_attributed() {
        let t = TempDir::new("stale");
        let other = "00000000-0000-0000-0000-000000000000";
        t.mk(&format!("kubepods/burstable/pod{other}/{CID_APP}"));
        let idx = CgroupIndex::scan(&t.0).unwrap();
        assert!(workloads_for_pod(&pod("containerd", "Burstable"), &idx).is_empty());
    }

    #[test]
    fn bare_hex_outside_a_pod_is_ignored_and_missing_root_is_an_error() {
        let t = TempDir::new("bare");
        t.mk(&format!("system.slice/{CID_APP}"));
        let idx = CgroupIndex::scan(&t.0).unwrap();
        assert!(idx.containers.is_empty());
        let err = CgroupIndex::scan(&t.0.join("nope")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn name_parsers_accept_and_reject() {
        assert_eq!(
            container_id_from_name(&format!("cri-containerd-{CID_APP}.scope")).as_deref(),
            Some(CID_APP)
        );
        assert_eq!(
            container_id_from_name(&format!("crio-{CID_APP}.scope")).as_deref(),
            Some(CID_APP)
        );
        assert_eq!(
            container_id_from_name(&format!("crio-{CID_APP}")).as_deref(),
            Some(CID_APP)
        );
        assert_eq!(container_id_from_name(CID_APP).as_deref(), Some(CID_APP));
        assert_eq!(
            container_id_from_name(&format!("crio-conmon-{CID_APP}.scope")),
            None
        );
        assert_eq!(container_id_from_name("cri-containerd-abc.scope"), None);
        assert_eq!(container_id_from_name("session-1.scope"), None);
        let u_ = UID.replace('-', "_");
        assert_eq!(
            pod_from_name(&format!("kubepods-besteffort-pod{u_}.slice"), None),
            Some((UID.into(), "BestEffort".into()))
        );
        assert_eq!(
            pod_from_name(&format!("pod{UID}"), Some("burstable")),
            Some((UID.into(), "Burstable".into()))
        );
        assert_eq!(pod_from_name("kubepods-burstable.slice", None), None);
        assert_eq!(pod_from_name("podman", None), None);
    }

    #[test]
    fn diff_yields_upserts_and_removals() {
        let w = |c: &str| Workload {
            pod: bulwark_events::Pod {
                container: c.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let old: BTreeMap<u64, Workload> = [(1, w("a")), (2, w("b"))].into();
        let new: BTreeMap<u64, Workload> = [(2, w("b2")), (3, w("c"))].into();
        let (up, rm) = diff(&old, &new);
        assert_eq!(up, vec![(2, w("b2")), (3, w("c"))]);
        assert_eq!(rm, vec![1]);
        let (up, rm) = diff(&new, &new);
        assert!(up.is_empty() && rm.is_empty());
    }
}
