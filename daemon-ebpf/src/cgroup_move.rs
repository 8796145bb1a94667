//! The cgroup-move program (tracepoint `cgroup/cgroup_attach_task`): a process moved to a
//! cgroup of another namespace without exec is judged by where it is now. Its cached bits were
//! computed in its old namespace's group and cannot be recomputed here (the binary and its
//! arguments are not kept), so it gets the new namespace with every selector bit (fail closed:
//! every Block of its new group holds) and userspace, told by a [`ProcessMovedEvent`],
//! recomputes its bits from /proc (see `daemon-common`, Groups).

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use daemon_common::*;

use crate::maps::*;

/// Fired after a successful migration, once for the task given (the thread-group leader when
/// its whole group moved via `cgroup.procs`; a single thread via `cgroup.threads`).
#[tracepoint]
pub fn bulwark_cgroup_move(ctx: TracePointContext) -> u32 {
    // The default (v2) hierarchy is number 0; workloads are cgroup v2 ids.
    let (Ok(root), Ok(cgroup_id), Ok(pid)) = (
        unsafe { ctx.read_at::<i32>(TP_CGROUP_ATTACH_DST_ROOT) },
        unsafe { ctx.read_at::<u64>(TP_CGROUP_ATTACH_DST_ID) },
        unsafe { ctx.read_at::<u32>(TP_CGROUP_ATTACH_PID) },
    ) else {
        return 0;
    };
    if root != 0 {
        return 0;
    }
    // Only a process (leader) has state: a thread moved alone stays in its threaded domain
    // (the kernel refuses a thread move across domains), so its process's namespace holds.
    let Some(st) = PROCESSES.get_ptr_mut(&pid) else {
        return 0;
    };
    let st = unsafe { &mut *st };
    let namespace_id = match unsafe { WORKLOADS.get(&cgroup_id) } {
        Some(w) => w.namespace_id,
        None => 0,
    };
    if st.namespace_id == namespace_id {
        return 0; // same namespace, same group: its bits hold
    }
    st.namespace_id = namespace_id;
    st.selectors = [u64::MAX; SLOTS];
    let ev = ProcessMovedEvent {
        header: header(EVENT_PROCESS_MOVED, pid, st.start_ns),
        cgroup_id,
        namespace_id,
        _pad: 0,
    };
    emit_now(&ev);
    0
}
