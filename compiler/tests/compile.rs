//! Unit tests of `compile()`: the rule set, selector entries, slot meta and map entries it
//! produces for small policies, the reference semantics, and every refusal (each with an input
//! just inside the limit that compiles and one just past it that does not).

use bulwark_compiler::{compile, destination, CompileError, NamespaceIds, PortRange, RuleSet};
use bulwark_policy::{Action, AnyPolicy, Hook, Mode};
use daemon_common as dc;
use serde_json::{json, Value};

fn cluster(name: &str, spec: Value) -> AnyPolicy {
    AnyPolicy::Cluster(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicy",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("valid TracingPolicy"),
    )
}

fn namespaced(name: &str, ns: &str, spec: Value) -> AnyPolicy {
    AnyPolicy::Namespaced(
        serde_json::from_value(json!({
            "apiVersion": "bulwark.dev/v1alpha1", "kind": "TracingPolicyNamespaced",
            "metadata": {"name": name, "namespace": ns}, "spec": spec
        }))
        .expect("valid TracingPolicyNamespaced"),
    )
}

/// One rule `r` on `hook` with the given selectors.
fn rule(hook: &str, selectors: Value) -> Value {
    json!({"rules": [{"name": "r", "hook": hook, "selectors": selectors}]})
}

fn one(p: AnyPolicy) -> RuleSet {
    compile(&[p], &mut NamespaceIds::new()).expect("compiles")
}

