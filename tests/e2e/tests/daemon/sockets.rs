//! The socket guard (issue 9, item 6): a workload an enforce-mode `Block` rule on `connect` or
//! `egress` covers cannot reach the network around those hooks. Raw IP, ICMP "ping" and MPTCP
//! sockets are refused (EPERM), a process asking for a packet socket is killed — by the socket
//! syscall, the 32-bit syscalls and io_uring alike — and nothing it tried reaches the server
//! namespace (a capture there looks for each attempt's marker). A workload the rule does not
//! cover keeps every socket type (its raw ICMP echo is answered); monitor mode reports and
//! allows. The probes run as root in the pod, so they hold CAP_NET_RAW.

use bulwark_e2e::daemon::ev;
use bulwark_e2e::raw::marker;
use bulwark_e2e::{
    serial, socket_result, Daemon, Event, PolicyBuilder, RuleBuilder, RunOutput, Sniffer, World,
    WorldConfig,
};

const COVERED: &str = "e2e-sock";
const FREE: &str = "e2e-sock-free";

/// Pod 0 in namespace [`COVERED`], pod 1 in [`FREE`] (same network), ping sockets allowed.
fn world(tag: &str) -> World {
    let w = World::new(WorldConfig {
        tag: tag.to_string(),
        pods: vec![
            (COVERED.to_string(), "covered".to_string()),
            (FREE.to_string(), "free".to_string()),
        ],
    });
    w.pods[0].allow_ping_sockets();
    w
}

/// A policy with one rule on `hook` that blocks plaintext HTTP to the server for [`COVERED`]:
/// nothing in it is about raw sockets, yet it makes the namespace covered.
fn policy(name: &str, hook: &str, w: &World, mode: &str) -> String {
    let server = format!("{}/32", w.net.server_v4);
    let mut rule = RuleBuilder::new("no-http", hook)
        .namespaces("In", &[COVERED])
        .destinations("In", &[&server], &["8080"], Some("TCP"));
    if hook == "egress" {
        rule = rule.encryption("plaintext");
    }
    PolicyBuilder::new(name)
        .mode(mode)
        .rule(rule.action("Block"))
        .yaml()
}

/// The world of [`world`], a capture in its server namespace and the daemon with `policy`
/// (bound in this order, so they go away daemon first).
fn start(tag: &str, name: &str, hook: &str, mode: &str) -> (World, Sniffer, Daemon) {
    let w = world(tag);
    let sniff = Sniffer::start(&w.net);
    let d = Daemon::start(&w, &[("g.yaml", &policy(name, hook, &w, mode))]);
    (w, sniff, d)
}

/// The `policy_match` of `policy` for process `pid` with `reason`.
fn wait_reason(d: &Daemon, policy: &str, pid: u32, reason: &str) -> Event {
    d.wait_event(
        &format!("policy_match of {policy} for pid {pid} with reason {reason}"),
        |e| {
            e.typed().policy_match().is_some_and(|m| {
                m.policy_name.as_deref() == Some(policy)
                    && m.reason.is_some_and(|r| r.as_str() == reason)
            }) && ev::pid(e) == Some(pid as u64)
        },
    )
}

/// The probe was refused a socket with EPERM and sent nothing.
fn assert_refused(out: &RunOutput) {
    let r = socket_result(out);
    assert_eq!(
        r["socket"], "EPERM",
        "socket() should fail with EPERM: {out}"
    );
    assert_eq!(out.code, Some(3), "{out}");
}

/// The probe made its socket and sent its marker (and, for echo kinds, got the reply).
fn assert_sent(out: &RunOutput, reply: bool) {
    let r = socket_result(out);
    assert_eq!(r["socket"], "ok", "the socket should be made: {out}");
    assert_eq!(r["sent"], "ok", "the marker should be sent: {out}");
    assert_eq!(r["reply"], reply, "reply: {out}");
    assert!(out.success(), "{out}");
}

/// The probe was SIGKILLed before it could say it had a socket, and the kill was reported.
fn assert_killed(d: &Daemon, policy: &str, out: &RunOutput) -> Event {
    assert!(
        out.sigkilled(),
        "asking for a packet socket should be fatal: {out}"
    );
    assert!(
        socket_result(out)["socket"].is_null(),
        "the process ran on after the socket was made: {out}"
    );
    let m = wait_reason(d, policy, out.pid, "packet_socket");
    let pid = out.pid as u64;
    let exit = d.wait_event(&format!("process_exit of pid {pid}"), |e| {
        ev::is(e, "process_exit") && ev::pid(e) == Some(pid)
    });
    assert_eq!(exit["signal"], "SIGKILL", "{exit}");
    m
}

