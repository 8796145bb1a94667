//! Policy-set control: the one path a policy set takes into the kernel, whether it is read from
//! a policy directory (`bulwark run --policy-dir`, again on every change) or handed over by
//! the Kubernetes controller ([`super::Request::ApplySet`]): set-level validation, compilation,
//! the kernel's atomic A/B apply, then a status event — `ready` for the first set, then
//! `reloaded` / `reload_failed`. A set that fails as a whole leaves the set in force unchanged.
//! The two sources differ only in what a policy failing on its own costs (`OnFailure`).
//! Outcomes are typed ([`SetOutcome`]); the Kubernetes side words them for policy status.

use super::Daemon;
use crate::pipeline::kernel::{Kernel, Rules};
use crate::pipeline::policy_backend::PolicyBackend;
use crate::pipeline::policy_dir::all_policies;
use bulwark_events::{DaemonCode, Diagnostic, State};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Why one policy of a set is not in force (the others are).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rejected on this node: {why}")]
pub struct LeftOut {
    pub why: String,
}

/// Why the set in force did not change at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetError {
    /// The set fails set-level validation or compilation (a Kubernetes set: even without the
    /// policies that fail on their own).
    #[error(
        "the policy set cannot be loaded on this node: {why}; the previous set stays in force"
    )]
    Rejected { why: String },
    /// The kernel refused the compiled rule set.
    #[error("the kernel refused the new rule set: {why}; the previous set stays in force")]
    KernelRefused { why: String },
    /// A daemon with a policy directory takes its policies from there only.
    #[error(
        "this daemon enforces the policies of its --policy-dir and takes no policy set from \
         elsewhere"
    )]
    NotFromElsewhere,
}

/// Outcome of applying a set: `Ok` with one entry per policy (in the order given; `Err` for a
/// policy left out, the others are in force), or `Err` when the set in force did not change.
pub type SetOutcome = Result<Vec<Result<(), LeftOut>>, SetError>;

/// What a set that fails as a whole does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnFailure {
    /// Kubernetes: every policy has a status of its own, so the policies that fail on their own
    /// are left out (their entries say why) and the rest is applied.
    LeaveOutFailing,
    /// A directory: the previous set stays in force (a file's own lint errors were already
    /// handled file by file, keeping its last good version).
    KeepPrevious,
}

/// A set that validated and compiled.
struct Built<R> {
    rules: R,
    /// Validation warnings.
    warnings: Vec<Diagnostic>,
}

/// A set that did not: why (its error messages) and everything reported.
struct Unbuilt {
    why: String,
    diagnostics: Vec<Diagnostic>,
}

fn elapsed_ms(since: Instant) -> Option<f64> {
    Some(since.elapsed().as_secs_f64() * 1e3)
}

