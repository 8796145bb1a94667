//! conns (issue 11): every TCP connection observed, whatever a policy watches — `process_close`
//! with role, endpoints, scope, each direction's first-payload classification and exact payload
//! byte totals (checked against what the client counted and against the other end's own
//! event), `conn_stats` while a connection moves bytes and none while it idles. Real clients
//! (curl http/https, openssl s_client, gnutls-cli, python ssl), an SSH banner exchange,
//! plaintext on 443, TLS on 80, the h2c preface, a reset, 10,000 short connections and ingress
//! from another namespace. The daemon runs with `--cluster-cidrs 127.0.0.0/8,::1/128`, so the
//! test world's 10.199.N.0/24 addresses are `internet` and loopback is `cluster`.

use bulwark_e2e::daemon::{ev, DaemonConfig};
use bulwark_e2e::netns::url;
use bulwark_e2e::{preflight, serial, Daemon, Event, TestServer, World};
use bulwark_events::{Connection, Protocol, Role, Scope};

/// The daemon of these tests: no policy, loopback is the only cluster range, 1 s windows.
fn daemon(w: &World) -> Daemon {
    Daemon::start_with(DaemonConfig {
        workloads: w.workloads_yaml(),
        extra_args: [
            "--cluster-cidrs",
            "127.0.0.0/8,::1/128",
            "--conn-interval",
            "1",
        ]
        .map(String::from)
        .to_vec(),
        ..DaemonConfig::default()
    })
}

pub(crate) fn conn(e: &Event) -> &Connection {
    e.typed().connection().expect("a connection event")
}

/// The `process_close` whose connection satisfies `pred`.
fn close(d: &Daemon, what: &str, pred: impl Fn(&Connection) -> bool) -> Event {
    d.wait_event(&format!("process_close of {what}"), |e| {
        ev::is(e, "process_close") && pred(conn(e))
    })
}

/// The client's and the server's `process_close` of the connection from local port `port`
/// to `server_port`; each end's bytes sent are the other's bytes received.
fn both_ends(d: &Daemon, what: &str, port: u16, server_port: u16) -> (Event, Event) {
    let client = close(d, &format!("{what} (client)"), |c| {
        c.role == Role::Client && c.local.port == port && c.remote.port == server_port
    });
    let server = close(d, &format!("{what} (server)"), |c| {
        c.role == Role::Server && c.remote.port == port && c.local.port == server_port
    });
    let (c, s) = (conn(&client), conn(&server));
    assert_eq!(
        (c.bytes_sent, c.bytes_received),
        (s.bytes_received, s.bytes_sent),
        "{what}: the two ends disagree\n{client}\n{server}"
    );
    assert_eq!(c.sent.protocol, s.received.protocol, "{what}");
    assert_eq!(c.received.protocol, s.sent.protocol, "{what}");
    (client, server)
}

/// curl with `-w` printing its local port and the exact bytes it sent and received.
pub(crate) fn curl_counted(w: &World, args: &[&str]) -> (u16, u64, u64) {
    curl_counting(w, args, true)
}

/// [`curl_counted`], asserting curl's success only when `must_succeed`.
fn curl_counting(w: &World, args: &[&str], must_succeed: bool) -> (u16, u64, u64) {
    let mut argv = vec![
        "-o",
        "/dev/null",
        "-w",
        "%{local_port} %{size_request} %{size_upload} %{size_header} %{size_download}",
    ];
    argv.extend_from_slice(args);
    let out = w.pod().curl(&argv);
    assert!(out.success() || !must_succeed, "curl {args:?}: {out}");
    let n: Vec<u64> = out
        .stdout
        .split_whitespace()
        .map(|x| x.parse().expect("a number"))
        .collect();
    (n[0] as u16, n[1] + n[2], n[3] + n[4])
}

