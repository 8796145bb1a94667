//! Attacks on the per-process and per-socket decisions since selector groups (issue 14.1): a
//! process moved to another namespace's cgroup without exec, a socket shared by processes of
//! different groups, a binary reached by another name than its path, and io_uring connects and
//! sends on a fixed file across a policy switch. Each attack runs as real processes in the test
//! pods and asserts what bulwark did (a refused connect or send, a kill, the events).

use crate::attacks::{assert_server_never_saw, lines, spawn_until_line};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::{
    poll_until, preflight, serial, timeout, Daemon, Pod, PolicyBuilder, RuleBuilder, Running,
    TestServer, World, WorldConfig,
};
use serde_json::Value;
use std::path::Path;

/// The connect-hook policy used below: Block TCP (or `protocol`) to the test subnet on `port`
/// from namespace `ns`; `extra` adds an unrelated rule so that a new version of the file is
/// another rule set (a switch, with its reseed of every process).
fn block_connect(name: &str, ns: &str, port: &str, protocol: &str, extra: bool) -> String {
    block_connect_policy(name, ns, port, protocol, extra).yaml()
}

fn block_connect_policy(
    name: &str,
    ns: &str,
    port: &str,
    protocol: &str,
    extra: bool,
) -> PolicyBuilder {
    let mut p = PolicyBuilder::new(name).rule(
        RuleBuilder::connect("block")
            .namespaces("In", &[ns])
            .destinations("In", &["10.199.0.0/16"], &[port], Some(protocol))
            .action("Block"),
    );
    if extra {
        p = p.rule(
            RuleBuilder::connect("unrelated")
                .namespaces("In", &[ns])
                .destinations("In", &["192.0.2.0/24"], &["9"], Some("TCP"))
                .action("Block"),
        );
    }
    p
}

/// A `connect-on` workload (see the helper): one connect per `go()`, its outcome returned.
struct Connector {
    run: Running,
    dir: std::path::PathBuf,
    n: u32,
}

impl Connector {
    fn start(pod: &Pod, dir: &Path, ip: std::net::IpAddr, port: u16) -> Connector {
        std::fs::create_dir_all(dir).unwrap();
        let run = pod.spawn(&[
            crate::helper(),
            "connect-on",
            dir.to_str().unwrap(),
            &ip.to_string(),
            &port.to_string(),
        ]);
        let ready = poll_until(timeout(), || dir.join("ready").exists().then_some(()));
        assert!(ready.is_some(), "connect-on did not start in {}", pod.name);
        Connector {
            run,
            dir: dir.to_path_buf(),
            n: 0,
        }
    }

    fn pid(&self) -> u32 {
        self.run.pid()
    }

    /// One connect attempt now: `ok`, `EPERM`, ...
    fn go(&mut self) -> String {
        self.go_to(None)
    }

    /// One connect attempt now, to `port` instead of the one it started with.
    fn go_to(&mut self, port: Option<u16>) -> String {
        self.n += 1;
        let port = port.map(|p| p.to_string()).unwrap_or_default();
        std::fs::write(self.dir.join(format!("go-{}", self.n)), port).unwrap();
        let result = self.dir.join(format!("result-{}", self.n));
        poll_until(timeout(), || std::fs::read_to_string(&result).ok())
            .unwrap_or_else(|| panic!("connect {} of pid {} never finished", self.n, self.pid()))
    }

    /// Moves the process (all its threads) into `to`'s cgroup without an exec.
    fn move_to(&self, to: &Pod) {
        std::fs::write(to.cgroup.procs_file(), self.pid().to_string()).unwrap();
        let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", self.pid())).unwrap();
        assert!(
            cg.trim_end().ends_with(to.cgroup.relative()),
            "pid {} not moved to {}: {cg}",
            self.pid(),
            to.cgroup.relative()
        );
    }
}

