//! bulwark's policy model: the `TracingPolicy` / `TracingPolicyNamespaced` custom resources
//! (group `bulwark.dev`, version `v1alpha1`) as Rust types, from which the CRDs in `crds/` are
//! generated; and the checks behind `bulwark lint`. Everything downstream (lint, the compiler,
//! the controller) reads policies through these types; nothing else defines what a policy is.
//!
//! Data flows one way: YAML text -> marked tree ([`yaml`]) -> schema checks ([`schema`]) ->
//! typed model ([`model`]) -> semantic checks ([`validate`]) -> [`diagnostics`]. [`load`] runs
//! the whole path for files; the controller calls [`validate::validate_policy`] directly.
//! [`protocol`] is the `EncryptedProtocol` declaration (an operator's encrypted protocol, by
//! byte signature), linted alongside policies.
//! [`values`] is the one parser of the values a policy writes as text (CIDRs, ports), used by
//! validation and the compiler alike. [`admission`] adds to the generated CRD schema what the API
//! server can check itself, so `kubectl apply` refuses those mistakes in the lint's words. The model's word enums (hook, action, mode, encryption)
//! get their one word table from [`words!`], which the event schema (crate `bulwark-events`)
//! uses for its own words too.

pub mod admission;
pub mod diagnostics;
pub mod load;
pub mod model;
pub mod protocol;
pub mod schema;
pub mod syscalls;
pub mod validate;
pub mod values;
pub mod words;
pub mod yaml;

pub use diagnostics::{Diagnostic, Severity};
pub use load::{lint_paths, lint_source, LintOutcome};
pub use model::*;
pub use words::UnknownWord;

/// What [`words!`] expands to refers to these, so crates using the macro need not depend on
/// serde and schemars themselves.
#[doc(hidden)]
pub mod __private {
    pub use schemars;
    pub use serde;
}

/// The Kubernetes CRD type [`crds`] returns (re-exported so callers need no k8s-openapi).
pub use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// The CRDs of the policy model: `TracingPolicy`, then `TracingPolicyNamespaced`.
/// Their schemas carry what the API server can check itself ([`admission`]).
/// (`EncryptedProtocol`'s is [`protocol::crd`].)
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![TracingPolicy::crd(), TracingPolicyNamespaced::crd()];
    crds.iter_mut().for_each(admission::refine_crd);
    crds
}

/// A CRD as YAML, as `bulwark crds` prints it and `crds/*.yaml` hold it.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    match serde_json::to_value(crd) {
        Ok(v) => yaml::to_yaml(&v),
        Err(e) => format!("# cannot serialize CRD: {e}\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_yaml_reads_back_as_the_generated_crd() {
        for crd in crds() {
            let text = crd_yaml(&crd);
            let stream = yaml::parse(&text);
            assert!(stream.error.is_none(), "{:?}", stream.error);
            assert_eq!(stream.documents.len(), 1);
            let back = stream.documents[0].root.to_json();
            assert_eq!(back, serde_json::to_value(&crd).unwrap());
        }
    }

    #[test]
    fn arg_index_schema_has_no_unknown_format() {
        let text = crd_yaml(&crds()[0]);
        assert!(
            !text.contains("uint32"),
            "format: uint32 makes the API server warn"
        );
    }
}
