//! The socket guard: keeps a process that an enforce-mode connect/egress Block rule covers from
//! reaching the network through socket types those hooks never see (see "Other socket types"
//! in the `daemon-common` crate doc and docs/enforcement.md).
//! - `bulwark_sock_create` (cgroup `sock_create`): refuses raw IP, ICMP datagram and MPTCP
//!   sockets (`socket()` fails with EPERM) for every way of creating one (syscall, 32-bit
//!   syscall, io_uring).
//! - `bulwark_packet_socket` (tracepoint `capability/cap_capable`, at the `CAP_NET_RAW` check
//!   every packet socket needs) and `bulwark_uring_socket` (tracepoint
//!   `io_uring/io_uring_submit_req`): packet sockets have no cgroup hook, so a covered process
//!   asking for one is SIGKILLed before it returns from the request.
//!
//! Every program first looks at what is asked (socket type, capability, io_uring opcode) and
//! returns at once for everything else, so sockets and checks no rule is about pay no map
//! lookup; then, only while the active slot has guard selectors, one process lookup.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_user,
        bpf_send_signal, bpf_task_pt_regs,
    },
    macros::{cgroup_sock, tracepoint},
    programs::{SockContext, TracePointContext},
};
use daemon_common::*;

use crate::maps::*;

const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_PACKET: u32 = 17;
/// AF_XDP sockets transmit whole frames too, and like packet sockets need CAP_NET_RAW.
const AF_XDP: u32 = 44;
const SOCK_DGRAM: u32 = 2;
const SOCK_RAW: u32 = 3;
/// The old packet interface: `socket(AF_INET, SOCK_PACKET, ..)` makes an AF_PACKET socket.
const SOCK_PACKET: u32 = 10;
/// `SOCK_NONBLOCK` / `SOCK_CLOEXEC` live above these bits of the type argument.
const SOCK_TYPE_MASK: u32 = 0xf;
const IPPROTO_ICMP: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;
const IPPROTO_MPTCP: u32 = 262;
/// `socketcall(2)` call number of `socket`.
const SYS_SOCKET: u32 = 1;
/// io_uring opcode of socket creation (uapi, stable).
const IORING_OP_SOCKET: u8 = 45;
const SIGKILL: u32 = 9;

/// The guard selectors of the active slot that cover the current process.
struct Cover {
    slot: u32,
    enforce: u64,
    monitor: u64,
    start_ns: u64,
}

/// Reads a kernel value at `addr` (`None` when the address is 0 or the read fails).
#[inline(always)]
fn kread<T: Default>(addr: u64) -> Option<T> {
    if addr == 0 {
        return None;
    }
    let mut v = T::default();
    let r = unsafe {
        bpf_probe_read_kernel(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        )
    };
    (r == 0).then_some(v)
}

/// Which guard selectors cover `tgid` in the active slot (in the table of its group); `None`
/// when no group of the slot has any (the common case: one array lookup) or none covers it. A
/// process without state of its own (a fork whose state could not be stored) is judged by its
/// parent's.
#[inline(always)]
fn cover(tgid: u32) -> Option<Cover> {
    let slot = config().active_slot & 1;
    let head = SLOT_META.get(slot)?;
    if head.slot_guard == 0 && head.enforce_net | head.monitor_net == 0 {
        return None;
    }
    let (selectors, start_ns, namespace_id) = match unsafe { PROCESSES.get(&tgid) } {
        Some(p) => (p.selectors[slot as usize], p.start_ns, p.namespace_id),
        None => {
            let off = offsets();
            let task = unsafe { bpf_get_current_task() };
            let parent: u64 = kread(task + off.task_real_parent as u64)?;
            let ptgid: u32 = kread(parent + off.task_tgid as u64)?;
            let p = unsafe { PROCESSES.get(&ptgid) }?;
            // The event names the process by pid alone (its identity was never recorded).
            (p.selectors[slot as usize], 0, p.namespace_id)
        }
    };
    let table = process_table(slot, namespace_id);
    let meta = SLOT_META.get(table)?;
    let c = Cover {
        slot: table,
        enforce: selectors & meta.enforce_net,
        monitor: selectors & meta.monitor_net,
        start_ns,
    };
    (c.enforce | c.monitor != 0).then_some(c)
}

