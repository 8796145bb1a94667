//! Kernel feature probes (for `bulwark probe`): does this kernel load each program type, map
//! type and helper bulwark uses, and the trampoline types it does not use; and does it accept
//! bulwark's own eBPF object ([`verify_programs`]). aya 0.14's probing
//! (`aya::sys::is_program_supported`, `is_map_supported`, `is_helper_supported`) answers all
//! the types but one: aya probes `Tracing` programs as fentry (a trampoline), and has nothing
//! for `tp_btf` (BTF-typed raw tracepoints, no trampoline), which is loaded and attached here
//! with one trivial program. Each type probe answers `Ok(())` or, in words, why not.

use std::error::Error;
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::Context;
use aya::maps::MapType;
use aya::programs::{Program, ProgramType};
use aya::sys::BpfHelper;
use aya::EbpfLoader;

use super::attach::load_error;
use super::bpf_sys::{bpf, put32, put64};
use super::btf::{Btf, KIND_TYPEDEF};
use super::PROGRAMS;
use daemon_common::{COUNTERS_LEN, MAP_COUNTERS};

/// `Ok(())` when the kernel has it, else why not.
pub type Verdict = Result<(), String>;

/// An error and its causes, one line (aya's syscall errors keep the OS error as the source).
fn describe(e: &dyn Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// aya's answer as a verdict.
fn verdict<E: Error>(r: Result<bool, E>) -> Verdict {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err("not supported by this kernel".into()),
        Err(e) => Err(describe(&e)),
    }
}

/// Whether a trivial program of this type loads (trampoline types: and attaches).
pub fn program(program_type: ProgramType) -> Verdict {
    verdict(aya::sys::is_program_supported(program_type))
}

/// Whether a map of this type can be created.
pub fn map(map_type: MapType) -> Verdict {
    verdict(aya::sys::is_map_supported(map_type))
}

/// Whether programs of this type may call `helper`.
pub fn helper(program_type: ProgramType, helper: BpfHelper) -> Verdict {
    verdict(aya::sys::is_helper_supported(program_type, helper))
}

/// Where the kernel lists its kprobe PMU; without it kprobes cannot be attached.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe/type";

/// Whether kprobes can be used: the program type loads *and* the kernel has kprobes to attach
/// to (the type may load on a kernel with kprobes compiled out).
pub fn kprobe() -> Verdict {
    program(ProgramType::KProbe)?;
    if Path::new(KPROBE_PMU).exists() {
        Ok(())
    } else {
        Err("the program type loads but the kernel has no kprobe PMU \
             (/sys/bus/event_source/devices/kprobe): kprobes are compiled out"
            .into())
    }
}

// bpf(2) commands and the program/attach types of a tp_btf program (uapi/linux/bpf.h).
const BPF_PROG_LOAD: i64 = 5;
const BPF_RAW_TRACEPOINT_OPEN: i64 = 17;
const PROG_TRACING: u32 = 26;
const ATTACH_TRACE_RAW_TP: u32 = 23;

/// One BPF instruction (`struct bpf_insn`).
fn insn(code: u8, dst: u8, src: u8, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | (dst & 0xf);
    b[4..].copy_from_slice(&imm.to_ne_bytes());
    b
}

/// Whether a `tp_btf` program (`r0 = 0; exit`) on `sched_process_exec` loads and attaches;
/// detached again when the probe returns.
pub fn tp_btf(btf: &Btf) -> Verdict {
    let target = "btf_trace_sched_process_exec";
    let btf_id = btf
        .type_id(target, KIND_TYPEDEF)
        .ok_or_else(|| format!("{target} not in kernel BTF"))?;
    let code = [insn(0xb7, 0, 0, 0), insn(0x95, 0, 0, 0)].concat();
    let license = c"GPL";
    let mut attr = [0u8; 144];
    put32(&mut attr, 0, PROG_TRACING);
    put32(&mut attr, 4, (code.len() / 8) as u32);
    put64(&mut attr, 8, code.as_ptr() as u64);
    put64(&mut attr, 16, license.as_ptr() as u64);
    put32(&mut attr, 68, ATTACH_TRACE_RAW_TP);
    put32(&mut attr, 108, btf_id);
    let prog = bpf(BPF_PROG_LOAD, &mut attr)?;
    let mut attr = [0u8; 16];
    put32(&mut attr, 8, prog.as_raw_fd() as u32);
    bpf(BPF_RAW_TRACEPOINT_OPEN, &mut attr).map(drop)
}

