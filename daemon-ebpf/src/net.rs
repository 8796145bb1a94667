//! Network programs: cgroup connect4/6 and sendmsg4/6 (destination selectors, Block ->
//! EPERM), sock_ops (puts sockets an egress selector watches into the SOCKHASH, and only those)
//! and sk_msg (classifies the first payload bytes as TLS or plaintext, drops blocked plaintext
//! with SK_DROP so the sender sees EACCES, then asks userspace to release the socket).

use aya_ebpf::{
    bindings::{sk_action, BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB},
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_loop,
        bpf_msg_pull_data, bpf_sk_storage_get, bpf_sock_hash_update,
    },
    macros::{cgroup_sock_addr, sk_msg, sock_ops},
    maps::lpm_trie::Key,
    programs::{SkMsgContext, SockAddrContext, SockOpsContext},
};
use daemon_common::*;

use crate::maps::*;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
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

/// Which destination conditions hold for `dest` in `slot`.
#[inline(always)]
fn dest_truth(slot: u32, meta: &SlotMeta, dest: &Destination, v4: bool) -> u64 {
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

/// State of [`connect_step`] over the candidate selectors of one connect.
#[repr(C)]
struct ConnectLoop {
    candidates: u64,
    truth: u64,
    /// Out: egress selectors that hold (TCP connects only).
    egress: u64,
    cgroup_id: u64,
    start_ns: u64,
    dest: Destination,
    slot: u32,
    tgid: u32,
    tcp_connect: u32,
    /// Out: an enforce-mode Block selector holds.
    blocked: u32,
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
    if sel.hook == HOOK_EGRESS {
        if c.tcp_connect != 0 {
            c.egress |= 1u64 << i;
        }
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
        _pad: [0; 1],
        cgroup_id: c.cgroup_id,
        dest: c.dest,
        _pad2: [0; 4],
    };
    emit_now(&m);
    0
}

/// State of [`egress_step`] over the egress selectors of one socket's first payload.
#[repr(C)]
struct EgressLoop {
    selectors: u64,
    cgroup_id: u64,
    start_ns: u64,
    dest: Destination,
    slot: u32,
    tgid: u32,
    verdict: u32,
    /// Out: an enforce-mode Block selector holds.
    drop: u32,
}

#[inline(never)]
extern "C" fn egress_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut EgressLoop) };
    let i = (index & 63) as u32;
    if c.selectors & (1u64 << i) == 0 {
        return 0;
    }
    let Some(sel) = selector(c.slot, i) else {
        return 0;
    };
    if sel.encryption != ENC_ANY && sel.encryption as u32 != c.verdict {
        return 0;
    }
    let enforced = sel.mode == MODE_ENFORCE && sel.actions & ACTION_BLOCK != 0;
    if enforced {
        c.drop = 1;
    }
    let m = MatchEvent {
        header: header(EVENT_MATCH, c.tgid, c.start_ns),
        slot: c.slot as u8,
        selector: i as u8,
        hook: HOOK_EGRESS,
        actions: sel.actions,
        enforced: enforced as u8,
        encryption: c.verdict as u8,
        reason: REASON_NONE,
        _pad: [0; 1],
        cgroup_id: c.cgroup_id,
        dest: c.dest,
        _pad2: [0; 4],
    };
    emit_now(&m);
    0
}