/// Issue 14.1: a process moved to another Kubernetes namespace's cgroup without exec, in both
/// directions, is judged by the namespace of the cgroup it is in now, at once (no rule-set
/// switch needed): the kernel gives a process moved into another namespace every selector of
/// its new group (fail closed: the one moved into A is blocked from the move on) and the
/// daemon recomputes its bits from /proc right after (then a selector of A whose binary it
/// does not run no longer holds for it); the one that left A is no longer under A's rules. A
/// switch (its reseed reads /proc too) changes nothing. Being able to write another pod's
/// `cgroup.procs` is the boundary (docs/enforcement.md, "Selector groups").
#[test]
fn a_process_moved_to_another_namespace_without_exec() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "move".into(),
        pods: vec![
            ("e2e-move-a".into(), "a".into()),
            ("e2e-move-b".into(), "b".into()),
        ],
    });
    let _srv = TestServer::start(&w.net, &[8080, 8081]);
    // A's group also has a Block on 8081 for a binary nobody runs: it holds for a moved
    // process only while its bits are the fail-closed "every selector".
    let policy = |extra: bool| {
        block_connect_policy("e2e-move", "e2e-move-a", "8080", "TCP", extra)
            .rule(
                RuleBuilder::connect("other-binary")
                    .namespaces("In", &["e2e-move-a"])
                    .binaries("In", &["/nonexistent/e2e-move-other"])
                    .destinations("In", &["10.199.0.0/16"], &["8081"], Some("TCP"))
                    .action("Block"),
            )
            .yaml()
    };
    let d = Daemon::start(&w, &[("move.yaml", &policy(false))]);
    let ip = w.net.server_ip(false);
    let (a, b) = (&w.pods[0], &w.pods[1]);
    let mut leaver = Connector::start(a, &w.dir().join("leaver"), ip, 8080);
    let mut joiner = Connector::start(b, &w.dir().join("joiner"), ip, 8080);
    assert_eq!(leaver.go(), "EPERM", "in namespace A, before any move");
    crate::wait_match(&d, "e2e-move", "connect", leaver.pid(), 8080);
    assert_eq!(
        leaver.go_to(Some(8081)),
        "ok",
        "8081 is blocked for another binary"
    );
    assert_eq!(joiner.go(), "ok", "in namespace B, before any move");

    joiner.move_to(a);
    let mark = d.mark();
    // No window: the kernel judges it in A from the move on.
    assert_eq!(
        joiner.go(),
        "EPERM",
        "a process moved into namespace A escaped A's Block rule"
    );
    let m = d.wait_event_after(mark, "the match of the joiner after its move", |e| {
        ev::is_match(e, "e2e-move", "connect") && ev::pid(e) == Some(joiner.pid() as u64)
    });
    assert_eq!(m["outcome"], "blocked", "{m}");
    // The daemon recomputes its bits: the selector of another binary stops holding.
    let recomputed = poll_until(timeout(), || {
        (joiner.go_to(Some(8081)) == "ok").then_some(())
    });
    assert!(
        recomputed.is_some(),
        "the joiner's bits were never recomputed from /proc (8081 still refused)"
    );
    assert_eq!(
        joiner.go(),
        "EPERM",
        "the joiner after its bits were recomputed"
    );

    leaver.move_to(b);
    let left = poll_until(timeout(), || (leaver.go() == "ok").then_some(()));
    assert!(
        left.is_some(),
        "the process that left A is still judged in A"
    );

    // A switch (a new version of the file): every process is reseeded from /proc, with the
    // same outcome.
    let st = d.replace_policy("move.yaml", &policy(true));
    assert_eq!(st["state"], "reloaded", "{st}");
    let mark = d.mark();
    assert_eq!(
        joiner.go(),
        "EPERM",
        "the process moved into A after the reseed"
    );
    let m = d.wait_event_after(mark, "the joiner's match after the reseed", |e| {
        ev::is_match(e, "e2e-move", "connect") && ev::pid(e) == Some(joiner.pid() as u64)
    });
    assert_eq!(m["outcome"], "blocked", "{m}");
    assert_eq!(
        joiner.go_to(Some(8081)),
        "ok",
        "the joiner on 8081 after the reseed"
    );
    assert_eq!(leaver.go(), "ok", "the leaver after the reseed");
    std::fs::write(w.dir().join("leaver/stop"), "").unwrap();
    std::fs::write(w.dir().join("joiner/stop"), "").unwrap();
}

