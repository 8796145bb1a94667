//! conns, issue 11's "done when": `bulwark conns --plaintext --internet --egress` names exactly
//! the workloads and destinations that sent plaintext out of the cluster, with exact byte
//! counts, and `/metrics` shows the same totals; a declared encrypted protocol is named in the
//! events, counts as encrypted and is not plaintext; a bad `--protocols` file refuses to start.
//!
//! The internet here is two TEST-NET addresses (198.51.100.7, 203.0.113.9) on the server
//! namespace's end of the test veth, routed only from the pod namespace: nothing leaves the
//! machine. The daemon's `--cluster-cidrs` holds loopback and the test's own 10.199.0.0/16 and
//! fd99::/16, so the server's usual address is a cluster peer and the TEST-NET ones are not.

use crate::conns::{conn, curl_counted, ingress_exchange};
use bulwark_e2e::daemon::{bulwark_bin, ev, DaemonConfig};
use bulwark_e2e::netns::url;
use bulwark_e2e::{host_cmd, preflight, serial, Daemon, Event, TestServer, World};
use bulwark_events::{Protocol, Role, Scope};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const NAMESPACE: &str = "e2e-conns-done";
const POD: &str = "e2e-conns-done/web";
/// The "internet" peer the test HTTP(S) server answers on (ports 80 and 443).
const WEB: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// The "internet" peer of the exchange server (ports 8080: plaintext, 9000: acme-tunnel).
const EXCHANGE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// The declared encrypted protocol of these tests: `ac 3e 01` at offset 0.
pub(crate) const PROTOCOLS: &str = "apiVersion: bulwark.dev/v1alpha1
kind: EncryptedProtocol
metadata:
  name: acme-tunnel
spec:
  signature: \"ac 3e 01\"
";
/// A first payload of the declared protocol (64 bytes) and the server's answer (32 bytes).
const TUNNEL_HELLO: &str = "b'\\xac\\x3e\\x01' + b'\\x00' * 61";
const TUNNEL_ANSWER: &str = "b'\\xac\\x3e\\x01' + b'\\x07' * 29";
/// What the plaintext exchange sends (160 bytes) and answers (48 bytes).
const PLAIN_HELLO: &str = "b'HELLO plaintext\\n' * 10";
const PLAIN_ANSWER: &str = "b'plain-reply\\n' * 4";

/// Each port's server answers every connection, once the client has shut down its sending
/// side, with the port's answer, then closes.
const EXCHANGE_PY: &str = "import socket, sys, threading
answers = {8080: PLAIN_ANSWER, 9000: TUNNEL_ANSWER}
def serve(l, answer):
    while True:
        s, _ = l.accept()
        while s.recv(4096): pass
        s.sendall(answer); s.close()
for port, answer in answers.items():
    l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((sys.argv[1], port)); l.listen(16)
    threading.Thread(target=serve, args=(l, answer), daemon=True).start()
open(sys.argv[2], 'w').close()
threading.Event().wait()
";

/// Adds `ip` to the server namespace's veth end and a host route to it in the pod namespace.
pub(crate) fn add_internet_peer(w: &World, ip: Ipv4Addr) {
    let host = format!("{ip}/32");
    host_cmd(
        "ip",
        &["-n", &w.net.server, "addr", "add", &host, "dev", "eth0"],
    );
    host_cmd(
        "ip",
        &["-n", &w.net.pod, "route", "add", &host, "dev", "eth0"],
    );
}

/// A free loopback port for `--metrics-addr`.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The client `process_close` of the connection from the pod's local `port`.
fn client_close(d: &Daemon, what: &str, port: u16) -> Event {
    d.wait_event(&format!("process_close of {what}"), |e| {
        ev::is(e, "process_close") && conn(e).role == Role::Client && conn(e).local.port == port
    })
}

