//! Connection observation: every TCP connection on the node, whatever socket a policy watches.
//! - `bulwark_conn_sockops` (sock_ops, a second program on the root cgroup next to
//!   `bulwark_sockops`): gives a listening socket (at `listen()`) and a connecting one (at
//!   `connect()`, both in the calling process) their [`ConnState`] with the owner's tgid; at
//!   established (active or passive) records the ends, where each direction's stream starts
//!   and the byte counters' baselines, and asks for state callbacks (no record: a connection
//!   costs the ring buffer one record, its close, plus what it moves); at the move to
//!   TCP_CLOSE (orderly, reset, timeout, time-wait) sends the close record with the exact
//!   payload totals. A connection accepted on a listener inherits the listener's state
//!   (`BPF_F_CLONE`), so a server connection's owner is the process that called `listen()`:
//!   no hook runs at `accept()` (no kprobes), and the listener's owner is the workload that
//!   exposes the service.
//! - `bulwark_conn_egress` / `bulwark_conn_ingress` (cgroup_skb): the first payload of each
//!   direction (the packet whose sequence number is the stream's start) is copied, up to
//!   [`CONN_PREFIX_LEN`] bytes, into a payload record; and, at most once per stats interval
//!   while packets flow, a stats record with the totals so far (an idle connection has no
//!   packets and sends nothing). After both first payloads, a packet costs one socket-storage
//!   lookup and a read of the coarse clock (the last tick's time: no TSC read per packet).

use aya_ebpf::{
    bindings::{
        __sk_buff, bpf_sock_ops, BPF_F_CLONE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE,
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB,
        BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::generated::{
        bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns, bpf_sk_fullsock,
        bpf_sk_storage_get, bpf_skb_load_bytes, bpf_tcp_sock,
    },
    macros::{btf_map, cgroup_skb, sock_ops},
    programs::{SkBuffContext, SockOpsContext},
};
use daemon_common::*;

use crate::backstop::{parse, Packet};
use crate::maps::*;
use crate::net::*;

/// The load-time settings (`EbpfLoader::set_global("CONN_CONFIG", ..)`).
#[unsafe(no_mangle)]
pub static CONN_CONFIG: ConnConfig = ConnConfig {
    sock_flags: 0,
    sock_done_bit: 0,
    stats_interval_ns: 0,
};

#[inline(always)]
fn conn_config() -> ConnConfig {
    unsafe { core::ptr::read_volatile(&CONN_CONFIG) }
}

/// Socket storage that a new connection inherits from its listener (`BPF_F_CLONE`; aya's
/// `SkStorage` has fixed flags). Same BTF layout as aya's BTF map definitions.
#[repr(C)]
pub struct CloneSkStorage<T> {
    r#type: *const [i32; aya_ebpf::bindings::bpf_map_type::BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const T,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

unsafe impl<T> Sync for CloneSkStorage<T> {}

/// Per-connection state of every observed TCP socket (and of listening sockets).
#[btf_map]
pub static CONN_STORAGE: CloneSkStorage<ConnState> = CloneSkStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

#[inline(always)]
fn conn_storage_ptr() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&CONN_STORAGE).cast_mut().cast()
}

/// The connection state of `sk`; with `create`, a zeroed one is made when it has none.
#[inline(always)]
fn conn_state<T>(sk: *mut T, create: bool) -> Option<&'static mut ConnState> {
    let flags = if create {
        BPF_SK_STORAGE_GET_F_CREATE as u64
    } else {
        0
    };
    let st =
        unsafe { bpf_sk_storage_get(conn_storage_ptr(), sk.cast(), core::ptr::null_mut(), flags) }
            as *mut ConnState;
    if st.is_null() {
        None
    } else {
        Some(unsafe { &mut *st })
    }
}

const TCP_FIN_WAIT1: u32 = 4;
const TCP_FIN_WAIT2: u32 = 5;
const TCP_CLOSE: u32 = 7;
const TCP_LAST_ACK: u32 = 9;
const TCP_CLOSING: u32 = 11;

/// The owner of the calling process context: tgid and identity.
#[inline(always)]
fn current_owner(st: &mut ConnState) {
    let tgid = (bpf_pid_tgid() >> 32) as u32;
    st.tgid = tgid;
    st.start_ns = match unsafe { PROCESSES.get(&tgid) } {
        Some(p) => p.start_ns,
        None => 0,
    };
}

/// Local and remote end of the socket of a sock_ops call.
#[inline(always)]
fn ends(ops: *mut bpf_sock_ops) -> (Destination, Destination) {
    let (family, lip4, lip6, lport, rip4, rip6, rport) = unsafe {
        (
            (*ops).family,
            (*ops).local_ip4,
            (*ops).local_ip6,
            (*ops).local_port,
            (*ops).remote_ip4,
            (*ops).remote_ip6,
            (*ops).remote_port,
        )
    };
    let v6 = family as u8 == AF_INET6;
    let (local, _) = destination(v6, lip4, lip6, lport as u16, PROTO_TCP);
    let (remote, _) = destination(
        v6,
        rip4,
        rip6,
        u16::from_be((rport >> 16) as u16),
        PROTO_TCP,
    );
    (local, remote)
}

