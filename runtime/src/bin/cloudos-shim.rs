//! The container shim as its own binary, for the crate's tests and the
//! benchmark; nodeos runs the same code as `nodeos shim ...`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(cloudos_runtime::shim_main(&args));
}
