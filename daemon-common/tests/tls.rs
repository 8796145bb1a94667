//! The streaming TLS scanner (`daemon_common::tls`) against real ClientHellos captured from
//! openssl, curl, python and gnutls (tests/fixtures/clienthello), look-alikes, and a whole-buffer
//! reference parser over random fragmentations and mutations.

use daemon_common::tls::{TlsScan, Want, MAX_HELLO, MAX_HELLO_RECORD, MAX_RECORD};
use daemon_common::{ENC_PENDING, ENC_PLAINTEXT, ENC_TLS};

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clienthello");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let p = e.path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 6, "fixtures missing in {}", dir.display());
    out
}

/// What a TLS client sends after its hello: a change_cipher_spec record and an application
/// data record (encrypted payload: any bytes).
fn after_hello() -> Vec<u8> {
    let mut v = vec![0x14, 0x03, 0x03, 0x00, 0x01, 0x01];
    v.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x20]);
    v.extend((0..32u8).map(|i| i.wrapping_mul(37)));
    v
}

/// Feeds `chunks` as separate sends, like the kernel: per send, bytes until it is used up or
/// the verdict is decided. Returns the verdict after each send.
fn scan_sends(chunks: &[&[u8]]) -> Vec<u8> {
    let mut s = TlsScan::new();
    let mut verdicts = Vec::new();
    let mut steps = 0usize;
    for c in chunks {
        let mut off = 0usize;
        let mut v = s.verdict;
        while v == ENC_PENDING && off < c.len() {
            steps += 1;
            v = match s.want() {
                Want::Byte => {
                    let b = c[off];
                    off += 1;
                    s.feed(b)
                }
                Want::Skip(n) => {
                    assert!(n > 0, "Skip(0) asked");
                    let k = (n as usize).min(c.len() - off);
                    off += k;
                    s.skip(k as u32)
                }
            };
        }
        verdicts.push(v);
    }
    // The kernel loops a bounded number of steps: a hello must not need many.
    assert!(steps < 2_000, "{steps} steps");
    verdicts
}

fn scan(bytes: &[u8]) -> u8 {
    *scan_sends(&[bytes]).last().unwrap()
}

/// Whole-buffer reference: is `b` a well-formed ClientHello (possibly split over handshake
/// records) followed by at least 2 well-formed record headers? `None` = not enough bytes.
fn reference(b: &[u8]) -> Option<bool> {
    // Reassemble handshake records.
    let mut pos = 0usize;
    let mut hs = Vec::new();
    let mut hello_len: Option<usize> = None;
    loop {
        if b.len() < pos + 5 {
            return if !header_prefix_ok(&b[pos..], false)
                || check_hello(&hs, hello_len) == Some(false)
            {
                Some(false)
            } else {
                None
            };
        }
        let (t, v1, v2) = (b[pos], b[pos + 1], b[pos + 2]);
        let len = u16::from_be_bytes([b[pos + 3], b[pos + 4]]) as usize;
        if t != 22 || v1 != 3 || v2 > 3 || len == 0 || len > MAX_HELLO_RECORD as usize {
            return Some(false);
        }
        let body = &b[pos + 5..(pos + 5 + len).min(b.len())];
        hs.extend_from_slice(body);
        if hello_len.is_none() && hs.len() >= 4 {
            if hs[0] != 1 {
                return Some(false);
            }
            let l = u32::from_be_bytes([0, hs[1], hs[2], hs[3]]);
            if !(41..=MAX_HELLO).contains(&l) {
                return Some(false);
            }
            hello_len = Some(l as usize + 4);
        }
        if let Some(h) = hello_len {
            // The hello must end with its record: this record may not reach past it.
            if hs.len() - body.len() + len > h {
                return Some(false);
            }
        }
        if body.len() < len {
            // Partial record: judge what is there.
            return match check_hello(&hs, hello_len) {
                Some(false) => Some(false),
                _ => None,
            };
        }
        pos += 5 + len;
        if hello_len == Some(hs.len()) {
            break;
        }
    }
    if check_hello(&hs, hello_len) != Some(true) {
        return Some(false);
    }
    // Records after the hello.
    for i in 0..2 {
        if b.len() < pos + 5 {
            return if !header_prefix_ok(&b[pos..], true) {
                Some(false)
            } else {
                None
            };
        }
        let (t, v1, v2) = (b[pos], b[pos + 1], b[pos + 2]);
        let len = u16::from_be_bytes([b[pos + 3], b[pos + 4]]) as usize;
        if !(20..=23).contains(&t) || v1 != 3 || v2 > 3 || len == 0 || len > MAX_RECORD as usize {
            return Some(false);
        }
        if i == 1 {
            return Some(true);
        }
        pos += 5 + len;
        if pos > b.len() {
            return None; // the payload is still arriving
        }
    }
    unreachable!()
}

