//! State the kernel keeps between events: per workload cgroup, per process (and its image, for
//! a switch's reseed), and per watched socket.

use crate::limits::SLOTS;
use crate::slots::{ENC_ENCRYPTED, ENC_PLAINTEXT, ENC_TLS};
use crate::{ssh, tls};

/// Workload identity of a cgroup, `WORKLOADS[cgroup_id]`. Not slotted: namespace ids are
/// interned by userspace for the daemon's lifetime.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadEntry {
    /// 0 means "no Kubernetes namespace" (host process).
    pub namespace_id: u32,
    pub _pad: u32,
}

/// Per-process state, `PROCESSES[tgid]`: set at exec, copied on fork, removed at exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessState {
    /// `bpf_ktime_get_boot_ns()` at the exec (or fork) that created this identity: with the
    /// tgid it names the process uniquely on the node (userspace builds `exec_id` from it).
    pub start_ns: u64,
    /// Selectors whose process conditions hold, per slot.
    pub selectors: [u64; SLOTS],
    /// Namespace id at exec.
    pub namespace_id: u32,
    pub _pad: u32,
    /// `SlotMeta::generation` each slot's `selectors` were computed for (0: never). Exec writes
    /// it for every slot it evaluates, fork copies it, userspace writes it when it reseeds.
    pub slot_gen: [u32; SLOTS],
    /// The image: `start_ns` and tgid of the exec that loaded what this process runs. Fork
    /// copies it (a child runs its parent's image), so it keys [`MAP_RESEED`](crate::MAP_RESEED).
    pub image: ImageKey,
}

/// Identity of a process image (one exec): `RESEED` key, [`ProcessState::image`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ImageKey {
    /// `bpf_ktime_get_boot_ns()` of the exec (0 for processes the kernel never saw exec).
    pub exec_ns: u64,
    /// The tgid that exec'd.
    pub tgid: u32,
    pub _pad: u32,
}

/// `RESEED[image]`: selector bits userspace decided for every process of an image during a
/// switch; fork copies them into a child whose inherited bits are stale for the pending slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReseedEntry {
    pub selectors: u64,
    /// The `SlotMeta::generation` they are for.
    pub generation: u32,
    pub _pad: u32,
}

/// [`SockState::unseen_reported`] bits.
pub const UNSEEN_EVENT_SENT: u8 = 1;
pub const UNSEEN_MATCHES_REPORTED: u8 = 2;

