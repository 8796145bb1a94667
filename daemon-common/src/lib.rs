//! The contract between bulwark's kernel programs and userspace: every map key and value, every
//! ring-buffer record, and the limits both sides agree on. `#[repr(C)]`, plain old data, no_std.
//! The compiler (`bulwark-compiler`) produces these values; the loader writes them; the kernel
//! programs (`daemon-ebpf`) read them and emit the event records defined here. With the `user`
//! feature it also holds `MapEntries`, one slot's worth of map entries as the loader writes them.
//!
//! # How matching works
//! A compiled rule set lives in one of two *slots* (0 or 1). Every matcher map key starts with
//! the slot, so a new rule set is written into the inactive slot while the active one keeps
//! enforcing, then [`Config::active_slot`] flips in one map write (no gap, no half policy).
//!
//! Conditions are numbered per slot: process conditions (binary, args, namespace) 0..64 and
//! destination conditions 0..64. A matcher map lookup returns a bitmask of the conditions whose
//! value set contains the looked-up value ("hits"); a condition holds when it was hit, or, for a
//! negated operator, when it was not (`hits ^ negate`). A selector holds when all its required
//! conditions hold. Selector indices 0..64 are per slot too.
//!
//! LPM tries return only the longest matching prefix, so the compiler stores in every prefix
//! entry the union of the hit masks of all shorter prefixes that cover it.
//!
//! # What the kernel matches against
//! - Binary: the absolute path of the file actually executed (`mm->exe_file`, walked like
//!   `d_path` up to the root of the process's mount namespace), so `./curl` or a symlink named
//!   otherwise match `/usr/bin/curl`; if that walk fails (path over 255 bytes, offsets missing)
//!   the filename given to execve is used. Container processes see container paths. The
//!   filename given to execve is matched as well (hits ORed): for a script that is the
//!   script's path, while the executed file is its interpreter. And the file itself: its
//!   `(s_dev, i_ino)` is looked up in [`MAP_BIN_INODE`], where userspace put the identities of
//!   every `In`/`NotIn` binary value (resolved on the host and in every mount namespace, kept
//!   current), so a hard link or a bind mount of a killed binary is the same binary.
//!   `Prefix`/`Postfix` stay path-based.
//! - Exec kinds: a file with no link (`i_nlink == 0`: memfd, `O_TMPFILE`, deleted) is
//!   *fileless*; a file whose identity is in [`MAP_LOADERS`] (the dynamic loaders, resolved by
//!   userspace) run directly is a *loader* exec, and its target — the first argv element after
//!   the loader's own options ([`MAP_LOADER_ARG_OPTIONS`] names those that take a value; `--`
//!   ends them) — is matched as a binary path too (as written: it may be relative).
//! - Arguments: every argv element, read from the new process's argument area
//!   (`[mm->arg_start, mm->arg_end)`, one contiguous area) before it runs: up to
//!   [`MAX_ARG_ELEMENTS`] elements and [`MAX_ARG_BYTES`] bytes. Beyond either bound, or when a
//!   read fails, the exec's arguments are *incomplete* and fail closed: every argument
//!   condition holds (`truth |= SlotMeta::proc_args`), so a selector with argument conditions
//!   matches when its other conditions hold (in monitor mode it reports); its match record says
//!   why ([`REASON_ARGS_INCOMPLETE`]).
//! - Egress (TCP): a connection is *watched* — it gets [`SockState`] in `SK_STORAGE` at connect
//!   and enters the SOCKHASH when established — when its destination meets the destination
//!   conditions of some egress selector of the active slot (or, during a switch, the pending
//!   one), whoever connects. Each send on it is judged for the *sending* process
//!   (`PROCESSES[tgid]`, else its parent's entry) and the socket's peer, in the active slot:
//!   candidate selectors are `sender.selectors[slot] & dest_selectors` (the egress selectors
//!   whose destination conditions hold, cached per socket and [`Config::generation`]). The
//!   stream's verdict comes from the strict ClientHello scanner ([`tls`], its docs are the
//!   contract: a well-formed hello and the next two record headers are TLS, anything else is
//!   plaintext, a valid prefix is pending). A selector without matchEncryption matches any
//!   send, `plaintext` the plaintext verdict, `tls` the TLS verdict or a pending stream. An
//!   enforce-mode Block drops the send and every later one ([`SockState::blocked`]); monitor
//!   and Post matches are reported once per socket and selector. A TLS verdict makes userspace
//!   remove the socket from the SOCKHASH (on `EVENT_SOCK_CLASSIFIED`); a plaintext one keeps it
//!   watched. A stream whose start was never seen (TCP Fast Open by a process outside every
//!   scope) counts as plaintext ([`SockState::unseen`]).
//! - TCP Fast Open at connect: on a watched socket, refused (connect returns EPERM,
//!   [`REASON_TCP_FAST_OPEN`]) when an enforce-mode egress Block of the connecting process holds
//!   for the destination; `tcp_sock.fastopen_req` / `fastopen_connect` tell (offsets in
//!   [`KernelOffsets`]).
//! - Backstop (cgroup_skb/egress): a packet of a watched socket whose verdict is not TLS may
//!   carry payload only up to stream offset [`SockState::passed`] (what sk_msg passed; offsets
//!   from [`SockState::stream_start`], or from the socket's `snd_una - bytes_acked + 1` when it
//!   was not established under watch; data in a SYN only for an allowed Fast Open). Beyond it,
//!   when an enforce-mode Block selector's destination conditions hold, the packet is dropped,
//!   reported once ([`REASON_UNSEEN_PAYLOAD`]) and userspace destroys the connection
//!   (`EVENT_SOCK_UNSEEN`).
//! - Capacity: a process whose state cannot be stored at exec and that an enforce-mode connect
//!   or egress Block covers is killed at exec ([`REASON_CAPACITY`]).
//!
//! The lookups, as the compiler lays the entries out (`bulwark_compiler::RuleSet::
//! evaluate_process` / `evaluate_destination` are the reference semantics; its tests simulate
//! exactly these lookups):
//! - Binary: `BIN_EXACT` with the zero-filled path, only when the path is at most [`PATH_LEN`]
//!   bytes; `BIN_PREFIX` with the first `n = min(len, PATH_AFFIX_LEN)` bytes and prefix length
//!   `8 * (1 + n)`; `BIN_POSTFIX` likewise with the last `n` bytes, reversed.
//! - Arguments: for every argv element `i` (all of them, see above), lookups with `index = i`
//!   when `i < MAX_ARGS`, and (for `i >= 1`, when [`LOOKUP_ARG_ANY`] is set) with
//!   [`ARG_ANY_INDEX`]; exact only when the element is at most [`ARG_LEN`] bytes; LPM over the
//!   first / last-reversed `n = min(len, ARG_LEN)` bytes, prefix length `8 * (2 + n)`. All hits
//!   are ORed. A missing element is never looked up, so positive operators fail and negated ones
//!   hold.
//! - Binary identity: `BIN_INODE[{slot, dev, ino}]` when [`LOOKUP_BIN_INODE`] is set; the hits
//!   are ORed with the path hits.
//! - Exec kinds: `hits |= SlotMeta::kind_fileless` for a fileless exec, `kind_loader` for a
//!   loader exec.
//! - Namespace: `NAMESPACES[{slot, id}]` only for `id != 0` (host processes are in no namespace).
//! - Destination: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is converted to IPv4 by the
//!   kernel before the lookup (the compiler folds IPv6 CIDRs inside `::ffff:0:0/96` into IPv4
//!   ones). `addr = DEST_V4|DEST_V6 hits | dest_any_addr`, `port = PORTS hits | dest_any_port`,
//!   `proto = dest_tcp` for TCP, `dest_udp` for UDP and `dest_tcp & dest_udp` (the conditions
//!   without a protocol) for any other protocol; a condition holds when
//!   `(addr & port & proto) ^ dest_negate` has its bit.
//! - Capacity: one slot holds at most `MAX_*` entries in each matcher map (the compiler refuses
//!   more); the maps are created with `SLOTS * MAX_*` entries so both slots fit during a switch.
//!
//! # Other socket types (the socket guard)
//! Raw IP sockets, ICMP "ping" sockets, MPTCP and packet sockets reach the network without
//! passing the connect/sendmsg hooks or sk_msg. A process is *covered* when its cached selector
//! bits in the active slot (`PROCESSES[tgid]`, or its parent's when it has none) include one of
//! [`SlotMeta::enforce_net`]: enforce-mode selectors with a Block action on the connect or
//! egress hook. A covered process cannot create those sockets: `socket()` fails with EPERM
//! (raw, ICMP, MPTCP: cgroup `sock_create`) or the process is SIGKILLed before it returns from
//! asking for a packet socket (no cgroup hook exists for `AF_PACKET`: the tracepoint of the
//! `CAP_NET_RAW` check that precedes every packet socket, and the io_uring submission
//! tracepoint). Selectors in [`SlotMeta::monitor_net`] (monitor mode) only report. Each
//! refusal is a [`MatchEvent`] per covering selector, with a `REASON_*`.
//!
//! # Switching
//! Every slot write carries a new [`SlotMeta::generation`]; a process's bits for a slot are
//! current when [`ProcessState::slot_gen`] for it equals that generation. Exec writes `slot_gen`
//! for every slot it evaluates (the active one, and the pending one during a switch); fork
//! copies the parent's state, so a child is stale exactly when its parent was. A switch (the
//! engine's `apply`): write the inactive slot -> set [`Config::pending_slot`] -> wait until
//! every program that started before has finished (a map-in-map update from userspace calls
//! `synchronize_rcu()`) -> scan `PROCESSES` and /proc for processes whose `slot_gen` is stale
//! and write bits computed from their /proc facts by the compiler's reference evaluator,
//! repeating until a scan finds none while fork's [`COUNTER_STALE_FORK`] stood still -> flip
//! [`Config::active_slot`] -> clear pending. The event stream is not consulted. A process that
//! keeps forking away before the scan can describe it fails closed: its image's [`MAP_RESEED`]
//! entry gets every selector of the slot and fork gives a stale child of that image those
//! bits. connect counts a process whose bits are stale for the active slot
//! ([`COUNTER_STALE_PROCESS`], 0 unless something above failed).
//!
//! What /proc gives a reseed that the exec program did not see: memory the process rewrote
//! since its exec (its argument area — `/proc/PID/cmdline` — and the execve filename on its
//! stack), and a cgroup it moved to (the exec program used the cgroup at exec time). A process
//! that exec'd between being described and being written is described again.
#![no_std]

