//! Connection observation: the per-socket state the kernel keeps for every TCP connection
//! ([`ConnState`], in the `CONN_STORAGE` socket storage), the ring-buffer records it emits
//! ([`ConnEvent`] every `--conn-interval` while a connection moves bytes and when it closes,
//! each self-contained; [`ConnPayloadEvent`] with the first payload of each direction), and
//! the settings userspace loads it with ([`ConnConfig`]). Nothing is sent when a connection
//! opens: a connection that moves no payload costs one record, its close.
//!
//! Byte counts are TCP payload bytes, exact: the socket's `bytes_acked` / `bytes_received`
//! minus their values when the connection was established (so the SYN is not counted) and
//! minus the FIN where one was acked / received.

use crate::records::{Destination, EventHeader};

/// `EVENT_CONN_*`: ring-buffer record kinds of connection observation (8, an open record,
/// is no longer sent).
pub const EVENT_CONN_STATS: u32 = 9;
pub const EVENT_CONN_CLOSE: u32 = 10;
pub const EVENT_CONN_PAYLOAD: u32 = 11;

/// Bytes of each direction's first payload sent to userspace to classify. A TLS ClientHello's
/// SNI or ALPN beyond these bytes is not reported (the connection is still `tls`).
pub const CONN_PREFIX_LEN: usize = 256;

/// [`ConnState::role`] and [`ConnEvent::role`].
pub const CONN_ROLE_NONE: u8 = 0;
/// It called `connect()`.
pub const CONN_ROLE_CLIENT: u8 = 1;
/// A connection accepted on a listening socket.
pub const CONN_ROLE_SERVER: u8 = 2;
/// A listening socket (its state is cloned into every connection accepted on it, which is how
/// a server connection learns the listener's owner).
pub const CONN_ROLE_LISTENER: u8 = 3;

/// [`ConnPayloadEvent::direction`].
pub const CONN_DIR_SENT: u32 = 0;
pub const CONN_DIR_RECEIVED: u32 = 1;

/// [`ConnEvent::flags`] of a close record: the connection ended with a reset (sent or received)
/// or an error rather than an orderly FIN exchange.
pub const CONN_CLOSE_ABORTED: u8 = 1;

/// Per-socket state of an observed TCP connection (value of `CONN_STORAGE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// Socket cookie (joins the records of one connection).
    pub cookie: u64,
    /// `bpf_ktime_get_boot_ns()` when established.
    pub open_ns: u64,
    /// Owner process identity (`ProcessState::start_ns`), 0 if unknown.
    pub start_ns: u64,
    /// `bytes_acked` / `bytes_received` when established.
    pub base_acked: u64,
    pub base_received: u64,
    /// When the next stats record may be sent (`CLOCK_MONOTONIC_COARSE` ns, which every packet
    /// reads: see `daemon-ebpf` conn.rs).
    pub next_stats_ns: u64,
    /// Owner process: the connecting process (client), the process that called `listen()` on
    /// the listening socket (server); 0 if unknown.
    pub tgid: u32,
    /// TCP sequence numbers of each direction's first payload byte.
    pub snd_start: u32,
    pub rcv_start: u32,
    /// `CONN_ROLE_*`.
    pub role: u8,
    /// Each a byte of its own: the egress and ingress programs may run at once on two CPUs,
    /// and a byte store does not undo the other's. 1 when:
    /// the connection is established (its state was set up);
    pub established: u8,
    /// the first payload sent was captured (or can no longer be);
    pub sent_seen: u8,
    /// the first payload received was captured (or can no longer be);
    pub received_seen: u8,
    /// the close record was sent;
    pub closed: u8,
    /// (a listener, and the connections that copy its state) a payload that reached the
    /// listener (Fast Open data in the SYN, data on the handshake's last ACK) waits for the
    /// connection it creates, which looks it up when established.
    pub listener_payload: u8,
    pub _pad: [u8; 6],
    /// Local and remote end, from when it was established (every record carries them).
    pub local: Destination,
    pub remote: Destination,
}

