//! What bulwark says about TCP connections, without the kernel. The kernel side (daemon engine)
//! hands userspace each connection's endpoints, byte counts and a prefix of each direction's
//! first payload; this crate turns that into the words of the event schema and reads the
//! events back:
//! - [`classify`]: a first payload's [`bulwark_events::Payload`] (tls with record version, SNI
//!   and ALPN; ssh; http; h2c; a declared encrypted protocol; other; none).
//! - [`signatures`]: operator-declared encrypted protocols (`kind: EncryptedProtocol`, a file
//!   of them for `--protocols`, a cluster-scoped CRD in Kubernetes), their checks and the
//!   compiled [`Signatures`].
//! - [`scope`]: [`ClusterCidrs`], whether a remote address is `cluster` or `internet`.
//! - [`report`]: the connections of an event stream, each counted once, filtered and grouped
//!   (`bulwark conns`).
//! - [`metrics`]: the connection counters (Prometheus), fed from the same events.
//!
//! Data flows one way: declarations -> [`Signatures`] -> [`classify`] -> events -> [`report`]
//! and [`metrics`].

pub mod classify;
pub mod metrics;
pub mod report;
pub mod scope;
pub mod signatures;

pub use classify::classify;
pub use scope::{ClusterCidrs, DEFAULT_CLUSTER_CIDRS};
pub use signatures::{
    EncryptedProtocol, EncryptedProtocolSpec, Signature, SignatureError, Signatures,
};

/// How many bytes of each direction's first payload the classifier is meant to see (the
/// policy crate's constant, which declared signatures are checked against).
pub use bulwark_policy::protocol::INSPECTED_BYTES;

/// Recorded event streams the tests read (also read by the `bulwark conns` tests).
#[cfg(test)]
pub(crate) mod fixtures {
    /// Six connections: plaintext HTTP to the internet from a host curl and from a pod (two
    /// windows then a close), TLS from curl, plaintext redis inside the cluster still open,
    /// plaintext HTTP served to an internet client, and a connection that moved no payload.
    /// Its `time`, `open_time` and `close_time` are labels only: the report and the metrics
    /// use `open_time` as part of a connection's identity and never compare a time with the
    /// clock, so the fixed dates cannot expire.
    pub const STREAM: &str = include_str!("../tests/fixtures/stream.jsonl");
}
