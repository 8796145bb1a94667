//! The daemon's side of the wiring, for a daemon that is not async: [`start`] runs the controller
//! (and the health endpoint) on its own thread with its own tokio runtime and returns a
//! [`NodeHandle`]; [`ViolationTap`] wraps the daemon's event writer, passes every byte through
//! unchanged and hands each `policy_match` line to the controller. So `bulwark run
//! --kubernetes` needs: a [`PolicyEngine`] (and optionally a [`crate::WorkloadRegistry`]),
//! `start(...)`, and `ViolationTap::new(writer, handle.sender())` around its output.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::event::{violation_channel, ViolationEvent, ViolationSender};
use crate::stats::Stats;
use crate::{ControllerOptions, PolicyEngine};

/// What [`start`] needs.
pub struct NodeConfig {
    /// The Kubernetes node name (DaemonSet: `spec.nodeName` through the downward API).
    pub node_name: String,
    /// Explicit kubeconfig; `None` infers (in-cluster ServiceAccount, then `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    /// Serve `/healthz`, `/readyz`, `/metrics` here (e.g. `0.0.0.0:9876`); `None`: no endpoint.
    pub health_addr: Option<SocketAddr>,
    /// Violation events that may wait between the engine and the controller.
    pub queue_capacity: usize,
    pub options: ControllerOptions,
}

/// The running controller.
pub struct NodeHandle {
    sender: ViolationSender,
    stats: Arc<Stats>,
    ready: Arc<AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl NodeHandle {
    /// The engine's end of the violation queue.
    pub fn sender(&self) -> ViolationSender {
        self.sender.clone()
    }
    /// Counters (also served on `/metrics`).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }
    /// True once the policies are listed and the first set is in the engine.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// True when the controller thread has ended (only on a fatal error or [`NodeHandle::stop`]).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
    /// Stop the controller and wait for its thread; returns why it ended.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop_inner()
    }
    fn stop_inner(&mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the controller thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        let _ = self.stop_inner();
    }
}

/// Start the controller on a background thread. Returns once the client is configured (bad
/// kubeconfig, empty node name, busy health port are reported here); API server trouble later
/// is retried inside, never fatal.
pub fn start(cfg: NodeConfig, engine: Arc<dyn PolicyEngine>) -> anyhow::Result<NodeHandle> {
    if cfg.node_name.trim().is_empty() {
        anyhow::bail!(
            "node name is empty: pass --node-name (in a DaemonSet, NODE_NAME from spec.nodeName)"
        );
    }
    let opts = cfg.options;
    let stats = opts.stats.clone();
    let ready = opts.ready.clone();
    let (sender, rx) = violation_channel(cfg.queue_capacity, stats.clone());
    let (started_tx, started_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bulwark-k8s".into())
        .spawn(move || -> anyhow::Result<()> {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bulwark-k8s-rt")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let msg = format!("cannot start the controller's runtime: {e}");
                    let _ = started_tx.send(Err(anyhow::anyhow!(msg.clone())));
                    anyhow::bail!(msg);
                }
            };
            rt.block_on(async move {
                let client = match crate::connect(cfg.kubeconfig.as_deref()).await {
                    Ok(c) => c,
                    Err(e) => {
                        let msg = format!("{e:#}");
                        let _ = started_tx.send(Err(e));
                        anyhow::bail!(msg);
                    }
                };
                let health = match cfg.health_addr {
                    Some(addr) => match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => Some(tokio::spawn(crate::health::serve_listener(
                            l,
                            opts.ready.clone(),
                            Some(opts.stats.clone()),
                        ))),
                        Err(e) => {
                            let msg = format!(
                                "cannot listen for health checks on {addr}: {e}; pick a free port"
                            );
                            let _ = started_tx.send(Err(anyhow::anyhow!(msg.clone())));
                            anyhow::bail!(msg);
                        }
                    },
                    None => None,
                };
                let _ = started_tx.send(Ok(()));
                let res = tokio::select! {
                    r = crate::run(client, cfg.node_name, engine, rx, opts) => r,
                    _ = stop_rx => Ok(()),
                };
                if let Some(h) = health {
                    h.abort();
                }
                res
            })
        })
        .map_err(|e| anyhow::anyhow!("cannot start the controller thread: {e}"))?;
    match started_rx.recv() {
        Ok(Ok(())) => Ok(NodeHandle {
            sender,
            stats,
            ready,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(anyhow::anyhow!(
                "the controller thread ended while starting"
            )),
            Err(_) => Err(anyhow::anyhow!(
                "the controller thread panicked while starting"
            )),
        },
    }
}

