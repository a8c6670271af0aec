//! What container a run is: its assignment's spec merged with its image's config (argv,
//! environment, working directory, user) and the node's place for its `/output`, as the
//! runtime's [`ContainerSpec`]. Pure: no pull, no files, no runtime; `run` does those.

use std::path::{Path, PathBuf};

use cloudos_cluster::workload::{NetworkMode, WorkloadSpec};
use cloudos_runtime::{ContainerNetwork, ContainerSpec, Resources, User};

use super::image::{self, ImageRunConfig};

/// The container for run `run` of `spec`, from the image's unpacked `layers` (bottom
/// first) and its `config`, with `/output` bound to `output_dir` and, on the bridge, the
/// network namespace the run was given at `netns` (and its resolv.conf, naming the node's
/// DNS). The error is the reason the run fails,
/// in words for the person who asked for it.
/// What the node mounts for a run besides its image: volumes and secrets.
#[derive(Debug, Default)]
pub(super) struct Mounts {
    pub binds: Vec<cloudos_runtime::Bind>,
    /// Environment variables read from the run's secret files as the container starts.
    pub env_files: Vec<cloudos_runtime::EnvFile>,
}

pub(super) fn container_spec(
    run: &str,
    spec: &WorkloadSpec,
    layers: &[PathBuf],
    config: &ImageRunConfig,
    output_dir: &Path,
    bridge: Option<(&Path, Option<&Path>)>,
    mounts: Mounts,
) -> Result<ContainerSpec, String> {
    let netns = bridge.map(|(netns, _)| netns);
    let args = image::argv(spec, config)?;
    let user = image::user(spec, config)?.map(|(uid, gid)| User { uid, gid });
    Ok(ContainerSpec {
        id: run.to_owned(),
        layers: layers.to_vec(),
        args,
        env: image::env(spec, config),
        cwd: spec
            .workdir
            .clone()
            .or_else(|| config.working_dir.clone().filter(|d| !d.is_empty()))
            .unwrap_or_else(|| "/".into()),
        user,
        resources: Resources {
            cpu_millis: Some(spec.resources.cpu_millicores),
            memory_bytes: Some(spec.resources.memory_bytes),
            pids: spec.resources.pids,
        },
        readonly_root: spec.readonly_root,
        output_dir: Some(output_dir.to_path_buf()),
        network: match (spec.network, netns) {
            (NetworkMode::Host, _) => ContainerNetwork::Host,
            (NetworkMode::None, _) => ContainerNetwork::None,
            (NetworkMode::Bridge, Some(path)) => ContainerNetwork::Join(path.to_owned()),
            (NetworkMode::Bridge, None) => {
                return Err("the run has no place on the node's bridge".into())
            }
        },
        hostname: None,
        resolv_conf: bridge.and_then(|(_, resolv)| resolv).map(Path::to_path_buf),
        binds: mounts.binds,
        env_files: mounts.env_files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use cloudos_cluster::workload::ResourceRequest;

    const RUN: &str = "r-1";
    const OUTPUT: &str = "/data/outputs/r-1";

    fn layers() -> Vec<PathBuf> {
        vec!["/data/layers/a".into(), "/data/layers/b".into()]
    }

    fn busybox() -> ImageRunConfig {
        ImageRunConfig {
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            env: Some(vec!["PATH=/bin".into()]),
            working_dir: Some("/srv".into()),
            user: Some("1000:100".into()),
        }
    }

    fn build(spec: &WorkloadSpec, image: &ImageRunConfig) -> Result<ContainerSpec, String> {
        let netns = Path::new("/data/network/netns/r-1");
        let resolv = Path::new("/data/network/resolv/r-1");
        let bridge = Some((netns, Some(resolv)));
        container_spec(
            RUN,
            spec,
            &layers(),
            image,
            Path::new(OUTPUT),
            bridge,
            Mounts::default(),
        )
    }

    /// The container a bare spec makes from the busybox-like image: everything from the
    /// image, the default resources, the bridge, `/output` in place.
    fn expected() -> ContainerSpec {
        let defaults = ResourceRequest::default();
        ContainerSpec {
            env_files: Vec::new(),
            binds: Vec::new(),
            id: RUN.into(),
            layers: layers(),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/srv".into(),
            user: Some(User {
                uid: 1000,
                gid: 100,
            }),
            resources: Resources {
                cpu_millis: Some(defaults.cpu_millicores),
                memory_bytes: Some(defaults.memory_bytes),
                pids: None,
            },
            readonly_root: false,
            output_dir: Some(OUTPUT.into()),
            network: ContainerNetwork::Join("/data/network/netns/r-1".into()),
            hostname: None,
            resolv_conf: Some("/data/network/resolv/r-1".into()),
        }
    }

    #[test]
    fn spec_and_image_make_the_container() {
        type Case = (
            &'static str,
            fn(&mut WorkloadSpec),
            fn(&mut ImageRunConfig),
            fn(&mut ContainerSpec),
        );
        let cases: &[Case] = &[
            ("the image's defaults", |_| {}, |_| {}, |_| {}),
            (
                "the spec's command replaces the image's",
                |s| s.command = vec!["echo".into(), "hi".into()],
                |_| {},
                |c| c.args = vec!["echo".into(), "hi".into()],
            ),
            (
                "the spec's environment overlays the image's",
                |s| {
                    s.env.insert("PATH".into(), "/usr/bin".into());
                    s.env.insert("A".into(), "1".into());
                },
                |_| {},
                |c| c.env = vec!["A=1".into(), "PATH=/usr/bin".into()],
            ),
            (
                "the spec's working directory wins",
                |s| s.workdir = Some("/work".into()),
                |_| {},
                |c| c.cwd = "/work".into(),
            ),
            (
                "an empty image working directory is the root",
                |_| {},
                |i| i.working_dir = Some(String::new()),
                |c| c.cwd = "/".into(),
            ),
            (
                "no working directory anywhere is the root",
                |_| {},
                |i| i.working_dir = None,
                |c| c.cwd = "/".into(),
            ),
            (
                "the spec's user wins",
                |s| s.user = Some("7".into()),
                |_| {},
                |c| c.user = Some(User { uid: 7, gid: 7 }),
            ),
            (
                "no user anywhere is root",
                |_| {},
                |i| i.user = None,
                |c| c.user = None,
            ),
            (
                "resources become cgroup limits",
                |s| {
                    s.resources = ResourceRequest {
                        cpu_millicores: 1500,
                        memory_bytes: 256 << 20,
                        pids: Some(64),
                    }
                },
                |_| {},
                |c| {
                    c.resources = Resources {
                        cpu_millis: Some(1500),
                        memory_bytes: Some(256 << 20),
                        pids: Some(64),
                    }
                },
            ),
            (
                "no network and a read-only root",
                |s| {
                    s.network = NetworkMode::None;
                    s.readonly_root = true;
                },
                |_| {},
                |c| {
                    c.network = ContainerNetwork::None;
                    c.readonly_root = true;
                },
            ),
            (
                "the node's own network",
                |s| s.network = NetworkMode::Host,
                |_| {},
                |c| c.network = ContainerNetwork::Host,
            ),
        ];
        for (name, edit_spec, edit_image, edit_want) in cases {
            let mut spec = WorkloadSpec::new("r/busybox:1");
            edit_spec(&mut spec);
            let mut image = busybox();
            edit_image(&mut image);
            let mut want = expected();
            edit_want(&mut want);
            assert_eq!(build(&spec, &image), Ok(want), "{name}");
        }
    }

    #[test]
    fn what_cannot_run_is_refused_in_words() {
        type Case = (
            &'static str,
            fn(&mut WorkloadSpec),
            fn(&mut ImageRunConfig),
            &'static str,
        );
        let cases: &[Case] = &[
            (
                "nothing to run",
                |_| {},
                |i| i.cmd = None,
                "has no entrypoint or command",
            ),
            (
                "a user name",
                |_| {},
                |i| i.user = Some("nobody".into()),
                "\"nobody\" is not numeric",
            ),
            (
                "nothing to run is said first",
                |s| s.user = Some("nobody".into()),
                |i| i.cmd = None,
                "has no entrypoint or command",
            ),
        ];
        for (name, edit_spec, edit_image, want) in cases {
            let mut spec = WorkloadSpec::new("r/busybox:1");
            edit_spec(&mut spec);
            let mut image = busybox();
            edit_image(&mut image);
            let err = build(&spec, &image).expect_err(name);
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
