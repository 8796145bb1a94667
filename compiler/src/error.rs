//! Why a set of policies cannot be compiled, and where: a [`CompileError`] is an [`ErrorKind`]
//! (what is wrong, typed, so callers can match on it) at a [`Location`] (policy, rule,
//! selector). Every message names what to change.

use crate::capacity::Limit;
use bulwark_policy::values::{ValueError, ValueLimit};
use daemon_common as dc;
use std::fmt;

/// What is wrong. The first group are policies that say something the kernel side cannot do
/// (`bulwark lint` reports these too, as errors); the rest exceed a kernel limit
/// ([`ErrorKind::limit`] names it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A CIDR or port of a `matchDestinations` entry does not parse.
    #[error("matchDestinations: {0}")]
    InvalidValue(#[from] ValueError),
    /// A `matchBinaries` / `matchArgs` value contains NUL.
    #[error("{field} value {value:?} contains a NUL byte; paths and arguments cannot contain NUL")]
    NulByte { field: &'static str, value: String },
    #[error(
        "matchNamespaces has an empty namespace name; host processes are in no namespace: to \
         exclude them use `operator: In` with the namespaces you mean"
    )]
    EmptyNamespaceName,
    #[error(
        "a TracingPolicyNamespaced needs a non-empty metadata.namespace: it applies only to \
         workloads in that namespace"
    )]
    NamespacedWithoutNamespace,
    #[error(
        "matchDestinations needs `hook: connect`, `egress` or `ingress`; an exec has no destination"
    )]
    DestinationsOnExec,
    #[error(
        "matchEncryption needs `hook: egress` or `hook: ingress`: only the first payload shows \
         whether a connection is TLS"
    )]
    EncryptionOffEgress,
    #[error("action Sigkill is only available on `hook: exec`, `hook: syscall` and `hook: file`; on connect, egress and ingress use Block")]
    SigkillOffExec,
    #[error(
        "action Block is only available on `hook: connect`, `egress` and `ingress`; on exec, \
         syscall and file use Sigkill"
    )]
    BlockOnExec,
    #[error("matchSyscalls, matchSyscallArgs and matchReturn need `hook: syscall`")]
    SyscallFieldsOffSyscall,
    #[error("a `hook: syscall` selector must name its calls in matchSyscalls")]
    NoSyscalls,
    #[error("matchPaths and matchAccess need `hook: file`")]
    FileFieldsOffFile,
    #[error("a `hook: file` selector must name its files in matchPaths")]
    NoPaths,
    /// A `matchSyscallArgs` / `matchReturn` value that does not parse.
    #[error("matchSyscallArgs / matchReturn: {0}")]
    SyscallValue(String),
    #[error("matchSyscallArgs index {index} does not exist: a system call has arguments 0 to 5")]
    SyscallArgIndex { index: u32 },
    /// The set needs more of `limit` than one rule-set slot holds (`used` so far).
    #[error("{} (limit {} = {})", limit.refusal(*used), limit.name(), limit.max())]
    Capacity { limit: Limit, used: usize },
    /// The selectors of namespace `namespace`, with those that apply regardless of namespace
    /// (`shared` selectors), need more of `limit` than one group holds (`used` so far).
    #[error(
        "namespace `{namespace}` needs {used} {} in its group, more than a group holds (its \
         group also holds the {shared} selectors that apply regardless of namespace); a group \
         holds at most {} \
         (limit {} per group): split the namespace's policies across fewer selectors (several \
         values in one entry), or scope cluster-wide policies to the namespaces they concern \
         (matchNamespaces In) so they stop taking room in every group",
        limit.counted(),
        limit.max(),
        limit.name()
    )]
    GroupCapacity {
        namespace: String,
        limit: Limit,
        used: usize,
        shared: usize,
    },
    /// All groups of a node together (and its watch group) need more of `limit` than a slot's
    /// matcher map holds.
    #[error(
        "the node's policies need {used} {} in all their groups together (values of policies \
         that apply regardless of namespace count once per group), more than a slot's maps hold \
         (limit {} x NODE_MAP_FACTOR = {}): scope cluster-wide policies to the namespaces they \
         concern, or use fewer values",
        limit.counted(),
        limit.name(),
        limit.max() * u64::from(dc::NODE_MAP_FACTOR)
    )]
    NodeCapacity { limit: Limit, used: usize },
    /// The `hook: syscall` selectors of all groups together name more calls than a slot's
    /// `SYSCALL_SELECTORS` map holds (one entry per group and call).
    #[error(
        "the node's `hook: syscall` selectors need {used} entries in all their groups together \
         (one per distinct call a group's selectors name, native and i386 numbers apart; a \
         selector that applies regardless of namespace counts in every group), more than a \
         slot holds (limit MAX_SYSCALL_KEYS = {}): name the calls you mean with `In` (a `NotIn` \
         selector names nearly every call), or scope cluster-wide syscall policies to the \
         namespaces they concern",
        dc::MAX_SYSCALL_KEYS
    )]
    SyscallKeys { used: usize },
    /// A value longer than the kernel compares (`preview`: its first characters).
    #[error(
        "{field} value of {len} bytes ({preview:?}...) is longer than the kernel compares; \
         shorten it (a Prefix or Postfix of it may do) (limit {} = {})",
        limit.name,
        limit.max
    )]
    ValueTooLong {
        field: &'static str,
        limit: ValueLimit,
        len: usize,
        preview: String,
    },
    /// A `matchArgs` index past the argv elements the kernel examines.
    #[error(
        "matchArgs index {index} is past the arguments the kernel examines (argv[0] to argv[{}]) \
         (limit MAX_ARGS = {})",
        dc::MAX_ARGS - 1,
        dc::MAX_ARGS
    )]
    ArgIndex { index: u32 },
    /// More policies, rules in a policy or selectors in a rule than their ids can number.
    #[error("too many {what} (limit {limit} = {max})")]
    TooMany {
        what: &'static str,
        limit: &'static str,
        max: u64,
    },
}

