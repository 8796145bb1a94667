//! TCP connections as the daemon observes them on the wire: [`Connection`] (who, between which
//! endpoints, what each direction's first payload was, how many bytes), carried by
//! `process_close` (when a connection ends) and `conn_stats` (every `--conn-interval` for
//! connections still open that moved bytes in the window, [`Window`]).
//!
//! A direction's [`Payload`] classification is decided from its first payload's bytes alone,
//! whatever library or program produced them, so TLS from rustls, GnuTLS or a static binary is
//! `tls` like OpenSSL's. [`Protocol`] is the one word table of the classifications, and
//! [`Protocol::encrypted`] the one place that says which of them count as encrypted.

use serde::{Deserialize, Serialize};

bulwark_policy::words! {
    /// Which end of the connection the process is.
    pub enum Role ("connection role") {
        /// It called `connect()`.
        Client = "client",
        /// It accepted the connection on a listening socket.
        Server = "server",
    }
}

bulwark_policy::words! {
    /// Address family of the connection.
    pub enum Family ("address family") {
        Ipv4 = "ipv4",
        Ipv6 = "ipv6",
    }
}

bulwark_policy::words! {
    /// Whether the remote end is inside the cluster (`--cluster-cidrs`) or not.
    pub enum Scope ("scope") {
        /// The remote address is in none of the cluster CIDRs.
        Internet = "internet",
        /// The remote address is in a cluster CIDR (loopback, RFC 1918, pod CIDRs, ...).
        Cluster = "cluster",
    }
}

/// What the first payload of one direction was.
///
/// Words: `tls`, `ssh`, `http`, `h2c`, `other` (plaintext we do not name), `none` (no payload
/// yet), or the name of an operator-declared encrypted protocol.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(from = "String", into = "String")]
pub enum Protocol {
    /// A TLS record carrying a handshake (ClientHello / ServerHello).
    Tls,
    /// An `SSH-2.0-` (or `SSH-1.99-`) identification banner.
    Ssh,
    /// An HTTP/1.x request line or status line.
    Http,
    /// The HTTP/2 cleartext connection preface.
    H2c,
    /// Plaintext that none of the above names.
    Other,
    /// No payload in this direction (yet).
    None,
    /// An operator-declared protocol that counts as encrypted (its declared name).
    Custom(String),
}

impl Protocol {
    /// The words of the built-in classifications (custom names are the operator's).
    pub const BUILTIN: &'static [&'static str] = &["tls", "ssh", "http", "h2c", "other", "none"];

    /// The word written in events.
    pub fn as_str(&self) -> &str {
        match self {
            Protocol::Tls => "tls",
            Protocol::Ssh => "ssh",
            Protocol::Http => "http",
            Protocol::H2c => "h2c",
            Protocol::Other => "other",
            Protocol::None => "none",
            Protocol::Custom(name) => name,
        }
    }

    /// `Some(true)` for tls, ssh and declared encrypted protocols, `Some(false)` for http, h2c
    /// and other, `None` while there is no payload.
    pub fn encrypted(&self) -> Option<bool> {
        match self {
            Protocol::Tls | Protocol::Ssh | Protocol::Custom(_) => Some(true),
            Protocol::Http | Protocol::H2c | Protocol::Other => Some(false),
            Protocol::None => None,
        }
    }
}

impl From<String> for Protocol {
    fn from(word: String) -> Self {
        match word.as_str() {
            "tls" => Protocol::Tls,
            "ssh" => Protocol::Ssh,
            "http" => Protocol::Http,
            "h2c" => Protocol::H2c,
            "other" => Protocol::Other,
            "none" => Protocol::None,
            _ => Protocol::Custom(word),
        }
    }
}

impl From<Protocol> for String {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Custom(name) => name,
            p => p.as_str().to_string(),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the ClientHello (or, for a server, the first record) told about a TLS stream.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// Record-layer version of the first record: `1.0`, `1.1`, `1.2` (TLS 1.3 ClientHellos
    /// are sent as 1.0/1.2 records, and say so).
    pub record_version: String,
    /// Server name indication, when the ClientHello carries one within the bytes inspected.
    #[serde(default)]
    pub sni: Option<String>,
    /// ALPN protocol names offered, in order (empty when none or not seen).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alpn: Vec<String>,
}

