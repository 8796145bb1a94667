//! The classifier: what one direction's first payload was, from its bytes alone (a prefix of
//! them: the kernel hands userspace at most [`crate::INSPECTED_BYTES`] of the first payload).
//!
//! Order of the checks, first match wins:
//! 1. empty input: `none`;
//! 2. `tls`: a TLS handshake record (content type 22, record version `3.0`..`1.3`, a length a
//!    handshake record can have) starting a ClientHello or ServerHello whose fields are
//!    well-formed as far as the bytes go. SNI and ALPN are reported when the extensions
//!    carrying them lie wholly within the bytes given (and within the first record);
//! 3. `ssh`: an identification banner `SSH-2.0-`, `SSH-1.99-` or `SSH-1.5-` (RFC 4253 4.2);
//! 4. `h2c`: the HTTP/2 connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, at least up to
//!    `PRI * HTTP/2.0`), or — what a prior-knowledge h2c server sends first — a SETTINGS frame
//!    on stream 0;
//! 5. `http`: an HTTP/1.x status line (`HTTP/1.1 200 ...`) or request line (`GET /x HTTP/1.1`;
//!    for the common methods a line cut off by the end of the prefix inside the target counts);
//! 6. an operator-declared encrypted protocol ([`Signatures`]), in their order;
//! 7. `other`.
//!
//! Declared protocols come after the built-in words on purpose: a declaration can name an
//! encrypted protocol the built-ins call `other`, but it cannot make TLS, SSH or HTTP something
//! else — a careless signature cannot turn plaintext HTTP into "encrypted".
//!
//! The verdict here is observation. The egress policy hook keeps its own strict in-kernel TLS
//! verdict (daemon-common `tls`), which needs the whole hello and the records after it.

use crate::signatures::Signatures;
use bulwark_events::{Payload, Protocol, TlsInfo};

/// Classifies one direction's first payload (or a prefix of it).
pub fn classify(first_payload: &[u8], custom: &Signatures) -> Payload {
    if first_payload.is_empty() {
        return Payload::none();
    }
    if let Some(tls) = tls(first_payload) {
        return Payload::new(Protocol::Tls, Some(tls));
    }
    let protocol = if is_ssh_banner(first_payload) {
        Protocol::Ssh
    } else if is_h2c(first_payload) {
        Protocol::H2c
    } else if is_http1(first_payload) {
        Protocol::Http
    } else if let Some(name) = custom.matching(first_payload) {
        Protocol::Custom(name.to_string())
    } else {
        Protocol::Other
    };
    Payload::new(protocol, None)
}

/// A cursor over the bytes given that reports running out as `None`.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let out = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(out)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    fn rest(&self) -> usize {
        self.bytes.len() - self.at
    }
}

const CT_HANDSHAKE: u8 = 22;
const HS_CLIENT_HELLO: u8 = 1;
const HS_SERVER_HELLO: u8 = 2;
const EXT_SERVER_NAME: usize = 0;
const EXT_ALPN: usize = 16;
/// Largest TLSPlaintext fragment (2^14).
const MAX_RECORD: usize = 16_384;

/// The record-layer version word: `ssl3`, `1.0` .. `1.3`.
fn version_word(major: u8, minor: u8) -> Option<&'static str> {
    match (major, minor) {
        (3, 0) => Some("ssl3"),
        (3, 1) => Some("1.0"),
        (3, 2) => Some("1.1"),
        (3, 3) => Some("1.2"),
        (3, 4) => Some("1.3"),
        _ => None,
    }
}

