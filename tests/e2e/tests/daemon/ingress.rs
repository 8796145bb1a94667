//! ingress hook (issue 11, "Ingress policy"): the first payload a server connection receives,
//! judged for the process that listens. The servers run in the pod; the client runs in the
//! server namespace from a TEST-NET address ([`PEER`], 203.0.113.7, on that namespace's end of
//! the test veth and routed only from the pod), so it is an `internet` peer and nothing leaves
//! the machine. The pod's plaintext server logs every byte it receives, per connection, so
//! "the server read nothing" is asserted from the server's side.
//!
//! Covered: Post reports plaintext and not TLS (and `bulwark conns --plaintext --internet
//! --ingress` lists the service); Block: the server reads zero bytes (its read fails with
//! ECONNABORTED) and the client's `recv` fails with ECONNRESET (curl: exit 56, "Connection
//! reset by peer"), on an IPv4 and an IPv6 listener, from IPv4 and IPv6 peers; TLS to the same
//! policy's port still works, a port or a peer outside the rule is untouched. Look-alikes: an
//! SSH banner, a TLS record header or a real ClientHello followed by plaintext in the same
//! segment is refused, as is a record header alone; a declared protocol's signature passes
//! whatever follows it, and an SSH banner or a ClientHello alone in the first segment lets
//! plaintext in later segments through (documented in docs/enforcement.md, "Ingress rules").
//! TCP Fast Open: data in the SYN and on the handshake's last ACK is judged at the listener and
//! refused; the server reads nothing and the client is reset once its connection exists.

use crate::conns_report::{add_internet_peer, conns, PROTOCOLS};
use bulwark_e2e::daemon::{ev, DaemonConfig};
use bulwark_e2e::servers::self_signed_cert;
use bulwark_e2e::{host_cmd, preflight, serial, Daemon, Event, PolicyBuilder, RuleBuilder, World};
use bulwark_events::{Protocol, Role};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

/// The "internet" client's address.
pub(crate) const PEER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
/// The "internet" client's IPv6 address (documentation range 2001:db8::/32).
const PEER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
const NAMESPACE: &str = "e2e-ingress";
/// The pod's plaintext server ports (the rules name 8080; 9090 is outside them).
pub(crate) const PLAIN: u16 = 8080;
const OTHER: u16 = 9090;
/// The pod's plaintext server on an IPv6 socket (`::`, IPv4 too).
const DUAL: u16 = 8081;
/// The pod's plaintext server accepting TCP Fast Open.
const FAST_OPEN: u16 = 8082;
/// The pod's TLS server (`openssl s_server -www`).
const TLS: u16 = 8443;

/// The logging server (the pod's here; the egress tests run it in the server namespace): every
/// port in argv[3..] accepts connections (`v6:PORT`: an IPv6 socket on `::`, which takes IPv4
/// too; `ssh:PORT`: the same, greeting every connection with an SSH identification line, as an
/// SSH server does; `tfo:PORT`: an IPv4 one that accepts TCP Fast Open; else an IPv4 one); per
/// connection it logs (JSON lines to argv[2]) the accept, every chunk it receives (hex), the end
/// or the error, keyed by the peer's port, and answers `ok\n` to every chunk. It creates
/// argv[1] once every port listens.
pub(crate) const SERVER_PY: &str = "import errno, json, socket, sys, threading
log = open(sys.argv[2], 'a', buffering=1)
lock = threading.Lock()
greet = set()
def note(**k):
    with lock: log.write(json.dumps(k) + '\\n')
def handle(s, port, peer):
    note(ev='accept', port=port, peer=peer)
    if port in greet: s.sendall(b'SSH-2.0-bulwark-e2e\\r\\n')
    while True:
        try:
            x = s.recv(4096)
        except OSError as e:
            note(ev='error', port=port, peer=peer, error=errno.errorcode.get(e.errno, str(e.errno))); break
        if not x:
            note(ev='eof', port=port, peer=peer); break
        note(ev='data', port=port, peer=peer, hex=x.hex())
        try:
            s.sendall(b'ok\\n')
        except OSError as e:
            note(ev='error', port=port, peer=peer, error=errno.errorcode.get(e.errno, str(e.errno))); break
    s.close()
