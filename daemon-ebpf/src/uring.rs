//! `hook: file` for io_uring's file requests, which make no system call the syscall programs
//! could see: `bulwark_uring_file_submit` (raw tracepoint `io_uring_submit_req`, after a
//! request's preparation and before it is issued, in the submitting task or the ring's SQPOLL
//! thread), `bulwark_uring_file_complete` (raw tracepoint `io_uring_complete`) and
//! `bulwark_uring_file_overflow` (raw tracepoint `io_uring_cqe_overflow`). Attached with the
//! syscall programs while some rule set has file selectors; all do nothing unless userspace
//! resolved the request layouts (`KernelOffsets::uring_file`). The daemon's sweep removes the
//! `FILE_URING_INFLIGHT` entries of exited processes (an open that ended unjudged).
//! - `IORING_OP_OPENAT` / `OPENAT2` into a descriptor: remembered per request at submission
//!   (`FILE_URING_INFLIGHT`) and judged from the file installed at `res`, exactly like an
//!   open system call's exit (`crate::file::judge_opened`), by whichever comes first:
//!   - the ring's next `io_uring_submit_req` (`FILE_URING_LAST_OPEN`), if the open has been
//!     issued to the end by then. An open issued inline installs its descriptor at once but
//!     its completion is posted after the whole submission: requests queued behind it in the
//!     same submission (a read of the descriptor, a write of the bytes) are judged for before
//!     they are issued, and the SIGKILL pending then fails their file reads (`-EINTR`);
//!   - its completion (`io_uring_complete`), posted by the submitter, its io-wq worker or the
//!     SQPOLL thread: the same process, the same fd table (an open waiting in a link, or
//!     punted to io-wq, is still unissued at the next submission); or, when the completion
//!     queue is full, the overflow of that completion (`io_uring_cqe_overflow`, which names
//!     the request only by its ring, `user_data` and result).
//! - Opens that cannot be judged so (into a fixed-file slot; asking for no completion; on a
//!   ring whose completions the submitter posts later, when the descriptor may already be in
//!   use; finding the in-flight tables full), and `ftruncate` of a registered file: for a
//!   process an enforce-mode Sigkill file selector covers, killed at submission by those
//!   selectors whose access the request asks for, whatever the path (`FILE_VIA_URING_*` says
//!   why); not seen for others.
//! - `UNLINKAT`, `RENAMEAT`, `MKDIRAT`, `SYMLINKAT`, `LINKAT` at submission from the dirfd's path
//!   joined with the kernel's copy of the name (`struct filename`), like the syscall entry
//!   judges those calls; `FTRUNCATE` from its fd's file.

use aya_ebpf::{
    helpers::generated::{bpf_for_each_map_elem, bpf_loop},
    macros::{map, raw_tracepoint},
    maps::{HashMap, LruHashMap},
    programs::RawTracePointContext,
};
use daemon_common::*;

use crate::file::{
    candidates, describe_file, fd_file, judge, judge_opened, name_path, Call, FileScratch, Opened,
    FILE_SCRATCH,
};
use crate::maps::*;
use crate::path::rd;

/// io_uring opcodes (uapi `enum io_uring_op`, append-only).
const IORING_OP_OPENAT: u8 = 18;
const IORING_OP_OPENAT2: u8 = 28;
const IORING_OP_RENAMEAT: u8 = 35;
const IORING_OP_UNLINKAT: u8 = 36;
const IORING_OP_MKDIRAT: u8 = 37;
const IORING_OP_SYMLINKAT: u8 = 38;
const IORING_OP_LINKAT: u8 = 39;
const IORING_OP_FTRUNCATE: u8 = 55;
/// `io_kiocb.flags` bits that mirror the SQE's `IOSQE_FIXED_FILE` and
/// `IOSQE_CQE_SKIP_SUCCESS` (`REQ_F_FIXED_FILE`, `REQ_F_CQE_SKIP`: the kernel keeps the
/// `IOSQE_*` bit numbers for them).
const REQ_F_FIXED_FILE: u32 = 1 << 0;
const REQ_F_CQE_SKIP: u32 = 1 << 6;
/// `IORING_SETUP_DEFER_TASKRUN` (uapi).
const IORING_SETUP_DEFER_TASKRUN: u32 = 1 << 13;
/// `io_uring_cqe.res` (uapi: after the 64-bit `user_data`).
const CQE_RES: u64 = 8;

