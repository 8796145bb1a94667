//! The workload registry: cgroup id -> Kubernetes-style identity (namespace, pod, container,
//! labels) and the namespace id the kernel matches on. Standalone, it is fed from the
//! `--workloads` YAML file; the Kubernetes side feeds the same registry (add/remove by cgroup
//! id) from Pods. Also resolves cgroup paths below the cgroup v2 mount (found by
//! [`crate::engine::host::cgroup2_mount`]) to ids (the inode number of the cgroup directory,
//! which is what `bpf_get_current_cgroup_id` returns).

use bulwark_events::Pod;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of the workloads file.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// cgroup path, relative to the cgroup v2 mount (a leading `/` is allowed) or absolute
    /// (starting with the mount point).
    pub cgroup: String,
    pub namespace: String,
    pub pod: String,
    #[serde(default)]
    pub container: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadsFile {
    #[serde(default)]
    workloads: Vec<WorkloadSpec>,
}

/// Parses a workloads file. Errors name the file and say what shape is expected.
pub fn parse_workloads(text: &str, origin: &Path) -> anyhow::Result<Vec<WorkloadSpec>> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let file: WorkloadsFile = serde_saphyr::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a valid workloads file: {e}\n  expected:\n  workloads:\n  - cgroup: /my-pod   \
             # relative to the cgroup v2 mount\n    namespace: production\n    pod: web-1\n    \
             container: app\n    labels: {{app: web}}",
            origin.display()
        )
    })?;
    for (i, w) in file.workloads.iter().enumerate() {
        if w.cgroup.trim().is_empty() || w.namespace.trim().is_empty() || w.pod.trim().is_empty() {
            anyhow::bail!(
                "{}: workloads[{i}]: `cgroup`, `namespace` and `pod` must not be empty",
                origin.display()
            );
        }
    }
    Ok(file.workloads)
}

/// Directory of a cgroup path as written in the workloads file.
pub fn cgroup_dir(mount: &Path, cgroup: &str) -> PathBuf {
    let p = Path::new(cgroup);
    if p.starts_with(mount) {
        p.to_path_buf()
    } else {
        mount.join(cgroup.trim_start_matches('/'))
    }
}

/// cgroup id of a cgroup directory (its inode number).
pub fn cgroup_id(dir: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(dir)?.ino())
}

/// cgroup id of a running process (from `/proc/PID/cgroup`, the v2 `0::` line).
pub fn process_cgroup_id(mount: &Path, proc_root: &Path, pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    cgroup_id(&cgroup_dir(mount, rel)).ok()
}

/// A registered workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub pod: Pod,
    /// Interned id of `pod.namespace` (shared with the compiler's namespace table).
    pub namespace_id: u32,
}

/// What the kernel's workload map must be told after a registry change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkloadChange {
    Set { cgroup_id: u64, namespace_id: u32 },
    Remove { cgroup_id: u64 },
}

/// cgroup id -> workload.
#[derive(Default)]
pub struct WorkloadRegistry {
    by_cgroup: HashMap<u64, Workload>,
    /// Entries that came from the workloads file (a file sync removes only these).
    from_file: HashSet<u64>,
}

impl WorkloadRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the workload of a cgroup; returns the kernel update if it changed.
    pub fn add(&mut self, cgroup_id: u64, workload: Workload) -> Option<WorkloadChange> {
        let ns = workload.namespace_id;
        let old = self.by_cgroup.insert(cgroup_id, workload);
        (old.map(|o| o.namespace_id) != Some(ns)).then_some(WorkloadChange::Set {
            cgroup_id,
            namespace_id: ns,
        })
    }

    /// Forgets a cgroup.
    pub fn remove(&mut self, cgroup_id: u64) -> Option<Workload> {
        self.from_file.remove(&cgroup_id);
        self.by_cgroup.remove(&cgroup_id)
    }

    pub fn get(&self, cgroup_id: u64) -> Option<&Workload> {
        self.by_cgroup.get(&cgroup_id)
    }

    /// Namespace id of a cgroup, 0 (host) when unregistered.
    pub fn namespace_id(&self, cgroup_id: u64) -> u32 {
        self.get(cgroup_id).map_or(0, |w| w.namespace_id)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_cgroup.len()
    }

    /// Makes the file-owned entries exactly `resolved`; returns the kernel updates.
    pub fn sync_file(
        &mut self,
        resolved: Vec<(u64, Pod)>,
        intern: &mut dyn FnMut(&str) -> u32,
    ) -> Vec<WorkloadChange> {
        let mut changes = Vec::new();
        let keep: HashSet<u64> = resolved.iter().map(|(id, _)| *id).collect();
        let stale: Vec<u64> = self.from_file.difference(&keep).copied().collect();
        for id in stale {
            self.remove(id);
            changes.push(WorkloadChange::Remove { cgroup_id: id });
        }
        for (id, pod) in resolved {
            let namespace_id = intern(&pod.namespace);
            changes.extend(self.add(id, Workload { pod, namespace_id }));
            self.from_file.insert(id);
        }
        changes
    }
}

/// Result of resolving a workloads file against the cgroup filesystem.
#[derive(Debug, Default)]
pub struct Resolved {
    pub entries: Vec<(u64, Pod)>,
    /// Entries whose cgroup directory does not exist (yet): retried later.
    pub missing: Vec<String>,
}