/// A child created straight into another namespace's cgroup with `clone3(CLONE_INTO_CGROUP)`
/// (no move through `cgroup.procs`, so no `cgroup_attach_task`, and no exec): fork sees its
/// cgroup and judges it in that namespace from its first instruction, in both directions —
/// born into A it is blocked by A's rule, born into B from A it is not.
#[test]
fn a_child_cloned_into_another_namespace_cgroup() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "clone".into(),
        pods: vec![
            ("e2e-clone-a".into(), "a".into()),
            ("e2e-clone-b".into(), "b".into()),
        ],
    });
    let _srv = TestServer::start(&w.net, &[8080]);
    let policy = block_connect("e2e-clone", "e2e-clone-a", "8080", "TCP", false);
    let d = Daemon::start(&w, &[("clone.yaml", &policy)]);
    let ip = w.net.server_ip(false).to_string();
    let (a, b) = (&w.pods[0], &w.pods[1]);
    let clone_into = |from: &Pod, to: &Pod| -> Value {
        // `ip netns exec` mounts a fresh /sys: reach the cgroup through this test's root.
        let dir = format!(
            "/proc/{}/root{}",
            std::process::id(),
            to.cgroup.path().display()
        );
        let out = from.run(&[crate::helper(), "clone-into", &dir, &ip, "8080"]);
        assert!(out.success(), "clone-into from {}: {out:?}", from.name);
        let v = out.json();
        let cg = v["cgroup"].as_str().unwrap_or_default();
        assert!(
            cg.ends_with(to.cgroup.relative()),
            "the child was not born in {}: {v}",
            to.cgroup.relative()
        );
        v
    };
    assert_eq!(
        b.probe(w.net.server_ip(false), 8080, &[]).json()["connect"],
        "ok",
        "B itself is not under A's rule"
    );

    let mark = d.mark();
    let born_in_a = clone_into(b, a);
    assert_eq!(
        born_in_a["connect"], "EPERM",
        "a child cloned into namespace A escaped A's Block rule: {born_in_a}"
    );
    let pid = born_in_a["pid"].as_u64().unwrap();
    let m = d.wait_event_after(mark, "the match of the child born in A", |e| {
        ev::is_match(e, "e2e-clone", "connect") && ev::pid(e) == Some(pid)
    });
    assert_eq!(m["outcome"], "blocked", "{m}");

    let born_in_b = clone_into(a, b);
    assert_eq!(
        born_in_b["connect"], "ok",
        "a child cloned from A into namespace B is still judged in A: {born_in_b}"
    );
}

/// A UDP socket made by a process of one group and used by a process of another (passed with
/// SCM_RIGHTS): the connect rule follows the process that sends or connects, not the one that
/// made the socket — `sendto` on the unconnected socket and `connect` by the in-scope process
/// are refused, `sendto` by the out-of-scope process on a socket made in scope passes.
#[test]
fn a_udp_socket_shared_across_groups_is_judged_by_its_user() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "share-udp".into(),
        pods: vec![
            ("e2e-share-7".into(), "seven".into()),
            ("e2e-share-8".into(), "eight".into()),
        ],
    });
    let d = Daemon::start(
        &w,
        &[(
            "share.yaml",
            &block_connect("e2e-share", "e2e-share-7", "5353", "UDP", false),
        )],
    );
    let ip = w.net.server_ip(false);
    let (seven, eight) = (&w.pods[0], &w.pods[1]);
    // (maker, user, how the user uses it, expected outcome of that step)
    let cases = [
        (eight, seven, "--sendto", "EPERM"),
        (eight, seven, "--connect-received", "EPERM"),
        (seven, eight, "--sendto", "ok"),
    ];
    for (i, (maker, user, how, want)) in cases.into_iter().enumerate() {
        let path = w.dir().join(format!("udp-{i}.sock"));
        let path_s = path.display().to_string();
        let mut extra = vec!["--udp", "--recv-fd", &path_s, how];
        if how == "--sendto" {
            extra.push("dns-ish");
        }
        let argv = user.probe_argv(ip, 5353, &extra);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        let receiver = user.spawn(&refs);
        let passer = maker.probe(ip, 5353, &["--udp", "--pass-unconnected", &path_s]);
        assert_eq!(passer.json()["passed"], "ok", "case {i}: {passer}");
        let user_pid = receiver.pid();
        let got = receiver.wait(timeout());
        let step = if how == "--sendto" {
            "sendto"
        } else {
            "connect"
        };
        assert_eq!(got.json()[step], want, "case {i} ({how}): {got}");
        let by_user = |e: &bulwark_e2e::Event| {
            ev::is_match(e, "e2e-share", "connect") && ev::pid(e) == Some(user_pid as u64)
        };
        if want == "EPERM" {
            let m = d.wait_event(&format!("case {i}: the match of pid {user_pid}"), by_user);
            assert_eq!(m["process"]["pod"]["namespace"], "e2e-share-7", "{m}");
        } else {
            d.assert_no_event(&format!("case {i}: a match for pid {user_pid}"), by_user);
        }
        d.assert_no_event(&format!("case {i}: a match for the maker"), |e| {
            ev::is_match(e, "e2e-share", "connect") && ev::pid(e) == Some(passer.pid as u64)
        });
    }
}

