//! The ingress verdict (`hook: ingress`): the first payload a server connection receives,
//! judged for the process that called `listen()` (the connection's owner in `CONN_STORAGE`,
//! cloned from its listener) in that process's table of the active slot. Called by
//! connection observation (`conn.rs`) for every received packet of a connection until its
//! first received payload has been captured, so a connection whose owner has no ingress
//! selector costs one `PROCESSES` lookup, once.
//!
//! The verdict comes from the first segment alone (the packet whose sequence number starts the
//! stream; later ones are never judged):
//! - TLS: the strict ClientHello scanner (`daemon_common::tls`) over the segment. A segment
//!   that ends while the hello is still well-formed counts as TLS-so-far (`ENC_PENDING`: `tls`
//!   selectors match, `plaintext` ones do not) only when it holds the whole first record or at
//!   least [`MIN_PENDING_SEGMENT`] bytes of it; a shorter one (a record header, then plaintext
//!   in a later segment) is plaintext.
//! - Otherwise SSH or a declared protocol (`encrypted.rs`, the same checks as the egress
//!   verdict's, over the segment) is `ENC_ENCRYPTED`; anything else is plaintext.
//!
//! A payload that reaches the *listener* rather than the connection — a Fast Open SYN's data,
//! or data on the ACK that completes the handshake — is judged by [`listener_payload`] the same
//! way (the connection does not exist yet, and its own first segment would be past).
//!
//! An enforce-mode Block that matches drops the segment before TCP sees it (no ACK, so the
//! server reads nothing) and every later packet of the connection (`INGRESS_STORAGE`), and
//! asks userspace to destroy the connection (`EVENT_SOCK_UNSEEN`): the kernel's
//! `SOCK_DESTROY` aborts it, which sends the peer a reset. Matches are `EVENT_MATCH` records
//! with `HOOK_INGRESS`, the peer's address and the service's (local) port as destination.

use aya_ebpf::{
    bindings::{__sk_buff, bpf_sock, BPF_SK_STORAGE_GET_F_CREATE},
    btf_maps::SkStorage,
    helpers::generated::{bpf_loop, bpf_sk_storage_get, bpf_skb_cgroup_id, bpf_skb_load_bytes},
    macros::{btf_map, map},
    maps::PerCpuArray,
};
use daemon_common::ssh::SshWalk;
use daemon_common::tls::{TlsScan, Want};
use daemon_common::*;

use crate::backstop::{parse, Packet};
use crate::encrypted::{declared, ssh, SkbPayload};
use crate::maps::*;
use crate::net::*;

/// A first segment that ends inside a well-formed ClientHello counts as TLS-so-far only when
/// it holds at least this many bytes of the first record (or all of it): TLS stacks write the
/// hello whole, so a short segment that stops inside it is a look-alike, not a client.
pub const MIN_PENDING_SEGMENT: u32 = 512;
/// Scanner steps over the first segment (a ClientHello needs a few hundred at most).
const SCAN_STEPS: u32 = 2048;

/// Per server connection, created only when an ingress Block refused it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IngressState {
    /// 1: every packet of the connection is dropped.
    pub blocked: u8,
    pub _pad: [u8; 7],
}

#[btf_map]
pub static INGRESS_STORAGE: SkStorage<IngressState> = SkStorage::new();

/// What the first segment's walks carry from step to step: the TLS scanner and its position,
/// and the SSH walk. In a map, not on the stack: the verifier tracks stack values exactly and
/// checks a `bpf_loop` step once per combination they take — with the scanner on the stack
/// the TLS step alone cost 424k of the program's 557k verified instructions (kernel 6.18) and
/// 2 s of the daemon's start. A map value is not tracked, so each step is checked once, as
/// the egress verdict's scanner in the socket's storage is. Per CPU, like `LISTENER_SCRATCH`:
/// the program runs in the network receive softirq, which does not nest on a CPU, and judges
/// one first segment at a time.
#[repr(C)]
#[derive(Clone, Copy)]
struct IngressWalks {
    tls: TlsScan,
    /// Where the TLS scanner is in the segment.
    tls_pos: u32,
    /// 1 when a byte could not be read (fail closed).
    tls_failed: u32,
    ssh: SshWalk,
}

