//! Every check with a failing input and the fixed, passing input. The passing input must give
//! no diagnostic at all, so each pair also shows that the check does not fire on good policies.

mod common;

use bulwark_policy::load::lint_source;
use common::{codes, pair};

fn policy(mode: &str, hook: &str, selector: &str) -> String {
    format!(
        "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  mode: {mode}\n  rules:\n    - name: r\n      hook: {hook}\n      selectors:\n        - {selector}\n"
    )
}

const KILL: &str =
    "{matchBinaries: [{operator: In, values: [/usr/bin/curl]}], matchActions: [{action: Sigkill}]}";

#[test]
fn syntax_and_envelope() {
    let good = policy("enforce", "exec", KILL);
    pair(
        "BW001",
        &good.replace("[/usr/bin/curl]", "[/usr/bin/curl"),
        &good,
    );
    pair(
        "BW002",
        &good.replace("  name: p\n", "  name: p\n  name: q\n"),
        &good,
    );
    assert_eq!(codes("- a\n- b\n"), ["BW003"]);
    pair("BW010", &good.replace("bulwark.dev/v1alpha1", "v1"), &good);
    pair(
        "BW010",
        &good.replace("apiVersion: bulwark.dev/v1alpha1\n", ""),
        &good,
    );
    pair(
        "BW011",
        &good.replace("kind: TracingPolicy", "kind: ConfigMap"),
        &good,
    );
    pair("BW011", &good.replace("kind: TracingPolicy\n", ""), &good);
    pair(
        "BW012",
        &good.replace("bulwark.dev/v1alpha1", "cilium.io/v1alpha1"),
        &good,
    );
    pair(
        "BW013",
        &good.replace("  name: p\n", "  labels: {a: b}\n"),
        &good,
    );
    pair("BW013", &good.replace("metadata:\n  name: p\n", ""), &good);
    pair("BW014", &good.replace("name: p", "name: P_1"), &good);
    pair("BW014", &good.replace("- name: r", "- name: R"), &good);
    pair(
        "BW004",
        &good.replace("[/usr/bin/curl]", "[/usr/bin/curl, yes]"),
        &good,
    );
    pair("BW004", &good.replace("mode: enforce", "mode: off"), &good);
    // Merge keys merge, as kubectl does: shared selector parts written once.
    let merged = "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  rules:\n    - name: r\n      hook: exec\n      selectors:\n        - &kill\n          matchBinaries: [{operator: In, values: [/usr/bin/curl]}]\n          matchActions: [{action: Sigkill}]\n        - <<: *kill\n          matchBinaries: [{operator: In, values: [/usr/bin/wget]}]\n";
    assert_eq!(codes(merged), Vec::<&str>::new());
    assert_eq!(codes(&merged.replace("<<: *kill", "<<: 3")), ["BW001"]);
    // A byte-order mark is valid (kubectl skips it too).
    assert_eq!(codes(&format!("\u{feff}{good}")), Vec::<&str>::new());
}

#[test]
fn a_kind_list_is_checked_item_by_item() {
    let good = policy("enforce", "exec", KILL);
    let item = |p: &str| {
        p.lines()
            .enumerate()
            .map(|(i, l)| format!("{}{l}\n", if i == 0 { "- " } else { "  " }))
            .collect::<String>()
    };
    let bad = good
        .replace("name: p", "name: q")
        .replace("Sigkill", "Block");
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}{}",
        item(&good),
        item(&bad)
    );
    let out = lint_source("l.yaml", &list);
    let found: Vec<_> = out
        .diagnostics
        .iter()
        .map(|d| (d.code, d.line, d.path.clone()))
        .collect();
    let block_line = list.lines().position(|l| l.contains("Block")).unwrap() as u32 + 1;
    assert_eq!(out.documents, 2);
    assert_eq!(
        found,
        [(
            "BW060",
            Some(block_line),
            Some("items[1].spec.rules[0].selectors[0].matchActions[0].action".to_string())
        )]
    );
    assert_eq!(out.policies.len(), 1);
    assert_eq!(out.policies[0].name(), "p");
    // The same name twice in one List is a duplicate, placed at the second item.
    let twice = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}{}",
        item(&good),
        item(&good)
    );
    let dup = lint_source("l.yaml", &twice);
    assert_eq!(dup.diagnostics.len(), 1, "{:?}", dup.diagnostics);
    assert_eq!(dup.diagnostics[0].code, "BW032");
    assert_eq!(
        dup.diagnostics[0].path.as_deref(),
        Some("items[1].metadata.name")
    );
    // Tree issues inside an item belong to it; `items` that is not a list is a finding.
    let yes = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        item(&good.replace("[/usr/bin/curl]", "[yes]"))
    );
    assert_eq!(codes(&yes), ["BW004"]);
    assert!(lint_source("l.yaml", &yes).policies.is_empty());
    assert_eq!(codes("apiVersion: v1\nkind: List\nitems: 3\n"), ["BW021"]);
    assert_eq!(
        codes("apiVersion: v1\nkind: List\nitems: []\n"),
        Vec::<&str>::new()
    );
}

