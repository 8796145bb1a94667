//! The daemon's userspace: kernel records -> process cache -> JSON events (their schema is the `bulwark-events` crate), the policy set and
//! workloads that feed the kernel engine, and the loop that ties them together. Pure logic,
//! tested without root: the engine and the policy side are behind traits.
//!
//! - [`kernel`], [`policy_backend`]: the traits the daemon core drives (engine, rule set, lint
//!   and compiler).
//! - [`daemon`]: the daemon core — policy-set control, workloads, the main loop.
//! - [`translate`]: record -> event translation and event output.
//! - [`subject`]: the access or call a `file` / `syscall` match is about (kernel link, no
//!   guessing).
//! - [`clock`]: boot-time ns -> RFC 3339.
//! - [`conn`]: connection records -> `process_close` / `conn_stats` connections.
//! - [`process`]: process cache, `exec_id`, /proc seeding.
//! - [`exec_facts`]: a running process's exec facts from /proc (what a rule-set switch
//!   evaluates the new rules against).
//! - [`binary_ids`]: the files binary paths and the dynamic loaders name, on the host and in
//!   every mount namespace.
//! - [`workload`]: workloads file, cgroup ids, the workload registry.
//! - [`policy_dir`]: a policy directory with per-file last-good semantics.
//! - [`watch`]: inotify watching of the policy directory and workloads file.
//! - [`filter`]: `bulwark events` filters and compact rendering.

pub mod binary_ids;
pub mod clock;
pub mod conn;
pub mod daemon;
pub mod exec_facts;
#[cfg(test)]
pub(crate) mod fakes;
pub mod filter;
pub mod kernel;
pub mod policy_backend;
pub mod policy_dir;
pub mod process;
pub mod subject;
pub mod translate;
pub mod watch;
pub mod workload;