#[map]
static INGRESS_WALKS: PerCpuArray<IngressWalks> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn ingress_state(sk: *mut bpf_sock, create: bool) -> Option<&'static mut IngressState> {
    let flags = if create {
        BPF_SK_STORAGE_GET_F_CREATE as u64
    } else {
        0
    };
    let map = core::ptr::from_ref(&INGRESS_STORAGE).cast_mut().cast();
    let st = unsafe { bpf_sk_storage_get(map, sk.cast(), core::ptr::null_mut(), flags) }
        as *mut IngressState;
    if st.is_null() {
        None
    } else {
        Some(unsafe { &mut *st })
    }
}

/// Judges a received packet of an observed connection whose first received payload has not
/// been captured yet; true means drop it.
#[inline(never)]
pub fn first_payload(skb: *mut __sk_buff, sk: *mut bpf_sock, st: &ConnState) -> bool {
    if st.role != CONN_ROLE_SERVER {
        return false;
    }
    if let Some(is) = ingress_state(sk, false) {
        if is.blocked != 0 {
            count(COUNTER_INGRESS_DROPPED);
            return true;
        }
    }
    let Some((start_ns, table, meta, candidates)) = ingress_candidates(st.tgid) else {
        return false;
    };
    let seg = first_segment(skb, st.rcv_start);
    if seg == 0 {
        // Only the segment that starts the stream is judged; one that arrives before it waits
        // in TCP's out-of-order queue, unreadable until that one is let through.
        return false;
    }
    let (base, size) = ((seg >> 32) as u32, seg as u32);
    // The peer's address, the service's port.
    let mut dest = st.remote;
    dest.port = st.local.port;
    dest.protocol = PROTO_TCP;
    let v4 = dest.family == AF_INET;
    let selectors = dest_selectors(table, meta, candidates, &dest, v4);
    if selectors == 0 {
        return false;
    }
    let verdict = classify(skb, base, size);
    let d = Decision {
        selectors,
        start_ns,
        dest,
        table,
        verdict: verdict as u32,
        tgid: st.tgid,
        _pad: 0,
    };
    decide(skb, sk, st, &d)
}

/// The owner `tgid`'s ingress selectors in the active slot (its identity, table, the table's
/// meta and the selector bits), or `None` when it has none. References into the maps, not
/// copies: the callers' frames and the classifier's share the 512-byte stack with the
/// program's own.
#[inline(always)]
fn ingress_candidates(tgid: u32) -> Option<(u64, u32, &'static SlotMeta, u64)> {
    let owner = unsafe { PROCESSES.get(&tgid) }?;
    let slot = config().active_slot & 1;
    let table = process_table(slot, owner.namespace_id);
    let meta = SLOT_META.get(table & 0xff)?;
    let candidates = owner.selectors[slot as usize] & meta.hook_ingress;
    if candidates == 0 {
        return None;
    }
    Some((owner.start_ns, table, meta, candidates))
}

/// Judges a payload that reaches a listener (state `st`) rather than a connection: the data of
/// a Fast Open SYN, or data on the ACK that completes a handshake (a client that sends its
/// first segment without a separate ACK, as a Fast Open client does after its SYN was lost).
/// The kernel runs the socket filter for such a packet on the listener, then creates the
/// connection and queues the data for the server, so the connection's own first segment is
/// already past: this packet is the first payload and is judged here, for the listener's owner.
/// Matches are reported; an enforce-mode Block drops the packet, so no connection is created
/// with it: the client retransmits (a SYN without data, RFC 7413 section 4.1.3; a pure ACK
/// when the server repeats its SYN-ACK) and its data then reaches the connection, where the
/// first segment is judged (and refused) as for any other. True means drop.
#[inline(never)]
pub fn listener_payload(skb: *mut __sk_buff, st: &ConnState) -> bool {
    let Some((start_ns, table, meta, candidates)) = ingress_candidates(st.tgid) else {
        return false;
    };
    let mut dest = Destination::default();
    let seg = listener_segment(skb, &mut dest);
    if seg == 0 {
        return false;
    }
    // The same steps as `first_payload`'s tail, written out: a shared function (inlined or
    // not) costs these frames stack the verifier's 512-byte limit does not have.
    let (base, size) = ((seg >> 32) as u32, seg as u32);
    let selectors = dest_selectors(table, meta, candidates, &dest, dest.family == AF_INET);
    if selectors == 0 {
        return false;
    }
    let verdict = classify(skb, base, size);
    let d = Decision {
        selectors,
        start_ns,
        dest,
        table,
        verdict: verdict as u32,
        tgid: st.tgid,
        _pad: 0,
    };
    decide(skb, core::ptr::null_mut(), core::ptr::null(), &d)
}

