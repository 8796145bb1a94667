//! The corpus in tests/convert-corpus/: Tetragon policies written in their documented form,
//! each with its expected outcome in a `# expect: full|partial|none` header line. Every one
//! converts to that outcome, every output passes `bulwark lint` with no error and loads as one
//! policy, and the counts printed here are the ones docs/convert.md quotes.

use bulwark_convert::convert_source;
use bulwark_convert::report::{render_text, Outcome, Summary};
use std::path::PathBuf;

fn corpus() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/convert-corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn expected(text: &str) -> Outcome {
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .expect("every corpus file has a `# expect:` line");
    match line.trim() {
        "full" => Outcome::Full,
        "partial" => Outcome::Partial,
        "none" => Outcome::None,
        other => panic!("unknown expectation `{other}`"),
    }
}

#[test]
fn corpus_converts_as_expected_and_the_output_lints_clean() {
    let files = corpus();
    assert!(files.len() >= 15, "corpus too small: {}", files.len());
    let mut reports = Vec::new();
    for (name, text) in &files {
        let converted = convert_source(name, text);
        assert_eq!(converted.len(), 1, "{name}: one policy per file");
        let c = &converted[0];
        let r = &c.report;
        assert!(r.error.is_none(), "{name}: {:?}", r.error);
        assert_eq!(
            r.outcome,
            expected(text),
            "{name}:\n{}",
            render_text(std::slice::from_ref(r))
        );
        match &c.yaml {
            None => assert_eq!(r.outcome, Outcome::None, "{name}"),
            Some(yaml) => {
                let lint = bulwark_compiler::lint_source(name, yaml);
                assert_eq!(
                    lint.errors(),
                    0,
                    "{name}: lint errors in\n{yaml}\n{:#?}",
                    lint.diagnostics
                );
                assert_eq!(lint.policies.len(), 1, "{name}: {yaml}");
                assert_eq!(
                    lint.diagnostics, r.lint,
                    "{name}: the report carries the lint"
                );
                // Names are preserved (or changed with a finding saying so).
                let policy = &lint.policies[0];
                assert!(
                    policy.name() == r.name || r.findings.iter().any(|f| f.path == "metadata.name"),
                    "{name}"
                );
            }
        }
        // Anything short of full says why, per hook or selector.
        if r.outcome != Outcome::Full {
            let explained = r.findings.iter().any(|f| f.is_loss())
                || r.hooks.iter().any(|h| {
                    h.reason.is_some()
                        || h.selectors
                            .iter()
                            .any(|s| !s.findings.is_empty() || s.reason.is_some())
                });
            assert!(explained, "{name}: {r:#?}");
        }
        reports.push(c.report.clone());
    }
    let summary = Summary::of(&reports);
    println!("{}", render_text(&reports));
    println!("convert corpus: {summary}");
    assert_eq!(summary.lint_errors, 0);
    assert!(
        summary.full > 0 && summary.partial > 0 && summary.none > 0,
        "{summary}"
    );
}

/// Every prefix of every corpus file (cut every few bytes, so YAML breaks everywhere) converts
/// without a panic, and whatever output comes out lints with no error.
#[test]
fn truncated_corpus_files_never_panic() {
    let mut conversions = 0;
    for (name, text) in corpus() {
        let cuts = (0..text.len())
            .step_by(5)
            .filter(|&i| text.is_char_boundary(i));
        for cut in cuts {
            for c in convert_source(&name, &text[..cut]) {
                assert!(
                    c.yaml.is_some() || c.report.outcome == Outcome::None,
                    "{name}@{cut}"
                );
                conversions += 1;
            }
        }
    }
    assert!(conversions > 1000, "{conversions}");
}