fn header_prefix_ok(p: &[u8], after: bool) -> bool {
    let type_ok = |t: u8| {
        if after {
            (20..=23).contains(&t)
        } else {
            t == 22
        }
    };
    match p.len() {
        0 => true,
        1 => type_ok(p[0]),
        2 => type_ok(p[0]) && p[1] == 3,
        3 | 4 => type_ok(p[0]) && p[1] == 3 && p[2] <= 3,
        _ => unreachable!(),
    }
}

/// Checks the hello body (`hs` = handshake header + body, maybe partial). `Some(true)` when
/// complete and well-formed, `Some(false)` when malformed, `None` when a prefix so far fine.
fn check_hello(hs: &[u8], hello_len: Option<usize>) -> Option<bool> {
    let Some(total) = hello_len else {
        return if hs.first().is_some_and(|t| *t != 1) {
            Some(false)
        } else {
            None
        };
    };
    let body = &hs[4..];
    let end = total - 4;
    let complete = hs.len() == total;
    let mut p = 0usize;
    // Each step: need n bytes; if missing and incomplete, undecided.
    macro_rules! need {
        ($n:expr) => {
            if p + $n > end {
                return Some(false);
            }
            if p + $n > body.len() {
                return None;
            }
        };
    }
    if body.first().is_some_and(|v| *v != 3) {
        return Some(false);
    }
    need!(2);
    if body[1] > 3 {
        return Some(false);
    }
    p += 2;
    need!(32);
    p += 32;
    need!(1);
    let sid = body[p] as usize;
    if sid > 32 {
        return Some(false);
    }
    p += 1;
    need!(sid);
    p += sid;
    need!(2);
    let cs = u16::from_be_bytes([body[p], body[p + 1]]) as usize;
    if cs < 2 || !cs.is_multiple_of(2) {
        return Some(false);
    }
    p += 2;
    need!(cs);
    p += cs;
    need!(1);
    let comp = body[p] as usize;
    if comp == 0 {
        return Some(false);
    }
    p += 1;
    need!(comp);
    p += comp;
    if p == end {
        return if complete { Some(true) } else { None };
    }
    need!(2);
    let ext = u16::from_be_bytes([body[p], body[p + 1]]) as usize;
    p += 2;
    if ext != end - p {
        return Some(false);
    }
    while p < end {
        need!(4);
        let l = u16::from_be_bytes([body[p + 2], body[p + 3]]) as usize;
        p += 4;
        need!(l);
        p += l;
    }
    if complete {
        Some(true)
    } else {
        None
    }
}

/// Re-splits a hello (one record) into handshake records at the given body offsets.
fn refragment(hello: &[u8], cuts: &[usize]) -> Vec<u8> {
    let body = &hello[5..];
    let mut out = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|c| *c > 0 && *c < body.len())
        .collect();
    cuts.sort();
    cuts.dedup();
    cuts.push(body.len());
    for c in cuts {
        let part = &body[start..c];
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
        start = c;
    }
    out
}

/// xorshift64*: deterministic randomness without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn real_client_hellos_are_pending_until_two_more_records_then_tls() {
    for (name, ch) in fixtures() {
        assert_eq!(ch[0], 0x16, "{name} is not a handshake record");
        assert_eq!(
            scan(&ch),
            ENC_PENDING,
            "{name}: hello alone decides nothing"
        );
        let mut full = ch.clone();
        full.extend_from_slice(&after_hello());
        assert_eq!(scan(&full), ENC_TLS, "{name}");
        assert_eq!(reference(&full), Some(true), "{name}: reference disagrees");
        // A TLS 1.2 client's next flight starts with a handshake record: also fine.
        let mut tls12 = ch.clone();
        tls12.extend_from_slice(&[0x16, 0x03, 0x03, 0x00, 0x04, 0x10, 0, 0, 0]);
        tls12.extend_from_slice(&[0x14, 0x03, 0x03, 0x00, 0x01, 0x01]);
        assert_eq!(scan(&tls12), ENC_TLS, "{name}");
    }
}

#[test]
fn a_hello_split_over_sends_and_records_is_still_tls() {
    let mut rng = Rng(0x5eed);
    for (name, ch) in fixtures() {
        for _ in 0..200 {
            let cuts: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(ch.len())).collect();
            let mut stream = refragment(&ch, &cuts);
            stream.extend_from_slice(&after_hello());
            assert_eq!(reference(&stream), Some(true), "{name} cuts {cuts:?}");
            // Arbitrary send boundaries, down to one byte per send.
            let mut sends = Vec::new();
            let mut i = 0;
            while i < stream.len() {
                let small = rng.below(4) == 0;
                let n = 1 + rng.below(if small { 3 } else { 300 });
                let j = (i + n).min(stream.len());
                sends.push(&stream[i..j]);
                i = j;
            }
            let v = scan_sends(&sends);
            assert_eq!(*v.last().unwrap(), ENC_TLS, "{name} cuts {cuts:?}");
            // Undecided until the last header: never plaintext on the way.
            assert!(v.iter().all(|x| *x != ENC_PLAINTEXT), "{name}: {v:?}");
        }
    }
}