fn err(p: AnyPolicy) -> CompileError {
    compile(&[p], &mut NamespaceIds::new()).expect_err("must be refused")
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[test]
fn exec_sigkill_by_exact_path() {
    let rs = one(cluster(
        "kill-nc",
        rule(
            "exec",
            json!([{"matchBinaries": [{"operator": "In", "values": ["/usr/bin/nc", "/bin/nc"]}],
                    "matchActions": [{"action": "Sigkill"}]}]),
        ),
    ));
    assert_eq!(rs.selectors().len(), 1);
    let e = rs.selector_entries()[0];
    assert_eq!(
        (e.hook, e.actions, e.mode, e.encryption),
        (
            dc::HOOK_EXEC,
            dc::ACTION_SIGKILL,
            dc::MODE_ENFORCE,
            dc::ENC_ANY
        )
    );
    assert_eq!(
        (
            e.proc_required,
            e.dest_required,
            e.policy_id,
            e.rule_index,
            e.selector_index
        ),
        (1, 0, 0, 0, 0)
    );

    let m = rs.map_entries(0);
    let paths: Vec<(String, u32, u64)> = m
        .bin_exact
        .iter()
        .map(|(k, v)| (cstr(&k.path), k.slot, *v))
        .collect();
    assert_eq!(
        paths,
        vec![("/bin/nc".into(), 0, 1), ("/usr/bin/nc".into(), 0, 1)]
    );
    assert!(m.bin_prefix.is_empty() && m.bin_postfix.is_empty() && m.arg_exact.is_empty());
    assert_eq!(m.slot_meta.lookups, dc::LOOKUP_BIN_EXACT);
    assert_eq!(m.slot_meta.hook_exec, 1);
    assert_eq!(m.slot_meta.selector_count, 1);
    assert_eq!(m.selectors, vec![(0, e)]);

    assert_eq!(rs.evaluate_process("/usr/bin/nc", &["nc"], 0), 1);
    assert_eq!(rs.evaluate_process("/usr/bin/ncat", &["ncat"], 0), 0);
    assert_eq!(rs.evaluate_process("/usr/bin/n", &[], 0), 0);
}

#[test]
fn slot_is_stamped_into_every_key() {
    let rs = one(cluster(
        "p",
        json!({"rules": [
            {"name": "a", "hook": "exec", "selectors": [
                {"matchBinaries": [{"operator": "Prefix", "values": ["/tmp/"]}, {"operator": "Postfix", "values": ["sh"]}],
                 "matchArgs": [{"index": 1, "operator": "In", "values": ["-c"]}, {"operator": "Prefix", "values": ["--ex"]},
                               {"operator": "NotPostfix", "values": [".conf"]}],
                 "matchNamespaces": [{"operator": "In", "values": ["prod"]}]}]},
            {"name": "b", "hook": "connect", "selectors": [
                {"matchDestinations": [{"operator": "In", "cidrs": ["10.0.0.0/8", "2001:db8::/32"], "ports": [443]}]}]}
        ]}),
    ));
    let m = rs.map_entries(1);
    assert_eq!(
        m.selectors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![64, 65]
    );
    assert!(m.bin_prefix.iter().all(|(_, d, _)| d.slot == 1));
    assert_eq!(
        m.bin_prefix[0].0,
        8 * (1 + 5),
        "prefix length counts the slot byte"
    );
    assert_eq!(cstr(&m.bin_prefix[0].1.bytes), "/tmp/");
    assert_eq!(
        cstr(&m.bin_postfix[0].1.bytes),
        "hs",
        "postfix bytes are reversed"
    );
    assert_eq!(m.arg_exact.len(), 1);
    let (k, _) = m.arg_exact[0];
    assert_eq!((k.slot, k.index, cstr(&k.value)), (1, 1, "-c".to_string()));
    let (len, d, _) = m.arg_prefix[0];
    assert_eq!(
        (len, d.slot, d.index, cstr(&d.bytes)),
        (8 * (2 + 4), 1, dc::ARG_ANY_INDEX, "--ex".to_string())
    );
    assert_eq!(cstr(&m.arg_postfix[0].1.bytes), "fnoc.");
    assert_eq!(
        m.namespaces,
        vec![(
            dc::NamespaceKey {
                slot: 1,
                namespace_id: 1
            },
            1 << 5
        )]
    );
    assert_eq!(
        m.dest_v4,
        vec![(
            8 + 8,
            dc::V4LpmData {
                slot: 1,
                addr: [10, 0, 0, 0]
            },
            1
        )]
    );
    assert_eq!(m.dest_v6.len(), 1);
    assert_eq!(
        (
            m.dest_v6[0].0,
            m.dest_v6[0].1.slot,
            &m.dest_v6[0].1.addr[..4]
        ),
        (8 + 32, 1, &[0x20, 0x01, 0x0d, 0xb8][..])
    );
    assert_eq!(
        m.ports,
        vec![(
            8 + 16,
            dc::PortLpmData {
                slot: 1,
                port: 443u16.to_be_bytes()
            },
            1
        )]
    );
    let all = dc::LOOKUP_BIN_PREFIX
        | dc::LOOKUP_BIN_POSTFIX
        | dc::LOOKUP_ARG_EXACT
        | dc::LOOKUP_ARG_PREFIX
        | dc::LOOKUP_ARG_POSTFIX
        | dc::LOOKUP_NAMESPACE
        | dc::LOOKUP_ARG_ANY;
    assert_eq!(m.slot_meta.lookups, all);
    assert_eq!(
        m.slot_meta.proc_negate,
        1 << 4,
        "only NotPostfix is negated"
    );
    assert_eq!(
        (
            m.slot_meta.hook_exec,
            m.slot_meta.hook_connect,
            m.slot_meta.hook_egress
        ),
        (1, 2, 0)
    );
    // The same rule set in slot 0 differs only in the slot.
    let m0 = rs.map_entries(0);
    assert_eq!(
        m0.selectors.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(m0.len(), m.len());
    assert!(!m0.is_empty());
}

#[test]
fn default_action_is_post_and_actions_combine() {
    let rs = one(cluster(
        "p",
        rule(
            "exec",
            json!([{}, {"matchActions": [{"action": "Sigkill"}, {"action": "Post"}, {"action": "Sigkill"}]}]),
        ),
    ));
    let info = rs.selector_info(0).unwrap();
    assert_eq!(
        (info.actions.clone(), info.action_bits),
        (vec![Action::Post], dc::ACTION_POST)
    );
    let info = rs.selector_info(1).unwrap();
    assert_eq!(info.actions, vec![Action::Sigkill, Action::Post]);
    assert_eq!(
        rs.selector_entries()[1].actions,
        dc::ACTION_SIGKILL | dc::ACTION_POST
    );
    assert!(rs.selector_info(2).is_none());
    // A selector without conditions matches every process.
    assert_eq!(rs.evaluate_process("/anything", &[], 0), 0b11);
}

#[test]
fn socket_guard_masks_hold_the_block_selectors_of_the_network_hooks() {
    let enforce = cluster(
        "net",
        json!({"rules": [
            {"name": "c", "hook": "connect", "selectors": [
                {"matchActions": [{"action": "Block"}]},
                {"matchActions": [{"action": "Post"}]},
                {"matchActions": [{"action": "Post"}, {"action": "Block"}]}]},
            {"name": "e", "hook": "egress", "selectors": [
                {"matchEncryption": "plaintext", "matchActions": [{"action": "Block"}]}]},
            {"name": "x", "hook": "exec", "selectors": [
                {"matchActions": [{"action": "Sigkill"}]}]}]}),
    );
    let monitor = cluster(
        "watch",
        json!({"mode": "monitor", "rules": [
            {"name": "c", "hook": "connect", "selectors": [
                {"matchActions": [{"action": "Block"}]}, {}]}]}),
    );
    let rs = compile(&[enforce, monitor], &mut NamespaceIds::new()).expect("compiles");
    let m = rs.map_entries(1).slot_meta;
    // Selectors 0..=4 are the enforce policy's (connect Block, Post, Post+Block, egress Block,
    // exec Sigkill), 5 and 6 the monitor policy's (Block, Post).
    assert_eq!(m.enforce_net, 0b0_1101, "{m:?}");
    assert_eq!(m.monitor_net, 0b010_0000, "{m:?}");
    // Post-only, exec and monitor selectors never make a process covered in enforce mode.
    let post_only = one(cluster("p", rule("connect", json!([{}]))));
    assert_eq!(post_only.map_entries(0).slot_meta.enforce_net, 0);
    assert_eq!(post_only.map_entries(0).slot_meta.monitor_net, 0);
}

#[test]
fn mode_encryption_and_selector_info() {
    let spec = json!({"mode": "monitor", "rules": [
        {"name": "web", "hook": "egress", "selectors": [
            {"matchEncryption": "plaintext", "matchActions": [{"action": "Block"}]},
            {"matchEncryption": "tls"}, {}]}]});
    let rs = one(namespaced("no-http", "payments", spec));
    let e = rs.selector_entries();
    assert_eq!(
        e.iter().map(|e| e.mode).collect::<Vec<_>>(),
        vec![dc::MODE_MONITOR; 3]
    );
    assert_eq!(
        e.iter().map(|e| e.encryption).collect::<Vec<_>>(),
        vec![dc::ENC_PLAINTEXT, dc::ENC_TLS, dc::ENC_ANY]
    );
    assert_eq!(
        e.iter().map(|e| e.hook).collect::<Vec<_>>(),
        vec![dc::HOOK_EGRESS; 3]
    );
    let info = rs.selector_info(0).unwrap();
    assert_eq!(info.policy_name, "no-http");
    assert_eq!(info.policy_namespace.as_deref(), Some("payments"));
    assert_eq!(
        (info.rule_name.as_str(), info.hook, info.mode),
        ("web", Hook::Egress, Mode::Monitor)
    );
    assert_eq!(info.actions, vec![Action::Block]);
    assert_eq!(rs.policies()[0].mode, Mode::Monitor);
    assert_eq!(rs.hook_mask(Hook::Egress), 0b111);
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["policyName"], "no-http");
}

#[test]
fn namespaced_policies_only_match_their_namespace() {
    let mut ns = NamespaceIds::new();
    let other = ns.id("other");
    let rs = compile(
        &[namespaced("p", "team-a", rule("exec", json!([{}])))],
        &mut ns,
    )
    .unwrap();
    let team_a = ns.get("team-a").unwrap();
    assert_eq!(
        rs.selector_entries()[0].proc_required,
        1,
        "implicit In [team-a] condition"
    );
    assert!(rs.proc_conditions()[0].describe().contains("team-a"));
    assert_eq!(rs.evaluate_process("/bin/true", &[], team_a), 1);
    assert_eq!(rs.evaluate_process("/bin/true", &[], other), 0);
    assert_eq!(
        rs.evaluate_process("/bin/true", &[], 0),
        0,
        "host processes are in no namespace"
    );
}

#[test]
fn match_namespaces_in_and_not_in() {
    let mut ns = NamespaceIds::new();
    let rs = compile(
        &[cluster(
            "p",
            rule(
                "exec",
                json!([{"matchNamespaces": [{"operator": "In", "values": ["prod", "staging"]}]},
                       {"matchNamespaces": [{"operator": "NotIn", "values": ["kube-system"]}]}]),
            ),
        )],
        &mut ns,
    )
    .unwrap();
    let (prod, staging, ks) = (
        ns.get("prod").unwrap(),
        ns.get("staging").unwrap(),
        ns.get("kube-system").unwrap(),
    );
    let dev = ns.id("dev");
    assert_eq!(rs.evaluate_process("/x", &[], prod), 0b11);
    assert_eq!(rs.evaluate_process("/x", &[], staging), 0b11);
    assert_eq!(rs.evaluate_process("/x", &[], ks), 0b00);
    assert_eq!(rs.evaluate_process("/x", &[], dev), 0b10);
    assert_eq!(
        rs.evaluate_process("/x", &[], 0),
        0b10,
        "host: NotIn holds, In does not"
    );
    assert_eq!(rs.map_entries(0).namespaces.len(), 3);
}

#[test]
fn identical_conditions_share_a_bit_across_policies() {
    let sel = json!([{"matchBinaries": [{"operator": "In", "values": ["/b", "/a", "/a"]}]}]);
    let sel2 = json!([{"matchBinaries": [{"operator": "Equal", "values": ["/a", "/b"]}]},
                      {"matchBinaries": [{"operator": "NotIn", "values": ["/a", "/b"]}]}]);
    let rs = compile(
        &[
            cluster("p1", rule("exec", sel)),
            cluster("p2", rule("exec", sel2)),
        ],
        &mut NamespaceIds::new(),
    )
    .unwrap();
    assert_eq!(
        rs.proc_conditions().len(),
        2,
        "In == Equal after sorting/dedup; NotIn is its own"
    );
    let req: Vec<u64> = rs
        .selector_entries()
        .iter()
        .map(|e| e.proc_required)
        .collect();
    assert_eq!(req, vec![1, 1, 2]);
    assert_eq!(rs.selector_entries()[1].policy_id, 1);
    assert_eq!(
        rs.policies()
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["p1", "p2"]
    );
    assert_eq!(
        rs.map_entries(0).bin_exact.len(),
        2,
        "one key per path, masks merged"
    );
    assert_eq!(rs.map_entries(0).bin_exact[0].1, 0b11);
}

#[test]
fn args_with_and_without_index() {
    let rs = one(cluster(
        "p",
        rule(
            "exec",
            json!([
                {"matchArgs": [{"index": 1, "operator": "In", "values": ["-e"]}]},
                {"matchArgs": [{"index": 1, "operator": "NotIn", "values": ["-e"]}]},
                {"matchArgs": [{"operator": "Prefix", "values": ["--exec"]}]},
                {"matchArgs": [{"operator": "NotPostfix", "values": [".sh"]}]}
            ]),
        ),
    ));
    assert_eq!(
        rs.evaluate_process("/nc", &["nc", "-e", "/bin/sh"], 0),
        0b1001
    );
    assert_eq!(rs.evaluate_process("/nc", &["nc", "-l"], 0), 0b1010);
    // argv shorter than index + 1: the element is absent, positive fails, negated holds.
    assert_eq!(rs.evaluate_process("/nc", &["nc"], 0), 0b1010);
    // Index-less: argv[0] is not an argument.
    assert_eq!(rs.evaluate_process("/x", &["--exec=1"], 0), 0b1010);
    assert_eq!(rs.evaluate_process("/x", &["x", "--exec=1"], 0), 0b1110);
    assert_eq!(rs.evaluate_process("/x", &["x.sh", "a"], 0), 0b1010);
    assert_eq!(rs.evaluate_process("/x", &["x", "a", "run.sh"], 0), 0b0010);
    // Every argument is examined (issue 9.8: `bash -x ... -i` hid its 17th argument), and
    // an index names argv[0..MAX_ARGS] only.
    let mut argv = vec!["x"; dc::MAX_ARGS];
    argv.push("--exec");
    assert_eq!(rs.evaluate_process("/x", &argv, 0) & 0b100, 0b100);
    let long = "y".repeat(300);
    assert_eq!(
        rs.evaluate_process("/x", &["x", &long, "--exec", "a.sh"], 0),
        0b0110,
        "an element longer than the kernel's read buffer does not end the walk"
    );
    // Past the bounds the arguments are incomplete: every argument condition holds (fail
    // closed), so all four selectors match, the negated ones included.
    let many = vec!["x"; dc::MAX_ARG_ELEMENTS + 1];
    assert_eq!(rs.evaluate_process("/x", &many, 0), 0b1111);
    let big = "z".repeat(dc::MAX_ARG_BYTES);
    assert_eq!(rs.evaluate_process("/x", &["x", &big], 0), 0b1111);
    let fits = vec!["x"; dc::MAX_ARG_ELEMENTS];
    assert_eq!(rs.evaluate_process("/x", &fits, 0), 0b1010);
}

#[test]
fn binary_prefix_postfix_and_negations() {
    let rs = one(cluster(
        "p",
        rule(
            "exec",
            json!([
                {"matchBinaries": [{"operator": "Prefix", "values": ["/tmp/", "/dev/shm/"]}]},
                {"matchBinaries": [{"operator": "NotPrefix", "values": ["/usr/", "/bin/"]}]},
                {"matchBinaries": [{"operator": "Postfix", "values": ["/xmrig"]}]},
                {"matchBinaries": [{"operator": "NotPostfix", "values": ["sh"]}]}
            ]),
        ),
    ));
    assert_eq!(rs.evaluate_process("/tmp/xmrig", &[], 0), 0b1111);
    assert_eq!(rs.evaluate_process("/usr/bin/bash", &[], 0), 0b0000);
    assert_eq!(rs.evaluate_process("/usr/bin/xmrig", &[], 0), 0b1100);
    assert_eq!(rs.evaluate_process("/opt/sh", &[], 0), 0b0010);
}

fn dest(addr: &str, port: u16, proto: u8) -> dc::Destination {
    destination(addr.parse().unwrap(), port, proto)
}

#[test]
fn destinations_cidr_port_protocol_and_not_in() {
    let rs = one(cluster(
        "p",
        rule(
            "connect",
            json!([
                {"matchDestinations": [{"operator": "In", "cidrs": ["169.254.169.254", "fd00:ec2::254"], "ports": [80]}],
                 "matchActions": [{"action": "Block"}]},
                {"matchDestinations": [{"operator": "NotIn", "cidrs": ["10.0.0.0/8", "fd00::/8"]}]},
                {"matchDestinations": [{"operator": "In", "ports": ["8000-8080"], "protocol": "UDP"}]},
                {"matchDestinations": [{"operator": "In", "protocol": "TCP"}]}
            ]),
        ),
    ));
    let all = u64::MAX;
    assert_eq!(
        rs.evaluate_destination(all, &dest("169.254.169.254", 80, 6)),
        0b1011
    );
    assert_eq!(
        rs.evaluate_destination(all, &dest("169.254.169.254", 443, 6)),
        0b1010
    );
    assert_eq!(
        rs.evaluate_destination(all, &dest("::ffff:169.254.169.254", 80, 6)),
        0b1011,
        "v4-mapped"
    );
    assert_eq!(
        rs.evaluate_destination(all, &dest("fd00:ec2::254", 80, 6)),
        0b1001
    );
    assert_eq!(
        rs.evaluate_destination(all, &dest("10.1.1.1", 8080, 17)),
        0b0100
    );
    assert_eq!(
        rs.evaluate_destination(all, &dest("10.1.1.1", 8081, 17)),
        0b0000
    );
    assert_eq!(
        rs.evaluate_destination(all, &dest("10.1.1.1", 8000, 6)),
        0b1000
    );
    // Only the selectors passed in are considered.
    assert_eq!(
        rs.evaluate_destination(0b0001, &dest("169.254.169.254", 80, 6)),
        0b0001
    );
    assert_eq!(
        rs.evaluate_destination(0b0100, &dest("169.254.169.254", 80, 6)),
        0
    );
    let m = rs.map_entries(0).slot_meta;
    assert_eq!(m.dest_negate, 0b10);
    assert_eq!(m.dest_any_addr, 0b1100);
    assert_eq!(m.dest_any_port, 0b1010);
    assert_eq!((m.dest_tcp, m.dest_udp), (0b1011, 0b0111));
    assert_eq!(m.hook_connect, 0b1111);
    // Port 80 for condition 0; 8000-8080 as aligned blocks (8000/10, 8064/12, 8080/16) for 2.
    let ports = rs.map_entries(0).ports;
    let decoded: Vec<(u16, u32, u64)> = ports
        .iter()
        .map(|(len, d, mask)| (u16::from_be_bytes(d.port), len - 8, *mask))
        .collect();
    assert_eq!(decoded[0], (80, 16, 0b1));
    let blocks: Vec<(u16, u32)> = decoded[1..]
        .iter()
        .map(|&(p, bits, mask)| {
            assert_eq!(mask, 0b100);
            (p, bits)
        })
        .collect();
    assert_eq!(
        blocks,
        PortRange::new(8000, 8080)
            .unwrap()
            .prefix_blocks()
            .into_iter()
            .map(|(p, b)| (p, u32::from(b)))
            .collect::<Vec<_>>()
    );
    assert_eq!(blocks, vec![(8000, 10), (8064, 12), (8080, 16)]);
}

#[test]
fn conditions_describe_themselves() {
    let rs = one(cluster(
        "p",
        rule(
            "connect",
            json!([{"matchBinaries": [{"operator": "NotPrefix", "values": ["/usr/"]}],
                    "matchArgs": [{"operator": "In", "values": ["-x"]}, {"index": 2, "operator": "Postfix", "values": ["y"]},
                                  {"operator": "NotIn", "values": ["z"]}],
                    "matchDestinations": [{"operator": "NotIn", "cidrs": ["10.0.0.0/8"], "ports": ["1-1023"], "protocol": "TCP"}]}]),
        ),
    ));
    let words: Vec<String> = rs.proc_conditions().iter().map(|c| c.describe()).collect();
    assert_eq!(
        words,
        vec![
            "binary path starts with none of [\"/usr/\"]",
            "some argument in argv[1..] is one of [\"-x\"]",
            "argv[2] ends with one of [\"y\"]",
            "no argument in argv[1..] is one of [\"z\"]",
        ]
    );
    assert_eq!(
        rs.dest_conditions()[0].describe(),
        "destination NOT (address in [10.0.0.0/8] and port in [1-1023] and protocol TCP)"
    );
}

// ---- refusals: each limit with an input just inside and one just past it ----

fn selectors(n: usize) -> Value {
    Value::Array((0..n).map(|_| json!({})).collect())
}

#[test]
fn selector_limit() {
    let ok = compile(
        &[
            cluster("a", rule("exec", selectors(40))),
            cluster("b", rule("exec", selectors(24))),
        ],
        &mut NamespaceIds::new(),
    );
    assert_eq!(ok.unwrap().selectors().len(), 64);
    let e = compile(
        &[
            cluster("a", rule("exec", selectors(40))),
            cluster("b", rule("exec", selectors(25))),
        ],
        &mut NamespaceIds::new(),
    )
    .unwrap_err();
    assert_eq!(
        (e.at.policy.as_str(), e.at.rule.as_deref(), e.at.selector),
        ("b", Some("r"), Some(24))
    );
    assert_eq!(e.kind.limit(), Some(("MAX_SELECTORS", 64)));
    assert!(e.to_string().contains("MAX_SELECTORS = 64"), "{e}");
}

fn distinct_binaries(n: usize) -> Value {
    let entries: Vec<Value> = (0..n)
        .map(|i| json!({"operator": "In", "values": [format!("/bin/{i}")]}))
        .collect();
    json!([{"matchBinaries": entries}])
}

#[test]
fn process_condition_limit() {
    assert_eq!(
        one(cluster("p", rule("exec", distinct_binaries(64))))
            .proc_conditions()
            .len(),
        64
    );
    let e = err(cluster("p", rule("exec", distinct_binaries(65))));
    assert_eq!(e.kind.limit(), Some(("MAX_PROC_CONDITIONS", 64)));
    assert!(
        e.to_string()
            .starts_with("policy p, rule r, selectors[0]: "),
        "{e}"
    );
}

fn distinct_destinations(n: usize) -> Value {
    let entries: Vec<Value> = (0..n)
        .map(|i| json!({"operator": "In", "ports": [i + 1]}))
        .collect();
    json!([{"matchDestinations": entries}])
}

#[test]
fn destination_condition_limit() {
    assert_eq!(
        one(cluster("p", rule("connect", distinct_destinations(64))))
            .dest_conditions()
            .len(),
        64
    );
    let e = err(cluster("p", rule("connect", distinct_destinations(65))));
    assert_eq!(e.kind.limit(), Some(("MAX_DEST_CONDITIONS", 64)));
}

fn binary_value(op: &str, len: usize) -> AnyPolicy {
    let v = format!("/{}", "a".repeat(len - 1));
    cluster(
        "p",
        rule(
            "exec",
            json!([{"matchBinaries": [{"operator": op, "values": [v]}]}]),
        ),
    )
}

#[test]
fn value_length_limits() {
    one(binary_value("In", dc::PATH_EXACT_LEN));
    let e = err(binary_value("In", dc::PATH_EXACT_LEN + 1));
    assert_eq!(e.kind.limit(), Some(("PATH_EXACT_LEN", 255)));
    for op in ["Prefix", "NotPostfix"] {
        one(binary_value(op, dc::PATH_AFFIX_LEN));
        let e = err(binary_value(op, dc::PATH_AFFIX_LEN + 1));
        assert_eq!(e.kind.limit(), Some(("PATH_AFFIX_LEN", 255)));
    }
    let arg = |len: usize| {
        cluster(
            "p",
            rule(
                "exec",
                json!([{"matchArgs": [{"operator": "Prefix", "values": ["x".repeat(len)]}]}]),
            ),
        )
    };
    let rs = one(arg(dc::ARG_LEN));
    assert_eq!(
        rs.map_entries(0).arg_prefix[0].0,
        8 * (2 + dc::ARG_LEN as u32)
    );
    let e = err(arg(dc::ARG_LEN + 1));
    assert_eq!(e.kind.limit(), Some(("ARG_LEN", 128)));
    assert!(e.kind.to_string().contains("129 bytes"), "{e}");
}

#[test]
fn arg_index_limit() {
    let idx = |i: usize| {
        cluster(
            "p",
            rule(
                "exec",
                json!([{"matchArgs": [{"index": i, "operator": "In", "values": ["x"]}]}]),
            ),
        )
    };
    one(idx(dc::MAX_ARGS - 1));
    let e = err(idx(dc::MAX_ARGS));
    assert_eq!(e.kind.limit(), Some(("MAX_ARGS", 16)));
    err(idx(255));
    err(idx(u32::MAX as usize));
}

#[test]
fn map_size_limits() {
    // MAX_CIDRS distinct /32s fit, one more does not.
    let cidrs = |n: u32| -> Vec<String> {
        (0..n)
            .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string())
            .collect()
    };
    let p = |n: u32| {
        cluster(
            "p",
            rule(
                "connect",
                json!([{"matchDestinations": [{"operator": "In", "cidrs": cidrs(n)}]}]),
            ),
        )
    };
    assert_eq!(
        one(p(dc::MAX_CIDRS)).map_entries(0).dest_v4.len(),
        dc::MAX_CIDRS as usize
    );
    let e = err(p(dc::MAX_CIDRS + 1));
    assert_eq!(
        e.kind.limit(),
        Some(("MAX_CIDRS", u64::from(dc::MAX_CIDRS)))
    );

    let paths = |n: u32| -> Vec<String> { (0..n).map(|i| format!("/bin/{i}")).collect() };
    let p = |n: u32| {
        cluster(
            "p",
            rule(
                "exec",
                json!([{"matchBinaries": [{"operator": "Prefix", "values": paths(n)}]}]),
            ),
        )
    };
    one(p(dc::MAX_BINARY_VALUES));
    let e = err(p(dc::MAX_BINARY_VALUES + 1));
    assert_eq!(
        e.kind.limit(),
        Some(("MAX_BINARY_VALUES", u64::from(dc::MAX_BINARY_VALUES)))
    );

    let p = |n: u32| {
        cluster(
            "p",
            rule(
                "exec",
                json!([{"matchArgs": [{"operator": "In", "values": paths(n)}]}]),
            ),
        )
    };
    one(p(dc::MAX_ARG_VALUES));
    assert_eq!(
        err(p(dc::MAX_ARG_VALUES + 1)).kind.limit(),
        Some(("MAX_ARG_VALUES", 4096))
    );

    let p = |n: u32| {
        cluster(
            "p",
            rule(
                "exec",
                json!([{"matchNamespaces": [{"operator": "In", "values": paths(n)}]}]),
            ),
        )
    };
    one(p(dc::MAX_NAMESPACES));
    assert_eq!(
        err(p(dc::MAX_NAMESPACES + 1)).kind.limit(),
        Some(("MAX_NAMESPACES", 4096))
    );

    // Every odd port is its own /16 block.
    let ports = |n: u32| -> Vec<Value> { (0..n).map(|i| json!(2 * i + 1)).collect() };
    let p = |n: u32| {
        cluster(
            "p",
            rule(
                "connect",
                json!([{"matchDestinations": [{"operator": "In", "ports": ports(n)}]}]),
            ),
        )
    };
    one(p(dc::MAX_PORT_PREFIXES));
    assert_eq!(
        err(p(dc::MAX_PORT_PREFIXES + 1)).kind.limit(),
        Some(("MAX_PORT_PREFIXES", 8192))
    );
}

