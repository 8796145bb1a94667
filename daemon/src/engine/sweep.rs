//! What the engine checks itself after a rule set takes over, for what the kernel programs
//! could not see happen: TCP connections that existed before it (connected before the daemon
//! started or the policy was applied) and running processes the process map had no room for.
//!
//! Existing connections whose destination an egress selector of the new slot watches and that
//! are not watched yet: one that never sent a byte is put under watch (state in SK_STORAGE, then
//! the SOCKHASH) exactly as if it had just connected; one that already sent bytes cannot be
//! judged (its first payload was never seen) and, when a process holding it is in scope of an
//! enforce-mode egress Block for plaintext (or any encryption), is destroyed and reported
//! (`REASON_EXISTING_CONNECTION`, outcome blocked); monitor-mode rules report it. The
//! destination is evaluated with the same map lookups the kernel makes (the contract in
//! `daemon-common`), so both sides agree by construction.

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, MapData, SkStorage, SockHash,
};
use daemon_common::*;

use super::host::boot_ns;
use super::maps::map;
use super::sockets::{self, HeldSocket};
use super::Engine;

/// A match record the engine writes itself (not from the ring buffer).
fn engine_match(
    (tgid, start_ns): (u32, u64),
    slot: u8,
    index: u32,
    sel: &SelectorEntry,
    enforced: bool,
    reason: u8,
    dest: Destination,
) -> MatchEvent {
    MatchEvent {
        header: EventHeader {
            kind: EVENT_MATCH,
            tgid,
            time_ns: boot_ns(),
            start_ns,
        },
        slot,
        selector: index as u8,
        hook: sel.hook,
        actions: sel.actions,
        enforced: enforced as u8,
        encryption: ENC_PENDING,
        reason,
        _pad: 0,
        cgroup_id: 0,
        dest,
        tid: 0,
    }
}

impl Engine {
    /// Running processes whose state did not fit into the process map when the rule set was
    /// applied (a map configured smaller than pid_max): without state their connect and egress
    /// rules cannot apply, so one an enforce-mode connect/egress Block covers is killed and
    /// reported (`REASON_CAPACITY`), like the exec program does for new processes.
    pub(super) fn refuse_unstored(
        &mut self,
        slot: u8,
        e: &SlotEntries,
        unstored: &[(u32, u64, u64, u32)],
    ) {
        for &(tgid, start_ns, bits, namespace_id) in unstored {
            let mut kill = false;
            // The bits are numbered in the table of the process's group.
            let key = NamespaceKey {
                slot: u32::from(slot),
                namespace_id,
            };
            let group = e.groups.iter().find(|(k, _)| *k == key).map_or(0, |g| g.1);
            let t = table(u32::from(slot), group);
            let Some((_, entries)) = e.tables.iter().find(|(u, _)| *u == t) else {
                continue;
            };
            for (idx, sel) in &entries.selectors {
                let i = idx % MAX_SELECTORS as u32;
                let covered = bits & (1u64 << i) != 0
                    && (sel.hook == HOOK_CONNECT || sel.hook == HOOK_EGRESS)
                    && sel.mode == MODE_ENFORCE
                    && sel.actions & ACTION_BLOCK != 0;
                if covered {
                    kill = true;
                    self.matches.push(engine_match(
                        (tgid, start_ns),
                        t as u8,
                        i,
                        sel,
                        true,
                        REASON_CAPACITY,
                        Destination::default(),
                    ));
                }
            }
            if kill {
                log::warn!(
                    "process map full: killing process {tgid}, which an enforce-mode connect/\
                     egress rule covers and which could not be given state (raise \
                     --max-processes)"
                );
                // SAFETY: plain syscall.
                unsafe { libc::kill(tgid as libc::pid_t, libc::SIGKILL) };
            } else {
                log::warn!("process map full: process {tgid} keeps no selector bits");
            }
        }
    }

