//! What a conversion reports: per input policy, per hook and per selector, whether it was
//! translated fully, partly or not at all, and every finding (what was dropped or changed, why,
//! where in the input). Rendered as text for people and as JSON for tools; the JSON shape is
//! documented in docs/convert.md and only ever gains fields.

use bulwark_policy::diagnostics::{self, Diagnostic};
use serde::Serialize;
use std::fmt::Write;

/// How much of something was translated.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Everything, with the same meaning.
    Full,
    /// Something was dropped or changed; the findings say what.
    Partial,
    /// Nothing: no bulwark rule came out of it.
    None,
}

impl Outcome {
    /// The words the text report uses.
    pub fn describe(self) -> &'static str {
        match self {
            Outcome::Full => "translated fully",
            Outcome::Partial => "translated partly",
            Outcome::None => "not translated",
        }
    }

    /// The outcome of a whole made of parts with these outcomes: full when every part is,
    /// none when every part is (or there are no parts), else partial.
    pub fn combine(parts: impl IntoIterator<Item = Outcome>) -> Outcome {
        let (mut any, mut all_full, mut all_none) = (false, true, true);
        for p in parts {
            any = true;
            all_full &= p == Outcome::Full;
            all_none &= p == Outcome::None;
        }
        match (any, all_full, all_none) {
            (false, _, _) | (_, _, true) => Outcome::None,
            (_, true, _) => Outcome::Full,
            _ => Outcome::Partial,
        }
    }
}

/// What kind of difference a [`Finding`] records.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FindingKind {
    /// Left out of the output (a condition, an action, a field).
    Dropped,
    /// In the output with a different meaning or value (an action, the mode, a name).
    Changed,
    /// Worth knowing, but the output means the same as the input.
    Note,
}

/// One difference between the Tetragon input and the bulwark output.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// Path into the input document (`spec.kprobes[0].selectors[1].matchPIDs`).
    pub path: String,
    /// 1-based line in the input file.
    pub line: u32,
    /// What was dropped or changed.
    pub what: String,
    /// Why, and what to do about it.
    pub why: String,
    /// True when dropping it makes the selector match more than the original did.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub broadens: bool,
}

impl Finding {
    /// True for findings that make the translation partial.
    pub fn is_loss(&self) -> bool {
        self.kind != FindingKind::Note
    }
}

/// One Tetragon selector.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SelectorReport {
    pub path: String,
    pub line: u32,
    pub outcome: Outcome,
    /// Why nothing came out of it, when `outcome` is `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub findings: Vec<Finding>,
}

/// One Tetragon hook (`kprobes[i]`, `tracepoints[i]`, `lsmhooks[i]`, ...).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct HookReport {
    pub path: String,
    pub line: u32,
    /// The kernel function, tracepoint or LSM hook (`tcp_connect`, `sched/sched_process_exec`).
    pub call: String,
    pub outcome: Outcome,
    /// The bulwark rule it became.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The bulwark hook of that rule (`exec`, `connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    /// Why nothing came out of it, when `outcome` is `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub selectors: Vec<SelectorReport>,
}

/// A problem with the input itself (not YAML, not a Tetragon policy, a malformed field).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct InputError {
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: String,
}

/// One input document.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct PolicyReport {
    pub file: String,
    pub line: u32,
    /// `metadata.name` as written in the input (empty when missing).
    pub name: String,
    /// `TracingPolicy` or `TracingPolicyNamespaced` (as written in the input).
    pub kind: String,
    pub outcome: Outcome,
    /// Where the bulwark policy was written (`-` for standard output); none when not translated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// The bulwark policy's name and mode, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bulwark_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Why the document could not be read as a Tetragon policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<InputError>,
    /// Findings about the policy as a whole (metadata, `podSelector`, options, mode).
    pub findings: Vec<Finding>,
    pub hooks: Vec<HookReport>,
    /// What `bulwark lint` says about the output (errors here are a bug in the conversion).
    pub lint: Vec<Diagnostic>,
}

impl PolicyReport {
    /// A report for a document that could not be read as a Tetragon policy.
    pub fn input_error(file: &str, line: u32, column: u32, message: String, hint: String) -> Self {
        PolicyReport {
            file: file.to_string(),
            line,
            name: String::new(),
            kind: String::new(),
            outcome: Outcome::None,
            output: None,
            bulwark_name: None,
            mode: None,
            error: Some(InputError {
                line,
                column,
                message,
                hint,
            }),
            findings: Vec::new(),
            hooks: Vec::new(),
            lint: Vec::new(),
        }
    }

    /// Lint errors in the output.
    pub fn lint_errors(&self) -> usize {
        self.lint.iter().filter(|d| d.is_error()).count()
    }
}

/// How many policies came out fully, partly, not at all.
#[derive(Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub policies: usize,
    pub full: usize,
    pub partial: usize,
    pub none: usize,
    /// Policies whose output the lint finds errors in.
    pub lint_errors: usize,
}

