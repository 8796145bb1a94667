//! monitor mode: the exec, connect and egress policies of the enforce tests with
//! `mode: monitor` kill and block nothing, and their events say what would have happened
//! (`would_kill` / `would_block`, `enforced: false`, `mode: monitor`).

use crate::wait_match;
use bulwark_e2e::daemon::ev;
use bulwark_e2e::netns::url;
use bulwark_e2e::{preflight, serial, Daemon, PolicyBuilder, RuleBuilder, TestServer, World};

#[test]
fn monitor_mode_kills_and_blocks_nothing_and_says_what_would_have_happened() {
    let _g = serial();
    let w = World::single("monitor", "e2e-mon");
    let srv = TestServer::start(&w.net, &[8080, 9090]);
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let ip = w.net.server_ip(false);
    let c4 = w.net.v4_cidr();
    let policies = [
        PolicyBuilder::new("e2e-mon-exec").mode("monitor").rule(
            RuleBuilder::exec("kill-touch")
                .namespaces("In", &["e2e-mon"])
                .binaries("In", &[touch.to_str().unwrap()])
                .action("Sigkill"),
        ),
        PolicyBuilder::new("e2e-mon-connect").mode("monitor").rule(
            RuleBuilder::connect("block-9090")
                .namespaces("In", &["e2e-mon"])
                .destinations("In", &[&c4], &["9090"], Some("TCP"))
                .action("Block"),
        ),
        PolicyBuilder::new("e2e-mon-egress").mode("monitor").rule(
            RuleBuilder::egress("no-plaintext")
                .namespaces("In", &["e2e-mon"])
                .destinations("In", &[&c4], &["8080"], Some("TCP"))
                .encryption("plaintext")
                .action("Block"),
        ),
    ];
    let files: Vec<(String, String)> = policies
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("mon-{i}.yaml"), p.yaml()))
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let d = Daemon::start(&w, &refs);

    // exec: the binary runs (its side effect happens); the event says would_kill.
    let marker = w.dir().join("monitored-marker");
    let out = w
        .pod()
        .run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert!(out.success(), "monitor mode must not kill: {out}");
    assert!(marker.exists(), "the monitored binary did not run");
    let m = d.wait_event("would_kill policy_match", |e| {
        ev::is_match(e, "e2e-mon-exec", "exec") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(m["outcome"], "would_kill", "{m}");
    assert_eq!(m["enforced"], false, "{m}");
    assert_eq!(m["mode"], "monitor", "{m}");
    assert_eq!(m["action"], "Sigkill", "{m}");
    let exit = d.wait_event("normal exit of the monitored binary", |e| {
        ev::is(e, "process_exit") && ev::pid(e) == Some(out.pid as u64)
    });
    assert!(exit["signal"].is_null() && exit["status"] == 0, "{exit}");

    // connect: it connects; the event says would_block.
    let out = w
        .pod()
        .probe(ip, 9090, &["--send", "GET /mon-connect HTTP/1.0\r\n\r\n"]);
    assert!(out.success(), "monitor mode must not block connect: {out}");
    let m = wait_match(&d, "e2e-mon-connect", "connect", out.pid, 9090);
    assert_eq!(m["outcome"], "would_block", "{m}");
    assert_eq!(m["enforced"], false, "{m}");
    assert_eq!(m["mode"], "monitor", "{m}");
    let c = d.wait_event("process_connect of the monitored connect", |e| {
        ev::is(e, "process_connect") && ev::pid(e) == Some(out.pid as u64)
    });
    assert_eq!(c["blocked"], false, "{c}");

    // egress: plaintext reaches the server; the event says would_block, plaintext.
    let out = w.pod().curl(&[&url("http", ip, 8080, "/mon-plain")]);
    assert!(
        out.success(),
        "monitor mode must not block plaintext: {out}"
    );
    let m = wait_match(&d, "e2e-mon-egress", "egress", out.pid, 8080);
    assert_eq!(m["outcome"], "would_block", "{m}");
    assert_eq!(m["enforced"], false, "{m}");
    assert_eq!(m["encryption"], "plaintext", "{m}");
    let log = srv.log();
    assert_eq!(log.requests_for("/mon-connect").len(), 1, "{log:?}");
    assert_eq!(log.requests_for("/mon-plain").len(), 1, "{log:?}");

    // Nothing anywhere was enforced.
    let enforced = d.find(|e| ev::is(e, "policy_match") && e["enforced"] == true);
    assert!(
        enforced.is_empty(),
        "monitor policies enforced something: {enforced:?}"
    );
}
