//! hot reload: replacing a policy file changes behaviour without restarting the daemon; a
//! broken file (bad YAML, or a semantically invalid policy) is reported as `reload_failed` with
//! diagnostics and the previous policy stays in force; a fixed file is applied again.

use crate::{assert_connected, assert_eperm};
use bulwark_e2e::{serial, Daemon, DaemonConfig, PolicyBuilder, RuleBuilder, TestServer, World};

fn block_port(port: &str) -> String {
    PolicyBuilder::new("e2e-reload")
        .rule(
            RuleBuilder::connect(&format!("block-{port}"))
                .namespaces("In", &["e2e-reload"])
                .destinations("In", &["10.199.0.0/16"], &[port], Some("TCP"))
                .action("Block"),
        )
        .yaml()
}

#[test]
fn hot_reload_changes_behaviour_and_broken_files_keep_the_old_policy() {
    let _g = serial();
    let w = World::single("reload", "e2e-reload");
    let _srv = TestServer::start(&w.net, &[8080, 9090]);
    let ip = w.net.server_ip(false);
    let d = Daemon::start(&w, &[("reload.yaml", &block_port("8080"))]);
    let pid = d.pid();
    assert!(d.loaded_policies().contains(&"e2e-reload".to_string()));
    assert_eperm(&w.pod().probe(ip, 8080, &[]));
    assert_connected(
        &w.pod()
            .probe(ip, 9090, &["--send", "GET / HTTP/1.0\r\n\r\n"]),
    );

    // Replace: now 9090 is blocked and 8080 is free, same daemon process.
    let gen0 = d.generation();
    let st = d.replace_policy("reload.yaml", &block_port("9090"));
    assert_eq!(st["state"], "reloaded", "{st}\n{}", d.diagnostics());
    assert!(st["generation"].as_u64().unwrap() > gen0, "{st}");
    assert_eq!(st["policies"], serde_json::json!(["e2e-reload"]), "{st}");
    assert_eq!(d.pid(), pid);
    assert_connected(
        &w.pod()
            .probe(ip, 8080, &["--send", "GET / HTTP/1.0\r\n\r\n"]),
    );
    assert_eperm(&w.pod().probe(ip, 9090, &[]));

    // Broken YAML: reload_failed with diagnostics; the 9090 block stays in force.
    let st = d.replace_policy(
        "reload.yaml",
        "apiVersion: bulwark.dev/v1alpha1\nspec: [unclosed\n",
    );
    assert_eq!(st["state"], "reload_failed", "{st}");
    let diags = st["diagnostics"].as_array().cloned().unwrap_or_default();
    assert!(
        !diags.is_empty(),
        "reload_failed must say what is wrong: {st}"
    );
    assert_eperm(&w.pod().probe(ip, 9090, &[]));
    assert_connected(
        &w.pod()
            .probe(ip, 8080, &["--send", "GET / HTTP/1.0\r\n\r\n"]),
    );

    // Valid YAML, invalid policy (an unknown hook): also rejected, old policy kept.
    let bad = block_port("8080").replace("hook: connect", "hook: fork");
    assert!(bad.contains("hook: fork"), "the rewrite must apply: {bad}");
    let st = d.replace_policy("reload.yaml", &bad);
    assert_eq!(st["state"], "reload_failed", "{st}");
    assert!(
        !st["diagnostics"]
            .as_array()
            .map(|a| a.is_empty())
            .unwrap_or(true),
        "{st}"
    );
    assert_eperm(&w.pod().probe(ip, 9090, &[]));
    assert_connected(
        &w.pod()
            .probe(ip, 8080, &["--send", "GET / HTTP/1.0\r\n\r\n"]),
    );

    // Fixed again: applied.
    let st = d.replace_policy("reload.yaml", &block_port("8080"));
    assert_eq!(st["state"], "reloaded", "{st}");
    assert_eperm(&w.pod().probe(ip, 8080, &[]));
    assert_connected(
        &w.pod()
            .probe(ip, 9090, &["--send", "GET / HTTP/1.0\r\n\r\n"]),
    );

    // Removing the file removes the policy.
    let st = d.remove_policy("reload.yaml");
    assert_eq!(st["state"], "reloaded", "{st}");
    assert_eq!(st["policies"], serde_json::json!([]), "{st}");
    assert_connected(
        &w.pod()
            .probe(ip, 8080, &["--send", "GET / HTTP/1.0\r\n\r\n"]),
    );
    assert_eq!(d.pid(), pid, "the daemon never restarted");
}

