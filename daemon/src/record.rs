//! The kernel's ring-buffer records as typed values: the `#[repr(C)]` structs of
//! `daemon-common`, decoded once (by the engine's reader, [`crate::engine::EventReader`]) and
//! consumed by the pipeline. A record shorter than its kind requires, or of an unknown kind, is
//! a [`DecodeError`] (counted by the pipeline as a lost event), never a panic.

use daemon_common::{
    ConnEvent, ConnPayloadEvent, ConnectEvent, EventHeader, ExecEvent, ExitEvent, FileEvent,
    ForkEvent, MatchEvent, ProcessMovedEvent, SyscallEvent, EVENT_ARGS_LEN, EVENT_CONNECT,
    EVENT_CONN_CLOSE, EVENT_CONN_PAYLOAD, EVENT_CONN_STATS, EVENT_EXEC, EVENT_EXIT, EVENT_FILE,
    EVENT_FORK, EVENT_MATCH, EVENT_PROCESS_MOVED, EVENT_SYSCALL, PATH_LEN,
};
use std::mem::size_of;

/// One decoded ring-buffer record.
#[derive(Clone, Debug)]
pub enum Record {
    Exec(Box<ExecEvent>),
    Exit(ExitEvent),
    Fork(ForkEvent),
    Connect(ConnectEvent),
    Match(MatchEvent),
    /// A connection opened, its totals so far, or it closed (`header.kind` says which).
    Conn(ConnEvent),
    /// The first payload of one direction of a connection.
    ConnPayload(Box<ConnPayloadEvent>),
    /// A process moved to a cgroup of another namespace: its bits are to be recomputed.
    ProcessMoved(ProcessMovedEvent),
    /// A call `hook: syscall` selectors matched (their `Match` records follow).
    Syscall(Box<SyscallEvent>),
    /// A file access `hook: file` selectors matched (their `Match` records follow).
    File(Box<FileEvent>),
}

impl Record {
    /// The header common to all records.
    pub fn header(&self) -> &EventHeader {
        match self {
            Record::Exec(e) => &e.header,
            Record::Exit(e) => &e.header,
            Record::Fork(e) => &e.header,
            Record::Connect(e) => &e.header,
            Record::Match(e) => &e.header,
            Record::Conn(e) => &e.header,
            Record::ConnPayload(e) => &e.header,
            Record::ProcessMoved(e) => &e.header,
            Record::Syscall(e) => &e.header,
            Record::File(e) => &e.header,
        }
    }
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

impl std::error::Error for DecodeError {}

/// The kind of a raw record (its first field), `None` when it is too short to have one.
pub fn kind_of(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Copies a `T` of kind `kind` out of `bytes`, or says how short they are.
///
/// `T` must be one of `daemon-common`'s plain-old-data `#[repr(C)]` records (integers and byte
/// arrays, every bit pattern valid).
pub(crate) fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            kind,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked above; every T used here is a plain-old-data `#[repr(C)]` struct
    // of integers and byte arrays, valid for any bit pattern; read_unaligned copes with the ring buffer's 8-byte
    // alignment not matching T's.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one record as the kernel wrote it.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let Some(kind) = kind_of(bytes) else {
        return Err(DecodeError::TooShort {
            kind: 0,
            len: bytes.len(),
            need: size_of::<EventHeader>(),
        });
    };
    Ok(match kind {
        EVENT_EXEC => Record::Exec(Box::new(read(bytes, kind)?)),
        EVENT_EXIT => Record::Exit(read(bytes, kind)?),
        EVENT_FORK => Record::Fork(read(bytes, kind)?),
        EVENT_CONNECT => Record::Connect(read(bytes, kind)?),
        EVENT_MATCH => Record::Match(read(bytes, kind)?),
        EVENT_CONN_STATS | EVENT_CONN_CLOSE => Record::Conn(read(bytes, kind)?),
        EVENT_CONN_PAYLOAD => Record::ConnPayload(Box::new(read(bytes, kind)?)),
        EVENT_PROCESS_MOVED => Record::ProcessMoved(read(bytes, kind)?),
        EVENT_SYSCALL => Record::Syscall(Box::new(read(bytes, kind)?)),
        EVENT_FILE => Record::File(Box::new(read(bytes, kind)?)),
        k => return Err(DecodeError::UnknownKind(k)),
    })
}

/// The raw bytes of a record (tests and fake engines build records with this).
#[cfg(test)]
pub fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: T is a `#[repr(C)]` POD record; reading its bytes (padding included, which the
    // records make explicit) is sound.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()).to_vec() }
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

#[cfg(test)]
pub mod tests {
    use super::*;
    use daemon_common::{Destination, CONN_PREFIX_LEN, PROTO_TCP};

    #[test]
    fn connection_records_decode_by_kind_and_short_ones_are_errors() {
        for kind in [EVENT_CONN_STATS, EVENT_CONN_CLOSE] {
            let mut c = ConnEvent::default();
            c.header.kind = kind;
            c.cookie = 5;
            c.bytes_sent = 7;
            match decode(&as_bytes(&c)) {
                Ok(Record::Conn(d)) => assert_eq!(d, c),
                other => panic!("{other:?}"),
            }
        }
        let mut p = ConnPayloadEvent {
            header: EventHeader {
                kind: EVENT_CONN_PAYLOAD,
                ..EventHeader::default()
            },
            cookie: 9,
            direction: 1,
            len: 3,
            data: [0; CONN_PREFIX_LEN],
        };
        p.data[..3].copy_from_slice(b"SSH");
        let b = as_bytes(&p);
        match decode(&b) {
            Ok(Record::ConnPayload(d)) => assert_eq!((d.cookie, &d.data[..3]), (9, &b"SSH"[..])),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(&b[..b.len() - 1]),
            Err(DecodeError::TooShort {
                kind: EVENT_CONN_PAYLOAD,
                ..
            })
        ));
    }

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
            flags: 0,
            _pad: 0,
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
        assert_eq!(decode(&as_bytes(&exit)).unwrap().header().tgid, 42);
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
        // A short record says what its kind needs.
        let exit_bytes = as_bytes(&exit);
        assert_eq!(
            decode(&exit_bytes[..exit_bytes.len() - 1]).unwrap_err(),
            DecodeError::TooShort {
                kind: EVENT_EXIT,
                len: exit_bytes.len() - 1,
                need: size_of::<ExitEvent>(),
            }
        );
        // A kind this build does not know, even without a whole header.
        assert_eq!(
            decode(&77u32.to_ne_bytes()).unwrap_err(),
            DecodeError::UnknownKind(77)
        );
        let mut bad = as_bytes(&exit);
        bad[0] = 99;
        assert_eq!(decode(&bad).unwrap_err(), DecodeError::UnknownKind(99));
        assert!(decode(&bad)
            .unwrap_err()
            .to_string()
            .contains("unknown kind 99"));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(decode_exit_code(0), (0, None));
        assert_eq!(decode_exit_code(3 << 8), (3, None));
        assert_eq!(decode_exit_code(9), (0, Some(9)));
        assert_eq!(decode_exit_code(0x80 | 11), (0, Some(11))); // core dumped
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
