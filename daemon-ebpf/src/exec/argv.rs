//! The argv walk: every element of the new process's argument area, read in chunks by a
//! `bpf_loop` whose state lives in the scratch map, looked up in the argument matchers (exact,
//! prefix, postfix; by index and any index); for a loader exec, the loader's target found
//! among its options.

use aya_ebpf::helpers::generated::{
    bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_str,
};
use daemon_common::*;

use super::reverse::{copy_reversed, Reversed};
use crate::maps::*;

/// [`ArgWalk::done`]: the walk reached the end of the argument area.
pub(super) const ARGS_COMPLETE: u32 = 1;
/// [`ArgWalk::done`]: the walk stopped early (a bound, or a read failed).
pub(super) const ARGS_INCOMPLETE: u32 = 2;
/// Steps of the argv walk: one per element plus one per further chunk of a long element; with
/// at most `MAX_ARG_BYTES` bytes that is at most `MAX_ARG_ELEMENTS + MAX_ARG_BYTES / 255`.
pub(super) const ARG_STEPS: u32 = (MAX_ARG_ELEMENTS + MAX_ARG_BYTES / (ARG_BUF - 1) + 2) as u32;

/// [`ArgWalk::target`]: not a loader exec, or the target cannot be matched (longer than a
/// path buffer).
pub(super) const TARGET_NONE: u32 = 0;
/// Looking at the loader's options for the first element that is not one.
pub(super) const TARGET_SEEK: u32 = 1;
/// The element is the value of a loader option (`--library-path DIR`).
const TARGET_SKIP: u32 = 2;
/// After `--`: the element is the target.
const TARGET_NEXT: u32 = 3;
/// Copied into `ExecScratch::target`.
pub(super) const TARGET_FOUND: u32 = 4;

/// Follows a loader's command line (glibc's ld.so): after argv[0], options start with `--`;
/// those in `LOADER_ARG_OPTIONS` take the next element as their value, `--` ends them; the
/// first other element is the program it loads. `first` is the element's first read (`len`
/// bytes in `arg_buf`, `ends`: it ends there).
#[inline(always)]
fn loader_target(s: &mut ExecScratch, len: usize, ends: bool) {
    if s.argv.index == 0 {
        return;
    }
    let dashes = len >= 2 && s.arg_buf[0] == b'-' && s.arg_buf[1] == b'-';
    match s.argv.target {
        TARGET_SKIP => {
            s.argv.target = TARGET_SEEK;
            return;
        }
        TARGET_SEEK if dashes => {
            if len == 2 {
                s.argv.target = TARGET_NEXT;
            } else if ends && len < LOADER_OPTION_LEN {
                zero_fill(s.option.as_mut_ptr(), LOADER_OPTION_LEN as u32);
                let n = (len as u32) & (LOADER_OPTION_LEN as u32 - 1);
                unsafe {
                    bpf_probe_read_kernel(
                        s.option.as_mut_ptr().cast(),
                        n,
                        s.arg_buf.as_ptr().cast(),
                    )
                };
                if unsafe { LOADER_ARG_OPTIONS.get(&s.option) }.is_some() {
                    s.argv.target = TARGET_SKIP;
                }
            }
            return;
        }
        TARGET_SEEK | TARGET_NEXT => {}
        _ => return,
    }
    // The target; one that does not fit a path buffer is not matched (documented).
    let n = (len as u32) & 0xff;
    if !ends || n == 0 {
        s.argv.target = TARGET_NONE;
        return;
    }
    zero_fill(s.target.as_mut_ptr(), PATH_LEN as u32);
    unsafe { bpf_probe_read_kernel(s.target.as_mut_ptr().cast(), n, s.arg_buf.as_ptr().cast()) };
    s.argv.target = TARGET_FOUND;
    s.argv.target_len = n;
}

/// Which argument matcher a lookup goes to (its key is prepared in the scratch).
#[derive(Clone, Copy)]
enum ArgMatcher {
    Exact,
    Prefix,
    Postfix,
}

