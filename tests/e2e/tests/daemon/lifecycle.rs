//! Daemon lifecycle: a broken policy file at start-up is reported while the good ones load;
//! processes that were already running when the daemon started are known (seeded from /proc)
//! and policies apply to them; the workloads file is watched, so a pod registered after start
//! gets its namespace's policies without a restart.

use crate::{assert_eperm, assert_killed_at_exec, assert_ran};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::{preflight, serial, Daemon, DaemonConfig, PolicyBuilder, RuleBuilder};
use bulwark_e2e::{TestServer, World, WorldConfig};
use std::time::Duration;

fn block_8080(name: &str, ns: &str) -> String {
    PolicyBuilder::new(name)
        .rule(
            RuleBuilder::connect("block-8080")
                .namespaces("In", &[ns])
                .destinations("In", &["10.199.0.0/16", "fd99::/16"], &["8080"], None)
                .action("Block"),
        )
        .yaml()
}

#[test]
fn broken_policy_at_startup_is_reported_and_the_good_ones_load() {
    let _g = serial();
    let w = World::single("start-broken", "e2e-start");
    let _srv = TestServer::start(&w.net, &[8080]);
    let good = block_8080("e2e-good", "e2e-start");
    let d = Daemon::start(
        &w,
        &[
            ("good.yaml", &good),
            (
                "broken.yaml",
                "apiVersion: bulwark.dev/v1alpha1\nkind: [oops\n",
            ),
        ],
    );
    let ready = d.wait_event("ready", |e| ev::is(e, "status") && e["state"] == "ready");
    assert_eq!(
        ready["policies"],
        serde_json::json!(["e2e-good"]),
        "{ready}"
    );
    let diags = ready["diagnostics"].to_string();
    assert!(
        diags.contains("broken.yaml"),
        "the ready event's diagnostics must name the broken file: {ready}"
    );
    assert_eperm(&w.pod().probe(w.net.server_ip(false), 8080, &[]));
}

#[test]
fn processes_running_before_the_daemon_are_known_and_policed() {
    let _g = serial();
    let w = World::single("seeded", "e2e-seeded");
    let srv = TestServer::start(&w.net, &[8080]);
    let trigger = w.dir().join("go");
    let trig = trigger.to_str().unwrap();
    let ip = w.net.server_ip(false);
    // Started before the daemon: a python probe waiting for the trigger, and a shell that will
    // then fork a curl.
    let probe = w.pod().probe_argv(ip, 8080, &["--wait-for", trig]);
    let probe_refs: Vec<&str> = probe.iter().map(String::as_str).collect();
    let early_probe = w.pod().spawn(&probe_refs);
    let curl = preflight().curl.display().to_string();
    let script = format!(
        "while [ ! -e {trig} ]; do sleep 0.05; done; {curl} -sS --noproxy '*' http://{ip}:8080/seeded; echo done"
    );
    let early_shell = w.pod().spawn(&["sh", "-c", &script]);
    let python = preflight().python3.display().to_string();
    // Both have exec'd their final image before the daemon starts.
    let execd = |pid: u32, bin: &str| {
        std::fs::canonicalize(format!("/proc/{pid}/exe"))
            .map(|p| crate::same_file(p.to_str().unwrap_or(""), bin))
            .unwrap_or(false)
    };
    let ready = bulwark_e2e::poll_until(Duration::from_secs(10), || {
        (execd(early_probe.pid(), &python) && execd(early_shell.pid(), "/bin/sh")).then_some(())
    });
    assert!(ready.is_some(), "the early processes did not start");
    let policy = PolicyBuilder::new("e2e-seeded")
        .rule(
            RuleBuilder::connect("python-may-not-connect")
                .namespaces("In", &["e2e-seeded"])
                .binaries("In", &[&python])
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("seeded.yaml", &policy)]);
    std::fs::write(&trigger, "").unwrap();

    // The python that exec'd before the daemon started is matched by binary and namespace.
    let pid = early_probe.pid();
    let out = early_probe.wait(bulwark_e2e::timeout());
    assert_eperm(&out);
    let m = crate::wait_match(&d, "e2e-seeded", "connect", pid, 8080);
    assert!(crate::same_file(ev::binary(&m), &python), "{m}");
    assert_eq!(m["process"]["pod"]["namespace"], "e2e-seeded", "{m}");

    // The shell's child curl is new, its parent (seeded from /proc) is known.
    let shell_pid = early_shell.pid();
    let out = early_shell.wait(bulwark_e2e::timeout());
    assert!(out.success() && out.stdout.ends_with("done\n"), "{out}");
    assert_eq!(srv.log().requests_for("/seeded").len(), 1);
    let exec = d.wait_event("process_exec of the seeded shell's curl", |e| {
        ev::is(e, "process_exec") && ev::arguments(e).contains("/seeded") && ev::binary(e) == curl
    });
    assert!(
        ev::parent_exec_id(&exec).is_some(),
        "the parent was running before the daemon and must be known: {exec}"
    );
    assert_eq!(exec["parent"]["pid"], shell_pid, "{exec}");
}

#[test]
fn workloads_registered_after_start_get_their_policies() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "late-pod".into(),
        pods: vec![
            ("e2e-early".into(), "early".into()),
            ("e2e-late".into(), "late".into()),
        ],
    });
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let policy = PolicyBuilder::new("e2e-late-pods")
        .rule(
            RuleBuilder::exec("kill-touch")
                .namespaces("In", &["e2e-late"])
                .binaries("In", &[touch.to_str().unwrap()])
                .action("Sigkill"),
        )
        .yaml();
    let only_early = format!("workloads:\n{}", w.pods[0].workload_yaml());
    let d = Daemon::start_with(DaemonConfig {
        policies: vec![("late.yaml".into(), policy)],
        workloads: only_early,
        ..DaemonConfig::default()
    });
    let late = &w.pods[1];
    // Not registered yet: the late pod's cgroup is just a host cgroup, nothing matches.
    let marker = w.dir().join("before");
    let out = late.run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &touch, &marker);

    let st = d.replace_workloads(&w.workloads_yaml());
    assert_eq!(st["state"], "reloaded", "{st}");
    let marker = w.dir().join("after");
    let out = late.run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    let m = assert_killed_at_exec(&d, &out, &touch, "e2e-late-pods", &marker);
    assert_eq!(m["process"]["pod"]["name"], "late", "{m}");
}
