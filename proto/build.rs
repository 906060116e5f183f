//! Compiles `proto/qianlian/v1/*.proto` with protox (pure Rust, no system `protoc`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/qianlian/v1/exchange.proto",
        "proto/qianlian/v1/notary.proto",
        "proto/qianlian/v1/raft.proto",
        "proto/qianlian/v1/admin.proto",
        "proto/qianlian/v1/license.proto",
        "proto/qianlian/v1/audit.proto",
        "proto/qianlian/v1/catalog.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    // The descriptor set serves gRPC server reflection (grpcurl and friends).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("qianlian_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
