//! exec hook: `Sigkill` by exact path, by path prefix and by argv; the killed image never runs
//! (its side effect, a `touch`, never happens) and its exit event says SIGKILL; binaries that do
//! not match run normally.

use crate::{assert_killed_at_exec, assert_ran};
use bulwark_e2e::{preflight, serial, Daemon, PolicyBuilder, RuleBuilder, World};

#[test]
fn exec_sigkill_by_exact_path() {
    let _g = serial();
    let w = World::single("exec-exact", "e2e-exec");
    let touch = &preflight().touch;
    let kill = w.install_binary(touch, "bin/touch-kill");
    let ok = w.install_binary(touch, "bin/touch-ok");
    let policy = PolicyBuilder::new("e2e-exec-exact")
        .rule(
            RuleBuilder::exec("kill-exact")
                .namespaces("In", &["e2e-exec"])
                .binaries("In", &[kill.to_str().unwrap()])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("exact.yaml", &policy)]);

    let marker = w.dir().join("killed-marker");
    let out = w
        .pod()
        .run(&[kill.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_killed_at_exec(&d, &out, &kill, "e2e-exec-exact", &marker);

    let marker = w.dir().join("ran-marker");
    let out = w
        .pod()
        .run(&[ok.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &ok, &marker);
}

#[test]
fn exec_sigkill_by_prefix() {
    let _g = serial();
    let w = World::single("exec-prefix", "e2e-exec");
    let touch = &preflight().touch;
    let kill = w.install_binary(touch, "pfx/deep/touch");
    // Shares the string prefix `<dir>/pfx` but not the directory prefix `<dir>/pfx/`.
    let ok = w.install_binary(touch, "pfxnot/touch");
    let prefix = format!("{}/pfx/", w.dir().display());
    let policy = PolicyBuilder::new("e2e-exec-prefix")
        .rule(
            RuleBuilder::exec("kill-prefix")
                .namespaces("In", &["e2e-exec"])
                .binaries("Prefix", &[&prefix])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("prefix.yaml", &policy)]);

    let marker = w.dir().join("killed-marker");
    let out = w
        .pod()
        .run(&[kill.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_killed_at_exec(&d, &out, &kill, "e2e-exec-prefix", &marker);

    let marker = w.dir().join("ran-marker");
    let out = w
        .pod()
        .run(&[ok.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &ok, &marker);
}

#[test]
fn exec_sigkill_by_argv() {
    let _g = serial();
    let w = World::single("exec-argv", "e2e-exec");
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let policy = PolicyBuilder::new("e2e-exec-argv")
        .rule(
            RuleBuilder::exec("kill-forbidden-arg")
                .namespaces("In", &["e2e-exec"])
                .binaries("In", &[touch.to_str().unwrap()])
                .args(Some(1), "Postfix", &[".forbidden"])
                .action("Sigkill")
                .or()
                .namespaces("In", &["e2e-exec"])
                .binaries("In", &[touch.to_str().unwrap()])
                .args(None, "In", &["-m"])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("argv.yaml", &policy)]);

    // argv[1] ends with .forbidden: killed.
    let marker = w.dir().join("x.forbidden");
    let out = w
        .pod()
        .run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_killed_at_exec(&d, &out, &touch, "e2e-exec-argv", &marker);

    // `-m` anywhere in argv[1..] (here argv[2]; GNU touch permutes options, so without the
    // kill it would create the marker): killed by the second selector.
    let marker = w.dir().join("any-position");
    let out = w
        .pod()
        .run(&[touch.to_str().unwrap(), marker.to_str().unwrap(), "-m"]);
    assert_killed_at_exec(&d, &out, &touch, "e2e-exec-argv", &marker);

    // The same binary with other arguments runs.
    let marker = w.dir().join("x.allowed");
    let out = w
        .pod()
        .run(&[touch.to_str().unwrap(), marker.to_str().unwrap()]);
    assert_ran(&d, &out, &touch, &marker);
}

/// Issue 9.8: every argv element is examined, however many come before and however long they
/// are; past the kernel's bounds the arguments are incomplete and an enforce-mode selector with
/// argument conditions fails closed, saying why.
#[test]
fn exec_sigkill_sees_every_argument_and_fails_closed_past_the_bounds() {
    let _g = serial();
    let w = World::single("exec-allargs", "e2e-exec");
    let touch = w.install_binary(&preflight().touch, "bin/touch");
    let t = touch.to_str().unwrap();
    let policy = PolicyBuilder::new("e2e-exec-allargs")
        .rule(
            RuleBuilder::exec("kill-interactive")
                .namespaces("In", &["e2e-exec"])
                .binaries("In", &[t])
                .args(None, "In", &["-i"])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("allargs.yaml", &policy)]);
    let dir = w.dir().to_str().unwrap().to_string();
    let file = |name: &str| format!("{dir}/{name}");

    // `-i` as the 17th argument (argv[17]): the kernel used to stop at argv[15].
    let marker = w.dir().join("seventeenth");
    let mut argv: Vec<String> = vec![t.into(), marker.to_str().unwrap().into()];
    argv.extend((2..17).map(|i| file(&format!("a{i}"))));
    argv.push("-i".into());
    assert_eq!(argv.len(), 18);
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = w.pod().run(&refs);
    let m = assert_killed_at_exec(&d, &out, &touch, "e2e-exec-allargs", &marker);
    assert!(m.get("reason").is_none(), "matched on what it saw: {m}");

    // A first argument of 300 bytes (longer than one kernel read), then `-i`.
    let marker = w.dir().join("after-long");
    let long = format!("{dir}/{}", "l".repeat(300));
    let out = w.pod().run(&[t, &long, marker.to_str().unwrap(), "-i"]);
    assert_killed_at_exec(&d, &out, &touch, "e2e-exec-allargs", &marker);

    // 4,000 arguments, none of them `-i` (`-a`: touch the access time, again and again): all
    // examined, nothing matches, touch runs.
    let marker = w.dir().join("many-ok");
    let mut argv: Vec<String> = vec![t.into(), marker.to_str().unwrap().into()];
    argv.extend(std::iter::repeat_n("-a".to_string(), 3_998));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = w.pod().run(&refs);
    assert_ran(&d, &out, &touch, &marker);

    // 5,000 arguments: more than the kernel examines, so the arguments are incomplete and the
    // selector fails closed (no `-i` anywhere), with the reason on the match and the cut
    // argument copy flagged.
    let marker = w.dir().join("many-killed");
    let mut argv: Vec<String> = vec![t.into(), marker.to_str().unwrap().into()];
    argv.extend(std::iter::repeat_n("-a".to_string(), 4_998));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = w.pod().run(&refs);
    let m = assert_killed_at_exec(&d, &out, &touch, "e2e-exec-allargs", &marker);
    assert_eq!(m["reason"], "arguments_incomplete", "{m}");
    assert_eq!(m["process"]["arguments_truncated"], true, "{m}");
}
