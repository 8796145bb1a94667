//! `bulwark convert`: reads Cilium Tetragon policies, writes bulwark policies and reports per
//! policy, hook and selector what was translated fully, partly or not at all, and why. The
//! translation and the report are `bulwark_convert`'s; this module reads the files, writes the
//! output (standard output or one file per policy), renders the report and picks the exit code.
use anyhow::Context;
use bulwark_convert::report::{render_json, render_text, PolicyReport, Summary};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// `file:line: ...` lines per policy, hook and selector, then a summary.
    #[default]
    Text,
    /// One JSON object: `{"version": 1, "policies": [...], "summary": {...}}` (docs/convert.md).
    Json,
}

/// Shown after the options in `bulwark convert --help` and `-h` (the one-line summary is the
/// subcommand's doc comment in main.rs).
const AFTER_HELP: &str = "\
Exec hooks (security_bprm_check, execve, sched_process_exec, ...) become `hook: exec` rules,
connect hooks (tcp_connect, security_socket_connect, ...) become `hook: connect` rules; names,
namespaces, labels, modes and comments are kept. What cannot be translated is reported per
policy, hook and selector with the reason, and the output is linted as `bulwark lint` does.
A policy that a dropped condition would make kill or block more is written in monitor mode.

Without --out the policies go to standard output (documents separated by `---`) and the
report to standard error; with --out DIR each policy is written to DIR/<name>.yaml and the
report goes to standard output. Details: docs/convert.md.

Exit status:
  0  every policy translated fully and its output lints clean
  1  something translated only partly or not at all, or the output has lint errors
  2  usage or I/O errors (a path that does not exist, a file that cannot be read or written)";

#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct ConvertArgs {
    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Write one `<policy name>.yaml` per converted policy into DIR (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Tetragon policy files or directories (searched recursively for .yaml/.yml).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// A file name in `dir` for `name` that this run has not written yet.
fn unique_file(dir: &Path, name: &str, taken: &mut HashSet<PathBuf>) -> PathBuf {
    let mut n = 1;
    loop {
        let file = if n == 1 {
            dir.join(format!("{name}.yaml"))
        } else {
            dir.join(format!("{name}-{n}.yaml"))
        };
        if taken.insert(file.clone()) {
            return file;
        }
        n += 1;
    }
}

/// Converts every file; writes policies to `out` (or collects them for standard output).
fn convert(args: &ConvertArgs) -> anyhow::Result<(Vec<PolicyReport>, Vec<String>)> {
    let files = bulwark_policy::load::policy_files(&args.paths)?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut reports = Vec::new();
    let mut documents = Vec::new();
    let mut taken = HashSet::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        for converted in bulwark_convert::convert_source(&path.display().to_string(), &text) {
            let mut report = converted.report;
            if let (Some(yaml), Some(name)) = (converted.yaml, report.bulwark_name.clone()) {
                match &args.out {
                    Some(dir) => {
                        let file = unique_file(dir, &name, &mut taken);
                        std::fs::write(&file, yaml)
                            .with_context(|| format!("writing {}", file.display()))?;
                        let shown = file.display().to_string();
                        for d in &mut report.lint {
                            d.file = Some(shown.clone());
                        }
                        report.output = Some(shown);
                    }
                    None => {
                        documents.push(yaml);
                        report.output = Some("-".into());
                    }
                }
            }
            reports.push(report);
        }
    }
    Ok((reports, documents))
}

pub fn run(args: ConvertArgs) -> anyhow::Result<ExitCode> {
    let (reports, documents) = convert(&args)?;
    let rendered = match args.format {
        Format::Text => render_text(&reports),
        Format::Json => render_json(&reports),
    };
    // A closed pipe (e.g. `| head`) is not an error worth a panic.
    if args.out.is_some() {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(rendered.as_bytes());
        let _ = stdout.flush();
    } else {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(documents.join("---\n").as_bytes());
        let _ = stdout.flush();
        let _ = std::io::stderr().write_all(rendered.as_bytes());
    }
    Ok(ExitCode::from(exit_code(&Summary::of(&reports))))
}

/// 0 when everything translated fully and lints clean, else 1.
pub fn exit_code(summary: &Summary) -> u8 {
    u8::from(!summary.all_translated())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
    }

    fn args(paths: Vec<PathBuf>, out: Option<PathBuf>) -> ConvertArgs {
        ConvertArgs {
            format: Format::Json,
            out,
            paths,
        }
    }

    #[test]
    fn writes_one_file_per_policy_that_lints_clean_and_picks_the_exit_code() {
        let dir = std::env::temp_dir().join(format!("bulwark-convert-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let full = repo("tests/convert-corpus/exec-kill-netcat-bprm.yaml");
        let (reports, docs) = convert(&args(vec![full.clone()], Some(dir.clone()))).unwrap();
        assert!(docs.is_empty(), "with --out nothing goes to stdout");
        assert_eq!(exit_code(&Summary::of(&reports)), 0);
        let written = dir.join("kill-netcat.yaml");
        assert_eq!(
            reports[0].output.as_deref(),
            Some(written.display().to_string().as_str())
        );
        let lint = bulwark_compiler::lint_paths(std::slice::from_ref(&written)).unwrap();
        assert_eq!(
            (lint.errors(), lint.policies.len()),
            (0, 1),
            "{:?}",
            lint.diagnostics
        );

        // The whole corpus: some policies only partly or not at all -> 1; the same name twice
        // gets a second file rather than overwriting the first.
        let corpus = repo("tests/convert-corpus");
        let (reports, _) = convert(&args(vec![corpus, full], Some(dir.clone()))).unwrap();
        assert_eq!(exit_code(&Summary::of(&reports)), 1);
        assert!(dir.join("kill-netcat-2.yaml").exists());
        let all = bulwark_compiler::lint_paths(std::slice::from_ref(&dir)).unwrap();
        let errors: Vec<_> = all.diagnostics.iter().filter(|d| d.is_error()).collect();
        assert!(
            !errors.is_empty() && errors.iter().all(|d| d.code == "BW032"),
            "only the duplicate name: {errors:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        // A missing path is an I/O error (exit 2 through main), not a finding.
        let missing = convert(&args(vec![repo("no/such/file.yaml")], None));
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("no/such/file.yaml"));
    }
}
