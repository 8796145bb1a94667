//! `bulwark run --kubernetes` against the real CRD API server (`k8s-testenv`), as a new user
//! would try it: CRDs applied with `kubectl apply --server-side`, a TracingPolicy that blocks a
//! connect to the test server's port, the daemon started in Kubernetes mode (the test's pod
//! cgroup mapped to a namespace with `--workloads`, since the test server has no Pods), and then
//! only kubectl and the workload's own view: the policy shows Accepted and NODES 1/1; a real
//! connect fails with EPERM and shows up in `kubectl get policyviolations -A` with the policy,
//! action and outcome (plus an Event); a repeat raises the count; with the API server gone the
//! policy stays enforced; switched to `mode: monitor` with kubectl, the next connect succeeds and
//! is reported as `would_block`; one more right before SIGTERM is still written; exit code 0.
//!
//! The daemon enforces *every* policy on the server it is given, on this host: so the test runs
//! its own private server instance (own state dir and ports, wiped at the end) that holds only
//! the test's policy, never the shared one. Needs the k8s-testenv kit (`tests/k8s/testenv`
//! or `BULWARK_K8S_TESTENV`): with CI=true a missing kit or a server that does not come up fails
//! the test; otherwise it is skipped with a message.

use crate::{assert_connected, assert_eperm, wait_match};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::{
    serial, Daemon, DaemonConfig, PolicyBuilder, RuleBuilder, TestServer, World, WorldConfig,
};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POLICY: &str = "e2e-k8s-block";
const NAMESPACE: &str = "e2e-k8s";
/// Kubernetes-side convergence (status writes, violation flushes every 2 s, watch restarts
/// with backoff after the server comes back).
const K8S_WAIT: Duration = Duration::from_secs(120);

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A private k8s-testenv instance, stopped and wiped on drop.
struct Server {
    kit: PathBuf,
    run_dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Server {
    const PORT: u16 = 16843;
    const ETCD_PORT: u16 = 24090;

    fn envs(&self, c: &mut Command) {
        c.env("K8S_TESTENV_RUN", &self.run_dir)
            .env("K8S_TESTENV_PORT", Self::PORT.to_string())
            .env("K8S_TESTENV_ETCD_PORT", Self::ETCD_PORT.to_string());
    }

    /// `down` returns after 5 s even when the server is still draining its watches: wait
    /// until nothing listens on the instance's ports any more, so `up` can bind them.
    fn wait_ports_free(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let busy = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        while [Self::PORT, Self::ETCD_PORT, Self::ETCD_PORT + 10]
            .into_iter()
            .any(busy)
        {
            assert!(
                Instant::now() < deadline,
                "the stopped test server still holds its ports after 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The kit, or None (skip) outside CI; panics in CI.
    fn kit() -> Option<PathBuf> {
        let kit = std::env::var_os("BULWARK_K8S_TESTENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| bulwark_e2e::workspace_root().join("tests/k8s/testenv"));
        if kit.join("up").is_file() && kit.join("down").is_file() {
            return Some(kit);
        }
        assert!(
            !in_ci(),
            "the k8s-testenv kit is missing at {} but CI=true: build it (see its README) or set \
             BULWARK_K8S_TESTENV",
            kit.display()
        );
        eprintln!(
            "kubernetes e2e: SKIPPED: no k8s-testenv kit at {} (set BULWARK_K8S_TESTENV)",
            kit.display()
        );
        None
    }

    fn start(kit: PathBuf) -> Server {
        let mut s = Server {
            kit,
            run_dir: std::env::temp_dir().join("bulwark-e2e-k8s"),
            kubeconfig: PathBuf::new(),
            kubectl: PathBuf::new(),
        };
        s.script("down"); // a leftover instance of an interrupted run
        s.wait_ports_free();
        s.up();
        s
    }

    fn script(&self, name: &str) -> std::process::Output {
        let mut c = Command::new(self.kit.join(name));
        self.envs(&mut c);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run k8s-testenv/{name}: {e}"))
    }

    /// Starts etcd and the API server; the data is empty afterwards.
    fn up(&mut self) {
        let out = self.script("up");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "k8s-testenv/up failed (the API server did not come up): {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let word = |key: &str| {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .unwrap_or_else(|| panic!("k8s-testenv/up printed no {key}: {text}"))
                .to_string()
        };
        self.kubeconfig = PathBuf::from(word("KUBECONFIG="));
        self.kubectl = PathBuf::from(word("K8S_TESTENV_BIN=")).join("kubectl");
    }

    /// `up` again after [`Server::down`] (same state dir, certificates and kubeconfig).
    fn restart(&self) {
        self.wait_ports_free();
        let out = self.script("up");
        assert!(
            out.status.success(),
            "k8s-testenv/up (restart) failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server and wipes its data.
    fn down(&self) {
        let out = self.script("down");
        assert!(
            out.status.success(),
            "k8s-testenv/down failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kubectl with this server's kubeconfig: (success, stdout, stderr).
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = Command::new(&self.kubectl);
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.kubectl.display()));
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out, err) = self.kubectl(args, stdin);
        assert!(ok, "kubectl {} failed: {out}{err}", args.join(" "));
        out
    }

    fn get_json(&self, args: &[&str]) -> Option<Value> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["-o", "json"]);
        let (ok, out, _) = self.kubectl(&all, None);
        if !ok {
            return None;
        }
        serde_json::from_str(&out).ok()
    }

    /// CRDs from `crds/` and the policy.
    fn install(&self, policy_yaml: &str) {
        let crds = bulwark_e2e::workspace_root().join("crds");
        self.kubectl_ok(
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
            None,
        );
        // The CRDs must be served before objects of them can be applied.
        self.kubectl_ok(
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/tracingpolicies.bulwark.dev",
                "crd/tracingpoliciesnamespaced.bulwark.dev",
                "crd/policyviolations.bulwark.dev",
            ],
            None,
        );
        self.apply_policy(policy_yaml);
    }

    fn apply_policy(&self, yaml: &str) {
        self.kubectl_ok(
            &["apply", "--server-side", "--field-manager=e2e", "-f", "-"],
            Some(yaml),
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

/// `bulwark run --kubernetes` against `srv`, with no policy files: the policies are the
/// server's; the world's pods are mapped to their namespaces by `--workloads` (the test server
/// has no Pods).
fn start_daemon(srv: &Server, w: &World, extra: &[&str]) -> Daemon {
    let mut extra_args = vec![
        "--kubeconfig".to_string(),
        srv.kubeconfig.display().to_string(),
    ];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    Daemon::start_with(DaemonConfig {
        policies: Vec::new(),
        workloads: w.workloads_yaml(),
        extra_args,
        kubernetes: true,
        ..DaemonConfig::default()
    })
}

fn poll<T>(what: &str, diag: &dyn Fn() -> String, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + K8S_WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {K8S_WAIT:?} waiting for {what}\n{}",
                diag()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The policy's status once it is Accepted, loaded on 1/1 nodes, for its current generation.
fn accepted_on_one_node(srv: &Server) -> Option<Value> {
    accepted_on_one_node_as(srv, &["get", "tracingpolicy", POLICY])
}

/// [`accepted_on_one_node`] for the policy `get` names (kind, name and namespace).
fn accepted_on_one_node_as(srv: &Server, get: &[&str]) -> Option<Value> {
    let tp = srv.get_json(get)?;
    let st = &tp["status"];
    (st["state"] == "Accepted"
        && st["nodes"] == "1/1"
        && st["observedGeneration"] == tp["metadata"]["generation"])
        .then(|| tp.clone())
}

/// This test's PolicyViolation with `outcome`, from `kubectl get policyviolations -A`.
fn violation(srv: &Server, outcome: &str) -> Option<Value> {
    let all = srv.get_json(&["get", "policyviolations", "-A"])?;
    all["items"]
        .as_array()?
        .iter()
        .find(|v| v["spec"]["policy"] == POLICY && v["spec"]["outcome"] == outcome)
        .cloned()
}

fn count(v: &Value) -> i64 {
    v["spec"]["count"].as_i64().unwrap_or(0)
}

#[test]
fn kubernetes_mode_enforces_cluster_policies_and_reports_violations() {
    let _g = serial();
    let Some(kit) = Server::kit() else { return };
    let srv = Server::start(kit);
    let w = World::single("k8s", NAMESPACE);
    // 8081: a port no policy names, for the declared-protocol connection below.
    let http = TestServer::start(&w.net, &[8080, 8081]);
    let target = format!("{}/32", w.net.server_v4);
    let policy = |mode: &str| {
        PolicyBuilder::new(POLICY)
            .mode(mode)
            .rule(
                RuleBuilder::connect("block-8080")
                    .namespaces("In", &[NAMESPACE])
                    .destinations("In", &[&target], &["8080"], Some("TCP"))
                    .action("Block"),
            )
            .yaml()
    };
    srv.install(&policy("enforce"));

    // A short resync: the server restart below wipes its data, which a resumed watch cannot
    // see (the default 5 min would make the test wait that long).
    let d = start_daemon(&srv, &w, &["--resync-interval=3"]);
    let diag = || {
        let (_, tp, _) = srv.kubectl(&["get", "tracingpolicy", POLICY, "-o", "yaml"], None);
        let (_, pv, _) = srv.kubectl(&["get", "policyviolations", "-A", "-o", "wide"], None);
        format!("{tp}\n{pv}\n{}", d.diagnostics())
    };
    // `ready` comes with the first set from the API server, which holds the policy.
    let ready = d.wait_event("ready", |e| e["type"] == "status" && e["state"] == "ready");
    assert_eq!(ready["policies"], serde_json::json!([POLICY]), "{ready}");

    // The policy's state as an operator reads it.
    let tp = poll("Accepted, NODES 1/1", &diag, || accepted_on_one_node(&srv));
    assert_eq!(tp["status"]["nodeCounts"]["loaded"], 1, "{tp}");
    // The node's own report (what the status aggregator counts) has the policy in force.
    let report: serde_json::Value =
        serde_json::from_str(&srv.kubectl_ok(&["get", "bulwarknode", "e2e", "-o", "json"], None))
            .unwrap_or_else(|e| panic!("BulwarkNode e2e unreadable: {e}"));
    let entry = report["spec"]["policies"]
        .as_array()
        .and_then(|p| p.iter().find(|x| x["name"] == POLICY))
        .cloned()
        .unwrap_or_else(|| panic!("no entry for {POLICY} in BulwarkNode e2e: {report}"));
    assert!(entry.get("error").is_none(), "{report}");
    let table = srv.kubectl_ok(&["get", "tracingpolicies"], None);
    let row = table
        .lines()
        .find(|l| l.starts_with(POLICY))
        .unwrap_or_else(|| panic!("{POLICY} missing from kubectl get tracingpolicies:\n{table}"));
    for col in ["enforce", "Accepted", "1/1"] {
        assert!(row.contains(col), "column {col} missing: {table}");
    }

    // A real blocked connect: EPERM at the client, a violation in the workload's namespace
    // (a namespace with no Namespace object: the CRD server stores namespaced objects anyway).
    let ip = w.net.server_ip(false);
    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /k8s-1 HTTP/1.0\r\n\r\n"]);
    assert_eperm(&out);
    let m = wait_match(&d, POLICY, "connect", out.pid, 8080);
    assert_eq!(m["outcome"], "blocked", "{m}");
    let v = poll("a blocked PolicyViolation", &diag, || {
        violation(&srv, "blocked")
    });
    assert_eq!(v["metadata"]["namespace"], NAMESPACE, "{v}");
    let spec = &v["spec"];
    assert_eq!(spec["action"], "Block", "{v}");
    assert_eq!(spec["enforced"], true, "{v}");
    assert_eq!(spec["rule"], "block-8080", "{v}");
    assert_eq!(spec["node"], "e2e", "{v}");
    assert_eq!(spec["hook"], "connect", "{v}");
    assert_eq!(spec["destination"]["port"], 8080, "{v}");
    assert_eq!(count(&v), 1, "{v}");
    let listed = srv.kubectl_ok(&["get", "policyviolations", "-A"], None);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(NAMESPACE) && l.contains(POLICY) && l.contains("blocked")),
        "kubectl get policyviolations -A does not show it:\n{listed}"
    );
    // An Event regarding the policy tells the same story.
    poll("an Event regarding the policy", &diag, || {
        let evs = srv.get_json(&["get", "events.events.k8s.io", "-A"])?;
        evs["items"]
            .as_array()?
            .iter()
            .find(|e| e["regarding"]["name"] == POLICY && e["reason"] == "ConnectionBlocked")
            .cloned()
    });

    // The same violation again: the count rises, no second object.
    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /k8s-2 HTTP/1.0\r\n\r\n"]);
    assert_eperm(&out);
    let v2 = poll("the count to reach 2", &diag, || {
        violation(&srv, "blocked").filter(|v| count(v) >= 2)
    });
    assert_eq!(count(&v2), 2, "{v2}");
    assert_eq!(v2["metadata"]["name"], v["metadata"]["name"], "{v2}");

    // The API server goes away (and loses its data): the set in force stays enforced.
    srv.down();
    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /k8s-down HTTP/1.0\r\n\r\n"]);
    assert_eperm(&out);
    wait_match(&d, POLICY, "connect", out.pid, 8080);
    // Back, empty: the user re-applies; the daemon converges on its own.
    srv.restart();
    srv.install(&policy("enforce"));
    poll("Accepted, NODES 1/1 after the restart", &diag, || {
        accepted_on_one_node(&srv)
    });
    // The violation comes back with its count, plus the connect blocked while the server was
    // gone: nothing lost.
    let v3 = poll("the violation re-created with count 3", &diag, || {
        violation(&srv, "blocked").filter(|v| count(v) >= 3)
    });
    assert_eq!(count(&v3), 3, "{v3}");

    // Switch to monitor with kubectl: the next connect goes through and is reported as
    // would_block (the engine's A/B swap; no reload gap by construction).
    let mark = d.mark();
    srv.apply_policy(&policy("monitor"));
    d.wait_event_after(mark, "the reload for mode: monitor", |e| {
        e["type"] == "status" && e["state"] == "reloaded"
    });
    poll("Accepted 1/1 for the monitor generation", &diag, || {
        accepted_on_one_node(&srv).filter(|tp| tp["spec"]["mode"] == "monitor")
    });
    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /k8s-monitor HTTP/1.0\r\n\r\n"]);
    assert_connected(&out);
    let m = wait_match(&d, POLICY, "connect", out.pid, 8080);
    assert_eq!(m["outcome"], "would_block", "{m}");
    assert_eq!(m["enforced"], false, "{m}");
    let v = poll("a would_block PolicyViolation", &diag, || {
        violation(&srv, "would_block")
    });
    assert_eq!(v["metadata"]["namespace"], NAMESPACE, "{v}");
    assert_eq!(v["spec"]["enforced"], false, "{v}");
    assert_eq!(v["spec"]["mode"], "monitor", "{v}");
    // A declared encrypted protocol as an EncryptedProtocol object: the daemon lints it, writes
    // its status (it holds the status Lease) and classifies a first payload carrying it under
    // its name, encrypted, without a restart (the kernel side of this: conns.rs).
    srv.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: e2e-acme\nspec:\n  signature: \"ac 3e\"\n",
        ),
    );
    poll("EncryptedProtocol e2e-acme Accepted", &diag, || {
        let ep = srv.get_json(&["get", "encryptedprotocol", "e2e-acme"])?;
        (ep["status"]["state"] == "Accepted").then_some(ep)
    });
    // Not HTTP: the server waits for a request line and the client's read times out.
    let out = w.pod().probe(ip, 8081, &["--send-hex", "ac3e01020304"]);
    assert!(out.stdout.contains("\"send\": \"ok\""), "{out:?}");
    let close = d.wait_event("the process_close of the e2e-acme connection", |e| {
        e["type"] == "process_close"
            && e["process"]["pid"] == out.pid
            && e["connection"]["remote"]["port"] == 8081
    });
    assert_eq!(
        close["connection"]["sent"]["protocol"], "e2e-acme",
        "{close}"
    );
    assert_eq!(close["connection"]["sent"]["encrypted"], true, "{close}");

    let log = http.log();
    assert_eq!(log.requests_for("/k8s-monitor").len(), 1, "{log:?}");
    for p in ["/k8s-1", "/k8s-2", "/k8s-down"] {
        assert!(
            log.requests_for(p).is_empty(),
            "a blocked connect reached the server: {log:?}"
        );
    }
    eprintln!(
        "{}",
        srv.kubectl_ok(&["get", "policyviolations", "-A", "-o", "wide"], None)
    );

    // SIGTERM right after one more violation: a clean exit in Kubernetes mode too, and what
    // was pending is written before the daemon goes.
    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /k8s-last HTTP/1.0\r\n\r\n"]);
    assert_connected(&out);
    wait_match(&d, POLICY, "connect", out.pid, 8080);
    let st = d.stop();
    assert!(st.success(), "the daemon exited with {st}");
    let v = violation(&srv, "would_block").expect("the would_block violation");
    assert_eq!(
        count(&v),
        2,
        "the last violation was not written at shutdown: {v}"
    );
}

/// A declared encrypted protocol put in force at runtime (an `EncryptedProtocol` object)
/// reaches the kernel's egress verdict without a restart: before it, its first payload is
/// plaintext to an egress Block (EACCES); once the daemon has it, a new connection carrying it
/// passes while plaintext is still refused; deleted, it is plaintext again.
#[test]
fn kubernetes_declared_protocol_reaches_the_egress_verdict_at_runtime() {
    const ENC_POLICY: &str = "e2e-k8s-egress-enc";
    let _g = serial();
    let Some(kit) = Server::kit() else { return };
    let srv = Server::start(kit);
    let w = World::single("k8s-enc", NAMESPACE);
    let http = TestServer::start(&w.net, &[8082]);
    let target = format!("{}/32", w.net.server_v4);
    srv.install(
        &PolicyBuilder::new(ENC_POLICY)
            .rule(
                RuleBuilder::egress("no-plaintext")
                    .namespaces("In", &[NAMESPACE])
                    .destinations("In", &[&target], &["8082"], Some("TCP"))
                    .encryption("plaintext")
                    .action("Block"),
            )
            .yaml(),
    );
    let d = start_daemon(&srv, &w, &[]);
    d.wait_event("ready", |e| e["type"] == "status" && e["state"] == "ready");
    let ip = w.net.server_ip(false);
    let declared = |marker: &str| {
        let bytes = format!("ac3e01{marker}");
        let out = w.pod().probe(ip, 8082, &["--send-hex", &bytes]);
        (
            out.json()["send"].as_str().unwrap_or_default().to_string(),
            out,
        )
    };
    let diag = || d.diagnostics();

    // Not declared yet: plaintext, refused.
    let (send, out) = declared("00");
    assert_eq!(send, "EACCES", "{out}");
    let m = wait_match(&d, ENC_POLICY, "egress", out.pid, 8082);
    assert_eq!(m["encryption"], "plaintext", "{m}");

    srv.kubectl_ok(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: e2e-acme\nspec:\n  signature: \"ac 3e 01\"\n",
        ),
    );
    // Declared: a new connection carrying it passes once the daemon has put it in force.
    let out = poll(
        "the declared protocol to pass the egress verdict",
        &diag,
        || {
            let (send, out) = declared("11");
            (send == "ok").then_some(out)
        },
    );
    let arrived = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let log = http.log();
        log.data()
            .iter()
            .any(|r| r["first_bytes"] == "ac3e0111")
            .then_some(())
    });
    assert!(arrived.is_some(), "{:?}", http.log());
    d.sync();
    d.assert_no_event("a policy_match for the declared protocol", |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(out.pid as u64)
    });
    // Plaintext is still refused.
    let plain = w
        .pod()
        .probe(ip, 8082, &["--send", "GET /k8s-enc HTTP/1.0\r\n\r\n"]);
    assert_eq!(plain.json()["send"], "EACCES", "{plain}");
    assert!(http.log().requests_for("/k8s-enc").is_empty());

    // Deleted: plaintext again for new connections.
    srv.kubectl_ok(&["delete", "encryptedprotocol", "e2e-acme"], None);
    poll("the deleted protocol to be refused again", &diag, || {
        let (send, _) = declared("22");
        (send == "EACCES").then_some(())
    });
    let st = d.stop();
    assert!(st.success(), "the daemon exited with {st}");
}

