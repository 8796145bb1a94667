//! Every file in `policies/examples/` runs in the daemon and at least one of its rules fires.
//! Examples are written for a whole node (namespaces like `production`, public CIDRs, /tmp), so
//! each is adapted to the test world first: its namespaces are renamed to the test pods'
//! namespaces, its addresses and paths point into the test world, and every selector gets an
//! extra `matchNamespaces: In [<test pods>]` so it can never touch a process of the host.

use crate::{
    assert_connected, assert_eperm, assert_killed_at_exec, assert_ran, run_syscall, wait_match,
};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::netns::url;
use bulwark_e2e::policy::{adapt_example, parse_yaml_docs, to_yaml_docs};
use bulwark_e2e::{preflight, serial, Daemon, TestServer, World, WorldConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Every example file and the test that exercises it.
const COVERED: &[(&str, &str)] = &[
    ("audit-tls-egress.yaml", "example_audit_tls_egress"),
    ("block-cloud-metadata.yaml", "example_block_cloud_metadata"),
    ("block-external-dns.yaml", "example_block_external_dns"),
    ("block-smtp-egress.yaml", "example_block_smtp_egress"),
    ("kill-crypto-miners.yaml", "example_kill_crypto_miners"),
    ("kill-fileless-exec.yaml", "example_kill_fileless_exec"),
    (
        "kill-namespace-escape.yaml",
        "example_kill_namespace_escape",
    ),
    (
        "monitor-ptrace-and-mount.yaml",
        "example_monitor_ptrace_and_mount",
    ),
    (
        "kill-interactive-shells.yaml",
        "example_kill_interactive_shells",
    ),
    (
        "kill-network-tools-in-production.yaml",
        "example_kill_network_tools_in_production",
    ),
    (
        "monitor-plaintext-egress-staging.yaml",
        "example_monitor_plaintext_egress_staging",
    ),
    (
        "no-plaintext-http-egress.yaml",
        "example_no_plaintext_http_egress",
    ),
    (
        "payments-internal-only.yaml",
        "example_payments_internal_only",
    ),
    (
        "report-plaintext-services-exposed-to-internet.yaml",
        "example_report_plaintext_services_exposed_to_internet",
    ),
    ("protect-secret-files.yaml", "example_protect_secret_files"),
    (
        "no-writes-to-system-dirs.yaml",
        "example_no_writes_to_system_dirs",
    ),
];

fn examples_dir() -> PathBuf {
    bulwark_e2e::workspace_root().join("policies/examples")
}

fn example_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(examples_dir())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", examples_dir().display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    files.sort();
    files
}

