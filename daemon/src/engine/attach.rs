//! Loading bulwark's eBPF object and attaching its programs: the offsets and map sizes it is
//! loaded with, the table of programs attached through links and their hooks
//! ([`LINKED_PROGRAMS`]: loading, attaching, pinning and adopting all follow it), the sk_msg
//! program on the SOCKHASH, and load errors that say which program and why.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use aya::maps::{MapData, SockHash};
use aya::programs::{
    links::FdLink, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock, CgroupSockAddr,
    ProgramError, RawTracePoint, SkMsg, SockOps, TracePoint,
};
use aya::{Ebpf, EbpfLoader};
use daemon_common::*;

use super::maps::Maps;
use super::{host, pid_max, socket_guard, Btf, EngineOptions, PROGRAMS};

/// The program attached for hook `name` (`bulwark_*`): the real one, or its `noop_*` twin.
fn program_for(opts: &EngineOptions, name: &str) -> String {
    match (opts.noop_programs, name.strip_prefix("bulwark_")) {
        (true, Some(hook)) => format!("noop_{hook}"),
        _ => name.to_string(),
    }
}

/// Where a linked program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Attach {
    /// Tracepoint `category/name`.
    TracePoint(&'static str, &'static str),
    /// Tracepoint `category/name`, when this kernel has it (a kernel without the subsystem has
    /// nothing for the program to watch).
    TracePointIfPresent(&'static str, &'static str),
    /// Tracepoint `category/name` whose record has each `(field, offset)` the program reads;
    /// not attached, with a warning, on a kernel without it or with another layout.
    TracePointWithLayout(&'static str, &'static str, &'static [(&'static str, u32)]),
    RawTracePoint(&'static str),
    /// On the cgroup v2 root, at the hook of the program's own attach type.
    CgroupSockAddr,
    CgroupSock,
    SockOps,
    /// On the cgroup v2 root, cgroup_skb egress.
    CgroupSkbEgress,
    /// On the cgroup v2 root, cgroup_skb ingress.
    CgroupSkbIngress,
}

impl Attach {
    /// Whether a kernel may lack the hook (the program is then not attached, nor pinned).
    pub(super) fn optional(self) -> bool {
        matches!(
            self,
            Attach::TracePointIfPresent(..) | Attach::TracePointWithLayout(..)
        )
    }
}

/// Programs attached through links (pinned as `links/<name>`), in attach order. `bulwark_egress`
/// (sk_msg) is attached to the SOCKHASH instead and lives as long as that map.
pub(super) const LINKED_PROGRAMS: [(&str, Attach); 15] = [
    (
        "bulwark_exec",
        Attach::TracePoint("sched", "sched_process_exec"),
    ),
    (
        "bulwark_exit",
        Attach::TracePoint("sched", "sched_process_exit"),
    ),
    ("bulwark_fork", Attach::RawTracePoint("sched_process_fork")),
    (
        "bulwark_cgroup_move",
        Attach::TracePointWithLayout("cgroup", "cgroup_attach_task", &TP_CGROUP_ATTACH_FIELDS),
    ),
    ("bulwark_connect4", Attach::CgroupSockAddr),
    ("bulwark_connect6", Attach::CgroupSockAddr),
    ("bulwark_sendmsg4", Attach::CgroupSockAddr),
    ("bulwark_sendmsg6", Attach::CgroupSockAddr),
    ("bulwark_sockops", Attach::SockOps),
    ("bulwark_backstop", Attach::CgroupSkbEgress),
    ("bulwark_sock_create", Attach::CgroupSock),
    (
        "bulwark_packet_socket",
        Attach::TracePointIfPresent(
            socket_guard::CAP_TRACEPOINT.0,
            socket_guard::CAP_TRACEPOINT.1,
        ),
    ),
    (
        "bulwark_uring_socket",
        Attach::TracePointIfPresent(
            socket_guard::URING_TRACEPOINT.0,
            socket_guard::URING_TRACEPOINT.1,
        ),
    ),
    ("bulwark_conn_egress", Attach::CgroupSkbEgress),
    ("bulwark_conn_ingress", Attach::CgroupSkbIngress),
];

/// Whether `name` is one of connection observation's programs (`daemon-ebpf/src/conn.rs`),
/// which `EngineOptions::no_conn_observe` leaves unattached. Its sock_ops half runs in
/// `bulwark_sockops`, turned off by [`ConnConfig::observe`] instead.
pub(super) fn is_observation(name: &str) -> bool {
    name.starts_with("bulwark_conn_")
}

