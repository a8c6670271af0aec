//! Turns a [`ContainerSpec`] into the OCI runtime config libcontainer runs.
//! Pure: the host facts it depends on come in as [`HostFacts`], so the whole
//! mapping is unit-tested.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::{
    get_default_maskedpaths, get_default_mounts, get_default_readonly_paths, Capability,
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use crate::cgroup;
use crate::spec::{ContainerNetwork, ContainerSpec, DEFAULT_PIDS_LIMIT};

/// What the config depends on besides the spec.
#[derive(Clone, Debug, Default)]
pub struct HostFacts {
    /// Used when the spec names no hostname.
    pub hostname: String,
    /// cgroup v1 with swap accounting: also cap memory+swap, or a memory
    /// limit would only push the container into swap instead of the OOM killer.
    pub v1_memsw: bool,
    /// The host's resolv.conf, bind-mounted read-only when the container
    /// shares the host's network or sits on the node's bridge.
    pub resolv_conf: Option<PathBuf>,
    /// The shim's own hard RLIMIT_NOFILE: raising it would need
    /// CAP_SYS_RESOURCE, which a sandboxed host may not grant.
    pub nofile_hard: u64,
}

/// CFS period for the CPU quota: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;

/// Docker's default capability set less NET_RAW: enough for ordinary
/// workloads (chown, setuid for privilege dropping, binding low ports) and
/// without SYS_ADMIN & co. NET_RAW is left out because raw and packet sockets
/// let a container forge packets (ARP/DNS spoofing) on the host's network,
/// which a container on `ContainerNetwork::Host` shares. Together with the seccomp
/// filter (`seccomp.rs`) and no_new_privileges this is what keeps a
/// container in.
fn default_capabilities() -> HashSet<Capability> {
    use Capability::*;
    [
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        Mknod,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// Paths hidden from the container (an empty file or directory is mounted
/// over them): Docker's list, and the places the kernel command line can be
/// read from. The appliance may be given its join token on the kernel command
/// line, and no container may read it.
fn masked_paths() -> Vec<String> {
    let mut paths = get_default_maskedpaths();
    for extra in [
        // The kernel command line, the boot configuration it may come with,
        // and the kernel log that repeats it ("Kernel command line: ...").
        "/proc/cmdline",
        "/proc/bootconfig",
        "/proc/kmsg",
        // Docker masks these too; oci-spec's default list lacks them.
        // (Device-tree bootargs are under /sys/firmware, already masked.)
        "/proc/interrupts",
        "/sys/devices/virtual/powercap",
    ] {
        if !paths.iter().any(|p| p == extra) {
            paths.push(extra.to_string());
        }
    }
    paths
}

fn mounts(spec: &ContainerSpec, host: &HostFacts) -> Result<Vec<Mount>, String> {
    // The defaults are runc's (proc, dev, devpts, shm, mqueue, sysfs) less the
    // cgroup filesystem: nothing in a workload needs to see its cgroup, and on
    // a v1 host it would mean a dozen more mounts per start.
    let mut mounts: Vec<Mount> = get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    let bind = |src: &Path, dst: &str, rw: &str| {
        MountBuilder::default()
            .destination(dst)
            .typ("bind")
            .source(src)
            .options(vec![
                "rbind".to_string(),
                rw.to_string(),
                "nosuid".into(),
                "nodev".into(),
            ])
            .build()
            .map_err(|e| e.to_string())
    };
    if let Some(out) = &spec.output_dir {
        mounts.push(bind(out, "/output", "rw")?);
    }
    for b in &spec.binds {
        let rw = if b.read_only { "ro" } else { "rw" };
        mounts.push(bind(&b.source, &b.target, rw)?);
    }
    // A container on the bridge resolves through its node's DNS when it has one of its
    // own (`spec.resolv_conf`), else through the node's resolvers too, over the NAT.
    let resolv = match (&spec.network, &spec.resolv_conf) {
        (_, Some(own)) => Some(own),
        (ContainerNetwork::Host | ContainerNetwork::Join(_), None) => host.resolv_conf.as_ref(),
        (ContainerNetwork::None, None) => None,
    };
    if let Some(resolv) = resolv {
        mounts.push(bind(resolv, "/etc/resolv.conf", "ro")?);
    }
    Ok(mounts)
}

/// The OCI config for `spec` with its root filesystem at `rootfs`.
pub fn build(spec: &ContainerSpec, rootfs: &Path, host: &HostFacts) -> Result<Spec, String> {
    let err = |e: libcontainer::oci_spec::OciSpecError| e.to_string();
    let user = spec.user.unwrap_or_default();
    let caps = default_capabilities();
    // 65536 open files like most container engines, within what we may grant.
    let nofile = host.nofile_hard.clamp(1024, 65536);
    let process = ProcessBuilder::default()
        .terminal(false)
        .args(spec.args.clone())
        .env(spec.effective_env())
        .cwd(spec.cwd_or_root())
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .build()
                .map_err(err)?,
        )
        .no_new_privileges(true)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(caps.clone())
                .effective(caps.clone())
                .permitted(caps)
                .inheritable(HashSet::new())
                .ambient(HashSet::new())
                .build()
                .map_err(err)?,
        )
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .hard(nofile)
            .soft(nofile)
            .build()
            .map_err(err)?])
        .build()
        .map_err(err)?;

    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device; libcontainer then allows the standard ones
        // (null, zero, full, tty, random, urandom, pts).
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(err)?,
    ]);
    let r = &spec.resources;
    if let Some(mem) = r.memory_bytes {
        let mut m = LinuxMemoryBuilder::default().limit(mem as i64);
        if host.v1_memsw {
            m = m.swap(mem as i64);
        }
        resources = resources.memory(m.build().map_err(err)?);
    }
    if let Some(millis) = r.cpu_millis {
        let quota = (millis * CPU_PERIOD_US / 1000).max(1000);
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(quota as i64)
                .period(CPU_PERIOD_US)
                .build()
                .map_err(err)?,
        );
    }
    // Always a pids limit: without one a fork bomb in a container takes
    // every pid of the host.
    let pids = r.pids.unwrap_or(DEFAULT_PIDS_LIMIT);
    resources = resources.pids(
        LinuxPidsBuilder::default()
            .limit(pids as i64)
            .build()
            .map_err(err)?,
    );

    let namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    let mut namespaces = namespaces
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    match &spec.network {
        ContainerNetwork::Host => {}
        ContainerNetwork::None => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()
                .map_err(err)?,
        ),
        ContainerNetwork::Join(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path)
                .build()
                .map_err(err)?,
        ),
    }

    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build().map_err(err)?)
        .cgroups_path(PathBuf::from(cgroup::cgroups_path(&spec.id)))
        .masked_paths(masked_paths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .map_err(err)?;

    SpecBuilder::default()
        .version("1.0.2")
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(spec.readonly_root)
                .build()
                .map_err(err)?,
        )
        .hostname(
            spec.hostname
                .clone()
                .unwrap_or_else(|| host.hostname.clone()),
        )
        .process(process)
        .mounts(mounts(spec, host)?)
        .linux(linux)
        .build()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Resources, User};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "t1".into(),
            layers: vec!["/l0".into()],
            args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
            env: vec!["A=1".into()],
            user: Some(User {
                uid: 1000,
                gid: 100,
            }),
            resources: Resources {
                cpu_millis: Some(500),
                memory_bytes: Some(64 << 20),
                pids: Some(32),
            },
            ..Default::default()
        }
    }

    #[test]
    fn maps_process_and_limits() {
        let host = HostFacts {
            hostname: "node".into(),
            v1_memsw: true,
            resolv_conf: Some("/etc/resolv.conf".into()),
            nofile_hard: 4096,
        };
        let oci = build(&spec(), Path::new("/r/t1/rootfs"), &host).unwrap();
        let p = oci.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap()[0], "/bin/sh");
        assert_eq!(p.cwd(), Path::new("/"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 100);
        assert!(p
            .env()
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("PATH=")));
        assert_eq!(oci.hostname().as_deref(), Some("node"));
        let linux = oci.linux().as_ref().unwrap();
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/cloudos/t1"))
        );
        let res = linux.resources().as_ref().unwrap();
        assert_eq!(res.cpu().as_ref().unwrap().quota(), Some(50_000));
        assert_eq!(res.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(res.memory().as_ref().unwrap().swap(), Some(64 << 20));
        assert_eq!(res.pids().as_ref().unwrap().limit(), 32);
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(!ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        let mounts = oci.mounts().as_ref().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));
        assert!(!mounts
            .iter()
            .any(|m| m.destination() == Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn volumes_are_bound_read_write_or_read_only() {
        let mut s = spec();
        s.binds = vec![
            crate::Bind {
                source: "/data/volumes/db".into(),
                target: "/var/lib/db".into(),
                read_only: false,
            },
            crate::Bind {
                source: "/srv/media".into(),
                target: "/media".into(),
                read_only: true,
            },
        ];
        let oci = build(&s, Path::new("/r"), &HostFacts::default()).unwrap();
        let mounts = oci.mounts().as_ref().unwrap();
        let options = |dst: &str| {
            let m = mounts
                .iter()
                .find(|m| m.destination() == Path::new(dst))
                .unwrap();
            (m.source().clone(), m.options().clone().unwrap_or_default())
        };
        let (source, db) = options("/var/lib/db");
        assert_eq!(source.as_deref(), Some(Path::new("/data/volumes/db")));
        assert!(db.contains(&"rw".to_string()) && db.contains(&"nosuid".to_string()));
        assert!(options("/media").1.contains(&"ro".to_string()));
    }

    #[test]
    fn network_none_output_and_readonly() {
        let mut s = spec();
        s.network = ContainerNetwork::None;
        s.output_dir = Some("/host/out".into());
        s.readonly_root = true;
        s.hostname = Some("box".into());
        s.resources = Resources::default();
        let oci = build(&s, Path::new("/r"), &HostFacts::default()).unwrap();
        let linux = oci.linux().as_ref().unwrap();
        let ns = linux.namespaces().as_ref().unwrap();
        assert!(ns.iter().any(|n| n.typ() == LinuxNamespaceType::Network));
        let mounts = oci.mounts().as_ref().unwrap();
        let out = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/output"))
            .unwrap();
        assert_eq!(out.source().as_deref(), Some(Path::new("/host/out")));
        assert!(!mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));
        assert_eq!(oci.root().as_ref().unwrap().readonly(), Some(true));
        assert_eq!(oci.hostname().as_deref(), Some("box"));
        assert!(linux.resources().as_ref().unwrap().memory().is_none());
        // No pids limit asked for: the default one, never none.
        let pids = linux.resources().as_ref().unwrap().pids().as_ref().unwrap();
        assert_eq!(pids.limit(), DEFAULT_PIDS_LIMIT as i64);
    }

    #[test]
    fn network_join_enters_the_prepared_namespace() {
        let mut s = spec();
        s.network = ContainerNetwork::Join("/run/netns/r-1".into());
        let facts = HostFacts {
            resolv_conf: Some("/etc/resolv.conf".into()),
            ..HostFacts::default()
        };
        let oci = build(&s, Path::new("/r"), &facts).unwrap();
        let ns = oci.linux().as_ref().unwrap().namespaces().as_ref().unwrap();
        let net = ns
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)
            .expect("a network namespace");
        assert_eq!(net.path().as_deref(), Some(Path::new("/run/netns/r-1")));
        let mounts = oci.mounts().as_ref().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.destination() == Path::new("/etc/resolv.conf")));
    }

    #[test]
    fn confinement_defaults() {
        let oci = build(&spec(), Path::new("/r"), &HostFacts::default()).unwrap();
        let p = oci.process().as_ref().unwrap();
        assert_eq!(p.no_new_privileges(), Some(true));
        let caps = p.capabilities().as_ref().unwrap();
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ] {
            let set = set.as_ref().unwrap();
            for denied in [
                Capability::NetRaw,
                Capability::SysAdmin,
                Capability::SysPtrace,
            ] {
                assert!(!set.contains(&denied), "{denied:?} granted");
            }
        }
        let linux = oci.linux().as_ref().unwrap();
        let masked = linux.masked_paths().as_ref().unwrap();
        for path in [
            "/proc/cmdline",
            "/proc/kcore",
            "/proc/keys",
            "/proc/timer_list",
            "/proc/sched_debug",
            "/proc/acpi",
            "/proc/scsi",
            "/sys/firmware",
        ] {
            assert!(masked.iter().any(|m| m == path), "{path} not masked");
        }
        let readonly = linux.readonly_paths().as_ref().unwrap();
        assert!(readonly.iter().any(|r| r == "/proc/sys"));
        assert!(readonly.iter().any(|r| r == "/proc/sysrq-trigger"));
    }
}
