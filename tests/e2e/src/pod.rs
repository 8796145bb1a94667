//! A test "pod": a cgroup (mapped to a Kubernetes namespace/pod/container through the daemon's
//! workloads file) plus the pod network namespace. [`Pod::run`] runs a command inside both —
//! `sh -c 'echo $$ > <cgroup>/cgroup.procs && exec ip netns exec <pod-netns> CMD...'`, so the
//! command's own pid is in the cgroup from its first instruction — and returns its exit status,
//! signal, stdout and stderr. Helpers wrap curl and the python socket probe.

use crate::cgroup::Cgroup;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One workload.
#[derive(Debug)]
pub struct Pod {
    /// Kubernetes namespace the workloads file gives this cgroup.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Container name.
    pub container: String,
    /// Pod labels.
    pub labels: BTreeMap<String, String>,
    /// The network namespace commands run in.
    pub netns: String,
    /// The pod's cgroup.
    pub cgroup: Cgroup,
    /// Scratch directory for probe scripts and outputs of this pod.
    pub dir: PathBuf,
}

/// A command started with [`Pod::spawn`]; killed on drop if still running.
pub struct Running {
    child: Option<std::process::Child>,
    argv: Vec<String>,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Running {
    /// Its pid (the same pid execs `sh`, `ip` and then the command).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// What it wrote to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Waits up to `limit` for the exit; SIGKILLs it then (`timed_out`).
    pub fn wait(mut self, limit: Duration) -> RunOutput {
        let mut child = self.child.take().expect("waited once");
        let pid = child.id();
        let deadline = Instant::now() + limit;
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = child.kill();
                    break child.wait().expect("wait for killed child");
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => panic!("waiting for {:?} failed: {e}", self.argv),
            }
        };
        RunOutput {
            pid,
            code: status.code(),
            signal: status.signal(),
            stdout: std::fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.err_path).unwrap_or_default(),
            timed_out,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.out_path);
        let _ = std::fs::remove_file(&self.err_path);
    }
}

/// What a command run in a pod did.
#[derive(Clone, Debug)]
pub struct RunOutput {
    /// Pid of the process (the same pid execs `sh`, `ip` and then the command).
    pub pid: u32,
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// True when the harness killed it after the timeout.
    pub timed_out: bool,
}

impl RunOutput {
    /// Exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Killed by SIGKILL (and not by the harness's timeout).
    pub fn sigkilled(&self) -> bool {
        self.signal == Some(libc::SIGKILL) && !self.timed_out
    }

    /// The stdout parsed as one JSON object (the socket probe's output), or `Value::Null`.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(serde_json::Value::Null)
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} code {:?} signal {:?}{} stdout {:?} stderr {:?}",
            self.pid,
            self.code,
            self.signal,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

impl Pod {
    /// Runs `argv` in this pod's cgroup and network namespace, waiting up to
    /// [`crate::timeout()`].
    pub fn run(&self, argv: &[&str]) -> RunOutput {
        self.run_timeout(argv, crate::timeout())
    }

    /// [`Pod::run`] with an explicit timeout; a command still running then is SIGKILLed and
    /// reported with `timed_out`.
    pub fn run_timeout(&self, argv: &[&str], limit: Duration) -> RunOutput {
        self.spawn(argv).wait(limit)
    }

    /// Starts `argv` in this pod's cgroup and network namespace without waiting for it.
    pub fn spawn(&self, argv: &[&str]) -> Running {
        assert!(!argv.is_empty(), "Pod::spawn needs a command");
        let tools = crate::preflight();
        let n = crate::next_id();
        let out_path = self.dir.join(format!("run-{n}.out"));
        let err_path = self.dir.join(format!("run-{n}.err"));
        let script =
            "echo $$ > \"$0\" || exit 125; ns=$1; shift; exec ip netns exec \"$ns\" \"$@\"";
        let child = Command::new(&tools.sh)
            .arg("-c")
            .arg(script)
            .arg(self.cgroup.procs_file())
            .arg(&self.netns)
            .args(argv)
            .env("NO_PROXY", "*")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("create stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("create stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", tools.sh.display()));
        Running {
            child: Some(child),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            out_path,
            err_path,
        }
    }

    /// `curl -sS --noproxy '*' --max-time 10 ARGS...` in the pod (add `-k` for the self-signed
    /// test certificate yourself).
    pub fn curl(&self, args: &[&str]) -> RunOutput {
        let tools = crate::preflight();
        let curl = tools.curl.to_str().expect("utf-8 path");
        let mut argv = vec![curl, "-sS", "--noproxy", "*", "--max-time", "10"];
        argv.extend_from_slice(args);
        self.run(&argv)
    }

    /// Runs the python socket probe (`client.py`): connect to `ip:port` (TCP, or UDP with
    /// `--udp`), optionally `--send TEXT` or `--tls-record`; its stdout is one JSON object such as
    /// `{"connect":"EPERM"}` or `{"connect":"ok","send":"EACCES"}` (see [`RunOutput::json`]).
    pub fn probe(&self, ip: IpAddr, port: u16, extra: &[&str]) -> RunOutput {
        let argv = self.probe_argv(ip, port, extra);
        let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.run(&refs)
    }

    /// The command line of [`Pod::probe`] (for [`Pod::spawn`], e.g. with `--wait-for FILE`).
    pub fn probe_argv(&self, ip: IpAddr, port: u16, extra: &[&str]) -> Vec<String> {
        let tools = crate::preflight();
        let script = self.dir.join("client.py");
        if !script.exists() {
            std::fs::write(&script, crate::servers::CLIENT_PY).expect("write client.py");
        }
        let mut argv = vec![
            tools.python3.display().to_string(),
            script.display().to_string(),
            ip.to_string(),
            port.to_string(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv
    }

    /// The workloads-file entry for this pod (YAML flow mapping).
    pub fn workload_yaml(&self) -> String {
        let labels = self
            .labels
            .iter()
            .map(|(k, v)| format!("{}: {}", json(k), json(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "  - {{cgroup: {}, namespace: {}, pod: {}, container: {}, labels: {{{labels}}}}}\n",
            json(self.cgroup.relative()),
            json(&self.namespace),
            json(&self.name),
            json(&self.container)
        )
    }
}

/// A JSON string literal, which is also a valid YAML scalar.
fn json(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