def serve(l, port):
    while True:
        s, a = l.accept()
        threading.Thread(target=handle, args=(s, port, a[1]), daemon=True).start()
for p in sys.argv[3:]:
    v6, tfo, ssh = p.startswith('v6:'), p.startswith('tfo:'), p.startswith('ssh:'); p = int(p.split(':')[-1])
    if ssh: greet.add(p)
    l = socket.socket(socket.AF_INET6 if v6 or ssh else socket.AF_INET)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if tfo: l.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN, 16)
    l.bind(('::' if v6 or ssh else '0.0.0.0', p)); l.listen(16)
    threading.Thread(target=serve, args=(l, p), daemon=True).start()
open(sys.argv[1], 'w').close()
threading.Event().wait()
";

/// The client, in the server namespace from `argv[1]`: connects to `argv[2]:argv[3]` and, for
/// each part of `PARTS` (a python list of bytes), sends it and reads the answer (10 s at most);
/// prints `{"port": local port, "replies": [...], "ms": time from the first send to the last
/// reply}`, a reply being the text received, `eof`,
/// `timeout`, or the errno name of a failed send (`send:NAME`) or receive (`NAME`).
/// `client_hello()` is a real ClientHello (python's `ssl`, SNI `pod.example`).
const CLIENT_PY: &str = "import errno, json, socket, ssl, sys, time
def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    t = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname='pod.example')
    try:
        t.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()
c = socket.create_connection((sys.argv[2], int(sys.argv[3])), 10, (sys.argv[1], 0))
r = {'port': c.getsockname()[1], 'replies': []}
t0 = time.monotonic()
for part in PARTS:
    try:
        c.sendall(part)
    except OSError as e:
        r['replies'].append('send:' + errno.errorcode.get(e.errno, str(e.errno))); break
    try:
        x = c.recv(4096)
    except socket.timeout:
        r['replies'].append('timeout'); break
    except OSError as e:
        r['replies'].append(errno.errorcode.get(e.errno, str(e.errno))); break
    r['replies'].append(x.decode('latin-1') if x else 'eof')
    if not x: break
r['ms'] = int((time.monotonic() - t0) * 1000)
c.close()
print(json.dumps(r))
";

/// A plaintext request (one segment).
pub(crate) const REQUEST: &str = "[b'GET /in HTTP/1.1\\r\\nHost: pod\\r\\n\\r\\n']";

/// The pod's servers: the logging plaintext server on [`PLAIN`], [`OTHER`], [`DUAL`] and
/// [`FAST_OPEN`], and `openssl s_server -www` on [`TLS`]. Started after the daemon (a listener
/// from before it has no known owner).
pub(crate) struct PodServers {
    log: PeerLog,
    _plain: bulwark_e2e::pod::Running,
    _tls: bulwark_e2e::pod::Running,
}

impl std::ops::Deref for PodServers {
    type Target = PeerLog;
    fn deref(&self) -> &PeerLog {
        &self.log
    }
}

/// What [`SERVER_PY`] logged (the file it writes), read per connection by the peer's port.
pub(crate) struct PeerLog(pub(crate) std::path::PathBuf);