/// The example's documents, adapted: `renames` (example string -> test string) everywhere, and
/// a guard on the namespaces of `w`'s pods in every selector.
fn adapted(w: &World, file: &str, renames: &[(&str, &str)]) -> Vec<Value> {
    let path = examples_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut docs = parse_yaml_docs(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    let guard: Vec<&str> = w.pods.iter().map(|p| p.namespace.as_str()).collect();
    for d in &mut docs {
        adapt_example(d, renames, &guard);
    }
    docs
}

/// Name the daemon lists for a policy document (`namespace/name` when namespaced).
fn listed_name(doc: &Value) -> String {
    let name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
    match doc["metadata"]["namespace"].as_str() {
        Some(ns) if doc["kind"] == "TracingPolicyNamespaced" => format!("{ns}/{name}"),
        _ => name,
    }
}

/// Starts the daemon on one adapted example and checks it is listed as loaded.
fn start(w: &World, file: &str, renames: &[(&str, &str)]) -> Daemon {
    let docs = adapted(w, file, renames);
    let yaml = to_yaml_docs(&docs);
    let d = Daemon::start(w, &[(file, &yaml)]);
    let loaded = d.loaded_policies();
    for doc in &docs {
        let name = listed_name(doc);
        assert!(
            loaded.contains(&name),
            "{name} not loaded: {loaded:?}\n{}",
            d.diagnostics()
        );
    }
    d
}

#[test]
fn every_example_is_covered_by_an_e2e_test() {
    let known: Vec<&str> = COVERED.iter().map(|(f, _)| *f).collect();
    let missing: Vec<String> = example_files()
        .into_iter()
        .filter(|f| !known.contains(&f.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "policies/examples has files no e2e test exercises: {missing:?}; add a test to \
         tests/e2e/tests/daemon/examples.rs and list it in COVERED"
    );
    let files = example_files();
    let stale: Vec<&&str> = known
        .iter()
        .filter(|f| !files.iter().any(|g| g == **f))
        .collect();
    assert!(
        stale.is_empty(),
        "COVERED lists examples that no longer exist: {stale:?}"
    );
}

#[test]
fn all_examples_load_together() {
    let _g = serial();
    let w = World::single("ex-all", "e2e-ex-all");
    let ns = "e2e-ex-all";
    let renames = [
        ("production", ns),
        ("staging", ns),
        ("payments", ns),
        ("/tmp/", "/nonexistent-e2e/"),
    ];
    let mut files = Vec::new();
    let mut names = Vec::new();
    for f in example_files() {
        let docs = adapted(&w, &f, &renames);
        names.extend(docs.iter().map(listed_name));
        files.push((f, to_yaml_docs(&docs)));
    }
    assert!(
        names.len() >= 10,
        "expected the ten examples, found {names:?}"
    );
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let d = Daemon::start(&w, &refs);
    let loaded = d.loaded_policies();
    for n in &names {
        assert!(
            loaded.contains(n),
            "{n} not in the loaded set {loaded:?}\n{}",
            d.diagnostics()
        );
    }
}

#[test]
fn example_audit_tls_egress() {
    let _g = serial();
    let w = World::single("ex-audit", "e2e-ex-prod");
    let srv = TestServer::start(&w.net, &[8443]);
    let d = start(
        &w,
        "audit-tls-egress.yaml",
        &[("production", "e2e-ex-prod")],
    );
    let ip = w.net.server_ip(false);
    let out = w.pod().curl(&["-k", &url("https", ip, 8443, "/audit-tls")]);
    assert!(out.success(), "audit mode must not block: {out}");
    let m = wait_match(&d, "audit-tls-egress", "egress", out.pid, 8443);
    assert_eq!(
        (m["encryption"].as_str(), m["outcome"].as_str()),
        (Some("tls"), Some("reported")),
        "{m}"
    );
    assert_eq!(m["enforced"], false, "{m}");
    let out = w.pod().curl(&[&url("http", ip, 8443, "/audit-plain")]);
    assert!(out.success(), "audit mode must not block: {out}");
    let m = wait_match(&d, "audit-tls-egress", "egress", out.pid, 8443);
    assert_eq!(m["encryption"], "plaintext", "{m}");
    assert_eq!(srv.log().requests().len(), 2);
}

#[test]
fn example_block_cloud_metadata() {
    let _g = serial();
    let w = World::single("ex-metadata", "e2e-ex-prod");
    let srv = TestServer::start(&w.net, &[8080]);
    let agent = w.install_binary(&preflight().curl, "bin/cloud-agent");
    let (v4, v6) = (
        format!("{}/32", w.net.server_v4),
        format!("{}/128", w.net.server_v6),
    );
    let d = start(
        &w,
        "block-cloud-metadata.yaml",
        &[
            ("169.254.169.254/32", &v4),
            ("fd00:ec2::254/128", &v6),
            ("/usr/local/bin/cloud-agent", agent.to_str().unwrap()),
        ],
    );
    for v6 in [false, true] {
        let out = w.pod().probe(w.net.server_ip(v6), 8080, &[]);
        assert_eperm(&out);
        wait_match(&d, "block-cloud-metadata", "connect", out.pid, 8080);
    }
    // The agent itself may connect; other addresses are not the metadata service.
    let u = url("http", w.net.server_ip(false), 8080, "/agent");
    let out = w
        .pod()
        .run(&[agent.to_str().unwrap(), "-sS", "--noproxy", "*", &u]);
    assert!(
        out.success(),
        "the listed agent must reach the metadata address: {out}"
    );
    assert_connected(&w.pod().probe(
        w.net.server_alt_ip(false),
        8080,
        &["--send", "GET /alt HTTP/1.0\r\n\r\n"],
    ));
    assert_eq!(srv.log().accepts().len(), 2, "{:?}", srv.log());
}

#[test]
fn example_block_external_dns() {
    let _g = serial();
    let w = World::single("ex-dns", "e2e-ex-prod");
    let _srv = TestServer::start(&w.net, &[53, 8080]);
    let resolver = format!("{}/32", w.net.server_v4_alt);
    let d = start(
        &w,
        "block-external-dns.yaml",
        &[("10.96.0.10/32", &resolver)],
    );
    let (other, cluster) = (w.net.server_ip(false), w.net.server_alt_ip(false));
    let out = w.pod().probe(other, 53, &["--udp", "--send", "q"]);
    assert_eperm(&out);
    let m = wait_match(&d, "block-external-dns", "connect", out.pid, 53);
    assert_eq!(m["rule"], "udp-dns-only-to-cluster-resolver", "{m}");
    let out = w.pod().probe(other, 53, &[]);
    assert_eperm(&out);
    let m = wait_match(&d, "block-external-dns", "connect", out.pid, 53);
    assert_eq!(m["rule"], "tcp-dns-only-to-cluster-resolver", "{m}");
    // The cluster resolver is allowed (UDP and TCP), and port 8080 is not DNS.
    let out = w.pod().probe(cluster, 53, &["--udp", "--send", "q"]);
    assert!(
        out.success(),
        "UDP to the cluster resolver must work: {out}"
    );
    assert_connected(&w.pod().probe(cluster, 53, &[]));
    assert_connected(&w.pod().probe(other, 8080, &[]));
}

#[test]
fn example_block_smtp_egress() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "ex-smtp".into(),
        pods: vec![
            ("e2e-ex-prod".into(), "web".into()),
            ("e2e-ex-mail".into(), "mailer".into()),
        ],
    });
    let _srv = TestServer::start(&w.net, &[25, 587, 8080]);
    let d = start(&w, "block-smtp-egress.yaml", &[("mail", "e2e-ex-mail")]);
    let ip = w.net.server_ip(false);
    let (web, mailer) = (&w.pods[0], &w.pods[1]);
    for port in [25, 587] {
        let out = web.probe(ip, port, &[]);
        assert_eperm(&out);
        wait_match(&d, "block-smtp-egress", "connect", out.pid, port);
    }
    assert_connected(&web.probe(ip, 8080, &[]));
    assert_connected(&mailer.probe(ip, 25, &[]));
    assert_connected(&mailer.probe(ip, 587, &[]));
}

