//! The daemon's HTTP health endpoint, for the DaemonSet's probes: `GET /healthz` (alive: 200
//! while the process serves), `GET /readyz` (200 once the ready flag is set: policies listed and
//! handed to the engine; 503 before), `GET /metrics` (Prometheus text of [`Stats`] when given).
//! A deliberately tiny HTTP/1.1 server on tokio: one request per connection, no body parsing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::stats::Stats;

/// Serve `/healthz` and `/readyz` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, ready: Arc<AtomicBool>) -> std::io::Result<()> {
    serve_with_metrics(addr, ready, None).await
}

/// Like [`serve`], plus `/metrics` from `stats`.
pub async fn serve_with_metrics(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stats: Option<Arc<Stats>>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for health checks on {addr}: {e}; pick a free port"),
        )
    })?;
    serve_listener(listener, ready, stats).await
}

/// Serve on an already bound listener (tests bind port 0).
pub async fn serve_listener(
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    stats: Option<Arc<Stats>>,
) -> std::io::Result<()> {
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("health endpoint accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ready = ready.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), handle(sock, ready, stats)).await;
        });
    }
}

/// Serves on `addr` from a thread of its own, for a caller without a tokio runtime (the
/// standalone daemon's `--metrics-addr`). The port is bound before this returns, so a busy one
/// is an error here; returns the bound address. The thread serves until the process ends.
pub fn spawn_thread(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
    stats: Option<Arc<Stats>>,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen for metrics on {addr}: {e}; pick a free port"),
        )
    })?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("bulwark-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(l) => {
                        let _ = serve_listener(l, ready, stats).await;
                    }
                    Err(e) => log::warn!("metrics endpoint on {bound} not served: {e}"),
                }
            })
        })?;
    Ok(bound)
}

/// Status line and body for a request line.
pub fn respond(request_line: &str, ready: bool, stats: Option<&Stats>) -> (u16, String) {
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return (405, "only GET\n".into());
    }
    match path {
        "/healthz" | "/livez" => (200, "ok\n".into()),
        "/readyz" if ready => (200, "ready\n".into()),
        "/readyz" => (
            503,
            "not ready: policies not synced and applied yet\n".into(),
        ),
        "/metrics" => match stats {
            Some(s) => (200, s.render_prometheus()),
            None => (404, "no metrics\n".into()),
        },
        _ => (404, "not found; try /healthz, /readyz or /metrics\n".into()),
    }
}

async fn handle(
    mut sock: TcpStream,
    ready: Arc<AtomicBool>,
    stats: Option<Arc<Stats>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut n = 0;
    while n < buf.len() {
        let r = sock.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
            || buf[..n].windows(2).any(|w| w == b"\n\n")
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf[..n]);
    let line = text.lines().next().unwrap_or("");
    let (code, body) = respond(line, ready.load(Ordering::Relaxed), stats.as_deref());
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await?;
    if !line.starts_with("HEAD") {
        sock.write_all(body.as_bytes()).await?;
    }
    sock.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(respond("GET /healthz HTTP/1.1", false, None).0, 200);
        assert_eq!(respond("GET /readyz HTTP/1.1", false, None).0, 503);
        assert_eq!(respond("GET /readyz HTTP/1.1", true, None).0, 200);
        assert_eq!(respond("GET /nope HTTP/1.1", true, None).0, 404);
        assert_eq!(respond("POST /healthz HTTP/1.1", true, None).0, 405);
        assert_eq!(respond("GET /metrics HTTP/1.1", true, None).0, 404);
        let s = Stats::default();
        let (c, body) = respond("GET /metrics HTTP/1.1", true, Some(&s));
        assert_eq!(c, 200);
        assert!(body.contains("bulwark_violations_received_total 0"));
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_over_loopback_and_follows_the_flag() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let ready = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(serve_listener(
            l,
            ready.clone(),
            Some(Arc::new(Stats::default())),
        ));
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::Relaxed);
        let r = get(addr, "/readyz").await;
        assert!(
            r.starts_with("HTTP/1.1 200") && r.ends_with("ready\n"),
            "{r}"
        );
        assert!(get(addr, "/metrics")
            .await
            .contains("bulwark_status_writes_total"));
        task.abort();
    }

    #[test]
    fn a_thread_of_its_own_serves_without_a_runtime_and_busy_ports_are_explained() {
        use std::io::{Read, Write};
        let stats = Arc::new(Stats::default());
        stats.status_writes.store(4, Ordering::Relaxed);
        let addr = spawn_thread(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(AtomicBool::new(true)),
            Some(stats),
        )
        .unwrap();
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("bulwark_status_writes_total 4\n"), "{body}");
        let err = spawn_thread(addr, Arc::new(AtomicBool::new(true)), None).unwrap_err();
        assert!(
            err.to_string().contains("pick a free port") && err.to_string().contains("metrics"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn busy_port_is_explained() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let err = serve(addr, Arc::new(AtomicBool::new(true)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("pick a free port"), "{err}");
    }
}
