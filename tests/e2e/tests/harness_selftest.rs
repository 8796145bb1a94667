//! Self-test of the harness without the daemon: the network namespaces, cgroups, servers and
//! the in-pod runner work, and their guards clean up. If these fail, every daemon test would
//! fail for reasons that have nothing to do with bulwark.

use bulwark_e2e::netns::url;
use bulwark_e2e::{cgroup2_mount, serial, World, WorldConfig};
use bulwark_e2e::{RunOutput, TestServer};
use std::path::PathBuf;

#[test]
fn pod_runs_in_its_cgroup_and_netns_and_reaches_the_server() {
    let _g = serial();
    let w = World::single("selftest", "e2e-self");
    let pod = w.pod();

    // The command is in the pod cgroup and sees only the pod's interfaces.
    let out = pod.run(&["sh", "-c", "cat /proc/self/cgroup; ip -br addr"]);
    assert!(out.success(), "{out}");
    let cg = format!("0::/{}", pod.cgroup.relative());
    assert!(out.stdout.contains(&cg), "not in {cg}: {out}");
    assert!(out.stdout.contains(&w.net.pod_v4.to_string()), "{out}");
    assert!(!out.stdout.contains(&w.net.server_v4.to_string()), "{out}");

    // No route off the namespaces: a public address is unreachable (no packet can leave).
    let out = pod.probe("192.0.2.1".parse().unwrap(), 80, &[]);
    assert_eq!(out.json()["connect"], "ENETUNREACH", "{out}");

    // Plain HTTP and HTTPS on the same port, v4 and v6, all logged by the server.
    let srv = TestServer::start(&w.net, &[8080, 9090]);
    for v6 in [false, true] {
        let ip = w.net.server_ip(v6);
        let out = pod.curl(&[&url("http", ip, 8080, "/plain")]);
        assert!(out.success() && out.stdout == "ok /plain\n", "{out}");
        let out = pod.curl(&["-k", &url("https", ip, 8080, "/tls")]);
        assert!(out.success() && out.stdout == "ok /tls\n", "{out}");
    }
    let log = srv.log();
    let plain = log.requests_for("/plain");
    let tls = log.requests_for("/tls");
    assert_eq!(plain.len(), 2, "{log:?}");
    assert_eq!(tls.len(), 2, "{log:?}");
    assert!(plain.iter().all(|r| r["tls"] == false && r["port"] == 8080));
    assert!(tls.iter().all(|r| r["tls"] == true));

    // Two requests on one TLS connection, with a sizeable body.
    let u = url("https", w.net.server_ip(false), 9090, "/bytes/300000");
    let out = pod.curl(&[
        "-k",
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{num_connects}\n",
        &u,
        &u,
    ]);
    assert!(out.success(), "{out}");
    assert_eq!(out.stdout, "300000 1\n300000 0\n", "{out}");
    let reqs = srv.log().requests_for("/bytes/300000").len();
    assert_eq!(reqs, 2);

    // A port nobody listens on is refused (the probe reports errno names).
    let out = pod.probe(w.net.server_ip(false), 7070, &[]);
    assert_eq!(out.json()["connect"], "ECONNREFUSED", "{out}");
    assert_eq!(out.code, Some(3));
    let out = pod.probe(
        w.net.server_ip(true),
        8080,
        &["--send", "GET /probe HTTP/1.0\r\n\r\n"],
    );
    assert_eq!(out.json()["connect"], "ok", "{out}");
    assert!(out.success(), "{out}");
    assert_eq!(srv.log().requests_for("/probe").len(), 1);
}

#[test]
fn killed_and_failing_commands_are_reported() {
    let _g = serial();
    let w = World::single("selftest2", "e2e-self");
    let out: RunOutput = w.pod().run(&["sh", "-c", "kill -9 $$"]);
    assert!(out.sigkilled(), "{out}");
    let out = w.pod().run(&["sh", "-c", "echo hi; echo err >&2; exit 7"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (Some(7), "hi\n", "err\n")
    );
    let out = w
        .pod()
        .run_timeout(&["sleep", "10"], std::time::Duration::from_millis(300));
    assert!(out.timed_out && !out.sigkilled(), "{out}");
}

#[test]
fn guards_remove_everything() {
    let _g = serial();
    let (cg, netns, dir): (PathBuf, String, PathBuf);
    let mut sleeper;
    {
        let w = World::new(WorldConfig {
            tag: "selftest3".into(),
            pods: vec![("a".into(), "p1".into()), ("b".into(), "p2".into())],
        });
        cg = w.pods[1].cgroup.path().to_path_buf();
        netns = w.net.pod.clone();
        dir = w.dir().to_path_buf();
        // A process left running in a pod must not keep the cgroup alive.
        sleeper = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}; exec sleep 60",
                w.pods[1].cgroup.procs_file().display()
            ))
            .spawn()
            .unwrap();
        bulwark_e2e::poll_until(std::time::Duration::from_secs(5), || {
            (!w.pods[1].cgroup.pids().is_empty()).then_some(())
        })
        .expect("the sleeper joined the cgroup");
        let y = w.workloads_yaml();
        let parsed: serde_json::Value = serde_saphyr::from_str(&y).expect("workloads YAML parses");
        assert_eq!(parsed["workloads"][1]["namespace"], "b", "{y}");
        assert_eq!(parsed["workloads"][1]["pod"], "p2", "{y}");
        assert_eq!(parsed["workloads"][1]["labels"]["app"], "p2", "{y}");
        assert_eq!(
            parsed["workloads"][0]["cgroup"],
            w.pods[0].cgroup.relative(),
            "{y}"
        );
        assert!(y.contains("namespace: \"b\""), "{y}");
        assert!(y.contains(w.pods[0].cgroup.relative()), "{y}");
        assert!(cg.starts_with(cgroup2_mount()));
    }
    let status = sleeper.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc_sigkill()),
        "the leftover process was killed by the cgroup guard"
    );
    assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    assert!(!dir.exists(), "dir {} left behind", dir.display());
    let list = bulwark_e2e::host_cmd("ip", &["netns", "list"]);
    assert!(!list.contains(&netns), "netns {netns} left behind: {list}");
}

fn libc_sigkill() -> i32 {
    9
}
