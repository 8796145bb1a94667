//! The errors the controller returns to its caller (the daemon), one variant per thing that can
//! go wrong, each saying what to do about it. Trouble with the API server once running is not
//! among them: that is retried inside, never fatal.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the controller could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "node name is empty: pass the Kubernetes node name (--node-name; in a DaemonSet, set \
         NODE_NAME from the downward API field spec.nodeName)"
    )]
    EmptyNodeName,
    #[error("cannot read kubeconfig {}: {source}; pass an existing kubeconfig file", path.display())]
    KubeconfigUnreadable {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {} is not usable: {source}", path.display())]
    KubeconfigUnusable {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error(
        "cannot find Kubernetes credentials: {0}; in a pod, mount the ServiceAccount token \
         (automountServiceAccountToken); outside, set KUBECONFIG"
    )]
    NoCredentials(kube::config::InferConfigError),
    #[error("cannot build a Kubernetes client: {0}")]
    Client(kube::Error),
    #[error("cannot start the controller's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the controller thread: {0}")]
    Thread(std::io::Error),
    #[error("cannot listen for health checks on {addr}: {source}; pick a free port")]
    HealthListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the controller thread panicked")]
    ThreadPanicked,
    #[error("the controller thread ended while starting")]
    EndedWhileStarting,
    /// A task of the controller panicked (a bug: please report it with the log).
    #[error("a controller task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// What the controller's functions return.
pub type Result<T, E = Error> = std::result::Result<T, E>;