#[inline(always)]
fn conn_record(kind: u32, st: &ConnState, sent: u64, received: u64) -> ConnEvent {
    ConnEvent {
        header: header(kind, st.tgid, st.start_ns),
        cookie: st.cookie,
        open_ns: st.open_ns,
        bytes_sent: sent,
        bytes_received: received,
        local: st.local,
        remote: st.remote,
        role: st.role,
        flags: 0,
        _pad: [0; 6],
    }
}

#[sock_ops]
pub fn bulwark_conn_sockops(ctx: SockOpsContext) -> u32 {
    let ops = ctx.ops;
    let sk = unsafe { (*ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return 1;
    }
    match ctx.op() {
        BPF_SOCK_OPS_TCP_LISTEN_CB => {
            if let Some(st) = conn_state(sk, true) {
                current_owner(st);
                st.role = CONN_ROLE_LISTENER;
            }
        }
        BPF_SOCK_OPS_TCP_CONNECT_CB => {
            if let Some(st) = conn_state(sk, true) {
                current_owner(st);
                st.role = CONN_ROLE_CLIENT;
            }
        }
        op @ (BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) => {
            established(&ctx, ops, sk, op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
        }
        BPF_SOCK_OPS_STATE_CB => state_change(&ctx, ops, sk),
        _ => {}
    }
    1
}

#[inline(always)]
fn established<T>(ctx: &SockOpsContext, ops: *mut bpf_sock_ops, sk: *mut T, active: bool) {
    // A client made its state at connect; a server connection cloned its listener's (or has
    // none: a listener from before the daemon, whose owner is unknown).
    let Some(st) = conn_state(sk, true) else {
        count(COUNTER_CONN_NO_STATE);
        return;
    };
    if st.established != 0 {
        return;
    }
    if active {
        st.role = CONN_ROLE_CLIENT;
    } else {
        st.role = CONN_ROLE_SERVER;
    }
    let (acked, received, snd_nxt, rcv_nxt) = unsafe {
        (
            (*ops).bytes_acked,
            (*ops).bytes_received,
            (*ops).snd_nxt,
            (*ops).rcv_nxt,
        )
    };
    st.cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
    st.open_ns = unsafe { bpf_ktime_get_boot_ns() };
    st.base_acked = acked;
    st.base_received = received;
    st.snd_start = snd_nxt;
    st.rcv_start = rcv_nxt;
    st.next_stats_ns = stats_deadline(
        unsafe { bpf_ktime_get_coarse_ns() },
        conn_config().stats_interval_ns,
    );
    st.sent_seen = 0;
    st.received_seen = 0;
    st.fin_sent = 0;
    st.fin_acked = 0;
    st.closed = 0;
    (st.local, st.remote) = ends(ops);
    st.established = 1;
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// Whether a FIN was received on `sk` (`SOCK_DONE`, set only by the FIN's processing).
#[inline(always)]
fn fin_received<T>(sk: *mut T) -> bool {
    let cfg = conn_config();
    if cfg.sock_flags == 0 {
        return false;
    }
    // The verifier refuses arithmetic on a socket pointer: read its address as a plain number
    // (copied from the stack by a helper), then the flags at an offset from it.
    let ptr = sk as u64;
    let mut addr = 0u64;
    unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&mut addr as *mut u64).cast(),
            8,
            (&ptr as *const u64).cast(),
        )
    };
    let flags: u64 = read_kernel(addr, cfg.sock_flags);
    flags & (1u64 << (cfg.sock_done_bit & 63)) != 0
}

#[inline(always)]
fn state_change<T>(ctx: &SockOpsContext, ops: *mut bpf_sock_ops, sk: *mut T) {
    let Some(st) = conn_state(sk, false) else {
        return;
    };
    if st.established == 0 || st.closed != 0 {
        return;
    }
    let (old, new) = (ctx.arg(0), ctx.arg(1));
    match new {
        TCP_FIN_WAIT1 | TCP_LAST_ACK => st.fin_sent = 1,
        TCP_FIN_WAIT2 if old == TCP_FIN_WAIT1 => st.fin_acked = 1,
        TCP_CLOSE => {
            let (acked, received, una, nxt) = unsafe {
                (
                    (*ops).bytes_acked,
                    (*ops).bytes_received,
                    (*ops).snd_una,
                    (*ops).snd_nxt,
                )
            };
            // LAST_ACK / CLOSING end when our FIN is acked, or with a reset or a timeout:
            // acked means nothing is outstanding.
            if st.fin_sent != 0 && (old == TCP_LAST_ACK || old == TCP_CLOSING) && una == nxt {
                st.fin_acked = 1;
            }
            let fin_in = fin_received(sk);
            let sent = acked
                .wrapping_sub(st.base_acked)
                .saturating_sub(st.fin_acked as u64);
            let received = received
                .wrapping_sub(st.base_received)
                .saturating_sub(fin_in as u64);
            st.closed = 1;
            let orderly = st.fin_acked != 0 && (fin_in || old == TCP_FIN_WAIT2);
            let mut ev = conn_record(EVENT_CONN_CLOSE, st, sent, received);
            ev.flags = if orderly { 0 } else { CONN_CLOSE_ABORTED };
            emit(&ev);
        }
        _ => {}
    }
}

