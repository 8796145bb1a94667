//! The `hook: file` checks, each with a failing input and the fixed input, which must give no
//! diagnostic at all; and what the file fields add to "never matches" and "shadowed".

mod common;

use common::{codes, pair};

fn policy(selectors: &str) -> String {
    format!(
        "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  mode: monitor\n  rules:\n    - name: r\n      hook: file\n      selectors:\n{selectors}"
    )
}

fn sel(paths: &str) -> String {
    format!("        - {{matchBinaries: [{{operator: In, values: [/usr/bin/cat]}}], matchPaths: [{paths}]}}\n")
}

#[test]
fn paths_must_be_what_the_kernel_judges() {
    let good = policy(&sel("{operator: In, values: [/etc/shadow]}"));
    for bad in [
        "etc/shadow",
        "/etc/../etc/shadow",
        "/etc/./shadow",
        "/etc//shadow",
        "/etc/",
    ] {
        let d = pair(
            "BW057",
            &good.replace("[/etc/shadow]", &format!("['{bad}']")),
            &good,
        );
        assert!(d.hint.is_some_and(|h| !h.is_empty()), "{bad}");
    }
    // A trailing `/` is how a directory's contents are named with Prefix.
    let dir = policy(&sel("{operator: Prefix, values: [/etc/]}"));
    assert!(codes(&dir).is_empty(), "{:?}", codes(&dir));
    // A relative value is fine for Postfix (a name in any directory).
    let name = policy(&sel("{operator: Postfix, values: [.pem]}"));
    assert!(codes(&name).is_empty(), "{:?}", codes(&name));
    // Past what the kernel compares.
    let long = format!("/{}", "a".repeat(300));
    pair(
        "BW090",
        &good.replace("[/etc/shadow]", &format!("[{long}]")),
        &good,
    );
    pair(
        "BW055",
        &good.replace("[/etc/shadow]", "['/etc/*.conf']"),
        &good,
    );
}

#[test]
fn a_prefix_without_a_slash_is_a_warning() {
    let good = policy(&sel("{operator: Prefix, values: [/etc/]}"));
    let d = pair("BW058", &good.replace("[/etc/]", "[/etc]"), &good);
    assert!(d.message.contains("/etc-old"), "{}", d.message);
}

#[test]
fn file_fields_belong_to_the_file_hook_and_it_needs_paths() {
    let good = policy(&sel("{operator: In, values: [/etc/shadow]}"));
    pair(
        "BW072",
        &good.replace("hook: file", "hook: exec"),
        &good
            .replace("hook: file", "hook: exec")
            .replace(", matchPaths: [{operator: In, values: [/etc/shadow]}]", ""),
    );
    pair(
        "BW073",
        &good.replace(", matchPaths: [{operator: In, values: [/etc/shadow]}]", ""),
        &good,
    );
    // Block is not a file action.
    let enforce = good.replace("mode: monitor", "mode: enforce");
    let with = |a: &str| enforce.replace("}\n", &format!(", matchActions: [{{action: {a}}}]}}\n"));
    pair("BW060", &with("Block"), &with("Sigkill"));
}

#[test]
fn access_entries_that_leave_nothing_never_match() {
    let good = policy(&sel("{operator: In, values: [/etc/shadow]}"));
    let access = |a: &str| good.replace("}\n", &format!(", {a}}}\n"));
    pair(
        "BW080",
        &access("matchAccess: [{operator: In, values: [read]}, {operator: NotIn, values: [read]}]"),
        &access("matchAccess: [{operator: In, values: [read, write]}, {operator: NotIn, values: [read]}]"),
    );
}

#[test]
fn selectors_on_other_paths_or_accesses_are_not_shadowed() {
    let two = policy(&format!(
        "{}{}",
        sel("{operator: In, values: [/etc/shadow]}"),
        sel("{operator: In, values: [/etc/gshadow]}")
    ));
    assert!(codes(&two).is_empty(), "{:?}", codes(&two));
    let same = policy(&format!(
        "{}{}",
        sel("{operator: In, values: [/etc/shadow]}"),
        sel("{operator: In, values: [/etc/shadow]}")
    ));
    assert_eq!(codes(&same), vec!["BW081"]);
    let narrower_access = policy(&format!(
        "{}        - {{matchBinaries: [{{operator: In, values: [/usr/bin/cat]}}], matchPaths: [{{operator: In, values: [/etc/shadow]}}], matchAccess: [{{operator: In, values: [read]}}]}}\n",
        sel("{operator: In, values: [/etc/shadow]}"),
    ));
    // The first selector (any access) covers the second (read only).
    assert_eq!(codes(&narrower_access), vec!["BW081"]);
    let wider_second = policy(&format!(
        "        - {{matchBinaries: [{{operator: In, values: [/usr/bin/cat]}}], matchPaths: [{{operator: In, values: [/etc/shadow]}}], matchAccess: [{{operator: In, values: [read]}}]}}\n{}",
        sel("{operator: In, values: [/etc/shadow]}"),
    ));
    assert!(
        codes(&wider_second).is_empty(),
        "{:?}",
        codes(&wider_second)
    );
}
