//! An engine that outlives its daemon (see "Surviving the daemon" in the module doc): pinning a
//! freshly loaded engine's maps and links under its build directory, adopting those of an
//! earlier engine of this build, and retiring the pins of other builds once a rule set is in
//! force. The pin directory itself (layout, ownership lock, `bulwark unload`) is [`super::pins`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::maps::{Array, MapData};
use aya::programs::links::FdLink;
use daemon_common::*;

use super::attach::{is_observation, LINKED_PROGRAMS};
use super::maps::{map, Maps};
use super::{pins, switch, Engine, Pinning, SwitchReport};

/// Pinning state of an engine with [`super::EngineOptions::pin_dir`].
pub(super) struct Pins {
    /// The pin directory, owned (locked) while this engine lives.
    _root: pins::PinRoot,
    /// `<pin_dir>/<build id>`: `maps/<NAME>` and `links/<program>`.
    dir: PathBuf,
    /// Whether this engine adopted existing pins instead of loading.
    adopted: bool,
    /// Pin directories of other builds, removed (detaching their programs) after the first
    /// successful `apply`, so an upgrade has no window without enforcement.
    retire: Vec<PathBuf>,
}

impl Pins {
    /// `<pin_dir>/<build id>`.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Pins every map under `dir/maps` and every link under `dir/links`.
fn pin_all(dir: &Path, maps: &Maps, links: Vec<(&str, FdLink)>) -> anyhow::Result<()> {
    let md = dir.join("maps");
    let ld = dir.join("links");
    for d in [&md, &ld] {
        std::fs::create_dir_all(d).with_context(|| {
            format!(
                "cannot create {} (is bpffs mounted at /sys/fs/bpf?)",
                d.display()
            )
        })?;
    }
    for (name, m) in &maps.0 {
        m.pin(md.join(name))
            .with_context(|| format!("cannot pin map {name} in {}", md.display()))?;
    }
    for (name, l) in links {
        // The pinned link keeps the program attached after this process is gone.
        let _pinned = l
            .pin(ld.join(name))
            .with_context(|| format!("cannot pin link of {name} in {}", ld.display()))?;
    }
    Ok(())
}

/// Pins a freshly loaded engine's maps and links as build `build`, and whatever else
/// `pin_more` pins into the directory it is given (the syscall programs): into its `-partial`
/// directory first, renamed into place once all of it is pinned.
pub(super) fn pin_fresh(
    owned: pins::PinRoot,
    build: &str,
    maps: &Maps,
    links: Vec<(&str, FdLink)>,
    pin_more: impl FnOnce(&Path) -> anyhow::Result<()>,
    mut retire: Vec<PathBuf>,
) -> anyhow::Result<Pins> {
    let dir = owned.build_dir(build);
    let partial = owned.partial_dir(build);
    let _ = std::fs::remove_dir_all(&partial);
    pin_all(&partial, maps, links)
        .and_then(|()| pin_more(&partial))
        .and_then(|()| owned.publish(&partial, &dir))
        .inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&partial);
        })?;
    retire.retain(|p| p != &partial);
    Ok(Pins {
        _root: owned,
        dir,
        adopted: false,
        retire,
    })
}