#[test]
fn example_kill_crypto_miners() {
    let _g = serial();
    let w = World::single("ex-miners", "e2e-ex-prod");
    let touch = &preflight().touch;
    let miner = w.install_binary(touch, "bin/xmrig");
    let dropped = w.install_binary(touch, "drop/innocent-name");
    let normal = w.install_binary(touch, "bin/touch");
    let drop_dir = format!("{}/drop/", w.dir().display());
    let d = start(&w, "kill-crypto-miners.yaml", &[("/tmp/", &drop_dir)]);

    let marker = w.dir().join("miner-ran");
    let out = w
        .pod()
        .run(&[miner.to_str().unwrap(), marker.to_str().unwrap()]);
    let m = assert_killed_at_exec(&d, &out, &miner, "kill-crypto-miners", &marker);
    assert_eq!(m["rule"], "kill-miner-names", "{m}");
    let marker = w.dir().join("dropped-ran");
    let out = w
        .pod()
        .run(&[dropped.to_str().unwrap(), marker.to_str().unwrap()]);
    let m = assert_killed_at_exec(&d, &out, &dropped, "kill-crypto-miners", &marker);
    assert_eq!(m["rule"], "kill-binaries-from-tmp", "{m}");
    let marker = w.dir().join("normal-ran");
    let out = w
        .pod()
        .run(&[normal.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &normal, &marker);
}

#[test]
fn example_kill_fileless_exec() {
    let _g = serial();
    let w = World::single("ex-fileless", "e2e-ex-prod");
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let d = start(
        &w,
        "kill-fileless-exec.yaml",
        &[("production", "e2e-ex-prod")],
    );
    // From memory (memfd_create + execveat).
    let marker = w.dir().join("memfd-ran");
    let out = w.pod().run(&[
        crate::helper(),
        "memfd-exec",
        touch.to_str().unwrap(),
        marker.to_str().unwrap(),
    ]);
    assert!(out.sigkilled() && !marker.exists(), "{out}");
    wait_kill(&d, &out, "kill-fileless-exec");
    // Through the loader.
    let (sh, _) = bulwark::pipeline::binary_ids::resolve_in(Path::new("/"), "/bin/sh").unwrap();
    let loader = bulwark::pipeline::binary_ids::elf_interpreter(&sh).expect("ld.so of /bin/sh");
    let marker = w.dir().join("loader-ran");
    let out = w
        .pod()
        .run(&[&loader, touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert!(out.sigkilled() && !marker.exists(), "{out}");
    wait_kill(&d, &out, "kill-fileless-exec");
    // The same program run from its file.
    let marker = w.dir().join("file-ran");
    let out = w
        .pod()
        .run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &touch, &marker);
}

/// [`start`] on example `policy` (its `production` namespace renamed to `e2e-ex-prod`) with
/// every selector also confined to the e2e helper binary: a pod command runs through
/// `ip netns exec`, which itself calls `setns` and `mount` in the same process before it execs
/// the command, and those calls are not what the tests look at.
fn start_for_helper(w: &World, policy: &str) -> Daemon {
    let file = format!("{policy}.yaml");
    let mut docs = adapted(w, &file, &[("production", "e2e-ex-prod")]);
    for d in &mut docs {
        for rule in d["spec"]["rules"].as_array_mut().unwrap() {
            for sel in rule["selectors"].as_array_mut().unwrap() {
                sel["matchBinaries"] =
                    serde_json::json!([{"operator": "In", "values": [crate::helper()]}]);
            }
        }
    }
    let d = Daemon::start(w, &[(&file, &to_yaml_docs(&docs))]);
    for doc in &docs {
        let name = listed_name(doc);
        assert!(
            d.loaded_policies().contains(&name),
            "{name} not loaded\n{}",
            d.diagnostics()
        );
    }
    d
}

/// The `process_syscall` event of call `name` by the process of `out`.
fn wait_syscall(
    d: &Daemon,
    out: &bulwark_e2e::RunOutput,
    name: &str,
) -> bulwark_e2e::daemon::Event {
    let pid = out.pid as u64;
    d.wait_event(&format!("process_syscall {name} of pid {pid}"), |e| {
        ev::is(e, "process_syscall") && ev::pid(e) == Some(pid) && e["syscall"]["name"] == name
    })
}

/// The `policy_match` of `policy` (hook `syscall`) for the process of `out`.
fn wait_syscall_match(
    d: &Daemon,
    policy: &str,
    out: &bulwark_e2e::RunOutput,
) -> bulwark_e2e::daemon::Event {
    let pid = out.pid as u64;
    d.wait_event(&format!("policy_match of {policy} for pid {pid}"), |e| {
        ev::is_match(e, policy, "syscall") && ev::pid(e) == Some(pid)
    })
}

#[test]
fn example_monitor_ptrace_and_mount() {
    let _g = serial();
    let w = World::single("ex-ptrace", "e2e-ex-prod");
    let policy = "monitor-ptrace-and-mount";
    let d = start_for_helper(&w, policy);
    // ptrace (PTRACE_TRACEME succeeds): reported at entry by the first rule only.
    let (out, marker) = run_syscall(&w, "ptrace", "ptrace-ran");
    assert!(
        out.code == Some(0) && marker.exists(),
        "monitor kills nothing: {out}"
    );
    let e = wait_syscall(&d, &out, "ptrace");
    assert_eq!(e["syscall"]["phase"], "entry", "{e}");
    assert_eq!(
        e["syscall"]["arguments"][0]["decoded"], "PTRACE_TRACEME",
        "{e}"
    );
    let m = wait_syscall_match(&d, policy, &out);
    assert_eq!(
        (&m["rule"], &m["outcome"]),
        (&"ptrace-and-mount".into(), &"reported".into()),
        "{m}"
    );
    assert_eq!(ev::exec_id(&m), ev::exec_id(&e), "correlated by exec_id");
    // The same call from a host process is not this policy's: it gets no event, as seen once
    // the pod's next call (made after it) has been reported.
    let marker = w.dir().join("host-ptrace-ran");
    let mut host = std::process::Command::new(crate::helper())
        .args(["syscall", "ptrace", marker.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let host_pid = u64::from(host.id());
    assert!(host.wait().unwrap().success() && marker.exists());
    // mount of a path that does not exist: reported, and the failure is the caller's result.
    let (out, marker) = run_syscall(&w, "mount", "mount-ran");
    assert!(out.code == Some(0) && marker.exists(), "{out}");
    assert_eq!(
        out.json()["errno"],
        2,
        "the mount itself failed (ENOENT): {out}"
    );
    let e = wait_syscall(&d, &out, "mount");
    assert_eq!(e["syscall"]["abi"], "x86_64", "{e}");
    let host_events: Vec<_> = d
        .events()
        .into_iter()
        .filter(|e| ev::is(e, "process_syscall") && ev::pid(e) == Some(host_pid))
        .collect();
    assert!(
        host_events.is_empty(),
        "host process reported: {host_events:?}"
    );
}

#[test]
fn example_kill_namespace_escape() {
    let _g = serial();
    let w = World::single("ex-unshare", "e2e-ex-prod");
    let policy = "kill-namespace-escape";
    let d = start_for_helper(&w, policy);
    for call in ["unshare", "unshare-int80"] {
        let (out, marker) = run_syscall(&w, call, &format!("{call}-survived"));
        // Killed on the call's return to user space: nothing after the call ran.
        assert!(out.sigkilled() && !marker.exists(), "{call}: {out}");
        assert!(
            out.stdout.is_empty(),
            "{call}: printed after the call: {out}"
        );
        let e = wait_syscall(&d, &out, "unshare");
        let abi = if call == "unshare" { "x86_64" } else { "i386" };
        assert_eq!(e["syscall"]["abi"], abi, "{e}");
        assert_eq!(
            e["syscall"]["arguments"][0]["decoded"], "CLONE_NEWUTS",
            "{e}"
        );
        let m = wait_syscall_match(&d, policy, &out);
        assert_eq!(
            (&m["outcome"], &m["enforced"]),
            (&"killed".into(), &true.into()),
            "{m}"
        );
    }
    // A workload process that does not call them runs.
    let (out, marker) = run_syscall(&w, "mount", "mount-ran");
    assert!(out.code == Some(0) && marker.exists(), "{out}");
}

/// Waits for the `policy_match` killing the process of `out`.
fn wait_kill(d: &Daemon, out: &bulwark_e2e::RunOutput, policy: &str) {
    let pid = out.pid as u64;
    let m = d.wait_event(&format!("policy_match of {policy} for pid {pid}"), |e| {
        ev::is_match(e, policy, "exec") && ev::pid(e) == Some(pid)
    });
    assert_eq!(m["outcome"], "killed", "{m}");
}

#[test]
fn example_kill_interactive_shells() {
    let _g = serial();
    let w = World::single("ex-shells", "e2e-ex-prod");
    let d = start(&w, "kill-interactive-shells.yaml", &[]);
    let sh = PathBuf::from("/bin/sh");
    let marker = w.dir().join("interactive-ran");
    let out = w.pod().run(&[
        "/bin/sh",
        "-i",
        "-c",
        &format!("touch {}", marker.display()),
    ]);
    assert_killed_at_exec(&d, &out, &sh, "kill-interactive-shells", &marker);
    let marker = w.dir().join("script-ran");
    let out = w.pod().run(&[
        "/bin/sh",
        "-c",
        &format!("touch {}; true", marker.display()),
    ]);
    assert!(
        out.success() && marker.exists(),
        "a script shell must run: {out}"
    );
}

#[test]
fn example_kill_network_tools_in_production() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "ex-nettools".into(),
        pods: vec![
            ("e2e-ex-prod".into(), "web".into()),
            ("e2e-ex-dev".into(), "debug".into()),
        ],
    });
    let srv = TestServer::start(&w.net, &[8080]);
    let d = start(
        &w,
        "kill-network-tools-in-production.yaml",
        &[("production", "e2e-ex-prod")],
    );
    let curl = preflight().curl.clone();
    let u = url("http", w.net.server_ip(false), 8080, "/tool");
    let marker = w.dir().join("curl-output");
    let out = w.pods[0].curl(&["-o", marker.to_str().unwrap(), &u]);
    assert_killed_at_exec(&d, &out, &curl, "kill-network-tools-in-production", &marker);
    assert!(
        srv.log().accepts().is_empty(),
        "the killed curl opened a connection"
    );
    let out = w.pods[1].curl(&["-o", marker.to_str().unwrap(), &u]);
    assert!(
        out.success() && marker.exists(),
        "curl outside production must run: {out}"
    );
}

#[test]
fn example_monitor_plaintext_egress_staging() {
    let _g = serial();
    let w = World::single("ex-staging", "e2e-ex-staging");
    let srv = TestServer::start(&w.net, &[8080]);
    let d = start(
        &w,
        "monitor-plaintext-egress-staging.yaml",
        &[("staging", "e2e-ex-staging")],
    );
    let ip = w.net.server_ip(false);
    let out = w.pod().curl(&[&url("http", ip, 8080, "/staging")]);
    assert!(out.success(), "monitor mode must not block: {out}");
    let m = wait_match(
        &d,
        "monitor-plaintext-egress-staging",
        "egress",
        out.pid,
        8080,
    );
    assert_eq!(m["outcome"], "would_block", "{m}");
    assert_eq!(m["enforced"], false, "{m}");
    assert_eq!(m["encryption"], "plaintext", "{m}");
    assert_eq!(srv.log().requests_for("/staging").len(), 1);
    let out = w
        .pod()
        .curl(&["-k", &url("https", ip, 8080, "/staging-tls")]);
    assert!(out.success(), "{out}");
    d.assert_no_event("policy_match for TLS", |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(out.pid as u64)
    });
}

