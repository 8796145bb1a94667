//! The policy side of `bulwark run`: [`LintCompiler`] is the daemon core's [`PolicyBackend`]
//! backed by the policy crate's lint (one file, and the set's cross-file checks) and the
//! compiler (a node's groups, `compile_node`), and the compiler's [`NodeRuleSet`] answers the
//! core's [`Rules`] questions.

use crate::pipeline::kernel::{MatchInfo, Rules};
use crate::pipeline::policy_backend::{FileLint, PolicyBackend};
use bulwark_compiler::{NamespaceIds, NodeRuleSet};
use bulwark_events::{DaemonCode, DaemonDiagnostic, Diagnostic};
use bulwark_policy::{AnyPolicy, Mode};
use std::path::Path;

/// The policy crate's lint and the compiler, as the daemon uses them.
pub struct LintCompiler {
    /// Kubernetes namespace ids, shared by the compiler and the workload registry.
    pub ids: NamespaceIds,
}

impl LintCompiler {
    pub fn new() -> Self {
        LintCompiler {
            ids: NamespaceIds::new(),
        }
    }
}

impl Default for LintCompiler {
    fn default() -> Self {
        Self::new()
    }
}

fn typed(diags: Vec<bulwark_policy::Diagnostic>) -> Vec<Diagnostic> {
    diags.into_iter().map(Diagnostic::from).collect()
}

impl PolicyBackend for LintCompiler {
    type Policy = AnyPolicy;
    type Rules = NodeRuleSet;

    fn lint_file(&self, path: &Path) -> FileLint<AnyPolicy> {
        match bulwark_policy::lint_paths(&[path.to_path_buf()]) {
            Ok(out) => {
                let mut lint = FileLint {
                    text: if out.diagnostics.is_empty() {
                        String::new()
                    } else {
                        bulwark_policy::diagnostics::render_text(&out.diagnostics)
                    },
                    diagnostics: typed(out.diagnostics),
                    policies: out.policies,
                };
                // The lint reads EncryptedProtocol declarations too; the policy directory holds
                // policies only, so a file of declarations is refused as before, saying where
                // they go.
                if !out.protocols.is_empty() {
                    let message = format!(
                        "{} holds EncryptedProtocol declarations, which are not policies; pass \
                         them with `bulwark run --protocols FILE|DIR`",
                        path.display()
                    );
                    lint.text
                        .push_str(&format!("{}: error: {message}\n", path.display()));
                    lint.diagnostics.push(Diagnostic::error(
                        DaemonCode::PolicyDir,
                        Some(path),
                        message,
                    ));
                }
                lint
            }
            Err(e) => FileLint {
                policies: Vec::new(),
                diagnostics: vec![Diagnostic::error(DaemonCode::Io, Some(path), e.to_string())],
                text: format!("{}: error: {e}\n", path.display()),
            },
        }
    }

    fn validate_set(&self, policies: &[AnyPolicy]) -> FileLint<AnyPolicy> {
        let diags = bulwark_policy::validate::validate_set(policies);
        FileLint {
            policies: Vec::new(),
            text: if diags.is_empty() {
                String::new()
            } else {
                bulwark_policy::diagnostics::render_text(&diags)
            },
            diagnostics: typed(diags),
        }
    }

    fn compile(&mut self, policies: &[AnyPolicy]) -> Result<NodeRuleSet, DaemonDiagnostic> {
        bulwark_compiler::compile_node(policies, &mut self.ids)
            .map_err(|e| DaemonDiagnostic::error(DaemonCode::Compile, None, e.to_string()))
    }

    fn intern_namespace(&mut self, name: &str) -> u32 {
        self.ids.id(name)
    }

    fn label(p: &AnyPolicy) -> String {
        match p.scope_namespace() {
            Some(ns) => format!("{ns}/{}", p.name()),
            None => p.name().to_string(),
        }
    }
}

