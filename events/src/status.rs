//! `status`: the daemon's own state, the synchronisation point for scripts and tests, with the
//! diagnostics of the (re)load it reports.

pub use bulwark_policy::Severity;
use serde::{Deserialize, Serialize};

bulwark_policy::words! {
    /// What a `status` event reports.
    pub enum State ("status state") {
        /// Written once at start, when the first policy set is in force.
        Ready = "ready",
        /// A change was applied with no error.
        Reloaded = "reloaded",
        /// Something in a change was rejected (see the diagnostics).
        ReloadFailed = "reload_failed",
        /// Periodic: events were lost since the last status.
        Running = "running",
        /// The last line, after the programs are detached.
        Stopping = "stopping",
    }
}

/// Daemon state (`type: status`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Status {
    pub state: State,
    /// Number of rule sets applied to the kernel so far (1 after the first load).
    pub generation: u64,
    /// Names of the policies in force (`namespace/name` for namespaced ones), sorted.
    pub policies: Vec<String>,
    /// What this (re)load reported.
    pub diagnostics: Vec<Diagnostic>,
    /// Records the kernel could not deliver (ring buffer full) plus records userspace could
    /// not decode, since start.
    pub lost_events: u64,
    /// Enforcement the kernel could not keep by the usual means since start (full maps,
    /// connections refused for lack of room), one sentence each; empty when none.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Connects by processes whose selector bits were computed for another rule set than the
    /// one in force, since start (the kernel's safety net of a rule-set switch; 0 unless a
    /// switch left a process behind).
    #[serde(default)]
    pub stale_processes: u64,
    /// Milliseconds the last policy load spent reading, linting and compiling the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
    /// Milliseconds the last successful kernel apply took (write the inactive slot, reseed
    /// running processes, switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply_ms: Option<f64>,
}

/// One entry of `status.diagnostics`: a lint finding, or a problem the daemon found itself.
/// Each keeps its own JSON shape (read back by trying the daemon's codes first).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Diagnostic {
    Daemon(DaemonDiagnostic),
    Lint(LintDiagnostic),
}

/// A lint diagnostic exactly as `bulwark lint -o json` writes it (every key present, `null`
/// when unknown).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LintDiagnostic {
    /// `BW` + three digits (docs/lint.md).
    pub code: String,
    pub severity: Severity,
    pub message: String,
    pub hint: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
    /// JSON path into the policy (`spec.rules[0].selectors[1]`).
    pub path: Option<String>,
}

bulwark_policy::words! {
    /// What the daemon itself reports on (the `code` of its own diagnostics).
    pub enum DaemonCode ("daemon diagnostic code") {
        /// A policy set did not compile.
        Compile = "compile",
        /// The kernel refused a rule set.
        Apply = "apply",
        /// The workloads file, or registering a workload.
        Workloads = "workloads",
        /// The policy directory could not be read.
        PolicyDir = "policy-dir",
        /// A policy file could not be read.
        Io = "io",
    }
}

/// A problem the daemon found itself (not the lint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DaemonDiagnostic {
    pub code: DaemonCode,
    pub severity: Severity,
    pub message: String,
    /// The file concerned, if any.
    pub file: Option<String>,
}

impl DaemonDiagnostic {
    /// An error of the daemon's own.
    pub fn error(code: DaemonCode, file: Option<&std::path::Path>, message: String) -> Self {
        DaemonDiagnostic {
            code,
            severity: Severity::Error,
            message,
            file: file.map(|f| f.display().to_string()),
        }
    }
}

impl From<DaemonDiagnostic> for Diagnostic {
    fn from(d: DaemonDiagnostic) -> Self {
        Diagnostic::Daemon(d)
    }
}

impl Diagnostic {
    /// An error of the daemon's own ([`DaemonDiagnostic::error`]).
    pub fn error(
        code: DaemonCode,
        file: Option<&std::path::Path>,
        message: impl Into<String>,
    ) -> Self {
        DaemonDiagnostic::error(code, file, message.into()).into()
    }

    /// A warning of the daemon's own: reported, nothing rejected.
    pub fn warning(
        code: DaemonCode,
        file: Option<&std::path::Path>,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic::Daemon(DaemonDiagnostic {
            severity: Severity::Warning,
            ..DaemonDiagnostic::error(code, file, message.into())
        })
    }

    /// `BWnnn` or the daemon's code.
    pub fn code(&self) -> &str {
        match self {
            Diagnostic::Daemon(d) => d.code.as_str(),
            Diagnostic::Lint(d) => &d.code,
        }
    }

    pub fn severity(&self) -> Severity {
        match self {
            Diagnostic::Daemon(d) => d.severity,
            Diagnostic::Lint(d) => d.severity,
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity() == Severity::Error
    }

    pub fn message(&self) -> &str {
        match self {
            Diagnostic::Daemon(d) => &d.message,
            Diagnostic::Lint(d) => &d.message,
        }
    }

    pub fn file(&self) -> Option<&str> {
        match self {
            Diagnostic::Daemon(d) => d.file.as_deref(),
            Diagnostic::Lint(d) => d.file.as_deref(),
        }
    }
}

impl From<bulwark_policy::Diagnostic> for Diagnostic {
    fn from(d: bulwark_policy::Diagnostic) -> Self {
        Diagnostic::from(&d)
    }
}

impl From<&bulwark_policy::Diagnostic> for Diagnostic {
    fn from(d: &bulwark_policy::Diagnostic) -> Self {
        Diagnostic::Lint(LintDiagnostic {
            code: d.code.to_string(),
            severity: d.severity,
            message: d.message.clone(),
            hint: d.hint.clone(),
            file: d.file.clone(),
            line: d.line,
            column: d.column,
            path: d.path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bulwark_policy::diagnostics::codes;

    #[test]
    fn lint_diagnostics_keep_the_lint_json_shape() {
        let lint = [
            bulwark_policy::Diagnostic::new(codes::INVALID_PORT, "port 0")
                .hint("use 1..65535")
                .file("p.yaml")
                .at(3, 7)
                .path("spec.rules[0]"),
            bulwark_policy::Diagnostic::new(codes::NO_RULES, "no rules"),
        ];
        let report: serde_json::Value =
            serde_json::from_str(&bulwark_policy::diagnostics::render_json(&lint)).unwrap();
        for (i, d) in lint.iter().enumerate() {
            let ours = Diagnostic::from(d);
            let v = serde_json::to_value(&ours).unwrap();
            assert_eq!(
                v, report["diagnostics"][i],
                "as `bulwark lint -o json` has it"
            );
            assert_eq!(serde_json::from_value::<Diagnostic>(v).unwrap(), ours);
        }
    }

    #[test]
    fn daemon_diagnostics_read_back_as_the_daemons() {
        let d = Diagnostic::error(
            DaemonCode::PolicyDir,
            Some(std::path::Path::new("/etc/p")),
            "cannot read",
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code":"policy-dir","severity":"error","message":"cannot read",
                "file":"/etc/p"})
        );
        let back: Diagnostic = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        assert!(back.is_error());
        assert_eq!((back.code(), back.file()), ("policy-dir", Some("/etc/p")));
        assert_eq!(back.message(), "cannot read");
    }
}
