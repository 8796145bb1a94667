//! The plaintext-egress rule against a workload that tries to walk around it (issue 9): TCP
//! Fast Open, MPTCP, TLS look-alikes, sockets passed to a process in scope or connected before
//! the policy, a send racing the handshake, and full maps. Each attack runs as real processes
//! in the test pod; the server logs every byte it receives, and the tests assert that nothing
//! of the plaintext reached it and what the daemon reported.

use bulwark_e2e::daemon::ev;
use bulwark_e2e::netns::url;
use bulwark_e2e::{
    host_cmd, poll_until, serial, timeout, Daemon, DaemonConfig, Event, Pod, PolicyBuilder,
    RuleBuilder, Running, ServerLog, TestServer, World, WorldConfig,
};
use serde_json::Value;

/// Enforce-mode rule: no plaintext from namespace `ns` to the test subnet on `port`.
fn no_plaintext(name: &str, ns: &str, port: &str) -> String {
    PolicyBuilder::new(name)
        .rule(
            RuleBuilder::egress("no-plaintext")
                .namespaces("In", &[ns])
                .destinations("In", &["10.199.0.0/16", "fd99::/16"], &[port], Some("TCP"))
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml()
}

/// Every JSON line the probe printed so far.
pub(crate) fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect()
}

/// Starts the probe in `pod` and waits until it printed its first line (connected, paused).
pub(crate) fn spawn_until_line(pod: &Pod, argv: Vec<String>) -> Running {
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let r = pod.spawn(&refs);
    let up = poll_until(timeout(), || {
        (!lines(&r.stdout_so_far()).is_empty()).then_some(())
    });
    assert!(
        up.is_some(),
        "the probe printed nothing: {}",
        r.stdout_so_far()
    );
    r
}

/// No payload record and no request of the server contains `marker`.
pub(crate) fn assert_server_never_saw(log: &ServerLog, marker: &str) {
    let hex: String = marker.bytes().map(|b| format!("{b:02x}")).collect();
    let seen: Vec<&Value> = log
        .records
        .iter()
        .filter(|r| {
            r["path"].as_str().is_some_and(|p| p.contains(marker))
                || r["first_bytes"].as_str().is_some_and(|b| b.contains(&hex))
        })
        .collect();
    assert!(
        seen.is_empty(),
        "the server received {marker:?}, which should have been blocked: {seen:?}"
    );
}

/// The policy_match of `policy` for process `pid` with reason `reason`.
fn wait_reason(d: &Daemon, policy: &str, pid: u32, reason: &str) -> Event {
    d.wait_event(
        &format!("policy_match of {policy} for pid {pid} with reason {reason}"),
        |e| {
            ev::is_match(e, policy, "egress")
                && ev::pid(e) == Some(pid as u64)
                && e["reason"] == reason
        },
    )
}

/// The probe's request was refused on the wire: never answered, reported (reason
/// unseen_payload, blocked), nothing of it at the server.
fn assert_refused_on_the_wire(
    d: &Daemon,
    policy: &str,
    out: &bulwark_e2e::RunOutput,
    srv: &TestServer,
    marker: &str,
) {
    assert!(!out.success(), "the request must not be answered: {out}");
    let m = wait_reason(d, policy, out.pid, "unseen_payload");
    assert_eq!(m["outcome"], "blocked", "{m}");
    assert_server_never_saw(&srv.log(), marker);
}

fn sysctl_in(netns: &str, setting: &str) {
    host_cmd("ip", &["netns", "exec", netns, "sysctl", "-qw", setting]);
}

