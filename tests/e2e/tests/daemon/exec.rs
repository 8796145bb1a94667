//! exec hook: `Sigkill` by exact path, by path prefix and by argv; the killed image never runs
//! (its side effect, a `touch`, never happens) and its exit event says SIGKILL; binaries that do
//! not match run normally.

use crate::{assert_killed_at_exec, assert_ran};
use bulwark_e2e::daemon::ev;
use bulwark_e2e::{preflight, serial, Daemon, Event, PolicyBuilder, RuleBuilder, RunOutput, World};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
    let out = run_touch(&w, &[kill.to_str().unwrap()], &marker);
    assert_killed_at_exec(&d, &out, &kill, "e2e-exec-exact", &marker);

    let marker = w.dir().join("ran-marker");
    let out = run_touch(&w, &[ok.to_str().unwrap()], &marker);
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
    let policy = kill_policy("e2e-exec-prefix", "Prefix", &prefix);
    let d = Daemon::start(&w, &[("prefix.yaml", &policy)]);

    let marker = w.dir().join("killed-marker");
    let out = run_touch(&w, &[kill.to_str().unwrap()], &marker);
    assert_killed_at_exec(&d, &out, &kill, "e2e-exec-prefix", &marker);

    let marker = w.dir().join("ran-marker");
    let out = run_touch(&w, &[ok.to_str().unwrap()], &marker);
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
    let out = run_touch(&w, &[touch.to_str().unwrap()], &marker);
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
    let out = run_touch(&w, &[touch.to_str().unwrap()], &marker);
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
    assert_eq!(
        m["reason"],
        serde_json::Value::Null,
        "matched on what it saw: {m}"
    );

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

/// The process was SIGKILLed at exec by `policy` before it ran (its side effect `marker` never
/// happened); returns the `policy_match` (whose binary is the path it was run by).
fn assert_killed_by(d: &Daemon, out: &RunOutput, policy: &str, marker: &Path) -> Event {
    assert!(out.sigkilled(), "should have been SIGKILLed: {out}");
    assert!(
        !marker.exists(),
        "killed but it ran: {} exists",
        marker.display()
    );
    let pid = out.pid as u64;
    let m = d.wait_event(&format!("policy_match of {policy} for pid {pid}"), |e| {
        ev::is_match(e, policy, "exec") && ev::pid(e) == Some(pid)
    });
    assert_eq!(m["outcome"], "killed", "{m}");
    m
}

/// Runs `cmd` (a copy of `touch`, or the loader and its options before one) in the pod with
/// `marker` as its last argument: the file it creates if the image runs.
fn run_touch(w: &World, cmd: &[&str], marker: &Path) -> RunOutput {
    let mut argv = cmd.to_vec();
    argv.push(marker.to_str().unwrap());
    w.pod().run(&argv)
}

/// A policy killing the binaries `operator` `value` (a path or a prefix) in namespace
/// `e2e-exec`.
fn kill_policy(name: &str, operator: &str, value: &str) -> String {
    PolicyBuilder::new(name)
        .rule(
            RuleBuilder::exec("kill-it")
                .namespaces("In", &["e2e-exec"])
                .binaries(operator, &[value])
                .action("Sigkill"),
        )
        .yaml()
}

/// Issue 9.7: the file, not the path. A hard link to the killed binary, a bind mount of it at
/// another path (as root, and by an unprivileged user in its own user and mount namespace)
/// and the same file replaced by an upgrade are all the binary the policy names.
#[test]
fn exec_kill_follows_the_file_through_hard_links_and_bind_mounts() {
    let _g = serial();
    let w = World::single("exec-identity", "e2e-exec");
    let kill = w.install_binary(&preflight().touch, "bin/touch-kill");
    let d = Daemon::start(
        &w,
        &[(
            "id.yaml",
            &kill_policy("e2e-exec-id", "In", kill.to_str().unwrap()),
        )],
    );
    let open_dir = w.dir().join("open");
    std::fs::create_dir_all(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();

    // A hard link elsewhere: another path, the same inode.
    let link = w.dir().join("alias/innocent");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::hard_link(&kill, &link).unwrap();
    let marker = open_dir.join("link-ran");
    let out = run_touch(&w, &[link.to_str().unwrap()], &marker);
    let m = assert_killed_by(&d, &out, "e2e-exec-id", &marker);
    assert_eq!(
        ev::binary(&m),
        link.to_str().unwrap(),
        "named by the path it ran by: {m}"
    );

    // A bind mount of the file over another one, in a mount namespace of its own (root).
    let target = w.install_binary(&preflight().touch, "bin/harmless");
    let marker = open_dir.join("bind-ran");
    let script = r#"mount --bind "$1" "$2" && exec "$2" "$3""#;
    let out = w.pod().run(&[
        "unshare",
        "-m",
        "sh",
        "-c",
        script,
        "sh",
        kill.to_str().unwrap(),
        target.to_str().unwrap(),
        marker.to_str().unwrap(),
    ]);
    assert_killed_by(&d, &out, "e2e-exec-id", &marker);

    // The same by an unprivileged user in its own user and mount namespace (`unshare -Urm`).
    let marker = open_dir.join("userns-ran");
    let out = w.pod().run(&[
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "unshare",
        "-Urm",
        "sh",
        "-c",
        script,
        "sh",
        kill.to_str().unwrap(),
        target.to_str().unwrap(),
        marker.to_str().unwrap(),
    ]);
    assert_killed_by(&d, &out, "e2e-exec-id", &marker);
    // The bind-mount target itself, run normally, is another file and runs.
    let marker = open_dir.join("target-ran");
    let out = run_touch(&w, &[target.to_str().unwrap()], &marker);
    assert_ran(&d, &out, &target, &marker);

    // An upgrade replaces the file at the policy's path: the daemon notices (it re-reads the
    // files binary values name every second) and the new file is the binary from then on.
    let mark = d.mark();
    let fresh = w.dir().join("bin/.touch-kill.new");
    std::fs::copy(&preflight().touch, &fresh).unwrap();
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&fresh, &kill).unwrap();
    let st = d.wait_event_after(mark, "the re-apply for the replaced file", |e| {
        ev::is(e, "status") && e["state"] == "reloaded"
    });
    assert_eq!(st["policies"], serde_json::json!(["e2e-exec-id"]), "{st}");
    let link2 = w.dir().join("alias/upgraded");
    std::fs::hard_link(&kill, &link2).unwrap();
    let marker = open_dir.join("upgraded-ran");
    let out = run_touch(&w, &[link2.to_str().unwrap()], &marker);
    assert_killed_by(&d, &out, "e2e-exec-id", &marker);
}

