//! The lint's kernel-capacity check (BW092), which the compiler owns: through the whole lint
//! (`bulwark_compiler::lint_source`, as `bulwark lint` runs it), for a set without positions
//! (`validate_set`, as the daemon runs it), and at every limit against `compile`, which counts
//! with the same builder.

use bulwark_compiler::{compile, lint_source, validate_set, ErrorKind, Limit, NamespaceIds};
use bulwark_policy::AnyPolicy;
use serde_json::{json, Value};

/// The diagnostics of one file holding policies `p`, `p-2`, ... (enforce mode) with `rules`,
/// each `(hook, selector)`, at most `MAX_SELECTORS` rules per policy (the most the CRD schema
/// lets one policy list); JSON is YAML.
fn lint_rules(rules: &[(&str, Value)]) -> Vec<bulwark_policy::Diagnostic> {
    let rules: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(i, (hook, sel))| json!({"name": format!("r{i}"), "hook": hook, "selectors": [sel]}))
        .collect();
    let docs: Vec<String> = rules
        .chunks(daemon_common::MAX_SELECTORS)
        .enumerate()
        .map(|(i, rules)| {
            let name = if i == 0 {
                "p".to_string()
            } else {
                format!("p-{}", i + 1)
            };
            json!({"apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
                   "metadata": {"name": name}, "spec": {"rules": rules}})
            .to_string()
        })
        .collect();
    let out = lint_source("t.yaml", &docs.join("\n---\n"));
    if out.diagnostics.is_empty() {
        assert_eq!(out.policies.len(), docs.len(), "a clean file is loadable");
    }
    out.diagnostics
}

fn codes(d: &[bulwark_policy::Diagnostic]) -> Vec<&'static str> {
    d.iter().map(|d| d.code).collect()
}

/// Moved from the policy crate's `kernel_limits` test with the check itself.
#[test]
fn capacity_over_a_file() {
    // Capacity over a set: selectors, distinct process and destination conditions.
    let kill = |v: String| {
        (
            "exec",
            json!({"matchBinaries": [{"operator": "In", "values": [v]}], "matchActions": [{"action": "Sigkill"}]}),
        )
    };
    let rules = |n: usize, distinct: bool| -> Vec<(&str, Value)> {
        (0..n)
            .map(|i| {
                kill(if distinct {
                    format!("/usr/bin/t{i}")
                } else {
                    "/usr/bin/t".into()
                })
            })
            .collect()
    };
    let max_sel = daemon_common::MAX_SELECTORS;
    assert!(lint_rules(&rules(max_sel, false)).is_empty());
    let d = lint_rules(&rules(max_sel + 1, false));
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(
        d[0].message.contains("MAX_SELECTORS") && d[0].message.contains(&max_sel.to_string()),
        "{}",
        d[0].message
    );
    // The selector past the limit is the first of the second policy.
    assert_eq!(d[0].path.as_deref(), Some("spec.rules[0].selectors[0]"));
    assert!(d[0].message.contains("`p-2`"), "{}", d[0].message);
    // 64 selectors with 64 distinct conditions fit; identical conditions are shared.
    assert!(lint_rules(&rules(max_sel, true)).is_empty());
    // One condition past the limit, over two selectors (a list may hold at most the limit).
    let entries: Vec<Value> = (0..=daemon_common::MAX_PROC_CONDITIONS)
        .map(|i| json!({"index": 1, "operator": "NotIn", "values": [format!("v{i}")]}))
        .collect();
    let (a, b) = entries.split_at(entries.len() / 2);
    let d = lint_rules(&[
        (
            "exec",
            json!({"matchArgs": a, "matchActions": [{"action": "Sigkill"}]}),
        ),
        (
            "exec",
            json!({"matchArgs": b, "matchActions": [{"action": "Sigkill"}]}),
        ),
    ]);
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(d[0].message.contains("MAX_PROC_CONDITIONS"));
    let entries: Vec<Value> = (0..=daemon_common::MAX_DEST_CONDITIONS)
        .map(|i| json!({"operator": "NotIn", "ports": [1000 + i]}))
        .collect();
    let (a, b) = entries.split_at(entries.len() / 2);
    let d = lint_rules(&[
        (
            "connect",
            json!({"matchDestinations": a, "matchActions": [{"action": "Block"}]}),
        ),
        (
            "connect",
            json!({"matchDestinations": b, "matchActions": [{"action": "Block"}]}),
        ),
    ]);
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(d[0].message.contains("MAX_DEST_CONDITIONS"));
}

