//! The socket guard's host facts: what its kernel programs (`daemon-ebpf/src/sockets.rs`) need
//! to know about this kernel and architecture — syscall numbers, where a syscall's arguments
//! and its "32-bit" flag sit, where io_uring keeps a prepared socket request — resolved once at
//! load from BTF and tracefs into [`KernelOffsets`], and what the guard therefore covers here
//! ([`coverage`], for `bulwark probe`). Anything that cannot be resolved stays 0: the program
//! concerned then does nothing, and [`coverage`] says which path is open.

use std::path::Path;

use daemon_common::KernelOffsets;

use super::btf::Btf;
use super::host;

/// x86: `TS_COMPAT` in `thread_info.status`, set while a task runs a 32-bit syscall (also
/// `int 0x80` from a 64-bit process).
#[cfg(target_arch = "x86_64")]
const TS_COMPAT: u32 = 0x0002;
/// x86 32-bit syscall numbers (arch/x86/entry/syscalls/syscall_32.tbl).
#[cfg(target_arch = "x86_64")]
const IA32_SOCKETCALL: u32 = 102;
#[cfg(target_arch = "x86_64")]
const IA32_SOCKET: u32 = 359;

/// The io_uring tracepoint the guard watches for `IORING_OP_SOCKET`.
pub const URING_TRACEPOINT: (&str, &str) = ("io_uring", "io_uring_submit_req");
/// The capability check tracepoint (Linux 6.14+) where packet-socket requests are caught.
pub const CAP_TRACEPOINT: (&str, &str) = ("capability", "cap_capable");

/// `base` with the socket guard's fields filled in from `btf` and `tracefs`.
pub fn offsets(btf: &Btf, tracefs: &Path, base: KernelOffsets) -> KernelOffsets {
    let get = |s: &str, m: &str| btf.member_offset(s, m).ok();
    let mut o = KernelOffsets {
        nr_socket: libc::SYS_socket as u32,
        ..base
    };
    let (cat, tp) = CAP_TRACEPOINT;
    if let (Some(cap), Some(ret)) = (
        host::tracepoint_field_offset(tracefs, cat, tp, "cap"),
        host::tracepoint_field_offset(tracefs, cat, tp, "ret"),
    ) {
        (o.tp_cap_cap, o.tp_cap_ret) = (cap, ret);
    }
    #[cfg(target_arch = "x86_64")]
    {
        if let (Some(nr), Some(di), Some(si)) = (
            get("pt_regs", "orig_ax"),
            get("pt_regs", "di"),
            get("pt_regs", "si"),
        ) {
            (o.regs_syscall_nr, o.regs_arg0, o.regs_arg1) = (nr, di, si);
        }
        if let (Some(bx), Some(cx), Some(ti), Some(status)) = (
            get("pt_regs", "bx"),
            get("pt_regs", "cx"),
            get("task_struct", "thread_info"),
            get("thread_info", "status"),
        ) {
            o.regs_compat_arg0 = bx;
            o.regs_compat_arg1 = cx;
            // thread_info is the first member of task_struct on x86: status is at 16, not 0.
            o.task_compat_status = ti + status;
            o.compat_status_bit = TS_COMPAT;
            o.nr_compat_socket = IA32_SOCKET;
            o.nr_compat_socketcall = IA32_SOCKETCALL;
        }
    }
    let (cat, tp) = URING_TRACEPOINT;
    if let (Some(req), Some(opcode)) = (
        host::tracepoint_field_offset(tracefs, cat, tp, "req"),
        host::tracepoint_field_offset(tracefs, cat, tp, "opcode"),
    ) {
        if let (Some(cmd), Some(domain), Some(ty)) = (
            get("io_kiocb", "cmd"),
            get("io_socket", "domain"),
            get("io_socket", "type"),
        ) {
            o.tp_uring_req = req;
            o.tp_uring_opcode = opcode;
            o.uring_socket_domain = cmd + domain;
            o.uring_socket_type = cmd + ty;
        }
    }
    o
}

/// One way of asking for a packet socket, and whether a covered process can use it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPath {
    pub name: &'static str,
    /// `Ok(how it is closed)`, or `Err(why it is open)`.
    pub closed: Result<String, String>,
}