/// State of [`report_step`]: one match record per covering selector.
#[repr(C)]
struct ReportLoop {
    enforce: u64,
    monitor: u64,
    cgroup_id: u64,
    start_ns: u64,
    slot: u32,
    tgid: u32,
    reason: u32,
}

#[inline(never)]
extern "C" fn report_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut ReportLoop) };
    let i = (index & 63) as u32;
    let bit = 1u64 << i;
    if (c.enforce | c.monitor) & bit == 0 {
        return 0;
    }
    let Some(sel) = selector(c.slot, i) else {
        return 0;
    };
    let m = MatchEvent {
        header: header(EVENT_MATCH, c.tgid, c.start_ns),
        slot: c.slot as u8,
        selector: i as u8,
        hook: sel.hook,
        actions: sel.actions,
        enforced: (c.enforce & bit != 0) as u8,
        encryption: 0,
        reason: c.reason as u8,
        _pad: 0,
        cgroup_id: c.cgroup_id,
        // No destination exists yet.
        dest: Destination::default(),
        tid: 0,
    };
    emit_now(&m);
    0
}

/// Reports the socket request refused for `reason` once per covering selector; true when one
/// of them enforces (the caller then refuses or kills).
#[inline(always)]
fn judge(tgid: u32, reason: u8) -> bool {
    let Some(c) = cover(tgid) else {
        return false;
    };
    let mut r = ReportLoop {
        enforce: c.enforce,
        monitor: c.monitor,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        start_ns: c.start_ns,
        slot: c.slot,
        tgid,
        reason: reason as u32,
    };
    unsafe {
        bpf_loop(
            MAX_SELECTORS as u32,
            report_step as *mut core::ffi::c_void,
            (&mut r as *mut ReportLoop).cast(),
            0,
        )
    };
    c.enforce != 0
}