/// `Prefix` (and `Postfix`) stay matters of the path: a file reached by another path (here a
/// hard link outside the prefix) is not under the prefix (documented in docs/enforcement.md).
#[test]
fn exec_prefix_matches_the_path_not_the_file() {
    let _g = serial();
    let w = World::single("exec-pfx-path", "e2e-exec");
    let tool = w.install_binary(&preflight().touch, "pfx/tool");
    let prefix = format!("{}/pfx/", w.dir().display());
    let policy = kill_policy("e2e-exec-pfx-path", "Prefix", &prefix);
    let d = Daemon::start(&w, &[("pfx.yaml", &policy)]);
    let marker = w.dir().join("in-prefix");
    let out = run_touch(&w, &[tool.to_str().unwrap()], &marker);
    assert_killed_at_exec(&d, &out, &tool, "e2e-exec-pfx-path", &marker);
    let link = w.dir().join("elsewhere/tool");
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::fs::hard_link(&tool, &link).unwrap();
    let marker = w.dir().join("via-link");
    let out = run_touch(&w, &[link.to_str().unwrap()], &marker);
    assert_ran(&d, &out, &link, &marker);
}

/// The dynamic loader run directly (`ld-linux-x86-64.so.2 /path/touch`): its target is matched
/// as the binary, after the loader's own options; and `matchExecKinds` can refuse a loader or
/// a fileless exec (`memfd_create` + `execveat`) outright.
#[test]
fn exec_through_the_loader_or_from_memory_is_matchable() {
    let _g = serial();
    let w = World::single("exec-loader", "e2e-exec");
    let kill = w.install_binary(&preflight().touch, "bin/touch-kill");
    let ok = w.install_binary(&preflight().touch, "bin/touch-ok");
    let (sh, _) = bulwark::pipeline::binary_ids::resolve_in(Path::new("/"), "/bin/sh").unwrap();
    let loader = bulwark::pipeline::binary_ids::elf_interpreter(&sh).expect("ld.so of /bin/sh");
    let policy = kill_policy("e2e-exec-loader", "In", kill.to_str().unwrap());
    let fileless = PolicyBuilder::new("e2e-exec-fileless")
        .rule(
            RuleBuilder::exec("kill-fileless")
                .namespaces("In", &["e2e-exec"])
                .exec_kinds("In", &["fileless"])
                .action("Sigkill"),
        )
        .yaml();
    let d = Daemon::start(&w, &[("loader.yaml", &policy), ("kinds.yaml", &fileless)]);
    // Through the loader, with and without loader options before the program.
    let marker = w.dir().join("loader-ran");
    let out = run_touch(&w, &[&loader, kill.to_str().unwrap()], &marker);
    let m = assert_killed_by(&d, &out, "e2e-exec-loader", &marker);
    assert!(
        crate::same_file(ev::binary(&m), &loader),
        "the executed file is the loader: {m}"
    );
    let marker = w.dir().join("loader-opts-ran");
    let out = w.pod().run(&[
        &loader,
        "--library-path",
        "/nonexistent",
        "--inhibit-cache",
        kill.to_str().unwrap(),
        marker.to_str().unwrap(),
    ]);
    assert_killed_by(&d, &out, "e2e-exec-loader", &marker);
    // Another program through the loader runs.
    let marker = w.dir().join("loader-ok-ran");
    let out = run_touch(&w, &[&loader, ok.to_str().unwrap()], &marker);
    assert!(out.success() && marker.exists(), "{out}");

    // From memory: the copy in a memfd is no file the binary policy names, but it is fileless.
    let marker = w.dir().join("memfd-ran");
    let out = w.pod().run(&[
        crate::helper(),
        "memfd-exec",
        kill.to_str().unwrap(),
        marker.to_str().unwrap(),
    ]);
    let m = assert_killed_by(&d, &out, "e2e-exec-fileless", &marker);
    // A memfd has no path: the event names what execveat was given (`/dev/fd/N`).
    assert!(ev::binary(&m).starts_with("/dev/fd/"), "{m}");
}
