//! Compiles in the release public keys a node trusts: the file named by
//! `CLOUDOS_RELEASE_KEYS`, else the development key in image/release-keys/dev.pub (see
//! image/release-keys/README.md). The file is checked when it is read at run time; here it
//! is only copied, so that a bad file fails loudly in every test rather than in the build.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=CLOUDOS_RELEASE_KEYS");
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dev = manifest_dir.join("../image/release-keys/dev.pub");
    let keys = std::env::var_os("CLOUDOS_RELEASE_KEYS")
        .map(PathBuf::from)
        .unwrap_or_else(|| dev.clone());
    println!("cargo:rerun-if-changed={}", keys.display());
    println!("cargo:rerun-if-changed={}", dev.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
    let text = std::fs::read_to_string(&keys)
        .unwrap_or_else(|e| panic!("reading the trusted release keys {}: {e}", keys.display()));
    let dev_text = std::fs::read_to_string(&dev).unwrap_or_default();
    std::fs::write(out.join("trusted.pub"), text).expect("writing OUT_DIR/trusted.pub");
    std::fs::write(out.join("dev.pub"), dev_text).expect("writing OUT_DIR/dev.pub");
}
