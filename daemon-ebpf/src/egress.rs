//! The egress verdict (sk_msg on the SOCKHASH): every send on a watched socket. While the
//! stream's verdict is pending, the send's bytes are fed to the strict ClientHello scanner
//! (`daemon_common::tls`) in a bounded loop, pulling windows of the message linear as needed.
//! When the stream's *first* send is not TLS, it is still encrypted when it is SSH or carries a
//! declared protocol's signature (`encrypted.rs`, the same checks as the ingress verdict's,
//! over the first send as ingress runs them over the first segment); anything else is
//! plaintext. Then the *sending* process's egress selectors (its cached bits, or its parent's)
//! whose destination conditions hold for the socket are matched against the verdict: an
//! enforce-mode Block drops the send (the sender sees EACCES) and every later one; monitor and
//! Post matches are reported once per socket and selector. An encrypted verdict (TLS: hello
//! plus two well-formed record headers; SSH or a declared protocol: the first send) asks
//! userspace to take the socket out of the SOCKHASH; a plaintext one keeps it watched, because
//! sockets move between processes (fork, SCM_RIGHTS, pidfd_getfd) and the next sender may be in
//! scope. Bytes passed are counted for the wire-level backstop.

use aya_ebpf::{
    bindings::sk_msg_md,
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_loop, bpf_msg_pull_data,
    },
    macros::sk_msg,
    programs::SkMsgContext,
};
use daemon_common::ssh::SshWalk;
use daemon_common::tls::Want;
use daemon_common::*;

use crate::encrypted::{declared, ssh, MsgPayload};
use crate::maps::*;
use crate::net::*;

/// Bytes made linear (and read) per window of a send.
const WINDOW: u32 = 256;
/// Scanner steps per send. A real ClientHello needs a few hundred at most (a few per field and
/// extension); a send that runs out of steps while the verdict is pending is plaintext.
const SCAN_STEPS: u32 = 2048;

/// State of [`scan_step`] walking one send: pointers only. The scanner and its cursor live in
/// the socket's storage (the socket is locked while it sends): the verifier does not track the
/// values in a map, so the loop body is verified once instead of once per value they take.
#[repr(C)]
struct ScanLoop {
    msg: *mut sk_msg_md,
    st: *mut SockState,
    size: u32,
    /// 1 when a window could not be made linear (fail closed).
    failed: u32,
}

#[inline(never)]
extern "C" fn scan_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut ScanLoop) };
    let st = unsafe { &mut *c.st };
    let pos = st.scan_pos;
    if pos >= c.size {
        return 1;
    }
    let verdict = match st.scan.want() {
        Want::Skip(n) => {
            let left = c.size - pos;
            let k = if n < left { n } else { left };
            st.scan_pos = pos + k;
            st.scan.skip(k)
        }
        Want::Byte => {
            if pos < st.scan_win_start || pos >= st.scan_win_end {
                let end = if c.size - pos > WINDOW {
                    pos + WINDOW
                } else {
                    c.size
                };
                if unsafe { bpf_msg_pull_data(c.msg, pos, end, 0) } != 0 {
                    c.failed = 1;
                    return 1;
                }
                st.scan_win_start = pos;
                st.scan_win_end = end;
            }
            let (data, data_end) = unsafe {
                use core::ptr::{addr_of, read_volatile as rv};
                (
                    rv(addr_of!((*c.msg).__bindgen_anon_1.data)) as usize,
                    rv(addr_of!((*c.msg).__bindgen_anon_2.data_end)) as usize,
                )
            };
            let at = ((pos - st.scan_win_start) & (WINDOW - 1)) as usize;
            if data + at + 1 > data_end {
                c.failed = 1;
                return 1;
            }
            let b = unsafe { *((data + at) as *const u8) };
            st.scan_pos = pos + 1;
            st.scan.feed(b)
        }
    };
    if verdict != ENC_PENDING {
        return 1;
    }
    0
}

