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
//!   `sched/sched_process_exit`, `bulwark_fork` raw tracepoint `sched_process_fork`;
//! - `bulwark_connect4/6`, `bulwark_sendmsg4/6` (cgroup sock_addr), `bulwark_sockops`
//!   (sock_ops) and `bulwark_backstop` (cgroup_skb/egress) on the cgroup v2 root as bpf_links
//!   (links always coexist with other programs; the kernel rejects explicit ALLOW_MULTI flags
//!   on link creation);
//! - the socket guard ([`socket_guard`]): `bulwark_sock_create` (cgroup sock_create) on the
//!   cgroup v2 root, `bulwark_packet_socket` tracepoint `capability/cap_capable` and
//!   `bulwark_uring_socket` tracepoint `io_uring/io_uring_submit_req` (each skipped on a
//!   kernel without that tracepoint; `bulwark probe` then reports the path open);
//! - `bulwark_egress` (sk_msg) on the `SOCKHASH` map.
//!
//! [`LINKED_PROGRAMS`] lists every program attached through a link and its hook: loading,
//! attaching, pinning and adopting all follow that one table.
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
//! and every link under `links/<prog>` (the sk_msg program is attached to the pinned SOCKHASH).
//! The programs keep enforcing after the `Engine` is dropped or the daemon crashes. The next
//! `load` with the same directory and the same build *adopts* them: nothing is loaded or
//! detached, the active slot, processes and workloads carry over, and an interrupted switch is
//! cancelled (the active slot was never touched). A different build loads afresh next to the
//! old one; the old build's pins are removed only after the new engine's first successful
//! `apply`, so an upgrade has no gap. [`Engine::unpin`] removes the pins (the programs then
//! detach when the engine is dropped); [`pins::unload`] does it for a daemon that is gone.
//! Records written while no reader ran stay in the (pinned) ring buffer until it is full.

mod btf;
mod events;
pub mod host;
pub mod pins;
pub mod probe;
pub mod socket_guard;
pub mod sockets;
mod sweep;
mod switch;

pub use btf::{Btf, KIND_FUNC, KIND_TYPEDEF};
pub use events::EventReader;
pub use switch::SwitchReport;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, Map, MapData, PerCpuArray, RingBuf, SockHash,
};
use aya::programs::{
    links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
    ProgramError, RawTracePoint, SkMsg, SockOps, TracePoint,
};
use aya::{Ebpf, EbpfLoader};
pub use daemon_common::MapEntries;
use daemon_common::*;

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
    /// Tests only: the build id to pin under instead of this build's (so one binary can play
    /// an upgrade: a different id loads next to the pinned build and retires it).
    pub build_id: Option<String>,
}

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

/// The program attached for hook `name` (`bulwark_*`): the real one, or its `noop_*` twin.
fn program_for(opts: &EngineOptions, name: &str) -> String {
    match (opts.noop_programs, name.strip_prefix("bulwark_")) {
        (true, Some(hook)) => format!("noop_{hook}"),
        _ => name.to_string(),
    }
}

/// Every map of the eBPF object (the engine holds them by name).
const ALL_MAPS: [&str; 24] = [
    MAP_CONFIG,
    MAP_SLOT_META,
    MAP_SELECTORS,
    MAP_BIN_EXACT,
    MAP_BIN_PREFIX,
    MAP_BIN_POSTFIX,
    MAP_ARG_EXACT,
    MAP_ARG_PREFIX,
    MAP_ARG_POSTFIX,
    MAP_NAMESPACES,
    MAP_DEST_V4,
    MAP_DEST_V6,
    MAP_PORTS,
    MAP_WORKLOADS,
    MAP_PROCESSES,
    MAP_SK_STORAGE,
    MAP_SOCKHASH,
    MAP_EVENTS,
    MAP_COUNTERS,
    MAP_RESEED,
    MAP_BIN_INODE,
    MAP_LOADERS,
    MAP_LOADER_ARG_OPTIONS,
    "ZEROS",
];

/// Where a linked program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attach {
    /// Tracepoint `category/name`.
    TracePoint(&'static str, &'static str),
    /// Tracepoint `category/name`, when this kernel has it (a kernel without the subsystem has
    /// nothing for the program to watch).
    TracePointIfPresent(&'static str, &'static str),
    RawTracePoint(&'static str),
    /// On the cgroup v2 root, at the hook of the program's own attach type.
    CgroupSockAddr,
    CgroupSock,
    SockOps,
    /// On the cgroup v2 root, cgroup_skb egress.
    CgroupSkbEgress,
}

