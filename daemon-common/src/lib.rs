//! The contract between bulwark's kernel programs and userspace: every map key and value, every
//! ring-buffer record, and the limits both sides agree on. `#[repr(C)]`, plain old data, no_std.
//! The compiler (`bulwark-compiler`) produces these values; the loader writes them; the kernel
//! programs (`daemon-ebpf`) read them and emit the event records defined here. With the `user`
//! feature it also holds `MapEntries`, one slot's worth of map entries as the loader writes them.
//! The definitions live in modules by kind — `limits`, `slots` (config, slot summary, selectors),
//! `keys` (matcher keys), `state` (per process and per socket), `records` (ring buffer),
//! `offsets`, `maps` (map names, counters) — and are all used from the crate root.
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
//! # Groups (a node's 1,024+ selectors)
//! One u64 mask numbers at most 64 selectors, so a slot is split into *tables*: group `g` of
//! slot `s` is table [`table`]`(s, g) = s + SLOTS * g`, and every matcher key's `slot` field,
//! `SLOT_META` and `SELECTORS` (`[table * MAX_SELECTORS + i]`) are per table; conditions and
//! selectors are numbered per table, exactly as a slot numbered them before (a rule set that
//! fits one group is table `s`, the old layout). A process is in one Kubernetes namespace (or
//! the host), so the compiler (`bulwark_compiler::compile_node`) partitions a node's policies:
//! group 0 holds the selectors that apply regardless of namespace (no `In` matchNamespaces);
//! each other group holds those *and* the selectors confined (`TracingPolicyNamespaced`, or an
//! `In` entry in every selector) to the namespaces assigned to it, namespaces packed while the
//! group fits 64 selectors and 64 conditions of each kind. [`MAP_GROUPS`]`[{slot,
//! namespace_id}]` names a namespace's group; the host and namespaces without an entry are in
//! group 0. Per event the kernel does one `GROUPS` lookup and the usual 64-wide evaluation of
//! that one table: the cost does not depend on how many other namespaces have selectors. Up to
//! [`MAX_GROUPS`] groups, so [`MAX_NODE_SELECTORS`] selectors when few are namespace-independent
//! (those take room in every group). Matcher maps hold every table of a slot together, within
//! the same `MAX_*` entries per slot as before (the compiler checks the total; namespace-
//! independent values are repeated in every group). The *watch group* ([`WATCH_GROUP`]) holds
//! one egress selector per distinct destination requirement of all groups, with no process
//! conditions: a socket is watched when one holds (whoever connects, as before), and each send
//! is then judged in the sender's own table.
//!
//! A process's cached bits ([`ProcessState::selectors`]) are relative to the group of its
//! `namespace_id` in that slot; fork copies both. A process moved to a cgroup of another
//! namespace without exec (its pid written to `cgroup.procs`) is judged by where it is now:
//! the cgroup-move program (`cgroup_attach_task`, fired for the thread-group leader once the
//! whole group moved) gives it the new `namespace_id` and every selector bit in both slots
//! (fail closed: every Block of its new group holds) and sends [`ProcessMovedEvent`], on which
//! userspace recomputes its bits from /proc like a reseed (bits and `namespace_id` together).
//! A process is in its leader's namespace: a thread moved alone (`cgroup.threads`) stays in
//! its threaded domain, one pod's cgroup, and is not looked at. A rule-set switch rewrites
//! `GROUPS` with the rest of the slot, so a group number never outlives its tables.
//!
//! Where each program finds its table: exec, connect, the socket guard and a send (the
//! sender's) look up `GROUPS` with the process's namespace; the socket's cached egress bits
//! ([`SockState::dest_table`]) are recomputed when a sender of another group sends (what was
//! reported is kept for the group before, [`SockState::prev_table`]); sockops,
//! connect's watch decision and the backstop (no sender) use the watch table, whose selectors
//! carry the mode and actions of the egress selectors they stand for (events name the first
//! policy and rule with that destination requirement). A rule set of one group
//! ([`SlotEntries::single`]) gets a copy of its table as its watch table. Limits: a group holds
//! [`MAX_SELECTORS`] selectors and 64 conditions of each kind; a slot [`MAX_GROUPS`] groups,
//! [`MAX_GROUPED_NAMESPACES`] namespaces with a group, and in its matcher maps
//! [`NODE_MAP_FACTOR`] times a group's `MAX_*` entries.
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
pub use entries::{FileEntries, MapEntries, SlotEntries};

pub mod ssh;
pub mod tls;

/// Fails the build unless each type has the size given: the kernel and userspace share these
/// layouts byte for byte, so changing one is a deliberate change of the contract on both sides.
macro_rules! assert_sizes {
    ($($t:ty = $size:expr),* $(,)?) => {
        const _: () = { $(assert!(core::mem::size_of::<$t>() == $size);)* };
    };
}

mod conn;
mod file;
mod keys;
mod limits;
mod maps;
mod offsets;
mod records;
mod signatures;
mod slots;
mod state;
mod syscall;

pub use conn::*;
pub use file::*;
pub use keys::*;
pub use limits::*;
pub use maps::*;
pub use offsets::*;
pub use records::*;
pub use signatures::*;
pub use slots::*;
pub use state::*;
pub use syscall::*;

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
        ConnState,
        ConnConfig,
        SignatureEntry,
        SyscallKey,
        SyscallSelectorConds,
        SyscallInflight,
        SyscallRegs,
        FileTable,
        FileSelectorEntry,
        FileInflight,
    );
}
