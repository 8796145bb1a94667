//! `hook: file` in the kernel (daemon-common `file`), called by the syscall framework's two
//! programs (`crate::syscall`) for the calls whose `SYSCALL_FILTER` entry has
//! `SYSCALL_WANT_FILE`. An open is decided at its exit from the `struct file` it installed
//! (`task->files->fdt->fd[ret]`): its path walked by the kernel's dentries and mounts
//! (`crate::path`), its identity and its mode, so what is judged is the file actually opened.
//! Other calls are decided at entry, where their effect has not happened yet and no lookup has
//! been done: from their fd's file (`fchmod`, `ftruncate`), else from the dirfd's (or the working
//! directory's) walked path joined with the caller's string (`..` and symlinks in that string
//! are not resolved: docs/files.md). A match is one `EVENT_FILE` record plus one `EVENT_MATCH`
//! per selector; an enforce-mode `Sigkill` sends SIGKILL, delivered before the call returns to
//! user space.

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_cgroup_id, bpf_get_current_task, bpf_loop, bpf_probe_read_kernel,
        bpf_probe_read_kernel_str, bpf_probe_read_user, bpf_probe_read_user_str, bpf_send_signal,
    },
    macros::map,
    maps::{
        lpm_trie::{Key, LpmTrie},
        Array, HashMap, PerCpuArray,
    },
    programs::RawTracePointContext,
};
use daemon_common::*;

use crate::maps::*;
use crate::path::{copy_walked, identity, rd, walk, PATH_SCRATCH, WALK_END};

const SIGKILL: u32 = 9;
const NO_PREALLOC: u32 = aya_ebpf::bindings::BPF_F_NO_PREALLOC;

#[map]
pub static FILE_TABLES: Array<FileTable> = Array::with_max_entries(TABLES as u32, 0);
#[map]
pub static FILE_SELECTORS: Array<FileSelectorEntry> =
    Array::with_max_entries((TABLES * MAX_SELECTORS) as u32, 0);
