//! bulwark's policy model: the `TracingPolicy` / `TracingPolicyNamespaced` custom resources
//! (group `bulwark.dev`, version `v1alpha1`) as Rust types, from which the CRDs in `crds/` are
//! generated; and the checks behind `bulwark lint`. Everything downstream (lint, the compiler,
//! the controller) reads policies through these types; nothing else defines what a policy is.
//!
//! Data flows one way: YAML text -> marked tree ([`yaml`]) -> schema checks ([`schema`]) ->
//! typed model ([`model`]) -> semantic checks ([`validate`]) -> [`diagnostics`]. [`load`] runs
//! the whole path for files; the controller calls [`validate::validate_policy`] directly.

pub mod diagnostics;
pub mod load;
pub mod model;
pub mod schema;
pub mod validate;
pub mod yaml;

pub use diagnostics::{Diagnostic, Severity};
pub use load::{lint_paths, lint_source, LintOutcome};
pub use model::*;

/// The Kubernetes CRD type [`crds`] returns (re-exported so callers need no k8s-openapi).
pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs of the policy model: `TracingPolicy`, then `TracingPolicyNamespaced`.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![TracingPolicy::crd(), TracingPolicyNamespaced::crd()]
}

/// A CRD as YAML, as `bulwark crds` prints it and `crds/*.yaml` hold it.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    match serde_json::to_value(crd) {
        Ok(v) => yaml::to_yaml(&v),
        Err(e) => format!("# cannot serialize CRD: {e}\n"),
    }
}
