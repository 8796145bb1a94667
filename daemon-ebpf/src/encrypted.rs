//! The part of the payload verdict that is not TLS, one definition for both payload hooks: a
//! first payload that is not TLS is still encrypted ([`ENC_ENCRYPTED`]) when it is SSH
//! ([`ssh`]: `daemon_common::ssh`, an identification line alone or followed by a well-formed
//! KEXINIT packet header) or carries a declared protocol's signature ([`declared`]:
//! [`DECLARED_PROTOCOLS`], `daemon_common::SignatureEntry`, the whole signature within the
//! payload). The egress verdict (`egress.rs`, sk_msg: the stream's first send) and the ingress
//! verdict (`ingress.rs`, cgroup_skb: the first segment) call the same functions over their
//! own [`FirstPayload`] — the hooks reach the bytes differently (a message made linear with
//! `bpf_msg_pull_data`, a packet read with `bpf_skb_load_bytes`), the checks do not differ.
//!
//! Both walks are `bpf_loop`s whose steps the verifier checks once, not once per byte or per
//! table entry — provided the state they carry from step to step is not tracked by value: the
//! sk_msg program keeps the SSH walk in the socket's storage ([`MsgPayload::walk`]); with it on
//! the stack the program exceeded the verifier's 1M-instruction budget (E2BIG, measured). The
//! cgroup_skb program keeps it in a per-CPU map value ([`SkbPayload::walk`]) for the same
//! reason.

use aya_ebpf::{
    bindings::{__sk_buff, sk_msg_md},
    helpers::generated::{bpf_loop, bpf_msg_pull_data, bpf_skb_load_bytes},
    macros::map,
    maps::Array,
};
use daemon_common::ssh::SshWalk;
use daemon_common::*;

/// The declared encrypted protocols (`daemon_common::SignatureEntry`; userspace writes them).
#[map]
pub static DECLARED_PROTOCOLS: Array<SignatureEntry> =
    Array::with_max_entries(MAX_DECLARED_PROTOCOLS as u32, 0);

/// Bytes the SSH scanner may need: the identification line and a packet header.
pub const SSH_BYTES: u32 = daemon_common::ssh::MAX_LINE as u32 + 6;

/// A first payload as a hook reaches it: `size` bytes from offset 0.
pub trait FirstPayload: Copy {
    /// Where the SSH walk keeps its scanner and position: see [`MsgPayload::walk`].
    fn walk(&mut self) -> &mut SshWalk;
    /// Makes the first `len` (at most [`SSH_BYTES`]) bytes readable by [`FirstPayload::byte`];
    /// false when they cannot be.
    fn prefix(&self, len: u32) -> bool;
    /// The byte at `pos` (within the prefix made readable), `None` when it cannot be read.
    fn byte(&self, pos: u32) -> Option<u8>;
    /// Loads the `n` bytes (`1..=MAX_SIGNATURE_BYTES`) at `offset` into `out`; false when they
    /// cannot be read.
    fn window(&self, offset: u32, n: u32, out: &mut [u8; MAX_SIGNATURE_BYTES]) -> bool;
}

/// A packet's payload (cgroup_skb): `base` is where it starts in the packet.
#[derive(Clone, Copy)]
pub struct SkbPayload {
    pub skb: *mut __sk_buff,
    pub base: u32,
    /// The SSH walk, in a per-CPU map value (`ingress::IngressWalks`), for the reason
    /// [`MsgPayload::walk`] gives.
    pub walk: *mut SshWalk,
}

impl FirstPayload for SkbPayload {
    #[inline(always)]
    fn walk(&mut self) -> &mut SshWalk {
        unsafe { &mut *self.walk }
    }

    #[inline(always)]
    fn prefix(&self, _len: u32) -> bool {
        true
    }

    #[inline(always)]
    fn byte(&self, pos: u32) -> Option<u8> {
        let mut b = 0u8;
        let r = unsafe {
            bpf_skb_load_bytes(
                self.skb.cast(),
                self.base + pos,
                (&mut b as *mut u8).cast(),
                1,
            )
        };
        (r == 0).then_some(b)
    }

    #[inline(always)]
    fn window(&self, offset: u32, n: u32, out: &mut [u8; MAX_SIGNATURE_BYTES]) -> bool {
        // 1..=MAX_SIGNATURE_BYTES in a form the verifier bounds.
        let n = ((n - 1) & (MAX_SIGNATURE_BYTES as u32 - 1)) + 1;
        unsafe {
            bpf_skb_load_bytes(
                self.skb.cast(),
                self.base + offset,
                out.as_mut_ptr().cast(),
                n,
            ) == 0
        }
    }
}

/// A message being sent (sk_msg): its bytes are read where `bpf_msg_pull_data` made them
/// linear, so every read re-reads the message's data pointers.
#[derive(Clone, Copy)]
pub struct MsgPayload {
    pub msg: *mut sk_msg_md,
    /// The SSH walk, in the socket's storage (`SockState::ssh`; the socket is locked while it
    /// sends). On the stack the verifier tracks the scanner's fields and the position (added
    /// to a packet pointer) exactly, and verifies the walk's step once per value they take:
    /// with the rest of the sk_msg program that exceeded the verifier's 1M-instruction budget
    /// (E2BIG). Values read from a map are not tracked, so the step is verified once — the TLS
    /// scanner's state lives there for the same reason.
    pub walk: *mut SshWalk,
}