#[cfg(feature = "user")]
extern crate alloc;

#[cfg(feature = "user")]
mod entries;
#[cfg(feature = "user")]
pub use entries::MapEntries;

pub mod tls;

/// Number of rule-set slots (A/B).
pub const SLOTS: usize = 2;
/// Selectors, process conditions and destination conditions per slot (one u64 bitmask each).
pub const MAX_SELECTORS: usize = 64;
pub const MAX_PROC_CONDITIONS: usize = 64;
pub const MAX_DEST_CONDITIONS: usize = 64;
/// Size of the path buffers and of `PathKey::path` (bytes, including the NUL).
pub const PATH_LEN: usize = 256;
/// Longest binary path matched exactly (bytes, without NUL): the key keeps room for the NUL
/// the kernel's string read always writes. A longer path is truncated when read and never
/// takes the exact or postfix lookups, so values longer than this could never match.
pub const PATH_EXACT_LEN: usize = PATH_LEN - 1;
/// Longest binary path prefix/postfix (bytes): the LPM key holds the slot byte too.
pub const PATH_AFFIX_LEN: usize = 255;
/// Longest argument value (bytes, without NUL) for any operator.
pub const ARG_LEN: usize = 128;
/// argv elements a `matchArgs` `index` can name (argv[0] .. argv[MAX_ARGS-1]); conditions
/// without an index look at every element.
pub const MAX_ARGS: usize = 16;
/// argv elements examined at exec; a longer argv is incomplete (fails closed).
pub const MAX_ARG_ELEMENTS: usize = 4096;
/// Bytes of the argument area examined at exec (NULs included); a longer one is incomplete.
pub const MAX_ARG_BYTES: usize = 128 * 1024;
/// Bytes of the NUL-separated argv copied into an exec event.
pub const EVENT_ARGS_LEN: usize = 512;
/// `ArgKey::index` value for conditions that look at any argument (argv[1..]).
pub const ARG_ANY_INDEX: u8 = 0xff;
/// `Config::pending_slot` when no rule-set switch is in progress.
pub const NO_SLOT: u32 = u32::MAX;
/// Entries in the process map in the object file; the loader sizes it from
/// `/proc/sys/kernel/pid_max` (a tgid is always below it) or `--max-processes`.
pub const MAX_PROCESSES: u32 = 65_536;
/// Per-map entry limits of the matcher maps (the lint reports values over these).
pub const MAX_BINARY_VALUES: u32 = 4_096;
/// File identities of binary values in one slot (a value has one per mount namespace it names
/// a different file in).
pub const MAX_BINARY_IDENTITIES: u32 = 16_384;
/// Dynamic loader files (`LOADERS`).
pub const MAX_LOADERS: u32 = 1_024;
pub const MAX_ARG_VALUES: u32 = 4_096;
pub const MAX_CIDRS: u32 = 32_768;
pub const MAX_PORT_PREFIXES: u32 = 8_192;
pub const MAX_NAMESPACES: u32 = 4_096;
pub const MAX_WORKLOADS: u32 = 65_536;
/// Ring buffer size in bytes (power of two, multiple of the page size).
///
/// 8 MiB holds about 10,000 exec records (the largest) of burst. Userspace maps the data
/// area twice (for reads across the wrap), so it shows as 2x this in the daemon's RSS.
pub const EVENTS_RING_BYTES: u32 = 8 * 1024 * 1024;

