//! Decoding of the raw ring-buffer records defined in `daemon-common` into owned Rust values.
//! The kernel writes `#[repr(C)]` structs; a record shorter than its kind requires, or of an
//! unknown kind, is an error (counted by the caller as a decode failure), never a panic.

use daemon_common::{
    ConnectEvent, ExecEvent, ExitEvent, ForkEvent, MatchEvent, EVENT_ARGS_LEN, PATH_LEN,
};
#[cfg(test)]
use daemon_common::{EventHeader, EVENT_CONNECT, EVENT_EXEC, EVENT_EXIT, EVENT_FORK, EVENT_MATCH};
#[cfg(test)]
use std::mem::size_of;

/// One decoded ring-buffer record.
#[derive(Clone, Debug)]
pub enum Record {
    Exec(Box<ExecEvent>),
    Exit(ExitEvent),
    Fork(ForkEvent),
    Connect(ConnectEvent),
    Match(MatchEvent),
}

/// Why a record could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { kind: u32, len: usize, need: usize },
    UnknownKind(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooShort { kind, len, need } => write!(
                f,
                "ring-buffer record of kind {kind} has {len} bytes, needs {need} \
                 (daemon and eBPF object built from different daemon-common versions?)"
            ),
            DecodeError::UnknownKind(k) => write!(
                f,
                "ring-buffer record of unknown kind {k} (daemon and eBPF object out of sync?)"
            ),
        }
    }
}

#[cfg(test)]
fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            kind,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; every T used here is a plain-old-data `#[repr(C)]` struct
    // of integers and byte arrays, valid for any bit pattern; read_unaligned copes with the
    // ring buffer's 8-byte alignment not matching T's.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

/// Decodes one record as the kernel wrote it (the engine's reader does this in production;
/// tests and fake engines use this one).
#[cfg(test)]
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: EventHeader = read(bytes, 0)?;
    Ok(match header.kind {
        EVENT_EXEC => Record::Exec(Box::new(read(bytes, EVENT_EXEC)?)),
        EVENT_EXIT => Record::Exit(read(bytes, EVENT_EXIT)?),
        EVENT_FORK => Record::Fork(read(bytes, EVENT_FORK)?),
        EVENT_CONNECT => Record::Connect(read(bytes, EVENT_CONNECT)?),
        EVENT_MATCH => Record::Match(read(bytes, EVENT_MATCH)?),
        k => return Err(DecodeError::UnknownKind(k)),
    })
}

/// The raw bytes of a record (tests and fake engines build records with this).
#[cfg(test)]
pub fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: T is a `#[repr(C)]` POD record; reading its bytes (padding included, which the
    // records make explicit) is sound.
    unsafe { std::slice::from_raw_parts(value as *const T as *const u8, size_of::<T>()).to_vec() }
}

/// Binary path of an exec record (lossy UTF-8).
pub fn exec_path(e: &ExecEvent) -> String {
    let n = (e.path_len as usize).min(PATH_LEN);
    let raw = &e.path[..n];
    let raw = raw.split(|b| *b == 0).next().unwrap_or(raw);
    String::from_utf8_lossy(raw).into_owned()
}

/// argv of an exec record (NUL-separated in the record; lossy UTF-8). A trailing partial
/// element (truncated argv) is kept.
pub fn exec_argv(e: &ExecEvent) -> Vec<String> {
    let n = (e.args_len as usize).min(EVENT_ARGS_LEN);
    split_nul(&e.args[..n])
}

