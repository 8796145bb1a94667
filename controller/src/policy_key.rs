//! Which policy object a status, a load result or a violation is about: [`PolicyKey`] (kind,
//! namespace, name).

use bulwark_policy::model::AnyPolicy;

/// Which of the two policy kinds an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// `TracingPolicy` (cluster-wide).
    Cluster,
    /// `TracingPolicyNamespaced`.
    Namespaced,
}

impl PolicyKind {
    /// The Kubernetes `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            PolicyKind::Cluster => "TracingPolicy",
            PolicyKind::Namespaced => "TracingPolicyNamespaced",
        }
    }
}

/// Identity of one policy object: kind, namespace (namespaced kind only) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyKey {
    /// The key of a loaded policy.
    pub fn of(policy: &AnyPolicy) -> PolicyKey {
        match policy {
            AnyPolicy::Cluster(p) => PolicyKey {
                kind: PolicyKind::Cluster,
                namespace: None,
                name: p.metadata.name.clone().unwrap_or_default(),
            },
            AnyPolicy::Namespaced(p) => PolicyKey {
                kind: PolicyKind::Namespaced,
                namespace: Some(
                    p.metadata
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                ),
                name: p.metadata.name.clone().unwrap_or_default(),
            },
        }
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind.kind(), ns, self.name),
            None => write!(f, "{}/{}", self.kind.kind(), self.name),
        }
    }
}
