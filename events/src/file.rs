//! `process_file`: a file access a `hook: file` rule matched ([`FileAccessed`]): the file's
//! path (the kernel's, or built from the caller's string for calls judged at entry), what the
//! call did to it, the call, its open flags and, for an open, the descriptor it returned; the
//! file's identity when the call had one. Correlated with the process by `exec_id`.

use bulwark_policy::FileAccess;
use serde::{Deserialize, Serialize};

/// The `file` field of `process_file`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileAccessed {
    /// Absolute path; `null` when it could not be built (too long or too deep for the kernel's
    /// walk: the access was then judged by the file's identity only).
    pub path: Option<String>,
    /// True when `path` is the kernel's path of the file used (opens, fd calls: after `..`,
    /// symlinks and a dirfd); false when it was built at the call's entry from the dirfd's (or
    /// working directory's) path and the caller's string, whose `..` and symlinks the kernel
    /// had not resolved yet.
    pub path_resolved: bool,
    /// What the call did to the file.
    pub access: Vec<FileAccess>,
    /// The system call (`openat`), `null` when its number is not in the table or the access
    /// was an io_uring request (`io_uring` then names it).
    pub syscall: Option<String>,
    /// The io_uring request (`IORING_OP_OPENAT`), when the access was one; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_uring: Option<String>,
    /// Why the request could not be judged by its file, when it could not (the process was
    /// then killed at submission, whatever the path: docs/files.md); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unjudged: Option<String>,
    /// The call's table: `x86_64`, `arm64`, or `i386` for a compat call.
    pub abi: String,
    /// The open flags (`O_RDONLY|O_CLOEXEC`; bits without a name in hex), opens only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<String>,
    /// What an open returned (its descriptor); other calls are judged at entry, before they
    /// return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_value: Option<i64>,
    /// The file's device (`major:minor`) and inode, when the call had a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inode: Option<u64>,
}

/// The accesses of `FILE_ACCESS_*` bits, in the order of [`FileAccess::ALL`].
pub fn accesses(bits: u32) -> Vec<FileAccess> {
    FileAccess::ALL
        .iter()
        .copied()
        .filter(|a| bits & a.bit() != 0)
        .collect()
}

/// Open flags in words (the flags x86_64 and arm64 spell alike; the rest in hex).
pub fn open_flags(flags: u64) -> String {
    const NAMED: &[(u64, &str)] = &[
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o2000000, "O_CLOEXEC"),
        (0o10000000, "O_PATH"),
    ];
    let mut words = vec![match flags & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    }
    .to_string()];
    let mut rest = flags & !3;
    for (bit, name) in NAMED {
        if rest & bit != 0 {
            words.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        words.push(format!("{rest:#x}"));
    }
    words.join("|")
}

/// The name of io_uring opcode `op` (uapi `enum io_uring_op`; the file requests the hook
/// judges are named, others in numbers).
pub fn uring_op_name(op: u32) -> String {
    let name = match op {
        18 => "OPENAT",
        28 => "OPENAT2",
        35 => "RENAMEAT",
        36 => "UNLINKAT",
        37 => "MKDIRAT",
        38 => "SYMLINKAT",
        39 => "LINKAT",
        55 => "FTRUNCATE",
        n => return format!("IORING_OP_{n}"),
    };
    format!("IORING_OP_{name}")
}

/// A kernel device number (`MAJOR << 20 | MINOR`) as `major:minor`.
pub fn device(dev: u32) -> String {
    format!("{}:{}", dev >> 20, dev & 0xf_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_accesses_read_as_words() {
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(
            open_flags(0o2000000 | 0o1000 | 0o100 | 1),
            "O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC"
        );
        assert_eq!(open_flags(2 | 0o200000), "O_RDWR|0x10000");
        assert_eq!(accesses(1 | 4), vec![FileAccess::Read, FileAccess::Create]);
        assert_eq!(device((8 << 20) | 1), "8:1");
        assert_eq!(uring_op_name(18), "IORING_OP_OPENAT");
        assert_eq!(uring_op_name(99), "IORING_OP_99");
    }
}
