//! Where a host install puts things and what it writes there: pure functions over a
//! [`Layout`], so the unit file, the settings file and the install record are unit-tested
//! and the installer only copies bytes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::settings::{NodeRole, Settings};

/// Every path a host install may create. Tests point it at a temporary root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// `/usr/local/bin`
    pub bin_dir: PathBuf,
    /// `/etc/cloudos`: settings, the unit file, the install record.
    pub etc_dir: PathBuf,
    /// `/var/lib/cloudos`: identity, images, containers, master state.
    pub state_dir: PathBuf,
}

/// The unit name of each role (one role per host).
pub fn unit_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Master => "cloudos-master.service",
        _ => "cloudos-node.service",
    }
}

/// The oneshot unit the role's unit names in `OnFailure=`: it runs the previous binary's
/// `nodeos host-rollback` when a binary on trial cannot even start.
pub const ROLLBACK_UNIT: &str = "cloudos-rollback.service";

/// The slice that holds the service and, below it, its containers.
pub const SLICE: &str = "cloudos.slice";

impl Layout {
    pub fn system() -> Layout {
        Layout::under(Path::new("/"))
    }

    /// The same layout below `root` (tests).
    pub fn under(root: &Path) -> Layout {
        Layout {
            bin_dir: root.join("usr/local/bin"),
            etc_dir: root.join("etc/cloudos"),
            state_dir: root.join("var/lib/cloudos"),
        }
    }

    pub fn nodeos(&self) -> PathBuf {
        self.bin_dir.join("nodeos")
    }
    /// The binary that ran before the last upgrade, kept to go back to.
    pub fn previous(&self) -> PathBuf {
        self.bin_dir.join("nodeos.previous")
    }
    /// A binary that was rolled back, kept for diagnosis.
    pub fn failed(&self) -> PathBuf {
        self.bin_dir.join("nodeos.failed")
    }
    /// Where an upgrade writes the new binary before it takes the place of `nodeos` (the
    /// same directory, so the same file system: the swap is a rename).
    pub fn staged(&self) -> PathBuf {
        self.bin_dir.join("nodeos.new")
    }
    /// The temporary name a kept binary passes through (see `host::swap`).
    pub fn swap_tmp(&self) -> PathBuf {
        self.bin_dir.join("nodeos.tmp")
    }
    /// The files an upgrade creates next to the binary, for the install record.
    pub fn upgrade_files(&self) -> [PathBuf; 4] {
        [
            self.staged(),
            self.swap_tmp(),
            self.previous(),
            self.failed(),
        ]
    }
    pub fn rollback_unit_file(&self) -> PathBuf {
        self.etc_dir.join(ROLLBACK_UNIT)
    }
    /// The record of the upgrade in flight or the last one (`host::attempt`).
    pub fn attempt(&self) -> PathBuf {
        self.state_dir.join("upgrade/host-attempt.json")
    }
    pub fn cli(&self) -> PathBuf {
        self.bin_dir.join("cloudos")
    }
    pub fn uninstall_script(&self) -> PathBuf {
        self.bin_dir.join("cloudos-uninstall.sh")
    }
    pub fn config(&self) -> PathBuf {
        self.etc_dir.join("config.toml")
    }
    pub fn unit_file(&self, role: NodeRole) -> PathBuf {
        self.etc_dir.join(unit_name(role))
    }
    /// The list of what the install created, so uninstall removes exactly that.
    pub fn record(&self) -> PathBuf {
        self.etc_dir.join("installed")
    }
}

/// What the person asked for, as it goes into `/etc/cloudos/config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostSettings {
    pub role: NodeRole,
    pub name: String,
    /// Compute: the master's `host:port` it joined.
    pub master: Option<String>,
    /// Master: the cluster's name.
    pub cluster: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub insecure_registries: Vec<String>,
    /// Master: extra names and addresses for its serving certificate.
    pub tls_san: Vec<String>,
}

impl HostSettings {
    /// These settings in the node settings model, which writes and reads them.
    pub fn node_settings(&self) -> Settings {
        Settings {
            role: self.role,
            hostname: Some(self.name.clone()),
            master: self.master.clone(),
            cluster: self.cluster.clone(),
            labels: self.labels.clone(),
            insecure_registries: self.insecure_registries.clone(),
            tls_san: self.tls_san.clone(),
            ..Settings::default()
        }
    }
}