/// What the connection programs are loaded with: the offset of the socket flags (`sk_flags`,
/// since 6.x `__sk_common.skc_flags`; 0 when BTF has neither: a FIN received after our own
/// was acked then counts as one payload byte), the stats interval, and whether connections are
/// observed at all.
pub(super) fn conn_config(
    btf_path: &Path,
    interval: std::time::Duration,
    observe: bool,
) -> ConnConfig {
    let sock_flags = Btf::from_file(btf_path)
        .and_then(|b| {
            b.member_offset("sock", "sk_flags").or_else(|_| {
                Ok(b.member_offset("sock", "__sk_common")?
                    + b.member_offset("sock_common", "skc_flags")?)
            })
        })
        .unwrap_or_else(|e: anyhow::Error| {
            log::warn!("connection byte counts may include a FIN: {e}");
            0
        });
    ConnConfig {
        sock_flags,
        // `enum sock_flags`: SOCK_DEAD, SOCK_DONE, ... (unchanged since the enum exists).
        sock_done_bit: 1,
        stats_interval_ns: interval.as_nanos().min(u64::MAX as u128) as u64,
        observe: observe.into(),
        _pad: 0,
    }
}

/// Whether tracefs lists the tracepoint `category/name`.
fn tracepoint_exists(tracefs: &Path, category: &str, name: &str) -> bool {
    tracefs.join("events").join(category).join(name).is_dir()
}

