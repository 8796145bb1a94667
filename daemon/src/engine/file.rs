//! The engine's side of `hook: file` (daemon-common `file`): writing and reading a slot's
//! `FILE_TABLES`, `FILE_SELECTORS` and path maps. The calls the hook watches reach the kernel
//! as `SYSCALL_FILTER` bits through `MapEntries::syscall_filter`, so attaching the syscall
//! programs while a rule set has file selectors is the syscall engine's job (`super::syscall`).

use aya::maps::{Array, HashMap, MapData};
use daemon_common::*;

use super::maps::{absent_is_ok, map, Maps};
use super::slots::{read_hash, read_lpm, write_hash, write_lpm, write_selector_array};

impl super::Engine {
    /// Removes the io_uring opens in flight (`FILE_URING_INFLIGHT`) of processes `alive` says
    /// are gone: an open that ended with no completion to judge it (a linked request failed
    /// with its completion skipped) would else hold its entry for good, and a full table fails
    /// opens closed. How many it removed.
    pub fn reap_uring_inflight(&mut self, alive: impl Fn(u32) -> bool) -> anyhow::Result<usize> {
        reap_uring_inflight(&mut self.maps, alive)
    }
}

fn reap_uring_inflight(maps: &mut Maps, alive: impl Fn(u32) -> bool) -> anyhow::Result<usize> {
    let mut m: HashMap<&mut MapData, u64, FileInflight> =
        HashMap::try_from(map(maps, MAP_FILE_URING_INFLIGHT)?)?;
    let stale: Vec<u64> = m
        .iter()
        .filter_map(Result::ok)
        .filter(|(_, f)| !alive(f.tgid))
        .map(|(req, _)| req)
        .collect();
    let mut removed = 0;
    for req in &stale {
        // Read again just before removing: the request's address may have been reused by a
        // live process's open since the walk (an entry judged meanwhile, then a new one), and
        // removing that entry would leave its open unjudged.
        match m.get(req, 0) {
            Ok(f) if !alive(f.tgid) => {
                absent_is_ok(m.remove(req))?;
                removed += 1;
            }
            _ => {}
        }
    }
    Ok(removed)
}

/// Writes the file maps of `slot`: `FILE_TABLES` and `FILE_SELECTORS` of the tables `touched`
/// (cleared) and those given, and the path maps (the slot's old keys removed).
pub(super) fn write_slot(
    maps: &mut Maps,
    slot: u8,
    tables: &[(u32, MapEntries)],
    touched: &[u32],
) -> anyhow::Result<()> {
    macro_rules! each {
        ($field:ident) => {
            tables
                .iter()
                .flat_map(|(_, m)| m.file.$field.iter().cloned())
                .collect::<Vec<_>>()
        };
    }
    write_hash(maps, MAP_FILE_EXACT, slot, &each!(exact), |k: &PathKey| {
        k.slot as u8
    })?;
    write_hash(
        maps,
        MAP_FILE_INODE,
        slot,
        &each!(inode),
        |k: &BinInodeKey| k.slot as u8,
    )?;
    write_lpm(
        maps,
        MAP_FILE_PREFIX,
        slot,
        &each!(prefix),
        |k: &PathLpmData| k.slot,
    )?;
    write_lpm(
        maps,
        MAP_FILE_POSTFIX,
        slot,
        &each!(postfix),
        |k: &PathLpmData| k.slot,
    )?;
    write_selector_array(
        maps,
        MAP_FILE_SELECTORS,
        touched,
        tables
            .iter()
            .flat_map(|(t, e)| e.file.selectors.iter().map(move |(i, v)| (*t, *i, *v))),
    )?;
    let mut t: Array<&mut MapData, FileTable> = Array::try_from(map(maps, MAP_FILE_TABLES)?)?;
    for &table in touched {
        let v = tables
            .iter()
            .find(|(u, _)| *u == table)
            .map_or(FileTable::default(), |(_, m)| m.file.table);
        t.set(table, v, 0)?;
    }
    Ok(())
}

/// The file entries of `table` as the kernel holds them (the calls are filter bits, not
/// read back).
pub(super) fn read(maps: &Maps, table: u32) -> anyhow::Result<FileEntries> {
    let t8 = table as u8;
    let tables: Array<&MapData, FileTable> = Array::try_from(maps.get(MAP_FILE_TABLES)?)?;
    Ok(FileEntries {
        table: tables.get(&table, 0)?,
        selectors: super::slots::read_selector_array(maps, MAP_FILE_SELECTORS, table)?,
        exact: read_hash(maps, MAP_FILE_EXACT, t8, |k: &PathKey| k.slot as u8)?,
        prefix: read_lpm(maps, MAP_FILE_PREFIX, t8, |k: &PathLpmData| k.slot)?,
        postfix: read_lpm(maps, MAP_FILE_POSTFIX, t8, |k: &PathLpmData| k.slot)?,
        inode: read_hash(maps, MAP_FILE_INODE, t8, |k: &BinInodeKey| k.slot as u8)?,
        calls: Vec::new(),
    })
}
