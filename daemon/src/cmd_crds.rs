//! `bulwark crds`.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct CrdsArgs {}

pub fn run(_args: CrdsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bulwark crds` is not built yet")
}
