//! Do-nothing programs on exactly bulwark's hooks, for the benchmark's "floor": they measure
//! what the hooks themselves cost, so the report can separate that from bulwark's own work.
//! `bulwark run --noop-programs` attaches these instead of the real ones.

use aya_ebpf::{
    macros::{cgroup_skb, cgroup_sock, cgroup_sock_addr, raw_tracepoint, sock_ops, tracepoint},
    programs::{
        RawTracePointContext, SkBuffContext, SockAddrContext, SockContext, SockOpsContext,
        TracePointContext,
    },
};

#[tracepoint]
pub fn noop_exec(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn noop_exit(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn noop_cgroup_move(_ctx: TracePointContext) -> u32 {
    0
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn noop_fork(_ctx: RawTracePointContext) -> i32 {
    0
}

#[cgroup_sock_addr(connect4)]
pub fn noop_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(connect6)]
pub fn noop_connect6(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(sendmsg4)]
pub fn noop_sendmsg4(_ctx: SockAddrContext) -> i32 {
    1
}

#[cgroup_sock_addr(sendmsg6)]
pub fn noop_sendmsg6(_ctx: SockAddrContext) -> i32 {
    1
}

#[sock_ops]
pub fn noop_sockops(_ctx: SockOpsContext) -> u32 {
    0
}

#[cgroup_skb(egress)]
pub fn noop_backstop(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_sock(sock_create)]
pub fn noop_sock_create(_ctx: SockContext) -> i32 {
    1
}

#[tracepoint]
pub fn noop_packet_socket(_ctx: TracePointContext) -> u32 {
    0
}

#[tracepoint]
pub fn noop_uring_socket(_ctx: TracePointContext) -> u32 {
    0
}

#[cgroup_skb(egress)]
pub fn noop_conn_egress(_ctx: SkBuffContext) -> i32 {
    1
}

#[cgroup_skb(ingress)]
pub fn noop_conn_ingress(_ctx: SkBuffContext) -> i32 {
    1
}
