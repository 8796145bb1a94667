//! The rule-set slots: the atomic A/B [`Engine::apply`] (write the inactive slot, set it
//! pending, make every process current for it through [`super::switch`], flip), writing one
//! slot's entries — every table (group) of it and its `GROUPS` — and reading them back. A
//! key's slot byte holds its table; `table & 1` is the slot.

use anyhow::{bail, Context};
use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, MapData,
};
use daemon_common::*;

use super::maps::{map, Maps};
use super::switch::ProcessBits;
use super::{switch, Engine, SwitchReport};

/// The slot a table belongs to.
fn slot_of_table(table: u8) -> u8 {
    table & 1
}

/// Deletes every key of an LPM map whose table (first data byte) is one of `slot`.
fn clear_lpm<K: aya::Pod>(
    m: &mut LpmTrie<&mut MapData, K, u64>,
    slot: u8,
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<()> {
    let keys: Vec<Key<K>> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        let data = k.data();
        if slot_of_table(slot_of(&data)) == slot {
            m.remove(&k)?;
        }
    }
    Ok(())
}

/// The set entries of the per-selector array `name` for `table` (entry `table * MAX_SELECTORS
/// + i` for selector `i`; entries left at their default are not listed): the read side of
/// [`write_selector_array`].
pub(super) fn read_selector_array<V: aya::Pod + Default + PartialEq>(
    maps: &Maps,
    name: &str,
    table: u32,
) -> anyhow::Result<Vec<(u32, V)>> {
    let a: Array<&MapData, V> = Array::try_from(maps.get(name)?)?;
    let base = table * MAX_SELECTORS as u32;
    let mut out = Vec::new();
    for i in base..base + MAX_SELECTORS as u32 {
        let v = a.get(&i, 0)?;
        if v != V::default() {
            out.push((i, v));
        }
    }
    Ok(out)
}

