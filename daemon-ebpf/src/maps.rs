//! Every map of the kernel programs, the read-only globals userspace sets at load time, and the
//! small helpers (counters, event output, per-CPU scratch) all programs share. Map names and
//! value types are the `daemon-common` contract; userspace opens the maps by these names.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    btf_maps::SkStorage,
    macros::{btf_map, map},
    maps::{lpm_trie::LpmTrie, Array, HashMap, LruHashMap, PerCpuArray, RingBuf, SockHash},
};
use daemon_common::*;

/// Structure offsets resolved from BTF by userspace (`EbpfLoader::set_global("OFFSETS", ..)`).
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_mm: 0,
    task_real_parent: 0,
    task_tgid: 0,
    task_pid: 0,
    task_exit_code: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    tp_exit_group_dead: 0,
    path_walk: 0,
    mm_exe_file: 0,
    file_f_path: 0,
    path_mnt: 0,
    path_dentry: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    qstr_len: 0,
    qstr_name: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    vfsmount_mnt_root: 0,
    tfo: 0,
    tcp_fastopen_req: 0,
    tcp_fastopen_connect_bit: 0,
    tp_cap_cap: 0,
    tp_cap_ret: 0,
    nr_socket: 0,
    nr_compat_socket: 0,
    nr_compat_socketcall: 0,
    task_compat_status: 0,
    compat_status_bit: 0,
    regs_syscall_nr: 0,
    regs_arg0: 0,
    regs_arg1: 0,
    regs_compat_arg0: 0,
    regs_compat_arg1: 0,
    tp_uring_req: 0,
    tp_uring_opcode: 0,
    uring_socket_domain: 0,
    uring_socket_type: 0,
    _pad: 0,
    inode_read: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    inode_i_nlink: 0,
    sb_s_dev: 0,
    task_flags: 0,
    _pad2: 0,
    cgroup_read: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    file_read: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_f_mode: 0,
    task_fs: 0,
    fs_pwd: 0,
    uring_file: 0,
    uring_req_opcode: 0,
    uring_req_flags: 0,
    uring_req_fd: 0,
    uring_req_ctx: 0,
    uring_ctx_flags: 0,
    filename_name: 0,
    uring_open_dfd: 0,
    uring_open_file_slot: 0,
    uring_open_filename: 0,
    uring_open_flags: 0,
    uring_unlink_dfd: 0,
    uring_unlink_filename: 0,
    uring_mkdir_dfd: 0,
    uring_mkdir_filename: 0,
    uring_rename_old_dfd: 0,
    uring_rename_new_dfd: 0,
    uring_rename_oldpath: 0,
    uring_rename_newpath: 0,
    uring_link_new_dfd: 0,
    uring_link_newpath: 0,
    uring_req_res: 0,
    uring_req_need_cleanup: 0,
    uring_req_user_data: 0,
};

/// Reads the load-time offsets (volatile so the compiler cannot fold the zero initializer).
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

/// The load-time offsets by reference, without a copy of the whole struct on the 512-byte
/// stack: the pointer is read volatile, so the compiler cannot fold the zero initializer.
#[inline(always)]
pub fn offsets_ref() -> &'static KernelOffsets {
    let p: *const KernelOffsets = &OFFSETS;
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// The syscall framework (daemon-common `syscall`): per-call filter, per-table selectors
/// naming each call, per-selector conditions, calls waiting for their exit.
#[map]
pub static SYSCALL_FILTER: Array<u32> = Array::with_max_entries(SYSCALL_FILTER_LEN, 0);
#[map]
pub static SYSCALL_SELECTORS: HashMap<SyscallKey, u64> =
    HashMap::with_max_entries(SLOTS as u32 * MAX_SYSCALL_KEYS, 0);
#[map]
pub static SYSCALL_CONDS: Array<SyscallSelectorConds> =
    Array::with_max_entries((TABLES * MAX_SELECTORS) as u32, 0);
#[map]
pub static SYSCALL_INFLIGHT: LruHashMap<u32, SyscallInflight> =
    LruHashMap::with_max_entries(MAX_SYSCALL_INFLIGHT, 0);

#[map]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);
#[map]
pub static SLOT_META: Array<SlotMeta> = Array::with_max_entries(TABLES as u32, 0);
#[map]
pub static SELECTORS: Array<SelectorEntry> =
    Array::with_max_entries((TABLES * MAX_SELECTORS) as u32, 0);