/// A policy whose one rule has `selectors`.
fn cluster(name: &str, hook: &str, selectors: Value) -> AnyPolicy {
    AnyPolicy::Cluster(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": name},
            "spec": {"rules": [{"name": "r", "hook": hook, "selectors": selectors}]}
        }))
        .expect("valid TracingPolicy"),
    )
}

/// One selector with `n` distinct values of the kind that fills `limit`, just inside (`n` at
/// the limit) or past it.
fn filling(limit: Limit, n: usize) -> Vec<AnyPolicy> {
    let paths: Vec<String> = (0..n).map(|i| format!("/bin/{i}")).collect();
    // One `In` entry per path.
    let entries: Vec<Value> = paths
        .iter()
        .map(|p| json!({"operator": "In", "values": [p]}))
        .collect();
    let (hook, selectors) = match limit {
        Limit::Selectors => ("exec", Value::Array((0..n).map(|_| json!({})).collect())),
        Limit::ProcConditions => ("exec", json!([{"matchBinaries": entries}])),
        Limit::DestConditions => {
            let entries: Vec<Value> = (0..n)
                .map(|i| json!({"operator": "NotIn", "ports": [i + 1]}))
                .collect();
            ("connect", json!([{"matchDestinations": entries}]))
        }
        Limit::BinaryValues => (
            "exec",
            json!([{"matchBinaries": [{"operator": "Prefix", "values": paths}]}]),
        ),
        Limit::ArgValues => (
            "exec",
            json!([{"matchArgs": [{"operator": "In", "values": paths}]}]),
        ),
        Limit::Namespaces => {
            let names: Vec<String> = (0..n).map(|i| format!("ns-{i}")).collect();
            (
                "exec",
                json!([{"matchNamespaces": [{"operator": "In", "values": names}]}]),
            )
        }
        Limit::Cidrs => {
            let cidrs: Vec<String> = (0..n as u32)
                .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
                .collect();
            (
                "connect",
                json!([{"matchDestinations": [{"operator": "In", "cidrs": cidrs}]}]),
            )
        }
        Limit::PortPrefixes => {
            // Every odd port is its own /16 block.
            let ports: Vec<Value> = (0..n).map(|i| json!(2 * i + 1)).collect();
            (
                "connect",
                json!([{"matchDestinations": [{"operator": "In", "ports": ports}]}]),
            )
        }
        Limit::FilePathConds => ("file", json!([{"matchPaths": entries}])),
        Limit::FileValues => (
            "file",
            json!([{"matchPaths": [{"operator": "Prefix", "values": paths}]}]),
        ),
    };
    // Two policies, so the limit is passed in the second one.
    vec![
        cluster(
            "first",
            "exec",
            json!([{"matchBinaries": [{"operator": "In", "values": ["/first"]}]}]),
        ),
        cluster("second", hook, selectors),
    ]
}

#[test]
fn every_limit_is_reported_where_compile_refuses() {
    for limit in Limit::ALL {
        let max = limit.max() as usize;
        // `first` already uses one selector and one process condition.
        let fits = match limit {
            Limit::Selectors | Limit::ProcConditions => max - 1,
            _ => max,
        };
        let inside = filling(limit, fits);
        let refs: Vec<&AnyPolicy> = inside.iter().collect();
        assert_eq!(
            bulwark_compiler::capacity(&refs),
            vec![],
            "{limit:?} at the limit"
        );
        compile(&inside, &mut NamespaceIds::new())
            .unwrap_or_else(|e| panic!("{limit:?} at the limit: {e}"));

        let past = filling(limit, fits + 1);
        let refs: Vec<&AnyPolicy> = past.iter().collect();
        let found = bulwark_compiler::capacity(&refs);
        let mine: Vec<_> = found
            .iter()
            .filter(|(_, d)| d.message.contains(limit.name()))
            .collect();
        assert_eq!(mine.len(), 1, "{limit:?} past the limit: {found:?}");
        let (policy, d) = mine[0];
        assert_eq!((*policy, d.code), (1, "BW092"), "{d:?}");
        let e = compile(&past, &mut NamespaceIds::new()).expect_err("past the limit");
        assert_eq!(e.kind.limit(), Some((limit.name(), limit.max())), "{e}");
        assert_eq!(e.at.policy, "second");
        assert_eq!(
            d.path.as_deref(),
            Some(format!("spec.rules[0].selectors[{}]", e.at.selector.unwrap()).as_str()),
            "the lint points at the selector compile refuses"
        );
        assert!(
            d.message
                .starts_with(&format!("the loaded policies need {} ", max + 1)),
            "{d:?}"
        );
    }
}