/// TCP Fast Open delivers the first write in the SYN, where sk_msg never sees it: refused
/// (connect EPERM, reason tcp_fast_open) for a process in scope — `sendto(MSG_FASTOPEN)`,
/// `TCP_FASTOPEN_CONNECT` and `curl --tcp-fastopen` with a cached cookie — while a process
/// outside the scope keeps it.
#[test]
fn tcp_fast_open_is_refused_in_scope() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "tfo".into(),
        pods: vec![
            ("e2e-tfo".into(), "in".into()),
            ("e2e-tfo-out".into(), "out".into()),
        ],
    });
    sysctl_in(&w.net.pod, "net.ipv4.tcp_fastopen=3");
    sysctl_in(&w.net.server, "net.ipv4.tcp_fastopen=3");
    let srv = TestServer::start(&w.net, &[8080]);
    let policy = no_plaintext("e2e-tfo", "e2e-tfo", "8080");
    let d = Daemon::start(&w, &[("tfo.yaml", &policy)]);
    let ip = w.net.server_ip(false);
    let (inside, outside) = (&w.pods[0], &w.pods[1]);
    // Out of scope: Fast Open works (and caches a cookie for this server in the netns).
    for path in ["/warm-1", "/warm-2"] {
        let req = format!("GET {path} HTTP/1.0\r\n\r\n");
        let out = outside.probe(ip, 8080, &["--tfo-sendto", "--send", &req]);
        assert_eq!(out.json()["connect"], "ok", "out of scope: {out}");
    }
    let warm = poll_until(timeout(), || {
        (srv.log().requests_for("/warm-2").len() == 1).then_some(())
    });
    assert!(warm.is_some(), "{:?}", srv.log());

    let out = inside.curl(&["--tcp-fastopen", &url("http", ip, 8080, "/tfo-curl")]);
    assert!(
        !out.success(),
        "curl --tcp-fastopen in scope must fail: {out}"
    );
    let m = wait_reason(&d, "e2e-tfo", out.pid, "tcp_fast_open");
    assert_eq!(
        (m["outcome"].as_str(), m["encryption"].as_str()),
        (Some("blocked"), None),
        "{m}"
    );
    for flag in ["--tfo-sendto", "--tfo-connect"] {
        let req = format!("GET /tfo{flag} HTTP/1.0\r\n\r\n");
        let out = inside.probe(ip, 8080, &[flag, "--send", &req]);
        assert_eq!(out.json()["connect"], "EPERM", "{flag}: {out}");
        wait_reason(&d, "e2e-tfo", out.pid, "tcp_fast_open");
    }
    let log = srv.log();
    for marker in ["/tfo-curl", "/tfo--tfo-sendto", "/tfo--tfo-connect"] {
        assert_server_never_saw(&log, marker);
    }
}

/// An MPTCP socket sends through its subflows, never through sk_msg. A process in the rule's
/// scope cannot make one (the socket guard: `socket()` EPERM, reason mptcp); one made by a
/// process outside the scope has whatever it sends to a watched destination refused on the
/// wire (the backstop: reason unseen_payload), also when the peer is plain TCP and the
/// connection falls back.
#[test]
fn mptcp_is_refused_in_scope_and_by_the_backstop_outside_it() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "mptcp".into(),
        pods: vec![
            ("e2e-mptcp".into(), "in".into()),
            ("e2e-mptcp-out".into(), "out".into()),
        ],
    });
    let srv = TestServer::start(&w.net, &[8080]);
    let policy = no_plaintext("e2e-mptcp", "e2e-mptcp", "8080");
    let d = Daemon::start(&w, &[("mptcp.yaml", &policy)]);
    let ip = w.net.server_ip(false);
    let (inside, outside) = (&w.pods[0], &w.pods[1]);

    let refused = inside.probe(
        ip,
        8080,
        &["--mptcp", "--send", "GET /mptcp-in HTTP/1.0\r\n\r\n"],
    );
    assert!(
        refused.stderr.contains("Operation not permitted"),
        "an MPTCP socket in scope must be refused at socket(): {refused}"
    );
    let m = d.wait_event(
        &format!("the socket guard's mptcp match for pid {}", refused.pid),
        |e| {
            ev::is(e, "policy_match")
                && e["policy_name"] == "e2e-mptcp"
                && ev::pid(e) == Some(refused.pid as u64)
                && e["reason"] == "mptcp"
        },
    );
    assert_eq!(m["outcome"], "blocked", "{m}");

    let out = outside.probe(
        ip,
        8080,
        &["--mptcp", "--send", "GET /mptcp-out HTTP/1.0\r\n\r\n"],
    );
    assert_eq!(
        out.json()["connect"],
        "ok",
        "out of scope, MPTCP connects: {out}"
    );
    assert_refused_on_the_wire(&d, "e2e-mptcp", &out, &srv, "/mptcp-out");
    assert_server_never_saw(&srv.log(), "/mptcp-in");
}

