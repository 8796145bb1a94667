//! The node layout ([`compile_node`]): a node's policies in groups of at most 64 selectors by
//! namespace. 1,024 and more selectors load when most are confined to namespaces; a process is
//! judged by its own group only; a namespace that does not fit one group is refused naming it.

use bulwark_compiler::{compile_node, ErrorKind, ExecFacts, Limit, NamespaceIds};
use bulwark_policy::AnyPolicy;
use daemon_common as dc;
use serde_json::json;

/// A `TracingPolicyNamespaced` in `ns` with `rules` exec rules, rule `r` killing
/// `/bin/<ns>-<r % 32>` (at most 33 process conditions, whatever the number of selectors).
fn namespaced(ns: &str, rules: usize) -> AnyPolicy {
    let rules: Vec<_> = (0..rules)
        .map(|r| {
            json!({"name": format!("r{r}"), "hook": "exec", "selectors": [{
                "matchBinaries": [{"operator": "In", "values": [format!("/bin/{ns}-{}", r % 32)]}],
                "matchActions": [{"action": "Sigkill"}]}]})
        })
        .collect();
    AnyPolicy::Namespaced(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicyNamespaced",
            "metadata": {"name": "kill", "namespace": ns}, "spec": {"rules": rules}
        }))
        .expect("namespaced policy"),
    )
}

/// A cluster-wide policy killing `binary` everywhere.
fn cluster(name: &str, binary: &str) -> AnyPolicy {
    AnyPolicy::Cluster(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": name}, "spec": {"rules": [{"name": "r", "hook": "exec",
            "selectors": [{"matchBinaries": [{"operator": "In", "values": [binary]}],
                           "matchActions": [{"action": "Sigkill"}]}]}]}
        }))
        .expect("cluster policy"),
    )
}

#[test]
fn a_thousand_namespaced_selectors_load_and_each_process_sees_its_own() {
    // 510 namespaces x 2 rules + 4 cluster-wide selectors = 1,024 selectors.
    let mut policies: Vec<AnyPolicy> = (0..510).map(|i| namespaced(&format!("ns{i}"), 2)).collect();
    for i in 0..4 {
        policies.push(cluster(
            &format!("everywhere-{i}"),
            &format!("/bin/all-{i}"),
        ));
    }
    let mut ids = NamespaceIds::new();
    let node = compile_node(&policies, &mut ids).expect("1,024 selectors fit");
    assert_eq!(node.selector_count(), 1024);
    assert!(
        node.groups().len() <= dc::MAX_GROUPS,
        "{} groups",
        node.groups().len()
    );
    for g in node.groups() {
        assert!(g.rules.selectors().len() <= dc::MAX_SELECTORS);
        assert!(g.rules.proc_conditions().len() <= dc::MAX_PROC_CONDITIONS);
    }
    // Every group holds the cluster-wide selectors; group 0 only those.
    assert_eq!(node.groups()[0].rules.selectors().len(), 4);
    assert!(node.groups()[0].namespaces.is_empty());

    let kills = |ns: u32, binary: &str| {
        node.evaluate_exec(&ExecFacts::new(binary.as_bytes(), &[], ns)) != 0
    };
    let ns7 = ids.get("ns7").expect("interned");
    let ns400 = ids.get("ns400").expect("interned");
    assert_ne!(node.group_for(ns7), 0);
    assert!(kills(ns7, "/bin/ns7-0") && kills(ns7, "/bin/ns7-1"));
    assert!(!kills(ns7, "/bin/ns400-0"), "another namespace's selector");
    assert!(kills(ns400, "/bin/ns400-1") && !kills(ns400, "/bin/ns7-1"));
    // The cluster-wide selectors hold in every namespace and on the host.
    for ns in [0, ns7, ns400, 99_999] {
        assert!(kills(ns, "/bin/all-3"), "namespace id {ns}");
    }
    // The host and namespaces without policies are in group 0: no namespaced selector.
    assert!(!kills(0, "/bin/ns7-0") && !kills(99_999, "/bin/ns7-0"));

    // The slot's entries: one table per group plus the watch table, and a GROUPS entry per
    // namespace.
    let e = node.slot_entries(1);
    assert_eq!(e.tables.len(), node.groups().len() + 1);
    assert_eq!(e.groups.len(), 510);
    for (t, m) in &e.tables {
        assert_eq!(t & 1, 1, "every table of slot 1");
        assert!(m
            .selectors
            .iter()
            .all(|(i, _)| i / dc::MAX_SELECTORS as u32 == *t));
        assert!(m.bin_exact.iter().all(|(k, _)| k.slot == *t));
    }
}

