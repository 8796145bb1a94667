//! The matcher maps' keys and LPM data, each led by the slot it belongs to, and the file
//! identities of binaries and dynamic loaders.

use crate::limits::{ARG_LEN, PATH_AFFIX_LEN, PATH_LEN};

/// `ArgKey::index` value for conditions that look at any argument (argv[1..]).
pub const ARG_ANY_INDEX: u8 = 0xff;

/// `BIN_EXACT` key: slot + zero-filled path.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathKey {
    pub slot: u32,
    pub path: [u8; PATH_LEN],
}

/// A file as the kernel names it: `i_sb->s_dev` (`MAJOR << 20 | MINOR`) and `i_ino`. Key of
/// [`MAP_LOADERS`](crate::MAP_LOADERS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub ino: u64,
}

/// `BIN_INODE` key: slot + the identity of a file a binary value names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BinInodeKey {
    pub slot: u32,
    pub dev: u32,
    pub ino: u64,
}

/// `LOADER_ARG_OPTIONS` key: a loader option that takes a value (`--library-path`), zero-filled.
pub const LOADER_OPTION_LEN: usize = 32;
/// The options of glibc's dynamic loader (`ld.so`, rtld.c) that take the next argument as
/// their value; userspace writes them into `LOADER_ARG_OPTIONS`.
pub const LOADER_OPTIONS_WITH_VALUE: &[&[u8]] = &[
    b"--library-path",
    b"--inhibit-rpath",
    b"--audit",
    b"--preload",
    b"--argv0",
    b"--glibc-hwcaps-prefix",
    b"--glibc-hwcaps-mask",
];

/// LPM data for `BIN_PREFIX` / `BIN_POSTFIX` (postfix: path bytes reversed). The LPM prefix
/// length counts the slot byte: `8 * (1 + len)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathLpmData {
    pub slot: u8,
    pub bytes: [u8; PATH_AFFIX_LEN],
}

/// `ARG_EXACT` key: slot, argv index (or [`ARG_ANY_INDEX`]), zero-filled value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgKey {
    pub slot: u8,
    pub index: u8,
    pub _pad: [u8; 2],
    pub value: [u8; ARG_LEN],
}

/// LPM data for `ARG_PREFIX` / `ARG_POSTFIX` (postfix: value bytes reversed). The prefix length
/// counts slot and index: `8 * (2 + len)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgLpmData {
    pub slot: u8,
    pub index: u8,
    pub bytes: [u8; ARG_LEN],
}

/// `NAMESPACES` key: slot + namespace id from the workload registry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NamespaceKey {
    pub slot: u32,
    pub namespace_id: u32,
}

/// LPM data for `DEST_V4`: slot + address (network order). Prefix length `8 + cidr bits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V4LpmData {
    pub slot: u8,
    pub addr: [u8; 4],
}

/// LPM data for `DEST_V6`: slot + address (network order). Prefix length `8 + cidr bits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct V6LpmData {
    pub slot: u8,
    pub addr: [u8; 16],
}

/// LPM data for `PORTS`: slot + port (network order). Port ranges are split into prefix
/// blocks; prefix length `8 + bits`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortLpmData {
    pub slot: u8,
    pub port: [u8; 2],
}

assert_sizes!(
    PathKey = 260,
    FileKey = 16,
    BinInodeKey = 16,
    PathLpmData = 256,
    ArgKey = 132,
    ArgLpmData = 130,
    NamespaceKey = 8,
    V4LpmData = 5,
    V6LpmData = 17,
    PortLpmData = 3,
);
