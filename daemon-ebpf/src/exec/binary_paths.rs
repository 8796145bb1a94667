//! The binary path lookups of an exec: `BIN_EXACT`, `BIN_PREFIX` and `BIN_POSTFIX` for each of
//! the paths it is matched by (the executed file's, the execve filename, a loader's target),
//! in every evaluated slot.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;
use daemon_common::*;

use super::reverse::{copy_reversed, Reversed};
use crate::maps::*;

/// Binary condition hits (exact, prefix, postfix) of path `index` (0: `event.path`, 1:
/// `fname`, 2: `target`) for the evaluated slots (`bpf_loop` callback; its state is
/// `ExecScratch::paths`).
#[inline(never)]
pub(super) extern "C" fn path_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(s) = EXEC_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let s = unsafe { &mut *s };
    // Branches, not `[index]`: the verifier refuses LLVM's pointer arithmetic on the index.
    let (src, which, path_len, complete, present) = if index == 0 {
        let p = &s.paths;
        (
            s.event.path.as_ptr(),
            Reversed::EventPath,
            p.len[0],
            p.complete[0],
            p.present[0],
        )
    } else if index == 1 {
        let p = &s.paths;
        (
            s.fname.as_ptr(),
            Reversed::Filename,
            p.len[1],
            p.complete[1],
            p.present[1],
        )
    } else {
        let p = &s.paths;
        (
            s.target.as_ptr(),
            Reversed::Target,
            p.len[2],
            p.complete[2],
            p.present[2],
        )
    };
    if present == 0 {
        return 0;
    }
    let path_len = (path_len as usize) & (PATH_LEN - 1);
    let complete = complete != 0;
    let lookups = s.paths.lookups;
    if complete && lookups & LOOKUP_BIN_EXACT != 0 {
        // The path buffers are zero-filled after the path: a plain copy gives the key.
        unsafe {
            bpf_probe_read_kernel(
                s.path_key.path.as_mut_ptr().cast(),
                PATH_LEN as u32,
                src.cast(),
            )
        };
        for k in 0..SLOTS {
            if (k as u32) < s.paths.n && s.paths.slot_lookups[k] & LOOKUP_BIN_EXACT != 0 {
                s.path_key.slot = s.paths.slot[k];
                if let Some(h) = unsafe { BIN_EXACT.get(&s.path_key) } {
                    s.paths.hits[k] |= *h;
                }
            }
        }
    }
    if lookups & (LOOKUP_BIN_PREFIX | LOOKUP_BIN_POSTFIX) != 0 {
        let l = if path_len > PATH_AFFIX_LEN {
            PATH_AFFIX_LEN
        } else {
            path_len
        };
        s.path_lpm.prefix_len = 8 * (1 + l as u32);
        for (bit, reverse) in [(LOOKUP_BIN_PREFIX, false), (LOOKUP_BIN_POSTFIX, true)] {
            if lookups & bit == 0 || (reverse && !complete) {
                continue;
            }
            let dst = core::ptr::addr_of_mut!(s.path_lpm.data.bytes) as *mut u8;
            // Bytes after the prefix length are not compared: no zeroing needed.
            if reverse {
                copy_reversed(which, path_len, PATH_AFFIX_LEN);
            } else {
                unsafe { bpf_probe_read_kernel(dst.cast(), PATH_AFFIX_LEN as u32, src.cast()) };
            }
            for k in 0..SLOTS {
                if (k as u32) < s.paths.n && s.paths.slot_lookups[k] & bit != 0 {
                    s.path_lpm.data.slot = s.paths.slot[k] as u8;
                    let m = if reverse { &BIN_POSTFIX } else { &BIN_PREFIX };
                    if let Some(h) = m.get(&s.path_lpm) {
                        s.paths.hits[k] |= *h;
                    }
                }
            }
        }
    }
    0
}
