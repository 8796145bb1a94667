//! The engine's handles on the eBPF object's maps, held by name, and the maps outside the
//! rule-set slots: the values a fresh object starts with, the workload and loader registries,
//! the process map, the SOCKHASH's members and the diagnostic counters.

use std::path::Path;

use anyhow::Context;
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, SockHash};
use aya::Ebpf;
use daemon_common::*;

use super::Engine;

/// Every map of the eBPF object (the engine holds them by name).
pub(super) const ALL_MAPS: [&str; 38] = [
    MAP_CONFIG,
    MAP_SLOT_META,
    MAP_SELECTORS,
    MAP_GROUPS,
    MAP_BIN_EXACT,
    MAP_BIN_PREFIX,
    MAP_BIN_POSTFIX,
    MAP_ARG_EXACT,
    MAP_ARG_PREFIX,
    MAP_ARG_POSTFIX,
    MAP_NAMESPACES,
    MAP_DEST_V4,
    MAP_DEST_V6,
    MAP_PORTS,
    MAP_WORKLOADS,
    MAP_PROCESSES,
    MAP_SK_STORAGE,
    MAP_SOCKHASH,
    MAP_EVENTS,
    MAP_COUNTERS,
    MAP_RESEED,
    MAP_BIN_INODE,
    MAP_LOADERS,
    MAP_LOADER_ARG_OPTIONS,
    MAP_DECLARED_PROTOCOLS,
    "ZEROS",
    MAP_SYSCALL_FILTER,
    MAP_SYSCALL_SELECTORS,
    MAP_SYSCALL_CONDS,
    MAP_SYSCALL_INFLIGHT,
    MAP_FILE_TABLES,
    MAP_FILE_SELECTORS,
    MAP_FILE_EXACT,
    MAP_FILE_PREFIX,
    MAP_FILE_POSTFIX,
    MAP_FILE_INODE,
    MAP_FILE_URING_INFLIGHT,
    MAP_FILE_URING_LAST_OPEN,
];

/// The engine's map handles, by name.
pub(super) struct Maps(pub(super) std::collections::HashMap<&'static str, Map>);

impl Maps {
    /// Takes every map out of a freshly loaded object.
    pub(super) fn take_from(ebpf: &mut Ebpf) -> anyhow::Result<Maps> {
        Maps::collect(|name| {
            ebpf.take_map(name)
                .with_context(|| format!("map {name} missing from the eBPF object"))
        })
    }

    /// Opens every map an earlier engine pinned under `dir/maps`.
    pub(super) fn from_pins(dir: &Path) -> anyhow::Result<Maps> {
        Maps::collect(|name| {
            let path = dir.join("maps").join(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("cannot open pinned map {}", path.display()))?;
            Ok(Map::from_map_data(data)?)
        })
    }

    /// Every map of the object, each as `open` gives it.
    fn collect(mut open: impl FnMut(&'static str) -> anyhow::Result<Map>) -> anyhow::Result<Maps> {
        let mut maps = std::collections::HashMap::new();
        for name in ALL_MAPS {
            maps.insert(name, open(name)?);
        }
        Ok(Maps(maps))
    }

    /// The values a freshly loaded object starts with: slot 0 active, no switch pending, and
    /// the dynamic loader's options.
    pub(super) fn initialize(&mut self) -> anyhow::Result<()> {
        {
            let mut cfg: Array<&mut MapData, Config> = Array::try_from(map(self, MAP_CONFIG)?)?;
            cfg.set(
                0,
                Config {
                    active_slot: 0,
                    pending_slot: NO_SLOT,
                    generation: 0,
                },
                0,
            )?;
        }

        {
            // The loader's options that take a value (a fact of ld.so, not of any policy).
            let mut m: HashMap<&mut MapData, [u8; LOADER_OPTION_LEN], u8> =
                HashMap::try_from(map(self, MAP_LOADER_ARG_OPTIONS)?)?;
            for opt in LOADER_OPTIONS_WITH_VALUE {
                let mut key = [0u8; LOADER_OPTION_LEN];
                key[..opt.len()].copy_from_slice(opt);
                m.insert(key, 1, 0)?;
            }
        }
        Ok(())
    }

    pub(super) fn get(&self, name: &str) -> anyhow::Result<&Map> {
        self.0
            .get(name)
            .with_context(|| format!("map {name} missing from the eBPF object (build mismatch)"))
    }
    pub(super) fn get_mut(&mut self, name: &str) -> anyhow::Result<&mut Map> {
        self.0
            .get_mut(name)
            .with_context(|| format!("map {name} missing from the eBPF object (build mismatch)"))
    }
}

pub(super) fn map<'a>(maps: &'a mut Maps, name: &str) -> anyhow::Result<&'a mut Map> {
    maps.get_mut(name)
}

/// A map removal that found no such key counts as done.
pub(super) fn absent_is_ok(r: Result<(), aya::maps::MapError>) -> anyhow::Result<()> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