/// Splits NUL-separated strings (as in `/proc/PID/cmdline`), ignoring one trailing NUL.
pub fn split_nul(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Exit status and terminating signal of `task->exit_code` (as `waitpid` would decode it).
pub fn decode_exit_code(code: u32) -> (u32, Option<u32>) {
    let sig = code & 0x7f;
    let status = (code >> 8) & 0xff;
    if sig == 0 {
        (status, None)
    } else {
        (status, Some(sig))
    }
}

/// Conventional name of a signal number (`SIGKILL`), or `SIG<n>` for unnamed ones.
pub fn signal_name(sig: u32) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        17 => "SIGCHLD",
        18 => "SIGCONT",
        19 => "SIGSTOP",
        20 => "SIGTSTP",
        21 => "SIGTTIN",
        22 => "SIGTTOU",
        23 => "SIGURG",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        28 => "SIGWINCH",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        n => return format!("SIG{n}"),
    };
    name.to_string()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use daemon_common::{Destination, PROTO_TCP};

    /// A synthetic exec record.
    pub fn exec_record(
        tgid: u32,
        start_ns: u64,
        ppid: u32,
        parent_start_ns: u64,
        path: &str,
        argv: &[&str],
    ) -> ExecEvent {
        let mut e = ExecEvent {
            header: EventHeader {
                kind: EVENT_EXEC,
                tgid,
                time_ns: start_ns,
                start_ns,
            },
            ppid,
            uid: 1000,
            cgroup_id: 0,
            parent_start_ns,
            namespace_id: 0,
            args_len: 0,
            path_len: path.len() as u32,
            args_truncated: 0,
            path: [0; PATH_LEN],
            args: [0; EVENT_ARGS_LEN],
        };
        e.path[..path.len()].copy_from_slice(path.as_bytes());
        let mut off = 0;
        for a in argv {
            e.args[off..off + a.len()].copy_from_slice(a.as_bytes());
            off += a.len() + 1;
        }
        e.args_len = off as u32;
        e
    }

    #[test]
    fn decodes_every_kind_and_rejects_bad_records() {
        let exec = exec_record(42, 7, 1, 3, "/usr/bin/curl", &["curl", "http://x"]);
        match decode(&as_bytes(&exec)).unwrap() {
            Record::Exec(e) => {
                assert_eq!(e.header.tgid, 42);
                assert_eq!(exec_path(&e), "/usr/bin/curl");
                assert_eq!(exec_argv(&e), vec!["curl", "http://x"]);
            }
            other => panic!("decoded as {other:?}"),
        }
        let exit = ExitEvent {
            header: EventHeader {
                kind: EVENT_EXIT,
                tgid: 42,
                time_ns: 9,
                start_ns: 7,
            },
            exit_code: 9,
            _pad: 0,
        };
        assert!(matches!(decode(&as_bytes(&exit)), Ok(Record::Exit(e)) if e.exit_code == 9));
        let conn = ConnectEvent {
            header: EventHeader {
                kind: EVENT_CONNECT,
                ..Default::default()
            },
            dest: Destination {
                port: 80,
                family: 2,
                protocol: PROTO_TCP,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(decode(&as_bytes(&conn)), Ok(Record::Connect(c)) if c.dest.port == 80));
        let fork = ForkEvent {
            header: EventHeader {
                kind: EVENT_FORK,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(matches!(decode(&as_bytes(&fork)), Ok(Record::Fork(_))));
        let m = MatchEvent {
            header: EventHeader {
                kind: EVENT_MATCH,
                ..Default::default()
            },
            selector: 3,
            ..Default::default()
        };
        assert!(matches!(decode(&as_bytes(&m)), Ok(Record::Match(m)) if m.selector == 3));

        // Truncated record of a known kind, too short for a header, unknown kind.
        let bytes = as_bytes(&exec);
        assert!(matches!(
            decode(&bytes[..100]),
            Err(DecodeError::TooShort {
                kind: EVENT_EXEC,
                len: 100,
                ..
            })
        ));
        assert!(matches!(
            decode(&[1, 0]),
            Err(DecodeError::TooShort { kind: 0, .. })
        ));
        let mut bad = as_bytes(&exit);
        bad[0] = 99;
        assert_eq!(decode(&bad).unwrap_err(), DecodeError::UnknownKind(99));
        assert!(decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown kind 99"));
    }

    #[test]
    fn exit_codes_and_signals() {
        assert_eq!(decode_exit_code(0), (0, None));
        assert_eq!(decode_exit_code(3 << 8), (3, None));
        assert_eq!(decode_exit_code(9), (0, Some(9)));
        assert_eq!(decode_exit_code(0x80 | 11), (0, Some(11))); // core dumped
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "SIG40");
    }

    #[test]
    fn argv_splitting_and_bounds() {
        assert_eq!(split_nul(b"a\0b c\0"), vec!["a", "b c"]);
        assert_eq!(split_nul(b"a\0\0b"), vec!["a", "", "b"]);
        assert!(split_nul(b"").is_empty());
        // Lengths beyond the arrays are clamped, not trusted.
        let mut e = exec_record(1, 1, 0, 0, "/bin/sh", &["sh"]);
        e.path_len = 10_000;
        e.args_len = 10_000;
        assert_eq!(exec_path(&e), "/bin/sh");
        assert_eq!(exec_argv(&e)[0], "sh");
    }
}