/// Programs attached through links (pinned as `links/<name>`), in attach order. `bulwark_egress`
/// (sk_msg) is attached to the SOCKHASH instead and lives as long as that map.
const LINKED_PROGRAMS: [(&str, Attach); 12] = [
    (
        "bulwark_exec",
        Attach::TracePoint("sched", "sched_process_exec"),
    ),
    (
        "bulwark_exit",
        Attach::TracePoint("sched", "sched_process_exit"),
    ),
    ("bulwark_fork", Attach::RawTracePoint("sched_process_fork")),
    ("bulwark_connect4", Attach::CgroupSockAddr),
    ("bulwark_connect6", Attach::CgroupSockAddr),
    ("bulwark_sendmsg4", Attach::CgroupSockAddr),
    ("bulwark_sendmsg6", Attach::CgroupSockAddr),
    ("bulwark_sockops", Attach::SockOps),
    ("bulwark_backstop", Attach::CgroupSkbEgress),
    ("bulwark_sock_create", Attach::CgroupSock),
    (
        "bulwark_packet_socket",
        Attach::TracePointIfPresent(
            socket_guard::CAP_TRACEPOINT.0,
            socket_guard::CAP_TRACEPOINT.1,
        ),
    ),
    (
        "bulwark_uring_socket",
        Attach::TracePointIfPresent(
            socket_guard::URING_TRACEPOINT.0,
            socket_guard::URING_TRACEPOINT.1,
        ),
    ),
];

/// Whether tracefs lists the tracepoint `category/name`.
fn tracepoint_exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs.join("events").join(category).join(name).is_dir()
}

/// Loads program `prog` (the real one or its noop twin) of hook `name` and attaches it. With
/// `take` the link is returned (to be pinned); without, it stays with the program in `ebpf` and
/// detaches when that is dropped. `None` as well when an optional hook is not on this kernel.
fn attach_program(
    ebpf: &mut Ebpf,
    (name, attach): (&'static str, Attach),
    prog: &str,
    take: bool,
    cgroup: &(PathBuf, std::fs::File),
    tracefs: &Path,
) -> anyhow::Result<Option<FdLink>> {
    let (cg_path, cg) = cgroup;
    let p = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing"))?;
    // Cgroup programs attach through bpf links: the kernel always attaches cgroup links as
    // multi-capable (BPF_F_ALLOW_MULTI), so other agents' programs on this cgroup or below
    // keep working; `Single` only says we attach one program per hook.
    let on_cgroup = |e: aya::programs::ProgramError| {
        anyhow::Error::new(e).context(format!(
            "cannot attach {name} to cgroup {}",
            cg_path.display()
        ))
    };
    // Loads the program as `$ty`, attaches it with `$attach` and, when pinning, takes the link.
    macro_rules! attach_as {
        ($ty:ty, |$p:ident| $attach:expr) => {{
            let $p: &mut $ty = p.try_into()?;
            $p.load().map_err(|e| load_error(name, e))?;
            let id = $attach?;
            if !take {
                return Ok(None);
            }
            FdLink::try_from($p.take_link(id)?)?
        }};
    }
    let single = CgroupAttachMode::Single;
    let link = match attach {
        Attach::TracePoint(category, tp) | Attach::TracePointIfPresent(category, tp) => {
            if matches!(attach, Attach::TracePointIfPresent(..))
                && !tracepoint_exists(tracefs, category, tp)
            {
                log::info!("{name}: this kernel has no tracepoint {category}/{tp}; not attached");
                return Ok(None);
            }
            attach_as!(TracePoint, |p| p.attach(category, tp).with_context(|| {
                format!("cannot attach {name} to tracepoint {category}/{tp}")
            }))
        }
        Attach::RawTracePoint(tp) => attach_as!(RawTracePoint, |p| p
            .attach(tp)
            .with_context(|| format!("cannot attach {name} to raw tracepoint {tp}"))),
        Attach::CgroupSockAddr => {
            attach_as!(CgroupSockAddr, |p| p.attach(cg, single).map_err(on_cgroup))
        }
        Attach::CgroupSock => attach_as!(CgroupSock, |p| p.attach(cg, single).map_err(on_cgroup)),
        Attach::SockOps => attach_as!(SockOps, |p| p.attach(cg, single).map_err(on_cgroup)),
        Attach::CgroupSkbEgress => attach_as!(CgroupSkb, |p| p
            .attach(cg, CgroupSkbAttachType::Egress, single)
            .map_err(on_cgroup)),
    };
    Ok(Some(link))
}

/// The structure offsets and host facts the programs read from `OFFSETS`.
pub fn resolve_offsets(btf_path: &Path, tracefs: &Path) -> anyhow::Result<KernelOffsets> {
    let btf = Btf::from_file(btf_path)?;
    let mut offsets = btf.kernel_offsets()?;
    offsets.tp_exit_group_dead =
        host::tracepoint_field_offset(tracefs, "sched", "sched_process_exit", "group_dead")
            .unwrap_or(0);
    Ok(socket_guard::offsets(&btf, tracefs, offsets))
}

/// The engine's map handles, by name.
struct Maps(std::collections::HashMap<&'static str, Map>);

impl Maps {
    fn get(&self, name: &str) -> anyhow::Result<&Map> {
        self.0
            .get(name)
            .with_context(|| format!("map {name} missing from the eBPF object (build mismatch)"))
    }
    fn get_mut(&mut self, name: &str) -> anyhow::Result<&mut Map> {
        self.0
            .get_mut(name)
            .with_context(|| format!("map {name} missing from the eBPF object (build mismatch)"))
    }
}

/// Pinning state of an engine with [`EngineOptions::pin_dir`].
struct Pins {
    /// The pin directory, owned (locked) while this engine lives.
    _root: pins::PinRoot,
    /// `<pin_dir>/<build id>`: `maps/<NAME>` and `links/<program>`.
    dir: PathBuf,
    /// Whether this engine adopted existing pins instead of loading.
    adopted: bool,
    /// Pin directories of other builds, removed (detaching their programs) after the first
    /// successful `apply`, so an upgrade has no window without enforcement.
    retire: Vec<PathBuf>,
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
}

/// Last lines of a verifier log (the part that says why).
fn log_tail(log: &str, lines: usize) -> String {
    let v: Vec<&str> = log.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Turns a program load error into one that says which program and why.
fn load_error(name: &str, e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => anyhow::anyhow!(
            "the kernel rejected eBPF program {name} ({io_error}); verifier log tail:\n{}",
            log_tail(&verifier_log.to_string(), 60)
        ),
        other => anyhow::anyhow!("cannot load eBPF program {name}: {other}"),
    }
}

fn map<'a>(maps: &'a mut Maps, name: &str) -> anyhow::Result<&'a mut Map> {
    maps.get_mut(name)
}

