//! What happens between "pending" and "flip" in [`super::Engine::apply`]: making every process
//! on the node carry selector bits computed for the new rule set before it is enforced, without
//! trusting userspace to have seen each process (the event stream can lag or lose records).
//!
//! 1. [`ProgramBarrier::wait`]: once the pending slot is set, wait until every exec and fork
//!    program that started before has finished (an RCU grace period). From then on every exec
//!    evaluates both slots and writes `slot_gen`, and every fork copies its parent's state.
//! 2. [`reseed`]: scan the kernel's `PROCESSES` map (the truth) and `/proc` (processes older
//!    than the daemon, or missing from the map) for processes whose `slot_gen[slot]` is not the
//!    new slot's generation, compute their bits with the caller's function (the compiler's
//!    reference evaluator over facts read from /proc) and write them. Forks of a process that
//!    was stale when it forked are stale too; fork counts them (`COUNTER_STALE_FORK`), so the
//!    scan repeats until one finds nothing stale and that counter stood still meanwhile.
//! 3. From round [`FAIL_CLOSED_AFTER`] on, a stale process that cannot be described (it exited
//!    or forked away before the scan reached it) makes its image fail closed: `RESEED[image]`
//!    gets every selector of the slot, so its stale forks take those bits in the kernel, and the
//!    scan writes them into its stale processes. A process of such an image is then matched by
//!    every selector (monitor-mode ones only report). Only processes still stale after the
//!    rounds before can get there: descendants of a process that keeps forking and exiting.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use anyhow::Context;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use daemon_common::*;

use super::bpf_sys::{bpf, bpf_cmd, put32, put64};
use super::host::proc_start_ns;
use super::maps::{map, Maps};

/// Scan rounds after which a stale process that cannot be described fails its image closed.
pub const FAIL_CLOSED_AFTER: u32 = 3;
/// Scan rounds before the switch goes ahead with what is left (counted in the report; the
/// kernel's `COUNTER_STALE_PROCESS` shows any process that then connects).
pub const MAX_ROUNDS: u32 = 16;
/// Times one process is described again when its description changed while it was written
/// (it exec'd meanwhile).
const MAX_ATTEMPTS: u32 = 4;

/// What one switch found and did ([`super::Engine::last_switch`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwitchReport {
    /// Scan rounds until no process was stale.
    pub rounds: u32,
    /// Processes whose bits were computed from their /proc facts and written.
    pub reseeded: u32,
    /// Processes written with every selector because their image could not be described.
    pub fail_closed: u32,
    /// Stale processes left when the rounds ran out (0 unless a process keeps forking away).
    pub stale_left: u32,
    /// How long the wait for running programs took, in microseconds.
    pub barrier_us: u64,
    /// How long the scans and writes took, in microseconds.
    pub reseed_us: u64,
}

/// `bpf(2)` commands and map types used here (uapi/linux/bpf.h).
const BPF_MAP_CREATE: i64 = 0;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// Waits for every running non-sleepable BPF program to finish. Updating a map-in-map from
/// userspace makes the kernel call `synchronize_rcu()` before the syscall returns
/// (`maybe_wait_bpf_programs`: "so that userspace knows that all non-sleepable programs that
/// could be running use the new map value"); the kernel's own selftests use it the same way.
/// Unlike `membarrier(MEMBARRIER_CMD_GLOBAL)`, which also calls `synchronize_rcu()`, it does
/// not skip the grace period on a single CPU or with nohz_full CPUs.
pub struct ProgramBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl ProgramBarrier {
    pub fn new() -> anyhow::Result<ProgramBarrier> {
        let create = |map_type: u32, inner_fd: u32| {
            let mut attr = [0u8; 24];
            put32(&mut attr, 0, map_type);
            put32(&mut attr, 4, 4); // key_size
            put32(&mut attr, 8, 4); // value_size
            put32(&mut attr, 12, 1); // max_entries
            put32(&mut attr, 20, inner_fd);
            bpf(BPF_MAP_CREATE, &mut attr).map_err(anyhow::Error::msg)
        };
        let inner = create(BPF_MAP_TYPE_ARRAY, 0)
            .context("cannot create the inner map of the program barrier")?;
        let outer = create(BPF_MAP_TYPE_ARRAY_OF_MAPS, inner.as_raw_fd() as u32)
            .context("cannot create the map-in-map of the program barrier")?;
        Ok(ProgramBarrier { outer, inner })
    }