#[test]
fn example_no_plaintext_http_egress() {
    let _g = serial();
    let w = World::single("ex-noplain", "e2e-ex-prod");
    let srv = TestServer::start(&w.net, &[8080]);
    // The test subnet is private (10/8, fc00::/7), which the example exempts: shrink those
    // ranges so the server counts as "internet", and exempt the second server address instead.
    let (alt4, alt6) = (
        format!("{}/32", w.net.server_v4_alt),
        format!("{}/128", w.net.server_v6_alt),
    );
    let d = start(
        &w,
        "no-plaintext-http-egress.yaml",
        &[
            ("production", "e2e-ex-prod"),
            ("10.0.0.0/8", "10.0.0.0/16"),
            ("fc00::/7", "fc00::/8"),
            ("192.168.0.0/16", &alt4),
            ("169.254.0.0/16", &alt6),
        ],
    );
    for v6 in [false, true] {
        let ip = w.net.server_ip(v6);
        let path = format!("/plain-{v6}");
        let out = w.pod().curl(&[&url("http", ip, 8080, &path)]);
        assert!(!out.success(), "plaintext to the internet must fail: {out}");
        let m = wait_match(&d, "no-plaintext-http-egress", "egress", out.pid, 8080);
        assert_eq!(m["outcome"], "blocked", "{m}");
        // The server logs the accept from its own thread: wait for it.
        let accepted = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
            (!srv.log().conns_to(&ip.to_string()).is_empty()).then_some(())
        });
        let log = srv.log();
        assert!(accepted.is_some(), "{log:?}");
        assert!(
            log.data_to(&ip.to_string()).is_empty(),
            "plaintext arrived: {log:?}"
        );
        let path = format!("/tls-{v6}");
        let out = w.pod().curl(&["-k", &url("https", ip, 8080, &path)]);
        assert!(out.success(), "TLS must pass: {out}");
        let r = srv.log();
        assert_eq!(r.requests_for(&path).len(), 1, "{r:?}");
        assert_eq!(r.requests_for(&path)[0]["tls"], true, "{r:?}");
        let path = format!("/exempt-{v6}");
        let out = w
            .pod()
            .curl(&[&url("http", w.net.server_alt_ip(v6), 8080, &path)]);
        assert!(
            out.success(),
            "plaintext to an exempt range must pass: {out}"
        );
        assert_eq!(srv.log().requests_for(&path).len(), 1);
    }
}