/// A python client in the pod: sends `hello` to `ip:port`, shuts down its side, reads the
/// answer to the end; returns its local port and the bytes it sent and received.
fn exchange(w: &World, ip: Ipv4Addr, port: u16, hello: &str) -> (u16, u64, u64) {
    let program = format!(
        "import socket\n\
         c = socket.create_connection(('{ip}', {port})); hello = {hello}\n\
         c.sendall(hello); c.shutdown(socket.SHUT_WR); got = 0\n\
         while True:\n\
         \x20   x = c.recv(4096)\n\
         \x20   if not x: break\n\
         \x20   got += len(x)\n\
         print(c.getsockname()[1], len(hello), got)\n"
    );
    let out = w
        .pod()
        .run(&[preflight().python3.to_str().unwrap(), "-c", &program]);
    assert!(out.success(), "{program}\n{out}");
    let n: Vec<u64> = out
        .stdout
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    (n[0] as u16, n[1], n[2])
}

/// `bulwark conns --file <the daemon's events> ARGS` (it must succeed): its stdout.
pub(crate) fn conns(d: &Daemon, args: &[&str]) -> String {
    let out = Command::new(bulwark_bin())
        .arg("conns")
        .arg("--file")
        .arg(d.events_path())
        .args(args)
        .output()
        .expect("run bulwark conns");
    assert!(
        out.status.success(),
        "bulwark conns {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `bulwark conns ARGS -o json`, each group as (key, connections, plaintext, encrypted,
/// bytes sent, bytes received, protocols), sorted, and the total the same way.
fn conns_json(d: &Daemon, args: &[&str]) -> (Vec<Value>, Value) {
    let mut argv = args.to_vec();
    argv.extend(["-o", "json"]);
    let text = conns(d, &argv);
    let v: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("bulwark conns {args:?} -o json: {e}: {text}"));
    let row = |g: &Value| {
        json!([
            g["key"],
            g["connections"],
            g["plaintext"],
            g["encrypted"],
            g["bytes_sent"],
            g["bytes_received"],
            g["protocols"]
        ])
    };
    let mut groups: Vec<Value> = v["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups: {v}"))
        .iter()
        .map(row)
        .collect();
    groups.sort_by_key(|g| g.to_string());
    (groups, row(&v["total"]))
}

/// One expected group or total, in [`conns_json`]'s shape.
fn group(
    key: Value,
    conns: u64,
    plaintext: u64,
    sent: u64,
    received: u64,
    protocols: &[&str],
) -> Value {
    json!([
        key,
        conns,
        plaintext,
        conns - plaintext,
        sent,
        received,
        protocols
    ])
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|g| g.to_string());
    v
}

/// `GET /metrics` on the daemon's `--metrics-addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to --metrics-addr");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: bulwark\r\n\r\n")
        .expect("send the scrape");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the scrape");
    assert!(
        text.starts_with("HTTP/1.") && text.contains(" 200 "),
        "{text}"
    );
    text
}

/// The sum of metric `name` over the series whose labels include every one of `labels`.
fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix('{'))
        .filter_map(|l| l.split_once("} "))
        .filter(|(ls, _)| {
            labels
                .iter()
                .all(|(k, v)| ls.split(',').any(|kv| kv == format!("{k}=\"{v}\"")))
        })
        .map(|(_, value)| value.trim().parse::<u64>().expect("an integer counter"))
        .sum()
}

/// (connections, bytes sent, bytes received) of the series matching `labels` in the namespace.
fn metric_totals(text: &str, labels: &[(&str, &str)]) -> (u64, u64, u64) {
    let mut labels = labels.to_vec();
    labels.push(("namespace", NAMESPACE));
    (
        metric_sum(text, "bulwark_connections_total", &labels),
        metric_sum(text, "bulwark_connection_sent_bytes_total", &labels),
        metric_sum(text, "bulwark_connection_received_bytes_total", &labels),
    )
}

