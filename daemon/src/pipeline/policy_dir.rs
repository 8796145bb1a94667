//! A policy directory with "last good" per file: the files are found as `bulwark lint` finds
//! them (the lint's walker: recursive `*.yaml`/`*.yml`, sorted, hidden entries such as the
//! `..data` of ConfigMap mounts skipped, symlink loops visited once) and each is linted on its
//! own; a file with errors is reported (the same text `bulwark lint` prints) and its previous
//! good version, if any, stays in the set. What the set then goes through — set-level
//! validation, compilation, the kernel apply — is the policy-set control's
//! ([`super::daemon`]), the same for a directory and for a Kubernetes set.

use super::policy_backend::PolicyBackend;
use bulwark_events::{DaemonCode, Diagnostic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Policies of each file of the directory.
pub type FilePolicies<P> = BTreeMap<PathBuf, Vec<P>>;

/// What one read of the directory produced.
pub struct DirLoad<P> {
    /// The policies to enforce, per file (a rejected file contributes its last good version);
    /// `None` when the directory could not be read (the previous set stays in force).
    pub files: Option<FilePolicies<P>>,
    /// Everything the lint reported, file by file.
    pub diagnostics: Vec<Diagnostic>,
    /// True when a file (or the directory) was rejected.
    pub failed: bool,
}

/// The policies of every file, in file order.
pub fn all_policies<P: Clone>(files: &FilePolicies<P>) -> Vec<P> {
    files.values().flatten().cloned().collect()
}

/// Per-file last-good state of a policy directory.
pub struct PolicyDir<P> {
    pub dir: PathBuf,
    /// A file below `dir` that is not a policy (the workloads file, if kept there).
    exclude: Option<PathBuf>,
    last_good: FilePolicies<P>,
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

impl<P: Clone> PolicyDir<P> {
    pub fn new(dir: PathBuf, exclude: Option<PathBuf>) -> Self {
        PolicyDir {
            dir,
            exclude,
            last_good: BTreeMap::new(),
        }
    }

    /// Finds and lints the files. Lint text goes to `stderr`.
    pub fn load<B: PolicyBackend<Policy = P>>(
        &self,
        backend: &B,
        stderr: &mut dyn std::io::Write,
    ) -> DirLoad<P> {
        let files = match bulwark_policy::load::policy_files(std::slice::from_ref(&self.dir)) {
            Ok(mut f) => {
                if let Some(x) = &self.exclude {
                    f.retain(|p| !same_file(p, x));
                }
                f
            }
            Err(e) => {
                let msg = format!(
                    "cannot read policy directory {}: {e}; the previous policies stay in force",
                    self.dir.display()
                );
                let _ = writeln!(stderr, "bulwark: error: {msg}");
                return DirLoad {
                    files: None,
                    diagnostics: vec![Diagnostic::error(
                        DaemonCode::PolicyDir,
                        Some(&self.dir),
                        msg,
                    )],
                    failed: true,
                };
            }
        };
        let mut diagnostics = Vec::new();
        let mut failed = false;
        let mut next = FilePolicies::new();
        for file in files {
            let lint = backend.lint_file(&file);
            if !lint.text.is_empty() {
                let _ = write!(stderr, "{}", lint.text);
                if !lint.text.ends_with('\n') {
                    let _ = writeln!(stderr);
                }
            }
            let rejected = lint.has_errors();
            diagnostics.extend(lint.diagnostics);
            if !rejected {
                next.insert(file, lint.policies);
                continue;
            }
            failed = true;
            match self.last_good.get(&file) {
                Some(prev) => {
                    let _ = writeln!(
                        stderr,
                        "bulwark: {}: rejected; its previous version stays in force",
                        file.display()
                    );
                    next.insert(file, prev.clone());
                }
                None => {
                    let _ = writeln!(stderr, "bulwark: {}: rejected, skipped", file.display());
                }
            }
        }
        DirLoad {
            files: Some(next),
            diagnostics,
            failed,
        }
    }

    /// Records the files' policies as the last good ones (after a successful apply).
    pub fn commit(&mut self, files: FilePolicies<P>) {
        self.last_good = files;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fakes::{tmpdir, FakeBackend};

    #[test]
    fn files_are_found_like_the_lint_finds_them_even_through_symlink_loops() {
        let dir = tmpdir("policy-dir-walk");
        let pol = dir.join("policies");
        std::fs::create_dir_all(pol.join("sub")).unwrap();
        std::fs::write(pol.join("b.yaml"), "beta").unwrap();
        std::fs::write(pol.join("sub/a.yml"), "alpha").unwrap();
        std::fs::write(pol.join(".hidden.yaml"), "hidden").unwrap();
        std::fs::write(pol.join("notes.txt"), "error").unwrap();
        // A loop back to the top, and one to itself.
        std::os::unix::fs::symlink("..", pol.join("sub/up")).unwrap();
        std::os::unix::fs::symlink(".", pol.join("self")).unwrap();
        let workloads = pol.join("workloads.yaml");
        std::fs::write(&workloads, "error").unwrap();
        let d = PolicyDir::new(pol.clone(), Some(workloads));
        let mut stderr = Vec::new();
        let load = d.load(&FakeBackend::default(), &mut stderr);
        assert!(!load.failed, "{}", String::from_utf8_lossy(&stderr));
        let files = load.files.expect("the directory was read");
        assert_eq!(
            files.keys().cloned().collect::<Vec<_>>(),
            vec![pol.join("b.yaml"), pol.join("sub/a.yml")],
            "each file once, the workloads file and hidden and other files left out"
        );
        assert_eq!(all_policies(&files), vec!["beta", "alpha"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_rejected_file_keeps_its_last_good_version() {
        let dir = tmpdir("policy-dir-last-good");
        let pol = dir.join("policies");
        std::fs::write(pol.join("a.yaml"), "alpha").unwrap();
        let mut d = PolicyDir::new(pol.clone(), None);
        let mut stderr = Vec::new();
        let first = d.load(&FakeBackend::default(), &mut stderr);
        d.commit(first.files.unwrap());
        std::fs::write(pol.join("a.yaml"), "error").unwrap();
        std::fs::write(pol.join("new.yaml"), "error").unwrap();
        let load = d.load(&FakeBackend::default(), &mut stderr);
        assert!(load.failed);
        assert_eq!(load.diagnostics.len(), 2);
        assert_eq!(all_policies(&load.files.unwrap()), vec!["alpha"]);
        let text = String::from_utf8(stderr).unwrap();
        assert!(
            text.contains("a.yaml: rejected; its previous version stays in force"),
            "{text}"
        );
        assert!(text.contains("new.yaml: rejected, skipped"), "{text}");
        // An unreadable directory: nothing to apply, the reason reported.
        let gone = PolicyDir::<String>::new(dir.join("missing"), None);
        let load = gone.load(&FakeBackend::default(), &mut Vec::new());
        assert!(load.failed && load.files.is_none());
        assert!(load.diagnostics[0]
            .message()
            .contains("cannot read policy directory"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
