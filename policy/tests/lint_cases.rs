//! `tests/lint-cases/`: one mistake per file, the expected code in a `# expect: BWnnn` comment
//! on the line the diagnostic must point at. Each file must give exactly that one diagnostic,
//! at that line; the whole directory must fail the lint; `policies/examples/` must pass.

use bulwark_policy::load::{lint_paths, lint_source};
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

#[test]
fn docs_list_every_code() {
    let doc =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/lint.md"))
            .expect("docs/lint.md");
    for c in bulwark_policy::diagnostics::CODES {
        let row = format!("{} {} | {} |", c.id, c.name, c.severity.as_str());
        assert!(doc.contains(&row), "docs/lint.md lacks the row `{row}`");
    }
}

#[test]
fn directories_are_walked_sorted_once_and_io_errors_are_errors() {
    let dir = std::env::temp_dir().join(format!("bulwark-lint-walk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub/.hidden")).unwrap();
    let ex = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/lint-cases/bw054-relative-binary.yaml"),
    )
    .unwrap();
    std::fs::write(dir.join("b.yaml"), &ex).unwrap();
    std::fs::write(
        dir.join("sub/a.yml"),
        ex.replace("bw054-relative-binary", "second"),
    )
    .unwrap();
    std::fs::write(dir.join("sub/.hidden/x.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.join("notes.txt"), "not: [valid").unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("sub/loop")).unwrap();
    let out = lint_paths(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(
        out.files, 2,
        "only the two YAML files, each once, hidden and .txt skipped"
    );
    let files: Vec<_> = out
        .diagnostics
        .iter()
        .map(|d| d.file.clone().unwrap())
        .collect();
    assert!(
        files[0].ends_with("b.yaml") && files[1].ends_with("sub/a.yml"),
        "{files:?}"
    );
    // A file named explicitly is read whatever its extension.
    let txt = lint_paths(&[dir.join("notes.txt")]).unwrap();
    assert_eq!(txt.diagnostics[0].code, "BW001");
    // Not UTF-8: a finding, not a crash; a binary file named explicitly: an input error.
    std::fs::write(dir.join("latin1.yaml"), b"apiVersion: caf\xe9\n").unwrap();
    let l1 = lint_paths(&[dir.join("latin1.yaml")]).unwrap();
    assert_eq!(
        (l1.diagnostics[0].code, l1.diagnostics[0].line),
        ("BW001", Some(1))
    );
    std::fs::write(dir.join("blob.bin"), b"\x7fELF\x00\x00").unwrap();
    assert!(lint_paths(&[dir.join("blob.bin")])
        .unwrap_err()
        .to_string()
        .contains("binary"));
    let missing = lint_paths(&[dir.join("missing.yaml")]).unwrap_err();
    assert!(missing.to_string().contains("missing.yaml"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dangling_yaml_symlink_in_a_directory_is_listed_and_fails_the_read() {
    let dir = std::env::temp_dir().join(format!("bulwark-lint-dangling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), "kind: x\n").unwrap();
    std::os::unix::fs::symlink(dir.join("gone.yaml"), dir.join("b.yaml")).unwrap();
    let files = bulwark_policy::load::policy_files(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(files, vec![dir.join("a.yaml"), dir.join("b.yaml")]);
    let err = lint_paths(std::slice::from_ref(&dir))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot read") && err.contains("b.yaml"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
