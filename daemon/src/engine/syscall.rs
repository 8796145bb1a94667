//! The engine's side of the syscall-tracepoint framework (daemon-common `syscall`): where the
//! programs find a call's number and arguments (`SYSCALL_REGS`, from BTF), writing and reading
//! a slot's `SYSCALL_SELECTORS` / `SYSCALL_CONDS`, keeping `SYSCALL_FILTER` a superset of what
//! the active and pending slots name, and attaching `bulwark_sys_enter` only while the filter
//! names some call (detached when no policy uses a syscall hook, so a node without such
//! policies pays nothing) and `bulwark_sys_exit` only while some call is decided at its exit;
//! the file hook's io_uring programs (`daemon-ebpf/src/uring.rs`) only while some call is the
//! file hook's, and only on a kernel whose io_uring requests they can read
//! (`KernelOffsets::uring_file`).
//!
//! Pinned like every other program (see "Surviving the daemon" in the engine's doc): a pinned
//! engine pins both programs as `progs/<name>` when it loads, and each link as `links/<name>`
//! while attached, so a Sigkill rule keeps killing while no daemon runs; an adopting engine
//! opens the programs and any links from there, and attaches or detaches them as its filter
//! says.

use std::path::Path;

use anyhow::Context;
use aya::maps::{Array, HashMap, MapData};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::RawTracePoint;
use aya::Ebpf;
use daemon_common::*;

use super::btf::{URING_COMPLETE_TRACEPOINT, URING_OVERFLOW_TRACEPOINT, URING_SUBMIT_TRACEPOINT};
use super::maps::{map, Maps};
use super::slots::{write_hash, write_selector_array};
use super::Btf;

/// The programs and their raw tracepoints: the syscall pair, then the file hook's io_uring
/// programs ([`URING_PROGRAMS`]).
const PROGRAMS: [(&str, &str); 5] = [
    ("bulwark_sys_enter", "sys_enter"),
    ("bulwark_sys_exit", "sys_exit"),
    ("bulwark_uring_file_submit", URING_SUBMIT_TRACEPOINT),
    ("bulwark_uring_file_complete", URING_COMPLETE_TRACEPOINT),
    ("bulwark_uring_file_overflow", URING_OVERFLOW_TRACEPOINT),
];
/// The io_uring programs of [`PROGRAMS`].
const URING_PROGRAMS: [&str; 3] = [PROGRAMS[2].0, PROGRAMS[3].0, PROGRAMS[4].0];

/// `TS_COMPAT` in x86's `thread_info.status`.
#[cfg(target_arch = "x86_64")]
const TS_COMPAT: u32 = 2;

