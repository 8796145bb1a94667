//! The contract of `hook: file`: the second consumer of the syscall-tracepoint framework
//! (see [`crate::SYSCALL_WANT_FILE`]). It judges the file a call **actually** used, not the
//! string the caller passed: an open is decided at the call's exit from the `struct file` the
//! kernel installed in the fd table (`task->files->fdt->fd[ret]`), walked dentry by dentry to an
//! absolute path and read for its identity (`s_dev`, `i_ino`), so `..`, symlinks, a dirfd,
//! `/proc/self/fd/N` and `open_by_handle_at` all come out as the file opened.
//!
//! # Layout
//! - `SYSCALL_FILTER[index]` of a call the file hook needs: [`SYSCALL_WANT_FILE`] plus the
//!   call's [`FileCall`] packed above bit 8 ([`FileCall::bits`]): what the call does to a file
//!   and where its arguments are. Arch-specific, table-independent; the compiler writes it.
//! - [`MAP_FILE_TABLES`]`[table]` ([`FileTable`]): the table's `hook: file` selectors, which path
//!   conditions are negated, which lookups it needs.
//! - [`MAP_FILE_SELECTORS`]`[table * MAX_SELECTORS + i]` ([`FileSelectorEntry`]): the path
//!   conditions a selector requires and the accesses it acts on.
//! - Path conditions (one bit per `matchPaths` entry of a table, at most [`MAX_FILE_PATH_CONDS`]):
//!   [`MAP_FILE_EXACT`] (`PathKey`), [`MAP_FILE_PREFIX`] / [`MAP_FILE_POSTFIX`] (`PathLpmData`,
//!   postfix reversed), [`MAP_FILE_INODE`] (`BinInodeKey`: the files the `In` paths named when
//!   the rules were loaded).
//! - `FILE_URING_INFLIGHT[req]` ([`FileInflight`], `index` the opcode): an io_uring open
//!   waiting for its judgement (`struct io_kiocb *` as the key). A plain hash map: an open
//!   that finds it full is not tracked but fails closed ([`FILE_VIA_URING_TABLE_FULL`]).
//! - `FILE_URING_LAST_OPEN[ring]` (`struct io_ring_ctx *` to `struct io_kiocb *`, an LRU):
//!   the open submitted last on a ring, judged at the ring's next submission if it has been
//!   issued by then (the same submission's following requests must not run before it is
//!   judged).
//!
//! Nothing is kept per thread for system calls: an open's exit reads its flags from the
//! call's saved registers and the process's candidates again.

/// [`SelectorEntry::hook`](crate::SelectorEntry::hook) of a `hook: file` selector.
pub const HOOK_FILE: u8 = 5;

/// Ring-buffer kind of [`FileEvent`].
pub const EVENT_FILE: u32 = 17;

/// Access bits ([`FileSelectorEntry::access`], [`FileEvent::access`]).
pub const FILE_ACCESS_READ: u32 = 1;
pub const FILE_ACCESS_WRITE: u32 = 2;
pub const FILE_ACCESS_CREATE: u32 = 4;
pub const FILE_ACCESS_DELETE: u32 = 8;
pub const FILE_ACCESS_METADATA: u32 = 16;
/// Every access bit.
pub const FILE_ACCESS_ALL: u32 = 31;

/// [`FileCall::op`]: what a call does. `OPEN` is decided at the call's exit from the file it
/// installed; the others at entry, from the path they name (a dirfd's path joined with the
/// string), or from their fd (`*_FD`).
pub const FILE_OP_OPEN: u32 = 1;
/// `openat2`: flags in the `struct open_how` the flags argument points to.
pub const FILE_OP_OPEN_HOW: u32 = 2;
pub const FILE_OP_DELETE: u32 = 3;
pub const FILE_OP_METADATA: u32 = 4;
pub const FILE_OP_METADATA_FD: u32 = 5;
/// The call makes a new name (mkdir, link, symlink, mknod; the new name of a rename).
pub const FILE_OP_CREATE: u32 = 6;
/// `truncate(path)`: a write.
pub const FILE_OP_TRUNCATE: u32 = 7;
/// `ftruncate(fd)`: a write.
pub const FILE_OP_TRUNCATE_FD: u32 = 8;
/// rename: the old name is deleted, the new one created (an existing file there replaced).
pub const FILE_OP_RENAME: u32 = 9;

