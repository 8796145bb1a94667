//! `MapEntries`: the exact keys and values to write into the kernel maps for one slot. The
//! loader writes them verbatim (array index / hash key / LPM prefix length + data -> value)
//! and needs no policy knowledge.

use crate::ruleset::RuleSet;
use daemon_common as dc;

/// Everything to write for one slot of a rule set. LPM entries are `(prefix_len, data, mask)`
/// where `prefix_len` counts every bit of `data` that takes part, the slot byte included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEntries {
    /// `SLOT_META[slot]`.
    pub slot_meta: dc::SlotMeta,
    /// `SELECTORS[slot * MAX_SELECTORS + i]`, for the used selectors only.
    pub selectors: Vec<(u32, dc::SelectorEntry)>,
    pub bin_exact: Vec<(dc::PathKey, u64)>,
    pub bin_prefix: Vec<(u32, dc::PathLpmData, u64)>,
    /// Path bytes reversed.
    pub bin_postfix: Vec<(u32, dc::PathLpmData, u64)>,
    pub arg_exact: Vec<(dc::ArgKey, u64)>,
    pub arg_prefix: Vec<(u32, dc::ArgLpmData, u64)>,
    /// Value bytes reversed.
    pub arg_postfix: Vec<(u32, dc::ArgLpmData, u64)>,
    pub namespaces: Vec<(dc::NamespaceKey, u64)>,
    pub dest_v4: Vec<(u32, dc::V4LpmData, u64)>,
    pub dest_v6: Vec<(u32, dc::V6LpmData, u64)>,
    pub ports: Vec<(u32, dc::PortLpmData, u64)>,
}

impl MapEntries {
    /// Number of entries over all maps (selectors and matchers, not `slot_meta`).
    pub fn len(&self) -> usize {
        self.selectors.len()
            + self.bin_exact.len()
            + self.bin_prefix.len()
            + self.bin_postfix.len()
            + self.arg_exact.len()
            + self.arg_prefix.len()
            + self.arg_postfix.len()
            + self.namespaces.len()
            + self.dest_v4.len()
            + self.dest_v6.len()
            + self.ports.len()
    }

    /// True when there is nothing but `slot_meta` to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Copies `src` into the start of a zero-filled array (callers checked the length).
fn fill<const N: usize>(src: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = src.len().min(N);
    out[..n].copy_from_slice(&src[..n]);
    out
}

impl RuleSet {
    /// Everything to write for this rule set in `slot` (0 or 1). The loader must also delete
    /// the entries an earlier rule set left in that slot (keys it no longer has).
    pub fn map_entries(&self, slot: u8) -> MapEntries {
        let c = &self.compiled;
        let slot32 = u32::from(slot);
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
        }
    }
}
