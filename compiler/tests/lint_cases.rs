//! `tests/lint-cases/`: one mistake per file, the expected code in a `# expect: BWnnn` comment
//! on the line the diagnostic must point at. Each file must give exactly that one diagnostic,
//! at that line, through the whole lint as `bulwark lint` runs it (the policy crate's checks
//! plus the compiler's capacity check); the whole directory must fail the lint;
//! `policies/examples/` must pass.

use bulwark_compiler::{lint_paths, lint_source};
use std::path::PathBuf;

fn cases_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/lint-cases")
}

fn expected(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let at = l.find("# expect: ")?;
            let code = l[at + 10..].split_whitespace().next()?.to_string();
            Some((i as u32 + 1, code))
        })
        .collect()
}

#[test]
fn each_case_gives_exactly_its_one_diagnostic_at_its_line() {
    let mut files: Vec<_> = std::fs::read_dir(cases_dir())
        .expect("tests/lint-cases exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 35,
        "expected a case per check, found {}",
        files.len()
    );
    let mut failures = Vec::new();
    let mut codes_seen = std::collections::BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let want = expected(&text);
        assert_eq!(
            want.len(),
            1,
            "{}: needs exactly one `# expect: CODE` comment",
            f.display()
        );
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with(&want[0].1.to_lowercase()),
            "{name}: file name should start with its code {}",
            want[0].1
        );
        let out = lint_source(&name, &text);
        let got: Vec<(u32, String)> = out
            .diagnostics
            .iter()
            .map(|d| (d.line.unwrap_or(0), d.code.to_string()))
            .collect();
        if got != want {
            failures.push(format!("{name}: want {want:?}, got {:?}", out.diagnostics));
        }
        for d in &out.diagnostics {
            assert!(
                d.hint.as_deref().is_some_and(|h| !h.is_empty()),
                "{name}: {} has no hint",
                d.code
            );
            assert!(d.column.is_some() && d.file.as_deref() == Some(name.as_str()));
        }
        codes_seen.insert(want[0].1.clone());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every code in the table has at least one case.
    for c in bulwark_policy::diagnostics::CODES {
        assert!(
            codes_seen.contains(c.id),
            "no lint case for {} ({})",
            c.id,
            c.name
        );
    }
}

#[test]
fn the_directory_fails_and_the_examples_pass() {
    let bad = lint_paths(&[cases_dir()]).unwrap();
    assert!(bad.errors() > 0);
    assert!(bad.files >= 35);
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let good = lint_paths(&[examples]).unwrap();
    assert!(
        good.files >= 8,
        "policies/examples should hold at least 8 policies, found {}",
        good.files
    );
    assert!(
        good.diagnostics.is_empty(),
        "policies/examples must lint clean:\n{}",
        bulwark_policy::diagnostics::render_text(&good.diagnostics)
    );
    assert_eq!(good.policies.len(), good.documents);
}