/// A TCP socket whose senders alternate between groups (a process of a namespace with its own
/// group, and one in group 0, the socket passed with SCM_RIGHTS): a monitor-mode plaintext
/// rule that applies to both reports each sender once on the socket — the first sender's
/// second send, after the other's, is not reported again — and nothing is blocked.
#[test]
fn monitor_matches_on_a_socket_shared_across_groups_are_reported_once() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "share-tcp".into(),
        pods: vec![
            ("e2e-dup-7".into(), "seven".into()),
            ("e2e-dup-8".into(), "eight".into()),
        ],
    });
    let srv = TestServer::start(&w.net, &[8080]);
    let everywhere = PolicyBuilder::new("e2e-dup-all")
        .mode("monitor")
        .rule(
            RuleBuilder::egress("no-plaintext")
                .destinations("In", &["10.199.0.0/16"], &["8080"], Some("TCP"))
                .encryption("plaintext")
                .action("Block"),
        )
        .yaml();
    // Gives namespace e2e-dup-7 a group of its own (e2e-dup-8 stays in group 0).
    let own_group = block_connect("e2e-dup-7only", "e2e-dup-7", "9999", "TCP", false);
    let d = Daemon::start(&w, &[("all.yaml", &everywhere), ("seven.yaml", &own_group)]);
    let ip = w.net.server_ip(false);
    let (seven, eight) = (&w.pods[0], &w.pods[1]);
    let path = w.dir().join("tcp.sock");
    let path_s = path.display().to_string();
    let go = w.dir().join("go");
    let go_s = go.display().to_string();
    let receiver_argv = eight.probe_argv(
        ip,
        8080,
        &[
            "--recv-fd",
            &path_s,
            "--send",
            "GET /eight HTTP/1.1\r\nHost: x\r\n\r\n",
        ],
    );
    let refs: Vec<&str> = receiver_argv.iter().map(String::as_str).collect();
    let receiver = eight.spawn(&refs);
    let first = spawn_until_line(
        seven,
        seven.probe_argv(
            ip,
            8080,
            &[
                "--send",
                "GET /seven-1 HTTP/1.1\r\nHost: x\r\n\r\n",
                "--pass-fd",
                &path_s,
                "--pause-file",
                &go_s,
                "--send-after",
                "GET /seven-2 HTTP/1.1\r\nHost: x\r\n\r\n",
            ],
        ),
    );
    let eight_pid = receiver.pid();
    let got = receiver.wait(timeout());
    assert_eq!(got.json()["send"], "ok", "monitor mode: {got}");
    std::fs::write(&go, "").unwrap();
    let seven_pid = first.pid();
    let out = first.wait(timeout());
    assert_eq!(
        lines(&out.stdout).last().map(|l| l["send_after"].clone()),
        Some(Value::from("ok")),
        "{out}"
    );
    let arrived = poll_until(timeout(), || {
        (srv.log().requests_for("/seven-1").len() == 1).then_some(())
    });
    assert!(arrived.is_some(), "{:?}", srv.log());
    let m = crate::wait_match(&d, "e2e-dup-all", "egress", seven_pid, 8080);
    assert_eq!(
        (m["outcome"].as_str(), m["mode"].as_str()),
        (Some("would_block"), Some("monitor")),
        "{m}"
    );
    crate::wait_match(&d, "e2e-dup-all", "egress", eight_pid, 8080);
    d.sync();
    let of = |pid: u32| {
        d.find(|e| ev::is_match(e, "e2e-dup-all", "egress") && ev::pid(e) == Some(pid as u64))
    };
    assert_eq!(
        of(seven_pid).len(),
        1,
        "the first sender reported again: {:?}",
        of(seven_pid)
    );
    assert_eq!(of(eight_pid).len(), 1, "{:?}", of(eight_pid));
}

