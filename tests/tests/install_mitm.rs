//! The cloud installer's chain of trust, attacked by a man in the middle on this machine: a
//! real `nodeos master` in a test network namespace, the attacker's TLS proxy
//! ([`cloudos_tests::mitm`]) in front of it, and the line `cloudos token create` prints, run
//! as root by `sh` with the real curl in that namespace. The victim gets its own mount
//! namespace: a /run that says systemd is up, cgroup2 mounted, and (for the attack that
//! needs it) a system CA directory that trusts the attacker. `--dry-run` lets the honest
//! path check and download everything and change nothing. The attacker's forged code would
//! write a marker file; none may appear. `cloud_install.rs` puts the same attacks to a real
//! Debian with systemd in QEMU.
//!
//! The attacker is at the address the host uses for the master (DNS, ARP or a router on
//! the way): modelled by giving the victim the proxy's address in the printed line.
//!
//! Needs root (namespaces, mounts) and `cargo build -p nodeos -p cloudos-cli`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use cloudos_tests::lab::{Admin, HostMaster};
use cloudos_tests::mitm::{Attack, Mitm};
use cloudos_tests::TestNet;

const MASTER: &str = "10.77.0.1:9443";
const PROXY: &str = "10.77.0.1:9445";

/// What a real install writes on the host; the victim shares this machine's file system.
const INSTALLED_PATHS: &[&str] = &[
    "/etc/cloudos",
    "/var/lib/cloudos",
    "/usr/local/bin/nodeos",
    "/usr/local/bin/cloudos",
    "/usr/local/bin/cloudos-uninstall.sh",
    "/etc/systemd/system/cloudos-node.service",
];

/// A master with its logged-in admin on a fresh test network, and the printed line.
struct Lab {
    net: TestNet,
    dir: tempfile::TempDir,
    _master: HostMaster,
    line: String,
}

impl Lab {
    fn new() -> Lab {
        // SAFETY: geteuid has no preconditions.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "needs root: network and mount namespaces (run as root, as scripts/test.sh does)"
        );
        assert_nothing_installed("before the test");
        let net = TestNet::new().expect("test network");
        let dir = tempfile::tempdir().expect("temp dir");
        // An empty downloads directory: the master serves its own binary, which is enough
        // for a dry run.
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).expect("downloads dir");
        let master = HostMaster::start(
            &net,
            &dir.path().join("master"),
            &[
                "--listen",
                "0.0.0.0:9443",
                "--downloads",
                downloads.to_str().expect("utf-8 path"),
            ],
        );
        let admin = Admin::login(&net, &dir.path().join("admin"), &master, MASTER);
        let (_, line) = admin.create_compute_token();
        Lab {
            net,
            dir,
            _master: master,
            line,
        }
    }

    fn marker(&self) -> String {
        self.dir.path().join("attacker-ran").display().to_string()
    }

    fn mitm(&self, attack: Attack) -> Mitm {
        Mitm::start(
            Some(self.net.name()),
            PROXY.parse().expect("proxy address"),
            MASTER.parse::<SocketAddr>().expect("master address"),
            attack,
            std::env::consts::ARCH,
            &self.marker(),
        )
        .expect("starting the man in the middle")
    }

    /// What the script did before: ca.pem (whatever it holds) as `--cacert`, then the
    /// digests.
    fn old_way(&self) -> String {
        let ca = self.dir.path().join("old-way-ca.pem");
        let ca = ca.display();
        format!(
            "curl -fsSk -o {ca} https://{PROXY}/install/ca.pem && \
             curl -fsS --cacert {ca} https://{PROXY}/install/SHA256SUMS"
        )
    }

    /// The printed line, as the victim's network delivers it: to the proxy.
    fn line_via_proxy(&self) -> String {
        self.line.replace(MASTER, PROXY)
    }

    /// Runs `command` as root on the victim (see the module doc); `trusted_ca` goes into
    /// its system CA directory. Exit code and output.
    fn victim(&self, command: &str, trusted_ca: Option<&str>) -> (i32, String) {
        let trust = self.dir.path().join("system-certs");
        let _ = std::fs::remove_dir_all(&trust);
        std::fs::create_dir_all(&trust).expect("trust dir");
        if let Some(pem) = trusted_ca {
            std::fs::write(trust.join("web-ca.pem"), pem).expect("trusted CA");
            let rehash = std::process::Command::new("openssl")
                .arg("rehash")
                .arg(&trust)
                .status()
                .expect("running openssl rehash (scripts/deps.sh installs openssl)");
            assert!(rehash.success(), "openssl rehash");
        }
        let t = Instant::now();
        let out = self
            .net
            .command("unshare")
            .args(["--mount", "sh", "-c"])
            .arg(
                "mount -t tmpfs none /run && mkdir -p /run/systemd/system && \
                 mount -t cgroup2 none /sys/fs/cgroup && \
                 mount --bind \"$TRUST\" /etc/ssl/certs && exec sh -c \"$COMMAND\"",
            )
            .env("TRUST", &trust)
            .env("COMMAND", format!("{command} 2>&1"))
            .env_remove("CLOUDOS_TOKEN")
            .output()
            .expect("running the victim");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "victim ran for {:.1} s, exit {:?}:\n{text}",
            t.elapsed().as_secs_f64(),
            out.status.code()
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// The printed line through the proxy must fail, run none of the attacker's code and
    /// install nothing; its output.
    fn refused(&self, why: &str, trusted_ca: Option<&str>) -> String {
        let (code, out) = self.victim(&self.line_via_proxy(), trusted_ca);
        assert_ne!(code, 0, "{why}: the install went on: {out}");
        assert!(
            !Path::new(&self.marker()).exists(),
            "{why}: the attacker's code ran as root: {out}"
        );
        assert_nothing_installed(why);
        out
    }
}