/// A TLS verdict needs a well-formed ClientHello and well-formed records after it: a record
/// header followed by HTTP, a record version 0x0304, and HTTP after a valid hello are all
/// plaintext (EACCES, nothing of the HTTP reaches the server).
#[test]
fn tls_look_alikes_are_plaintext() {
    let _g = serial();
    let w = World::single("lookalike", "e2e-lookalike");
    let srv = TestServer::start(&w.net, &[8443]);
    let policy = no_plaintext("e2e-lookalike", "e2e-lookalike", "8443");
    let d = Daemon::start(&w, &[("lookalike.yaml", &policy)]);
    let ip = w.net.server_ip(false);
    let hex = |s: &str| -> String { s.bytes().map(|b| format!("{b:02x}")).collect() };
    let header_then_http = format!("160301{}", hex("GET /look-1 HTTP/1.0\r\n\r\n"));
    let v0304 = format!("16030400{}", hex("GET /look-2 HTTP/1.0\r\n\r\n"));
    for (what, bytes) in [("header + HTTP", header_then_http), ("0x0304", v0304)] {
        let out = w.pod().probe(ip, 8443, &["--send-hex", &bytes]);
        assert_eq!(out.json()["send"], "EACCES", "{what}: {out}");
        let m = crate::wait_match(&d, "e2e-lookalike", "egress", out.pid, 8443);
        assert_eq!(m["encryption"], "plaintext", "{what}: {m}");
    }
    let out = w
        .pod()
        .probe(ip, 8443, &["--hello-then", "GET /look-3 HTTP/1.0\r\n\r\n"]);
    assert_eq!(
        (out.json()["hello"].as_str(), out.json()["send"].as_str()),
        (Some("ok"), Some("EACCES")),
        "a valid hello passes, the HTTP after it does not: {out}"
    );
    let log = srv.log();
    for marker in ["/look-1", "/look-2", "/look-3"] {
        assert_server_never_saw(&log, marker);
    }
    assert!(log.requests().is_empty(), "{log:?}");
}