/// Where the call number and arguments are, from BTF; the default (all 0: the programs do
/// nothing) when this architecture's layout is unknown.
pub(super) fn regs(btf: &Btf) -> SyscallRegs {
    #[cfg(target_arch = "x86_64")]
    {
        let get = |s: &str, m: &str| btf.member_offset(s, m).ok();
        let native = ["di", "si", "dx", "r10", "r8", "r9"].map(|r| get("pt_regs", r));
        let compat = ["bx", "cx", "dx", "si", "di", "bp"].map(|r| get("pt_regs", r));
        let (Some(nr), true, true) = (
            get("pt_regs", "orig_ax"),
            native.iter().all(Option::is_some),
            compat.iter().all(Option::is_some),
        ) else {
            log::warn!("kernel BTF lacks pt_regs registers: hook: syscall cannot work");
            return SyscallRegs::default();
        };
        let status = get("task_struct", "thread_info")
            .zip(get("thread_info", "status"))
            .map(|(a, b)| a + b);
        SyscallRegs {
            nr,
            compat_status: status.unwrap_or(0),
            compat_bit: TS_COMPAT,
            _pad: 0,
            args: native.map(|o| o.unwrap_or(0)),
            compat_args: compat.map(|o| o.unwrap_or(0)),
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        // arm64 `struct pt_regs`: regs[31], sp, pc, pstate, orig_x0, syscallno (its members sit
        // in an anonymous union, which member lookup does not descend into). Argument 0 is read
        // from orig_x0 (an offset of 0 means "unknown" to the programs). No compat table.
        let _ = btf;
        SyscallRegs {
            nr: 35 * 8,
            args: [34 * 8, 8, 16, 24, 32, 40],
            ..SyscallRegs::default()
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = btf;
        SyscallRegs::default()
    }
}

/// Writes `SYSCALL_SELECTORS` (every table of `slot`, the slot's old keys removed) and
/// `SYSCALL_CONDS` of the tables `touched` (cleared) and those given.
pub(super) fn write_slot(
    maps: &mut Maps,
    slot: u8,
    tables: &[(u32, MapEntries)],
    touched: &[u32],
) -> anyhow::Result<()> {
    let keys: Vec<(SyscallKey, u64)> = tables
        .iter()
        .flat_map(|(_, e)| e.syscall_selectors.iter().copied())
        .collect();
    write_hash(
        maps,
        MAP_SYSCALL_SELECTORS,
        slot,
        &keys,
        |k: &SyscallKey| k.table as u8,
    )?;
    write_selector_array(
        maps,
        MAP_SYSCALL_CONDS,
        touched,
        tables
            .iter()
            .flat_map(|(t, e)| e.syscall_conds.iter().map(move |(i, c)| (*t, *i, *c))),
    )?;
    Ok(())
}

/// `SYSCALL_SELECTORS` entries of `table`.
pub(super) fn read_keys(maps: &Maps, table: u32) -> anyhow::Result<Vec<(SyscallKey, u64)>> {
    let m: HashMap<&MapData, SyscallKey, u64> =
        HashMap::try_from(maps.get(MAP_SYSCALL_SELECTORS)?)?;
    let mut out = Vec::new();
    for kv in m.iter() {
        let (k, v) = kv?;
        if k.table == table {
            out.push((k, v));
        }
    }
    Ok(out)
}

/// `SYSCALL_CONDS` entries of `table` that are set.
pub(super) fn read_conds(
    maps: &Maps,
    table: u32,
) -> anyhow::Result<Vec<(u32, SyscallSelectorConds)>> {
    super::slots::read_selector_array(maps, MAP_SYSCALL_CONDS, table)
}

/// The filter a slot's tables ask for.
pub(super) fn filter_of(tables: &[(u32, MapEntries)]) -> Vec<u32> {
    let mut f = vec![0u32; SYSCALL_FILTER_LEN as usize];
    for (_, e) in tables {
        e.syscall_filter(&mut f);
    }
    f
}

/// Which of the programs a filter needs: `bulwark_sys_enter` while it names any call,
/// `bulwark_sys_exit` only while some call is decided at its exit (`SYSCALL_WANT_EXIT`: a
/// `matchReturn`, or another consumer's exit): every system call of every task runs each
/// attached program, so an exit program nothing waits for is pure cost. The io_uring programs
/// while some call is the file hook's (`SYSCALL_WANT_FILE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Wanted {
    pub(super) enter: bool,
    pub(super) exit: bool,
    pub(super) uring: bool,
}

impl Wanted {
    fn add(&mut self, want: u32) {
        self.enter |= want != 0;
        self.exit |= want & SYSCALL_WANT_EXIT != 0;
        self.uring |= want & SYSCALL_WANT_FILE != 0;
    }

    /// Whether program `name` is wanted.
    fn program(self, name: &str) -> bool {
        if name == PROGRAMS[1].0 {
            self.exit
        } else if URING_PROGRAMS.contains(&name) {
            self.uring
        } else {
            self.enter
        }
    }
}

/// What `SYSCALL_FILTER` needs attached.
pub(super) fn filter_wants(maps: &Maps) -> anyhow::Result<Wanted> {
    let a: Array<&MapData, u32> = Array::try_from(maps.get(MAP_SYSCALL_FILTER)?)?;
    let mut wanted = Wanted::default();
    for i in 0..SYSCALL_FILTER_LEN {
        wanted.add(a.get(&i, 0)?);
    }
    Ok(wanted)
}

/// Writes `SYSCALL_FILTER`: `filter`, ORed with what it holds when `keep` (during a switch
/// both slots must be covered). Returns what it needs attached afterwards.
pub(super) fn write_filter(maps: &mut Maps, filter: &[u32], keep: bool) -> anyhow::Result<Wanted> {
    let mut a: Array<&mut MapData, u32> = Array::try_from(map(maps, MAP_SYSCALL_FILTER)?)?;
    let mut wanted = Wanted::default();
    for (i, want) in filter.iter().enumerate() {
        let i = i as u32;
        let old = a.get(&i, 0)?;
        let new = if keep { old | want } else { *want };
        if new != old {
            a.set(i, new, 0)?;
        }
        wanted.add(new);
    }
    Ok(wanted)
}

/// Where a pinned engine keeps the two programs, loaded but not necessarily attached, so that
/// an engine adopting the build can attach them (`<build dir>/progs/<name>`).
const PROGS_DIR: &str = "progs";

/// Loads the programs into the kernel (the verifier runs now) and pins them under
/// `dir/progs`: a fresh pinned engine does this before its build directory is published. The
/// io_uring programs only with `uring` (this kernel's io_uring requests are readable): an engine
/// adopting the build attaches those it finds.
pub(super) fn pin_programs(ebpf: &mut Ebpf, dir: &Path, uring: bool) -> anyhow::Result<()> {
    let pd = dir.join(PROGS_DIR);
    std::fs::create_dir_all(&pd).with_context(|| format!("cannot create {}", pd.display()))?;
    for (name, _) in PROGRAMS {
        if !uring && URING_PROGRAMS.contains(&name) {
            continue;
        }
        let p = program_of(ebpf, name)?;
        p.pin(pd.join(name))
            .with_context(|| format!("cannot pin program {name} in {}", pd.display()))?;
    }
    Ok(())
}

/// Program `name` of a loaded object, loaded into the kernel if it is not yet.
fn program_of<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut RawTracePoint> {
    let p: &mut RawTracePoint = ebpf
        .program_mut(name)
        .with_context(|| format!("program {name} missing"))?
        .try_into()?;
    if p.fd().is_err() {
        p.load().map_err(|e| super::attach::load_error(name, e))?;
    }
    Ok(p)
}

/// The two programs as an engine holds them, and their links while attached ([`Wanted`] says
/// which should be); with a pin directory each link is pinned as `links/<name>` too, so the
/// programs keep running when the daemon dies (and a restarted daemon finds them there).
#[derive(Default)]
pub(super) struct SyscallPrograms {
    /// The programs an adopted engine opened from `progs/` (it has no eBPF object); empty for a
    /// loaded engine, which attaches from its object.
    pinned: Vec<(&'static str, RawTracePoint)>,
    /// Links of the attached programs (pinned ones too: dropping an fd of a pinned link
    /// leaves it attached).
    links: Vec<(&'static str, FdLink)>,
    /// Whether the io_uring programs can work on this kernel (`KernelOffsets::uring_file`; for an
    /// adopted engine: whether the earlier daemon pinned them); never attached otherwise.
    uring: bool,
}

impl SyscallPrograms {
    /// A loaded engine's, before anything is attached; `uring`: see [`SyscallPrograms::uring`].
    pub(super) fn new(uring: bool) -> SyscallPrograms {
        SyscallPrograms {
            uring,
            ..SyscallPrograms::default()
        }
    }

    /// What an engine adopting build directory `dir` finds there: the pinned programs (none
    /// when the build was pinned without them: it then cannot attach them, and says so) and the
    /// links of those that were attached when the earlier daemon stopped.
    pub(super) fn adopt(dir: &Path) -> anyhow::Result<SyscallPrograms> {
        let mut out = SyscallPrograms::default();
        for (name, _) in PROGRAMS {
            let prog = dir.join(PROGS_DIR).join(name);
            if prog.exists() {
                let p = RawTracePoint::from_pin(&prog)
                    .with_context(|| format!("cannot open pinned program {}", prog.display()))?;
                out.pinned.push((name, p));
                out.uring |= URING_PROGRAMS.contains(&name);
            }
            let link = dir.join("links").join(name);
            if link.exists() {
                let l = PinnedLink::from_pin(&link)
                    .with_context(|| format!("cannot open pinned link {}", link.display()))?;
                out.links.push((name, FdLink::from(l)));
            }
        }
        Ok(out)
    }

    /// Which programs are attached.
    pub(super) fn attached(&self) -> Wanted {
        let linked = |name: &str| self.links.iter().any(|(n, _)| *n == name);
        Wanted {
            enter: linked(PROGRAMS[0].0),
            exit: linked(PROGRAMS[1].0),
            uring: URING_PROGRAMS.iter().all(|n| linked(n)),
        }
    }

    /// Attaches the programs `want` names and detaches the others; nothing for those already
    /// so. Attaches from `ebpf` (loading the programs the first time) or, without it, from the
    /// pinned programs; with `pins` (the build directory) pins each new link there and removes
    /// a link's pin when detaching it. An engine with neither object nor pinned programs cannot
    /// attach and says so.
    pub(super) fn set(
        &mut self,
        mut ebpf: Option<&mut Ebpf>,
        pins: Option<&Path>,
        mut want: Wanted,
    ) -> anyhow::Result<()> {
        want.uring &= self.uring;
        // Unpinned first: a link whose pin cannot be removed stays attached and listed.
        let mut failed = None;
        self.links.retain(|(name, _)| {
            if want.program(name) {
                return true;
            }
            let Some(dir) = pins else { return false };
            let path = dir.join("links").join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    failed.get_or_insert(
                        anyhow::Error::new(e)
                            .context(format!("cannot remove pinned link {}", path.display())),
                    );
                    true
                }
                // Dropped: the last reference, so the program detaches.
                _ => false,
            }
        });
        if let Some(e) = failed {
            return Err(e);
        }
        for (name, tp) in PROGRAMS {
            if !want.program(name) || self.links.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let p = match ebpf.as_deref_mut() {
                Some(ebpf) => program_of(ebpf, name)?,
                None => match self.pinned.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, p)) => p,
                    None => anyhow::bail!(
                        "hook: syscall needs its programs attached, but this engine adopted \
                         pins of an earlier daemon that did not pin them (program {name}): run \
                         `bulwark unload` on the pin directory after stopping the daemon, so \
                         the next one loads afresh, to use syscall rules"
                    ),
                },
            };
            let id = p
                .attach(tp)
                .with_context(|| format!("cannot attach {name} to raw tracepoint {tp}"))?;
            let link = FdLink::from(p.take_link(id)?);
            let link = match pins {
                None => link,
                Some(dir) => {
                    let path = dir.join("links").join(name);
                    // Pinned, the link keeps the program attached when this process is gone.
                    FdLink::from(link.pin(&path).with_context(|| {
                        format!("cannot pin link of {name} as {}", path.display())
                    })?)
                }
            };
            self.links.push((name, link));
        }
        Ok(())
    }
}
