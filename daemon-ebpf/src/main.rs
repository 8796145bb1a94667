//! bulwark's kernel programs. Kept small: every decision that can be made in userspace is made
//! there and handed down as map entries by the compiler. `maps` holds the maps and shared
//! helpers; `exec`, `fork` and `exit` the process lifecycle programs, `cgroup_move` a process
//! moved between namespaces' cgroups, `connect` connect and
//! sendmsg, `sockops` sock_ops, `net` what those and the egress programs share, `egress` the
//! sk_msg verdict, `backstop` the wire-level check of what the verdict never saw, `sockets`
//! the socket guard (socket types those hooks cannot see), `conn` connection observation,
//! `ingress` the verdict at a server connection's first received payload (called from `conn`),
//! `encrypted` the part of both payload verdicts that is not TLS (SSH, declared protocols),
//! `syscall` the syscall-tracepoint framework (`hook: syscall`), `file` the `hook: file`
//! consumer of it, `uring` the file hook's io_uring route, `path` the dentry walk and file
//! identity the exec and file hooks share.
#![no_std]
#![no_main]
// Map keys are passed by reference on purpose: by value, a 260-byte key is copied onto the
// 512-byte BPF stack. Slot loops index several parallel arrays by `k`, which the verifier
// tracks more cheaply than zipped iterators.
#![allow(clippy::needless_borrows_for_generic_args, clippy::needless_range_loop)]

mod backstop;
mod cgroup_move;
mod conn;
mod connect;
mod egress;
mod encrypted;
mod exec;
mod exit;
mod file;
mod fork;
mod ingress;
mod maps;
mod net;
mod noop;
mod path;
mod sockets;
mod sockops;
mod syscall;
mod uring;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
