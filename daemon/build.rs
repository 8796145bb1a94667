//! Builds the kernel programs (`daemon-ebpf`) for the bpf target with aya-build and leaves the
//! object in OUT_DIR, where `include_bytes_aligned!` picks it up.
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../daemon-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "daemon-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
