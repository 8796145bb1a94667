//! The event line writer: [`Event::write_json`] appends an event's JSON to a buffer. The two
//! connection events, `process_close` and `conn_stats` (one or two per TCP connection the node
//! makes, observation being on by default), are written by hand — field by field, strings
//! escaped eight bytes at a time — because serde_json's generic serializer (a map for the
//! flattened body, a byte-by-byte escape of every string) was the largest part of the daemon's
//! CPU per connection. Every other event goes through serde_json. The output is byte for byte
//! serde_json's for the same value (tests below hold them together), so the schema stays the
//! one the [`Event`] types and docs/events.md define.

use crate::{Body, Connection, Endpoint, Event, Payload, Pod, Process, TlsInfo, Window};

impl Event {
    /// Appends this event's JSON (no newline) to `out`, exactly as `serde_json::to_writer`
    /// would.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let Event {
            time,
            node_name,
            body,
        } = self;
        let (kind, process, connection, window) = match body {
            Body::ProcessClose {
                process,
                connection,
            } => ("process_close", process, connection, None),
            Body::ConnStats {
                process,
                connection,
                window,
            } => ("conn_stats", process, connection, Some(window)),
            _ => return serde_json::to_writer(out, self),
        };
        str_field(out, b"{\"time\":", time);
        str_field(out, b",\"node_name\":", node_name);
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"process\":");
        write_process(out, process);
        out.extend_from_slice(b",\"connection\":");
        write_connection(out, connection);
        if let Some(w) = window {
            out.extend_from_slice(b",\"window\":");
            write_window(out, w);
        }
        out.push(b'}');
        Ok(())
    }
}

// Each writer takes its struct apart exhaustively: a field added to the event types is a
// compile error here, not a field silently left out of the line.

fn write_process(out: &mut Vec<u8>, p: &Process) {
    let Process {
        exec_id,
        pid,
        uid,
        binary,
        arguments,
        arguments_truncated,
        cwd,
        start_time,
        parent_exec_id,
        pod,
    } = p;
    str_field(out, b"{\"exec_id\":", exec_id);
    uint_field(out, b",\"pid\":", u64::from(*pid));
    out.extend_from_slice(b",\"uid\":");
    match *uid {
        Some(uid) => uint(out, u64::from(uid)),
        None => out.extend_from_slice(b"null"),
    }
    str_field(out, b",\"binary\":", binary);
    str_field(out, b",\"arguments\":", arguments);
    if *arguments_truncated {
        out.extend_from_slice(b",\"arguments_truncated\":true");
    }
    optional_string(out, b",\"cwd\":", cwd.as_deref());
    str_field(out, b",\"start_time\":", start_time);
    optional_string(out, b",\"parent_exec_id\":", parent_exec_id.as_deref());
    out.extend_from_slice(b",\"pod\":");
    match pod {
        Some(pod) => write_pod(out, pod),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
}

fn write_pod(out: &mut Vec<u8>, pod: &Pod) {
    let Pod {
        namespace,
        name,
        container,
        labels,
    } = pod;
    str_field(out, b"{\"namespace\":", namespace);
    str_field(out, b",\"name\":", name);
    str_field(out, b",\"container\":", container);
    out.extend_from_slice(b",\"labels\":{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, k);
        out.push(b':');
        string(out, v);
    }
    out.extend_from_slice(b"}}");
}

fn write_connection(out: &mut Vec<u8>, c: &Connection) {
    let Connection {
        role,
        family,
        local,
        remote,
        scope,
        sent,
        received,
        encrypted,
        bytes_sent,
        bytes_received,
        open_time,
        close_time,
    } = c;
    out.extend_from_slice(b"{\"role\":\"");
    out.extend_from_slice(role.as_str().as_bytes());
    out.extend_from_slice(b"\",\"family\":\"");
    out.extend_from_slice(family.as_str().as_bytes());
    out.extend_from_slice(b"\",\"local\":");
    write_endpoint(out, local);
    out.extend_from_slice(b",\"remote\":");
    write_endpoint(out, remote);
    out.extend_from_slice(b",\"scope\":\"");
    out.extend_from_slice(scope.as_str().as_bytes());
    out.extend_from_slice(b"\",\"sent\":");
    write_payload(out, sent);
    out.extend_from_slice(b",\"received\":");
    write_payload(out, received);
    optional_bool(out, b",\"encrypted\":", *encrypted);
    uint_field(out, b",\"bytes_sent\":", *bytes_sent);
    uint_field(out, b",\"bytes_received\":", *bytes_received);
    str_field(out, b",\"open_time\":", open_time);
    optional_string(out, b",\"close_time\":", close_time.as_deref());
    out.push(b'}');
}

fn write_endpoint(out: &mut Vec<u8>, e: &Endpoint) {
    let Endpoint { ip, port } = e;
    str_field(out, b"{\"ip\":", ip);
    uint_field(out, b",\"port\":", u64::from(*port));
    out.push(b'}');
}

fn write_payload(out: &mut Vec<u8>, p: &Payload) {
    let Payload {
        protocol,
        encrypted,
        tls,
    } = p;
    out.extend_from_slice(b"{\"protocol\":");
    // Custom protocol names are the operator's: escaped like any string.
    string(out, protocol.as_str());
    optional_bool(out, b",\"encrypted\":", *encrypted);
    if let Some(tls) = tls {
        out.extend_from_slice(b",\"tls\":");
        write_tls(out, tls);
    }
    out.push(b'}');
}

fn write_tls(out: &mut Vec<u8>, t: &TlsInfo) {
    let TlsInfo {
        record_version,
        sni,
        alpn,
    } = t;
    str_field(out, b"{\"record_version\":", record_version);
    optional_string(out, b",\"sni\":", sni.as_deref());
    if !alpn.is_empty() {
        out.extend_from_slice(b",\"alpn\":[");
        for (i, name) in alpn.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            string(out, name);
        }
        out.push(b']');
    }
    out.push(b'}');
}