#[test]
fn look_alikes_are_plaintext() {
    let (_, ch) = fixtures().remove(0);
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let cat = |parts: &[&[u8]]| parts.concat();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "three TLS-looking bytes then HTTP",
            cat(&[b"\x16\x03\x01", &http]),
        ),
        ("record version 3.4", cat(&[b"\x16\x03\x04\x00\x30", &http])),
        ("plain HTTP", http.clone()),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
        (
            "zero-length record",
            cat(&[b"\x16\x03\x01\x00\x00", &ch[5..]]),
        ),
        ("server hello type", {
            let mut c = ch.clone();
            c[5] = 2;
            c
        }),
        ("a valid hello then HTTP", cat(&[&ch, &http])),
        (
            "a valid hello, one record, then HTTP",
            cat(&[&ch, b"\x14\x03\x03\x00\x01\x01", &http]),
        ),
        (
            "after-hello record type 24",
            cat(&[&ch, b"\x18\x03\x03\x00\x01\x01", &after_hello()]),
        ),
        (
            "after-hello version 3.4",
            cat(&[&ch, b"\x17\x03\x04\x00\x10"]),
        ),
        (
            "after-hello record too long",
            cat(&[&ch, b"\x17\x03\x03\x48\x01"]),
        ),
        ("hello record longer than the hello", {
            // One extra byte in the record that is not part of the hello.
            let mut c = ch.clone();
            let l = u16::from_be_bytes([c[3], c[4]]) + 1;
            c[3..5].copy_from_slice(&l.to_be_bytes());
            c.push(0);
            cat(&[&c, &after_hello()])
        }),
    ];
    for (what, bytes) in cases {
        assert_eq!(scan(&bytes), ENC_PLAINTEXT, "{what}");
        assert_eq!(reference(&bytes), Some(false), "reference on {what}");
    }
}

#[test]
fn malformed_hello_fields_are_plaintext() {
    let (_, ch) = fixtures().remove(0);
    // Offsets in a one-record hello: 5 rec hdr, 9 after hs header, version 9..11, random 11..43,
    // sid len at 43.
    let sid = ch[43] as usize;
    let cs_at = 44 + sid;
    let mutate = |at: usize, v: u8| {
        let mut c = ch.clone();
        c[at] = v;
        c.extend_from_slice(&after_hello());
        c
    };
    let cases = vec![
        ("legacy_version 2.x", mutate(9, 2)),
        ("legacy_version 3.4", mutate(10, 4)),
        ("session id 33", mutate(43, 33)),
        (
            "odd cipher-suite length",
            mutate(cs_at + 1, ch[cs_at + 1] | 1),
        ),
        ("hello length off by one", mutate(8, ch[8].wrapping_add(1))),
        ("record version 2.x", mutate(1, 2)),
    ];
    for (what, bytes) in cases {
        assert_eq!(scan(&bytes), ENC_PLAINTEXT, "{what}");
        assert_eq!(reference(&bytes), Some(false), "reference on {what}");
    }
}

#[test]
fn scanner_agrees_with_reference_over_random_mutations() {
    let mut rng = Rng(42);
    let fx = fixtures();
    let mut seen = [0usize; 3];
    for round in 0..30_000 {
        let (_, ch) = &fx[round % fx.len()];
        let cuts: Vec<usize> = (0..rng.below(3)).map(|_| rng.below(ch.len())).collect();
        let mut s = refragment(ch, &cuts);
        s.extend_from_slice(&after_hello());
        for _ in 0..1 + rng.below(3) {
            let at = rng.below(s.len());
            match rng.below(3) {
                0 => s[at] = rng.next() as u8,
                1 => s[at] ^= 1 << rng.below(8),
                _ => s.truncate(at.max(1)),
            }
        }
        let want = reference(&s);
        let got = scan(&s);
        match want {
            Some(true) => assert_eq!(got, ENC_TLS, "round {round}: ref TLS: {s:02x?}"),
            Some(false) => assert_eq!(got, ENC_PLAINTEXT, "round {round}: ref plain: {s:02x?}"),
            None => assert_eq!(got, ENC_PENDING, "round {round}: ref pending: {s:02x?}"),
        }
        seen[got as usize] += 1;
    }
    // The mutations exercise all three outcomes.
    assert!(seen.iter().all(|n| *n > 100), "{seen:?}");
}