#[test]
fn a_diagnostic_without_a_path_prints_no_at_line() {
    let out = lint_source("t.yaml", "kind: TracingPolicy\n");
    assert_eq!(out.diagnostics[0].code, "BW010");
    assert_eq!(out.diagnostics[0].path, None);
    let text = bulwark_policy::diagnostics::render_text(&out.diagnostics);
    assert!(!text.contains("= at:"), "{text}");
    let json = bulwark_policy::diagnostics::render_json(&out.diagnostics);
    assert!(json.contains("\"path\": null"), "{json}");
}

#[test]
fn schema_checks() {
    let good = policy("enforce", "exec", KILL);
    let bad = good.replace("matchBinaries", "matchBinary");
    pair("BW020", &bad, &good);
    let d = lint_source("t.yaml", &bad).diagnostics;
    assert_eq!(d[0].hint.as_deref(), Some("did you mean `matchBinaries`?"));
    assert_eq!(
        d[0].path.as_deref(),
        Some("spec.rules[0].selectors[0].matchBinary")
    );
    pair(
        "BW020",
        &good.replace("  mode:", "  kprobes: []\n  mode:"),
        &good,
    );
    pair(
        "BW020",
        &good.replace("kind: TracingPolicy\n", "kind: TracingPolicy\nextra: 1\n"),
        &good,
    );
    pair(
        "BW021",
        &good.replace("[/usr/bin/curl]", "/usr/bin/curl"),
        &good,
    );
    pair(
        "BW021",
        &good.replace("rules:\n", "rules: 3\n  x:\n"),
        &good,
    );
    pair(
        "BW021",
        &good.replace("  name: p\n", "  name: p\n  labels: {n: 1}\n"),
        &good,
    );
    pair("BW022", &good.replace("hook: exec", "hook: Exec"), &good);
    pair(
        "BW022",
        &good.replace("mode: enforce", "mode: audit"),
        &good,
    );
    pair(
        "BW022",
        &good.replace("operator: In", "operator: in"),
        &good,
    );
    pair("BW023", &good.replace("      hook: exec\n", ""), &good);
    pair("BW023", &good.replace("operator: In, ", ""), &good);
    let ns_good = policy(
        "enforce",
        "exec",
        "{matchNamespaces: [{operator: In, values: [prod]}], matchActions: [{action: Sigkill}]}",
    );
    pair(
        "BW024",
        &ns_good.replace("operator: In", "operator: Prefix"),
        &ns_good,
    );
    let dst_good = policy("enforce", "connect", "{matchDestinations: [{operator: NotIn, cidrs: [10.0.0.0/8]}], matchActions: [{action: Block}]}");
    pair(
        "BW024",
        &dst_good.replace("operator: NotIn", "operator: NotPostfix"),
        &dst_good,
    );
    // all seven string operators are valid for binaries and args
    for op in [
        "In",
        "NotIn",
        "Prefix",
        "NotPrefix",
        "Postfix",
        "NotPostfix",
        "Equal",
    ] {
        let v = if op.contains("Postfix") {
            "/curl"
        } else {
            "/usr/bin/curl"
        };
        let t = policy("enforce", "exec", &format!("{{matchBinaries: [{{operator: {op}, values: [{v}]}}], matchArgs: [{{operator: {op}, values: [x]}}], matchActions: [{{action: Sigkill}}]}}"));
        assert!(codes(&t).is_empty(), "{op}: {:?}", codes(&t));
    }
}

