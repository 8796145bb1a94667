//! `bulwark run`: the daemon's command line. Checks the arguments, then wires the real pieces
//! into the pipeline's [`Daemon`]: the policy crate's lint and the compiler
//! ([`LintCompiler`]), the kernel engine ([`EngineKernel`]), the inotify watcher,
//! SIGINT/SIGTERM handling and the event output (stdout or a file, JSON lines; schema in
//! docs/events.md). Policies come from `--policy-dir` (standalone) or, with `--kubernetes`, from
//! the API server: the Kubernetes controller runs on its own thread and reaches the same main
//! loop through [`bulwark::kubernetes`], and every event the daemon writes is also handed, typed,
//! to its violation queue (which keeps the `policy_match` ones).

use anyhow::Context;
use bulwark::engine::{self, Engine, EngineOptions, Pinning};
use bulwark::engine_kernel::EngineKernel;
use bulwark::lint_compiler::LintCompiler;
use bulwark::pipeline::daemon::Request;
use bulwark::pipeline::daemon::{Config, Daemon};
use bulwark::pipeline::watch;
use bulwark_conns::{ClusterCidrs, Signatures};
use bulwark_controller::in_force::{CIDR_CONFIGURED, PROTOCOL_FILE};
use bulwark_controller::node::{self, NodeConfig};
use bulwark_controller::{ConnConfig, ControllerOptions, PodWorkloads, Stats};
use bulwark_policy::AnyPolicy;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Directory of policy files (`*.yaml`, `*.yml`, recursive). Watched: changes are applied
    /// atomically; a file with errors is reported and its previous version stays in force.
    /// Required without --kubernetes; refused with it (there, policies come from the API
    /// server only).
    #[arg(long, value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,
    /// Kubernetes mode: enforce the cluster's TracingPolicy and TracingPolicyNamespaced objects
    /// (validated with the lint's checks, swapped in atomically, status written back), write
    /// PolicyViolations and Events, map this node's Pods to their cgroups.
    #[arg(long)]
    pub kubernetes: bool,
    /// kubeconfig for --kubernetes (default: $KUBECONFIG or ~/.kube/config, else the in-cluster
    /// ServiceAccount).
    #[arg(long, value_name = "PATH", requires = "kubernetes")]
    pub kubeconfig: Option<PathBuf>,
    /// The host's cgroup v2 mount: the network programs attach to it, workloads (file and Pods)
    /// are resolved in it. In a DaemonSet the host's is mounted at e.g. /run/bulwark/cgroup
    /// (default: the cgroup2 mount found in /proc/mounts, /sys/fs/cgroup if that is one).
    #[arg(long, value_name = "PATH")]
    pub cgroup_root: Option<PathBuf>,
    /// --kubernetes: serve /healthz, /readyz and /metrics on this address (e.g. 0.0.0.0:9876).
    #[arg(long, value_name = "ADDR", requires = "kubernetes")]
    pub health_addr: Option<SocketAddr>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9877): `/metrics` has the
    /// connections and payload bytes this node's processes moved, by direction, scope,
    /// protocol, encrypted and namespace, next to the daemon's own counters; `/healthz` and
    /// `/readyz` answer too. With --kubernetes, --health-addr serves the same metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Encrypted protocols to recognise besides TLS and SSH: a file or directory of
    /// `kind: EncryptedProtocol` documents (byte signature at an offset, optional mask; see
    /// docs/conns.md). Checked like `bulwark lint` at start; any error refuses to start. With
    /// --kubernetes the accepted EncryptedProtocol objects are added (the file wins a name both
    /// declare), followed without a restart.
    #[arg(long, value_name = "FILE|DIR")]
    pub protocols: Option<PathBuf>,
    /// --kubernetes: namespace of the PolicyViolations of processes outside any Pod.
    #[arg(
        long,
        value_name = "NS",
        default_value = "bulwark-system",
        requires = "kubernetes"
    )]
    pub host_namespace: String,
    /// --kubernetes: list every policy and re-reconcile at least this often, in seconds; this
    /// also heals an API server that came back with its data lost or restored (a resumed watch
    /// would miss that).
    #[arg(long, value_name = "SECONDS", default_value_t = 300, requires = "kubernetes",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub resync_interval: u64,
    /// Where to write events (JSON lines): a file (appended to) or `-` for stdout.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub events: String,
    /// YAML file mapping cgroup paths to Kubernetes-style identity (namespace, pod,
    /// container, labels). Watched. With --kubernetes: added to the identities from this
    /// node's Pods.
    #[arg(long, value_name = "FILE")]
    pub workloads: Option<PathBuf>,
    /// Node name on every event and in exec_ids, and the Kubernetes node name (Pods, status
    /// entries) with --kubernetes (default: the hostname).
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Pin the programs, links and maps under this directory on bpffs [default:
    /// /sys/fs/bpf/bulwark], so enforcement outlives the daemon: after it stops, crashes or is
    /// killed, the rules in force stay enforced (events wait in the kernel's ring buffer) until
    /// `bulwark unload`. A restarted daemon of the same build adopts them with no gap; a new
    /// build loads next to them and retires them after its first apply.
    #[arg(long, value_name = "DIR", conflicts_with = "no_pin")]
    pub pin_dir: Option<PathBuf>,
    /// Ephemeral daemon: pin nothing, so the programs end with this process — a crash, a stop
    /// or a restart leaves the host unenforced until the next start has loaded.
    #[arg(long)]
    pub no_pin: bool,
    /// Benchmarking only: attach do-nothing programs on the same hooks instead of bulwark's,
    /// to measure what the hooks alone cost. Nothing is enforced and no kernel events arrive.
    /// Implies --no-pin.
    #[arg(long, hide_short_help = true, conflicts_with = "pin_dir")]
    pub noop_programs: bool,
    /// Entries of the kernel's process map (default: /proc/sys/kernel/pid_max, which every
    /// process id is below, so it cannot fill up). A process that finds no room and that an
    /// enforce-mode connect/egress rule covers is killed at exec.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_processes: Option<u32>,
    /// Sockets watched by the egress rules at once (SOCKHASH entries, 16 bytes of kernel
    /// memory each, allocated up front). A connection that finds no room has its payload
    /// refused (fail closed).
    #[arg(long, value_name = "N", default_value_t = daemon_common::MAX_WATCHED_SOCKETS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_watched_sockets: u32,
    /// Remote addresses that are `scope: cluster` on connection events (comma-separated CIDRs);
    /// every other address is `internet`. Default: loopback, RFC 1918, link-local, CGNAT
    /// 100.64.0.0/10, IPv6 ULA and link-local (127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12,
    /// 192.168.0.0/16, 169.254.0.0/16, 100.64.0.0/10, ::1/128, fc00::/7, fe80::/10). With
    /// --kubernetes this node's pod CIDRs (its Node's spec.podCIDRs) are added, followed.
    #[arg(long, value_name = "CIDRS", value_parser = parse_cluster_cidrs,
          env = "BULWARK_CLUSTER_CIDRS")]
    pub cluster_cidrs: Option<bulwark_conns::ClusterCidrs>,
    /// Seconds between `conn_stats` events of an open connection that moves bytes (none while
    /// it is idle).
    #[arg(long, value_name = "SECONDS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub conn_interval: u64,
    /// Do not observe TCP connections (no `process_close` / `conn_stats` events, and none of
    /// the observation's kernel programs attached).
    #[arg(long)]
    pub no_conn_observe: bool,
    /// Tests only: pin under this build id instead of this binary's, to play an upgrade.
    #[arg(long, hide = true, value_name = "ID")]
    pub test_build_id: Option<String>,
    /// Tests only: bytes of the kernel's event ring buffer (a power of two, at least a page),
    /// so that a test can make the daemon lose events for certain.
    #[arg(long, hide = true, value_name = "BYTES")]
    pub test_events_ring_bytes: Option<u32>,
}

