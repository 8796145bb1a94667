//! The connect programs: cgroup connect4/6 and sendmsg4/6. Connect-hook selectors whose
//! destination conditions hold report, and an enforce-mode Block refuses the connect (EPERM);
//! a TCP connect whose destination some egress selector watches gives the socket its
//! [`SockState`], and TCP Fast Open is refused for a process an enforce-mode egress Block
//! covers.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_loop, bpf_probe_read_kernel,
        bpf_sk_storage_delete,
    },
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use daemon_common::*;

use crate::maps::*;
use crate::net::*;

const SOCK_STREAM: u32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn bulwark_connect4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, false, false)
}

#[cgroup_sock_addr(connect6)]
pub fn bulwark_connect6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, true, false)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn bulwark_sendmsg4(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, false, true)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn bulwark_sendmsg6(ctx: SockAddrContext) -> i32 {
    on_connect(&ctx, true, true)
}

/// State of [`connect_step`] over the connect-hook selectors of one connect.
#[repr(C)]
struct ConnectLoop {
    candidates: u64,
    truth: u64,
    cgroup_id: u64,
    start_ns: u64,
    dest: Destination,
    slot: u32,
    tgid: u32,
    /// Out: an enforce-mode Block selector holds.
    blocked: u32,
    _pad: u32,
}

#[inline(never)]
extern "C" fn connect_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut ConnectLoop) };
    let i = (index & 63) as u32;
    if c.candidates & (1u64 << i) == 0 {
        return 0;
    }
    let Some(sel) = selector(c.slot, i) else {
        return 0;
    };
    if sel.dest_required & !c.truth != 0 {
        return 0;
    }
    let enforced = sel.mode == MODE_ENFORCE && sel.actions & ACTION_BLOCK != 0;
    if enforced {
        c.blocked = 1;
    }
    let m = MatchEvent {
        header: header(EVENT_MATCH, c.tgid, c.start_ns),
        slot: c.slot as u8,
        selector: i as u8,
        hook: HOOK_CONNECT,
        actions: sel.actions,
        enforced: enforced as u8,
        encryption: 0,
        reason: REASON_NONE,
        _pad: 0,
        cgroup_id: c.cgroup_id,
        dest: c.dest,
        tid: 0,
    };
    emit_now(&m);
    0
}

/// Whether the socket being connected uses TCP Fast Open: `sendto(MSG_FASTOPEN)` (its
/// `fastopen_req` is set while it connects) or `TCP_FASTOPEN_CONNECT` (data of the first write
/// goes into the SYN). Either way the first payload bypasses sk_msg.
#[inline(always)]
fn uses_fast_open(sk: *mut aya_ebpf::bindings::bpf_sock) -> bool {
    let off = offsets();
    if off.tfo != 1 || sk.is_null() {
        return false;
    }
    // The verifier forbids arithmetic on socket pointers: copy the address out as a number.
    let mut addr: u64 = 0;
    let holder = sk as u64;
    unsafe {
        bpf_probe_read_kernel(
            (&mut addr as *mut u64).cast(),
            8,
            (&holder as *const u64).cast(),
        )
    };
    let req: u64 = read_kernel(addr, off.tcp_fastopen_req);
    if req != 0 {
        return true;
    }
    let byte: u8 = read_kernel(addr, off.tcp_fastopen_connect_bit / 8);
    byte & (1u8 << (off.tcp_fastopen_connect_bit & 7)) != 0
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, v6: bool, sendmsg: bool) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let protocol = if sa.protocol != 0 {
        sa.protocol as u8
    } else if sa.type_ == SOCK_STREAM {
        PROTO_TCP
    } else {
        PROTO_UDP
    };
    let (dest, as_v4) = destination(
        v6,
        sa.user_ip4,
        sa.user_ip6,
        u16::from_be(sa.user_port as u16),
        protocol,
    );

    let proc = current_process(tgid);
    let start_ns = proc.start_ns;
    let cfg = config();
    let slot = cfg.active_slot & 1;
    // The table of the process's group; its meta carries the slot's generation.
    let table = process_table(slot, proc.namespace_id);
    let meta = slot_meta(table);
    // Safety net of the switch (userspace reseeds every process before it flips): bits
    // computed for another rule set than the one in force.
    let gen = if slot == 0 {
        proc.slot_gen[0]
    } else {
        proc.slot_gen[1]
    };
    if gen != meta.generation && meta.hook_connect | meta.hook_egress != 0 {
        count(COUNTER_STALE_PROCESS);
    }
    let candidates = proc.selectors[slot as usize] & meta.hook_connect;
    let mut blocked = false;
    let truth = dest_truth(table, &meta, &dest, as_v4);
    if candidates != 0 {
        let mut c = ConnectLoop {
            candidates,
            truth,
            cgroup_id,
            start_ns,
            dest,
            slot: table,
            tgid,
            blocked: 0,
            _pad: 0,
        };
        unsafe {
            bpf_loop(
                MAX_SELECTORS as u32,
                connect_step as *mut core::ffi::c_void,
                (&mut c as *mut ConnectLoop).cast(),
                0,
            )
        };
        blocked = c.blocked != 0;
    }
    if dest.protocol == PROTO_TCP && !sendmsg && !blocked {
        blocked = watch_connect(ctx, &cfg, &proc, tgid, cgroup_id, &dest, as_v4);
    }
    let ev = ConnectEvent {
        header: header(EVENT_CONNECT, tgid, start_ns),
        cgroup_id,
        dest,
        blocked: blocked as u8,
        _pad: [0; 3],
    };
    emit(&ev);
    if blocked {
        0
    } else {
        1
    }
}

