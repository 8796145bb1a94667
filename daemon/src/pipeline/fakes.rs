//! Test doubles of the daemon core's seams: a policy backend whose policies are words in files,
//! a rule set that is a list of those words, a kernel that records what it is told, an output
//! buffer, and daemons built from them. Shared by the unit tests of the pipeline modules.

use super::daemon::{Config, Daemon, Request, SetOutcome};
use super::kernel::{Kernel, MatchInfo, Rules};
use super::policy_backend::{FileLint, PolicyBackend};
use crate::record::{decode, DecodeError, Record};
use bulwark_compiler::ExecFacts;
use bulwark_events::{DaemonCode, DaemonDiagnostic};
use bulwark_policy::diagnostics::codes;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Policies are files whose text is whitespace-separated policy names; `error` in the text is
/// a lint error, a name containing `nocompile` fails compilation, a name twice in a set fails
/// set-level validation.
#[derive(Default)]
pub struct FakeBackend {
    pub ns: HashMap<String, u32>,
}

/// A rule set: selector `i` belongs to policy `self.0[i]`.
#[derive(Debug, PartialEq)]
pub struct FakeRules(pub Vec<String>);

impl Rules for FakeRules {
    fn match_info(&self, _group: u32, selector: u8) -> Option<MatchInfo> {
        self.0.get(usize::from(selector)).map(|n| MatchInfo {
            policy_name: n.clone(),
            policy_namespace: None,
            rule: format!("{n}-rule"),
            monitor: n.contains("monitor"),
            uses_arguments: n.contains("args"),
        })
    }
    fn binary_paths(&self) -> std::collections::BTreeSet<String> {
        self.0
            .iter()
            .filter(|n| n.starts_with('/'))
            .cloned()
            .collect()
    }
    fn with_files(&self, _: &bulwark_compiler::BinaryIdentities) -> anyhow::Result<Self> {
        Ok(FakeRules(self.0.clone()))
    }
    fn evaluate_exec(&self, facts: &ExecFacts) -> u64 {
        self.0
            .iter()
            .enumerate()
            .filter(|(_, n)| facts.path.ends_with(n.as_bytes()))
            .fold(0, |m, (i, _)| m | 1 << i)
    }
}

impl PolicyBackend for FakeBackend {
    type Policy = String;
    type Rules = FakeRules;
    fn lint_file(&self, path: &Path) -> FileLint<String> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains("error") {
            let d = bulwark_policy::Diagnostic::new(codes::YAML_SYNTAX, "bad")
                .file(path.display().to_string());
            return FileLint {
                policies: vec![],
                diagnostics: vec![d.into()],
                text: format!("{}: error: bad\n", path.display()),
            };
        }
        FileLint {
            policies: text.split_whitespace().map(String::from).collect(),
            diagnostics: vec![],
            text: String::new(),
        }
    }
    fn validate_set(&self, policies: &[String]) -> FileLint<String> {
        let mut seen = std::collections::HashSet::new();
        let dup = policies.iter().any(|p| !seen.insert(p));
        FileLint {
            policies: vec![],
            diagnostics: if dup {
                vec![bulwark_policy::Diagnostic::new(codes::DUPLICATE_POLICY, "duplicate").into()]
            } else {
                vec![]
            },
            text: String::new(),
        }
    }
    fn compile(&mut self, policies: &[String]) -> Result<FakeRules, DaemonDiagnostic> {
        if policies.iter().any(|p| p.contains("nocompile")) {
            return Err(DaemonDiagnostic::error(
                DaemonCode::Compile,
                None,
                "nope".into(),
            ));
        }
        Ok(FakeRules(policies.to_vec()))
    }
    fn intern_namespace(&mut self, name: &str) -> u32 {
        let next = self.ns.len() as u32 + 1;
        *self.ns.entry(name.into()).or_insert(next)
    }
    fn label(p: &String) -> String {
        p.clone()
    }
}

/// A pid and the bits `describe` gave for it during an apply.
pub type Described = (u32, Option<u64>);

/// Records applies and workload writes; hands out queued raw records.
#[derive(Default)]
pub struct FakeKernel {
    pub active: u8,
    /// The policies of each apply, with the bits `describe` gave for the processes in
    /// `describe_pids` (tests list the pids they want described).
    pub applied: Vec<(Vec<String>, Vec<Described>)>,
    pub describe_pids: Vec<u32>,
    /// Processes moved between namespaces whose bits were recomputed, with what `describe`
    /// gave (bits, namespace id).
    pub refreshed: Vec<(u32, Option<(u64, u32)>)>,
    pub fail_apply: bool,
    pub workloads: HashMap<u64, u32>,
    /// Raw records, decoded as the engine's reader decodes them.
    pub queue: Vec<Vec<u8>>,
    pub lost: u64,
    pub stale: u64,
    pub loaders: Vec<bulwark_compiler::FileId>,
    /// The last declared-protocol table written.
    pub encrypted_protocols: Vec<daemon_common::SignatureEntry>,
    pub shut: bool,
    /// Taken over from a previous daemon whose rule set (policy names) is in the active slot.
    pub adopted: Option<Vec<String>>,
}

