//! The wire-level backstop (cgroup_skb/egress on the same cgroup as the socket programs): for a
//! TCP packet with payload from a watched socket whose stream is not classified encrypted (TLS,
//! SSH or a declared protocol), it checks that the payload lies within what the sk_msg program
//! passed (stream offsets: sequence number minus the stream's start). Payload beyond it
//! bypassed the verdict — a send that began before the socket entered the SOCKHASH, an MPTCP
//! subflow, a socket the SOCKHASH had no room for, TCP Fast Open data the connect hook did not
//! refuse — and is dropped when an enforce-mode egress Block selector watches the destination
//! (fail closed: who sent it is not known here), reported once, and userspace destroys the
//! connection so the sender gets an error instead of a stall. Sockets without state pay one
//! failed storage lookup per packet.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock},
    helpers::generated::{
        bpf_get_socket_cookie, bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_skb_load_bytes, bpf_tcp_sock,
    },
    macros::cgroup_skb,
    programs::SkBuffContext,
};
use daemon_common::*;

use crate::maps::*;
use crate::net::*;

pub(crate) const ETH_P_IP: u16 = 0x0800;
pub(crate) const ETH_P_IPV6: u16 = 0x86dd;
const TCP_SYN: u8 = 0x02;
const PASS: i32 = 1;
const DROP: i32 = 0;

/// What the headers of one outgoing packet say.
#[repr(C)]
#[derive(Default)]
pub(crate) struct Packet {
    pub local: Destination,
    pub remote: Destination,
    pub v4: bool,
    pub seq: u32,
    pub payload: u32,
    pub syn: bool,
}

#[inline(always)]
fn load<const N: usize>(skb: *mut __sk_buff, off: u32) -> Option<[u8; N]> {
    let mut b = [0u8; N];
    let r = unsafe { bpf_skb_load_bytes(skb.cast(), off, b.as_mut_ptr().cast(), N as u32) };
    (r == 0).then_some(b)
}

/// Parses the IP and TCP headers into `out`; false when they cannot be read (or it is not
/// TCP). Not inlined: its buffers then do not add to the stack of the checks after it.
#[inline(never)]
pub(crate) fn parse(skb: *mut __sk_buff, out: &mut Packet) -> bool {
    match parse_headers(skb) {
        Some(p) => {
            *out = p;
            true
        }
        None => false,
    }
}

#[inline(always)]
fn parse_headers(skb: *mut __sk_buff) -> Option<Packet> {
    let (proto, len) = unsafe { ((*skb).protocol, (*skb).len) };
    let mut local = Destination {
        protocol: PROTO_TCP,
        ..Destination::default()
    };
    let mut remote = local;
    let (l3, v4) = match u16::from_be(proto as u16) {
        ETH_P_IP => {
            let h: [u8; 20] = load(skb, 0)?;
            if h[9] != PROTO_TCP {
                return None;
            }
            local.family = AF_INET;
            remote.family = AF_INET;
            local.addr[..4].copy_from_slice(&h[12..16]);
            remote.addr[..4].copy_from_slice(&h[16..20]);
            (((h[0] & 0x0f) as u32) * 4, true)
        }
        ETH_P_IPV6 => {
            let h: [u8; 8] = load(skb, 0)?;
            local.family = AF_INET6;
            remote.family = AF_INET6;
            local.addr = load(skb, 8)?;
            remote.addr = load(skb, 24)?;
            let mut next = h[6];
            let mut off = 40u32;
            // Extension headers a TCP socket's packets may carry (set by socket options).
            for _ in 0..6 {
                match next {
                    0 | 43 | 60 => {
                        let e: [u8; 2] = load(skb, off)?;
                        next = e[0];
                        off += (e[1] as u32 + 1) * 8;
                    }
                    44 => {
                        let e: [u8; 1] = load(skb, off)?;
                        next = e[0];
                        off += 8;
                    }
                    _ => break,
                }
            }
            if next != PROTO_TCP {
                return None;
            }
            (off, false)
        }
        _ => return None,
    };
    let t: [u8; 14] = load(skb, l3)?;
    local.port = u16::from_be_bytes([t[0], t[1]]);
    remote.port = u16::from_be_bytes([t[2], t[3]]);
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let headers = l3 + ((t[12] >> 4) as u32) * 4;
    Some(Packet {
        local,
        remote,
        v4,
        seq,
        payload: len.saturating_sub(headers),
        syn: t[13] & TCP_SYN != 0,
    })
}

