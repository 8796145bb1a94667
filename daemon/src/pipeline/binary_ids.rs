//! Which files paths name on this node: the identities (`s_dev`, `i_ino`) the kernel matches
//! executed files by. A binary path of a policy is resolved on the host and in every mount
//! namespace a process runs in (through `/proc/PID/root` of one process per namespace), and so
//! are the dynamic loaders (the `PT_INTERP` of `/bin/sh` and the usual loader paths). The
//! daemon resolves them when it applies a rule set and again on every tick, and re-applies when
//! a file changed (a package upgrade replaced it, a container started with its own copy).
//!
//! Symbolic links are followed component by component inside the namespace's root, so an
//! absolute link in a container resolves in the container, not on the host.

use bulwark_compiler::{BinaryIdentities, FileId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// Loader paths checked besides the `PT_INTERP` of `/bin/sh` (glibc and musl, common
/// architectures).
pub const LOADER_PATHS: &[&str] = &[
    "/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-x86-64.so.2",
    "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    "/usr/lib64/ld-linux-x86-64.so.2",
    "/lib/ld-linux-aarch64.so.1",
    "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
    "/lib/ld-linux.so.2",
    "/lib/ld-linux-armhf.so.3",
    "/lib/ld-musl-x86_64.so.1",
    "/lib/ld-musl-aarch64.so.1",
];

/// Symbolic links followed before giving up (the kernel's limit).
const MAX_LINKS: u32 = 40;

/// The roots to resolve paths in: `/` (the daemon's own mount namespace) and
/// `<proc_root>/<pid>/root` of one process of every other mount namespace.
pub fn namespace_roots(proc_root: &Path) -> Vec<PathBuf> {
    let own = std::fs::read_link(proc_root.join("self/ns/mnt")).ok();
    let mut seen: BTreeMap<OsString, PathBuf> = BTreeMap::new();
    if let Ok(dir) = std::fs::read_dir(proc_root) {
        for ent in dir.flatten() {
            let name = ent.file_name();
            if name.to_str().and_then(|s| s.parse::<u32>().ok()).is_none() {
                continue;
            }
            let Ok(ns) = std::fs::read_link(ent.path().join("ns/mnt")) else {
                continue;
            };
            if Some(&ns) == own.as_ref() {
                continue;
            }
            seen.entry(ns.into_os_string())
                .or_insert_with(|| ent.path().join("root"));
        }
    }
    let mut roots = vec![PathBuf::from("/")];
    roots.extend(seen.into_values());
    roots
}

/// The file `path` (absolute) names inside `root`, symbolic links followed within `root`.
pub fn resolve_in(root: &Path, path: &str) -> Option<(PathBuf, std::fs::Metadata)> {
    let mut todo: VecDeque<OsString> = VecDeque::new();
    push_components(&mut todo, Path::new(path));
    let mut cur: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop_front() {
        match c.as_bytes() {
            b"." => continue,
            b".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let mut here: PathBuf = root.to_path_buf();
        here.extend(&cur);
        here.push(&c);
        let md = std::fs::symlink_metadata(&here).ok()?;
        if md.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(&here).ok()?;
            if target.is_absolute() {
                cur.clear();
            }
            push_components(&mut todo, &target);
        } else {
            cur.push(c);
        }
    }
    let mut full = root.to_path_buf();
    full.extend(&cur);
    let md = std::fs::metadata(&full).ok()?;
    Some((full, md))
}

/// Puts the normal components of `p` in front of `todo` (keeping their order).
fn push_components(todo: &mut VecDeque<OsString>, p: &Path) {
    let parts: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::CurDir => Some(".".into()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    for part in parts.into_iter().rev() {
        todo.push_front(part);
    }
}

/// The identity of a regular file as [`FileId`].
fn file_id(md: &std::fs::Metadata) -> Option<FileId> {
    md.is_file().then(|| FileId::from_stat(md.dev(), md.ino()))
}

/// The files `paths` name in any of `roots`.
pub fn resolve(paths: &BTreeSet<String>, roots: &[PathBuf]) -> BinaryIdentities {
    let mut ids = BinaryIdentities::new();
    for root in roots {
        for p in paths {
            if let Some(id) = resolve_in(root, p).and_then(|(_, md)| file_id(&md)) {
                ids.insert(p, id);
            }
        }
    }
    ids
}

/// The `PT_INTERP` path of an ELF file (64-bit little-endian, the architectures bulwark runs
/// on), `None` for anything else.
pub fn elf_interpreter(file: &Path) -> Option<String> {
    let mut head = Vec::new();
    std::fs::File::open(file)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    let u16_at = |o: usize| Some(u16::from_le_bytes(head.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(head.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(head.get(o..o + 8)?.try_into().ok()?));
    // ELFCLASS64, ELFDATA2LSB.
    if head.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_INTERP: u32 = 3;
        if u32_at(ph)? == PT_INTERP {
            let off = usize::try_from(u64_at(ph + 8)?).ok()?;
            let len = usize::try_from(u64_at(ph + 32)?).ok()?;
            let raw = head.get(off..off.checked_add(len)?)?;
            let raw = raw.split(|b| *b == 0).next()?;
            return std::str::from_utf8(raw).ok().map(str::to_string);
        }
    }
    None
}

/// The dynamic loaders of every root: the interpreter of `/bin/sh` and [`LOADER_PATHS`].
pub fn loaders(roots: &[PathBuf]) -> BTreeSet<FileId> {
    let mut out = BTreeSet::new();
    for root in roots {
        let mut paths: BTreeSet<String> = LOADER_PATHS.iter().map(|p| p.to_string()).collect();
        if let Some(interp) = resolve_in(root, "/bin/sh").and_then(|(f, _)| elf_interpreter(&f)) {
            paths.insert(interp);
        }
        for p in &paths {
            if let Some(id) = resolve_in(root, p).and_then(|(_, md)| file_id(&md)) {
                out.insert(id);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("bulwark-ids-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let root = tmpdir("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::create_dir_all(root.join("opt")).unwrap();
        std::fs::write(root.join("opt/real"), b"x").unwrap();
        // An absolute link: inside the root, not on the host.
        std::os::unix::fs::symlink("/opt/real", root.join("usr/bin/tool")).unwrap();
        // A relative directory link, as /bin -> usr/bin.
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let (file, md) = resolve_in(&root, "/bin/tool").expect("resolved");
        assert_eq!(file, root.join("opt/real"));
        assert_eq!(md.len(), 1);
        let ids = resolve(
            &["/bin/tool".to_string()].into(),
            std::slice::from_ref(&root),
        );
        let want = FileId::from_stat(md.dev(), md.ino());
        assert_eq!(ids.of("/bin/tool").collect::<Vec<_>>(), [want]);
        assert!(resolve_in(&root, "/bin/missing").is_none());
        // A loop ends.
        std::os::unix::fs::symlink("/loop", root.join("loop")).unwrap();
        assert!(resolve_in(&root, "/loop").is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn this_hosts_shell_names_its_loader() {
        let (sh, _) = resolve_in(Path::new("/"), "/bin/sh").expect("/bin/sh");
        let interp = elf_interpreter(&sh).expect("a dynamically linked /bin/sh");
        assert!(interp.contains("ld-"), "{interp}");
        let found = loaders(&[PathBuf::from("/")]);
        let (_, md) = resolve_in(Path::new("/"), &interp).unwrap();
        assert!(found.contains(&FileId::from_stat(md.dev(), md.ino())));
        assert!(elf_interpreter(Path::new("/proc/self/status")).is_none());
        assert_eq!(namespace_roots(Path::new("/proc"))[0], PathBuf::from("/"));
    }
}
