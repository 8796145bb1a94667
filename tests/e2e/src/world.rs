//! A test's whole world: the pod/server network namespaces, one or more pods (cgroup + identity),
//! a scratch directory, and the workloads file the daemon reads. Dropping it kills the pods'
//! processes, removes their cgroups, deletes the namespaces and the directory, in that order.

use crate::cgroup::Cgroup;
use crate::netns::NetPair;
use crate::pod::Pod;
use crate::TempDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to build: a tag (names every object) and the pods as (Kubernetes namespace, pod name).
#[derive(Clone, Debug)]
pub struct WorldConfig {
    pub tag: String,
    pub pods: Vec<(String, String)>,
}

/// Everything one test owns. Field order is drop order.
pub struct World {
    /// The pods, in the order of [`WorldConfig::pods`].
    pub pods: Vec<Pod>,
    /// The two network namespaces all pods share.
    pub net: NetPair,
    dir: TempDir,
}

impl World {
    /// Builds a world with one pod, `web`, in Kubernetes namespace `namespace`.
    pub fn single(tag: &str, namespace: &str) -> World {
        World::new(WorldConfig {
            tag: tag.to_string(),
            pods: vec![(namespace.to_string(), "web".to_string())],
        })
    }

    /// Checks the machine ([`crate::preflight`]) and builds the world.
    pub fn new(cfg: WorldConfig) -> World {
        crate::preflight();
        assert!(
            !cfg.tag.is_empty() && cfg.tag.len() <= 20,
            "world tag must be 1..=20 chars"
        );
        let dir = TempDir::new(&cfg.tag);
        // Make the scratch directory usable by any uid (binaries copied into it run from there).
        set_mode(dir.path(), 0o755);
        let net = NetPair::create(&cfg.tag);
        let mut pods = Vec::new();
        for (i, (namespace, name)) in cfg.pods.iter().enumerate() {
            let cgroup = Cgroup::create(&format!(
                "{}-{}-{}-{i}",
                std::process::id(),
                crate::next_id(),
                cfg.tag
            ));
            let pod_dir = dir.join(format!("pod-{i}"));
            std::fs::create_dir_all(&pod_dir).expect("create pod dir");
            let mut labels = BTreeMap::new();
            labels.insert("app".to_string(), name.clone());
            labels.insert("bulwark.dev/e2e".to_string(), cfg.tag.clone());
            pods.push(Pod {
                namespace: namespace.clone(),
                name: name.clone(),
                container: "main".to_string(),
                labels,
                netns: net.pod.clone(),
                cgroup,
                dir: pod_dir,
            });
        }
        World { pods, net, dir }
    }

    /// The first pod.
    pub fn pod(&self) -> &Pod {
        &self.pods[0]
    }

    /// The world's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's `--workloads` file content for these pods.
    pub fn workloads_yaml(&self) -> String {
        let mut s = String::from("workloads:\n");
        for p in &self.pods {
            s.push_str(&p.workload_yaml());
        }
        s
    }

    /// Copies an executable to `<world dir>/<rel>` (mode 0755) and returns the new path: exec
    /// tests kill test-only copies, never the system's binaries.
    pub fn install_binary(&self, src: &Path, rel: &str) -> PathBuf {
        let dst = self.dir.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).expect("create binary dir");
            set_mode(parent, 0o755);
        }
        std::fs::copy(src, &dst)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", src.display(), dst.display()));
        set_mode(&dst, 0o755);
        dst
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode));
}