/// The classification of one direction's first payload.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub protocol: Protocol,
    /// [`Protocol::encrypted`] of `protocol` (written out so readers need no table).
    pub encrypted: Option<bool>,
    /// Present when `protocol` is `tls` and the record could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsInfo>,
}

impl Payload {
    /// The classification `protocol`, with its `encrypted` filled in.
    pub fn new(protocol: Protocol, tls: Option<TlsInfo>) -> Self {
        Payload {
            encrypted: protocol.encrypted(),
            protocol,
            tls,
        }
    }

    /// No payload yet.
    pub fn none() -> Self {
        Payload::new(Protocol::None, None)
    }
}

/// An address and port.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Dotted IPv4 or RFC 5952 IPv6 text.
    pub ip: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    /// `10.0.0.2:80`, `[fd00::2]:80`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.ip.contains(':') {
            write!(f, "[{}]:{}", self.ip, self.port)
        } else {
            write!(f, "{}:{}", self.ip, self.port)
        }
    }
}

/// One TCP connection of the process the event is about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub role: Role,
    pub family: Family,
    pub local: Endpoint,
    pub remote: Endpoint,
    pub scope: Scope,
    /// First payload the process sent.
    pub sent: Payload,
    /// First payload the process received.
    pub received: Payload,
    /// The connection's verdict: `false` when either direction's first payload was plaintext,
    /// `true` when one was encrypted and none plaintext, `null` when no payload moved.
    pub encrypted: Option<bool>,
    /// Payload bytes sent and received since the connection opened (TCP payload, no headers).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// RFC 3339 (UTC, nanoseconds) when the connection was established.
    pub open_time: String,
    /// When it ended (`process_close`); `null` while it is open (`conn_stats`).
    #[serde(default)]
    pub close_time: Option<String>,
}

impl Connection {
    /// The verdict `encrypted` has for the two directions' classifications.
    pub fn verdict(sent: &Payload, received: &Payload) -> Option<bool> {
        match (sent.protocol.encrypted(), received.protocol.encrypted()) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), _) | (_, Some(true)) => Some(true),
            (None, None) => None,
        }
    }
}

/// The bytes a `conn_stats` event's window moved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// RFC 3339 start and end of the window (`--conn-interval` apart, the first window starts
    /// when the connection opened).
    pub start: String,
    pub end: String,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_words_round_trip_and_custom_names_stay() {
        for w in Protocol::BUILTIN {
            let p = Protocol::from(w.to_string());
            assert!(!matches!(p, Protocol::Custom(_)), "{w}");
            assert_eq!(String::from(p), *w);
        }
        let p: Protocol = serde_json::from_str(r#""wireguard-tcp""#).unwrap();
        assert_eq!(p, Protocol::Custom("wireguard-tcp".into()));
        assert_eq!(p.encrypted(), Some(true));
        assert_eq!(serde_json::to_string(&p).unwrap(), r#""wireguard-tcp""#);
    }

    #[test]
    fn encrypted_is_true_for_tls_ssh_false_for_plaintext_null_for_none() {
        let e = |w: &str| Protocol::from(w.to_string()).encrypted();
        assert_eq!(
            ["tls", "ssh", "http", "h2c", "other", "none"].map(e),
            [
                Some(true),
                Some(true),
                Some(false),
                Some(false),
                Some(false),
                None
            ]
        );
    }

    #[test]
    fn a_plaintext_direction_makes_the_connection_plaintext() {
        let p = |w: &str| Payload::new(Protocol::from(w.to_string()), None);
        assert_eq!(Connection::verdict(&p("tls"), &p("http")), Some(false));
        assert_eq!(Connection::verdict(&p("tls"), &p("none")), Some(true));
        assert_eq!(Connection::verdict(&p("none"), &p("ssh")), Some(true));
        assert_eq!(Connection::verdict(&p("none"), &p("none")), None);
        assert_eq!(Connection::verdict(&p("other"), &p("none")), Some(false));
    }
}
