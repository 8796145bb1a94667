//! The kernel's declared-protocol entries: what they match and what they refuse to hold.

use daemon_common::*;

fn window(bytes: &[u8]) -> ([u8; MAX_SIGNATURE_BYTES], usize) {
    let mut w = [0u8; MAX_SIGNATURE_BYTES];
    let n = bytes.len().min(MAX_SIGNATURE_BYTES);
    w[..n].copy_from_slice(&bytes[..n]);
    (w, n)
}

#[test]
fn matches_masked_bytes_and_needs_the_whole_signature() {
    let e = SignatureEntry::new(2, &[0xac, 0x3e], &[0xff, 0xf0]).unwrap();
    let (w, n) = window(&[0xac, 0x31, 9, 9]);
    assert!(e.matches(&w, n));
    let (w, n) = window(&[0xac, 0x2e]);
    assert!(!e.matches(&w, n));
    // The payload ends inside the signature: a split signature is not carried.
    let (w, n) = window(&[0xac]);
    assert!(!e.matches(&w, n));
    assert!(!SignatureEntry::default().matches(&[0; MAX_SIGNATURE_BYTES], 16));
}

#[test]
fn refuses_what_does_not_fit() {
    assert!(SignatureEntry::new(0, &[1; MAX_SIGNATURE_BYTES + 1], &[0xff; 17]).is_none());
    assert!(SignatureEntry::new(0, &[], &[]).is_none());
    assert!(SignatureEntry::new(0, &[1, 2], &[0xff]).is_none());
    assert!(SignatureEntry::new(70_000, &[1], &[0xff]).is_none());
    assert!(SignatureEntry::new(0, &[1; 16], &[0xff; 16]).is_some());
}