/// `--cluster-cidrs`: a comma list of CIDRs.
fn parse_cluster_cidrs(list: &str) -> Result<bulwark_conns::ClusterCidrs, String> {
    bulwark_conns::ClusterCidrs::parse(list).map_err(|e| {
        format!("{e} (give a comma-separated list of CIDRs, e.g. 10.0.0.0/8,fd00::/8)")
    })
}

impl RunArgs {
    /// Where the programs are pinned; `None` for an ephemeral daemon.
    pub fn pin_dir(&self) -> Option<PathBuf> {
        if self.no_pin || self.noop_programs {
            return None;
        }
        Some(
            self.pin_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(engine::pins::DEFAULT_PIN_DIR)),
        )
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The host name, for `node_name`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        let name = String::from_utf8_lossy(&buf[..end]).into_owned();
        if !name.is_empty() {
            return name;
        }
    }
    "localhost".into()
}

/// Write buffer of an events file.
const EVENTS_BUFFER_BYTES: usize = 256 * 1024;

fn open_output(spec: &str) -> anyhow::Result<Box<dyn Write + Send>> {
    if spec == "-" {
        return Ok(Box::new(std::io::LineWriter::new(std::io::stdout())));
    }
    // Events hold command lines (which can carry secrets): owner-only when created here.
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(spec)
        .with_context(|| {
            format!("cannot open events file {spec} for appending (does its directory exist?)")
        })?;
    // The main loop flushes after every poll; a larger buffer means fewer write calls when
    // many events arrive at once (a burst of connection closes).
    Ok(Box::new(std::io::BufWriter::with_capacity(
        EVENTS_BUFFER_BYTES,
        f,
    )))
}

