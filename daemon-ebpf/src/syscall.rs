//! The syscall-tracepoint framework (daemon-common `syscall`): `bulwark_sys_enter` and
//! `bulwark_sys_exit` on the raw tracepoints `sys_enter` / `sys_exit`, attached only while some
//! policy uses a syscall hook. The first thing each does is one `SYSCALL_FILTER` lookup by call
//! number; every call no policy names returns there. Then the process's cached selector bits
//! (its group's table, via `GROUPS`) against the selectors naming the call, then the
//! selectors' argument conditions (at entry) and return conditions (at exit, from what entry
//! stored per thread). A match is one `EVENT_SYSCALL` record plus one `EVENT_MATCH` per
//! selector; an enforce-mode `Sigkill` sends SIGKILL to the caller (delivered when the call
//! returns to user space: a call killed at entry still runs, see docs/syscalls.md).
//! `hook: file` (`crate::file`) is called after the filter lookup on `SYSCALL_WANT_FILE`.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_task, bpf_loop, bpf_send_signal,
    },
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use daemon_common::*;

use crate::maps::*;

const SIGKILL: u32 = 9;

/// Where the call number and arguments are in `pt_regs` (set by userspace at load).
#[unsafe(no_mangle)]
pub static SYSCALL_REGS: SyscallRegs = SyscallRegs {
    nr: 0,
    compat_status: 0,
    compat_bit: 0,
    _pad: 0,
    args: [0; 6],
    compat_args: [0; 6],
};

#[inline(always)]
fn regs_layout() -> SyscallRegs {
    unsafe { core::ptr::read_volatile(&SYSCALL_REGS) }
}

/// The filter index of the current call and its `WANT_*` bits; `None` when nothing wants it.
/// One array lookup for every call nobody names.
#[inline(always)]
fn filter(nr: u64, layout: &SyscallRegs) -> Option<(u32, u32)> {
    if nr >= u64::from(SYSCALL_NR_LIMIT) {
        return None;
    }
    let nr = nr as u32;
    let want = *SYSCALL_FILTER.get(nr)?;
    if want == 0 {
        return None;
    }
    let compat = layout.compat_status != 0
        && read_kernel::<u32>(unsafe { bpf_get_current_task() }, layout.compat_status)
            & layout.compat_bit
            != 0;
    if compat {
        if want & SYSCALL_WANT_COMPAT == 0 {
            return None;
        }
        let index = SYSCALL_COMPAT_BASE + nr;
        let want = *SYSCALL_FILTER.get(index)?;
        return (want != 0).then_some((index, want));
    }
    (want & !SYSCALL_WANT_COMPAT != 0).then_some((nr, want))
}

/// What the file hook needs of a call: its filter index and bits, and where its arguments are
/// in its saved registers `regs` (the same at entry and exit).
#[inline(always)]
fn file_call(index: u32, want: u32, regs: u64, layout: &SyscallRegs) -> crate::file::Call {
    let compat = index >= SYSCALL_COMPAT_BASE;
    crate::file::Call {
        index,
        want,
        regs,
        args: if compat {
            layout.compat_args
        } else {
            layout.args
        },
        compat,
    }
}

/// Do the selector's conditions hold? `ret`: `None` at entry, where return conditions are left
/// for the exit (they count as holding).
#[inline(always)]
fn conds_hold(c: &SyscallSelectorConds, args: &[u64; 8], ret: Option<i64>) -> bool {
    let mut present = 0u32;
    let mut hit = 0u32;
    let mut negated = 0u32;
    for k in 0..MAX_SYSCALL_CONDS {
        if k >= c.count as usize {
            break;
        }
        let cond = &c.conds[k];
        let g = 1u32 << (cond.group & 7);
        let v = if cond.what == SYSCALL_COND_RETURN {
            match ret {
                Some(r) => r as u64,
                None => continue,
            }
        } else {
            // A power-of-two array and mask keep the stack read's bounds exact for the
            // verifier (`% 6` loses them); entries 6 and 7 stay 0.
            args[(cond.what & 7) as usize]
        };
        present |= g;
        if cond.negated != 0 {
            negated |= g;
        }
        let t = match cond.op {
            SYSCALL_OP_EQUAL => v == cond.value,
            SYSCALL_OP_MASK => v & cond.value != 0,
            SYSCALL_OP_GREATER => (v as i64) > (cond.value as i64),
            SYSCALL_OP_LESS => (v as i64) < (cond.value as i64),
            _ => false,
        };
        if t {
            hit |= g;
        }
    }
    (hit ^ negated) & present == present
}