/// Action bits in [`SelectorEntry::actions`].
pub const ACTION_POST: u8 = 1;
pub const ACTION_SIGKILL: u8 = 2;
pub const ACTION_BLOCK: u8 = 4;

/// [`SelectorEntry::hook`] values.
pub const HOOK_EXEC: u8 = 0;
pub const HOOK_CONNECT: u8 = 1;
pub const HOOK_EGRESS: u8 = 2;

/// [`SelectorEntry::mode`] values.
pub const MODE_ENFORCE: u8 = 0;
pub const MODE_MONITOR: u8 = 1;

/// [`SelectorEntry::encryption`] and [`SockState::verdict`] values.
pub const ENC_ANY: u8 = 0;
pub const ENC_PLAINTEXT: u8 = 1;
pub const ENC_TLS: u8 = 2;
/// Verdict not decided yet (no payload, or too few bytes to tell).
pub const ENC_PENDING: u8 = 0;

/// Transport protocol numbers as the kernel uses them.
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Global switch, `CONFIG[0]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// Slot whose rule set is enforced.
    pub active_slot: u32,
    /// Slot being prepared, or [`NO_SLOT`]. While set, exec also evaluates this slot so that
    /// processes started during a switch are correct in both.
    pub pending_slot: u32,
    /// Bumped on every switch (diagnostics only).
    pub generation: u64,
}

/// Per-slot summary, `SLOT_META[slot]`. Masks let the kernel skip whole lookups.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotMeta {
    /// Process conditions that hold when *not* hit (NotIn, NotPrefix, NotPostfix).
    pub proc_negate: u64,
    /// Destination conditions that hold when *not* matched (NotIn).
    pub dest_negate: u64,
    /// Destination conditions without CIDRs (any address).
    pub dest_any_addr: u64,
    /// Destination conditions without ports (any port).
    pub dest_any_port: u64,
    /// Destination conditions that accept TCP / UDP.
    pub dest_tcp: u64,
    pub dest_udp: u64,
    /// Selectors per hook.
    pub hook_exec: u64,
    pub hook_connect: u64,
    pub hook_egress: u64,
    /// Number of selectors used (0..=64).
    pub selector_count: u32,
    /// `LOOKUP_*` bits: which matcher maps have entries in this slot.
    pub lookups: u32,
    /// Enforce-mode selectors with a Block action on the connect or egress hook: a process
    /// whose cached bits include one is *covered* by the socket guard (see the crate doc).
    pub enforce_net: u64,
    /// The same in monitor mode: the socket guard only reports what it would have refused.
    pub monitor_net: u64,
    /// Written by userspace with every slot, never 0 once written (the engine counts applies):
    /// a process's bits for this slot are current when `ProcessState::slot_gen[slot]` equals it.
    pub generation: u32,
    pub _pad: u32,
    /// Process conditions on arguments: all hold when an exec's arguments are incomplete.
    pub proc_args: u64,
    /// Process conditions hit by a fileless exec / by a loader exec (`matchExecKinds`).
    pub kind_fileless: u64,
    pub kind_loader: u64,
}

/// [`SlotMeta::lookups`] bits.
pub const LOOKUP_BIN_EXACT: u32 = 1;
pub const LOOKUP_BIN_PREFIX: u32 = 2;
pub const LOOKUP_BIN_POSTFIX: u32 = 4;
pub const LOOKUP_ARG_EXACT: u32 = 8;
pub const LOOKUP_ARG_PREFIX: u32 = 16;
pub const LOOKUP_ARG_POSTFIX: u32 = 32;
pub const LOOKUP_NAMESPACE: u32 = 64;
/// Some condition looks at an argument without an index.
pub const LOOKUP_ARG_ANY: u32 = 128;
pub const LOOKUP_BIN_INODE: u32 = 256;

/// One selector, `SELECTORS[slot * MAX_SELECTORS + index]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SelectorEntry {
    /// Process conditions that must all hold.
    pub proc_required: u64,
    /// Destination conditions that must all hold.
    pub dest_required: u64,
    /// Index of the policy in the userspace table of this slot.
    pub policy_id: u32,
    /// Index of the rule within the policy.
    pub rule_index: u16,
    /// Index of the selector within the rule.
    pub selector_index: u16,
    /// `HOOK_*`.
    pub hook: u8,
    /// `ACTION_*` bits.
    pub actions: u8,
    /// `MODE_*`.
    pub mode: u8,
    /// `ENC_*` required on the egress hook (`ENC_ANY` when no matchEncryption).
    pub encryption: u8,
    pub _pad: [u8; 4],
}

