//! The privileged engine: loads bulwark's kernel programs (`daemon-ebpf`), attaches them, writes
//! compiled rule sets into their maps and hands out the event stream. It owns the loaded eBPF
//! object, its links and map handles; it knows nothing about policies (the compiler produces
//! the [`MapEntries`] it writes verbatim).
//!
//! # API (stable; `bulwark run` and the controller build on it)
//! ```ignore
//! let mut engine = Engine::load(&EngineOptions::default())?;      // root; attaches everything
//! let slot = engine.apply(|slot| rule_set.map_entries(slot),       // atomic A/B switch
//!                         |tgid| bits_from_proc_facts(tgid))?;
//! engine.set_workload(cgroup_id, namespace_id)?;                   // workload registry
//! let mut events = engine.events()?;                               // once; owns its handles
//! while events.wait(None)? { while let Some(rec) = events.next_record() { /* Ok(Record::Exec(..)) */ } }
//! engine.lost_events()?;                                           // ring buffer overflows
//! ```
//! The reader must be drained: besides delivering events it releases classified sockets from
//! the SOCKHASH and destroys connections whose unseen payload the backstop refused. Each exec
//! record comes before the match records of that exec. Matches the engine finds itself (after
//! an apply: connections older than the rule set, processes without room for state) are taken
//! with [`Engine::take_matches`].
//!
//! # Programs and where they attach
//! - `bulwark_exec` tracepoint `sched/sched_process_exec`, `bulwark_exit` tracepoint
//!   `sched/sched_process_exit`, `bulwark_fork` raw tracepoint `sched_process_fork`,
//!   `bulwark_cgroup_move` tracepoint `cgroup/cgroup_attach_task` (skipped on a kernel whose
//!   record has another layout; its [`daemon_common::ProcessMovedEvent`]s are the daemon's);
//! - `bulwark_connect4/6`, `bulwark_sendmsg4/6` (cgroup sock_addr), `bulwark_sockops`
//!   (sock_ops: egress watching and connection observation's callbacks, one program so each
//!   callback dispatches once) and `bulwark_backstop` (cgroup_skb/egress) on the cgroup v2
//!   root as bpf_links
//!   (links always coexist with other programs; the kernel rejects explicit ALLOW_MULTI flags
//!   on link creation);
//! - the socket guard ([`socket_guard`]): `bulwark_sock_create` (cgroup sock_create) on the
//!   cgroup v2 root, `bulwark_packet_socket` tracepoint `capability/cap_capable` and
//!   `bulwark_uring_socket` tracepoint `io_uring/io_uring_submit_req` (each skipped on a
//!   kernel without that tracepoint; `bulwark probe` then reports the path open);
//! - `bulwark_egress` (sk_msg) on the `SOCKHASH` map;
//! - `bulwark_sys_enter` / `bulwark_sys_exit` on the raw tracepoints `sys_enter` / `sys_exit`,
//!   attached by an apply whose rule set names a system call or has `hook: file` selectors
//!   (whose calls reach the same filter, [`file`] writes their maps) and detached by one that
//!   has neither (`sys_exit` only while a call is decided at its exit) ([`syscall`]); outside
//!   [`attach::LINKED_PROGRAMS`], pinned by [`syscall`] itself;
//! - connection observation (unless [`EngineOptions::no_conn_observe`]): `bulwark_sockops`'s
//!   observation half (loaded on or off, `ConnConfig::observe`), `bulwark_conn_egress` and
//!   `bulwark_conn_ingress` (cgroup_skb) on the cgroup v2 root; their records
//!   (`EVENT_CONN_*`) go to the pipeline like any other. (Builds before this one attached
//!   observation's sock_ops half as a second program, `bulwark_conn_sockops`; an upgrade
//!   from their pins loads afresh and retires them like any other build's.)
//!
//! [`attach::LINKED_PROGRAMS`] lists every program attached through a link and its hook:
//! loading, attaching, pinning and adopting all follow that one table.
//!
//! Map sizes: `PROCESSES` from pid_max ([`EngineOptions::max_processes`]), `SOCKHASH` from
//! [`EngineOptions::max_watched_sockets`]. After every apply the engine checks the TCP
//! connections that existed before it (`sweep.rs`, docs/enforcement.md).
//!
//! # Atomic apply
//! [`Engine::apply`] clears and writes the inactive slot with a new `SlotMeta::generation`,
//! sets `Config::pending_slot` (from then on every exec evaluates both slots), waits until every
//! program that started earlier has finished, gives every process whose bits are stale for the
//! slot (`ProcessState::slot_gen`) bits computed by the caller from its /proc facts — scanning
//! the kernel's process map and /proc, not the event stream, until nothing is stale ([`switch`])
//! — then flips `Config::active_slot` in one map write and clears pending. The old rule set
//! enforces until that write; the new one from it on, for every process.
//!
//! # Surviving the daemon (`EngineOptions::pin_dir`)
//! With a pin directory (on bpffs, e.g. `/sys/fs/bpf/bulwark`; layout and ownership lock in
//! [`pins`]), every map is pinned under `<pin_dir>/build-<hash of the eBPF object>/maps/<NAME>`
//! and every link under `links/<prog>` (the sk_msg program is attached to the pinned SOCKHASH;
//! the syscall programs are pinned as `progs/<prog>` and their links only while attached).
//! The programs keep enforcing after the `Engine` is dropped or the daemon crashes. The next
//! `load` with the same directory and the same build *adopts* them: nothing is loaded or
//! detached, the active slot, processes and workloads carry over, and an interrupted switch is
//! cancelled (the active slot was never touched). A different build loads afresh next to the
//! old one; the old build's pins are removed only after the new engine's first successful
//! `apply`, so an upgrade has no gap. [`Engine::unpin`] removes the pins (the programs then
//! detach when the engine is dropped); [`pins::unload`] does it for a daemon that is gone.
//! Records written while no reader ran stay in the (pinned) ring buffer until it is full.
//!
//! # Where things are
//! This file holds the front door ([`Engine::load`], [`EngineOptions`]). `attach` loads the
//! object and attaches its programs; `maps` holds the map handles and the maps outside the
//! slots (workloads, loaders, processes, counters); `slots` is the apply and writing and
//! reading a slot; `switch` what happens between pending and flip; `sweep` the checks after a
//! flip; `adopt` pinning and adopting, `pins` the pin directory; `events` the ring-buffer
//! reader; `sockets` and `socket_guard` socket helpers and the socket guard's facts; `btf`,
//! `host` and `probe` what the kernel and host offer; `bpf_sys` the raw `bpf(2)` aya lacks.