/// Looks the prepared key up under the element's own index (argv[0..MAX_ARGS]) and, for
/// argv[1..] when some condition has no index, under `ARG_ANY_INDEX`, in every evaluated slot.
#[inline(always)]
fn arg_lookup(s: &mut ExecScratch, which: ArgMatcher) {
    let bit = match which {
        ArgMatcher::Exact => LOOKUP_ARG_EXACT,
        ArgMatcher::Prefix => LOOKUP_ARG_PREFIX,
        ArgMatcher::Postfix => LOOKUP_ARG_POSTFIX,
    };
    let own = s.argv.index < MAX_ARGS as u32;
    let any = s.argv.index != 0 && s.paths.lookups & LOOKUP_ARG_ANY != 0;
    for with_any in [false, true] {
        if (with_any && !any) || (!with_any && !own) {
            continue;
        }
        let index = if with_any {
            ARG_ANY_INDEX
        } else {
            (s.argv.index & 0xff) as u8
        };
        for k in 0..SLOTS {
            if (k as u32) >= s.paths.n || s.paths.slot_lookups[k] & bit == 0 {
                continue;
            }
            let slot = s.paths.slot[k] as u8;
            let hit = match which {
                ArgMatcher::Exact => {
                    s.arg_key.index = index;
                    s.arg_key.slot = slot;
                    unsafe { ARG_EXACT.get(&s.arg_key) }.copied()
                }
                ArgMatcher::Prefix | ArgMatcher::Postfix => {
                    s.arg_lpm.data.index = index;
                    s.arg_lpm.data.slot = slot;
                    let m = if matches!(which, ArgMatcher::Postfix) {
                        &ARG_POSTFIX
                    } else {
                        &ARG_PREFIX
                    };
                    m.get(&s.arg_lpm).copied()
                }
            };
            if let Some(h) = hit {
                s.argv.hits[k] |= h;
            }
        }
    }
}

/// Prefix lookup of the `l` (<= ARG_LEN) first bytes of the element at `at`.
#[inline(always)]
fn arg_prefix(s: &mut ExecScratch, at: u64, l: usize) {
    if s.paths.lookups & LOOKUP_ARG_PREFIX == 0 {
        return;
    }
    s.arg_lpm.prefix_len = 8 * (2 + l as u32);
    let dst = core::ptr::addr_of_mut!(s.arg_lpm.data.bytes) as *mut u8;
    read_user(dst, l, at as *const core::ffi::c_void);
    arg_lookup(s, ArgMatcher::Prefix);
}

/// Postfix lookup of the last `l` (<= ARG_LEN) bytes of an element, which are the first `n`
/// bytes of `arg_buf` read up to the element's end (`l = min(n, ARG_LEN)`).
#[inline(always)]
fn arg_postfix(s: &mut ExecScratch, n: usize) {
    if s.paths.lookups & LOOKUP_ARG_POSTFIX == 0 {
        return;
    }
    let l = if n > ARG_LEN { ARG_LEN } else { n };
    s.arg_lpm.prefix_len = 8 * (2 + l as u32);
    copy_reversed(Reversed::Arg, n, ARG_LEN);
    arg_lookup(s, ArgMatcher::Postfix);
}