/// A TLS handshake record starting a ClientHello or ServerHello, with what it tells.
fn tls(bytes: &[u8]) -> Option<TlsInfo> {
    let mut r = Reader::new(bytes);
    if r.u8()? != CT_HANDSHAKE {
        return None;
    }
    let record_version = version_word(r.u8()?, r.u8()?)?;
    let record_len = r.u16()?;
    if record_len == 0 || record_len > MAX_RECORD {
        return None;
    }
    let mut info = TlsInfo {
        record_version: record_version.to_string(),
        sni: None,
        alpn: Vec::new(),
    };
    // The first record's body, as much of it as was captured. A hello larger than the record
    // continues in the next record; its fields beyond this one are not read.
    let body = &bytes[5..bytes.len().min(5 + record_len)];
    let mut r = Reader::new(body);
    let Some(hs_type) = r.u8() else {
        // A bare record header is as far as the bytes go: a handshake record of a sane size.
        return Some(info);
    };
    if hs_type != HS_CLIENT_HELLO && hs_type != HS_SERVER_HELLO {
        return None;
    }
    match hello(&mut r, hs_type == HS_CLIENT_HELLO, &mut info) {
        Hello::Malformed => None,
        Hello::WellFormedSoFar => Some(info),
    }
}

enum Hello {
    /// A field has a value no hello has: not TLS.
    Malformed,
    /// Every field read was well-formed (the bytes may have ended before the hello did).
    WellFormedSoFar,
}

/// Reads a hello body after its type byte, filling SNI and ALPN. Running out of bytes at any
/// point is [`Hello::WellFormedSoFar`]: the prefix is all there is to judge.
fn hello(r: &mut Reader<'_>, client: bool, info: &mut TlsInfo) -> Hello {
    match hello_fields(r, client, info) {
        Ok(()) | Err(Stop::OutOfBytes) => Hello::WellFormedSoFar,
        Err(Stop::Malformed) => Hello::Malformed,
    }
}

enum Stop {
    OutOfBytes,
    Malformed,
}

fn need<T>(v: Option<T>) -> Result<T, Stop> {
    v.ok_or(Stop::OutOfBytes)
}

fn check(ok: bool) -> Result<(), Stop> {
    if ok {
        Ok(())
    } else {
        Err(Stop::Malformed)
    }
}

fn hello_fields(r: &mut Reader<'_>, client: bool, info: &mut TlsInfo) -> Result<(), Stop> {
    let hs_len = need(r.u24())?;
    // Smallest ServerHello body: version 2, random 32, session id length 1, suite 2,
    // compression 1; a ClientHello has at least one suite (2 + 2) and one method (1 + 1).
    check(hs_len >= if client { 41 } else { 38 })?;
    let (major, minor) = (need(r.u8())?, need(r.u8())?);
    check(major == 3 && minor <= 3)?;
    need(r.take(32))?;
    let sid_len = need(r.u8())?;
    check(sid_len <= 32)?;
    need(r.take(usize::from(sid_len)))?;
    if client {
        let suites = need(r.u16())?;
        check(suites >= 2 && suites.is_multiple_of(2))?;
        need(r.take(suites))?;
        let methods = need(r.u8())?;
        check(methods >= 1)?;
        need(r.take(usize::from(methods)))?;
    } else {
        need(r.take(2))?; // cipher suite
        check(need(r.u8())? == 0)?; // compression: null (all TLS in use)
    }
    let Some(ext_total) = r.u16() else {
        return Ok(()); // no extension block, or it was not captured
    };
    let mut left = ext_total;
    while left > 0 {
        check(left >= 4)?;
        let ext_type = need(r.u16())?;
        let ext_len = need(r.u16())?;
        check(ext_len <= left - 4)?;
        left -= 4 + ext_len;
        if r.rest() < ext_len {
            return Err(Stop::OutOfBytes);
        }
        let data = need(r.take(ext_len))?;
        match ext_type {
            EXT_SERVER_NAME if client => info.sni = server_name(data),
            EXT_ALPN => info.alpn = alpn(data),
            _ => {}
        }
    }
    Ok(())
}

/// The host name of a server_name extension (RFC 6066 3), when it is one and is text.
fn server_name(data: &[u8]) -> Option<String> {
    let mut r = Reader::new(data);
    let list_len = r.u16()?;
    let mut list = Reader::new(r.take(list_len)?);
    while list.rest() > 0 {
        let name_type = list.u8()?;
        let len = list.u16()?;
        let name = list.take(len)?;
        if name_type == 0 {
            let host = std::str::from_utf8(name).ok()?;
            let printable = !host.is_empty() && host.bytes().all(|b| b.is_ascii_graphic());
            return printable.then(|| host.to_string());
        }
    }
    None
}