/// io_uring opens waiting for their judgement, by request (`struct io_kiocb *`). Not an LRU:
/// a flood of slow opens must not evict a protected open's entry; an open that finds it full
/// fails closed ([`FILE_VIA_URING_TABLE_FULL`]). An entry is removed once it has been judged
/// (at the next submission on the ring, or the completion): removed first, a racing submitter
/// could find it gone before the judge's kill was sent.
#[map]
pub static FILE_URING_INFLIGHT: HashMap<u64, FileInflight> =
    HashMap::with_max_entries(MAX_FILE_URING_INFLIGHT, 0);

/// The open submitted last on a ring (`struct io_ring_ctx *` to its `struct io_kiocb *`):
/// the ring's next `io_uring_submit_req` judges it if it has been issued by then, before the
/// next request runs. Removed there or at the open's completion. An LRU: an entry matters
/// only from the open's submission to the next request's, in the same `io_uring_enter`
/// (microseconds), and the entries of rings that ended otherwise are evicted in time.
#[map]
pub static FILE_URING_LAST_OPEN: LruHashMap<u64, u64> =
    LruHashMap::with_max_entries(MAX_FILE_URING_INFLIGHT, 0);

/// Raw tracepoint `io_uring_submit_req(struct io_kiocb *req)`.
#[raw_tracepoint(tracepoint = "io_uring_submit_req")]
pub fn bulwark_uring_file_submit(ctx: RawTracePointContext) -> i32 {
    let off = offsets_ref();
    if off.uring_file != 1 || off.file_read != 1 {
        return 0;
    }
    let req: u64 = ctx.arg(0);
    let ring: u64 = rd(req + off.uring_req_ctx as u64);
    // The open submitted before this request on the ring: issued inline, its descriptor is
    // installed but its completion comes after the whole submission, so it is judged now,
    // before this request (which may read it) is issued. One still being opened stays the
    // ring's last open until it is judged.
    if let Some(last) = unsafe { FILE_URING_LAST_OPEN.get(&ring) }.copied() {
        if judge_issued(last, ring, req) {
            let _ = FILE_URING_LAST_OPEN.remove(&ring);
        }
    }
    let opcode: u8 = rd(req + off.uring_req_opcode as u64);
    if !matches!(
        opcode,
        IORING_OP_OPENAT
            | IORING_OP_OPENAT2
            | IORING_OP_RENAMEAT
            | IORING_OP_UNLINKAT
            | IORING_OP_MKDIRAT
            | IORING_OP_SYMLINKAT
            | IORING_OP_LINKAT
            | IORING_OP_FTRUNCATE
    ) {
        return 0;
    }
    let Some((cands, table, start_ns)) = candidates((bpf_pid_tgid() >> 32) as u32) else {
        return 0;
    };
    submit(req, opcode, cands, table, start_ns);
    0
}

/// Raw tracepoint `io_uring_complete(ctx, req, struct io_uring_cqe *cqe)`: an open remembered
/// at submission is judged by the descriptor it installed.
#[raw_tracepoint(tracepoint = "io_uring_complete")]
pub fn bulwark_uring_file_complete(ctx: RawTracePointContext) -> i32 {
    if offsets_ref().uring_file != 1 {
        return 0;
    }
    let req: u64 = ctx.arg(1);
    if unsafe { FILE_URING_INFLIGHT.get(&req) }.is_none() {
        return 0;
    }
    let ring: u64 = ctx.arg(0);
    // Judged before the ring's last open is cleared: a submission on the ring meanwhile
    // still finds it and judges it too (see `judge_inflight`).
    judge_inflight(req, rd(ctx.arg::<u64>(2) + CQE_RES));
    if unsafe { FILE_URING_LAST_OPEN.get(&ring) } == Some(&req) {
        let _ = FILE_URING_LAST_OPEN.remove(&ring);
    }
    0
}