impl PodServers {
    pub(crate) fn start(w: &World) -> PodServers {
        let dir = w.dir();
        let (script, ready, log) = (
            dir.join("ingress_server.py"),
            dir.join("ingress_server.ready"),
            dir.join("ingress_server.log"),
        );
        std::fs::write(&script, SERVER_PY).expect("write the server script");
        let py = preflight().python3.to_str().unwrap().to_string();
        let (plain, other, dual) = (PLAIN.to_string(), OTHER.to_string(), format!("v6:{DUAL}"));
        let fast_open = format!("tfo:{FAST_OPEN}");
        let plain_srv = w.pod().spawn(&[
            &py,
            script.to_str().unwrap(),
            ready.to_str().unwrap(),
            log.to_str().unwrap(),
            &plain,
            &other,
            &dual,
            &fast_open,
        ]);
        let (cert, key) = self_signed_cert(dir);
        let tls_port = TLS.to_string();
        let tls_srv = w.pod().spawn(&[
            preflight().openssl.to_str().unwrap(),
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &tls_port,
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
        ]);
        let listening = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
            let ss = host_cmd("ip", &["netns", "exec", &w.pod().netns, "ss", "-Hltn"]);
            (ready.exists() && ss.contains(&format!(":{TLS} "))).then_some(())
        });
        assert!(listening.is_some(), "the pod's servers did not start");
        PodServers {
            log: PeerLog(log),
            _plain: plain_srv,
            _tls: tls_srv,
        }
    }
}

impl PeerLog {
    /// The server's log lines about the connection from the peer's port `peer`.
    pub(crate) fn conn_log(&self, peer: u16) -> Vec<Value> {
        std::fs::read_to_string(&self.0)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
            .filter(|v| v["peer"] == peer)
            .collect()
    }

    /// Every byte the server received on the connection from `peer`.
    pub(crate) fn received(&self, peer: u16) -> Vec<u8> {
        self.conn_log(peer)
            .iter()
            .filter(|v| v["ev"] == "data")
            .flat_map(|v| hex(v["hex"].as_str().unwrap()))
            .collect()
    }

    /// Waits until the server logged the end (`eof` or an error) of the connection from
    /// `peer`; returns that line.
    pub(crate) fn wait_end(&self, peer: u16) -> Value {
        bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
            self.conn_log(peer)
                .into_iter()
                .find(|v| v["ev"] == "eof" || v["ev"] == "error")
        })
        .unwrap_or_else(|| {
            panic!(
                "the server never saw the connection from port {peer} end: {:?}",
                self.conn_log(peer)
            )
        })
    }
}

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// What the client did: its local port and its replies.
pub(crate) struct ClientRun {
    pub(crate) port: u16,
    pub(crate) replies: Vec<String>,
    /// Milliseconds from the first send to the last reply.
    pub(crate) ms: u64,
}

/// Runs [`CLIENT_PY`] in the server namespace from `source` to the pod's `port`, sending
/// `parts` (a python list of bytes).
pub(crate) fn client_from(w: &World, source: IpAddr, port: u16, parts: &str) -> ClientRun {
    let dest = if source.is_ipv6() {
        IpAddr::V6(w.net.pod_v6)
    } else {
        IpAddr::V4(w.net.pod_v4)
    };
    let program = CLIENT_PY.replace("PARTS", parts);
    let args = [source.to_string(), dest.to_string(), port.to_string()];
    let v = python_json_in_server_netns(w, &program, &args);
    ClientRun {
        port: v["port"].as_u64().unwrap() as u16,
        replies: v["replies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect(),
        ms: v["ms"].as_u64().unwrap(),
    }
}

/// Runs the python `program` with `args` in the server namespace; it must succeed and print
/// one JSON object, which is returned.
fn python_json_in_server_netns(w: &World, program: &str, args: &[String]) -> Value {
    let out = Command::new(&preflight().ip)
        .args(["netns", "exec", &w.net.server])
        .arg(&preflight().python3)
        .arg("-c")
        .arg(program)
        .args(args)
        .output()
        .expect("run python in the server namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: not the program's JSON: {stdout}"))
}

/// [`client_from`] the internet peer.
pub(crate) fn client(w: &World, port: u16, parts: &str) -> ClientRun {
    client_from(w, PEER.into(), port, parts)
}