#[test]
fn names_rules_and_selectors() {
    let good = policy("enforce", "exec", KILL);
    pair(
        "BW030",
        &good.replace(&good[good.find("  rules:").unwrap()..], "  rules: []\n"),
        &good,
    );
    let two =
        format!("{good}    - name: r2\n      hook: exec\n      selectors:\n        - {KILL}\n");
    pair("BW031", &two.replace("name: r2", "name: r"), &two);
    let second = good.replace("name: p", "name: q");
    let dup = format!("{good}---\n{good}");
    let d = lint_source("t.yaml", &dup).diagnostics;
    assert_eq!(d.iter().map(|d| d.code).collect::<Vec<_>>(), ["BW032"]);
    assert_eq!(
        d[0].line,
        Some(4 + good.lines().count() as u32 + 1),
        "on the second metadata.name"
    );
    assert!(
        d[0].message.contains("first defined at t.yaml:4"),
        "{}",
        d[0].message
    );
    assert!(codes(&format!("{good}---\n{second}")).is_empty());
    pair("BW040", &good.replace("[/usr/bin/curl]", "[]"), &good);
    let dst = policy(
        "enforce",
        "connect",
        "{matchDestinations: [{operator: In, ports: [25]}], matchActions: [{action: Block}]}",
    );
    pair(
        "BW040",
        &dst.replace("operator: In, ports: [25]", "operator: In"),
        &dst,
    );
    pair(
        "BW041",
        &good.replace(
            &good[good.find("      selectors:").unwrap()..],
            "      selectors: []\n",
        ),
        &good,
    );
    let post_all = policy("monitor", "exec", "{matchActions: [{action: Post}]}");
    let post_some = policy(
        "monitor",
        "exec",
        "{matchBinaries: [{operator: Prefix, values: [/tmp/]}], matchActions: [{action: Post}]}",
    );
    pair("BW042", &post_all, &post_some);
    // No matchActions: the default is Post. Said (as a warning, at the selector) where it
    // surprises: an enforcing policy whose other selectors enforce.
    let two = |second_actions: &str| {
        policy(
            "enforce",
            "exec",
            &format!("{KILL}\n        - {{matchBinaries: [{{operator: Prefix, values: [/tmp/]}}]{second_actions}}}"),
        )
    };
    pair("BW071", &two(""), &two(", matchActions: [{action: Post}]"));
    pair(
        "BW071",
        &two(""),
        &two(", matchActions: [{action: Sigkill}]"),
    );
    let d = &lint_source("t.yaml", &two("")).diagnostics;
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].code, d[0].line), ("BW071", Some(12)), "{d:?}");
    assert!(d[0].message.contains("`Post`") && d[0].severity.as_str() == "warning");
    // Not in monitor mode (every selector only reports), nor where BW070 covers the policy.
    let monitor = policy(
        "monitor",
        "exec",
        "{matchBinaries: [{operator: Prefix, values: [/tmp/]}]}",
    );
    assert!(codes(&monitor).is_empty(), "{:?}", codes(&monitor));
    let nothing_enforces = monitor.replace("mode: monitor", "mode: enforce");
    assert_eq!(codes(&nothing_enforces), ["BW070"]);
    pair(
        "BW043",
        &policy("enforce", "exec", "{matchActions: [{action: Sigkill}]}"),
        &good,
    );
    // A namespaced policy's implicit namespace is a condition.
    let ns = "apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicyNamespaced\nmetadata:\n  name: p\n  namespace: shop\nspec:\n  rules:\n    - name: r\n      hook: exec\n      selectors:\n        - matchActions: [{action: Sigkill}]\n";
    assert!(codes(ns).is_empty(), "{:?}", codes(ns));
}