/// [`FileCall`] argument index meaning "none" (the dirfd is then `AT_FDCWD`).
pub const FILE_ARG_NONE: u32 = 7;

/// `AT_FDCWD`.
pub const AT_FDCWD: i64 = -100;
/// Open flags (x86_64 and arm64 share these values).
pub const O_ACCMODE: u64 = 3;
pub const O_WRONLY: u64 = 1;
pub const O_RDWR: u64 = 2;
pub const O_CREAT: u64 = 0o100;
pub const O_TRUNC: u64 = 0o1000;
/// `file.f_mode` bits.
pub const FMODE_READ: u32 = 1;
pub const FMODE_WRITE: u32 = 2;
pub const FMODE_CREATED: u32 = 0x0010_0000;

/// What a call does to a file and where its arguments are, packed into `SYSCALL_FILTER` above
/// the `WANT_*` bits (bits 8..24), so the programs learn it from the lookup they already do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileCall {
    /// `FILE_OP_*`.
    pub op: u32,
    /// Argument indices 0..=5, or [`FILE_ARG_NONE`].
    pub dirfd: u32,
    pub path: u32,
    pub flags: u32,
}

impl FileCall {
    /// The bits of this call in a `SYSCALL_FILTER` entry (with `SYSCALL_WANT_FILE`, and
    /// `SYSCALL_WANT_EXIT` for opens, which are decided at exit).
    pub const fn bits(&self) -> u32 {
        let exit = if self.op == FILE_OP_OPEN || self.op == FILE_OP_OPEN_HOW {
            crate::SYSCALL_WANT_EXIT
        } else {
            0
        };
        crate::SYSCALL_WANT_FILE
            | exit
            | (self.op & 0xf) << 8
            | (self.dirfd & 7) << 12
            | (self.path & 7) << 16
            | (self.flags & 7) << 20
    }

    /// The call a `SYSCALL_FILTER` entry describes (op 0: none).
    pub const fn of(want: u32) -> FileCall {
        FileCall {
            op: (want >> 8) & 0xf,
            dirfd: (want >> 12) & 7,
            path: (want >> 16) & 7,
            flags: (want >> 20) & 7,
        }
    }
}

/// The accesses an open made: read and write from the mode of the file it installed
/// (`FMODE_READ` / `FMODE_WRITE`), write too for `O_TRUNC` (Linux truncates even with
/// `O_RDONLY`: `O_TRUNC` asks for write permission), create when the open created the
/// file (`FMODE_CREATED`). An `O_PATH` descriptor makes none.
#[inline(always)]
pub const fn open_access(f_mode: u32, flags: u64) -> u32 {
    let mut a = 0;
    if f_mode & FMODE_READ != 0 {
        a |= FILE_ACCESS_READ;
    }
    if f_mode & FMODE_WRITE != 0 || flags & O_TRUNC != 0 {
        a |= FILE_ACCESS_WRITE;
    }
    if f_mode & FMODE_CREATED != 0 {
        a |= FILE_ACCESS_CREATE;
    }
    a
}

/// `O_PATH`: a descriptor that reads and writes nothing.
pub const O_PATH: u64 = 0o10_000_000;

/// The accesses an open *asks for* by its flags (for an open judged before it runs, see
/// [`FILE_VIA_URING_FIXED_SLOT`]): read and write by `O_ACCMODE`, write for `O_TRUNC`, create
/// for `O_CREAT` (whether or not the file exists); none for `O_PATH`.
#[inline(always)]
pub const fn requested_access(flags: u64) -> u32 {
    if flags & O_PATH != 0 {
        return 0;
    }
    let mut a = match flags & O_ACCMODE {
        0 => FILE_ACCESS_READ,
        O_WRONLY => FILE_ACCESS_WRITE,
        _ => FILE_ACCESS_READ | FILE_ACCESS_WRITE,
    };
    if flags & O_TRUNC != 0 {
        a |= FILE_ACCESS_WRITE;
    }
    if flags & O_CREAT != 0 {
        a |= FILE_ACCESS_CREATE;
    }
    a
}

