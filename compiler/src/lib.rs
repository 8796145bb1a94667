//! bulwark's policy compiler: a pure translation (no kernel, no root, no I/O) from policies to a
//! compiled [`RuleSet`] and the exact eBPF map entries of one slot ([`MapEntries`]), following
//! the matching design documented in `daemon-common` ("How matching works").
//!
//! - Selectors are numbered 0..64 across all policies; each becomes a `SelectorEntry` with the
//!   process and destination conditions it requires, its hook, actions (`[Post]` when it has no
//!   `matchActions`), mode and encryption.
//! - Every `matchBinaries` / `matchArgs` / `matchNamespaces` entry (plus, for a
//!   `TracingPolicyNamespaced`, an implicit `In [own namespace]`) is one process condition bit;
//!   every `matchDestinations` entry one destination condition bit. Identical entries share a bit.
//! - Values go into exact hash keys or LPM prefixes (postfixes reversed); LPM entries carry the
//!   union of the masks of all shorter prefixes covering them, since a trie returns only the
//!   longest match. Port ranges become aligned prefix blocks. IPv6 CIDRs inside
//!   `::ffff:0:0/96` are folded into IPv4 CIDRs; the kernel folds IPv4-mapped destinations the
//!   same way before its lookup.
//! - [`RuleSet::evaluate_process`] / [`RuleSet::evaluate_destination`] are the reference
//!   semantics; the tests check the map entries against them with a simulated kernel.

mod entries;
mod error;
mod eval;
mod ids;
mod lpm;
mod parse;
mod ruleset;

/// Re-exported so callers need not depend on `daemon-common` for these types.
pub use daemon_common::{Destination, MapEntries};
pub use error::{CompileError, ErrorKind, Location};
pub use eval::{destination, destination_addr};
pub use ids::NamespaceIds;
pub use parse::{normalize_addr, parse_cidr, parse_port, port_blocks, Cidr};
pub use ruleset::{
    compile, DestCondition, MatchKind, PolicyInfo, ProcCondition, RuleSet, SelectorInfo,
    StringMatch,
};
