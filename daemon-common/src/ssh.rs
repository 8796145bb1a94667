//! Strict, streaming recognition of an SSH client's or server's first bytes, for the payload
//! verdicts (`matchEncryption`): SSH is an encrypted protocol whose first bytes are text, so a
//! banner alone must not be enough to call a stream encrypted when cheap checks can tell more.
//!
//! # What is checked
//! - The identification line (RFC 4253 4.2): `SSH-2.0-` (or `SSH-1.99-`, the compatibility
//!   form), then a software version of printable characters without blanks (at least one),
//!   optionally a blank and comments (printable characters and blanks), then CR LF (a bare LF
//!   is accepted, as OpenSSH does). At most [`MAX_LINE`] bytes, the line end included.
//! - What follows the line in the same payload, if anything: the header of the first binary
//!   packet (RFC 4253 6), which is KEXINIT and unencrypted: `packet_length` in
//!   `12..=`[`MAX_PACKET`] with `packet_length + 4` a multiple of 8, `padding_length` of at
//!   least 4 that leaves at least one payload byte, and message code 20 (`SSH_MSG_KEXINIT`).
//!   After those six bytes the verdict is SSH.
//!
//! # The first-payload rule
//! The verdicts see one first payload (the first send on egress, the first segment on
//! ingress). Real clients send the identification line on its own, so a payload that ends
//! right after a well-formed line counts as SSH ([`SshScan::line_complete`]); one that ends
//! inside the line or inside the packet header does not (fail closed), nor does a line followed
//! by anything but a well-formed packet header (`SSH-2.0-x\r\nGET / ...` is plaintext). Not
//! claimed: bytes sent in a *later* payload after a banner-only first one are not inspected.
//!
//! Drive it like the TLS scanner: [`SshScan::feed`] each byte; it returns the verdict
//! (`ENC_PENDING` while undecided, then [`ENC_ENCRYPTED`] or `ENC_PLAINTEXT`, which stays).

use crate::{ENC_ENCRYPTED, ENC_PENDING, ENC_PLAINTEXT};

/// Longest identification line, CR LF included (RFC 4253: 255).
pub const MAX_LINE: u16 = 255;
/// Largest first packet accepted (RFC 4253: implementations handle 35000-byte packets).
pub const MAX_PACKET: u32 = 35_000;
/// `SSH_MSG_KEXINIT`.
const MSG_KEXINIT: u8 = 20;

const P_PREFIX: u8 = 0; // "SSH-"
const P_PROTO: u8 = 1; // "2.0-" or "1.99-"
const P_SOFTWARE: u8 = 2;
const P_COMMENTS: u8 = 3;
const P_LF: u8 = 4; // after CR
const P_PACKET_LEN: u8 = 5; // 4 bytes
const P_PADDING: u8 = 6;
const P_CODE: u8 = 7;

/// An [`SshScan`] and the offset of the next byte it reads: what the kernel's SSH walk over a
/// first payload keeps between steps. Plain data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SshWalk {
    pub scan: SshScan,
    pub pos: u32,
}

impl SshWalk {
    /// A walk at the start of a payload.
    pub const fn new() -> SshWalk {
        SshWalk {
            scan: SshScan::new(),
            pos: 0,
        }
    }
}

/// Scanner state; plain data.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SshScan {
    /// Current part (`P_*`).
    pub part: u8,
    /// Bytes of the current part read so far.
    pub got: u8,
    /// `ENC_*` verdict, `ENC_PENDING` until decided.
    pub verdict: u8,
    /// 1 for `1.99-`, 0 for `2.0-` (decided by the protocol version's first byte).
    pub legacy: u8,
    /// Bytes of the identification line so far.
    pub line: u16,
    pub _pad: u16,
    /// `packet_length` being assembled.
    pub packet_len: u32,
}

impl SshScan {
    /// A scanner at the start of a stream.
    pub const fn new() -> SshScan {
        SshScan {
            part: P_PREFIX,
            got: 0,
            verdict: ENC_PENDING,
            legacy: 0,
            line: 0,
            _pad: 0,
            packet_len: 0,
        }
    }

