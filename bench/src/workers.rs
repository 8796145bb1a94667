//! The measured workloads. Each runs in its own process (`bulwark-bench worker ...`), so it can
//! be placed in a network namespace and so the daemon sees a fresh process, and prints one JSON
//! object with its result on stdout. Only loopback and the bench's own namespaces are used.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

/// A ClientHello captured from curl (the scanner's test fixture).
const CLIENT_HELLO: &[u8] =
    include_bytes!("../../daemon-common/tests/fixtures/clienthello/curl.bin");

/// Which workload to run.
#[derive(clap::Subcommand, Debug)]
pub enum Worker {
    /// fork+exec of a tiny binary, `n` times.
    Exec {
        #[arg(long, default_value_t = 2000)]
        n: u64,
        #[arg(long, default_value = "/bin/true")]
        binary: String,
    },
    /// TCP connect + close (RST, no TIME_WAIT left behind) to `addr`, `n` times.
    Connect {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 20000)]
        n: u64,
    },
    /// One TCP connection to `addr`, then `n` writes of `size` bytes. `first` decides the
    /// first payload: a TLS handshake record header, plaintext, or nothing special.
    Send {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 200_000)]
        n: u64,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value = "tls")]
        first: String,
    },
    /// A new connection to `addr` per request: connect, send `size` bytes, read `size` bytes
    /// back, close (RST), `n` times (the peer is an `echo` worker).
    Request {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10000)]
        n: u64,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Accept TCP connections on `addr`; on each, read `size` bytes and answer `size` bytes,
    /// until the peer closes. Until killed.
    Echo {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Unconnected UDP sends to `addr` at up to `rate` per second for `seconds`.
    UdpFlood {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Target sends per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Accept TCP connections on `addr` and discard what they send, until killed.
    Sink {
        #[arg(long)]
        addr: SocketAddr,
    },
    /// A system-call-heavy loop (`bulwark-bench syscalls`), `chunks` times `n` operations; the
    /// result is the median chunk's ns per operation. `kind`: `getppid` (one call), `open-close`
    /// (open and close `dir/one`), `build` (spawn `/bin/true`, then stat, open, read and close
    /// every file of `dir/tree`: a build's mix of process spawns and small file reads).
    Syscalls {
        #[arg(long)]
        kind: String,
        #[arg(long)]
        n: u64,
        #[arg(long, default_value_t = 10)]
        chunks: u64,
        #[arg(long, default_value = "/tmp")]
        dir: std::path::PathBuf,
    },
}

pub fn run(w: Worker) -> Result<()> {
    let out = match w {
        Worker::Exec { n, binary } => {
            let t = Instant::now();
            for _ in 0..n {
                let st = Command::new(&binary)
                    .status()
                    .with_context(|| format!("exec {binary}"))?;
                if !st.success() {
                    bail!("{binary} exited with {st}");
                }
            }
            per_op(t.elapsed(), n)
        }
        Worker::Connect { addr, n } => {
            let t = Instant::now();
            for _ in 0..n {
                let s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
                // Close with RST: tens of thousands of FIN closes per run leave as many
                // TIME_WAIT sockets and exhaust the ephemeral ports (EADDRNOTAVAIL).
                abortive_close(s)?;
            }
            per_op(t.elapsed(), n)
        }
        Worker::Send {
            addr,
            n,
            size,
            first,
        } => {
            let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
            s.set_nodelay(true)?;
            match first.as_str() {
                // A real ClientHello and the two records a client sends after it (change
                // cipher spec, application data): the verdict is TLS.
                "tls" => {
                    s.write_all(CLIENT_HELLO)?;
                    s.write_all(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01])?;
                    s.write_all(&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00])?;
                }
                "plain" => s.write_all(b"GET / HTTP/1.1\r\n\r\n")?,
                "none" => {}
                other => bail!("--first must be tls, plain or none, not {other:?}"),
            }
            // Give the daemon a moment to take a classified socket out of the SOCKHASH.
            std::thread::sleep(Duration::from_millis(200));
            let buf = vec![0x17u8; size];
            let t = Instant::now();
            for _ in 0..n {
                s.write_all(&buf)?;
            }
            per_op(t.elapsed(), n)
        }
        Worker::Request { addr, n, size } => {
            let req = vec![b'q'; size];
            let mut resp = vec![0u8; size];
            let t = Instant::now();
            for _ in 0..n {
                let mut s = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
                s.set_nodelay(true)?;
                s.write_all(&req)?;
                s.read_exact(&mut resp)?;
                abortive_close(s)?;
            }
            per_op(t.elapsed(), n)
        }
        Worker::Echo { addr, size } => {
            let l = listen(addr)?;
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let _ = c.set_nodelay(true);
                    let mut buf = vec![0u8; size];
                    while c.read_exact(&mut buf).is_ok() && c.write_all(&buf).is_ok() {}
                });
            }
            return Ok(());
        }
        Worker::UdpFlood {
            addr,
            seconds,
            rate,
        } => {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()?;
            let sock = UdpSocket::bind(bind)?;
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let start = Instant::now();
            let mut sent: u64 = 0;
            while Instant::now() < deadline {
                // Batches of 64 keep the clock reads cheap; pace to `rate` when given.
                for _ in 0..64 {
                    // Errors (e.g. ECONNREFUSED from an earlier ICMP) do not matter here.
                    let _ = sock.send_to(b"x", addr);
                }
                sent += 64;
                if rate > 0 {
                    let due = Duration::from_secs_f64(sent as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
            }
            let secs = start.elapsed().as_secs_f64();
            serde_json::json!({ "ops": sent, "seconds": secs, "ops_per_sec": sent as f64 / secs })
        }
        Worker::Sink { addr } => {
            let l = listen(addr)?;
            println!("{}", serde_json::json!({ "listening": addr.to_string() }));
            std::io::stdout().flush()?;
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
            return Ok(());
        }
        Worker::Syscalls {
            kind,
            n,
            chunks,
            dir,
        } => syscall_loop(&kind, n, chunks, &dir)?,
    };
    println!("{out}");
    Ok(())
}

