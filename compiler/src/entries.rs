//! Building [`MapEntries`] (defined in `daemon-common`, next to the key and value types it
//! holds): a rule set's slot-independent entries with the slot byte added and every key laid
//! out as the kernel maps expect it.

use crate::ruleset::RuleSet;
use daemon_common::{self as dc, MapEntries};

/// Copies `src` into the start of a zero-filled array (callers checked the length).
fn fill<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = src.len().min(N);
    out[..n].copy_from_slice(&src[..n]);
    out
}

impl RuleSet {
    /// Everything to write for this rule set in `slot` (0 or 1) as the only group of the slot
    /// (table = slot). The loader must also delete the entries an earlier rule set left in that
    /// slot (keys it no longer has).
    pub fn map_entries(&self, slot: u8) -> MapEntries {
        self.table_entries(slot & 1)
    }

    /// Everything to write for this rule set as table `table` (a group of a slot,
    /// `daemon_common::table`): every key's slot byte holds the table.
    pub fn table_entries(&self, table: u8) -> MapEntries {
        let c = &self.compiled;
        let slot = table;
        let slot32 = u32::from(table);
        let path_lpm = |v: &[(Vec<u8>, u32, u64)]| -> Vec<(u32, dc::PathLpmData, u64)> {
            v.iter()
                .map(|(bytes, bits, mask)| {
                    (
                        8 + bits,
                        dc::PathLpmData {
                            slot,
                            bytes: fill(bytes),
                        },
                        *mask,
                    )
                })
                .collect()
        };
        // Arg LPM bytes start with the index byte.
        let arg_lpm = |v: &[(Vec<u8>, u32, u64)]| -> Vec<(u32, dc::ArgLpmData, u64)> {
            v.iter()
                .map(|(bytes, bits, mask)| {
                    let (index, value) = bytes
                        .split_first()
                        .map_or((0, &[][..]), |(i, rest)| (*i, rest));
                    (
                        8 + bits,
                        dc::ArgLpmData {
                            slot,
                            index,
                            bytes: fill(value),
                        },
                        *mask,
                    )
                })
                .collect()
        };
        MapEntries {
            slot_meta: self.meta,
            selectors: self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (slot32 * dc::MAX_SELECTORS as u32 + i as u32, *e))
                .collect(),
            bin_exact: c
                .bin_exact
                .iter()
                .map(|(path, mask)| {
                    (
                        dc::PathKey {
                            slot: slot32,
                            path: fill(path),
                        },
                        *mask,
                    )
                })
                .collect(),
            bin_inode: c
                .bin_inode
                .iter()
                .map(|(f, mask)| {
                    (
                        dc::BinInodeKey {
                            slot: slot32,
                            dev: f.dev,
                            ino: f.ino,
                        },
                        *mask,
                    )
                })
                .collect(),
            bin_prefix: path_lpm(&c.bin_prefix),
            bin_postfix: path_lpm(&c.bin_postfix),
            arg_exact: c
                .arg_exact
                .iter()
                .map(|((index, value), mask)| {
                    (
                        dc::ArgKey {
                            slot,
                            index: *index,
                            _pad: [0; 2],
                            value: fill(value),
                        },
                        *mask,
                    )
                })
                .collect(),
            arg_prefix: arg_lpm(&c.arg_prefix),
            arg_postfix: arg_lpm(&c.arg_postfix),
            namespaces: c
                .namespaces
                .iter()
                .map(|(id, mask)| {
                    (
                        dc::NamespaceKey {
                            slot: slot32,
                            namespace_id: *id,
                        },
                        *mask,
                    )
                })
                .collect(),
            dest_v4: c
                .v4
                .iter()
                .map(|(addr, bits, mask)| {
                    (
                        8 + bits,
                        dc::V4LpmData {
                            slot,
                            addr: fill(addr),
                        },
                        *mask,
                    )
                })
                .collect(),
            dest_v6: c
                .v6
                .iter()
                .map(|(addr, bits, mask)| {
                    (
                        8 + bits,
                        dc::V6LpmData {
                            slot,
                            addr: fill(addr),
                        },
                        *mask,
                    )
                })
                .collect(),
            ports: c
                .ports
                .iter()
                .map(|(port, bits, mask)| {
                    (
                        8 + bits,
                        dc::PortLpmData {
                            slot,
                            port: fill(port),
                        },
                        *mask,
                    )
                })
                .collect(),
            file: self.files.entries(slot32),
            syscall_selectors: self.syscall_keys(slot32),
            syscall_conds: self
                .syscalls
                .iter()
                .map(|s| {
                    (
                        slot32 * dc::MAX_SELECTORS as u32 + u32::from(s.index),
                        s.kernel,
                    )
                })
                .collect(),
        }
    }

    /// `SYSCALL_SELECTORS` of this rule set as table `table`: per call, the selectors naming it.
    fn syscall_keys(&self, table: u32) -> Vec<(dc::SyscallKey, u64)> {
        let mut by_call: std::collections::BTreeMap<u32, u64> = Default::default();
        for s in &self.syscalls {
            for call in &s.calls {
                *by_call.entry(*call).or_default() |= 1 << s.index;
            }
        }
        by_call
            .into_iter()
            .map(|(index, mask)| (dc::SyscallKey { table, index }, mask))
            .collect()
    }
}