impl Engine {
    /// Registers a cgroup (by cgroup id, the inode number of its cgroup v2 directory) as a
    /// workload in a Kubernetes namespace (ids from the compiler's `NamespaceIds`).
    pub fn set_workload(&mut self, cgroup_id: u64, namespace_id: u32) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, u64, WorkloadEntry> =
            HashMap::try_from(map(&mut self.maps, MAP_WORKLOADS)?)?;
        m.insert(
            cgroup_id,
            WorkloadEntry {
                namespace_id,
                _pad: 0,
            },
            0,
        )
        .with_context(|| format!("WORKLOADS full ({MAX_WORKLOADS} cgroups)"))?;
        Ok(())
    }

    /// The cgroups registered as workloads.
    pub fn workload_cgroups(&self) -> anyhow::Result<Vec<u64>> {
        let m: HashMap<&MapData, u64, WorkloadEntry> =
            HashMap::try_from(self.maps.get(MAP_WORKLOADS)?)?;
        Ok(m.keys().collect::<Result<_, _>>()?)
    }

    /// Replaces the set of dynamic loader files (`LOADERS`): an exec of one of them is a loader
    /// exec, whose target the kernel matches as a binary path.
    pub fn set_loaders(&mut self, files: &[FileKey]) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, FileKey, u8> =
            HashMap::try_from(map(&mut self.maps, MAP_LOADERS)?)?;
        let old: Vec<FileKey> = m.keys().filter_map(Result::ok).collect();
        for k in old.iter().filter(|k| !files.contains(k)) {
            let _ = m.remove(k);
        }
        for k in files {
            m.insert(k, 1, 0)
                .with_context(|| format!("LOADERS full ({MAX_LOADERS} files)"))?;
        }
        Ok(())
    }

    /// Replaces the declared encrypted protocols the payload verdicts count as encrypted
    /// (`DECLARED_PROTOCOLS`): entry `i` is `protocols[i]`, the rest are cleared. Each entry is
    /// one map write, so a verdict made during the change sees the old or the new entry of each
    /// index. More than [`MAX_DECLARED_PROTOCOLS`] is refused with nothing written.
    pub fn set_encrypted_protocols(&mut self, protocols: &[SignatureEntry]) -> anyhow::Result<()> {
        if protocols.len() > MAX_DECLARED_PROTOCOLS {
            anyhow::bail!(
                "{} declared encrypted protocols; the kernel table holds {MAX_DECLARED_PROTOCOLS} \
                 (drop the ones no workload speaks)",
                protocols.len()
            );
        }
        let mut m: Array<&mut MapData, SignatureEntry> =
            Array::try_from(map(&mut self.maps, MAP_DECLARED_PROTOCOLS)?)?;
        for i in 0..MAX_DECLARED_PROTOCOLS {
            let e = protocols.get(i).copied().unwrap_or_default();
            m.set(i as u32, e, 0)
                .with_context(|| format!("writing {MAP_DECLARED_PROTOCOLS}[{i}]"))?;
        }
        Ok(())
    }

    /// Forgets a workload cgroup (absent is not an error).
    pub fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, u64, WorkloadEntry> =
            HashMap::try_from(map(&mut self.maps, MAP_WORKLOADS)?)?;
        absent_is_ok(m.remove(&cgroup_id))
    }

    /// Per-CPU diagnostic counters summed over CPUs, indexed by `COUNTER_*`.
    pub fn counters(&self) -> anyhow::Result<[u64; COUNTERS_LEN as usize]> {
        let m: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(self.maps.get(MAP_COUNTERS)?)?;
        let mut out = [0u64; COUNTERS_LEN as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = m.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Entries a map was created with (`max_entries`), 0 when unknown.
    fn map_capacity(&self, name: &str) -> u32 {
        let data = match self.maps.get(name) {
            Ok(Map::HashMap(d)) | Ok(Map::SockHash(d)) => d,
            _ => return 0,
        };
        data.info().map_or(0, |i| i.max_entries())
    }

    /// Enforcement kept only by refusing because a map was full, one sentence per kind (for
    /// the `status` event, stderr and metrics); empty when the maps always had room.
    pub fn capacity_warnings(&self) -> Vec<String> {
        let Ok(c) = self.counters() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let full = c[COUNTER_PROCESS_MAP_FULL as usize];
        if full > 0 {
            out.push(format!(
                "the process map ({} entries) was full {full} times: {} processes an                  enforce-mode connect/egress rule covers were killed at exec (reason capacity),                  others run without rules; raise --max-processes",
                self.map_capacity(MAP_PROCESSES),
                c[COUNTER_CAPACITY_KILLS as usize]
            ));
        }
        let full = c[COUNTER_SOCKHASH_FULL as usize];
        if full > 0 {
            out.push(format!(
                "the SOCKHASH ({} watched sockets) was full {full} times: the payload of                  those connections is refused by the backstop (reason unseen_payload); raise                  --max-watched-sockets",
                self.map_capacity(MAP_SOCKHASH)
            ));
        }
        out
    }

    /// Records the kernel could not put into the ring buffer (it was full).
    pub fn lost_events(&self) -> anyhow::Result<u64> {
        Ok(self.counters()?[COUNTER_LOST_EVENTS as usize])
    }

    /// The kernel's cached state of a process (diagnostics, tests).
    pub fn process_state(&self, tgid: u32) -> Option<ProcessState> {
        let m: HashMap<&MapData, u32, ProcessState> =
            HashMap::try_from(self.maps.get(MAP_PROCESSES).ok()?).ok()?;
        m.get(&tgid, 0).ok()
    }

    /// Removes the kernel's state of a process, as when it could not be stored (tests of what
    /// the programs do for a process they know nothing about). Absent is not an error.
    pub fn forget_process(&mut self, tgid: u32) -> anyhow::Result<()> {
        let mut m: HashMap<&mut MapData, u32, ProcessState> =
            HashMap::try_from(map(&mut self.maps, MAP_PROCESSES)?)?;
        absent_is_ok(m.remove(&tgid))
    }

    /// Cookies of the sockets currently in the SOCKHASH (watched by the egress program).
    pub fn watched_sockets(&self) -> anyhow::Result<Vec<u64>> {
        let m: SockHash<&MapData, u64> = SockHash::try_from(self.maps.get(MAP_SOCKHASH)?)?;
        Ok(m.keys().filter_map(Result::ok).collect())
    }
}
