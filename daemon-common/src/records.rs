//! The ring-buffer records the kernel programs emit: a common header, one record per kind, and
//! the values of their fields (`EVENT_*`, `EXEC_*`, `REASON_*`).

use crate::limits::{EVENT_ARGS_LEN, PATH_LEN};

/// Transport protocol numbers as the kernel uses them.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// [`MatchEvent::reason`]: why a match happened outside the plain evaluation of a payload.
pub const REASON_NONE: u8 = 0;
/// TCP Fast Open: data in the SYN never reaches sk_msg, so TFO is refused (connect EPERM) for a
/// process in scope of an enforce-mode egress rule; a stream opened with TFO by another process
/// counts as plaintext.
pub const REASON_TCP_FAST_OPEN: u8 = 1;
/// The wire-level backstop saw payload the sk_msg program never passed (a send that began
/// before the socket was watched, an MPTCP subflow, a socket the SOCKHASH had no room for).
pub const REASON_UNSEEN_PAYLOAD: u8 = 2;
/// A connection that already carried data when the policy was applied.
pub const REASON_EXISTING_CONNECTION: u8 = 3;
/// State could not be stored (a full map): the rule is enforced by refusing.
pub const REASON_CAPACITY: u8 = 4;
/// The socket guard refused a raw IP socket (`SOCK_RAW`, AF_INET/AF_INET6): `socket()` EPERM.
pub const REASON_RAW_SOCKET: u8 = 5;
/// The socket guard refused an ICMP datagram ("ping") socket, whose sends the sendmsg hooks do
/// not see: `socket()` EPERM.
pub const REASON_ICMP_SOCKET: u8 = 6;
/// The socket guard refused an MPTCP socket (its subflows bypass sk_msg): `socket()` EPERM.
pub const REASON_MPTCP: u8 = 7;
/// A covered process asked for a packet socket (`AF_PACKET`, the old `SOCK_PACKET`, or
/// `AF_XDP`): no hook can refuse it, so the process is SIGKILLed before it returns from the
/// request.
pub const REASON_PACKET_SOCKET: u8 = 8;
/// The exec's arguments were incomplete and the selector has argument conditions: it matched
/// because they all held (fail closed), not because of what its arguments were.
pub const REASON_ARGS_INCOMPLETE: u8 = 9;

/// Ring-buffer record kinds ([`EventHeader::kind`]).
pub const EVENT_EXEC: u32 = 1;
pub const EVENT_EXIT: u32 = 2;
pub const EVENT_FORK: u32 = 3;
pub const EVENT_CONNECT: u32 = 4;
pub const EVENT_MATCH: u32 = 5;
/// Engine-internal: a socket in [`MAP_SOCKHASH`](crate::MAP_SOCKHASH) got its first-payload verdict and was not
/// blocked, so userspace must delete it from the SOCKHASH (sk_msg programs may not delete from a
/// sockmap: the verifier allows `map_delete_elem` on it only from sock_ops and a few others).
pub const EVENT_SOCK_CLASSIFIED: u32 = 6;
/// Engine-internal: see [`SockUnseenEvent`].
pub const EVENT_SOCK_UNSEEN: u32 = 7;
/// Daemon-internal: see [`ProcessMovedEvent`].
pub const EVENT_PROCESS_MOVED: u32 = 12;

/// First field of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    /// Thread-group id of the process the event is about.
    pub tgid: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub time_ns: u64,
    /// `ProcessState::start_ns` of the process (identity), 0 if unknown.
    pub start_ns: u64,
}

/// `EVENT_EXEC`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub ppid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    /// Parent's identity (`ProcessState::start_ns` of ppid), 0 if unknown.
    pub parent_start_ns: u64,
    pub namespace_id: u32,
    /// Bytes used in `args` (NUL-separated argv, may be truncated).
    pub args_len: u32,
    /// Bytes used in `path` (without NUL).
    pub path_len: u32,
    /// 1 when argv was longer than `args`.
    pub args_truncated: u32,
    pub path: [u8; PATH_LEN],
    pub args: [u8; EVENT_ARGS_LEN],
    /// `EXEC_*` facts of the exec.
    pub flags: u32,
    pub _pad: u32,
}