#[test]
fn example_payments_internal_only() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "ex-payments".into(),
        pods: vec![
            ("e2e-ex-payments".into(), "pay".into()),
            ("e2e-ex-other".into(), "web".into()),
        ],
    });
    let _srv = TestServer::start(&w.net, &[8080]);
    let (alt4, alt6) = (
        format!("{}/32", w.net.server_v4_alt),
        format!("{}/128", w.net.server_v6_alt),
    );
    let d = start(
        &w,
        "payments-internal-only.yaml",
        &[
            ("payments", "e2e-ex-payments"),
            ("10.0.0.0/8", &alt4),
            ("fd00::/8", &alt6),
        ],
    );
    let (pay, other) = (&w.pods[0], &w.pods[1]);
    for v6 in [false, true] {
        let out = pay.probe(w.net.server_ip(v6), 8080, &[]);
        assert_eperm(&out);
        let m = wait_match(&d, "payments-internal-only", "connect", out.pid, 8080);
        assert_eq!(m["policy_namespace"], "e2e-ex-payments", "{m}");
        assert_connected(&pay.probe(w.net.server_alt_ip(v6), 8080, &[]));
        // A namespaced policy does not apply outside its namespace.
        assert_connected(&other.probe(w.net.server_ip(v6), 8080, &[]));
    }
}

