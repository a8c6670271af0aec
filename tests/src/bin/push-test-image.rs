//! `push-test-image NETNS REGISTRY REPO:TAG`: builds the busybox test image (Debian's
//! busybox-static, as the end-to-end tests do) and pushes it to the plain-HTTP registry
//! at REGISTRY inside network namespace NETNS. When the arm64 busybox has been fetched
//! (`scripts/build.sh` does), the image is multi-arch: an index over amd64 and arm64.
//! Used by `scripts/demo.sh`.

use std::process::{Command, ExitCode};

use cloudos_tests::registry::{arm64_busybox, host_busybox, Image, Registry};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [netns, registry, image] = args.as_slice() else {
        eprintln!("usage: push-test-image NETNS REGISTRY REPO:TAG");
        return ExitCode::from(2);
    };
    let Some((repo, tag)) = image.rsplit_once(':') else {
        eprintln!("push-test-image: {image:?} needs a :TAG");
        return ExitCode::from(2);
    };
    let in_net = |program: &str| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, program]);
        cmd
    };
    let pushed =
        Image::busybox("amd64", &host_busybox(), &[]).and_then(|amd64| {
            match arm64_busybox().and_then(|busybox| Image::busybox("arm64", &busybox, &[])) {
                Ok(arm64) => Registry::push_index_to(
                    &in_net,
                    registry,
                    repo,
                    tag,
                    &[("amd64", &amd64), ("arm64", &arm64)],
                ),
                Err(e) => {
                    eprintln!("push-test-image: amd64 only ({e})");
                    Registry::push_to(&in_net, registry, repo, tag, &amd64)
                }
            }
        });
    match pushed {
        Ok(digest) => {
            println!("{registry}/{repo}:{tag} {digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("push-test-image: {e}");
            ExitCode::FAILURE
        }
    }
}
