//! The file an exec runs, as the kernel names it: its identity (`s_dev`, `i_ino`) and link
//! count from `mm->exe_file`, and its absolute path (the shared dentry walk, `crate::path`).

use daemon_common::*;

use crate::maps::*;
use crate::path::{copy_walked, identity, rd, walk};

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
    if off.inode_read != 1 || mm == 0 {
        return ExecFile {
            dev: 0,
            ino: 0,
            fileless: false,
        };
    }
    let file: u64 = rd(mm + off.mm_exe_file as u64);
    let id = identity(file, off);
    ExecFile {
        dev: id.dev,
        ino: id.ino,
        fileless: id.ino != 0 && id.nlink == 0,
    }
}

/// Writes the absolute path of `mm->exe_file` into the exec event (zero-filled) and returns
/// its length, or None when it cannot be resolved (the execve filename is kept then).
#[inline(always)]
pub(super) fn resolve_exe_path(mm: u64, off: &KernelOffsets) -> Option<usize> {
    let file: u64 = rd(mm + off.mm_exe_file as u64);
    if file == 0 {
        return None;
    }
    let pos = walk(file + off.file_f_path as u64, off)?;
    let s = EXEC_SCRATCH.get_ptr_mut(0)?;
    copy_walked(pos, 0, unsafe { (*s).event.path.as_mut_ptr() })
}