/// Raw tracepoint `io_uring_cqe_overflow(ctx, user_data, res, cflags, ocqe)`: a completion
/// the full completion queue could not take is kept aside, and `io_uring_complete` does not
/// fire for it. An open remembered at submission whose completion overflows is judged here:
/// the request is found by its ring, `user_data` and result among the opens in flight (a scan
/// of `FILE_URING_INFLIGHT`, only when a completion overflows: a ring its owner does not
/// drain).
#[raw_tracepoint(tracepoint = "io_uring_cqe_overflow")]
pub fn bulwark_uring_file_overflow(ctx: RawTracePointContext) -> i32 {
    if offsets_ref().uring_file != 1 {
        return 0;
    }
    let res = ctx.arg::<u64>(2) as i32;
    if res < 0 {
        return 0;
    }
    let mut find = Overflowed {
        ring: ctx.arg(0),
        user_data: ctx.arg(1),
        res,
        req: 0,
    };
    unsafe {
        bpf_for_each_map_elem(
            &FILE_URING_INFLIGHT as *const _ as *mut core::ffi::c_void,
            overflowed_step as *mut core::ffi::c_void,
            (&mut find as *mut Overflowed).cast(),
            0,
        )
    };
    if find.req == 0 {
        return 0;
    }
    judge_inflight(find.req, res);
    if unsafe { FILE_URING_LAST_OPEN.get(&find.ring) } == Some(&find.req) {
        let _ = FILE_URING_LAST_OPEN.remove(&find.ring);
    }
    0
}

/// State of [`overflowed_step`]: the overflowed completion, and the request found.
#[repr(C)]
struct Overflowed {
    ring: u64,
    user_data: u64,
    res: i32,
    req: u64,
}

/// Whether in-flight open `key` is the one whose completion overflowed: on that ring, issued
/// to the end, with that `user_data` and result (stops the scan when it is).
#[inline(never)]
extern "C" fn overflowed_step(
    _map: *mut core::ffi::c_void,
    key: *const u64,
    _value: *mut core::ffi::c_void,
    ctx: *mut core::ffi::c_void,
) -> i64 {
    let f = unsafe { &mut *(ctx as *mut Overflowed) };
    let req = unsafe { *key };
    let off = offsets_ref();
    let flags: u32 = rd(req + off.uring_req_flags as u64);
    if flags & off.uring_req_need_cleanup != 0
        || rd::<u64>(req + off.uring_req_ctx as u64) != f.ring
        || rd::<u64>(req + off.uring_req_user_data as u64) != f.user_data
        || rd::<i32>(req + off.uring_req_res as u64) != f.res
    {
        return 0;
    }
    f.req = req;
    1
}

