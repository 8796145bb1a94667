//! The kernel side of `bulwark run`: [`EngineKernel`] is the daemon core's [`Kernel`] backed by
//! the real [`Engine`] (atomic apply of the compiler's map entries, the workload map) and its
//! [`EventReader`] (records, decoded once by the engine, handed to the pipeline as they are).

use crate::engine::ProcessBits;
use crate::engine::{Engine, EventReader};
use crate::pipeline::kernel::Kernel;
use crate::record::{DecodeError, Record};
use anyhow::Context;
use bulwark_compiler::NodeRuleSet;
use daemon_common::COUNTER_STALE_PROCESS;
use std::time::Duration;

/// The kernel engine and its event reader, as the daemon uses them.
pub struct EngineKernel {
    engine: Option<Engine>,
    reader: Option<EventReader>,
    /// Losses counted when the engine went away (at shutdown).
    last_lost: u64,
    /// Stale-process connects counted when the engine went away.
    last_stale: u64,
}

impl EngineKernel {
    /// The engine, and its event reader (taken from it once).
    pub fn new(mut engine: Engine) -> anyhow::Result<Self> {
        let reader = engine.events()?;
        Ok(EngineKernel {
            engine: Some(engine),
            reader: Some(reader),
            last_lost: 0,
            last_stale: 0,
        })
    }
}

/// What the daemon describes (bits, namespace id) as the engine writes it.
fn process_bits((bits, namespace_id): (u64, u32)) -> ProcessBits {
    ProcessBits {
        bits,
        namespace_id: Some(namespace_id),
    }
}

/// Records handed out per poll before the loop gets to reloads and signals again.
const MAX_RECORDS_PER_POLL: usize = 8192;

impl Kernel<NodeRuleSet> for EngineKernel {
    fn apply(
        &mut self,
        rules: &NodeRuleSet,
        describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
    ) -> anyhow::Result<u8> {
        let engine = self.engine.as_mut().context("engine already shut down")?;
        let slot = engine.apply_slot(
            |slot| rules.slot_entries(slot),
            |tgid| describe(tgid).map(process_bits),
        )?;
        let r = engine.last_switch();
        log::info!(
            "switched to slot {slot}: {} processes reseeded in {} rounds ({} us, barrier {} us), \
             {} failed closed, {} left stale",
            r.reseeded,
            r.rounds,
            r.reseed_us,
            r.barrier_us,
            r.fail_closed,
            r.stale_left
        );
        Ok(slot)
    }

    fn refresh_process(
        &mut self,
        tgid: u32,
        describe: &mut dyn FnMut(u32) -> Option<(u64, u32)>,
    ) -> anyhow::Result<()> {
        let engine = self.engine.as_mut().context("engine already shut down")?;
        let written = engine.refresh_process(tgid, |t| describe(t).map(process_bits))?;
        log::debug!("process {tgid} moved between namespaces: bits recomputed: {written}");
        Ok(())
    }

    fn set_workload(&mut self, cgroup_id: u64, namespace_id: u32) -> anyhow::Result<()> {
        let engine = self.engine.as_mut().context("engine already shut down")?;
        engine.set_workload(cgroup_id, namespace_id)
    }

    fn remove_workload(&mut self, cgroup_id: u64) -> anyhow::Result<()> {
        let engine = self.engine.as_mut().context("engine already shut down")?;
        engine.remove_workload(cgroup_id)
    }

    fn set_loaders(&mut self, loaders: &[bulwark_compiler::FileId]) -> anyhow::Result<()> {
        let engine = self.engine.as_mut().context("engine already shut down")?;
        let keys: Vec<daemon_common::FileKey> = loaders
            .iter()
            .map(|f| daemon_common::FileKey {
                dev: f.dev,
                _pad: 0,
                ino: f.ino,
            })
            .collect();
        engine.set_loaders(&keys)
    }

    fn set_encrypted_protocols(
        &mut self,
        protocols: &[daemon_common::SignatureEntry],
    ) -> anyhow::Result<()> {
        let engine = self.engine.as_mut().context("engine already shut down")?;
        engine.set_encrypted_protocols(protocols)
    }

    fn poll(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(Result<Record, DecodeError>),
    ) -> anyhow::Result<()> {
        let Some(reader) = self.reader.as_mut() else {
            return Ok(());
        };
        if !timeout.is_zero() {
            reader
                .wait(Some(timeout))
                .context("waiting for kernel events")?;
        }
        if let Some(engine) = self.engine.as_mut() {
            // Matches the engine found itself (connections older than the rule set,
            // processes without room for state) go the same way as the kernel's.
            for m in engine.take_matches() {
                sink(Ok(Record::Match(m)));
            }
        }
        for _ in 0..MAX_RECORDS_PER_POLL {
            let Some(record) = reader.next_record() else {
                break;
            };
            sink(record);
        }
        Ok(())
    }

    fn lost_events(&self) -> u64 {
        self.engine
            .as_ref()
            .and_then(|e| e.lost_events().ok())
            .unwrap_or(self.last_lost)
    }

    fn warnings(&self) -> Vec<String> {
        self.engine
            .as_ref()
            .map(Engine::capacity_warnings)
            .unwrap_or_default()
    }

    fn stale_processes(&self) -> u64 {
        self.engine
            .as_ref()
            .and_then(|e| e.counters().ok())
            .map_or(self.last_stale, |c| c[COUNTER_STALE_PROCESS as usize])
    }

    fn reap_uring_inflight(&mut self, proc_root: &std::path::Path) -> usize {
        let Some(engine) = self.engine.as_mut() else {
            return 0;
        };
        engine
            .reap_uring_inflight(|tgid| proc_root.join(tgid.to_string()).exists())
            .unwrap_or_else(|e| {
                log::warn!("cannot sweep FILE_URING_INFLIGHT: {e:#}");
                0
            })
    }

    fn shutdown(&mut self) {
        self.last_lost = self.lost_events();
        self.last_stale = self.stale_processes();
        self.reader = None;
        // Dropping the engine detaches every program and link that is not pinned; pinned ones
        // stay and keep enforcing for the next daemon (or until `bulwark unload`).
        self.engine = None;
    }

    fn adopted(&self) -> bool {
        self.engine.as_ref().is_some_and(Engine::adopted)
    }

    fn workload_cgroups(&self) -> anyhow::Result<Vec<u64>> {
        let engine = self.engine.as_ref().context("engine already shut down")?;
        engine.workload_cgroups()
    }

    fn slot_holding(&self, rules: &NodeRuleSet) -> Option<u8> {
        let engine = self.engine.as_ref().filter(|e| e.adopted())?;
        let slot = engine.active_slot();
        match engine.slot_holds(slot, &rules.slot_entries(slot)) {
            Ok(true) => Some(slot),
            Ok(false) => None,
            Err(e) => {
                log::warn!("cannot read back the adopted rule set: {e:#}");
                None
            }
        }
    }
}
