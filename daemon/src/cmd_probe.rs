//! `bulwark probe`.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ProbeArgs {}

pub fn run(_args: ProbeArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bulwark probe` is not built yet")
}