#[test]
fn example_report_plaintext_services_exposed_to_internet() {
    use crate::ingress::{client, client_from, ingress_match, world, PodServers, PLAIN, REQUEST};
    let _g = serial();
    let w = world("ex-ingress");
    let policy = "report-plaintext-services-exposed-to-internet";
    let d = start(&w, &format!("{policy}.yaml"), &[]);
    let srv = PodServers::start(&w);
    // Plaintext from the internet peer: reported, and the server got it (Post only).
    let c = client(&w, PLAIN, REQUEST);
    assert_eq!(c.replies, ["ok\n"], "Post must not refuse");
    let m = ingress_match(&d, policy, PLAIN);
    assert_eq!(m["outcome"], "reported", "{m}");
    assert_eq!(m["encryption"], "plaintext", "{m}");
    assert!(ev::binary(&m).contains("python"), "{m}");
    // The same plaintext from a private (RFC 1918) peer: not reported.
    let c = client_from(&w, w.net.server_v4.into(), PLAIN, REQUEST);
    assert_eq!(c.replies, ["ok\n"]);
    srv.wait_end(c.port);
    d.sync();
    d.assert_no_event("a report of the private peer", |e| {
        ev::is_match(e, policy, "ingress") && ev::dest(e).0 == w.net.server_v4.to_string()
    });
}

