//! Strict, streaming recognition of a TLS client's first bytes: the egress verdict's contract.
//!
//! A socket's stream counts as TLS only when it starts with a well-formed ClientHello and the
//! next [`RECORDS_AFTER_HELLO`] record headers are well-formed too; anything else is plaintext.
//! Three bytes that look like a record header are not enough (`\x16\x03\x01GET / ...` is
//! plaintext). The same code runs in the kernel (the sk_msg program feeds it the bytes of each
//! send) and in userspace tests, so what is documented here is what is enforced.
//!
//! # What is checked
//! - Record layer: every record header has a content type the phase allows, version
//!   `0x03 0x00..=0x03`, and a length of `1..=`[`MAX_HELLO_RECORD`] (handshake records) or
//!   `1..=`[`MAX_RECORD`] (records after the hello). A ClientHello may be split over several
//!   handshake records (each header is checked) and over any number of sends and segments.
//! - ClientHello: handshake type 1, length `41..=`[`MAX_HELLO`], `legacy_version`
//!   `0x03 0x00..=0x03`, 32 random bytes, session id of at most 32 bytes, a non-empty even-length
//!   cipher-suite list, a non-empty compression list, and either no extension block or one whose
//!   length equals what is left and whose extensions' lengths add up to it exactly. The hello
//!   must end exactly where its record ends.
//! - After the hello: [`RECORDS_AFTER_HELLO`] more record headers of type change_cipher_spec,
//!   alert, handshake or application data (their payloads are encrypted and skipped unread).
//!   Only then is the verdict TLS and the socket may leave the watch.
//!
//! # What is not claimed
//! Bytes inside well-formed fields (random, session id, extension payloads) and record payloads
//! are not inspected: a client can hide data there, as it can inside any encrypted stream.
//! Bytes sent after the verdict are not inspected.
//!
//! # How to drive it
//! Ask [`TlsScan::want`]: [`Want::Byte`] means feed the next byte with [`TlsScan::feed`];
//! [`Want::Skip`]`(n)` means up to `n` bytes need not be read — pass how many were skipped to
//! [`TlsScan::skip`]. Both return the verdict (`ENC_PENDING` while undecided, then `ENC_TLS` or
//! `ENC_PLAINTEXT`, which stays). The number of `feed`/`skip` calls for a whole hello is small
//! (a few per field and extension), which is what lets the kernel loop over it.

use crate::{ENC_PENDING, ENC_PLAINTEXT, ENC_TLS};

/// Record headers that must follow the ClientHello, well-formed, before the verdict is TLS.
pub const RECORDS_AFTER_HELLO: u8 = 2;
/// Largest ClientHello accepted (bytes of the handshake body). Real ones are under 2 KiB, or a
/// few KiB with large key shares or tickets; larger is refused (fail closed).
pub const MAX_HELLO: u32 = 65_535;
/// Largest handshake record before the verdict (TLSPlaintext: 2^14).
pub const MAX_HELLO_RECORD: u32 = 16_384;
/// Largest record after the hello (TLSCiphertext of TLS 1.2: 2^14 + 2048).
pub const MAX_RECORD: u32 = 16_384 + 2_048;

/// TLS record content types.
const CT_CHANGE_CIPHER_SPEC: u8 = 20;
const CT_APPLICATION_DATA: u8 = 23;
const CT_HANDSHAKE: u8 = 22;
const HS_CLIENT_HELLO: u8 = 1;

/// What the scanner needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// The next byte's value.
    Byte,
    /// Up to this many bytes can be skipped unread (at least 1).
    Skip(u32),
}

// Fields, in stream order. Record-header fields are used in both phases.
const F_REC_TYPE: u8 = 0;
const F_REC_VER_HI: u8 = 1;
const F_REC_VER_LO: u8 = 2;
const F_REC_LEN: u8 = 3; // 2 bytes
const F_HS_TYPE: u8 = 4;
const F_HS_LEN: u8 = 5; // 3 bytes
const F_VERSION_HI: u8 = 6;
const F_VERSION_LO: u8 = 7;
const F_RANDOM: u8 = 8; // skip 32
const F_SID_LEN: u8 = 9;
const F_SID: u8 = 10; // skip
const F_CS_LEN: u8 = 11; // 2 bytes
const F_CS: u8 = 12; // skip
const F_COMP_LEN: u8 = 13;
const F_COMP: u8 = 14; // skip
const F_EXT_TOTAL: u8 = 15; // 2 bytes
const F_EXT_TYPE: u8 = 16; // 2 bytes
const F_EXT_LEN: u8 = 17; // 2 bytes
const F_EXT_DATA: u8 = 18; // skip
const F_RECORD_BODY: u8 = 19; // after the hello: skip a record's payload