#[inline(always)]
fn on_connect(ctx: &SockAddrContext, v6: bool, sendmsg: bool) -> i32 {
    let sa = unsafe { &*ctx.sock_addr };
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };

    // Destination; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) is matched as IPv4.
    let mut dest = Destination {
        addr: [0; 16],
        port: u16::from_be(sa.user_port as u16),
        family: if v6 { AF_INET6 } else { AF_INET },
        protocol: sa.protocol as u8,
    };
    let mut as_v4 = !v6;
    if v6 {
        let w = sa.user_ip6;
        for (i, word) in w.iter().enumerate() {
            dest.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        if dest.addr[..10].iter().all(|b| *b == 0) && dest.addr[10] == 0xff && dest.addr[11] == 0xff
        {
            as_v4 = true;
            let v4 = [dest.addr[12], dest.addr[13], dest.addr[14], dest.addr[15]];
            dest.addr = [0; 16];
            dest.addr[..4].copy_from_slice(&v4);
            dest.family = AF_INET;
        }
    } else {
        dest.addr[..4].copy_from_slice(&sa.user_ip4.to_ne_bytes());
    }
    if dest.protocol == 0 {
        dest.protocol = if sa.type_ == SOCK_STREAM {
            PROTO_TCP
        } else {
            PROTO_UDP
        };
    }

    let (selectors, start_ns, slot_gen) = match unsafe { PROCESSES.get(&tgid) } {
        Some(p) => (p.selectors, p.start_ns, p.slot_gen),
        None => ([0; SLOTS], 0, [0; SLOTS]),
    };
    let cfg = config();
    let slot = cfg.active_slot & 1;
    let meta = match SLOT_META.get(slot) {
        Some(m) => *m,
        None => SlotMeta::default(),
    };
    // Safety net of the switch (userspace reseeds every process before it flips): bits
    // computed for another rule set than the one in force.
    let gen = if slot == 0 { slot_gen[0] } else { slot_gen[1] };
    if gen != meta.generation && meta.hook_connect | meta.hook_egress != 0 {
        count(COUNTER_STALE_PROCESS);
    }
    let candidates = selectors[slot as usize] & (meta.hook_connect | meta.hook_egress);
    let mut blocked = false;
    if candidates != 0 {
        let mut c = ConnectLoop {
            candidates,
            truth: dest_truth(slot, &meta, &dest, as_v4),
            egress: 0,
            cgroup_id,
            start_ns,
            dest,
            slot,
            tgid,
            tcp_connect: (dest.protocol == PROTO_TCP && !sendmsg) as u32,
            blocked: 0,
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
        if c.egress != 0 && !blocked {
            let init = SockState {
                egress_selectors: c.egress,
                start_ns,
                tgid,
                slot: slot as u8,
                verdict: ENC_PENDING,
                blocked: 0,
                seen_len: 0,
                cookie: 0,
                seen: [0; 4],
                _pad: [0; 4],
            };
            let st = unsafe { SK_STORAGE.get_or_insert_ptr_mut(ctx, None) };
            if !st.is_null() {
                unsafe { *st = init };
            }
        }
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

/// Adds an actively established TCP socket to the SOCKHASH only when connect gave it egress
/// selectors: sockets no policy can act on never pay the sk_msg cost.
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
    let st = unsafe { bpf_sk_storage_get(sk_storage_ptr(), sk.cast(), core::ptr::null_mut(), 0) }
        as *mut SockState;
    if st.is_null() {
        return 1;
    }
    let st = unsafe { &mut *st };
    if st.egress_selectors == 0 {
        return 1;
    }
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
        count(COUNTER_SOCKHASH_ADD_FAILED);
    }
    1
}

/// First-payload classification: `Some(ENC_TLS)` for a TLS handshake record header
/// (0x16 0x03 0x00..=0x04), `Some(ENC_PLAINTEXT)` for anything else, `None` while fewer than 3
/// bytes were seen that could still start a TLS record.
#[inline(always)]
fn classify(b: &[u8; 3], n: usize) -> Option<u8> {
    if n == 0 {
        return None;
    }
    if b[0] != 0x16 {
        return Some(ENC_PLAINTEXT);
    }
    if n == 1 {
        return None;
    }
    if b[1] != 0x03 {
        return Some(ENC_PLAINTEXT);
    }
    if n == 2 {
        return None;
    }
    if b[2] <= 0x04 {
        Some(ENC_TLS)
    } else {
        Some(ENC_PLAINTEXT)
    }
}

#[sk_msg]
pub fn bulwark_egress(ctx: SkMsgContext) -> u32 {
    let msg = ctx.msg;
    let sk = unsafe { (*msg).__bindgen_anon_3.sk };
    if sk.is_null() {
        return sk_action::SK_PASS;
    }
    let st = unsafe { bpf_sk_storage_get(sk_storage_ptr(), sk.cast(), core::ptr::null_mut(), 0) }
        as *mut SockState;
    if st.is_null() {
        return sk_action::SK_PASS;
    }
    let st = unsafe { &mut *st };
    if st.blocked != 0 {
        count(COUNTER_EGRESS_DROPPED);
        return sk_action::SK_DROP;
    }
    if st.verdict != ENC_PENDING {
        return sk_action::SK_PASS;
    }
    // Make the first 3 bytes linear if this send has them.
    let size = ctx.size() as usize;
    if ctx.data_end().saturating_sub(ctx.data()) < 3 && size >= 3 {
        unsafe { bpf_msg_pull_data(msg, 0, 3, 0) };
    }
    let data = ctx.data();
    let end = ctx.data_end();
    // Bytes of earlier sends (still pending) come first: the stream's first 3 bytes decide.
    let mut b = [st.seen[0], st.seen[1], st.seen[2]];
    let mut n = st.seen_len as usize;
    if n > 2 {
        n = 2;
    }
    for i in 0..3usize {
        if n >= 3 || data + i + 1 > end {
            break;
        }
        let v = unsafe { *((data + i) as *const u8) };
        match n {
            0 => b[0] = v,
            1 => b[1] = v,
            _ => b[2] = v,
        }
        n += 1;
    }
    let Some(verdict) = classify(&b, n) else {
        st.seen = [b[0], b[1], b[2], 0];
        st.seen_len = n as u8;
        return sk_action::SK_PASS;
    };
    st.verdict = verdict;

    // Context fields are read one by one with volatile loads: the verifier only allows
    // constant-offset loads from the context, never through a derived pointer.
    let (port, family, ip4, ip6) = unsafe {
        use core::ptr::{addr_of, read_volatile as rv};
        (
            rv(addr_of!((*msg).remote_port)),
            rv(addr_of!((*msg).family)),
            rv(addr_of!((*msg).remote_ip4)),
            [
                rv(addr_of!((*msg).remote_ip6[0])),
                rv(addr_of!((*msg).remote_ip6[1])),
                rv(addr_of!((*msg).remote_ip6[2])),
                rv(addr_of!((*msg).remote_ip6[3])),
            ],
        )
    };
    let mut dest = Destination {
        addr: [0; 16],
        port: u16::from_be((port >> 16) as u16),
        family: family as u8,
        protocol: PROTO_TCP,
    };
    if dest.family == AF_INET {
        dest.addr[..4].copy_from_slice(&ip4.to_ne_bytes());
    } else {
        for (i, word) in ip6.iter().enumerate() {
            dest.addr[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
    }
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let mut c = EgressLoop {
        selectors: st.egress_selectors,
        cgroup_id,
        start_ns: st.start_ns,
        dest,
        slot: st.slot as u32 & 1,
        tgid: st.tgid,
        verdict: verdict as u32,
        drop: 0,
    };
    unsafe {
        bpf_loop(
            MAX_SELECTORS as u32,
            egress_step as *mut core::ffi::c_void,
            (&mut c as *mut EgressLoop).cast(),
            0,
        )
    };
    let drop = c.drop != 0;
    if drop {
        st.blocked = 1;
        count(COUNTER_EGRESS_DROPPED);
        return sk_action::SK_DROP;
    }
    // Classified and allowed: the socket must leave the SOCKHASH. sk_msg programs may not
    // delete from a sockmap (the verifier allows map_delete_elem on it only from sock_ops and
    // a few others), so userspace deletes it by cookie when it reads this record.
    let ev = SockClassifiedEvent {
        header: header(EVENT_SOCK_CLASSIFIED, st.tgid, st.start_ns),
        cookie: st.cookie,
        verdict,
        _pad: [0; 7],
    };
    emit_now(&ev);
    sk_action::SK_PASS
}
