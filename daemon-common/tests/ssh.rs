//! The SSH first-payload scanner: real banners and first packets are SSH; look-alikes are not.

use daemon_common::ssh::SshScan;
use daemon_common::{ENC_ENCRYPTED, ENC_PENDING, ENC_PLAINTEXT};

/// Feeds `bytes`; the verdict, and whether the scan stopped right after a complete line.
fn scan(bytes: &[u8]) -> (u8, bool) {
    let mut s = SshScan::new();
    let mut v = ENC_PENDING;
    for b in bytes {
        v = s.feed(*b);
    }
    (v, s.line_complete())
}

/// A KEXINIT packet header: packet_length, padding_length, message code.
fn kexinit(packet_len: u32, padding: u8, code: u8) -> Vec<u8> {
    let mut v = packet_len.to_be_bytes().to_vec();
    v.push(padding);
    v.push(code);
    v
}

#[test]
fn banner_alone_is_a_complete_line_and_a_packet_header_decides() {
    for banner in [
        &b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"[..],
        b"SSH-2.0-x\r\n",
        b"SSH-1.99-Cisco-1.25\r\n",
        b"SSH-2.0-paramiko_3.4.0\n",
    ] {
        assert_eq!(scan(banner), (ENC_PENDING, true), "{banner:?}");
        let mut first = banner.to_vec();
        first.extend(kexinit(1532, 10, 20));
        assert_eq!(scan(&first), (ENC_ENCRYPTED, false), "{banner:?}");
    }
}

#[test]
fn look_alikes_are_plaintext() {
    let cases: &[&[u8]] = &[
        b"SSH-2.0-x\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"SSH-2.0-x\r\nhello world, plaintext",
        b"SSH-3.0-x\r\n",
        b"SSH-2.0-\r\n",
        b"SSH-2.0-a\tb\r\n",
        b"SSH-2.0-x\rX",
        b"ssh-2.0-x\r\n",
        b"GET / HTTP/1.1\r\n",
    ];
    for c in cases {
        assert_eq!(scan(c).0, ENC_PLAINTEXT, "{:?}", String::from_utf8_lossy(c));
    }
    let line = |tail: Vec<u8>| [&b"SSH-2.0-x\r\n"[..], &tail].concat();
    // packet_length too small, not a multiple of the block, too large; padding under 4 or
    // leaving no payload; a message other than KEXINIT.
    for header in [
        kexinit(4, 4, 20),
        kexinit(13, 4, 20),
        kexinit(40_004, 4, 20),
        kexinit(1532, 3, 20),
        kexinit(12, 11, 20),
        kexinit(1532, 10, 21),
    ] {
        assert_eq!(scan(&line(header.clone())).0, ENC_PLAINTEXT, "{header:?}");
    }
    // A line longer than 255 bytes.
    let long = [&b"SSH-2.0-"[..], &[b'a'; 250], b"\r\n"].concat();
    assert_eq!(scan(&long).0, ENC_PLAINTEXT);
}

#[test]
fn a_payload_that_stops_inside_the_line_or_the_header_is_not_ssh() {
    assert_eq!(scan(b"SSH-2.0-Open"), (ENC_PENDING, false));
    assert_eq!(scan(b"SSH-2.0-x\r"), (ENC_PENDING, false));
    let mut partial = b"SSH-2.0-x\r\n".to_vec();
    partial.extend(&kexinit(1532, 10, 20)[..3]);
    assert_eq!(scan(&partial), (ENC_PENDING, false));
}
