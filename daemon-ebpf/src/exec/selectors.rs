//! Which selectors an exec matches: the selectors of a slot whose process conditions all hold,
//! and the exec-hook match records (and whether one kills the process).

use aya_ebpf::helpers::generated::bpf_loop;
use daemon_common::*;

use crate::maps::*;

/// State of [`sel_step`]: selectors of `slot` whose process conditions hold under `truth`.
#[repr(C)]
struct SelLoop {
    slot: u32,
    count: u32,
    truth: u64,
    bits: u64,
}

#[inline(never)]
extern "C" fn sel_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut SelLoop) };
    let i = (index & 63) as u32;
    if i >= c.count {
        return 1;
    }
    if let Some(sel) = selector(c.slot, i) {
        if sel.proc_required & !c.truth == 0 {
            c.bits |= 1u64 << i;
        }
    }
    0
}

/// Bitmask of the selectors of `slot` whose process conditions all hold under `truth`
/// (a `bpf_loop`, so the verifier checks the body once).
#[inline(always)]
pub(super) fn eval_selectors(slot: u32, count: u32, truth: u64) -> u64 {
    let mut c = SelLoop {
        slot,
        count,
        truth,
        bits: 0,
    };
    unsafe {
        bpf_loop(
            MAX_SELECTORS as u32,
            sel_step as *mut core::ffi::c_void,
            (&mut c as *mut SelLoop).cast(),
            0,
        )
    };
    c.bits
}

/// State of [`exec_match_step`]: reports the exec-hook selectors in `matched`, `kill` is set
/// when one of them is an enforce-mode Sigkill. With `reason` `REASON_CAPACITY`, `matched` are
/// the connect/egress selectors of a process whose state could not be stored: the
/// enforce-mode Block ones are reported and kill it.
#[repr(C)]
pub(super) struct MatchLoop {
    pub(super) matched: u64,
    /// Selectors that matched only because the arguments were incomplete.
    pub(super) forced: u64,
    pub(super) cgroup_id: u64,
    pub(super) now: u64,
    pub(super) slot: u32,
    pub(super) tgid: u32,
    pub(super) kill: u32,
    pub(super) reason: u32,
}

#[inline(never)]
pub(super) extern "C" fn exec_match_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut MatchLoop) };
    let i = (index & 63) as u32;
    if c.matched & (1u64 << i) == 0 {
        return 0;
    }
    let Some(sel) = selector(c.slot, i) else {
        return 0;
    };
    let capacity = c.reason == REASON_CAPACITY as u32;
    let action = if capacity {
        ACTION_BLOCK
    } else {
        ACTION_SIGKILL
    };
    let enforced = sel.mode == MODE_ENFORCE && sel.actions & action != 0;
    if capacity && !enforced {
        return 0;
    }
    if enforced {
        c.kill = 1;
    }
    let m = MatchEvent {
        header: header(EVENT_MATCH, c.tgid, c.now),
        slot: c.slot as u8,
        selector: i as u8,
        hook: sel.hook,
        actions: sel.actions,
        enforced: enforced as u8,
        encryption: 0,
        reason: if c.forced & (1u64 << i) != 0 {
            REASON_ARGS_INCOMPLETE
        } else {
            c.reason as u8
        },
        _pad: 0,
        cgroup_id: c.cgroup_id,
        dest: Destination::default(),
        tid: 0,
    };
    emit_now(&m);
    0
}
