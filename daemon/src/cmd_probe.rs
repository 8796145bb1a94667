//! `bulwark probe`: which kernel mechanisms this host supports and which bulwark will use.
//! Every program type is checked by actually loading a trivial program of that type with the
//! bpf(2) syscall (and, for trampoline types, attaching it), and bulwark's own programs are
//! run through the verifier without attaching. Text or `--format json`; exit code 0 when
//! everything bulwark needs works, 1 when something required is missing.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::engine::{self, host, Btf, KIND_FUNC, KIND_TYPEDEF};

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
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
    pub ready: bool,
}

#[derive(Serialize, Debug)]
pub struct ProgramCheck {
    pub name: String,
    pub loaded: bool,
    /// Instructions the verifier processed (limit 1,000,000), when the kernel reports it.
    pub verified_insns: Option<u32>,
    pub error: Option<String>,
}

// bpf(2) commands, program/map/attach types (uapi/linux/bpf.h).
const BPF_MAP_CREATE: i64 = 0;
const BPF_PROG_LOAD: i64 = 5;
const BPF_RAW_TRACEPOINT_OPEN: i64 = 17;
const PROG_TRACEPOINT: u32 = 5;
const PROG_SOCK_OPS: u32 = 13;
const PROG_SK_MSG: u32 = 16;
const PROG_RAW_TRACEPOINT: u32 = 17;
const PROG_CGROUP_SOCK_ADDR: u32 = 18;
const PROG_CGROUP_SKB: u32 = 8;
const PROG_TRACING: u32 = 26;
const PROG_LSM: u32 = 29;
const PROG_KPROBE: u32 = 2;
const ATTACH_SK_MSG_VERDICT: u32 = 7;
const ATTACH_INET_EGRESS: u32 = 1;
const ATTACH_INET4_CONNECT: u32 = 10;
const ATTACH_TRACE_RAW_TP: u32 = 23;
const ATTACH_TRACE_FENTRY: u32 = 24;
const ATTACH_LSM_MAC: u32 = 27;
const MAP_SOCKHASH: u32 = 18;
const MAP_SK_STORAGE: u32 = 24;
const MAP_RINGBUF: u32 = 27;
const HELPER_SEND_SIGNAL: i32 = 109;

