//! `bulwark probe`: which kernel mechanisms this host supports and which bulwark will use.
//! Every program and map type is checked by actually loading a trivial program of that type
//! (and, for trampoline types, attaching it) through the engine's probes
//! ([`bulwark::engine::probe`]), and bulwark's own programs are run through the verifier
//! without attaching. This module only assembles and prints the report. Text or
//! `--format json`; exit code 0 when everything bulwark needs works, 1 when something required
//! is missing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aya::maps::MapType;
use aya::programs::{LsmAttachType, ProgramType};
use aya::sys::BpfHelper;
use serde::Serialize;

use bulwark::engine::{self, host, pins, probe as kernel, resolve_offsets, socket_guard, Btf};
use daemon_common::{
    KernelOffsets, COUNTER_LOST_EVENTS, COUNTER_PROCESS_MAP_FULL, COUNTER_READ_FAILED,
    COUNTER_STALE_PROCESS,
};

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// The pin directory to report on (`bulwark run --pin-dir`).
    #[arg(long, value_name = "DIR", default_value = pins::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Text,
    Json,
}

/// One mechanism and whether this host has it.
#[derive(Serialize, Debug, Clone)]
pub struct Check {
    pub name: String,
    pub supported: bool,
    /// Whether bulwark needs it (false: optional / informational).
    pub required: bool,
    pub detail: String,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub kernel: String,
    pub root: bool,
    pub tracefs: Option<String>,
    pub cgroup2: Option<String>,
    pub btf: bool,
    pub checks: Vec<Check>,
    /// bulwark's own programs through the verifier (name, ok, error).
    pub programs: Vec<ProgramCheck>,
    /// What bulwark will use on this host.
    pub uses: Vec<String>,
    /// What the egress rules do not guarantee (docs/enforcement.md says it precisely).
    pub limits: Vec<String>,
    /// What is pinned in the pin directory: whether programs outlive a daemon there, and
    /// whether the next daemon adopts them or loads fresh.
    pub pins: pins::PinStatus,
    /// The bulwark engines running on this host and their counters.
    pub engines: Vec<EngineCounters>,
    pub ready: bool,
}

/// Counters of a running bulwark engine (found by its `COUNTERS` map).
#[derive(Serialize, Debug)]
pub struct EngineCounters {
    pub counters_map_id: u32,
    /// Records the kernel could not queue (ring buffer full).
    pub lost_events: u64,
    /// Connects by processes whose selector bits were stale for the rule set in force (a
    /// policy switch left them behind; 0 expected).
    pub stale_processes: u64,
    /// Kernel reads (argv, parent) that failed.
    pub read_failed: u64,
    /// PROCESSES was full when a process had to be added.
    pub process_map_full: u64,
}

#[derive(Serialize, Debug)]
pub struct ProgramCheck {
    pub name: String,
    pub loaded: bool,
    /// Instructions the verifier processed (limit 1,000,000), when the kernel reports it.
    pub verified_insns: Option<u32>,
    pub error: Option<String>,
}

