//! The controller's one call into the lint's semantic checks (`bulwark lint` and the controller
//! must agree on what is valid, so there is no second validator here): turns the lint's
//! diagnostics into [`Finding`]s, the form the status conditions carry.

use bulwark_policy::model::AnyPolicy;

/// One lint diagnostic as the controller reports it in a condition message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Stable lint code (`BW050`).
    pub code: String,
    /// True for errors (the policy is rejected); false for warnings (accepted, reported).
    pub error: bool,
    pub message: String,
    pub hint: Option<String>,
    /// JSON path into the object (`spec.rules[0].selectors[1]`).
    pub path: Option<String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            if self.error { "error" } else { "warning" },
            self.code
        )?;
        if let Some(p) = &self.path {
            write!(f, " at {p}")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// The verdict on one policy object.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Every finding, errors first.
    pub findings: Vec<Finding>,
}

impl Verdict {
    /// Accepted when no finding is an error.
    pub fn accepted(&self) -> bool {
        !self.findings.iter().any(|f| f.error)
    }

    /// A verdict for an object that could not even be read as a policy.
    pub fn unreadable(message: String) -> Verdict {
        Verdict {
            findings: vec![Finding {
                code: "BW021".into(),
                error: true,
                message,
                hint: Some(
                    "run `bulwark lint` on the manifest; the object does not match the \
                     TracingPolicy schema this node understands"
                        .into(),
                ),
                path: None,
            }],
        }
    }
}

/// Run the lint's semantic checks on one policy.
pub fn validate(policy: &AnyPolicy) -> Verdict {
    let mut findings = lint(policy);
    findings.sort_by_key(|f| !f.error);
    Verdict { findings }
}

fn lint(policy: &AnyPolicy) -> Vec<Finding> {
    bulwark_policy::validate::validate_policy(policy)
        .into_iter()
        .map(Finding::from)
        .collect()
}

impl From<bulwark_policy::diagnostics::Diagnostic> for Finding {
    fn from(d: bulwark_policy::diagnostics::Diagnostic) -> Finding {
        Finding {
            code: d.code.to_string(),
            error: d.severity == bulwark_policy::diagnostics::Severity::Error,
            message: d.message,
            hint: d.hint,
            path: d.path,
        }
    }
}
