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

/// The port of the encrypted-protocol tests' logging server (`ingress::SERVER_PY` in the server
/// namespace, dual-stack, greeting every connection with an SSH identification line).
const ENC_PORT: u16 = 2222;
/// An SSH client's identification line, and the header of a first binary packet (KEXINIT:
/// packet_length 28, padding 4, message code 20) with its body, as python bytes.
const SSH_BANNER: &str = "b'SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\\r\\n'";
const SSH_KEXINIT: &str = "(struct.pack('>IB', 28, 4) + b'\\x14' + bytes(26))";
/// A first payload of the declared protocol (`conns_report::PROTOCOLS`: `ac 3e 01`).
const DECLARED: &str = "b'\\xac\\x3e\\x01' + bytes(61)";
const PLAINTEXT: &str = "b'GET /enc HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n'";

/// The client of the encrypted-protocol tests, run in the pod: connects to argv[1]:argv[2] and
/// makes each element of PARTS one send — bytes: `sendall`; `('sendfile', bytes)`:
/// `os.sendfile` from a file; `('splice', bytes)`: `os.splice` from a pipe; `('zerocopy',
/// bytes)`: `send(MSG_ZEROCOPY)` after `SO_ZEROCOPY`; `('wait', path)`: no send, print
/// `{"waiting": local port}` and wait (60 s at most) until `path` exists — stopping at the first
/// send that fails. Then it shuts its side down and reads until the server closes. Prints (last)
/// `{"port": local port, "sends": ["ok" or the errno name, ...]}`.
const ENC_CLIENT_PY: &str = "import errno, json, os, socket, struct, sys, tempfile, time
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
def put(c, part):
    how, data = part if isinstance(part, tuple) else ('send', part)
    if how == 'send':
        c.sendall(data)
    elif how == 'sendfile':
        with tempfile.TemporaryFile() as f:
            f.write(data); f.flush()
            assert os.sendfile(c.fileno(), f.fileno(), 0, len(data)) == len(data)
    elif how == 'splice':
        r, w = os.pipe(); os.write(w, data); os.close(w)
        assert os.splice(r, c.fileno(), len(data)) == len(data)
        os.close(r)
    elif how == 'zerocopy':
        c.setsockopt(socket.SOL_SOCKET, 60, 1)
        assert c.send(data, 0x4000000) == len(data)
    elif how == 'wait':
        print(json.dumps({'waiting': c.getsockname()[1]}), flush=True)
        deadline = time.monotonic() + 60
        while not os.path.exists(data) and time.monotonic() < deadline: time.sleep(0.02)
        return False
    return True
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)
r = {'port': c.getsockname()[1], 'sends': []}
for part in PARTS:
    try:
        if put(c, part): r['sends'].append('ok')
    except OSError as e:
        r['sends'].append(name(e)); break
try:
    c.shutdown(socket.SHUT_WR)
    while c.recv(4096): pass
except OSError as e:
    r['end'] = name(e)
print(json.dumps(r), flush=True)
";

/// The logging server of the encrypted-protocol tests, stopped on drop.
struct EncServer {
    log: crate::ingress::PeerLog,
    child: std::process::Child,
}

impl EncServer {
    fn start(w: &World) -> EncServer {
        let dir = w.dir();
        let (script, ready, log, stderr) = (
            dir.join("enc_server.py"),
            dir.join("enc_server.ready"),
            dir.join("enc_server.log"),
            dir.join("enc_server.stderr"),
        );
        std::fs::write(&script, crate::ingress::SERVER_PY).expect("write the server script");
        let port = format!("ssh:{ENC_PORT}");
        let args: [&std::ffi::OsStr; 3] = [ready.as_ref(), log.as_ref(), port.as_ref()];
        let child = bulwark_e2e::servers::python_in_server_netns(
            &w.net,
            &script,
            &args,
            &ready,
            &stderr,
            "the logging server",
        );
        EncServer {
            log: crate::ingress::PeerLog(log),
            child,
        }
    }
}

impl Drop for EncServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`ENC_CLIENT_PY`] did: its pid, local port and the outcome of each send.
struct EncRun {
    pid: u32,
    port: u16,
    sends: Vec<String>,
}

fn enc_client_argv(ip: std::net::IpAddr, parts: &str) -> Vec<String> {
    vec![
        bulwark_e2e::preflight().python3.display().to_string(),
        "-c".into(),
        ENC_CLIENT_PY.replace("PARTS", parts),
        ip.to_string(),
        ENC_PORT.to_string(),
    ]
}

