//! `bulwark compile`.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CompileArgs {}

pub fn run(_args: CompileArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bulwark compile` is not built yet")
}