/// Where the payload of a packet lies (`offset << 32 | length`, 0 when it carries none), and
/// in `dest` its sender's address with the port it was sent to (the peer and the service).
#[inline(never)]
fn listener_segment(skb: *mut __sk_buff, dest: &mut Destination) -> u64 {
    let mut p = Packet::default();
    if !parse(skb, &mut p) || p.payload == 0 {
        return 0;
    }
    // The parser reads the headers as a sender's: `p.local` is the source, the peer.
    *dest = p.local;
    dest.port = p.remote.port;
    dest.protocol = PROTO_TCP;
    let len = unsafe { (*skb).len };
    ((len - p.payload) as u64) << 32 | p.payload as u64
}

/// Where the payload of the segment that starts the received stream (sequence number `start`)
/// lies in the packet: `offset << 32 | length`, or 0 when this packet is not that segment or
/// carries no payload. A function of its own so the header parser's frame is not stacked on
/// the caller's.
#[inline(never)]
fn first_segment(skb: *mut __sk_buff, start: u32) -> u64 {
    let mut p = Packet::default();
    if !parse(skb, &mut p) || p.payload == 0 || p.syn || p.seq != start {
        return 0;
    }
    let len = unsafe { (*skb).len };
    ((len - p.payload) as u64) << 32 | p.payload as u64
}

/// What [`decide`] judges: the candidate selectors (ingress, process and destination hold)
/// and the first segment's verdict. Built in [`first_payload`]'s frame and passed by
/// reference, so the match loop's frame is not stacked on the classifier's.
#[repr(C)]
struct Decision {
    selectors: u64,
    /// The owner's identity.
    start_ns: u64,
    dest: Destination,
    table: u32,
    verdict: u32,
    /// The owner.
    tgid: u32,
    _pad: u32,
}

/// Reports the matches of a first segment and, when an enforce-mode Block matched, marks the
/// connection (socket `sk`, state `st`; both null for a payload a listener received, which has no
/// connection yet) refused and asks userspace to destroy it; true means drop. Raw pointers, not an
/// `Option`: a tuple in an `Option` puts a type into the object's BTF that the kernel refuses.
#[inline(never)]
fn decide(skb: *mut __sk_buff, sk: *mut bpf_sock, st: *const ConnState, d: &Decision) -> bool {
    let mut c = EgressLoop {
        selectors: d.selectors,
        reported: 0,
        cgroup_id: unsafe { bpf_skb_cgroup_id(skb) },
        start_ns: d.start_ns,
        dest: d.dest,
        slot: d.table,
        tgid: d.tgid,
        verdict: d.verdict,
        reason: REASON_NONE as u32,
        drop: 0,
        first: 0,
        hook: HOOK_INGRESS as u32,
        _pad: 0,
    };
    c.run();
    if c.drop == 0 {
        return false;
    }
    count(COUNTER_INGRESS_DROPPED);
    if sk.is_null() || st.is_null() {
        return true;
    }
    let st = unsafe { &*st };
    if let Some(is) = ingress_state(sk, true) {
        is.blocked = 1;
    }
    let ev = SockUnseenEvent {
        header: header(EVENT_SOCK_UNSEEN, st.tgid, d.start_ns),
        cookie: st.cookie,
        local: st.local,
        remote: st.remote,
    };
    emit_now(&ev);
    true
}

