//! The exec program (`sched_process_exec`): evaluates the process selectors of the active slot
//! (and, during a switch, the pending one) once per exec, caches the bits in `PROCESSES` and
//! carries out the exec-hook actions. The exec record is emitted first, then the matches. All
//! policy logic is map lookups (see the `daemon-common` crate doc for the scheme); the pieces
//! each have their module: `exe_file` the executed file and its path, `binary_paths` the
//! binary path lookups, `argv` the argument walk and a loader's target, `reverse` the
//! reversed keys of the postfix matchers, `selectors` the selector evaluation and exec matches.

mod argv;
mod binary_paths;
mod exe_file;
mod reverse;
mod selectors;

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_task, bpf_get_current_uid_gid,
        bpf_ktime_get_boot_ns, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
        bpf_probe_read_user, bpf_send_signal,
    },
    macros::tracepoint,
    programs::TracePointContext,
    EbpfContext,
};
use daemon_common::*;

use crate::maps::*;
use argv::{
    arg_step, ARGS_COMPLETE, ARGS_INCOMPLETE, ARG_STEPS, TARGET_FOUND, TARGET_NONE, TARGET_SEEK,
};
use binary_paths::path_step;
use exe_file::{exec_file, resolve_exe_path};
use selectors::{eval_selectors, exec_match_step, MatchLoop};

const SIGKILL: u32 = 9;
/// The lookups of binary path conditions.
const PATH_BITS: u32 = LOOKUP_BIN_EXACT | LOOKUP_BIN_PREFIX | LOOKUP_BIN_POSTFIX;

#[tracepoint]
pub fn bulwark_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

