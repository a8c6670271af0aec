//! Writing settings: the settings file the installers leave on a node, and the
//! `cloudos.*` words of a boot line, both from the key table, so what is written reads
//! back through [`Settings::load`] as the same settings.
//!
//! Values are written in the shape the reader takes from either source: one string per
//! key, lists joined with commas. A key at its default is left out unless the writer asks
//! for it; keys are written in the table's order.

use crate::keys::{Key, KEYS};
use crate::load::PREFIX;
use crate::model::Settings;

impl Settings {
    /// A settings file: `header` (comment lines, each ending in a newline), then
    /// `key = "value"` for each key a file may carry whose value is not its default, or
    /// that `keep` names (written even at its default). The join token is written when
    /// it is set: clear it first where it must not stay on a disk.
    pub fn to_toml(&self, header: &str, keep: &[&str]) -> String {
        let defaults = Settings::default();
        let mut text = header.to_owned();
        for key in KEYS.iter().filter(|k| k.in_file) {
            let values = (key.get)(self);
            if values != (key.get)(&defaults) || keep.contains(&key.name) {
                push_toml(&mut text, key, &values);
            }
        }
        text
    }

    /// The `key = "value"` lines of just the keys named, in the table's order, for those
    /// that have a value: what a writer adds after [`Settings::to_toml`]'s file.
    pub fn toml_lines(&self, names: &[&str]) -> String {
        let mut text = String::new();
        for key in KEYS.iter().filter(|k| names.contains(&k.name)) {
            push_toml(&mut text, key, &(key.get)(self));
        }
        text
    }

    /// The `cloudos.*` words of a kernel command line for every key not at its default,
    /// separated by spaces; a value with a space is quoted as the kernel groups it.
    pub fn to_cmdline(&self) -> String {
        let defaults = Settings::default();
        let mut words = Vec::new();
        for key in KEYS {
            let values = (key.get)(self);
            if values == (key.get)(&defaults) {
                continue;
            }
            for value in values {
                let value = match value.contains(char::is_whitespace) {
                    true => format!("\"{value}\""),
                    false => value,
                };
                words.push(format!("{PREFIX}{}={value}", key.name));
            }
        }
        words.join(" ")
    }
}

