//! Workloads: which cgroup belongs to which Kubernetes-style identity, from the workloads file
//! (`--workloads`, re-resolved every tick so cgroups created later are picked up) and from the
//! Kubernetes side's Pods ([`super::Request::AddWorkload`]). Each change goes to the registry
//! (identity on events) and to the kernel's workload map (namespace selectors); a change of a
//! running process's namespace is followed by a re-apply of the set in force.
//!
//! On a kernel taken over from a previous daemon, the workload map keeps that daemon's
//! namespace ids, which its rule set (still enforcing) was compiled with; this daemon may number
//! namespaces differently. So until this daemon's first apply its workload writes are held back
//! and then written right after the switch: old rules see old ids, new rules new ones. With a
//! policy directory the workloads file is the whole registry by then, so cgroups the previous
//! daemon registered and this one does not (the file changed meanwhile) are removed too; in
//! Kubernetes mode Pods keep arriving after the first apply, and a Pod's cgroup never changes
//! namespace, so nothing is removed there.

use super::Daemon;
use crate::pipeline::kernel::{Kernel, Rules};
use crate::pipeline::policy_backend::PolicyBackend;
use crate::pipeline::workload::{parse_workloads, resolve, Workload, WorkloadChange};
use bulwark_events::Pod;
use bulwark_events::{DaemonCode, Diagnostic};

