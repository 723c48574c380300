//! Compiles the .proto files with protox (pure Rust; no protoc needed) and
//! generates tonic/prost code with tonic-prost-build.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/herald/v1/presence.proto",
        "proto/herald/v1/cluster.proto",
        "proto/herald/v1/messages.proto",
        "proto/herald/raft/raft.proto",
        "proto/herald/raft/media.proto",
        "proto/herald/raft/gateway.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // The public API's descriptors (package herald.v1 and its imports, not
    // the internal Raft services of the sync port) for server reflection on
    // the publish port (issue 18: grpcurl works without the .proto files).
    let public = protox::compile(&files[..3], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("herald_v1_descriptor.bin"), prost::Message::encode_to_vec(&public))?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