/// The open `req` submitted last on `ring`, at the submission of the ring's request `next`:
/// judged if it has been issued to the end (`REQ_F_NEED_CLEANUP` cleared: the descriptor is
/// installed, `res` is set). Whether it is settled (judged now or before, or no longer this
/// ring's); false while it is still being opened.
///
/// An open still being opened (punted to io-wq, or waiting in a link) is judged at its
/// completion; but a worker installs the descriptor before it sets the request's result, so
/// `next` may already be a read of it (a submitter spinning until the descriptor exists): the
/// file at `next`'s descriptor is judged as this open's, and if a selector matches (killed:
/// the read then fails on the pending SIGKILL) the open is claimed, so it is reported once.
#[inline(never)]
fn judge_issued(req: u64, ring: u64, next: u64) -> bool {
    let off = offsets_ref();
    // The request object is still this ring's (it is not freed before its completion, which
    // removes it from FILE_URING_INFLIGHT).
    if rd::<u64>(req + off.uring_req_ctx as u64) != ring {
        return true;
    }
    let flags: u32 = rd(req + off.uring_req_flags as u64);
    if flags & off.uring_req_need_cleanup == 0 {
        judge_inflight(req, rd(req + off.uring_req_res as u64));
        return true;
    }
    let Some(f) = (unsafe { FILE_URING_INFLIGHT.get(&req) }).copied() else {
        return true;
    };
    let next_flags: u32 = rd(next + off.uring_req_flags as u64);
    if next_flags & REQ_F_FIXED_FILE != 0 {
        return false;
    }
    // `io_cqe.fd`: the SQE's descriptor until the request completes.
    let fd: i32 = rd(next + off.uring_req_fd as u64);
    if judge_entry(&f, fd) {
        let _ = FILE_URING_INFLIGHT.remove(&req);
        return true;
    }
    false
}

/// Judges the open `req` remembered in `FILE_URING_INFLIGHT` by its result `res` (the
/// descriptor), unless it was judged already, then forgets it. Judged before it is removed:
/// an io-wq worker's completion and the ring's next submission may judge the same open at
/// once, and the submitter must not find it gone (and issue a read of its descriptor) before
/// the worker's kill is sent — so in that overlap both judge it and it may be reported twice.
#[inline(never)]
fn judge_inflight(req: u64, res: i32) {
    let Some(f) = (unsafe { FILE_URING_INFLIGHT.get(&req) }).copied() else {
        return;
    };
    judge_entry(&f, res);
    let _ = FILE_URING_INFLIGHT.remove(&req);
}

/// Judges the file at descriptor `fd` of the current task as remembered open `f`'s; whether a
/// selector matched. By the rules in force now (the process's candidates read again, as an
/// open's exit does), not those at its submission: a held open may outlive two rule changes,
/// and the slot it was submitted under then has other selectors at the same bits. The current
/// task is the submitter, its io-wq worker or its SQPOLL thread: the same process.
#[inline(always)]
fn judge_entry(f: &FileInflight, fd: i32) -> bool {
    let Some((candidates, table, start_ns)) = candidates((bpf_pid_tgid() >> 32) as u32) else {
        return false;
    };
    let opened = Opened {
        candidates,
        table,
        start_ns,
        flags: f.flags,
    };
    let call = Call {
        index: f.index,
        want: 0,
        regs: 0,
        args: [0; 6],
        compat: false,
    };
    judge_opened(&opened, &call, i64::from(fd), FILE_VIA_URING)
}

/// Remembers the open `req` of `ring` for its judgement; false when `FILE_URING_INFLIGHT` is
/// full (it is then not remembered at all).
#[inline(always)]
fn track(req: u64, ring: u64, inflight: &FileInflight) -> bool {
    if FILE_URING_INFLIGHT.insert(&req, inflight, 0).is_err() {
        return false;
    }
    let _ = FILE_URING_LAST_OPEN.insert(&ring, &req, 0);
    true
}