#[test]
fn curl_http_and_https_plaintext_on_443_and_tls_on_80() {
    let _g = serial();
    let w = World::single("conns-curl", "e2e-conns");
    // The daemon first: a listener from before it has no known owner.
    let d = daemon(&w);
    let _srv = TestServer::start(&w.net, &[80, 443]);
    let ip = w.net.server_ip(false);

    let (port, sent, received) = curl_counted(&w, &[&url("http", ip, 80, "/bytes/1000")]);
    let (client, server) = both_ends(&d, "curl http", port, 80);
    let c = conn(&client);
    assert_eq!(
        (c.bytes_sent, c.bytes_received),
        (sent, received),
        "{client}"
    );
    assert_eq!(c.sent.protocol, Protocol::Http, "{client}");
    assert_eq!(c.received.protocol, Protocol::Http, "{client}");
    assert_eq!(c.encrypted, Some(false), "{client}");
    assert_eq!(c.scope, Scope::Internet, "{client}");
    assert_eq!(c.remote.ip, ip.to_string(), "{client}");
    assert_eq!(ev::binary(&client), preflight().curl.to_str().unwrap());
    assert_eq!(
        client["process"]["pod"]["namespace"], "e2e-conns",
        "{client}"
    );
    assert!(client["connection"]["close_time"].is_string(), "{client}");
    assert!(ev::binary(&server).contains("python"), "{server}");

    // HTTPS with a name: the ClientHello's SNI and ALPN.
    let resolve = format!("bulwark-e2e:443:{ip}");
    let (port, _, _) = curl_counted(
        &w,
        &[
            "-k",
            "--resolve",
            &resolve,
            "https://bulwark-e2e/bytes/1000",
        ],
    );
    let (client, _) = both_ends(&d, "curl https", port, 443);
    let c = conn(&client);
    assert_eq!(c.sent.protocol, Protocol::Tls, "{client}");
    assert_eq!(c.received.protocol, Protocol::Tls, "{client}");
    assert_eq!(c.encrypted, Some(true), "{client}");
    let tls = c.sent.tls.as_ref().expect("tls info");
    assert_eq!(tls.sni.as_deref(), Some("bulwark-e2e"), "{client}");
    assert!(tls.alpn.iter().any(|a| a == "http/1.1"), "{client}");
    assert!(c.bytes_sent > 0 && c.bytes_received > 1000, "{client}");

    // The port says nothing: plaintext on 443 is http, TLS on 80 is tls.
    let (port, sent, received) = curl_counted(&w, &[&url("http", ip, 443, "/plain-443")]);
    let (client, _) = both_ends(&d, "plaintext on 443", port, 443);
    let c = conn(&client);
    assert_eq!(
        (c.sent.protocol.clone(), c.encrypted),
        (Protocol::Http, Some(false))
    );
    assert_eq!(
        (c.bytes_sent, c.bytes_received),
        (sent, received),
        "{client}"
    );
    let (port, _, _) = curl_counted(&w, &["-k", &url("https", ip, 80, "/tls-80")]);
    let (client, _) = both_ends(&d, "TLS on 80", port, 80);
    assert_eq!(conn(&client).sent.protocol, Protocol::Tls, "{client}");

    // IPv6.
    let ip6 = w.net.server_ip(true);
    let (port, sent, received) = curl_counted(&w, &[&url("http", ip6, 80, "/v6")]);
    let (client, _) = both_ends(&d, "curl http over IPv6", port, 80);
    let c = conn(&client);
    assert_eq!(c.remote.ip, ip6.to_string(), "{client}");
    assert_eq!(
        (c.bytes_sent, c.bytes_received),
        (sent, received),
        "{client}"
    );
    assert_eq!(client["connection"]["family"], "ipv6", "{client}");
}

/// Runs a python program in the pod; it prints its connection's local port last.
fn python(w: &World, program: &str) -> u16 {
    let py = preflight().python3.to_str().unwrap().to_string();
    let out = w.pod().run(&[&py, "-c", program]);
    assert!(out.success(), "{program}\n{out}");
    out.stdout
        .split_whitespace()
        .last()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port printed: {out}"))
}