/// Where the policies come from: `Some(dir)` standalone, `None` with --kubernetes. Checks the
/// combination and the directory before anything is loaded.
fn policy_source(args: &RunArgs) -> anyhow::Result<Option<PathBuf>> {
    match (&args.policy_dir, args.kubernetes) {
        (Some(dir), true) => anyhow::bail!(
            "--policy-dir {} cannot be combined with --kubernetes: in Kubernetes mode the \
             policies come from the API server only (one source, so `kubectl get \
             tracingpolicies` tells the whole truth); apply the files there instead \
             (`kubectl apply -f {}`), or drop --kubernetes to enforce the directory standalone",
            dir.display(),
            dir.display()
        ),
        (None, false) => anyhow::bail!(
            "no policy source: pass --policy-dir DIR (standalone) or --kubernetes (policies from \
             the API server)"
        ),
        (None, true) => Ok(None),
        (Some(dir), false) => {
            let meta = std::fs::metadata(dir).with_context(|| {
                format!(
                    "policy directory {} is not readable; create it (it may be empty) or pass \
                     another --policy-dir",
                    dir.display()
                )
            })?;
            if !meta.is_dir() {
                anyhow::bail!(
                    "--policy-dir {} is not a directory; pass the directory that holds the \
                     policy files",
                    dir.display()
                );
            }
            Ok(Some(dir.clone()))
        }
    }
}

/// Events waiting between the event writer and the controller's violation writer.
const VIOLATION_QUEUE: usize = 4096;

/// At shutdown, how long the controller may take to write the violations still pending (one
/// flush interval plus a write).
const VIOLATION_DRAIN: Duration = Duration::from_secs(5);