/// The settings file: the keys of the appliance's `config.toml`, written by the settings
/// model and read back by `nodeos daemon` through the same model. No secret goes here: a
/// compute node has already joined when this is written, and keeps its key in the state
/// directory. The role is written even when it is `none`, the default.
pub fn render_config(settings: &HostSettings) -> String {
    settings.node_settings().to_toml(
        "# CloudOS node settings, written by install.sh (`nodeos install`).\n\
         # Same keys as the appliance's config.toml; restart the unit after a change.\n",
        &["role"],
    )
}

/// The systemd unit. Why each setting:
/// - `Type=notify`: active means running with an identity (the daemon says `READY=1`).
/// - `Slice=` + `Delegate=yes`: the service owns its cgroup subtree; the agent moves itself
///   to `<unit>/agent` and puts containers under `<unit>/containers` (cgroup v2).
/// - the default `KillMode=control-group`: stopping the unit ends its containers too. The
///   agent deletes containers it finds when it starts, so keeping them alive would buy
///   nothing, and a delegated cgroup left with processes could not take a new main process
///   (cgroup v2's no-internal-processes rule) on systemd versions before 254.
/// - `OnFailure=` the rollback unit, with a start limit of 5 starts in 60 s: a binary that
///   cannot start (an upgrade's, on trial) fails the unit within about 10 s instead of
///   restarting for ever, and the previous binary takes over (see [`render_rollback_unit`]).
///   On systemd 254 and later a unit with `Restart=` passes through `failed` at each exit,
///   so the rollback may run at the first crash: it only acts on a binary on trial.
pub fn render_unit(layout: &Layout, role: NodeRole) -> String {
    let what = match role {
        NodeRole::Master => "CloudOS master",
        _ => "CloudOS compute node",
    };
    format!(
        "# Written by install.sh (`nodeos install`); removed by {uninstall}.\n\
         [Unit]\n\
         Description={what}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         OnFailure={ROLLBACK_UNIT}\n\
         StartLimitIntervalSec=60s\n\
         StartLimitBurst=5\n\
         \n\
         [Service]\n\
         Type=notify\n\
         NotifyAccess=main\n\
         ExecStart={nodeos} daemon --config {config}\n\
         Restart=always\n\
         RestartSec=2s\n\
         TimeoutStartSec=60s\n\
         TimeoutStopSec=20s\n\
         Slice={SLICE}\n\
         Delegate=yes\n\
         LimitNOFILE=1048576\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        uninstall = layout.uninstall_script().display(),
        nodeos = layout.nodeos().display(),
        config = layout.config().display(),
    )
}

/// The rollback unit: the *previous* binary, known good, puts itself back in place when the
/// one on trial cannot start (`nodeos host-rollback`). Without a previous binary (no upgrade
/// yet) the condition fails and systemd says so in the journal; the rollback itself removes
/// `nodeos.previous`, so it can never run twice for one upgrade.
pub fn render_rollback_unit(layout: &Layout, role: NodeRole) -> String {
    format!(
        "# Written by install.sh (`nodeos install`); removed by {uninstall}.\n\
         [Unit]\n\
         Description=CloudOS: go back to the previous nodeos when an upgraded one cannot start\n\
         ConditionPathExists={previous}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart={previous} host-rollback --unit {unit}\n",
        uninstall = layout.uninstall_script().display(),
        previous = layout.previous().display(),
        unit = unit_name(role),
    )
}

/// The uninstall script left behind, as k3s leaves `k3s-uninstall.sh`.
pub fn render_uninstall_script(layout: &Layout) -> String {
    format!(
        "#!/bin/sh\n\
         # Removes CloudOS from this host: the unit, the binaries, {etc} and {state},\n\
         # exactly what the install created (listed in {record}).\n\
         set -e\n\
         [ \"$(id -u)\" = 0 ] || {{ echo \"cloudos-uninstall.sh: run as root (sudo $0)\" >&2; exit 1; }}\n\
         exec {nodeos} uninstall \"$@\"\n",
        etc = layout.etc_dir.display(),
        state = layout.state_dir.display(),
        record = layout.record().display(),
        nodeos = layout.nodeos().display(),
    )
}

