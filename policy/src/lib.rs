//! bulwark's policy model: the `TracingPolicy` / `TracingPolicyNamespaced` custom resources
//! (group `bulwark.dev`, version `v1alpha1`) as Rust types, from which the CRDs in `crds/` are
//! generated. Everything downstream (lint, the compiler, the controller) reads policies through
//! these types; nothing else defines what a policy is.

pub mod model;

pub use model::*;
