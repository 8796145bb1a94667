//! connect hook: `Block` by IPv4 CIDR + port, by IPv6, and NotIn (allow-list) semantics. The
//! client sees EPERM from connect(), the server never sees the connection, and destinations
//! outside the rule still work.

use crate::{assert_connected, assert_eperm, wait_match};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::netns::url;
use bulwark_e2e::{serial, Daemon, PolicyBuilder, RuleBuilder, TestServer, World};

#[test]
fn connect_block_by_v4_cidr_and_port() {
    let _g = serial();
    let w = World::single("conn-v4", "e2e-conn");
    let srv = TestServer::start(&w.net, &[8080, 9090]);
    let target = format!("{}/32", w.net.server_v4);
    let policy = PolicyBuilder::new("e2e-connect-v4")
        .rule(
            RuleBuilder::connect("block-v4-8080")
                .namespaces("In", &["e2e-conn"])
                .destinations("In", &[&target], &["8080"], Some("TCP"))
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("v4.yaml", &policy)]);
    let ip = w.net.server_ip(false);

    let out = w
        .pod()
        .probe(ip, 8080, &["--send", "GET /blocked HTTP/1.0\r\n\r\n"]);
    assert_eperm(&out);
    let m = wait_match(&d, "e2e-connect-v4", "connect", out.pid, 8080);
    assert_eq!(m["outcome"], "blocked", "{m}");
    assert_eq!(m["enforced"], true, "{m}");
    assert_eq!(m["action"], "Block", "{m}");
    assert_eq!(m["rule"], "block-v4-8080", "{m}");
    assert_eq!(ev::dest(&m), (w.net.server_v4.to_string(), 8080), "{m}");
    assert_eq!(m["destination"]["protocol"], "TCP", "{m}");
    let c = d.wait_event("process_connect with blocked: true", |e| {
        ev::is(e, "process_connect") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(c["blocked"], true, "{c}");

    // curl sees the failure too (exit 7: failed to connect).
    let out = w.pod().curl(&[&url("http", ip, 8080, "/curl-blocked")]);
    assert_eq!(out.code, Some(7), "curl should fail to connect: {out}");

    // Other port, other address of the same subnet: allowed.
    assert_connected(
        &w.pod()
            .probe(ip, 9090, &["--send", "GET /p9090 HTTP/1.0\r\n\r\n"]),
    );
    let alt = w.net.server_alt_ip(false);
    assert_connected(
        &w.pod()
            .probe(alt, 8080, &["--send", "GET /alt HTTP/1.0\r\n\r\n"]),
    );
    // IPv6 to the same server and port is not in the rule.
    let v6 = w.net.server_ip(true);
    assert_connected(
        &w.pod()
            .probe(v6, 8080, &["--send", "GET /v6 HTTP/1.0\r\n\r\n"]),
    );

    let log = srv.log();
    assert!(
        log.requests_for("/blocked").is_empty() && log.requests_for("/curl-blocked").is_empty(),
        "a blocked connection reached the server: {log:?}"
    );
    let accepted_v4_8080 = log
        .accepts()
        .iter()
        .filter(|a| a["port"] == 8080 && a["local"] == w.net.server_v4.to_string())
        .count();
    assert_eq!(
        accepted_v4_8080, 0,
        "blocked connects were accepted: {log:?}"
    );
    for p in ["/p9090", "/alt", "/v6"] {
        assert_eq!(
            log.requests_for(p).len(),
            1,
            "{p} should have arrived: {log:?}"
        );
    }
}

#[test]
fn connect_block_by_v6() {
    let _g = serial();
    let w = World::single("conn-v6", "e2e-conn");
    let srv = TestServer::start(&w.net, &[8080, 9090]);
    let target = format!("{}/128", w.net.server_v6);
    let policy = PolicyBuilder::new("e2e-connect-v6")
        .rule(
            RuleBuilder::connect("block-v6-range")
                .namespaces("In", &["e2e-conn"])
                .destinations("In", &[&target], &["8000-8099"], Some("TCP"))
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("v6.yaml", &policy)]);
    let v6 = w.net.server_ip(true);

    let out = w.pod().probe(v6, 8080, &[]);
    assert_eperm(&out);
    let m = wait_match(&d, "e2e-connect-v6", "connect", out.pid, 8080);
    assert_eq!(m["outcome"], "blocked", "{m}");
    assert_eq!(ev::dest(&m), (w.net.server_v6.to_string(), 8080), "{m}");
    let out = w.pod().curl(&[&url("http", v6, 8080, "/curl-v6")]);
    assert_eq!(out.code, Some(7), "curl should fail to connect: {out}");

    // Outside the range, another v6 host, and v4 to the same port: allowed.
    assert_connected(
        &w.pod()
            .probe(v6, 9090, &["--send", "GET /v6-9090 HTTP/1.0\r\n\r\n"]),
    );
    let alt = w.net.server_alt_ip(true);
    assert_connected(
        &w.pod()
            .probe(alt, 8080, &["--send", "GET /v6-alt HTTP/1.0\r\n\r\n"]),
    );
    let v4 = w.net.server_ip(false);
    assert_connected(
        &w.pod()
            .probe(v4, 8080, &["--send", "GET /v4 HTTP/1.0\r\n\r\n"]),
    );
    let log = srv.log();
    assert!(log.requests_for("/curl-v6").is_empty(), "{log:?}");
    for p in ["/v6-9090", "/v6-alt", "/v4"] {
        assert_eq!(
            log.requests_for(p).len(),
            1,
            "{p} should have arrived: {log:?}"
        );
    }
}

