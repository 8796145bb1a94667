//! The whole lint: the policy crate's checks plus the kernel-capacity check ([`capacity`],
//! BW092), which the compiler owns because only the compiler knows how a set is laid out in
//! the kernel maps. `bulwark lint`, `bulwark compile` and the daemon's policy loading lint
//! through here, so they all report the same diagnostics.

use crate::capacity::capacity;
use bulwark_policy::load::{self, LintOutcome, LoadError};
use bulwark_policy::{validate, AnyPolicy, Diagnostic};
use std::path::PathBuf;

/// `bulwark_policy::load::lint_paths` with the capacity check over every policy found without
/// errors (the set that would be loaded together).
pub fn lint_paths(paths: &[PathBuf]) -> Result<LintOutcome, LoadError> {
    load::lint_paths_with(paths, &capacity)
}

/// `bulwark_policy::load::lint_source` with the capacity check over the file's policies
/// without errors.
pub fn lint_source(file: &str, text: &str) -> LintOutcome {
    load::lint_source_with(file, text, &capacity)
}

/// Checks across a set of typed policies (no positions): duplicate names, then the kernel
/// capacity of the whole set.
pub fn validate_set(policies: &[AnyPolicy]) -> Vec<Diagnostic> {
    let refs: Vec<&AnyPolicy> = policies.iter().collect();
    let mut out = validate::validate_set(policies);
    out.extend(capacity(&refs).into_iter().map(|(_, d)| d));
    out
}