/// `curl -k https://<pod>:TLS/` from the internet peer (`--interface`): its stdout.
fn https_from_peer(w: &World) -> String {
    let out = Command::new(&preflight().ip)
        .args(["netns", "exec", &w.net.server])
        .arg(&preflight().curl)
        .args(["-sSk", "--noproxy", "*", "--max-time", "10", "--interface"])
        .arg(PEER.to_string())
        .arg(format!("https://{}:{TLS}/", w.net.pod_v4))
        .output()
        .expect("run curl in the server namespace");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("s_server"),
        "HTTPS to the pod's TLS server should work: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A world with the internet peer routed from the pod.
pub(crate) fn world(tag: &str) -> World {
    let w = World::single(tag, NAMESPACE);
    add_internet_peer(&w, PEER);
    let host = format!("{PEER6}/128");
    host_cmd(
        "ip",
        &[
            "-n",
            &w.net.server,
            "addr",
            "add",
            &host,
            "dev",
            "eth0",
            "nodad",
        ],
    );
    host_cmd(
        "ip",
        &["-n", &w.net.pod, "route", "add", &host, "dev", "eth0"],
    );
    w
}

/// The `policy_match` of `policy` on the ingress hook from the internet peer to `port`.
pub(crate) fn ingress_match(d: &Daemon, policy: &str, port: u16) -> Event {
    ingress_match_from(d, policy, PEER.into(), port)
}

/// The `policy_match` of `policy` on the ingress hook whose destination is the peer's address
/// `peer` and the service's port `port`.
fn ingress_match_from(d: &Daemon, policy: &str, peer: IpAddr, port: u16) -> Event {
    d.wait_event(
        &format!("policy_match of {policy} (ingress) from {peer} on port {port}"),
        |e| ev::is_match(e, policy, "ingress") && ev::dest(e) == (peer.to_string(), port as u64),
    )
}

/// The ingress rule of these tests: plaintext from the TEST-NET peer to `ports`, in the
/// test's namespace.
fn rule(action: &str, ports: &[&str]) -> RuleBuilder {
    RuleBuilder::new("plaintext-in", "ingress")
        .namespaces("In", &[NAMESPACE])
        .destinations(
            "In",
            &["203.0.113.0/24", "2001:db8::/32"],
            ports,
            Some("TCP"),
        )
        .encryption("plaintext")
        .action(action)
}

#[test]
fn ingress_post_reports_plaintext_not_tls_and_conns_lists_the_service() {
    let _g = serial();
    let w = world("ingress-post");
    let policy = PolicyBuilder::new("e2e-ingress-post")
        .mode("monitor")
        .rule(rule("Post", &["8080", "8443"]))
        .yaml();
    let d = Daemon::start(&w, &[("ingress.yaml", &policy)]);
    let srv = PodServers::start(&w);

    // Plaintext: reported, not refused; the server read the whole request.
    let c = client(&w, PLAIN, REQUEST);
    assert_eq!(c.replies, ["ok\n"], "monitor mode must not refuse");
    assert_eq!(
        srv.received(c.port),
        b"GET /in HTTP/1.1\r\nHost: pod\r\n\r\n"
    );
    let m = ingress_match(&d, "e2e-ingress-post", PLAIN);
    assert_eq!(m["outcome"], "reported", "{m}");
    assert_eq!(m["encryption"], "plaintext", "{m}");
    assert!(
        ev::binary(&m).contains("python"),
        "the listening process: {m}"
    );
    assert_eq!(m["process"]["pod"]["namespace"], NAMESPACE, "{m}");

    // TLS (curl to openssl s_server) on a port the rule names: no match.
    https_from_peer(&w);
    d.sync();
    d.assert_no_event("policy_match on the TLS port", |e| {
        ev::is_match(e, "e2e-ingress-post", "ingress") && ev::dest(e).1 == TLS as u64
    });

    // `bulwark conns --plaintext --internet --ingress` lists the plaintext service (the pod's
    // listening address and port) and not the TLS one.
    srv.wait_end(c.port);
    d.wait_event("process_close of the plaintext service's connection", |e| {
        ev::is(e, "process_close")
            && e.typed()
                .connection()
                .is_some_and(|k| k.local.port == PLAIN && k.remote.ip == PEER.to_string())
    });
    let text = conns(
        &d,
        &[
            "--plaintext",
            "--internet",
            "--ingress",
            "--by",
            "namespace,destination",
            "-o",
            "json",
        ],
    );
    let v: Value = serde_json::from_str(&text).expect("conns JSON");
    let keys: Vec<String> = v["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| g["key"].to_string())
        .collect();
    let service = format!("{}:{PLAIN}", w.net.pod_v4);
    assert!(
        keys.iter()
            .any(|k| k.contains(&service) && k.contains(NAMESPACE)),
        "the plaintext service {service} is not listed: {text}"
    );
    assert!(
        !keys.iter().any(|k| k.contains(&format!(":{TLS}"))),
        "the TLS service is listed as plaintext: {text}"
    );
}

#[test]
fn ingress_block_server_reads_nothing_tls_and_other_ports_work() {
    let _g = serial();
    let w = world("ingress-block");
    let policy = PolicyBuilder::new("e2e-ingress-block")
        .rule(rule("Block", &["8080", "8081", "8443"]))
        .yaml();
    let d = Daemon::start(&w, &[("ingress.yaml", &policy)]);
    let srv = PodServers::start(&w);

    // Plaintext to the service: the server reads zero bytes; the client's receive is reset.
    let c = client(&w, PLAIN, REQUEST);
    let m = ingress_match(&d, "e2e-ingress-block", PLAIN);
    assert_eq!(m["outcome"], "blocked", "{m}");
    assert_eq!(m["enforced"], true, "{m}");
    assert_eq!(c.replies, ["ECONNRESET"], "what the client sees");
    // At once (1 ms measured on the test veth), not after retransmissions or the client's
    // own 10 s timeout.
    assert!(c.ms < 5000, "the reset came after {} ms", c.ms);
    let end = srv.wait_end(c.port);
    assert_eq!(
        srv.received(c.port),
        b"",
        "the server read bytes of a refused connection: {:?}",
        srv.conn_log(c.port)
    );
    assert_eq!(end["ev"], "error", "what the server sees: {end}");
    assert_eq!(end["error"], "ECONNABORTED", "what the server sees: {end}");

    // curl as the client: "Recv failure: Connection reset by peer" (exit 56), and again the
    // server read nothing.
    let out = Command::new(&preflight().ip)
        .args(["netns", "exec", &w.net.server])
        .arg(&preflight().curl)
        .args(["-sS", "--noproxy", "*", "--max-time", "10", "--interface"])
        .arg(PEER.to_string())
        .arg(format!("http://{}:{PLAIN}/curl", w.net.pod_v4))
        .output()
        .expect("run curl in the server namespace");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(56), "curl's exit: {stderr}");
    assert!(
        stderr.contains("Connection reset by peer"),
        "curl's error: {stderr}"
    );
    let log = std::fs::read_to_string(&srv.log.0).unwrap_or_default();
    assert!(
        !log.contains(
            &"GET /curl"
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
        "the server read curl's request: {log}"
    );

    // An IPv6 listener: refused the same way from an IPv4 peer (a mapped address) and from an
    // IPv6 one.
    for peer in [IpAddr::V4(PEER), IpAddr::V6(PEER6)] {
        let c = client_from(&w, peer, DUAL, REQUEST);
        let m = ingress_match_from(&d, "e2e-ingress-block", peer, DUAL);
        assert_eq!(m["outcome"], "blocked", "{m}");
        assert_eq!(
            c.replies,
            ["ECONNRESET"],
            "from {peer} to the IPv6 listener"
        );
        let end = srv.wait_end(c.port);
        assert_eq!(
            srv.received(c.port),
            b"",
            "from {peer}: {:?}",
            srv.conn_log(c.port)
        );
        assert_eq!(end["error"], "ECONNABORTED", "from {peer}: {end}");
    }

    // TLS under the same policy and to a port it names works.
    https_from_peer(&w);
    // A port outside the rule: untouched.
    let c = client(&w, OTHER, REQUEST);
    assert_eq!(c.replies, ["ok\n"], "port {OTHER} is outside the rule");
    assert_eq!(
        srv.received(c.port),
        b"GET /in HTTP/1.1\r\nHost: pod\r\n\r\n"
    );
    // The same plaintext from a peer outside the rule's CIDRs: untouched.
    let c = client_from(&w, w.net.server_v4.into(), PLAIN, REQUEST);
    assert_eq!(c.replies, ["ok\n"], "a peer outside the rule's cidrs");
    d.sync();
    d.assert_no_event("a match on another port or peer", |e| {
        ev::is_match(e, "e2e-ingress-block", "ingress")
            && !([PLAIN as u64, DUAL as u64].contains(&ev::dest(e).1)
                && [PEER.to_string(), PEER6.to_string()].contains(&ev::dest(e).0))
    });
}

#[test]
fn ingress_look_alikes() {
    let _g = serial();
    let w = world("ingress-alike");
    let policy = PolicyBuilder::new("e2e-ingress-alike")
        .rule(rule("Block", &["8080"]))
        .yaml();
    let protocols = w.dir().join("protocols.yaml");
    std::fs::write(&protocols, PROTOCOLS).expect("write the protocols file");
    let d = Daemon::start_with(DaemonConfig {
        policies: vec![("ingress.yaml".into(), policy)],
        workloads: w.workloads_yaml(),
        extra_args: vec!["--protocols".into(), protocols.display().to_string()],
        ..DaemonConfig::default()
    });
    let srv = PodServers::start(&w);
    let refused = |what: &str, parts: &str| {
        let c = client(&w, PLAIN, parts);
        assert_eq!(c.replies, ["ECONNRESET"], "{what}: refused");
        srv.wait_end(c.port);
        assert_eq!(srv.received(c.port), b"", "{what}: the server read nothing");
    };
    let passes = |what: &str, parts: &str, expect: &[u8]| {
        let c = client(&w, PLAIN, parts);
        assert!(
            c.replies.iter().all(|r| r == "ok\n"),
            "{what}: passes: {:?}",
            c.replies
        );
        assert_eq!(srv.received(c.port), expect, "{what}");
    };

    // An SSH banner with plaintext after it in the same segment: not SSH, refused.
    refused(
        "SSH banner + plaintext",
        "[b'SSH-2.0-x\\r\\nGET /in HTTP/1.1\\r\\nHost: pod\\r\\n\\r\\n']",
    );
    // A TLS record header with plaintext after it in the same segment: refused.
    refused(
        "TLS record header + plaintext",
        "[b'\\x16\\x03\\x01\\x00\\x40' + b'GET /in HTTP/1.1\\r\\n' * 4]",
    );
    // A TLS record header alone in the first segment (plaintext would follow): refused.
    refused("TLS record header alone", "[b'\\x16\\x03\\x01\\x02\\x00']");
    // The declared protocol's signature, then plaintext in the same segment: only the
    // signature is checked, so it passes as encrypted.
    passes(
        "declared signature + plaintext",
        "[b'\\xac\\x3e\\x01plaintext after the signature']",
        b"\xac\x3e\x01plaintext after the signature",
    );
    // A real ClientHello with plaintext after it in the same segment: what follows the
    // hello must be TLS record headers, so this is plaintext, refused.
    refused(
        "ClientHello + plaintext",
        "[client_hello() + b'GET /after-hello HTTP/1.1\\r\\n\\r\\n']",
    );
    // A ClientHello alone in the first segment is TLS so far; only the first segment is
    // judged, so plaintext in a later segment passes.
    let c = client(
        &w,
        PLAIN,
        "[client_hello(), b'GET /after-hello HTTP/1.1\\r\\n\\r\\n']",
    );
    assert_eq!(c.replies, ["ok\n", "ok\n"], "ClientHello, then plaintext");
    let got = srv.received(c.port);
    assert!(
        got.starts_with(&[0x16, 0x03]) && got.ends_with(b"GET /after-hello HTTP/1.1\r\n\r\n"),
        "the server got the hello and the plaintext: {:?}",
        srv.conn_log(c.port)
    );
    // An SSH banner alone in the first segment is SSH; only the first segment is judged, so
    // plaintext in a later segment passes.
    passes(
        "SSH banner, then plaintext in a later segment",
        "[b'SSH-2.0-x\\r\\n', b'GET /in HTTP/1.1\\r\\n\\r\\n']",
        b"SSH-2.0-x\r\nGET /in HTTP/1.1\r\n\r\n",
    );
    // Exactly the four refused connections were reported, each blocked as plaintext.
    let is_block = |e: &Event| ev::is_match(e, "e2e-ingress-alike", "ingress");
    let blocked = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let m = d.find(is_block);
        (m.len() >= 4).then_some(m)
    })
    .expect("four policy_match events");
    d.sync();
    let all = d.find(is_block);
    assert_eq!(all.len(), 4, "{all:?}");
    for m in &blocked {
        assert_eq!(
            (m["outcome"].as_str(), m["encryption"].as_str()),
            (Some("blocked"), Some("plaintext")),
            "{m}"
        );
    }
}

