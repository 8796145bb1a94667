//! Facts about the host. Those the engine needs before loading anything: are we root, where is
//! tracefs (mounted here if missing), where is the cgroup v2 mount, and tracepoint record
//! layouts read from tracefs; and the boot clock the programs stamp records with (and a
//! process's start on it, from /proc). The one home of mount discovery: the engine, `bulwark run`
//! (workload resolution), `bulwark probe` and the e2e harness all find the cgroup v2 mount here.

use anyhow::{bail, Context};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Fails unless the effective uid is 0.
pub fn require_root() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "the bulwark engine must run as root (it loads eBPF programs and attaches them to the \
             cgroup v2 root: CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN); run it with sudo \
             or as a privileged DaemonSet"
        );
    }
    Ok(())
}

/// One line of /proc/mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub point: PathBuf,
    pub fs_type: String,
}

/// Undoes the octal escapes the kernel writes in /proc/mounts fields (`\040` space, `\011`
/// tab, `\012` newline, `\134` backslash); anything else is kept as it is.
fn unescape_octal(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match octal_escape(&b[i..]) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

/// The byte of a `\NNN` escape at the start of `b` (three octal digits that fit a byte).
fn octal_escape(b: &[u8]) -> Option<u8> {
    let digits = b.strip_prefix(b"\\")?.get(..3)?;
    if !digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
        return None;
    }
    u8::try_from(digits.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok()
}

/// The mounts of a /proc/mounts text, fields unescaped.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let device = String::from_utf8_lossy(&unescape_octal(f.next()?)).into_owned();
            let point = PathBuf::from(OsString::from_vec(unescape_octal(f.next()?)));
            let fs_type = String::from_utf8_lossy(&unescape_octal(f.next()?)).into_owned();
            Some(Mount {
                device,
                point,
                fs_type,
            })
        })
        .collect()
}

/// The mounts of this mount namespace (empty when /proc/mounts cannot be read).
fn mounts() -> Vec<Mount> {
    parse_mounts(&std::fs::read_to_string("/proc/mounts").unwrap_or_default())
}

/// The cgroup v2 mount point among `mounts`, preferring `/sys/fs/cgroup` (most nodes) over
/// others such as `/sys/fs/cgroup/unified` (hybrid hosts).
pub fn cgroup2_mount_in(mounts: &[Mount]) -> Option<PathBuf> {
    let mut all = mounts.iter().filter(|m| m.fs_type == "cgroup2");
    let first = all.clone().next();
    all.find(|m| m.point == Path::new("/sys/fs/cgroup"))
        .or(first)
        .map(|m| m.point.clone())
}

/// The cgroup v2 mount point of this host (see [`cgroup2_mount_in`]).
pub fn cgroup2_mount() -> Option<PathBuf> {
    cgroup2_mount_in(&mounts())
}

/// The cgroup v2 mount or a clear error.
pub fn require_cgroup2() -> anyhow::Result<PathBuf> {
    cgroup2_mount().context(
        "no cgroup v2 filesystem is mounted (checked /proc/mounts); bulwark attaches its connect \
         and egress programs to the cgroup v2 root. Mount it with \
         `mount -t cgroup2 none /sys/fs/cgroup` (or /sys/fs/cgroup/unified on hybrid hosts)",
    )
}

/// The tracefs mount (None if not mounted). Found in /proc/mounts first (works unprivileged,
/// the directory itself is usually root-only), else the debugfs path if it has `events/`.
pub fn tracefs() -> Option<PathBuf> {
    let all = mounts();
    all.iter()
        .find(|m| m.fs_type == "tracefs" && m.point == Path::new("/sys/kernel/tracing"))
        .or_else(|| all.iter().find(|m| m.fs_type == "tracefs"))
        .map(|m| m.point.clone())
        .or_else(|| {
            let p = Path::new("/sys/kernel/debug/tracing");
            p.join("events").is_dir().then(|| p.to_path_buf())
        })
}

