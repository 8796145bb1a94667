//! Process lifecycle programs: exec (evaluate process selectors once, cache them in PROCESSES,
//! carry out exec-hook actions), fork (inherit the parent's cached state) and exit (report,
//! forget). All policy logic is map lookups; see the `daemon-common` crate doc for the scheme.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
        bpf_get_current_uid_gid, bpf_ktime_get_boot_ns, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str, bpf_send_signal,
    },
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext,
};
use daemon_common::*;

use crate::maps::*;

const SIGKILL: u32 = 9;

#[tracepoint]
pub fn bulwark_exec(ctx: TracePointContext) -> u32 {
    let _ = try_exec(&ctx);
    0
}

/// The slots evaluated at this exec: the active one and, during a switch, the pending one.
struct Slots {
    slot: [u32; SLOTS],
    /// The slots' `SLOT_META` entries (map values, not copies: the stack is 512 bytes).
    meta: [&'static SlotMeta; SLOTS],
    /// Number of valid entries (1 or 2).
    n: usize,
    /// Union of the lookups bits of the evaluated slots.
    lookups: u32,
}

#[inline(always)]
fn slot_meta(slot: u32) -> SlotMeta {
    match SLOT_META.get(slot & 1) {
        Some(m) => *m,
        None => SlotMeta::default(),
    }
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    let s = EXEC_SCRATCH.get_ptr_mut(0).ok_or(0i64)?;
    let s = unsafe { &mut *s };
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
    let active_meta = SLOT_META.get(active).ok_or(0i64)?;
    let mut sl = Slots {
        slot: [active, 0],
        meta: [active_meta, active_meta],
        n: 1,
        lookups: 0,
    };
    if cfg.pending_slot != NO_SLOT && (cfg.pending_slot & 1) != active {
        sl.slot[1] = cfg.pending_slot & 1;
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
    const PATH_BITS: u32 = LOOKUP_BIN_EXACT | LOOKUP_BIN_PREFIX | LOOKUP_BIN_POSTFIX;
    let find_target = loader && sl.lookups & PATH_BITS != 0;
    let mut args_incomplete = false;
    let mut target_len = 0u32;
    if proc_args != 0 || find_target {
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
            slot: sl.slot,
            slot_lookups: [sl.meta[0].lookups, sl.meta[1].lookups],
            n: sl.n as u32,
            lookups: sl.lookups,
            index: 0,
            done: if arg_start == 0 { ARGS_INCOMPLETE } else { 0 },
            args: (proc_args != 0) as u32,
            target: if find_target {
                TARGET_SEEK
            } else {
                TARGET_NONE
            },
            target_len: 0,
            _pad: 0,
        };
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
        hits = s.argv.hits;
        // Not at the end of the area (a bound, a failed read, the steps ran out): fail closed.
        args_incomplete = proc_args != 0
            && (s.argv.done != ARGS_COMPLETE || arg_end - arg_start > MAX_ARG_BYTES as u64);
        if s.argv.target == TARGET_FOUND {
            target_len = s.argv.target_len & (PATH_LEN as u32 - 1);
        }
    }
    // A loader's target is a binary path too. One bpf_loop over the three paths, its state in
    // the scratch map: the verifier checks the lookups once, not once per path and state.
    s.paths.len[2] = target_len;
    s.paths.present[2] = (target_len != 0) as u32;
    s.paths.hits = hits;
    if sl.lookups & PATH_BITS != 0 {
        unsafe {
            bpf_loop(
                3,
                path_step as *mut core::ffi::c_void,
                core::ptr::null_mut(),
                0,
            )
        };
        hits = s.paths.hits;
    }
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
            slot: active,
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

#[inline(always)]
fn bpf_pid_tgid() -> u64 {
    unsafe { bpf_get_current_pid_tgid() }
}

/// Binary condition hits (exact, prefix, postfix) of path `index` (0: `event.path`, 1:
/// `fname`, 2: `target`) for the evaluated slots (`bpf_loop` callback; its state is
/// `ExecScratch::paths`).
#[inline(never)]
extern "C" fn path_step(index: u64, _ctx: *mut core::ffi::c_void) -> i64 {
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

/// The executed file as the kernel names it.
struct ExecFile {
    dev: u32,
    ino: u64,
    /// No link on any filesystem (`i_nlink == 0`).
    fileless: bool,
}

/// Identity and link count of `mm->exe_file` (all 0 when the offsets are unknown).
#[inline(always)]
fn exec_file(mm: u64, off: &KernelOffsets) -> ExecFile {
    let mut f = ExecFile {
        dev: 0,
        ino: 0,
        fileless: false,
    };
    if off.inode_read != 1 || mm == 0 {
        return f;
    }
    let file: u64 = rd(mm + off.mm_exe_file as u64);
    if file == 0 {
        return f;
    }
    let inode: u64 = rd(file + off.file_f_inode as u64);
    if inode == 0 {
        return f;
    }
    f.ino = rd(inode + off.inode_i_ino as u64);
    let sb: u64 = rd(inode + off.inode_i_sb as u64);
    f.dev = rd(sb + off.sb_s_dev as u64);
    let nlink: u32 = rd(inode + off.inode_i_nlink as u64);
    f.fileless = nlink == 0;
    f
}

/// Reads a kernel value at an absolute address (0 on failure).
#[inline(always)]
fn rd<T: Default>(addr: u64) -> T {
    let mut v = T::default();
    if addr == 0 {
        return v;
    }
    let r = unsafe {
        bpf_probe_read_kernel(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        )
    };
    if r != 0 {
        return T::default();
    }
    v
}

/// State of [`walk_step`]: the current dentry and vfsmount, and where the path assembled so
/// far starts in `ExecScratch::walk` (it ends at `WALK_END`).
#[repr(C)]
struct PathWalk {
    dentry: u64,
    vfsmnt: u64,
    pos: u32,
    /// 1 = reached the root, 2 = failed (too long, unreadable).
    done: u32,
}

/// One step of the d_path-style walk: prepend the dentry's name, go to its parent, crossing
/// to the parent mount at a mount's root. Stops at the root of the mount namespace (for a
/// container: its own root, so paths are as the container sees them).
#[inline(never)]
extern "C" fn walk_step(_index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut PathWalk) };
    let off = offsets();
    let Some(s) = EXEC_SCRATCH.get_ptr_mut(0) else {
        c.done = 2;
        return 1;
    };
    let s = unsafe { &mut *s };
    let mnt = c.vfsmnt.wrapping_sub(off.mount_mnt as u64);
    let mnt_root: u64 = rd(c.vfsmnt + off.vfsmount_mnt_root as u64);
    if c.dentry == mnt_root {
        let parent: u64 = rd(mnt + off.mount_mnt_parent as u64);
        if parent == mnt || parent == 0 {
            c.done = 1;
            return 1;
        }
        c.dentry = rd(mnt + off.mount_mnt_mountpoint as u64);
        c.vfsmnt = parent + off.mount_mnt as u64;
        return 0;
    }
    let parent: u64 = rd(c.dentry + off.dentry_d_parent as u64);
    if parent == c.dentry || parent == 0 {
        c.done = 1;
        return 1;
    }
    let qstr = c.dentry + off.dentry_d_name as u64;
    let len: u32 = rd(qstr + off.qstr_len as u64);
    let name: u64 = rd(qstr + off.qstr_name as u64);
    let len = len & 0xff;
    if len == 0 || name == 0 || len + 1 > c.pos {
        c.done = 2;
        return 1;
    }
    c.pos -= len;
    let at = (c.pos as usize) & (WALK_END - 1);
    unsafe {
        bpf_probe_read_kernel(
            s.walk.as_mut_ptr().add(at).cast(),
            len,
            name as *const core::ffi::c_void,
        )
    };
    c.pos -= 1;
    s.walk[(c.pos as usize) & (WALK_END - 1)] = b'/';
    c.dentry = parent;
    0
}

/// Writes the absolute path of `mm->exe_file` into the exec event (zero-filled) and returns
/// its length, or None when it cannot be resolved (the execve filename is kept then).
#[inline(always)]
fn resolve_exe_path(mm: u64, off: &KernelOffsets) -> Option<usize> {
    let file: u64 = rd(mm + off.mm_exe_file as u64);
    if file == 0 {
        return None;
    }
    let fpath = file + off.file_f_path as u64;
    let mut c = PathWalk {
        dentry: rd(fpath + off.path_dentry as u64),
        vfsmnt: rd(fpath + off.path_mnt as u64),
        pos: WALK_END as u32,
        done: 0,
    };
    if c.dentry == 0 || c.vfsmnt == 0 {
        return None;
    }
    unsafe {
        bpf_loop(
            64,
            walk_step as *mut core::ffi::c_void,
            (&mut c as *mut PathWalk).cast(),
            0,
        )
    };
    if c.done != 1 || c.pos as usize >= WALK_END {
        return None;
    }
    let len = WALK_END - c.pos as usize;
    if len > PATH_LEN - 1 {
        return None;
    }
    let s = EXEC_SCRATCH.get_ptr_mut(0)?;
    let s = unsafe { &mut *s };
    zero_fill(s.event.path.as_mut_ptr(), PATH_LEN as u32);
    let n = (len as u32) & 0xff;
    if n == 0 {
        return None;
    }
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().cast(),
            n,
            s.walk
                .as_ptr()
                .add((c.pos as usize) & (WALK_END - 1))
                .cast(),
        )
    };
    Some(n as usize)
}

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
fn eval_selectors(slot: u32, count: u32, truth: u64) -> u64 {
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
struct MatchLoop {
    matched: u64,
    /// Selectors that matched only because the arguments were incomplete.
    forced: u64,
    cgroup_id: u64,
    now: u64,
    slot: u32,
    tgid: u32,
    kill: u32,
    reason: u32,
}

#[inline(never)]
extern "C" fn exec_match_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
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
        _pad2: [0; 4],
    };
    emit_now(&m);
    0
}