#[test]
fn hooks_refuse_fields_and_actions_they_cannot_honour() {
    let cases = [
        (
            "exec",
            json!({"matchActions": [{"action": "Sigkill"}]}),
            None,
        ),
        (
            "exec",
            json!({"matchActions": [{"action": "Block"}]}),
            Some("Block"),
        ),
        (
            "connect",
            json!({"matchActions": [{"action": "Block"}]}),
            None,
        ),
        (
            "connect",
            json!({"matchActions": [{"action": "Sigkill"}]}),
            Some("Sigkill"),
        ),
        (
            "egress",
            json!({"matchActions": [{"action": "Sigkill"}]}),
            Some("Sigkill"),
        ),
        (
            "exec",
            json!({"matchDestinations": [{"operator": "In", "ports": [1]}]}),
            Some("matchDestinations"),
        ),
        (
            "connect",
            json!({"matchDestinations": [{"operator": "In", "ports": [1]}]}),
            None,
        ),
        (
            "connect",
            json!({"matchEncryption": "tls"}),
            Some("matchEncryption"),
        ),
        (
            "exec",
            json!({"matchEncryption": "plaintext"}),
            Some("matchEncryption"),
        ),
        (
            "egress",
            json!({"matchEncryption": "plaintext", "matchActions": [{"action": "Block"}]}),
            None,
        ),
    ];
    for (hook, sel, refused) in cases {
        let r = compile(
            &[cluster("p", rule(hook, json!([sel])))],
            &mut NamespaceIds::new(),
        );
        match refused {
            None => assert!(r.is_ok(), "{hook} {sel}: {:?}", r.err()),
            Some(word) => {
                let e = r.expect_err(&format!("{hook} {sel} must be refused"));
                assert!(e.kind.is_invalid(), "{e}");
                assert!(e.kind.to_string().contains(word), "{e}");
            }
        }
    }
}

