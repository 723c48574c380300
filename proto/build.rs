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
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