#[inline(always)]
fn current_tgid() -> u32 {
    (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32
}

/// The guard reason for an AF_INET/AF_INET6 socket of this type and protocol, if it is one
/// the connect/sendmsg hooks and sk_msg cannot judge.
#[inline(always)]
fn inet_reason(sock_type: u32, protocol: u32) -> Option<u8> {
    match (sock_type, protocol) {
        (SOCK_RAW, _) => Some(REASON_RAW_SOCKET),
        (SOCK_DGRAM, IPPROTO_ICMP | IPPROTO_ICMPV6) => Some(REASON_ICMP_SOCKET),
        (_, IPPROTO_MPTCP) => Some(REASON_MPTCP),
        _ => None,
    }
}

/// cgroup `sock_create`: runs in the creating process for every AF_INET/AF_INET6 socket made
/// from user space (not for the kernel's own, such as MPTCP subflows). Returning 0 makes
/// `socket()` fail with EPERM.
#[cgroup_sock(sock_create)]
pub fn bulwark_sock_create(ctx: SockContext) -> i32 {
    // One 4-byte load per field: the verifier refuses wider (merged) context loads.
    let (family, sock_type, protocol) = unsafe {
        use core::ptr::{addr_of, read_volatile as rv};
        (
            rv(addr_of!((*ctx.sock).family)),
            rv(addr_of!((*ctx.sock).type_)),
            rv(addr_of!((*ctx.sock).protocol)),
        )
    };
    if family != AF_INET && family != AF_INET6 {
        return 1;
    }
    let Some(reason) = inet_reason(sock_type, protocol) else {
        return 1;
    };
    if judge(current_tgid(), reason) {
        0
    } else {
        1
    }
}

/// Whether `socket(family, type, ..)` asks for a socket that writes whole frames: a packet
/// socket (also the old `SOCK_PACKET` kind) or an AF_XDP socket.
#[inline(always)]
fn is_packet(family: u32, sock_type: u32) -> bool {
    family == AF_PACKET
        || family == AF_XDP
        || (family == AF_INET && sock_type & SOCK_TYPE_MASK == SOCK_PACKET)
}

/// A covered process asking for a packet socket is SIGKILLed: the signal is pending before the
/// socket exists, and the process dies on its way back to user space.
#[inline(always)]
fn packet_request(family: u32, sock_type: u32) {
    if !is_packet(family, sock_type) {
        return;
    }
    if judge(current_tgid(), REASON_PACKET_SOCKET) {
        unsafe { bpf_send_signal(SIGKILL) };
    }
}

/// `CAP_NET_RAW` (uapi capability number).
const CAP_NET_RAW: i32 = 13;

/// Tracepoint `capability/cap_capable`: every capability check. A packet socket is only made
/// after a granted `CAP_NET_RAW` check, so only those go further, and then only when the
/// syscall being served asks for a packet socket: `socket`, or for a 32-bit caller (`int 0x80`)
/// `socket` or `socketcall(SYS_SOCKET)`. Capability checks are rare next to syscalls, so this
/// costs nothing measurable where a per-syscall hook would cost every syscall of the node.
#[tracepoint]
pub fn bulwark_packet_socket(ctx: TracePointContext) -> u32 {
    let off = offsets();
    if off.tp_cap_cap == 0 || off.regs_syscall_nr == 0 {
        return 0;
    }
    match unsafe { ctx.read_at::<i32>(off.tp_cap_cap as usize & 0xff) } {
        Ok(CAP_NET_RAW) => {}
        _ => return 0,
    }
    if unsafe { ctx.read_at::<i32>(off.tp_cap_ret as usize & 0xff) } != Ok(0) {
        return 0; // refused: no socket
    }
    // The registers saved at syscall entry: the syscall number and its arguments.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let nr = kread::<u64>(regs + off.regs_syscall_nr as u64).unwrap_or(u64::MAX);
    if nr > u32::MAX as u64 {
        return 0;
    }
    let nr = nr as u32;
    let compat = off.task_compat_status != 0
        && kread::<u32>(unsafe { bpf_get_current_task() } + off.task_compat_status as u64)
            .is_some_and(|s| s & off.compat_status_bit != 0);
    let (a0, a1) = if compat {
        (off.regs_compat_arg0, off.regs_compat_arg1)
    } else {
        (off.regs_arg0, off.regs_arg1)
    };
    if a0 == 0 || a1 == 0 {
        return 0;
    }
    let arg = |a: u32| kread::<u64>(regs + a as u64).unwrap_or(0) as u32;
    let (family, sock_type) = if !compat && nr == off.nr_socket {
        (arg(a0), arg(a1))
    } else if compat && off.nr_compat_socket != 0 && nr == off.nr_compat_socket {
        (arg(a0), arg(a1))
    } else if compat
        && off.nr_compat_socketcall != 0
        && nr == off.nr_compat_socketcall
        && arg(a0) == SYS_SOCKET
    {
        // socketcall(SYS_SOCKET, args): args points at 32-bit family, type, protocol.
        let mut a = [0u32; 2];
        let r = unsafe {
            bpf_probe_read_user(
                a.as_mut_ptr().cast(),
                8,
                arg(a1) as u64 as *const core::ffi::c_void,
            )
        };
        if r != 0 {
            count(COUNTER_READ_FAILED);
            return 0;
        }
        (a[0], a[1])
    } else {
        return 0;
    };
    packet_request(family, sock_type);
    0
}

/// Tracepoint `io_uring/io_uring_submit_req`: fires for every submitted request, after its
/// preparation and before it is issued; only `IORING_OP_SOCKET` goes further. (Requests the
/// same submission issues after this one still run before the kill lands: see
/// docs/enforcement.md.)
#[tracepoint]
pub fn bulwark_uring_socket(ctx: TracePointContext) -> u32 {
    let off = offsets();
    if off.tp_uring_opcode == 0 || off.tp_uring_req == 0 || off.uring_socket_domain == 0 {
        return 0;
    }
    let Ok(opcode) = (unsafe { ctx.read_at::<u8>(off.tp_uring_opcode as usize & 0xff) }) else {
        return 0;
    };
    if opcode != IORING_OP_SOCKET {
        return 0;
    }
    let Ok(req) = (unsafe { ctx.read_at::<u64>(off.tp_uring_req as usize & 0xff) }) else {
        return 0;
    };
    let family: u32 = kread(req + off.uring_socket_domain as u64).unwrap_or(0);
    let sock_type: u32 = kread(req + off.uring_socket_type as u64).unwrap_or(0);
    packet_request(family, sock_type);
    0
}