    /// Selector `index` of `table`.
    fn selector_entry(&self, table: u8, index: u32) -> anyhow::Result<SelectorEntry> {
        let a: Array<&MapData, SelectorEntry> = Array::try_from(self.maps.get(MAP_SELECTORS)?)?;
        Ok(a.get(&(table as u32 * MAX_SELECTORS as u32 + index), 0)?)
    }

    /// The table of `slot` a process in `namespace_id` is judged in (the kernel's
    /// `process_table`, on the same `GROUPS` map).
    pub fn process_table(&self, slot: u8, namespace_id: u32) -> anyhow::Result<u8> {
        let slot32 = u32::from(slot & 1);
        if namespace_id == 0 {
            return Ok(slot & 1);
        }
        let g: HashMap<&MapData, NamespaceKey, u32> =
            HashMap::try_from(self.maps.get(MAP_GROUPS)?)?;
        let key = NamespaceKey {
            slot: slot32,
            namespace_id,
        };
        let group = g.get(&key, 0).unwrap_or(0) & (MAX_GROUPS as u32 - 1);
        Ok(table(slot32, group) as u8)
    }

    /// Egress selectors of `table` whose destination conditions hold for `dest`: the lookups
    /// of the kernel's `dest_truth` and `egress_dest_selectors`, made on the same maps.
    pub fn egress_dest_selectors(&self, table: u8, dest: &Destination) -> anyhow::Result<u64> {
        let slot = table;
        let meta: SlotMeta = {
            let a: Array<&MapData, SlotMeta> = Array::try_from(self.maps.get(MAP_SLOT_META)?)?;
            a.get(&(table as u32), 0)?
        };
        if meta.hook_egress == 0 {
            return Ok(0);
        }
        let addr_hits = if dest.family as i32 == libc::AF_INET {
            let m: LpmTrie<&MapData, V4LpmData, u64> =
                LpmTrie::try_from(self.maps.get(MAP_DEST_V4)?)?;
            let data = V4LpmData {
                slot,
                addr: [dest.addr[0], dest.addr[1], dest.addr[2], dest.addr[3]],
            };
            m.get(&Key::new(8 + 32, data), 0).unwrap_or(0)
        } else {
            let m: LpmTrie<&MapData, V6LpmData, u64> =
                LpmTrie::try_from(self.maps.get(MAP_DEST_V6)?)?;
            let data = V6LpmData {
                slot,
                addr: dest.addr,
            };
            m.get(&Key::new(8 + 128, data), 0).unwrap_or(0)
        };
        let port_hits = {
            let m: LpmTrie<&MapData, PortLpmData, u64> =
                LpmTrie::try_from(self.maps.get(MAP_PORTS)?)?;
            let data = PortLpmData {
                slot,
                port: dest.port.to_be_bytes(),
            };
            m.get(&Key::new(8 + 16, data), 0).unwrap_or(0)
        };
        let truth =
            ((addr_hits | meta.dest_any_addr) & (port_hits | meta.dest_any_port) & meta.dest_tcp)
                ^ meta.dest_negate;
        let mut out = 0u64;
        for i in 0..MAX_SELECTORS as u32 {
            if meta.hook_egress & (1u64 << i) != 0
                && self.selector_entry(slot, i)?.dest_required & !truth == 0
            {
                out |= 1u64 << i;
            }
        }
        Ok(out)
    }

    /// See the module documentation. Runs after every apply.
    pub(super) fn sweep_existing_sockets(&mut self) -> anyhow::Result<()> {
        let slot = self.active;
        for s in sockets::tcp_sockets(std::process::id()) {
            let dest = sockets::destination(&s.peer);
            // Watched when an egress selector of any group holds: the slot's watch table.
            let watch = self
                .egress_dest_selectors(table(u32::from(slot), WATCH_GROUP as u32) as u8, &dest)?;
            if watch == 0 {
                continue;
            }
            let fd = s.fd.as_raw_fd();
            {
                let storage: SkStorage<&MapData, SockState> =
                    SkStorage::try_from(self.maps.get(MAP_SK_STORAGE)?)?;
                if storage.get(&fd, 0).is_ok() {
                    continue; // watched since its connect
                }
            }
            if s.info.never_sent() && self.watch_existing(&s)? {
                continue;
            }
            self.existing_connection(slot, &s, dest)?;
        }
        Ok(())
    }

