//! egress hook: plaintext to a server in the other namespace is blocked from the first payload
//! (the send fails, the server receives nothing), TLS to the very same server and port works,
//! and after the handshake application data keeps flowing (a large body, then a second request
//! on the same connection). IPv4 and IPv6.

use crate::wait_match;
use bulwark_e2e::daemon::ev;
use bulwark_e2e::netns::url;
use bulwark_e2e::{serial, Daemon, PolicyBuilder, RuleBuilder, TestServer, World};

fn plaintext_blocked_tls_flows(v6: bool) {
    let _g = serial();
    let w = World::single(if v6 { "egress-v6" } else { "egress-v4" }, "e2e-egress");
    let srv = TestServer::start(&w.net, &[8080, 9090]);
    let (c4, c6) = (w.net.v4_cidr(), w.net.v6_cidr());
    let policy = PolicyBuilder::new("e2e-no-plaintext")
        .rule(
            RuleBuilder::egress("no-plaintext")
                .namespaces("In", &["e2e-egress"])
                .destinations("In", &[&c4, &c6], &["8080"], Some("TCP"))
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("egress.yaml", &policy)]);
    let ip = w.net.server_ip(v6);

    // curl http:// is refused and the server got not a single byte.
    let out = w.pod().curl(&[&url("http", ip, 8080, "/plain")]);
    assert!(!out.success(), "plaintext HTTP should fail: {out}");
    let m = wait_match(&d, "e2e-no-plaintext", "egress", out.pid, 8080);
    assert_eq!(m["outcome"], "blocked", "{m}");
    assert_eq!(m["enforced"], true, "{m}");
    assert_eq!(m["encryption"], "plaintext", "{m}");
    assert_eq!(ev::dest(&m).0, ip.to_string(), "{m}");
    // A raw socket: connect works (the egress hook is not connect), the first send is refused.
    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /raw HTTP/1.0\r\n\r\n"]);
    assert_eq!(out.json()["connect"], "ok", "{out}");
    assert_eq!(
        out.json()["send"],
        "EACCES",
        "the plaintext send should fail with EACCES: {out}"
    );
    let log = srv.log();
    assert!(
        log.received_nothing(),
        "the server received plaintext that should have been blocked: {log:?}"
    );
    assert!(
        !log.accepts().is_empty(),
        "the TCP connections were established: {log:?}"
    );

    // TLS to the same server and port works: a 1 MB body, then a second request on the same
    // connection (curl reuses it: num_connects 1 then 0).
    let big = url("https", ip, 8080, "/bytes/1048576");
    let second = url("https", ip, 8080, "/bytes/200000");
    let out = w.pod().curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{num_connects}\n",
        &big,
        &second,
    ]);
    assert!(out.success(), "HTTPS to the same port should work: {out}");
    assert_eq!(out.stdout, "1048576 1\n200000 0\n", "{out}");
    let log = srv.log();
    let r1 = log.requests_for("/bytes/1048576");
    let r2 = log.requests_for("/bytes/200000");
    assert_eq!((r1.len(), r2.len()), (1, 1), "{log:?}");
    assert_eq!(r1[0]["tls"], true);
    assert_eq!(
        r1[0]["conn"], r2[0]["conn"],
        "both requests on one TLS connection"
    );
    // Client-to-server data keeps flowing too (the egress hook's direction): two 1 MB uploads
    // on one TLS connection, every byte counted by the server.
    let upload = w.dir().join("upload.bin");
    std::fs::write(&upload, vec![b'u'; 1 << 20]).unwrap();
    let data = format!("@{}", upload.display());
    let up = url("https", ip, 8080, "/upload");
    let out2 = w.pod().curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects}\n",
        "--data-binary",
        &data,
        &up,
        // --next: a second transfer with its own options, reusing the connection.
        "--next",
        "-sS",
        "-k",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects}\n",
        "--data-binary",
        &data,
        &up,
    ]);
    assert!(out2.success(), "TLS uploads should work: {out2}");
    assert_eq!(
        out2.stdout, "1\n0\n",
        "both uploads on one connection: {out2}"
    );
    let log = srv.log();
    let ups = log.requests_for("/upload");
    assert_eq!(ups.len(), 2, "{log:?}");
    assert!(
        ups.iter()
            .all(|r| r["body_len"] == 1 << 20 && r["tls"] == true),
        "{ups:?}"
    );
    assert_eq!(ups[0]["conn"], ups[1]["conn"]);
    d.assert_no_event("policy_match for the TLS client", |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(out.pid as u64)
    });

    // Plaintext to a port outside the rule still works.
    let out = w.pod().curl(&[&url("http", ip, 9090, "/other-port")]);
    assert!(
        out.success(),
        "plaintext to port 9090 is not in the rule: {out}"
    );
    assert_eq!(srv.log().requests_for("/other-port").len(), 1);
}

