//! Files as the kernel names them, shared by the exec hook (the executed file) and the file
//! hook (the file a call opened or names): the absolute path of a `struct path` walked dentry
//! by dentry like `d_path` up to the root of the process's mount namespace (into the per-CPU
//! `PATH_SCRATCH`), and a file's identity (`s_dev`, `i_ino`) and link count.

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel},
    macros::map,
    maps::PerCpuArray,
};
use daemon_common::*;

use crate::maps::offsets_ref;

/// Size of the walk buffer and where the assembled path ends in it: components are written at
/// `pos & (WALK_END - 1)` with at most 255 bytes each, so every write stays inside; the bytes
/// after `WALK_END` leave room to append a name to a walked directory.
pub const WALK_END: usize = 512;
pub const WALK_BUF: usize = 768;

/// Per-CPU room of the walk: the path is assembled backwards, ending at `WALK_END`.
#[repr(C)]
pub struct PathScratch {
    pub walk: [u8; WALK_BUF],
}

#[map]
pub static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(1, 0);

/// Reads a kernel value at an absolute address (0 on failure; unlike `read_kernel`, offset 0
/// is a real offset here). The destination is not zeroed first: the helper zero-fills it when
/// the read fails (also at address 0), and zeroing an array costs a byte loop per call.
#[inline(always)]
pub fn rd<T: Copy>(addr: u64) -> T {
    let mut v = core::mem::MaybeUninit::<T>::uninit();
    unsafe {
        bpf_probe_read_kernel(
            v.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        );
        v.assume_init()
    }
}

/// A file's identity and link count (all 0 when the offsets are unknown).
pub struct Identity {
    pub dev: u32,
    pub ino: u64,
    pub nlink: u32,
}

/// Identity of `struct file *file`.
#[inline(always)]
pub fn identity(file: u64, off: &KernelOffsets) -> Identity {
    let mut id = Identity {
        dev: 0,
        ino: 0,
        nlink: 0,
    };
    if off.inode_read != 1 || file == 0 {
        return id;
    }
    let inode: u64 = rd(file + off.file_f_inode as u64);
    if inode == 0 {
        return id;
    }
    id.ino = rd(inode + off.inode_i_ino as u64);
    let sb: u64 = rd(inode + off.inode_i_sb as u64);
    id.dev = rd(sb + off.sb_s_dev as u64);
    id.nlink = rd(inode + off.inode_i_nlink as u64);
    id
}

