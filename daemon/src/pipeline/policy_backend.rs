//! What the daemon core needs from the policy side, as a trait so the core is tested with
//! fakes: lint one file, validate and compile a set, intern namespace names. `bulwark run`
//! implements it with the policy crate's lint and the compiler ([`crate::lint_compiler`]).

use bulwark_events::{DaemonDiagnostic, Diagnostic};
use std::path::Path;

/// The result of linting one file, or of validating a set.
#[derive(Clone, Debug)]
pub struct FileLint<P> {
    /// Policies of the file (ignored when it has errors).
    pub policies: Vec<P>,
    /// Everything found (errors and warnings).
    pub diagnostics: Vec<Diagnostic>,
    /// Human text, exactly as `bulwark lint` renders it (for stderr); empty when clean.
    pub text: String,
}

impl<P> FileLint<P> {
    /// True when something was found that rejects the file (or set).
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Lint and compile, as the daemon needs them.
pub trait PolicyBackend {
    type Policy: Clone;
    type Rules;
    /// Lints one file.
    fn lint_file(&self, path: &Path) -> FileLint<Self::Policy>;
    /// Checks across files (e.g. duplicate names); error diagnostics reject the whole set.
    fn validate_set(&self, policies: &[Self::Policy]) -> FileLint<Self::Policy>;
    /// Compiles a set; the error is one diagnostic of the daemon's own (code `compile`).
    fn compile(&mut self, policies: &[Self::Policy]) -> Result<Self::Rules, DaemonDiagnostic>;
    /// Id of a Kubernetes namespace name, from the same table the compiler interns into.
    fn intern_namespace(&mut self, name: &str) -> u32;
    /// Display name of a policy (`name`, or `namespace/name` for namespaced ones).
    fn label(policy: &Self::Policy) -> String;
}
