//! Loading a policy directory with "last good" semantics: every policy file is linted on its
//! own; a file with errors is reported (the same text `bulwark lint` prints) and its previous
//! good version, if any, stays in force; a set that fails set-level validation, compilation or
//! the kernel apply leaves the previous set in force entirely. The lint and compile steps are
//! behind [`PolicyBackend`] so this logic is tested with fakes, without a kernel.

use bulwark_events::{DaemonCode, DaemonDiagnostic, Diagnostic};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The result of linting one file.
#[derive(Clone, Debug)]
pub struct FileLint<P> {
    /// Policies of the file (ignored when `has_errors`).
    pub policies: Vec<P>,
    pub has_errors: bool,
    /// Diagnostics (for status events).
    pub diagnostics: Vec<Diagnostic>,
    /// Human text, exactly as `bulwark lint` renders it (for stderr); empty when clean.
    pub text: String,
}

/// Lint and compile, as the daemon needs them.
pub trait PolicyBackend {
    type Policy: Clone;
    type Rules;
    /// Lints one file.
    fn lint_file(&self, path: &Path) -> FileLint<Self::Policy>;
    /// Checks across files (e.g. duplicate names); error diagnostics reject the whole set.
    fn validate_set(&self, policies: &[Self::Policy]) -> FileLint<Self::Policy>;
    /// Compiles a set; the error is one diagnostic (code `compile`).
    fn compile(&mut self, policies: &[Self::Policy]) -> Result<Self::Rules, DaemonDiagnostic>;
    /// Id of a Kubernetes namespace name, from the same table the compiler interns into.
    fn intern_namespace(&mut self, name: &str) -> u32;
    /// Display name of a policy (`name`, or `namespace/name` for namespaced ones).
    fn label(policy: &Self::Policy) -> String;
}

/// Policy files of a directory, recursively, sorted: `*.yaml` and `*.yml` (as `bulwark lint`
/// reads a directory); hidden files and directories (editor temporaries, `..data` of
/// ConfigMap mounts) skipped.
pub fn policy_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for ent in std::fs::read_dir(&d)? {
            let ent = ent?;
            let name = ent.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = ent.path();
            // Follow symlinks (ConfigMap mounts are symlinks).
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if [".yaml", ".yml"].iter().any(|s| name.ends_with(s)) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A compiled set ready to apply.
pub struct Candidate<P, R> {
    pub rules: R,
    /// Per-file policies to record as last good once applied.
    pub files: BTreeMap<PathBuf, Vec<P>>,
    /// Labels of the policies in the set, sorted.
    pub names: Vec<String>,
}

/// What one load of the directory produced.
pub struct LoadResult<P, R> {
    /// New rules to apply; `None` when the previous set stays in force.
    pub candidate: Option<Candidate<P, R>>,
    /// Everything reported (error and warning diagnostics).
    pub diagnostics: Vec<Diagnostic>,
    /// True when something was rejected (a file, the set, or compilation).
    pub failed: bool,
}

/// Per-file last-good state of a policy directory.
pub struct PolicyDir<P> {
    pub dir: PathBuf,
    /// A file below `dir` that is not a policy (the workloads file, if kept there).
    exclude: Option<PathBuf>,
    last_good: BTreeMap<PathBuf, Vec<P>>,
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

    /// Lints and compiles the directory. Lint text goes to `stderr`.
    pub fn load<B: PolicyBackend<Policy = P>>(
        &self,
        backend: &mut B,
        stderr: &mut dyn std::io::Write,
    ) -> LoadResult<P, B::Rules> {
        let mut diagnostics = Vec::new();
        let mut failed = false;
        let files = match policy_files(&self.dir) {
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
                return LoadResult {
                    candidate: None,
                    diagnostics: vec![Diagnostic::daemon(
                        DaemonCode::PolicyDir,
                        Some(&self.dir),
                        msg,
                    )],
                    failed: true,
                };
            }
        };
        let mut next: BTreeMap<PathBuf, Vec<P>> = BTreeMap::new();
        for file in files {
            let lint = backend.lint_file(&file);
            if !lint.text.is_empty() {
                let _ = write!(stderr, "{}", lint.text);
                if !lint.text.ends_with('\n') {
                    let _ = writeln!(stderr);
                }
            }
            diagnostics.extend(lint.diagnostics);
            if lint.has_errors {
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
            } else {
                next.insert(file, lint.policies);
            }
        }
        let set: Vec<P> = next.values().flatten().cloned().collect();
        let check = backend.validate_set(&set);
        if !check.text.is_empty() {
            let _ = write!(stderr, "{}", check.text);
        }
        diagnostics.extend(check.diagnostics);
        if check.has_errors {
            let _ = writeln!(
                stderr,
                "bulwark: the policy set is invalid as a whole; the previous set stays in force"
            );
            return LoadResult {
                candidate: None,
                diagnostics,
                failed: true,
            };
        }
        match backend.compile(&set) {
            Ok(rules) => {
                let mut names: Vec<String> = set.iter().map(B::label).collect();
                names.sort();
                LoadResult {
                    candidate: Some(Candidate {
                        rules,
                        files: next,
                        names,
                    }),
                    diagnostics,
                    failed,
                }
            }
            Err(diag) => {
                let _ = writeln!(
                    stderr,
                    "bulwark: error: the policy set does not compile: {}; the previous set stays in force",
                    diag.message
                );
                diagnostics.push(diag.into());
                LoadResult {
                    candidate: None,
                    diagnostics,
                    failed: true,
                }
            }
        }
    }

    /// Records a candidate's per-file state as the last good one (after a successful apply).
    pub fn commit(&mut self, files: BTreeMap<PathBuf, Vec<P>>) {
        self.last_good = files;
    }
}
