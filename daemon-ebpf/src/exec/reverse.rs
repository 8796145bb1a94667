//! Reversed string tails, the keys of the postfix matchers (`BIN_POSTFIX`, `ARG_POSTFIX`):
//! copied byte by byte in a `bpf_loop` callback the verifier checks once.

use aya_ebpf::helpers::generated::bpf_loop;

use crate::maps::*;

/// Where [`reverse_step`] copies from (into the postfix key of the matching kind).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Reversed {
    /// `event.path` into `path_lpm`.
    EventPath,
    /// `fname` into `path_lpm`.
    Filename,
    /// `target` into `path_lpm`.
    Target,
    /// `arg_buf` into `arg_lpm`.
    Arg,
}

/// State of [`reverse_step`].
#[repr(C)]
struct ReverseLoop {
    which: Reversed,
    /// Bytes of the string (its last byte is copied first).
    n: u32,
}

/// `dst[j] = src[n-1-j]` for one `j` (`bpf_loop` callback): the reversed tail of a string,
/// the postfix matchers' key. A callback the verifier checks once, where a byte loop inline
/// is walked byte by byte on every path that reaches it (which put the exec program over the
/// verifier's instruction limit).
#[inline(never)]
extern "C" fn reverse_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &*(ctx as *const ReverseLoop) };
    let Some(s) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let s = unsafe { &mut *s };
    let j = (index as usize) & 0xff;
    let at = (c.n as usize).wrapping_sub(1).wrapping_sub(j) & 0xff;
    let (src, dst): (*const u8, *mut u8) = match c.which {
        Reversed::EventPath => (
            s.event.path.as_ptr(),
            core::ptr::addr_of_mut!(s.path_lpm.data.bytes) as *mut u8,
        ),
        Reversed::Filename => (
            s.fname.as_ptr(),
            core::ptr::addr_of_mut!(s.path_lpm.data.bytes) as *mut u8,
        ),
        Reversed::Target => (
            s.target.as_ptr(),
            core::ptr::addr_of_mut!(s.path_lpm.data.bytes) as *mut u8,
        ),
        Reversed::Arg => (
            s.arg_buf.as_ptr(),
            core::ptr::addr_of_mut!(s.arg_lpm.data.bytes) as *mut u8,
        ),
    };
    // The key buffers hold at least 128 bytes (args) and 255 (paths); j stays below the
    // copied length, which the callers bound to those sizes.
    unsafe { core::ptr::write_volatile(dst.add(j), core::ptr::read_volatile(src.add(at))) };
    0
}

/// Writes the last `min(n, cap)` bytes of a string reversed into the postfix key (bytes after
/// them are not compared by the LPM lookup, so they are left as they are).
#[inline(always)]
pub(super) fn copy_reversed(which: Reversed, n: usize, cap: usize) {
    let l = if n > cap { cap } else { n };
    let mut c = ReverseLoop {
        which,
        n: (n & 0xff) as u32,
    };
    unsafe {
        bpf_loop(
            l as u32,
            reverse_step as *mut core::ffi::c_void,
            (&mut c as *mut ReverseLoop).cast(),
            0,
        )
    };
}
