//! Raw `bpf(2)` for the two things aya 0.14 does not offer: loading and attaching a `tp_btf`
//! program ([`super::probe`]) and the map-in-map update that waits for running programs
//! ([`super::switch::ProgramBarrier`]). `attr` is a byte image of `union bpf_attr`.

use std::os::fd::{FromRawFd, OwnedFd};

/// `bpf(2)` for a command that returns no descriptor (0 on success).
pub(super) fn bpf_cmd(cmd: i64, attr: &mut [u8]) -> Result<i64, String> {
    // SAFETY: `attr` is a zero-initialised bpf_attr prefix of the size passed; the kernel
    // reads (and for some commands writes) only that many bytes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error().to_string())
    } else {
        Ok(r)
    }
}

/// `bpf(2)` for a command that returns a new file descriptor.
pub(super) fn bpf(cmd: i64, attr: &mut [u8]) -> Result<OwnedFd, String> {
    let r = bpf_cmd(cmd, attr)?;
    // SAFETY: on success these commands return a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
}

pub(super) fn put32(a: &mut [u8], at: usize, v: u32) {
    a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

pub(super) fn put64(a: &mut [u8], at: usize, v: u64) {
    a[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}