/// Loads program `prog` (the real one or its noop twin) of hook `name` and attaches it. With
/// `take` the link is returned (to be pinned); without, it stays with the program in `ebpf` and
/// detaches when that is dropped. `None` as well when an optional hook is not on this kernel.
fn attach_program(
    ebpf: &mut Ebpf,
    (name, attach): (&'static str, Attach),
    prog: &str,
    take: bool,
    cgroup: &(PathBuf, std::fs::File),
    tracefs: &Path,
) -> anyhow::Result<Option<FdLink>> {
    let (cg_path, cg) = cgroup;
    let p = ebpf
        .program_mut(prog)
        .with_context(|| format!("program {prog} missing"))?;
    // Cgroup programs attach through bpf links: the kernel always attaches cgroup links as
    // multi-capable (BPF_F_ALLOW_MULTI), so other agents' programs on this cgroup or below
    // keep working; `Single` only says we attach one program per hook.
    let on_cgroup = |e: aya::programs::ProgramError| {
        anyhow::Error::new(e).context(format!(
            "cannot attach {name} to cgroup {}",
            cg_path.display()
        ))
    };
    // Loads the program as `$ty`, attaches it with `$attach` and, when pinning, takes the link.
    macro_rules! attach_as {
        ($ty:ty, |$p:ident| $attach:expr) => {{
            let $p: &mut $ty = p.try_into()?;
            $p.load().map_err(|e| load_error(name, e))?;
            let id = $attach?;
            if !take {
                return Ok(None);
            }
            FdLink::try_from($p.take_link(id)?)?
        }};
    }
    let single = CgroupAttachMode::Single;
    let link = match attach {
        Attach::TracePoint(category, tp) | Attach::TracePointIfPresent(category, tp) => {
            if matches!(attach, Attach::TracePointIfPresent(..))
                && !tracepoint_exists(tracefs, category, tp)
            {
                log::info!("{name}: this kernel has no tracepoint {category}/{tp}; not attached");
                return Ok(None);
            }
            attach_as!(TracePoint, |p| p.attach(category, tp).with_context(|| {
                format!("cannot attach {name} to tracepoint {category}/{tp}")
            }))
        }
        Attach::TracePointWithLayout(category, tp, fields) => {
            let found = |field: &str| host::tracepoint_field_offset(tracefs, category, tp, field);
            if let Some((field, want)) = fields.iter().find(|(f, off)| found(f) != Some(*off)) {
                log::warn!(
                    "{name}: tracepoint {category}/{tp} missing or its field {field} is not at \
                     offset {want} on this kernel; not attached (a process moved to another \
                     namespace's cgroup keeps its namespace until it execs or the rules change)"
                );
                return Ok(None);
            }
            attach_as!(TracePoint, |p| p.attach(category, tp).with_context(|| {
                format!("cannot attach {name} to tracepoint {category}/{tp}")
            }))
        }
        Attach::RawTracePoint(tp) => attach_as!(RawTracePoint, |p| p
            .attach(tp)
            .with_context(|| format!("cannot attach {name} to raw tracepoint {tp}"))),
        Attach::CgroupSockAddr => {
            attach_as!(CgroupSockAddr, |p| p.attach(cg, single).map_err(on_cgroup))
        }
        Attach::CgroupSock => attach_as!(CgroupSock, |p| p.attach(cg, single).map_err(on_cgroup)),
        Attach::SockOps => attach_as!(SockOps, |p| p.attach(cg, single).map_err(on_cgroup)),
        Attach::CgroupSkbEgress => attach_as!(CgroupSkb, |p| p
            .attach(cg, CgroupSkbAttachType::Egress, single)
            .map_err(on_cgroup)),
        Attach::CgroupSkbIngress => attach_as!(CgroupSkb, |p| p
            .attach(cg, CgroupSkbAttachType::Ingress, single)
            .map_err(on_cgroup)),
    };
    Ok(Some(link))
}

/// The structure offsets and host facts the programs read from `OFFSETS`.
pub fn resolve_offsets(btf_path: &Path, tracefs: &Path) -> anyhow::Result<KernelOffsets> {
    let btf = Btf::from_file(btf_path)?;
    let mut offsets = btf.kernel_offsets()?;
    if offsets.file_read != 1 {
        log::warn!(
            "kernel BTF lacks the fd-table, file-mode or working-directory offsets (or the path \
             walk's): hook: file rules will judge nothing on this kernel"
        );
    } else if offsets.uring_file != 1 {
        log::warn!(
            "kernel BTF lacks io_uring's request layouts (io_kiocb, io_open, ...) or the \
             io_uring_submit_req / io_uring_complete / io_uring_cqe_overflow raw tracepoints \
             differ: hook: file rules will not see files opened, unlinked or renamed through \
             io_uring (set kernel.io_uring_disabled=2 to close that route)"
        );
    }
    offsets.tp_exit_group_dead =
        host::tracepoint_field_offset(tracefs, "sched", "sched_process_exit", "group_dead")
            .unwrap_or(0);
    Ok(socket_guard::offsets(&btf, tracefs, offsets))
}

/// Creates the object's maps, sized by `opts`, and loads it with `offsets` (its programs are
/// loaded as they are attached).
pub(super) fn load_object(
    opts: &EngineOptions,
    offsets: &KernelOffsets,
    conn: &ConnConfig,
    syscall_regs: &SyscallRegs,
) -> anyhow::Result<Ebpf> {
    let ring = opts.events_ring_bytes.unwrap_or(EVENTS_RING_BYTES);
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u32;
    if !ring.is_power_of_two() || ring < page {
        bail!("events_ring_bytes {ring} must be a power of two of at least {page} (the page size)");
    }
    let max_processes = match opts.max_processes {
        Some(n) => n,
        None => pid_max()?,
    };
    let max_sockets = opts.max_watched_sockets.unwrap_or(MAX_WATCHED_SOCKETS);
    if max_processes == 0 || max_sockets == 0 {
        bail!("the process map and the SOCKHASH need room for at least one entry");
    }
    let ebpf = EbpfLoader::new()
        .override_global("OFFSETS", offsets, true)
        .override_global("CONN_CONFIG", conn, true)
        .override_global("SYSCALL_REGS", syscall_regs, true)
        .map_max_entries(MAP_EVENTS, ring)
        .map_max_entries(MAP_PROCESSES, max_processes)
        .map_max_entries(MAP_SOCKHASH, max_sockets)
        .load(PROGRAMS)
        .context("cannot load bulwark's eBPF object (maps or BTF rejected by the kernel)")?;
    Ok(ebpf)
}

/// Loads and attaches every program: the linked ones on their hooks (with `opts.pin_dir`,
/// returning their links to be pinned) and `bulwark_egress` on the SOCKHASH.
pub(super) fn attach_all(
    ebpf: &mut Ebpf,
    opts: &EngineOptions,
    maps: &Maps,
    cgroup: &Path,
    tracefs: &Path,
) -> anyhow::Result<Vec<(&'static str, FdLink)>> {
    let mut links = Vec::new();
    let cg = std::fs::File::open(cgroup)
        .with_context(|| format!("cannot open cgroup directory {}", cgroup.display()))?;
    let cg = (cgroup.to_path_buf(), cg);
    for entry in LINKED_PROGRAMS {
        if opts.no_conn_observe && is_observation(entry.0) {
            continue;
        }
        let prog = program_for(opts, entry.0);
        let pin = opts.pin_dir.is_some();
        if let Some(link) = attach_program(ebpf, entry, &prog, pin, &cg, tracefs)? {
            links.push((entry.0, link));
        }
    }
    {
        let fd = {
            let sh: SockHash<&MapData, u64> = SockHash::try_from(maps.get(MAP_SOCKHASH)?)?;
            sh.fd().try_clone()?
        };
        let p: &mut SkMsg = ebpf
            .program_mut("bulwark_egress")
            .context("program bulwark_egress missing")?
            .try_into()?;
        p.load().map_err(|e| load_error("bulwark_egress", e))?;
        let id = p
            .attach(&fd)
            .context("cannot attach bulwark_egress to the SOCKHASH")?;
        if opts.pin_dir.is_some() {
            // A prog-attach to a map is not an fd-backed link and cannot be pinned: it
            // lasts as long as the (pinned) SOCKHASH. Dropping aya's handle would detach
            // it, so it is deliberately leaked.
            std::mem::forget(p.take_link(id)?);
        }
    }
    Ok(links)
}

/// Last lines of a verifier log (the part that says why).
fn log_tail(log: &str, lines: usize) -> String {
    let v: Vec<&str> = log.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Turns a program load error into one that says which program and why.
pub(super) fn load_error(name: &str, e: ProgramError) -> anyhow::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => anyhow::anyhow!(
            "the kernel rejected eBPF program {name} ({io_error}); verifier log tail:\n{}",
            log_tail(&verifier_log.to_string(), 60)
        ),
        other => anyhow::anyhow!("cannot load eBPF program {name}: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_log_tail_keeps_the_last_lines() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let t = log_tail(&log, 3);
        assert_eq!(t, "line 97\nline 98\nline 99");
        assert_eq!(log_tail("only\n", 60), "only");
        assert_eq!(log_tail("", 5), "");
    }
}