/// [`Worker::Syscalls`].
fn syscall_loop(
    kind: &str,
    n: u64,
    chunks: u64,
    dir: &std::path::Path,
) -> Result<serde_json::Value> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes());
    let one = c_path(&dir.join("one"))?;
    let tree: Vec<std::ffi::CString> = match std::fs::read_dir(dir.join("tree")) {
        Ok(entries) => {
            let mut v: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            v.sort();
            v.iter().map(|p| c_path(p)).collect::<Result<_, _>>()?
        }
        Err(_) => Vec::new(),
    };
    let mut buf = [0u8; 4096];
    let mut op = || -> Result<()> {
        match kind {
            // SAFETY (all arms): plain system calls on paths and a buffer this function owns.
            "getppid" => {
                unsafe { libc::getppid() };
            }
            "open-close" => {
                let fd = unsafe { libc::open(one.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                if fd < 0 {
                    bail!("open {:?}: {}", one, std::io::Error::last_os_error());
                }
                unsafe { libc::close(fd) };
            }
            "build" => {
                let st = Command::new("/bin/true").status()?;
                if !st.success() {
                    bail!("/bin/true exited with {st}");
                }
                for f in &tree {
                    let mut sb: libc::stat = unsafe { std::mem::zeroed() };
                    if unsafe { libc::stat(f.as_ptr(), &mut sb) } != 0 {
                        bail!("stat {f:?}: {}", std::io::Error::last_os_error());
                    }
                    let fd = unsafe { libc::open(f.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
                    if fd < 0 {
                        bail!("open {f:?}: {}", std::io::Error::last_os_error());
                    }
                    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                    unsafe { libc::close(fd) };
                }
            }
            other => bail!("--kind must be getppid, open-close or build, not {other:?}"),
        }
        Ok(())
    };
    let mut per_chunk = Vec::new();
    let t = Instant::now();
    for _ in 0..chunks.max(1) {
        let c = Instant::now();
        for _ in 0..n {
            op()?;
        }
        per_chunk.push(c.elapsed().as_nanos() as f64 / n.max(1) as f64);
    }
    let seconds = t.elapsed().as_secs_f64();
    per_chunk.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "ops": n * chunks.max(1), "seconds": seconds,
        "ns_per_op": per_chunk[per_chunk.len() / 2], "chunk_ns_per_op": per_chunk,
    }))
}

/// A listener on `addr` with a backlog of 4096: std listens with 128, a connect loop outruns
/// the accept thread, SYNs are dropped and retransmitted a second later, and the benchmark
/// would measure retransmits. Listening again only raises the backlog.
fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let l = TcpListener::bind(addr).with_context(|| format!("bind {addr}"))?;
    if unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&l), 4096) } != 0 {
        bail!("listen({addr}, 4096): {}", std::io::Error::last_os_error());
    }
    Ok(l)
}

/// Closes `s` with SO_LINGER {on, 0}: the kernel sends RST and keeps no TIME_WAIT state.
fn abortive_close(s: TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        bail!("setsockopt(SO_LINGER): {}", std::io::Error::last_os_error());
    }
    drop(s);
    Ok(())
}

fn per_op(elapsed: Duration, n: u64) -> serde_json::Value {
    serde_json::json!({ "ops": n, "seconds": elapsed.as_secs_f64(), "ns_per_op": elapsed.as_nanos() as f64 / n as f64 })
}