/// `{slot, namespace_id}` -> the namespace's group in that slot (none: group 0).
#[map]
pub static GROUPS: HashMap<NamespaceKey, u32> =
    HashMap::with_max_entries(MAX_GROUPED_NAMESPACES * SLOTS as u32, NO_PREALLOC);

/// Matcher maps hold every table of both slots (`NODE_MAP_FACTOR`), allocated as used.
const NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

#[map]
pub static BIN_EXACT: HashMap<PathKey, u64> = HashMap::with_max_entries(
    MAX_BINARY_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
#[map]
pub static BIN_INODE: HashMap<BinInodeKey, u64> = HashMap::with_max_entries(
    MAX_BINARY_IDENTITIES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
/// Identities of the dynamic loaders (not slotted: a fact of the host, kept by userspace).
#[map]
pub static LOADERS: HashMap<FileKey, u8> = HashMap::with_max_entries(MAX_LOADERS, 0);
/// Loader options that take a value (`--library-path`), zero-filled to `LOADER_OPTION_LEN`.
#[map]
pub static LOADER_ARG_OPTIONS: HashMap<[u8; LOADER_OPTION_LEN], u8> =
    HashMap::with_max_entries(64, 0);
#[map]
pub static BIN_PREFIX: LpmTrie<PathLpmData, u64> = LpmTrie::with_max_entries(
    MAX_BINARY_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
#[map]
pub static BIN_POSTFIX: LpmTrie<PathLpmData, u64> = LpmTrie::with_max_entries(
    MAX_BINARY_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
#[map]
pub static ARG_EXACT: HashMap<ArgKey, u64> =
    HashMap::with_max_entries(MAX_ARG_VALUES * NODE_MAP_FACTOR * SLOTS as u32, NO_PREALLOC);
#[map]
pub static ARG_PREFIX: LpmTrie<ArgLpmData, u64> =
    LpmTrie::with_max_entries(MAX_ARG_VALUES * NODE_MAP_FACTOR * SLOTS as u32, NO_PREALLOC);
#[map]
pub static ARG_POSTFIX: LpmTrie<ArgLpmData, u64> =
    LpmTrie::with_max_entries(MAX_ARG_VALUES * NODE_MAP_FACTOR * SLOTS as u32, NO_PREALLOC);
#[map]
pub static NAMESPACES: HashMap<NamespaceKey, u64> =
    HashMap::with_max_entries(MAX_NAMESPACES * NODE_MAP_FACTOR * SLOTS as u32, NO_PREALLOC);
#[map]
pub static DEST_V4: LpmTrie<V4LpmData, u64> =
    LpmTrie::with_max_entries(MAX_CIDRS * NODE_MAP_FACTOR * SLOTS as u32, NO_PREALLOC);
#[map]
pub static DEST_V6: LpmTrie<V6LpmData, u64> =
    LpmTrie::with_max_entries(MAX_CIDRS * NODE_MAP_FACTOR * SLOTS as u32, NO_PREALLOC);
#[map]
pub static PORTS: LpmTrie<PortLpmData, u64> = LpmTrie::with_max_entries(
    MAX_PORT_PREFIXES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);

#[map]
pub static WORKLOADS: HashMap<u64, WorkloadEntry> = HashMap::with_max_entries(MAX_WORKLOADS, 0);
/// Not preallocated: the loader sizes it from pid_max (a tgid is always below it), and only
/// live processes take memory.
#[map]
pub static PROCESSES: HashMap<u32, ProcessState> =
    HashMap::with_max_entries(MAX_PROCESSES, aya_ebpf::bindings::BPF_F_NO_PREALLOC);
/// Bits userspace decided per process image during a switch (see `daemon-common`, Switching).
#[map]
pub static RESEED: HashMap<ImageKey, ReseedEntry> = HashMap::with_max_entries(MAX_PROCESSES, 0);

/// Per-socket state of sockets an egress selector could act on (must be a BTF map).
#[btf_map]
pub static SK_STORAGE: SkStorage<SockState> = SkStorage::new();

/// Watched sockets, keyed by socket cookie; the sk_msg program is attached to it.
#[map]
pub static SOCKHASH: SockHash<u64> = SockHash::with_max_entries(MAX_WATCHED_SOCKETS, 0);

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Per-CPU working memory of the exec program (too big for the 512-byte stack).
#[repr(C)]
pub struct ExecScratch {
    pub event: ExecEvent,
    pub path_key: PathKey,
    pub path_lpm: aya_ebpf::maps::lpm_trie::Key<PathLpmData>,
    pub arg_buf: [u8; ARG_BUF],
    pub arg_key: ArgKey,
    pub arg_lpm: aya_ebpf::maps::lpm_trie::Key<ArgLpmData>,
    /// The filename given to execve, zero-filled.
    pub fname: [u8; PATH_LEN],
    /// A loader exec's target (the program it loads), zero-filled.
    pub target: [u8; PATH_LEN],
    /// A loader option being looked up in `LOADER_ARG_OPTIONS`.
    pub option: [u8; LOADER_OPTION_LEN],
    /// The argv walk's state (`exec::argv::arg_step`).
    pub argv: ArgWalk,
    /// The binary-path lookups' state (`exec::binary_paths::path_step`).
    pub paths: PathLookups,
}

/// State of the binary-path lookups of the exec program (`path_step`): the executed file's
/// path, the filename given to execve and a loader's target, each zero-filled in the scratch.
#[repr(C)]
pub struct PathLookups {
    pub len: [u32; 3],
    /// 0 when the path was truncated: its end is unknown, so only prefixes can be judged.
    pub complete: [u32; 3],
    pub present: [u32; 3],
    pub n: u32,
    pub hits: [u64; SLOTS],
    pub slot: [u32; SLOTS],
    pub slot_lookups: [u32; SLOTS],
    pub lookups: u32,
    pub _pad: u32,
}

/// State of the argv walk of the exec program (`arg_step`). In the scratch map rather than on
/// the stack: the verifier does not track a map value's contents, so it does not see a new
/// state at every step of the walk. The slots it looks arguments up in are
/// `ExecScratch::paths`' (set before the walk, read-only during it).
#[repr(C)]
pub struct ArgWalk {
    /// User address of the next byte to read.
    pub p: u64,
    /// End of the argument area.
    pub end: u64,
    /// `min(end, arg_start + MAX_ARG_BYTES)`: no element starts or is read past it.
    pub limit: u64,
    /// Start of the element being skipped to its end (longer than one read), else 0.
    pub elem_start: u64,
    pub hits: [u64; SLOTS],
    /// argv index of the element at `p` (or being skipped).
    pub index: u32,
    /// 0 while walking, then `ARGS_COMPLETE` or `ARGS_INCOMPLETE`.
    pub done: u32,
    /// 1 when argument conditions are matched (else the walk only looks for a target).
    pub args: u32,
    /// `TARGET_*`: where the walk is in finding a loader exec's target.
    pub target: u32,
    /// Length of the target copied into `ExecScratch::target`.
    pub target_len: u32,
    pub _pad: u32,
}

/// Bytes read per argv element (a longer element stops argument matching, see `exec::argv`).
pub const ARG_BUF: usize = 256;

/// One all-zero value, never written: the source of `zero_fill` (BPF has no memset, and
/// byte loops cost verifier budget).
#[map]
pub static ZEROS: Array<[u8; 512]> = Array::with_max_entries(1, 0);

/// Zero `len` (<= 512) bytes at `dst` with one helper call.
#[inline(always)]
pub fn zero_fill(dst: *mut u8, len: u32) {
    if let Some(z) = ZEROS.get_ptr(0) {
        unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_kernel(dst.cast(), len, z.cast());
        }
    }
}

/// Per-CPU room for the state a connect gives a socket (the connect programs' stack is full).
#[map]
pub static SOCK_SCRATCH: PerCpuArray<SockState> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU room for the backstop's unseen-payload record.
#[map]
pub static UNSEEN_SCRATCH: PerCpuArray<SockUnseenEvent> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static EXEC_SCRATCH: PerCpuArray<ExecScratch> = PerCpuArray::with_max_entries(1, 0);

/// Reads a kernel value at `base + off` (0 when the offset is unknown or the read fails, which
/// is counted).
#[inline(always)]
pub fn read_kernel<T: Default>(base: u64, off: u32) -> T {
    let mut v = T::default();
    if base == 0 || off == 0 {
        return v;
    }
    let r = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_kernel(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            (base + off as u64) as *const core::ffi::c_void,
        )
    };
    if r != 0 {
        count(COUNTER_READ_FAILED);
        return T::default();
    }
    v
}

/// Adds one to a per-CPU counter.
#[inline(always)]
pub fn count(index: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(index) {
        unsafe { *p += 1 };
    }
}

/// Pending bytes from which a routine record wakes the reader at once. Below it the reader's
/// periodic poll (`bulwark run` polls every 50 ms) collects records in batches: a wakeup per
/// record costs more CPU than everything userspace does with an exec record, and on a busy
/// node that CPU is taken from the workloads.
const WAKEUP_PENDING_BYTES: u64 = 256 * 1024;

/// The submit flags of a routine record: wake the reader only when enough is pending.
#[inline(always)]
pub fn wakeup_flags() -> u64 {
    (if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= WAKEUP_PENDING_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }) as u64
}

/// Writes a routine record (exec, fork, exit, connect) to the ring buffer without waking the
/// reader unless enough is pending; a full buffer is counted in `COUNTER_LOST_EVENTS`.
#[inline(always)]
pub fn emit<T: 'static>(record: &T) {
    if EVENTS.output::<T>(record, wakeup_flags()).is_err() {
        count(COUNTER_LOST_EVENTS);
    }
}

