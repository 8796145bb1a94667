//! The `bulwark` binary: one command-line front end over the `bulwark` library and the crates
//! that do the work. Each subcommand lives in its own module; this file only parses arguments
//! and dispatches.

mod cmd_compile;
mod cmd_conns;
mod cmd_convert;
mod cmd_crds;
mod cmd_events;
mod cmd_lint;
mod cmd_probe;
mod cmd_run;
mod cmd_unload;
mod event_file;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Policy-driven runtime enforcement for Linux and Kubernetes, on eBPF.
///
/// bulwark compiles TracingPolicy resources into eBPF map entries; kernel programs match each
/// exec, connect and egress send against them and log, SIGKILL or block.
#[derive(Parser, Debug)]
#[command(name = "bulwark", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check policy files offline: syntax, schema, semantics, kernel limits.
    Lint(cmd_lint::LintArgs),
    /// Translate Cilium Tetragon TracingPolicies into bulwark policies, reporting what does not map.
    Convert(cmd_convert::ConvertArgs),
    /// Print the CustomResourceDefinitions bulwark serves (YAML, apply with kubectl).
    Crds(cmd_crds::CrdsArgs),
    /// Show what a set of policies compiles to: rules, conditions and eBPF map entries.
    Compile(cmd_compile::CompileArgs),
    /// Run the enforcement daemon (root).
    Run(cmd_run::RunArgs),
    /// Read, filter and follow the JSON events the daemon writes.
    Events(cmd_events::EventsArgs),
    /// Who talks to where, plaintext or encrypted, how much: connections from the events.
    Conns(cmd_conns::ConnsArgs),
    /// Report which kernel mechanisms this host supports and which bulwark will use.
    Probe(cmd_probe::ProbeArgs),
    /// Detach and remove the programs a pinned daemon leaves enforcing after it stops (root).
    Unload(cmd_unload::UnloadArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Lint(args) => cmd_lint::run(args),
        Command::Convert(args) => cmd_convert::run(args),
        Command::Crds(args) => cmd_crds::run(args),
        Command::Compile(args) => cmd_compile::run(args),
        Command::Run(args) => cmd_run::run(args),
        Command::Events(args) => cmd_events::run(args),
        Command::Conns(args) => cmd_conns::run(args),
        Command::Probe(args) => cmd_probe::run(args),
        Command::Unload(args) => cmd_unload::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("bulwark: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