/// `BIN_EXACT` key: slot + zero-filled path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub slot: u32,
    pub path: [u8; PATH_LEN],
}

/// A file as the kernel names it: `i_sb->s_dev` (`MAJOR << 20 | MINOR`) and `i_ino`. Key of
/// [`MAP_LOADERS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// `BIN_INODE` key: slot + the identity of a file a binary value names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BinInodeKey {
    pub slot: u32,
    pub dev: u32,
    pub ino: u64,
}

/// `LOADER_ARG_OPTIONS` key: a loader option that takes a value (`--library-path`), zero-filled.
pub const LOADER_OPTION_LEN: usize = 32;
/// The options of glibc's dynamic loader (`ld.so`, rtld.c) that take the next argument as
/// their value; userspace writes them into `LOADER_ARG_OPTIONS`.
pub const LOADER_OPTIONS_WITH_VALUE: &[&[u8]] = &[
    b"--library-path",
    b"--inhibit-rpath",
    b"--audit",
    b"--preload",
    b"--argv0",
    b"--glibc-hwcaps-prefix",
    b"--glibc-hwcaps-mask",
];

/// LPM data for `BIN_PREFIX` / `BIN_POSTFIX` (postfix: path bytes reversed). The LPM prefix
/// length counts the slot byte: `8 * (1 + len)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathLpmData {
    pub slot: u8,
    pub bytes: [u8; PATH_AFFIX_LEN],
}

