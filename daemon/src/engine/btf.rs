//! A small reader for kernel BTF (`/sys/kernel/btf/vmlinux`): just enough to find struct member
//! byte offsets (`task_struct.mm`, `mm_struct.arg_start`, ...) so the kernel programs can read
//! those fields on any kernel build. aya's `Btf` does not expose member offsets, hence this.
//! Anonymous struct/union members are searched recursively (`mm_struct` keeps its fields in one).

use anyhow::{bail, Context};
use daemon_common::KernelOffsets;

const MAGIC: u16 = 0xeb9f;

/// The raw tracepoints the file hook's io_uring programs attach to (`daemon-ebpf/src/uring.rs`).
pub const URING_SUBMIT_TRACEPOINT: &str = "io_uring_submit_req";
pub const URING_COMPLETE_TRACEPOINT: &str = "io_uring_complete";
pub const URING_OVERFLOW_TRACEPOINT: &str = "io_uring_cqe_overflow";

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
pub const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
/// BTF kinds the probe looks up by name.
pub const KIND_TYPEDEF: u32 = 8;
pub const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// One member of a struct or union.
#[derive(Debug, Clone, Copy)]
struct Member {
    name_off: u32,
    type_id: u32,
    /// Offset in bits from the start of the enclosing type.
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Struct and union members; a function prototype's parameters (`bit_offset` 0); an
    /// enum's enumerators (`bit_offset` the value).
    members: Vec<Member>,
    /// The type a pointer, typedef or prototype (its return) refers to.
    type_ref: u32,
}

/// Parsed BTF: the types and the string section (only what offset lookups need).
#[derive(Debug)]
pub struct Btf {
    strings: Vec<u8>,
    /// Index = type id (0 is void).
    types: Vec<Type>,
}