/// The protocol names of an ALPN extension (RFC 7301 3.1), those that are text.
fn alpn(data: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut r = Reader::new(data);
    let Some(list) = r.u16().and_then(|n| r.take(n)) else {
        return names;
    };
    let mut list = Reader::new(list);
    while let Some(name) = list.u8().and_then(|n| list.take(usize::from(n))) {
        if let Ok(text) = std::str::from_utf8(name) {
            if !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic()) {
                names.push(text.to_string());
            }
        }
    }
    names
}

/// `SSH-<protoversion>-`: the versions that exist (2.0, 1.99 = 2.0 compatible with 1.x, 1.5).
fn is_ssh_banner(bytes: &[u8]) -> bool {
    [&b"SSH-2.0-"[..], b"SSH-1.99-", b"SSH-1.5-"]
        .iter()
        .any(|banner| bytes.starts_with(banner))
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The part of the preface that must be present for a cut-off preface to count.
const H2_PREFACE_MIN: usize = b"PRI * HTTP/2.0".len();
const H2_FRAME_SETTINGS: u8 = 4;
/// SETTINGS frames a server starts with are small (6 bytes per setting, a handful of them).
const H2_MAX_FIRST_SETTINGS: usize = 6 * 16;

fn is_h2c(bytes: &[u8]) -> bool {
    let n = bytes.len().min(H2_PREFACE.len());
    if n >= H2_PREFACE_MIN && bytes[..n] == H2_PREFACE[..n] {
        return true;
    }
    // A server's first frame: length (3), type SETTINGS, flags 0 (not an ACK), stream 0.
    match bytes {
        [l0, l1, l2, H2_FRAME_SETTINGS, 0, 0, 0, 0, 0, ..] => {
            let len = (usize::from(*l0) << 16) | (usize::from(*l1) << 8) | usize::from(*l2);
            len.is_multiple_of(6) && len <= H2_MAX_FIRST_SETTINGS
        }
        _ => false,
    }
}

/// Methods whose request line counts even when the prefix ends inside the target.
const COMMON_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];
/// Longest method token accepted (WebDAV's `VERSION-CONTROL` is 15).
const MAX_METHOD: usize = 20;

/// An HTTP/1.x status line or request line.
fn is_http1(bytes: &[u8]) -> bool {
    is_status_line(bytes) || is_request_line(bytes)
}

/// `HTTP/1.0 ` or `HTTP/1.1 ` and a three-digit status (as far as the bytes go).
fn is_status_line(bytes: &[u8]) -> bool {
    let Some(rest) = bytes
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))
    else {
        return false;
    };
    let digits = &rest[..rest.len().min(3)];
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