/// Scanner state; plain data (lives in the kernel's per-socket storage).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlsScan {
    /// Current field (`F_*`).
    pub field: u8,
    /// Bytes of the current multi-byte number read so far.
    pub got: u8,
    /// 0 while inside the ClientHello, 1 after it.
    pub after: u8,
    /// Record headers checked after the hello.
    pub records_after: u8,
    /// `ENC_*` verdict, `ENC_PENDING` until decided.
    pub verdict: u8,
    /// Type of the record whose header is being read.
    pub rec_type: u8,
    /// The ClientHello's first record header has been read (later ones are continuations).
    pub hello_started: u8,
    /// Field (and its bytes read so far) a record boundary interrupted inside the hello.
    pub resume: u8,
    pub resume_got: u8,
    pub _pad: [u8; 3],
    /// Number being assembled (big-endian lengths).
    pub acc: u32,
    /// `acc` of the interrupted field.
    pub resume_acc: u32,
    /// Payload bytes left in the current record.
    pub rec_left: u32,
    /// Bytes left in the ClientHello body.
    pub hs_left: u32,
    /// Bytes left in the extension block.
    pub ext_left: u32,
    /// Bytes left in the opaque field being skipped.
    pub skip_left: u32,
}

impl TlsScan {
    /// A scanner at the start of a stream.
    pub const fn new() -> TlsScan {
        TlsScan {
            field: F_REC_TYPE,
            got: 0,
            after: 0,
            records_after: 0,
            verdict: ENC_PENDING,
            rec_type: 0,
            hello_started: 0,
            resume: 0,
            resume_got: 0,
            _pad: [0; 3],
            acc: 0,
            resume_acc: 0,
            rec_left: 0,
            hs_left: 0,
            ext_left: 0,
            skip_left: 0,
        }
    }

    /// Whether the next byte is a record header byte.
    #[inline(always)]
    fn in_header(&self) -> bool {
        self.field <= F_REC_LEN
    }

    /// Whether the current record is used up inside the hello: the next bytes are the header
    /// of the record that continues it.
    #[inline(always)]
    fn at_boundary(&self) -> bool {
        !self.in_header() && self.rec_left == 0
    }

    /// What the scanner needs next (meaningless once decided).
    #[inline(always)]
    pub fn want(&self) -> Want {
        if self.in_header() || self.at_boundary() {
            return Want::Byte;
        }
        let run = match self.field {
            F_RANDOM | F_SID | F_CS | F_COMP | F_EXT_DATA | F_RECORD_BODY => self.skip_left,
            _ => 0,
        };
        if run == 0 {
            return Want::Byte;
        }
        // A skip never crosses a record boundary: the next record's header must be read.
        Want::Skip(if run < self.rec_left {
            run
        } else {
            self.rec_left
        })
    }

    #[inline(always)]
    fn fail(&mut self) -> u8 {
        self.verdict = ENC_PLAINTEXT;
        self.verdict
    }

    /// Moves to `field`, or (when it is an opaque run of `len` bytes) starts skipping it.
    #[inline(always)]
    fn goto(&mut self, field: u8, len: u32) {
        self.field = field;
        self.got = 0;
        self.acc = 0;
        self.skip_left = len;
    }

    /// Consumes `n` payload bytes of the current record (and of the hello while inside it).
    /// False when the hello or its extension block would be overrun.
    #[inline(always)]
    fn consume(&mut self, n: u32) -> bool {
        if n > self.rec_left {
            return false;
        }
        self.rec_left -= n;
        if self.after == 0 && self.field != F_HS_TYPE && self.field != F_HS_LEN {
            if n > self.hs_left {
                return false;
            }
            self.hs_left -= n;
            if self.field >= F_EXT_TYPE {
                if n > self.ext_left {
                    return false;
                }
                self.ext_left -= n;
            }
        }
        true
    }

    /// Skips `n` bytes of the current opaque run (`n` at most what [`TlsScan::want`] said).
    #[inline(always)]
    pub fn skip(&mut self, n: u32) -> u8 {
        if self.verdict != ENC_PENDING {
            return self.verdict;
        }
        if n == 0 || n > self.skip_left || !self.consume(n) {
            return self.fail();
        }
        self.skip_left -= n;
        if self.skip_left == 0 {
            return self.field_done();
        }
        self.verdict
    }

    /// After an opaque run ends: the next field.
    #[inline(always)]
    fn field_done(&mut self) -> u8 {
        match self.field {
            F_RANDOM => self.goto(F_SID_LEN, 0),
            F_SID => self.goto(F_CS_LEN, 0),
            F_CS => self.goto(F_COMP_LEN, 0),
            F_COMP => {
                if self.hs_left == 0 {
                    return self.hello_done();
                }
                self.goto(F_EXT_TOTAL, 0)
            }
            F_EXT_DATA => return self.extension_done(),
            F_RECORD_BODY => self.goto(F_REC_TYPE, 0),
            _ => return self.fail(),
        }
        self.verdict
    }

    #[inline(always)]
    fn extension_done(&mut self) -> u8 {
        if self.ext_left == 0 {
            if self.hs_left != 0 {
                return self.fail();
            }
            return self.hello_done();
        }
        self.goto(F_EXT_TYPE, 0);
        self.verdict
    }

    /// The hello ended: it must end with its record; then the records after it.
    #[inline(always)]
    fn hello_done(&mut self) -> u8 {
        if self.rec_left != 0 {
            return self.fail();
        }
        self.after = 1;
        self.goto(F_REC_TYPE, 0);
        self.verdict
    }

