//! The contract of the syscall-tracepoint framework: one `raw_tp/sys_enter` and one
//! `raw_tp/sys_exit` program serve every hook that acts on system calls (`hook: syscall` now,
//! `hook: file` next), dispatching by a per-call filter, never one program per hook or per call.
//!
//! # Layout
//! - [`MAP_SYSCALL_FILTER`]`[index]` (array, [`SYSCALL_FILTER_LEN`] u32): the first lookup of
//!   both programs; `index` is the call number, or [`SYSCALL_COMPAT_BASE`] + number for a
//!   compat (x86 `int 0x80` / 32-bit) call. Its `WANT_*` bits say which consumers want the call
//!   at entry and whether any wants its exit; 0 returns at once. Userspace writes it as the union
//!   over every table of both slots, so it is a superset of what the active slot needs and a
//!   switch never leaves a call unwatched.
//! - [`MAP_SYSCALL_SELECTORS`]`[{table, index}]` -> u64: the `hook: syscall` selectors of that
//!   table that name the call; ANDed with the process's cached bits (its group's table, looked up
//!   with `GROUPS` like exec and connect do). Only calls some selector names have an entry.
//! - [`MAP_SYSCALL_CONDS`]`[table * MAX_SELECTORS + selector]` ([`SyscallSelectorConds`]): the
//!   selector's argument and return conditions ([`SyscallCond`]), and whether it is decided at
//!   exit (it has return conditions).
//! - [`MAP_SYSCALL_INFLIGHT`]`[tid]` ([`SyscallInflight`]): what entry saw, for exit: the call,
//!   its arguments, the candidate selectors left to decide at exit, and the table.
//!
//! # Seams for `hook: file`
//! A file consumer sets [`SYSCALL_WANT_FILE`] on the calls it needs (openat, renameat2, ...)
//! in the same filter, branches on that bit in the same two programs after the filter lookup,
//! and keeps its own per-table maps; [`SYSCALL_WANT_EXIT`] is shared (set when any consumer
//! needs the return value), and [`SyscallInflight`] carries its `consumers` bits so exit
//! dispatches the same way.
//!
//! # Compat calls
//! An x86_64 kernel also serves the i386 table (`int 0x80` from a 64-bit process, or a 32-bit
//! process). The numbers differ (`ptrace` is 101 natively, 26 in i386), so the kernel tells a
//! compat call apart (`TS_COMPAT` in `thread_info.status`, offset from BTF in
//! [`KernelOffsets`](crate::KernelOffsets)) and looks it up at `SYSCALL_COMPAT_BASE + nr`; the
//! compiler maps every named call into both tables. i386's multiplexers (`socketcall`, `ipc`)
//! reach socket and SysV IPC calls under another number: a selector naming one of those calls
//! also names the multiplexer (its argument conditions then do not apply, see docs).

/// [`SelectorEntry::hook`](crate::SelectorEntry::hook) of a `hook: syscall` selector.
pub const HOOK_SYSCALL: u8 = 4;

/// Native call numbers are below this (x86_64's and arm64's tables end near 470).
pub const SYSCALL_NR_LIMIT: u32 = 512;
/// Filter index of compat call `nr`: `SYSCALL_COMPAT_BASE + nr`.
pub const SYSCALL_COMPAT_BASE: u32 = SYSCALL_NR_LIMIT;
/// Entries of [`MAP_SYSCALL_FILTER`]: native and compat numbers.
pub const SYSCALL_FILTER_LEN: u32 = 2 * SYSCALL_NR_LIMIT;

/// [`MAP_SYSCALL_FILTER`] bits: a `hook: syscall` selector names the call.
pub const SYSCALL_WANT_SYSCALL: u32 = 1;
/// Reserved for `hook: file`: a file selector needs the call.
pub const SYSCALL_WANT_FILE: u32 = 2;
/// Some consumer decides at the call's exit (needs its return value).
pub const SYSCALL_WANT_EXIT: u32 = 4;

/// A compat call with this number is wanted: look at `SYSCALL_FILTER[SYSCALL_COMPAT_BASE + nr]`
/// (set on the native index, so the programs do one lookup before telling compat calls apart).
pub const SYSCALL_WANT_COMPAT: u32 = 8;

