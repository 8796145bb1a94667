//! `MapEntries`: the exact keys and values to write into the kernel maps for one *table* (a
//! group of a slot, see "Groups" in the crate doc), and `SlotEntries`: every table of a slot and
//! the slot's namespace -> group map. Built by the compiler (`bulwark_compiler::RuleSet::
//! map_entries`, `NodeRuleSet::slot_entries`). The loader writes them verbatim (array index /
//! hash key / LPM prefix length + data -> value) and needs no policy knowledge, so it depends
//! on this contract only. Userspace only (`user` feature): it allocates.

use crate::*;
use alloc::vec::Vec;

/// Everything to write for one table of a rule set (its keys' `slot` field holds the table).
/// LPM entries are `(prefix_len, data, mask)` where `prefix_len` counts every bit of `data` that
/// takes part, the slot (table) byte included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    /// `SLOT_META[table]`.
    pub slot_meta: SlotMeta,
    /// `SELECTORS[table * MAX_SELECTORS + i]`, for the used selectors only.
    pub selectors: Vec<(u32, SelectorEntry)>,
    pub bin_exact: Vec<(PathKey, u64)>,
    /// Identities of the `In`/`NotIn` binary values.
    pub bin_inode: Vec<(BinInodeKey, u64)>,
    pub bin_prefix: Vec<(u32, PathLpmData, u64)>,
    /// Path bytes reversed.
    pub bin_postfix: Vec<(u32, PathLpmData, u64)>,
    pub arg_exact: Vec<(ArgKey, u64)>,
    pub arg_prefix: Vec<(u32, ArgLpmData, u64)>,
    /// Value bytes reversed.
    pub arg_postfix: Vec<(u32, ArgLpmData, u64)>,
    pub namespaces: Vec<(NamespaceKey, u64)>,
    pub dest_v4: Vec<(u32, V4LpmData, u64)>,
    pub dest_v6: Vec<(u32, V6LpmData, u64)>,
    pub ports: Vec<(u32, PortLpmData, u64)>,
    /// `SYSCALL_SELECTORS`: per call (filter index), the `hook: syscall` selectors naming it.
    pub syscall_selectors: Vec<(SyscallKey, u64)>,
    /// `SYSCALL_CONDS[table * MAX_SELECTORS + i]` of the `hook: syscall` selectors.
    pub syscall_conds: Vec<(u32, SyscallSelectorConds)>,
    /// The `hook: file` maps of the table (daemon-common `file`).
    pub file: FileEntries,
}

/// The `hook: file` entries of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileEntries {
    /// `FILE_TABLES[table]` (all 0: the table has no `hook: file` selector).
    pub table: FileTable,
    /// `FILE_SELECTORS[table * MAX_SELECTORS + i]`.
    pub selectors: Vec<(u32, FileSelectorEntry)>,
    pub exact: Vec<(PathKey, u64)>,
    pub prefix: Vec<(u32, PathLpmData, u64)>,
    /// Path bytes reversed.
    pub postfix: Vec<(u32, PathLpmData, u64)>,
    /// Identities of the files the `In` paths named when the rules were loaded.
    pub inode: Vec<(BinInodeKey, u64)>,
    /// `SYSCALL_FILTER` bits the file hook needs, by filter index ([`FileCall::bits`]); the
    /// same for every table of an architecture, present only in tables with file selectors.
    pub calls: Vec<(u32, u32)>,
}

/// Path LPM entries keyed for table `t8`.
fn path_lpm_in(v: &[(u32, PathLpmData, u64)], t8: u8) -> Vec<(u32, PathLpmData, u64)> {
    v.iter()
        .map(|(b, d, m)| (*b, PathLpmData { slot: t8, ..*d }, *m))
        .collect()
}

impl FileEntries {
    /// Number of map entries (the calls are filter bits, not entries).
    pub fn len(&self) -> usize {
        self.selectors.len()
            + self.exact.len()
            + self.prefix.len()
            + self.postfix.len()
            + self.inode.len()
    }

    /// True when there is no map entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same entries keyed for table `table`.
    pub fn in_table(&self, table: u32) -> FileEntries {
        let t8 = table as u8;
        let base = table * MAX_SELECTORS as u32;
        let lpm = |v: &[(u32, PathLpmData, u64)]| path_lpm_in(v, t8);
        FileEntries {
            table: self.table,
            selectors: self
                .selectors
                .iter()
                .map(|(i, e)| (base + i % MAX_SELECTORS as u32, *e))
                .collect(),
            exact: self
                .exact
                .iter()
                .map(|(k, m)| (PathKey { slot: table, ..*k }, *m))
                .collect(),
            prefix: lpm(&self.prefix),
            postfix: lpm(&self.postfix),
            inode: self
                .inode
                .iter()
                .map(|(k, m)| (BinInodeKey { slot: table, ..*k }, *m))
                .collect(),
            calls: self.calls.clone(),
        }
    }
}

impl MapEntries {
    /// Number of entries over all maps (selectors and matchers, not `slot_meta`).
    pub fn len(&self) -> usize {
        self.selectors.len()
            + self.bin_exact.len()
            + self.bin_inode.len()
            + self.bin_prefix.len()
            + self.bin_postfix.len()
            + self.arg_exact.len()
            + self.arg_prefix.len()
            + self.arg_postfix.len()
            + self.namespaces.len()
            + self.dest_v4.len()
            + self.dest_v6.len()
            + self.ports.len()
            + self.syscall_selectors.len()
            + self.syscall_conds.len()
            + self.file.len()
    }