#[test]
fn covered_workload_gets_eperm_for_raw_icmp_and_mptcp_sockets_and_others_keep_them() {
    let _g = serial();
    let (w, sniff, d) = start("sock-inet", "e2e-sock-connect", "connect", "enforce");
    let (covered, free) = (&w.pods[0], &w.pods[1]);
    let v4 = w.net.server_ip(false);
    let v6 = w.net.server_ip(true);

    let mut refused_markers = Vec::new();
    for (kind, dest, reason) in [
        ("raw-tcp", v4, "raw_socket"),
        ("raw-icmp", v4, "raw_socket"),
        ("raw6-icmp", v6, "raw_socket"),
        ("ping", v4, "icmp_socket"),
        ("mptcp", v4, "mptcp"),
    ] {
        let m = marker(kind);
        let out = covered.socket_probe(kind, dest, &m, 8080);
        assert_refused(&out);
        let e = wait_reason(&d, "e2e-sock-connect", out.pid, reason);
        assert_eq!(e["outcome"], "blocked", "{kind}: {e}");
        assert_eq!(e["enforced"], true, "{kind}: {e}");
        assert_eq!(e["action"], "Block", "{kind}: {e}");
        assert_eq!(e["hook"], "connect", "{kind}: {e}");
        assert_eq!(e["rule"], "no-http", "{kind}: {e}");
        assert!(e["destination"].is_null(), "no socket, no destination: {e}");
        assert_eq!(e["process"]["pod"]["namespace"], COVERED, "{e}");
        refused_markers.push(m);
    }

    // Another namespace keeps raw and ping sockets: its echo requests are answered.
    let answered = marker("free-raw-icmp");
    let out = free.socket_probe("raw-icmp", v4, &answered, 0);
    assert_sent(&out, true);
    sniff.wait_for(&answered);
    let out_ping = free.socket_probe("ping", v4, &marker("free-ping"), 0);
    assert_sent(&out_ping, true);
    for pid in [out.pid, out_ping.pid] {
        d.assert_no_event(&format!("policy_match for the free pod's pid {pid}"), |e| {
            ev::is(e, "policy_match") && ev::pid(e) == Some(pid as u64)
        });
    }
    // The free pod's frames came after every refused attempt: none of those got out.
    for m in &refused_markers {
        assert!(!sniff.saw(m), "{m} reached the server namespace");
    }
}

#[test]
fn covered_workload_is_killed_asking_for_a_packet_socket_by_any_path() {
    let _g = serial();
    let (w, sniff, d) = start("sock-packet", "e2e-sock-egress", "egress", "enforce");
    let (covered, free) = (&w.pods[0], &w.pods[1]);
    let v4 = w.net.server_ip(false);

    let mut killed_markers = Vec::new();
    // The socket syscall, the old SOCK_PACKET type, AF_XDP, the 32-bit socket and socketcall
    // syscalls (never seen by the syscalls: tracepoints) and io_uring's IORING_OP_SOCKET.
    for kind in [
        "packet",
        "sock-packet",
        "xdp",
        "packet-int80",
        "socketcall",
        "packet-uring",
    ] {
        let m = marker(kind);
        let out = covered.socket_probe(kind, v4, &m, 0);
        let e = assert_killed(&d, "e2e-sock-egress", &out);
        assert_eq!(e["outcome"], "killed", "{kind}: {e}");
        assert_eq!(e["enforced"], true, "{kind}: {e}");
        assert_eq!(e["hook"], "egress", "{kind}: {e}");
        assert!(e["destination"].is_null(), "{kind}: {e}");
        killed_markers.push(m);
    }

    // Another namespace keeps packet sockets: its frame reaches the server namespace.
    let seen = marker("free-packet");
    let out = free.socket_probe("packet", v4, &seen, 0);
    assert_sent(&out, false);
    sniff.wait_for(&seen);
    d.assert_no_event("policy_match for the free pod", |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(out.pid as u64)
    });
    for m in &killed_markers {
        assert!(!sniff.saw(m), "{m} reached the server namespace");
    }
}

#[test]
fn monitor_mode_reports_what_the_socket_guard_would_do_and_allows_it() {
    let _g = serial();
    let (w, sniff, d) = start("sock-monitor", "e2e-sock-monitor", "connect", "monitor");
    let covered = &w.pods[0];
    let v4 = w.net.server_ip(false);

    let echo = marker("monitor-raw-icmp");
    let out = covered.socket_probe("raw-icmp", v4, &echo, 0);
    assert_sent(&out, true);
    sniff.wait_for(&echo);
    let e = wait_reason(&d, "e2e-sock-monitor", out.pid, "raw_socket");
    assert_eq!(e["outcome"], "would_block", "{e}");
    assert_eq!(e["enforced"], false, "{e}");
    assert_eq!(e["mode"], "monitor", "{e}");

    let frame = marker("monitor-packet");
    let out = covered.socket_probe("packet", v4, &frame, 0);
    assert_sent(&out, false);
    sniff.wait_for(&frame);
    let e = wait_reason(&d, "e2e-sock-monitor", out.pid, "packet_socket");
    assert_eq!(e["outcome"], "would_kill", "{e}");
    assert_eq!(e["enforced"], false, "{e}");
}