impl Summary {
    pub fn of(reports: &[PolicyReport]) -> Summary {
        let mut s = Summary {
            policies: reports.len(),
            ..Summary::default()
        };
        for r in reports {
            match r.outcome {
                Outcome::Full => s.full += 1,
                Outcome::Partial => s.partial += 1,
                Outcome::None => s.none += 1,
            }
            s.lint_errors += usize::from(r.lint_errors() > 0);
        }
        s
    }

    /// True when everything was translated fully and lints clean.
    pub fn all_translated(&self) -> bool {
        self.full == self.policies && self.lint_errors == 0
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} polic{}: {} translated fully, {} partly, {} not at all",
            self.policies,
            if self.policies == 1 { "y" } else { "ies" },
            self.full,
            self.partial,
            self.none
        )?;
        if self.lint_errors > 0 {
            write!(f, "; {} with lint errors in the output", self.lint_errors)?;
        }
        Ok(())
    }
}

fn finding_line(out: &mut String, indent: &str, file: &str, f: &Finding) {
    let kind = match f.kind {
        FindingKind::Dropped => "dropped",
        FindingKind::Changed => "changed",
        FindingKind::Note => "note",
    };
    let _ = writeln!(out, "{indent}{file}:{}: {kind}: {}", f.line, f.what);
    let _ = writeln!(out, "{indent}  why: {}", f.why);
}

/// The text report: one block per policy, then the summary line.
pub fn render_text(reports: &[PolicyReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let name = if r.name.is_empty() {
            String::new()
        } else {
            format!(" `{}`", r.name)
        };
        let _ = write!(
            out,
            "{}:{}: {}{name}: {}",
            r.file,
            r.line,
            if r.kind.is_empty() {
                "document"
            } else {
                &r.kind
            },
            r.outcome.describe()
        );
        match (&r.output, &r.bulwark_name, &r.mode) {
            (Some(o), Some(n), Some(m)) => {
                let _ = writeln!(out, " -> {o} (`{n}`, mode: {m})");
            }
            _ => out.push('\n'),
        }
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "  {}:{}:{}: error: {}",
                r.file, e.line, e.column, e.message
            );
            let _ = writeln!(out, "    hint: {}", e.hint);
        }
        for f in &r.findings {
            finding_line(&mut out, "  ", &r.file, f);
        }
        for h in &r.hooks {
            let _ = write!(
                out,
                "  {}:{}: {} `{}`: {}",
                r.file,
                h.line,
                h.path,
                h.call,
                h.outcome.describe()
            );
            match (&h.rule, &h.hook) {
                (Some(rule), Some(hook)) => {
                    let _ = writeln!(out, " -> rule `{rule}` (hook: {hook})");
                }
                _ => out.push('\n'),
            }
            if let Some(reason) = &h.reason {
                let _ = writeln!(out, "    why: {reason}");
            }
            for s in &h.selectors {
                if s.outcome == Outcome::Full && s.findings.is_empty() {
                    continue;
                }
                let _ = writeln!(
                    out,
                    "    {}:{}: {}: {}",
                    r.file,
                    s.line,
                    s.path,
                    s.outcome.describe()
                );
                if let Some(reason) = &s.reason {
                    let _ = writeln!(out, "      why: {reason}");
                }
                for f in &s.findings {
                    finding_line(&mut out, "      ", &r.file, f);
                }
            }
        }
        if !r.lint.is_empty() {
            let _ = writeln!(out, "  bulwark lint on the output:");
            for line in diagnostics::render_text(&r.lint).lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    let _ = writeln!(out, "{}", Summary::of(reports));
    out
}

/// The JSON report: `{"version": 1, "policies": [...], "summary": {...}}`.
pub fn render_json(reports: &[PolicyReport]) -> String {
    let doc = serde_json::json!({
        "version": 1,
        "policies": reports,
        "summary": Summary::of(reports),
    });
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_combine() {
        use Outcome::*;
        assert_eq!(Outcome::combine([]), None);
        assert_eq!(Outcome::combine([Full, Full]), Full);
        assert_eq!(Outcome::combine([None, None]), None);
        assert_eq!(Outcome::combine([Full, None]), Partial);
        assert_eq!(Outcome::combine([Partial]), Partial);
    }

    #[test]
    fn summary_counts_and_says_so() {
        let mut a = PolicyReport::input_error("a.yaml", 1, 1, "m".into(), "h".into());
        let s = Summary::of(std::slice::from_ref(&a));
        assert_eq!((s.policies, s.none, s.full), (1, 1, 0));
        assert!(!s.all_translated());
        assert_eq!(
            s.to_string(),
            "1 policy: 0 translated fully, 0 partly, 1 not at all"
        );
        a.outcome = Outcome::Full;
        assert!(Summary::of(&[a]).all_translated());
    }
}