/// The accesses of a call judged at entry, by its op (a rename's old name: delete; its new
/// name is judged as [`FILE_OP_CREATE`] | write, see [`RENAME_NEW_ACCESS`]).
#[inline(always)]
pub const fn op_access(op: u32) -> u32 {
    match op {
        FILE_OP_DELETE | FILE_OP_RENAME => FILE_ACCESS_DELETE,
        FILE_OP_CREATE => FILE_ACCESS_CREATE,
        FILE_OP_METADATA | FILE_OP_METADATA_FD => FILE_ACCESS_METADATA,
        FILE_OP_TRUNCATE | FILE_OP_TRUNCATE_FD => FILE_ACCESS_WRITE,
        _ => 0,
    }
}

/// The accesses of a rename's new name: it is created, and a file already there is replaced
/// (its content is what the renamed file held: a write to that name).
pub const RENAME_NEW_ACCESS: u32 = FILE_ACCESS_CREATE | FILE_ACCESS_WRITE;

/// Path conditions of one table (bits of [`FileSelectorEntry::path_required`]).
pub const MAX_FILE_PATH_CONDS: usize = 64;
/// Path values per table and map (exact, prefix, postfix), and resolved identities.
pub const MAX_FILE_VALUES: u32 = 1_024;
/// io_uring opens waiting for their judgement at once (and rings with an open submitted
/// last, `FILE_URING_LAST_OPEN`).
pub const MAX_FILE_URING_INFLIGHT: u32 = 16_384;

/// [`FileTable::lookups`] bits.
pub const FILE_LOOKUP_EXACT: u32 = 1;
pub const FILE_LOOKUP_PREFIX: u32 = 2;
pub const FILE_LOOKUP_POSTFIX: u32 = 4;
pub const FILE_LOOKUP_INODE: u32 = 8;

/// Map names.
pub const MAP_FILE_TABLES: &str = "FILE_TABLES";
pub const MAP_FILE_SELECTORS: &str = "FILE_SELECTORS";
pub const MAP_FILE_EXACT: &str = "FILE_EXACT";
pub const MAP_FILE_PREFIX: &str = "FILE_PREFIX";
pub const MAP_FILE_POSTFIX: &str = "FILE_POSTFIX";
pub const MAP_FILE_INODE: &str = "FILE_INODE";
pub const MAP_FILE_URING_INFLIGHT: &str = "FILE_URING_INFLIGHT";
pub const MAP_FILE_URING_LAST_OPEN: &str = "FILE_URING_LAST_OPEN";

/// `FILE_TABLES[table]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileTable {
    /// The table's `hook: file` selectors.
    pub selectors: u64,
    /// Path conditions that hold when the path is *not* found (`NotIn`, `NotPrefix`, ...).
    pub path_negate: u64,
    /// `FILE_LOOKUP_*`: which path maps hold entries of this table.
    pub lookups: u32,
    pub _pad: u32,
}

/// `FILE_SELECTORS[table * MAX_SELECTORS + i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSelectorEntry {
    /// Path conditions that must all hold.
    pub path_required: u64,
    /// `FILE_ACCESS_*` bits the selector acts on (any of them).
    pub access: u32,
    pub _pad: u32,
}

/// `FILE_URING_INFLIGHT[req]`: an io_uring open waiting for its completion. It keeps no
/// selectors: the open is judged by the rules in force when it is judged (the process's
/// candidates read again then), like an open system call's exit. An open held in flight (behind
/// a linked request) can outlive two rule changes, and the slot it was submitted under is then
/// rewritten with other selectors at the same bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileInflight {
    /// The open flags as the caller gave them.
    pub flags: u64,
    /// Filter index of the call.
    pub index: u32,
    /// The submitting process: an entry whose process is gone is stale (an open that ended
    /// without a completion), and the daemon's sweep removes it.
    pub tgid: u32,
}