/// `ARG_EXACT` key: slot, argv index (or [`ARG_ANY_INDEX`]), zero-filled value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgKey {
    pub slot: u8,
    pub index: u8,
    pub _pad: [u8; 2],
    pub value: [u8; ARG_LEN],
}

/// LPM data for `ARG_PREFIX` / `ARG_POSTFIX` (postfix: value bytes reversed). The prefix length
/// counts slot and index: `8 * (2 + len)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgLpmData {
    pub slot: u8,
    pub index: u8,
    pub bytes: [u8; ARG_LEN],
}

/// `NAMESPACES` key: slot + namespace id from the workload registry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NamespaceKey {
    pub slot: u32,
    pub namespace_id: u32,
}

/// LPM data for `DEST_V4`: slot + address (network order). Prefix length `8 + cidr bits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4LpmData {
    pub slot: u8,
    pub addr: [u8; 4],
}

/// LPM data for `DEST_V6`: slot + address (network order). Prefix length `8 + cidr bits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V6LpmData {
    pub slot: u8,
    pub addr: [u8; 16],
}

/// LPM data for `PORTS`: slot + port (network order). Port ranges are split into prefix
/// blocks; prefix length `8 + bits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortLpmData {
    pub slot: u8,
    pub port: [u8; 2],
}

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
    /// copies it (a child runs its parent's image), so it keys [`MAP_RESEED`].
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

