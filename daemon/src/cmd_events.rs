//! `bulwark events`.
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {}

pub fn run(_args: EventsArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`bulwark events` is not built yet")
}