/// `EVENT_CONN_STATS`, `EVENT_CONN_CLOSE`: a connection, whole (owner, ends, role, open time),
/// and its byte totals so far (payload, exact; see the module doc). `header.tgid`/`start_ns`
/// name the owner.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnEvent {
    pub header: EventHeader,
    pub cookie: u64,
    pub open_ns: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Local end (`protocol` TCP).
    pub local: Destination,
    pub remote: Destination,
    /// `CONN_ROLE_*`.
    pub role: u8,
    /// `CONN_CLOSE_*` (close records).
    pub flags: u8,
    pub _pad: [u8; 6],
}

/// `EVENT_CONN_PAYLOAD`: the first `len` bytes (at most [`CONN_PREFIX_LEN`]) of one
/// direction's first payload.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnPayloadEvent {
    pub header: EventHeader,
    pub cookie: u64,
    /// `CONN_DIR_*`.
    pub direction: u32,
    pub len: u32,
    pub data: [u8; CONN_PREFIX_LEN],
}

/// What the connection programs are loaded with (offsets resolved from BTF by userspace, the
/// stats interval; the global `CONN_CONFIG`; 0 = unknown or none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnConfig {
    /// `struct sock::sk_flags`.
    pub sock_flags: u32,
    /// Bit of `SOCK_DONE` in it (set when a FIN was received).
    pub sock_done_bit: u32,
    /// Boot-ns between two stats records of one connection (`--conn-interval`); 0: none.
    pub stats_interval_ns: u64,
    /// 1: connections are observed (the sock_ops program's observation half runs); 0 with
    /// `--no-conn-observe`, whose sock_ops program only watches sockets for egress rules.
    pub observe: u32,
    pub _pad: u32,
}

/// TCP states (`include/net/tcp_states.h`) a connection can leave for `TCP_CLOSE`, as the
/// sock_ops state callback reports them (`args[0]` old, `args[1]` new).
pub const TCP_ESTABLISHED: u32 = 1;
pub const TCP_FIN_WAIT1: u32 = 4;
pub const TCP_FIN_WAIT2: u32 = 5;
pub const TCP_CLOSE: u32 = 7;
pub const TCP_CLOSE_WAIT: u32 = 8;
pub const TCP_LAST_ACK: u32 = 9;
pub const TCP_CLOSING: u32 = 11;

/// How a connection ended, from the state it left for `TCP_CLOSE` ([`CloseFins::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseFins {
    /// Our FIN was sent and acked (it counts one in `bytes_acked`).
    pub fin_acked: bool,
    /// A FIN was received (it counts one in `bytes_received`).
    pub fin_received: bool,
    /// An orderly end (FINs exchanged), not a reset, an error or a timeout.
    pub orderly: bool,
}

impl CloseFins {
    /// The end of a connection that left state `old` for `TCP_CLOSE`; `all_acked`: nothing it
    /// sent is outstanding (`snd_una == snd_nxt`); `sock_done`: whether the socket's
    /// `SOCK_DONE` flag (set by a received FIN's processing) is set, asked only when the state
    /// cannot tell. So the close needs no record of the state changes before it:
    /// - our FIN was acked: FIN_WAIT2 is reached only once it was; LAST_ACK and CLOSING end when
    ///   it is (nothing outstanding) or with a reset or a timeout; from any other state it was
    ///   not (FIN_WAIT1 ends acked only through FIN_WAIT2);
    /// - a FIN was received: CLOSE_WAIT, LAST_ACK and CLOSING are reached only by receiving
    ///   one; FIN_WAIT2 ends with one (time-wait) or without (an orphan's timeout, a reset),
    ///   which `sock_done` tells; from any other state none was processed.
    #[inline(always)]
    pub fn of(old: u32, all_acked: bool, sock_done: impl FnOnce() -> bool) -> CloseFins {
        let fin_acked = match old {
            TCP_FIN_WAIT2 => true,
            TCP_LAST_ACK | TCP_CLOSING => all_acked,
            _ => false,
        };
        let fin_received = match old {
            TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING => true,
            TCP_FIN_WAIT2 => sock_done(),
            _ => false,
        };
        CloseFins {
            fin_acked,
            fin_received,
            // An orphan in FIN_WAIT2 closes before the peer's FIN (it goes to time-wait).
            orderly: fin_acked && (fin_received || old == TCP_FIN_WAIT2),
        }
    }
}

assert_sizes!(
    ConnState = 112,
    ConnEvent = 104,
    ConnPayloadEvent = 296,
    ConnConfig = 24,
);