#[map]
pub static FILE_EXACT: HashMap<PathKey, u64> = HashMap::with_max_entries(
    MAX_FILE_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
#[map]
pub static FILE_PREFIX: LpmTrie<PathLpmData, u64> = LpmTrie::with_max_entries(
    MAX_FILE_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
#[map]
pub static FILE_POSTFIX: LpmTrie<PathLpmData, u64> = LpmTrie::with_max_entries(
    MAX_FILE_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);
#[map]
pub static FILE_INODE: HashMap<BinInodeKey, u64> = HashMap::with_max_entries(
    MAX_FILE_VALUES * NODE_MAP_FACTOR * SLOTS as u32,
    NO_PREALLOC,
);

/// Per-CPU working memory: the record being built (its `path` is the lookup source) and the
/// lookup keys.
#[repr(C)]
pub struct FileScratch {
    pub event: FileEvent,
    /// `struct file *` the record describes (0: a name not resolved by the kernel); its
    /// identity is read only when a lookup or a match needs it.
    pub file: u64,
    pub key: PathKey,
    pub lpm: Key<PathLpmData>,
    /// Room for [`reverse_step`]'s last 8-byte store, which may pass the end of `lpm` (the
    /// bytes past the key's prefix length are not compared).
    _reverse_tail: [u8; 8],
}

#[map]
pub(crate) static FILE_SCRATCH: PerCpuArray<FileScratch> = PerCpuArray::with_max_entries(1, 0);

/// What the caller of [`enter`] / [`exit`] knows of the call.
pub struct Call {
    pub index: u32,
    pub want: u32,
    /// `struct pt_regs *` of the call.
    pub regs: u64,
    /// Argument offsets in `pt_regs` (native or compat).
    pub args: [u32; 6],
    pub compat: bool,
}

impl Call {
    /// Argument `i` (0..=5), sign-extended from 32 bits for a compat call.
    #[inline(always)]
    fn arg(&self, i: u32) -> u64 {
        let off = self.args[(i & 7).min(5) as usize];
        if self.compat {
            read_kernel::<u32>(self.regs, off) as i32 as i64 as u64
        } else {
            read_kernel::<u64>(self.regs, off)
        }
    }

    /// A pointer argument (zero-extended for a compat call).
    #[inline(always)]
    fn ptr(&self, i: u32) -> u64 {
        let off = self.args[(i & 7).min(5) as usize];
        if self.compat {
            read_kernel::<u32>(self.regs, off) as u64
        } else {
            read_kernel::<u64>(self.regs, off)
        }
    }
}

/// The process's file selectors that may match, and its table; `None` when none may.
#[inline(always)]
pub(crate) fn candidates(tgid: u32) -> Option<(u64, u32, u64)> {
    let p = unsafe { PROCESSES.get(&tgid) }?;
    let slot = config().active_slot & 1;
    let table = process_table(slot, p.namespace_id);
    let t = FILE_TABLES.get(table)?;
    let c = t.selectors & p.selectors[slot as usize];
    (c != 0).then_some((c, table, p.start_ns))
}

/// At a watched call's entry: calls other than opens are judged now (opens at their exit,
/// where everything they need is still at hand: nothing is kept per thread).
/// Not inlined: its stack frame is its own, not added to the syscall consumer's.
#[inline(never)]
pub fn enter(call: &Call) {
    let fc = FileCall::of(call.want);
    if is_open(fc.op) {
        return;
    }
    let off = offsets_ref();
    if off.file_read != 1 {
        return;
    }
    let pid_tgid = bpf_pid_tgid();
    let Some((cands, table, start_ns)) = candidates((pid_tgid >> 32) as u32) else {
        return;
    };
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    let lookups = FILE_TABLES.get(table).map_or(0, |t| t.lookups);
    let ev = &mut s.event;
    ev.flags = 0;
    ev.ret = 0;
    ev.at_exit = 0;
    ev.op = fc.op as u8;
    ev.via = FILE_VIA_SYSCALL;
    if fc.op == FILE_OP_METADATA_FD || fc.op == FILE_OP_TRUNCATE_FD {
        let file = fd_file(call.arg(fc.dirfd) as i32 as i64, off);
        if file == 0 || !describe_file(s, file, lookups, off) {
            return;
        }
        judge(cands, table, start_ns, call, op_access(fc.op));
        return;
    }
    if name_path(s, call.arg(fc.dirfd), fc.dirfd, call.ptr(fc.path), false) {
        judge(cands, table, start_ns, call, op_access(fc.op));
    }
    if fc.op == FILE_OP_RENAME {
        // The new name: its dirfd is the argument before it when the old one has a dirfd.
        let dirfd_arg = if fc.dirfd == FILE_ARG_NONE {
            FILE_ARG_NONE
        } else {
            fc.flags.wrapping_sub(1)
        };
        let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
            return;
        };
        let s = unsafe { &mut *s };
        if name_path(s, call.arg(dirfd_arg), dirfd_arg, call.ptr(fc.flags), false) {
            judge(cands, table, start_ns, call, RENAME_NEW_ACCESS);
        }
    }
}

/// Opens are decided at their exit.
#[inline(always)]
fn is_open(op: u32) -> bool {
    op == FILE_OP_OPEN || op == FILE_OP_OPEN_HOW
}

/// The flags an open was called with, read from its registers. At the exit they are still
/// what the entry saw: `sys_enter` runs after the ptrace entry stop and seccomp, the call
/// does not write its argument registers, and no ptrace stop comes before `sys_exit` (a
/// process cannot change its own saved registers meanwhile). `openat2`'s flags are in the
/// caller's memory, which another thread may change at any time: as racy at entry as here
/// (the kernel copies them once, in between).
#[inline(always)]
fn open_flags(call: &Call, fc: &FileCall) -> u64 {
    if fc.flags == FILE_ARG_NONE {
        // creat()
        return O_CREAT | O_WRONLY | O_TRUNC;
    }
    if fc.op == FILE_OP_OPEN_HOW {
        // struct open_how { u64 flags; ... }
        let mut f = 0u64;
        unsafe {
            bpf_probe_read_user(
                (&mut f as *mut u64).cast(),
                8,
                call.ptr(fc.flags) as *const core::ffi::c_void,
            )
        };
        return f;
    }
    call.arg(fc.flags) & 0xffff_ffff
}

/// At a watched call's exit: a successful open is judged by the file it installed, with its
/// flags from the call's registers (`call.regs` of the exit: the saved registers of the
/// call, native or compat) and the process's candidates looked up now.
#[inline(never)]
pub fn exit(ctx: &RawTracePointContext, call: &Call) {
    let fc = FileCall::of(call.want);
    if !is_open(fc.op) {
        return;
    }
    let ret: i64 = ctx.arg(1);
    if ret < 0 {
        // Nothing was opened.
        return;
    }
    let Some((cands, table, start_ns)) = candidates((bpf_pid_tgid() >> 32) as u32) else {
        return;
    };
    let opened = Opened {
        candidates: cands,
        table,
        start_ns,
        flags: open_flags(call, &fc),
    };
    judge_opened(&opened, call, ret, FILE_VIA_SYSCALL);
}

/// An open to judge by the file it installed: the process's candidate selectors and table,
/// its identity, and the open flags.
pub(crate) struct Opened {
    pub candidates: u64,
    pub table: u32,
    pub start_ns: u64,
    pub flags: u64,
}

/// Judges the file an open installed as descriptor `ret` of the current task (nothing when
/// `ret < 0`: nothing was opened): the open system call's exit, and io_uring's open
/// completion (`crate::uring`, `via` [`FILE_VIA_URING`], `call.index` the opcode). Whether a
/// selector matched. A call of its own: its frame is not stacked on its callers'.
#[inline(never)]
pub(crate) fn judge_opened(o: &Opened, call: &Call, ret: i64, via: u8) -> bool {
    if ret < 0 {
        return false;
    }
    let off = offsets_ref();
    if off.file_read != 1 {
        return false;
    }
    let file = fd_file(ret, off);
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let s = unsafe { &mut *s };
    let lookups = FILE_TABLES.get(o.table).map_or(0, |t| t.lookups);
    if file == 0 || !describe_file(s, file, lookups, off) {
        return false;
    }
    let ev = &mut s.event;
    let f_mode: u32 = rd(file + off.file_f_mode as u64);
    ev.flags = o.flags;
    ev.ret = ret;
    ev.at_exit = 1;
    ev.op = FILE_OP_OPEN as u8;
    ev.via = via;
    judge(
        o.candidates,
        o.table,
        o.start_ns,
        call,
        open_access(f_mode, o.flags),
    )
}

/// `current->files->fdt->fd[fd]` (0 when there is none).
#[inline(always)]
pub(crate) fn fd_file(fd: i64, off: &KernelOffsets) -> u64 {
    if fd < 0 {
        return 0;
    }
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = rd(task + off.task_files as u64);
    let fdt: u64 = rd(files + off.files_fdt as u64);
    if fdt == 0 {
        return 0;
    }
    // `struct fdtable` starts { max_fds, fd }: one read when laid out so.
    let (max, fds) = if off.fdtable_max_fds == 0 && off.fdtable_fd == 8 {
        let t: [u64; 2] = rd(fdt);
        (t[0] as u32, t[1])
    } else {
        (
            rd::<u32>(fdt + off.fdtable_max_fds as u64),
            rd::<u64>(fdt + off.fdtable_fd as u64),
        )
    };
    if fd as u64 >= u64::from(max) {
        return 0;
    }
    rd(fds + 8 * fd as u64)
}

/// Fills the record's path (walked) and `resolved` from `struct file *file`, and its identity
/// when `lookups` has identity conditions or the path cannot be walked (else [`judge`] reads it
/// for a match only: most calls match nothing, and the identity costs four kernel reads).
#[inline(always)]
pub(crate) fn describe_file(
    s: &mut FileScratch,
    file: u64,
    lookups: u32,
    off: &KernelOffsets,
) -> bool {
    s.file = file;
    let ev = &mut s.event;
    ev.dev = 0;
    ev.ino = 0;
    ev.resolved = 1;
    ev.path_len = match walk(file + off.file_f_path as u64, off)
        .and_then(|pos| copy_walked(pos, 0, ev.path.as_mut_ptr()))
    {
        Some(n) => n as u32,
        None => {
            // Unwalkable (too deep or long): judged by identity only.
            zero_fill(ev.path.as_mut_ptr(), PATH_LEN as u32);
            0
        }
    };
    if ev.path_len == 0 || lookups & FILE_LOOKUP_INODE != 0 {
        fill_identity(ev, file, off);
    }
    ev.path_len != 0 || ev.ino != 0
}

/// The record's `dev` and `ino` from `struct file *file`.
#[inline(always)]
fn fill_identity(ev: &mut FileEvent, file: u64, off: &KernelOffsets) {
    let id = identity(file, off);
    ev.dev = id.dev;
    ev.ino = id.ino;
}

/// Fills the record's path from a call's name argument: absolute as given, else joined to the
/// dirfd's path (`AT_FDCWD` or no dirfd: the working directory). An empty name
/// (`AT_EMPTY_PATH`) is the dirfd's file itself. `kernel_name`: `name` is the kernel's copy
/// (io_uring's `struct filename`), not the caller's memory.
#[inline(never)]
pub(crate) fn name_path(
    s: &mut FileScratch,
    dirfd: u64,
    dirfd_arg: u32,
    name: u64,
    kernel_name: bool,
) -> bool {
    let off = offsets_ref();
    s.file = 0;
    let ev = &mut s.event;
    ev.dev = 0;
    ev.ino = 0;
    ev.resolved = 0;
    ev.path_len = 0;
    if name == 0 {
        return false;
    }
    let mut first = [0u8; 1];
    let src = name as *const core::ffi::c_void;
    let read = if kernel_name {
        unsafe { bpf_probe_read_kernel(first.as_mut_ptr().cast(), 1, src) }
    } else {
        unsafe { bpf_probe_read_user(first.as_mut_ptr().cast(), 1, src) }
    };
    if read != 0 {
        return false;
    }
    if first[0] == b'/' {
        zero_fill(ev.path.as_mut_ptr(), PATH_LEN as u32);
        let n = read_name(ev.path.as_mut_ptr(), PATH_LEN as u32, name, kernel_name);
        if n <= 1 {
            return false;
        }
        ev.path_len = (n - 1) as u32;
        return true;
    }
    // An `int`: the register's upper half means nothing.
    let dirfd = dirfd as i32 as i64;
    let dir_path = if dirfd_arg == FILE_ARG_NONE || dirfd == AT_FDCWD {
        let task = unsafe { bpf_get_current_task() };
        let fs: u64 = rd(task + off.task_fs as u64);
        if fs == 0 {
            return false;
        }
        fs + off.fs_pwd as u64
    } else {
        let file = fd_file(dirfd, off);
        if file == 0 {
            return false;
        }
        if first[0] == 0 {
            // AT_EMPTY_PATH: the dirfd's file itself.
            // Its identity always read (BPF calls take five arguments: no room here
            // for the table's lookups).
            return describe_file(s, file, FILE_LOOKUP_INODE, off);
        }
        file + off.file_f_path as u64
    };
    let Some(pos) = walk(dir_path, off) else {
        return false;
    };
    let Some(ps) = PATH_SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let ps = unsafe { &mut *ps };
    // Nothing walked: the directory is the root, "/".
    let pos = if pos as usize == WALK_END {
        ps.walk[WALK_END - 1] = b'/';
        WALK_END as u32 - 1
    } else {
        pos
    };
    // The name after the directory: "/name" from WALK_END on (the root's walk already ends in
    // its "/", so no second one there).
    let root = pos as usize == WALK_END - 1;
    let at = if root { WALK_END } else { WALK_END + 1 };
    ps.walk[WALK_END] = b'/';
    let n = read_name(
        unsafe { ps.walk.as_mut_ptr().add(at) },
        255,
        name,
        kernel_name,
    );
    if n <= 1 {
        return false;
    }
    let extra = (n as u32 - 1) + if root { 0 } else { 1 };
    match copy_walked(pos, extra, ev.path.as_mut_ptr()) {
        Some(len) => {
            ev.path_len = len as u32;
            true
        }
        None => false,
    }
}

/// Copies the NUL-terminated name at `name` (the caller's memory, or the kernel's) into
/// `dst`; the bytes copied with the NUL, or a negative error.
#[inline(always)]
fn read_name(dst: *mut u8, len: u32, name: u64, kernel: bool) -> i64 {
    let src = name as *const core::ffi::c_void;
    if kernel {
        unsafe { bpf_probe_read_kernel_str(dst.cast(), len, src) }
    } else {
        unsafe { bpf_probe_read_user_str(dst.cast(), len, src) }
    }
}

/// State of [`reverse_step`].
#[repr(C)]
struct Reverse {
    n: u32,
}

/// Bytes of the postfix key [`reverse_step`] writes per step.
const REVERSE_STEP: usize = 8;

/// `lpm.bytes[j] = event.path[n-1-j]` for the eight `j` of step `index` (`bpf_loop`
/// callback): the eight path bytes before `n - 8 * index`, read as one big-endian word and
/// stored little-endian. Near the path's start, where fewer than eight are left, the word's
/// low bytes come from the record's fields before `path`: they land past the key's prefix
/// length, which the trie does not compare.
#[inline(never)]
extern "C" fn reverse_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    const PATH_AT: usize =
        core::mem::offset_of!(FileScratch, event) + core::mem::offset_of!(FileEvent, path);
    const KEY_AT: usize = core::mem::offset_of!(FileScratch, lpm)
        + core::mem::offset_of!(Key<PathLpmData>, data)
        + core::mem::offset_of!(PathLpmData, bytes);
    let c = unsafe { &*(ctx as *const Reverse) };
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let done = ((index as usize) & 31) * REVERSE_STEP;
    if done >= c.n as usize {
        return 1;
    }
    // Path bytes not reversed yet: 1..=255.
    let left = (c.n as usize - done) & 0xff;
    // Pointers derived from the whole scratch: the read may start before `path`, the last
    // store may run into `_reverse_tail`.
    let base = s.cast::<u8>();
    unsafe {
        let word = core::ptr::read_unaligned(
            base.add(PATH_AT - REVERSE_STEP + left)
                .cast::<[u8; REVERSE_STEP]>(),
        );
        core::ptr::write_unaligned(
            base.add(KEY_AT + done).cast::<[u8; REVERSE_STEP]>(),
            u64::from_be_bytes(word).to_le_bytes(),
        );
    }
    0
}