    /// Returns once every BPF program that was running when it was called has finished.
    pub fn wait(&self) -> anyhow::Result<()> {
        let key: u32 = 0;
        let value: u32 = self.inner.as_raw_fd() as u32;
        let mut attr = [0u8; 32];
        put32(&mut attr, 0, self.outer.as_raw_fd() as u32);
        put64(&mut attr, 8, &key as *const u32 as u64);
        put64(&mut attr, 16, &value as *const u32 as u64);
        // Returns no descriptor: the "fd" of a successful update is 0, which must not be closed.
        bpf_cmd(BPF_MAP_UPDATE_ELEM, &mut attr)
            .map_err(anyhow::Error::msg)
            .context("waiting for running BPF programs (map-in-map update) failed")?;
        Ok(())
    }
}

/// Mask of the first `count` selectors.
fn all_selectors(count: u32) -> u64 {
    match count {
        0 => 0,
        64.. => u64::MAX,
        n => (1u64 << n) - 1,
    }
}

fn stale_forks(maps: &Maps) -> anyhow::Result<u64> {
    let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(maps.get(MAP_COUNTERS)?)?;
    Ok(m.get(&COUNTER_STALE_FORK, 0)?.iter().sum())
}

/// Every entry of `PROCESSES` (keys first, then values: a key that vanished meanwhile is left
/// out). The kernel restarts an iteration whose cursor was deleted; the bound keeps a map
/// under heavy churn from holding the scan forever (what it misses, the next round finds).
fn scan_processes(maps: &Maps) -> anyhow::Result<Vec<(u32, ProcessState)>> {
    let m: BpfHashMap<&MapData, u32, ProcessState> =
        BpfHashMap::try_from(maps.get(MAP_PROCESSES)?)?;
    let keys: HashSet<u32> = m
        .keys()
        .take(4 * MAX_PROCESSES as usize)
        .flatten()
        .collect();
    Ok(keys
        .into_iter()
        .filter_map(|k| m.get(&k, 0).ok().map(|st| (k, st)))
        .collect())
}

/// Numeric entries of /proc (every process of the host).
fn proc_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Outcome of reseeding one process.
enum Reseeded {
    /// Bits computed and written.
    Written,
    /// The kernel evaluated it for the new slot itself (it exec'd).
    Fresh,
    /// /proc cannot describe it (it exited, or a kernel thread).
    Gone,
    /// `PROCESSES` had no room for it (the engine refuses it after the flip): the start time
    /// and bits it would have had.
    NoRoom {
        start_ns: u64,
        bits: u64,
        namespace_id: u32,
    },
}

/// What userspace computed for one running process: its selector bits, and the namespace they
/// are for (the bits are numbered in that namespace's group, so both are written together;
/// `None`: keep the namespace the kernel recorded, for a rule set of one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessBits {
    pub bits: u64,
    pub namespace_id: Option<u32>,
}