/// Per-socket state in SK_STORAGE of a *watched* TCP socket: one whose destination meets the
/// destination conditions of some egress selector (whoever connected it). Created at connect
/// (or by sock_ops for sockets connect did not see, e.g. MPTCP subflows, or by userspace for
/// sockets that existed before the policy); the socket enters the SOCKHASH when established.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    /// The strict ClientHello scanner over the stream's first bytes; `scan.verdict` is the
    /// stream's verdict (`ENC_PENDING` while a valid hello prefix, then `ENC_TLS` or
    /// `ENC_PLAINTEXT`).
    pub scan: tls::TlsScan,
    /// TCP sequence number of stream offset 0 (the first payload byte sk_msg could see), valid
    /// when `start_known`; otherwise the backstop derives it from the socket's counters.
    pub stream_start: u32,
    /// Identity of the connecting process (events about the socket itself, e.g. unseen payload).
    pub start_ns: u64,
    /// Socket cookie, the socket's key in [`MAP_SOCKHASH`] (set when it is added).
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
    /// 1 once the backstop reported unseen payload on this socket.
    pub unseen_reported: u8,
    /// The sk_msg program's cursor while it scans one send (offset of the next byte, and the
    /// part of the send made linear): kept here rather than on its stack so the verifier does
    /// not track each value, which lets the scan loop be verified once. Meaningless between
    /// sends (the socket is locked while it sends).
    pub scan_pos: u32,
    pub scan_win_start: u32,
    pub scan_win_end: u32,
    pub _pad: u32,
}

// Kernel and userspace (which writes it for connections older than the policy) share this
// layout byte for byte: the fields are ordered so there is no implicit padding.
const _: () = assert!(core::mem::size_of::<tls::TlsScan>() == 36);
const _: () = assert!(core::mem::size_of::<SockState>() == 112);

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
            _pad: 0,
        }
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
/// Engine-internal: a socket in [`MAP_SOCKHASH`] got its first-payload verdict and was not
/// blocked, so userspace must delete it from the SOCKHASH (sk_msg programs may not delete from a
/// sockmap: the verifier allows `map_delete_elem` on it only from sock_ops and a few others).
pub const EVENT_SOCK_CLASSIFIED: u32 = 6;
/// Engine-internal: see [`SockUnseenEvent`].
pub const EVENT_SOCK_UNSEEN: u32 = 7;

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
    pub _pad2: [u8; 4],
}

/// `EVENT_SOCK_CLASSIFIED` (consumed by the engine, not a user-facing event).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockClassifiedEvent {
    pub header: EventHeader,
    /// Key of the socket in [`MAP_SOCKHASH`].
    pub cookie: u64,
    /// `ENC_*` verdict.
    pub verdict: u8,
    pub _pad: [u8; 7],
}

/// `EVENT_SOCK_UNSEEN` (consumed by the engine): the backstop dropped payload sk_msg never
/// saw on this connection in enforce mode; userspace destroys the connection so the sender gets
/// an error instead of a stall of retransmissions.
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