#[test]
fn egress_plaintext_blocked_tls_flows_v4() {
    plaintext_blocked_tls_flows(false);
}

#[test]
fn egress_plaintext_blocked_tls_flows_v6() {
    plaintext_blocked_tls_flows(true);
}

#[test]
fn egress_tls_session_with_openssl_s_client() {
    let _g = serial();
    let w = World::single("egress-sclient", "e2e-egress");
    let srv = TestServer::start(&w.net, &[8443]);
    let c4 = w.net.v4_cidr();
    let policy = PolicyBuilder::new("e2e-no-plaintext-sclient")
        .rule(
            RuleBuilder::egress("no-plaintext")
                .namespaces("In", &["e2e-egress"])
                .destinations("In", &[&c4], &["8443"], None)
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("egress.yaml", &policy)]);
    let openssl = bulwark_e2e::preflight()
        .openssl
        .to_str()
        .unwrap()
        .to_string();
    let connect = format!("{}:8443", w.net.server_v4);
    // Two requests typed into one s_client session after the handshake.
    let script = format!(
        "printf 'GET /one HTTP/1.1\\r\\nHost: x\\r\\n\\r\\nGET /two HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n' \
         | {openssl} s_client -quiet -connect {connect} 2>/dev/null"
    );
    let out = w.pod().run(&["sh", "-c", &script]);
    assert!(
        out.stdout.contains("ok /one") && out.stdout.contains("ok /two"),
        "{out}"
    );
    // The policy is in force on that very port: plaintext is refused.
    let plain = w
        .pod()
        .curl(&[&url("http", w.net.server_ip(false), 8443, "/plain")]);
    assert!(
        !plain.success(),
        "plaintext to 8443 should be blocked: {plain}"
    );
    crate::wait_match(&d, "e2e-no-plaintext-sclient", "egress", plain.pid, 8443);
    assert!(srv.log().requests_for("/plain").is_empty());
    let log = srv.log();
    let (one, two) = (log.requests_for("/one"), log.requests_for("/two"));
    assert_eq!((one.len(), two.len()), (1, 1), "{log:?}");
    assert_eq!(
        one[0]["conn"], two[0]["conn"],
        "one TLS session carried both requests"
    );
}

/// The classifier in both directions and process selectors on the egress hook: a rule that
/// blocks *TLS* on one port lets plaintext through there, and a plaintext rule scoped to curl
/// blocks curl but not another binary sending the same bytes to the same port.
#[test]
fn egress_tls_rule_and_binary_scoped_plaintext_rule() {
    let _g = serial();
    let w = World::single("egress-scope", "e2e-egress");
    let srv = TestServer::start(&w.net, &[8443, 9090]);
    let c4 = w.net.v4_cidr();
    let curl = bulwark_e2e::preflight().curl.display().to_string();
    let policy = PolicyBuilder::new("e2e-egress-scope")
        .rule(
            RuleBuilder::egress("no-tls-on-8443")
                .namespaces("In", &["e2e-egress"])
                .destinations("In", &[&c4], &["8443"], None)
                .encryption("tls")
                .action("Block"),
        )
        .rule(
            RuleBuilder::egress("curl-no-plaintext-9090")
                .namespaces("In", &["e2e-egress"])
                .binaries("In", &[&curl])
                .destinations("In", &[&c4], &["9090"], None)
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("scope.yaml", &policy)]);
    let ip = w.net.server_ip(false);

    let out = w.pod().curl(&["-k", &url("https", ip, 8443, "/tls-8443")]);
    assert!(!out.success(), "TLS to 8443 should be blocked: {out}");
    let m = wait_match(&d, "e2e-egress-scope", "egress", out.pid, 8443);
    assert_eq!(
        (m["encryption"].as_str(), m["rule"].as_str()),
        (Some("tls"), Some("no-tls-on-8443")),
        "{m}"
    );
    assert!(
        srv.log().data_to(&ip.to_string()).is_empty(),
        "a blocked ClientHello arrived: {:?}",
        srv.log()
    );
    let out = w.pod().curl(&[&url("http", ip, 8443, "/plain-8443")]);
    assert!(
        out.success(),
        "plaintext to 8443 is not in the TLS rule: {out}"
    );

    let out = w.pod().curl(&[&url("http", ip, 9090, "/curl-9090")]);
    assert!(
        !out.success(),
        "curl's plaintext to 9090 should be blocked: {out}"
    );
    wait_match(&d, "e2e-egress-scope", "egress", out.pid, 9090);
    let out = w
        .pod()
        .probe(ip, 9090, &["--send", "GET /python-9090 HTTP/1.0\r\n\r\n"]);
    assert!(out.success(), "python is not curl: {out}");
    let log = srv.log();
    assert!(log.requests_for("/curl-9090").is_empty(), "{log:?}");
    assert_eq!(log.requests_for("/python-9090").len(), 1, "{log:?}");
    assert_eq!(log.requests_for("/plain-8443").len(), 1, "{log:?}");
}

