//! The shipped examples (`policies/examples`) load through the lint engine without errors,
//! compile together into one rule set, and mean what their comments say under the reference
//! semantics.

use bulwark_compiler::{compile, destination, NamespaceIds, RuleSet};
use bulwark_policy::Hook;
use daemon_common as dc;
use std::path::PathBuf;

fn examples() -> (RuleSet, NamespaceIds) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies/examples");
    let out = bulwark_compiler::lint_paths(&[dir]).expect("examples readable");
    assert_eq!(
        out.errors(),
        0,
        "{}",
        bulwark_policy::diagnostics::render_text(&out.diagnostics)
    );
    assert!(out.policies.len() >= 10, "{} policies", out.policies.len());
    let mut ids = NamespaceIds::new();
    let rs = compile(&out.policies, &mut ids).expect("examples compile together");
    (rs, ids)
}

/// Bits of the selectors of `policy`/`rule`.
fn rule_bits(rs: &RuleSet, policy: &str, rule: &str) -> u64 {
    let bits = rs
        .selectors()
        .iter()
        .filter(|s| s.policy_name == policy && s.rule_name == rule)
        .fold(0u64, |b, s| b | (1 << s.index));
    assert_ne!(bits, 0, "no selector for {policy}/{rule}");
    bits
}

fn dest(addr: &str, port: u16, proto: u8) -> dc::Destination {
    destination(addr.parse().unwrap(), port, proto)
}

#[test]
fn exec_examples() {
    let (rs, ids) = examples();
    let prod = ids.get("production").expect("interned");
    let miners = rule_bits(&rs, "kill-crypto-miners", "kill-miner-names");
    let tmp = rule_bits(&rs, "kill-crypto-miners", "kill-binaries-from-tmp");
    let shells = rule_bits(&rs, "kill-interactive-shells", "kill-shell-dash-i");
    let tools = rule_bits(
        &rs,
        "kill-network-tools-in-production",
        "kill-download-tools",
    );

    assert_eq!(
        rs.evaluate_process("/opt/x/xmrig", &["xmrig"], 0) & miners,
        miners
    );
    assert_eq!(
        rs.evaluate_process("/opt/x/xmrig2", &["xmrig2"], 0) & miners,
        0
    );
    assert_eq!(rs.evaluate_process("/tmp/payload", &["p"], 0) & tmp, tmp);
    assert_eq!(rs.evaluate_process("/usr/tmp/payload", &["p"], 0) & tmp, 0);
    assert_eq!(
        rs.evaluate_process("/bin/bash", &["bash", "-i"], 0) & shells,
        shells
    );
    assert_eq!(
        rs.evaluate_process("/bin/bash", &["bash", "-c", "ls"], 0) & shells,
        0
    );
    assert_eq!(
        rs.evaluate_process("/bin/bash", &["-i"], 0) & shells,
        0,
        "argv[0] is not an argument"
    );
    assert_eq!(
        rs.evaluate_process("/usr/bin/python3", &["python3", "-i"], 0) & shells,
        0
    );
    assert_eq!(
        rs.evaluate_process("/usr/bin/curl", &["curl"], prod) & tools,
        tools
    );
    assert_eq!(
        rs.evaluate_process("/usr/bin/curl", &["curl"], 0) & tools,
        0,
        "host"
    );
    assert_eq!(
        rs.evaluate_process("/usr/bin/curl", &["curl"], prod + 100) & tools,
        0
    );
    for s in rs
        .selectors()
        .iter()
        .filter(|s| s.index < 64 && (miners | tmp | shells | tools) & (1 << s.index) != 0)
    {
        assert_eq!(
            rs.selector_entries()[usize::from(s.index)].actions,
            dc::ACTION_SIGKILL
        );
    }
}

