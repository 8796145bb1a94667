//! `bulwark unload`: removes what a pinned daemon left in the kernel — every build's pinned
//! links (detaching its programs) and maps under the pin directory — and says what it removed.
//! Refuses while a daemon owns the pins, unless `--force`. The work is the engine's
//! ([`bulwark::engine::pins::unload`]); this module checks root and prints.

use bulwark::engine::{host, pins};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct UnloadArgs {
    /// The pin directory the daemon ran with (`bulwark run --pin-dir`).
    #[arg(long, value_name = "DIR", default_value = pins::DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Also while a daemon owns the pins: its programs are detached under it (it keeps
    /// running, enforcing nothing, until it is stopped).
    #[arg(long)]
    pub force: bool,
}

/// What `unload` did, for people.
fn report(dir: &std::path::Path, u: &pins::Unloaded) -> String {
    if u.removed.is_empty() {
        return format!(
            "nothing pinned in {}: no bulwark programs to remove{}",
            dir.display(),
            if u.root_removed {
                " (removed the empty directory)"
            } else {
                ""
            }
        );
    }
    let mut out = String::new();
    for b in &u.removed {
        out.push_str(&format!(
            "removed {}: {} pinned map(s), {} program(s) detached ({})\n",
            b.dir.display(),
            b.maps,
            b.links.len(),
            b.links.join(", ")
        ));
    }
    if u.root_removed {
        out.push_str(&format!("removed {}\n", dir.display()));
    }
    out.push_str(&format!(
        "no program of bulwark's pinned in {} is left enforcing",
        dir.display()
    ));
    out
}

pub fn run(args: UnloadArgs) -> anyhow::Result<ExitCode> {
    host::require_root()?;
    let u = pins::unload(&args.pin_dir, args.force)?;
    println!("{}", report(&args.pin_dir, &u));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_report_names_what_was_removed() {
        let dir = Path::new("/sys/fs/bpf/bulwark");
        let none = report(dir, &pins::Unloaded::default());
        assert!(
            none.contains("nothing pinned in /sys/fs/bpf/bulwark"),
            "{none}"
        );
        let u = pins::Unloaded {
            removed: vec![pins::RemovedBuild {
                dir: dir.join("build-1"),
                links: vec!["bulwark_exec".into(), "bulwark_fork".into()],
                maps: 20,
            }],
            root_removed: true,
        };
        let r = report(dir, &u);
        assert!(
            r.contains(
                "build-1: 20 pinned map(s), 2 program(s) detached (bulwark_exec, bulwark_fork)"
            ),
            "{r}"
        );
        assert!(r.contains("removed /sys/fs/bpf/bulwark\n"), "{r}");
    }
}