fn write_window(out: &mut Vec<u8>, w: &Window) {
    let Window {
        start,
        end,
        bytes_sent,
        bytes_received,
    } = w;
    str_field(out, b"{\"start\":", start);
    str_field(out, b",\"end\":", end);
    uint_field(out, b",\"bytes_sent\":", *bytes_sent);
    uint_field(out, b",\"bytes_received\":", *bytes_received);
    out.push(b'}');
}

/// `key` (with its separator and colon) and a string value.
fn str_field(out: &mut Vec<u8>, key: &[u8], value: &str) {
    out.extend_from_slice(key);
    string(out, value);
}

/// `key` (with its separator and colon) and a number.
fn uint_field(out: &mut Vec<u8>, key: &[u8], value: u64) {
    out.extend_from_slice(key);
    uint(out, value);
}

/// `key` and a string or `null`.
fn optional_string(out: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
    out.extend_from_slice(key);
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// `key` and a boolean or `null`.
fn optional_bool(out: &mut Vec<u8>, key: &[u8], b: Option<bool>) {
    out.extend_from_slice(key);
    out.extend_from_slice(match b {
        Some(true) => b"true",
        Some(false) => b"false",
        None => b"null",
    });
}

fn uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Whether any of the eight bytes of `x` is a control character (< 0x20), `"` or `\`: the
/// bytes JSON strings escape. May say yes for a clean byte above one that needs it (a borrow
/// carries into it), never no for one that needs it.
fn needs_escape(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    control | zero_byte(x ^ (ONES * u64::from(b'"'))) | zero_byte(x ^ (ONES * u64::from(b'\\')))
        != 0
}

/// A JSON string, escaped as serde_json escapes it (the short forms for `\b \t \n \f \r`,
/// `\u00xx` for other control characters; everything else, non-ASCII included, as is).
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.push(b'"');
    // b[run..i] is clean and not yet copied.
    let (mut run, mut i) = (0, 0);
    while i < b.len() {
        if let Some(chunk) = b.get(i..i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if !needs_escape(x) {
                i += 8;
                continue;
            }
        }
        let c = b[i];
        let short = match c {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => 0,
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&b[run..i]);
        if short != 0 {
            out.extend_from_slice(&[b'\\', short]);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xf)],
            ]);
        }
        i += 1;
        run = i;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Family, Protocol, Role, Scope};
    use std::collections::BTreeMap;

    /// Strings that exercise every escape: quotes, backslashes, each control character (in and
    /// out of an eight-byte chunk), DEL, non-ASCII, empty, and clean runs of every length
    /// around the chunk size.
    fn nasty() -> Vec<String> {
        let mut v: Vec<String> = vec![
            String::new(),
            "\"".into(),
            "\\".into(),
            "a\"b\\c".into(),
            "ends with a quote\"".into(),
            "\\\\\\\\\"\"\"\"x".into(),
            "tab\there\nnew\rline\u{8}bs\u{c}ff".into(),
            "\u{7f} del is not escaped".into(),
            "ünïcødé ✓ 𝄞 and \u{2028} line separator".into(),
            "/slash/is/not/escaped/".into(),
            "0123456\"89abcdef\\".into(),
        ];
        for c in 0u8..0x20 {
            v.push(format!("{}", c as char));
            v.push(format!("abcdefg{}hijklmnopq", c as char));
        }
        for n in 0..20 {
            v.push("x".repeat(n));
            v.push(format!("{}\"", "y".repeat(n)));
        }
        // A byte just above each escaped one, right after it (a borrow can flag it).
        v.push("\u{1f} !#]\"#\\]\u{0}\u{1}abcdefghij".into());
        v
    }

    fn process(s: &str, all: bool) -> Process {
        Process {
            exec_id: s.into(),
            pid: if all { u32::MAX } else { 0 },
            uid: all.then_some(1000),
            binary: s.into(),
            arguments: format!("{s} -x {s}"),
            arguments_truncated: all,
            cwd: all.then(|| s.to_string()),
            start_time: s.into(),
            parent_exec_id: all.then(|| s.to_string()),
            pod: all.then(|| Pod {
                namespace: s.into(),
                name: s.into(),
                container: s.into(),
                labels: BTreeMap::from([
                    (s.to_string(), s.to_string()),
                    ("app".to_string(), "web".to_string()),
                    ("z".to_string(), String::new()),
                ]),
            }),
        }
    }

    fn payload(s: &str, all: bool) -> Payload {
        if all {
            Payload::new(
                Protocol::Tls,
                Some(TlsInfo {
                    record_version: s.into(),
                    sni: Some(s.into()),
                    alpn: vec![s.into(), "h2".into()],
                }),
            )
        } else {
            Payload::none()
        }
    }

    fn connection(s: &str, all: bool) -> Connection {
        Connection {
            role: if all { Role::Client } else { Role::Server },
            family: if all { Family::Ipv6 } else { Family::Ipv4 },
            local: Endpoint {
                ip: s.into(),
                port: 0,
            },
            remote: Endpoint {
                ip: "fd00::2".into(),
                port: u16::MAX,
            },
            scope: if all { Scope::Internet } else { Scope::Cluster },
            sent: payload(s, all),
            received: if all {
                Payload::new(Protocol::Custom(s.into()), None)
            } else {
                Payload::new(Protocol::Http, None)
            },
            encrypted: all.then_some(true),
            bytes_sent: if all { u64::MAX } else { 0 },
            bytes_received: 1_234_567_890,
            open_time: s.into(),
            close_time: all.then(|| s.to_string()),
        }
    }

    fn events(s: &str, all: bool) -> Vec<Event> {
        let event = |body| Event {
            time: s.into(),
            node_name: s.into(),
            body,
        };
        vec![
            event(Body::ProcessClose {
                process: process(s, all),
                connection: connection(s, all),
            }),
            event(Body::ConnStats {
                process: process(s, !all),
                connection: connection(s, all),
                window: Window {
                    start: s.into(),
                    end: s.into(),
                    bytes_sent: 10,
                    bytes_received: if all { u64::MAX } else { 0 },
                },
            }),
        ]
    }

    fn written(ev: &Event) -> String {
        let mut out = b"kept".to_vec();
        ev.write_json(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn connection_events_are_written_as_serde_json_writes_them() {
        for s in nasty() {
            for all in [true, false] {
                for ev in events(&s, all) {
                    let expected = format!("kept{}", serde_json::to_string(&ev).unwrap());
                    assert_eq!(written(&ev), expected, "{s:?}");
                    // And it reads back as the same event.
                    assert_eq!(Event::from_json_line(&expected[4..]).unwrap(), ev);
                }
            }
        }
    }

    #[test]
    fn an_alpn_list_and_an_empty_pod_are_written_like_serde_json() {
        let mut ev = events("x", true).remove(0);
        if let Body::ProcessClose {
            process,
            connection,
        } = &mut ev.body
        {
            process.pod = Some(Pod::default());
            connection.sent = Payload::new(
                Protocol::Tls,
                Some(TlsInfo {
                    record_version: "1.2".into(),
                    sni: None,
                    alpn: vec![],
                }),
            );
        }
        assert_eq!(
            written(&ev),
            format!("kept{}", serde_json::to_string(&ev).unwrap())
        );
    }

    #[test]
    fn other_events_go_through_serde_json() {
        let ev = Event {
            time: "t\"".into(),
            node_name: "n".into(),
            body: Body::ProcessExit {
                process: process("p\\", true),
                status: 1,
                signal: Some("SIGKILL".into()),
            },
        };
        assert_eq!(
            written(&ev),
            format!("kept{}", serde_json::to_string(&ev).unwrap())
        );
    }

    #[test]
    fn numbers_are_written_whole() {
        for n in [0, 1, 9, 10, 99, 100, 65_535, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            uint(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