#[test]
fn values() {
    let dst = |cidr: &str, ports: &str| {
        policy("enforce", "connect", &format!("{{matchDestinations: [{{operator: In, cidrs: [{cidr}], ports: [{ports}]}}], matchActions: [{{action: Block}}]}}"))
    };
    let good = dst("10.0.0.0/8", "443");
    pair("BW050", &dst("10.0.0.0/33", "443"), &good);
    pair("BW050", &dst("10.0.0", "443"), &good);
    pair(
        "BW050",
        &dst("2001:db8::/129", "443"),
        &dst("2001:db8::/32", "443"),
    );
    pair("BW051", &dst("10.1.0.0/8", "443"), &good);
    let w = lint_source("t.yaml", &dst("10.1.0.0/8", "443")).diagnostics;
    assert_eq!(w[0].severity, bulwark_policy::Severity::Warning);
    assert!(w[0].hint.as_deref().unwrap().contains("10.0.0.0/8"));
    pair("BW052", &dst("10.0.0.0/8", "0"), &good);
    pair(
        "BW052",
        &dst("10.0.0.0/8", "65536"),
        &dst("10.0.0.0/8", "65535"),
    );
    pair("BW052", &dst("10.0.0.0/8", "https"), &good);
    pair(
        "BW053",
        &dst("10.0.0.0/8", "\"9-1\""),
        &dst("10.0.0.0/8", "\"1-9\""),
    );
    let bin = |op: &str, v: &str| {
        policy("enforce", "exec", &format!("{{matchBinaries: [{{operator: {op}, values: [\"{v}\"]}}], matchActions: [{{action: Sigkill}}]}}"))
    };
    pair("BW054", &bin("In", "curl"), &bin("In", "/usr/bin/curl"));
    pair(
        "BW054",
        &bin("In", "/usr//bin/curl"),
        &bin("In", "/usr/bin/curl"),
    );
    pair(
        "BW054",
        &bin("In", "/usr/bin/"),
        &bin("Prefix", "/usr/bin/"),
    );
    pair(
        "BW054",
        &bin("In", "/usr/bin/a\\0b"),
        &bin("In", "/usr/bin/ab"),
    );
    pair("BW054", &bin("In", ""), &bin("In", "/x"));
    pair("BW054", &bin("In", "/usr/../bin/x"), &bin("In", "/bin/x"));
    pair("BW054", &bin("Prefix", "tmp/"), &bin("Postfix", "tmp/x"));
    // Globs and regular expressions can never match a literal path; the hint names the
    // operator that says what was meant.
    let hint = |op: &str, v: &str| {
        let ds = lint_source("t.yaml", &bin(op, v)).diagnostics;
        assert_eq!(ds.len(), 1, "{op} {v}: {ds:?}");
        assert_eq!((ds[0].code, ds[0].severity.as_str()), ("BW055", "error"));
        ds[0].hint.clone().unwrap()
    };
    pair(
        "BW055",
        &bin("In", "/usr/bin/python3*"),
        &bin("Prefix", "/usr/bin/python3"),
    );
    assert!(hint("In", "/usr/bin/python3*").contains("`operator: Prefix` with `/usr/bin/python3`"));
    assert!(hint("NotIn", "/usr/bin/python3.*")
        .contains("`operator: NotPrefix` with `/usr/bin/python3`"));
    assert!(hint("In", "*/nc").contains("`operator: Postfix` with `/nc`"));
    assert!(hint("Prefix", "/tmp/*").starts_with("drop the `*`"));
    assert!(hint("Postfix", "*/nc").starts_with("drop the `*`"));
    assert!(hint("In", "/usr/bin/python[23]").starts_with("list each"));
    pair(
        "BW055",
        &bin("In", "/usr/bin/ba?h"),
        &bin("In", "/usr/bin/bash"),
    );
    pair("BW055", &bin("Prefix", "^/tmp/"), &bin("Prefix", "/tmp/"));
    pair("BW055", &bin("Postfix", "/nc$"), &bin("Postfix", "/nc"));
    // White space and control characters: an error where they make the path relative, a
    // warning where a (strange) file could still have them.
    let stray = |op: &str, v: &str| {
        let ds = lint_source("t.yaml", &bin(op, v)).diagnostics;
        assert_eq!(ds.len(), 1, "{op} {v:?}: {ds:?}");
        assert_eq!(ds[0].code, "BW056");
        (ds[0].severity.as_str(), ds[0].hint.clone().unwrap())
    };
    pair(
        "BW056",
        &bin("In", " /usr/bin/curl"),
        &bin("In", "/usr/bin/curl"),
    );
    assert_eq!(
        stray("In", " /usr/bin/curl"),
        ("error", "write `/usr/bin/curl`".into())
    );
    assert_eq!(stray("In", "/usr/bin/curl ").0, "warning");
    assert_eq!(stray("Postfix", " /curl").0, "warning");
    assert_eq!(stray("Prefix", "  ").0, "error");
    assert!(stray("Prefix", "  ").1.contains("absolute path"));
    assert_eq!(
        stray("In", "/usr/bin/cu\trl"),
        ("warning", "write `/usr/bin/curl`".into())
    );
    let arg = |v: &str| {
        policy("enforce", "exec", &format!("{{matchArgs: [{{operator: In, values: [\"{v}\"]}}], matchActions: [{{action: Sigkill}}]}}"))
    };
    pair("BW056", &arg("--force "), &arg("--force"));
    pair("BW056", &arg("-c\\n"), &arg("-c"));
    let ds = lint_source("t.yaml", &arg("\\t-x")).diagnostics;
    assert_eq!((ds[0].code, ds[0].severity.as_str()), ("BW056", "warning"));
    assert!(ds[0].message.contains("`\\t-x`"), "{}", ds[0].message);
}