/// The install record: one created path per line, in the order they were created.
pub fn parse_record(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_file_reads_back_through_the_appliance_parser() {
        let settings = HostSettings {
            role: NodeRole::Compute,
            name: "vm-1".into(),
            master: Some("10.0.0.1:9443".into()),
            cluster: None,
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            insecure_registries: vec!["10.0.0.1:5000".into()],
            tls_san: Vec::new(),
        };
        let text = render_config(&settings);
        let (parsed, warnings) = Settings::load(Some(&text), "");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(parsed.role, NodeRole::Compute);
        assert_eq!(parsed.hostname.as_deref(), Some("vm-1"));
        assert_eq!(parsed.master.as_deref(), Some("10.0.0.1:9443"));
        assert_eq!(parsed.labels, settings.labels);
        assert_eq!(parsed.insecure_registries, settings.insecure_registries);
        assert!(!text.contains("token"));
    }

    #[test]
    fn a_master_keeps_its_cluster_name() {
        let text = render_config(&HostSettings {
            role: NodeRole::Master,
            name: "m".into(),
            cluster: Some("prod-eu".into()),
            tls_san: vec!["203.0.113.7".into(), "master.example.org".into()],
            ..HostSettings::default()
        });
        let (parsed, warnings) = Settings::load(Some(&text), "");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(parsed.role, NodeRole::Master);
        assert_eq!(parsed.cluster.as_deref(), Some("prod-eu"));
        assert_eq!(parsed.tls_san, ["203.0.113.7", "master.example.org"]);
        assert!(text.ends_with(
            "\nrole = \"master\"\nhostname = \"m\"\ncluster = \"prod-eu\"\n\
             tls_san = \"203.0.113.7,master.example.org\"\n"
        ));
    }

    #[test]
    fn the_settings_file_has_its_header_and_only_the_keys_given() {
        let text = render_config(&HostSettings {
            role: NodeRole::Compute,
            name: "vm-1".into(),
            master: Some("10.0.0.1:9443".into()),
            labels: [("zone", "a"), ("disk", "ssd")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            insecure_registries: vec!["10.0.0.1:5000".into(), "reg.lan:80".into()],
            ..HostSettings::default()
        });
        assert_eq!(
            text,
            "# CloudOS node settings, written by install.sh (`nodeos install`).\n\
             # Same keys as the appliance's config.toml; restart the unit after a change.\n\
             role = \"compute\"\n\
             hostname = \"vm-1\"\n\
             master = \"10.0.0.1:9443\"\n\
             labels = \"disk=ssd,zone=a\"\n\
             insecure_registries = \"10.0.0.1:5000,reg.lan:80\"\n"
        );
    }

    #[test]
    fn the_unit_runs_the_daemon_delegated_in_its_slice() {
        let layout = Layout::system();
        let unit = render_unit(&layout, NodeRole::Compute);
        assert!(unit.contains(
            "ExecStart=/usr/local/bin/nodeos daemon --config /etc/cloudos/config.toml\n"
        ));
        assert!(unit.contains("Delegate=yes\n"));
        assert!(unit.contains("Slice=cloudos.slice\n"));
        assert!(unit.contains("Type=notify\n"));
        assert!(unit.contains("WantedBy=multi-user.target\n"));
        assert_eq!(unit_name(NodeRole::Master), "cloudos-master.service");
        assert_eq!(
            layout.unit_file(NodeRole::Compute),
            Path::new("/etc/cloudos/cloudos-node.service")
        );
    }

    #[test]
    fn a_unit_that_cannot_start_hands_over_to_the_previous_binary() {
        let layout = Layout::system();
        let unit = render_unit(&layout, NodeRole::Compute);
        assert!(
            unit.contains("OnFailure=cloudos-rollback.service\n"),
            "{unit}"
        );
        assert!(unit.contains("StartLimitBurst=5\n"), "{unit}");
        let rollback = render_rollback_unit(&layout, NodeRole::Compute);
        assert!(rollback.contains(
            "ExecStart=/usr/local/bin/nodeos.previous host-rollback --unit cloudos-node.service\n"
        ));
        assert!(rollback.contains("ConditionPathExists=/usr/local/bin/nodeos.previous\n"));
        assert!(rollback.contains("Type=oneshot\n"));
        assert!(
            !rollback.contains("[Install]"),
            "started only by OnFailure="
        );
        for file in layout.upgrade_files() {
            assert_eq!(file.parent(), Some(layout.bin_dir.as_path()));
        }
    }

    #[test]
    fn records_list_absolute_paths_only() {
        let record = "/etc/cloudos\n\n  /usr/local/bin/nodeos \nrelative\n";
        assert_eq!(
            parse_record(record),
            vec![
                PathBuf::from("/etc/cloudos"),
                PathBuf::from("/usr/local/bin/nodeos")
            ]
        );
    }
}