fn bpf(cmd: i64, attr: &mut [u8]) -> Result<OwnedFd, String> {
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        Err(e.to_string())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

fn put32(a: &mut [u8], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put64(a: &mut [u8], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// One BPF instruction (`struct bpf_insn`).
fn insn(code: u8, dst: u8, src: u8, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[4..].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// Loads `r0 = ret; exit` (optionally calling `helper` first) as `prog_type`.
fn load_trivial(
    prog_type: u32,
    attach_type: u32,
    attach_btf_id: u32,
    ret: i32,
    helper: Option<i32>,
) -> Result<OwnedFd, String> {
    let mut code: Vec<u8> = Vec::new();
    if let Some(h) = helper {
        code.extend(insn(0xb7, 1, 0, 0)); // r1 = 0 (signal 0: probe only)
        code.extend(insn(0x85, 0, 0, h)); // call helper
    }
    code.extend(insn(0xb7, 0, 0, ret)); // r0 = ret
    code.extend(insn(0x95, 0, 0, 0)); // exit
    let license = c"GPL";
    let mut attr = [0u8; 144];
    put32(&mut attr, 0, prog_type);
    put32(&mut attr, 4, (code.len() / 8) as u32);
    put64(&mut attr, 8, code.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 68, attach_type);
    put32(&mut attr, 108, attach_btf_id);
    bpf(BPF_PROG_LOAD, &mut attr)
}

/// Attaches a tracing/LSM program through BPF_RAW_TRACEPOINT_OPEN (detached on close).
fn attach_raw(prog: &OwnedFd) -> Result<OwnedFd, String> {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 16];
    put32(&mut attr, 8, prog.as_raw_fd() as u32);
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr)
}

fn create_map(
    map_type: u32,
    key: u32,
    value: u32,
    max: u32,
    flags: u32,
) -> Result<OwnedFd, String> {
    let mut attr = [0u8; 72];
    put32(&mut attr, 0, map_type);
    put32(&mut attr, 4, key);
    put32(&mut attr, 8, value);
    put32(&mut attr, 12, max);
    put32(&mut attr, 16, flags);
    bpf(BPF_MAP_CREATE, &mut attr)
}

fn check(name: &str, required: bool, r: Result<impl Sized, String>, ok: &str) -> Check {
    Check {
        name: name.to_string(),
        supported: r.is_ok(),
        required,
        detail: match r {
            Ok(_) => ok.to_string(),
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

/// Gathers the report (never fails: what cannot be checked is reported as such).
pub fn probe() -> Report {
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
        let id = |name: &str, kind: u32| -> Result<u32, String> {
            btf.as_ref()
                .and_then(|b| b.type_id(name, kind))
                .ok_or_else(|| format!("{name} not in kernel BTF"))
        };
        checks.push(check(
            "tracepoint",
            true,
            load_trivial(PROG_TRACEPOINT, 0, 0, 0, None),
            "loads",
        ));
        checks.push(check(
            "bpf_send_signal from a tracepoint",
            true,
            load_trivial(PROG_TRACEPOINT, 0, 0, 0, Some(HELPER_SEND_SIGNAL)),
            "helper allowed",
        ));
        checks.push(check(
            "raw_tp",
            true,
            load_trivial(PROG_RAW_TRACEPOINT, 0, 0, 0, None),
            "loads",
        ));
        checks.push(check(
            "tp_btf",
            false,
            id("btf_trace_sched_process_exec", KIND_TYPEDEF).and_then(|i| {
                let p = load_trivial(PROG_TRACING, ATTACH_TRACE_RAW_TP, i, 0, None)?;
                attach_raw(&p)
            }),
            "loads and attaches",
        ));
        checks.push(check(
            "cgroup sock_addr (connect4/6, sendmsg4/6)",
            true,
            load_trivial(PROG_CGROUP_SOCK_ADDR, ATTACH_INET4_CONNECT, 0, 1, None),
            "loads",
        ));
        checks.push(check(
            "sock_ops",
            true,
            load_trivial(PROG_SOCK_OPS, 0, 0, 1, None),
            "loads",
        ));
        checks.push(check(
            "sk_msg",
            true,
            load_trivial(PROG_SK_MSG, ATTACH_SK_MSG_VERDICT, 0, 1, None),
            "loads",
        ));
        checks.push(check(
            "cgroup_skb/egress (wire-level backstop)",
            true,
            load_trivial(PROG_CGROUP_SKB, ATTACH_INET_EGRESS, 0, 1, None),
            "loads",
        ));
        checks.push(destroy_check());
        checks.push(check(
            "pidfd_getfd (connections older than a policy)",
            false,
            engine::sockets::take_fd(std::process::id(), 0).map_err(|e| e.to_string()),
            "works: connections that existed before a policy are checked when it is applied",
        ));
        checks.push(check(
            "SOCKHASH map",
            true,
            create_map(MAP_SOCKHASH, 8, 4, 1, 0),
            "created",
        ));
        checks.push(check(
            "ring buffer map",
            true,
            create_map(MAP_RINGBUF, 0, 0, 4096, 0),
            "created",
        ));
        // The program type may load while the kernel has no kprobes to attach it to.
        let kprobe = load_trivial(PROG_KPROBE, 0, 0, 0, None).and_then(|fd| {
            if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
                Ok(fd)
            } else {
                Err("the program type loads but the kernel has no kprobe PMU \
                     (/sys/bus/event_source/devices/kprobe): kprobes are compiled out"
                    .to_string())
            }
        });
        checks.push(check(
            "kprobe",
            false,
            kprobe,
            "available (not used: bulwark needs no kprobes)",
        ));
        checks.push(check(
            "fentry (trampoline)",
            false,
            id("do_exit", KIND_FUNC).and_then(|i| {
                let p = load_trivial(PROG_TRACING, ATTACH_TRACE_FENTRY, i, 0, None)?;
                attach_raw(&p)
            }),
            "loads and attaches (not used)",
        ));
        checks.push(check(
            "BPF LSM",
            false,
            id("bpf_lsm_file_open", KIND_FUNC).and_then(|i| {
                let p = load_trivial(PROG_LSM, ATTACH_LSM_MAC, i, 0, None)?;
                attach_raw(&p)
            }),
            "loads and attaches (optional stronger backend, not built yet)",
        ));
        // SK_STORAGE needs BTF for its key/value: it is checked with bulwark's own object,
        // which declares one (SK_STORAGE) and fails to load as a whole without it.
        match engine::verify_programs() {
            Ok(list) => {
                checks.push(Check {
                    name: "SK_STORAGE map (BTF)".into(),
                    supported: true,
                    required: true,
                    detail: "created with bulwark's eBPF object".into(),
                });
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
        let _ = MAP_SK_STORAGE;
    }
    if let Some(b) = &btf {
        let tfo = b.tfo_offsets(Default::default()).tfo == 1;
        checks.push(Check {
            name: "TCP Fast Open detection (tcp_sock offsets in BTF)".into(),
            supported: tfo,
            required: false,
            detail: if tfo {
                "connect refuses Fast Open for processes in scope of an enforce-mode egress rule"
                    .into()
            } else {
                "tcp_sock.fastopen_req/fastopen_connect not found: Fast Open is not refused at \
                 connect; the backstop still drops data in a SYN on a watched socket"
                    .into()
            },
        });
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
        let mark = if c.supported {
            "yes"
        } else if c.required {
            "NO "
        } else {
            "no "
        };
        let req = if c.required { "" } else { " (optional)" };
        println!("  [{mark}] {}{req}: {}", c.name, c.detail);
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
    println!("bulwark will use:");
    for u in &r.uses {
        println!("  - {u}");
    }
    println!("bulwark does not guarantee (see docs/enforcement.md):");
    for l in &r.limits {
        println!("  - {l}");
    }
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
    let r = probe();
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
    fn insn_encoding_matches_the_uapi_layout() {
        // r1 = 0: opcode 0xb7, dst 1 in the low nibble, imm 0.
        assert_eq!(insn(0xb7, 1, 0, 0), [0xb7, 0x01, 0, 0, 0, 0, 0, 0]);
        // call 109
        assert_eq!(insn(0x85, 0, 0, 109), [0x85, 0, 0, 0, 109, 0, 0, 0]);
    }

    #[test]
    fn probe_reports_required_mechanisms_and_readiness() {
        let r = probe();
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
            "raw_tp",
            "sock_ops",
            "sk_msg",
            "cgroup_skb/egress (wire-level backstop)",
            "SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY)",
            "pidfd_getfd (connections older than a policy)",
            "TCP Fast Open detection (tcp_sock offsets in BTF)",
            "ring buffer map",
            "SOCKHASH map",
        ] {
            assert!(get(n).supported, "{n}: {}", get(n).detail);
        }
        assert!(r.programs.iter().all(|p| p.loaded), "{:?}", r.programs);
        assert!(r.programs.iter().any(|p| p.name == "bulwark_egress"));
        assert!(r.programs.iter().any(|p| p.name == "bulwark_backstop"));
        assert!(r.ready);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ready"], true);
    }
}