/// The entries of `name` (a hash map) whose key is of `table`.
pub(super) fn read_hash<K: aya::Pod>(
    maps: &Maps,
    name: &str,
    table: u8,
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<Vec<(K, u64)>> {
    let m: HashMap<&MapData, K, u64> = HashMap::try_from(maps.get(name)?)?;
    let mut out = Vec::new();
    for kv in m.iter() {
        let (k, v) = kv?;
        if slot_of(&k) == table {
            out.push((k, v));
        }
    }
    Ok(out)
}
/// The entries of `name` (an LPM trie) whose data is of `table`.
pub(super) fn read_lpm<K: aya::Pod>(
    maps: &Maps,
    name: &str,
    table: u8,
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<Vec<(u32, K, u64)>> {
    let m: LpmTrie<&MapData, K, u64> = LpmTrie::try_from(maps.get(name)?)?;
    let mut out = Vec::new();
    for kv in m.iter() {
        let (k, v) = kv?;
        let data = k.data();
        if slot_of(&data) == table {
            out.push((k.prefix_len(), data, v));
        }
    }
    Ok(out)
}

pub(super) fn write_lpm<K: aya::Pod>(
    ebpf: &mut Maps,
    name: &str,
    slot: u8,
    entries: &[(u32, K, u64)],
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<()> {
    let mut m: LpmTrie<&mut MapData, K, u64> = LpmTrie::try_from(map(ebpf, name)?)?;
    clear_lpm(&mut m, slot, &slot_of)?;
    for (bits, data, hits) in entries {
        if slot_of_table(slot_of(data)) != slot {
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

/// Rewrites the per-selector array `name` (entry `table * MAX_SELECTORS + i` for selector `i`
/// of a table) for the tables `touched`: each of their entries back to the default, then
/// `entries` as `(table, index, value)`. An index outside its table's range is refused (it
/// would overwrite another table's selector).
pub(super) fn write_selector_array<V: aya::Pod + Default>(
    ebpf: &mut Maps,
    name: &str,
    touched: &[u32],
    entries: impl IntoIterator<Item = (u32, u32, V)>,
) -> anyhow::Result<()> {
    let mut a: Array<&mut MapData, V> = Array::try_from(map(ebpf, name)?)?;
    for &t in touched {
        let base = t * MAX_SELECTORS as u32;
        for i in 0..MAX_SELECTORS as u32 {
            a.set(base + i, V::default(), 0)?;
        }
    }
    for (t, idx, value) in entries {
        let base = t * MAX_SELECTORS as u32;
        if idx < base || idx >= base + MAX_SELECTORS as u32 {
            bail!(
                "{name}: selector index {idx} is outside table {t} ({base}..{})",
                base + MAX_SELECTORS as u32
            );
        }
        a.set(idx, value, 0)
            .with_context(|| format!("writing {name}"))?;
    }
    Ok(())
}

pub(super) fn write_hash<K: aya::Pod>(
    ebpf: &mut Maps,
    name: &str,
    slot: u8,
    entries: &[(K, u64)],
    slot_of: impl Fn(&K) -> u8,
) -> anyhow::Result<()> {
    let mut m: HashMap<&mut MapData, K, u64> = HashMap::try_from(map(ebpf, name)?)?;
    let keys: Vec<K> = m.keys().filter_map(Result::ok).collect();
    for k in keys {
        if slot_of_table(slot_of(&k)) == slot {
            m.remove(&k)?;
        }
    }
    for (k, hits) in entries {
        if slot_of_table(slot_of(k)) != slot {
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

/// A slot's entries in a form that compares equal exactly when the kernel would hold the same
/// thing: each list sorted (map order means nothing), selectors and syscall conditions left at
/// their default dropped, tables that hold nothing dropped.
fn canonical(e: &SlotEntries) -> Vec<Vec<String>> {
    fn sorted<T: std::fmt::Debug>(v: &[T]) -> Vec<String> {
        let mut out: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        out.sort_unstable();
        out
    }
    let mut out = vec![sorted(&e.groups)];
    // The generation is the engine's count of writes, not part of the rule set (every table
    // of a slot carries it, empty ones too).
    let unwritten = |m: &MapEntries| {
        m.is_empty()
            && SlotMeta {
                generation: 0,
                ..m.slot_meta
            } == SlotMeta::default()
    };
    let mut tables: Vec<&(u32, MapEntries)> =
        e.tables.iter().filter(|(_, m)| !unwritten(m)).collect();
    tables.sort_by_key(|(t, _)| *t);
    for (t, e) in tables {
        let selectors: Vec<_> = e
            .selectors
            .iter()
            .filter(|(_, s)| *s != SelectorEntry::default())
            .collect();
        let meta = SlotMeta {
            generation: 0,
            ..e.slot_meta
        };
        // Selectors without argument or return conditions leave theirs at the default, which
        // reads back as nothing.
        let syscall_conds: Vec<_> = e
            .syscall_conds
            .iter()
            .filter(|(_, c)| *c != SyscallSelectorConds::default())
            .collect();
        out.extend([
            vec![format!("table {t}: {meta:?}")],
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
            sorted(&e.syscall_selectors),
            sorted(&syscall_conds),
            vec![format!("file table {:?}", e.file.table)],
            sorted(&e.file.selectors),
            sorted(&e.file.exact),
            sorted(&e.file.prefix),
            sorted(&e.file.postfix),
            sorted(&e.file.inode),
        ]);
    }
    out
}

/// The tables of `slot`, group 0 first and the watch group last.
fn tables_of(slot: u8) -> impl Iterator<Item = u32> {
    (0..=WATCH_GROUP as u32).map(move |g| table(u32::from(slot), g))
}

impl Engine {
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

    /// Atomic switch to a rule set of one group (table = slot): [`Engine::apply_slot`] with
    /// `entries_for_slot(slot)` as the slot's only table and the namespaces processes have.
    pub fn apply(
        &mut self,
        entries_for_slot: impl FnOnce(u8) -> MapEntries,
        mut describe: impl FnMut(u32) -> Option<u64>,
    ) -> anyhow::Result<u8> {
        self.apply_slot(
            |slot| SlotEntries::single(slot, entries_for_slot(slot)),
            |tgid| {
                describe(tgid).map(|bits| ProcessBits {
                    bits,
                    namespace_id: None,
                })
            },
        )
    }

    /// Atomic switch to a new rule set (see the module doc and [`switch`]): write
    /// `entries_for_slot(slot)` (every table and `GROUPS`) into the inactive slot with a new
    /// generation, set it pending, wait until every program that started before has finished,
    /// then give every process whose bits are stale for the slot the bits `describe(tgid)`
    /// computes (the compiler's reference evaluator over the process's /proc facts, in the
    /// group of the namespace it names; `None`: not describable, e.g. exited) until none is
    /// stale, flip the active slot and clear pending. Returns the new active slot
    /// ([`Engine::last_switch`] says what the reseed did). On error the old rule set stays
    /// active.
    pub fn apply_slot(
        &mut self,
        entries_for_slot: impl FnOnce(u8) -> SlotEntries,
        mut describe: impl FnMut(u32) -> Option<ProcessBits>,
    ) -> anyhow::Result<u8> {
        let slot = 1 - self.active;
        let mut e = entries_for_slot(slot);
        // Never 0 (a slot no exec has evaluated), distinct for every write of a slot; every
        // table of the slot carries it.
        let generation = (self.generation as u32).wrapping_add(1).max(1);
        for (_, t) in &mut e.tables {
            t.slot_meta.generation = generation;
        }
        let syscall_filter = super::syscall::filter_of(&e.tables);
        let r = switch::clear_reseed(&mut self.maps)
            .and_then(|()| self.write_slot(slot, &e))
            .and_then(|()| self.cover_syscalls(&syscall_filter, true));
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
                e.max_selector_count(),
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
        // Only the new rule set's calls from now on; the programs go when it names none.
        if let Err(err) = self.cover_syscalls(&syscall_filter, false) {
            log::warn!("narrowing the syscall filter to the new rule set: {err:#}");
        }
        if !self.noop {
            self.refuse_unstored(slot, &e, &unstored);
            if let Err(err) = self.sweep_existing_sockets() {
                log::warn!("checking the connections that existed before this rule set: {err:#}");
            }
        }
        self.retire_other_builds();
        Ok(slot)
    }

    /// Whether the kernel's `slot` holds exactly `expected` (a restarted daemon asks whether the
    /// rule set it compiled is the one its predecessor left in force, to name the policies of
    /// the matches recorded before the restart).
    pub fn slot_holds(&self, slot: u8, expected: &SlotEntries) -> anyhow::Result<bool> {
        Ok(canonical(&self.read_slot(slot)?) == canonical(expected))
    }

    /// The entries of `slot` as the kernel holds them: every table (selectors left at their
    /// default are not listed) and `GROUPS`.
    pub fn read_slot(&self, slot: u8) -> anyhow::Result<SlotEntries> {
        let m = &self.maps;
        let meta: Array<&MapData, SlotMeta> = Array::try_from(m.get(MAP_SLOT_META)?)?;
        let mut tables = Vec::new();
        for t in tables_of(slot) {
            let selectors = read_selector_array(m, MAP_SELECTORS, t)?;
            let t8 = t as u8;
            tables.push((
                t,
                MapEntries {
                    slot_meta: meta.get(&t, 0)?,
                    selectors,
                    bin_exact: read_hash(m, MAP_BIN_EXACT, t8, |k: &PathKey| k.slot as u8)?,
                    bin_inode: read_hash(m, MAP_BIN_INODE, t8, |k: &BinInodeKey| k.slot as u8)?,
                    bin_prefix: read_lpm(m, MAP_BIN_PREFIX, t8, |k: &PathLpmData| k.slot)?,
                    bin_postfix: read_lpm(m, MAP_BIN_POSTFIX, t8, |k: &PathLpmData| k.slot)?,
                    arg_exact: read_hash(m, MAP_ARG_EXACT, t8, |k: &ArgKey| k.slot)?,
                    arg_prefix: read_lpm(m, MAP_ARG_PREFIX, t8, |k: &ArgLpmData| k.slot)?,
                    arg_postfix: read_lpm(m, MAP_ARG_POSTFIX, t8, |k: &ArgLpmData| k.slot)?,
                    namespaces: read_hash(m, MAP_NAMESPACES, t8, |k: &NamespaceKey| k.slot as u8)?,
                    dest_v4: read_lpm(m, MAP_DEST_V4, t8, |k: &V4LpmData| k.slot)?,
                    dest_v6: read_lpm(m, MAP_DEST_V6, t8, |k: &V6LpmData| k.slot)?,
                    ports: read_lpm(m, MAP_PORTS, t8, |k: &PortLpmData| k.slot)?,
                    syscall_selectors: super::syscall::read_keys(m, t)?,
                    syscall_conds: super::syscall::read_conds(m, t)?,
                    file: super::file::read(m, t)?,
                },
            ));
        }
        let g: HashMap<&MapData, NamespaceKey, u32> = HashMap::try_from(m.get(MAP_GROUPS)?)?;
        let mut groups = Vec::new();
        for kv in g.iter() {
            let (k, v) = kv?;
            if k.slot == u32::from(slot) {
                groups.push((k, v));
            }
        }
        Ok(SlotEntries { tables, groups })
    }

    /// Recomputes the active slot's bits of a process moved to a cgroup of another namespace
    /// without exec (`EVENT_PROCESS_MOVED`: the kernel gave it the new namespace with every
    /// selector bit meanwhile) with what `describe` returns from its /proc facts, like a
    /// switch's reseed. Returns whether they were written (not when the process is gone).
    pub fn refresh_process(
        &mut self,
        tgid: u32,
        mut describe: impl FnMut(u32) -> Option<ProcessBits>,
    ) -> anyhow::Result<bool> {
        switch::refresh(&mut self.maps, self.active, tgid, &mut describe)
    }

    /// Writes the syscall filter (`keep`: ORed with what it holds, during a switch) and
    /// attaches or detaches the syscall programs to match (pinning or unpinning their links
    /// when the engine is pinned).
    fn cover_syscalls(&mut self, filter: &[u32], keep: bool) -> anyhow::Result<()> {
        let wanted = super::syscall::write_filter(&mut self.maps, filter, keep)?;
        if self.noop {
            return Ok(());
        }
        let pins = self.pins.as_ref().map(super::adopt::Pins::dir);
        self.syscall.set(self.ebpf.as_mut(), pins, wanted)
    }

    /// What the last successful [`Engine::apply`] did to running processes.
    pub fn last_switch(&self) -> &SwitchReport {
        &self.last_switch
    }

    fn write_slot(&mut self, slot: u8, e: &SlotEntries) -> anyhow::Result<()> {
        for (t, _) in &e.tables {
            if *t as usize >= TABLES || slot_of_table(*t as u8) != slot {
                bail!("table {t} given while writing slot {slot}");
            }
        }
        let ebpf = &mut self.maps;
        // Tables the slot held before (their meta was written) or holds now: only those have
        // selectors to clear and meta to rewrite (a switch costs what the sets use, not
        // every table a slot could have).
        let touched: Vec<u32> = {
            let meta: Array<&MapData, SlotMeta> = Array::try_from(ebpf.get(MAP_SLOT_META)?)?;
            let mut v = Vec::new();
            for t in tables_of(slot) {
                let old = meta.get(&t, 0)?;
                if old != SlotMeta::default() || e.tables.iter().any(|(u, _)| *u == t) {
                    v.push(t);
                }
            }
            v
        };
        write_selector_array(
            ebpf,
            MAP_SELECTORS,
            &touched,
            e.tables
                .iter()
                .flat_map(|(t, m)| m.selectors.iter().map(move |(i, v)| (*t, *i, *v))),
        )?;
        // One map holds every table of the slot: all tables' entries are written together.
        macro_rules! each {
            ($field:ident) => {
                e.tables
                    .iter()
                    .flat_map(|(_, m)| m.$field.iter().cloned())
                    .collect::<Vec<_>>()
            };
        }
        write_hash(
            ebpf,
            MAP_BIN_EXACT,
            slot,
            &each!(bin_exact),
            |k: &PathKey| k.slot as u8,
        )?;
        write_hash(
            ebpf,
            MAP_BIN_INODE,
            slot,
            &each!(bin_inode),
            |k: &BinInodeKey| k.slot as u8,
        )?;
        write_lpm(
            ebpf,
            MAP_BIN_PREFIX,
            slot,
            &each!(bin_prefix),
            |k: &PathLpmData| k.slot,
        )?;
        write_lpm(
            ebpf,
            MAP_BIN_POSTFIX,
            slot,
            &each!(bin_postfix),
            |k: &PathLpmData| k.slot,
        )?;
        write_hash(
            ebpf,
            MAP_ARG_EXACT,
            slot,
            &each!(arg_exact),
            |k: &ArgKey| k.slot,
        )?;
        write_lpm(
            ebpf,
            MAP_ARG_PREFIX,
            slot,
            &each!(arg_prefix),
            |k: &ArgLpmData| k.slot,
        )?;
        write_lpm(
            ebpf,
            MAP_ARG_POSTFIX,
            slot,
            &each!(arg_postfix),
            |k: &ArgLpmData| k.slot,
        )?;
        write_hash(
            ebpf,
            MAP_NAMESPACES,
            slot,
            &each!(namespaces),
            |k: &NamespaceKey| k.slot as u8,
        )?;
        write_lpm(ebpf, MAP_DEST_V4, slot, &each!(dest_v4), |k: &V4LpmData| {
            k.slot
        })?;
        write_lpm(ebpf, MAP_DEST_V6, slot, &each!(dest_v6), |k: &V6LpmData| {
            k.slot
        })?;
        write_lpm(ebpf, MAP_PORTS, slot, &each!(ports), |k: &PortLpmData| {
            k.slot
        })?;
        {
            // GROUPS keys carry the slot itself (not a table): slot 0 or 1.
            let mut g: HashMap<&mut MapData, NamespaceKey, u32> =
                HashMap::try_from(map(ebpf, MAP_GROUPS)?)?;
            let keys: Vec<NamespaceKey> = g.keys().filter_map(Result::ok).collect();
            for k in keys {
                if k.slot == u32::from(slot) {
                    g.remove(&k)?;
                }
            }
            for (k, group) in &e.groups {
                if k.slot != u32::from(slot) || *group as usize >= MAX_GROUPS {
                    bail!("GROUPS entry {k:?} -> {group} given while writing slot {slot}");
                }
                g.insert(k, group, 0).context("writing GROUPS: map full")?;
            }
        }
        super::syscall::write_slot(ebpf, slot, &e.tables, &touched)?;
        super::file::write_slot(ebpf, slot, &e.tables, &touched)?;
        let mut meta: Array<&mut MapData, SlotMeta> = Array::try_from(map(ebpf, MAP_SLOT_META)?)?;
        for t in touched {
            let m = e
                .tables
                .iter()
                .find(|(u, _)| *u == t)
                .map_or(SlotMeta::default(), |(_, m)| m.slot_meta);
            meta.set(t, m, 0)?;
        }
        Ok(())
    }
}
