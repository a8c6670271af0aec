//! Kernel features of the node, tested on the image's own kernel: each test here runs one
//! test of another crate's test binary in a guest booted with the pinned Debian kernel the
//! ISO ships and its modules ([`cloudos_tests::kernel_guest`]). The build host's kernel
//! may lack the feature (a 6.18 without CONFIG_WIREGUARD), so those tests are
//! `#[ignore]`d where they live, with a reason that names the test here that runs them.
//!
//! The binaries are found through cargo (`cargo test -p PACKAGE --test TEST --no-run`,
//! [`artifacts::cargo_test_binary`]); `scripts/test.sh` builds them before the QEMU
//! tests, so finding one compiles nothing there. One guest per test, x86_64.

use std::time::Duration;

use cloudos_tests::kernel_guest::KernelGuest;
use cloudos_tests::{artifacts, scaled, Arch};

/// Boot (~5 s under TCG on an idle host), module loads and the test itself.
fn guest_timeout() -> Duration {
    scaled(Duration::from_secs(240))
}

/// What the node's mesh needs of the kernel: WireGuard, the bridge and veth pairs of its
/// containers, and the NAT table (`containernet/src/nat`) with its chain, expressions and
/// conntrack. The guest adds their dependencies from `modules.dep`.
const MESH_MODULES: &[&str] = &[
    "wireguard",
    "veth",
    "bridge",
    "nf_tables",
    "nft_chain_nat",
    "nft_nat",
    "nft_masq",
    "nft_ct",
    "nft_fib_ipv4",
];

/// `containernet/tests/mesh.rs` on the image's kernel: two namespaces as two nodes, each
/// with its bridge, a container, its NAT table and the WireGuard mesh; the containers
/// talk by their own addresses, and what crosses the nodes' LAN is encrypted.
#[test]
fn containernet_mesh_in_the_images_kernel() {
    let _guests = cloudos_tests::guests::reserve(1);
    let binary = artifacts::cargo_test_binary("cloudos-containernet", "mesh")
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = KernelGuest::new(Arch::X86_64)
        .modules(MESH_MODULES)
        .run(
            &binary,
            "containers_on_two_nodes_talk_through_the_mesh_by_their_own_addresses_encrypted",
            guest_timeout(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        outcome.passed,
        "the mesh test failed in the image's kernel (exit {}); the guest's console:\n{}",
        outcome.exit_code, outcome.output
    );
}
