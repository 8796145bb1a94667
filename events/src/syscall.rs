//! `process_syscall`: a system call a `hook: syscall` rule matched ([`Syscall`]): its name and
//! number, its arguments (decoded for the calls policies commonly watch, raw for the rest) and,
//! when decided at the call's exit, its return value with the errno name of a failure. The
//! decoding tables are here, next to the fields they fill.

use serde::{Deserialize, Serialize};

/// When the call was seen.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SyscallPhase {
    /// At entry, before the call ran (no return value).
    Entry,
    /// At exit, after the call ran (`return_value` is set).
    Exit,
}

/// One argument of a call.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyscallArg {
    /// Its name in the call's C signature (`request`, `flags`), or `arg0`.. for calls not decoded.
    pub name: String,
    /// The raw 64-bit value (as a signed integer, so `-1` reads as `-1`).
    pub value: i64,
    /// The value in words where the call is decoded (`PTRACE_ATTACH`,
    /// `CLONE_NEWUSER|CLONE_NEWNS`), `null` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoded: Option<String>,
}

/// The `syscall` field of `process_syscall`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Syscall {
    /// The call's name in its table (`ptrace`), `null` when the number is not in the table.
    pub name: Option<String>,
    /// The call's number in its table.
    pub number: u32,
    /// The table: `x86_64`, `arm64`, or `i386` for a compat call (`int 0x80`, 32-bit process).
    pub abi: String,
    pub phase: SyscallPhase,
    pub arguments: Vec<SyscallArg>,
    /// What the call returned (exit only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_value: Option<i64>,
    /// The errno of a failed call (`EPERM`), exit only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Argument names and a decoder per well-known call.
fn signature(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "ptrace" => &["request", "pid", "addr", "data"],
        "mount" => &["source", "target", "fstype", "flags", "data"],
        "umount2" => &["target", "flags"],
        "unshare" => &["flags"],
        "setns" => &["fd", "nstype"],
        "clone" => &["flags", "stack", "parent_tid", "child_tid", "tls"],
        "kill" | "tkill" => &["pid", "sig"],
        "tgkill" => &["tgid", "pid", "sig"],
        "bpf" => &["cmd", "attr", "size"],
        "memfd_create" => &["name", "flags"],
        "init_module" => &["image", "len", "params"],
        "finit_module" => &["fd", "params", "flags"],
        "delete_module" => &["name", "flags"],
        "setuid" => &["uid"],
        "setgid" => &["gid"],
        "openat" => &["dirfd", "pathname", "flags", "mode"],
        "open" => &["pathname", "flags", "mode"],
        "close" => &["fd"],
        "personality" => &["persona"],
        "kexec_load" => &["entry", "nr_segments", "segments", "flags"],
        "reboot" => &["magic", "magic2", "cmd", "arg"],
        "chroot" | "pivot_root" => &["path", "put_old"],
        _ => return None,
    })
}

const PTRACE_REQUESTS: &[(i64, &str)] = &[
    (0, "PTRACE_TRACEME"),
    (1, "PTRACE_PEEKTEXT"),
    (2, "PTRACE_PEEKDATA"),
    (3, "PTRACE_PEEKUSER"),
    (4, "PTRACE_POKETEXT"),
    (5, "PTRACE_POKEDATA"),
    (6, "PTRACE_POKEUSER"),
    (7, "PTRACE_CONT"),
    (8, "PTRACE_KILL"),
    (9, "PTRACE_SINGLESTEP"),
    (12, "PTRACE_GETREGS"),
    (13, "PTRACE_SETREGS"),
    (16, "PTRACE_ATTACH"),
    (17, "PTRACE_DETACH"),
    (24, "PTRACE_SYSCALL"),
    (0x4200, "PTRACE_SETOPTIONS"),
    (0x4206, "PTRACE_SEIZE"),
    (0x4207, "PTRACE_INTERRUPT"),
];

const NAMESPACE_FLAGS: &[(i64, &str)] = &[
    (0x0000_0080, "CLONE_NEWTIME"),
    (0x0002_0000, "CLONE_NEWNS"),
    (0x0200_0000, "CLONE_NEWCGROUP"),
    (0x0400_0000, "CLONE_NEWUTS"),
    (0x0800_0000, "CLONE_NEWIPC"),
    (0x1000_0000, "CLONE_NEWUSER"),
    (0x2000_0000, "CLONE_NEWPID"),
    (0x4000_0000, "CLONE_NEWNET"),
];