/// State of one evaluation over the candidate selectors ([`judge_step`]).
#[repr(C)]
struct Judge {
    args: [u64; 8],
    ret: i64,
    /// Candidates left to judge.
    candidates: u64,
    /// Decided now and holding.
    matched: u64,
    /// To be decided at exit (entry only).
    later: u64,
    /// Of `matched`: enforce-mode Sigkill selectors.
    kill: u64,
    table: u32,
    /// 1 at exit.
    at_exit: u32,
}

#[inline(never)]
extern "C" fn judge_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let j = unsafe { &mut *(ctx as *mut Judge) };
    let i = (index & 63) as u32;
    let bit = 1u64 << i;
    if j.candidates & bit == 0 {
        return 0;
    }
    let Some(c) = SYSCALL_CONDS.get((j.table & 0xff) * MAX_SELECTORS as u32 + i) else {
        return 0;
    };
    let ret = if j.at_exit != 0 { Some(j.ret) } else { None };
    if !conds_hold(c, &j.args, ret) {
        return 0;
    }
    if j.at_exit == 0 && c.at_exit != 0 {
        j.later |= bit;
        return 0;
    }
    j.matched |= bit;
    if kills(j.table, i) {
        j.kill |= bit;
    }
    0
}

/// State of [`report_step`]: one match record per matched selector.
#[repr(C)]
struct Report {
    matched: u64,
    kill: u64,
    cgroup_id: u64,
    /// The subject record's header, as `EVENT_MATCH`: same time, process.
    header: EventHeader,
    table: u32,
    tid: u32,
}

#[inline(never)]
extern "C" fn report_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let r = unsafe { &mut *(ctx as *mut Report) };
    let i = (index & 63) as u32;
    let bit = 1u64 << i;
    if r.matched & bit == 0 {
        return 0;
    }
    let Some(sel) = selector(r.table, i) else {
        return 0;
    };
    let m = MatchEvent {
        header: r.header,
        slot: r.table as u8,
        selector: i as u8,
        hook: sel.hook,
        actions: sel.actions,
        enforced: (r.kill & bit != 0) as u8,
        encryption: 0,
        reason: REASON_NONE,
        _pad: 0,
        cgroup_id: r.cgroup_id,
        dest: Destination::default(),
        tid: r.tid,
    };
    emit_now(&m);
    0
}

/// Judges `candidates` of `table` for this call; reports and kills what matched. Returns the
/// selectors left for the exit.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn decide(
    candidates: u64,
    table: u32,
    slot: u32,
    index: u32,
    args: [u64; 6],
    ret: Option<i64>,
    pid_tgid: u64,
    start_ns: u64,
) -> u64 {
    let mut padded = [0u64; 8];
    padded[..6].copy_from_slice(&args);
    let mut j = Judge {
        args: padded,
        ret: ret.unwrap_or(0),
        candidates,
        matched: 0,
        later: 0,
        kill: 0,
        table,
        at_exit: ret.is_some() as u32,
    };
    unsafe {
        bpf_loop(
            MAX_SELECTORS as u32,
            judge_step as *mut core::ffi::c_void,
            (&mut j as *mut Judge).cast(),
            0,
        )
    };
    if j.matched == 0 {
        return j.later;
    }
    let tgid = (pid_tgid >> 32) as u32;
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if j.kill != 0 {
        unsafe { bpf_send_signal(SIGKILL) };
    }
    let (nr, compat) = if index >= SYSCALL_COMPAT_BASE {
        (index - SYSCALL_COMPAT_BASE, 1)
    } else {
        (index, 0)
    };
    let ev = SyscallEvent {
        header: header(EVENT_SYSCALL, tgid, start_ns),
        args,
        ret: ret.unwrap_or(0),
        selectors: j.matched,
        cgroup_id,
        nr,
        tid: pid_tgid as u32,
        slot: slot as u8,
        compat,
        at_exit: ret.is_some() as u8,
        enforced: (j.kill != 0) as u8,
        table,
    };
    emit_now(&ev);
    report_matches(j.matched, j.kill, cgroup_id, &ev.header, ev.tid, table);
    j.later
}