impl Kernel<FakeRules> for FakeKernel {
    fn apply(
        &mut self,
        rules: &FakeRules,
        describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
    ) -> anyhow::Result<u8> {
        if self.fail_apply {
            anyhow::bail!("map full");
        }
        self.active ^= 1;
        let described = self
            .describe_pids
            .iter()
            .map(|&p| (p, describe(p).map(|(bits, _)| bits)))
            .collect();
        self.applied.push((rules.0.clone(), described));
        Ok(self.active)
    }
    fn refresh_process(
        &mut self,
        tgid: u32,
        describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
    ) -> anyhow::Result<()> {
        self.refreshed.push((tgid, describe(tgid)));
        Ok(())
    }
    fn set_workload(&mut self, cgroup_id: u64, ns: u32) -> anyhow::Result<()> {
        self.workloads.insert(cgroup_id, ns);
        Ok(())
    }
    fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        self.workloads.remove(&cgroup_id);
        Ok(())
    }
    fn set_loaders(&mut self, loaders: &[bulwark_compiler::FileId]) -> anyhow::Result<()> {
        self.loaders = loaders.to_vec();
        Ok(())
    }
    fn set_encrypted_protocols(
        &mut self,
        protocols: &[daemon_common::SignatureEntry],
    ) -> anyhow::Result<()> {
        self.encrypted_protocols = protocols.to_vec();
        Ok(())
    }
    fn poll(
        &mut self,
        _t: Duration,
        sink: &mut dyn FnMut(Result<Record, DecodeError>),
    ) -> anyhow::Result<()> {
        for r in self.queue.drain(..) {
            sink(decode(&r));
        }
        Ok(())
    }
    fn lost_events(&self) -> u64 {
        self.lost
    }
    fn stale_processes(&self) -> u64 {
        self.stale
    }
    fn shutdown(&mut self) {
        self.shut = true;
    }
    fn adopted(&self) -> bool {
        self.adopted.is_some()
    }
    fn workload_cgroups(&self) -> anyhow::Result<Vec<u64>> {
        Ok(self.workloads.keys().copied().collect())
    }
    fn slot_holding(&self, rules: &FakeRules) -> Option<u8> {
        (self.adopted.as_ref() == Some(&rules.0)).then_some(self.active)
    }
}

/// An event output that tests read back.
#[derive(Clone, Default)]
pub struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    /// The last line written so far.
    pub fn last(&self) -> serde_json::Value {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.lines().last().expect("a line was written")).unwrap()
    }

    /// Lines written since the last call.
    pub fn take(&self) -> Vec<serde_json::Value> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line is JSON"))
            .collect()
    }
}

/// A fresh directory with an empty `policies/` in it.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bulwark-daemon-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("policies")).unwrap();
    d
}

pub type FakeDaemon = Daemon<FakeBackend, FakeKernel>;

/// A daemon enforcing `dir/policies`, node `node-1`, writing to the returned buffer.
pub fn daemon(dir: &Path, workloads: Option<PathBuf>) -> (FakeDaemon, Buf) {
    daemon_with(Some(dir.join("policies")), workloads, FakeKernel::default())
}

/// A daemon in Kubernetes mode (no policy directory).
pub fn cluster_daemon() -> (FakeDaemon, Buf) {
    daemon_with(None, None, FakeKernel::default())
}

/// A daemon started on a kernel taken over from a previous daemon that enforced `rules`
/// (policy names) in `active_slot`; Kubernetes mode without a policy directory.
pub fn adopting_daemon(dir: Option<&Path>, rules: &[&str], active_slot: u8) -> (FakeDaemon, Buf) {
    let kernel = FakeKernel {
        active: active_slot,
        adopted: Some(rules.iter().map(|r| r.to_string()).collect()),
        ..FakeKernel::default()
    };
    daemon_with(dir.map(|d| d.join("policies")), None, kernel)
}

fn daemon_with(
    policy_dir: Option<PathBuf>,
    workloads: Option<PathBuf>,
    kernel: FakeKernel,
) -> (FakeDaemon, Buf) {
    let buf = Buf::default();
    let cfg = Config {
        node_name: "node-1".into(),
        policy_dir,
        workloads_file: workloads,
        proc_root: PathBuf::from("/proc"),
        cgroup_mount: crate::engine::host::cgroup2_mount(),
        loss_report_every: Duration::from_secs(0),
    };
    let d = Daemon::new(cfg, FakeBackend::default(), kernel, Box::new(buf.clone()));
    (d, buf)
}

/// The one line written, which must be a status event.
pub fn only_status(lines: Vec<serde_json::Value>) -> serde_json::Value {
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "status");
    assert_eq!(lines[0]["node_name"], "node-1");
    lines.into_iter().next().unwrap()
}

/// Sends a policy set through the request queue, as the Kubernetes side does, and returns the
/// answer.
pub fn apply(
    d: &mut FakeDaemon,
    tx: &Sender<Request<String>>,
    rx: &Receiver<Request<String>>,
    set: &[&str],
) -> SetOutcome {
    let (reply, answer) = std::sync::mpsc::channel();
    tx.send(Request::ApplySet {
        policies: set.iter().map(|s| s.to_string()).collect(),
        reply,
    })
    .unwrap();
    d.on_requests(rx);
    answer.try_recv().expect("answered at once")
}