/// Wraps the daemon's event writer: writes everything through unchanged, and offers every
/// complete `policy_match` line to the controller (never blocking the writer; a full queue is
/// counted in [`Stats`]). Lines that look like `policy_match` but do not parse are counted as
/// invalid.
pub struct ViolationTap<W: Write> {
    inner: W,
    sender: ViolationSender,
    stats: Option<Arc<Stats>>,
    line: Vec<u8>,
}

/// Longest line kept for inspection; longer lines are passed through but not parsed.
const MAX_LINE: usize = 1 << 20;

impl<W: Write> ViolationTap<W> {
    pub fn new(inner: W, sender: ViolationSender) -> Self {
        ViolationTap {
            inner,
            sender,
            stats: None,
            line: Vec::new(),
        }
    }

    /// Count unparsable `policy_match` lines in `stats.violations_invalid`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    fn inspect(&mut self, data: &[u8]) {
        for chunk in data.split_inclusive(|b| *b == b'\n') {
            if self.line.len() + chunk.len() <= MAX_LINE {
                self.line.extend_from_slice(chunk);
            } else {
                self.line.clear();
                self.line.extend_from_slice(b"\x00"); // poisoned: skip until newline
            }
            if chunk.ends_with(b"\n") {
                let line = std::mem::take(&mut self.line);
                if line.first() == Some(&0) {
                    continue;
                }
                let text = String::from_utf8_lossy(&line);
                if !text.contains("\"policy_match\"") {
                    continue;
                }
                match ViolationEvent::from_json_line(text.trim_end()) {
                    Ok(Some(ev)) => {
                        self.sender.offer(ev);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        if let Some(s) = &self.stats {
                            s.violations_invalid.fetch_add(1, Ordering::Relaxed);
                        }
                        log::warn!("a policy_match event could not be read for Kubernetes: {e}");
                    }
                }
            }
        }
    }
}

impl<W: Write> Write for ViolationTap<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(data)?;
        self.inspect(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::tests::SAMPLE;

    #[test]
    fn tap_passes_through_and_forwards_only_policy_matches() {
        let stats = Arc::new(Stats::default());
        let (tx, mut rx) = violation_channel(8, stats.clone());
        let mut tap = ViolationTap::new(Vec::new(), tx).with_stats(stats.clone());
        let line = SAMPLE.replace('\n', "");
        let exec = r#"{"type":"process_exec","time":"t","node_name":"n"}"#;
        // Split across writes in awkward places.
        let all = format!("{exec}\n{line}\n{{\"type\":\"policy_match\",\"broken\":1}}\n");
        let (a, b) = all.split_at(exec.len() + 10);
        tap.write_all(a.as_bytes()).unwrap();
        tap.write_all(b.as_bytes()).unwrap();
        tap.flush().unwrap();
        assert_eq!(tap.into_inner(), all.as_bytes());
        let ev = rx.try_recv().expect("the policy_match was forwarded");
        assert_eq!(ev.policy_name.as_deref(), Some("block-cloud-metadata"));
        assert!(rx.try_recv().is_err(), "only one event forwarded");
        assert_eq!(stats.violations_invalid.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn start_rejects_bad_configuration_up_front() {
        struct Nop;
        impl PolicyEngine for Nop {
            fn apply(
                &self,
                _: Vec<bulwark_policy::model::AnyPolicy>,
            ) -> Result<Vec<crate::PolicyLoadResult>, String> {
                Ok(vec![])
            }
        }
        let cfg = |node: &str, kc: &str| NodeConfig {
            node_name: node.into(),
            kubeconfig: Some(PathBuf::from(kc)),
            health_addr: None,
            queue_capacity: 4,
            options: ControllerOptions::default(),
        };
        let Err(e) = start(cfg("", "/x"), Arc::new(Nop)) else {
            panic!("empty node accepted")
        };
        assert!(e.to_string().contains("node name is empty"), "{e}");
        let Err(e) = start(cfg("n", "/nonexistent/kc"), Arc::new(Nop)) else {
            panic!("missing kubeconfig accepted")
        };
        assert!(e.to_string().contains("/nonexistent/kc"), "{e}");
    }
}
