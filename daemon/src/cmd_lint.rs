//! `bulwark lint`: checks policy files offline (no root, no cluster) and prints diagnostics as
//! text, JSON, SARIF 2.1.0 or GitHub annotations. Exit 0 clean, 1 errors (or warnings with
//! `--strict`), 2 usage or I/O errors. All checking lives in `bulwark_policy::load` and the
//! compiler's capacity check (`bulwark_compiler::lint_paths` runs both); this module only
//! parses arguments, renders and picks the exit code.
use bulwark_policy::diagnostics::{render_github, render_json, render_sarif, render_text};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Compiler-style `file:line:col: error[CODE]: message` with hints and a summary.
    #[default]
    Text,
    /// One JSON object (documented in docs/lint.md).
    Json,
    /// SARIF 2.1.0, for GitHub code scanning.
    Sarif,
    /// GitHub Actions workflow annotations (`::error file=...`).
    Github,
}

#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Policy files or directories (searched recursively for .yaml/.yml).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub fn run(args: LintArgs) -> anyhow::Result<ExitCode> {
    let outcome = bulwark_compiler::lint_paths(&args.paths)?;
    let d = &outcome.diagnostics;
    let rendered = match args.format {
        Format::Text => {
            let mut t = render_text(d);
            let summary = format!(
                "checked {} document{} in {} file{}: ",
                outcome.documents,
                if outcome.documents == 1 { "" } else { "s" },
                outcome.files,
                if outcome.files == 1 { "" } else { "s" }
            );
            // render_text ends with the "N errors, M warnings" line; prefix it.
            let cut = t.trim_end_matches('\n').rfind('\n').map_or(0, |i| i + 1);
            t.insert_str(cut, &summary);
            t
        }
        Format::Json => render_json(d),
        Format::Sarif => render_sarif(d),
        Format::Github => render_github(d),
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (e.g. `| head`) is not an error worth a panic.
    let _ = stdout.write_all(rendered.as_bytes());
    let _ = stdout.flush();
    Ok(ExitCode::from(exit_code(&outcome, args.strict)))
}

/// 1 when there are errors (or warnings with `strict`), else 0.
pub fn exit_code(outcome: &bulwark_policy::LintOutcome, strict: bool) -> u8 {
    u8::from(outcome.errors() > 0 || (strict && outcome.warnings() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }

    #[test]
    fn exit_codes() {
        let cases = bulwark_compiler::lint_paths(&[repo("tests/lint-cases")]).unwrap();
        assert_eq!(exit_code(&cases, false), 1);
        let examples = bulwark_compiler::lint_paths(&[repo("policies/examples")]).unwrap();
        assert_eq!(exit_code(&examples, false), 0);
        assert_eq!(exit_code(&examples, true), 0);
        let warn_only =
            bulwark_compiler::lint_paths(&[repo("tests/lint-cases/bw051-cidr-host-bits.yaml")])
                .unwrap();
        assert_eq!(exit_code(&warn_only, false), 0);
        assert_eq!(exit_code(&warn_only, true), 1);
        // A missing path is an I/O error (exit 2 through main), not a finding.
        let missing = run(LintArgs {
            format: Format::Text,
            strict: false,
            paths: vec![repo("no/such/dir")],
        });
        assert!(missing.unwrap_err().to_string().contains("no/such/dir"));
    }
}