/// Version `n` of policy `name`: the block of port 8080 in namespace `e2e-reload` in every
/// version, and a rule that changes from version to version. Every other pair of versions
/// puts the changing rule first: the two slots are written alternately, so a slot's next rule
/// set numbers its selectors otherwise than its last, and a process left with its bits for
/// the last one is not blocked by the next.
fn block_8080_version(name: &str, n: usize) -> String {
    let block = RuleBuilder::connect("block-8080")
        .namespaces("In", &["e2e-reload"])
        .destinations("In", &["10.199.0.0/16"], &["8080"], Some("TCP"))
        .action("Block");
    // A binary no test process runs: its selector holds for none of them.
    let changing = RuleBuilder::connect(&format!("changing-{n}"))
        .namespaces("In", &["e2e-reload"])
        .binaries("In", &["/nonexistent/e2e-changing"])
        .destinations("In", &["192.0.2.0/24"], &[&format!("{}", 1000 + n)], None)
        .action("Block");
    let p = PolicyBuilder::new(name);
    if (n / 2).is_multiple_of(2) {
        p.rule(block).rule(changing).yaml()
    } else {
        p.rule(changing).rule(block).yaml()
    }
}

/// Policy updates are atomic: while the policy file is rewritten again and again (the 8080
/// block stays in every version, another rule changes), a pod connecting to 8080 in a tight
/// loop never gets through — there is no window without enforcement.
#[test]
fn reloads_leave_no_enforcement_gap() {
    let _g = serial();
    let w = World::single("reload-gap", "e2e-reload");
    let srv = TestServer::start(&w.net, &[8080, 9090]);
    let version = |n: usize| block_8080_version("e2e-gap", n);
    let d = Daemon::start(&w, &[("gap.yaml", &version(0))]);
    let ip = w.net.server_ip(false);
    let argv = w.pod().probe_argv(ip, 8080, &["--repeat-for", "4"]);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let hammer = w.pod().spawn(&refs);
    let mut reloads = 0;
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(3000) {
        reloads += 1;
        let st = d.replace_policy("gap.yaml", &version(reloads));
        assert_eq!(st["state"], "reloaded", "{st}");
    }
    let out = hammer.wait(bulwark_e2e::timeout());
    let counts = out.json();
    eprintln!("{reloads} reloads while connecting: {counts}");
    assert!(counts.is_object(), "{out}");
    assert!(reloads >= 3, "only {reloads} reloads happened");
    assert!(
        counts.get("ok").is_none(),
        "connects got through during {reloads} reloads: {counts}"
    );
    assert!(
        counts["EPERM"].as_u64().unwrap_or(0) > 50,
        "too few attempts: {counts}"
    );
    assert_eq!(srv.log().accepts().len(), 0, "the server saw connections");
}

/// The daemon's ring buffer during the flood: 256 connect records, which the daemon (polling
/// every 50 ms without being woken, see `wakeup_flags` in daemon-ebpf) drains at most 20 times a
/// second, far slower than a flooder's `sendto` loop even on a loaded machine.
const FLOOD_RING_BYTES: u32 = 16 * 1024;

/// Size of the reload-race runs: `BULWARK_E2E_RELOAD_EXECS` processes (default 1,500; the issue's
/// full size is 10,000) exec'd while the policy is reloaded at least `BULWARK_E2E_RELOADS` times
/// (default 15; full size 100).
fn reload_race_size() -> (u32, u32) {
    let var = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    (
        var("BULWARK_E2E_RELOAD_EXECS", 1_500),
        var("BULWARK_E2E_RELOADS", 15),
    )
}