/// Issue 9.7, the names of a file the exec tests did not try yet: `/proc/self/fd/N` of an
/// `O_PATH` descriptor, `execveat` with a directory descriptor and a relative name, and
/// `execveat(AT_EMPTY_PATH)` on a regular file's descriptor (read-only and `O_PATH`). Each is
/// the file the policy names, and is killed before it runs.
#[test]
fn exec_by_descriptor_names_is_killed() {
    let _g = serial();
    let w = World::single("exec-fd", "e2e-exec-fd");
    let kill = w.install_binary(&preflight().touch, "bin/touch-kill");
    let policy = PolicyBuilder::new("e2e-exec-fd")
        .rule(
            RuleBuilder::exec("kill-touch")
                .namespaces("In", &["e2e-exec-fd"])
                .binaries("In", &[kill.to_str().unwrap()])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("fd.yaml", &policy)]);
    for how in ["proc-fd", "at-dir", "at-empty-path", "at-empty-path-opath"] {
        let marker = w.dir().join(format!("{how}-ran"));
        let out = w.pod().run(&[
            crate::helper(),
            "exec-via",
            how,
            kill.to_str().unwrap(),
            marker.to_str().unwrap(),
        ]);
        assert!(out.sigkilled(), "{how}: should have been SIGKILLed: {out}");
        assert!(!marker.exists(), "{how}: the binary ran user code");
        let m = d.wait_event(&format!("{how}: the kill of pid {}", out.pid), |e| {
            ev::is_match(e, "e2e-exec-fd", "exec") && ev::pid(e) == Some(out.pid as u64)
        });
        assert_eq!(
            (m["outcome"].as_str(), m["enforced"].as_bool()),
            (Some("killed"), Some(true)),
            "{how}: {m}"
        );
    }
    // The same ways to a file the policy does not name run it.
    let ok = w.install_binary(&preflight().touch, "bin/touch-ok");
    let marker = w.dir().join("ok-ran");
    let out = w.pod().run(&[
        crate::helper(),
        "exec-via",
        "at-empty-path-opath",
        ok.to_str().unwrap(),
        marker.to_str().unwrap(),
    ]);
    assert!(out.success() && marker.exists(), "{out}");
}

/// io_uring with the socket as a registered (fixed) file and no descriptor left:
/// IORING_OP_CONNECT is refused by the connect rule (EPERM), and IORING_OP_SEND, SEND_ZC and
/// SENDMSG of plaintext on a watched socket connected before a policy switch are refused after
/// it (EACCES, reported; SEND_ZC with EOPNOTSUPP: a socket in the SOCKHASH offers no
/// zero-copy), nothing of them at the server.
#[test]
fn io_uring_fixed_file_connect_and_sends_across_a_switch() {
    let _g = serial();
    let w = World::single("uring", "e2e-uring");
    let srv = TestServer::start(&w.net, &[8080, 8081]);
    let policy = |extra: bool| {
        let mut p = PolicyBuilder::new("e2e-uring")
            .rule(
                RuleBuilder::connect("no-8080")
                    .namespaces("In", &["e2e-uring"])
                    .destinations("In", &["10.199.0.0/16"], &["8080"], Some("TCP"))
                    .action("Block"),
            )
            .rule(
                RuleBuilder::egress("no-plaintext-8081")
                    .namespaces("In", &["e2e-uring"])
                    .destinations("In", &["10.199.0.0/16"], &["8081"], Some("TCP"))
                    .encryption("plaintext")
                    .action("Block"),
            );
        if extra {
            p = p.rule(
                RuleBuilder::connect("unrelated")
                    .namespaces("In", &["e2e-uring"])
                    .destinations("In", &["192.0.2.0/24"], &["9"], Some("TCP"))
                    .action("Block"),
            );
        }
        p.yaml()
    };
    let d = Daemon::start(&w, &[("uring.yaml", &policy(false))]);
    let ip = w.net.server_ip(false).to_string();
    let helper = crate::helper();
    let out = w.pod().run(&[
        helper,
        "uring",
        &ip,
        "8080",
        "send",
        "-",
        "GET /uring-connect HTTP/1.0\r\n\r\n",
    ]);
    assert_eq!(
        lines(&out.stdout).first().map(|l| l["connect"].clone()),
        Some(Value::from("EPERM")),
        "{out}"
    );
    crate::wait_match(&d, "e2e-uring", "connect", out.pid, 8080);

    let go = w.dir().join("go");
    let go_s = go.display().to_string();
    let senders: Vec<(&str, Running)> = ["send", "send-zc", "sendmsg"]
        .into_iter()
        .map(|op| {
            let text = format!("GET /uring-{op} HTTP/1.0\r\n\r\n");
            let argv = [helper, "uring", &ip, "8081", op, &go_s, &text];
            let r = spawn_until_line(w.pod(), argv.map(String::from).to_vec());
            assert_eq!(lines(&r.stdout_so_far())[0]["connect"], "ok", "{op}");
            (op, r)
        })
        .collect();
    let st = d.replace_policy("uring.yaml", &policy(true));
    assert_eq!(st["state"], "reloaded", "{st}");
    std::fs::write(&go, "").unwrap();
    for (op, r) in senders {
        let pid = r.pid();
        let out = r.wait(timeout());
        let send = lines(&out.stdout).last().map(|l| l["send"].clone());
        if op == "send-zc" {
            // A socket in the SOCKHASH does not offer zero-copy: refused before any byte moves.
            assert_eq!(
                send,
                Some(Value::from("EOPNOTSUPP")),
                "IORING_OP_SEND_ZC: {out}"
            );
            continue;
        }
        assert_eq!(
            send,
            Some(Value::from("EACCES")),
            "IORING_OP_{op} after the switch: {out}"
        );
        let m = crate::wait_match(&d, "e2e-uring", "egress", pid, 8081);
        assert_eq!(
            (m["outcome"].as_str(), m["encryption"].as_str()),
            (Some("blocked"), Some("plaintext")),
            "{op}: {m}"
        );
    }
    let log = srv.log();
    for marker in [
        "/uring-connect",
        "/uring-send",
        "/uring-send-zc",
        "/uring-sendmsg",
    ] {
        assert_server_never_saw(&log, marker);
    }
}