/// Resolves every entry's cgroup to its id.
pub fn resolve(specs: &[WorkloadSpec], mount: &Path) -> Resolved {
    let mut out = Resolved::default();
    for w in specs {
        match cgroup_id(&cgroup_dir(mount, &w.cgroup)) {
            Ok(id) => out.entries.push((
                id,
                Pod {
                    namespace: w.namespace.clone(),
                    name: w.pod.clone(),
                    container: w.container.clone(),
                    labels: w.labels.clone(),
                },
            )),
            Err(e) => out.missing.push(format!(
                "workload {}/{}: cgroup {} ({}): {e}; it is retried every second",
                w.namespace,
                w.pod,
                w.cgroup,
                cgroup_dir(mount, &w.cgroup).display()
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "workloads:\n- cgroup: /bulwark-e2e-1/pod-a   # comment\n  namespace: production\n  pod: web-1\n  container: app\n  labels: {app: web}\n- cgroup: other\n  namespace: dev\n  pod: x\n";

    #[test]
    fn parses_the_documented_shape_and_rejects_bad_files() {
        let w = parse_workloads(FILE, Path::new("w.yaml")).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].cgroup, "/bulwark-e2e-1/pod-a");
        assert_eq!(w[0].labels.get("app").map(String::as_str), Some("web"));
        assert_eq!(w[1].container, "");
        assert!(parse_workloads("", Path::new("w")).unwrap().is_empty());
        let err = parse_workloads(
            "workloads:\n- cgroup: /a\n  namespace: n\n  podd: x\n",
            Path::new("w.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("w.yaml") && err.contains("expected"), "{err}");
        let err = parse_workloads(
            "workloads:\n- cgroup: /a\n  namespace: ''\n  pod: x\n",
            Path::new("w"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("must not be empty"), "{err}");
        assert!(parse_workloads("[1, 2", Path::new("w")).is_err());
    }

    #[test]
    fn cgroup_paths_resolve_relative_or_absolute() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(cgroup_dir(m, "/a/b"), m.join("a/b"));
        assert_eq!(cgroup_dir(m, "a/b"), m.join("a/b"));
        assert_eq!(cgroup_dir(m, "/sys/fs/cgroup/unified/a"), m.join("a"));
    }

    #[test]
    fn resolves_cgroup_ids_on_this_machine() {
        let mount = crate::engine::host::cgroup2_mount().expect("cgroup v2 mount");
        let specs = parse_workloads(
            "workloads:\n- {cgroup: /, namespace: root-ns, pod: root}\n- {cgroup: /no-such-cgroup-xyz, namespace: n, pod: p}\n",
            Path::new("w"),
        )
        .unwrap();
        let r = resolve(&specs, &mount);
        assert_eq!(r.entries.len(), 1);
        assert_eq!(r.entries[0].0, std::fs::metadata(&mount).unwrap().ino());
        assert_eq!(r.missing.len(), 1);
        assert!(r.missing[0].contains("no-such-cgroup-xyz"));
        // Our own process resolves to the inode of its cgroup directory.
        let me = std::process::id();
        let id = process_cgroup_id(&mount, Path::new("/proc"), me).expect("own cgroup id");
        let rel = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let rel = rel
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        assert_eq!(id, cgroup_id(&cgroup_dir(&mount, &rel)).unwrap());
        assert_eq!(
            process_cgroup_id(&mount, Path::new("/proc"), u32::MAX),
            None
        );
    }

    #[test]
    fn registry_add_remove_and_file_sync() {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut intern = |n: &str| {
            let next = ids.len() as u32 + 1;
            *ids.entry(n.to_string()).or_insert(next)
        };
        let pod = |ns: &str, name: &str| Pod {
            namespace: ns.into(),
            name: name.into(),
            ..Default::default()
        };
        let mut r = WorkloadRegistry::new();
        // A Kubernetes-fed entry that file syncs must not touch.
        let k8s_ns = intern("kube");
        r.add(
            99,
            Workload {
                pod: pod("kube", "k"),
                namespace_id: k8s_ns,
            },
        );
        let ch = r.sync_file(
            vec![(1, pod("prod", "a")), (2, pod("dev", "b"))],
            &mut intern,
        );
        assert_eq!(
            ch,
            vec![
                WorkloadChange::Set {
                    cgroup_id: 1,
                    namespace_id: 2
                },
                WorkloadChange::Set {
                    cgroup_id: 2,
                    namespace_id: 3
                }
            ]
        );
        assert_eq!(r.namespace_id(1), 2);
        assert_eq!(r.namespace_id(42), 0);
        // Same content again: no kernel writes. Drop 2, move 1 to dev.
        assert!(r
            .sync_file(
                vec![(1, pod("prod", "a")), (2, pod("dev", "b"))],
                &mut intern
            )
            .is_empty());
        let ch = r.sync_file(vec![(1, pod("dev", "a"))], &mut intern);
        assert_eq!(
            ch,
            vec![
                WorkloadChange::Remove { cgroup_id: 2 },
                WorkloadChange::Set {
                    cgroup_id: 1,
                    namespace_id: 3
                }
            ]
        );
        assert_eq!(r.get(99).unwrap().pod.name, "k");
        assert_eq!(r.len(), 2);
        assert!(r.remove(99).is_some());
        assert!(r.remove(99).is_none());
    }
}