/// A file request of a process with file selectors that may match. Every name is judged
/// through one call of [`judge_name`] (a rename's two in a loop): each call site costs the
/// verifier the whole path walk and judgement again.
#[inline(never)]
fn submit(req: u64, opcode: u8, cands: u64, table: u32, start_ns: u64) {
    let off = offsets_ref();
    let at = |o: u32| req + o as u64;
    let req_flags: u32 = rd(at(off.uring_req_flags));
    let mut j = NameJudge {
        cands,
        start_ns,
        flags: 0,
        table,
        opcode: opcode as u32,
        op: FILE_OP_CREATE,
        via: FILE_VIA_URING,
        names: 1,
        name: [NAME_NONE; 2],
    };
    match opcode {
        IORING_OP_OPENAT | IORING_OP_OPENAT2 => {
            let flags: u64 = rd(at(off.uring_open_flags));
            let slot: u32 = rd(at(off.uring_open_file_slot));
            let ring: u64 = rd(at(off.uring_req_ctx));
            let ring_flags: u32 = rd(ring + off.uring_ctx_flags as u64);
            let mut via = if slot != 0 {
                FILE_VIA_URING_FIXED_SLOT
            } else if req_flags & REQ_F_CQE_SKIP != 0 {
                FILE_VIA_URING_NO_COMPLETION
            } else if ring_flags & IORING_SETUP_DEFER_TASKRUN != 0 {
                FILE_VIA_URING_LATE_COMPLETION
            } else {
                FILE_VIA_URING
            };
            let mut enforcing = if via == FILE_VIA_URING {
                0
            } else {
                enforcing_of(cands, table)
            };
            if enforcing == 0 {
                // Judged when issued or at its completion; an open no completion can judge is
                // not seen for a process no enforcing selector covers (docs/files.md).
                if via != FILE_VIA_URING && via != FILE_VIA_URING_LATE_COMPLETION {
                    return;
                }
                let inflight = FileInflight {
                    flags,
                    index: opcode as u32,
                    tgid: (bpf_pid_tgid() >> 32) as u32,
                };
                if track(req, ring, &inflight) {
                    return;
                }
                count(COUNTER_LOST_EVENTS);
                // Nothing will judge it: fails closed like the routes no completion judges.
                via = FILE_VIA_URING_TABLE_FULL;
                enforcing = enforcing_of(cands, table);
                if enforcing == 0 {
                    return;
                }
            }
            // Fails closed: the enforcing selectors whose access it asks for kill it now.
            j.cands = enforcing;
            j.flags = flags;
            j.op = FILE_OP_OPEN;
            j.via = via;
            j.name[0] = Name {
                dirfd: rd(at(off.uring_open_dfd)),
                filename: rd(at(off.uring_open_filename)),
                access: requested_access(flags),
            };
        }
        IORING_OP_UNLINKAT => {
            j.op = FILE_OP_DELETE;
            j.name[0] = Name {
                dirfd: rd(at(off.uring_unlink_dfd)),
                filename: rd(at(off.uring_unlink_filename)),
                access: FILE_ACCESS_DELETE,
            };
        }
        IORING_OP_MKDIRAT => {
            j.name[0] = Name {
                dirfd: rd(at(off.uring_mkdir_dfd)),
                filename: rd(at(off.uring_mkdir_filename)),
                access: FILE_ACCESS_CREATE,
            };
        }
        IORING_OP_SYMLINKAT | IORING_OP_LINKAT => {
            j.name[0] = Name {
                dirfd: rd(at(off.uring_link_new_dfd)),
                filename: rd(at(off.uring_link_newpath)),
                access: FILE_ACCESS_CREATE,
            };
        }
        IORING_OP_RENAMEAT => {
            j.op = FILE_OP_RENAME;
            j.names = 2;
            j.name = [
                Name {
                    dirfd: rd(at(off.uring_rename_old_dfd)),
                    filename: rd(at(off.uring_rename_oldpath)),
                    access: FILE_ACCESS_DELETE,
                },
                Name {
                    dirfd: rd(at(off.uring_rename_new_dfd)),
                    filename: rd(at(off.uring_rename_newpath)),
                    access: RENAME_NEW_ACCESS,
                },
            ];
        }
        IORING_OP_FTRUNCATE => {
            if req_flags & REQ_F_FIXED_FILE != 0 {
                j.cands = enforcing_of(cands, table);
                j.via = FILE_VIA_URING_FIXED_FILE;
                if j.cands != 0 {
                    judge_fd(&j, 0);
                }
            } else {
                let fd: i32 = rd(at(off.uring_req_fd));
                judge_fd(&j, fd_file(i64::from(fd), off));
            }
            return;
        }
        _ => return,
    }
    for k in 0..2 {
        if k >= j.names {
            break;
        }
        judge_name(&j, k);
    }
}

