//! Fuzz target: arbitrary text through the whole lint path (YAML -> schema -> model ->
//! validation -> renderers). Any panic is a bug.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let out = bulwark_policy::load::lint_source("fuzz.yaml", &text);
    for d in &out.diagnostics {
        assert!(d.line.is_some() && d.column.is_some(), "diagnostic without a position: {d:?}");
    }
    let _ = bulwark_policy::diagnostics::render_sarif(&out.diagnostics);
    let _ = bulwark_policy::validate::validate_set(&out.policies);
});
