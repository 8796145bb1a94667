//! The daemon's userspace event pipeline: raw ring-buffer records -> process cache -> JSON
//! events, plus the workload registry and policy-directory loading that feed the kernel engine.
//!
//! - [`record`]: decoding `daemon-common` ring-buffer records.
//! - [`clock`]: boot-time ns -> RFC 3339.
//! - [`process`]: process cache, `exec_id`, /proc seeding.
//! - [`workload`]: workloads file, cgroup ids, the workload registry.
//! - [`policy_dir`]: loading a policy directory with last-good semantics.
//! - [`event`]: the JSON event schema (documented in `docs/events.md`).
//! - [`daemon`]: the loop tying them to a kernel engine (behind a trait).
//! - [`watch`]: inotify watching of the policy directory and workloads file.
//! - [`filter`]: `bulwark events` filters and compact rendering.

pub mod clock;
pub mod daemon;
pub mod event;
pub mod filter;
pub mod policy_dir;
pub mod process;
pub mod record;
pub mod watch;
pub mod workload;