/// Real TLS clients (curl, python's ssl, gnutls-cli, openssl s_client) still work through the
/// strict verdict, and their sockets leave the watch once classified.
#[test]
fn real_tls_clients_work_and_leave_the_watch() {
    let _g = serial();
    let w = World::single("realtls", "e2e-realtls");
    let srv = TestServer::start(&w.net, &[8443]);
    let policy = no_plaintext("e2e-realtls", "e2e-realtls", "8443");
    let d = Daemon::start(&w, &[("realtls.yaml", &policy)]);
    let map_id = crate::egress::sockhash_id(&d);
    let ip = w.net.server_ip(false);
    let tools = bulwark_e2e::preflight();
    let request = |path: &str| {
        format!("printf 'GET {path} HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'")
    };
    let out = w.pod().curl(&["-k", &url("https", ip, 8443, "/curl-tls")]);
    assert!(out.stdout.contains("ok /curl-tls"), "curl: {out}");
    let py = format!(
        "import socket, ssl\n\
         c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
         s = c.wrap_socket(socket.create_connection(('{ip}', 8443)))\n\
         s.sendall(b'GET /python-tls HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         while b'ok /' not in data:\n\
         \x20   chunk = s.recv(4096)\n\
         \x20   if not chunk: break\n\
         \x20   data += chunk\n\
         print(data.decode())\n"
    );
    let python = tools.python3.display().to_string();
    let out = w.pod().run(&[&python, "-c", &py]);
    assert!(out.stdout.contains("ok /python-tls"), "python ssl: {out}");
    // gnutls-cli ends the session when its input ends: keep the input open until the answer
    // is in (the harness's timeout ends it otherwise).
    let answer = w.dir().join("gnutls.out");
    let gnutls = format!(
        "({}; until grep -q 'ok /gnutls-tls' {out}; do sleep 0.05; done) \
         | gnutls-cli --insecure --logfile=/dev/null -p 8443 {ip} > {out}; cat {out}",
        request("/gnutls-tls"),
        out = answer.display()
    );
    let out = w.pod().run(&["sh", "-c", &gnutls]);
    assert!(out.stdout.contains("ok /gnutls-tls"), "gnutls-cli: {out}");
    let openssl = format!(
        "{} | {} s_client -quiet -connect {ip}:8443 2>/dev/null",
        request("/openssl-tls"),
        tools.openssl.display()
    );
    let out = w.pod().run(&["sh", "-c", &openssl]);
    assert!(
        out.stdout.contains("ok /openssl-tls"),
        "openssl s_client: {out}"
    );
    let log = srv.log();
    for path in ["/curl-tls", "/python-tls", "/gnutls-tls", "/openssl-tls"] {
        let r = log.requests_for(path);
        assert_eq!(r.len(), 1, "{path}: {log:?}");
        assert_eq!(r[0]["tls"], true, "{path}");
    }
    d.assert_no_event("policy_match for a TLS client", |e| {
        ev::is_match(e, "e2e-realtls", "egress")
    });
    // A TLS session held open: classified, then released from the SOCKHASH.
    let argv = w
        .pod()
        .probe_argv(ip, 8443, &["--tls-record", "--hold", "20"]);
    let _held = spawn_until_line(w.pod(), argv);
    let left = poll_until(timeout(), || {
        (crate::egress::sockhash_entries(map_id) == 0).then_some(())
    });
    assert!(
        left.is_some(),
        "a classified TLS socket stayed in the SOCKHASH"
    );
}

/// A socket connected by a process outside the scope is watched all the same (by its
/// destination): that process may send, but once it passes the socket (SCM_RIGHTS) to a
/// process in scope, or execs into a binary in scope, the plaintext is refused.
#[test]
fn a_socket_passed_into_scope_is_refused() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "passfd".into(),
        pods: vec![
            ("e2e-pass-in".into(), "in".into()),
            ("e2e-pass-out".into(), "out".into()),
        ],
    });
    let srv = TestServer::start(&w.net, &[8080]);
    let inscope_sh = w.install_binary(std::path::Path::new("/bin/sh"), "bin/inscope-sh");
    let sh = inscope_sh.display().to_string();
    let policy = PolicyBuilder::new("e2e-passfd")
        .rule(
            RuleBuilder::egress("no-plaintext")
                .namespaces("In", &["e2e-pass-in"])
                .destinations("In", &["10.199.0.0/16"], &["8080"], Some("TCP"))
                .encryption("plaintext")
                .action("Block")
                .or()
                .binaries("In", &[&sh])
                .destinations("In", &["10.199.0.0/16"], &["8080"], Some("TCP"))
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("passfd.yaml", &policy)]);
    let ip = w.net.server_ip(false);
    let (inside, outside) = (&w.pods[0], &w.pods[1]);

    // SCM_RIGHTS from the out-of-scope pod to the in-scope one.
    let path = w.dir().join("pass.sock");
    let path_s = path.display().to_string();
    let receiver_argv = inside.probe_argv(
        ip,
        8080,
        &[
            "--recv-fd",
            &path_s,
            "--send",
            "GET /passed-in HTTP/1.0\r\n\r\n",
        ],
    );
    let refs: Vec<&str> = receiver_argv.iter().map(String::as_str).collect();
    let receiver = inside.spawn(&refs);
    let sender = outside.probe(
        ip,
        8080,
        &[
            "--send",
            "GET /outside HTTP/1.1\r\nHost: x\r\n\r\n",
            "--pass-fd",
            &path_s,
        ],
    );
    assert_eq!(sender.json()["passed"], "ok", "{sender}");
    let receiver_pid = receiver.pid();
    let got = receiver.wait(timeout());
    assert_eq!(got.json()["send"], "EACCES", "the in-scope sender: {got}");
    crate::wait_match(&d, "e2e-passfd", "egress", receiver_pid, 8080);
    // Across exec: python (out of scope) connects and sends, then execs the in-scope shell
    // with the socket as fd 3.
    let script = "printf 'GET /exec-in HTTP/1.0\\r\\n\\r\\n' >&3; echo rc=$?";
    let out = outside.probe(
        ip,
        8080,
        &[
            "--send",
            "GET /before-exec HTTP/1.1\r\nHost: x\r\n\r\n",
            "--exec-with-fd",
            &sh,
            "-c",
            script,
        ],
    );
    assert!(
        out.stdout.contains("rc=") && !out.stdout.contains("rc=0"),
        "the in-scope shell's write must fail: {out}"
    );
    crate::wait_match(&d, "e2e-passfd", "egress", out.pid, 8080);
    let log = srv.log();
    assert_eq!(log.requests_for("/outside").len(), 1, "{log:?}");
    assert_eq!(log.requests_for("/before-exec").len(), 1, "{log:?}");
    assert_server_never_saw(&log, "/passed-in");
    assert_server_never_saw(&log, "/exec-in");
}

