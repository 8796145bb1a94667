//! Facts about the host the engine needs before loading anything: are we root, where is
//! tracefs (mounted here if missing), where is the cgroup v2 mount, and tracepoint record
//! layouts read from tracefs. Shared by the engine and `bulwark probe`.

use anyhow::{bail, Context};
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

/// Mount points from /proc/mounts as (device, mount point, fs type).
fn mounts() -> Vec<(String, PathBuf, String)> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dev = f.next()?.to_string();
            let mnt = f.next()?.replace("\\040", " ");
            let fs = f.next()?.to_string();
            Some((dev, PathBuf::from(mnt), fs))
        })
        .collect()
}

/// The cgroup v2 mount point, preferring `/sys/fs/cgroup` (most nodes) over others such as
/// `/sys/fs/cgroup/unified` (hybrid hosts).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let all: Vec<PathBuf> = mounts()
        .into_iter()
        .filter(|(_, _, fs)| fs == "cgroup2")
        .map(|(_, m, _)| m)
        .collect();
    all.iter()
        .find(|m| m.as_path() == Path::new("/sys/fs/cgroup"))
        .or_else(|| all.first())
        .cloned()
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
        .find(|(_, m, fs)| fs == "tracefs" && m.as_path() == Path::new("/sys/kernel/tracing"))
        .or_else(|| all.iter().find(|(_, _, fs)| fs == "tracefs"))
        .map(|(_, m, _)| m.clone())
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
    fn missing_field_is_none() {
        assert_eq!(parse_field_offset(EXIT_FMT, "prio"), None);
        assert_eq!(parse_field_offset("garbage", "pid"), None);
    }
}
