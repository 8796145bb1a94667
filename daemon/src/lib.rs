//! The `bulwark` library: everything the `bulwark` binary runs, as modules the binary's
//! subcommands, the kernel tests (daemon/tests) and the e2e harness use. Data flows one way:
//! the [`engine`] loads the kernel programs and decodes their ring-buffer records once into
//! [`record`]s; the [`pipeline`] turns records into JSON events and drives the engine with
//! policy sets and workloads; [`lint_compiler`] and [`engine_kernel`] are the real policy and
//! kernel sides behind the pipeline's traits; [`kubernetes`] lets the controller reach the
//! pipeline's main loop.
//!
//! - [`engine`]: the privileged edge — program loading, maps, atomic apply, the event reader,
//!   host facts (root, tracefs, the cgroup v2 mount) and kernel feature probes.
//! - [`record`]: the kernel's records as typed values.
//! - [`pipeline`]: the daemon core (policy-set control, workloads, main loop), record -> event
//!   translation, process cache, policy directory, event schema and filters.
//! - [`lint_compiler`], [`engine_kernel`]: the real [`pipeline::policy_backend::PolicyBackend`]
//!   and [`pipeline::kernel::Kernel`].
//! - [`kubernetes`]: adapters between the Kubernetes controller and the main loop.

pub mod engine;
pub mod engine_kernel;
pub mod kubernetes;
pub mod lint_compiler;
pub mod pipeline;
pub mod record;
