//! The fork program (`sched_process_fork`): a new process (not a thread) inherits its parent's
//! cached state under a new identity, and during a switch takes the bits userspace decided
//! for its image when its inherited ones are stale. A child born into another namespace's
//! cgroup (`clone3(CLONE_INTO_CGROUP)`, which fires no `cgroup_attach_task`) is treated like a
//! moved process (see `cgroup_move`): its new namespace with every selector bit, and userspace
//! told to recompute.

use aya_ebpf::{
    helpers::generated::{bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use daemon_common::*;

use crate::maps::*;

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
    let moved_to = born_elsewhere(child, &off, &mut state);
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
    if let Some(cgroup_id) = moved_to {
        // After the fork record, so userspace knows the process it is told to recompute.
        let ev = ProcessMovedEvent {
            header: header(EVENT_PROCESS_MOVED, child_tgid, now),
            cgroup_id,
            namespace_id: state.namespace_id,
            _pad: 0,
        };
        emit_now(&ev);
    }
    0
}

/// A child whose cgroup is not its parent's (`clone3(CLONE_INTO_CGROUP)`) and belongs to
/// another namespace than the inherited one: gives it that namespace with every selector bit
/// (fail closed, as for a move) and returns its cgroup id. `sched_process_fork` fires after
/// `cgroup_post_fork`, so the child's cgroup is final here; the parent is the current task.
#[inline(always)]
fn born_elsewhere(child: u64, off: &KernelOffsets, state: &mut ProcessState) -> Option<u64> {
    if off.cgroup_read != 1 {
        return None;
    }
    let css_set: u64 = read_kernel(child, off.task_cgroups);
    let cgroup: u64 = read_kernel(css_set, off.css_set_dfl_cgrp);
    let kn: u64 = read_kernel(cgroup, off.cgroup_kn);
    let cgroup_id: u64 = read_kernel(kn, off.kernfs_node_id);
    if cgroup_id == 0 || cgroup_id == unsafe { bpf_get_current_cgroup_id() } {
        return None;
    }
    let namespace_id = match unsafe { WORKLOADS.get(&cgroup_id) } {
        Some(w) => w.namespace_id,
        None => 0,
    };
    if namespace_id == state.namespace_id {
        return None;
    }
    state.namespace_id = namespace_id;
    state.selectors = [u64::MAX; SLOTS];
    Some(cgroup_id)
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
