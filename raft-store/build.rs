//! With `ROCKSDB_STATIC` set (see `.cargo/config.toml`), `librocksdb-sys` links the
//! distribution's `librocksdb.a` instead of its shared library, and the archive's own dependencies
//! (compression libraries, gflags) must be named here: a static archive does not carry them.

fn main() {
    println!("cargo:rerun-if-env-changed=ROCKSDB_STATIC");
    if std::env::var_os("ROCKSDB_STATIC").is_some() {
        for lib in ["snappy", "lz4", "zstd", "z", "bz2", "gflags"] {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
    }
}