impl Engine {
    /// Takes over maps and links pinned by an earlier engine of this build: nothing is
    /// loaded or detached, so enforcement continues without a gap.
    pub(super) fn adopt(
        root: pins::PinRoot,
        dir: PathBuf,
        cgroup: PathBuf,
        retire: Vec<PathBuf>,
    ) -> anyhow::Result<Engine> {
        for (prog, attach) in LINKED_PROGRAMS {
            // Observation is optional (`no_conn_observe`): the adopted engine observes as the
            // pinned one did.
            if attach.optional() || is_observation(prog) {
                continue;
            }
            let l = dir.join("links").join(prog);
            if !l.exists() {
                bail!(
                    "pinned engine at {} is incomplete (no link {prog}); run `bulwark unload` \
                     on that pin directory to load afresh",
                    dir.display()
                );
            }
        }
        let mut maps = Maps::from_pins(&dir)?;
        let cfg: Config = {
            let a: Array<&MapData, Config> = Array::try_from(maps.get(MAP_CONFIG)?)?;
            a.get(&0, 0)?
        };
        // The next slot write must carry a generation no process can hold already: not the
        // last flip's, nor one an interrupted switch wrote into the pending slot.
        let generation = {
            let a: Array<&MapData, SlotMeta> = Array::try_from(maps.get(MAP_SLOT_META)?)?;
            let written = (0..SLOTS as u32)
                .filter_map(|i| a.get(&i, 0).ok())
                .map(|m| u64::from(m.generation))
                .max()
                .unwrap_or(0);
            cfg.generation.max(written)
        };
        if cfg.pending_slot != NO_SLOT {
            // A switch was interrupted: the active slot is intact, the pending one is not.
            let mut a: Array<&mut MapData, Config> = Array::try_from(map(&mut maps, MAP_CONFIG)?)?;
            a.set(
                0,
                Config {
                    pending_slot: NO_SLOT,
                    ..cfg
                },
                0,
            )?;
        }
        let syscall = super::syscall::SyscallPrograms::adopt(&dir)?;
        let mut engine = Engine {
            ebpf: None,
            maps,
            pins: Some(Pins {
                _root: root,
                dir,
                adopted: true,
                retire,
            }),
            cgroup,
            active: (cfg.active_slot & 1) as u8,
            generation,
            events_taken: false,
            noop: false,
            matches: Vec::new(),
            barrier: switch::ProgramBarrier::new()?,
            last_switch: SwitchReport::default(),
            syscall,
        };
        // The syscall programs are attached exactly while the filter needs them; a daemon
        // killed between writing one and changing the other left them out of step.
        let wanted = super::syscall::filter_wants(&engine.maps)?;
        if wanted != engine.syscall.attached() {
            let pins = engine.pins.as_ref().map(Pins::dir);
            if let Err(e) = engine.syscall.set(None, pins, wanted) {
                log::warn!("the adopted syscall filter and programs disagree: {e:#}");
            }
        }
        Ok(engine)
    }

    /// Whether this engine adopted pinned programs and maps instead of loading them.
    pub fn adopted(&self) -> bool {
        self.pins.as_ref().is_some_and(|p| p.adopted)
    }

    /// How this engine came by its programs.
    pub fn pinning(&self) -> Pinning {
        match &self.pins {
            None => Pinning::Ephemeral,
            Some(p) if p.adopted => Pinning::Adopted,
            Some(_) => Pinning::Pinned,
        }
    }

    /// This engine's build directory under the pin directory (`None` when not pinned).
    pub fn pin_path(&self) -> Option<&Path> {
        self.pins.as_ref().map(|p| p.dir.as_path())
    }

    /// Removes this engine's pins (and any left by other builds): the programs detach when
    /// the engine is dropped. Without pins this is a no-op.
    pub fn unpin(&mut self) -> anyhow::Result<()> {
        if let Some(p) = self.pins.take() {
            for d in p.retire.iter().chain(std::iter::once(&p.dir)) {
                std::fs::remove_dir_all(d)
                    .with_context(|| format!("cannot remove pins in {}", d.display()))?;
            }
        }
        Ok(())
    }

    /// Removes the pins of other builds once this engine's rule set is in force: their
    /// programs enforced until now, and removing their pinned links detaches them.
    pub(super) fn retire_other_builds(&mut self) {
        if let Some(p) = &mut self.pins {
            for d in std::mem::take(&mut p.retire) {
                if let Err(e) = std::fs::remove_dir_all(&d) {
                    log::warn!("cannot remove old pins {}: {e}", d.display());
                }
            }
        }
    }
}
