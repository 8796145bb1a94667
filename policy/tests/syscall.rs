//! The `hook: syscall` checks, each with a failing input and the fixed input, which must give
//! no diagnostic at all; and the messages that explain names, errnos and the `matchArgs` clash.

mod common;

use bulwark_policy::load::lint_source;
use bulwark_policy::Diagnostic;
use common::pair;

fn policy(selector: &str) -> String {
    format!(
        "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  mode: monitor\n  rules:\n    - name: r\n      hook: syscall\n      selectors:\n        - {selector}\n"
    )
}

fn diags(text: &str) -> Vec<Diagnostic> {
    lint_source("t.yaml", text).diagnostics
}

const GDB: &str = "matchBinaries: [{operator: In, values: [/usr/bin/gdb]}]";

fn sel(rest: &str) -> String {
    format!("{{{GDB}, matchSyscalls: [{{operator: In, values: [ptrace]}}]{rest}}}")
}

#[test]
fn syscall_names_are_checked_against_both_tables() {
    let good = policy(&sel(""));
    let d = pair("BW066", &good.replace("[ptrace]", "[ptrcae]"), &good);
    assert_eq!(d.hint.as_deref(), Some("did you mean `ptrace`?"));
    let d = pair("BW066", &good.replace("[ptrace]", "[sys_ptrace]"), &good);
    assert_eq!(d.hint.as_deref(), Some("did you mean `ptrace`?"));
    let d = pair("BW067", &good.replace("[ptrace]", "[open]"), &good);
    assert!(d.message.contains("x86_64 only"), "{}", d.message);
    assert!(d.hint.unwrap().contains("`openat`"));
    // Both spellings together hold on both architectures, but `open` is still x86_64 only.
    assert!(diags(&good.replace("[ptrace]", "[open, openat]"))
        .iter()
        .any(|d| d.code == "BW067"));
}

#[test]
fn syscall_hook_fields_belong_to_it() {
    let good = policy(&sel(""));
    pair("BW065", &policy(&format!("{{{GDB}}}")), &good);
    let exec = good.replace("hook: syscall", "hook: exec");
    let d = pair("BW064", &exec, &policy(&sel("")));
    assert!(d.message.contains("hook: exec"), "{}", d.message);
    // Block is not a syscall action; Sigkill is.
    let block = policy(&sel(", matchActions: [{action: Block}]"));
    let kill = policy(&sel(", matchActions: [{action: Sigkill}]")).replace("monitor", "enforce");
    let d = pair("BW060", &block, &kill);
    assert!(d.hint.unwrap().contains("Sigkill"));
}

#[test]
fn integers_and_errnos() {
    let good = policy(&sel(
        ", matchReturn: [{operator: Equal, values: [\"-EPERM\"]}]",
    ));
    let d = pair("BW068", &good.replace("-EPERM", "EPERM"), &good);
    assert_eq!(
        d.hint.as_deref(),
        Some("a failing call returns the errno negated: write `-EPERM`")
    );
    let d = pair("BW068", &good.replace("-EPERM", "-EPREM"), &good);
    assert_eq!(d.hint.as_deref(), Some("did you mean `-EPERM`?"));
    let args = policy(&sel(
        ", matchSyscallArgs: [{index: 0, operator: Equal, values: [16, \"0x4206\"]}]",
    ));
    pair("BW068", &args.replace("\"0x4206\"", "\"0xzz\""), &args);
    pair("BW068", &args.replace("\"0x4206\"", "\"-EPERM\""), &args);
    pair(
        "BW080",
        &args.replace("Equal, values: [16, \"0x4206\"]", "Mask, values: [0]"),
        &args,
    );
    // The schema refuses index 6.
    assert!(!diags(&args.replace("index: 0", "index: 6")).is_empty());
}

#[test]
fn tetragon_style_match_args_is_explained() {
    let good = policy(&sel(
        ", matchSyscallArgs: [{index: 0, operator: Equal, values: [16]}]",
    ));
    let bad = policy(&sel(
        ", matchArgs: [{index: 0, operator: Equal, values: [\"16\"]}]",
    ));
    let d = pair("BW069", &bad, &good);
    assert!(d.hint.unwrap().contains("matchSyscallArgs"));
    let mask = policy(&sel(
        ", matchArgs: [{index: 0, operator: Mask, values: [\"16\"]}]",
    ));
    let d = pair("BW024", &mask, &good);
    assert!(d.message.contains("argv"), "{}", d.message);
    assert!(d.hint.unwrap().contains("matchSyscallArgs"));
    let in_op = good.replace(
        "operator: Equal, values: [16]",
        "operator: In, values: [16]",
    );
    let d = pair("BW024", &in_op, &good);
    assert!(d.hint.unwrap().contains("`Equal`"));
}

#[test]
fn selectors_that_select_no_call_or_add_nothing() {
    let good = policy(&sel(""));
    let none = policy(&format!(
        "{{{GDB}, matchSyscalls: [{{operator: In, values: [ptrace]}}, {{operator: NotIn, values: [ptrace]}}]}}"
    ));
    pair("BW080", &none, &good);
    // A selector on mount is not shadowed by one on ptrace; one on ptrace alone by ptrace+mount is.
    let two = |a: &str, b: &str| {
        format!(
            "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  mode: monitor\n  rules:\n    - name: r\n      hook: syscall\n      selectors:\n        - {{{GDB}, matchSyscalls: [{{operator: In, values: [{a}]}}]}}\n        - {{{GDB}, matchSyscalls: [{{operator: In, values: [{b}]}}]}}\n"
        )
    };
    assert!(diags(&two("ptrace", "mount")).is_empty());
    let shadowed = diags(&two("ptrace, mount", "ptrace"));
    assert_eq!(
        shadowed.iter().map(|d| d.code).collect::<Vec<_>>(),
        ["BW081"]
    );
}