fn check(name: &str, required: bool, r: kernel::Verdict, ok: &str) -> Check {
    Check {
        name: name.to_string(),
        supported: r.is_ok(),
        required,
        detail: match r {
            Ok(()) => ok.to_string(),
            Err(e) => format!("refused: {e}"),
        },
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether connections can be destroyed (netlink SOCK_DESTROY, CONFIG_INET_DIAG_DESTROY): tried
/// on a loopback connection of our own.
fn destroy_check() -> Check {
    use std::os::fd::AsFd;
    let r = (|| -> Result<(), String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let c = std::net::TcpStream::connect(l.local_addr().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        engine::sockets::destroy(c.as_fd()).map_err(|e| e.to_string())
    })();
    check(
        "SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY)",
        false,
        r,
        "works: a connection whose unseen payload is refused is destroyed, its sender gets an \
         error",
    )
}

/// The reads whose kernel offsets come from BTF and that bulwark does without when they are
/// missing, one optional check each, saying what is lost then: TCP Fast Open detection at
/// connect, the file hook's reads of a call's file, fork's read of a child's cgroup.
fn btf_checks(offsets: &KernelOffsets) -> Vec<Check> {
    let found = |name: &str, flag: u32, works: &str, lost: &str| Check {
        name: name.to_string(),
        supported: flag == 1,
        required: false,
        detail: if flag == 1 { works } else { lost }.to_string(),
    };
    vec![
        found(
            "TCP Fast Open detection (tcp_sock offsets in BTF)",
            offsets.tfo,
            "connect refuses Fast Open for processes in scope of an enforce-mode egress rule",
            "tcp_sock.fastopen_req/fastopen_connect not found: Fast Open is not refused at \
             connect; the backstop still drops data in a SYN on a watched socket",
        ),
        found(
            "hook: file (fd table, file and path offsets in BTF)",
            offsets.file_read,
            "file rules judge the file a call actually used: its walked path and identity",
            "the fd-table, file-mode, working-directory, path-walk or inode offsets are not all \
             in BTF: `hook: file` rules judge nothing on this kernel (see docs/files.md)",
        ),
        found(
            "fork into another cgroup (task cgroup offsets in BTF)",
            offsets.cgroup_read,
            "a child created straight into another cgroup (clone3 CLONE_INTO_CGROUP) is judged \
             in its new namespace from its first call",
            "task_struct.cgroups, css_set.dfl_cgrp, cgroup.kn or kernfs_node.id not found: a \
             child created straight into another cgroup (clone3 CLONE_INTO_CGROUP) keeps its \
             parent's namespace until it execs (see docs/enforcement.md)",
        ),
        found(
            "hook: file via io_uring (io_kiocb request offsets in BTF)",
            offsets.uring_file,
            "io_uring's open, unlink, rename, mkdir, link, symlink and ftruncate requests are \
             judged like the system calls (an open before the next request of its submission \
             runs; opens nothing can judge are killed at submission for processes an \
             enforce-mode Sigkill file rule covers); another thread's read(2) of a descriptor \
             an io-wq worker just installed can race the judgement: where a file must not be \
             read, refuse io_uring to the workload (docs/files.md, \"io_uring\")",
            "io_kiocb / io_open / io_unlink / io_rename / io_mkdir / io_link offsets or the \
             io_uring_submit_req / io_uring_complete / io_uring_cqe_overflow raw tracepoints \
             not found as expected: io_uring's file requests are NOT seen by `hook: file` \
             (kernel.io_uring_disabled = 2 or a seccomp profile without io_uring closes that \
             route)",
        ),
    ]
}

/// One check as the text report prints it.
fn check_line(c: &Check) -> String {
    let mark = if c.supported {
        "yes"
    } else if c.required {
        "NO "
    } else {
        "no "
    };
    let req = if c.required { "" } else { " (optional)" };
    format!("  [{mark}] {}{req}: {}", c.name, c.detail)
}

/// Gathers the report (never fails: what cannot be checked is reported as such).
pub fn probe(pin_dir: &Path) -> Report {
    let root = unsafe { libc::geteuid() } == 0;
    let tracefs = host::tracefs();
    let cgroup2 = host::cgroup2_mount();
    let btf = Btf::from_file(Path::new("/sys/kernel/btf/vmlinux")).ok();
    let mut checks = vec![
        Check {
            name: "tracefs".into(),
            supported: tracefs.is_some(),
            required: true,
            detail: tracefs.as_ref().map_or(
                "not mounted (the engine mounts it at /sys/kernel/tracing when it can)".into(),
                |p| format!("mounted at {}", p.display()),
            ),
        },
        Check {
            name: "cgroup v2".into(),
            supported: cgroup2.is_some(),
            required: true,
            detail: cgroup2
                .as_ref()
                .map_or("no cgroup2 mount in /proc/mounts".into(), |p| {
                    format!("mounted at {}", p.display())
                }),
        },
        Check {
            name: "kernel BTF".into(),
            supported: btf.is_some(),
            required: true,
            detail: if btf.is_some() {
                "/sys/kernel/btf/vmlinux".into()
            } else {
                "missing or unreadable /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF)".into()
            },
        },
    ];
    let mut programs = Vec::new();
    if !root {
        checks.push(Check {
            name: "program loads".into(),
            supported: false,
            required: true,
            detail: "not root: no program or map was tried (run `sudo bulwark probe`)".into(),
        });
    } else {
        checks.push(check(
            "tracepoint",
            true,
            kernel::program(ProgramType::TracePoint),
            "loads",
        ));
        checks.push(check(
            "bpf_send_signal from a tracepoint",
            true,
            kernel::helper(ProgramType::TracePoint, BpfHelper::BPF_FUNC_send_signal),
            "helper allowed",
        ));
        checks.push(check(
            "raw_tp",
            true,
            kernel::program(ProgramType::RawTracePoint),
            "loads",
        ));
        checks.push(check(
            "tp_btf",
            false,
            btf.as_ref()
                .ok_or_else(|| "no kernel BTF".to_string())
                .and_then(kernel::tp_btf),
            "loads and attaches",
        ));
        checks.push(check(
            "cgroup sock_addr (connect4/6, sendmsg4/6)",
            true,
            kernel::program(ProgramType::CgroupSockAddr),
            "loads",
        ));
        checks.push(check(
            "cgroup sock (sock_create)",
            true,
            kernel::program(ProgramType::CgroupSock),
            "loads",
        ));
        checks.push(check(
            "sock_ops",
            true,
            kernel::program(ProgramType::SockOps),
            "loads",
        ));
        checks.push(check(
            "sk_msg",
            true,
            kernel::program(ProgramType::SkMsg),
            "loads",
        ));
        checks.push(check(
            "cgroup_skb/egress (wire-level backstop)",
            true,
            kernel::program(ProgramType::CgroupSkb),
            "loads",
        ));
        checks.push(destroy_check());
        checks.push(check(
            "pidfd_getfd (connections older than a policy)",
            false,
            engine::sockets::take_fd(std::process::id(), 0)
                .map(drop)
                .map_err(|e| e.to_string()),
            "works: connections that existed before a policy are checked when it is applied",
        ));
        checks.push(check(
            "SOCKHASH map",
            true,
            kernel::map(MapType::SockHash),
            "created",
        ));
        checks.push(check(
            "ring buffer map",
            true,
            kernel::map(MapType::RingBuf),
            "created",
        ));
        checks.push(check(
            "SK_STORAGE map",
            true,
            kernel::map(MapType::SkStorage),
            "created",
        ));
        checks.push(match kernel::switch_barrier() {
            Ok(detail) => Check {
                name: "policy-switch barrier".into(),
                supported: true,
                required: true,
                detail,
            },
            Err(e) => Check {
                name: "policy-switch barrier".into(),
                supported: false,
                required: true,
                detail: format!("refused: {e}"),
            },
        });
        checks.push(check(
            "kprobe",
            false,
            kernel::kprobe(),
            "available (not used: bulwark needs no kprobes)",
        ));
        checks.push(check(
            "fentry (trampoline)",
            false,
            kernel::program(ProgramType::Tracing),
            "loads and attaches (not used)",
        ));
        checks.push(check(
            "BPF LSM",
            false,
            kernel::program(ProgramType::Lsm(LsmAttachType::Mac)),
            "loads and attaches (optional stronger backend, not built yet)",
        ));
        // The socket guard's packet-socket paths: closed here, or a documented limit.
        let io_uring_disabled = socket_guard::io_uring_disabled();
        checks.push(Check {
            name: "kernel.io_uring_disabled".into(),
            supported: true,
            required: false,
            detail: io_uring_disabled.map_or(
                "absent (no io_uring, or a kernel older than 6.6)".into(),
                |v| format!("{v} (0: io_uring for all, 1: for a group, 2: disabled)"),
            ),
        });
        let tracefs_dir = tracefs
            .clone()
            .unwrap_or_else(|| "/sys/kernel/tracing".into());
        match resolve_offsets(Path::new("/sys/kernel/btf/vmlinux"), &tracefs_dir) {
            Ok(offsets) => {
                for p in socket_guard::coverage(&offsets, io_uring_disabled) {
                    checks.push(Check {
                        name: format!("socket guard: {}", p.name),
                        supported: p.closed.is_ok(),
                        required: false,
                        detail: match p.closed {
                            Ok(how) => format!("closed: {how}"),
                            Err(why) => format!("OPEN (documented limit): {why}"),
                        },
                    });
                }
            }
            Err(e) => checks.push(Check {
                name: "socket guard".into(),
                supported: false,
                required: false,
                detail: format!("cannot resolve its kernel offsets: {e:#}"),
            }),
        }
        // bulwark's own object: every map it declares (SK_STORAGE with its BTF key/value
        // included) and every program through the verifier.
        match kernel::verify_programs() {
            Ok(list) => {
                programs = list
                    .into_iter()
                    .map(|(name, r)| ProgramCheck {
                        name,
                        loaded: r.is_ok(),
                        verified_insns: r.as_ref().ok().copied().flatten(),
                        error: r.err(),
                    })
                    .collect();
            }
            Err(e) => checks.push(Check {
                name: "bulwark eBPF object (maps incl. SK_STORAGE)".into(),
                supported: false,
                required: true,
                detail: format!("{e:#}"),
            }),
        }
    }
    if let Some(b) = &btf {
        checks.extend(btf_checks(&b.optional_offsets()));
    }
    let ready =
        checks.iter().all(|c| c.supported || !c.required) && programs.iter().all(|p| p.loaded);
    let cg = cgroup2
        .as_ref()
        .map_or("<no cgroup2 mount>".to_string(), |p| {
            p.display().to_string()
        });
    let uses = vec![
        "exec: tracepoint sched/sched_process_exec, selectors cached per process; Sigkill via bpf_send_signal".to_string(),
        "fork/exit: raw_tp sched_process_fork, tracepoint sched/sched_process_exit".to_string(),
        format!("connect: cgroup sock_addr connect4/connect6/sendmsg4/sendmsg6 on {cg}; Block -> EPERM"),
        format!(
            "egress: sockets to a destination an egress rule names (whoever connected them) enter a \
             SOCKHASH (sock_ops on {cg}); sk_msg checks every send of the sending process, the \
             stream's verdict from a strict ClientHello scan (hello + 2 record headers = TLS)"
        ),
        format!(
            "egress backstop: cgroup_skb/egress on {cg} refuses payload sk_msg never passed \
             (a send racing the handshake, MPTCP subflows, a full SOCKHASH) and the connection \
             is destroyed (SOCK_DESTROY)"
        ),
        "TCP Fast Open: refused (EPERM) at connect for processes in scope of an enforce-mode \
         egress rule"
            .to_string(),
        format!(
            "maps: process map sized from pid_max ({}; --max-processes), SOCKHASH {} entries \
             (--max-watched-sockets); a full map fails closed",
            engine::pid_max().map_or("unknown".to_string(), |n| n.to_string()),
            daemon_common::MAX_WATCHED_SOCKETS
        ),
        format!("socket guard (processes an enforce-mode connect/egress Block rule covers): cgroup sock_create on {cg} refuses raw IP, ICMP and MPTCP sockets (EPERM); tracepoints capability/cap_capable and io_uring/io_uring_submit_req SIGKILL a request for a packet socket"),
        "events: BPF ring buffer, losses counted".to_string(),
        "not used: kprobes, fentry/fexit, BPF LSM".to_string(),
    ];
    let limits = vec![
        "egress: bytes inside well-formed ClientHello fields and everything after a TLS verdict \
         are not inspected (a client can hide data there as in any encrypted stream)"
            .to_string(),
        "egress: a connection that already sent data when a policy was applied and that no \
         process in the rule's scope holds is left unwatched"
            .to_string(),
        "egress backstop: payload no verdict saw is refused whoever sent it when an \
         enforce-mode rule names the destination (who sent it is unknown on the wire)"
            .to_string(),
    ];
    let engines = if root {
        kernel::running_engine_counters()
            .into_iter()
            .map(|(id, c)| EngineCounters {
                counters_map_id: id,
                lost_events: c[COUNTER_LOST_EVENTS as usize],
                stale_processes: c[COUNTER_STALE_PROCESS as usize],
                read_failed: c[COUNTER_READ_FAILED as usize],
                process_map_full: c[COUNTER_PROCESS_MAP_FULL as usize],
            })
            .collect()
    } else {
        Vec::new()
    };
    Report {
        kernel: kernel_release(),
        root,
        tracefs: tracefs.map(|p| p.display().to_string()),
        cgroup2: cgroup2.map(|p| p.display().to_string()),
        btf: btf.is_some(),
        checks,
        programs,
        uses,
        limits,
        pins: pins::status(pin_dir, &engine::build_id()),
        engines,
        ready,
    }
}

fn print_text(r: &Report) {
    println!(
        "kernel {}  (root: {})",
        r.kernel,
        if r.root { "yes" } else { "no" }
    );
    for c in &r.checks {
        println!("{}", check_line(c));
    }
    if !r.programs.is_empty() {
        println!("bulwark programs through the verifier:");
        for p in &r.programs {
            match &p.error {
                None => match p.verified_insns {
                    Some(n) => println!("  [yes] {} ({n} instructions verified)", p.name),
                    None => println!("  [yes] {}", p.name),
                },
                Some(e) => println!("  [NO ] {}: {e}", p.name),
            }
        }
    }
    for e in &r.engines {
        println!(
            "running engine (COUNTERS map {}): lost_events={} stale_processes={} read_failed={} process_map_full={}",
            e.counters_map_id, e.lost_events, e.stale_processes, e.read_failed, e.process_map_full
        );
    }
    println!("bulwark will use:");
    for u in &r.uses {
        println!("  - {u}");
    }
    println!("bulwark does not guarantee (see docs/enforcement.md):");
    for l in &r.limits {
        println!("  - {l}");
    }
    println!("pins: {}", r.pins.describe());
    println!(
        "{}",
        if r.ready {
            "ready: every mechanism bulwark needs works on this host"
        } else {
            "NOT ready: see the NO lines above"
        }
    );
}

pub fn run(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let r = probe(&args.pin_dir);
    match args.format {
        Format::Text => print_text(&r),
        Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
    }
    Ok(if r.ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_required_mechanisms_and_readiness() {
        let r = probe(Path::new(pins::DEFAULT_PIN_DIR));
        if !r.root {
            assert!(
                !r.ready,
                "without root the probe cannot say the host is ready"
            );
            assert!(r
                .checks
                .iter()
                .any(|c| c.name == "program loads" && !c.supported));
            return;
        }
        // Root on the machines here: the portable set works, trampolines are refused.
        let get = |n: &str| {
            r.checks
                .iter()
                .find(|c| c.name == n)
                .unwrap_or_else(|| panic!("{n}"))
        };
        for n in [
            "tracepoint",
            "bpf_send_signal from a tracepoint",
            "raw_tp",
            "tp_btf",
            "cgroup sock_addr (connect4/6, sendmsg4/6)",
            "cgroup sock (sock_create)",
            "sock_ops",
            "sk_msg",
            "cgroup_skb/egress (wire-level backstop)",
            "SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY)",
            "pidfd_getfd (connections older than a policy)",
            "TCP Fast Open detection (tcp_sock offsets in BTF)",
            "hook: file (fd table, file and path offsets in BTF)",
            "fork into another cgroup (task cgroup offsets in BTF)",
            "hook: file via io_uring (io_kiocb request offsets in BTF)",
            "ring buffer map",
            "SOCKHASH map",
            "SK_STORAGE map",
        ] {
            assert!(get(n).supported, "{n}: {}", get(n).detail);
        }
        // Optional mechanisms are reported either way, never required.
        for n in ["fentry (trampoline)", "BPF LSM", "kprobe"] {
            assert!(!get(n).required, "{n}");
        }
        assert!(r.programs.iter().all(|p| p.loaded), "{:?}", r.programs);
        for name in [
            "bulwark_egress",
            "bulwark_backstop",
            "bulwark_sock_create",
            "bulwark_packet_socket",
            "bulwark_uring_socket",
            "bulwark_uring_file_submit",
            "bulwark_uring_file_complete",
        ] {
            assert!(r.programs.iter().any(|p| p.name == name), "{name}");
        }
        // This host (x86_64, io_uring with its tracepoint) closes every packet-socket path;
        // each is reported, none is required.
        let guard: Vec<&Check> = r
            .checks
            .iter()
            .filter(|c| c.name.starts_with("socket guard: "))
            .collect();
        assert_eq!(guard.len(), 3, "{guard:?}");
        for c in guard {
            assert!(!c.required, "{c:?}");
            assert!(c.supported && c.detail.starts_with("closed: "), "{c:?}");
        }
        assert!(get("kernel.io_uring_disabled").supported);
        assert!(r.ready);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ready"], true);
        assert_eq!(json["pins"]["dir"], pins::DEFAULT_PIN_DIR);
        assert_eq!(json["pins"]["this_build"], engine::build_id());
    }

    /// The BTF-dependent checks: optional whatever they find, supported exactly when the
    /// loader's flag says the offsets were found, and printed with what is lost without them.
    #[test]
    fn btf_checks_report_what_each_missing_read_loses() {
        let all = KernelOffsets {
            tfo: 1,
            file_read: 1,
            cgroup_read: 1,
            uring_file: 1,
            ..Default::default()
        };
        let none = KernelOffsets::default();
        let (with, without) = (btf_checks(&all), btf_checks(&none));
        let names: Vec<&str> = with.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "TCP Fast Open detection (tcp_sock offsets in BTF)",
                "hook: file (fd table, file and path offsets in BTF)",
                "fork into another cgroup (task cgroup offsets in BTF)",
                "hook: file via io_uring (io_kiocb request offsets in BTF)",
            ]
        );
        assert!(with.iter().all(|c| c.supported && !c.required), "{with:?}");
        assert!(
            without.iter().all(|c| !c.supported && !c.required),
            "{without:?}"
        );
        // Each flag decides its own check only.
        let file_only = btf_checks(&KernelOffsets {
            file_read: 1,
            ..Default::default()
        });
        let supported: Vec<bool> = file_only.iter().map(|c| c.supported).collect();
        assert_eq!(supported, [false, true, false, false]);

        let lines: Vec<String> = with.iter().chain(&without).map(check_line).collect();
        assert_eq!(
            lines[1],
            "  [yes] hook: file (fd table, file and path offsets in BTF) (optional): file rules \
             judge the file a call actually used: its walked path and identity"
        );
        for (i, start, says) in [
            (
                5,
                "  [no ] hook: file (fd table, file and path offsets in BTF) (optional): ",
                "`hook: file` rules judge nothing on this kernel",
            ),
            (
                2,
                "  [yes] fork into another cgroup (task cgroup offsets in BTF) (optional): ",
                "CLONE_INTO_CGROUP",
            ),
            (
                6,
                "  [no ] fork into another cgroup (task cgroup offsets in BTF) (optional): ",
                "keeps its parent's namespace until it execs",
            ),
            (
                3,
                "  [yes] hook: file via io_uring (io_kiocb request offsets in BTF) (optional): ",
                "judged like the system calls",
            ),
            (
                7,
                "  [no ] hook: file via io_uring (io_kiocb request offsets in BTF) (optional): ",
                "NOT seen by `hook: file`",
            ),
        ] {
            assert!(
                lines[i].starts_with(start) && lines[i].contains(says),
                "{}",
                lines[i]
            );
        }
        let json = serde_json::to_value(&without[2]).unwrap();
        assert_eq!(json["supported"], false);
        assert_eq!(json["required"], false);
    }
}
