//! The `bulwark` binary.
fn main() {
    let obj = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/daemon"));
    println!("ebpf object: {} bytes", obj.len());
}
