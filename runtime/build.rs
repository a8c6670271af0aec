//! Compiles the container seccomp policy (src/seccomp/policy.rs) to BPF for the target
//! architecture, once, and writes the programs as Rust statics into OUT_DIR for
//! `seccomp::compile_native`: a container start then only copies them (compiling took
//! half a millisecond of every start).

use std::fmt::Write;

#[allow(dead_code)]
#[path = "src/seccomp/policy.rs"]
mod policy;

fn main() {
    println!("cargo::rerun-if-changed=src/seccomp/policy.rs");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let mut out = String::from(
        "/// Written by build.rs from `policy::compile` for this target.\n\
         static COMPILED: &[&[sock_filter]] = &[\n",
    );
    // Another architecture builds (the library's other parts may be checked there) but
    // has no filter, and `compile_native` says so.
    if let Ok(target) = seccompiler::TargetArch::try_from(arch.as_str()) {
        let programs = policy::compile(target)
            .unwrap_or_else(|e| panic!("the seccomp policy does not compile: {e}"));
        for program in programs {
            out.push_str("    &[\n");
            for i in program {
                let _ = writeln!(
                    out,
                    "        sock_filter {{ code: {}, jt: {}, jf: {}, k: {} }},",
                    i.code, i.jt, i.jf, i.k
                );
            }
            out.push_str("    ],\n");
        }
    }
    out.push_str("];\n");
    let dir = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(format!("{dir}/seccomp_compiled.rs"), out).expect("writing the filters");
}