/// Computes and writes one process's bits for `slot`. Describes it again after the write: a
/// process that exec'd between the description and the write would otherwise keep bits of
/// its old image (the kernel's own write for the new image may have come before ours).
/// `generation` of the slot being switched to; `None` for the active slot's bits of a process
/// moved to another namespace (written whatever `slot_gen` says, which is kept).
fn reseed_one(
    procs: &mut BpfHashMap<&mut MapData, u32, ProcessState>,
    slot: usize,
    generation: Option<u32>,
    tgid: u32,
    describe: &mut dyn FnMut(u32) -> Option<ProcessBits>,
) -> Reseeded {
    let mut bits = match describe(tgid) {
        Some(b) => b,
        None => return Reseeded::Gone,
    };
    for attempt in 0..MAX_ATTEMPTS {
        let mut st = match procs.get(&tgid, 0) {
            Ok(st) if attempt == 0 && generation == Some(st.slot_gen[slot]) => {
                return Reseeded::Fresh
            }
            Ok(st) => st,
            Err(_) => ProcessState {
                start_ns: proc_start_ns(tgid),
                image: ImageKey {
                    exec_ns: 0,
                    tgid,
                    _pad: 0,
                },
                ..Default::default()
            },
        };
        st.selectors[slot] = bits.bits;
        if let Some(generation) = generation {
            st.slot_gen[slot] = generation;
        }
        if let Some(ns) = bits.namespace_id {
            if ns != st.namespace_id {
                // The other slot's bits are numbered in the old namespace's group; until the
                // flip makes this slot active they would be read in the new one's: fail closed.
                st.selectors[1 - slot] = u64::MAX;
            }
            st.namespace_id = ns;
        }
        if procs.insert(tgid, st, 0).is_err() {
            return Reseeded::NoRoom {
                start_ns: st.start_ns,
                bits: bits.bits,
                namespace_id: bits.namespace_id.unwrap_or(st.namespace_id),
            };
        }
        match describe(tgid) {
            Some(again) if again == bits => return Reseeded::Written,
            Some(again) => bits = again,
            None => {
                // It exited meanwhile: do not leave an entry the exit program already removed.
                let _ = procs.remove(&tgid);
                return Reseeded::Gone;
            }
        }
    }
    Reseeded::Written
}

/// Step 2 and 3 of the module doc for the pending `slot` with `generation`; `selector_count`
/// of the new rule set gives the fail-closed bits.
/// `unstored` receives `(tgid, start_ns, bits, namespace_id)` of the processes `PROCESSES`
/// had no room for.
pub(super) fn reseed(
    maps: &mut Maps,
    slot: u8,
    generation: u32,
    selector_count: u32,
    describe: &mut dyn FnMut(u32) -> Option<ProcessBits>,
    unstored: &mut Vec<(u32, u64, u64, u32)>,
) -> anyhow::Result<SwitchReport> {
    let start = Instant::now();
    let slot_i = usize::from(slot & 1);
    let fail_closed_bits = all_selectors(selector_count);
    let mut report = SwitchReport::default();
    // Processes /proc could not describe, by tgid, and in how many rounds.
    let mut undescribed: HashMap<u32, u32> = HashMap::new();
    let mut closed_images: HashSet<ImageKey> = HashSet::new();
    // Processes PROCESSES had no room for (start time, bits): not rescanned, and handed to
    // the engine once, which refuses them after the flip when an enforce-mode rule covers them.
    let mut no_room: HashMap<u32, (u64, u64, u32)> = HashMap::new();
    loop {
        let forks_before = stale_forks(maps)?;
        let entries = scan_processes(maps)?;
        let known: HashSet<u32> = entries.iter().map(|(t, _)| *t).collect();
        let mut stale: Vec<(u32, Option<ImageKey>)> = entries
            .into_iter()
            .filter(|(_, st)| st.slot_gen[slot_i] != generation)
            .map(|(t, st)| (t, Some(st.image)))
            .collect();
        stale.extend(
            proc_pids()
                .into_iter()
                .filter(|p| {
                    !known.contains(p) && !undescribed.contains_key(p) && !no_room.contains_key(p)
                })
                .map(|p| (p, None)),
        );
        // Kernel threads and exited processes stay undescribed: only kernel entries count.
        let pending: Vec<_> = stale
            .into_iter()
            .filter(|(t, image)| image.is_some() || !undescribed.contains_key(t))
            .collect();
        let forks_after = stale_forks(maps)?;
        log::debug!(
            "switch to slot {slot}, round {}: {} stale, {} stale forks during the scan",
            report.rounds,
            pending.len(),
            forks_after - forks_before
        );
        if pending.is_empty() && forks_after == forks_before {
            break;
        }
        if report.rounds == MAX_ROUNDS {
            report.stale_left = pending.iter().filter(|(_, i)| i.is_some()).count() as u32;
            log::warn!(
                "switch to slot {slot}: {} processes still stale after {MAX_ROUNDS} rounds",
                report.stale_left
            );
            break;
        }
        report.rounds += 1;
        let mut close: Vec<ImageKey> = Vec::new();
        let mut procs: BpfHashMap<&mut MapData, u32, ProcessState> =
            BpfHashMap::try_from(map(maps, MAP_PROCESSES)?)?;
        for (tgid, image) in pending {
            if let Some(img) = image.filter(|i| closed_images.contains(i)) {
                write_bits(&mut procs, slot_i, generation, tgid, img, fail_closed_bits);
                report.fail_closed += 1;
                continue;
            }
            match reseed_one(&mut procs, slot_i, Some(generation), tgid, describe) {
                Reseeded::Written => report.reseeded += 1,
                Reseeded::Fresh => {}
                Reseeded::NoRoom {
                    start_ns,
                    bits,
                    namespace_id,
                } => {
                    no_room.insert(tgid, (start_ns, bits, namespace_id));
                }
                Reseeded::Gone => {
                    let rounds = undescribed.entry(tgid).or_default();
                    *rounds += 1;
                    if let Some(img) = image {
                        if report.rounds >= FAIL_CLOSED_AFTER {
                            close.push(img);
                        }
                    }
                }
            }
        }
        if !close.is_empty() {
            let mut reseed_map: BpfHashMap<&mut MapData, ImageKey, ReseedEntry> =
                BpfHashMap::try_from(map(maps, MAP_RESEED)?)?;
            for img in close {
                if closed_images.insert(img) {
                    let entry = ReseedEntry {
                        selectors: fail_closed_bits,
                        generation,
                        _pad: 0,
                    };
                    if reseed_map.insert(img, entry, 0).is_err() {
                        log::warn!("RESEED full: forks of image {img:?} stay stale");
                    }
                }
            }
        }
    }
    unstored.extend(
        no_room
            .into_iter()
            .map(|(t, (start_ns, bits, ns))| (t, start_ns, bits, ns)),
    );
    report.reseed_us = start.elapsed().as_micros() as u64;
    Ok(report)
}