#[test]
fn ingress_fast_open_data_is_judged() {
    let _g = serial();
    let w = world("ingress-tfo");
    let policy = PolicyBuilder::new("e2e-ingress-tfo")
        .rule(rule("Block", &["8082"]))
        .yaml();
    let d = Daemon::start(&w, &[("ingress.yaml", &policy)]);
    // The pod accepts Fast Open data without a cookie; the client sends it without one.
    for (ns, value) in [(&w.net.pod, "0x203"), (&w.net.server, "0x5")] {
        let setting = format!("net.ipv4.tcp_fastopen={value}");
        host_cmd("ip", &["netns", "exec", ns, "sysctl", "-qw", &setting]);
    }
    let srv = PodServers::start(&w);
    // The request rides in the SYN (`sendto(MSG_FASTOPEN)`).
    let program = format!(
        "import errno, json, socket, time\n\
         c = socket.socket(); c.bind(('{PEER}', 0)); c.settimeout(20); t0 = time.monotonic()\n\
         c.sendto(b'GET /tfo HTTP/1.1\\r\\n\\r\\n', socket.MSG_FASTOPEN, ('{}', {FAST_OPEN}))\n\
         r = {{'port': c.getsockname()[1]}}\n\
         try:\n\
         \x20   x = c.recv(4096); r['reply'] = x.decode() if x else 'eof'\n\
         except socket.timeout: r['reply'] = 'timeout'\n\
         except OSError as e: r['reply'] = errno.errorcode.get(e.errno, str(e.errno))\n\
         r['ms'] = int((time.monotonic() - t0) * 1000)\n\
         print(json.dumps(r))\n",
        w.net.pod_v4
    );
    let v = python_json_in_server_netns(&w, &program, &[]);
    let port = v["port"].as_u64().unwrap() as u16;
    // The SYN's data is refused at the listener, and so is the data on the handshake's last
    // ACK when the client retransmits it; once a pure ACK made the connection, its first
    // segment is refused and the connection reset, as without Fast Open.
    assert_eq!(v["reply"], "ECONNRESET", "what the client sees: {v}");
    let end = srv.wait_end(port);
    assert_eq!(
        srv.received(port),
        b"",
        "the server read Fast Open data: {:?}",
        srv.conn_log(port)
    );
    assert_eq!(end["error"], "ECONNABORTED", "{end}");
    let m = ingress_match(&d, "e2e-ingress-tfo", FAST_OPEN);
    assert_eq!(m["outcome"], "blocked", "{m}");
}