/// Kernel structure offsets resolved by userspace from BTF at load time and handed to the
/// programs as the read-only global `OFFSETS` (struct layouts differ between kernel builds).
/// Offsets in bytes; 0 means "unknown" (the program then skips that read).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.mm`
    pub task_mm: u32,
    /// `task_struct.real_parent`
    pub task_real_parent: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.exit_code`
    pub task_exit_code: u32,
    /// `mm_struct.arg_start`
    pub mm_arg_start: u32,
    /// `mm_struct.arg_end`
    pub mm_arg_end: u32,
    /// Offset of `group_dead` in the `sched/sched_process_exit` tracepoint record, 0 when the
    /// kernel has no such field (then the thread-group leader's exit is reported).
    pub tp_exit_group_dead: u32,
    /// 1 when every offset below was found: exec then resolves the binary's absolute path
    /// from `mm->exe_file` (dentry and mount walk, like d_path) instead of trusting the
    /// filename given to execve, which may be relative (`./curl`). These offsets may be 0.
    pub path_walk: u32,
    /// `mm_struct.exe_file`
    pub mm_exe_file: u32,
    /// `file.f_path`
    pub file_f_path: u32,
    /// `path.mnt`, `path.dentry`
    pub path_mnt: u32,
    pub path_dentry: u32,
    /// `dentry.d_parent`, `dentry.d_name`
    pub dentry_d_parent: u32,
    pub dentry_d_name: u32,
    /// `qstr.len`, `qstr.name`
    pub qstr_len: u32,
    pub qstr_name: u32,
    /// `mount.mnt` (the embedded vfsmount), `mount.mnt_parent`, `mount.mnt_mountpoint`
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    /// `vfsmount.mnt_root`
    pub vfsmount_mnt_root: u32,
    /// 1 when both TCP Fast Open offsets below were found (connect then detects TFO).
    pub tfo: u32,
    /// `tcp_sock.fastopen_req` (set while a `sendto(MSG_FASTOPEN)` connects)
    pub tcp_fastopen_req: u32,
    /// Bit offset of the `tcp_sock.fastopen_connect` bitfield (`TCP_FASTOPEN_CONNECT`)
    pub tcp_fastopen_connect_bit: u32,
    /// Socket guard, packet sockets: the `capability/cap_capable` tracepoint record's `cap`
    /// and `ret` offsets (0 = the kernel has no such tracepoint, older than 6.14).
    pub tp_cap_cap: u32,
    pub tp_cap_ret: u32,
    /// The native `socket` syscall number, and (0 = this architecture has none, or it is
    /// unknown) the 32-bit compat `socket` and `socketcall` numbers.
    pub nr_socket: u32,
    pub nr_compat_socket: u32,
    pub nr_compat_socketcall: u32,
    /// Offset in `task_struct` of the word that says the current syscall is a 32-bit one
    /// (x86: `thread_info.status`), and its bit (`TS_COMPAT`); 0 = unknown (then no syscall is
    /// read as a compat one).
    pub task_compat_status: u32,
    pub compat_status_bit: u32,
    /// `pt_regs` offsets of the syscall number and of the first two syscall arguments, native
    /// and compat (x86: orig_ax; di, si / bx, cx); 0 = unknown (then packet sockets are not
    /// recognised).
    pub regs_syscall_nr: u32,
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    pub regs_compat_arg0: u32,
    pub regs_compat_arg1: u32,
    /// `io_uring/io_uring_submit_req` tracepoint record: offsets of `req` and `opcode`.
    pub tp_uring_req: u32,
    pub tp_uring_opcode: u32,
    /// Offsets in `io_kiocb` of the prepared `IORING_OP_SOCKET` request's `domain` and `type`
    /// (`io_kiocb.cmd` + `io_socket.domain/type`); 0 = unknown (no io_uring socket op).
    pub uring_socket_domain: u32,
    pub uring_socket_type: u32,
    pub _pad: u32,
    /// 1 when every offset below was found: exec then reads the executed file's identity and
    /// link count (`mm->exe_file->f_inode`). These offsets may be 0.
    pub inode_read: u32,
    /// `file.f_inode`
    pub file_f_inode: u32,
    /// `inode.i_ino`, `inode.i_sb`, `inode.i_nlink`
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub inode_i_nlink: u32,
    /// `super_block.s_dev`
    pub sb_s_dev: u32,
    /// `task_struct.flags` (fork leaves kernel threads, `PF_KTHREAD`, alone; 0: unknown).
    pub task_flags: u32,
    pub _pad2: u32,
}

/// `task_struct.flags` bit of a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Per-CPU diagnostic counters, `COUNTERS[index]` (sum over CPUs).
pub const COUNTER_LOST_EVENTS: u32 = 0;
/// PROCESSES was full when a process had to be added.
pub const COUNTER_PROCESS_MAP_FULL: u32 = 1;
/// Sockets added to the SOCKHASH (watched sockets).
pub const COUNTER_SOCKHASH_ADDED: u32 = 2;
/// Adding a socket to the SOCKHASH failed.
pub const COUNTER_SOCKHASH_ADD_FAILED: u32 = 3;
/// Kernel reads (argv, parent) that failed.
pub const COUNTER_READ_FAILED: u32 = 4;
/// Sends dropped by the egress program.
pub const COUNTER_EGRESS_DROPPED: u32 = 5;
/// Adding a socket to the SOCKHASH failed because it was full (also in
/// `COUNTER_SOCKHASH_ADD_FAILED`); the backstop then refuses the socket's payload.
pub const COUNTER_SOCKHASH_FULL: u32 = 6;
/// Packets the wire-level backstop dropped (payload sk_msg never passed).
pub const COUNTER_UNSEEN_DROPPED: u32 = 7;
/// Processes SIGKILLed at exec because their state could not be stored while an enforce-mode
/// connect/egress rule covers them.
pub const COUNTER_CAPACITY_KILLS: u32 = 8;
/// TCP Fast Open connects refused.
pub const COUNTER_TFO_REFUSED: u32 = 9;
/// connect found the process's selector bits stale for the active slot (or no state at all)
/// while that slot has connect or egress selectors. Userspace reseeds every process before a
/// switch, so this stays 0; it is reported (status events, `bulwark probe`) as a safety net.
pub const COUNTER_STALE_PROCESS: u32 = 10;
/// fork copied bits that are stale for the pending slot and found no `RESEED` entry for the
/// image: userspace rescans until this stops growing.
pub const COUNTER_STALE_FORK: u32 = 11;
/// Number of counters.
pub const COUNTERS_LEN: u32 = 16;

/// Map names in the eBPF object (shared so the loader cannot drift from the programs).
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_SLOT_META: &str = "SLOT_META";
pub const MAP_SELECTORS: &str = "SELECTORS";
pub const MAP_BIN_EXACT: &str = "BIN_EXACT";
pub const MAP_BIN_PREFIX: &str = "BIN_PREFIX";
pub const MAP_BIN_POSTFIX: &str = "BIN_POSTFIX";
pub const MAP_ARG_EXACT: &str = "ARG_EXACT";
pub const MAP_ARG_PREFIX: &str = "ARG_PREFIX";
pub const MAP_ARG_POSTFIX: &str = "ARG_POSTFIX";
pub const MAP_NAMESPACES: &str = "NAMESPACES";
pub const MAP_DEST_V4: &str = "DEST_V4";
pub const MAP_DEST_V6: &str = "DEST_V6";
pub const MAP_PORTS: &str = "PORTS";
pub const MAP_WORKLOADS: &str = "WORKLOADS";
pub const MAP_PROCESSES: &str = "PROCESSES";
pub const MAP_SK_STORAGE: &str = "SK_STORAGE";
pub const MAP_SOCKHASH: &str = "SOCKHASH";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_COUNTERS: &str = "COUNTERS";
/// Default entries of the SOCKHASH (watched sockets: verdict pending, plaintext, or blocked);
/// `bulwark run --max-watched-sockets` sets it (bucket memory is allocated up front).
pub const MAX_WATCHED_SOCKETS: u32 = 262_144;
pub const MAP_RESEED: &str = "RESEED";
pub const MAP_BIN_INODE: &str = "BIN_INODE";
pub const MAP_LOADERS: &str = "LOADERS";
pub const MAP_LOADER_ARG_OPTIONS: &str = "LOADER_ARG_OPTIONS";

#[cfg(feature = "user")]
mod pod {
    use super::*;
    macro_rules! pod {
        ($($t:ty),* $(,)?) => { $(unsafe impl aya::Pod for $t {})* };
    }
    pod!(
        Config,
        SlotMeta,
        SelectorEntry,
        PathKey,
        PathLpmData,
        FileKey,
        BinInodeKey,
        ArgKey,
        ArgLpmData,
        NamespaceKey,
        V4LpmData,
        V6LpmData,
        PortLpmData,
        WorkloadEntry,
        ProcessState,
        ImageKey,
        ReseedEntry,
        SockState,
        KernelOffsets,
    );
}

// Every record's size as both sides compile it: a field added, removed or resized changes the
// layout the kernel and userspace share, and must be a deliberate change of these lines too.
const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Config>() == 16);
    assert!(size_of::<SlotMeta>() == 128);
    assert!(size_of::<SelectorEntry>() == 32);
    assert!(size_of::<PathKey>() == 260);
    assert!(size_of::<FileKey>() == 16);
    assert!(size_of::<BinInodeKey>() == 16);
    assert!(size_of::<PathLpmData>() == 256);
    assert!(size_of::<ArgKey>() == 132);
    assert!(size_of::<ArgLpmData>() == 130);
    assert!(size_of::<NamespaceKey>() == 8);
    assert!(size_of::<V4LpmData>() == 5);
    assert!(size_of::<V6LpmData>() == 17);
    assert!(size_of::<PortLpmData>() == 3);
    assert!(size_of::<WorkloadEntry>() == 8);
    assert!(size_of::<ProcessState>() == 56);
    assert!(size_of::<ImageKey>() == 16);
    assert!(size_of::<ReseedEntry>() == 16);
    assert!(size_of::<EventHeader>() == 24);
    assert!(size_of::<ExecEvent>() == 840);
    assert!(size_of::<ExitEvent>() == 32);
    assert!(size_of::<ForkEvent>() == 40);
    assert!(size_of::<Destination>() == 20);
    assert!(size_of::<ConnectEvent>() == 56);
    assert!(size_of::<MatchEvent>() == 64);
    assert!(size_of::<SockClassifiedEvent>() == 40);
    assert!(size_of::<SockUnseenEvent>() == 72);
    assert!(size_of::<KernelOffsets>() == 196);
};