fn assert_nothing_installed(after: &str) {
    let present: Vec<&&str> = INSTALLED_PATHS
        .iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    assert!(present.is_empty(), "{present:?} exist {after}");
}

/// The attacker passes the token's pin with the master's CA first in ca.pem and adds its
/// own CA after it, as a second CERTIFICATE block or as a TRUSTED CERTIFICATE block (which
/// OpenSSL trusts too): the script refuses any ca.pem that is not exactly one certificate.
#[test]
fn mitm_adding_its_ca_to_ca_pem_is_refused_and_nothing_runs() {
    let lab = Lab::new();
    for attack in [Attack::ExtraCa, Attack::ExtraTrustedCa] {
        let mitm = lab.mitm(attack);
        // The attack is real: curl given that ca.pem, as the script once did, takes the
        // forged digests from the attacker.
        let (code, out) = lab.victim(&lab.old_way(), None);
        assert_eq!(
            code, 0,
            "{attack:?}: curl did not trust the smuggled CA: {out}"
        );
        assert!(out.contains("nodeos-"), "{out}");

        let before = mitm.served().len();
        let out = lab.refused(&format!("{attack:?}"), None);
        assert!(
            out.contains("sent a ca.pem that is not exactly one certificate")
                && out.contains("Nothing was installed"),
            "{attack:?}: {out}"
        );
        // It got the attacker's ca.pem, and asked for nothing after it.
        assert_eq!(
            mitm.served()[before..],
            ["forged /install/ca.pem".to_owned()],
            "{attack:?}"
        );
    }
}

/// The attacker leaves ca.pem alone and serves the downloads under a certificate from a CA
/// the host trusts for the web (here: put in its system CA directory). `curl --cacert`
/// alone keeps that directory; the script verifies against the pinned CA only.
#[test]
fn mitm_with_a_web_trusted_certificate_cannot_serve_the_downloads() {
    let lab = Lab::new();
    let mitm = lab.mitm(Attack::ForgedDownloads);
    let web_ca = mitm.ca_pem().to_owned();
    // The attack is real: with only the master's CA given as --cacert, curl still takes
    // the attacker's certificate, through the system directory.
    let (code, out) = lab.victim(&lab.old_way(), Some(&web_ca));
    assert_eq!(code, 0, "curl did not trust the web CA: {out}");
    assert!(
        mitm.served()
            .contains(&"forged /install/SHA256SUMS".to_owned()),
        "{:?}",
        mitm.served()
    );

    let out = lab.refused("a web-trusted certificate", Some(&web_ca));
    assert!(
        out.contains("cannot fetch https://10.77.0.1:9445/install/SHA256SUMS")
            && out.contains("SSL certificate problem"),
        "{out}"
    );
}

/// The attacker changes install.sh on the way: the printed line pins the script's digest
/// and runs nothing else.
#[test]
fn mitm_changing_install_sh_is_refused_by_the_printed_line() {
    let lab = Lab::new();
    let mitm = lab.mitm(Attack::Script);
    let out = lab.refused("a changed install.sh", None);
    assert!(
        out.contains("the install.sh from 10.77.0.1:9445 is not the one this line pins"),
        "{out}"
    );
    assert_eq!(mitm.served(), vec!["forged /install.sh".to_owned()]);
}

/// The honest path: the printed line straight to the master and through the proxy doing
/// nothing checks the CA and the digests, downloads the binary and runs its dry run.
#[test]
fn the_printed_line_works_straight_and_through_an_honest_proxy() {
    let lab = Lab::new();
    let _proxy = lab.mitm(Attack::None);
    for (line, master) in [(lab.line.clone(), MASTER), (lab.line_via_proxy(), PROXY)] {
        let (code, out) = lab.victim(&format!("{line} --dry-run"), None);
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains(&format!("checking the master at {master}"))
                && out.contains("dry run: nothing is changed")
                && out.contains(&format!("- join the master at {master}")),
            "{out}"
        );
        assert!(!Path::new(&lab.marker()).exists());
        assert_nothing_installed("a dry run");
    }
}
