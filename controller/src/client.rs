//! The connection to the API server: building a client from a kubeconfig or the environment
//! ([`connect`]), and the time limit every API call gets ([`timed`]).

use std::time::Duration;

use crate::error::{Error, Result};

/// Longest wait for one API request (watches excepted): a server that accepts connections but
/// does not answer must not stall status or violation writes.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Run one API call with [`API_CALL_TIMEOUT`]; a timeout becomes a `kube::Error::Service`.
pub(crate) async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    timed_with(API_CALL_TIMEOUT, f).await
}

async fn timed_with<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, kube::Error>>,
) -> Result<T, kube::Error> {
    match tokio::time::timeout(limit, f).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from the API server within {limit:?}"),
        )))),
    }
}

/// A client for the API server: from `kubeconfig` when given, else the usual inference
/// (in-cluster ServiceAccount, then `KUBECONFIG` / `~/.kube/config`).
pub async fn connect(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).map_err(|source| {
                Error::KubeconfigUnreadable {
                    path: path.into(),
                    source,
                }
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|source| Error::KubeconfigUnusable {
                    path: path.into(),
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(Error::NoCredentials)?,
    };
    kube::Client::try_from(config).map_err(Error::Client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn api_calls_time_out_with_a_clear_error() {
        let hang = std::future::pending::<Result<(), kube::Error>>();
        let err = timed_with(Duration::from_millis(20), hang)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no answer from the API server"),
            "{err}"
        );
        let quick = async { Ok::<_, kube::Error>(7) };
        assert_eq!(
            timed_with(Duration::from_millis(20), quick).await.unwrap(),
            7
        );
    }

    #[tokio::test]
    async fn connect_explains_a_bad_kubeconfig() {
        let missing = std::path::Path::new("/nonexistent/bulwark/kubeconfig");
        let Err(err) = connect(Some(missing)).await else {
            panic!("a missing kubeconfig must fail")
        };
        assert!(matches!(err, Error::KubeconfigUnreadable { .. }), "{err:?}");
        let err = err.to_string();
        assert!(err.contains("/nonexistent/bulwark/kubeconfig"), "{err}");
        let dir = std::env::temp_dir().join(format!("bulwark-kc-{}", std::process::id()));
        std::fs::write(
            &dir,
            "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
        )
        .unwrap();
        let Err(err) = connect(Some(&dir)).await else {
            panic!("an empty kubeconfig must fail")
        };
        let err = err.to_string();
        assert!(err.contains("not usable"), "{err}");
        let _ = std::fs::remove_file(dir);
    }
}