fn u32_at(d: &[u8], at: usize) -> anyhow::Result<u32> {
    let b = d
        .get(at..at + 4)
        .with_context(|| format!("BTF truncated at byte {at}"))?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl Btf {
    /// Reads and parses a BTF file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Btf> {
        let data = std::fs::read(path).with_context(|| {
            format!(
                "cannot read kernel BTF at {} (bulwark needs a kernel built with \
                 CONFIG_DEBUG_INFO_BTF=y)",
                path.display()
            )
        })?;
        Btf::parse(&data).with_context(|| format!("cannot parse BTF in {}", path.display()))
    }

    /// Parses raw little-endian BTF.
    pub fn parse(d: &[u8]) -> anyhow::Result<Btf> {
        if d.len() < 24 {
            bail!("BTF is {} bytes, shorter than its 24-byte header", d.len());
        }
        let magic = u16::from_le_bytes([d[0], d[1]]);
        if magic != MAGIC {
            bail!("not BTF (magic {magic:#x}, expected {MAGIC:#x}; big-endian BTF unsupported)");
        }
        let hdr_len = u32_at(d, 4)? as usize;
        let type_off = u32_at(d, 8)? as usize;
        let type_len = u32_at(d, 12)? as usize;
        let str_off = u32_at(d, 16)? as usize;
        let str_len = u32_at(d, 20)? as usize;
        let tstart = hdr_len + type_off;
        let sstart = hdr_len + str_off;
        let tdata = d
            .get(tstart..tstart + type_len)
            .context("BTF type section out of bounds")?;
        let strings = d
            .get(sstart..sstart + str_len)
            .context("BTF string section out of bounds")?
            .to_vec();
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            members: Vec::new(),
            type_ref: 0,
        }];
        let mut at = 0usize;
        while at < tdata.len() {
            let name_off = u32_at(tdata, at)?;
            let info = u32_at(tdata, at + 4)?;
            let type_ref = u32_at(tdata, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => at += 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let off = u32_at(tdata, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(tdata, m)?,
                            type_id: u32_at(tdata, m + 4)?,
                            bit_offset: if kind_flag { off & 0x00ff_ffff } else { off },
                        });
                    }
                    at += vlen * 12;
                }
                KIND_FUNC_PROTO => {
                    for i in 0..vlen {
                        let p = at + i * 8;
                        members.push(Member {
                            name_off: u32_at(tdata, p)?,
                            type_id: u32_at(tdata, p + 4)?,
                            bit_offset: 0,
                        });
                    }
                    at += vlen * 8;
                }
                KIND_ENUM => {
                    // An enumerator's value where a member keeps its offset.
                    for i in 0..vlen {
                        let e = at + i * 8;
                        members.push(Member {
                            name_off: u32_at(tdata, e)?,
                            type_id: 0,
                            bit_offset: u32_at(tdata, e + 4)?,
                        });
                    }
                    at += vlen * 8;
                }
                KIND_DATASEC | KIND_ENUM64 => at += vlen * 12,
                0..=19 => {}
                other => bail!("unknown BTF kind {other} at type {}", types.len()),
            }
            types.push(Type {
                name_off,
                kind,
                members,
                type_ref,
            });
        }
        Ok(Btf { strings, types })
    }

    fn name(&self, off: u32) -> &[u8] {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Byte offset of `member` in the struct named `strukt` (searching anonymous nested
    /// structs/unions).
    pub fn member_offset(&self, strukt: &str, member: &str) -> anyhow::Result<u32> {
        let bits = self.member_bit_offset(strukt, member)?;
        if bits % 8 != 0 {
            bail!("{strukt}.{member} is a bitfield (bit offset {bits}); cannot read it");
        }
        Ok(bits / 8)
    }

    /// Bit offset of `member` (a bitfield or not) in the struct named `strukt`.
    pub fn member_bit_offset(&self, strukt: &str, member: &str) -> anyhow::Result<u32> {
        let ty = self
            .types
            .iter()
            .position(|t| t.kind == KIND_STRUCT && self.name(t.name_off) == strukt.as_bytes())
            .with_context(|| format!("struct {strukt} not found in kernel BTF"))?;
        self.find_member(ty as u32, member.as_bytes(), 0)
            .with_context(|| format!("struct {strukt} has no member {member} in kernel BTF"))
    }

    fn find_member(&self, ty: u32, member: &[u8], depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(ty as usize)?;
        for m in &t.members {
            if m.name_off != 0 && self.name(m.name_off) == member {
                return Some(m.bit_offset);
            }
        }
        for m in &t.members {
            if m.name_off == 0 {
                if let Some(b) = self.find_member(m.type_id, member, depth + 1) {
                    return Some(m.bit_offset + b);
                }
            }
        }
        None
    }

    /// The parameters of raw tracepoint `name` after its context, from the prototype of
    /// `btf_trace_<name>`, each as C spells a pointer to a struct (`struct io_kiocb *`) or
    /// `void *` (`?` for other types); `None` when BTF has no such tracepoint.
    pub fn raw_tracepoint_params(&self, name: &str) -> Option<Vec<String>> {
        let td = self.type_id(&format!("btf_trace_{name}"), KIND_TYPEDEF)?;
        let ptr = self
            .types
            .get(self.types.get(td as usize)?.type_ref as usize)?;
        let proto = self.types.get(ptr.type_ref as usize)?;
        if ptr.kind != KIND_PTR || proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        let spell = |id: u32| -> String {
            let Some(t) = self.types.get(id as usize).filter(|t| t.kind == KIND_PTR) else {
                return "?".into();
            };
            match self.types.get(t.type_ref as usize) {
                _ if t.type_ref == 0 => "void *".into(),
                Some(s) if s.kind == KIND_STRUCT => {
                    format!(
                        "struct {} *",
                        String::from_utf8_lossy(self.name(s.name_off))
                    )
                }
                _ => "?".into(),
            }
        };
        Some(
            proto
                .members
                .iter()
                .skip(1)
                .map(|p| spell(p.type_id))
                .collect(),
        )
    }

    /// `base` plus where io_uring keeps a prepared file request (`io_kiocb` and the `io_open`,
    /// `io_unlink`, `io_mkdir`, `io_rename`, `io_link` in its `cmd`); `uring_file` is 0 when
    /// any is missing, `base` has no `file_read`, or the raw tracepoints the file hook's
    /// io_uring programs read have other prototypes (they then judge nothing, and `bulwark
    /// probe` shows the route as unseen).
    pub fn uring_offsets(&self, base: KernelOffsets) -> KernelOffsets {
        let params = |tp: &str, want: &[&str]| {
            self.raw_tracepoint_params(tp)
                .is_some_and(|p| p.iter().map(String::as_str).eq(want.iter().copied()))
        };
        if base.file_read != 1
            || !params(URING_SUBMIT_TRACEPOINT, &["struct io_kiocb *"])
            || !params(
                URING_COMPLETE_TRACEPOINT,
                &["struct io_ring_ctx *", "void *", "struct io_uring_cqe *"],
            )
            || !params(
                URING_OVERFLOW_TRACEPOINT,
                &["void *", "?", "?", "?", "void *"],
            )
        {
            return base;
        }
        let get = |s: &str, m: &str| self.member_offset(s, m).ok();
        let found = (|| {
            let cmd = get("io_kiocb", "cmd")?;
            let open_how = get("io_open", "how")? + get("open_how", "flags")?;
            Some(KernelOffsets {
                uring_file: 1,
                uring_req_opcode: get("io_kiocb", "opcode")?,
                uring_req_flags: get("io_kiocb", "flags")?,
                uring_req_fd: get("io_kiocb", "cqe")? + get("io_cqe", "fd")?,
                uring_req_ctx: get("io_kiocb", "ctx")?,
                // The first member: offset 0 is a real offset here (the program reads it from
                // the ring pointer, not through `read_kernel`).
                uring_ctx_flags: get("io_ring_ctx", "flags")?,
                filename_name: get("filename", "name")?,
                uring_open_dfd: cmd + get("io_open", "dfd")?,
                uring_open_file_slot: cmd + get("io_open", "file_slot")?,
                uring_open_filename: cmd + get("io_open", "filename")?,
                uring_open_flags: cmd + open_how,
                uring_unlink_dfd: cmd + get("io_unlink", "dfd")?,
                uring_unlink_filename: cmd + get("io_unlink", "filename")?,
                uring_mkdir_dfd: cmd + get("io_mkdir", "dfd")?,
                uring_mkdir_filename: cmd + get("io_mkdir", "filename")?,
                uring_rename_old_dfd: cmd + get("io_rename", "old_dfd")?,
                uring_rename_new_dfd: cmd + get("io_rename", "new_dfd")?,
                uring_rename_oldpath: cmd + get("io_rename", "oldpath")?,
                uring_rename_newpath: cmd + get("io_rename", "newpath")?,
                uring_link_new_dfd: cmd + get("io_link", "new_dfd")?,
                uring_link_newpath: cmd + get("io_link", "newpath")?,
                uring_req_res: get("io_kiocb", "cqe")? + get("io_cqe", "res")?,
                uring_req_user_data: get("io_kiocb", "cqe")? + get("io_cqe", "user_data")?,
                uring_req_need_cleanup: 1u32
                    .checked_shl(self.enum_value("REQ_F_NEED_CLEANUP_BIT")?)?,
                ..base
            })
        })();
        found.unwrap_or(base)
    }

    /// The value of enumerator `name` (of any 32-bit enum, named or not).
    pub fn enum_value(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .filter(|t| t.kind == KIND_ENUM)
            .flat_map(|t| &t.members)
            .find(|m| self.name(m.name_off) == name.as_bytes())
            .map(|m| m.bit_offset)
    }

    /// Type id of the first type named `name` of BTF kind `kind` (e.g. [`KIND_FUNC`]).
    pub fn type_id(&self, name: &str, kind: u32) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == kind && self.name(t.name_off) == name.as_bytes())
            .map(|i| i as u32)
    }

    /// The offsets the kernel programs need.
    pub fn kernel_offsets(&self) -> anyhow::Result<KernelOffsets> {
        Ok(KernelOffsets {
            task_mm: self.member_offset("task_struct", "mm")?,
            task_real_parent: self.member_offset("task_struct", "real_parent")?,
            task_tgid: self.member_offset("task_struct", "tgid")?,
            task_pid: self.member_offset("task_struct", "pid")?,
            task_exit_code: self.member_offset("task_struct", "exit_code")?,
            mm_arg_start: self.member_offset("mm_struct", "arg_start")?,
            mm_arg_end: self.member_offset("mm_struct", "arg_end")?,
            task_flags: self.member_offset("task_struct", "flags")?,
            tp_exit_group_dead: 0,
            ..self.optional_offsets()
        })
    }

    /// The offsets of the reads the programs do only when BTF has them (each with its flag:
    /// `path_walk`, `inode_read`, `tfo`, `file_read`, `cgroup_read`); what `bulwark probe`
    /// reports.
    pub fn optional_offsets(&self) -> KernelOffsets {
        self.cgroup_offsets(self.uring_offsets(
            self.file_offsets(self.tfo_offsets(self.inode_offsets(self.path_walk_offsets()))),
        ))
    }

    /// `base` plus the offsets from a task to its cgroup v2 id; `cgroup_read` is 0 when any
    /// is missing (fork then cannot see a child created straight into another cgroup, and
    /// docs/enforcement.md says what that leaves open).
    pub fn cgroup_offsets(&self, base: KernelOffsets) -> KernelOffsets {
        let get = |s: &str, m: &str| self.member_offset(s, m).ok();
        let found = (|| {
            Some(KernelOffsets {
                cgroup_read: 1,
                task_cgroups: get("task_struct", "cgroups")?,
                css_set_dfl_cgrp: get("css_set", "dfl_cgrp")?,
                cgroup_kn: get("cgroup", "kn")?,
                kernfs_node_id: get("kernfs_node", "id")?,
                ..base
            })
        })();
        found.unwrap_or(base)
    }

    /// `base` plus the offsets the file hook reads a call's file with (the fd table, the file's
    /// mode, the working directory); `file_read` is 0 when any is missing or `base` cannot walk
    /// paths or read identities (the file hook then judges nothing; the loader logs a warning).
    pub fn file_offsets(&self, base: KernelOffsets) -> KernelOffsets {
        let get = |s: &str, m: &str| self.member_offset(s, m).ok();
        let found = (|| {
            Some(KernelOffsets {
                file_read: 1,
                task_files: get("task_struct", "files")?,
                files_fdt: get("files_struct", "fdt")?,
                fdtable_fd: get("fdtable", "fd")?,
                fdtable_max_fds: get("fdtable", "max_fds")?,
                file_f_mode: get("file", "f_mode")?,
                task_fs: get("task_struct", "fs")?,
                fs_pwd: get("fs_struct", "pwd")?,
                ..base
            })
        })();
        match found {
            Some(f) if base.path_walk == 1 && base.inode_read == 1 => f,
            _ => base,
        }
    }

    /// Where `tcp_sock` says a socket uses TCP Fast Open (`fastopen_req`, the
    /// `fastopen_connect` bit); `tfo` is 0 when either is missing (connect then cannot detect
    /// TFO, and the wire-level backstop still refuses data in a SYN on a watched socket).
    pub fn tfo_offsets(&self, base: KernelOffsets) -> KernelOffsets {
        match (
            self.member_offset("tcp_sock", "fastopen_req"),
            self.member_bit_offset("tcp_sock", "fastopen_connect"),
        ) {
            (Ok(req), Ok(bit)) => KernelOffsets {
                tfo: 1,
                tcp_fastopen_req: req,
                tcp_fastopen_connect_bit: bit,
                ..base
            },
            _ => base,
        }
    }

    /// `base` plus the offsets of the executed file's identity and link count; `inode_read`
    /// is 0 when any is missing (exec then matches binaries by path only and cannot tell a
    /// fileless exec).
    pub fn inode_offsets(&self, base: KernelOffsets) -> KernelOffsets {
        let get = |s: &str, m: &str| self.member_offset(s, m).ok();
        let found = (|| {
            Some(KernelOffsets {
                inode_read: 1,
                mm_exe_file: get("mm_struct", "exe_file")?,
                file_f_inode: get("file", "f_inode")?,
                inode_i_ino: get("inode", "i_ino")?,
                inode_i_sb: get("inode", "i_sb")?,
                inode_i_nlink: get("inode", "i_nlink")?,
                sb_s_dev: get("super_block", "s_dev")?,
                ..base
            })
        })();
        found.unwrap_or(base)
    }

    /// Offsets of the exe_file dentry/mount walk; `path_walk` is 0 when any is missing (exec
    /// then falls back to the filename given to execve).
    pub fn path_walk_offsets(&self) -> KernelOffsets {
        let get = |s: &str, m: &str| self.member_offset(s, m).ok();
        let all = (|| {
            Some(KernelOffsets {
                path_walk: 1,
                mm_exe_file: get("mm_struct", "exe_file")?,
                file_f_path: get("file", "f_path")?,
                path_mnt: get("path", "mnt")?,
                path_dentry: get("path", "dentry")?,
                dentry_d_parent: get("dentry", "d_parent")?,
                dentry_d_name: get("dentry", "d_name")?,
                qstr_len: get("qstr", "len")?,
                qstr_name: get("qstr", "name")?,
                mount_mnt: get("mount", "mnt")?,
                mount_mnt_parent: get("mount", "mnt_parent")?,
                mount_mnt_mountpoint: get("mount", "mnt_mountpoint")?,
                vfsmount_mnt_root: get("vfsmount", "mnt_root")?,
                ..KernelOffsets::default()
            })
        })();
        all.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: `int`, an anonymous struct {a; b}, and
    /// `struct outer { int x; <anon> ; int y }` with the anonymous struct at byte 8.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0outer\0x\0a\0b\0y\0".to_vec();
        let s = |n: &str| -> u32 {
            let pat = format!("\0{n}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let push = |t: &mut Vec<u8>, v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int
        push(&mut t, s("int"));
        push(&mut t, KIND_INT << 24);
        push(&mut t, 4);
        push(&mut t, 32);
        // 2: anonymous struct { int a @0; int b @32 bits }
        push(&mut t, 0);
        push(&mut t, (KIND_STRUCT << 24) | 2);
        push(&mut t, 8);
        for (n, off) in [("a", 0), ("b", 32)] {
            push(&mut t, s(n));
            push(&mut t, 1);
            push(&mut t, off);
        }
        // 3: struct outer { int x @0; anon @64 bits; int y @128 bits }
        push(&mut t, s("outer"));
        push(&mut t, (KIND_STRUCT << 24) | 3);
        push(&mut t, 20);
        for (n, ty, off) in [(s("x"), 1, 0), (0, 2, 64), (s("y"), 1, 128)] {
            push(&mut t, n);
            push(&mut t, ty);
            push(&mut t, off);
        }
        let mut d = Vec::new();
        d.extend_from_slice(&MAGIC.to_le_bytes());
        d.push(1);
        d.push(0);
        push(&mut d, 24);
        push(&mut d, 0);
        push(&mut d, t.len() as u32);
        push(&mut d, t.len() as u32);
        push(&mut d, strings.len() as u32);
        d.extend_from_slice(&t);
        d.extend_from_slice(&strings);
        d
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("outer", "x").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "y").unwrap(), 16);
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 12);
        assert_eq!(btf.type_id("outer", KIND_STRUCT), Some(3));
        assert_eq!(btf.type_id("outer", KIND_FUNC), None);
        assert_eq!(btf.type_id("int", KIND_INT), Some(1));
    }

    #[test]
    fn missing_struct_or_member_is_a_clear_error() {
        let btf = Btf::parse(&blob()).unwrap();
        let e = btf.member_offset("inner", "x").unwrap_err().to_string();
        assert!(e.contains("struct inner not found"), "{e}");
        let e = btf.member_offset("outer", "zz").unwrap_err().to_string();
        assert!(e.contains("no member zz"), "{e}");
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert!(Btf::parse(b"short").is_err());
        let mut d = blob();
        d[0] = 0;
        assert!(Btf::parse(&d).unwrap_err().to_string().contains("not BTF"));
        let d = blob();
        // Truncate inside the type section.
        assert!(Btf::parse(&d[..40]).is_err());
    }

    #[test]
    fn this_kernel_has_the_offsets_we_need() {
        let p = std::path::Path::new("/sys/kernel/btf/vmlinux");
        if !p.exists() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but /sys/kernel/btf/vmlinux is missing"
            );
            return;
        }
        let off = Btf::from_file(p).unwrap().kernel_offsets().unwrap();
        assert!(off.task_mm > 0 && off.task_tgid > 0 && off.mm_arg_end > off.mm_arg_start);
        assert_eq!(off.path_walk, 1, "dentry walk offsets: {off:?}");
        assert_eq!(off.inode_read, 1, "inode offsets: {off:?}");
        assert!(
            off.file_f_inode > 0 && off.inode_i_sb > 0 && off.sb_s_dev > 0,
            "{off:?}"
        );
        assert_eq!((off.path_mnt, off.path_dentry), (0, 8));
        assert_eq!((off.qstr_len, off.qstr_name), (4, 8));
        assert_eq!(off.tfo, 1, "TCP Fast Open offsets: {off:?}");
        assert_eq!(off.file_read, 1, "file hook offsets: {off:?}");
        assert!(
            off.task_files > 0 && off.fdtable_fd > 0 && off.fs_pwd > 0,
            "{off:?}"
        );
        assert!(off.tcp_fastopen_req > 0 && off.tcp_fastopen_connect_bit > 0);
        assert_eq!(off.cgroup_read, 1, "cgroup offsets: {off:?}");
        assert!(off.task_cgroups > 0 && off.css_set_dfl_cgrp > 0 && off.cgroup_kn > 0);
        assert_eq!(off.uring_file, 1, "io_uring offsets: {off:?}");
        // `struct io_cqe { u64 user_data; s32 res; ... }`; the flag is one bit, an enumerator.
        assert_eq!(off.uring_req_res + 4, off.uring_req_fd, "{off:?}");
        assert_eq!(off.uring_req_user_data + 8, off.uring_req_res, "{off:?}");
        assert_eq!(off.uring_req_need_cleanup.count_ones(), 1, "{off:?}");
    }
}