#[test]
fn connect_examples() {
    let (rs, ids) = examples();
    let payments = ids.get("payments").expect("interned");
    let internal = rule_bits(
        &rs,
        "payments-internal-only",
        "allow-only-cluster-destinations",
    );
    let dns_udp = rule_bits(
        &rs,
        "block-external-dns",
        "udp-dns-only-to-cluster-resolver",
    );
    let dns_tcp = rule_bits(
        &rs,
        "block-external-dns",
        "tcp-dns-only-to-cluster-resolver",
    );
    let metadata = rule_bits(&rs, "block-cloud-metadata", "metadata-only-for-agent");

    let in_payments = rs.evaluate_process("/app/server", &["server"], payments);
    assert_eq!(
        in_payments & internal,
        internal,
        "namespaced policy applies in its namespace"
    );
    assert_eq!(
        rs.evaluate_process("/app/server", &["server"], 0) & internal,
        0,
        "not on the host"
    );
    assert_eq!(
        rs.evaluate_destination(internal, &dest("8.8.8.8", 443, dc::PROTO_TCP)),
        internal
    );
    assert_eq!(
        rs.evaluate_destination(internal, &dest("10.3.4.5", 443, dc::PROTO_TCP)),
        0
    );
    assert_eq!(
        rs.evaluate_destination(internal, &dest("::ffff:10.3.4.5", 443, dc::PROTO_TCP)),
        0
    );
    assert_eq!(
        rs.evaluate_destination(internal, &dest("fd00::1", 443, dc::PROTO_TCP)),
        0
    );
    assert_eq!(
        rs.evaluate_destination(internal, &dest("2001:db8::1", 443, dc::PROTO_TCP)),
        internal
    );

    let dns = dns_udp | dns_tcp;
    assert_eq!(
        rs.evaluate_destination(dns, &dest("8.8.8.8", 53, dc::PROTO_UDP)),
        dns_udp
    );
    assert_eq!(
        rs.evaluate_destination(dns, &dest("8.8.8.8", 53, dc::PROTO_TCP)),
        dns_tcp
    );
    assert_eq!(
        rs.evaluate_destination(dns, &dest("10.96.0.10", 53, dc::PROTO_UDP)),
        0
    );
    assert_eq!(
        rs.evaluate_destination(dns, &dest("8.8.8.8", 443, dc::PROTO_UDP)),
        0
    );

    let agent = rs.evaluate_process("/usr/local/bin/cloud-agent", &["cloud-agent"], 0) & metadata;
    let other = rs.evaluate_process("/usr/bin/curl", &["curl"], 0) & metadata;
    assert_eq!((agent, other), (0, metadata));
    assert_eq!(
        rs.evaluate_destination(other, &dest("169.254.169.254", 80, dc::PROTO_TCP)),
        metadata
    );
    assert_eq!(
        rs.evaluate_destination(other, &dest("169.254.169.253", 80, dc::PROTO_TCP)),
        0
    );
}