#[test]
fn hooks_actions_and_mode() {
    pair(
        "BW060",
        &policy("enforce", "exec", &KILL.replace("Sigkill", "Block")),
        &policy("enforce", "exec", KILL),
    );
    let conn = "{matchDestinations: [{operator: In, cidrs: [169.254.169.254/32]}], matchActions: [{action: Block}]}";
    pair(
        "BW060",
        &policy("enforce", "connect", &conn.replace("Block", "Sigkill")),
        &policy("enforce", "connect", conn),
    );
    pair(
        "BW060",
        &policy("enforce", "egress", &conn.replace("Block", "Sigkill")),
        &policy("enforce", "egress", conn),
    );
    pair(
        "BW061",
        &policy("enforce", "exec", conn),
        &policy("enforce", "connect", conn),
    );
    let enc = "{matchEncryption: plaintext, matchDestinations: [{operator: NotIn, cidrs: [10.0.0.0/8]}], matchActions: [{action: Block}]}";
    pair(
        "BW062",
        &policy("enforce", "connect", enc),
        &policy("enforce", "egress", enc),
    );
    // A server's first payload is classified too.
    pair(
        "BW062",
        &policy("enforce", "exec", "{matchBinaries: [{operator: In, values: [/a]}], matchEncryption: tls, matchActions: [{action: Sigkill}]}"),
        &policy("enforce", "ingress", enc),
    );
    pair(
        "BW060",
        &policy("enforce", "ingress", &enc.replace("Block", "Sigkill")),
        &policy("monitor", "ingress", &enc.replace("Block", "Post")),
    );
    let udp = "{matchDestinations: [{operator: In, protocol: UDP, ports: [53]}], matchActions: [{action: Block}]}";
    pair(
        "BW063",
        &policy("enforce", "egress", udp),
        &policy("enforce", "connect", udp),
    );
    pair(
        "BW063",
        &policy("enforce", "ingress", udp),
        &policy("enforce", "connect", udp),
    );
    let post = KILL.replace("Sigkill", "Post");
    pair(
        "BW070",
        &policy("enforce", "exec", &post),
        &policy("monitor", "exec", &post),
    );
    // monitor mode with enforcing actions is the supported dry run of a blocking policy
    assert!(codes(&policy("monitor", "exec", KILL)).is_empty());
}