    /// True when there is nothing but `slot_meta` to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same entries keyed for table `table` (every key's slot field, every selector index).
    pub fn in_table(&self, table: u32) -> MapEntries {
        let t8 = table as u8;
        let base = table * MAX_SELECTORS as u32;
        let lpm = |v: &[(u32, PathLpmData, u64)]| path_lpm_in(v, t8);
        let arg_lpm = |v: &[(u32, ArgLpmData, u64)]| -> Vec<(u32, ArgLpmData, u64)> {
            v.iter()
                .map(|(b, d, m)| (*b, ArgLpmData { slot: t8, ..*d }, *m))
                .collect()
        };
        MapEntries {
            slot_meta: self.slot_meta,
            selectors: self
                .selectors
                .iter()
                .map(|(i, e)| (base + i % MAX_SELECTORS as u32, *e))
                .collect(),
            bin_exact: self
                .bin_exact
                .iter()
                .map(|(k, m)| (PathKey { slot: table, ..*k }, *m))
                .collect(),
            bin_inode: self
                .bin_inode
                .iter()
                .map(|(k, m)| (BinInodeKey { slot: table, ..*k }, *m))
                .collect(),
            bin_prefix: lpm(&self.bin_prefix),
            bin_postfix: lpm(&self.bin_postfix),
            arg_exact: self
                .arg_exact
                .iter()
                .map(|(k, m)| (ArgKey { slot: t8, ..*k }, *m))
                .collect(),
            arg_prefix: arg_lpm(&self.arg_prefix),
            arg_postfix: arg_lpm(&self.arg_postfix),
            namespaces: self
                .namespaces
                .iter()
                .map(|(k, m)| (NamespaceKey { slot: table, ..*k }, *m))
                .collect(),
            dest_v4: self
                .dest_v4
                .iter()
                .map(|(b, d, m)| (*b, V4LpmData { slot: t8, ..*d }, *m))
                .collect(),
            dest_v6: self
                .dest_v6
                .iter()
                .map(|(b, d, m)| (*b, V6LpmData { slot: t8, ..*d }, *m))
                .collect(),
            ports: self
                .ports
                .iter()
                .map(|(b, d, m)| (*b, PortLpmData { slot: t8, ..*d }, *m))
                .collect(),
            syscall_selectors: self
                .syscall_selectors
                .iter()
                .map(|(k, m)| (SyscallKey { table, ..*k }, *m))
                .collect(),
            syscall_conds: self
                .syscall_conds
                .iter()
                .map(|(i, c)| (base + i % MAX_SELECTORS as u32, *c))
                .collect(),
            file: self.file.in_table(table),
        }
    }

    /// `SYSCALL_FILTER` bits these entries ask for, by filter index: `WANT_SYSCALL` for every
    /// call a selector names, `WANT_EXIT` too when one of those selectors is decided at exit.
    pub fn syscall_filter(&self, filter: &mut [u32]) {
        for (key, mask) in &self.syscall_selectors {
            if key.index >= SYSCALL_COMPAT_BASE {
                if let Some(native) = filter.get_mut((key.index - SYSCALL_COMPAT_BASE) as usize) {
                    *native |= SYSCALL_WANT_COMPAT;
                }
            }
            let Some(slot) = filter.get_mut(key.index as usize) else {
                continue;
            };
            *slot |= SYSCALL_WANT_SYSCALL;
            let at_exit = self
                .syscall_conds
                .iter()
                .any(|(i, c)| c.at_exit != 0 && mask & (1u64 << (i % MAX_SELECTORS as u32)) != 0);
            if at_exit {
                *slot |= SYSCALL_WANT_EXIT;
            }
        }
        for &(index, bits) in &self.file.calls {
            if index >= SYSCALL_COMPAT_BASE {
                if let Some(native) = filter.get_mut((index - SYSCALL_COMPAT_BASE) as usize) {
                    *native |= SYSCALL_WANT_COMPAT;
                }
            }
            if let Some(slot) = filter.get_mut(index as usize) {
                *slot |= bits;
            }
        }
    }
}

/// Everything to write for one slot: its tables (each [`MapEntries`] keyed by its table, the
/// default group's first) and `GROUPS` (namespace -> group; a namespace without an entry is in
/// group 0).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlotEntries {
    /// `(table, entries)`; tables of the slot not listed are written empty.
    pub tables: Vec<(u32, MapEntries)>,
    pub groups: Vec<(NamespaceKey, u32)>,
}

impl SlotEntries {
    /// A slot with one group (group 0 of `slot`) and no namespace groups: the layout of a rule
    /// set that fits one group. Its watch table is the same entries (the egress selectors'
    /// destination conditions, with their mode and actions, are what watching looks at).
    pub fn single(slot: u8, entries: MapEntries) -> SlotEntries {
        let watch = table(u32::from(slot), WATCH_GROUP as u32);
        let watch_entries = if entries.slot_meta.hook_egress != 0 {
            entries.in_table(watch)
        } else {
            MapEntries::default()
        };
        SlotEntries {
            tables: alloc::vec![(table(u32::from(slot), 0), entries), (watch, watch_entries)],
            groups: Vec::new(),
        }
    }

    /// Most selectors of one table (a process's bits cover at most its group's).
    pub fn max_selector_count(&self) -> u32 {
        self.tables
            .iter()
            .map(|(_, e)| e.slot_meta.selector_count)
            .max()
            .unwrap_or(0)
    }
}