/// `METHOD SP target SP HTTP/1.x CRLF`. The method is an upper-case token; the target has no
/// blanks or control bytes. When the bytes end inside the target (a long URL cut off by the
/// prefix), a common method is enough.
fn is_request_line(bytes: &[u8]) -> bool {
    let Some(sp) = bytes.iter().take(MAX_METHOD + 1).position(|&b| b == b' ') else {
        return false;
    };
    let method = &bytes[..sp];
    if method.is_empty() || !method.iter().all(|b| b.is_ascii_uppercase() || *b == b'-') {
        return false;
    }
    let rest = &bytes[sp + 1..];
    let target_len = rest
        .iter()
        .position(|&b| b == b' ' || b.is_ascii_control())
        .unwrap_or(rest.len());
    if target_len == 0 {
        return false;
    }
    let after = &rest[target_len..];
    if after.is_empty() {
        // Cut off inside the target.
        let method = std::str::from_utf8(method).unwrap_or("");
        return COMMON_METHODS.contains(&method);
    }
    let Some(version) = after.strip_prefix(b" ") else {
        return false;
    };
    let expected: &[&[u8]] = &[
        b"HTTP/1.1\r\n",
        b"HTTP/1.0\r\n",
        b"HTTP/1.1\n",
        b"HTTP/1.0\n",
    ];
    expected.iter().any(|line_end| {
        let n = version.len().min(line_end.len());
        // The whole version word must be there; the line end may be cut off.
        n >= b"HTTP/1.x".len() && version[..n] == line_end[..n]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signatures::Signature;

    fn word(bytes: &[u8]) -> String {
        classify(bytes, &Signatures::default()).protocol.to_string()
    }

    /// A real ClientHello (as `openssl s_client -servername api.example.com -alpn h2,http/1.1`
    /// builds one), assembled field by field so the test says what is in it.
    pub(crate) fn client_hello(sni: Option<&str>, alpn_names: &[&str]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(host) = sni {
            let mut entry = vec![0u8];
            entry.extend((host.len() as u16).to_be_bytes());
            entry.extend(host.as_bytes());
            let mut data = (entry.len() as u16).to_be_bytes().to_vec();
            data.extend(entry);
            ext.extend(0u16.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        // supported_versions (43): TLS 1.3, 1.2 — an extension the classifier skips.
        ext.extend([0, 43, 0, 5, 4, 3, 4, 3, 3]);
        if !alpn_names.is_empty() {
            let mut list = Vec::new();
            for n in alpn_names {
                list.push(n.len() as u8);
                list.extend(n.as_bytes());
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            ext.extend(16u16.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        let mut body = vec![3, 3];
        body.extend([0xab; 32]); // random
        body.push(32);
        body.extend([0x5e; 32]); // session id
        body.extend([0, 4, 0x13, 0x01, 0x13, 0x02]); // two suites
        body.extend([1, 0]); // null compression
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![HS_CLIENT_HELLO];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![CT_HANDSHAKE, 3, 1];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    pub(crate) fn server_hello(alpn_name: Option<&str>) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(n) = alpn_name {
            let mut data = ((n.len() + 1) as u16).to_be_bytes().to_vec();
            data.push(n.len() as u8);
            data.extend(n.as_bytes());
            ext.extend(16u16.to_be_bytes());
            ext.extend((data.len() as u16).to_be_bytes());
            ext.extend(data);
        }
        let mut body = vec![3, 3];
        body.extend([0x11; 32]);
        body.push(0);
        body.extend([0xc0, 0x2f, 0]);
        body.extend((ext.len() as u16).to_be_bytes());
        body.extend(ext);
        let mut hs = vec![HS_SERVER_HELLO];
        hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend(body);
        let mut rec = vec![CT_HANDSHAKE, 3, 3];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        // The server's certificate record follows in the same send.
        rec.extend([CT_HANDSHAKE, 3, 3, 0x0b, 0xb8, 11, 0, 0x0b, 0xb4]);
        rec
    }

    #[test]
    fn empty_input_is_none_and_encrypted_is_null() {
        let p = classify(b"", &Signatures::default());
        assert_eq!(p, Payload::none());
        assert_eq!(p.encrypted, None);
    }

    #[test]
    fn client_hello_reports_record_version_sni_and_alpn() {
        let hello = client_hello(Some("api.example.com"), &["h2", "http/1.1"]);
        let p = classify(&hello, &Signatures::default());
        assert_eq!(p.protocol, Protocol::Tls);
        assert_eq!(p.encrypted, Some(true));
        assert_eq!(
            p.tls,
            Some(TlsInfo {
                record_version: "1.0".into(),
                sni: Some("api.example.com".into()),
                alpn: vec!["h2".into(), "http/1.1".into()],
            })
        );
    }

    #[test]
    fn server_hello_is_tls_with_the_chosen_alpn_and_no_sni() {
        let p = classify(&server_hello(Some("h2")), &Signatures::default());
        assert_eq!(
            p.tls,
            Some(TlsInfo {
                record_version: "1.2".into(),
                sni: None,
                alpn: vec!["h2".into()],
            })
        );
        assert_eq!(word(&server_hello(None)), "tls");
    }

    #[test]
    fn a_hello_cut_off_before_its_extensions_is_tls_without_sni() {
        let hello = client_hello(Some("a-long-name.example.com"), &["h2"]);
        // Every prefix from the record header on is TLS; SNI appears only once it is complete.
        let sni_end = hello
            .windows(b"a-long-name.example.com".len())
            .position(|w| w == b"a-long-name.example.com")
            .unwrap()
            + b"a-long-name.example.com".len();
        for n in 5..hello.len() {
            let p = classify(&hello[..n], &Signatures::default());
            assert_eq!(p.protocol, Protocol::Tls, "prefix of {n} bytes");
            let tls = p.tls.unwrap();
            assert_eq!(tls.sni.is_some(), n >= sni_end, "prefix of {n} bytes");
        }
        // Shorter than a record header: not enough to say TLS.
        for n in 1..5 {
            assert_eq!(word(&hello[..n]), "other", "prefix of {n} bytes");
        }
    }

    #[test]
    fn tls_record_versions_are_words() {
        let mut hello = client_hello(None, &[]);
        for (minor, w) in [(0, "ssl3"), (1, "1.0"), (2, "1.1"), (3, "1.2")] {
            hello[2] = minor;
            let p = classify(&hello, &Signatures::default());
            assert_eq!(p.tls.unwrap().record_version, w);
        }
        hello[2] = 9;
        assert_eq!(word(&hello), "other");
    }

    #[test]
    fn plaintext_behind_a_record_header_is_not_tls() {
        // The classic disguise: three bytes that look like a record header, then HTTP.
        assert_eq!(word(b"\x16\x03\x01GET / HTTP/1.1\r\n"), "other");
        // A handshake record whose message is not a hello.
        let mut hello = client_hello(None, &[]);
        hello[5] = 11;
        assert_eq!(word(&hello), "other");
        // A hello whose own version is not TLS.
        let mut hello = client_hello(None, &[]);
        hello[9] = 7;
        assert_eq!(word(&hello), "other");
        // An extension longer than the block that holds it.
        let mut hello = client_hello(Some("x.example"), &[]);
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2 + 2 + 2;
        hello[ext_len_at] = 0xff;
        assert_eq!(word(&hello), "other");
        // Not a handshake record.
        assert_eq!(word(b"\x17\x03\x03\x00\x10abcdefghabcdefgh"), "other");
    }

    #[test]
    fn ssh_banners_are_ssh_and_encrypted() {
        for banner in [
            &b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"[..],
            b"SSH-1.99-Cisco-1.25\r\n",
            b"SSH-1.5-old\r\n",
        ] {
            let p = classify(banner, &Signatures::default());
            assert_eq!(p.protocol, Protocol::Ssh);
            assert_eq!(p.encrypted, Some(true));
        }
        assert_eq!(word(b"SSH-3.0-future"), "other");
        assert_eq!(word(b"SSH-2.0"), "other", "cut before the dash");
    }

    #[test]
    fn http1_requests_and_responses_are_http() {
        for line in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"POST /api/v1/items?x=1 HTTP/1.0\r\n",
            b"HEAD * HTTP/1.1\n",
            b"CONNECT example.com:443 HTTP/1.1\r\n",
            b"PROPFIND /dav/ HTTP/1.1\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.0 404 Not Found\r\n",
            b"GET /a-url-cut-off-by-the-pre",
            b"GET / HTTP/1.1",
        ] {
            let p = classify(line, &Signatures::default());
            assert_eq!(
                p.protocol,
                Protocol::Http,
                "{}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(p.encrypted, Some(false));
        }
    }

    #[test]
    fn things_that_only_resemble_http_are_other() {
        for bytes in [
            &b"get / HTTP/1.1\r\n"[..],
            b"GET  HTTP/1.1\r\n",
            b"GET / HTTP/2.0\r\n",
            b"GET / SMTP\r\n",
            b"PROPFIND /cut-off",
            b"HTTP/1.1 OK\r\n",
            b"HTTP/2 200\r\n",
            b"HELO mail.example.com\r\n",
            b"*1\r\n$4\r\nPING\r\n",
        ] {
            assert_eq!(word(bytes), "other", "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn h2c_preface_and_first_settings_frame_are_h2c() {
        assert_eq!(word(H2_PREFACE), "h2c");
        let mut with_settings = H2_PREFACE.to_vec();
        with_settings.extend([
            0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100, 0, 4, 0, 1, 0, 0,
        ]);
        assert_eq!(word(&with_settings), "h2c");
        assert_eq!(word(b"PRI * HTTP/2.0\r\n"), "h2c");
        assert_eq!(word(b"PRI * HTTP/2.0"), "h2c");
        assert_eq!(word(b"PRI * HTTP/2"), "other", "too little of the preface");
        // A server's SETTINGS frame (two settings), and an empty one.
        assert_eq!(
            word(&[0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]),
            "h2c"
        );
        assert_eq!(word(&[0, 0, 0, 4, 0, 0, 0, 0, 0]), "h2c");
        // A SETTINGS ACK, a frame on another stream, an odd length: not a server's first frame.
        assert_eq!(word(&[0, 0, 0, 4, 1, 0, 0, 0, 0]), "other");
        assert_eq!(word(&[0, 0, 0, 4, 0, 0, 0, 0, 1]), "other");
        assert_eq!(word(&[0, 0, 7, 4, 0, 0, 0, 0, 0]), "other");
        let p = classify(H2_PREFACE, &Signatures::default());
        assert_eq!(p.encrypted, Some(false));
    }

    #[test]
    fn declared_protocols_name_what_would_be_other_and_nothing_else() {
        let custom = Signatures::new(vec![Signature::new(
            "acme-tunnel",
            2,
            vec![0xac, 0x3e],
            Some(vec![0xff, 0xf0]),
        )
        .unwrap()]);
        let p = classify(&[0, 0, 0xac, 0x31, 9], &custom);
        assert_eq!(p.protocol, Protocol::Custom("acme-tunnel".into()));
        assert_eq!(p.encrypted, Some(true));
        assert_eq!(
            classify(&[0, 0, 0xac, 0x4e], &custom).protocol,
            Protocol::Other
        );
        assert_eq!(classify(&[0, 0, 0xac], &custom).protocol, Protocol::Other);
        // A declaration that would match HTTP does not make HTTP encrypted.
        let greedy = Signatures::new(vec![
            Signature::new("greedy", 0, b"GET".to_vec(), None).unwrap()
        ]);
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n", &greedy).protocol,
            Protocol::Http
        );
        assert_eq!(
            classify(b"GETX", &greedy).protocol,
            Protocol::Custom("greedy".into())
        );
    }

    /// xorshift64*: deterministic pseudo-random bytes for the property tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    #[test]
    fn never_panics_on_any_bytes_or_any_truncation() {
        let custom = Signatures::new(vec![
            Signature::new("at-zero", 0, vec![0x00], Some(vec![0x80])).unwrap(),
            Signature::new("far", 200, vec![1, 2, 3], None).unwrap(),
        ]);
        let mut samples: Vec<Vec<u8>> = vec![
            client_hello(Some("api.example.com"), &["h2", "http/1.1"]),
            server_hello(Some("http/1.1")),
            H2_PREFACE.to_vec(),
            b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Random bytes, and every sample with random bytes flipped.
        for _ in 0..2_000 {
            let len = (rng.next() % 600) as usize;
            samples.push((0..len).map(|_| rng.next() as u8).collect());
        }
        for i in 0..5 {
            for _ in 0..400 {
                let mut s = samples[i].clone();
                let at = (rng.next() as usize) % s.len();
                s[at] = rng.next() as u8;
                samples.push(s);
            }
        }
        // Random bytes behind a valid record header and hello type, so the hello parser's
        // length fields take arbitrary values.
        for _ in 0..2_000 {
            let len = (rng.next() % 300) as usize;
            let mut s = vec![CT_HANDSHAKE, 3, 1, (rng.next() % 3) as u8, rng.next() as u8];
            s.push(1 + (rng.next() % 2) as u8);
            s.extend((0..len).map(|_| rng.next() as u8));
            samples.push(s);
        }
        for s in &samples {
            for n in 0..=s.len() {
                let p = classify(&s[..n], &custom);
                // What the classifier says is consistent with the event schema's rules.
                assert_eq!(p.encrypted, p.protocol.encrypted());
                assert_eq!(p.tls.is_some(), p.protocol == Protocol::Tls);
                assert_eq!(p.protocol == Protocol::None, n == 0);
            }
        }
    }
}
