//! The daemon's userspace event pipeline: raw ring-buffer records -> process cache -> JSON
//! events (their schema is the `bulwark-events` crate), plus the workload registry and
//! policy-directory loading that feed the kernel engine.
//!
//! - [`record`]: decoding `daemon-common` ring-buffer records.
//! - [`clock`]: boot-time ns -> RFC 3339.
//! - [`process`]: process cache, `exec_id`, /proc seeding.
//! - [`workload`]: workloads file, cgroup ids, the workload registry.
//! - [`policy_dir`]: loading a policy directory with last-good semantics.
//! - [`daemon`]: the loop tying them to a kernel engine (behind a trait).
//! - [`watch`]: inotify watching of the policy directory and workloads file.
//! - [`filter`]: `bulwark events` filters and compact rendering.

pub mod clock;
pub mod daemon;
pub mod filter;
pub mod policy_dir;
pub mod process;
pub mod record;
pub mod watch;
pub mod workload;