/// The slots evaluated at this exec: the active one and, during a switch, the pending one,
/// each as the table of the process's group (`table & 1` is the slot).
struct Slots {
    slot: [u32; SLOTS],
    /// The slots' `SLOT_META` entries (map values, not copies: the stack is 512 bytes).
    meta: [&'static SlotMeta; SLOTS],
    /// Number of valid entries (1 or 2).
    n: usize,
    /// Union of the lookups bits of the evaluated slots.
    lookups: u32,
}

impl Slots {
    /// The slots `record` stored in `ExecScratch::paths`, their `SLOT_META` entries looked
    /// up again (the values are in the map, not in registers, after the walk).
    #[inline(always)]
    fn stored(p: &PathLookups) -> Result<Slots, i64> {
        let meta0 = SLOT_META.get(p.slot[0]).ok_or(0i64)?;
        let (n, meta1) = if p.n == 2 {
            (2, SLOT_META.get(p.slot[1]).ok_or(0i64)?)
        } else {
            (1, meta0)
        };
        Ok(Slots {
            slot: p.slot,
            meta: [meta0, meta1],
            n,
            lookups: p.lookups,
        })
    }
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let s = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    let s = unsafe { &mut *s };
    if !prepare(ctx, s) {
        return Err(0);
    }
    // The argv walk is called from here, where nothing `prepare` computed is live but what it
    // stored in the scratch map (its registers and stack ended with it, and the verifier
    // tracks no map value's contents), so the verifier reaches this call in one state and
    // checks the walk's step once. Called from inside `prepare`, it was checked once per
    // combination of the flags, lengths and stack contents live there: 24 times.
    if s.argv.done == 0 {
        unsafe {
            bpf_loop(
                ARG_STEPS,
                arg_step as *mut core::ffi::c_void,
                core::ptr::null_mut(),
                0,
            )
        };
    }
    if finish(s) {
        Ok(())
    } else {
        Err(0)
    }
}

/// [`record`] as a subprogram of its own (see `try_exec`); false when the exec is not judged.
#[inline(never)]
fn prepare(ctx: &TracePointContext, s: &mut ExecScratch) -> bool {
    record(ctx, s).is_ok()
}

/// [`judge`] as a subprogram of its own: it starts from the scratch alone, in one state.
#[inline(never)]
fn finish(s: &mut ExecScratch) -> bool {
    judge(s).is_ok()
}

/// The exec record (path, argv, parent) and the process condition hits known before the argv
/// walk, all stored in the scratch: `paths` (slots, paths, hits), `argv` (the walk, `done`
/// already set when there is nothing to walk) and `event` (with `EXEC_ARGS_INCOMPLETE` when the
/// argument area is over `MAX_ARG_BYTES`).
#[inline(always)]
fn record(ctx: &TracePointContext, s: &mut ExecScratch) -> Result<(), i64> {
    let off = offsets();
    let tgid = (bpf_pid_tgid() >> 32) as u32;
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let namespace_id = match unsafe { WORKLOADS.get(&cgroup_id) } {
        Some(w) => w.namespace_id,
        None => 0,
    };
    let cfg = config();
    let active = cfg.active_slot & 1;
    // Each slot is evaluated in one table: the group of the process's namespace.
    let active_table = process_table(active, namespace_id);
    let active_meta = SLOT_META.get(active_table).ok_or(0i64)?;
    let mut sl = Slots {
        slot: [active_table, 0],
        meta: [active_meta, active_meta],
        n: 1,
        lookups: 0,
    };
    if cfg.pending_slot != NO_SLOT && (cfg.pending_slot & 1) != active {
        sl.slot[1] = process_table(cfg.pending_slot & 1, namespace_id);
        sl.meta[1] = SLOT_META.get(sl.slot[1]).ok_or(0i64)?;
        sl.n = 2;
    }
    sl.lookups = sl.meta[0].lookups | if sl.n == 2 { sl.meta[1].lookups } else { 0 };

    // --- the event: path, argv, parent -------------------------------------------------
    zero_fill(s.fname.as_mut_ptr(), PATH_LEN as u32);
    let loc: u32 = unsafe { ctx.read_at::<u32>(8) }.map_err(|e| e as i64)?;
    let fname = unsafe { (ctx.as_ptr() as *const u8).add((loc & 0xffff) as usize) };
    let n = unsafe {
        bpf_probe_read_kernel_str(s.fname.as_mut_ptr().cast(), PATH_LEN as u32, fname.cast())
    };
    // The event starts with the execve filename (zero-filled copy).
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().cast(),
            PATH_LEN as u32,
            s.fname.as_ptr().cast(),
        )
    };
    // A full buffer may hold a truncated path: it is complete only if the source ends there.
    let fname_complete = n < PATH_LEN as i64 || {
        let mut next = [0u8; 1];
        let r = unsafe {
            bpf_probe_read_kernel(next.as_mut_ptr().cast(), 1, fname.add(PATH_LEN - 1).cast())
        };
        r == 0 && next[0] == 0
    };
    let path_len: usize = if n > 0 { (n as usize - 1) & 0x1ff } else { 0 };
    let mut path_len = if path_len > PATH_LEN - 1 {
        PATH_LEN - 1
    } else {
        path_len
    };

    let task = unsafe { bpf_get_current_task() };
    let mm: u64 = read_kernel(task, off.task_mm);
    // The filename given to execve may be relative (`./curl`) or go through symlinks: match
    // the path of the file actually executed, assembled from mm->exe_file like d_path does.
    let fname_len = path_len;
    let mut walked = false;
    if off.path_walk == 1 && mm != 0 {
        if let Some(l) = resolve_exe_path(mm, &off) {
            path_len = l;
            walked = true;
        }
    }
    // The file itself: its identity and whether it has a name at all.
    let file = exec_file(mm, &off);
    let loader = file.ino != 0
        && unsafe {
            LOADERS.get(&FileKey {
                dev: file.dev,
                _pad: 0,
                ino: file.ino,
            })
        }
        .is_some();
    let ev = &mut s.event;
    ev.path_len = path_len as u32;
    let arg_start: u64 = read_kernel(mm, off.mm_arg_start);
    let arg_end: u64 = read_kernel(mm, off.mm_arg_end);
    let total = arg_end.saturating_sub(arg_start);
    let mut args_len = total as usize;
    if args_len > EVENT_ARGS_LEN {
        args_len = EVENT_ARGS_LEN;
    }
    ev.args_truncated = (total > EVENT_ARGS_LEN as u64) as u32;
    ev.flags = if file.fileless { EXEC_FILELESS } else { 0 } | if loader { EXEC_LOADER } else { 0 };
    ev.args_len = 0;
    if arg_start != 0 && args_len > 0 {
        let r = unsafe {
            bpf_probe_read_user(
                ev.args.as_mut_ptr().cast(),
                (args_len & (EVENT_ARGS_LEN * 2 - 1)) as u32,
                arg_start as *const core::ffi::c_void,
            )
        };
        if r == 0 {
            ev.args_len = args_len as u32;
        } else {
            count(COUNTER_READ_FAILED);
        }
    }
    let parent: u64 = read_kernel(task, off.task_real_parent);
    let ppid: u32 = read_kernel(parent, off.task_tgid);
    ev.ppid = ppid;
    ev.uid = unsafe { bpf_get_current_uid_gid() } as u32;
    ev.cgroup_id = cgroup_id;
    ev.namespace_id = namespace_id;
    ev.parent_start_ns = match unsafe { PROCESSES.get(&ppid) } {
        Some(p) => p.start_ns,
        None => 0,
    };
    ev.header = header(EVENT_EXEC, tgid, now);
    ev.header.start_ns = now;

    // --- process condition hits, per slot ------------------------------------------------
    let mut hits = [0u64; SLOTS];
    // Binary paths: the executed file's (only used when it fits; otherwise the event holds
    // the filename) and the name given to execve (for a script that is the script, the
    // executed file being its interpreter, so both `/bin/sh` and `/opt/x/run.sh` selectors
    // can match).
    let event_complete = walked || fname_complete;
    s.paths = PathLookups {
        len: [path_len as u32, fname_len as u32, 0],
        complete: [event_complete as u32, fname_complete as u32, 1],
        present: [1, walked as u32, 0],
        hits,
        slot: sl.slot,
        slot_lookups: [sl.meta[0].lookups, sl.meta[1].lookups],
        n: sl.n as u32,
        lookups: sl.lookups,
        _pad: 0,
    };
    if sl.lookups & LOOKUP_BIN_INODE != 0 && file.ino != 0 {
        for k in 0..SLOTS {
            if k < sl.n && sl.meta[k].lookups & LOOKUP_BIN_INODE != 0 {
                let key = BinInodeKey {
                    slot: sl.slot[k],
                    dev: file.dev,
                    ino: file.ino,
                };
                if let Some(h) = unsafe { BIN_INODE.get(&key) } {
                    hits[k] |= *h;
                }
            }
        }
    }
    for k in 0..SLOTS {
        if k < sl.n {
            if file.fileless {
                hits[k] |= sl.meta[k].kind_fileless;
            }
            if loader {
                hits[k] |= sl.meta[k].kind_loader;
            }
        }
    }
    if sl.lookups & LOOKUP_NAMESPACE != 0 {
        for k in 0..SLOTS {
            if k < sl.n && sl.meta[k].lookups & LOOKUP_NAMESPACE != 0 {
                let key = NamespaceKey {
                    slot: sl.slot[k],
                    namespace_id,
                };
                if let Some(h) = unsafe { NAMESPACES.get(&key) } {
                    hits[k] |= *h;
                }
            }
        }
    }
    // Walked whenever a slot has argument conditions (even ones without values): whether the
    // arguments are complete matters to all of them.
    // For a loader exec, the walk also finds the loader's target (when paths are matched).
    let proc_args = sl.meta[0].proc_args | if sl.n == 2 { sl.meta[1].proc_args } else { 0 };
    let find_target = loader && sl.lookups & PATH_BITS != 0;
    let limit = arg_start.saturating_add(MAX_ARG_BYTES as u64);
    // The walk's state lives in the scratch map, not on the stack: the verifier does not
    // track a map value's contents, so the walk's steps converge at once instead of each
    // step's values being a state of their own (which multiplied the program after it).
    s.argv = ArgWalk {
        p: arg_start,
        end: arg_end,
        limit: if arg_end < limit { arg_end } else { limit },
        elem_start: 0,
        hits,
        index: 0,
        done: if proc_args == 0 && !find_target {
            // Nothing to walk.
            ARGS_COMPLETE
        } else if arg_start == 0 {
            ARGS_INCOMPLETE
        } else {
            0
        },
        args: (proc_args != 0) as u32,
        target: if find_target {
            TARGET_SEEK
        } else {
            TARGET_NONE
        },
        target_len: 0,
        _pad: 0,
    };
    // Longer than the walk reads: incomplete whatever the walk finds (fail closed).
    if proc_args != 0 && arg_end.wrapping_sub(arg_start) > MAX_ARG_BYTES as u64 {
        s.event.flags |= EXEC_ARGS_INCOMPLETE;
    }
    Ok(())
}

