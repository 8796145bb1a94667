//! The engine's side of the syscall-tracepoint framework (daemon-common `syscall`): where the
//! programs find a call's number and arguments (`SYSCALL_REGS`, from BTF), writing and reading
//! a slot's `SYSCALL_SELECTORS` / `SYSCALL_CONDS`, keeping `SYSCALL_FILTER` a superset of what
//! the active and pending slots name, and attaching `bulwark_sys_enter` / `bulwark_sys_exit`
//! only while the filter names some call (detached when no policy uses a syscall hook, so a
//! node without such policies pays nothing).

use anyhow::Context;
use aya::maps::{Array, HashMap, MapData};
use aya::programs::RawTracePoint;
use aya::Ebpf;
use daemon_common::*;

use super::maps::{map, Maps};
use super::Btf;

/// The two programs and their raw tracepoints.
const PROGRAMS: [(&str, &str); 2] = [
    ("bulwark_sys_enter", "sys_enter"),
    ("bulwark_sys_exit", "sys_exit"),
];

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
    {
        let mut m: HashMap<&mut MapData, SyscallKey, u64> =
            HashMap::try_from(map(maps, MAP_SYSCALL_SELECTORS)?)?;
        let old: Vec<SyscallKey> = m.keys().filter_map(Result::ok).collect();
        for k in old {
            if k.table & 1 == u32::from(slot) {
                m.remove(&k)?;
            }
        }
        for (_, e) in tables {
            for (k, mask) in &e.syscall_selectors {
                m.insert(k, mask, 0)
                    .context("writing SYSCALL_SELECTORS: map full")?;
            }
        }
    }
    let mut conds: Array<&mut MapData, SyscallSelectorConds> =
        Array::try_from(map(maps, MAP_SYSCALL_CONDS)?)?;
    for &t in touched {
        let base = t * MAX_SELECTORS as u32;
        for i in 0..MAX_SELECTORS as u32 {
            conds.set(base + i, SyscallSelectorConds::default(), 0)?;
        }
    }
    for (_, e) in tables {
        for (i, c) in &e.syscall_conds {
            conds.set(*i, c, 0)?;
        }
    }
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
    let a: Array<&MapData, SyscallSelectorConds> = Array::try_from(maps.get(MAP_SYSCALL_CONDS)?)?;
    let base = table * MAX_SELECTORS as u32;
    let mut out = Vec::new();
    for i in base..base + MAX_SELECTORS as u32 {
        let c = a.get(&i, 0)?;
        if c != SyscallSelectorConds::default() {
            out.push((i, c));
        }
    }
    Ok(out)
}

/// The filter a slot's tables ask for.
pub(super) fn filter_of(tables: &[(u32, MapEntries)]) -> Vec<u32> {
    let mut f = vec![0u32; SYSCALL_FILTER_LEN as usize];
    for (_, e) in tables {
        e.syscall_filter(&mut f);
    }
    f
}

/// Writes `SYSCALL_FILTER`: `filter`, ORed with what it holds when `keep` (during a switch
/// both slots must be covered). Returns whether any call is wanted afterwards.
pub(super) fn write_filter(maps: &mut Maps, filter: &[u32], keep: bool) -> anyhow::Result<bool> {
    let mut a: Array<&mut MapData, u32> = Array::try_from(map(maps, MAP_SYSCALL_FILTER)?)?;
    let mut any = false;
    for (i, want) in filter.iter().enumerate() {
        let i = i as u32;
        let old = a.get(&i, 0)?;
        let new = if keep { old | want } else { *want };
        if new != old {
            a.set(i, new, 0)?;
        }
        any |= new != 0;
    }
    Ok(any)
}

/// The syscall programs' links while attached.
#[derive(Default)]
pub(super) struct SyscallPrograms {
    links: Vec<(
        &'static str,
        aya::programs::raw_trace_point::RawTracePointLinkId,
    )>,
}

impl SyscallPrograms {
    /// Whether the programs are attached.
    pub(super) fn attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Attaches (`on`) or detaches both programs; nothing when they already are. Loads them the
    /// first time. Without the eBPF object (an engine adopted from pins) it cannot attach and
    /// says so.
    pub(super) fn set(&mut self, ebpf: Option<&mut Ebpf>, on: bool) -> anyhow::Result<()> {
        if on == self.attached() {
            return Ok(());
        }
        let Some(ebpf) = ebpf else {
            anyhow::bail!(
                "hook: syscall needs its programs attached, but this engine adopted pinned \
                 programs of an earlier daemon and has no object to attach them from: restart \
                 the daemon after `bulwark unload` (or without --pin-dir) to use syscall rules"
            );
        };
        if !on {
            for (name, id) in self.links.drain(..) {
                let p: &mut RawTracePoint = ebpf
                    .program_mut(name)
                    .with_context(|| format!("program {name} missing"))?
                    .try_into()?;
                p.detach(id)?;
            }
            return Ok(());
        }
        for (name, tp) in PROGRAMS {
            let p: &mut RawTracePoint = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing"))?
                .try_into()?;
            if p.fd().is_err() {
                p.load().map_err(|e| super::attach::load_error(name, e))?;
            }
            let id = p
                .attach(tp)
                .with_context(|| format!("cannot attach {name} to raw tracepoint {tp}"))?;
            self.links.push((name, id));
        }
        Ok(())
    }
}
