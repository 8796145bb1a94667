//! Connection-level programs and what the egress programs share: cgroup connect4/6 and
//! sendmsg4/6 (destination selectors, Block -> EPERM; TCP Fast Open refused for processes in
//! scope of an enforce-mode egress rule), sock_ops (records where a watched stream starts and
//! puts the socket into the SOCKHASH), and the evaluation helpers: destination conditions, the
//! sending process's selectors, which egress selectors watch a socket, and the egress match
//! loop. A TCP socket is *watched* (has [`SockState`]) when its destination meets the
//! destination conditions of some egress selector, whoever connected it: the process that
//! sends decides, at every send (`egress.rs`), and the wire-level backstop (`backstop.rs`)
//! refuses payload that never went through that decision.

use aya_ebpf::{
    bindings::{sk_action, BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_socket_cookie, bpf_loop, bpf_probe_read_kernel, bpf_sk_storage_delete,
        bpf_sk_storage_get, bpf_sock_hash_update,
    },
    macros::{cgroup_sock_addr, sock_ops},
    maps::lpm_trie::Key,
    programs::{SockAddrContext, SockOpsContext},
};
use daemon_common::*;

use crate::maps::*;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;
const SOCK_STREAM: u32 = 1;
const E2BIG: i64 = 7;
const ENOMEM: i64 = 12;

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

/// A destination from the address words the kernel hands programs (network order, as read);
/// an IPv4-mapped IPv6 address (::ffff:a.b.c.d) becomes IPv4. Returns it and whether it is
/// IPv4.
#[inline(always)]
pub fn destination(
    v6: bool,
    ip4: u32,
    ip6: [u32; 4],
    port: u16,
    protocol: u8,
) -> (Destination, bool) {
    let mut dest = Destination {
        addr: [0; 16],
        port,
        family: if v6 { AF_INET6 } else { AF_INET },
        protocol,
    };
    if !v6 {
        dest.addr[..4].copy_from_slice(&ip4.to_ne_bytes());
        return (dest, true);
    }
    for (i, word) in ip6.iter().enumerate() {
        dest.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
    }
    if dest.addr[..10].iter().all(|b| *b == 0) && dest.addr[10] == 0xff && dest.addr[11] == 0xff {
        let v4 = [dest.addr[12], dest.addr[13], dest.addr[14], dest.addr[15]];
        dest.addr = [0; 16];
        dest.addr[..4].copy_from_slice(&v4);
        dest.family = AF_INET;
        return (dest, true);
    }
    (dest, false)
}

/// Which destination conditions hold for `dest` in `slot`.
#[inline(always)]
pub fn dest_truth(slot: u32, meta: &SlotMeta, dest: &Destination, v4: bool) -> u64 {
    let slot8 = slot as u8;
    let mut addr_hits = 0u64;
    if v4 {
        let key = Key::new(
            8 + 32,
            V4LpmData {
                slot: slot8,
                addr: [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]],
            },
        );
        if let Some(h) = DEST_V4.get(&key) {
            addr_hits = *h;
        }
    } else {
        let key = Key::new(
            8 + 128,
            V6LpmData {
                slot: slot8,
                addr: dest.addr,
            },
        );
        if let Some(h) = DEST_V6.get(&key) {
            addr_hits = *h;
        }
    }
    let pkey = Key::new(
        8 + 16,
        PortLpmData {
            slot: slot8,
            port: dest.port.to_be_bytes(),
        },
    );
    let port_hits = match PORTS.get(&pkey) {
        Some(h) => *h,
        None => 0,
    };
    let proto = match dest.protocol {
        PROTO_TCP => meta.dest_tcp,
        PROTO_UDP => meta.dest_udp,
        // Other protocols (e.g. ICMP ping sockets) meet only the conditions without a protocol.
        _ => meta.dest_tcp & meta.dest_udp,
    };
    let matched = (addr_hits | meta.dest_any_addr) & (port_hits | meta.dest_any_port) & proto;
    matched ^ meta.dest_negate
}

/// State of [`dest_selectors_step`].
#[repr(C)]
struct DestSelLoop {
    slot: u32,
    _pad: u32,
    candidates: u64,
    truth: u64,
    out: u64,
}

#[inline(never)]
extern "C" fn dest_selectors_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut DestSelLoop) };
    let i = (index & 63) as u32;
    if c.candidates & (1u64 << i) == 0 {
        return 0;
    }
    if let Some(sel) = selector(c.slot, i) {
        if sel.dest_required & !c.truth == 0 {
            c.out |= 1u64 << i;
        }
    }
    0
}