/// Only sockets a policy could act on pay for the egress path: a connection enters the
/// daemon's SOCKHASH only when its destination matches an egress rule — whoever connected it,
/// because a socket can be handed to a process in the rule's scope (fork, SCM_RIGHTS, exec) and
/// the process that sends decides — and leaves it once its stream is classified TLS. Read with
/// bpftool from the map the daemon holds (found through /proc/PID/fdinfo, so other bulwark
/// instances do not interfere).
#[test]
fn egress_sockhash_holds_only_sockets_a_policy_can_act_on() {
    let _g = serial();
    let w = World::new(bulwark_e2e::WorldConfig {
        tag: "sockhash".into(),
        pods: vec![
            ("e2e-sh-a".into(), "a".into()),
            ("e2e-sh-b".into(), "b".into()),
        ],
    });
    let _srv = TestServer::start(&w.net, &[8080, 9090]);
    let c4 = w.net.v4_cidr();
    let policy = PolicyBuilder::new("e2e-sockhash")
        .rule(
            RuleBuilder::egress("a-no-plaintext-8080")
                .namespaces("In", &["e2e-sh-a"])
                .destinations("In", &[&c4], &["8080"], None)
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("sockhash.yaml", &policy)]);
    let map_id = sockhash_id(&d);
    let ip = w.net.server_ip(false);
    let (a, b) = (&w.pods[0], &w.pods[1]);
    let hold = |pod: &bulwark_e2e::Pod, port: u16, extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend_from_slice(&["--hold", "20"]);
        let argv = pod.probe_argv(ip, port, &args);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let r = pod.spawn(&refs);
        let up = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
            r.stdout_so_far()
                .contains("\"connect\": \"ok\"")
                .then_some(())
        });
        assert!(
            up.is_some(),
            "the held connection did not come up: {}",
            r.stdout_so_far()
        );
        r
    };
    // sock_ops adds a socket to the SOCKHASH while its handshake completes, before connect()
    // returns to the probe: once the probe says "connect ok", the map says all it will.

    // Not actionable: a destination no rule names.
    let _a9090 = hold(a, 9090, &[]);
    assert_eq!(
        sockhash_entries(map_id),
        0,
        "a socket to an unwatched destination entered the SOCKHASH"
    );
    // The watched destination, connected by a process outside the rule's scope: watched.
    let _b = hold(b, 8080, &[]);
    assert_eq!(
        sockhash_entries(map_id),
        1,
        "a socket to the watched destination is watched whoever connected it"
    );
    // Actionable and not yet classified: watched.
    let waiting = hold(a, 8080, &[]);
    assert_eq!(
        sockhash_entries(map_id),
        2,
        "the matching socket is not watched"
    );
    drop(waiting);
    let gone = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        (sockhash_entries(map_id) == 1).then_some(())
    });
    assert!(gone.is_some(), "a closed socket stayed in the SOCKHASH");
    // Classified TLS (allowed): leaves the SOCKHASH while the connection stays open.
    let _tls = hold(a, 8080, &["--tls-record"]);
    let left = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        (sockhash_entries(map_id) == 1).then_some(())
    });
    assert!(
        left.is_some(),
        "a socket classified as TLS stayed in the SOCKHASH"
    );
}

fn bpftool(args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(&bulwark_e2e::preflight().bpftool)
        .arg("-j")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run bpftool (install it: apt-get install bpftool): {e}")
        });
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bpftool {args:?} output: {e}"))
}

pub(crate) fn sockhash_id(d: &Daemon) -> u32 {
    let ids = d.map_ids();
    let maps = bpftool(&["map", "show"]);
    maps.as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"] == "sockhash")
        .filter_map(|m| m["id"].as_u64())
        .map(|id| id as u32)
        .find(|id| ids.contains(id))
        .unwrap_or_else(|| panic!("the daemon holds no sockhash map (its maps: {ids:?})"))
}

pub(crate) fn sockhash_entries(id: u32) -> usize {
    let v = bpftool(&["map", "dump", "id", &id.to_string()]);
    v.as_array().map(Vec::len).unwrap_or(0)
}