#[test]
fn sets_without_positions_get_duplicates_and_capacity() {
    let mut set = filling(Limit::Selectors, daemon_common::MAX_SELECTORS);
    set.push(set[0].clone());
    let codes: Vec<&str> = validate_set(&set).iter().map(|d| d.code).collect();
    assert_eq!(codes, ["BW032", "BW092"]);
    let d = validate_set(&set).pop().unwrap();
    assert_eq!(
        (d.file, d.line, d.path.as_deref()),
        (None, None, Some("spec.rules[0].selectors[63]"))
    );
}

#[test]
fn capacity_counts_only_policies_without_errors_across_files() {
    let dir = std::env::temp_dir().join(format!("bulwark-capacity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, n: usize, broken: bool| {
        let mut s = format!("apiVersion: bulwark.dev/v1alpha1\nkind: TracingPolicy\nmetadata:\n  name: {name}\nspec:\n  mode: monitor\n  rules:\n");
        for i in 0..n {
            s.push_str(&format!("    - {{name: r{i}, hook: exec, selectors: [{{matchBinaries: [{{operator: In, values: [/usr/bin/t{i}]}}]}}]}}\n"));
        }
        if broken {
            s = s.replace("/usr/bin/t0", "usr/bin/t0");
        }
        std::fs::write(dir.join(format!("{name}.yaml")), s).unwrap();
    };
    file("a", 40, false);
    file("b", 30, true);
    let out = bulwark_compiler::lint_paths(std::slice::from_ref(&dir)).unwrap();
    let codes: Vec<&str> = out.diagnostics.iter().map(|d| d.code).collect();
    assert_eq!(codes, ["BW054"], "b has an error, so only a counts");
    file("b", 30, false);
    let out = bulwark_compiler::lint_paths(std::slice::from_ref(&dir)).unwrap();
    let d: Vec<_> = out.diagnostics.iter().collect();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].code, "BW092");
    assert!(
        d[0].file.as_deref().unwrap().ends_with("b.yaml"),
        "{:?}",
        d[0].file
    );
    // Rule 24 of b is the 65th selector; its line is the 8th of rules + 24.
    assert_eq!(d[0].line, Some(8 + 24), "{:?}", d[0]);
    assert!(
        d[0].message.contains("need 70 selectors"),
        "{}",
        d[0].message
    );
    assert_eq!(
        out.policies.len(),
        1,
        "the policy passing the limit is not loadable"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A policy of one rule `r` on `hook` with `selectors`; namespaced to `namespace` when given.
/// JSON, which is YAML.
fn rule_doc(name: &str, namespace: Option<&str>, hook: &str, selectors: Vec<Value>) -> Value {
    let mut doc = json!({
        "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
        "metadata": {"name": name},
        "spec": {"rules": [{"name": "r", "hook": hook, "selectors": selectors}]}
    });
    if let Some(ns) = namespace {
        doc["kind"] = json!("TracingPolicyNamespaced");
        doc["metadata"]["namespace"] = json!(ns);
    }
    doc
}

/// A policy of `hook: syscall` selectors, one per entry of `selectors` (the calls it names).
fn syscall_doc(name: &str, namespace: Option<&str>, selectors: &[Vec<&str>]) -> Value {
    let selectors: Vec<Value> = selectors
        .iter()
        .map(|calls| json!({"matchSyscalls": [{"operator": "In", "values": calls}]}))
        .collect();
    rule_doc(name, namespace, "syscall", selectors)
}

fn policy_of(doc: &Value) -> AnyPolicy {
    if doc["kind"] == "TracingPolicy" {
        AnyPolicy::Cluster(serde_json::from_value(doc.clone()).unwrap())
    } else {
        AnyPolicy::Namespaced(serde_json::from_value(doc.clone()).unwrap())
    }
}

/// `SYSCALL_SELECTORS` entries one slot of these policies needs (every group's distinct calls).
fn syscall_keys(docs: &[Value]) -> usize {
    let policies: Vec<AnyPolicy> = docs.iter().map(policy_of).collect();
    let node = bulwark_compiler::compile_node(&policies, &mut NamespaceIds::new()).unwrap();
    node.slot_entries(0)
        .tables
        .iter()
        .map(|(_, e)| e.syscall_selectors.len())
        .sum()
}

/// `MAX_SYSCALL_KEYS` (one entry per group and call, over all groups of a slot) at the limit
/// and one past it: the lint reports the selector that passes it, at its file and line, and
/// `compile_node` refuses the same set at the same selector.
#[test]
fn syscall_keys_over_all_groups_are_checked_at_the_limit() {
    const GROUPS: usize = 16;
    let max = daemon_common::MAX_SYSCALL_KEYS as usize;
    assert_eq!(max % GROUPS, 0, "the layout below needs it");
    let per_group = max / GROUPS;
    // A cluster-wide selector naming calls that take exactly `per_group` entries (native and,
    // on x86_64, i386 numbers: most names take two, some one).
    use bulwark_policy::syscalls::{table, Arch};
    let both: Vec<&str> = table(Arch::host().expect("an architecture with a table"))
        .names()
        .collect();
    let keys_of = |calls: &[&str]| syscall_keys(&[syscall_doc("all", None, &[calls.to_vec()])]);
    let mut calls: Vec<&str> = Vec::new();
    for name in &both {
        let mut more = calls.clone();
        more.push(name);
        if keys_of(&more) <= per_group {
            calls = more;
        }
        if keys_of(&calls) == per_group {
            break;
        }
    }
    assert_eq!(keys_of(&calls), per_group);
    let spare: &'static str = both
        .iter()
        .find(|n| !calls.contains(*n))
        .expect("a call left over");
    let extra = keys_of(&[calls.clone(), vec![spare]].concat()) - per_group;
    // GROUPS - 1 namespaces whose 32 selectors each keep them in groups of their own (33
    // selectors with the cluster-wide one, two namespaces would need 65) and name only calls
    // the cluster-wide selector names: every group holds `per_group` calls.
    let half = daemon_common::MAX_SELECTORS / 2;
    let namespaced = |i: usize, extra: Option<&'static str>| {
        let mut sels: Vec<Vec<&str>> = (0..half).map(|j| vec![calls[j % calls.len()]]).collect();
        if let Some(e) = extra {
            sels[half - 1].push(e);
        }
        syscall_doc(&format!("p{i}"), Some(&format!("ns{i}")), &sels)
    };
    let mut docs = vec![syscall_doc("all", None, &[calls.clone()])];
    docs.extend((1..GROUPS).map(|i| namespaced(i, None)));
    // The capacity diagnostics only (names of one architecture only are warned about, BW067).
    let lint = lint_capacity;
    assert_eq!(syscall_keys(&docs), max, "at the limit");
    assert_eq!(
        lint(&docs),
        vec![],
        "at the limit the capacity check is clean"
    );

    // The last namespace's last selector names one call more.
    *docs.last_mut().unwrap() = namespaced(GROUPS - 1, Some(spare));
    let policies: Vec<AnyPolicy> = docs.iter().map(policy_of).collect();
    let e = bulwark_compiler::compile_node(&policies, &mut NamespaceIds::new())
        .expect_err("past the limit");
    assert_eq!(
        e.kind.limit(),
        Some(("MAX_SYSCALL_KEYS", daemon_common::MAX_SYSCALL_KEYS as u64)),
        "{e}"
    );
    let last = format!("p{}", GROUPS - 1);
    assert_eq!(
        (e.at.policy.as_str(), e.at.selector),
        (last.as_str(), Some(half - 1)),
        "{e}"
    );
    let d = lint(&docs);
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(
        d[0].message.contains("MAX_SYSCALL_KEYS") && d[0].message.contains(&max.to_string()),
        "{}",
        d[0].message
    );
    assert_eq!(e.kind, ErrorKind::SyscallKeys { used: max + extra });
    assert!(
        d[0].message
            .contains(&format!("need {} entries", max + extra)),
        "{}",
        d[0].message
    );
    assert_eq!(
        d[0].path.as_deref(),
        Some(format!("spec.rules[0].selectors[{}]", half - 1).as_str())
    );
    // Document i is line 2i + 1; the last one is the policy passing the limit.
    assert_eq!(
        (d[0].file.as_deref(), d[0].line),
        (Some("t.yaml"), Some(2 * GROUPS as u32 - 1)),
        "{:?}",
        d[0]
    );
    assert!(
        d[0].hint.as_deref().unwrap_or("").contains("In"),
        "{:?}",
        d[0]
    );
}