#[test]
fn malformed_values_are_refused_not_panicked_on() {
    let bad = [
        json!({"matchDestinations": [{"operator": "In", "cidrs": ["10.0.0.0/33"]}]}),
        json!({"matchDestinations": [{"operator": "In", "cidrs": ["example.com"]}]}),
        json!({"matchDestinations": [{"operator": "In", "ports": [70000]}]}),
        json!({"matchDestinations": [{"operator": "In", "ports": ["443-80"]}]}),
        json!({"matchDestinations": [{"operator": "In", "ports": ["https"]}]}),
        json!({"matchBinaries": [{"operator": "In", "values": ["/bin/\u{0}sh"]}]}),
        json!({"matchArgs": [{"operator": "In", "values": ["a\u{0}"]}]}),
        json!({"matchNamespaces": [{"operator": "In", "values": [""]}]}),
        // Port 0 never appears on a connection: the validated model cannot hold it (BW052).
        json!({"matchDestinations": [{"operator": "In", "ports": [0]}]}),
        json!({"matchDestinations": [{"operator": "In", "ports": ["0-80"]}]}),
    ];
    for sel in bad {
        let e = err(cluster("p", rule("connect", json!([sel]))));
        assert!(e.kind.is_invalid(), "{e}");
        assert!(
            e.to_string()
                .starts_with("policy p, rule r, selectors[0]: "),
            "{e}"
        );
    }
    let good = [
        json!({"matchDestinations": [{"operator": "In", "cidrs": ["10.0.0.0/32", "::"], "ports": [1, 65535, "1-1"]}]}),
        json!({"matchBinaries": [{"operator": "In", "values": []}]}),
        json!({"matchBinaries": [{"operator": "Prefix", "values": [""]}]}),
    ];
    for sel in good {
        one(cluster("p", rule("connect", json!([sel]))));
    }
}

