//! What a (re)load reports in its status event: lint findings exactly as `bulwark lint -o json`
//! gives them, and the problems the daemon found itself (compile, apply, workloads, policy
//! directory, I/O). Typed while the daemon works with them; turned into the status event's
//! JSON in one place, [`Diagnostic::to_json`].

use bulwark_policy::Severity;
use std::path::{Path, PathBuf};

/// One finding of a load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Diagnostic {
    /// Found by the lint (one file, or the set as a whole). Boxed: lint findings are large
    /// and rare, daemon ones small.
    Lint(Box<bulwark_policy::Diagnostic>),
    /// Found by the daemon.
    Daemon(DaemonDiagnostic),
}

/// A problem the daemon found itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonDiagnostic {
    pub code: DaemonCode,
    pub severity: Severity,
    pub message: String,
    /// The file it is about, if any.
    pub file: Option<PathBuf>,
}

/// The daemon's own diagnostic codes (documented in docs/events.md, `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DaemonCode {
    /// A policy set (or one policy of it) does not compile.
    Compile,
    /// The kernel refused a rule set or a map update.
    Apply,
    /// The workloads file, or resolving its cgroups.
    Workloads,
    /// The policy directory cannot be read.
    PolicyDir,
    /// A policy file cannot be read.
    Io,
}

impl DaemonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonCode::Compile => "compile",
            DaemonCode::Apply => "apply",
            DaemonCode::Workloads => "workloads",
            DaemonCode::PolicyDir => "policy-dir",
            DaemonCode::Io => "io",
        }
    }
}

impl Diagnostic {
    /// An error the daemon found.
    pub fn error(code: DaemonCode, file: Option<&Path>, message: impl Into<String>) -> Self {
        Self::daemon(code, Severity::Error, file, message.into())
    }

    /// A warning the daemon found (reported, nothing rejected).
    pub fn warning(code: DaemonCode, file: Option<&Path>, message: impl Into<String>) -> Self {
        Self::daemon(code, Severity::Warning, file, message.into())
    }

    fn daemon(code: DaemonCode, severity: Severity, file: Option<&Path>, message: String) -> Self {
        Diagnostic::Daemon(DaemonDiagnostic {
            code,
            severity,
            message,
            file: file.map(Path::to_path_buf),
        })
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    pub fn severity(&self) -> Severity {
        match self {
            Diagnostic::Lint(d) => d.severity,
            Diagnostic::Daemon(d) => d.severity,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Diagnostic::Lint(d) => &d.message,
            Diagnostic::Daemon(d) => &d.message,
        }
    }

    /// The JSON object of a status event's `diagnostics` (shape in docs/events.md).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            // A plain struct of strings and numbers: serializing it cannot fail.
            Diagnostic::Lint(d) => serde_json::to_value(d).unwrap_or_default(),
            Diagnostic::Daemon(d) => serde_json::json!({
                "code": d.code.as_str(),
                "severity": d.severity.as_str(),
                "message": d.message,
                "file": d.file.as_ref().map(|f| f.display().to_string()),
            }),
        }
    }
}

impl From<bulwark_policy::Diagnostic> for Diagnostic {
    fn from(d: bulwark_policy::Diagnostic) -> Self {
        Diagnostic::Lint(Box::new(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::diagnostics::codes;

    #[test]
    fn json_shapes_are_the_documented_ones() {
        let d = Diagnostic::error(DaemonCode::PolicyDir, Some(Path::new("/p")), "gone");
        assert!(d.is_error());
        assert_eq!(
            d.to_json(),
            serde_json::json!({"code": "policy-dir", "severity": "error", "message": "gone",
                               "file": "/p"})
        );
        let w = Diagnostic::warning(DaemonCode::Workloads, None, "later");
        assert!(!w.is_error());
        assert_eq!(w.message(), "later");
        assert_eq!(
            w.to_json(),
            serde_json::json!({"code": "workloads", "severity": "warning", "message": "later",
                               "file": null})
        );
        // Lint findings exactly as `bulwark lint -o json` writes them.
        let lint = bulwark_policy::Diagnostic::new(codes::UNKNOWN_FIELD, "no such field")
            .file("a.yaml")
            .at(3, 5);
        let j = Diagnostic::from(lint.clone()).to_json();
        assert_eq!(j, serde_json::to_value(&lint).unwrap());
        assert_eq!(j["code"], "BW020");
        assert_eq!(j["line"], 3);
    }
}