/// The `process_close` of the `role` end of the connection from the peer's port `port` to the
/// service's port `service`.
fn close_of(d: &Daemon, role: Role, port: u16, service: u16) -> Event {
    let (local, remote) = match role {
        Role::Server => (service, port),
        Role::Client => (port, service),
    };
    d.wait_event(
        &format!("process_close of the {role:?} end from port {port}"),
        |e| {
            ev::is(e, "process_close")
                && e.typed().connection().is_some_and(|c| {
                    c.role == role && c.local.port == local && c.remote.port == remote
                })
        },
    )
}

/// Observation (no policy) sees the first payload of a connection whose data reached the
/// *listener*: in a Fast Open SYN the server accepts (the client's `tcpi_options` has
/// `TCPI_OPT_SYN_DATA`), and, when the server asks for a cookie the client did not send, on the
/// segment that completes the handshake (the SYN's data is dropped and retransmitted with the
/// ACK). Either way the server's `process_close` classifies what it received (`http`) with the
/// exact byte count, as for any connection; so does the client's, whose first payload left in
/// its SYN.
#[test]
fn fast_open_data_is_observed_at_both_ends() {
    let _g = serial();
    let w = world("conns-tfo");
    let d = Daemon::start(&w, &[]);
    let fast_open = |ns: &str, value: &str| {
        let setting = format!("net.ipv4.tcp_fastopen={value}");
        host_cmd("ip", &["netns", "exec", ns, "sysctl", "-qw", &setting]);
    };
    fast_open(&w.net.server, "0x5");
    let srv = PodServers::start(&w);
    let request = "GET /tfo HTTP/1.1\\r\\n\\r\\n";
    let sent = "GET /tfo HTTP/1.1\r\n\r\n";
    // (server setting, whether the SYN's data is accepted): 0x203 takes data without a cookie;
    // 0x3 wants a cookie, which the client (0x5: data without one) does not have.
    for (setting, in_syn) in [("0x203", true), ("0x3", false)] {
        fast_open(&w.net.pod, setting);
        let program = format!(
            "import json, socket\n\
             c = socket.socket(); c.bind(('{PEER}', 0)); c.settimeout(20)\n\
             c.sendto(b'{request}', socket.MSG_FASTOPEN, ('{}', {FAST_OPEN}))\n\
             x = c.recv(4096)\n\
             info = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)\n\
             print(json.dumps({{'port': c.getsockname()[1], 'reply': x.decode(),\n\
             \x20   'syn_data': bool(info[5] & 32)}}))\n\
             c.close()\n",
            w.net.pod_v4
        );
        let v = python_json_in_server_netns(&w, &program, &[]);
        let port = v["port"].as_u64().unwrap() as u16;
        assert_eq!(v["reply"], "ok\n", "{setting}: {v}");
        assert_eq!(
            v["syn_data"], in_syn,
            "{setting}: the SYN's data accepted? {v}"
        );
        srv.wait_end(port);
        assert_eq!(srv.received(port), sent.as_bytes(), "{setting}");
        let server = close_of(&d, Role::Server, port, FAST_OPEN);
        let client = close_of(&d, Role::Client, port, FAST_OPEN);
        for (e, c) in [&server, &client].map(|e| (e, e.typed().connection().unwrap())) {
            let first = if c.role == Role::Server {
                &c.received
            } else {
                &c.sent
            };
            assert_eq!(first.protocol, Protocol::Http, "{setting}: {e}");
            assert_eq!(c.encrypted, Some(false), "{setting}: {e}");
        }
        let (s, c) = (
            server.typed().connection().unwrap(),
            client.typed().connection().unwrap(),
        );
        assert_eq!(
            (s.bytes_received, s.bytes_sent),
            (sent.len() as u64, 3),
            "{setting}: {server}"
        );
        assert_eq!(
            (c.bytes_sent, c.bytes_received),
            (sent.len() as u64, 3),
            "{setting}: {client}"
        );
    }
}
