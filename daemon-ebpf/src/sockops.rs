//! The sock_ops program, one per cgroup for enforcement and observation alike (every program
//! attached runs at every callback of every TCP socket, so two would pay the dispatch twice):
//! an actively established TCP socket that is watched (or one connect did not see, e.g. an
//! MPTCP subflow, whose destination is watched) records where its stream starts and enters the
//! SOCKHASH; connection observation's callbacks are `conn.rs`'s ([`crate::conn::sock_ops`],
//! [`crate::conn::closed`]).

use aya_ebpf::{
    bindings::{
        BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_STATE_CB, BPF_SOCK_OPS_TCP_CONNECT_CB, BPF_SOCK_OPS_TCP_LISTEN_CB,
    },
    helpers::generated::{
        bpf_get_current_pid_tgid, bpf_get_socket_cookie, bpf_sk_storage_get, bpf_sock_hash_update,
    },
    macros::sock_ops,
    programs::SockOpsContext,
};
use daemon_common::*;

use crate::conn;
use crate::maps::*;
use crate::net::*;

const E2BIG: i64 = 7;
const ENOMEM: i64 = 12;

/// Every sock_ops callback of every TCP socket. Most are of no interest (the window and
/// timeout queries, ECN, state changes other than to TCP_CLOSE) and return before any helper
/// runs.
#[sock_ops]
pub fn bulwark_sockops(ctx: SockOpsContext) -> u32 {
    let op = ctx.op();
    match op {
        BPF_SOCK_OPS_STATE_CB => {
            if ctx.arg(1) == TCP_CLOSE {
                conn::closed(&ctx);
            }
        }
        BPF_SOCK_OPS_TCP_LISTEN_CB
        | BPF_SOCK_OPS_TCP_CONNECT_CB
        | BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB => conn::sock_ops(&ctx, op),
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB => {
            conn::sock_ops(&ctx, op);
            watch(&ctx);
        }
        _ => {}
    }
    1
}

/// An actively established TCP socket: a watched one (or one connect did not see, e.g. an
/// MPTCP subflow, whose destination is watched) records where its stream starts and enters the
/// SOCKHASH; sockets no egress selector watches never pay the sk_msg cost.
#[inline(always)]
fn watch(ctx: &SockOpsContext) {
    let ops = ctx.ops;
    let sk = unsafe { (*ops).__bindgen_anon_2.sk };
    if sk.is_null() {
        return;
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
        if egress_dest_selectors(watch_table(cfg.active_slot & 1), &dest, v4) == 0 {
            return;
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
            return;
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
}