/// Egress selectors of `slot` whose destination conditions hold for `dest`: a socket to `dest`
/// is watched when this is not 0 (whoever connected it).
#[inline(always)]
pub fn egress_dest_selectors(slot: u32, dest: &Destination, v4: bool) -> u64 {
    let meta = slot_meta(slot);
    if meta.hook_egress == 0 {
        return 0;
    }
    let mut c = DestSelLoop {
        slot,
        _pad: 0,
        candidates: meta.hook_egress,
        truth: dest_truth(slot, &meta, dest, v4),
        out: 0,
    };
    unsafe {
        bpf_loop(
            MAX_SELECTORS as u32,
            dest_selectors_step as *mut core::ffi::c_void,
            (&mut c as *mut DestSelLoop).cast(),
            0,
        )
    };
    c.out
}

/// Brings a socket's cached destination selectors up to the rule set in force (generation
/// `cfg.generation`, active slot), forgetting what was reported under the old one.
#[inline(always)]
pub fn refresh_socket(st: &mut SockState, cfg: &Config, dest: &Destination, v4: bool) {
    if st.generation == cfg.generation {
        return;
    }
    st.dest_selectors = egress_dest_selectors(cfg.active_slot & 1, dest, v4);
    st.reported = 0;
    st.generation = cfg.generation;
}

/// The calling process's cached state: its own entry, or, when it has none (a fork whose
/// state could not be stored), its parent's.
#[inline(always)]
pub fn current_process(tgid: u32) -> ProcessState {
    if let Some(p) = unsafe { PROCESSES.get(&tgid) } {
        return *p;
    }
    let off = offsets();
    let task = unsafe { bpf_get_current_task() };
    let parent: u64 = read_kernel(task, off.task_real_parent);
    let ppid: u32 = read_kernel(parent, off.task_tgid);
    if ppid != 0 {
        if let Some(p) = unsafe { PROCESSES.get(&ppid) } {
            return *p;
        }
    }
    ProcessState::default()
}

/// What an egress match is about (the payload verdict, or why it was not seen).
#[repr(C)]
pub struct EgressLoop {
    /// Candidate selectors (egress, destination holds, process holds where known).
    pub selectors: u64,
    /// In: selectors already reported on this socket; out: plus the ones reported now.
    pub reported: u64,
    pub cgroup_id: u64,
    pub start_ns: u64,
    pub dest: Destination,
    pub slot: u32,
    pub tgid: u32,
    /// The verdict the selectors are matched against (`ENC_PENDING`: a valid hello prefix).
    pub verdict: u32,
    /// `REASON_*` for the events.
    pub reason: u32,
    /// Out: an enforce-mode Block selector matched.
    pub drop: u32,
    /// Out: first enforce-mode Block selector that matched (valid when `drop`).
    pub first: u32,
}

impl EgressLoop {
    /// Reports the matches in `selectors` (monitor and Post ones once per socket) and says
    /// whether one of them blocks.
    #[inline(always)]
    pub fn run(&mut self) {
        if self.selectors == 0 {
            return;
        }
        unsafe {
            bpf_loop(
                MAX_SELECTORS as u32,
                egress_step as *mut core::ffi::c_void,
                (self as *mut EgressLoop).cast(),
                0,
            )
        };
    }
}

/// Whether a selector with matchEncryption `encryption` matches a stream whose verdict so far
/// is `verdict`, and the encryption the event then reports. A selector without matchEncryption
/// matches any payload; `plaintext` needs the plaintext verdict; `tls` matches a TLS verdict
/// and a stream that is still a valid ClientHello prefix (blocking "TLS" fails closed).
#[inline(always)]
pub fn encryption_match(encryption: u8, verdict: u8) -> Option<u8> {
    match encryption {
        ENC_ANY => Some(verdict),
        ENC_PLAINTEXT => (verdict == ENC_PLAINTEXT).then_some(ENC_PLAINTEXT),
        ENC_TLS => (verdict == ENC_TLS || verdict == ENC_PENDING).then_some(ENC_TLS),
        _ => None,
    }
}