#[test]
fn connect_notin_allow_list() {
    let _g = serial();
    let w = World::single("conn-allow", "e2e-conn");
    let srv = TestServer::start(&w.net, &[8080]);
    let allow_v4 = format!("{}/32", w.net.server_v4_alt);
    let allow_v6 = format!("{}/128", w.net.server_v6_alt);
    let policy = PolicyBuilder::new("e2e-connect-allow-list")
        .rule(
            RuleBuilder::connect("only-alt")
                .namespaces("In", &["e2e-conn"])
                .destinations("NotIn", &[&allow_v4, &allow_v6], &[], None)
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("allow.yaml", &policy)]);

    // Listed destinations work, v4 and v6.
    for v6 in [false, true] {
        let alt = w.net.server_alt_ip(v6);
        let path = format!("/allowed-{v6}");
        let out = w.pod().curl(&[&url("http", alt, 8080, &path)]);
        assert!(out.success(), "allowed destination {alt} failed: {out}");
        assert_eq!(srv.log().requests_for(&path).len(), 1);
    }
    // Everything else is refused: TCP v4/v6 and UDP.
    for v6 in [false, true] {
        let ip = w.net.server_ip(v6);
        let out = w.pod().probe(ip, 8080, &[]);
        assert_eperm(&out);
        let m = wait_match(&d, "e2e-connect-allow-list", "connect", out.pid, 8080);
        assert_eq!(m["outcome"], "blocked", "{m}");
    }
    let out = w
        .pod()
        .probe(w.net.server_ip(false), 5353, &["--udp", "--send", "x"]);
    assert_eperm(&out);
    let m = wait_match(&d, "e2e-connect-allow-list", "connect", out.pid, 5353);
    assert_eq!(m["destination"]["protocol"], "UDP", "{m}");
    // Unconnected UDP (sendto without connect) is refused too; to an allowed address it works.
    let out = w
        .pod()
        .probe(w.net.server_ip(true), 5353, &["--sendto", "x"]);
    assert_eq!(
        out.json()["sendto"],
        "EPERM",
        "unconnected UDP to a refused address: {out}"
    );
    wait_match(&d, "e2e-connect-allow-list", "connect", out.pid, 5353);
    let out = w
        .pod()
        .probe(w.net.server_alt_ip(true), 5353, &["--sendto", "x"]);
    assert_eq!(
        out.json()["sendto"],
        "ok",
        "unconnected UDP to an allowed address: {out}"
    );
    assert_eq!(
        srv.log().accepts().len(),
        2,
        "only the two allowed connections arrive"
    );
}