/// State of [`walk_step`]: the current dentry and vfsmount, and where the path assembled so
/// far starts in `PATH_SCRATCH.walk` (it ends at `WALK_END`).
#[repr(C)]
struct PathWalk {
    dentry: u64,
    vfsmnt: u64,
    /// `vfsmnt->mnt_root`, read once per mount crossed rather than once per step.
    mnt_root: u64,
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
    let off = offsets_ref();
    let Some(s) = PATH_SCRATCH.get_ptr_mut(0) else {
        c.done = 2;
        return 1;
    };
    let s = unsafe { &mut *s };
    if c.dentry == c.mnt_root {
        let mnt = c.vfsmnt.wrapping_sub(off.mount_mnt as u64);
        let parent: u64 = rd(mnt + off.mount_mnt_parent as u64);
        if parent == mnt || parent == 0 {
            c.done = 1;
            return 1;
        }
        c.dentry = rd(mnt + off.mount_mnt_mountpoint as u64);
        c.vfsmnt = parent + off.mount_mnt as u64;
        c.mnt_root = rd(c.vfsmnt + off.vfsmount_mnt_root as u64);
        return 0;
    }
    let (parent, len, name) = dentry_parent_name(c.dentry, off);
    if parent == c.dentry || parent == 0 {
        c.done = 1;
        return 1;
    }
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

/// `dentry->d_parent` and `d_name`'s length and name pointer. One read when they are close
/// together (`d_name` right after `d_parent` in `struct dentry` of 64-bit kernels: the 24
/// bytes from `d_parent` to the end of `d_name.name`), else one for the parent and one or two
/// for the name. The walk's reads are most of its cost.
#[inline(always)]
fn dentry_parent_name(dentry: u64, off: &KernelOffsets) -> (u64, u32, u64) {
    let parent_at = off.dentry_d_parent;
    let len_at = off
        .dentry_d_name
        .wrapping_add(off.qstr_len)
        .wrapping_sub(parent_at);
    let name_at = off
        .dentry_d_name
        .wrapping_add(off.qstr_name)
        .wrapping_sub(parent_at);
    // `len` and `name` as words of the block: aligned, after the parent, inside 32 bytes.
    if len_at >= 8
        && len_at % 4 == 0
        && name_at >= 8
        && name_at % 4 == 0
        && name_at <= 24
        && len_at <= 28
    {
        let block: [u32; 8] = rd(dentry + parent_at as u64);
        let word = |at: u32| block[(at / 4) as usize & 7];
        let parent = u64::from(block[0]) | u64::from(block[1]) << 32;
        let name = u64::from(word(name_at)) | u64::from(word(name_at + 4)) << 32;
        return (parent, word(len_at), name);
    }
    let parent: u64 = rd(dentry + parent_at as u64);
    let (len, name) = dentry_name(dentry, off);
    (parent, len, name)
}

/// `dentry->d_name`'s length and name pointer: one read when `name` is 4 or 8 bytes after
/// `len` in `struct qstr` (4 on 64-bit kernels: `len` is the upper half of `hash_len`), else
/// two.
#[inline(always)]
fn dentry_name(dentry: u64, off: &KernelOffsets) -> (u32, u64) {
    let qstr = dentry + off.dentry_d_name as u64;
    let gap = off.qstr_name.wrapping_sub(off.qstr_len);
    if gap == 4 || gap == 8 {
        let block: [u32; 4] = rd(qstr + off.qstr_len as u64);
        let at = (gap / 4) as usize;
        let name = u64::from(block[at & 3]) | u64::from(block[(at + 1) & 3]) << 32;
        return (block[0], name);
    }
    (
        rd(qstr + off.qstr_len as u64),
        rd(qstr + off.qstr_name as u64),
    )
}

/// Walks `struct path *path` (a kernel address) to the root; on success the absolute path is
/// in `PATH_SCRATCH.walk[pos..WALK_END]` and `pos` is returned. `WALK_END` (nothing written)
/// is the root itself, or a file of an internal mount with no name above it (a memfd), which
/// [`copy_walked`] refuses as a path.
#[inline(always)]
pub fn walk(path: u64, off: &KernelOffsets) -> Option<u32> {
    if off.path_walk != 1 || path == 0 {
        return None;
    }
    // `struct path` is { mnt, dentry } (16 bytes): one read when laid out so.
    let (vfsmnt, dentry) = if off.path_mnt == 0 && off.path_dentry == 8 {
        let p: [u64; 2] = rd(path);
        (p[0], p[1])
    } else {
        (
            rd(path + off.path_mnt as u64),
            rd(path + off.path_dentry as u64),
        )
    };
    let mut c = PathWalk {
        dentry,
        vfsmnt,
        mnt_root: rd(vfsmnt + off.vfsmount_mnt_root as u64),
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
    if c.done != 1 || c.pos as usize > WALK_END {
        return None;
    }
    Some(c.pos)
}

/// Copies the walked path (`walk[pos..WALK_END + extra]`) into `dst` (`PATH_LEN` bytes,
/// zero-filled first) and returns its length; `None` when it does not fit.
#[inline(always)]
pub fn copy_walked(pos: u32, extra: u32, dst: *mut u8) -> Option<usize> {
    let len = (WALK_END as u32).checked_sub(pos)? + extra;
    if len as usize > PATH_LEN - 1 || len == 0 {
        return None;
    }
    let s = PATH_SCRATCH.get_ptr_mut(0)?;
    crate::maps::zero_fill(dst, PATH_LEN as u32);
    let n = len & 0xff;
    unsafe {
        bpf_probe_read_kernel(
            dst.cast(),
            n,
            (*s).walk
                .as_ptr()
                .add((pos as usize) & (WALK_END - 1))
                .cast(),
        )
    };
    Some(n as usize)
}
