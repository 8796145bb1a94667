//! The daemon's side of the wiring, for a daemon that is not async: [`start`] runs the controller
//! (and the health endpoint) on its own thread with its own tokio runtime and returns a
//! [`NodeHandle`]. The daemon hands every event it writes, typed, to
//! [`crate::ViolationSender::offer_event`] (from [`NodeHandle::sender`]): no bytes are parsed
//! back. So `bulwark run --kubernetes` needs: a [`PolicyEngine`] (and optionally a
//! [`crate::WorkloadRegistry`]), `start(...)`, and the sender as an observer of its events.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::stats::Stats;
use crate::violation_queue::{violation_channel, ViolationSender};
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
    thread: Option<std::thread::JoinHandle<Result<()>>>,
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
    pub fn stop(mut self) -> Result<()> {
        self.stop_inner()
    }
    fn stop_inner(&mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| Err(Error::ThreadPanicked)),
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
pub fn start(cfg: NodeConfig, engine: Arc<dyn PolicyEngine>) -> Result<NodeHandle> {
    if cfg.node_name.trim().is_empty() {
        return Err(Error::EmptyNodeName);
    }
    let opts = cfg.options;
    let stats = opts.stats.clone();
    let ready = opts.ready.clone();
    let (sender, rx) = violation_channel(cfg.queue_capacity, stats.clone());
    // The thread says when it has started; if it ends first, joining it gives the error.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("bulwark-k8s".into())
        .spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("bulwark-k8s-rt")
                .enable_all()
                .build()
                .map_err(Error::Runtime)?;
            rt.block_on(async move {
                let client = crate::connect(cfg.kubeconfig.as_deref()).await?;
                let health = match cfg.health_addr {
                    Some(addr) => {
                        let l = tokio::net::TcpListener::bind(addr)
                            .await
                            .map_err(|source| Error::HealthListen { addr, source })?;
                        Some(tokio::spawn(crate::health::serve_listener(
                            l,
                            opts.ready.clone(),
                            Some(opts.stats.clone()),
                        )))
                    }
                    None => None,
                };
                let _ = started_tx.send(());
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
        .map_err(Error::Thread)?;
    match started_rx.recv() {
        Ok(()) => Ok(NodeHandle {
            sender,
            stats,
            ready,
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        // The thread ended before it started: it says why.
        Err(_) => match thread.join() {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(Error::EndedWhileStarting),
            Err(_) => Err(Error::ThreadPanicked),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
