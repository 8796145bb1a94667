//! `bulwark lint`.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct LintArgs {}

pub fn run(_args: LintArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bulwark lint` is not built yet")
}
