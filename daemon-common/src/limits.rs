//! The limits both sides agree on: slots, selectors and conditions per slot, buffer and key
//! lengths, what exec examines of argv, and the default sizes of the maps.

/// Number of rule-set slots (A/B).
pub const SLOTS: usize = 2;
/// Selectors, process conditions and destination conditions per *group* of a slot (one u64
/// bitmask each; see "Groups" in the crate doc).
pub const MAX_SELECTORS: usize = 64;
pub const MAX_PROC_CONDITIONS: usize = 64;
pub const MAX_DEST_CONDITIONS: usize = 64;
/// Selector groups per slot: group 0 holds the selectors that apply regardless of namespace
/// (the group of host processes and of namespaces without a group of their own), groups
/// 1.. hold those plus the selectors of the namespaces assigned to them.
pub const MAX_GROUPS: usize = 64;
/// The group of a slot that decides which TCP sockets are watched (egress): one selector per
/// distinct destination requirement of the slot's egress selectors, without process
/// conditions.
pub const WATCH_GROUP: usize = MAX_GROUPS;
/// Tables (a slot's group, or its watch group): `table = slot + SLOTS * group`. Every matcher
/// key's `slot` byte holds the table, `SLOT_META` and `SELECTORS` are indexed by it.
pub const TABLES: usize = SLOTS * (MAX_GROUPS + 1);
/// Selectors a node holds in one slot that apply to namespaced workloads: every group but the
/// default one full of selectors of its namespaces (the namespace-independent ones take room
/// in every group, see the crate doc).
pub const MAX_NODE_SELECTORS: usize = (MAX_GROUPS - 1) * MAX_SELECTORS;

/// The table of `group` in `slot`.
#[inline(always)]
pub const fn table(slot: u32, group: u32) -> u32 {
    (slot & 1) + SLOTS as u32 * group
}
/// Size of the path buffers and of `PathKey::path` (bytes, including the NUL).
pub const PATH_LEN: usize = 256;
/// Longest binary path matched exactly (bytes, without NUL): the key keeps room for the NUL
/// the kernel's string read always writes. A longer path is truncated when read and never
/// takes the exact or postfix lookups, so values longer than this could never match.
pub const PATH_EXACT_LEN: usize = PATH_LEN - 1;
/// Longest binary path prefix/postfix (bytes): the LPM key holds the slot byte too.
pub const PATH_AFFIX_LEN: usize = 255;
/// Longest argument value (bytes, without NUL) for any operator.
pub const ARG_LEN: usize = 128;
/// argv elements a `matchArgs` `index` can name (argv[0] .. argv[MAX_ARGS-1]); conditions
/// without an index look at every element.
pub const MAX_ARGS: usize = 16;
/// argv elements examined at exec; a longer argv is incomplete (fails closed).
pub const MAX_ARG_ELEMENTS: usize = 4096;
/// Bytes of the argument area examined at exec (NULs included); a longer one is incomplete.
pub const MAX_ARG_BYTES: usize = 128 * 1024;
/// Bytes of the NUL-separated argv copied into an exec event.
pub const EVENT_ARGS_LEN: usize = 512;
/// Entries in the process map in the object file; the loader sizes it from
/// `/proc/sys/kernel/pid_max` (a tgid is always below it) or `--max-processes`.
pub const MAX_PROCESSES: u32 = 65_536;
/// Per-map entry limits of the matcher maps (the lint reports values over these).
pub const MAX_BINARY_VALUES: u32 = 4_096;
/// File identities of binary values in one slot (a value has one per mount namespace it names
/// a different file in).
pub const MAX_BINARY_IDENTITIES: u32 = 16_384;
/// Dynamic loader files (`LOADERS`).
pub const MAX_LOADERS: u32 = 1_024;
pub const MAX_ARG_VALUES: u32 = 4_096;
pub const MAX_CIDRS: u32 = 32_768;
pub const MAX_PORT_PREFIXES: u32 = 8_192;
pub const MAX_NAMESPACES: u32 = 4_096;
/// Namespaces with a group of their own (`GROUPS` entries) in one slot.
pub const MAX_GROUPED_NAMESPACES: u32 = 4_096;
pub const MAX_WORKLOADS: u32 = 65_536;
/// A slot's matcher maps hold this many times one group's `MAX_*` entries: all its groups
/// together (namespace-independent values are repeated in every group) and its watch group.
/// The maps are created without preallocation, so only entries in use take memory.
pub const NODE_MAP_FACTOR: u32 = 8;
/// Ring buffer size in bytes (power of two, multiple of the page size).
///
/// 8 MiB holds about 10,000 exec records (the largest) of burst. Userspace maps the data
/// area twice (for reads across the wrap), so it shows as 2x this in the daemon's RSS.
pub const EVENTS_RING_BYTES: u32 = 8 * 1024 * 1024;
/// Default entries of the SOCKHASH (watched sockets: verdict pending, plaintext, or blocked);
/// `bulwark run --max-watched-sockets` sets it (bucket memory is allocated up front).
pub const MAX_WATCHED_SOCKETS: u32 = 262_144;