/// The bits of a process moved to a cgroup of another namespace, for the active `slot`: the
/// kernel gave it that namespace with every selector bit (fail closed, `cgroup_move.rs`), and
/// these are computed by the caller from its /proc facts, like a reseed's. Returns whether they
/// were written (not when the process is gone).
pub(super) fn refresh(
    maps: &mut Maps,
    slot: u8,
    tgid: u32,
    describe: &mut dyn FnMut(u32) -> Option<ProcessBits>,
) -> anyhow::Result<bool> {
    let mut procs: BpfHashMap<&mut MapData, u32, ProcessState> =
        BpfHashMap::try_from(map(maps, MAP_PROCESSES)?)?;
    Ok(
        match reseed_one(&mut procs, usize::from(slot & 1), None, tgid, describe) {
            Reseeded::Written => true,
            Reseeded::NoRoom { .. } => {
                log::warn!("process {tgid} moved between namespaces but PROCESSES has no room");
                false
            }
            Reseeded::Fresh | Reseeded::Gone => false,
        },
    )
}

/// Writes `bits` as the process's bits for `slot` unless it is gone or already current.
fn write_bits(
    procs: &mut BpfHashMap<&mut MapData, u32, ProcessState>,
    slot: usize,
    generation: u32,
    tgid: u32,
    image: ImageKey,
    bits: u64,
) {
    if let Ok(mut st) = procs.get(&tgid, 0) {
        if st.image == image && st.slot_gen[slot] != generation {
            st.selectors[slot] = bits;
            st.slot_gen[slot] = generation;
            let _ = procs.insert(tgid, st, 0);
        }
    }
}

/// Empties `RESEED` (entries of an earlier switch).
pub(super) fn clear_reseed(maps: &mut Maps) -> anyhow::Result<()> {
    let mut m: BpfHashMap<&mut MapData, ImageKey, ReseedEntry> =
        BpfHashMap::try_from(map(maps, MAP_RESEED)?)?;
    let keys: Vec<ImageKey> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = m.remove(&k);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_selectors_masks() {
        assert_eq!(all_selectors(0), 0);
        assert_eq!(all_selectors(3), 0b111);
        assert_eq!(all_selectors(64), u64::MAX);
    }
}