/// Every process exec'd around reloads is under the connect rule for its whole life: a storm of
/// short-lived processes, each trying the blocked connect four times over ~15 ms (so many of
/// them live across a switch), while the policy file is rewritten back to back (the block stays
/// in every version, another rule changes). With `flood`, a second workload floods the event
/// ring with unconnected UDP sends so that the daemon is losing events meanwhile (asserted):
/// the switch must not depend on userspace having seen each process. The daemon's ring buffer
/// is then made small ([`FLOOD_RING_BYTES`]) so that the flood overflows it whatever the
/// machine's load (a busy machine slows the flooder as much as the daemon).
fn no_exec_escapes_reloads(flood: bool) {
    let _g = serial();
    let w = World::new(bulwark_e2e::WorldConfig {
        tag: if flood { "race-flood" } else { "race" }.into(),
        pods: vec![
            ("e2e-reload".into(), "storm".into()),
            ("e2e-flood".into(), "flood".into()),
        ],
    });
    let srv = TestServer::start(&w.net, &[8080]);
    let ip = w.net.server_ip(false);
    let version = |n: usize| block_8080_version("e2e-race", n);
    let d = Daemon::start_with(DaemonConfig {
        policies: vec![("race.yaml".into(), version(0))],
        workloads: w.workloads_yaml(),
        skip_lines_containing: Some(r#""namespace":"e2e-flood""#.into()),
        extra_args: if flood {
            vec![
                "--test-events-ring-bytes".into(),
                FLOOD_RING_BYTES.to_string(),
            ]
        } else {
            Vec::new()
        },
        ..DaemonConfig::default()
    });
    let (execs, min_reloads) = reload_race_size();
    let helper = crate::helper();
    let stop = w.dir().join("stop-flood");
    let flooder = flood.then(|| {
        let f = w.pods[1].spawn(&[
            helper,
            "udp-flood",
            &ip.to_string(),
            "9",
            stop.to_str().unwrap(),
        ]);
        // The flood is on when the daemon reports losses (a status event at most every
        // 10 s; a loaded machine may take several).
        let what = "a status event reporting lost events";
        let lossy = d.try_wait_event(what, 4 * bulwark_e2e::timeout(), |e| {
            e.typed().status().is_some_and(|s| s.lost_events > 0)
        });
        assert!(
            lossy.is_some(),
            "timed out waiting for {what} (flood running)\n{}",
            d.diagnostics()
        );
        f
    });
    let storm = w.pod().spawn(&[
        helper,
        "storm",
        &execs.to_string(),
        "4",
        &ip.to_string(),
        "8080",
        "4",
        "5",
    ]);
    let mut reloads = 0;
    let start = std::time::Instant::now();
    while storm.stdout_so_far().is_empty() {
        reloads += 1;
        let st = d.replace_policy("race.yaml", &version(reloads));
        assert_eq!(st["state"], "reloaded", "{st}");
        assert!(
            start.elapsed() < 20 * bulwark_e2e::timeout(),
            "the storm of {execs} execs did not finish"
        );
    }
    let out = storm.wait(bulwark_e2e::timeout());
    std::fs::write(&stop, b"").unwrap();
    let lost = flooder.map(|f| {
        let fo = f.wait(bulwark_e2e::timeout());
        let lost = d
            .events()
            .iter()
            .filter_map(|e| e.typed().status().map(|s| s.lost_events))
            .max()
            .unwrap_or(0);
        eprintln!(
            "flood: {} ({lost} events lost, {} flood events written)",
            fo.stdout.trim(),
            d.skipped_lines()
        );
        lost
    });
    let counts = out.json();
    eprintln!(
        "{execs} execs during {reloads} reloads in {:?}: {counts}",
        start.elapsed()
    );
    assert_eq!(counts["execs"], execs, "{out}");
    assert_eq!(
        counts["escaped"], 0,
        "processes connected past the block rule: {counts}"
    );
    assert_eq!(counts["all_eperm"], execs, "{counts}");
    assert!(
        reloads >= min_reloads as usize,
        "only {reloads} reloads happened during the storm (want {min_reloads})"
    );
    assert_eq!(srv.log().accepts().len(), 0, "the server saw connections");
    if let Some(lost) = lost {
        assert!(lost > 0, "the flood made the daemon lose no events");
    }
    // The kernel's safety net never saw a process with bits of another rule set connect.
    let st = d.replace_policy("race.yaml", &version(0));
    assert_eq!(st.typed().status().unwrap().stale_processes, 0, "{st}");
}

#[test]
fn no_exec_escapes_connect_rules_across_reloads() {
    no_exec_escapes_reloads(false);
}

#[test]
fn no_exec_escapes_connect_rules_across_reloads_while_events_are_lost() {
    no_exec_escapes_reloads(true);
}

/// A process that never execs and keeps forking away (each child carries on, its parent
/// exits) is not left behind by reloads: the switch catches its children in the kernel
/// (fork takes the bits decided for its image) even when it cannot read the process that
/// forked them from /proc in time. Every connect after every hop is refused.
#[test]
fn a_process_that_keeps_forking_away_is_not_left_behind_by_reloads() {
    let _g = serial();
    let w = World::single("reload-hop", "e2e-reload");
    let srv = TestServer::start(&w.net, &[8080]);
    let ip = w.net.server_ip(false);
    let d = Daemon::start(&w, &[("hop.yaml", &block_8080_version("e2e-hop", 0))]);
    let out = w.dir().join("hop.json");
    let _first = w.pod().spawn(&[
        crate::helper(),
        "hop",
        "6",
        &ip.to_string(),
        "8080",
        out.to_str().unwrap(),
    ]);
    let mut reloads = 0;
    while !out.exists() {
        reloads += 1;
        let st = d.replace_policy("hop.yaml", &block_8080_version("e2e-hop", reloads));
        assert_eq!(st["state"], "reloaded", "{st}");
        assert!(reloads < 10_000, "the hopper never finished");
    }
    let counts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    eprintln!("{reloads} reloads while hopping: {counts}");
    assert!(reloads >= 5, "only {reloads} reloads happened");
    assert!(
        counts["hops"].as_u64().unwrap() > 500,
        "it hardly hopped: {counts}"
    );
    assert_eq!(
        counts["connected"], 0,
        "a hop connected past the rule: {counts}"
    );
    assert_eq!(counts["other"], 0, "{counts}");
    assert_eq!(srv.log().accepts().len(), 0, "the server saw connections");
    let st = d.replace_policy("hop.yaml", &block_8080_version("e2e-hop", 0));
    assert_eq!(st.typed().status().unwrap().stale_processes, 0, "{st}");
}