    /// Feeds the next byte (when [`TlsScan::want`] says [`Want::Byte`]).
    #[inline(always)]
    pub fn feed(&mut self, b: u8) -> u8 {
        if self.verdict != ENC_PENDING {
            return self.verdict;
        }
        if self.at_boundary() {
            // Only the hello can be split (after it, records are skipped whole): remember the
            // field, read the continuation record's header.
            self.resume = self.field;
            self.resume_got = self.got;
            self.resume_acc = self.acc;
            self.field = F_REC_TYPE;
        }
        if self.in_header() {
            return self.header_byte(b);
        }
        if !self.consume(1) {
            return self.fail();
        }
        // A multi-byte big-endian number: collect, then act once complete.
        let width: u8 = match self.field {
            F_HS_LEN => 3,
            F_CS_LEN | F_EXT_TOTAL | F_EXT_TYPE | F_EXT_LEN => 2,
            _ => 1,
        };
        self.acc = (self.acc << 8) | b as u32;
        self.got += 1;
        if self.got < width {
            return self.verdict;
        }
        let v = self.acc;
        match self.field {
            F_HS_TYPE => {
                if v != HS_CLIENT_HELLO as u32 {
                    return self.fail();
                }
                self.goto(F_HS_LEN, 0);
            }
            F_HS_LEN => {
                // The record may not hold more than the hello (checked as early as known).
                if !(41..=MAX_HELLO).contains(&v) || self.rec_left > v {
                    return self.fail();
                }
                self.hs_left = v;
                self.goto(F_VERSION_HI, 0);
            }
            F_VERSION_HI => {
                if v != 3 {
                    return self.fail();
                }
                self.goto(F_VERSION_LO, 0);
            }
            F_VERSION_LO => {
                if v > 3 {
                    return self.fail();
                }
                self.goto(F_RANDOM, 32);
            }
            F_SID_LEN => {
                if v > 32 || v > self.hs_left {
                    return self.fail();
                }
                if v == 0 {
                    self.goto(F_CS_LEN, 0);
                } else {
                    self.goto(F_SID, v);
                }
            }
            F_CS_LEN => {
                if v < 2 || !v.is_multiple_of(2) || v > self.hs_left {
                    return self.fail();
                }
                self.goto(F_CS, v);
            }
            F_COMP_LEN => {
                if v == 0 || v > self.hs_left {
                    return self.fail();
                }
                self.goto(F_COMP, v);
            }
            F_EXT_TOTAL => {
                if v != self.hs_left {
                    return self.fail();
                }
                self.ext_left = v;
                if v == 0 {
                    return self.hello_done();
                }
                self.goto(F_EXT_TYPE, 0);
            }
            F_EXT_TYPE => self.goto(F_EXT_LEN, 0),
            F_EXT_LEN => {
                if v > self.ext_left {
                    return self.fail();
                }
                if v == 0 {
                    return self.extension_done();
                }
                self.goto(F_EXT_DATA, v);
            }
            _ => return self.fail(),
        }
        self.verdict
    }

    /// One byte of a record header.
    #[inline(always)]
    fn header_byte(&mut self, b: u8) -> u8 {
        match self.field {
            F_REC_TYPE => {
                let ok = if self.after == 0 {
                    b == CT_HANDSHAKE
                } else {
                    (CT_CHANGE_CIPHER_SPEC..=CT_APPLICATION_DATA).contains(&b)
                };
                if !ok {
                    return self.fail();
                }
                self.rec_type = b;
                self.field = F_REC_VER_HI;
            }
            F_REC_VER_HI => {
                if b != 3 {
                    return self.fail();
                }
                self.field = F_REC_VER_LO;
            }
            F_REC_VER_LO => {
                if b > 3 {
                    return self.fail();
                }
                self.field = F_REC_LEN;
                self.got = 0;
                self.acc = 0;
            }
            _ => {
                self.acc = (self.acc << 8) | b as u32;
                self.got += 1;
                if self.got < 2 {
                    return self.verdict;
                }
                let len = self.acc;
                let max = if self.after == 0 {
                    MAX_HELLO_RECORD
                } else {
                    MAX_RECORD
                };
                if len == 0 || len > max {
                    return self.fail();
                }
                self.rec_left = len;
                if self.after != 0 {
                    self.records_after += 1;
                    if self.records_after >= RECORDS_AFTER_HELLO {
                        self.verdict = ENC_TLS;
                        return self.verdict;
                    }
                    self.goto(F_RECORD_BODY, len);
                } else if self.hello_started == 0 {
                    self.hello_started = 1;
                    self.goto(F_HS_TYPE, 0);
                } else {
                    // A continuation record of the hello: resume the field it split. It may
                    // not reach past the hello's end once that is known.
                    if self.resume > F_HS_LEN && len > self.hs_left {
                        return self.fail();
                    }
                    self.field = self.resume;
                    self.got = self.resume_got;
                    self.acc = self.resume_acc;
                }
            }
        }
        self.verdict
    }
}