/// [`ExecEvent::flags`]: the arguments were not all examined (see "What the kernel matches
/// against"), so argument conditions held.
pub const EXEC_ARGS_INCOMPLETE: u32 = 1;
/// [`ExecEvent::flags`]: the executed file has no link (fileless).
pub const EXEC_FILELESS: u32 = 2;
/// [`ExecEvent::flags`]: a dynamic loader run directly.
pub const EXEC_LOADER: u32 = 4;

/// `EVENT_EXIT` (thread-group leader only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ExitEvent {
    pub header: EventHeader,
    /// `task->exit_code`: exit status in bits 8..16, terminating signal in bits 0..7.
    pub exit_code: u32,
    pub _pad: u32,
}

/// `EVENT_FORK` (new process, not a new thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub parent_tgid: u32,
    pub _pad: u32,
    pub parent_start_ns: u64,
}

/// Destination of a connection. `family` is `AF_INET` (2) or `AF_INET6` (10); v4 addresses use
/// the first 4 bytes of `addr`; `port` in host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Destination {
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub protocol: u8,
}

/// `EVENT_CONNECT`: every connect (and unconnected UDP send) on a watched cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ConnectEvent {
    pub header: EventHeader,
    pub cgroup_id: u64,
    pub dest: Destination,
    /// 1 when a rule blocked it in enforce mode.
    pub blocked: u8,
    pub _pad: [u8; 3],
}

/// `EVENT_MATCH`: a selector matched. One record per matching selector.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MatchEvent {
    pub header: EventHeader,
    pub slot: u8,
    pub selector: u8,
    pub hook: u8,
    /// `ACTION_*` bits of the selector.
    pub actions: u8,
    /// 1 when Sigkill/Block was carried out (enforce mode), 0 when only reported.
    pub enforced: u8,
    /// `ENC_*` verdict (egress hook; `ENC_PENDING` when undecided or unseen), else 0.
    pub encryption: u8,
    /// `REASON_*`.
    pub reason: u8,
    pub _pad: u8,
    pub cgroup_id: u64,
    pub dest: Destination,
    /// Thread that made the file access or system call of a `hook: file` / `hook: syscall`
    /// match, else 0. With `header.time_ns`, which such a match shares with its subject record
    /// (`FileEvent` / `SyscallEvent`), it names the one record the match is about.
    pub tid: u32,
}

/// `EVENT_SOCK_CLASSIFIED` (consumed by the engine, not a user-facing event).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockClassifiedEvent {
    pub header: EventHeader,
    /// Key of the socket in [`MAP_SOCKHASH`](crate::MAP_SOCKHASH).
    pub cookie: u64,
    /// `ENC_*` verdict.
    pub verdict: u8,
    pub _pad: [u8; 7],
}

/// `EVENT_SOCK_UNSEEN` (consumed by the engine): the kernel drops this connection's payload in
/// enforce mode — the backstop refused payload sk_msg never saw, or an ingress Block refused a
/// server connection's first payload; userspace destroys the connection so the peer gets a
/// reset (and the sender an error) instead of a stall of retransmissions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockUnseenEvent {
    pub header: EventHeader,
    pub cookie: u64,
    /// Local end of the connection (`protocol` unused).
    pub local: Destination,
    /// Remote end.
    pub remote: Destination,
}

/// `EVENT_PROCESS_MOVED` (consumed by the daemon, not a user-facing event): a process was
/// moved to a cgroup of another namespace (or into or out of every namespace) without exec.
/// The kernel gave it that namespace with every selector bit (fail closed) in
/// `PROCESSES[header.tgid]`; userspace recomputes its bits from /proc for the namespace it is
/// in now, as a switch's reseed would.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessMovedEvent {
    pub header: EventHeader,
    /// The cgroup (v2 id) it was moved to.
    pub cgroup_id: u64,
    /// The namespace id of that cgroup (`WORKLOADS`, 0: none).
    pub namespace_id: u32,
    pub _pad: u32,
}

assert_sizes!(
    EventHeader = 24,
    ExecEvent = 840,
    ExitEvent = 32,
    ForkEvent = 40,
    Destination = 20,
    ConnectEvent = 56,
    MatchEvent = 64,
    SockClassifiedEvent = 40,
    SockUnseenEvent = 72,
    ProcessMovedEvent = 40,
);