/// Writes a record that should reach userspace at once (policy matches; socket classified,
/// after which userspace takes the socket out of the SOCKHASH) and wakes the reader.
#[inline(always)]
pub fn emit_now<T: 'static>(record: &T) {
    if EVENTS
        .output::<T>(record, BPF_RB_FORCE_WAKEUP as u64)
        .is_err()
    {
        count(COUNTER_LOST_EVENTS);
    }
}

/// Raw pointer of a BTF map definition, for helpers aya-ebpf does not wrap for this context.
#[inline(always)]
pub fn sk_storage_ptr() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&SK_STORAGE).cast_mut().cast()
}

/// The [`SockState`] of a socket (`struct sock *` as the program has it), if it is watched.
#[inline(always)]
pub fn sock_state<T>(sk: *mut T) -> Option<&'static mut SockState> {
    let st = unsafe {
        aya_ebpf::helpers::generated::bpf_sk_storage_get(
            sk_storage_ptr(),
            sk.cast(),
            core::ptr::null_mut(),
            0,
        )
    } as *mut SockState;
    if st.is_null() {
        None
    } else {
        Some(unsafe { &mut *st })
    }
}

/// The global switch (a zeroed config before userspace wrote one: slot 0, nothing pending).
#[inline(always)]
pub fn config() -> Config {
    match CONFIG.get(0) {
        Some(c) => *c,
        None => Config {
            active_slot: 0,
            pending_slot: NO_SLOT,
            generation: 0,
        },
    }
}