impl<B, K> Daemon<B, K>
where
    B: PolicyBackend,
    B::Rules: Rules,
    K: Kernel<B::Rules>,
{
    /// Reads the policy directory and applies it; returns (failed, diagnostics). Without a
    /// policy directory (Kubernetes mode) there is nothing to load: (false, []).
    pub fn load_policies(&mut self) -> (bool, Vec<Diagnostic>) {
        let Some(dir) = self.policies.as_ref() else {
            return (false, Vec::new());
        };
        let started = Instant::now();
        let load = dir.load(&self.backend, &mut std::io::stderr());
        let mut diags = load.diagnostics;
        let Some(files) = load.files else {
            self.last_load_ms = elapsed_ms(started);
            return (true, diags);
        };
        let set = all_policies(&files);
        let outcome = self.apply_policies(&set, OnFailure::KeepPrevious, started, &mut diags);
        if outcome.is_ok() {
            if let Some(dir) = self.policies.as_mut() {
                dir.commit(files);
            }
        }
        (load.failed || outcome.is_err(), diags)
    }

    /// Replaces the whole policy set with `policies` (Kubernetes mode: the controller's
    /// accepted set) and writes the status event. A policy that does not compile on its own is
    /// left out (its entry says why) and the rest is applied; when the set fails as a whole
    /// (validation, compilation of the combination, the kernel), nothing changes.
    pub fn apply_set(&mut self, policies: Vec<B::Policy>) -> SetOutcome {
        let mut diags = std::mem::take(&mut self.startup_diagnostics);
        let outcome = self.apply_policies(
            &policies,
            OnFailure::LeaveOutFailing,
            Instant::now(),
            &mut diags,
        );
        let failed = !matches!(&outcome, Ok(r) if r.iter().all(Result::is_ok));
        let state = if !self.ready_written {
            State::Ready
        } else if failed {
            State::ReloadFailed
        } else {
            State::Reloaded
        };
        self.ready_written = true;
        self.status(state, diags);
        outcome
    }

    /// The one path: validate and compile `policies` (load timing from `started`), apply them
    /// atomically, record what is in force. Everything reported goes to `diags`.
    fn apply_policies(
        &mut self,
        policies: &[B::Policy],
        on_failure: OnFailure,
        started: Instant,
        diags: &mut Vec<Diagnostic>,
    ) -> SetOutcome {
        let mut results: Vec<Result<(), LeftOut>> = vec![Ok(()); policies.len()];
        let built = match self.build(policies, &mut std::io::stderr()) {
            Err(whole) if on_failure == OnFailure::LeaveOutFailing => {
                self.build_without_failing(policies, whole, &mut results, diags)
            }
            built => built,
        };
        self.last_load_ms = elapsed_ms(started);
        let built = match built {
            Ok(b) => b,
            Err(unbuilt) => {
                diags.extend(unbuilt.diagnostics);
                let e = SetError::Rejected { why: unbuilt.why };
                eprintln!("bulwark: error: {e}");
                return Err(e);
            }
        };
        diags.extend(built.warnings);
        let t = Instant::now();
        if let Err(e) = self.apply_rules(Arc::new(built.rules)) {
            let e = SetError::KernelRefused {
                why: format!("{e:#}"),
            };
            eprintln!("bulwark: error: {e}");
            diags.push(Diagnostic::error(DaemonCode::Apply, None, e.to_string()));
            return Err(e);
        }
        self.last_apply_ms = elapsed_ms(t);
        let mut names: Vec<String> = policies
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| B::label(p))
            .collect();
        names.sort();
        self.in_force = names;
        Ok(results)
    }

    /// After the whole set failed to build: finds the policies that fail on their own, marks
    /// them left out, and builds the rest (or returns the whole set's failure when every
    /// policy builds alone: only the combination fails).
    fn build_without_failing(
        &mut self,
        policies: &[B::Policy],
        whole: Unbuilt,
        results: &mut [Result<(), LeftOut>],
        diags: &mut Vec<Diagnostic>,
    ) -> Result<Built<B::Rules>, Unbuilt> {
        for (i, p) in policies.iter().enumerate() {
            if let Err(alone) = self.build(std::slice::from_ref(p), &mut std::io::sink()) {
                let label = B::label(p);
                eprintln!("bulwark: error: policy {label} left out: {}", alone.why);
                diags.push(Diagnostic::error(
                    DaemonCode::Compile,
                    None,
                    format!("{label}: {}", alone.why),
                ));
                results[i] = Err(LeftOut { why: alone.why });
            }
        }
        let rest: Vec<B::Policy> = policies
            .iter()
            .zip(results.iter())
            .filter(|(_, r)| r.is_ok())
            .map(|(p, _)| p.clone())
            .collect();
        if rest.len() < policies.len() {
            self.build(&rest, &mut std::io::sink())
        } else {
            Err(whole)
        }
    }

    /// Set-level validation (its lint text to `report`) and compilation of `set`.
    fn build(
        &mut self,
        set: &[B::Policy],
        report: &mut dyn Write,
    ) -> Result<Built<B::Rules>, Unbuilt> {
        let check = self.backend.validate_set(set);
        if !check.text.is_empty() {
            let _ = write!(report, "{}", check.text);
        }
        if check.has_errors() {
            let why: Vec<&str> = check
                .diagnostics
                .iter()
                .filter(|d| d.is_error())
                .map(Diagnostic::message)
                .collect();
            return Err(Unbuilt {
                why: why.join("; "),
                diagnostics: check.diagnostics,
            });
        }
        match self.backend.compile(set) {
            Ok(rules) => Ok(Built {
                rules,
                warnings: check.diagnostics,
            }),
            Err(d) => Err(Unbuilt {
                why: d.message.clone(),
                diagnostics: vec![d.into()],
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Change;
    use super::*;
    use crate::pipeline::fakes::{apply, cluster_daemon, daemon, only_status, tmpdir};

    #[test]
    fn cluster_sets_go_through_the_same_apply_and_status_path() {
        let (mut d, out) = cluster_daemon();
        let (tx, rx) = std::sync::mpsc::channel();
        d.start();
        // No status before the first set: `ready` means the first set is in force.
        assert!(out.take().is_empty());
        assert_eq!(
            apply(&mut d, &tx, &rx, &["beta", "alpha"]),
            Ok(vec![Ok(()), Ok(())])
        );
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready", "{st}");
        assert_eq!(st["generation"], 1);
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert!(st["apply_ms"].is_number(), "{st}");
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["beta", "alpha"]);

        // Mode switch (a changed policy): one more atomic A/B apply, `reloaded`.
        assert_eq!(
            apply(&mut d, &tx, &rx, &["alpha-monitor", "beta"]),
            Ok(vec![Ok(()), Ok(())])
        );
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded", "{st}");
        assert_eq!(st["generation"], 2);
        assert_eq!(d.kernel.applied.len(), 2);
        assert_eq!(d.kernel.active, 0, "the other slot is active now");

        // One policy that does not compile on its own: left out, the rest applied.
        let r = apply(&mut d, &tx, &rx, &["alpha", "nocompile-x", "gamma"]).unwrap();
        assert_eq!(r[0], Ok(()));
        let left_out = r[1].as_ref().unwrap_err().to_string();
        assert!(left_out.contains("nope"), "{r:?}");
        assert!(
            left_out.starts_with("rejected on this node: "),
            "{left_out}"
        );
        assert_eq!(r[2], Ok(()));
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed", "{st}");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "gamma"]));
        assert!(st["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("nocompile-x: "));
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha", "gamma"]);

        // A set invalid as a whole: nothing changes, the reason goes back.
        let err = apply(&mut d, &tx, &rx, &["alpha", "alpha"]).unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot be loaded on this node: duplicate"),
            "{err}"
        );
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "gamma"]));
        assert_eq!(st["generation"], 3);

        // The kernel refusing: nothing changes.
        d.kernel.fail_apply = true;
        let err = apply(&mut d, &tx, &rx, &["delta"]).unwrap_err();
        assert!(err.to_string().contains("the kernel refused"), "{err}");
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "gamma"]));
        d.kernel.fail_apply = false;

        // The empty set (every policy deleted) is a set like any other.
        assert_eq!(apply(&mut d, &tx, &rx, &[]), Ok(vec![]));
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded");
        assert_eq!(st["policies"], serde_json::json!([]));
    }

    #[test]
    fn a_policy_dir_daemon_refuses_sets_from_elsewhere() {
        let dir = tmpdir("dir-refuses");
        std::fs::write(dir.join("policies/a.yaml"), "alpha").unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        out.take();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = apply(&mut d, &tx, &rx, &["beta"]).unwrap_err();
        assert_eq!(err, SetError::NotFromElsewhere);
        assert!(err.to_string().contains("--policy-dir"), "{err}");
        assert_eq!(d.kernel.applied.len(), 1);
        assert!(out.take().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_keeps_the_old_set_on_error() {
        let dir = tmpdir("reload");
        let pol = dir.join("policies");
        std::fs::write(pol.join("a.yaml"), "alpha").unwrap();
        std::fs::write(pol.join("broken.yaml"), "error").unwrap();
        std::fs::write(pol.join("README.md"), "error").unwrap(); // not a policy file
        let (mut d, out) = daemon(&dir, None);
        d.kernel.describe_pids = vec![std::process::id()];
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        assert_eq!(st["generation"], 1);
        assert_eq!(st["policies"], serde_json::json!(["alpha"]));
        assert_eq!(st["diagnostics"].as_array().unwrap().len(), 1);
        // The load's timings are reported (the benchmark reads them).
        assert!(st["load_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{st}");
        assert!(st["apply_ms"].as_f64().is_some_and(|ms| ms >= 0.0), "{st}");
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha"]);
        // The running test process is described from /proc for the switch.
        assert_eq!(
            d.kernel.applied[0].1,
            vec![(std::process::id(), Some(0))],
            "no policy name ends the test binary's path: described, no selector"
        );

        // A good change applies.
        std::fs::remove_file(pol.join("broken.yaml")).unwrap();
        std::fs::write(pol.join("b.yaml"), "beta").unwrap();
        let policies_changed = Change {
            policies: true,
            workloads: false,
        };
        d.on_change(policies_changed);
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded");
        assert_eq!(st["generation"], 2);
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));

        // Breaking b.yaml keeps its previous version in force.
        std::fs::write(pol.join("b.yaml"), "error").unwrap();
        d.on_change(policies_changed);
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha", "beta"]);

        // A set that does not compile changes nothing in the kernel.
        let applies = d.kernel.applied.len();
        std::fs::write(pol.join("c.yaml"), "nocompile").unwrap();
        d.on_change(policies_changed);
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert!(st["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["code"] == "compile"));
        assert_eq!(d.kernel.applied.len(), applies);

        // Nor does a set-level error (duplicate), nor a kernel refusal.
        std::fs::write(pol.join("c.yaml"), "alpha").unwrap();
        d.on_change(policies_changed);
        assert_eq!(only_status(out.take())["state"], "reload_failed");
        assert_eq!(d.kernel.applied.len(), applies);
        std::fs::write(pol.join("c.yaml"), "gamma").unwrap();
        std::fs::write(pol.join("b.yaml"), "beta").unwrap();
        d.kernel.fail_apply = true;
        let generation = d.generation;
        d.on_change(policies_changed);
        let st = only_status(out.take());
        assert_eq!(st["state"], "reload_failed");
        assert_eq!(st["policies"], serde_json::json!(["alpha", "beta"]));
        assert_eq!(st["generation"], generation);
        // Once the kernel accepts it, the new set is in force.
        d.kernel.fail_apply = false;
        d.on_change(policies_changed);
        let st = only_status(out.take());
        assert_eq!(st["state"], "reloaded");
        assert_eq!(
            st["policies"],
            serde_json::json!(["alpha", "beta", "gamma"])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_loop_in_the_policy_dir_is_walked_once() {
        let dir = tmpdir("symlink-loop");
        let pol = dir.join("policies");
        std::fs::create_dir(pol.join("team")).unwrap();
        std::fs::write(pol.join("team/a.yaml"), "alpha").unwrap();
        std::os::unix::fs::symlink("..", pol.join("team/parent")).unwrap();
        let (mut d, out) = daemon(&dir, None);
        d.start();
        let st = only_status(out.take());
        assert_eq!(st["state"], "ready");
        assert_eq!(st["policies"], serde_json::json!(["alpha"]), "{st}");
        assert_eq!(st["diagnostics"], serde_json::json!([]), "{st}");
        assert_eq!(d.kernel.applied.last().unwrap().0, vec!["alpha"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