mod adopt;
mod attach;
mod bpf_sys;
mod btf;
mod events;
mod file;
pub mod host;
mod maps;
pub mod pins;
pub mod probe;
mod slots;
pub mod socket_guard;
pub mod sockets;
mod sweep;
mod switch;
mod syscall;

pub use attach::resolve_offsets;
pub use btf::{Btf, KIND_FUNC, KIND_TYPEDEF};
pub use events::EventReader;
pub use switch::{ProcessBits, SwitchReport};

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::maps::{Map, MapData, RingBuf, SockHash};
use aya::Ebpf;
use daemon_common::*;
pub use daemon_common::{MapEntries, SlotEntries};

use adopt::Pins;
use maps::Maps;

/// The kernel programs, built by daemon/build.rs.
static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/daemon"));

/// Where the engine finds what it needs; defaults discover everything.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// cgroup v2 directory to attach the network programs to (default: the cgroup2 mount
    /// found in /proc/mounts, i.e. every process on the host).
    pub cgroup: Option<PathBuf>,
    /// Kernel BTF (default `/sys/kernel/btf/vmlinux`).
    pub btf: Option<PathBuf>,
    /// Pin maps and links under this bpffs directory (e.g. `/sys/fs/bpf/bulwark`) so that
    /// enforcement survives the daemon: a later `load` with the same directory and the same
    /// build *adopts* them (no reload, no gap). `None`: everything ends with the `Engine`.
    pub pin_dir: Option<PathBuf>,
    /// Size of the event ring buffer in bytes (a power of two, at least the page size);
    /// default `EVENTS_RING_BYTES` (8 MiB).
    pub events_ring_bytes: Option<u32>,
    /// Attach do-nothing programs (`noop_*`) on the same hooks instead of the real ones: the
    /// benchmark's floor, which shows what the hooks cost without any of bulwark's work.
    /// Nothing is enforced or reported. Cannot be combined with `pin_dir`.
    pub noop_programs: bool,
    /// Entries of the process map (default: `/proc/sys/kernel/pid_max`, which every tgid is
    /// below, so it cannot fill up). Not preallocated: only live processes take memory.
    pub max_processes: Option<u32>,
    /// Entries of the SOCKHASH, the sockets watched at once (default
    /// [`MAX_WATCHED_SOCKETS`]; bucket memory, 16 bytes each, is allocated up front).
    pub max_watched_sockets: Option<u32>,
    /// Do not observe connections: `bulwark_conn_*` are not attached and `bulwark_sockops` is
    /// loaded with its observation half off (no `EVENT_CONN_*` records).
    pub no_conn_observe: bool,
    /// Least time between two stats records of one open connection (`--conn-interval`);
    /// default [`DEFAULT_CONN_INTERVAL`].
    pub conn_interval: Option<std::time::Duration>,
    /// Tests only: the build id to pin under instead of this build's (so one binary can play
    /// an upgrade: a different id loads next to the pinned build and retires it).
    pub build_id: Option<String>,
}