impl ErrorKind {
    /// The kernel limit exceeded, as (constant name, value); `None` for invalid policies.
    pub fn limit(&self) -> Option<(&'static str, u64)> {
        match self {
            ErrorKind::Capacity { limit, .. } | ErrorKind::GroupCapacity { limit, .. } => {
                Some((limit.name(), limit.max()))
            }
            ErrorKind::NodeCapacity { limit, .. } => {
                Some((limit.name(), limit.max() * u64::from(dc::NODE_MAP_FACTOR)))
            }
            ErrorKind::ValueTooLong { limit, .. } => Some((limit.name, limit.max as u64)),
            ErrorKind::SyscallKeys { .. } => {
                Some(("MAX_SYSCALL_KEYS", u64::from(dc::MAX_SYSCALL_KEYS)))
            }
            ErrorKind::ArgIndex { .. } => Some(("MAX_ARGS", dc::MAX_ARGS as u64)),
            ErrorKind::TooMany { limit, max, .. } => Some((limit, *max)),
            _ => None,
        }
    }

    /// True when the policy says something the kernel side cannot do (not a limit).
    pub fn is_invalid(&self) -> bool {
        self.limit().is_none()
    }
}

/// Where in the input a [`CompileError`] is. `Display`: `policy ns/p, rule r, selectors[2]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Location {
    /// `metadata.name` of the policy.
    pub policy: String,
    /// Namespace of a `TracingPolicyNamespaced`.
    pub namespace: Option<String>,
    /// Name of the rule, when the error is about one.
    pub rule: Option<String>,
    /// Index of the selector within the rule, when the error is about one.
    pub selector: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "policy {ns}/{}", self.policy)?,
            None => write!(f, "policy {}", self.policy)?,
        }
        if let Some(rule) = &self.rule {
            write!(f, ", rule {rule}")?;
        }
        if let Some(selector) = self.selector {
            write!(f, ", selectors[{selector}]")?;
        }
        Ok(())
    }
}

/// A policy set that cannot be compiled. `Display` gives one line an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct CompileError {
    pub kind: ErrorKind,
    /// Boxed to keep `Result<_, CompileError>` small.
    pub at: Box<Location>,
}

impl Location {
    /// `kind` here.
    pub(crate) fn error(&self, kind: impl Into<ErrorKind>) -> CompileError {
        CompileError {
            kind: kind.into(),
            at: Box::new(self.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_policy_rule_selector_and_limit() {
        let loc = Location {
            policy: "p".into(),
            namespace: Some("ns".into()),
            rule: Some("r".into()),
            selector: Some(2),
        };
        let e = loc.error(ErrorKind::Capacity {
            limit: Limit::Selectors,
            used: 65,
        });
        assert_eq!(
            e.to_string(),
            "policy ns/p, rule r, selectors[2]: the policies need more than 64 selectors in \
             total; merge selectors that differ only in values, or load fewer policies (limit \
             MAX_SELECTORS = 64)"
        );
        assert_eq!(e.kind.limit(), Some(("MAX_SELECTORS", 64)));
        let e = Location {
            policy: "q".into(),
            ..Location::default()
        }
        .error(ErrorKind::BlockOnExec);
        assert!(e.to_string().starts_with("policy q: action Block"), "{e}");
        assert!(e.kind.is_invalid());
    }
}
