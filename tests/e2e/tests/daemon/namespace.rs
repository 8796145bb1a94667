//! namespace selectors: a policy for Kubernetes namespace A (through the workloads file's
//! cgroup mapping) kills and blocks in A and does not touch the same actions in namespace B.

use crate::{assert_connected, assert_eperm, assert_killed_at_exec, assert_ran};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::{preflight, serial, Daemon, PolicyBuilder, RuleBuilder, TestServer};
use bulwark_e2e::{World, WorldConfig};

#[test]
fn policy_for_namespace_a_does_not_touch_namespace_b() {
    let _g = serial();
    let w = World::new(WorldConfig {
        tag: "namespaces".into(),
        pods: vec![
            ("e2e-team-a".into(), "web-a".into()),
            ("e2e-team-b".into(), "web-b".into()),
        ],
    });
    let _srv = TestServer::start(&w.net, &[8080]);
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let c4 = w.net.v4_cidr();
    let policy = PolicyBuilder::new("e2e-team-a-only")
        .rule(
            RuleBuilder::exec("kill-touch")
                .namespaces("In", &["e2e-team-a"])
                .binaries("In", &[touch.to_str().unwrap()])
                .action("Sigkill"),
        )
        .rule(
            RuleBuilder::connect("block-8080")
                .namespaces("In", &["e2e-team-a"])
                .destinations("In", &[&c4], &["8080"], None)
                .action("Block"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("team-a.yaml", &policy)]);
    let (a, b) = (&w.pods[0], &w.pods[1]);
    let ip = w.net.server_ip(false);

    let marker = w.dir().join("a-marker");
    let out = a.run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    let m = assert_killed_at_exec(&d, &out, &touch, "e2e-team-a-only", &marker);
    assert_eq!(m["process"]["pod"]["namespace"], "e2e-team-a", "{m}");
    assert_eq!(m["process"]["pod"]["name"], "web-a", "{m}");
    assert_eq!(m["process"]["pod"]["container"], "main", "{m}");
    assert_eq!(m["process"]["pod"]["labels"]["app"], "web-a", "{m}");
    assert_eperm(&a.probe(ip, 8080, &[]));

    let marker = w.dir().join("b-marker");
    let out = b.run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &touch, &marker);
    let exec = d.wait_event("process_exec of the touch in namespace B", |e| {
        ev::is(e, "process_exec")
            && ev::pid(e) == Some(out.pid as u64)
            && ev::binary(e) == touch.to_str().unwrap()
    });
    assert_eq!(exec["process"]["pod"]["namespace"], "e2e-team-b", "{exec}");
    let out = b.probe(ip, 8080, &["--send", "GET /b HTTP/1.0\r\n\r\n"]);
    assert_connected(&out);

    let in_b =
        d.find(|e| ev::is(e, "policy_match") && e["process"]["pod"]["namespace"] == "e2e-team-b");
    assert!(in_b.is_empty(), "the policy for A matched in B: {in_b:?}");
}