/// The packet-socket paths and whether each is closed on this host, given the offsets
/// [`offsets`] resolved and `kernel.io_uring_disabled` (`None` when the sysctl is absent).
/// (Raw IP, ICMP and MPTCP sockets are refused by cgroup `sock_create` on every path.)
pub fn coverage(o: &KernelOffsets, io_uring_disabled: Option<u32>) -> Vec<GuardPath> {
    let (cat, tp) = CAP_TRACEPOINT;
    let syscall = if o.tp_cap_cap == 0 {
        Err(format!(
            "no tracepoint {cat}/{tp} (Linux 6.14 added it): packet sockets are not refused"
        ))
    } else if o.regs_syscall_nr == 0 || o.regs_arg0 == 0 || o.regs_arg1 == 0 {
        Err("the syscall registers of this architecture are unknown".to_string())
    } else {
        Ok(format!(
            "SIGKILL at tracepoint {cat}/{tp} (the CAP_NET_RAW check of the socket syscall)"
        ))
    };
    let compat = match &syscall {
        Ok(_) if o.nr_compat_socket != 0 && o.task_compat_status != 0 => Ok(format!(
            "SIGKILL at tracepoint {cat}/{tp} (32-bit socket and socketcall)"
        )),
        Ok(_) => Err("32-bit syscalls are not recognised on this architecture".to_string()),
        Err(why) => Err(why.clone()),
    };
    let (cat, tp) = URING_TRACEPOINT;
    let sysctl = io_uring_disabled.map_or("absent".to_string(), |v| v.to_string());
    let uring = if io_uring_disabled == Some(2) {
        Ok("io_uring is disabled (kernel.io_uring_disabled = 2)".to_string())
    } else if o.uring_socket_domain != 0 {
        Ok(format!(
            "SIGKILL at tracepoint {cat}/{tp}; requests submitted in the same call after it still \
             run before the kill lands (kernel.io_uring_disabled = {sysctl}; 2 closes that)"
        ))
    } else {
        Err(format!(
            "IORING_OP_SOCKET is not watched: no tracepoint {cat}/{tp} or no io_socket in BTF \
             (kernel.io_uring_disabled = {sysctl}; 2 closes it)"
        ))
    };
    vec![
        GuardPath {
            name: "packet sockets via socket()",
            closed: syscall,
        },
        GuardPath {
            name: "packet sockets via 32-bit syscalls (int 0x80)",
            closed: compat,
        },
        GuardPath {
            name: "packet sockets via io_uring (IORING_OP_SOCKET)",
            closed: uring,
        },
    ]
}

/// `kernel.io_uring_disabled` (0 enabled, 1 only for a group, 2 disabled), `None` when the
/// kernel has no such sysctl (no io_uring, or older than 6.6).
pub fn io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unresolved_offsets_leave_every_packet_path_open_and_say_why() {
        let paths = coverage(&KernelOffsets::default(), Some(0));
        assert_eq!(paths.len(), 3);
        for p in &paths {
            let why = p.closed.as_ref().expect_err(p.name);
            assert!(!why.is_empty(), "{}", p.name);
        }
        // io_uring switched off by the sysctl closes that path whatever the offsets.
        let off = coverage(&KernelOffsets::default(), Some(2));
        assert!(
            off[2].closed.as_ref().is_ok_and(|s| s.contains("disabled")),
            "{off:?}"
        );
    }

    #[test]
    fn this_host_closes_every_packet_path() {
        let btf = std::path::Path::new("/sys/kernel/btf/vmlinux");
        let Some(tracefs) = host::tracefs().filter(|_| btf.exists()) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but BTF or tracefs is missing"
            );
            return;
        };
        if std::fs::read_dir(tracefs.join("events")).is_err() {
            // tracefs is root-only: without root the tracepoint offsets cannot be read.
            return;
        }
        let btf = Btf::from_file(btf).unwrap();
        let o = offsets(&btf, &tracefs, btf.kernel_offsets().unwrap());
        assert_eq!(o.nr_socket, libc::SYS_socket as u32);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                (o.regs_syscall_nr, o.regs_arg0, o.regs_arg1),
                (120, 112, 104),
                "pt_regs orig_ax, di, si: {o:?}"
            );
            assert_eq!(
                (o.regs_compat_arg0, o.regs_compat_arg1),
                (40, 88),
                "bx, cx: {o:?}"
            );
            assert_eq!(o.compat_status_bit, 2);
            for p in coverage(&o, io_uring_disabled()) {
                assert!(p.closed.is_ok(), "{}: {:?}", p.name, p.closed);
            }
        }
    }
}