/// tracefs, mounting it at /sys/kernel/tracing when it is missing.
pub fn require_tracefs() -> anyhow::Result<PathBuf> {
    if let Some(p) = tracefs() {
        return Ok(p);
    }
    let target = c"/sys/kernel/tracing";
    let r = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({}); the exec, \
             fork and exit programs are tracepoints and need it: \
             `mount -t tracefs tracefs /sys/kernel/tracing`",
            std::io::Error::last_os_error()
        );
    }
    tracefs().context("mounted tracefs at /sys/kernel/tracing but it has no events/ directory")
}

/// Byte offset of `field` in a tracepoint record, from its tracefs `format` file.
pub fn tracepoint_field_offset(
    tracefs: &Path,
    category: &str,
    name: &str,
    field: &str,
) -> Option<u32> {
    let fmt = std::fs::read_to_string(
        tracefs
            .join("events")
            .join(category)
            .join(name)
            .join("format"),
    )
    .ok()?;
    parse_field_offset(&fmt, field)
}

/// Finds `field:<type> <field>;\toffset:N;` in a tracefs format text.
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|l| {
        let l = l.trim();
        let decl = l.strip_prefix("field:")?.split(';').next()?;
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let off = l.split("offset:").nth(1)?.split(';').next()?;
        off.trim().parse().ok()
    })
}

/// `CLOCK_BOOTTIME` now, in ns (the clock of `bpf_ktime_get_boot_ns`).
pub(super) fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Start time of a running process in boot-clock ns (from /proc/PID/stat), 0 if unknown.
pub(super) fn proc_start_ns(tgid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tgid}/stat")) else {
        return 0;
    };
    // Field 22 (starttime, clock ticks since boot); fields after the `)` of comm.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * (1_000_000_000 / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXIT_FMT: &str = "name: sched_process_exit\nID: 369\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\
        \tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\
        \tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";

    #[test]
    fn finds_tracepoint_field_offsets() {
        assert_eq!(parse_field_offset(EXIT_FMT, "group_dead"), Some(32));
        assert_eq!(parse_field_offset(EXIT_FMT, "comm"), Some(8));
        assert_eq!(parse_field_offset(EXIT_FMT, "pid"), Some(24));
    }

    #[test]
    fn mounts_are_unescaped_and_cgroup2_is_found() {
        let text = "sysfs /sys sysfs rw 0 0\n\
                    cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                    tmpfs /run/my\\040dir\\011x\\134y tmpfs rw 0 0\n\
                    odd /a\\777b ext4 rw 0 0\n";
        let m = parse_mounts(text);
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].point, Path::new("/run/my dir\tx\\y"));
        assert_eq!(m[2].fs_type, "tmpfs");
        assert_eq!(m[3].point, Path::new("/a\\777b"), "not an escape: kept");
        assert_eq!(
            cgroup2_mount_in(&m),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A cgroup v2 mount point with a space in its name.
        let spaced = parse_mounts("none /mnt/cg\\040v2 cgroup2 rw 0 0\n");
        assert_eq!(cgroup2_mount_in(&spaced), Some(PathBuf::from("/mnt/cg v2")));
        // /sys/fs/cgroup wins over an earlier one; none at all is None.
        let both = parse_mounts(
            "cgroup2 /mnt/other cgroup2 rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n",
        );
        assert_eq!(
            cgroup2_mount_in(&both),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in(&parse_mounts("sysfs /sys sysfs rw 0 0\n")),
            None
        );
        // This machine has one, and it is a directory.
        assert!(require_cgroup2().unwrap().is_dir());
    }

    #[test]
    fn missing_field_is_none() {
        assert_eq!(parse_field_offset(EXIT_FMT, "prio"), None);
        assert_eq!(parse_field_offset("garbage", "pid"), None);
    }

    #[test]
    fn proc_start_time_of_self_is_in_the_past_and_unknown_pid_is_zero() {
        let me = proc_start_ns(std::process::id());
        assert!(me > 0 && me <= boot_ns(), "{me}");
        assert_eq!(proc_start_ns(u32::MAX), 0);
    }
}