impl MsgPayload {
    /// The linear part of the message: `(data, data_end)`. Context fields are read one by one
    /// with volatile loads: the verifier only allows constant-offset loads from the context.
    #[inline(always)]
    fn data(&self) -> (usize, usize) {
        unsafe {
            use core::ptr::{addr_of, read_volatile as rv};
            (
                rv(addr_of!((*self.msg).__bindgen_anon_1.data)) as usize,
                rv(addr_of!((*self.msg).__bindgen_anon_2.data_end)) as usize,
            )
        }
    }
}

impl FirstPayload for MsgPayload {
    #[inline(always)]
    fn walk(&mut self) -> &mut SshWalk {
        unsafe { &mut *self.walk }
    }

    #[inline(always)]
    fn prefix(&self, len: u32) -> bool {
        unsafe { bpf_msg_pull_data(self.msg, 0, len, 0) == 0 }
    }

    #[inline(always)]
    fn byte(&self, pos: u32) -> Option<u8> {
        let (data, end) = self.data();
        // The prefix is at most SSH_BYTES (< 512) long: a bound the verifier can see.
        let at = (pos & 511) as usize;
        if data + at + 1 > end {
            return None;
        }
        Some(unsafe { *((data + at) as *const u8) })
    }

    #[inline(always)]
    fn window(&self, offset: u32, n: u32, out: &mut [u8; MAX_SIGNATURE_BYTES]) -> bool {
        if unsafe { bpf_msg_pull_data(self.msg, offset, offset + n, 0) } != 0 {
            return false;
        }
        let (data, end) = self.data();
        for k in 0..MAX_SIGNATURE_BYTES {
            if k as u32 >= n {
                break;
            }
            if data + k + 1 > end {
                return false;
            }
            out[k] = unsafe { *((data + k) as *const u8) };
        }
        true
    }
}

/// State of [`ssh_step`]; the scanner and position are the payload's [`FirstPayload::walk`].
#[repr(C)]
struct SshLoop<P> {
    payload: P,
    size: u32,
    /// 1 when a byte could not be read (fail closed).
    failed: u32,
}

#[inline(never)]
extern "C" fn ssh_step<P: FirstPayload>(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut SshLoop<P>) };
    let pos = c.payload.walk().pos;
    if pos >= c.size {
        return 1;
    }
    let Some(b) = c.payload.byte(pos) else {
        c.failed = 1;
        return 1;
    };
    let walk = c.payload.walk();
    walk.pos = pos + 1;
    if walk.scan.feed(b) != ENC_PENDING {
        return 1;
    }
    0
}

/// Whether a first payload of `size` bytes is SSH: an identification line, alone or followed
/// by a well-formed first packet header (`daemon_common::ssh`, its first-payload rule).
#[inline(never)]
pub fn ssh<P: FirstPayload>(mut payload: P, size: u32) -> bool {
    let len = if size < SSH_BYTES { size } else { SSH_BYTES };
    if len == 0 || !payload.prefix(len) {
        return false;
    }
    *payload.walk() = SshWalk::new();
    let mut c = SshLoop {
        payload,
        size: len,
        failed: 0,
    };
    unsafe {
        bpf_loop(
            SSH_BYTES,
            ssh_step::<P> as *mut core::ffi::c_void,
            (&mut c as *mut SshLoop<P>).cast(),
            0,
        )
    };
    if c.failed != 0 {
        return false;
    }
    let walk = c.payload.walk();
    walk.scan.verdict == ENC_ENCRYPTED || (walk.pos == size && walk.scan.line_complete())
}

/// State of [`declared_step`].
#[repr(C)]
struct DeclaredLoop<P> {
    payload: P,
    size: u32,
    /// Out: 1 when an entry's signature is in the payload.
    found: u32,
}

#[inline(never)]
extern "C" fn declared_step<P: FirstPayload>(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut DeclaredLoop<P>) };
    let Some(e) = DECLARED_PROTOCOLS.get(index as u32) else {
        return 1;
    };
    let offset = e.offset as u32;
    if e.len == 0 || offset >= c.size {
        return 0;
    }
    let left = c.size - offset;
    let n = if left < MAX_SIGNATURE_BYTES as u32 {
        left
    } else {
        MAX_SIGNATURE_BYTES as u32
    };
    // A signature longer than what is left cannot match: no read needed.
    if n < e.len as u32 {
        return 0;
    }
    let mut window = [0u8; MAX_SIGNATURE_BYTES];
    if !c.payload.window(offset, n, &mut window) {
        return 0;
    }
    if e.matches(&window, n as usize) {
        c.found = 1;
        return 1;
    }
    0
}

/// Whether a first payload of `size` bytes carries a declared protocol's signature.
#[inline(never)]
pub fn declared<P: FirstPayload>(payload: P, size: u32) -> bool {
    let mut c = DeclaredLoop {
        payload,
        size,
        found: 0,
    };
    unsafe {
        bpf_loop(
            MAX_DECLARED_PROTOCOLS as u32,
            declared_step::<P> as *mut core::ffi::c_void,
            (&mut c as *mut DeclaredLoop<P>).cast(),
            0,
        )
    };
    c.found != 0
}