/// Where the syscall programs find a call's number and arguments in `struct pt_regs`, and how
/// they tell a compat call (global `SYSCALL_REGS`, resolved from BTF by userspace at load).
/// `nr == 0` means unknown: the programs then do nothing (`bulwark probe` says so).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallRegs {
    /// Offset of the call number (x86_64 `orig_ax`, arm64 `syscallno`).
    pub nr: u32,
    /// Offset of `thread_info.status` in `task_struct` (x86: `TS_COMPAT`), 0 without compat.
    pub compat_status: u32,
    pub compat_bit: u32,
    pub _pad: u32,
    /// Offsets of arguments 0..=5 of a native call.
    pub args: [u32; 6],
    /// Offsets of arguments 0..=5 of a compat call (i386: bx cx dx si di bp).
    pub compat_args: [u32; 6],
}

/// Argument and return conditions per selector (values over all its entries).
pub const MAX_SYSCALL_CONDS: usize = 8;

/// [`SyscallCond::what`]: 0..=5 is an argument; this is the return value.
pub const SYSCALL_COND_RETURN: u8 = 6;
/// [`SyscallCond::op`] values (`NotEqual` is `EQUAL` in a negated group).
pub const SYSCALL_OP_EQUAL: u8 = 0;
pub const SYSCALL_OP_MASK: u8 = 1;
pub const SYSCALL_OP_GREATER: u8 = 2;
pub const SYSCALL_OP_LESS: u8 = 3;

/// Map names.
pub const MAP_SYSCALL_FILTER: &str = "SYSCALL_FILTER";
pub const MAP_SYSCALL_SELECTORS: &str = "SYSCALL_SELECTORS";
pub const MAP_SYSCALL_CONDS: &str = "SYSCALL_CONDS";
pub const MAP_SYSCALL_INFLIGHT: &str = "SYSCALL_INFLIGHT";
/// Entries of [`MAP_SYSCALL_SELECTORS`] per slot (both slots fit during a switch).
pub const MAX_SYSCALL_KEYS: u32 = 8192;
/// Threads that may be inside a call decided at exit at once.
pub const MAX_SYSCALL_INFLIGHT: u32 = 16384;

/// Key of [`MAP_SYSCALL_SELECTORS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SyscallKey {
    pub table: u32,
    /// Filter index: the call number, or `SYSCALL_COMPAT_BASE` + the compat number.
    pub index: u32,
}

/// One integer comparison. Conditions with the same `group` (one `matchSyscallArgs` /
/// `matchReturn` entry) are ORed, and the group holds when that is not `negated`
/// (`NotEqual`); all groups of a selector must hold.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallCond {
    pub value: u64,
    /// Argument 0..=5, or [`SYSCALL_COND_RETURN`].
    pub what: u8,
    /// `SYSCALL_OP_*`; `GREATER`/`LESS` compare signed.
    pub op: u8,
    pub group: u8,
    pub negated: u8,
    pub _pad: [u8; 4],
}

/// `SYSCALL_CONDS[table * MAX_SELECTORS + selector]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallSelectorConds {
    pub conds: [SyscallCond; MAX_SYSCALL_CONDS],
    /// Conditions used in `conds`.
    pub count: u8,
    /// 1: decided at the call's exit (return conditions); 0: at entry.
    pub at_exit: u8,
    pub _pad: [u8; 6],
}

/// `SYSCALL_INFLIGHT[tid]`: a call some consumer decides at its exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyscallInflight {
    pub args: [u64; 6],
    /// Selectors of `table` whose entry-side conditions held and that are decided at exit.
    pub selectors: u64,
    pub table: u32,
    /// Filter index of the call.
    pub index: u32,
    /// `SYSCALL_WANT_*` consumers waiting for the exit.
    pub consumers: u32,
    pub slot: u32,
}

/// `EVENT_SYSCALL`: a `hook: syscall` selector matched (one record per call, all its matching
/// selectors in `selectors`); userspace turns it into `process_syscall` and one `policy_match`
/// per selector.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SyscallEvent {
    pub header: crate::EventHeader,
    pub args: [u64; 6],
    /// The return value at exit; 0 at entry (`at_exit` says which).
    pub ret: i64,
    pub selectors: u64,
    pub cgroup_id: u64,
    /// The call number in its table (`compat` says which table).
    pub nr: u32,
    pub tid: u32,
    pub slot: u8,
    pub compat: u8,
    pub at_exit: u8,
    /// 1 when a Sigkill of an enforce-mode selector was sent.
    pub enforced: u8,
    /// Selectors of the table, for the event: which were Sigkill, which monitor.
    pub table: u32,
}

/// Ring-buffer kind of [`SyscallEvent`] (16: clear of the kinds other work adds next to 1..=11).
pub const EVENT_SYSCALL: u32 = 16;

assert_sizes!(
    SyscallRegs = 64,
    SyscallKey = 8,
    SyscallCond = 16,
    SyscallSelectorConds = 136,
    SyscallInflight = 72,
    SyscallEvent = 112,
);