/// One packet of an observed connection, in direction `sent` (egress) or received.
#[inline(always)]
fn observe(ctx: &SkBuffContext, sent: bool) -> i32 {
    let skb = ctx.skb.skb;
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return 1;
    }
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return 1;
    }
    let Some(st) = conn_state(sk, false) else {
        return 1;
    };
    if !sent && st.role == CONN_ROLE_LISTENER {
        // Handshake packets reach the listener; one with data (a Fast Open SYN, or data on the
        // handshake's last ACK) is the connection's first payload.
        return if crate::ingress::listener_payload(skb, st) {
            0
        } else {
            1
        };
    }
    if st.established == 0 || st.closed != 0 {
        return 1;
    }
    let seen = if sent { st.sent_seen } else { st.received_seen };
    if seen == 0 {
        if !sent && crate::ingress::first_payload(skb, sk, st) {
            return 0;
        }
        capture(skb, st, sent);
    }
    let interval = conn_config().stats_interval_ns;
    if interval != 0 {
        let now = unsafe { bpf_ktime_get_coarse_ns() };
        if now >= st.next_stats_ns {
            st.next_stats_ns = stats_deadline(now, interval);
            stats(sk, st);
        }
    }
    1
}

/// Slack added to a stats deadline for the coarse clock's lag behind the precise one: at most
/// one tick, 10 ms at the smallest `HZ` (100).
const COARSE_CLOCK_SLACK_NS: u64 = 10_000_000;

/// When the next stats record may be sent, on the coarse monotonic clock (`now` read from it):
/// `interval` later plus [`COARSE_CLOCK_SLACK_NS`]. Every packet compares against it, and the
/// coarse clock is a plain read of the last tick's time where the precise one reads the TSC;
/// the slack keeps every window at least `interval` long on the precise boot clock its ends
/// are read from.
#[inline(always)]
fn stats_deadline(now: u64, interval: u64) -> u64 {
    now.wrapping_add(interval)
        .wrapping_add(COARSE_CLOCK_SLACK_NS)
}

/// The totals so far of a connection that moved packets in this interval.
#[inline(never)]
fn stats(sk: *mut aya_ebpf::bindings::bpf_sock, st: &ConnState) {
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return;
    }
    let (acked, received) = unsafe { ((*tp).bytes_acked, (*tp).bytes_received) };
    let ev = conn_record(
        EVENT_CONN_STATS,
        st,
        acked.wrapping_sub(st.base_acked),
        received.wrapping_sub(st.base_received),
    );
    emit(&ev);
}

/// Copies the first payload of the direction when this packet starts it.
#[inline(never)]
fn capture(skb: *mut __sk_buff, st: &mut ConnState, sent: bool) {
    let mut p = Packet::default();
    if !parse(skb, &mut p) || p.payload == 0 || p.syn {
        return;
    }
    let start = if sent { st.snd_start } else { st.rcv_start };
    if p.seq != start {
        // Sends leave in order, so a later one without the first means the first was missed
        // (Fast Open data in the SYN); received segments may come out of order: wait for it.
        if sent && (p.seq.wrapping_sub(start) as i32) > 0 {
            st.sent_seen = 1;
        }
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<ConnPayloadEvent>(0) else {
        count(COUNTER_LOST_EVENTS);
        return;
    };
    let len = unsafe { (*skb).len };
    let offset = len - p.payload;
    let n = if p.payload > CONN_PREFIX_LEN as u32 {
        CONN_PREFIX_LEN as u32
    } else {
        p.payload
    };
    // 1..=CONN_PREFIX_LEN in a form the verifier bounds.
    let n = ((n - 1) & (CONN_PREFIX_LEN as u32 - 1)) + 1;
    let ev = entry.as_mut_ptr();
    unsafe {
        (*ev).header = header(EVENT_CONN_PAYLOAD, st.tgid, st.start_ns);
        (*ev).cookie = st.cookie;
        (*ev).direction = if sent {
            CONN_DIR_SENT
        } else {
            CONN_DIR_RECEIVED
        };
        (*ev).len = n;
        if bpf_skb_load_bytes(
            skb.cast(),
            offset,
            core::ptr::addr_of_mut!((*ev).data).cast(),
            n,
        ) != 0
        {
            entry.discard(0);
            return;
        }
    }
    // No wakeup per record (like `emit`): the reader's poll collects them in batches.
    entry.submit(wakeup_flags());
    if sent {
        st.sent_seen = 1;
    } else {
        st.received_seen = 1;
    }
}

#[cgroup_skb(egress)]
pub fn bulwark_conn_egress(ctx: SkBuffContext) -> i32 {
    observe(&ctx, true)
}

#[cgroup_skb(ingress)]
pub fn bulwark_conn_ingress(ctx: SkBuffContext) -> i32 {
    observe(&ctx, false)
}