/// A name a request gives: its dirfd, its `struct filename *`, the accesses it makes.
#[derive(Clone, Copy)]
struct Name {
    dirfd: i32,
    filename: u64,
    access: u32,
}

const NAME_NONE: Name = Name {
    dirfd: 0,
    filename: 0,
    access: 0,
};

/// What [`submit`] judges a request with.
#[repr(C)]
struct NameJudge {
    cands: u64,
    start_ns: u64,
    /// Open flags (opens only).
    flags: u64,
    table: u32,
    opcode: u32,
    /// `FILE_OP_*` reported.
    op: u32,
    via: u8,
    names: usize,
    name: [Name; 2],
}

impl NameJudge {
    /// The call as [`judge`] reports it: the opcode in place of a call number.
    #[inline(always)]
    fn call(&self) -> Call {
        Call {
            index: self.opcode,
            want: 0,
            regs: 0,
            args: [0; 6],
            compat: false,
        }
    }

    /// Clears the record's file for a route judged without one.
    #[inline(always)]
    fn no_file(s: &mut FileScratch) {
        s.file = 0;
        s.event.path_len = 0;
        s.event.ino = 0;
        s.event.dev = 0;
        s.event.resolved = 0;
    }

    /// Fills the rest of the record and judges it.
    #[inline(always)]
    fn judge(&self, s: &mut FileScratch, op: u32, access: u32) {
        let ev = &mut s.event;
        ev.flags = self.flags;
        ev.ret = 0;
        ev.at_exit = 0;
        ev.op = op as u8;
        ev.via = self.via;
        judge(self.cands, self.table, self.start_ns, &self.call(), access);
    }
}

/// Judges name `k` of `j` relative to its dirfd. An unjudged route (`via`) is judged
/// (failing closed) even when the name cannot be read.
#[inline(never)]
fn judge_name(j: &NameJudge, k: usize) {
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    let n = j.name[k & 1];
    let name: u64 = rd(n.filename + offsets_ref().filename_name as u64);
    let named = name != 0 && name_path(s, n.dirfd as i64 as u64, 0, name, true);
    if !named {
        if j.via == FILE_VIA_URING {
            return;
        }
        NameJudge::no_file(s);
    }
    j.judge(s, j.op, n.access);
}

/// Judges `ftruncate` of `file` (0: a registered file, judged only failing closed).
#[inline(never)]
fn judge_fd(j: &NameJudge, file: u64) {
    let Some(s) = FILE_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let s = unsafe { &mut *s };
    if file == 0 {
        if j.via == FILE_VIA_URING {
            return;
        }
        NameJudge::no_file(s);
    } else {
        let lookups = crate::file::FILE_TABLES
            .get(j.table)
            .map_or(0, |t| t.lookups);
        if !describe_file(s, file, lookups, offsets_ref()) {
            return;
        }
    }
    j.judge(s, FILE_OP_TRUNCATE_FD, FILE_ACCESS_WRITE);
}

/// State of [`enforcing_step`].
#[repr(C)]
struct Enforcing {
    cands: u64,
    table: u32,
    out: u64,
}

#[inline(never)]
extern "C" fn enforcing_step(index: u64, ctx: *mut core::ffi::c_void) -> i64 {
    let e = unsafe { &mut *(ctx as *mut Enforcing) };
    let i = (index & 63) as u32;
    if e.cands & (1u64 << i) != 0 && kills(e.table, i) {
        e.out |= 1u64 << i;
    }
    0
}

/// Of `cands`, the enforce-mode Sigkill selectors of `table`.
#[inline(always)]
fn enforcing_of(cands: u64, table: u32) -> u64 {
    let mut e = Enforcing {
        cands,
        table,
        out: 0,
    };
    unsafe {
        bpf_loop(
            64 - cands.leading_zeros(),
            enforcing_step as *mut core::ffi::c_void,
            (&mut e as *mut Enforcing).cast(),
            0,
        )
    };
    e.out
}