#[test]
fn never_matching_and_shadowed_selectors() {
    let sel = |entries: &str| {
        policy(
            "enforce",
            "exec",
            &format!("{{{entries}, matchActions: [{{action: Sigkill}}]}}"),
        )
    };
    pair(
        "BW080",
        &sel("matchBinaries: [{operator: In, values: [/a]}, {operator: NotIn, values: [/a]}]"),
        &sel("matchBinaries: [{operator: In, values: [/a, /b]}, {operator: NotIn, values: [/a]}]"),
    );
    pair(
        "BW080",
        &sel("matchBinaries: [{operator: In, values: [/a]}, {operator: In, values: [/b]}]"),
        &sel("matchBinaries: [{operator: In, values: [/a, /c]}, {operator: In, values: [/b, /c]}]"),
    );
    pair(
        "BW080",
        &sel("matchBinaries: [{operator: Prefix, values: [/usr/]}, {operator: Prefix, values: [/tmp/]}]"),
        &sel("matchBinaries: [{operator: Prefix, values: [/usr/]}, {operator: Prefix, values: [/usr/bin/]}]"),
    );
    pair(
        "BW080",
        &sel("matchBinaries: [{operator: In, values: [/tmp/x]}, {operator: NotPrefix, values: [/tmp/]}]"),
        &sel("matchBinaries: [{operator: In, values: [/tmp/x]}, {operator: NotPrefix, values: [/usr/]}]"),
    );
    pair(
        "BW080",
        &sel("matchArgs: [{index: 1, operator: In, values: [-c]}, {index: 1, operator: In, values: [-e]}]"),
        &sel("matchArgs: [{index: 1, operator: In, values: [-c]}, {index: 2, operator: In, values: [-e]}]"),
    );
    // Without an index, two positive conditions may be met by different arguments...
    assert!(codes(&sel(
        "matchArgs: [{operator: In, values: [-c]}, {operator: In, values: [-e]}]"
    ))
    .is_empty());
    // ...but a negated one forbids every argument.
    assert!(codes(&sel(
        "matchArgs: [{operator: In, values: [-c]}, {operator: NotIn, values: [-c]}]"
    ))
    .contains(&"BW080"));
    pair(
        "BW080",
        &sel("matchNamespaces: [{operator: In, values: [a]}, {operator: In, values: [b]}]"),
        &sel("matchNamespaces: [{operator: In, values: [a, b]}, {operator: NotIn, values: [b]}]"),
    );
    let csel = |entries: &str| {
        policy(
            "enforce",
            "connect",
            &format!("{{{entries}, matchActions: [{{action: Block}}]}}"),
        )
    };
    pair(
        "BW080",
        &csel("matchDestinations: [{operator: In, cidrs: [10.0.0.0/8]}, {operator: In, cidrs: [192.168.0.0/16]}]"),
        &csel("matchDestinations: [{operator: In, cidrs: [10.0.0.0/8]}, {operator: In, cidrs: [10.1.0.0/16]}]"),
    );
    pair(
        "BW080",
        &csel("matchDestinations: [{operator: In, cidrs: [10.1.0.0/16], ports: [443]}, {operator: NotIn, cidrs: [10.0.0.0/8]}]"),
        &csel("matchDestinations: [{operator: In, cidrs: [10.0.0.0/8], ports: [443]}, {operator: NotIn, cidrs: [10.1.0.0/16]}]"),
    );
    pair(
        "BW080",
        &csel("matchDestinations: [{operator: In, ports: [80]}, {operator: In, ports: [\"443-444\"]}]"),
        &csel("matchDestinations: [{operator: In, ports: [80]}, {operator: In, ports: [\"1-1024\"]}]"),
    );
    let ns_policy = |values: &str| {
        format!("apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicyNamespaced\nmetadata:\n  name: p\n  namespace: shop\nspec:\n  rules:\n    - name: r\n      hook: exec\n      selectors:\n        - {{matchNamespaces: [{{operator: In, values: [{values}]}}], matchActions: [{{action: Sigkill}}]}}\n")
    };
    pair("BW080", &ns_policy("prod"), &ns_policy("shop, prod"));

    let two = |a: &str, b: &str| {
        format!("apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: p\nspec:\n  rules:\n    - name: r\n      hook: exec\n      selectors:\n        - {a}\n        - {b}\n")
    };
    let prefix =
        "{matchBinaries: [{operator: Prefix, values: [/tmp/]}], matchActions: [{action: Sigkill}]}";
    let inner =
        "{matchBinaries: [{operator: In, values: [/tmp/x]}], matchActions: [{action: Sigkill}]}";
    let outer = "{matchBinaries: [{operator: In, values: [/usr/bin/x]}], matchActions: [{action: Sigkill}]}";
    pair("BW081", &two(prefix, inner), &two(prefix, outer));
    pair("BW081", &two(KILL, KILL), &two(KILL, outer));
    // The narrower selector first is fine, and a narrower selector with more actions adds something.
    assert!(codes(&two(inner, prefix)).is_empty());
    let post_prefix = prefix.replace("Sigkill", "Post");
    assert!(codes(&two(&post_prefix, inner)).is_empty());
}