const MOUNT_FLAGS: &[(i64, &str)] = &[
    (1, "MS_RDONLY"),
    (2, "MS_NOSUID"),
    (4, "MS_NODEV"),
    (8, "MS_NOEXEC"),
    (32, "MS_REMOUNT"),
    (4096, "MS_BIND"),
    (8192, "MS_MOVE"),
    (16384, "MS_REC"),
    (1 << 17, "MS_UNBINDABLE"),
    (1 << 18, "MS_PRIVATE"),
    (1 << 19, "MS_SLAVE"),
    (1 << 20, "MS_SHARED"),
];

const SIGNALS: &[(i64, &str)] = &[
    (1, "SIGHUP"),
    (2, "SIGINT"),
    (9, "SIGKILL"),
    (15, "SIGTERM"),
    (19, "SIGSTOP"),
    (18, "SIGCONT"),
];

fn one_of(table: &[(i64, &str)], v: i64) -> Option<String> {
    table
        .iter()
        .find(|(n, _)| *n == v)
        .map(|(_, s)| s.to_string())
}

/// Flag words joined with `|`, with any bits left over in hex; `0` for no bit.
fn flags(table: &[(i64, &str)], v: i64) -> Option<String> {
    let mut rest = v;
    let mut words: Vec<String> = Vec::new();
    for (bit, name) in table {
        if rest & bit != 0 {
            words.push((*name).to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        words.push(format!("{rest:#x}"));
    }
    Some(if words.is_empty() {
        "0".into()
    } else {
        words.join("|")
    })
}

fn decode(call: &str, arg: &str, v: i64) -> Option<String> {
    match (call, arg) {
        ("ptrace", "request") => one_of(PTRACE_REQUESTS, v),
        ("unshare" | "clone", "flags") | ("setns", "nstype") => flags(NAMESPACE_FLAGS, v),
        ("mount", "flags") => flags(MOUNT_FLAGS, v),
        ("kill" | "tkill" | "tgkill", "sig") => one_of(SIGNALS, v),
        _ => None,
    }
}

/// The arguments of call `name` (`None`: unknown number) as an event shows them.
pub fn arguments(name: Option<&str>, raw: &[u64; 6]) -> Vec<SyscallArg> {
    match name.and_then(|n| signature(n).map(|s| (n, s))) {
        Some((call, names)) => names
            .iter()
            .zip(raw)
            .map(|(arg, v)| SyscallArg {
                name: (*arg).to_string(),
                value: *v as i64,
                decoded: decode(call, arg, *v as i64),
            })
            .collect(),
        None => raw
            .iter()
            .enumerate()
            .map(|(i, v)| SyscallArg {
                name: format!("arg{i}"),
                value: *v as i64,
                decoded: None,
            })
            .collect(),
    }
}

/// The errno name of a failing return value (`-1` -> `EPERM`), `None` for success.
pub fn error_of(ret: i64) -> Option<String> {
    if !(-4095..0).contains(&ret) {
        return None;
    }
    let n = (-ret) as u32;
    Some(
        bulwark_policy::syscalls::errno_name(n)
            .map(str::to_string)
            .unwrap_or_else(|| format!("errno {n}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_calls_are_decoded_and_others_stay_raw() {
        let a = arguments(Some("ptrace"), &[16, 1234, 0, 0, 0, 0]);
        assert_eq!(a.len(), 4);
        assert_eq!(
            (a[0].name.as_str(), a[0].decoded.as_deref()),
            ("request", Some("PTRACE_ATTACH"))
        );
        assert_eq!((a[1].name.as_str(), a[1].value), ("pid", 1234));
        let u = arguments(Some("unshare"), &[0x1002_0000 | 0x1, 0, 0, 0, 0, 0]);
        assert_eq!(
            u[0].decoded.as_deref(),
            Some("CLONE_NEWNS|CLONE_NEWUSER|0x1")
        );
        let raw = arguments(Some("getppid"), &[1, 2, 3, 4, 5, u64::MAX]);
        assert_eq!(raw.len(), 6);
        assert_eq!((raw[5].name.as_str(), raw[5].value), ("arg5", -1));
        assert!(raw.iter().all(|a| a.decoded.is_none()));
    }

    #[test]
    fn failures_name_their_errno() {
        assert_eq!(error_of(-1).as_deref(), Some("EPERM"));
        assert_eq!(error_of(-13).as_deref(), Some("EACCES"));
        assert_eq!(error_of(0), None);
        assert_eq!(error_of(3), None);
        assert_eq!(error_of(-5000), None);
    }
}
