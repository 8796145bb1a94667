//! events: exec_id / parent_exec_id correlate a shell, the curl it starts and the curl's
//! connect; every event carries `type`, `time` and `node_name`; every line of the event file is
//! an event of the schema (crate `bulwark-events`);
//! SIGTERM stops the daemon cleanly.

use bulwark_e2e::daemon::{ev, NODE_NAME};
use bulwark_e2e::netns::url;
use bulwark_e2e::{
    preflight, serial, Daemon, Event, PolicyBuilder, RuleBuilder, TestServer, World,
};
use bulwark_events::Outcome;

#[test]
fn exec_ids_correlate_shell_child_and_connect() {
    let _g = serial();
    let w = World::single("events", "e2e-events");
    let srv = TestServer::start(&w.net, &[8080]);
    let c4 = w.net.v4_cidr();
    let policy = PolicyBuilder::new("e2e-report-connect")
        .rule(
            RuleBuilder::connect("report")
                .namespaces("In", &["e2e-events"])
                .destinations("In", &[&c4], &[], None)
                .action("Post"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("post.yaml", &policy)]);
    let curl = preflight().curl.to_str().unwrap().to_string();
    let path = format!("/corr-{}", std::process::id());
    let u = url("http", w.net.server_ip(false), 8080, &path);
    // `; echo done` keeps the shell from exec-ing curl in place: curl is a forked child.
    let script = format!("{curl} -sS --noproxy '*' {u}; echo done");
    let out = w.pod().run(&["sh", "-c", &script]);
    assert!(out.success() && out.stdout.ends_with("done\n"), "{out}");
    assert_eq!(srv.log().requests_for(&path).len(), 1);

    let curl_exec = d.wait_event("process_exec of the child curl", |e| {
        ev::is(e, "process_exec") && ev::binary(e) == curl && ev::arguments(e).contains(&path)
    });
    let curl_id = ev::exec_id(&curl_exec).expect("process.exec_id on process_exec");
    let parent_id = ev::parent_exec_id(&curl_exec).expect("process.parent_exec_id on curl");
    assert_ne!(curl_id, parent_id);
    let shell = d.wait_event("process_exec of the shell (the curl's parent)", |e| {
        ev::is(e, "process_exec") && ev::exec_id(e).as_deref() == Some(parent_id.as_str())
    });
    assert_eq!(
        ev::pid(&shell),
        Some(out.pid as u64),
        "the parent is the shell we ran: {shell}"
    );
    assert!(ev::arguments(&shell).contains(&path), "{shell}");
    assert_ne!(ev::pid(&curl_exec), ev::pid(&shell));
    assert_eq!(
        curl_exec["process"]["pod"]["namespace"], "e2e-events",
        "{curl_exec}"
    );
    // The process cache's other fields: uid, cwd, start time, and the parent summary.
    assert_eq!(curl_exec["process"]["uid"], 0, "{curl_exec}");
    assert!(
        curl_exec["process"]["cwd"]
            .as_str()
            .is_some_and(|c| c.starts_with('/')),
        "{curl_exec}"
    );
    assert!(
        curl_exec["process"]["start_time"]
            .as_str()
            .is_some_and(|t| t.len() >= 20),
        "{curl_exec}"
    );
    assert_eq!(
        curl_exec["parent"]["exec_id"].as_str(),
        Some(parent_id.as_str()),
        "{curl_exec}"
    );
    assert_eq!(curl_exec["parent"]["pid"], out.pid, "{curl_exec}");

    let connect = d.wait_event("process_connect of the curl", |e| {
        ev::is(e, "process_connect") && ev::exec_id(e).as_deref() == Some(curl_id.as_str())
    });
    assert_eq!(
        ev::dest(&connect),
        (w.net.server_v4.to_string(), 8080),
        "{connect}"
    );
    assert_eq!(connect["destination"]["protocol"], "TCP", "{connect}");
    assert_eq!(connect["blocked"], false, "{connect}");
    assert_eq!(
        ev::parent_exec_id(&connect).as_deref(),
        Some(parent_id.as_str())
    );

    let m = d.wait_event("Post policy_match of the curl's connect", |e| {
        ev::is_match(e, "e2e-report-connect", "connect")
            && ev::exec_id(e).as_deref() == Some(curl_id.as_str())
    });
    assert_eq!(m["outcome"], "reported", "{m}");
    assert_eq!(m["action"], "Post", "{m}");
    let exit = d.wait_event("process_exit of the curl", |e| {
        ev::is(e, "process_exit") && ev::exec_id(e).as_deref() == Some(curl_id.as_str())
    });
    assert_eq!(exit["status"], 0, "{exit}");
}

