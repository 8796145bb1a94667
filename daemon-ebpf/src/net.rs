//! What the connection programs share (`connect`, `sockops`, `egress`, `backstop`): a
//! destination from the kernel's address words, the destination conditions that hold for it,
//! which egress selectors watch a socket, the sending process's selectors, and the egress
//! match loop. A TCP socket is *watched* (has [`SockState`]) when its destination meets the
//! destination conditions of some egress selector, whoever connected it: the process that
//! sends decides, at every send (`egress.rs`), and the wire-level backstop (`backstop.rs`)
//! refuses payload that never went through that decision.

use aya_ebpf::{
    bindings::sk_action,
    helpers::generated::{bpf_get_current_task, bpf_loop},
    maps::lpm_trie::Key,
};
use daemon_common::*;

use crate::maps::*;

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

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

/// Which destination conditions hold for `dest` in `table`.
#[inline(always)]
pub fn dest_truth(table: u32, meta: &SlotMeta, dest: &Destination, v4: bool) -> u64 {
    let slot8 = table as u8;
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

/// Egress selectors of `table` whose destination conditions hold for `dest`: in a slot's
/// watch table, a socket to `dest` is watched when this is not 0 (whoever connected it).
#[inline(always)]
pub fn egress_dest_selectors(table: u32, dest: &Destination, v4: bool) -> u64 {
    let meta = slot_meta(table);
    if meta.hook_egress == 0 {
        return 0;
    }
    dest_selectors(table, &meta, meta.hook_egress, dest, v4)
}

/// The selectors among `candidates` of `table` whose destination conditions hold for `dest`.
#[inline(always)]
pub fn dest_selectors(
    table: u32,
    meta: &SlotMeta,
    candidates: u64,
    dest: &Destination,
    v4: bool,
) -> u64 {
    let mut c = DestSelLoop {
        slot: table,
        _pad: 0,
        candidates,
        truth: dest_truth(table, meta, dest, v4),
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
/// `cfg.generation`) and the sender's `table` (its group in the active slot). What was
/// reported is kept for the table before (a sender of that group comes back: not reported
/// again) and forgotten with an older rule set.
#[inline(always)]
pub fn refresh_socket(st: &mut SockState, cfg: &Config, table: u32, dest: &Destination, v4: bool) {
    let same_rules = st.generation == cfg.generation;
    if same_rules && st.dest_table == table {
        return;
    }
    let reported = if same_rules && st.prev_table == table {
        st.prev_reported
    } else {
        0
    };
    if same_rules {
        st.prev_table = st.dest_table;
        st.prev_reported = st.reported;
    } else {
        st.prev_table = NO_TABLE;
        st.prev_reported = 0;
    }
    st.dest_selectors = egress_dest_selectors(table, dest, v4);
    st.reported = reported;
    st.generation = cfg.generation;
    st.dest_table = table;
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

/// What a payload match is about (the payload verdict, or why it was not seen), on the egress
/// hook (sends, the connect program's Fast Open check, the backstop) or the ingress hook.
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
    /// `HOOK_EGRESS` or `HOOK_INGRESS`, for the events.
    pub hook: u32,
    pub _pad: u32,
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
        hook: c.hook as u8,
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
        tid: 0,
    };
    emit_now(&m);
    0
}

/// sk_msg verdicts (`aya_ebpf::bindings::sk_action`), re-exported for the egress program.
pub const SK_PASS: u32 = sk_action::SK_PASS;
pub const SK_DROP: u32 = sk_action::SK_DROP;