/// Whether the policy-switch barrier works ([`super::switch::ProgramBarrier`]: a map-in-map
/// update waits for running BPF programs); the detail says how long one wait took.
pub fn switch_barrier() -> Result<String, String> {
    let b = super::switch::ProgramBarrier::new().map_err(|e| format!("{e:#}"))?;
    let t = std::time::Instant::now();
    b.wait().map_err(|e| format!("{e:#}"))?;
    Ok(format!(
        "map-in-map update waits for running programs ({} us)",
        t.elapsed().as_micros()
    ))
}

/// Diagnostic counters of the bulwark engines running on this host, by map id of their
/// `COUNTERS` map (a per-CPU array of `COUNTERS_LEN` u64 values named so), summed over CPUs.
pub fn running_engine_counters() -> Vec<(u32, [u64; COUNTERS_LEN as usize])> {
    let mut out = Vec::new();
    for info in aya::maps::loaded_maps().flatten() {
        let fits = info.name_as_str() == Some(MAP_COUNTERS)
            && info.max_entries() == COUNTERS_LEN
            && info.value_size() == 8
            && matches!(info.map_type(), Ok(MapType::PerCpuArray));
        if !fits {
            continue;
        }
        let Ok(data) = aya::maps::MapData::from_id(info.id()) else {
            continue;
        };
        let Ok(m) = aya::maps::PerCpuArray::<_, u64>::try_from(aya::maps::Map::PerCpuArray(data))
        else {
            continue;
        };
        let mut c = [0u64; COUNTERS_LEN as usize];
        for (i, v) in c.iter_mut().enumerate() {
            *v = m.get(&(i as u32), 0).map_or(0, |vals| vals.iter().sum());
        }
        out.push((info.id(), c));
    }
    out
}

/// One of bulwark's programs through the verifier: its name and either the number of
/// instructions the verifier processed (the limit is 1,000,000) or the reason it was refused.
pub type ProgramVerdict = (String, Result<Option<u32>, String>);

/// Loads bulwark's eBPF object and every program in it through the verifier *without
/// attaching anything*. Returns each program's verdict; an error for the whole object (e.g. a
/// map type the kernel lacks) is the outer error.
pub fn verify_programs() -> anyhow::Result<Vec<ProgramVerdict>> {
    // The offsets `Engine::load` would use: the verifier prunes by these read-only values.
    let tracefs = super::host::tracefs().unwrap_or_else(|| "/sys/kernel/tracing".into());
    let offsets = super::resolve_offsets(Path::new("/sys/kernel/btf/vmlinux"), &tracefs)?;
    let mut ebpf = EbpfLoader::new()
        .override_global("OFFSETS", &offsets, true)
        .load(PROGRAMS)
        .context("cannot load bulwark's eBPF object (maps or BTF rejected by the kernel)")?;
    let btf = aya::Btf::from_sys_fs().ok();
    let mut out = Vec::new();
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_string()).collect();
    for name in names {
        let Some(p) = ebpf.program_mut(&name) else {
            continue;
        };
        let r = match p {
            Program::TracePoint(p) => p.load(),
            Program::RawTracePoint(p) => p.load(),
            Program::CgroupSockAddr(p) => p.load(),
            Program::CgroupSock(p) => p.load(),
            Program::SockOps(p) => p.load(),
            Program::SkMsg(p) => p.load(),
            Program::CgroupSkb(p) => p.load(),
            Program::BtfTracePoint(p) => match &btf {
                Some(b) => p.load(&name, b),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        let r = r.map(|()| p.info().ok().and_then(|i| i.verified_instruction_count()));
        out.push((
            name.clone(),
            r.map_err(|e| format!("{:#}", load_error(&name, e))),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insn_encoding_matches_the_uapi_layout() {
        // r1 = 0: opcode 0xb7, dst 1 in the low nibble, imm 0.
        assert_eq!(insn(0xb7, 1, 0, 0), [0xb7, 0x01, 0, 0, 0, 0, 0, 0]);
        // call 109
        assert_eq!(insn(0x85, 0, 0, 109), [0x85, 0, 0, 0, 109, 0, 0, 0]);
    }

    #[test]
    fn errors_are_described_with_their_causes() {
        let e = aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        let v = verdict::<aya::sys::SyscallError>(Err(e)).unwrap_err();
        assert!(
            v.contains("bpf_prog_load") && v.contains("not permitted"),
            "{v}"
        );
        assert_eq!(
            verdict::<aya::sys::SyscallError>(Ok(false)).unwrap_err(),
            "not supported by this kernel"
        );
        assert_eq!(verdict::<aya::sys::SyscallError>(Ok(true)), Ok(()));
    }
}