/// Feeds this send to the socket's scanner; returns the verdict after it (plaintext when the
/// send could not be scanned within the step budget).
#[inline(always)]
fn scan_send(msg: *mut sk_msg_md, size: u32, st: &mut SockState) -> u8 {
    st.scan_pos = 0;
    st.scan_win_start = 0;
    st.scan_win_end = 0;
    let mut c = ScanLoop {
        msg,
        st: st as *mut SockState,
        size,
        failed: 0,
    };
    unsafe {
        bpf_loop(
            SCAN_STEPS,
            scan_step as *mut core::ffi::c_void,
            (&mut c as *mut ScanLoop).cast(),
            0,
        )
    };
    if st.scan.verdict == ENC_PENDING && (c.failed != 0 || st.scan_pos < size) {
        st.scan.verdict = ENC_PLAINTEXT;
    }
    st.scan.verdict
}

/// Whether a stream's first send (`size` bytes), which is not TLS, is SSH or carries a
/// declared protocol's signature. Its own frame, so the two walks' frames are not stacked on
/// the program's. `walk` is the socket's (`SockState::ssh`).
#[inline(never)]
fn not_tls_encrypted(msg: *mut sk_msg_md, size: u32, walk: *mut SshWalk) -> bool {
    let payload = MsgPayload { msg, walk };
    ssh(payload, size) || declared(payload, size)
}

/// The peer of the socket a message is sent on.
#[inline(always)]
fn msg_destination(msg: *mut sk_msg_md) -> (Destination, bool) {
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
    destination(
        family as u8 == AF_INET6,
        ip4,
        ip6,
        u16::from_be((port >> 16) as u16),
        PROTO_TCP,
    )
}

#[sk_msg]
pub fn bulwark_egress(ctx: SkMsgContext) -> u32 {
    let msg = ctx.msg;
    let sk = unsafe { (*msg).__bindgen_anon_3.sk };
    if sk.is_null() {
        return SK_PASS;
    }
    let Some(st) = sock_state(sk) else {
        return SK_PASS;
    };
    if st.blocked != 0 {
        count(COUNTER_EGRESS_DROPPED);
        return SK_DROP;
    }
    let size = ctx.size();
    if st.classified_encrypted() {
        st.passed += size as u64;
        return SK_PASS;
    }
    if st.scan.verdict == ENC_PENDING && st.unseen == 0 {
        // Nothing passed yet (a refused send blocks the socket): this send starts the stream.
        let first = st.passed == 0;
        if scan_send(msg, size, st) == ENC_PLAINTEXT
            && first
            && not_tls_encrypted(msg, size, &mut st.ssh)
        {
            st.scan.verdict = ENC_ENCRYPTED;
        }
    }
    let verdict = st.verdict();

    let cfg = config();
    let (dest, v4) = msg_destination(msg);
    let slot = cfg.active_slot & 1;
    let tgid = (unsafe { bpf_get_current_pid_tgid() } >> 32) as u32;
    // The sender decides, in its own group's table.
    let sender = current_process(tgid);
    let table = process_table(slot, sender.namespace_id);
    refresh_socket(st, &cfg, table, &dest, v4);
    let mut drop = false;
    if st.dest_selectors != 0 {
        let mut c = EgressLoop {
            selectors: sender.selectors[slot as usize] & st.dest_selectors,
            reported: st.reported,
            cgroup_id: unsafe { bpf_get_current_cgroup_id() },
            start_ns: sender.start_ns,
            dest,
            slot: table,
            tgid,
            verdict: verdict as u32,
            reason: st.unseen as u32,
            drop: 0,
            first: 0,
            hook: HOOK_EGRESS as u32,
            _pad: 0,
        };
        c.run();
        st.reported = c.reported;
        drop = c.drop != 0;
    }
    if drop {
        st.blocked = 1;
        count(COUNTER_EGRESS_DROPPED);
        return SK_DROP;
    }
    st.passed += size as u64;
    if st.classified_encrypted() {
        // Classified encrypted and allowed: the socket must leave the SOCKHASH. sk_msg programs
        // may not delete from a sockmap (the verifier allows map_delete_elem on it only from
        // sock_ops and a few others), so userspace deletes it by cookie when it reads this.
        let ev = SockClassifiedEvent {
            header: header(EVENT_SOCK_CLASSIFIED, st.tgid, st.start_ns),
            cookie: st.cookie,
            verdict,
            _pad: [0; 7],
        };
        emit_now(&ev);
    }
    SK_PASS
}