/// Deletes every key of an LPM map whose slot byte (first data byte) is `slot`.
fn clear_lpm<K: aya::Pod>(
    m: &mut LpmTrie<&mut MapData, K, u64>,
    slot: u8,
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<()> {
    let keys: Vec<Key<K>> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        let data = k.data();
        if slot_of(&data) == slot {
            m.remove(&k)?;
        }
    }
    Ok(())
}

fn write_lpm<K: aya::Pod>(
    ebpf: &mut Maps,
    name: &str,
    slot: u8,
    entries: &[(u32, K, u64)],
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<()> {
    let mut m: LpmTrie<&mut MapData, K, u64> = LpmTrie::try_from(map(ebpf, name)?)?;
    clear_lpm(&mut m, slot, &slot_of)?;
    for (bits, data, hits) in entries {
        if slot_of(data) != slot {
            bail!(
                "{name} entry for slot {} given while writing slot {slot}",
                slot_of(data)
            );
        }
        m.insert(&Key::new(*bits, *data), hits, 0)
            .with_context(|| format!("writing {name} (/{bits}): map full or invalid prefix"))?;
    }
    Ok(())
}

fn write_hash<K: aya::Pod>(
    ebpf: &mut Maps,
    name: &str,
    slot: u8,
    entries: &[(K, u64)],
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<()> {
    let mut m: HashMap<&mut MapData, K, u64> = HashMap::try_from(map(ebpf, name)?)?;
    let keys: Vec<K> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        if slot_of(&k) == slot {
            m.remove(&k)?;
        }
    }
    for (k, hits) in entries {
        if slot_of(k) != slot {
            bail!(
                "{name} entry for slot {} given while writing slot {slot}",
                slot_of(k)
            );
        }
        m.insert(k, hits, 0)
            .with_context(|| format!("writing {name}: map full"))?;
    }
    Ok(())
}

/// Pins every map under `dir/maps` and every link under `dir/links`.
fn pin_all(dir: &Path, maps: &Maps, links: Vec<(&str, FdLink)>) -> anyhow::Result<()> {
    let md = dir.join("maps");
    let ld = dir.join("links");
    for d in [&md, &ld] {
        std::fs::create_dir_all(d).with_context(|| {
            format!(
                "cannot create {} (is bpffs mounted at /sys/fs/bpf?)",
                d.display()
            )
        })?;
    }
    for (name, m) in &maps.0 {
        m.pin(md.join(name))
            .with_context(|| format!("cannot pin map {name} in {}", md.display()))?;
    }
    for (name, l) in links {
        // The pinned link keeps the program attached after this process is gone.
        let _pinned = l
            .pin(ld.join(name))
            .with_context(|| format!("cannot pin link of {name} in {}", ld.display()))?;
    }
    Ok(())
}

/// A slot's entries in a form that compares equal exactly when the kernel would hold the same
/// thing: each list sorted (map order means nothing), selectors left at their default dropped.
fn canonical(e: &MapEntries) -> Vec<Vec<String>> {
    fn sorted<T: std::fmt::Debug>(v: &[T]) -> Vec<String> {
        let mut out: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        out.sort_unstable();
        out
    }
    let selectors: Vec<_> = e
        .selectors
        .iter()
        .filter(|(_, s)| *s != SelectorEntry::default())
        .collect();
    // The generation is the engine's count of writes, not part of the rule set.
    let meta = SlotMeta {
        generation: 0,
        ..e.slot_meta
    };
    vec![
        vec![format!("{meta:?}")],
        sorted(&selectors),
        sorted(&e.bin_exact),
        sorted(&e.bin_inode),
        sorted(&e.bin_prefix),
        sorted(&e.bin_postfix),
        sorted(&e.arg_exact),
        sorted(&e.arg_prefix),
        sorted(&e.arg_postfix),
        sorted(&e.namespaces),
        sorted(&e.dest_v4),
        sorted(&e.dest_v6),
        sorted(&e.ports),
    ]
}

/// A map removal that found no such key counts as done.
fn absent_is_ok(r: Result<(), aya::maps::MapError>) -> anyhow::Result<()> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// `CLOCK_BOOTTIME` now, in ns (the clock of `bpf_ktime_get_boot_ns`).
fn boot_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Start time of a running process in boot-clock ns (from /proc/PID/stat), 0 if unknown.
fn proc_start_ns(tgid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{tgid}/stat")) else {
        return 0;
    };
    // Field 22 (starttime, clock ticks since boot); fields after the `)` of comm.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .nth(19)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * (1_000_000_000 / hz)
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

        let ring = opts.events_ring_bytes.unwrap_or(EVENTS_RING_BYTES);
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
        if !ring.is_power_of_two() || ring < page {
            bail!("events_ring_bytes {ring} must be a power of two of at least {page} (the page size)");
        }
        let max_processes = match opts.max_processes {
            Some(n) => n,
            None => pid_max()?,
        };
        let max_sockets = opts.max_watched_sockets.unwrap_or(MAX_WATCHED_SOCKETS);
        if max_processes == 0 || max_sockets == 0 {
            bail!("the process map and the SOCKHASH need room for at least one entry");
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("OFFSETS", &offsets, true)
            .map_max_entries(MAP_EVENTS, ring)
            .map_max_entries(MAP_PROCESSES, max_processes)
            .map_max_entries(MAP_SOCKHASH, max_sockets)
            .load(PROGRAMS)
            .context("cannot load bulwark's eBPF object (maps or BTF rejected by the kernel)")?;
        let mut maps = Maps(std::collections::HashMap::new());
        for name in ALL_MAPS {
            let m = ebpf
                .take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))?;
            maps.0.insert(name, m);
        }
        let mut links: Vec<(&str, FdLink)> = Vec::new();

        {
            let mut cfg: Array<&mut MapData, Config> =
                Array::try_from(map(&mut maps, MAP_CONFIG)?)?;
            cfg.set(
                0,
                Config {
                    active_slot: 0,
                    pending_slot: NO_SLOT,
                    generation: 0,
                },
                0,
            )?;
        }

        {
            // The loader's options that take a value (a fact of ld.so, not of any policy).
            let mut m: HashMap<&mut MapData, [u8; LOADER_OPTION_LEN], u8> =
                HashMap::try_from(map(&mut maps, MAP_LOADER_ARG_OPTIONS)?)?;
            for opt in LOADER_OPTIONS_WITH_VALUE {
                let mut key = [0u8; LOADER_OPTION_LEN];
                key[..opt.len()].copy_from_slice(opt);
                m.insert(key, 1, 0)?;
            }
        }

        let cg = std::fs::File::open(&cgroup)
            .with_context(|| format!("cannot open cgroup directory {}", cgroup.display()))?;
        let cg = (cgroup.clone(), cg);
        for entry in LINKED_PROGRAMS {
            let prog = program_for(opts, entry.0);
            let pin = opts.pin_dir.is_some();
            if let Some(link) = attach_program(&mut ebpf, entry, &prog, pin, &cg, &tracefs)? {
                links.push((entry.0, link));
            }
        }
        {
            let fd = {
                let sh: SockHash<&MapData, u64> = SockHash::try_from(maps.get(MAP_SOCKHASH)?)?;
                sh.fd().try_clone()?
            };
            let p: &mut SkMsg = ebpf
                .program_mut("bulwark_egress")
                .context("program bulwark_egress missing")?
                .try_into()?;
            p.load().map_err(|e| load_error("bulwark_egress", e))?;
            let id = p
                .attach(&fd)
                .context("cannot attach bulwark_egress to the SOCKHASH")?;
            if opts.pin_dir.is_some() {
                // A prog-attach to a map is not an fd-backed link and cannot be pinned: it
                // lasts as long as the (pinned) SOCKHASH. Dropping aya's handle would detach
                // it, so it is deliberately leaked.
                std::mem::forget(p.take_link(id)?);
            }
        }

        let pins = match pin_root {
            None => None,
            Some(owned) => {
                let dir = owned.build_dir(&build);
                let partial = owned.partial_dir(&build);
                let _ = std::fs::remove_dir_all(&partial);
                pin_all(&partial, &maps, links)
                    .and_then(|()| owned.publish(&partial, &dir))
                    .inspect_err(|_| {
                        let _ = std::fs::remove_dir_all(&partial);
                    })?;
                retire.retain(|p| p != &partial);
                Some(Pins {
                    _root: owned,
                    dir,
                    adopted: false,
                    retire,
                })
            }
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
        })
    }

    /// Takes over maps and links pinned by an earlier engine of this build: nothing is
    /// loaded or detached, so enforcement continues without a gap.
    fn adopt(
        root: pins::PinRoot,
        dir: PathBuf,
        cgroup: PathBuf,
        retire: Vec<PathBuf>,
    ) -> anyhow::Result<Engine> {
        for (prog, attach) in LINKED_PROGRAMS {
            if matches!(attach, Attach::TracePointIfPresent(..)) {
                continue;
            }
            let l = dir.join("links").join(prog);
            if !l.exists() {
                bail!(
                    "pinned engine at {} is incomplete (no link {prog}); run `bulwark unload` \
                     on that pin directory to load afresh",
                    dir.display()
                );
            }
        }
        let mut maps = Maps(std::collections::HashMap::new());
        for name in ALL_MAPS {
            let path = dir.join("maps").join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("cannot open pinned map {}", path.display()))?;
            maps.0.insert(name, Map::from_map_data(data)?);
        }
        let cfg: Config = {
            let a: Array<&MapData, Config> = Array::try_from(maps.get(MAP_CONFIG)?)?;
            a.get(&0, 0)?
        };
        // The next slot write must carry a generation no process can hold already: not the
        // last flip's, nor one an interrupted switch wrote into the pending slot.
        let generation = {
            let a: Array<&MapData, SlotMeta> = Array::try_from(maps.get(MAP_SLOT_META)?)?;
            let written = (0..SLOTS as u32)
                .filter_map(|i| a.get(&i, 0).ok())
                .map(|m| u64::from(m.generation))
                .max()
                .unwrap_or(0);
            cfg.generation.max(written)
        };
        if cfg.pending_slot != NO_SLOT {
            // A switch was interrupted: the active slot is intact, the pending one is not.
            let mut a: Array<&mut MapData, Config> = Array::try_from(map(&mut maps, MAP_CONFIG)?)?;
            a.set(
                0,
                Config {
                    pending_slot: NO_SLOT,
                    ..cfg
                },
                0,
            )?;
        }
        Ok(Engine {
            ebpf: None,
            maps,
            pins: Some(Pins {
                _root: root,
                dir,
                adopted: true,
                retire,
            }),
            cgroup,
            active: (cfg.active_slot & 1) as u8,
            generation,
            events_taken: false,
            noop: false,
            matches: Vec::new(),
            barrier: switch::ProgramBarrier::new()?,
            last_switch: SwitchReport::default(),
        })
    }

    /// Whether this engine adopted pinned programs and maps instead of loading them.
    pub fn adopted(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.adopted)
    }

    /// How this engine came by its programs.
    pub fn pinning(&self) -> Pinning {
        match &self.pins {
            None => Pinning::Ephemeral,
            Some(p) if p.adopted => Pinning::Adopted,
            Some(_) => Pinning::Pinned,
        }
    }

    /// This engine's build directory under the pin directory (`None` when not pinned).
    pub fn pin_path(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir.as_path())
    }

    /// Removes this engine's pins (and any left by other builds): the programs detach when
    /// the engine is dropped. Without pins this is a no-op.
    pub fn unpin(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.pins.take() {
            for d in p.retire.iter().chain(std::iter::once(&p.dir)) {
                std::fs::remove_dir_all(d)
                    .with_context(|| format!("cannot remove pins in {}", d.display()))?;
            }
        }
        Ok(())
    }

    /// The cgroup the network programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    /// Slot whose rule set the kernel enforces.
    pub fn active_slot(&self) -> u8 {
        self.active
    }

    fn set_config(&mut self, active: u8, pending: u32) -> anyhow::Result<()> {
        let mut cfg: Array<&mut MapData, Config> =
            Array::try_from(map(&mut self.maps, MAP_CONFIG)?)?;
        cfg.set(
            0,
            Config {
                active_slot: active as u32,
                pending_slot: pending,
                generation: self.generation,
            },
            0,
        )?;
        Ok(())
    }

    /// Atomic switch to a new rule set (see the module doc and [`switch`]): write
    /// `entries_for_slot(slot)` into the inactive slot with a new generation, set it pending,
    /// wait until every program that started before has finished, then give every process
    /// whose bits are stale for the slot the bits `describe(tgid)` computes (the compiler's
    /// reference evaluator over the process's /proc facts; `None`: not describable, e.g.
    /// exited) until none is stale, flip the active slot and clear pending. Returns the new
    /// active slot ([`Engine::last_switch`] says what the reseed did). On error the old rule set
    /// stays active.
    pub fn apply(
        &mut self,
        entries_for_slot: impl FnOnce(u8) -> MapEntries,
        mut describe: impl FnMut(u32) -> Option<u64>,
    ) -> anyhow::Result<u8> {
        let slot = 1 - self.active;
        let mut e = entries_for_slot(slot);
        // Never 0 (a slot no exec has evaluated), distinct for every write of a slot.
        let generation = (self.generation as u32).wrapping_add(1).max(1);
        e.slot_meta.generation = generation;
        let r = switch::clear_reseed(&mut self.maps).and_then(|()| self.write_slot(slot, &e));
        if let Err(err) = r {
            // Leave no pending slot behind; the active slot was never touched.
            let _ = self.set_config(self.active, NO_SLOT);
            return Err(err.context(format!("writing rule set into slot {slot}")));
        }
        self.set_config(self.active, slot as u32)?;
        let mut unstored = Vec::new();
        let barrier = std::time::Instant::now();
        let reseeded = self.barrier.wait().and_then(|()| {
            switch::reseed(
                &mut self.maps,
                slot,
                generation,
                e.slot_meta.selector_count,
                &mut describe,
                &mut unstored,
            )
        });
        let mut report = match reseeded {
            Ok(r) => r,
            Err(err) => {
                let _ = self.set_config(self.active, NO_SLOT);
                return Err(err.context(format!("reseeding processes for slot {slot}")));
            }
        };
        report.barrier_us = (barrier.elapsed().as_micros() as u64).saturating_sub(report.reseed_us);
        self.last_switch = report;
        self.generation += 1;
        self.set_config(slot, NO_SLOT)?;
        self.active = slot;
        if !self.noop {
            self.refuse_unstored(slot, &e, &unstored);
            if let Err(err) = self.sweep_existing_sockets() {
                log::warn!("checking the connections that existed before this rule set: {err:#}");
            }
        }
        if let Some(p) = &mut self.pins {
            // Another build's programs enforced until now; this rule set is in force, so
            // they can go (removing their pinned links detaches them).
            for d in std::mem::take(&mut p.retire) {
                if let Err(e) = std::fs::remove_dir_all(&d) {
                    log::warn!("cannot remove old pins {}: {e}", d.display());
                }
            }
        }
        Ok(slot)
    }

    /// Whether the kernel's `slot` holds exactly `expected` (a restarted daemon asks whether the
    /// rule set it compiled is the one its predecessor left in force, to name the policies of
    /// the matches recorded before the restart).
    pub fn slot_holds(&self, slot: u8, expected: &MapEntries) -> anyhow::Result<bool> {
        Ok(canonical(&self.read_slot(slot)?) == canonical(expected))
    }

    /// The entries of `slot` as the kernel holds them (selectors left at their default are
    /// not listed).
    pub fn read_slot(&self, slot: u8) -> anyhow::Result<MapEntries> {
        fn hash<K: aya::Pod>(
            maps: &Maps,
            name: &str,
            slot: u8,
            slot_of: impl Fn(&K) -> u8,
        ) -> anyhow::Result<Vec<(K, u64)>> {
            let m: HashMap<&MapData, K, u64> = HashMap::try_from(maps.get(name)?)?;
            let mut out = Vec::new();
            for kv in m.iter() {
                let (k, v) = kv?;
                if slot_of(&k) == slot {
                    out.push((k, v));
                }
            }
            Ok(out)
        }
        fn lpm<K: aya::Pod>(
            maps: &Maps,
            name: &str,
            slot: u8,
            slot_of: impl Fn(&K) -> u8,
        ) -> anyhow::Result<Vec<(u32, K, u64)>> {
            let m: LpmTrie<&MapData, K, u64> = LpmTrie::try_from(maps.get(name)?)?;
            let mut out = Vec::new();
            for kv in m.iter() {
                let (k, v) = kv?;
                let data = k.data();
                if slot_of(&data) == slot {
                    out.push((k.prefix_len(), data, v));
                }
            }
            Ok(out)
        }
        let m = &self.maps;
        let sel: Array<&MapData, SelectorEntry> = Array::try_from(m.get(MAP_SELECTORS)?)?;
        let base = slot as u32 * MAX_SELECTORS as u32;
        let mut selectors = Vec::new();
        for i in base..base + MAX_SELECTORS as u32 {
            let e = sel.get(&i, 0)?;
            if e != SelectorEntry::default() {
                selectors.push((i, e));
            }
        }
        let meta: Array<&MapData, SlotMeta> = Array::try_from(m.get(MAP_SLOT_META)?)?;
        Ok(MapEntries {
            slot_meta: meta.get(&(slot as u32), 0)?,
            selectors,
            bin_exact: hash(m, MAP_BIN_EXACT, slot, |k: &PathKey| k.slot as u8)?,
            bin_inode: hash(m, MAP_BIN_INODE, slot, |k: &BinInodeKey| k.slot as u8)?,
            bin_prefix: lpm(m, MAP_BIN_PREFIX, slot, |k: &PathLpmData| k.slot)?,
            bin_postfix: lpm(m, MAP_BIN_POSTFIX, slot, |k: &PathLpmData| k.slot)?,
            arg_exact: hash(m, MAP_ARG_EXACT, slot, |k: &ArgKey| k.slot)?,
            arg_prefix: lpm(m, MAP_ARG_PREFIX, slot, |k: &ArgLpmData| k.slot)?,
            arg_postfix: lpm(m, MAP_ARG_POSTFIX, slot, |k: &ArgLpmData| k.slot)?,
            namespaces: hash(m, MAP_NAMESPACES, slot, |k: &NamespaceKey| k.slot as u8)?,
            dest_v4: lpm(m, MAP_DEST_V4, slot, |k: &V4LpmData| k.slot)?,
            dest_v6: lpm(m, MAP_DEST_V6, slot, |k: &V6LpmData| k.slot)?,
            ports: lpm(m, MAP_PORTS, slot, |k: &PortLpmData| k.slot)?,
        })
    }

    /// What the last successful [`Engine::apply`] did to running processes.
    pub fn last_switch(&self) -> &SwitchReport {
        &self.last_switch
    }

    fn write_slot(&mut self, slot: u8, e: &MapEntries) -> anyhow::Result<()> {
        let ebpf = &mut self.maps;
        {
            let mut sel: Array<&mut MapData, SelectorEntry> =
                Array::try_from(map(ebpf, MAP_SELECTORS)?)?;
            let base = slot as u32 * MAX_SELECTORS as u32;
            for i in 0..MAX_SELECTORS as u32 {
                sel.set(base + i, SelectorEntry::default(), 0)?;
            }
            for (idx, entry) in &e.selectors {
                if *idx < base || *idx >= base + MAX_SELECTORS as u32 {
                    bail!(
                        "selector index {idx} is outside slot {slot} ({base}..{})",
                        base + 64
                    );
                }
                sel.set(*idx, entry, 0)?;
            }
        }
        write_hash(ebpf, MAP_BIN_EXACT, slot, &e.bin_exact, |k: &PathKey| {
            k.slot as u8
        })?;
        write_hash(
            ebpf,
            MAP_BIN_INODE,
            slot,
            &e.bin_inode,
            |k: &BinInodeKey| k.slot as u8,
        )?;
        write_lpm(
            ebpf,
            MAP_BIN_PREFIX,
            slot,
            &e.bin_prefix,
            |k: &PathLpmData| k.slot,
        )?;
        write_lpm(
            ebpf,
            MAP_BIN_POSTFIX,
            slot,
            &e.bin_postfix,
            |k: &PathLpmData| k.slot,
        )?;
        write_hash(ebpf, MAP_ARG_EXACT, slot, &e.arg_exact, |k: &ArgKey| k.slot)?;
        write_lpm(
            ebpf,
            MAP_ARG_PREFIX,
            slot,
            &e.arg_prefix,
            |k: &ArgLpmData| k.slot,
        )?;
        write_lpm(
            ebpf,
            MAP_ARG_POSTFIX,
            slot,
            &e.arg_postfix,
            |k: &ArgLpmData| k.slot,
        )?;
        write_hash(
            ebpf,
            MAP_NAMESPACES,
            slot,
            &e.namespaces,
            |k: &NamespaceKey| k.slot as u8,
        )?;
        write_lpm(ebpf, MAP_DEST_V4, slot, &e.dest_v4, |k: &V4LpmData| k.slot)?;
        write_lpm(ebpf, MAP_DEST_V6, slot, &e.dest_v6, |k: &V6LpmData| k.slot)?;
        write_lpm(ebpf, MAP_PORTS, slot, &e.ports, |k: &PortLpmData| k.slot)?;
        let mut meta: Array<&mut MapData, SlotMeta> = Array::try_from(map(ebpf, MAP_SLOT_META)?)?;
        meta.set(slot as u32, e.slot_meta, 0)?;
        Ok(())
    }

    /// Registers a cgroup (by cgroup id, the inode number of its cgroup v2 directory) as a
    /// workload in a Kubernetes namespace (ids from the compiler's `NamespaceIds`).
    pub fn set_workload(&mut self, cgroup_id: u64, namespace_id: u32) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, u64, WorkloadEntry> =
            HashMap::try_from(map(&mut self.maps, MAP_WORKLOADS)?)?;
        m.insert(
            cgroup_id,
            WorkloadEntry {
                namespace_id,
                _pad: 0,
            },
            0,
        )
        .with_context(|| format!("WORKLOADS full ({MAX_WORKLOADS} cgroups)"))?;
        Ok(())
    }

    /// The cgroups registered as workloads.
    pub fn workload_cgroups(&self) -> anyhow::Result<Vec<u64>> {
        let m: HashMap<&MapData, u64, WorkloadEntry> =
            HashMap::try_from(self.maps.get(MAP_WORKLOADS)?)?;
        Ok(m.keys().collect::<Result<_, _>>()?)
    }

    /// Replaces the set of dynamic loader files (`LOADERS`): an exec of one of them is a loader
    /// exec, whose target the kernel matches as a binary path.
    pub fn set_loaders(&mut self, files: &[FileKey]) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, FileKey, u8> =
            HashMap::try_from(map(&mut self.maps, MAP_LOADERS)?)?;
        let old: Vec<FileKey> = m.keys().filter_map(Result::ok).collect();
        for k in old.iter().filter(|k| !files.contains(k)) {
            let _ = m.remove(k);
        }
        for k in files {
            m.insert(k, 1, 0)
                .with_context(|| format!("LOADERS full ({MAX_LOADERS} files)"))?;
        }
        Ok(())
    }

    /// Forgets a workload cgroup (absent is not an error).
    pub fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, u64, WorkloadEntry> =
            HashMap::try_from(map(&mut self.maps, MAP_WORKLOADS)?)?;
        absent_is_ok(m.remove(&cgroup_id))
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

    /// Per-CPU diagnostic counters summed over CPUs, indexed by `COUNTER_*`.
    pub fn counters(&self) -> anyhow::Result<[u64; COUNTERS_LEN as usize]> {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.maps.get(MAP_COUNTERS)?)?;
        let mut out = [0u64; COUNTERS_LEN as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = m.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Entries a map was created with (`max_entries`), 0 when unknown.
    fn map_capacity(&self, name: &str) -> u32 {
        let data = match self.maps.get(name) {
            Ok(Map::HashMap(d)) | Ok(Map::SockHash(d)) => d,
            _ => return 0,
        };
        data.info().map_or(0, |i| i.max_entries())
    }

    /// Enforcement kept only by refusing because a map was full, one sentence per kind (for
    /// the `status` event, stderr and metrics); empty when the maps always had room.
    pub fn capacity_warnings(&self) -> Vec<String> {
        let Ok(c) = self.counters() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let full = c[COUNTER_PROCESS_MAP_FULL as usize];
        if full > 0 {
            out.push(format!(
                "the process map ({} entries) was full {full} times: {} processes an                  enforce-mode connect/egress rule covers were killed at exec (reason capacity),                  others run without rules; raise --max-processes",
                self.map_capacity(MAP_PROCESSES),
                c[COUNTER_CAPACITY_KILLS as usize]
            ));
        }
        let full = c[COUNTER_SOCKHASH_FULL as usize];
        if full > 0 {
            out.push(format!(
                "the SOCKHASH ({} watched sockets) was full {full} times: the payload of                  those connections is refused by the backstop (reason unseen_payload); raise                  --max-watched-sockets",
                self.map_capacity(MAP_SOCKHASH)
            ));
        }
        out
    }

    /// Records the kernel could not put into the ring buffer (it was full).
    pub fn lost_events(&self) -> anyhow::Result<u64> {
        Ok(self.counters()?[COUNTER_LOST_EVENTS as usize])
    }

    /// The kernel's cached state of a process (diagnostics, tests).
    pub fn process_state(&self, tgid: u32) -> Option<ProcessState> {
        let m: HashMap<&MapData, u32, ProcessState> =
            HashMap::try_from(self.maps.get(MAP_PROCESSES).ok()?).ok()?;
        m.get(&tgid, 0).ok()
    }

    /// Removes the kernel's state of a process, as when it could not be stored (tests of what
    /// the programs do for a process they know nothing about). Absent is not an error.
    pub fn forget_process(&mut self, tgid: u32) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, u32, ProcessState> =
            HashMap::try_from(map(&mut self.maps, MAP_PROCESSES)?)?;
        absent_is_ok(m.remove(&tgid))
    }

    /// Cookies of the sockets currently in the SOCKHASH (watched by the egress program).
    pub fn watched_sockets(&self) -> anyhow::Result<Vec<u64>> {
        let m: SockHash<&MapData, u64> = SockHash::try_from(self.maps.get(MAP_SOCKHASH)?)?;
        Ok(m.keys().filter_map(Result::ok).collect())
    }
}

/// The engine and its reader may move to other threads (the reader typically lives on its own).
#[allow(dead_code)]
fn _assert_send() {
    fn send<T: Send>() {}
    send::<Engine>();
    send::<EventReader>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_tail_keeps_the_last_lines() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = log_tail(&log, 3);
        assert_eq!(t, "line 97\nline 98\nline 99");
        assert_eq!(log_tail("only\n", 60), "only");
        assert_eq!(log_tail("", 5), "");
    }

    #[test]
    fn proc_start_time_of_self_is_in_the_past_and_unknown_pid_is_zero() {
        let me = proc_start_ns(std::process::id());
        assert!(me > 0 && me <= boot_ns(), "{me}");
        assert_eq!(proc_start_ns(u32::MAX), 0);
    }
}
