//! The Qianlian gRPC contract, package `qianlian.v1`.
//!
//! The `.proto` files under `proto/qianlian/v1/` are the source of truth; this crate only
//! includes the code `tonic-prost-build` generates from them. Fields are added, never renumbered.

#![allow(missing_debug_implementations)]

pub mod contract;

/// Generated messages and services of package `qianlian.v1`.
pub mod v1 {
    tonic::include_proto!("qianlian.v1");
}

/// The encoded `FileDescriptorSet` of every `.proto` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/qianlian_descriptor.bin"));
