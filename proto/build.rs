//! Compiles `proto/isolab/v1/*.proto` with `protox` (a pure-Rust protobuf compiler, so no system
//! `protoc` is needed) and generates prost messages and tonic services from the descriptors.
//! The coordinator service (`coordinator.proto`) only with the `coordinator` feature: agents do
//! not need it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut protos = vec!["proto/isolab/v1/agent.proto"];
    if std::env::var_os("CARGO_FEATURE_COORDINATOR").is_some() {
        protos.push("proto/isolab/v1/coordinator.proto");
    }
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(&protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