/// A policy of `hook: file` selectors, one per entry of `selectors` (its `matchPaths`).
fn file_doc(name: &str, namespace: Option<&str>, selectors: Vec<Value>) -> Value {
    let selectors: Vec<Value> = selectors
        .into_iter()
        .map(|paths| json!({"matchPaths": paths}))
        .collect();
    rule_doc(name, namespace, "file", selectors)
}

/// `n` `In` entries of one path each, `/f{from}` on.
fn path_entries(from: usize, n: usize) -> Value {
    (from..from + n)
        .map(|i| json!({"operator": "In", "values": [format!("/f{i}")]}))
        .collect()
}

/// The BW092 diagnostics `bulwark lint` gives a file of `docs`, one document per line pair.
fn lint_capacity(docs: &[Value]) -> Vec<bulwark_policy::Diagnostic> {
    let text: Vec<String> = docs.iter().map(Value::to_string).collect();
    let mut d = lint_source("t.yaml", &text.join("\n---\n")).diagnostics;
    d.retain(|d| d.code == "BW092");
    d
}

/// `MAX_FILE_PATH_CONDS` over two policies (each within what one selector may list), through
/// the whole lint: exactly at the limit it is clean; one entry past, BW092 is at the second
/// policy's selector that passes it, at its file and line, and `compile_node` refuses the same
/// selector. Identical entries in both policies share a bit and are not counted twice.
#[test]
fn file_path_conditions_are_checked_at_the_limit_in_input_order() {
    let max = daemon_common::MAX_FILE_PATH_CONDS;
    let half = max / 2;
    // The second policy repeats the first's entries (shared) and adds its own.
    let docs = |past: usize| {
        vec![
            file_doc("first", None, vec![path_entries(0, half)]),
            file_doc(
                "second",
                None,
                vec![path_entries(0, 2), path_entries(half, max - half + past)],
            ),
        ]
    };
    assert_eq!(lint_capacity(&docs(0)), vec![], "at the limit");
    let at: Vec<AnyPolicy> = docs(0).iter().map(policy_of).collect();
    bulwark_compiler::compile_node(&at, &mut NamespaceIds::new()).expect("at the limit");

    let past: Vec<AnyPolicy> = docs(1).iter().map(policy_of).collect();
    let e = bulwark_compiler::compile_node(&past, &mut NamespaceIds::new())
        .expect_err("one past the limit");
    assert_eq!(
        e.kind,
        ErrorKind::Capacity {
            limit: Limit::FilePathConds,
            used: max + 1
        },
        "{e}"
    );
    assert_eq!((e.at.policy.as_str(), e.at.selector), ("second", Some(1)));
    let d = lint_capacity(&docs(1));
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(
        d[0].message.contains("MAX_FILE_PATH_CONDS")
            && d[0]
                .message
                .contains(&format!("need {} distinct matchPaths entries", max + 1))
            && d[0].message.contains("`second`"),
        "{}",
        d[0].message
    );
    assert_eq!(d[0].path.as_deref(), Some("spec.rules[0].selectors[1]"));
    // The second document is line 3.
    assert_eq!((d[0].file.as_deref(), d[0].line), (Some("t.yaml"), Some(3)));
}