/// Connections older than the daemon or the policy: one that never sent a byte is watched
/// once the policy applies (its plaintext is refused); one that already sent bytes is
/// destroyed and reported (reason existing_connection, encryption null).
#[test]
fn connections_older_than_the_policy_are_watched_or_destroyed() {
    let _g = serial();
    let w = World::single("older", "e2e-older");
    let srv = TestServer::start(&w.net, &[8080]);
    let ip = w.net.server_ip(false);
    let go = w.dir().join("go");
    let go_s = go.display().to_string();
    // Connected before the daemon runs, nothing sent yet.
    let quiet = spawn_until_line(
        w.pod(),
        w.pod().probe_argv(
            ip,
            8080,
            &[
                "--pause-file",
                &go_s,
                "--send-after",
                "GET /before-daemon HTTP/1.0\r\n\r\n",
            ],
        ),
    );
    let policy = no_plaintext("e2e-older", "e2e-older", "8080");
    let d = Daemon::start(&w, &[("older.yaml", &policy)]);
    // Connected and talking while no policy watches the destination.
    d.replace_policy(
        "older.yaml",
        &no_plaintext("e2e-older", "e2e-older", "9999"),
    );
    let go2 = w.dir().join("go2");
    let go2_s = go2.display().to_string();
    let talking = spawn_until_line(
        w.pod(),
        w.pod().probe_argv(
            ip,
            8080,
            &[
                "--send",
                "GET /early HTTP/1.1\r\nHost: x\r\n\r\n",
                "--pause-file",
                &go2_s,
                "--send-after",
                "GET /late HTTP/1.1\r\nHost: x\r\n\r\n",
            ],
        ),
    );
    let early = poll_until(timeout(), || {
        (srv.log().requests_for("/early").len() == 1).then_some(())
    });
    assert!(early.is_some(), "{:?}", srv.log());
    d.replace_policy("older.yaml", &policy);
    let m = wait_reason(&d, "e2e-older", talking.pid(), "existing_connection");
    assert_eq!(
        (m["outcome"].as_str(), m["encryption"].as_str()),
        (Some("blocked"), None),
        "{m}"
    );
    std::fs::write(&go, "").unwrap();
    std::fs::write(&go2, "").unwrap();
    let quiet_pid = quiet.pid();
    let q = quiet.wait(timeout());
    assert_eq!(
        lines(&q.stdout).last().map(|l| l["send_after"].clone()),
        Some(Value::from("EACCES")),
        "the connection from before the daemon is watched: {q}"
    );
    crate::wait_match(&d, "e2e-older", "egress", quiet_pid, 8080);
    let t = talking.wait(timeout());
    let after = lines(&t.stdout).last().map(|l| l["send_after"].clone());
    assert!(
        after.as_ref().is_some_and(|v| v != "ok"),
        "the destroyed connection still sent: {t}"
    );
    let log = srv.log();
    assert_server_never_saw(&log, "/before-daemon");
    assert_server_never_saw(&log, "/late");
}

/// A blocking send on a socket whose handshake is still in progress enters TCP before the
/// socket is watched and never reaches sk_msg: the backstop refuses it on the wire, reports it
/// (unseen_payload) and the connection is destroyed. The server's link is down while the
/// probe starts, so its SYN is retransmitted and the send surely waits for the handshake.
#[test]
fn a_send_racing_the_handshake_is_refused_on_the_wire() {
    let _g = serial();
    let w = World::single("race", "e2e-race");
    let srv = TestServer::start(&w.net, &[8080]);
    let policy = no_plaintext("e2e-race", "e2e-race", "8080");
    let d = Daemon::start(&w, &[("race.yaml", &policy)]);
    let ip = w.net.server_ip(false);
    host_cmd("ip", &["-n", &w.net.server, "link", "set", "eth0", "down"]);
    let probe = spawn_until_line(
        w.pod(),
        w.pod().probe_argv(
            ip,
            8080,
            &["--race-send", "--send", "GET /race HTTP/1.0\r\n\r\n"],
        ),
    );
    host_cmd("ip", &["-n", &w.net.server, "link", "set", "eth0", "up"]);
    let out = probe.wait(timeout());
    assert_refused_on_the_wire(&d, "e2e-race", &out, &srv, "/race");
}