#[test]
fn conns_names_exactly_the_plaintext_senders_to_the_internet_and_metrics_agree() {
    let _g = serial();
    let w = World::single("conns-done", NAMESPACE);
    add_internet_peer(&w, WEB);
    add_internet_peer(&w, EXCHANGE);
    let protocols = w.dir().join("protocols.yaml");
    std::fs::write(&protocols, PROTOCOLS).expect("write the protocols file");
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let d = Daemon::start_with(DaemonConfig {
        workloads: w.workloads_yaml(),
        extra_args: vec![
            "--cluster-cidrs".into(),
            "127.0.0.0/8,::1/128,10.199.0.0/16,fd99::/16".into(),
            "--metrics-addr".into(),
            metrics.to_string(),
            "--protocols".into(),
            protocols.display().to_string(),
        ],
        ..DaemonConfig::default()
    });
    // Servers after the daemon: a listener from before it has no known owner.
    let _web = TestServer::start(&w.net, &[80, 443]);
    let script = w.dir().join("exchange.py");
    std::fs::write(
        &script,
        EXCHANGE_PY
            .replace("PLAIN_ANSWER", PLAIN_ANSWER)
            .replace("TUNNEL_ANSWER", TUNNEL_ANSWER),
    )
    .expect("write exchange.py");
    let ready = w.dir().join("exchange.ready");
    let mut exchange_server = bulwark_e2e::servers::python_in_server_netns(
        &w.net,
        &script,
        &[EXCHANGE.to_string().as_ref(), ready.as_os_str()],
        &ready,
        &w.dir().join("exchange.stderr"),
        "the exchange server",
    );
    let curl = preflight().curl.to_str().unwrap().to_string();

    // Plaintext to the internet: curl twice to WEB:80, python once to EXCHANGE:8080.
    let web80 = url("http", WEB.into(), 80, "/bytes/1000");
    let (p1, s1, r1) = curl_counted(&w, &[&web80]);
    let (p2, s2, r2) = curl_counted(&w, &[&url("http", WEB.into(), 80, "/bytes/300")]);
    let (p3, s3, r3) = exchange(&w, EXCHANGE, 8080, PLAIN_HELLO);
    assert_eq!((s3, r3), (160, 48));
    // Encrypted to the internet: TLS to WEB:443, the declared protocol to EXCHANGE:9000.
    let (p4, _, _) = curl_counted(&w, &["-k", &url("https", WEB.into(), 443, "/tls")]);
    let (p5, s5, r5) = exchange(&w, EXCHANGE, 9000, TUNNEL_HELLO);
    assert_eq!((s5, r5), (64, 32));
    // Plaintext to a cluster peer.
    let (p6, s6, r6) = curl_counted(&w, &[&url("http", w.net.server_v4.into(), 80, "/cluster")]);

    // Ingress from the internet: a client in the server namespace, from WEB, to the pod.
    ingress_exchange(&w, Some(WEB));

    // Every connection's close is in, with the bytes each client counted.
    for (what, port, sent, received) in [
        ("curl http to the internet (1)", p1, s1, r1),
        ("curl http to the internet (2)", p2, s2, r2),
        ("python plaintext to the internet", p3, s3, r3),
        ("the declared protocol", p5, s5, r5),
        ("curl http to a cluster peer", p6, s6, r6),
    ] {
        let e = client_close(&d, what, port);
        let c = conn(&e);
        assert_eq!(
            (c.bytes_sent, c.bytes_received),
            (sent, received),
            "{what}: {e}"
        );
    }
    let tls = client_close(&d, "curl https to the internet", p4);
    assert_eq!(conn(&tls).encrypted, Some(true), "{tls}");
    let cluster = client_close(&d, "curl http to a cluster peer", p6);
    assert_eq!(conn(&cluster).scope, Scope::Cluster, "{cluster}");
    let python = client_close(&d, "python plaintext to the internet", p3);
    assert_eq!(conn(&python).scope, Scope::Internet, "{python}");
    assert_eq!(conn(&python).sent.protocol, Protocol::Other, "{python}");
    let python_bin = ev::binary(&python).to_string();
    assert!(python_bin.contains("python"), "{python}");

    // The declared protocol: named, encrypted, both ways.
    let tunnel = client_close(&d, "the declared protocol", p5);
    let c = conn(&tunnel);
    let acme = Protocol::Custom("acme-tunnel".into());
    assert_eq!(
        (&c.sent.protocol, &c.received.protocol),
        (&acme, &acme),
        "{tunnel}"
    );
    assert_eq!(c.encrypted, Some(true), "{tunnel}");
    assert_eq!(
        tunnel["connection"]["sent"]["protocol"], "acme-tunnel",
        "{tunnel}"
    );
    assert_eq!(tunnel["connection"]["encrypted"], true, "{tunnel}");
    let ingress = d.wait_event("process_close of the pod's server", |e| {
        ev::is(e, "process_close") && conn(e).role == Role::Server && conn(e).local.port == 8088
    });
    let c = conn(&ingress);
    assert_eq!(
        (c.remote.ip.as_str(), c.scope),
        ("198.51.100.7", Scope::Internet)
    );
    assert_eq!((c.bytes_received, c.bytes_sent), (31, 38), "{ingress}");

    // The question: who sent plaintext out of the cluster, to where, how much.
    let plaintext_egress = ["--plaintext", "--internet", "--egress"];
    let in_ns = |extra: &[&'static str]| {
        let mut a = plaintext_egress.to_vec();
        a.extend(["--namespace", NAMESPACE]);
        a.extend_from_slice(extra);
        a
    };
    let (s_curl, r_curl) = (s1 + s2, r1 + r2);
    let web = format!("{WEB}:80");
    let plain = format!("{EXCHANGE}:8080");
    let expected = sorted(vec![
        group(
            json!({"pod": POD, "binary": curl, "destination": web}),
            2,
            2,
            s_curl,
            r_curl,
            &["http"],
        ),
        group(
            json!({"pod": POD, "binary": python_bin, "destination": plain}),
            1,
            1,
            s3,
            r3,
            &["other"],
        ),
    ]);
    let total = group(
        json!({}),
        3,
        3,
        s_curl + s3,
        r_curl + r3,
        &["http", "other"],
    );
    let (groups, got_total) = conns_json(&d, &in_ns(&[]));
    assert_eq!(groups, expected);
    assert_eq!(got_total, total);
    // Without the namespace filter the whole node is reported (other processes on this machine
    // may talk plaintext to the internet too): the test's pod and peers appear exactly as above.
    let (all, _) = conns_json(&d, &plaintext_egress);
    let ours: Vec<Value> = all
        .into_iter()
        .filter(|g| {
            let k = &g[0];
            k["pod"] == POD
                || [WEB, EXCHANGE].iter().any(|ip| {
                    k["destination"]
                        .as_str()
                        .is_some_and(|d| d.starts_with(&format!("{ip}:")))
                })
        })
        .collect();
    assert_eq!(ours, expected, "the whole node's plaintext internet egress");

    // The other groupings.
    let (by_ns, _) = conns_json(&d, &in_ns(&["--by", "namespace"]));
    let all_of_it = |key: Value| group(key, 3, 3, s_curl + s3, r_curl + r3, &["http", "other"]);
    assert_eq!(by_ns, vec![all_of_it(json!({"namespace": NAMESPACE}))]);
    let (by_pod, _) = conns_json(&d, &in_ns(&["--by", "pod"]));
    assert_eq!(by_pod, vec![all_of_it(json!({"pod": POD}))]);
    let (by_binary, _) = conns_json(&d, &in_ns(&["--by", "binary"]));
    assert_eq!(
        by_binary,
        sorted(vec![
            group(json!({"binary": curl}), 2, 2, s_curl, r_curl, &["http"]),
            group(json!({"binary": python_bin}), 1, 1, s3, r3, &["other"]),
        ])
    );
    let (by_dest, _) = conns_json(&d, &in_ns(&["--by", "destination"]));
    assert_eq!(
        by_dest,
        sorted(vec![
            group(json!({"destination": web}), 2, 2, s_curl, r_curl, &["http"]),
            group(json!({"destination": plain}), 1, 1, s3, r3, &["other"]),
        ])
    );
    // The table a person reads: a header, one line per group, the total.
    let table = conns(&d, &in_ns(&["-o", "table"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for word in ["POD", "BINARY", "DESTINATION", "CONNS", "SENT", "RECEIVED"] {
        assert!(lines[0].contains(word), "{table}");
    }
    let curl_line = lines
        .iter()
        .find(|l| l.contains(&web))
        .unwrap_or_else(|| panic!("no line for {web}: {table}"));
    for cell in [
        POD,
        &curl,
        &s_curl.to_string(),
        &r_curl.to_string(),
        "http",
        "100%",
    ] {
        assert!(
            curl_line.split_whitespace().any(|c| c == cell),
            "{cell}: {table}"
        );
    }
    assert!(lines[3].starts_with("TOTAL"), "{table}");
    for cell in [(s_curl + s3).to_string(), (r_curl + r3).to_string()] {
        assert!(
            lines[3].split_whitespace().any(|c| c == cell),
            "{cell}: {table}"
        );
    }

    // Encrypted to the internet: TLS and the declared protocol, never in the plaintext report.
    let mut enc = vec![
        "--encrypted",
        "--internet",
        "--egress",
        "--namespace",
        NAMESPACE,
    ];
    enc.extend(["--by", "destination,protocol"]);
    let (encrypted, _) = conns_json(&d, &enc);
    let protocols: Vec<(Value, Value)> = encrypted
        .iter()
        .map(|g| (g[0]["destination"].clone(), g[0]["protocol"].clone()))
        .collect();
    assert_eq!(
        protocols,
        vec![
            (json!(format!("{WEB}:443")), json!("tls")),
            (json!(format!("{EXCHANGE}:9000")), json!("acme-tunnel")),
        ]
    );
    assert_eq!(
        encrypted[1],
        group(encrypted[1][0].clone(), 1, 0, s5, r5, &["acme-tunnel"])
    );

    // Plaintext served to the internet: the pod's server, by its listening address.
    let ingress_args = [
        "--plaintext",
        "--internet",
        "--ingress",
        "--namespace",
        NAMESPACE,
        "--by",
        "pod,destination",
    ];
    let (served, _) = conns_json(&d, &ingress_args);
    let service = format!("{}:8088", w.net.pod_v4);
    assert_eq!(
        served,
        vec![group(
            json!({"pod": POD, "destination": service}),
            1,
            1,
            38,
            31,
            &["http"]
        )]
    );

    // The metrics endpoint: the same totals under the same questions' labels.
    let plaintext_out = [
        ("direction", "egress"),
        ("scope", "internet"),
        ("encrypted", "false"),
    ];
    let want = (3, s_curl + s3, r_curl + r3);
    let text = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let t = scrape(metrics);
        (metric_totals(&t, &plaintext_out) == want).then_some(t)
    })
    .unwrap_or_else(|| panic!("metrics never showed {want:?}:\n{}", scrape(metrics)));
    assert_eq!(metric_totals(&text, &plaintext_out), want);
    let served_in = [
        ("direction", "ingress"),
        ("scope", "internet"),
        ("encrypted", "false"),
    ];
    assert_eq!(metric_totals(&text, &served_in), (1, 38, 31), "{text}");
    let tunnel_out = [
        ("direction", "egress"),
        ("protocol", "acme-tunnel"),
        ("encrypted", "true"),
    ];
    assert_eq!(metric_totals(&text, &tunnel_out), (1, s5, r5), "{text}");
    let cluster_out = [
        ("direction", "egress"),
        ("scope", "cluster"),
        ("encrypted", "false"),
    ];
    assert_eq!(metric_totals(&text, &cluster_out), (1, s6, r6), "{text}");

    let _ = exchange_server.kill();
    let _ = exchange_server.wait();
}

#[test]
fn a_bad_protocols_file_refuses_to_start_naming_the_line() {
    let _g = serial();
    let dir = bulwark_e2e::TempDir::new("conns-bad-protocols");
    let file = dir.join("protocols.yaml");
    // Line 6 has a signature that is not hex.
    std::fs::write(&file, PROTOCOLS.replace("ac 3e 01", "ac zz 01")).unwrap();
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    let mut child = Command::new(bulwark_bin())
        .args(["run", "--policy-dir"])
        .arg(dir.join("policies"))
        .arg("--events")
        .arg(dir.join("events.jsonl"))
        .arg("--pin-dir")
        .arg(dir.join("pins"))
        .arg("--protocols")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("run bulwark");
    let status =
        bulwark_e2e::poll_until(bulwark_e2e::timeout(), || child.try_wait().ok().flatten());
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("bulwark run with a bad --protocols file did not exit");
    };
    let stderr = std::fs::read_to_string(dir.join("stderr")).unwrap();
    assert!(!status.success(), "{stderr}");
    let at = format!("{}:6", file.display());
    assert!(stderr.contains(&at), "no {at} in: {stderr}");
    assert!(stderr.contains("BW100"), "{stderr}");
    assert!(
        !dir.join("events.jsonl").exists()
            || std::fs::read_to_string(dir.join("events.jsonl"))
                .unwrap()
                .is_empty()
    );
    assert!(
        !Path::new(&dir.join("pins")).exists(),
        "it pinned something"
    );
}
