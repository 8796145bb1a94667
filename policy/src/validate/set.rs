//! Checks across a set of policies: duplicate names (the kernel's capacity for a set is the
//! compiler's check).

use crate::diagnostics::{codes, Diagnostic};
use crate::model::*;
use std::collections::HashMap;

use super::d;

/// Cross-policy checks: duplicate names. Diagnostics name the policy in the message;
/// `load::lint_paths` also places them in the file. The kernel's capacity for a set is the
/// compiler's check (`bulwark_compiler::validate_set` runs both).
pub fn validate_set(ps: &[AnyPolicy]) -> Vec<Diagnostic> {
    let refs: Vec<&AnyPolicy> = ps.iter().collect();
    duplicates_indexed(&refs)
        .into_iter()
        .map(|(_, d, _)| d)
        .collect()
}

fn kind_word(p: &AnyPolicy) -> &'static str {
    match p {
        AnyPolicy::Cluster(_) => "TracingPolicy",
        AnyPolicy::Namespaced(_) => "TracingPolicyNamespaced",
    }
}

/// Duplicate policy names: `(policy, diagnostic, first policy of that name)`. One pass with
/// a map from (kind, namespace, name) to the first policy holding it: linear in the set.
pub fn duplicates_indexed(ps: &[&AnyPolicy]) -> Vec<(usize, Diagnostic, Option<usize>)> {
    let mut out = Vec::new();
    let mut first: HashMap<(&str, Option<&str>, &str), usize> = HashMap::with_capacity(ps.len());
    for (j, pj) in ps.iter().enumerate() {
        if pj.name().is_empty() {
            continue;
        }
        let key = (kind_word(pj), pj.scope_namespace(), pj.name());
        let i = *first.entry(key).or_insert(j);
        if i != j {
            let scope = pj
                .scope_namespace()
                .map(|n| format!(" in namespace `{n}`"))
                .unwrap_or_default();
            out.push((
                j,
                d(
                    codes::DUPLICATE_POLICY,
                    "metadata.name",
                    format!("{} `{}`{scope} is defined twice; the second replaces the first when applied", kind_word(pj), pj.name()),
                    "rename one of them, or merge their rules into one policy",
                ),
                Some(i),
            ));
        }
    }
    out
}
