//! Socket types the connect and egress hooks never see (raw IP, ICMP "ping", MPTCP, packet
//! sockets, also made through 32-bit syscalls and io_uring): the in-pod probe that asks for one
//! and sends a marker through it ([`Pod::socket_probe`], `sockets.py`), and a capture of every
//! frame that reaches the server namespace ([`Sniffer`], `sniff.py`), so a test can tell whether
//! the marker got onto the wire.

use crate::netns::NetPair;
use crate::pod::{Pod, RunOutput};
use crate::servers::python_in_server_netns;
use crate::TempDir;
use serde_json::Value;
use std::ffi::OsStr;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Child;

/// The in-pod socket probe, see [`Pod::socket_probe`].
pub const SOCKETS_PY: &str = include_str!("sockets.py");
/// The frame capture run in the server namespace, see [`Sniffer`].
pub const SNIFF_PY: &str = include_str!("sniff.py");

/// Every marker starts with this, so the capture can find it in any frame.
pub const MARKER_PREFIX: &str = "BWMARK-";

/// A marker unique on this machine for one send (`BWMARK-<pid>-<n>-<tag>`).
pub fn marker(tag: &str) -> String {
    format!(
        "{MARKER_PREFIX}{}-{}-{tag}",
        std::process::id(),
        crate::next_id()
    )
}

/// A running capture on the server namespace's `eth0`; killed on drop.
pub struct Sniffer {
    child: Child,
    log: PathBuf,
    _dir: TempDir,
}

impl Sniffer {
    /// Starts capturing in `net.server` and waits until the capture socket is bound.
    pub fn start(net: &NetPair) -> Sniffer {
        let dir = TempDir::new("sniff");
        let script = dir.join("sniff.py");
        std::fs::write(&script, SNIFF_PY).expect("write sniff.py");
        let (log, ready, stderr) = (dir.join("frames.log"), dir.join("ready"), dir.join("err"));
        let args: [&OsStr; 4] = [
            "eth0".as_ref(),
            MARKER_PREFIX.as_ref(),
            log.as_ref(),
            ready.as_ref(),
        ];
        let child =
            python_in_server_netns(net, &script, &args, &ready, &stderr, "the frame capture");
        Sniffer {
            child,
            log,
            _dir: dir,
        }
    }

    /// The markers captured so far, one per frame that held one.
    pub fn markers(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["marker"].as_str().map(str::to_string))
            .collect()
    }

    /// Whether a frame carrying `marker` reached the server namespace.
    pub fn saw(&self, marker: &str) -> bool {
        self.markers().iter().any(|m| m == marker)
    }

    /// Waits until a frame carrying `marker` arrives; panics after [`crate::timeout()`].
    pub fn wait_for(&self, marker: &str) {
        if crate::poll_until(crate::timeout(), || self.saw(marker).then_some(())).is_none() {
            panic!(
                "no frame carrying {marker} reached the server namespace; captured: {:?}",
                self.markers()
            );
        }
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pod {
    /// Runs the socket-type probe (`sockets.py KIND DEST MARKER PORT`) in the pod: asks for a
    /// socket of `kind` (`raw-tcp`, `raw-icmp`, `raw6-icmp`, `ping`, `mptcp`, `packet`,
    /// `sock-packet`, `xdp`, `packet-int80`, `socketcall`, `packet-uring`) and sends `marker` through
    /// it. Its stdout is one JSON line `{"kind":..,"socket":"ok"|"EPERM"|..}` and, when the
    /// socket was made, `{"sent":..,"reply":bool}` ([`socket_result`]).
    pub fn socket_probe(&self, kind: &str, dest: IpAddr, marker: &str, port: u16) -> RunOutput {
        let tools = crate::preflight();
        let script = self.dir.join("sockets.py");
        if !script.exists() {
            std::fs::write(&script, SOCKETS_PY).expect("write sockets.py");
        }
        let python = tools.python3.display().to_string();
        let script = script.display().to_string();
        let (dest, port) = (dest.to_string(), port.to_string());
        self.run(&[&python, &script, kind, &dest, marker, &port])
    }

    /// Lets any group open ICMP datagram ("ping") sockets in this pod's network namespace
    /// (`net.ipv4.ping_group_range`, off by default).
    pub fn allow_ping_sockets(&self) {
        crate::host_cmd(
            "ip",
            &[
                "netns",
                "exec",
                &self.netns,
                "sh",
                "-c",
                "echo '0 2147483647' > /proc/sys/net/ipv4/ping_group_range",
            ],
        );
    }
}

/// The probe's two JSON lines merged into one object (`socket`, and `sent`/`reply` when the
/// socket was made); `Value::Null` fields for lines that never came (e.g. killed).
pub fn socket_result(out: &RunOutput) -> Value {
    let mut merged = serde_json::Map::new();
    for line in out.stdout.lines() {
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(line) {
            merged.extend(o);
        }
    }
    Value::Object(merged)
}