/// The path conditions of `table` that the record's path and file hit (before negation).
#[inline(always)]
fn path_hits(table: u32, lookups: u32) -> u64 {
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let s = unsafe { &mut *s };
    let mut hits = 0u64;
    let len = (s.event.path_len as usize) & (PATH_LEN - 1);
    if len != 0 {
        if lookups & FILE_LOOKUP_EXACT != 0 {
            s.key.slot = table;
            unsafe {
                bpf_probe_read_kernel(
                    s.key.path.as_mut_ptr().cast(),
                    PATH_LEN as u32,
                    s.event.path.as_ptr().cast(),
                )
            };
            if let Some(h) = unsafe { FILE_EXACT.get(&s.key) } {
                hits |= *h;
            }
        }
        let l = if len > PATH_AFFIX_LEN {
            PATH_AFFIX_LEN
        } else {
            len
        };
        s.lpm.prefix_len = 8 * (1 + l as u32);
        s.lpm.data.slot = table as u8;
        if lookups & FILE_LOOKUP_PREFIX != 0 {
            // The key's first `l` bytes: the trie compares no further.
            unsafe {
                bpf_probe_read_kernel(
                    core::ptr::addr_of_mut!(s.lpm.data.bytes).cast(),
                    (l & 0xff) as u32,
                    s.event.path.as_ptr().cast(),
                )
            };
            if let Some(h) = FILE_PREFIX.get(&s.lpm) {
                hits |= *h;
            }
        }
        if lookups & FILE_LOOKUP_POSTFIX != 0 {
            let mut c = Reverse { n: l as u32 };
            unsafe {
                bpf_loop(
                    l.div_ceil(REVERSE_STEP) as u32,
                    reverse_step as *mut core::ffi::c_void,
                    (&mut c as *mut Reverse).cast(),
                    0,
                )
            };
            if let Some(s) = FILE_SCRATCH.get_ptr_mut(0) {
                if let Some(h) = FILE_POSTFIX.get(unsafe { &(*s).lpm }) {
                    hits |= *h;
                }
            }
        }
    }
    if lookups & FILE_LOOKUP_INODE != 0 {
        if let Some(s) = FILE_SCRATCH.get_ptr(0) {
            let ev = unsafe { &(*s).event };
            if ev.ino != 0 {
                let k = BinInodeKey {
                    slot: table,
                    dev: ev.dev,
                    ino: ev.ino,
                };
                if let Some(h) = unsafe { FILE_INODE.get(&k) } {
                    hits |= *h;
                }
            }
        }
    }
    hits
}