/// [`FileEvent::via`]: a system call (`nr` its number).
pub const FILE_VIA_SYSCALL: u8 = 0;
/// An io_uring request (`nr` its `IORING_OP_*` opcode), judged like the system call.
pub const FILE_VIA_URING: u8 = 1;
/// An io_uring request whose file cannot be judged soundly, and why (this and the values
/// above it): for a process an enforce-mode Sigkill file selector covers it is killed at
/// submission whatever its path (the name it gave is reported, unresolved), by those of the
/// selectors whose access it asks for. [`file_unjudged_reason`] says why in words.
/// An open into a fixed-file slot (a direct descriptor: no fd to read the file from).
pub const FILE_VIA_URING_FIXED_SLOT: u8 = 2;
/// An open asking for no completion on success (`IOSQE_CQE_SKIP_SUCCESS`).
pub const FILE_VIA_URING_NO_COMPLETION: u8 = 3;
/// An open on a ring whose completions the submitter posts later
/// (`IORING_SETUP_DEFER_TASKRUN`): the descriptor may be in use before the completion.
pub const FILE_VIA_URING_LATE_COMPLETION: u8 = 4;
/// An fd request (`ftruncate`) on a registered (fixed) file.
pub const FILE_VIA_URING_FIXED_FILE: u8 = 5;
/// An open that found `FILE_URING_INFLIGHT` full: nothing would judge it (a flood of slow
/// opens fills the table).
pub const FILE_VIA_URING_TABLE_FULL: u8 = 6;

/// Why a [`FileEvent::via`] of `FILE_VIA_URING_FIXED_SLOT` or above was not judged.
pub const fn file_unjudged_reason(via: u8) -> Option<&'static str> {
    Some(match via {
        FILE_VIA_URING_FIXED_SLOT => "io_uring open into a fixed-file slot",
        FILE_VIA_URING_NO_COMPLETION => {
            "io_uring open without a completion (IOSQE_CQE_SKIP_SUCCESS)"
        }
        FILE_VIA_URING_LATE_COMPLETION => {
            "io_uring open on a ring with deferred completions (IORING_SETUP_DEFER_TASKRUN)"
        }
        FILE_VIA_URING_FIXED_FILE => "io_uring request on a registered (fixed) file",
        FILE_VIA_URING_TABLE_FULL => {
            "io_uring open with the table of opens in flight full (FILE_URING_INFLIGHT)"
        }
        _ => return None,
    })
}

/// `EVENT_FILE`: a `hook: file` selector matched (all its matching selectors in `selectors`);
/// userspace turns it into `process_file` and one `policy_match` per selector.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FileEvent {
    pub header: crate::EventHeader,
    pub selectors: u64,
    pub cgroup_id: u64,
    /// The file's identity (0 when the call was judged by path only).
    pub ino: u64,
    /// Open flags (0 for other calls).
    pub flags: u64,
    /// The return value (opens: the fd; at entry: 0, `at_exit` says which).
    pub ret: i64,
    pub dev: u32,
    /// `FILE_ACCESS_*` the call made.
    pub access: u32,
    /// Call number in its table.
    pub nr: u32,
    pub tid: u32,
    pub table: u32,
    pub path_len: u32,
    pub op: u8,
    pub compat: u8,
    pub at_exit: u8,
    /// 1 when a Sigkill of an enforce-mode selector was sent.
    pub enforced: u8,
    /// 1: the path is the kernel's (walked from the file); 0: built from the caller's string
    /// (a dirfd's path joined with it; `..` and symlinks in it not resolved).
    pub resolved: u8,
    /// `FILE_VIA_*`: the route of the access; for io_uring `nr` is the request's opcode.
    pub via: u8,
    pub _pad: [u8; 2],
    pub path: [u8; crate::PATH_LEN],
}

assert_sizes!(
    FileTable = 24,
    FileSelectorEntry = 16,
    FileInflight = 16,
    FileEvent = 352,
);
