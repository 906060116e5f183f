//! Compiles the etcd KV.Put messages the load generator uses to measure etcd side by side.
//!
//! Why not the `etcd-client` crate: it resolves to the workspace's tonic 0.14 and prost 0.14
//! (no duplicate in `cargo tree -d`), but its build script runs the system `protoc` over the
//! whole etcd API, and this workspace builds without a system `protoc` (protox, pure Rust).
//! One RPC of etcd's wire contract, compiled the same way as ours, costs neither.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = "proto/etcdserverpb/kv_put.proto";
    println!("cargo:rerun-if-changed={file}");
    let descriptors = protox::compile([file], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(descriptors)?;
    Ok(())
}
