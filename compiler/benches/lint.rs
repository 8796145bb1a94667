//! Lint speed: 1,000 policy documents (the examples, repeated under distinct names, in one
//! multi-document stream) through the whole lint (`bulwark_compiler::lint_source`: the policy
//! crate's checks and the capacity check, as `bulwark lint` runs them), best of several runs.
//! Prints documents per second. Run with `cargo bench -p bulwark-compiler --bench lint`.

use std::time::Instant;

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let mut examples: Vec<String> = std::fs::read_dir(&dir)
        .expect("policies/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| std::fs::read_to_string(p).expect("readable example"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "no examples to benchmark");
    let docs = 1000;
    let mut text = String::new();
    for i in 0..docs {
        let ex = &examples[i % examples.len()];
        // Distinct names so the duplicate check does not fire.
        let renamed = ex.replacen("\n  name: ", &format!("\n  name: b{i}-"), 1);
        text.push_str("---\n");
        text.push_str(&renamed);
    }
    let bytes = text.len();
    let mut best = f64::MAX;
    let mut diagnostics = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let out = bulwark_compiler::lint_source("bench.yaml", &text);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(out.documents, docs);
        diagnostics = out.diagnostics.len();
        best = best.min(secs);
    }
    println!(
        "lint: {docs} documents ({} KiB) in {:.1} ms = {:.0} docs/s ({} diagnostics: the loaded set exceeds the kernel's capacity, as expected for 1,000 policies)",
        bytes / 1024,
        best * 1000.0,
        docs as f64 / best,
        diagnostics
    );
    assert!(
        best < 1.0,
        "linting {docs} documents took {best:.3} s; the budget is well under 1 s"
    );
}
