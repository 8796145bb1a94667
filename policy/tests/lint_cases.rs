//! The lint's code table against docs/lint.md, and how `lint_paths` walks files. The cases in
//! `tests/lint-cases/` run through the whole lint (this crate's checks plus the compiler's
//! capacity check, as `bulwark lint` runs it) in `compiler/tests/lint_cases.rs`.

use bulwark_policy::load::lint_paths;
use std::path::PathBuf;

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
    // Not UTF-8: a finding at the offending byte's line and column, not a crash.
    std::fs::write(
        dir.join("latin1.yaml"),
        b"kind: TracingPolicy\nmetadata: {name: caf\xe9}\n",
    )
    .unwrap();
    let l1 = lint_paths(&[dir.join("latin1.yaml")]).unwrap();
    assert_eq!(
        (
            l1.diagnostics[0].code,
            l1.diagnostics[0].line,
            l1.diagnostics[0].column
        ),
        ("BW001", Some(2), Some(21)),
        "{:?}",
        l1.diagnostics
    );
    assert!(l1.diagnostics[0].message.contains("0xe9"));
    // Columns count characters: `ü` before the bad byte is one column.
    std::fs::write(
        dir.join("mixed.yaml"),
        "a: x\nb: \u{fc}"
            .bytes()
            .chain([0xff, b'\n'])
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let mixed = lint_paths(&[dir.join("mixed.yaml")]).unwrap();
    assert_eq!(
        (mixed.diagnostics[0].line, mixed.diagnostics[0].column),
        (Some(2), Some(5))
    );
    // A binary file among others: a finding for that file, and the others are still checked.
    std::fs::write(dir.join("blob.bin"), b"\x7fELF\x00\x00").unwrap();
    let blob = lint_paths(&[dir.join("blob.bin"), dir.join("b.yaml")]).unwrap();
    assert_eq!(blob.files, 2);
    let codes: Vec<_> = blob
        .diagnostics
        .iter()
        .map(|d| (d.file.clone().unwrap(), d.code))
        .collect();
    assert!(
        codes[0].0.ends_with("blob.bin") && codes[0].1 == "BW001",
        "{codes:?}"
    );
    assert!(blob.diagnostics[0].message.contains("binary"));
    assert!(
        codes
            .iter()
            .any(|(f, c)| f.ends_with("b.yaml") && *c == "BW054"),
        "{codes:?}"
    );
    let missing = lint_paths(&[dir.join("missing.yaml")]).unwrap_err();
    assert!(missing.to_string().contains("missing.yaml"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_dangling_yaml_symlink_in_a_directory_is_listed_and_reported_alone() {
    let dir = std::env::temp_dir().join(format!("bulwark-lint-dangling-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), "kind: x\n").unwrap();
    std::os::unix::fs::symlink(dir.join("gone.yaml"), dir.join("b.yaml")).unwrap();
    let files = bulwark_policy::load::policy_files(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(files, vec![dir.join("a.yaml"), dir.join("b.yaml")]);
    // The unreadable file is a finding of its own; the readable one is still checked.
    let out = lint_paths(std::slice::from_ref(&dir)).unwrap();
    let found: Vec<_> = out
        .diagnostics
        .iter()
        .map(|d| (d.file.clone().unwrap(), d.code, d.message.clone()))
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].0.ends_with("a.yaml") && found[0].1 == "BW010");
    assert!(
        found[1].0.ends_with("b.yaml")
            && found[1].1 == "BW001"
            && found[1].2.contains("cannot read"),
        "{found:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_case_says_what_kubectl_apply_does_with_it() {
    // tests/k8s/crds.sh checks these lines against the real API server; here, that each case
    // has one and that it is well-formed, so a case cannot slip through without one.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/lint-cases");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# kubectl apply: "))
            .collect();
        assert_eq!(lines.len(), 1, "{}: {lines:?}", path.display());
        let ok = lines[0] == "accepts"
            || lines[0]
                .strip_prefix("refuses: ")
                .is_some_and(|t| !t.trim().is_empty());
        assert!(ok, "{}: `{}`", path.display(), lines[0]);
        seen += 1;
    }
    assert!(seen >= 35, "{seen} cases");
}