#[inline(never)]
extern "C" fn egress_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut EgressLoop) };
    let i = (index & 63) as u32;
    let bit = 1u64 << i;
    if c.selectors & bit == 0 {
        return 0;
    }
    let Some(sel) = selector(c.slot, i) else {
        return 0;
    };
    let Some(encryption) = encryption_match(sel.encryption, c.verdict as u8) else {
        return 0;
    };
    let enforced = sel.mode == MODE_ENFORCE && sel.actions & ACTION_BLOCK != 0;
    if enforced {
        if c.drop == 0 {
            c.first = i;
        }
        c.drop = 1;
    } else if c.reported & bit != 0 {
        return 0;
    }
    c.reported |= bit;
    let m = MatchEvent {
        header: header(EVENT_MATCH, c.tgid, c.start_ns),
        slot: c.slot as u8,
        selector: i as u8,
        hook: HOOK_EGRESS,
        actions: sel.actions,
        enforced: enforced as u8,
        encryption: if c.reason == REASON_NONE as u32 {
            encryption
        } else {
            ENC_PENDING
        },
        reason: c.reason as u8,
        _pad: 0,
        cgroup_id: c.cgroup_id,
        dest: c.dest,
        _pad2: [0; 4],
    };
    emit_now(&m);
    0
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
        _pad2: [0; 4],
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
    let meta = slot_meta(slot);
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
    let truth = dest_truth(slot, &meta, &dest, as_v4);
    if candidates != 0 {
        let mut c = ConnectLoop {
            candidates,
            truth,
            cgroup_id,
            start_ns,
            dest,
            slot,
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
    let watch = egress_dest_selectors(slot, dest, v4);
    let pending_watch = if cfg.pending_slot != NO_SLOT && (cfg.pending_slot & 1) != slot {
        egress_dest_selectors(cfg.pending_slot & 1, dest, v4)
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
        let mut m = EgressLoop {
            selectors: proc.selectors[slot as usize] & watch,
            reported: 0,
            cgroup_id,
            start_ns: proc.start_ns,
            dest: *dest,
            slot,
            tgid,
            verdict: ENC_PLAINTEXT as u32,
            reason: REASON_TCP_FAST_OPEN as u32,
            drop: 0,
            first: 0,
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

/// Actively established TCP sockets: a watched one (or one connect did not see, e.g. an MPTCP
/// subflow, whose destination is watched) records where its stream starts and enters the
/// SOCKHASH; sockets no egress selector watches never pay the sk_msg cost.
#[sock_ops]
pub fn bulwark_sockops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    let ops = ctx.ops;
    let sk = unsafe { (*ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return 1;
    }
    let mut st = sock_state(sk).map_or(core::ptr::null_mut(), |s| s as *mut SockState);
    if st.is_null() {
        let (family, ip4, ip6, port) = unsafe {
            (
                (*ops).family,
                (*ops).remote_ip4,
                (*ops).remote_ip6,
                (*ops).remote_port,
            )
        };
        let (dest, v4) = destination(
            family as u8 == AF_INET6,
            ip4,
            ip6,
            u16::from_be((port >> 16) as u16),
            PROTO_TCP,
        );
        let cfg = config();
        if egress_dest_selectors(cfg.active_slot & 1, &dest, v4) == 0 {
            return 1;
        }
        let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
        let mut init = SockState::new(tgid, 0);
        st = unsafe {
            bpf_sk_storage_get(
                sk_storage_ptr(),
                sk.cast(),
                (&mut init as *mut SockState).cast(),
                aya_ebpf::bindings::BPF_SK_STORAGE_GET_F_CREATE as u64,
            )
        } as *mut SockState;
        if st.is_null() {
            return 1;
        }
    }
    let st = unsafe { &mut *st };
    st.stream_start = unsafe { (*ops).snd_nxt };
    st.start_known = 1;
    let mut cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
    st.cookie = cookie;
    let r = unsafe {
        bpf_sock_hash_update(
            ops,
            core::ptr::from_ref(&SOCKHASH).cast_mut().cast(),
            (&mut cookie as *mut u64).cast(),
            BPF_NOEXIST as u64,
        )
    };
    if r == 0 {
        count(COUNTER_SOCKHASH_ADDED);
    } else {
        // Not watched by sk_msg: the backstop refuses its payload (fail closed).
        count(COUNTER_SOCKHASH_ADD_FAILED);
        if r == -E2BIG || r == -ENOMEM {
            count(COUNTER_SOCKHASH_FULL);
        }
    }
    1
}

/// sk_msg verdicts (`aya_ebpf::bindings::sk_action`), re-exported for the egress program.
pub const SK_PASS: u32 = sk_action::SK_PASS;
pub const SK_DROP: u32 = sk_action::SK_DROP;