/// One `EVENT_MATCH` record per selector of `matched` (shared with `hook: file`), each with
/// the time and thread of `subject` (the call's or access's record, emitted just before) so
/// userspace joins them exactly, whatever other threads emit in between.
#[inline(always)]
pub(crate) fn report_matches(
    matched: u64,
    kill: u64,
    cgroup_id: u64,
    subject: &EventHeader,
    tid: u32,
    table: u32,
) {
    let mut r = Report {
        matched,
        kill,
        cgroup_id,
        header: EventHeader {
            kind: EVENT_MATCH,
            ..*subject
        },
        table,
        tid,
    };
    unsafe {
        bpf_loop(
            MAX_SELECTORS as u32,
            report_step as *mut core::ffi::c_void,
            (&mut r as *mut Report).cast(),
            0,
        )
    };
}

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn bulwark_sys_enter(ctx: RawTracePointContext) -> i32 {
    let layout = regs_layout();
    let nr: u64 = ctx.arg(1);
    let Some((index, want)) = filter(nr, &layout) else {
        return 0;
    };
    if want & SYSCALL_WANT_FILE != 0 {
        crate::file::enter(&file_call(index, want, ctx.arg(0), &layout));
    }
    if want & SYSCALL_WANT_SYSCALL == 0 {
        return 0;
    }
    let pid_tgid = bpf_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(p) = (unsafe { PROCESSES.get(&tgid) }) else {
        return 0;
    };
    let slot = config().active_slot & 1;
    let table = process_table(slot, p.namespace_id);
    let named = match unsafe { SYSCALL_SELECTORS.get(&SyscallKey { table, index }) } {
        Some(m) => *m,
        None => return 0,
    };
    let candidates = named & p.selectors[slot as usize];
    if candidates == 0 {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let offs = if index >= SYSCALL_COMPAT_BASE {
        layout.compat_args
    } else {
        layout.args
    };
    let mut args = [0u64; 6];
    for k in 0..6 {
        args[k] = if index >= SYSCALL_COMPAT_BASE {
            // i386 registers are 32 bits wide; the upper half means nothing.
            read_kernel::<u32>(regs, offs[k]) as u64
        } else {
            read_kernel::<u64>(regs, offs[k])
        };
    }
    let later = decide(
        candidates, table, slot, index, args, None, pid_tgid, p.start_ns,
    );
    if later != 0 {
        let inflight = SyscallInflight {
            args,
            selectors: later,
            table,
            index,
            consumers: SYSCALL_WANT_SYSCALL,
            slot,
        };
        if SYSCALL_INFLIGHT
            .insert(&(pid_tgid as u32), &inflight, 0)
            .is_err()
        {
            count(COUNTER_LOST_EVENTS);
        }
    }
    0
}

/// The file hook's part of a call's exit, a call of its own: the file call's description is
/// not stacked on the exit program's frame (with `decide`'s it would pass the 512-byte limit).
#[inline(never)]
fn file_exit(ctx: &RawTracePointContext, nr: u64, regs: u64) {
    let layout = regs_layout();
    if let Some((index, want)) = filter(nr, &layout) {
        if want & SYSCALL_WANT_FILE != 0 {
            crate::file::exit(ctx, &file_call(index, want, regs, &layout));
        }
    }
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn bulwark_sys_exit(ctx: RawTracePointContext) -> i32 {
    let layout = regs_layout();
    if layout.nr == 0 {
        return 0;
    }
    let regs: u64 = ctx.arg(0);
    let nr = read_kernel::<u64>(regs, layout.nr);
    if nr >= u64::from(SYSCALL_NR_LIMIT) {
        return 0;
    }
    // First: does anything wait for this call's exit (natively or as a compat call)?
    match SYSCALL_FILTER.get(nr as u32) {
        Some(w) if *w & (SYSCALL_WANT_EXIT | SYSCALL_WANT_COMPAT) != 0 => {
            // The file hook keeps nothing per thread for an open: the exit tells a compat call
            // as the entry does (`TS_COMPAT` is cleared only on the way back to user space).
            if *w & (SYSCALL_WANT_FILE | SYSCALL_WANT_COMPAT) != 0 {
                file_exit(&ctx, nr, regs);
            }
        }
        _ => return 0,
    }
    let pid_tgid = bpf_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(f) = (unsafe { SYSCALL_INFLIGHT.get(&tid) }) else {
        return 0;
    };
    let f = *f;
    let _ = SYSCALL_INFLIGHT.remove(&tid);
    // An entry left by a call whose exit never came (the thread died in it) is not this one.
    if f.index % SYSCALL_COMPAT_BASE != nr as u32 {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    let start_ns = match unsafe { PROCESSES.get(&((pid_tgid >> 32) as u32)) } {
        Some(p) => p.start_ns,
        None => 0,
    };
    decide(
        f.selectors,
        f.table,
        f.slot,
        f.index,
        f.args,
        Some(ret),
        pid_tgid,
        start_ns,
    );
    0
}