impl Rules for NodeRuleSet {
    fn match_info(&self, group: u32, selector: u8) -> Option<MatchInfo> {
        let rules = self.group(group)?;
        let args: u64 = rules
            .proc_conditions()
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, bulwark_compiler::ProcCondition::Arg { .. }))
            .fold(0, |m, (i, _)| m | 1 << i);
        rules.selector_info(selector).map(|i| MatchInfo {
            policy_name: i.policy_name,
            policy_namespace: i.policy_namespace,
            rule: i.rule_name,
            monitor: i.mode == Mode::Monitor,
            uses_arguments: i.proc_required & args != 0,
        })
    }

    fn evaluate_exec(&self, facts: &bulwark_compiler::ExecFacts) -> u64 {
        NodeRuleSet::evaluate_exec(self, facts)
    }

    fn binary_paths(&self) -> std::collections::BTreeSet<String> {
        NodeRuleSet::binary_paths(self)
    }

    fn with_files(&self, ids: &bulwark_compiler::BinaryIdentities) -> anyhow::Result<Self> {
        let mut rs = self.clone();
        rs.resolve_binaries(ids)?;
        Ok(rs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::daemon::{Change, Config, Daemon};
    use crate::pipeline::fakes::Buf;
    use crate::pipeline::kernel::Kernel;
    use crate::record::{DecodeError, Record};
    use bulwark_compiler::ExecFacts;
    use std::path::PathBuf;
    use std::time::Duration;

    #[test]
    fn a_file_of_encrypted_protocol_declarations_is_refused_in_the_policy_dir() {
        let dir = std::env::temp_dir().join(format!("bulwark-lc-protocols-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.yaml");
        std::fs::write(
            &file,
            "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: acme\nspec:\n  signature: \"ac 3e\"\n",
        )
        .unwrap();
        let lint = LintCompiler::new().lint_file(&file);
        assert!(lint.policies.is_empty());
        assert!(
            lint.diagnostics
                .iter()
                .any(|d| d.severity() == bulwark_events::Severity::Error
                    && d.message().contains("--protocols")),
            "{:?}",
            lint.diagnostics
        );
        assert!(lint.text.contains("--protocols"), "{}", lint.text);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Records what would be written to the kernel.
    #[derive(Default)]
    struct RecordingKernel {
        active: u8,
        applied: Vec<usize>,
        workloads: Vec<(u64, u32)>,
    }

    impl Kernel<NodeRuleSet> for RecordingKernel {
        fn apply(
            &mut self,
            rules: &NodeRuleSet,
            _describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
        ) -> anyhow::Result<u8> {
            self.active ^= 1;
            // The entries must be producible for the slot the engine would write.
            let _ = rules.slot_entries(self.active);
            self.applied.push(rules.selector_count());
            Ok(self.active)
        }
        fn refresh_process(
            &mut self,
            _tgid: u32,
            _describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
        ) -> anyhow::Result<()> {
            Ok(())
        }
        fn set_workload(&mut self, cgroup_id: u64, namespace_id: u32) -> anyhow::Result<()> {
            self.workloads.push((cgroup_id, namespace_id));
            Ok(())
        }
        fn remove_workload(&mut self, _cgroup_id: u64) -> anyhow::Result<()> {
            Ok(())
        }
        fn stale_processes(&self) -> u64 {
            0
        }
        fn set_loaders(&mut self, _: &[bulwark_compiler::FileId]) -> anyhow::Result<()> {
            Ok(())
        }
        fn set_encrypted_protocols(
            &mut self,
            _: &[daemon_common::SignatureEntry],
        ) -> anyhow::Result<()> {
            Ok(())
        }
        fn poll(
            &mut self,
            _t: Duration,
            _sink: &mut dyn FnMut(Result<Record, DecodeError>),
        ) -> anyhow::Result<()> {
            Ok(())
        }
        fn lost_events(&self) -> u64 {
            0
        }
    }

    #[test]
    fn shipped_examples_load_through_lint_and_compiler() {
        let dir = std::env::temp_dir().join(format!("bulwark-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
        let mut count = 0;
        for e in std::fs::read_dir(&examples).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
                count += 1;
            }
        }
        let (mut d, out) = test_daemon(Some(dir.clone()));
        d.start();
        let st = out.last();
        assert_eq!(st["state"], "ready", "{st}");
        assert_eq!(st["generation"], 1);
        let policies = st["policies"].as_array().unwrap();
        assert_eq!(policies.len(), count, "{st}");
        assert!(policies.contains(&"kill-crypto-miners".into()));
        assert!(policies.contains(&"payments/payments-internal-only".into()));
        assert!(
            st["diagnostics"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["severity"] != "error"),
            "{st}"
        );

        // Break one file: lint diagnostics in the status, the set in force is unchanged.
        let broken = dir.join("kill-crypto-miners.yaml");
        let good = std::fs::read_to_string(&broken).unwrap();
        std::fs::write(&broken, good.replace("hook: exec", "hook: fork")).unwrap();
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = out.last();
        assert_eq!(st["state"], "reload_failed", "{st}");
        assert_eq!(st["policies"].as_array().unwrap().len(), count);
        let errors: Vec<_> = st["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["severity"] == "error")
            .collect();
        assert!(!errors.is_empty(), "{st}");
        assert!(errors[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("kill-crypto-miners.yaml"));
        assert!(errors[0]["line"].is_number(), "{st}");
        // Removing it takes that policy out.
        std::fs::remove_file(&broken).unwrap();
        d.on_change(Change {
            policies: true,
            workloads: false,
        });
        let st = out.last();
        assert_eq!(st["state"], "reloaded", "{st}");
        assert_eq!(st["policies"].as_array().unwrap().len(), count - 1);
        assert!(!st["policies"]
            .as_array()
            .unwrap()
            .contains(&"kill-crypto-miners".into()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dangling_policy_file_is_rejected_alone() {
        let dir = std::env::temp_dir().join(format!("bulwark-dangling-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../policies/examples/kill-crypto-miners.yaml");
        std::fs::copy(&example, dir.join("miners.yaml")).unwrap();
        // A ConfigMap key removed while its link is still there, say.
        std::os::unix::fs::symlink(dir.join("gone.yaml"), dir.join("stale.yaml")).unwrap();
        let (mut d, out) = test_daemon(Some(dir.clone()));
        d.start();
        let st = out.last();
        assert_eq!(st["state"], "ready", "{st}");
        assert_eq!(
            st["policies"],
            serde_json::json!(["kill-crypto-miners"]),
            "{st}"
        );
        let diags = st["diagnostics"].as_array().unwrap();
        assert_eq!(diags.len(), 1, "{st}");
        assert_eq!(diags[0]["code"], "io");
        assert!(
            diags[0]["file"].as_str().unwrap().ends_with("stale.yaml"),
            "{st}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A policy with `n` exec selectors (binaries `/bin/<name>-<i>`), as the controller hands
    /// it over.
    fn wide_policy(name: &str, n: usize) -> AnyPolicy {
        let mut src = format!(
            "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  mode: monitor\n  rules:\n  - name: r\n    hook: exec\n    selectors:\n"
        );
        for i in 0..n {
            src.push_str(&format!(
                "    - matchBinaries:\n      - operator: In\n        values: [/bin/{name}-{i}]\n      \
                 matchActions:\n      - action: Post\n"
            ));
        }
        // Read without the lint (which rejects a policy too big for the kernel on its own): the
        // daemon must cope with whatever reaches it.
        let p: bulwark_policy::model::TracingPolicy =
            serde_saphyr::from_str(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
        AnyPolicy::Cluster(p)
    }

    /// A daemon with the real lint + compiler and a recording kernel, writing to a buffer.
    fn test_daemon(policy_dir: Option<PathBuf>) -> (Daemon<LintCompiler, RecordingKernel>, Buf) {
        let out = Buf::default();
        let cfg = Config {
            node_name: "t".into(),
            policy_dir,
            workloads_file: None,
            proc_root: PathBuf::from("/proc"),
            cgroup_mount: crate::engine::host::cgroup2_mount(),
            loss_report_every: Duration::from_secs(10),
        };
        let d = Daemon::new(
            cfg,
            LintCompiler::new(),
            RecordingKernel::default(),
            Box::new(out.clone()),
        );
        (d, out)
    }

    #[test]
    fn cluster_sets_compile_per_node_with_the_real_compiler() {
        let (mut d, out) = test_daemon(None);
        d.start();
        // Fits: applied, `ready`.
        let r = d.apply_set(vec![wide_policy("small", 3)]);
        assert_eq!(r, Ok(vec![Ok(())]));
        assert_eq!(out.last()["state"], "ready");
        assert_eq!(d.kernel.applied, vec![3]);
        // One policy over the kernel's selector limit on its own: it alone is left out and says
        // why; the other is applied.
        let r = d
            .apply_set(vec![wide_policy("huge", 65), wide_policy("small", 3)])
            .unwrap();
        assert!(
            r[0].as_ref()
                .unwrap_err()
                .to_string()
                .contains("MAX_SELECTORS"),
            "{r:?}"
        );
        assert_eq!(r[1], Ok(()));
        let st = out.last();
        assert_eq!(st["state"], "reload_failed", "{st}");
        assert_eq!(st["policies"], serde_json::json!(["small"]), "{st}");
        assert_eq!(d.kernel.applied, vec![3, 3]);
        // Two that fit alone but not together: nothing changes, the reason goes back.
        let err = d
            .apply_set(vec![wide_policy("a", 40), wide_policy("b", 40)])
            .unwrap_err();
        assert!(err.to_string().contains("MAX_SELECTORS"), "{err}");
        assert_eq!(out.last()["policies"], serde_json::json!(["small"]));
        assert_eq!(d.kernel.applied, vec![3, 3]);
    }

    #[test]
    fn rule_set_answers_match_info_and_process_bits() {
        let src = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../policies/examples/kill-crypto-miners.yaml"),
        )
        .unwrap();
        let lint = bulwark_policy::lint_source("k.yaml", &src);
        assert_eq!(lint.errors(), 0);
        let rules =
            bulwark_compiler::compile_node(&lint.policies, &mut NamespaceIds::new()).unwrap();
        let info = Rules::match_info(&rules, 0, 0).unwrap();
        assert_eq!(info.policy_name, "kill-crypto-miners");
        assert_eq!(info.policy_namespace, None);
        assert!(!info.monitor);
        assert!(Rules::match_info(&rules, 0, 63).is_none());
        assert!(Rules::match_info(&rules, 5, 0).is_none(), "no group 5");
        let facts = |bin: &str| ExecFacts::new(bin.as_bytes(), &[bin.as_bytes()], 0);
        let bits = Rules::evaluate_exec(&rules, &facts("/usr/bin/xmrig"));
        assert_ne!(bits, 0);
        assert_eq!(Rules::evaluate_exec(&rules, &facts("/usr/bin/ls")), 0);
    }
}
