//! The names of the eBPF object's maps (so the loader cannot drift from the programs) and the
//! indices of the per-CPU diagnostic counters.

/// Per-CPU diagnostic counters, `COUNTERS[index]` (sum over CPUs).
pub const COUNTER_LOST_EVENTS: u32 = 0;
/// PROCESSES was full when a process had to be added.
pub const COUNTER_PROCESS_MAP_FULL: u32 = 1;
/// Sockets added to the SOCKHASH (watched sockets).
pub const COUNTER_SOCKHASH_ADDED: u32 = 2;
/// Adding a socket to the SOCKHASH failed.
pub const COUNTER_SOCKHASH_ADD_FAILED: u32 = 3;
/// Kernel reads (argv, parent) that failed.
pub const COUNTER_READ_FAILED: u32 = 4;
/// Sends dropped by the egress program.
pub const COUNTER_EGRESS_DROPPED: u32 = 5;
/// Adding a socket to the SOCKHASH failed because it was full (also in
/// `COUNTER_SOCKHASH_ADD_FAILED`); the backstop then refuses the socket's payload.
pub const COUNTER_SOCKHASH_FULL: u32 = 6;
/// Packets the wire-level backstop dropped (payload sk_msg never passed).
pub const COUNTER_UNSEEN_DROPPED: u32 = 7;
/// Processes SIGKILLed at exec because their state could not be stored while an enforce-mode
/// connect/egress rule covers them.
pub const COUNTER_CAPACITY_KILLS: u32 = 8;
/// TCP Fast Open connects refused.
pub const COUNTER_TFO_REFUSED: u32 = 9;
/// connect found the process's selector bits stale for the active slot (or no state at all)
/// while that slot has connect or egress selectors. Userspace reseeds every process before a
/// switch, so this stays 0; it is reported (status events, `bulwark probe`) as a safety net.
pub const COUNTER_STALE_PROCESS: u32 = 10;
/// fork copied bits that are stale for the pending slot and found no `RESEED` entry for the
/// image: userspace rescans until this stops growing.
pub const COUNTER_STALE_FORK: u32 = 11;
/// A TCP connection was established without room for its connection state (not observed).
pub const COUNTER_CONN_NO_STATE: u32 = 12;
/// A packet received on a server connection that an ingress Block refused (the first payload
/// and everything after it until the connection is destroyed).
pub const COUNTER_INGRESS_DROPPED: u32 = 13;
/// Number of counters.
pub const COUNTERS_LEN: u32 = 16;

/// Map names in the eBPF object (shared so the loader cannot drift from the programs).
pub const MAP_CONFIG: &str = "CONFIG";
pub const MAP_SLOT_META: &str = "SLOT_META";
pub const MAP_SELECTORS: &str = "SELECTORS";
pub const MAP_GROUPS: &str = "GROUPS";
pub const MAP_BIN_EXACT: &str = "BIN_EXACT";
pub const MAP_BIN_PREFIX: &str = "BIN_PREFIX";
pub const MAP_BIN_POSTFIX: &str = "BIN_POSTFIX";
pub const MAP_ARG_EXACT: &str = "ARG_EXACT";
pub const MAP_ARG_PREFIX: &str = "ARG_PREFIX";
pub const MAP_ARG_POSTFIX: &str = "ARG_POSTFIX";
pub const MAP_NAMESPACES: &str = "NAMESPACES";
pub const MAP_DEST_V4: &str = "DEST_V4";
pub const MAP_DEST_V6: &str = "DEST_V6";
pub const MAP_PORTS: &str = "PORTS";
pub const MAP_WORKLOADS: &str = "WORKLOADS";
pub const MAP_PROCESSES: &str = "PROCESSES";
pub const MAP_SK_STORAGE: &str = "SK_STORAGE";
pub const MAP_SOCKHASH: &str = "SOCKHASH";
pub const MAP_EVENTS: &str = "EVENTS";
pub const MAP_COUNTERS: &str = "COUNTERS";
pub const MAP_RESEED: &str = "RESEED";
pub const MAP_BIN_INODE: &str = "BIN_INODE";
pub const MAP_LOADERS: &str = "LOADERS";
pub const MAP_LOADER_ARG_OPTIONS: &str = "LOADER_ARG_OPTIONS";
pub const MAP_CONN_STORAGE: &str = "CONN_STORAGE";