/// One step of the argv walk (`bpf_loop` callback; returns 1 to stop). A step reads up to
/// `ARG_BUF - 1` bytes at `p` with `bpf_probe_read_user_str`. An element that ends in them is
/// matched (exact, prefix, postfix) and the walk moves to the next one; a longer one is
/// matched on its first bytes (prefix; exact cannot match) and skipped chunk by chunk, and
/// its last bytes are read for the postfix lookup once its end is found. Every element is
/// examined, up to `MAX_ARG_ELEMENTS` elements within `MAX_ARG_BYTES` bytes; stopping early
/// leaves the walk incomplete (the caller fails closed).
#[inline(never)]
pub(super) extern "C" fn arg_step(_step: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let s = unsafe { &mut *s };
    if s.argv.p >= s.argv.end {
        s.argv.done = ARGS_COMPLETE;
        return 1;
    }
    if s.argv.p >= s.argv.limit || s.argv.index >= MAX_ARG_ELEMENTS as u32 {
        s.argv.done = ARGS_INCOMPLETE;
        return 1;
    }
    let at = s.argv.p;
    let n = unsafe {
        bpf_probe_read_user_str(
            s.arg_buf.as_mut_ptr().cast(),
            ARG_BUF as u32,
            at as *const core::ffi::c_void,
        )
    };
    if n <= 0 {
        count(COUNTER_READ_FAILED);
        s.argv.done = ARGS_INCOMPLETE;
        return 1;
    }
    // `len` bytes before a NUL, or ARG_BUF - 1 bytes of a string that may go on.
    let len = ((n as usize) - 1) & (ARG_BUF - 1);
    // A full read ends the element only if the byte after it is its NUL.
    let ends = (n as usize) < ARG_BUF || {
        let mut next = [1u8; 1];
        let r = unsafe {
            bpf_probe_read_user(
                next.as_mut_ptr().cast(),
                1,
                (at + len as u64) as *const core::ffi::c_void,
            )
        };
        r == 0 && next[0] == 0
    };
    if s.argv.elem_start == 0 && s.argv.target != TARGET_NONE && s.argv.target != TARGET_FOUND {
        loader_target(s, len, ends);
        if s.argv.args == 0 && (s.argv.target == TARGET_NONE || s.argv.target == TARGET_FOUND) {
            // Only the target was wanted.
            s.argv.done = ARGS_COMPLETE;
            return 1;
        }
    }
    // Bytes in `arg_buf` whose reverse is the postfix key, when the element ends here.
    let mut postfix = 0usize;
    if s.argv.elem_start == 0 {
        // The first bytes of element `index`.
        let l = if len > ARG_LEN { ARG_LEN } else { len };
        arg_prefix(s, at, l);
        if ends {
            // Exact: values longer than ARG_LEN can never equal a policy value.
            if s.paths.lookups & LOOKUP_ARG_EXACT != 0 && len <= ARG_LEN {
                zero_fill(s.arg_key.value.as_mut_ptr(), ARG_LEN as u32);
                read_user(
                    s.arg_key.value.as_mut_ptr(),
                    len,
                    at as *const core::ffi::c_void,
                );
                arg_lookup(s, ArgMatcher::Exact);
            }
            postfix = len;
        } else {
            s.argv.elem_start = at;
        }
    } else if ends {
        // The end of a long element: its last ARG_LEN bytes end at `at + len`.
        let tail = at + len as u64 - ARG_LEN as u64;
        let r = unsafe {
            bpf_probe_read_user(
                s.arg_buf.as_mut_ptr().cast(),
                ARG_LEN as u32,
                tail as *const core::ffi::c_void,
            )
        };
        if r != 0 {
            count(COUNTER_READ_FAILED);
            s.argv.done = ARGS_INCOMPLETE;
            return 1;
        }
        postfix = ARG_LEN;
    }
    if ends {
        // One call site: the verifier walks the byte loop of the reversal once per path.
        arg_postfix(s, postfix);
        s.argv.elem_start = 0;
        s.argv.index += 1;
        s.argv.p = at + len as u64 + 1;
    } else {
        s.argv.p = at + len as u64;
    }
    0
}

/// Reads `len` (1..=ARG_LEN, else nothing) bytes of user memory.
#[inline(always)]
fn read_user(dst: *mut u8, len: usize, src: *const core::ffi::c_void) {
    let n = (len as u32) & 0xff;
    if n == 0 || n > ARG_LEN as u32 {
        return;
    }
    unsafe { bpf_probe_read_user(dst.cast(), n, src) };
}