/// `MAX_FILE_VALUES` per group through the lint, in a namespace's group: the namespace's
/// selector that passes it is reported, naming the namespace; exactly at the limit is clean.
#[test]
fn file_values_of_a_namespace_group_are_checked_at_the_limit() {
    let max = daemon_common::MAX_FILE_VALUES as usize;
    let values = |from: usize, n: usize| -> Value {
        let v: Vec<String> = (from..from + n).map(|i| format!("/d{i}/")).collect();
        json!([{"operator": "Prefix", "values": v}])
    };
    // Cluster-wide 300 prefixes (in every group), the namespace's the rest, split over two
    // selectors (an entry may list at most the limit).
    let docs = |past: usize| {
        vec![
            file_doc("all", None, vec![values(0, 300)]),
            file_doc(
                "mine",
                Some("team"),
                vec![values(300, 400), values(700, max - 700 + past)],
            ),
        ]
    };
    assert_eq!(lint_capacity(&docs(0)), vec![], "at the limit");
    let d = lint_capacity(&docs(1));
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(
        d[0].message.contains("MAX_FILE_VALUES")
            && d[0].message.contains("namespace `team` needs 1025")
            && d[0].message.contains("`mine`"),
        "{}",
        d[0].message
    );
    assert_eq!(d[0].path.as_deref(), Some("spec.rules[0].selectors[1]"));
    assert_eq!((d[0].file.as_deref(), d[0].line), (Some("t.yaml"), Some(3)));
    let past: Vec<AnyPolicy> = docs(1).iter().map(policy_of).collect();
    let e = bulwark_compiler::compile_node(&past, &mut NamespaceIds::new())
        .expect_err("one past the limit");
    assert_eq!(
        e.kind.limit(),
        Some(("MAX_FILE_VALUES", u64::from(daemon_common::MAX_FILE_VALUES))),
        "{e}"
    );
    assert_eq!((e.at.policy.as_str(), e.at.selector), ("mine", Some(1)));
}