fn enc_run(out: &bulwark_e2e::RunOutput) -> EncRun {
    assert!(out.success(), "the client failed: {out}");
    let last = out.stdout.trim().lines().last().unwrap_or_default();
    let v: serde_json::Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: not the client's JSON: {out}"));
    EncRun {
        pid: out.pid,
        port: v["port"].as_u64().unwrap_or_else(|| panic!("{out}")) as u16,
        sends: v["sends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect(),
    }
}

/// Runs [`ENC_CLIENT_PY`] in the pod towards `ip` with `parts` (a python list).
fn enc_client(w: &World, ip: std::net::IpAddr, parts: &str) -> EncRun {
    let argv = enc_client_argv(ip, parts);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    enc_run(&w.pod().run(&refs))
}

/// The python value of `parts` (a list of python byte expressions and tuples), evaluated the
/// way the client does, for comparing what the server received.
fn py_bytes(expr: &str) -> Vec<u8> {
    let program = format!(
        "import struct, sys\nsys.stdout.buffer.write(b''.join(p[1] if isinstance(p, tuple) else p for p in {expr} if not (isinstance(p, tuple) and p[0] == 'wait')))"
    );
    let out = std::process::Command::new(&bulwark_e2e::preflight().python3)
        .args(["-c", &program])
        .output()
        .expect("run python");
    assert!(out.status.success(), "{expr}: {out:?}");
    out.stdout
}

/// The egress verdict knows what ingress knows: a first send that is SSH (an identification
/// line, alone or with a well-formed KEXINIT packet header) or carries a declared protocol's
/// signature is encrypted, so a plaintext Block lets it through, while a plaintext request is
/// still refused — over `send`, `sendfile`, `splice` and `MSG_ZEROCOPY`, IPv4 and IPv6, with a
/// real `ssh` client too. Look-alikes, each asserted from the server's side: an SSH banner with
/// plaintext in the same send, or a banner or signature cut over two sends, is refused; a
/// declared signature with anything after it, and a banner alone followed by plaintext in a
/// later send, pass (the first-payload rule, as on ingress: docs/enforcement.md). Fast Open
/// from a process in scope is refused at connect whatever it carries. A socket classified SSH
/// leaves the SOCKHASH.
#[test]
fn egress_ssh_and_declared_protocols_are_encrypted() {
    let _g = serial();
    let w = World::single("egress-enc", "e2e-egress");
    let (c4, c6) = (w.net.v4_cidr(), w.net.v6_cidr());
    let policy = PolicyBuilder::new("e2e-egress-enc")
        .rule(
            RuleBuilder::egress("no-plaintext")
                .namespaces("In", &["e2e-egress"])
                .destinations("In", &[&c4, &c6], &[&ENC_PORT.to_string()], Some("TCP"))
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    let protocols = w.dir().join("protocols.yaml");
    std::fs::write(&protocols, crate::conns_report::PROTOCOLS).expect("write the protocols file");
    let d = Daemon::start_with(bulwark_e2e::DaemonConfig {
        policies: vec![("enc.yaml".into(), policy)],
        workloads: w.workloads_yaml(),
        extra_args: vec!["--protocols".into(), protocols.display().to_string()],
        ..bulwark_e2e::DaemonConfig::default()
    });
    let srv = EncServer::start(&w);
    let mut passed = Vec::new();
    let mut refused = Vec::new();
    let mut passes = |what: &str, v6: bool, parts: &str| {
        let c = enc_client(&w, w.net.server_ip(v6), parts);
        assert!(
            c.sends.iter().all(|s| s == "ok"),
            "{what}: every send passes: {:?}",
            c.sends
        );
        srv.log.wait_end(c.port);
        assert_eq!(srv.log.received(c.port), py_bytes(parts), "{what}");
        passed.push(c.pid);
    };
    // Each one is refused at send number `at` (from 0); the server got the sends before it.
    let mut refuses = |what: &str, v6: bool, parts: &str, at: usize| {
        let c = enc_client(&w, w.net.server_ip(v6), parts);
        let mut want = vec!["ok".to_string(); at];
        want.push("EACCES".into());
        assert_eq!(c.sends, want, "{what}");
        srv.log.wait_end(c.port);
        let sent = py_bytes(&format!("({parts})[:{at}]"));
        assert_eq!(
            srv.log.received(c.port),
            sent,
            "{what}: the server got what passed"
        );
        refused.push((what.to_string(), c.pid));
    };

    // An SSH client: its identification line alone, then KEXINIT in a later send; both in one.
    passes("ssh", false, &format!("[{SSH_BANNER}, {SSH_KEXINIT}]"));
    passes(
        "ssh one send",
        false,
        &format!("[{SSH_BANNER} + {SSH_KEXINIT}]"),
    );
    passes("ssh v6", true, &format!("[{SSH_BANNER}, {SSH_KEXINIT}]"));
    // The declared protocol.
    passes("declared", false, &format!("[{DECLARED}]"));
    passes("declared v6", true, &format!("[{DECLARED}]"));
    // Plaintext is still refused, from the first send.
    refuses("plaintext", false, &format!("[{PLAINTEXT}]"), 0);
    refuses("plaintext v6", true, &format!("[{PLAINTEXT}]"), 0);
    // Look-alikes.
    refuses(
        "ssh banner + plaintext in one send",
        false,
        &format!("[{SSH_BANNER} + {PLAINTEXT}]"),
        0,
    );
    refuses(
        "ssh banner cut over two sends",
        false,
        "[b'SSH-2.0-', b'x\\r\\n']",
        0,
    );
    refuses(
        "declared signature cut over two sends",
        false,
        "[b'\\xac\\x3e', b'\\x01' + bytes(8)]",
        0,
    );
    passes(
        "declared signature + plaintext (only the signature is compared)",
        false,
        &format!("[b'\\xac\\x3e\\x01' + {PLAINTEXT}]"),
    );
    passes(
        "ssh banner alone, then plaintext in a later send (only the first send is judged)",
        false,
        &format!("[{SSH_BANNER}, {PLAINTEXT}]"),
    );
    // Other send paths reach the same verdict (the message is not linear: the checks pull it).
    for how in ["sendfile", "splice", "zerocopy"] {
        passes(
            &format!("ssh over {how}"),
            false,
            &format!("[('{how}', {SSH_BANNER} + {SSH_KEXINIT})]"),
        );
        passes(
            &format!("declared over {how}"),
            false,
            &format!("[('{how}', {DECLARED})]"),
        );
        refuses(
            &format!("ssh banner + plaintext over {how}"),
            false,
            &format!("[('{how}', {SSH_BANNER} + {PLAINTEXT})]"),
            0,
        );
    }

    // A real ssh client (no sshd here: the server greets like one and logs what the client
    // sends): its identification line and, after the server's, its KEXINIT reach the server.
    let ssh = w.pod().spawn(&[
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
        "-p",
        &ENC_PORT.to_string(),
        &format!("root@{}", w.net.server_v4),
        "true",
    ]);
    let kexinit = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let log = std::fs::read_to_string(&srv.log.0).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["peer"].as_u64())
            .map(|p| srv.log.received(p as u16))
            .find(|b| {
                b.starts_with(b"SSH-2.0-OpenSSH")
                    && b.iter()
                        .position(|&x| x == b'\n')
                        .is_some_and(|nl| b.len() > nl + 6 && b[nl + 6] == 20)
            })
    });
    let ssh_pid = ssh.pid();
    drop(ssh);
    assert!(
        kexinit.is_some(),
        "the ssh client's banner and KEXINIT did not reach the server: {:?}",
        std::fs::read_to_string(&srv.log.0)
    );
    passed.push(ssh_pid);

    // A socket classified SSH leaves the SOCKHASH while the connection stays open.
    let map_id = sockhash_id(&d);
    let go = w.dir().join("enc-hold.go");
    let argv = enc_client_argv(
        w.net.server_ip(false),
        &format!(
            "[{SSH_BANNER}, {SSH_KEXINIT}, ('wait', '{}')]",
            go.display()
        ),
    );
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let held = w.pod().spawn(&refs);
    let port = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let line = held.stdout_so_far();
        let v: serde_json::Value = serde_json::from_str(line.lines().next()?).ok()?;
        v["waiting"].as_u64()
    })
    .unwrap_or_else(|| panic!("the held client never sent: {}", held.stdout_so_far()));
    let both = py_bytes(&format!("[{SSH_BANNER}, {SSH_KEXINIT}]"));
    let arrived = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        (srv.log.received(port as u16) == both).then_some(())
    });
    assert!(arrived.is_some(), "{:?}", srv.log.conn_log(port as u16));
    let left = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        (sockhash_entries(map_id) == 0).then_some(())
    });
    std::fs::write(&go, "").unwrap();
    let held = enc_run(&held.wait(bulwark_e2e::timeout()));
    assert_eq!(held.sends, ["ok", "ok"]);
    assert!(
        left.is_some(),
        "a socket classified SSH stayed in the SOCKHASH"
    );
    passed.push(held.pid);

    // Fast Open from a process in scope is refused at connect, whatever its data: the verdict
    // never sees a SYN's payload.
    for ns in [&w.net.pod, &w.net.server] {
        bulwark_e2e::host_cmd(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.tcp_fastopen=3",
            ],
        );
    }
    for (what, hex) in [
        ("ssh", "5353482d322e302d780d0a"),
        ("plaintext", "474554202f20485454502f312e300d0a0d0a"),
    ] {
        let out = w.pod().probe(
            w.net.server_ip(false),
            ENC_PORT,
            &["--tfo-sendto", "--send-hex", hex],
        );
        assert_eq!(
            out.json()["connect"],
            "EPERM",
            "Fast Open with {what}: {out}"
        );
        let m = d.wait_event(&format!("the tcp_fast_open refusal of {what}"), |e| {
            ev::is_match(e, "e2e-egress-enc", "egress")
                && ev::pid(e) == Some(out.pid as u64)
                && e["reason"] == "tcp_fast_open"
        });
        assert_eq!(m["outcome"], "blocked", "{m}");
    }

    // Every refused connection was reported, blocked as plaintext; nothing that passed was.
    for (what, pid) in &refused {
        let m = wait_match(&d, "e2e-egress-enc", "egress", *pid, ENC_PORT);
        assert_eq!(
            (m["outcome"].as_str(), m["encryption"].as_str()),
            (Some("blocked"), Some("plaintext")),
            "{what}: {m}"
        );
    }
    d.sync();
    d.assert_no_event("a policy_match for a connection that passed", |e| {
        ev::is(e, "policy_match") && ev::pid(e).is_some_and(|p| passed.contains(&(p as u32)))
    });
}