/// Full maps fail closed: with room for 8 watched sockets, 8 idle watched connections fill the
/// SOCKHASH and a 9th plaintext connection is still refused (on the wire), and the status
/// event warns; with a process map smaller than the host's processes, a process in scope of
/// an enforce-mode connect rule is killed at exec (reason capacity).
#[test]
fn full_maps_fail_closed_and_warn() {
    let _g = serial();
    let w = World::single("capacity", "e2e-capacity");
    let srv = TestServer::start(&w.net, &[8080]);
    let ip = w.net.server_ip(false);
    let policy = no_plaintext("e2e-capacity", "e2e-capacity", "8080");
    let d = Daemon::start_with(DaemonConfig {
        policies: vec![("capacity.yaml".into(), policy)],
        workloads: w.workloads_yaml(),
        extra_args: vec!["--max-watched-sockets".into(), "8".into()],
        kubernetes: false,
        skip_lines_containing: None,
    });
    let out = w.pod().probe(
        ip,
        8080,
        &["--idle", "8", "--send", "GET /ninth HTTP/1.0\r\n\r\n"],
    );
    assert_eq!(out.json()["idle"], 8, "{out}");
    assert_refused_on_the_wire(&d, "e2e-capacity", &out, &srv, "/ninth");
    let st = d.wait_event("a status event warning about the SOCKHASH", |e| {
        ev::is(e, "status") && e["warnings"].to_string().contains("SOCKHASH")
    });
    assert!(
        st["warnings"].to_string().contains("--max-watched-sockets"),
        "{st}"
    );
    assert!(d.stderr().contains("SOCKHASH"), "{}", d.stderr());
    drop(d);

    let curl = bulwark_e2e::preflight().curl.display().to_string();
    let connect = PolicyBuilder::new("e2e-capacity-connect")
        .rule(
            RuleBuilder::connect("curl-no-8080")
                .namespaces("In", &["e2e-capacity"])
                .binaries("In", &[&curl])
                .destinations("In", &["10.199.0.0/16"], &["8080"], Some("TCP"))
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start_with(DaemonConfig {
        policies: vec![("connect.yaml".into(), connect)],
        workloads: w.workloads_yaml(),
        extra_args: vec!["--max-processes".into(), "16".into()],
        kubernetes: false,
        skip_lines_containing: None,
    });
    // Long-lived processes keep the 16 entries taken (processes exiting elsewhere on the host
    // free one now and then, which a new process may take: then it has state and the rule
    // applies to its connect). Either way the covered curl never connects; at least one
    // attempt finds no room and is killed.
    let mut sleepers: Vec<_> = (0..32)
        .map(|_| {
            std::process::Command::new("/bin/sleep")
                .arg("60")
                .spawn()
                .unwrap()
        })
        .collect();
    let mut killed = None;
    for _ in 0..5 {
        let out = w.pod().curl(&[&url("http", ip, 8080, "/no-room")]);
        assert!(!out.success(), "the covered curl connected: {out}");
        if out.sigkilled() {
            killed = Some(out);
            break;
        }
    }
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    let out = killed.expect("no attempt found the process map full");
    let m = d.wait_event("the capacity policy_match", |e| {
        ev::is_match(e, "e2e-capacity-connect", "connect")
            && e["reason"] == "capacity"
            && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(
        (m["outcome"].as_str(), m["enforced"].as_bool()),
        (Some("killed"), Some(true)),
        "{m}"
    );
    d.wait_event("a status event warning about the process map", |e| {
        ev::is(e, "status") && e["warnings"].to_string().contains("process map")
    });
    assert!(srv.log().requests_for("/no-room").is_empty());
}