/// [`ArgWalk::done`]: the walk reached the end of the argument area.
const ARGS_COMPLETE: u32 = 1;
/// [`ArgWalk::done`]: the walk stopped early (a bound, or a read failed).
const ARGS_INCOMPLETE: u32 = 2;
/// Steps of the argv walk: one per element plus one per further chunk of a long element; with
/// at most `MAX_ARG_BYTES` bytes that is at most `MAX_ARG_ELEMENTS + MAX_ARG_BYTES / 255`.
const ARG_STEPS: u32 = (MAX_ARG_ELEMENTS + MAX_ARG_BYTES / (ARG_BUF - 1) + 2) as u32;

/// [`ArgWalk::target`]: not a loader exec, or the target cannot be matched (longer than a
/// path buffer).
const TARGET_NONE: u32 = 0;
/// Looking at the loader's options for the first element that is not one.
const TARGET_SEEK: u32 = 1;
/// The element is the value of a loader option (`--library-path DIR`).
const TARGET_SKIP: u32 = 2;
/// After `--`: the element is the target.
const TARGET_NEXT: u32 = 3;
/// Copied into `ExecScratch::target`.
const TARGET_FOUND: u32 = 4;

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
    let any = s.argv.index != 0 && s.argv.lookups & LOOKUP_ARG_ANY != 0;
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
            if (k as u32) >= s.argv.n || s.argv.slot_lookups[k] & bit == 0 {
                continue;
            }
            let slot = s.argv.slot[k] as u8;
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
    if s.argv.lookups & LOOKUP_ARG_PREFIX == 0 {
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
    if s.argv.lookups & LOOKUP_ARG_POSTFIX == 0 {
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
extern "C" fn arg_step(_step: u64, _ctx: *mut core::ffi::c_void) -> i64 {
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
            if s.argv.lookups & LOOKUP_ARG_EXACT != 0 && len <= ARG_LEN {
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

/// Where [`reverse_step`] copies from (into the postfix key of the matching kind).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Reversed {
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
fn copy_reversed(which: Reversed, n: usize, cap: usize) {
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

/// `sched_process_fork(parent, child)`: a new process (not a thread) inherits the parent's
/// cached selector bits under a new identity.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn bulwark_fork(ctx: RawTracePointContext) -> i32 {
    let off = offsets();
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    let child_pid: u32 = read_kernel(child, off.task_pid);
    let child_tgid: u32 = read_kernel(child, off.task_tgid);
    if child_pid == 0 || child_pid != child_tgid {
        return 0; // a thread, or offsets unknown
    }
    // Kernel threads run no image a policy could name and never exec'd: no state to inherit
    // (and kthreadd has none), so they are not stale forks a switch would wait for.
    let flags: u32 = read_kernel(child, off.task_flags);
    if flags & PF_KTHREAD != 0 {
        return 0;
    }
    let parent_tgid: u32 = read_kernel(parent, off.task_tgid);
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let mut state = match unsafe { PROCESSES.get(&parent_tgid) } {
        Some(p) => *p,
        None => ProcessState {
            // An image the kernel never saw exec: named after the parent (never shared).
            image: ImageKey {
                exec_ns: 0,
                tgid: parent_tgid,
                _pad: 0,
            },
            ..ProcessState::default()
        },
    };
    let parent_start_ns = state.start_ns;
    state.start_ns = now;
    refresh_pending_slot(&mut state);
    if PROCESSES.insert(&child_tgid, &state, 0).is_err() {
        count(COUNTER_PROCESS_MAP_FULL);
    }
    let ev = ForkEvent {
        header: header(EVENT_FORK, child_tgid, now),
        parent_tgid,
        _pad: 0,
        parent_start_ns,
    };
    emit(&ev);
    0
}

/// During a switch, a child whose inherited bits are stale for the pending slot takes the bits
/// userspace decided for its image (`RESEED`); without one it is counted, and userspace scans
/// again until no stale process is left (see `daemon-common`, Switching).
#[inline(always)]
fn refresh_pending_slot(state: &mut ProcessState) {
    let cfg = config();
    if cfg.pending_slot == NO_SLOT {
        return;
    }
    let slot = cfg.pending_slot & 1;
    let generation = slot_meta(slot).generation;
    let current = if slot == 0 {
        state.slot_gen[0]
    } else {
        state.slot_gen[1]
    };
    if current == generation {
        return;
    }
    match unsafe { RESEED.get(&state.image) } {
        Some(r) if r.generation == generation => {
            if slot == 0 {
                state.selectors[0] = r.selectors;
                state.slot_gen[0] = generation;
            } else {
                state.selectors[1] = r.selectors;
                state.slot_gen[1] = generation;
            }
        }
        _ => count(COUNTER_STALE_FORK),
    }
}

/// `sched_process_exit`: reports the end of a process (when its last thread exits, or its
/// leader on kernels whose tracepoint has no `group_dead`) and forgets its state.
#[tracepoint]
pub fn bulwark_exit(ctx: TracePointContext) -> u32 {
    let off = offsets();
    let pid_tgid = bpf_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let pid = pid_tgid as u32;
    let last = if off.tp_exit_group_dead != 0 {
        (unsafe { ctx.read_at::<u8>(off.tp_exit_group_dead as usize & 0xff) }).unwrap_or(0) != 0
    } else {
        pid == tgid
    };
    if !last {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    let exit_code: u32 = read_kernel(task, off.task_exit_code);
    let start_ns = match unsafe { PROCESSES.get(&tgid) } {
        Some(p) => p.start_ns,
        None => 0,
    };
    let _ = PROCESSES.remove(&tgid);
    let ev = ExitEvent {
        header: header(EVENT_EXIT, tgid, start_ns),
        exit_code,
        _pad: 0,
    };
    emit(&ev);
    0
}
