//! The facts the exec program matches, read from /proc for a process that is already running:
//! what a new rule set is evaluated against when the daemon reseeds processes that exec'd
//! before it existed (the kernel evaluates only at exec). One function, [`gather`], reads them,
//! each from where the kernel's view of the running image is exposed:
//!
//! - path: `/proc/PID/exe`, the kernel's d_path of `mm->exe_file` — the path in the process's
//!   own mount namespace, as the exec program's walk builds it (a deleted file's ` (deleted)`
//!   mark is not part of the name);
//! - filename: the string at `AT_EXECFN` (`/proc/PID/auxv`) in the process's memory: the
//!   filename given to execve, which the exec tracepoint reports (a script's own path);
//! - argv: `/proc/PID/cmdline`;
//! - namespace: the workload of the process's cgroup (`/proc/PID/cgroup`), like the exec
//!   program's `WORKLOADS` lookup;
//! - the executed file: `stat` of `/proc/PID/exe` (the file itself, named or not): its
//!   identity, whether it has a link (fileless), and whether it is one of the loaders.
//!
//! What can differ from the exec program's view is documented in `daemon-common` ("Switching"):
//! memory the process rewrote since its exec (its argument area, the filename on its stack),
//! and the cgroup it moved to.

use crate::pipeline::workload::process_cgroup_id;
use bulwark_compiler::{ExecFacts, FileId};
use daemon_common::PATH_LEN;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `AT_EXECFN` in the auxiliary vector (uapi/linux/auxvec.h).
const AT_EXECFN: u64 = 31;

/// Reads process `pid`'s exec facts under `proc_root`; the namespace id comes from
/// `namespace_of(cgroup id)` (0 when the cgroup or the cgroup mount is unknown), `is_loader`
/// says whether a file is a dynamic loader. `None` for a process /proc cannot describe: exited,
/// a zombie, or a kernel thread.
pub fn gather(
    proc_root: &Path,
    cgroup_mount: Option<&Path>,
    pid: u32,
    namespace_of: &dyn Fn(u64) -> u32,
    is_loader: &dyn Fn(FileId) -> bool,
) -> Option<ExecFacts> {
    let base = proc_root.join(pid.to_string());
    let exe = std::fs::read_link(base.join("exe")).ok()?;
    let exe = exe.as_os_str().as_bytes();
    let path = exe.strip_suffix(b" (deleted)").unwrap_or(exe).to_vec();
    let cmdline = std::fs::read(base.join("cmdline")).ok()?;
    let argv = split_args(&cmdline);
    let namespace_id = cgroup_mount
        .and_then(|m| process_cgroup_id(m, proc_root, pid))
        .map_or(0, namespace_of);
    let md = std::fs::metadata(base.join("exe")).ok()?;
    let file = FileId::from_stat(md.dev(), md.ino());
    Some(ExecFacts {
        path,
        filename: execve_filename(&base),
        argv,
        namespace_id,
        file: Some(file),
        fileless: md.nlink() == 0,
        loader: is_loader(file),
    })
}

/// NUL-separated arguments (the last NUL ends the last one), bytes as they are.
pub fn split_args(raw: &[u8]) -> Vec<Vec<u8>> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0).map(<[u8]>::to_vec).collect()
}

/// The string `AT_EXECFN` points to, at most the kernel's path buffer.
fn execve_filename(base: &Path) -> Option<Vec<u8>> {
    let auxv = std::fs::read(base.join("auxv")).ok()?;
    let addr = auxv
        .chunks_exact(16)
        .map(|kv| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            (word(&kv[..8]), word(&kv[8..]))
        })
        .find(|(k, _)| *k == AT_EXECFN)?
        .1;
    let mem = std::fs::File::open(base.join("mem")).ok()?;
    let mut buf = vec![0u8; PATH_LEN];
    let n = mem.read_at(&mut buf, addr).ok()?;
    buf.truncate(n);
    let end = buf.iter().position(|b| *b == 0)?;
    buf.truncate(end);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_at_nul_bytes_as_they_are() {
        assert_eq!(
            split_args(b"a\0b c\0\0d\0"),
            vec![b"a".to_vec(), b"b c".to_vec(), vec![], b"d".to_vec()]
        );
        assert_eq!(split_args(b""), Vec::<Vec<u8>>::new());
        assert_eq!(split_args(b"\xff\0"), vec![vec![0xff]]);
    }

    #[test]
    fn this_process_is_described_as_the_kernel_sees_it() {
        let me = std::process::id();
        let f = gather(Path::new("/proc"), None, me, &|_| 7, &|_| true).expect("own facts");
        let md = std::fs::metadata(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(f.file, Some(FileId::from_stat(md.dev(), md.ino())));
        assert!(!f.fileless && f.loader, "a named file, a loader as told");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(f.path, exe.as_os_str().as_bytes());
        let argv: Vec<Vec<u8>> = std::env::args_os().map(|a| a.as_bytes().to_vec()).collect();
        assert_eq!(f.argv, argv);
        // cargo runs the test binary by its path: that is what execve was given.
        let filename = f.filename.expect("AT_EXECFN is readable");
        assert!(
            Path::new(std::ffi::OsStr::from_bytes(&filename)).file_name() == exe.file_name(),
            "{:?}",
            String::from_utf8_lossy(&filename)
        );
        assert_eq!(f.namespace_id, 0, "no cgroup mount given: no workload");
        assert!(gather(Path::new("/proc"), None, u32::MAX, &|_| 7, &|_| false).is_none());
    }
}