/// Waits (at most `limit`) until the controller has no violation update left to write; returns
/// how many are still pending. Gives the violation writer a moment first to pick up what is
/// still in the queue.
fn drain_violations(stats: &bulwark_controller::Stats, limit: Duration) -> u64 {
    let start = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(300).min(limit));
    loop {
        let pending = stats.violations_pending.load(Ordering::Relaxed);
        if pending == 0 || start.elapsed() >= limit {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The `--protocols` declarations, checked (none without the flag).
fn declared_protocols(path: Option<&Path>) -> anyhow::Result<Signatures> {
    let Some(path) = path else {
        return Ok(Signatures::default());
    };
    let set = Signatures::load(&[path.to_path_buf()]).map_err(anyhow::Error::msg)?;
    let names: Vec<&str> = set.iter().map(|s| s.name()).collect();
    eprintln!(
        "bulwark: {} declared encrypted protocol(s) from {}: {}",
        set.len(),
        path.display(),
        names.join(", ")
    );
    Ok(set)
}

/// What connection observation starts with, as the metrics show it (`/metrics`'
/// `bulwark_cluster_cidr_info`, `bulwark_declared_protocol_info`); in Kubernetes mode the
/// controller replaces it as pod CIDRs and EncryptedProtocol objects come and go.
fn in_force_at_start(stats: &Stats, cidrs: &ClusterCidrs, protocols: &Signatures) {
    let cidrs = cidrs
        .cidrs()
        .iter()
        .map(|c| (c.to_string(), CIDR_CONFIGURED));
    stats.in_force.set_cluster_cidrs(cidrs.collect());
    let names = protocols
        .iter()
        .map(|p| (p.name().to_string(), PROTOCOL_FILE));
    stats.in_force.set_protocols(names.collect());
}

/// The `--metrics-addr` endpoint: the registry it serves and the readiness it reports.
#[derive(Clone)]
struct Metrics {
    /// The controller's registry in Kubernetes mode (its health port serves the same), else
    /// one of its own.
    stats: Arc<bulwark_controller::Stats>,
    /// Set by the daemon's first `ready` status event, cleared by `stopping`.
    ready: Arc<AtomicBool>,
    /// Where it is served (the port chosen when the address said 0).
    addr: SocketAddr,
}

impl Metrics {
    /// Binds `addr` (before the programs load, so a busy port fails early) and serves it.
    fn start(
        addr: Option<SocketAddr>,
        controller: Option<&node::NodeHandle>,
    ) -> anyhow::Result<Option<Metrics>> {
        let Some(addr) = addr else {
            return Ok(None);
        };
        let stats = controller.map_or_else(Default::default, |h| h.stats());
        let ready = Arc::new(AtomicBool::new(false));
        let addr =
            bulwark_controller::health::spawn_thread(addr, ready.clone(), Some(stats.clone()))?;
        let metrics = Metrics { stats, ready, addr };
        eprintln!("bulwark: metrics on http://{}/metrics", metrics.addr);
        Ok(Some(metrics))
    }
}

/// What every event the daemon writes is also handed to: the controller's violation queue
/// (which records it in the controller's registry), else the metrics registry directly; and
/// the metrics endpoint's readiness.
fn observer(
    violations: Option<bulwark_controller::ViolationSender>,
    metrics: Option<Metrics>,
) -> impl FnMut(&bulwark_events::Event) + Send {
    move |ev| {
        match (&violations, &metrics) {
            (Some(v), _) => {
                v.offer_event(ev);
            }
            (None, Some(m)) => m.stats.record_event(ev),
            (None, None) => {}
        }
        if let (Some(m), Some(status)) = (&metrics, ev.status()) {
            let ready = status.state != bulwark_events::State::Stopping;
            m.ready.store(ready, Ordering::Relaxed);
        }
    }
}

/// Where the controller maps this node's Pods: the cgroup v2 mount the engine uses. Without
/// one Pods cannot be mapped (and the engine cannot attach either, and says so).
fn pod_workloads(
    cgroup_mount: Option<PathBuf>,
    requests: &std::sync::mpsc::Sender<Request<AnyPolicy>>,
) -> Option<PodWorkloads> {
    let Some(cgroup_root) = cgroup_mount else {
        eprintln!(
            "bulwark: warning: no cgroup v2 mount found: this node's Pods cannot be mapped to \
             their cgroups; pass --cgroup-root"
        );
        return None;
    };
    Some(PodWorkloads {
        registry: Arc::new(bulwark::kubernetes::RegistryBridge::new(requests.clone())),
        cgroup_root,
    })
}

/// The start-up line that says how the programs came to be attached and how long they last.
fn describe_pinning(engine: &Engine) -> String {
    let at = engine
        .pin_path()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match engine.pinning() {
        Pinning::Adopted => format!(
            "programs adopted from {at}: they enforced the previous rules without a gap, the \
             policy set is re-applied now; they stay after this daemon stops, until `bulwark \
             unload`"
        ),
        Pinning::Pinned => format!(
            "programs loaded fresh and pinned in {at}: they stay after this daemon stops, until \
             `bulwark unload`"
        ),
        Pinning::Ephemeral => {
            "programs loaded fresh, not pinned (--no-pin): enforcement ends with this process"
                .to_string()
        }
    }
}

/// Log filter when RUST_LOG is unset: the controller's progress (policies applied, API server
/// lost and back, violations dropped) is what an operator reads in `kubectl logs`.
const DEFAULT_LOG: &str = "warn,bulwark=info,bulwark_controller=info";

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Only once per process (a second init, e.g. in tests, is ignored).
    let _ =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_LOG))
            .try_init();
    engine::host::require_root()?;
    let policy_dir = policy_source(&args)?;
    if let Some(root) = &args.cgroup_root {
        if !root.is_dir() {
            anyhow::bail!(
                "--cgroup-root {} is not a directory; pass the host's cgroup v2 mount (e.g. \
                 /sys/fs/cgroup, or where the DaemonSet mounts it)",
                root.display()
            );
        }
    }
    let signatures = declared_protocols(args.protocols.as_deref())?;
    let cluster_cidrs = args
        .cluster_cidrs
        .clone()
        .unwrap_or_else(ClusterCidrs::defaults);
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    let out = open_output(&args.events)?;
    if args.noop_programs {
        eprintln!("bulwark: --noop-programs: do-nothing programs attached, NOTHING is enforced");
    }
    let cgroup_mount = args
        .cgroup_root
        .clone()
        .or_else(engine::host::cgroup2_mount);
    // Kubernetes: the controller starts first (a bad kubeconfig fails before anything is
    // attached); its requests wait in the channel until the main loop runs.
    let (requests_tx, requests) = std::sync::mpsc::channel();
    let controller = if args.kubernetes {
        let stats = Arc::new(Stats::default());
        in_force_at_start(&stats, &cluster_cidrs, &signatures);
        let handle = node::start(
            NodeConfig {
                node_name: node_name.clone(),
                kubeconfig: args.kubeconfig.clone(),
                health_addr: args.health_addr,
                queue_capacity: VIOLATION_QUEUE,
                options: ControllerOptions {
                    host_namespace: args.host_namespace.clone(),
                    pod_workloads: pod_workloads(cgroup_mount.clone(), &requests_tx),
                    resync_interval: Duration::from_secs(args.resync_interval),
                    conn_config: Some(ConnConfig {
                        observation: Arc::new(bulwark::kubernetes::ObservationBridge::new(
                            requests_tx.clone(),
                        )),
                        cluster_cidrs: cluster_cidrs.clone(),
                        protocols: signatures.clone(),
                    }),
                    stats,
                    ..ControllerOptions::default()
                },
            },
            Arc::new(bulwark::kubernetes::EngineBridge::new(requests_tx.clone())),
        )
        .context("starting the Kubernetes controller")?;
        Some(handle)
    } else {
        None
    };
    drop(requests_tx);
    let metrics = Metrics::start(args.metrics_addr, controller.as_ref())?;
    if let (Some(m), None) = (&metrics, &controller) {
        in_force_at_start(&m.stats, &cluster_cidrs, &signatures);
    }
    let engine = Engine::load(&EngineOptions {
        noop_programs: args.noop_programs,
        cgroup: args.cgroup_root.clone(),
        max_processes: args.max_processes,
        max_watched_sockets: Some(args.max_watched_sockets),
        no_conn_observe: args.no_conn_observe,
        conn_interval: Some(Duration::from_secs(args.conn_interval)),
        pin_dir: args.pin_dir(),
        events_ring_bytes: args.test_events_ring_bytes,
        build_id: args
            .test_build_id
            .as_ref()
            .map(|id| format!("build-test-{id}")),
        ..EngineOptions::default()
    })
    .context("loading and attaching the kernel programs")?;
    eprintln!("bulwark: {}", describe_pinning(&engine));
    let kernel = EngineKernel::new(engine)?;
    install_signal_handlers();
    let changes = watch::spawn(
        policy_dir.clone(),
        args.workloads.clone(),
        Duration::from_millis(200),
    )?;
    let cfg = Config {
        node_name,
        policy_dir,
        workloads_file: args.workloads.clone(),
        proc_root: PathBuf::from("/proc"),
        cgroup_mount,
        loss_report_every: Duration::from_secs(10),
    };
    let mut daemon = Daemon::new(cfg, LintCompiler::new(), kernel, out);
    // The controller's later sets (pod CIDRs, EncryptedProtocol objects) wait in `requests`
    // and replace these once the loop runs.
    daemon
        .set_declared_protocols(signatures)
        .context("declaring the --protocols encrypted protocols to the kernel")?;
    daemon.set_cluster_cidrs(cluster_cidrs);
    let violations = controller.as_ref().map(|handle| handle.sender());
    if violations.is_some() || metrics.is_some() {
        daemon
            .pipeline
            .observe(Box::new(observer(violations, metrics.clone())));
    }
    let result = daemon.run_with(&STOP, &changes, Some(&requests));
    // A set the controller is still waiting on is answered "shutting down" (its reply channel
    // goes away with the queue), so stopping the controller cannot hang on it.
    drop(requests);
    if let Some(handle) = controller {
        let left = drain_violations(&handle.stats(), VIOLATION_DRAIN);
        if left > 0 {
            eprintln!(
                "bulwark: warning: stopping with {left} PolicyViolation update(s) not written \
                 (API server unreachable?); their events are in the event output"
            );
        }
        if let Err(e) = handle.stop() {
            eprintln!("bulwark: warning: the Kubernetes controller ended with an error: {e:#}");
        }
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn events_file_is_appended_and_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let p = std::env::temp_dir().join(format!("bulwark-out-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let spec = p.to_str().unwrap();
        open_output(spec).unwrap().write_all(b"a\n").unwrap();
        open_output(spec).unwrap().write_all(b"b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "a\nb\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_file(&p).unwrap();
        let err = open_output("/nonexistent-dir/x.jsonl")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("/nonexistent-dir/x.jsonl") && err.contains("directory"),
            "{err}"
        );
    }

    #[test]
    fn bad_policy_dir_is_a_clear_error_before_anything_loads() {
        let args = |dir: &str| RunArgs {
            policy_dir: Some(PathBuf::from(dir)),
            ..base_args()
        };
        let root = unsafe { libc::geteuid() } == 0;
        let err = run(args("/nonexistent/bulwark-policies"))
            .unwrap_err()
            .to_string();
        if root {
            assert!(
                err.contains("/nonexistent/bulwark-policies") && err.contains("create it"),
                "{err}"
            );
            let err = run(args("/etc/hostname")).unwrap_err().to_string();
            assert!(err.contains("is not a directory"), "{err}");
        } else {
            assert!(err.contains("must run as root"), "{err}");
        }
    }

    fn base_args() -> RunArgs {
        RunArgs {
            policy_dir: None,
            kubernetes: false,
            kubeconfig: None,
            cgroup_root: None,
            health_addr: None,
            metrics_addr: None,
            protocols: None,
            host_namespace: "bulwark-system".into(),
            resync_interval: 300,
            events: "-".into(),
            workloads: None,
            node_name: None,
            pin_dir: None,
            no_pin: false,
            noop_programs: false,
            max_processes: None,
            max_watched_sockets: daemon_common::MAX_WATCHED_SOCKETS,
            cluster_cidrs: None,
            conn_interval: 5,
            no_conn_observe: false,
            test_build_id: None,
            test_events_ring_bytes: None,
        }
    }

    #[test]
    fn policy_source_is_the_directory_or_the_api_server_never_both() {
        let err = policy_source(&base_args()).unwrap_err().to_string();
        assert!(
            err.contains("--policy-dir DIR") && err.contains("--kubernetes"),
            "{err}"
        );
        let both = RunArgs {
            policy_dir: Some(PathBuf::from("/tmp")),
            kubernetes: true,
            ..base_args()
        };
        let err = policy_source(&both).unwrap_err().to_string();
        assert!(
            err.contains("cannot be combined with --kubernetes"),
            "{err}"
        );
        assert!(err.contains("kubectl apply -f /tmp"), "{err}");
        let k8s = RunArgs {
            kubernetes: true,
            ..base_args()
        };
        assert_eq!(policy_source(&k8s).unwrap(), None);
        let dir = RunArgs {
            policy_dir: Some(std::env::temp_dir()),
            ..base_args()
        };
        assert_eq!(policy_source(&dir).unwrap(), Some(std::env::temp_dir()));
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    /// deploy/overlays/example/cluster-cidrs.yaml sets the environment form of the flag.
    #[test]
    fn cluster_cidrs_are_read_from_the_overlays_environment_variable() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == "cluster_cidrs")
            .expect("--cluster-cidrs");
        assert_eq!(
            arg.get_env().and_then(|e| e.to_str()),
            Some("BULWARK_CLUSTER_CIDRS")
        );
        let overlay = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../deploy/overlays/example/cluster-cidrs.yaml"),
        )
        .unwrap();
        assert!(overlay.contains("name: BULWARK_CLUSTER_CIDRS"), "{overlay}");
    }

    #[test]
    fn daemonset_arguments_parse_and_kubernetes_flags_need_kubernetes() {
        use clap::Parser;
        // Exactly what deploy/base/daemonset.yaml passes (the container's `args:` list).
        let ds = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base/daemonset.yaml"),
        )
        .unwrap();
        let argv: Vec<String> = ds
            .lines()
            .skip_while(|l| l.trim() != "args:")
            .skip(1)
            .map_while(|l| l.trim().strip_prefix("- "))
            .map(|a| a.replace("$(NODE_NAME)", "node-1"))
            .collect();
        assert_eq!(argv.first().map(String::as_str), Some("run"), "{argv:?}");
        let a = Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("deploy/base/daemonset.yaml args {argv:?}: {e}"))
            .run;
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.events, "-");
        assert!(a.kubernetes && a.policy_dir.is_none());
        assert_eq!(a.cgroup_root, Some(PathBuf::from("/run/bulwark/cgroup")));
        assert_eq!(a.health_addr, Some("0.0.0.0:9876".parse().unwrap()));
        assert_eq!(a.host_namespace, "bulwark-system");
        assert_eq!(a.resync_interval, 300);
        assert_eq!(a.pin_dir(), Some(PathBuf::from("/sys/fs/bpf/bulwark")));
        assert!(Cli::try_parse_from(["run", "--kubernetes", "--resync-interval=0"]).is_err());
        for flag in [
            "--kubeconfig=/x",
            "--health-addr=127.0.0.1:1",
            "--host-namespace=x",
            "--resync-interval=5",
        ] {
            let err = Cli::try_parse_from(["run", "--policy-dir=/tmp", flag])
                .unwrap_err()
                .to_string();
            assert!(err.contains("--kubernetes"), "{flag}: {err}");
        }
        let err = Cli::try_parse_from(["run", "--kubernetes", "--health-addr=nope"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn programs_are_pinned_by_default_and_ephemeral_only_when_asked() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            Cli::try_parse_from(["run", "--policy-dir=/tmp"].iter().chain(args))
                .map(|c| c.run.pin_dir())
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            parse(&[]),
            Ok(Some(PathBuf::from(engine::pins::DEFAULT_PIN_DIR)))
        );
        assert_eq!(
            parse(&["--pin-dir=/sys/fs/bpf/x"]),
            Ok(Some("/sys/fs/bpf/x".into()))
        );
        assert_eq!(parse(&["--no-pin"]), Ok(None));
        // The benchmark floor is never pinned; asking for both is a mistake.
        assert_eq!(parse(&["--noop-programs"]), Ok(None));
        assert_eq!(parse(&["--noop-programs", "--no-pin"]), Ok(None));
        for both in [
            ["--no-pin", "--pin-dir=/sys/fs/bpf/x"],
            ["--noop-programs", "--pin-dir=/sys/fs/bpf/x"],
        ] {
            let err = parse(&both).unwrap_err();
            assert!(err.contains("cannot be used with"), "{both:?}: {err}");
        }
    }

    #[test]
    fn shutdown_waits_for_pending_violations_but_not_forever() {
        let stats = std::sync::Arc::new(bulwark_controller::Stats::default());
        assert_eq!(drain_violations(&stats, Duration::from_secs(5)), 0);
        stats.violations_pending.store(2, Ordering::Relaxed);
        let s2 = stats.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            s2.violations_pending.store(0, Ordering::Relaxed);
        });
        let t = std::time::Instant::now();
        assert_eq!(drain_violations(&stats, Duration::from_secs(5)), 0);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        writer.join().unwrap();
        stats.violations_pending.store(3, Ordering::Relaxed);
        let t = std::time::Instant::now();
        assert_eq!(drain_violations(&stats, Duration::from_millis(400)), 3);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }

    #[test]
    fn metrics_addr_serves_the_connections_of_the_events_written() {
        use bulwark_conns::report::{Filter, Report};
        use std::io::Read;
        let get = |addr: SocketAddr, path: &str| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let metrics = Metrics::start(Some("127.0.0.1:0".parse().unwrap()), None)
            .unwrap()
            .unwrap();
        let addr = metrics.addr;
        assert!(get(addr, "/readyz").starts_with("HTTP/1.1 503"));
        let mut observe = observer(None, Some(metrics));
        let mut report = Report::new();
        let stream = include_str!("../../conns/tests/fixtures/stream.jsonl");
        for line in stream.lines() {
            let ev = bulwark_events::Event::from_json_line(line).unwrap();
            observe(&ev);
            report.add(&ev);
        }
        assert!(
            get(addr, "/readyz").starts_with("HTTP/1.1 200"),
            "a ready status was written"
        );
        let body = get(addr, "/metrics");
        // The endpoint's byte counters add up to what `bulwark conns` reports for the stream.
        let sum = |family: &str| -> u64 {
            body.lines()
                .filter(|l| l.starts_with(&format!("{family}{{")))
                .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .sum()
        };
        let total = report.summarize(&Filter::default(), &[]).total;
        assert_eq!(
            sum("bulwark_connection_sent_bytes_total"),
            total.bytes_sent,
            "{body}"
        );
        assert_eq!(
            sum("bulwark_connection_received_bytes_total"),
            total.bytes_received,
            "{body}"
        );
        assert_eq!(
            sum("bulwark_connections_total"),
            total.connections - total.open
        );
        assert!(body.contains("bulwark_events_lost_total 0\n"), "{body}");
    }

    #[test]
    fn protocols_are_checked_before_anything_loads() {
        assert!(declared_protocols(None).unwrap().is_empty());
        let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/lint-cases");
        let err = declared_protocols(Some(&cases.join("bw102-protocol-name.yaml")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("BW102") && err.contains("bulwark lint"),
            "{err}"
        );
        let dir =
            std::env::temp_dir().join(format!("bulwark-run-protocols-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("p.yaml");
        std::fs::write(
            &file,
            "apiVersion: bulwark.dev/v1alpha1\nkind: EncryptedProtocol\nmetadata:\n  name: acme\nspec:\n  signature: \"ac 3e\"\n",
        )
        .unwrap();
        let set = declared_protocols(Some(&file)).unwrap();
        assert_eq!(set.matching(&[0xac, 0x3e]), Some("acme"));
        std::fs::remove_dir_all(&dir).unwrap();
        use clap::Parser;
        let a = Cli::try_parse_from([
            "run",
            "--policy-dir=/tmp",
            "--protocols=/etc/p.yaml",
            "--metrics-addr=127.0.0.1:9877",
        ])
        .unwrap()
        .run;
        assert_eq!(a.protocols, Some(PathBuf::from("/etc/p.yaml")));
        assert_eq!(a.metrics_addr, Some("127.0.0.1:9877".parse().unwrap()));
    }

    #[test]
    fn hostname_is_not_empty() {
        assert!(!hostname().is_empty());
    }
}