/// State of [`scan_step`]: the TLS scanner walking the segment. Pointers and constants only;
/// the scanner and its position are in [`IngressWalks`].
#[repr(C)]
struct ScanLoop {
    skb: *mut __sk_buff,
    w: *mut IngressWalks,
    /// Offset of the payload in the packet and its length.
    base: u32,
    size: u32,
}

#[inline(never)]
extern "C" fn scan_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut ScanLoop) };
    let w = unsafe { &mut *c.w };
    let pos = w.tls_pos;
    if pos >= c.size {
        return 1;
    }
    let verdict = match w.tls.want() {
        Want::Skip(n) => {
            let left = c.size - pos;
            let k = if n < left { n } else { left };
            w.tls_pos = pos + k;
            w.tls.skip(k)
        }
        Want::Byte => {
            let mut b = 0u8;
            if unsafe {
                bpf_skb_load_bytes(c.skb.cast(), c.base + pos, (&mut b as *mut u8).cast(), 1)
            } != 0
            {
                w.tls_failed = 1;
                return 1;
            }
            w.tls_pos = pos + 1;
            w.tls.feed(b)
        }
    };
    if verdict != ENC_PENDING {
        return 1;
    }
    0
}

/// The verdict of a first segment (payload at `base`, `size` bytes): `ENC_TLS`,
/// `ENC_PENDING` (a well-formed hello so far), `ENC_ENCRYPTED` or `ENC_PLAINTEXT`. Each step
/// is a function of its own, so their frames are not stacked on each other. Plaintext, as for
/// a byte that cannot be read, when the walks' room cannot be had (a one-entry per-CPU array:
/// it always can).
#[inline(never)]
fn classify(skb: *mut __sk_buff, base: u32, size: u32) -> u8 {
    let Some(w) = INGRESS_WALKS.get_ptr_mut(0) else {
        return ENC_PLAINTEXT;
    };
    let verdict = tls_verdict(skb, w, base, size);
    if verdict != ENC_PLAINTEXT {
        return verdict;
    }
    let payload = SkbPayload {
        skb,
        base,
        walk: unsafe { core::ptr::addr_of_mut!((*w).ssh) },
    };
    if ssh(payload, size) || declared(payload, size) {
        return ENC_ENCRYPTED;
    }
    ENC_PLAINTEXT
}

/// The TLS scanner's verdict of a first segment, a pending one settled by
/// [`pending_verdict`].
#[inline(never)]
fn tls_verdict(skb: *mut __sk_buff, w: *mut IngressWalks, base: u32, size: u32) -> u8 {
    let mut c = ScanLoop { skb, w, base, size };
    unsafe {
        (*w).tls = TlsScan::new();
        (*w).tls_pos = 0;
        (*w).tls_failed = 0;
    }
    unsafe {
        bpf_loop(
            SCAN_STEPS,
            scan_step as *mut core::ffi::c_void,
            (&mut c as *mut ScanLoop).cast(),
            0,
        )
    };
    let w = unsafe { &*w };
    let verdict = w.tls.verdict;
    if verdict != ENC_PENDING {
        return verdict;
    }
    if w.tls_failed != 0 || w.tls_pos < size {
        return ENC_PLAINTEXT;
    }
    pending_verdict(skb, base, size)
}

/// A segment that ended inside a well-formed hello: TLS-so-far when it holds the first
/// record whole or [`MIN_PENDING_SEGMENT`] bytes of it, else plaintext.
#[inline(never)]
fn pending_verdict(skb: *mut __sk_buff, base: u32, size: u32) -> u8 {
    let mut h = [0u8; 5];
    if size < 5 || unsafe { bpf_skb_load_bytes(skb.cast(), base, h.as_mut_ptr().cast(), 5) } != 0 {
        return ENC_PLAINTEXT;
    }
    let record = 5 + u16::from_be_bytes([h[3], h[4]]) as u32;
    let need = if record < MIN_PENDING_SEGMENT {
        record
    } else {
        MIN_PENDING_SEGMENT
    };
    if size >= need {
        ENC_PENDING
    } else {
        ENC_PLAINTEXT
    }
}