/// The namespace of the `hook: file` / `hook: syscall` test's workload, and another one.
const FILE_NS: &str = "e2e-k8s-file";
const OTHER_NS: &str = "e2e-k8s-other";

/// This test's PolicyViolation of `policy` whose spec satisfies `pred`, from
/// `kubectl get policyviolations -A`.
fn violation_where(srv: &Server, policy: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let all = srv.get_json(&["get", "policyviolations", "-A"])?;
    all["items"]
        .as_array()?
        .iter()
        .find(|v| v["spec"]["policy"] == policy && pred(&v["spec"]))
        .cloned()
}

/// `hook: file` and `hook: syscall` through the API server, as an operator would use them: a
/// `TracingPolicyNamespaced` that kills a reader of a protected file (created by the test in
/// its own directory) and a cluster `TracingPolicy` that reports `ptrace` and kills `mount`
/// in that namespace. A process in the policies' namespace is killed (or reported), the same
/// in another namespace is not; each match becomes a PolicyViolation in the workload's
/// namespace that names the policy, rule, pod, binary and the file's path or the call, and
/// `kubectl get policyviolations` shows the hook and that target.
#[test]
fn kubernetes_file_and_syscall_policies_kill_report_and_write_violations() {
    const FILE_POLICY: &str = "e2e-k8s-file-guard";
    const SYSCALL_POLICY: &str = "e2e-k8s-syscalls";
    const SECRET: &str = "K8S-SECRET-51c0de\n";
    let _g = serial();
    let Some(kit) = Server::kit() else { return };
    let srv = Server::start(kit);
    let w = World::new(WorldConfig {
        tag: "k8s-file".into(),
        pods: vec![
            (FILE_NS.into(), "web".into()),
            (OTHER_NS.into(), "web".into()),
        ],
    });
    let (ours, theirs) = (&w.pods[0], &w.pods[1]);
    let vault = w.dir().join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    let secret = vault.join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let secret = secret.to_str().unwrap().to_string();

    // The namespaced file policy: its namespace is its only process condition.
    srv.install(&format!(
        "apiVersion: bulwark.dev/v1alpha1
kind: TracingPolicyNamespaced
metadata:
  name: {FILE_POLICY}
  namespace: {FILE_NS}
spec:
  rules:
    - name: no-secret-reads
      hook: file
      selectors:
        - matchPaths: [{{operator: In, values: [{secret}]}}]
          matchAccess: [{{operator: In, values: [read]}}]
          matchActions: [{{action: Sigkill}}]
"
    ));
    // The cluster syscall policy, confined to the namespace and to the helper (`ip netns
    // exec`, which starts every pod command, mounts and unshares itself).
    let in_ns = |rule: RuleBuilder| {
        rule.namespaces("In", &[FILE_NS])
            .binaries("In", &[crate::helper()])
    };
    srv.apply_policy(
        &PolicyBuilder::new(SYSCALL_POLICY)
            .rule(
                in_ns(RuleBuilder::syscall("report-ptrace").syscalls("In", &["ptrace"]))
                    .action("Post"),
            )
            .rule(
                in_ns(RuleBuilder::syscall("kill-mount").syscalls("In", &["mount"]))
                    .action("Sigkill"),
            )
            .yaml(),
    );

    let d = start_daemon(&srv, &w, &[]);
    let diag = || {
        let (_, tp, _) = srv.kubectl(
            &[
                "get",
                "tracingpolicies,tracingpoliciesnamespaced",
                "-A",
                "-o",
                "yaml",
            ],
            None,
        );
        let (_, pv, _) = srv.kubectl(&["get", "policyviolations", "-A", "-o", "yaml"], None);
        format!("{tp}\n{pv}\n{}", d.diagnostics())
    };
    let ready = d.wait_event("ready", |e| e["type"] == "status" && e["state"] == "ready");
    let namespaced = format!("{FILE_NS}/{FILE_POLICY}");
    assert_eq!(
        ready["policies"],
        serde_json::json!([namespaced, SYSCALL_POLICY]),
        "{ready}"
    );
    poll("the file policy Accepted, NODES 1/1", &diag, || {
        accepted_on_one_node_as(
            &srv,
            &["get", "tracingpolicynamespaced", FILE_POLICY, "-n", FILE_NS],
        )
    });
    poll("the syscall policy Accepted, NODES 1/1", &diag, || {
        accepted_on_one_node_as(&srv, &["get", "tracingpolicy", SYSCALL_POLICY])
    });

    // The file: read in the policy's namespace, the reader dies before a byte gets out.
    let cat = bulwark_e2e::preflight::which("cat").expect("cat");
    let cat = cat.to_str().unwrap();
    let out = ours.run(&[cat, &secret]);
    assert!(out.sigkilled(), "the reader should be SIGKILLed: {out}");
    assert!(
        !out.stdout.contains("K8S-SECRET"),
        "the secret got out: {out}"
    );
    let m = d.wait_event("the file policy_match", |e| {
        ev::is_match(e, FILE_POLICY, "file") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(m["outcome"], "killed", "{m}");
    assert_eq!(
        m["file"]["path"],
        secret.as_str(),
        "the match names the file it killed: {m}"
    );
    // In another namespace it is an ordinary read.
    let other = theirs.run(&[cat, &secret]);
    assert!(other.success() && other.stdout == SECRET, "{other}");

    let v = poll("the file PolicyViolation", &diag, || {
        violation_where(&srv, FILE_POLICY, |s| s["hook"] == "file")
    });
    assert_eq!(v["metadata"]["namespace"], FILE_NS, "{v}");
    let spec = &v["spec"];
    let expect = [
        ("policyKind", "TracingPolicyNamespaced"),
        ("policyNamespace", FILE_NS),
        ("rule", "no-secret-reads"),
        ("action", "Sigkill"),
        ("mode", "enforce"),
        ("outcome", "killed"),
        ("pod", "web"),
        ("container", "main"),
        ("node", "e2e"),
        ("target", secret.as_str()),
    ];
    for (field, want) in expect {
        assert_eq!(spec[field], want, "spec.{field}: {v}");
    }
    assert_eq!(spec["enforced"], true, "{v}");
    assert_eq!(spec["binary"], ev::binary(&m), "{v}");
    assert_eq!(spec["file"]["path"], secret.as_str(), "{v}");
    assert_eq!(spec["file"]["access"], serde_json::json!(["read"]), "{v}");
    assert_eq!(spec["file"]["syscall"], "openat", "{v}");
    assert!(spec.get("destination").is_none(), "{v}");
    // The Event tells the same story.
    poll("an Event regarding the file policy", &diag, || {
        let evs = srv.get_json(&["get", "events.events.k8s.io", "-A"])?;
        evs["items"]
            .as_array()?
            .iter()
            .find(|e| {
                e["regarding"]["name"] == FILE_POLICY
                    && e["regarding"]["namespace"] == FILE_NS
                    && e["reason"] == "ProcessKilled"
                    && e["note"].as_str().is_some_and(|n| n.contains(&secret))
            })
            .cloned()
    });

    // The system calls: ptrace reported (the call runs), mount killed at its entry.
    let (out, marker) = crate::run_syscall(&w, "ptrace", "ptrace-ran");
    assert!(
        out.success() && marker.exists(),
        "ptrace is only reported: {out}"
    );
    let reported = d.wait_event("the ptrace policy_match", |e| {
        ev::is_match(e, SYSCALL_POLICY, "syscall") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(reported["outcome"], "reported", "{reported}");
    assert_eq!(
        reported["syscall"]["name"], "ptrace",
        "the match names its call: {reported}"
    );
    assert!(reported["file"].is_null(), "{reported}");
    let (out, marker) = crate::run_syscall(&w, "mount", "mount-ran");
    assert!(
        out.sigkilled() && !marker.exists(),
        "mount should be killed at the call: {out}"
    );
    let killed = d.wait_event("the mount policy_match", |e| {
        ev::is_match(e, SYSCALL_POLICY, "syscall") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(killed["outcome"], "killed", "{killed}");
    assert_eq!(killed["syscall"]["name"], "mount", "{killed}");
    // The same calls in another namespace: neither killed nor reported.
    let mut spared = Vec::new();
    for call in ["ptrace", "mount"] {
        let marker = w.dir().join(format!("{call}-other"));
        let out = theirs.run(&[crate::helper(), "syscall", call, marker.to_str().unwrap()]);
        assert!(
            out.success() && marker.exists(),
            "{call} in {OTHER_NS}: {out}"
        );
        spared.push(out.pid as u64);
    }
    let other_read = other.pid as u64;
    let pv = |rule: &str, outcome: &str, call: &str| {
        let v = poll(&format!("the {rule} PolicyViolation"), &diag, || {
            violation_where(&srv, SYSCALL_POLICY, |s| s["rule"] == rule)
        });
        let spec = &v["spec"];
        assert_eq!(v["metadata"]["namespace"], FILE_NS, "{v}");
        assert_eq!(spec["policyKind"], "TracingPolicy", "{v}");
        assert!(spec.get("policyNamespace").is_none(), "{v}");
        assert_eq!(spec["hook"], "syscall", "{v}");
        assert_eq!(spec["outcome"], outcome, "{v}");
        assert_eq!(spec["pod"], "web", "{v}");
        assert_eq!(spec["binary"], crate::helper(), "{v}");
        assert_eq!(spec["syscall"]["name"], call, "{v}");
        assert_eq!(spec["syscall"]["abi"], std::env::consts::ARCH, "{v}");
        assert_eq!(spec["target"], call, "{v}");
        assert!(
            spec.get("file").is_none() && spec.get("destination").is_none(),
            "{v}"
        );
        v
    };
    pv("report-ptrace", "reported", "ptrace");
    pv("kill-mount", "killed", "mount");

    // Nothing of the other namespace: no match and no object.
    d.sync();
    d.assert_no_event("a policy_match in the other namespace", |e| {
        ev::is(e, "policy_match")
            && ev::pid(e).is_some_and(|p| p == other_read || spared.contains(&p))
    });
    let all = srv.get_json(&["get", "policyviolations", "-A"]).unwrap();
    let items = all["items"].as_array().unwrap();
    assert!(
        items.iter().all(|v| v["metadata"]["namespace"] == FILE_NS),
        "a PolicyViolation outside {FILE_NS}: {all}"
    );
    assert_eq!(items.len(), 3, "one object per violation: {all}");

    // What an operator reads: the hook and what each violation was about.
    let table = srv.kubectl_ok(&["get", "policyviolations", "-n", FILE_NS], None);
    let header = table.lines().next().unwrap_or_default();
    for col in [
        "POLICY", "HOOK", "OUTCOME", "POD", "BINARY", "TARGET", "COUNT",
    ] {
        assert!(header.contains(col), "column {col} missing:\n{table}");
    }
    let row = |words: &[&str]| {
        assert!(
            table.lines().any(|l| words.iter().all(|w| l.contains(w))),
            "no row with {words:?}:\n{table}"
        );
    };
    row(&[FILE_POLICY, "file", "killed", &secret]);
    row(&[SYSCALL_POLICY, "syscall", "reported", "ptrace"]);
    row(&[SYSCALL_POLICY, "syscall", "killed", "mount"]);
    eprintln!("{table}");
    let st = d.stop();
    assert!(st.success(), "the daemon exited with {st}");
}
