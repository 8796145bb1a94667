//! What the check tests share: a check's failing input and its fixed input, and the codes an
//! input gives.

use bulwark_policy::load::lint_source;
use bulwark_policy::Diagnostic;

/// `bad` gives a diagnostic with `code` (returned, for its message); `good`, the fixed input,
/// gives no diagnostic at all and one policy, so the check does not fire on good policies.
#[track_caller]
pub fn pair(code: &str, bad: &str, good: &str) -> Diagnostic {
    let b = lint_source("t.yaml", bad).diagnostics;
    let found = b.iter().find(|d| d.code == code).cloned();
    assert!(
        found.is_some(),
        "{code}: failing input gave {:?}\n{bad}",
        b.iter().map(|d| d.code).collect::<Vec<_>>()
    );
    let g = lint_source("t.yaml", good);
    assert!(
        g.diagnostics.is_empty(),
        "{code}: passing input gave {:?}\n{good}",
        g.diagnostics
            .iter()
            .map(|d| (d.code, d.message.clone()))
            .collect::<Vec<_>>()
    );
    assert_eq!(g.policies.len(), 1);
    found.unwrap()
}

/// The diagnostic codes `text` gives, in order.
#[allow(dead_code)] // not every test crate that shares this module needs it
pub fn codes(text: &str) -> Vec<&'static str> {
    lint_source("t.yaml", text)
        .diagnostics
        .iter()
        .map(|d| d.code)
        .collect()
}