impl<B, K> Daemon<B, K>
where
    B: PolicyBackend,
    B::Rules: Rules,
    K: Kernel<B::Rules>,
{
    /// Reads the workloads file (if any) and syncs the registry and kernel.
    pub fn load_workloads(&mut self) -> Vec<Diagnostic> {
        let Some(file) = self.cfg.workloads_file.clone() else {
            return Vec::new();
        };
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                let msg = format!(
                    "cannot read workloads file {}: {e}; the previous workloads stay registered",
                    file.display()
                );
                eprintln!("bulwark: error: {msg}");
                return vec![Diagnostic::error(DaemonCode::Workloads, Some(&file), msg)];
            }
        };
        match parse_workloads(&text, &file) {
            Ok(specs) => {
                self.workload_specs = specs;
                self.sync_workloads().0
            }
            Err(e) => {
                let msg = format!("{e:#}\n  the previous workloads stay registered");
                eprintln!("bulwark: error: {msg}");
                vec![Diagnostic::error(DaemonCode::Workloads, Some(&file), msg)]
            }
        }
    }

    /// Resolves the current workload specs and pushes changes to the kernel; returns the
    /// diagnostics and whether the registry changed.
    pub(super) fn sync_workloads(&mut self) -> (Vec<Diagnostic>, bool) {
        let mut diags = Vec::new();
        let Some(mount) = self.cfg.cgroup_mount.clone() else {
            let msg = "no cgroup v2 mount found: workloads cannot be resolved; mount one with \
                       `mount -t cgroup2 none /sys/fs/cgroup`";
            return (
                vec![Diagnostic::error(DaemonCode::Workloads, None, msg)],
                false,
            );
        };
        let resolved = resolve(&self.workload_specs, &mount);
        let file = self.cfg.workloads_file.as_deref();
        diags.extend(
            resolved
                .missing
                .iter()
                .map(|m| Diagnostic::warning(DaemonCode::Workloads, file, m.as_str())),
        );
        let backend = &mut self.backend;
        let changes = self
            .pipeline
            .registry
            .sync_file(resolved.entries, &mut |ns| backend.intern_namespace(ns));
        let changed = !changes.is_empty();
        for ch in changes {
            if let Err(e) = self.write_workload(ch) {
                let msg = format!("workload map update {ch:?} failed: {e:#}");
                eprintln!("bulwark: error: {msg}");
                diags.push(Diagnostic::error(DaemonCode::Workloads, None, msg));
            }
        }
        (diags, changed)
    }

    /// Registers a workload from another source than the workloads file (the Kubernetes side,
    /// from Pods, through [`super::Request::AddWorkload`]): interns its namespace and writes the
    /// kernel's workload map. True when the namespace of the cgroup changed: running processes
    /// then need a re-apply ([`Daemon::on_requests`] does one per batch) so namespace selectors
    /// apply to processes already in the cgroup.
    pub(super) fn register_workload(&mut self, cgroup_id: u64, pod: Pod) -> anyhow::Result<bool> {
        let namespace_id = self.backend.intern_namespace(&pod.namespace);
        let change = self
            .pipeline
            .registry
            .add(cgroup_id, Workload { pod, namespace_id });
        if change.is_some() {
            self.write_workload(WorkloadChange::Set {
                cgroup_id,
                namespace_id,
            })?;
        }
        Ok(change.is_some())
    }

    /// Writes one change to the kernel's workload map, or holds it back until the first apply
    /// (see the module doc).
    fn write_workload(&mut self, ch: WorkloadChange) -> anyhow::Result<()> {
        if let Some(held) = self.deferred_workloads.as_mut() {
            held.push(ch);
            return Ok(());
        }
        match ch {
            WorkloadChange::Set {
                cgroup_id,
                namespace_id,
            } => self.kernel.set_workload(cgroup_id, namespace_id),
            WorkloadChange::Remove { cgroup_id } => self.kernel.remove_workload(cgroup_id),
        }
    }

    /// After an apply: writes the changes held back since start (from now on they go straight
    /// through).
    pub(super) fn flush_deferred_workloads(&mut self) {
        let Some(held) = self.deferred_workloads.take() else {
            return;
        };
        let mut changes = held;
        if self.policies.is_some() {
            match self.kernel.workload_cgroups() {
                Ok(ids) => changes.extend(
                    ids.into_iter()
                        .filter(|id| self.pipeline.registry.get(*id).is_none())
                        .map(|cgroup_id| WorkloadChange::Remove { cgroup_id }),
                ),
                Err(e) => eprintln!(
                    "bulwark: error: cannot list the workload map left by the previous daemon: \
                     {e:#}"
                ),
            }
        }
        for ch in changes {
            if let Err(e) = self.write_workload(ch) {
                eprintln!("bulwark: error: workload map update {ch:?} failed: {e:#}");
            }
        }
    }

    /// Re-resolves the workloads file's cgroups (created later, or re-created with a new id);
    /// when that changed the registry, re-applies the set in force so running processes get
    /// their namespace.
    pub(super) fn re_resolve_workloads(&mut self) {
        if self.workload_specs.is_empty() {
            return;
        }
        let (_, changed) = self.sync_workloads();
        if changed {
            if let Err(e) = self.reapply() {
                eprintln!("bulwark: error: re-applying rules for new workloads: {e:#}");
            }
        }
    }

    /// Forgets a workload (see [`Daemon::register_workload`]).
    pub(super) fn unregister_workload(&mut self, cgroup_id: u64) -> anyhow::Result<bool> {
        if self.pipeline.registry.remove(cgroup_id).is_some() {
            self.write_workload(WorkloadChange::Remove { cgroup_id })?;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Change, Request};
    use super::*;
    use crate::pipeline::fakes::{
        adopting_daemon, apply, cluster_daemon, daemon, only_status, tmpdir,
    };

    #[test]
    fn on_an_adopted_kernel_workload_writes_wait_for_the_first_apply() {
        // The previous daemon's rule set and workload map (its namespace ids) are in force.
        let (mut d, _out) = adopting_daemon(None, &["alpha"], 1);
        d.kernel.workloads.insert(11, 7);
        let (tx, rx) = std::sync::mpsc::channel();
        d.start();
        tx.send(Request::AddWorkload {
            cgroup_id: 11,
            pod: Pod {
                namespace: "web".into(),
                ..Default::default()
            },
        })
        .unwrap();
        d.on_requests(&rx);
        assert_eq!(
            d.kernel.workloads.get(&11),
            Some(&7),
            "the old rule set still enforces with the old ids"
        );
        assert_eq!(d.pipeline.registry.get(11).unwrap().pod.namespace, "web");
        apply(&mut d, &tx, &rx, &["alpha"]).unwrap();
        assert_eq!(
            d.kernel.workloads.get(&11),
            Some(&1),
            "written with the switch"
        );
        tx.send(Request::RemoveWorkload { cgroup_id: 11 }).unwrap();
        d.on_requests(&rx);
        assert!(
            !d.kernel.workloads.contains_key(&11),
            "then straight through"
        );
    }

    #[test]
    fn with_a_policy_directory_the_restart_drops_cgroups_the_file_no_longer_lists() {
        let dir = tmpdir("adopted-wl");
        std::fs::write(dir.join("policies/p.yaml"), "alpha").unwrap();
        let wl = dir.join("workloads.yaml");
        std::fs::write(
            &wl,
            "workloads:\n- {cgroup: /, namespace: web, pod: web-1, container: app}\n",
        )
        .unwrap();
        let (mut d, _out) = adopting_daemon(Some(&dir), &["alpha"], 0);
        d.cfg.workloads_file = Some(wl);
        // Left by the previous daemon: a cgroup the file no longer lists, and the root cgroup
        // under that daemon's namespace id.
        let root_id = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(d.cfg.cgroup_mount.clone().unwrap()).unwrap(),
        );
        d.kernel.workloads.insert(999, 3);
        d.kernel.workloads.insert(root_id, 4);
        d.start();
        assert_eq!(
            d.kernel.workloads,
            [(root_id, 1)].into_iter().collect(),
            "after the first apply the kernel holds exactly the file's workloads"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pod_workloads_are_registered_with_one_reapply_per_batch() {
        let (mut d, out) = cluster_daemon();
        let (tx, rx) = std::sync::mpsc::channel();
        d.start();
        apply(&mut d, &tx, &rx, &["alpha"]).unwrap();
        out.take();
        let pod = |ns: &str, name: &str| Pod {
            namespace: ns.into(),
            name: name.into(),
            container: "app".into(),
            labels: Default::default(),
        };
        tx.send(Request::AddWorkload {
            cgroup_id: 11,
            pod: pod("web", "a"),
        })
        .unwrap();
        tx.send(Request::AddWorkload {
            cgroup_id: 12,
            pod: pod("db", "b"),
        })
        .unwrap();
        d.on_requests(&rx);
        assert_eq!(d.kernel.workloads.len(), 2);
        assert_ne!(d.kernel.workloads[&11], d.kernel.workloads[&12]);
        assert_eq!(d.pipeline.registry.get(11).unwrap().pod.name, "a");
        assert_eq!(d.kernel.applied.len(), 2, "one re-apply for the batch");
        // The same identity again changes nothing; removal re-applies.
        tx.send(Request::AddWorkload {
            cgroup_id: 11,
            pod: pod("web", "a"),
        })
        .unwrap();
        d.on_requests(&rx);
        assert_eq!(d.kernel.applied.len(), 2);
        tx.send(Request::RemoveWorkload { cgroup_id: 11 }).unwrap();
        d.on_requests(&rx);
        assert!(!d.kernel.workloads.contains_key(&11));
        assert!(d.pipeline.registry.get(11).is_none());
        assert_eq!(d.kernel.applied.len(), 3);
        // Workload changes write no status events.
        assert!(out.take().is_empty());
    }

    #[test]
    fn workloads_file_feeds_registry_and_kernel() {
        let dir = tmpdir("wl");
        // Kept inside the policy directory: it must not be linted as a policy.
        let wl = dir.join("policies/workloads.yaml");
        std::fs::write(
            &wl,
            "workloads:\n- {cgroup: /, namespace: production, pod: web-1, container: app, labels: {app: web}}\n",
        )
        .unwrap();
        let (mut d, out) = daemon(&dir, Some(wl.clone()));
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        assert_eq!(st["diagnostics"], serde_json::json!([]), "{st}");
        assert_eq!(st["policies"], serde_json::json!([]), "{st}");
        let root_id = std::os::unix::fs::MetadataExt::ino(
            &std::fs::metadata(d.cfg.cgroup_mount.clone().unwrap()).unwrap(),
        );
        assert_eq!(d.kernel.workloads.get(&root_id), Some(&1));
        // A broken file keeps the registry; the status says why.
        std::fs::write(&wl, "workloads: [{cgroup: /}]\n").unwrap();
        d.on_change(Change {
            policies: false,
            workloads: true,
        });
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(d.kernel.workloads.get(&root_id), Some(&1));
        // Another source (Kubernetes) adds and removes by cgroup id.
        let pod = Pod {
            namespace: "kube-ns".into(),
            name: "p".into(),
            ..Default::default()
        };
        let applies = d.kernel.applied.len();
        let (tx, rx) = std::sync::mpsc::channel();
        let send = |r: Request<String>| tx.send(r).unwrap();
        send(Request::AddWorkload {
            cgroup_id: 777,
            pod: pod.clone(),
        });
        d.on_requests(&rx);
        assert_eq!(d.kernel.workloads.get(&777), Some(&2));
        assert_eq!(
            d.kernel.applied.len(),
            applies + 1,
            "running processes re-evaluated"
        );
        send(Request::AddWorkload {
            cgroup_id: 777,
            pod,
        });
        d.on_requests(&rx);
        assert_eq!(d.kernel.applied.len(), applies + 1, "no change, no apply");
        send(Request::RemoveWorkload { cgroup_id: 777 });
        d.on_requests(&rx);
        assert!(!d.kernel.workloads.contains_key(&777));
        send(Request::RemoveWorkload { cgroup_id: 777 });
        d.on_requests(&rx);
        // An emptied file removes it.
        std::fs::write(&wl, "workloads: []\n").unwrap();
        d.on_change(Change {
            policies: false,
            workloads: true,
        });
        assert_eq!(only_status(out.take())["state"], "reloaded");
        assert!(d.kernel.workloads.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn workload_cgroups_are_re_resolved_every_tick() {
        let dir = tmpdir("reresolve");
        // A stand-in cgroup mount: resolution only looks at directories and inode numbers.
        let mount = dir.join("cgroup");
        std::fs::create_dir_all(&mount).unwrap();
        let wl = dir.join("workloads.yaml");
        std::fs::write(
            &wl,
            "workloads:\n- {cgroup: /pod-a, namespace: prod, pod: a}\n",
        )
        .unwrap();
        let (mut d, out) = daemon(&dir, Some(wl));
        d.cfg.cgroup_mount = Some(mount.clone());
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        let diags = st["diagnostics"].as_array().unwrap();
        assert!(
            diags
                .iter()
                .any(|x| x["severity"] == "warning"
                    && x["message"].as_str().unwrap().contains("/pod-a")),
            "{st}"
        );
        assert!(d.kernel.workloads.is_empty());
        // The cgroup appears: picked up on the next tick, processes re-evaluated.
        std::fs::create_dir(mount.join("pod-a")).unwrap();
        let id1 =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(mount.join("pod-a")).unwrap());
        let applies = d.kernel.applied.len();
        d.tick(false);
        assert_eq!(d.kernel.workloads.get(&id1), Some(&1));
        assert_eq!(d.kernel.applied.len(), applies + 1);
        // Nothing changed: no kernel writes.
        d.tick(false);
        assert_eq!(d.kernel.applied.len(), applies + 1);
        // Re-created with a new inode: the old id goes, the new one comes. The old directory is
        // moved aside rather than removed, so the filesystem cannot hand its inode number to
        // the new one.
        std::fs::rename(mount.join("pod-a"), mount.join("pod-a-old")).unwrap();
        std::fs::create_dir(mount.join("pod-a")).unwrap();
        let id2 =
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(mount.join("pod-a")).unwrap());
        assert_ne!(id1, id2);
        d.tick(false);
        assert_eq!(d.kernel.workloads.get(&id2), Some(&1));
        assert!(!d.kernel.workloads.contains_key(&id1));
        assert!(
            out.take().is_empty(),
            "ticks write no status without losses"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