/// One line per value (a file key has at most one, see the table's test).
fn push_toml(text: &mut String, key: &Key, values: &[String]) {
    for value in values {
        text.push_str(key.name);
        text.push_str(" = ");
        text.push_str(&toml::Value::String(value.clone()).to_string());
        text.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::model::{CrashFault, Fault, NetMode, NetSettings, NodeRole, Secret, Slot, Watchdog};

    fn a_token() -> String {
        let pin = cloudos_cluster::CaPin::from_hex(&"ab".repeat(32)).unwrap();
        cloudos_cluster::Token::generate(pin).unwrap().to_string()
    }

    /// Every field away from its default.
    fn everything() -> Settings {
        Settings {
            role: NodeRole::Compute,
            hostname: Some("node-1".into()),
            net: NetSettings {
                mode: NetMode::Static,
                iface: Some("eth1".into()),
                address: Some("10.0.0.5/24".parse().unwrap()),
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 53), Ipv4Addr::new(1, 1, 1, 1)],
            },
            debug: true,
            faults: vec![
                Fault::Crash(CrashFault {
                    service: "power".into(),
                    times: 3,
                }),
                Fault::Crash(CrashFault {
                    service: "net".into(),
                    times: 1,
                }),
                Fault::HangPid1 { after_secs: 20 },
            ],
            watchdog: Watchdog::Seconds(20),
            token: Some(Secret::new(a_token())),
            master: Some("10.0.0.1:9443".into()),
            cluster: Some("lab".into()),
            workloads: true,
            labels: [("zone", "a"), ("disk", "ssd")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            insecure_registries: vec!["10.0.0.1:5000".into(), "reg.lan:80".into()],
            tls_san: vec!["203.0.113.7".into(), "master.example.org".into()],
            ntp: vec!["pool.example.org:123".into(), "[fd00::7]:123".into()],
            slot: Some(Slot::B),
            install: Some("LABEL=CLOUDOS-CFG:/install.toml".into()),
            backup_dir: Some("/var/lib/cloudos/backups".into()),
            backup_interval: Some(6 * 3600),
            node_timeout: Some(10),
            ha_lease: Some(5),
            backup_keep: Some(3),
            backup_passphrase_file: Some("/var/lib/cloudos/backup.pass".into()),
            restore: Some("LABEL=BACKUP:/lab.age".into()),
            restore_passphrase_file: Some("/var/lib/cloudos/restore.pass".into()),
            health_timeout: Some(300),
            container_range: Some(
                cloudos_cluster::subnets::ClusterRange::parse("10.9.0.0/16").unwrap(),
            ),
            container_node_ports: vec!["9101".parse().unwrap(), "8125/udp".parse().unwrap()],
            volume_host_paths: vec!["/srv".into(), "/mnt/media".into()],
            service_range: Some(
                cloudos_cluster::subnets::ClusterRange::parse("10.8.0.0/16").unwrap(),
            ),
            mesh_endpoint: Some("203.0.113.7:51820".parse().unwrap()),
            mesh_endpoint_ranges: vec![
                "203.0.113.0/24".parse().unwrap(),
                "2001:db8::7/128".parse().unwrap(),
            ],
        }
    }

    #[test]
    fn the_command_line_round_trips_every_key() {
        let settings = everything();
        let line = settings.to_cmdline();
        let (again, warnings) = Settings::load(None, &line);
        assert!(warnings.is_empty(), "{line}: {warnings:?}");
        assert_eq!(again, settings, "{line}");
        assert_eq!(Settings::default().to_cmdline(), "");
        // A value with a space survives the kernel's splitting.
        let spaced = Settings {
            install: Some("LABEL=usb:/my answers.toml".into()),
            ..Settings::default()
        };
        let (again, warnings) = Settings::load(None, &spaced.to_cmdline());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again, spaced);
    }

    #[test]
    fn the_file_round_trips_every_key_it_may_carry() {
        let mut settings = everything();
        let text = settings.to_toml("# a header\n", &[]);
        let (again, warnings) = Settings::load(Some(&text), "");
        assert!(warnings.is_empty(), "{text}: {warnings:?}");
        // The boot-only keys stay out of a file.
        (settings.faults, settings.slot, settings.install) = (Vec::new(), None, None);
        assert_eq!(again, settings, "{text}");
        assert!(text.starts_with("# a header\nrole = \"compute\"\nhostname = \"node-1\"\n"));
        for key in ["fault", "slot", "install"] {
            assert!(!text.contains(&format!("{key} =")), "{text}");
        }
        // Every value is a string, the shape both sources read.
        let table: toml::Table = text.parse().unwrap();
        assert!(table.values().all(toml::Value::is_str), "{text}");
    }

    #[test]
    fn defaults_are_left_out_unless_kept() {
        let settings = Settings {
            role: NodeRole::Master,
            ..Settings::default()
        };
        assert_eq!(settings.to_toml("", &[]), "role = \"master\"\n");
        assert_eq!(
            settings.to_toml("", &["net", "debug"]),
            "role = \"master\"\nnet = \"dhcp\"\ndebug = \"0\"\n"
        );
        assert_eq!(Settings::default().to_toml("# h\n", &[]), "# h\n");
        let with_token = Settings {
            token: Some(Secret::new("cloudos1_t")),
            ..settings
        };
        assert_eq!(
            with_token.toml_lines(&["token"]),
            "token = \"cloudos1_t\"\n"
        );
        assert_eq!(Settings::default().toml_lines(&["token"]), "");
    }

    #[test]
    fn values_are_quoted_as_toml() {
        let settings = Settings {
            install: Some("a \"quoted\" \\ value".into()),
            hostname: Some("n".into()),
            ..Settings::default()
        };
        // `install` is boot-only, so through toml_lines.
        let text = settings.toml_lines(&["hostname", "install"]);
        let (again, warnings) = Settings::load(Some(&text), "");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(again.install, settings.install);
    }
}