/// Issue 9.7 during a switch: the binary a policy names is replaced (a new file renamed over
/// its path) while reloads of the policy file are in flight, and exec'd by that path at once
/// each time, before the daemon could re-read the file: every exec is killed (the path still
/// matches whichever rule set is in force or pending), and once the daemon re-applied, a hard
/// link to the newest file is killed too (its inode is the binary's now).
#[test]
fn a_binary_replaced_while_reloads_are_in_flight_is_killed() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    let w = World::single("exec-swap", "e2e-exec-swap");
    let tool = w.install_binary(&preflight().touch, "bin/tool");
    let version = |n: usize| {
        PolicyBuilder::new("e2e-exec-swap")
            .rule(
                RuleBuilder::exec(&format!("kill-tool-v{n}"))
                    .namespaces("In", &["e2e-exec-swap"])
                    .binaries("In", &[tool.to_str().unwrap()])
                    .action("Sigkill"),
            )
            .yaml()
    };
    let d = Daemon::start(&w, &[("swap.yaml", &version(0))]);
    for n in 1..=8 {
        d.write_policy("swap.yaml", &version(n));
        let fresh = w.dir().join(format!("bin/.tool.new-{n}"));
        std::fs::copy(preflight().touch.as_path(), &fresh).unwrap();
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&fresh, &tool).unwrap();
        let marker = w.dir().join(format!("ran-{n}"));
        let out = w
            .pod()
            .run(&[tool.to_str().unwrap(), marker.to_str().unwrap()]);
        assert!(out.sigkilled(), "replacement {n} ran: {out}");
        assert!(!marker.exists(), "replacement {n} ran user code");
        d.wait_event(&format!("the kill of replacement {n}"), |e| {
            ev::is_match(e, "e2e-exec-swap", "exec") && ev::pid(e) == Some(out.pid as u64)
        });
    }
    // Settled: the newest file is the binary, whatever path reaches it.
    let st = d.replace_policy("swap.yaml", &version(99));
    assert_eq!(st["state"], "reloaded", "{st}");
    let link = w.dir().join("elsewhere/innocent");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::hard_link(&tool, &link).unwrap();
    let marker = w.dir().join("link-ran");
    let out = w
        .pod()
        .run(&[link.to_str().unwrap(), marker.to_str().unwrap()]);
    assert!(
        out.sigkilled() && !marker.exists(),
        "the link to the newest file ran: {out}"
    );
}