/// A TCP connect: gives the socket [`SockState`] when some egress selector of the active (or,
/// during a switch, the pending) slot watches its destination, and drops stale state of an
/// earlier connect otherwise. TCP Fast Open on a watched socket is refused (returns true) for
/// a process in scope of an enforce-mode egress Block, reported for monitor-mode ones, and
/// otherwise marks the stream's start as unseen (it counts as plaintext for later senders).
#[inline(always)]
fn watch_connect(
    ctx: &SockAddrContext,
    cfg: &Config,
    proc: &ProcessState,
    tgid: u32,
    cgroup_id: u64,
    dest: &Destination,
    v4: bool,
) -> bool {
    let slot = cfg.active_slot & 1;
    // Watched when the destination meets some egress selector of any group (the watch table).
    let watch = egress_dest_selectors(watch_table(slot), dest, v4);
    let pending_watch = if cfg.pending_slot != NO_SLOT && (cfg.pending_slot & 1) != slot {
        egress_dest_selectors(watch_table(cfg.pending_slot & 1), dest, v4)
    } else {
        0
    };
    let sk = unsafe { (*ctx.sock_addr).__bindgen_anon_1.sk };
    if watch == 0 && pending_watch == 0 {
        if sock_state(sk).is_some() {
            unsafe { bpf_sk_storage_delete(sk_storage_ptr(), sk.cast()) };
        }
        return false;
    }
    let Some(init) = SOCK_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let init = unsafe { &mut *init };
    *init = SockState::new(tgid, proc.start_ns);
    if uses_fast_open(sk) {
        // The connecting process's own egress selectors, in its group's table.
        let table = process_table(slot, proc.namespace_id);
        let mut m = EgressLoop {
            selectors: proc.selectors[slot as usize] & egress_dest_selectors(table, dest, v4),
            reported: 0,
            cgroup_id,
            start_ns: proc.start_ns,
            dest: *dest,
            slot: table,
            tgid,
            verdict: ENC_PLAINTEXT as u32,
            reason: REASON_TCP_FAST_OPEN as u32,
            drop: 0,
            first: 0,
            hook: HOOK_EGRESS as u32,
            _pad: 0,
        };
        m.run();
        if m.drop != 0 {
            count(COUNTER_TFO_REFUSED);
            return true;
        }
        init.unseen = REASON_TCP_FAST_OPEN;
    }
    let st = unsafe { SK_STORAGE.get_or_insert_ptr_mut(ctx, Some(init)) };
    if !st.is_null() {
        // A socket connected before (and failed) may hold state of its earlier destination.
        unsafe { *st = *init };
    }
    false
}
