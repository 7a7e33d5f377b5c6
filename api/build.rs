//! Generates the prost types of etcd's v3 API from `proto/`, with the vendored protoc so that
//! no system package is needed, and their serde implementations (pbjson) with the JSON
//! mapping etcd's gateway uses: original field names, 64-bit integers as strings, bytes as
//! base64, enums by name, default values left out.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("descriptors.bin");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    config.file_descriptor_set_path(&descriptors);
    config.compile_protos(&["proto/etcd/api/etcdserverpb/rpc.proto"], &["proto"])?;
    pbjson_build::Builder::new()
        .register_descriptors(&std::fs::read(&descriptors)?)?
        .preserve_proto_field_names()
        .ignore_unknown_fields()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb"])?;
    Ok(())
}
