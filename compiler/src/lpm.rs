//! Building the entries of a longest-prefix-match trie from possibly overlapping prefixes.
//!
//! A kernel LPM trie returns the value of the *longest* matching prefix only. When condition A
//! holds `10.0.0.0/8` and condition B holds `10.1.0.0/16`, a lookup of `10.1.2.3` returns only
//! the `/16` entry, so that entry must carry A's bit as well: every entry's mask is the union of
//! the masks of all entries that cover it (itself included). Sorting by (bits, length) puts
//! every prefix right before the run of prefixes it covers, so one pass with a stack of the
//! enclosing prefixes computes all unions in O(n log n).

use std::collections::BTreeMap;

/// Prefixes (bit strings) with the condition masks they belong to.
#[derive(Clone, Debug, Default)]
pub(crate) struct LpmBuilder {
    /// (bytes, prefix bits) -> mask. Bits past the prefix length must be zero (or absent).
    entries: BTreeMap<(Vec<u8>, u32), u64>,
}

impl LpmBuilder {
    /// Adds `mask` to the prefix (merging with an equal prefix). Returns true for a new prefix.
    pub fn insert(&mut self, bytes: Vec<u8>, bits: u32, mask: u64) -> bool {
        let mut new = false;
        let slot = self.entries.entry((bytes, bits)).or_insert_with(|| {
            new = true;
            0
        });
        *slot |= mask;
        new
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entries to write, each with the union of the masks of every prefix covering it.
    pub fn finish(&self) -> Vec<(Vec<u8>, u32, u64)> {
        let mut out: Vec<(Vec<u8>, u32, u64)> = Vec::with_capacity(self.entries.len());
        // Indices into `out` of the chain of prefixes enclosing the current one.
        let mut stack: Vec<usize> = Vec::new();
        for ((bytes, bits), own) in &self.entries {
            while let Some(&top) = stack.last() {
                let (tb, tbits, _) = &out[top];
                if covers(tb, *tbits, bytes, *bits) {
                    break;
                }
                stack.pop();
            }
            let inherited = stack.last().map_or(0, |&top| out[top].2);
            stack.push(out.len());
            out.push((bytes.clone(), *bits, own | inherited));
        }
        out
    }
}

/// Does prefix `p/pbits` cover `q/qbits` (is `p` a bit-prefix of `q`)?
pub(crate) fn covers(p: &[u8], pbits: u32, q: &[u8], qbits: u32) -> bool {
    if pbits > qbits {
        return false;
    }
    let full = (pbits / 8) as usize;
    let rest = pbits % 8;
    if p.len() < full || q.len() < full || p[..full] != q[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (p.get(full), q.get(full)) {
        (Some(a), Some(b)) => a & mask == b & mask,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_works_on_bits_and_bytes() {
        assert!(covers(&[10, 0, 0, 0], 8, &[10, 1, 0, 0], 16));
        assert!(!covers(&[10, 1, 0, 0], 16, &[10, 0, 0, 0], 8));
        assert!(!covers(&[10, 0, 0, 0], 8, &[11, 0, 0, 0], 16));
        assert!(covers(&[0b1000_0000], 1, &[0b1100_0000], 2));
        assert!(!covers(&[0b1000_0000], 1, &[0b0100_0000], 2));
        assert!(covers(b"", 0, b"/usr", 32));
        assert!(covers(b"/usr", 32, b"/usr/bin", 64));
        assert!(!covers(b"/usr/bin", 64, b"/usr", 32));
        assert!(!covers(b"/opt", 32, b"/usr/bin", 64));
    }

    #[test]
    fn nested_prefixes_inherit_masks() {
        let mut b = LpmBuilder::default();
        assert!(b.insert(vec![10, 0, 0, 0], 8, 0b001));
        assert!(b.insert(vec![10, 1, 0, 0], 16, 0b010));
        assert!(b.insert(vec![10, 1, 2, 0], 24, 0b100));
        assert!(b.insert(vec![11, 0, 0, 0], 8, 0b1000));
        assert!(b.insert(vec![10, 2, 0, 0], 16, 0b10000));
        assert!(
            !b.insert(vec![10, 2, 0, 0], 16, 0b100000),
            "same prefix merges"
        );
        assert_eq!(b.len(), 5);
        let got: Vec<_> = b
            .finish()
            .into_iter()
            .map(|(k, bits, m)| (k[1], k[0], bits, m))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 10, 8, 0b001),
                (1, 10, 16, 0b011),
                (1, 10, 24, 0b111),
                (2, 10, 16, 0b110001),
                (0, 11, 8, 0b1000),
            ]
        );
    }

    #[test]
    fn string_prefixes_inherit_masks() {
        let mut b = LpmBuilder::default();
        b.insert(b"/usr/".to_vec(), 40, 1);
        b.insert(b"/usr/bin/".to_vec(), 72, 2);
        b.insert(b"/usr/lib".to_vec(), 64, 4);
        b.insert(b"/tmp".to_vec(), 32, 8);
        let got: Vec<_> = b
            .finish()
            .into_iter()
            .map(|(k, _, m)| (String::from_utf8(k).unwrap(), m))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/tmp".to_string(), 8),
                ("/usr/".to_string(), 1),
                ("/usr/bin/".to_string(), 3),
                ("/usr/lib".to_string(), 5),
            ]
        );
    }
}