/// The `policy_match` of `policy` (hook file) for the process of `out`.
fn wait_file_match(
    d: &Daemon,
    out: &bulwark_e2e::RunOutput,
    policy: &str,
) -> bulwark_e2e::daemon::Event {
    let pid = out.pid as u64;
    d.wait_event(&format!("policy_match of {policy} for pid {pid}"), |e| {
        ev::is_match(e, policy, "file") && ev::pid(e) == Some(pid)
    })
}

#[test]
fn example_protect_secret_files() {
    let _g = serial();
    let w = World::single("ex-secrets", "e2e-ex-prod");
    // The token directory of the test pod (this host has no Kubernetes mount); /etc/shadow is
    // the real one, only ever read.
    let tokens = w.dir().join("serviceaccount");
    std::fs::create_dir_all(&tokens).unwrap();
    std::fs::write(tokens.join("token"), "eyJhbGciOi-test-token").unwrap();
    let tok = format!("{}/", tokens.display());
    let d = start(
        &w,
        "protect-secret-files.yaml",
        &[
            ("production", "e2e-ex-prod"),
            ("/var/run/secrets/kubernetes.io/serviceaccount/", &tok),
            ("/run/secrets/kubernetes.io/serviceaccount/", &tok),
        ],
    );
    let policy = "protect-secret-files";
    let cat = bulwark_e2e::preflight::which("cat").unwrap();
    let cat = cat.to_str().unwrap();
    // `cat /etc/shadow` from a workload: killed at the open, nothing printed.
    let out = w.pod().run(&[cat, "/etc/shadow"]);
    assert!(out.sigkilled() && out.stdout.is_empty(), "{out}");
    let m = wait_file_match(&d, &out, policy);
    assert_eq!(
        (&m["rule"], &m["outcome"]),
        (&"kill-password-hash-reads".into(), &"killed".into()),
        "{m}"
    );
    let e = d.wait_event("process_file of /etc/shadow", |e| {
        ev::is(e, "process_file") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(e["file"]["path"], "/etc/shadow", "{e}");
    // A shell tool reading the token: killed; another program (python): reported only.
    let token = tokens.join("token");
    let out = w.pod().run(&[cat, token.to_str().unwrap()]);
    assert!(out.sigkilled() && out.stdout.is_empty(), "{out}");
    wait_file_match(&d, &out, policy);
    let python = bulwark_e2e::preflight()
        .python3
        .to_str()
        .unwrap()
        .to_string();
    let script = format!("print(len(open('{}').read()))", token.display());
    let out = w.pod().run(&[&python, "-c", &script]);
    assert!(out.success() && out.stdout.trim() == "21", "{out}");
    let m = wait_file_match(&d, &out, policy);
    assert_eq!(m["outcome"], "reported", "{m}");
    // Their metadata and other files are not reads of them.
    let out = w.pod().run(&["ls", "-l", "/etc/shadow", "/etc/passwd"]);
    assert!(out.success(), "{out}");
    let out = w.pod().run(&[cat, "/etc/hostname"]);
    assert!(out.success(), "{out}");
}

#[test]
fn example_no_writes_to_system_dirs() {
    let _g = serial();
    let w = World::single("ex-sysdirs", "e2e-ex-prod");
    // Temporary copies stand in for /usr/bin and /etc: the tests never write to the real ones.
    let bin = w.dir().join("usr-bin");
    let etc = w.dir().join("etc");
    for dir in [&bin, &etc] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(etc.join("app.conf"), "setting=1\n").unwrap();
    std::fs::write(bin.join("tool"), "#!/bin/sh\n").unwrap();
    let b = format!("{}/", bin.display());
    let e = format!("{}/", etc.display());
    let d = start(
        &w,
        "no-writes-to-system-dirs.yaml",
        &[
            ("production", "e2e-ex-prod"),
            ("/usr/bin/", &b),
            ("/usr/sbin/", "/nonexistent-e2e/sbin/"),
            ("/etc/", &e),
        ],
    );
    let policy = "no-writes-to-system-dirs";
    let sh = bulwark_e2e::preflight().sh.to_str().unwrap().to_string();
    // Appending to a configuration file: killed at the open, nothing written.
    let out = w.pod().run(&[
        &sh,
        "-c",
        &format!("echo evil=1 >> {e}app.conf; echo after"),
    ]);
    assert!(out.sigkilled() && !out.stdout.contains("after"), "{out}");
    wait_file_match(&d, &out, policy);
    assert_eq!(
        std::fs::read_to_string(etc.join("app.conf")).unwrap(),
        "setting=1\n"
    );
    // Dropping a new program: killed at the open that creates it.
    let cp = bulwark_e2e::preflight::which("cp").unwrap();
    let out = w
        .pod()
        .run(&[cp.to_str().unwrap(), "/bin/true", &format!("{b}backdoor")]);
    assert!(out.sigkilled(), "{out}");
    let m = wait_file_match(&d, &out, policy);
    assert_eq!(m["outcome"], "killed", "{m}");
    assert_eq!(
        std::fs::metadata(bin.join("backdoor"))
            .map(|m| m.len())
            .unwrap_or(0),
        0,
        "no byte written"
    );
    // Deleting one: killed, though the unlink (judged at entry) has happened.
    let rm = bulwark_e2e::preflight::which("rm").unwrap();
    let out = w.pod().run(&[rm.to_str().unwrap(), &format!("{b}tool")]);
    assert!(out.sigkilled(), "{out}");
    wait_file_match(&d, &out, policy);
    // Reading is allowed.
    let out = w.pod().run(&[&sh, "-c", &format!("cat {e}app.conf")]);
    assert!(out.success() && out.stdout == "setting=1\n", "{out}");
}
