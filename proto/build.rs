//! Compiles `proto/isolab/v1/*.proto` with `protox` (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost messages and tonic services from the descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/isolab/v1/agent.proto",
        "proto/isolab/v1/coordinator.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
