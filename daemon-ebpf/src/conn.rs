//! Connection observation: every TCP connection on the node, whatever socket a policy watches.
//! - [`sock_ops`], observation's half of the one sock_ops program (`bulwark_sockops`,
//!   sockops.rs; skipped with `--no-conn-observe`): gives a listening socket (at `listen()`)
//!   and a connecting one (at `connect()`, both in the calling process) their [`ConnState`] with
//!   the owner's tgid; at established (active or passive) records the ends, where each
//!   direction's stream starts and the byte counters' baselines, and asks for state callbacks
//!   (no record: a connection costs the ring buffer one record, its close, plus what it moves);
//!   at the move to TCP_CLOSE (orderly, reset, timeout, time-wait) — the only state change it
//!   looks at: how the connection ended follows from the state it left, read then — sends the
//!   close record with the exact payload totals. A connection accepted on a listener inherits
//!   the listener's state (`BPF_F_CLONE`), so a server connection's owner is the process that
//!   called `listen()`: no hook runs at `accept()` (no kprobes), and the listener's owner is the
//!   workload that exposes the service.
//! - `bulwark_conn_egress` / `bulwark_conn_ingress` (cgroup_skb): the first payload of each
//!   direction (the packet whose sequence number is the stream's start) is copied, up to
//!   [`CONN_PREFIX_LEN`] bytes, into a payload record; and, at most once per stats interval
//!   while packets flow, a stats record with the totals so far (an idle connection has no
//!   packets and sends nothing). Before that, a packet without payload costs no parse (sent:
//!   the socket's `data_segs_out` is still 0; received: its linear headers fill its length).
//!   After both first payloads, a packet costs one socket-storage lookup and a read of the
//!   coarse clock (the last tick's time: no TSC read per packet).
//! - A payload that reaches the *listener* (Fast Open data in the SYN, data on the ACK that
//!   completes the handshake) is the first payload of a connection that does not exist yet:
//!   its copy waits in `LISTENER_PAYLOADS` (keyed by both ends and its first sequence number)
//!   until the connection it creates is established — right after, in the same softirq — and
//!   is sent as that connection's received payload.