    /// True when the identification line is complete and nothing after it has been fed: a
    /// first payload that ends here counts as SSH.
    pub fn line_complete(&self) -> bool {
        self.verdict == ENC_PENDING && self.part == P_PACKET_LEN && self.got == 0
    }

    #[inline(always)]
    fn decide(&mut self, verdict: u8) -> u8 {
        self.verdict = verdict;
        verdict
    }

    /// Feeds the next byte of the stream; returns the verdict after it.
    #[inline(always)]
    pub fn feed(&mut self, b: u8) -> u8 {
        if self.verdict != ENC_PENDING {
            return self.verdict;
        }
        if self.part <= P_LF {
            self.line += 1;
            if self.line > MAX_LINE {
                return self.decide(ENC_PLAINTEXT);
            }
        }
        let got = self.got;
        match self.part {
            P_PREFIX => {
                let want = match got {
                    0 => b'S',
                    1 => b'S',
                    2 => b'H',
                    _ => b'-',
                };
                if b != want {
                    return self.decide(ENC_PLAINTEXT);
                }
                self.next(got, 4, P_PROTO);
            }
            P_PROTO => {
                if got == 0 {
                    self.legacy = (b == b'1') as u8;
                }
                let want = if self.legacy == 1 {
                    match got {
                        0 => b'1',
                        1 => b'.',
                        2 => b'9',
                        3 => b'9',
                        _ => b'-',
                    }
                } else {
                    match got {
                        0 => b'2',
                        1 => b'.',
                        2 => b'0',
                        _ => b'-',
                    }
                };
                if b != want {
                    return self.decide(ENC_PLAINTEXT);
                }
                let len = if self.legacy == 1 { 5 } else { 4 };
                self.next(got, len, P_SOFTWARE);
            }
            P_SOFTWARE => match b {
                0x21..=0x7e => self.got = got.saturating_add(1),
                b' ' if got > 0 => self.to(P_COMMENTS),
                b'\r' if got > 0 => self.to(P_LF),
                b'\n' if got > 0 => self.to(P_PACKET_LEN),
                _ => return self.decide(ENC_PLAINTEXT),
            },
            P_COMMENTS => match b {
                0x20..=0x7e => {}
                b'\r' => self.to(P_LF),
                b'\n' => self.to(P_PACKET_LEN),
                _ => return self.decide(ENC_PLAINTEXT),
            },
            P_LF => {
                if b != b'\n' {
                    return self.decide(ENC_PLAINTEXT);
                }
                self.to(P_PACKET_LEN);
            }
            P_PACKET_LEN => {
                self.packet_len = (self.packet_len << 8) | b as u32;
                if got == 3 {
                    let n = self.packet_len;
                    if !(12..=MAX_PACKET).contains(&n) || !(n + 4).is_multiple_of(8) {
                        return self.decide(ENC_PLAINTEXT);
                    }
                }
                self.next(got, 4, P_PADDING);
            }
            P_PADDING => {
                // padding_length >= 4, and packet_length = 1 + payload + padding with a payload
                // of at least one byte (the message code).
                if b < 4 || b as u32 + 2 > self.packet_len {
                    return self.decide(ENC_PLAINTEXT);
                }
                self.to(P_CODE);
            }
            _ => {
                return self.decide(if b == MSG_KEXINIT {
                    ENC_ENCRYPTED
                } else {
                    ENC_PLAINTEXT
                });
            }
        }
        ENC_PENDING
    }

    /// Counts a byte of a fixed-length part and moves to `then` after `len` bytes.
    #[inline(always)]
    fn next(&mut self, got: u8, len: u8, then: u8) {
        if got + 1 >= len {
            self.to(then);
        } else {
            self.got = got + 1;
        }
    }

    #[inline(always)]
    fn to(&mut self, part: u8) {
        self.part = part;
        self.got = 0;
    }
}