/// TCP sequence number of stream offset 0: recorded when the socket was established under
/// watch, else derived from the socket's counters (`bytes_acked` counts the SYN too).
#[inline(always)]
fn stream_start(st: &SockState, sk: *mut bpf_sock) -> Option<u32> {
    if st.start_known != 0 {
        return Some(st.stream_start);
    }
    let tp = unsafe { bpf_tcp_sock(sk) };
    if tp.is_null() {
        return None;
    }
    let (una, acked) = unsafe { ((*tp).snd_una, (*tp).bytes_acked) };
    Some(una.wrapping_sub(acked as u32).wrapping_add(1))
}

#[cgroup_skb(egress)]
pub fn bulwark_backstop(ctx: SkBuffContext) -> i32 {
    let skb = ctx.skb.skb;
    let sk = unsafe { (*skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return PASS;
    }
    let sk = unsafe { bpf_sk_fullsock(sk) };
    if sk.is_null() {
        return PASS;
    }
    let Some(st) = sock_state(sk) else {
        return PASS;
    };
    if st.classified_encrypted() {
        return PASS;
    }
    let mut p = Packet::default();
    if !parse(skb, &mut p) {
        // A watched TCP socket's packet whose headers cannot be read: fail closed.
        return check_enforced(skb, st, None);
    }
    if p.payload == 0 {
        return PASS;
    }
    if p.syn {
        // Data in the SYN is TCP Fast Open: allowed only when connect let it through.
        if st.unseen == REASON_TCP_FAST_OPEN {
            return PASS;
        }
        return check_enforced(skb, st, Some(&p));
    }
    let Some(start) = stream_start(st, sk) else {
        return check_enforced(skb, st, Some(&p));
    };
    let end = p.seq.wrapping_add(p.payload).wrapping_sub(start);
    // Serial-number comparisons: bytes before the start (retransmitted Fast Open data), and
    // bytes up to what sk_msg passed, are fine.
    if (end as i32) <= 0 || (end.wrapping_sub(st.passed as u32) as i32) <= 0 {
        return PASS;
    }
    check_enforced(skb, st, Some(&p))
}

/// Payload sk_msg never passed: dropped when an enforce-mode Block watches the destination
/// (reported, and userspace asked once to destroy the connection), reported once per selector
/// when only monitor-mode ones do.
#[inline(never)]
fn check_enforced(skb: *mut __sk_buff, st: &mut SockState, p: Option<&Packet>) -> i32 {
    let Some(p) = p else {
        // Headers that cannot be read on a watched socket: fail closed when a rule watches it.
        if st.dest_selectors != 0 {
            count(COUNTER_UNSEEN_DROPPED);
            return DROP;
        }
        return PASS;
    };
    // No sender here: the slot's watch table says which egress selectors (of any group, with
    // their mode and actions) watch the destination. Rare path (payload sk_msg never passed),
    // so computed afresh rather than cached in the sender-numbered socket state.
    let watch = watch_table(config().active_slot & 1);
    let selectors = egress_dest_selectors(watch, &p.remote, p.v4);
    if selectors == 0 {
        return PASS;
    }
    if st.blocked == 0 {
        let mut c = EgressLoop {
            selectors,
            // Monitor-mode matches are reported once per socket.
            reported: if st.unseen_reported & UNSEEN_MATCHES_REPORTED != 0 {
                u64::MAX
            } else {
                0
            },
            cgroup_id: unsafe { bpf_skb_cgroup_id(skb) },
            start_ns: st.start_ns,
            dest: p.remote,
            slot: watch,
            tgid: st.tgid,
            verdict: ENC_PLAINTEXT as u32,
            reason: REASON_UNSEEN_PAYLOAD as u32,
            drop: 0,
            first: 0,
            hook: HOOK_EGRESS as u32,
            _pad: 0,
        };
        c.run();
        st.unseen_reported |= UNSEEN_MATCHES_REPORTED;
        if c.drop == 0 {
            return PASS;
        }
        st.blocked = 1;
    }
    count(COUNTER_UNSEEN_DROPPED);
    if st.unseen_reported & UNSEEN_EVENT_SENT == 0 {
        st.unseen_reported |= UNSEEN_EVENT_SENT;
        if let Some(ev) = UNSEEN_SCRATCH.get_ptr_mut(0) {
            let ev = unsafe { &mut *ev };
            ev.header = header(EVENT_SOCK_UNSEEN, st.tgid, st.start_ns);
            ev.cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
            ev.local = p.local;
            ev.remote = p.remote;
            emit_now(ev);
        }
    }
    DROP
}
