//! Kernel structure offsets and host facts userspace resolves at load time (BTF, tracefs) and
//! hands to the programs as the read-only global `OFFSETS`.

/// Kernel structure offsets resolved by userspace from BTF at load time and handed to the
/// programs as the read-only global `OFFSETS` (struct layouts differ between kernel builds).
/// Offsets in bytes; 0 means "unknown" (the program then skips that read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
    /// Offset of `group_dead` in the `sched/sched_process_exit` tracepoint record, 0 when the
    /// kernel has no such field (then the thread-group leader's exit is reported).
    pub tp_exit_group_dead: u32,
    /// 1 when every offset below was found: exec then resolves the binary's absolute path
    /// from `mm->exe_file` (dentry and mount walk, like d_path) instead of trusting the
    /// filename given to execve, which may be relative (`./curl`). These offsets may be 0.
    pub path_walk: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `file.f_path`
    pub file_f_path: u32,
    /// `path.mnt`, `path.dentry`
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// `dentry.d_parent`, `dentry.d_name`
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    /// `qstr.len`, `qstr.name`
    pub qstr_len: u32,
    pub qstr_name: u32,
    /// `mount.mnt` (the embedded vfsmount), `mount.mnt_parent`, `mount.mnt_mountpoint`
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_mnt_root: u32,
    /// 1 when both TCP Fast Open offsets below were found (connect then detects TFO).
    pub tfo: u32,
    /// `tcp_sock.fastopen_req` (set while a `sendto(MSG_FASTOPEN)` connects)
    pub tcp_fastopen_req: u32,
    /// Bit offset of the `tcp_sock.fastopen_connect` bitfield (`TCP_FASTOPEN_CONNECT`)
    pub tcp_fastopen_connect_bit: u32,
    /// Socket guard, packet sockets: the `capability/cap_capable` tracepoint record's `cap`
    /// and `ret` offsets (0 = the kernel has no such tracepoint, older than 6.14).
    pub tp_cap_cap: u32,
    pub tp_cap_ret: u32,
    /// The native `socket` syscall number, and (0 = this architecture has none, or it is
    /// unknown) the 32-bit compat `socket` and `socketcall` numbers.
    pub nr_socket: u32,
    pub nr_compat_socket: u32,
    pub nr_compat_socketcall: u32,
    /// Offset in `task_struct` of the word that says the current syscall is a 32-bit one
    /// (x86: `thread_info.status`), and its bit (`TS_COMPAT`); 0 = unknown (then no syscall is
    /// read as a compat one).
    pub task_compat_status: u32,
    pub compat_status_bit: u32,
    /// `pt_regs` offsets of the syscall number and of the first two syscall arguments, native
    /// and compat (x86: orig_ax; di, si / bx, cx); 0 = unknown (then packet sockets are not
    /// recognised).
    pub regs_syscall_nr: u32,
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    pub regs_compat_arg0: u32,
    pub regs_compat_arg1: u32,
    /// `io_uring/io_uring_submit_req` tracepoint record: offsets of `req` and `opcode`.
    pub tp_uring_req: u32,
    pub tp_uring_opcode: u32,
    /// Offsets in `io_kiocb` of the prepared `IORING_OP_SOCKET` request's `domain` and `type`
    /// (`io_kiocb.cmd` + `io_socket.domain/type`); 0 = unknown (no io_uring socket op).
    pub uring_socket_domain: u32,
    pub uring_socket_type: u32,
    pub _pad: u32,
    /// 1 when every offset below was found: exec then reads the executed file's identity and
    /// link count (`mm->exe_file->f_inode`). These offsets may be 0.
    pub inode_read: u32,
    /// `file.f_inode`
    pub file_f_inode: u32,
    /// `inode.i_ino`, `inode.i_sb`, `inode.i_nlink`
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_nlink: u32,
    /// `super_block.s_dev`
    pub sb_s_dev: u32,
    /// `task_struct.flags` (fork leaves kernel threads, `PF_KTHREAD`, alone; 0: unknown).
    pub task_flags: u32,
    pub _pad2: u32,
    /// 1 when every offset below was found: fork then reads the child's cgroup, which
    /// `clone3(CLONE_INTO_CGROUP)` may have set to another one than the parent's (no
    /// `cgroup_attach_task` fires for it). These offsets may be 0.
    pub cgroup_read: u32,
    /// `task_struct.cgroups`, `css_set.dfl_cgrp`, `cgroup.kn`, `kernfs_node.id`
    pub task_cgroups: u32,
    pub css_set_dfl_cgrp: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    /// 1 when every offset below was found (and `path_walk`, `inode_read`): the file hook then
    /// reads the file a call opened from the fd table and resolves a dirfd or the working
    /// directory. These offsets may be 0 (`fdtable.max_fds` is).
    pub file_read: u32,
    /// `task_struct.files`, `files_struct.fdt`, `fdtable.fd`, `fdtable.max_fds`
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    /// `file.f_mode`
    pub file_f_mode: u32,
    /// `task_struct.fs`, `fs_struct.pwd`
    pub task_fs: u32,
    pub fs_pwd: u32,
    /// 1 when every offset below was found (and `file_read`), and the raw tracepoints
    /// `io_uring_submit_req(req)` / `io_uring_complete(ctx, req, cqe)` /
    /// `io_uring_cqe_overflow(ctx, user_data, res, cflags, ocqe)` have those prototypes:
    /// the file hook then judges io_uring's file requests (`daemon-ebpf/src/uring.rs`).
    /// Offsets from a `struct io_kiocb *` unless said otherwise; these may be 0.
    pub uring_file: u32,
    /// `io_kiocb.opcode`, `io_kiocb.flags` (its low bits are the SQE's `IOSQE_*` flags),
    /// `io_kiocb.cqe.fd` (the request's fd), `io_kiocb.ctx`
    pub uring_req_opcode: u32,
    pub uring_req_flags: u32,
    pub uring_req_fd: u32,
    pub uring_req_ctx: u32,
    /// `io_ring_ctx.flags` (from a `struct io_ring_ctx *`: `IORING_SETUP_*`)
    pub uring_ctx_flags: u32,
    /// `filename.name` (from a `struct filename *`: the kernel's copy of the name)
    pub filename_name: u32,
    /// `io_open`: `dfd`, `file_slot`, `filename`, `how.flags`
    pub uring_open_dfd: u32,
    pub uring_open_file_slot: u32,
    pub uring_open_filename: u32,
    pub uring_open_flags: u32,
    /// `io_unlink`: `dfd`, `filename`
    pub uring_unlink_dfd: u32,
    pub uring_unlink_filename: u32,
    /// `io_mkdir`: `dfd`, `filename`
    pub uring_mkdir_dfd: u32,
    pub uring_mkdir_filename: u32,
    /// `io_rename`: `old_dfd`, `new_dfd`, `oldpath`, `newpath`
    pub uring_rename_old_dfd: u32,
    pub uring_rename_new_dfd: u32,
    pub uring_rename_oldpath: u32,
    pub uring_rename_newpath: u32,
    /// `io_link` (linkat and symlinkat): `new_dfd`, `newpath` (the name the call creates)
    pub uring_link_new_dfd: u32,
    pub uring_link_newpath: u32,
    /// `io_kiocb.cqe.res` (a finished request's result: an open's descriptor)
    pub uring_req_res: u32,
    /// `1 << REQ_F_NEED_CLEANUP_BIT` (`io_kiocb.flags`): an open holds it from its preparation
    /// until it has been issued to the end (the descriptor installed, or failed); still set
    /// while it waits in a link or in io-wq
    pub uring_req_need_cleanup: u32,
    /// `io_kiocb.cqe.user_data` (what `io_uring_cqe_overflow` names a request by)
    pub uring_req_user_data: u32,
}

/// `task_struct.flags` bit of a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

assert_sizes!(KernelOffsets = 344);

/// Where the cgroup-move program reads the fields of tracepoint `cgroup/cgroup_attach_task`
/// (the layout since Linux 5.7, when `dst_id` became the 64-bit cgroup id): `(field, offset)`.
/// Userspace attaches the program only when the kernel's tracefs format has these offsets.
pub const TP_CGROUP_ATTACH_FIELDS: [(&str, u32); 3] =
    [("dst_root", 8), ("dst_id", 16), ("pid", 24)];
pub const TP_CGROUP_ATTACH_DST_ROOT: usize = 8;
pub const TP_CGROUP_ATTACH_DST_ID: usize = 16;
pub const TP_CGROUP_ATTACH_PID: usize = 24;