#[test]
fn kernel_limits() {
    let arg = |ix: u32, v: &str| {
        policy("enforce", "exec", &format!("{{matchBinaries: [{{operator: In, values: [/bin/sh]}}], matchArgs: [{{index: {ix}, operator: In, values: [\"{v}\"]}}], matchActions: [{{action: Sigkill}}]}}"))
    };
    let limit = daemon_common::ARG_LEN;
    pair(
        "BW090",
        &arg(1, &"a".repeat(limit + 1)),
        &arg(1, &"a".repeat(limit)),
    );
    let d = lint_source("t.yaml", &arg(1, &"a".repeat(limit + 1))).diagnostics;
    assert!(
        d[0].message.contains(&format!("{limit}")) && d[0].message.contains("ARG_LEN"),
        "{}",
        d[0].message
    );
    let max = daemon_common::MAX_ARGS as u32;
    pair("BW091", &arg(max, "-c"), &arg(max - 1, "-c"));
    let bin = |v: String| {
        policy("enforce", "exec", &format!("{{matchBinaries: [{{operator: In, values: [\"{v}\"]}}], matchActions: [{{action: Sigkill}}]}}"))
    };
    let long = |n: usize| format!("/{}", "b".repeat(n - 1));
    pair(
        "BW090",
        &bin(long(daemon_common::PATH_EXACT_LEN + 1)),
        &bin(long(daemon_common::PATH_EXACT_LEN)),
    );
    let pre = |v: String| {
        policy("enforce", "exec", &format!("{{matchBinaries: [{{operator: Prefix, values: [\"{v}\"]}}], matchActions: [{{action: Sigkill}}]}}"))
    };
    pair(
        "BW090",
        &pre(long(daemon_common::PATH_AFFIX_LEN + 1)),
        &pre(long(daemon_common::PATH_AFFIX_LEN)),
    );
}

#[test]
fn validate_policy_works_without_positions() {
    // The controller's path: typed objects from the API server, no text.
    let text = policy("enforce", "exec", &KILL.replace("/usr/bin/curl", "curl"));
    let json = bulwark_policy::yaml::parse(&text).documents[0]
        .root
        .to_json();
    let tp: bulwark_policy::TracingPolicy = serde_json::from_value(json).unwrap();
    let d =
        bulwark_policy::validate::validate_policy(&bulwark_policy::AnyPolicy::Cluster(tp.clone()));
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].code, "BW054");
    assert_eq!(
        d[0].path.as_deref(),
        Some("spec.rules[0].selectors[0].matchBinaries[0].values[0]")
    );
    assert_eq!((d[0].file.as_deref(), d[0].line), (None, None));
    // Duplicate names are the policy crate's set check; kernel capacity is the compiler's.
    let set = bulwark_policy::validate::validate_set(&[
        bulwark_policy::AnyPolicy::Cluster(tp.clone()),
        bulwark_policy::AnyPolicy::Cluster(tp),
    ]);
    assert_eq!(set.iter().map(|d| d.code).collect::<Vec<_>>(), ["BW032"]);
}

#[test]
fn exec_kinds() {
    let sel = |kinds: &str| {
        policy(
            "enforce",
            "exec",
            &format!("{{matchExecKinds: [{kinds}], matchActions: [{{action: Sigkill}}]}}"),
        )
    };
    let fileless = "{operator: In, values: [fileless]}";
    let good = sel(fileless);
    // An unknown kind, an empty list, a selector that can never match, a shadowed one.
    pair("BW022", &sel("{operator: In, values: [memfd]}"), &good);
    pair("BW040", &sel("{operator: In, values: []}"), &good);
    pair(
        "BW080",
        &sel(&format!(
            "{fileless}, {{operator: NotIn, values: [loader, fileless]}}"
        )),
        &sel(&format!(
            "{fileless}, {{operator: NotIn, values: [loader]}}"
        )),
    );
    let two = |a: &str, b: &str| {
        policy(
            "enforce",
            "exec",
            &format!(
                "{{matchExecKinds: [{a}], matchActions: [{{action: Sigkill}}]}}\n        - {{matchExecKinds: [{b}], matchActions: [{{action: Sigkill}}]}}"
            ),
        )
    };
    let both = "{operator: In, values: [fileless, loader]}";
    pair(
        "BW081",
        &two(both, fileless),
        &two(fileless, "{operator: In, values: [loader]}"),
    );
    // Exec kinds are conditions: an enforcing selector with only them is not unconditional.
    assert!(codes(&good).is_empty());
}