use aya_ebpf::{
    bindings::{
        __sk_buff, bpf_sock_ops, BPF_F_CLONE, BPF_F_NO_PREALLOC, BPF_SK_STORAGE_GET_F_CREATE,
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB_FLAG, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::generated::{
        bpf_get_socket_cookie, bpf_ktime_get_boot_ns, bpf_ktime_get_coarse_ns, bpf_sk_fullsock,
        bpf_sk_storage_get, bpf_skb_load_bytes, bpf_tcp_sock,
    },
    macros::{btf_map, cgroup_skb, map},
    maps::{LruHashMap, PerCpuArray},
    programs::{SkBuffContext, SockOpsContext},
};
use daemon_common::*;

use crate::backstop::{parse, Packet, ETH_P_IP, ETH_P_IPV6};
use crate::maps::*;
use crate::net::*;

/// The load-time settings (`EbpfLoader::set_global("CONN_CONFIG", ..)`).
#[unsafe(no_mangle)]
pub static CONN_CONFIG: ConnConfig = ConnConfig {
    sock_flags: 0,
    sock_done_bit: 0,
    stats_interval_ns: 0,
    observe: 0,
    _pad: 0,
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

/// Listener payloads waiting for their connection: a handful at a time (each is taken right
/// after it is put); an entry whose connection never comes (the SYN's data not accepted, the
/// handshake not completed) is evicted.
const LISTENER_PAYLOADS_MAX: u32 = 256;

/// Which connection a payload that reached a listener belongs to: both ends (as the
/// connection's [`ConnState`] records them), the sequence number of its first byte (the
/// connection's `rcv_start`) and whether it came in a SYN. The connection is established by
/// the packet that carried its data (a Fast Open SYN whose data the server accepts, the
/// handshake's last ACK), so a SYN's data the server did not accept is not taken for the
/// connection's: that connection is established by an ACK, and the client sends the data again.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ListenerPayloadKey {
    local: Destination,
    remote: Destination,
    seq: u32,
    syn: u32,
}

/// The SYN bit of `bpf_sock_ops::skb_tcp_flags`.
const TCP_FLAG_SYN: u32 = 0x02;

#[map]
static LISTENER_PAYLOADS: LruHashMap<ListenerPayloadKey, ConnPayloadEvent> =
    LruHashMap::with_max_entries(LISTENER_PAYLOADS_MAX, 0);

/// Per-CPU room for a listener payload's copy (too big for the stack).
#[map]
static LISTENER_SCRATCH: PerCpuArray<ConnPayloadEvent> = PerCpuArray::with_max_entries(1, 0);

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

/// Observation's part of the sock_ops program for callback `op` (listen, connect, active and
/// passive established; the move to TCP_CLOSE is [`closed`]). Nothing with `--no-conn-observe`.
#[inline(always)]
pub(crate) fn sock_ops(ctx: &SockOpsContext, op: u32) {
    if conn_config().observe == 0 {
        return;
    }
    let ops = ctx.ops;
    let sk = unsafe { (*ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    match op {
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
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => {
            established(ctx, ops, sk, op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
        }
        _ => {}
    }
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
    let (acked, received, snd_una, snd_nxt, rcv_nxt) = unsafe {
        (
            (*ops).bytes_acked,
            (*ops).bytes_received,
            (*ops).snd_una,
            (*ops).snd_nxt,
            (*ops).rcv_nxt,
        )
    };
    st.cookie = unsafe { bpf_get_socket_cookie(ops.cast()) };
    st.open_ns = unsafe { bpf_ktime_get_boot_ns() };
    if active && st.sent_seen != 0 {
        // A Fast Open SYN's data (captured, `snd_start` its first byte): the SYN-ACK has
        // acked the SYN and whatever of the data the server took, and only the SYN is not
        // payload.
        st.base_acked = acked.wrapping_sub(snd_una.wrapping_sub(st.snd_start) as u64);
    } else {
        st.base_acked = acked;
        st.snd_start = snd_nxt;
    }
    st.base_received = received;
    st.rcv_start = rcv_nxt;
    st.next_stats_ns = stats_deadline(
        unsafe { bpf_ktime_get_coarse_ns() },
        conn_config().stats_interval_ns,
    );
    // A client's Fast Open SYN may have been captured already (`sent_seen`); otherwise the
    // state is as made (zeroed at connect, or copied from a listener, which captures nothing).
    st.received_seen = 0;
    st.closed = 0;
    (st.local, st.remote) = ends(ops);
    st.established = 1;
    if st.listener_payload != 0 {
        // Copied from a listener that has held a payload for a connection: this one's?
        st.listener_payload = 0;
        let syn = unsafe { (*ops).skb_tcp_flags } & TCP_FLAG_SYN != 0;
        if !active && send_listener_payload(st, syn) {
            st.received_seen = 1;
        }
    }
    let _ = ctx.set_cb_flags((ctx.cb_flags() | BPF_SOCK_OPS_STATE_CB_FLAG) as i32);
}

/// Sends the payload that reached the listener before this (server) connection existed, as
/// the connection's first received payload, when there is one for it (`syn`: the connection
/// was established by a SYN, Fast Open's).
#[inline(never)]
fn send_listener_payload(st: &ConnState, syn: bool) -> bool {
    let key = ListenerPayloadKey {
        local: st.local,
        remote: st.remote,
        seq: st.rcv_start,
        syn: syn as u32,
    };
    let Some(ev) = LISTENER_PAYLOADS.get_ptr_mut(&key) else {
        return false;
    };
    unsafe {
        (*ev).header = header(EVENT_CONN_PAYLOAD, st.tgid, st.start_ns);
        (*ev).cookie = st.cookie;
        emit(&*ev);
    }
    let _ = LISTENER_PAYLOADS.remove(&key);
    true
}

/// Whether a received packet surely carries no TCP payload (a pure ACK, a SYN without data),
/// read from its linear data (direct packet access: no helper call, unlike [`parse`]): its
/// IP and TCP headers fill its length. False when it cannot tell (headers not in the linear
/// part, IPv6 extension headers), and the caller parses.
#[inline(always)]
fn headers_only(skb: *mut __sk_buff) -> bool {
    let (data, end, len, proto) = unsafe {
        use core::ptr::{addr_of, read_volatile as rv};
        (
            rv(addr_of!((*skb).data)) as usize,
            rv(addr_of!((*skb).data_end)) as usize,
            (*skb).len as usize,
            (*skb).protocol,
        )
    };
    // Where the TCP header starts.
    let tcp = match u16::from_be(proto as u16) {
        ETH_P_IP => {
            if data + 20 > end {
                return false;
            }
            let (vihl, protocol) = unsafe { (*(data as *const u8), *((data + 9) as *const u8)) };
            if protocol != PROTO_TCP {
                return false;
            }
            ((vihl & 0x0f) as usize) * 4
        }
        ETH_P_IPV6 => {
            if data + 40 > end {
                return false;
            }
            if unsafe { *((data + 6) as *const u8) } != PROTO_TCP {
                return false;
            }
            40
        }
        _ => return false,
    };
    // The TCP header's data offset (its length in 32-bit words).
    if data + tcp + 13 > end {
        return false;
    }
    let doff = unsafe { *((data + tcp + 12) as *const u8) } >> 4;
    len == tcp + (doff as usize) * 4
}

/// The TCP payload length of a packet (0 when it is not TCP or cannot be parsed). A function
/// of its own so the parser's frame is not stacked on the ingress verdict's.
#[inline(never)]
fn payload_len(skb: *mut __sk_buff) -> u32 {
    let mut p = Packet::default();
    if !parse(skb, &mut p) {
        return 0;
    }
    p.payload
}

/// Copies a payload that reached a listener (`skb`, received) into `LISTENER_PAYLOADS` for
/// the connection it will create; false when the packet carries none.
#[inline(never)]
fn keep_listener_payload(skb: *mut __sk_buff) -> bool {
    let mut p = Packet::default();
    if !parse(skb, &mut p) || p.payload == 0 {
        return false;
    }
    let Some(ev) = LISTENER_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    if !copy_prefix(skb, p.payload, ev) {
        return false;
    }
    unsafe { (*ev).direction = CONN_DIR_RECEIVED };
    // The parser reads the headers as a sender's: `p.local` is the source, the peer. A SYN's
    // data starts one past its sequence number.
    let key = ListenerPayloadKey {
        local: p.remote,
        remote: p.local,
        seq: if p.syn { p.seq.wrapping_add(1) } else { p.seq },
        syn: p.syn as u32,
    };
    LISTENER_PAYLOADS.insert(&key, unsafe { &*ev }, 0).is_ok()
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

/// The move of an observed connection to TCP_CLOSE (the state callback's `args[1]`, checked
/// by the caller): the close record. How the connection ended follows from the state it left
/// (`args[0]`, [`CloseFins::of`]), so the state changes before it need no work.
#[inline(always)]
pub(crate) fn closed(ctx: &SockOpsContext) {
    let ops = ctx.ops;
    let sk = unsafe { (*ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
    }
    let Some(st) = conn_state(sk, false) else {
        return;
    };
    if st.established == 0 || st.closed != 0 {
        return;
    }
    let old = ctx.arg(0);
    let (acked, received, una, nxt) = unsafe {
        (
            (*ops).bytes_acked,
            (*ops).bytes_received,
            (*ops).snd_una,
            (*ops).snd_nxt,
        )
    };
    let end = CloseFins::of(old, una == nxt, || fin_received(sk));
    let sent = acked
        .wrapping_sub(st.base_acked)
        .saturating_sub(end.fin_acked as u64);
    let received = received
        .wrapping_sub(st.base_received)
        .saturating_sub(end.fin_received as u64);
    st.closed = 1;
    let mut ev = conn_record(EVENT_CONN_CLOSE, st, sent, received);
    ev.flags = if end.orderly { 0 } else { CONN_CLOSE_ABORTED };
    emit(&ev);
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
        // handshake's last ACK) is the connection's first payload: judged here, and kept for
        // the connection to report. The rest (nearly all) cost a header parse.
        if headers_only(skb) || payload_len(skb) == 0 {
            return 1;
        }
        if crate::ingress::listener_payload(skb, st) {
            return 0;
        }
        if keep_listener_payload(skb) {
            st.listener_payload = 1;
        }
        return 1;
    }
    if st.established == 0 {
        // A client's SYN that carries data (Fast Open): its first payload, sent before the
        // connection is established (the socket counts the SYN's data segment before this
        // hook runs, so a SYN without data costs no parse).
        if sent && st.role == CONN_ROLE_CLIENT && st.sent_seen == 0 && sent_data(sk) {
            capture(skb, st, true);
        }
        return 1;
    }
    if st.closed != 0 {
        return 1;
    }
    if sent {
        // Until the socket has sent a segment with data (`data_segs_out`, counted before this
        // hook runs) its packets are handshake ACKs and pure ACKs: no parse.
        if st.sent_seen == 0 && sent_data(sk) {
            capture(skb, st, true);
        }
    } else if st.received_seen == 0 {
        if crate::ingress::first_payload(skb, sk, st) {
            return 0;
        }
        if !headers_only(skb) {
            capture(skb, st, false);
        }
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

/// Whether the socket has sent a segment with data (`data_segs_out`).
#[inline(always)]
fn sent_data(sk: *mut aya_ebpf::bindings::bpf_sock) -> bool {
    let tp = unsafe { bpf_tcp_sock(sk) };
    !tp.is_null() && unsafe { (*tp).data_segs_out } != 0
}

/// Copies the first [`CONN_PREFIX_LEN`] bytes (at most) of the packet's `payload` bytes, which
/// end it, into `ev` (`data`, `len`); false when they cannot be read.
#[inline(always)]
fn copy_prefix(skb: *mut __sk_buff, payload: u32, ev: *mut ConnPayloadEvent) -> bool {
    let offset = unsafe { (*skb).len } - payload;
    let n = if payload > CONN_PREFIX_LEN as u32 {
        CONN_PREFIX_LEN as u32
    } else {
        payload
    };
    // 1..=CONN_PREFIX_LEN in a form the verifier bounds.
    let n = ((n - 1) & (CONN_PREFIX_LEN as u32 - 1)) + 1;
    unsafe {
        (*ev).len = n;
        bpf_skb_load_bytes(
            skb.cast(),
            offset,
            core::ptr::addr_of_mut!((*ev).data).cast(),
            n,
        ) == 0
    }
}

/// Copies the first payload of the direction when this packet starts it: the segment at the
/// stream's start, or a client's Fast Open SYN (before the connection is established, which
/// sets the cookie the record carries).
#[inline(never)]
fn capture(skb: *mut __sk_buff, st: &mut ConnState, sent: bool) {
    let mut p = Packet::default();
    if !parse(skb, &mut p) || p.payload == 0 {
        return;
    }
    if p.syn {
        if !sent || st.established != 0 {
            return;
        }
        st.cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
        st.snd_start = p.seq.wrapping_add(1);
    } else {
        let start = if sent { st.snd_start } else { st.rcv_start };
        if p.seq != start {
            // Sends leave in order, so a later one without the first means the first was
            // missed; received segments may come out of order: wait for it.
            if sent && (p.seq.wrapping_sub(start) as i32) > 0 {
                st.sent_seen = 1;
            }
            return;
        }
    }
    let Some(mut entry) = EVENTS.reserve::<ConnPayloadEvent>(0) else {
        count(COUNTER_LOST_EVENTS);
        return;
    };
    let ev = entry.as_mut_ptr();
    if !copy_prefix(skb, p.payload, ev) {
        entry.discard(0);
        return;
    }
    unsafe {
        (*ev).header = header(EVENT_CONN_PAYLOAD, st.tgid, st.start_ns);
        (*ev).cookie = st.cookie;
        (*ev).direction = if sent {
            CONN_DIR_SENT
        } else {
            CONN_DIR_RECEIVED
        };
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
