//! Test servers in the server network namespace: one python3 process (`server.py`) serving
//! plain HTTP and HTTPS on the same ports (it peeks at the first byte of each connection), with
//! a self-signed certificate made by `openssl` in the test's temp dir, logging every connection,
//! first payload and request to a JSON-lines file that [`ServerLog`] reads. Dropping the guard
//! kills the server.

use crate::netns::NetPair;
use crate::TempDir;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The server script, written next to its log when a server starts.
pub const SERVER_PY: &str = include_str!("server.py");
/// The socket probe run in pods, see [`crate::Pod::probe`].
pub const CLIENT_PY: &str = include_str!("client.py");

/// A running test server.
pub struct TestServer {
    child: Child,
    log: PathBuf,
    stderr: PathBuf,
    /// The ports it listens on (all addresses of the server namespace, v4 and v6).
    pub ports: Vec<u16>,
    _dir: TempDir,
}

impl TestServer {
    /// Starts the server in `net.server` listening on `ports` and waits until it listens.
    pub fn start(net: &NetPair, ports: &[u16]) -> TestServer {
        let dir = TempDir::new("server");
        let script = dir.join("server.py");
        std::fs::write(&script, SERVER_PY).expect("write server.py");
        let (cert, key) = self_signed_cert(dir.path());
        let log = dir.join("server.log");
        let ready = dir.join("ready");
        let stderr = dir.join("server.stderr");
        let ports_arg = ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let args: [&std::ffi::OsStr; 10] = [
            "--ports".as_ref(),
            ports_arg.as_ref(),
            "--log".as_ref(),
            log.as_ref(),
            "--cert".as_ref(),
            cert.as_ref(),
            "--key".as_ref(),
            key.as_ref(),
            "--ready".as_ref(),
            ready.as_ref(),
        ];
        let what = format!("the test server (listening on {ports_arg})");
        let child = python_in_server_netns(net, &script, &args, &ready, &stderr, &what);
        TestServer {
            child,
            log,
            stderr,
            ports: ports.to_vec(),
            _dir: dir,
        }
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> ServerLog {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        ServerLog {
            records: text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        }
    }

    /// The server's stderr (for failure messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// A self-signed certificate for `CN=bulwark-e2e` (P-256, one day) made by `openssl` in `dir`:
/// the paths of `cert.pem` and `key.pem`.
pub fn self_signed_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let tools = crate::preflight();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    crate::host_cmd(
        tools.openssl.to_str().expect("utf-8 path"),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=bulwark-e2e",
            "-keyout",
            key.to_str().expect("utf-8 path"),
            "-out",
            cert.to_str().expect("utf-8 path"),
        ],
    );
    (cert, key)
}

/// Starts `python3 script args..` in the server namespace and waits until it creates `ready`;
/// panics with its stderr (written to `stderr`) when it exits first or takes too long.
pub fn python_in_server_netns(
    net: &NetPair,
    script: &Path,
    args: &[&std::ffi::OsStr],
    ready: &Path,
    stderr: &Path,
    what: &str,
) -> Child {
    let tools = crate::preflight();
    let mut child = Command::new(&tools.ip)
        .args(["netns", "exec", &net.server])
        .arg(&tools.python3)
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("create stderr file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let up = crate::poll_until(crate::timeout(), || {
        if ready.exists() {
            return Some(true);
        }
        matches!(child.try_wait(), Ok(Some(_))).then_some(false)
    });
    if up != Some(true) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{what} in netns {} did not start: {}",
            net.server,
            std::fs::read_to_string(stderr).unwrap_or_default()
        );
    }
    child
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A snapshot of a server's log.
#[derive(Clone, Debug)]
pub struct ServerLog {
    /// One JSON object per line: `event` is accept | data | close | tls_error | request.
    pub records: Vec<Value>,
}

impl ServerLog {
    fn of(&self, event: &str) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|r| r["event"] == event)
            .collect()
    }

    /// Accepted connections.
    pub fn accepts(&self) -> Vec<&Value> {
        self.of("accept")
    }

    /// Connections on which at least one byte arrived (`tls` says whether it was TLS).
    pub fn data(&self) -> Vec<&Value> {
        self.of("data")
    }

    /// HTTP requests served (`tls`, `conn`, `path`, `port`).
    pub fn requests(&self) -> Vec<&Value> {
        self.of("request")
    }

    /// Requests whose path is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<&Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }

    /// Connections accepted on server address `local` (as the server logs it, e.g.
    /// `10.199.3.2` or `fd99:3::2`).
    pub fn conns_to(&self, local: &str) -> Vec<u64> {
        self.accepts()
            .iter()
            .filter(|a| a["local"] == local)
            .filter_map(|a| a["conn"].as_u64())
            .collect()
    }

    /// First-payload records (`data`) of connections to server address `local`.
    pub fn data_to(&self, local: &str) -> Vec<&Value> {
        let conns = self.conns_to(local);
        self.data()
            .into_iter()
            .filter(|d| d["conn"].as_u64().is_some_and(|c| conns.contains(&c)))
            .collect()
    }

    /// True when no payload byte reached the server at all.
    pub fn received_nothing(&self) -> bool {
        self.data().is_empty() && self.requests().is_empty()
    }
}