#[test]
fn a_namespace_over_one_group_is_refused_naming_it() {
    let mut policies = vec![cluster("everywhere", "/bin/x"), namespaced("small", 3)];
    policies.push(namespaced("crowded", dc::MAX_SELECTORS));
    let e =
        compile_node(&policies, &mut NamespaceIds::new()).expect_err("65 selectors in one group");
    match &e.kind {
        ErrorKind::GroupCapacity {
            namespace,
            limit,
            used,
            shared,
        } => {
            assert_eq!(namespace, "crowded");
            assert_eq!(*limit, Limit::Selectors);
            assert_eq!(*used, dc::MAX_SELECTORS + 1);
            assert_eq!(*shared, 1);
        }
        other => panic!("expected a group capacity error, got {other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("namespace `crowded`") && text.contains("MAX_SELECTORS"),
        "{text}"
    );
    // Without the cluster-wide selector the namespace fits its group exactly.
    let node = compile_node(&policies[1..], &mut NamespaceIds::new()).expect("64 fit");
    assert!(node
        .groups()
        .iter()
        .any(|g| g.rules.selectors().len() == dc::MAX_SELECTORS));
}

#[test]
fn too_many_groups_are_refused() {
    // Each namespace fills a group on its own: one more than the groups a slot has.
    let policies: Vec<AnyPolicy> = (0..dc::MAX_GROUPS)
        .map(|i| namespaced(&format!("full{i}"), dc::MAX_SELECTORS))
        .collect();
    let e = compile_node(&policies, &mut NamespaceIds::new()).expect_err("65 groups");
    assert_eq!(
        e.kind.limit(),
        Some(("MAX_GROUPS", dc::MAX_GROUPS as u64)),
        "{e}"
    );
    assert!(compile_node(&policies[1..], &mut NamespaceIds::new()).is_ok());
}

/// The lint's capacity check (BW092) and `compile_node` agree: what loads is clean, what is
/// refused is reported, naming the namespace or the node-wide limit.
#[test]
fn the_lint_capacity_check_agrees_with_the_node_layout() {
    let lint = |ps: &[AnyPolicy]| {
        let refs: Vec<&AnyPolicy> = ps.iter().collect();
        bulwark_compiler::capacity(&refs)
    };
    let mut thousand: Vec<AnyPolicy> = (0..510).map(|i| namespaced(&format!("ns{i}"), 2)).collect();
    thousand.extend((0..4).map(|i| cluster(&format!("everywhere-{i}"), &format!("/bin/all-{i}"))));
    assert_eq!(
        lint(&thousand),
        vec![],
        "1,024 selectors in groups are clean"
    );

    let crowded = vec![
        cluster("everywhere", "/bin/x"),
        namespaced("small", 3),
        namespaced("crowded", dc::MAX_SELECTORS),
    ];
    compile_node(&crowded, &mut NamespaceIds::new()).expect_err("refused");
    let found = lint(&crowded);
    assert_eq!(found.len(), 1, "{found:?}");
    let (policy, d) = &found[0];
    assert_eq!((*policy, d.code), (2, "BW092"));
    assert!(
        d.message
            .starts_with("namespace `crowded` needs 65 selectors"),
        "{}",
        d.message
    );
    assert!(d.message.contains("MAX_SELECTORS"), "{}", d.message);
    assert_eq!(d.path.as_deref(), Some("spec.rules[63].selectors[0]"));

    let groups: Vec<AnyPolicy> = (0..dc::MAX_GROUPS)
        .map(|i| namespaced(&format!("full{i}"), dc::MAX_SELECTORS))
        .collect();
    let found = lint(&groups);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].1.message.contains("MAX_GROUPS"), "{:?}", found[0]);
    assert_eq!(lint(&groups[1..]), vec![]);
}