#[test]
fn tls_clients_ssh_banner_h2c_idle_and_reset() {
    let _g = serial();
    let w = World::single("conns-clients", "e2e-conns");
    let d = daemon(&w);
    let _srv = TestServer::start(&w.net, &[443, 8080]);
    let ip = w.net.server_ip(false);
    let tools = preflight();

    // openssl s_client and gnutls-cli: a ClientHello whatever the library.
    let request = "printf 'GET /x HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n'";
    let openssl = format!(
        "{request} | {} s_client -quiet -connect {ip}:443 2>/dev/null",
        tools.openssl.display()
    );
    let out = w.pod().run(&["sh", "-c", &openssl]);
    assert!(out.stdout.contains("ok /x"), "openssl s_client: {out}");
    let e = close(&d, "openssl s_client", |c| {
        c.role == Role::Client && c.remote.port == 443
    });
    assert!(ev::binary(&e).ends_with("openssl"), "{e}");
    assert_eq!(conn(&e).sent.protocol, Protocol::Tls, "{e}");
    let answer = w.dir().join("gnutls.out");
    let gnutls = format!(
        "({request}; until grep -q 'ok /x' {out}; do sleep 0.05; done) \
         | gnutls-cli --insecure --logfile=/dev/null -p 443 {ip} > {out}; cat {out}",
        out = answer.display()
    );
    let out = w.pod().run(&["sh", "-c", &gnutls]);
    assert!(out.stdout.contains("ok /x"), "gnutls-cli: {out}");
    let e = close(&d, "gnutls-cli", |c| {
        c.role == Role::Client && c.remote.port == 443
    });
    let e = if ev::binary(&e).ends_with("gnutls-cli") {
        e
    } else {
        d.wait_event("process_close of gnutls-cli", |e| {
            ev::is(e, "process_close") && ev::binary(e).ends_with("gnutls-cli")
        })
    };
    assert_eq!(conn(&e).sent.protocol, Protocol::Tls, "{e}");
    assert_eq!(conn(&e).received.protocol, Protocol::Tls, "{e}");

    // python ssl, counting what it sent and received through TLS is not the wire's count:
    // both ends of the wire must agree instead.
    let port = python(
        &w,
        &format!(
            "import socket, ssl\n\
             c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n\
             s = c.wrap_socket(socket.create_connection(('{ip}', 443)), server_hostname='py.example')\n\
             s.sendall(b'GET /py HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
             while s.recv(4096): pass\n\
             print(s.getsockname()[1])\n"
        ),
    );
    let (client, _) = both_ends(&d, "python ssl", port, 443);
    let c = conn(&client);
    assert_eq!(c.sent.protocol, Protocol::Tls, "{client}");
    assert_eq!(
        c.sent.tls.as_ref().and_then(|t| t.sni.as_deref()),
        Some("py.example"),
        "{client}"
    );

    // SSH banners both ways, on the pod's loopback (scope cluster), exact bytes.
    let port = python(
        &w,
        "import socket, threading\n\
         l = socket.socket(); l.bind(('127.0.0.1', 2222)); l.listen()\n\
         def serve():\n\
         \x20   s, _ = l.accept(); s.sendall(b'SSH-2.0-bulwark_srv\\r\\n'); s.recv(100); s.close()\n\
         t = threading.Thread(target=serve); t.start()\n\
         c = socket.create_connection(('127.0.0.1', 2222))\n\
         c.sendall(b'SSH-2.0-OpenSSH_9.6 bulwark\\r\\n')\n\
         b = b''\n\
         while True:\n\
         \x20   x = c.recv(100)\n\
         \x20   if not x: break\n\
         \x20   b += x\n\
         assert b == b'SSH-2.0-bulwark_srv\\r\\n', b\n\
         p = c.getsockname()[1]; c.close(); t.join(); print(p)\n",
    );
    let (client, server) = both_ends(&d, "SSH banners", port, 2222);
    let c = conn(&client);
    assert_eq!(
        (c.sent.protocol.clone(), c.received.protocol.clone()),
        (Protocol::Ssh, Protocol::Ssh)
    );
    assert_eq!((c.bytes_sent, c.bytes_received), (29, 21), "{client}");
    assert_eq!(
        (c.encrypted, c.scope),
        (Some(true), Scope::Cluster),
        "{client}"
    );
    assert_eq!(
        server["process"]["pod"]["namespace"], "e2e-conns",
        "{server}"
    );

    // The HTTP/2 cleartext preface (the test server speaks no HTTP/2: curl fails after it).
    let (port, _, _) = curl_counting(
        &w,
        &["--http2-prior-knowledge", &url("http", ip, 8080, "/h2c")],
        false,
    );
    // The server answers with a 400 and closes with the rest of the client's frames unread
    // (a reset): what the client saw acknowledged and what the server received may differ.
    let e = close(&d, "h2c (client)", |c| {
        c.role == Role::Client && c.local.port == port
    });
    assert_eq!(conn(&e).sent.protocol, Protocol::H2c, "{e}");
    let e = close(&d, "h2c (server)", |c| {
        c.role == Role::Server && c.remote.port == port
    });
    assert_eq!(conn(&e).received.protocol, Protocol::H2c, "{e}");

    // Idle for longer than the interval: stats only while bytes move, exact totals at close.
    let port = python(
        &w,
        &format!(
            "import socket, time\n\
             c = socket.create_connection(('{ip}', 8080))\n\
             c.sendall(b'x' * 100); time.sleep(3.5); c.sendall(b'y' * 50)\n\
             c.shutdown(socket.SHUT_WR)\n\
             while c.recv(4096): pass\n\
             print(c.getsockname()[1])\n"
        ),
    );
    let e = close(&d, "the idle connection", |c| {
        c.role == Role::Client && c.local.port == port
    });
    assert_eq!(conn(&e).bytes_sent, 150, "{e}");
    assert_eq!(conn(&e).sent.protocol, Protocol::Other, "{e}");
    let stats: Vec<Event> = d.find(|e| {
        ev::is(e, "conn_stats") && conn(e).role == Role::Client && conn(e).local.port == port
    });
    // The first 100 bytes go out at once; the next packet, 3.5 s later, reports them: no
    // stats record was sent while nothing moved (at most one per packet burst).
    assert!(stats.len() <= 2, "stats while idle: {stats:?}");
    let windowed: u64 = stats
        .iter()
        .map(|s| s["window"]["bytes_sent"].as_u64().unwrap())
        .sum();
    assert!(windowed <= 150, "{stats:?}");

    // A reset by the peer: the server reads 10 bytes and closes with unread data (RST).
    let port = python(
        &w,
        "import socket, struct, threading\n\
         l = socket.socket(); l.bind(('127.0.0.1', 2223)); l.listen()\n\
         def serve():\n\
         \x20   s, _ = l.accept(); s.recv(10); s.close()\n\
         t = threading.Thread(target=serve); t.start()\n\
         c = socket.create_connection(('127.0.0.1', 2223))\n\
         c.sendall(b'0123456789'); t.join()\n\
         try:\n\
         \x20   c.sendall(b'more data'); c.recv(10); c.sendall(b'again'); c.recv(10)\n\
         except OSError: pass\n\
         print(c.getsockname()[1])\n",
    );
    let client = close(&d, "the reset connection (client)", |c| {
        c.role == Role::Client && c.local.port == port
    });
    assert_eq!(conn(&client).bytes_received, 0, "{client}");
    assert!(conn(&client).bytes_sent >= 10, "{client}");
}

