//! Declared encrypted protocols as the kernel matches them: a small fixed table
//! ([`MAP_DECLARED_PROTOCOLS`], [`MAX_DECLARED_PROTOCOLS`] entries of [`SignatureEntry`]) that
//! the payload verdicts (egress sk_msg, ingress cgroup_skb) consult so that `matchEncryption`
//! counts a declared protocol as encrypted, as the userspace classifier does. Userspace writes
//! it from the declarations (`bulwark run --protocols`, Kubernetes `EncryptedProtocol`
//! objects); the policy crate's checks refuse declarations that do not fit (BW104, BW105).
//!
//! A first payload carries a signature when, for every byte `i < len`,
//! `payload[offset + i] & mask[i] == bytes[i]` (`bytes` is stored already masked). The whole
//! signature must lie in the first payload the hook sees (the first send on egress, the first
//! segment on ingress): a payload that stops inside it does not carry it.

/// Name of the kernel table (an array map of [`MAX_DECLARED_PROTOCOLS`] entries).
pub const MAP_DECLARED_PROTOCOLS: &str = "DECLARED_PROTOCOLS";
/// Declared protocols the kernel table holds.
pub const MAX_DECLARED_PROTOCOLS: usize = 16;
/// Signature bytes one entry compares.
pub const MAX_SIGNATURE_BYTES: usize = 16;

/// One declared protocol, `DECLARED_PROTOCOLS[i]`; an entry with `len == 0` is unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureEntry {
    /// Where the signature starts in the first payload.
    pub offset: u16,
    /// Signature bytes compared, 1..=[`MAX_SIGNATURE_BYTES`]; 0: unused entry.
    pub len: u8,
    pub _pad: [u8; 5],
    /// The signature, already masked (`signature[i] & mask[i]`).
    pub bytes: [u8; MAX_SIGNATURE_BYTES],
    /// Bits compared, one byte per signature byte.
    pub mask: [u8; MAX_SIGNATURE_BYTES],
}

impl SignatureEntry {
    /// The entry for a signature of at most [`MAX_SIGNATURE_BYTES`] bytes (one mask byte per
    /// byte) at `offset`; `None` when it does not fit.
    pub fn new(offset: usize, signature: &[u8], mask: &[u8]) -> Option<SignatureEntry> {
        if signature.is_empty()
            || signature.len() > MAX_SIGNATURE_BYTES
            || mask.len() != signature.len()
            || offset > u16::MAX as usize
        {
            return None;
        }
        let mut e = SignatureEntry {
            offset: offset as u16,
            len: signature.len() as u8,
            ..SignatureEntry::default()
        };
        for i in 0..signature.len() {
            e.mask[i] = mask[i];
            e.bytes[i] = signature[i] & mask[i];
        }
        Some(e)
    }

    /// Whether `window` — the payload bytes from `offset` on, as many as the payload has, at
    /// most [`MAX_SIGNATURE_BYTES`] — carries the signature. The kernel loads the window and
    /// calls this; a window shorter than `len` (the payload ended) does not match.
    #[inline(always)]
    pub fn matches(&self, window: &[u8; MAX_SIGNATURE_BYTES], available: usize) -> bool {
        let len = self.len as usize;
        if len == 0 || len > MAX_SIGNATURE_BYTES || available < len {
            return false;
        }
        let mut differ = 0u8;
        for ((w, m), s) in window.iter().zip(&self.mask).zip(&self.bytes).take(len) {
            differ |= (w & m) ^ s;
        }
        differ == 0
    }
}

assert_sizes!(SignatureEntry = 40);