/// The file path maps of all groups together (`MAX_FILE_VALUES` x `NODE_MAP_FACTOR` per slot):
/// each group fits, the node does not. 512 cluster-wide prefixes (in all 9 groups) and 8
/// namespaces of 448 (two of them would not fit one group) need exactly 512 + 8 x 960 = 8,192
/// entries; one more value in the last namespace passes the limit, reported once.
#[test]
fn file_values_over_all_groups_are_checked_at_the_limit() {
    let max = daemon_common::MAX_FILE_VALUES as usize * daemon_common::NODE_MAP_FACTOR as usize;
    let values = |from: usize, n: usize| -> Value {
        let v: Vec<String> = (from..from + n).map(|i| format!("/d{i}/")).collect();
        json!([{"operator": "Prefix", "values": v}])
    };
    let docs = |past: usize| {
        let mut docs = vec![file_doc("all", None, vec![values(0, 512)])];
        for i in 0..8 {
            let n = if i == 7 { 448 + past } else { 448 };
            docs.push(file_doc(
                &format!("p{i}"),
                Some(&format!("ns{i}")),
                vec![values(1000 * (i + 1), n)],
            ));
        }
        docs
    };
    let entries = |docs: &[Value]| -> usize {
        let policies: Vec<AnyPolicy> = docs.iter().map(policy_of).collect();
        let node = bulwark_compiler::compile_node(&policies, &mut NamespaceIds::new()).unwrap();
        assert_eq!(node.groups().len(), 9);
        node.slot_entries(0)
            .tables
            .iter()
            .map(|(_, e)| e.file.prefix.len())
            .sum()
    };
    assert_eq!(entries(&docs(0)), max);
    assert_eq!(lint_capacity(&docs(0)), vec![], "at the limit");

    let past: Vec<AnyPolicy> = docs(1).iter().map(policy_of).collect();
    let e = bulwark_compiler::compile_node(&past, &mut NamespaceIds::new())
        .expect_err("one past the limit");
    assert_eq!(
        e.kind,
        ErrorKind::NodeCapacity {
            limit: Limit::FileValues,
            used: max + 1
        },
        "{e}"
    );
    let d = lint_capacity(&docs(1));
    assert_eq!(codes(&d), ["BW092"], "{d:?}");
    assert!(
        d[0].message.contains("MAX_FILE_VALUES") && d[0].message.contains(&(max + 1).to_string()),
        "{}",
        d[0].message
    );
}