#[test]
fn empty_values_and_empty_prefix_semantics() {
    let rs = one(cluster(
        "p",
        rule(
            "exec",
            json!([
                {"matchBinaries": [{"operator": "In", "values": []}]},
                {"matchBinaries": [{"operator": "NotIn", "values": []}]},
                {"matchBinaries": [{"operator": "Prefix", "values": [""]}]}
            ]),
        ),
    ));
    assert_eq!(rs.evaluate_process("/bin/ls", &[], 0), 0b110);
    assert_eq!(
        rs.map_entries(0).bin_prefix[0].0,
        8,
        "empty prefix: just the slot byte"
    );
}

#[test]
fn empty_input_compiles_to_an_empty_rule_set() {
    let rs = compile(&[], &mut NamespaceIds::new()).unwrap();
    let m = rs.map_entries(0);
    assert!(m.is_empty());
    assert_eq!(m.slot_meta, dc::SlotMeta::default());
    assert_eq!(rs.evaluate_process("/bin/sh", &["sh"], 0), 0);
}

#[test]
fn namespaced_policy_needs_a_namespace() {
    let e = err(namespaced("p", "", rule("exec", json!([{}]))));
    assert!(e.kind.is_invalid(), "{e}");
    assert!(e.kind.to_string().contains("metadata.namespace"), "{e}");
    one(namespaced("p", "x", rule("exec", json!([{}]))));
}