/// Default of [`EngineOptions::conn_interval`] (`--conn-interval`).
pub const DEFAULT_CONN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// `/proc/sys/kernel/pid_max`: every tgid is below it.
pub fn pid_max() -> anyhow::Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .context("cannot read /proc/sys/kernel/pid_max to size the process map")?;
    text.trim()
        .parse()
        .with_context(|| format!("/proc/sys/kernel/pid_max holds {text:?}, not a number"))
}

/// How the engine came by its programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinning {
    /// Loaded, not pinned: they end with the engine.
    Ephemeral,
    /// Loaded and pinned: they outlive the engine.
    Pinned,
    /// Taken over from the pins of an earlier engine of this build (no reload, no gap).
    Adopted,
}

/// Name of the pin directory of this build: FNV-1a of the eBPF object.
pub fn build_id() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in PROGRAMS {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("build-{h:016x}")
}

/// The loaded, attached kernel programs and their maps.
pub struct Engine {
    /// The loaded object (programs and their unpinned links); None when adopted from pins.
    /// Only held: dropping it detaches the programs.
    #[allow(dead_code)]
    ebpf: Option<Ebpf>,
    maps: Maps,
    pins: Option<Pins>,
    cgroup: PathBuf,
    active: u8,
    generation: u64,
    events_taken: bool,
    /// Do-nothing programs are attached (benchmark floor): the engine enforces nothing itself
    /// either (no sweep of existing connections, no kills for lack of room).
    noop: bool,
    /// Matches the engine found itself (not through the ring buffer): connections that existed
    /// before a policy, processes without room in the process map. See [`Engine::take_matches`].
    matches: Vec<MatchEvent>,
    barrier: switch::ProgramBarrier,
    last_switch: SwitchReport,
    /// `bulwark_sys_enter` / `bulwark_sys_exit`, attached while a rule set names a call.
    syscall: syscall::SyscallPrograms,
}

