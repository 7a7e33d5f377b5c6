//! Generates the prost types of etcd's v3 API from `proto/`, with the vendored protoc so that
//! no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.compile_protos(&["proto/etcd/api/etcdserverpb/rpc.proto"], &["proto"])?;
    Ok(())
}