#[test]
fn ten_thousand_short_connections_all_accounted_for() {
    let _g = serial();
    let w = World::single("conns-many", "e2e-conns");
    let d = daemon(&w);
    let n: usize = std::env::var("BULWARK_E2E_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // A server and a client in the pod: each connection sends 100 bytes and gets 37 back.
    let out = w.pod().run_timeout(
        &[
            preflight().python3.to_str().unwrap(),
            "-c",
            &format!(
                "import socket, threading\n\
                 l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
                 l.bind(('127.0.0.1', 2224)); l.listen(512)\n\
                 def serve():\n\
                 \x20   for _ in range({n}):\n\
                 \x20       s, _ = l.accept(); got = 0\n\
                 \x20       while got < 100: got += len(s.recv(100 - got))\n\
                 \x20       s.sendall(b'r' * 37); s.close()\n\
                 t = threading.Thread(target=serve); t.start()\n\
                 for _ in range({n}):\n\
                 \x20   c = socket.create_connection(('127.0.0.1', 2224)); c.sendall(b'q' * 100)\n\
                 \x20   got = 0\n\
                 \x20   while True:\n\
                 \x20       x = c.recv(100)\n\
                 \x20       if not x: break\n\
                 \x20       got += len(x)\n\
                 \x20   assert got == 37\n\
                 \x20   c.close()\n\
                 t.join(); print('done')\n"
            ),
        ],
        std::time::Duration::from_secs(300),
    );
    assert!(out.success() && out.stdout.contains("done"), "{out}");
    let is_client = |e: &Event| {
        ev::is(e, "process_close") && conn(e).role == Role::Client && conn(e).remote.port == 2224
    };
    let is_server = |e: &Event| {
        ev::is(e, "process_close") && conn(e).role == Role::Server && conn(e).local.port == 2224
    };
    let all = bulwark_e2e::poll_until(bulwark_e2e::timeout(), || {
        let (c, s) = (d.find(is_client), d.find(is_server));
        (c.len() >= n && s.len() >= n).then_some((c, s))
    });
    let (clients, servers) = all.unwrap_or_else(|| {
        panic!(
            "not every connection was reported: {} client and {} server closes of {n}; \
             last status: {:?}",
            d.find(is_client).len(),
            d.find(is_server).len(),
            d.find(|e| ev::is(e, "status")).last()
        )
    });
    assert_eq!((clients.len(), servers.len()), (n, n));
    for e in &clients {
        let c = conn(e);
        assert_eq!((c.bytes_sent, c.bytes_received), (100, 37), "{e}");
        assert_eq!(c.sent.protocol, Protocol::Other, "{e}");
    }
    for e in &servers {
        let c = conn(e);
        assert_eq!((c.bytes_sent, c.bytes_received), (37, 100), "{e}");
    }
    let ports: std::collections::HashSet<u16> =
        clients.iter().map(|e| conn(e).local.port).collect();
    assert!(ports.len() > 1, "distinct connections");
}

/// An HTTP exchange into the pod: a python server in the pod listens on port 8088 (an IPv6
/// socket, IPv4 too) and answers 38 bytes; a client in the server namespace, from `source`
/// (default: the server's main address), sends 31 bytes. Asserts the server got them.
pub(crate) fn ingress_exchange(w: &World, source: Option<std::net::Ipv4Addr>) {
    let py = preflight().python3.to_str().unwrap().to_string();
    let ready = w.dir().join("listening");
    let server = w.pod().spawn(&[
        &py,
        "-c",
        &format!(
            "import socket\n\
             l = socket.socket(socket.AF_INET6); l.bind(('::', 8088)); l.listen()\n\
             open('{}', 'w').close()\n\
             s, _ = l.accept(); s.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\n\\r\\n')\n\
             got = 0\n\
             while True:\n\
             \x20   x = s.recv(4096)\n\
             \x20   if not x: break\n\
             \x20   got += len(x)\n\
             print(got)\n",
            ready.display()
        ),
    ]);
    assert!(
        bulwark_e2e::poll_until(bulwark_e2e::timeout(), || ready.exists().then_some(())).is_some(),
        "the pod's server did not start"
    );
    let source = source.map_or(String::new(), |ip| format!(", source_address=('{ip}', 0)"));
    let client = std::process::Command::new(&preflight().ip)
        .args(["netns", "exec", &w.net.server])
        .arg(&py)
        .arg("-c")
        .arg(format!(
            "import socket\n\
             c = socket.create_connection(('{}', 8088){source})\n\
             c.sendall(b'GET /in HTTP/1.1\\r\\nHost: pod\\r\\n\\r\\n')\n\
             c.recv(100); c.close()\n",
            w.net.pod_v4
        ))
        .output()
        .expect("client in the server namespace");
    assert!(client.status.success(), "{client:?}");
    let out = server.wait(bulwark_e2e::timeout());
    assert_eq!(out.stdout.trim(), "31", "{out}");
}

#[test]
fn ingress_from_another_namespace_names_the_pod_server() {
    let _g = serial();
    let w = World::single("conns-ingress", "e2e-conns");
    let d = daemon(&w);
    ingress_exchange(&w, None);
    let e = close(&d, "the pod's server", |c| {
        c.role == Role::Server && c.local.port == 8088
    });
    let c = conn(&e);
    assert_eq!(c.remote.ip, w.net.server_v4.to_string(), "{e}");
    assert_eq!((c.bytes_received, c.bytes_sent), (31, 38), "{e}");
    assert_eq!(c.received.protocol, Protocol::Http, "{e}");
    assert_eq!(c.scope, Scope::Internet, "{e}");
    assert_eq!(e["process"]["pod"]["namespace"], "e2e-conns", "{e}");
    assert!(ev::binary(&e).contains("python"), "{e}");
}