/// After the argv walk: the binary path lookups, the selectors, the process state and the
/// exec-hook actions, from what `record` and the walk stored in the scratch.
#[inline(always)]
fn judge(s: &mut ExecScratch) -> Result<(), i64> {
    let sl = Slots::stored(&s.paths)?;
    let active_table = sl.slot[0];
    let active = active_table & 1;
    let tgid = s.event.header.tgid;
    let now = s.event.header.start_ns;
    let cgroup_id = s.event.cgroup_id;
    let namespace_id = s.event.namespace_id;
    // Not at the end of the area (a bound, a failed read, the steps ran out): fail closed.
    let args_incomplete = s.event.flags & EXEC_ARGS_INCOMPLETE != 0
        || (s.argv.args != 0 && s.argv.done != ARGS_COMPLETE);
    let target_len = if s.argv.target == TARGET_FOUND {
        s.argv.target_len & (PATH_LEN as u32 - 1)
    } else {
        0
    };
    // A loader's target is a binary path too. One bpf_loop over the three paths, its state in
    // the scratch map: the verifier checks the lookups once, not once per path and state.
    s.paths.len[2] = target_len;
    s.paths.present[2] = (target_len != 0) as u32;
    s.paths.hits = s.argv.hits;
    if sl.lookups & PATH_BITS != 0 {
        unsafe {
            bpf_loop(
                3,
                path_step as *mut core::ffi::c_void,
                core::ptr::null_mut(),
                0,
            )
        };
    }
    let hits = s.paths.hits;
    if args_incomplete {
        s.event.flags |= EXEC_ARGS_INCOMPLETE;
    }

    // --- selectors -----------------------------------------------------------------------
    let mut state = ProcessState {
        start_ns: now,
        selectors: [0; SLOTS],
        namespace_id,
        _pad: 0,
        slot_gen: [0; SLOTS],
        image: ImageKey {
            exec_ns: now,
            tgid,
            _pad: 0,
        },
    };
    // Active-slot selectors that match only because the arguments were incomplete.
    let mut forced = 0u64;
    for k in 0..SLOTS {
        if k < sl.n {
            let truth = hits[k] ^ sl.meta[k].proc_negate;
            let (bits, seen) = if args_incomplete && sl.meta[k].proc_args != 0 {
                let all = truth | sl.meta[k].proc_args;
                let bits = eval_selectors(sl.slot[k], sl.meta[k].selector_count, all);
                let seen = eval_selectors(sl.slot[k], sl.meta[k].selector_count, truth);
                (bits, seen)
            } else {
                let bits = eval_selectors(sl.slot[k], sl.meta[k].selector_count, truth);
                (bits, bits)
            };
            if k == 0 {
                forced = bits & !seen;
            }
            // Branches, not `[slot & 1]`: LLVM turns that index into a pointer OR the
            // verifier refuses.
            if sl.slot[k] & 1 == 0 {
                state.selectors[0] = bits;
                state.slot_gen[0] = sl.meta[k].generation;
            } else {
                state.selectors[1] = bits;
                state.slot_gen[1] = sl.meta[k].generation;
            }
        }
    }
    let stored = PROCESSES.insert(&tgid, &state, 0).is_ok();
    if !stored {
        count(COUNTER_PROCESS_MAP_FULL);
    }

    // --- exec-hook actions ----------------------------------------------------------------
    // The exec record goes first so userspace knows the process before its matches.
    emit(&s.event);
    let mut matched = state.selectors[active as usize] & sl.meta[0].hook_exec;
    let mut reason = REASON_NONE as u32;
    if !stored {
        // Without stored state its connect and egress rules could not apply: a process an
        // enforce-mode connect/egress Block covers does not run (fail closed).
        matched =
            state.selectors[active as usize] & (sl.meta[0].hook_connect | sl.meta[0].hook_egress);
        reason = REASON_CAPACITY as u32;
    }
    if matched != 0 {
        let mut c = MatchLoop {
            matched,
            forced,
            cgroup_id,
            now,
            slot: active_table,
            tgid,
            kill: 0,
            reason,
        };
        unsafe {
            bpf_loop(
                MAX_SELECTORS as u32,
                exec_match_step as *mut core::ffi::c_void,
                (&mut c as *mut MatchLoop).cast(),
                0,
            )
        };
        if c.kill != 0 {
            if reason != REASON_NONE as u32 {
                count(COUNTER_CAPACITY_KILLS);
            }
            unsafe { bpf_send_signal(SIGKILL) };
        }
    }
    Ok(())
}