/// Selector `index` of `table` (a group of a slot, `daemon_common::table`).
#[inline(always)]
pub fn selector(table: u32, index: u32) -> Option<&'static SelectorEntry> {
    SELECTORS.get((table & 0xff) * MAX_SELECTORS as u32 + (index & 63))
}

/// Does selector `index` of `table` kill (an enforce-mode `Sigkill`)?
#[inline(always)]
pub fn kills(table: u32, index: u32) -> bool {
    selector(table, index)
        .is_some_and(|s| s.mode == MODE_ENFORCE && s.actions & ACTION_SIGKILL != 0)
}

/// The table of `slot` that judges a process in `namespace_id` (0: host): its namespace's
/// group from `GROUPS`, group 0 without one. One lookup, whatever the number of groups.
#[inline(always)]
pub fn process_table(slot: u32, namespace_id: u32) -> u32 {
    let slot = slot & 1;
    if namespace_id == 0 {
        return slot;
    }
    match unsafe { GROUPS.get(&NamespaceKey { slot, namespace_id }) } {
        Some(g) => table(slot, *g & (MAX_GROUPS as u32 - 1)),
        None => slot,
    }
}

/// The watch table of `slot`: which sockets are watched, whoever connects.
#[inline(always)]
pub fn watch_table(slot: u32) -> u32 {
    table(slot, WATCH_GROUP as u32)
}

/// Fills an event header.
#[inline(always)]
pub fn header(kind: u32, tgid: u32, start_ns: u64) -> EventHeader {
    EventHeader {
        kind,
        tgid,
        time_ns: unsafe { aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns() },
        start_ns,
    }
}

/// The `SLOT_META` entry of `table` (default when absent). Every table of a slot carries the
/// slot's generation, so `slot_meta(slot)` (group 0) gives it.
#[inline(always)]
pub fn slot_meta(table: u32) -> SlotMeta {
    match SLOT_META.get(table & 0xff) {
        Some(m) => *m,
        None => SlotMeta::default(),
    }
}

/// `bpf_get_current_pid_tgid()`: tgid in the upper 32 bits, pid in the lower.
#[inline(always)]
pub fn bpf_pid_tgid() -> u64 {
    unsafe { aya_ebpf::helpers::generated::bpf_get_current_pid_tgid() }
}