#[test]
fn egress_examples() {
    let (rs, ids) = examples();
    let prod = ids.get("production").expect("interned");
    let staging = ids.get("staging").expect("interned");
    let http = rule_bits(
        &rs,
        "no-plaintext-http-egress",
        "block-plaintext-to-internet",
    );
    let monitor = rule_bits(
        &rs,
        "monitor-plaintext-egress-staging",
        "would-block-plaintext-http",
    );
    for s in rs.selectors() {
        let e = rs.selector_entries()[usize::from(s.index)];
        if http & (1 << s.index) != 0 {
            assert_eq!(
                (e.hook, e.encryption, e.mode, e.actions),
                (
                    dc::HOOK_EGRESS,
                    dc::ENC_PLAINTEXT,
                    dc::MODE_ENFORCE,
                    dc::ACTION_BLOCK
                )
            );
        }
        if monitor & (1 << s.index) != 0 {
            assert_eq!((e.hook, e.mode), (dc::HOOK_EGRESS, dc::MODE_MONITOR));
        }
    }
    let p = rs.evaluate_process("/usr/bin/curl", &["curl"], prod);
    assert_eq!(
        rs.evaluate_destination(p & http, &dest("93.184.216.34", 80, dc::PROTO_TCP)),
        http
    );
    assert_eq!(
        rs.evaluate_destination(p & http, &dest("192.168.1.1", 80, dc::PROTO_TCP)),
        0
    );
    // The first payload decides: only plaintext is blocked — TLS (or a hello on its way), SSH
    // and declared protocols (ENC_ENCRYPTED) pass, on the egress hook as on ingress.
    let internet = dest("93.184.216.34", 22, dc::PROTO_TCP);
    let outcome = rs.evaluate_payload(Hook::Egress, p, &internet, dc::ENC_PLAINTEXT);
    assert_eq!(
        (outcome.matched & http, outcome.blocking & http),
        (http, http)
    );
    for verdict in [dc::ENC_TLS, dc::ENC_PENDING, dc::ENC_ENCRYPTED] {
        let outcome = rs.evaluate_payload(Hook::Egress, p, &internet, verdict);
        assert_eq!(
            (outcome.matched & http, outcome.blocking),
            (0, 0),
            "verdict {verdict}"
        );
    }
    // The audit example's two selectors (tls, plaintext) report neither SSH nor a declared
    // protocol.
    let audit = rule_bits(&rs, "audit-tls-egress", "report-egress-encryption");
    let encrypted = rs.evaluate_payload(Hook::Egress, p, &internet, dc::ENC_ENCRYPTED);
    assert_eq!(encrypted.matched & audit, 0);
    for verdict in [dc::ENC_TLS, dc::ENC_PLAINTEXT] {
        let outcome = rs.evaluate_payload(Hook::Egress, p, &internet, verdict);
        assert_ne!(outcome.matched & audit, 0, "verdict {verdict}");
        assert_eq!(outcome.blocking & audit, 0, "verdict {verdict}");
    }
    let s = rs.evaluate_process("/usr/bin/curl", &["curl"], staging);
    assert_eq!(s & http, 0);
    assert_eq!(
        rs.evaluate_destination(s & monitor, &dest("10.0.0.1", 8050, dc::PROTO_TCP)),
        monitor
    );
    assert_eq!(
        rs.evaluate_destination(s & monitor, &dest("10.0.0.1", 8100, dc::PROTO_TCP)),
        0
    );
    assert_eq!(
        rs.evaluate_destination(s & monitor, &dest("10.0.0.1", 80, dc::PROTO_UDP)),
        0
    );
}

#[test]
fn ingress_example_reports_plaintext_from_the_internet_only() {
    let (rs, _) = examples();
    let exposed = rule_bits(
        &rs,
        "report-plaintext-services-exposed-to-internet",
        "plaintext-from-internet",
    );
    assert_eq!(rs.hook_mask(Hook::Ingress) & exposed, exposed);
    // Any listening process (no process conditions); the peer's address and the service's port.
    let server = rs.evaluate_process("/usr/sbin/nginx", &["nginx"], 0);
    assert_eq!(server & exposed, exposed);
    let internet = dest("203.0.113.7", 80, dc::PROTO_TCP);
    let outcome = rs.evaluate_payload(Hook::Ingress, server, &internet, dc::ENC_PLAINTEXT);
    assert_eq!((outcome.matched, outcome.blocking), (exposed, 0));
    for (peer, verdict) in [
        ("203.0.113.7", dc::ENC_TLS),
        ("203.0.113.7", dc::ENC_PENDING),
        ("10.1.2.3", dc::ENC_PLAINTEXT),
        ("100.64.0.9", dc::ENC_PLAINTEXT),
    ] {
        let d = dest(peer, 80, dc::PROTO_TCP);
        assert_eq!(
            rs.evaluate_payload(Hook::Ingress, server, &d, verdict)
                .matched
                & exposed,
            0,
            "{peer} verdict {verdict}"
        );
    }
    // The egress hook never sees the ingress rule.
    assert_eq!(
        rs.evaluate_payload(Hook::Egress, server, &internet, dc::ENC_PLAINTEXT)
            .matched
            & exposed,
        0
    );
}
