//! The exit program (`sched_process_exit`): reports the end of a process and forgets its state.

use aya_ebpf::{
    helpers::generated::bpf_get_current_task, macros::tracepoint, programs::TracePointContext,
};
use daemon_common::*;

use crate::maps::*;

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