#[test]
fn every_event_has_type_time_and_node_name_and_sigterm_stops_cleanly() {
    let _g = serial();
    let w = World::single("contract", "e2e-contract");
    let d = Daemon::start(&w, &[]);
    let marker = w.dir().join("m");
    let out = w
        .pod()
        .run(&["sh", "-c", &format!("touch {}; true", marker.display())]);
    assert!(out.success(), "{out}");
    d.wait_event("process_exit of the shell", |e| {
        ev::is(e, "process_exit") && ev::pid(e) == Some(out.pid as u64)
    });
    let events = d.events();
    assert!(events.len() >= 2, "{}", d.diagnostics());
    for e in &events {
        assert!(e["type"].is_string(), "event without type: {e}");
        assert!(e["time"].is_string(), "event without time: {e}");
        assert_eq!(
            e["node_name"], NODE_NAME,
            "event without node_name {NODE_NAME}: {e}"
        );
    }
    assert!(
        d.bad_lines().is_empty(),
        "lines that are not events of the schema: {:?}",
        d.bad_lines()
    );
    let ready = d.find(|e| ev::is(e, "status") && e["state"] == "ready");
    assert_eq!(ready.len(), 1, "exactly one ready event: {ready:?}");
    let status = d.stop();
    assert!(
        status.success(),
        "SIGTERM should stop the daemon with exit 0, got {status}"
    );
}

/// `bulwark events` over the file a real daemon wrote: filters by type, namespace, policy and
/// outcome, compact output, and `--follow` picking up an event written after it started.
#[test]
fn bulwark_events_filters_and_follows_the_daemon_output() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let _g = serial();
    let w = World::new(bulwark_e2e::WorldConfig {
        tag: "events-cli".into(),
        pods: vec![
            ("e2e-cli-a".into(), "a".into()),
            ("e2e-cli-b".into(), "b".into()),
        ],
    });
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let policy = PolicyBuilder::new("e2e-cli-kill")
        .rule(
            RuleBuilder::exec("kill-touch")
                .namespaces("In", &["e2e-cli-a"])
                .binaries("In", &[touch.to_str().unwrap()])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("kill.yaml", &policy)]);
    let bin = bulwark_e2e::daemon::bulwark_bin();
    let file = d.events_path().to_str().unwrap().to_string();
    let marker = w.dir().join("m");
    let killed = w.pods[0].run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert!(killed.sigkilled(), "{killed}");
    let ran = w.pods[1].run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert!(ran.success(), "{ran}");
    d.wait_event("the kill", |e| {
        ev::is(e, "policy_match") && ev::pid(e) == Some(killed.pid as u64)
    });
    d.wait_event("the exit in B", |e| {
        ev::is(e, "process_exit") && ev::pid(e) == Some(ran.pid as u64)
    });

    let events = |args: &[&str]| -> Vec<Event> {
        let out = Command::new(bin)
            .args(["events", "--file", &file])
            .args(args)
            .output()
            .expect("run bulwark events");
        assert!(out.status.success(), "bulwark events {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| Event::parse(l).unwrap_or_else(|e| panic!("bulwark events printed {e}")))
            .collect()
    };
    let matches = events(&["--type", "policy_match", "--namespace", "e2e-cli-a"]);
    assert!(!matches.is_empty());
    assert!(matches.iter().all(|e| ev::is(e, "policy_match")
        && e.typed()
            .process()
            .and_then(|p| p.pod.as_ref())
            .map(|p| p.namespace.as_str())
            == Some("e2e-cli-a")));
    assert!(matches
        .iter()
        .any(|e| ev::pid(e) == Some(killed.pid as u64)));
    let killed_only = events(&["--action", "killed", "--policy", "e2e-cli-kill"]);
    assert!(
        !killed_only.is_empty()
            && killed_only
                .iter()
                .all(|e| e.typed().policy_match().map(|m| m.outcome) == Some(Outcome::Killed))
    );
    let in_b = events(&["--namespace", "e2e-cli-b", "--type", "exit"]);
    assert!(
        in_b.iter().any(|e| ev::pid(e) == Some(ran.pid as u64)),
        "{in_b:?}"
    );
    assert!(in_b.iter().all(|e| ev::is(e, "process_exit")), "{in_b:?}");
    assert!(events(&["--namespace", "e2e-cli-nowhere"]).is_empty());

    let compact = Command::new(bin)
        .args([
            "events", "--file", &file, "--type", "match", "-o", "compact",
        ])
        .output()
        .expect("run bulwark events -o compact");
    let text = String::from_utf8_lossy(&compact.stdout);
    assert!(
        compact.status.success() && text.lines().count() == matches.len(),
        "{text}"
    );
    assert!(text.contains("e2e-cli-kill"), "{text}");

    // --follow sees an event written after it started.
    let mut follow = Command::new(bin)
        .args([
            "events",
            "--file",
            &file,
            "--follow",
            "--type",
            "match",
            "--namespace",
            "e2e-cli-a",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run bulwark events --follow");
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // It prints what the file already holds first: once the earlier kill is out, it is
    // following the file's end.
    let deadline = std::time::Instant::now() + bulwark_e2e::timeout();
    let mut caught_up = false;
    while std::time::Instant::now() < deadline && !caught_up {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            caught_up = Event::parse(&line).is_ok_and(|e| ev::pid(&e) == Some(killed.pid as u64));
        }
    }
    assert!(
        caught_up,
        "bulwark events --follow did not print the earlier kill of pid {}",
        killed.pid
    );
    let again = w.pods[0].run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert!(again.sigkilled(), "{again}");
    let deadline = std::time::Instant::now() + bulwark_e2e::timeout();
    let mut seen = false;
    while std::time::Instant::now() < deadline && !seen {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
            seen = Event::parse(&line).is_ok_and(|e| ev::pid(&e) == Some(again.pid as u64));
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen,
        "bulwark events --follow did not print the new kill of pid {}",
        again.pid
    );
}