#[test]
fn binary_values_match_their_files_and_exec_kinds_are_conditions() {
    use bulwark_compiler::{BinaryIdentities, ExecFacts, FileId};
    let mut rs = one(cluster(
        "p",
        rule(
            "exec",
            json!([
                {"matchBinaries": [{"operator": "In", "values": ["/usr/bin/nc"]}]},
                {"matchBinaries": [{"operator": "NotIn", "values": ["/usr/bin/nc"]}]},
                {"matchBinaries": [{"operator": "Prefix", "values": ["/usr/bin/"]}]},
                {"matchExecKinds": [{"operator": "In", "values": ["fileless"]}]},
                {"matchExecKinds": [{"operator": "NotIn", "values": ["loader", "fileless"]}]}
            ]),
        ),
    ));
    let nc = FileId {
        dev: 8 << 20,
        ino: 42,
    };
    let facts = |path: &str, file: FileId| ExecFacts {
        file: Some(file),
        ..ExecFacts::new(path.as_bytes(), &[path.as_bytes()], 0)
    };
    // Before the files are known, only paths match.
    assert_eq!(rs.evaluate_exec(&facts("/tmp/link", nc)), 0b10010);
    let mut ids = BinaryIdentities::new();
    ids.insert("/usr/bin/nc", nc);
    rs.resolve_binaries(&ids).unwrap();
    assert_eq!(
        rs.binary_paths().into_iter().collect::<Vec<_>>(),
        ["/usr/bin/nc"]
    );
    let e = rs.map_entries(1);
    assert_eq!(e.bin_inode.len(), 1);
    assert_eq!((e.bin_inode[0].0.slot, e.bin_inode[0].0.ino), (1, 42));
    assert_ne!(e.slot_meta.lookups & dc::LOOKUP_BIN_INODE, 0);
    // A hard link elsewhere is nc for In/NotIn; a prefix stays a matter of the path.
    assert_eq!(rs.evaluate_exec(&facts("/tmp/link", nc)), 0b10001);
    let other = FileId {
        dev: 8 << 20,
        ino: 43,
    };
    assert_eq!(rs.evaluate_exec(&facts("/usr/bin/ncat", other)), 0b10110);
    // Exec kinds.
    let mut fileless = facts("/memfd:x", FileId { dev: 1, ino: 5 });
    fileless.fileless = true;
    assert_eq!(rs.evaluate_exec(&fileless), 0b01010);
    let mut loader = facts("/lib64/ld-linux-x86-64.so.2", FileId { dev: 1, ino: 6 });
    loader.loader = true;
    loader.argv = [
        "ld.so",
        "--library-path",
        "/usr/bin/nc",
        "/usr/bin/ncat",
        "-l",
    ]
    .iter()
    .map(|a| a.as_bytes().to_vec())
    .collect();
    // The target (/usr/bin/ncat, not the option value /usr/bin/nc) is matched as a path.
    assert_eq!(loader.loader_target(), Some(&b"/usr/bin/ncat"[..]));
    assert_eq!(rs.evaluate_exec(&loader), 0b00110);
    // The identities are replaced, not added to, by a later resolution.
    rs.resolve_binaries(&BinaryIdentities::new()).unwrap();
    assert!(rs.map_entries(0).bin_inode.is_empty());
    assert_eq!(
        rs.map_entries(0).slot_meta.lookups & dc::LOOKUP_BIN_INODE,
        0
    );
    assert_eq!(rs.evaluate_exec(&facts("/tmp/link", nc)), 0b10010);
    assert_eq!(
        rs.proc_conditions()[3].describe(),
        "exec kind is one of [\"fileless\"]"
    );
}
