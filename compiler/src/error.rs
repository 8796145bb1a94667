//! `CompileError`: why a set of policies cannot be compiled, and where. Every error names the
//! policy (and rule and selector when it is about one) and says what to change.

use std::fmt;

/// What kind of problem a [`CompileError`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The policy says something the kernel side cannot do (e.g. `Sigkill` on `connect`, a
    /// malformed CIDR). `bulwark lint` reports these too.
    Invalid,
    /// A kernel limit is exceeded: `limit` names the constant in `daemon-common`, `max` its value.
    LimitExceeded { limit: &'static str, max: u64 },
}

/// Where in the input a [`CompileError`] is.
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

/// A policy set that cannot be compiled. `Display` gives one line an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    pub kind: ErrorKind,
    /// What is wrong and how to fix it.
    pub message: String,
    /// Boxed to keep `Result<_, CompileError>` small.
    pub at: Box<Location>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = &self.at;
        match &at.namespace {
            Some(ns) => write!(f, "policy {ns}/{}", at.policy)?,
            None => write!(f, "policy {}", at.policy)?,
        }
        if let Some(rule) = &at.rule {
            write!(f, ", rule {rule}")?;
        }
        if let Some(selector) = at.selector {
            write!(f, ", selectors[{selector}]")?;
        }
        write!(f, ": {}", self.message)?;
        if let ErrorKind::LimitExceeded { limit, max } = &self.kind {
            write!(f, " (limit {limit} = {max})")?;
        }
        Ok(())
    }
}

impl std::error::Error for CompileError {}

/// Where the compiler is, to build errors that say so.
pub(crate) type Loc = Location;

impl Location {
    pub(crate) fn invalid(&self, message: impl Into<String>) -> CompileError {
        self.error(ErrorKind::Invalid, message.into())
    }

    pub(crate) fn limit(
        &self,
        limit: &'static str,
        max: u64,
        message: impl Into<String>,
    ) -> CompileError {
        self.error(ErrorKind::LimitExceeded { limit, max }, message.into())
    }

    fn error(&self, kind: ErrorKind, message: String) -> CompileError {
        CompileError {
            kind,
            message,
            at: Box::new(self.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_policy_rule_selector_and_limit() {
        let loc = Loc {
            policy: "p".into(),
            namespace: Some("ns".into()),
            rule: Some("r".into()),
            selector: Some(2),
        };
        let e = loc.limit("MAX_SELECTORS", 64, "too many selectors");
        assert_eq!(
            e.to_string(),
            "policy ns/p, rule r, selectors[2]: too many selectors (limit MAX_SELECTORS = 64)"
        );
        let e = Loc {
            policy: "q".into(),
            ..Loc::default()
        }
        .invalid("bad");
        assert_eq!(e.to_string(), "policy q: bad");
        assert_eq!(e.kind, ErrorKind::Invalid);
    }
}
