//! The file an exec runs, as the kernel names it: its identity (`s_dev`, `i_ino`) and link
//! count from `mm->exe_file`, and its absolute path, walked dentry by dentry like `d_path` up
//! to the root of the process's mount namespace.

use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_kernel};
use daemon_common::*;

use crate::maps::*;

/// The executed file as the kernel names it.
pub(super) struct ExecFile {
    pub(super) dev: u32,
    pub(super) ino: u64,
    /// No link on any filesystem (`i_nlink == 0`).
    pub(super) fileless: bool,
}

/// Identity and link count of `mm->exe_file` (all 0 when the offsets are unknown).
#[inline(always)]
pub(super) fn exec_file(mm: u64, off: &KernelOffsets) -> ExecFile {
    let mut f = ExecFile {
        dev: 0,
        ino: 0,
        fileless: false,
    };
    if off.inode_read != 1 || mm == 0 {
        return f;
    }
    let file: u64 = rd(mm + off.mm_exe_file as u64);
    if file == 0 {
        return f;
    }
    let inode: u64 = rd(file + off.file_f_inode as u64);
    if inode == 0 {
        return f;
    }
    f.ino = rd(inode + off.inode_i_ino as u64);
    let sb: u64 = rd(inode + off.inode_i_sb as u64);
    f.dev = rd(sb + off.sb_s_dev as u64);
    let nlink: u32 = rd(inode + off.inode_i_nlink as u64);
    f.fileless = nlink == 0;
    f
}

/// Reads a kernel value at an absolute address (0 on failure).
#[inline(always)]
fn rd<T: Default>(addr: u64) -> T {
    let mut v = T::default();
    if addr == 0 {
        return v;
    }
    let r = unsafe {
        bpf_probe_read_kernel(
            (&mut v as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            addr as *const core::ffi::c_void,
        )
    };
    if r != 0 {
        return T::default();
    }
    v
}

/// State of [`walk_step`]: the current dentry and vfsmount, and where the path assembled so
/// far starts in `ExecScratch::walk` (it ends at `WALK_END`).
#[repr(C)]
struct PathWalk {
    dentry: u64,
    vfsmnt: u64,
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
    let off = offsets();
    let Some(s) = EXEC_SCRATCH.get_ptr_mut(0) else {
        c.done = 2;
        return 1;
    };
    let s = unsafe { &mut *s };
    let mnt = c.vfsmnt.wrapping_sub(off.mount_mnt as u64);
    let mnt_root: u64 = rd(c.vfsmnt + off.vfsmount_mnt_root as u64);
    if c.dentry == mnt_root {
        let parent: u64 = rd(mnt + off.mount_mnt_parent as u64);
        if parent == mnt || parent == 0 {
            c.done = 1;
            return 1;
        }
        c.dentry = rd(mnt + off.mount_mnt_mountpoint as u64);
        c.vfsmnt = parent + off.mount_mnt as u64;
        return 0;
    }
    let parent: u64 = rd(c.dentry + off.dentry_d_parent as u64);
    if parent == c.dentry || parent == 0 {
        c.done = 1;
        return 1;
    }
    let qstr = c.dentry + off.dentry_d_name as u64;
    let len: u32 = rd(qstr + off.qstr_len as u64);
    let name: u64 = rd(qstr + off.qstr_name as u64);
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

/// Writes the absolute path of `mm->exe_file` into the exec event (zero-filled) and returns
/// its length, or None when it cannot be resolved (the execve filename is kept then).
#[inline(always)]
pub(super) fn resolve_exe_path(mm: u64, off: &KernelOffsets) -> Option<usize> {
    let file: u64 = rd(mm + off.mm_exe_file as u64);
    if file == 0 {
        return None;
    }
    let fpath = file + off.file_f_path as u64;
    let mut c = PathWalk {
        dentry: rd(fpath + off.path_dentry as u64),
        vfsmnt: rd(fpath + off.path_mnt as u64),
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
    if c.done != 1 || c.pos as usize >= WALK_END {
        return None;
    }
    let len = WALK_END - c.pos as usize;
    if len > PATH_LEN - 1 {
        return None;
    }
    let s = EXEC_SCRATCH.get_ptr_mut(0)?;
    let s = unsafe { &mut *s };
    zero_fill(s.event.path.as_mut_ptr(), PATH_LEN as u32);
    let n = (len as u32) & 0xff;
    if n == 0 {
        return None;
    }
    unsafe {
        bpf_probe_read_kernel(
            s.event.path.as_mut_ptr().cast(),
            n,
            s.walk
                .as_ptr()
                .add((c.pos as usize) & (WALK_END - 1))
                .cast(),
        )
    };
    Some(n as usize)
}