/// Per-socket state in SK_STORAGE of a *watched* TCP socket: one whose destination meets the
/// destination conditions of some egress selector (whoever connected it). Created at connect
/// (or by sock_ops for sockets connect did not see, e.g. MPTCP subflows, or by userspace for
/// sockets that existed before the policy); the socket enters the SOCKHASH when established.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// The strict ClientHello scanner over the stream's first bytes; `scan.verdict` is the
    /// stream's verdict (`ENC_PENDING` while a valid hello prefix, then `ENC_TLS` or
    /// `ENC_PLAINTEXT`, or `ENC_ENCRYPTED` when the first send, not TLS, is SSH or a declared
    /// protocol).
    pub scan: tls::TlsScan,
    /// TCP sequence number of stream offset 0 (the first payload byte sk_msg could see), valid
    /// when `start_known`; otherwise the backstop derives it from the socket's counters.
    pub stream_start: u32,
    /// Identity of the connecting process (events about the socket itself, e.g. unseen payload).
    pub start_ns: u64,
    /// Socket cookie, the socket's key in [`MAP_SOCKHASH`](crate::MAP_SOCKHASH) (set when it is added).
    pub cookie: u64,
    /// Payload bytes the sk_msg program passed: the stream offset up to which the wire-level
    /// backstop lets payload through.
    pub passed: u64,
    /// Egress selectors (of the active slot at `generation`) whose destination conditions hold
    /// for this socket's peer (a cache: recomputed when the rule set changes).
    pub dest_selectors: u64,
    /// Monitor-mode / Post selectors already reported for this socket (for `generation`): a
    /// match is reported once per socket and selector, not once per send.
    pub reported: u64,
    /// `Config::generation` the two masks above belong to; `u64::MAX` = not computed yet.
    pub generation: u64,
    pub tgid: u32,
    /// 1 once a send was dropped in enforce mode: every later send is dropped too (the stream
    /// has a hole the peer would misread).
    pub blocked: u8,
    pub start_known: u8,
    /// `REASON_*` why the stream's first bytes were never seen (TCP Fast Open data in the SYN
    /// by a process outside every scope); 0 when the scanner saw the stream from its first
    /// byte. An unseen start counts as plaintext.
    pub unseen: u8,
    /// [`UNSEEN_EVENT_SENT`] once the backstop reported unseen payload on this socket (and
    /// asked userspace to destroy it), [`UNSEEN_MATCHES_REPORTED`] once it reported the
    /// monitor-mode selectors that watch it.
    pub unseen_reported: u8,
    /// The sk_msg program's cursor while it scans one send (offset of the next byte, and the
    /// part of the send made linear): kept here rather than on its stack so the verifier does
    /// not track each value, which lets the scan loop be verified once. Meaningless between
    /// sends (the socket is locked while it sends).
    pub scan_pos: u32,
    pub scan_win_start: u32,
    pub scan_win_end: u32,
    /// The table (a group of the active slot: the sender's) `dest_selectors` and `reported`
    /// are numbered in; they are recomputed when a sender of another group sends.
    pub dest_table: u32,
    /// The table of the sender before (same `generation`; [`NO_TABLE`] when none) and what was
    /// reported in it: senders of two groups that alternate on one socket are each reported
    /// once per selector, not again at every change of sender.
    pub prev_table: u32,
    pub _pad: u32,
    pub prev_reported: u64,
    /// The SSH check of a first send that is not TLS (`daemon-ebpf` `encrypted.rs`): kept here
    /// for the same reason as the TLS scanner's cursor — on the stack, the verifier tracked its
    /// values and re-verified the walk's step once per value (the sk_msg program exceeded the
    /// verifier's 1M-instruction budget). Meaningless outside that check.
    pub ssh: ssh::SshWalk,
}

/// [`SockState::prev_table`] when no other table was used on the socket yet.
pub const NO_TABLE: u32 = u32::MAX;

// Kernel and userspace (which writes it for connections older than the policy) share this
// layout byte for byte: the fields are ordered so there is no implicit padding.
assert_sizes!(tls::TlsScan = 36, ssh::SshWalk = 16, SockState = 144);

impl SockState {
    /// State of a socket whose stream is watched from its first byte.
    pub const fn new(tgid: u32, start_ns: u64) -> SockState {
        SockState {
            scan: tls::TlsScan::new(),
            stream_start: 0,
            start_ns,
            cookie: 0,
            passed: 0,
            dest_selectors: 0,
            reported: 0,
            generation: u64::MAX,
            tgid,
            blocked: 0,
            start_known: 0,
            unseen: 0,
            unseen_reported: 0,
            scan_pos: 0,
            scan_win_start: 0,
            scan_win_end: 0,
            dest_table: 0,
            prev_table: NO_TABLE,
            _pad: 0,
            prev_reported: 0,
            ssh: ssh::SshWalk::new(),
        }
    }

    /// True once the stream is classified encrypted — TLS (the hello and the records after
    /// it), SSH or a declared protocol (from the first send) — and its start was seen: later
    /// sends are not judged, and the socket leaves the watch.
    #[inline(always)]
    pub fn classified_encrypted(&self) -> bool {
        self.unseen == 0 && (self.scan.verdict == ENC_TLS || self.scan.verdict == ENC_ENCRYPTED)
    }

    /// The verdict the selectors see: an unseen start counts as plaintext.
    #[inline(always)]
    pub fn verdict(&self) -> u8 {
        if self.unseen != 0 {
            ENC_PLAINTEXT
        } else {
            self.scan.verdict
        }
    }
}

assert_sizes!(
    WorkloadEntry = 8,
    ProcessState = 56,
    ImageKey = 16,
    ReseedEntry = 16,
);