    /// Puts a connection that never sent a byte under watch; false when a send raced it (its
    /// first bytes may then have gone out unseen, so it is judged like one that sent).
    fn watch_existing(&mut self, s: &HeldSocket) -> anyhow::Result<bool> {
        let holder = s.holders.first().copied().unwrap_or(0);
        let start_ns = self.process_state(holder).map_or(0, |p| p.start_ns);
        let mut st = SockState::new(holder, start_ns);
        st.cookie = s.cookie;
        let fd = s.fd.as_raw_fd();
        {
            let mut storage: SkStorage<&mut MapData, SockState> =
                SkStorage::try_from(map(&mut self.maps, MAP_SK_STORAGE)?)?;
            storage.insert(&fd, st, 0)?;
            // From here on the backstop refuses payload the verdict did not pass.
            let sent = sockets::tcp_info(s.fd.as_fd()).map_or(true, |i| !i.never_sent());
            if sent {
                storage.remove(&fd)?;
                return Ok(false);
            }
        }
        let mut sh: SockHash<&mut MapData, u64> =
            SockHash::try_from(map(&mut self.maps, MAP_SOCKHASH)?)?;
        if let Err(e) = sh.insert(s.cookie, s.fd.as_raw_fd(), 0) {
            // The backstop refuses its payload (nothing passes the verdict): fail closed.
            log::warn!(
                "cannot watch existing connection {} -> {} ({e}); its payload will be refused",
                s.local,
                s.peer
            );
        }
        Ok(true)
    }

    /// A connection that already sent bytes to a watched destination: destroyed when a process
    /// holding it is in scope of an enforce-mode egress Block that an unseen (so plaintext)
    /// stream meets, reported for monitor-mode ones.
    fn existing_connection(
        &mut self,
        slot: u8,
        s: &HeldSocket,
        dest: Destination,
    ) -> anyhow::Result<()> {
        let mut destroy = false;
        let mut found = Vec::new();
        {
            let procs: HashMap<&MapData, u32, ProcessState> =
                HashMap::try_from(self.maps.get(MAP_PROCESSES)?)?;
            for &pid in &s.holders {
                let Ok(p) = procs.get(&pid, 0) else {
                    continue;
                };
                // Each holder in its own group's table.
                let t = self.process_table(slot, p.namespace_id)?;
                let bits = p.selectors[slot as usize] & self.egress_dest_selectors(t, &dest)?;
                if bits != 0 {
                    found.push((pid, p.start_ns, bits, t));
                }
            }
        }
        let Some(&(pid, start_ns, bits, t)) = found.first() else {
            return Ok(());
        };
        let slot = t;
        for i in 0..MAX_SELECTORS as u32 {
            if bits & (1u64 << i) == 0 {
                continue;
            }
            let sel = self.selector_entry(slot, i)?;
            if sel.encryption == ENC_TLS {
                continue; // an unseen stream counts as plaintext
            }
            let enforced = sel.mode == MODE_ENFORCE && sel.actions & ACTION_BLOCK != 0;
            destroy |= enforced;
            self.matches.push(engine_match(
                (pid, start_ns),
                slot,
                i,
                &sel,
                enforced,
                REASON_EXISTING_CONNECTION,
                dest,
            ));
        }
        if destroy {
            if let Err(e) = sockets::destroy(s.fd.as_fd()) {
                log::warn!(
                    "cannot destroy existing connection {} -> {} of process {pid}: {e}",
                    s.local,
                    s.peer
                );
            }
        }
        Ok(())
    }
}