/// State of [`judge_step`].
#[repr(C)]
struct Judge {
    candidates: u64,
    holds: u64,
    matched: u64,
    kill: u64,
    table: u32,
    access: u32,
}

#[inline(never)]
extern "C" fn judge_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let j = unsafe { &mut *(ctx as *mut Judge) };
    let i = (index & 63) as u32;
    let bit = 1u64 << i;
    if j.candidates & bit == 0 {
        return 0;
    }
    let Some(e) = FILE_SELECTORS.get((j.table & 0xff) * MAX_SELECTORS as u32 + i) else {
        return 0;
    };
    if e.access & j.access == 0 || e.path_required & !j.holds != 0 {
        return 0;
    }
    j.matched |= bit;
    if kills(j.table, i) {
        j.kill |= bit;
    }
    0
}

/// Judges the record's path and file for `candidates` of `table`; reports and kills what
/// matched, and says whether anything did. `start_ns`: the process's.
#[inline(never)]
pub(crate) fn judge(candidates: u64, table: u32, start_ns: u64, call: &Call, access: u32) -> bool {
    let Some(t) = FILE_TABLES.get(table) else {
        return false;
    };
    let (negate, lookups) = (t.path_negate, t.lookups);
    // A route whose file cannot be judged (`crate::uring`) fails closed: every path
    // condition holds, and the caller passed only enforcing candidates.
    let unjudged = FILE_SCRATCH
        .get_ptr(0)
        .is_some_and(|s| unsafe { (*s).event.via } >= FILE_VIA_URING_FIXED_SLOT);
    let holds = if unjudged {
        u64::MAX
    } else {
        path_hits(table, lookups) ^ negate
    };
    let mut j = Judge {
        candidates,
        holds,
        matched: 0,
        kill: 0,
        table,
        access,
    };
    // Up to the highest candidate only (most tables have a few file selectors).
    unsafe {
        bpf_loop(
            64 - candidates.leading_zeros(),
            judge_step as *mut core::ffi::c_void,
            (&mut j as *mut Judge).cast(),
            0,
        )
    };
    if j.matched == 0 {
        return false;
    }
    if j.kill != 0 {
        unsafe { bpf_send_signal(SIGKILL) };
    }
    let pid_tgid = bpf_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return true;
    };
    let s = unsafe { &mut *s };
    if s.file != 0 && s.event.ino == 0 {
        fill_identity(&mut s.event, s.file, offsets_ref());
    }
    let ev = &mut s.event;
    ev.header = header(EVENT_FILE, tgid, start_ns);
    ev.selectors = j.matched;
    ev.cgroup_id = cgroup_id;
    ev.access = access;
    ev.nr = call.index % SYSCALL_COMPAT_BASE;
    ev.compat = call.compat as u8;
    ev.tid = pid_tgid as u32;
    ev.table = table;
    ev.enforced = (j.kill != 0) as u8;
    emit_now(ev);
    crate::syscall::report_matches(j.matched, j.kill, cgroup_id, &ev.header, ev.tid, table);
    true
}