impl Engine {
    /// Loads and attaches every program. Needs root, tracefs (mounted here if missing), a
    /// cgroup v2 mount and kernel BTF; each missing piece is a clear error, and a program the
    /// kernel rejects is reported with the tail of the verifier log.
    pub fn load(opts: &EngineOptions) -> anyhow::Result<Engine> {
        host::require_root()?;
        let tracefs = host::require_tracefs()?;
        let cgroup = match &opts.cgroup {
            Some(c) => c.clone(),
            None => host::require_cgroup2()?,
        };
        if opts.noop_programs && opts.pin_dir.is_some() {
            bail!("noop programs are for benchmarking only and cannot be pinned: drop the pin directory");
        }
        let mut retire = Vec::new();
        let build = opts.build_id.clone().unwrap_or_else(build_id);
        let mut pin_root = None;
        if let Some(root) = &opts.pin_dir {
            let owned = pins::PinRoot::acquire(root)?;
            let dir = owned.build_dir(&build);
            // Other builds, and interrupted loads (of any build, this one included).
            retire = owned.others(&dir);
            if dir.exists() {
                return Engine::adopt(owned, dir, cgroup, retire);
            }
            pin_root = Some(owned);
        }
        let btf_path = opts
            .btf
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/kernel/btf/vmlinux"));
        let offsets = resolve_offsets(&btf_path, &tracefs)?;
        let conn = attach::conn_config(
            &btf_path,
            opts.conn_interval.unwrap_or(DEFAULT_CONN_INTERVAL),
            !opts.no_conn_observe,
        );
        let syscall_regs = syscall::regs(&Btf::from_file(&btf_path)?);
        let mut ebpf = attach::load_object(opts, &offsets, &conn, &syscall_regs)?;
        let mut maps = Maps::take_from(&mut ebpf)?;
        maps.initialize()?;
        let links = attach::attach_all(&mut ebpf, opts, &maps, &cgroup, &tracefs)?;
        let pins = match pin_root {
            None => None,
            Some(owned) => Some(adopt::pin_fresh(
                owned,
                &build,
                &maps,
                links,
                |dir| syscall::pin_programs(&mut ebpf, dir, offsets.uring_file == 1),
                retire,
            )?),
        };
        Ok(Engine {
            ebpf: Some(ebpf),
            maps,
            pins,
            cgroup,
            active: 0,
            generation: 0,
            events_taken: false,
            noop: opts.noop_programs,
            matches: Vec::new(),
            barrier: switch::ProgramBarrier::new()?,
            last_switch: SwitchReport::default(),
            syscall: syscall::SyscallPrograms::new(offsets.uring_file == 1),
        })
    }

    /// The cgroup the network programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// The event stream. Can be taken once: the reader owns its own handles to the ring buffer
    /// and the SOCKHASH, so it may move to another thread while the engine keeps applying.
    pub fn events(&mut self) -> anyhow::Result<EventReader> {
        if self.events_taken {
            bail!("Engine::events() was already called; the event reader can be taken once");
        }
        let ring = self
            .maps
            .0
            .remove(MAP_EVENTS)
            .context("map EVENTS missing")?;
        let ring = RingBuf::try_from(ring)?;
        let sh = self.maps.get(MAP_SOCKHASH)?;
        let id = match sh {
            Map::SockHash(d) => d.info()?.id(),
            _ => bail!("map SOCKHASH has an unexpected type"),
        };
        let sockhash = SockHash::try_from(Map::SockHash(MapData::from_id(id)?))?;
        self.events_taken = true;
        Ok(EventReader::new(ring, sockhash))
    }

    /// Matches the engine found itself since the last call (connections older than the rule
    /// set, processes that could not be given state): `EVENT_MATCH` records with a `reason`,
    /// to be handled like the ring buffer's.
    pub fn take_matches(&mut self) -> Vec<MatchEvent> {
        std::mem::take(&mut self.matches)
    }
}

/// The engine and its reader may move to other threads (the reader typically lives on its own).
#[allow(dead_code)]
fn _assert_send() {
    fn send<T: Send>() {}
    send::<Engine>();
    send::<EventReader>();
}
