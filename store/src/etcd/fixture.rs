//! A real etcd for tests: Debian's etcd binary (pinned in `image/packages.lock`), run on
//! loopback with the flags a master uses ([`super::member`]) and certificates of a test
//! etcd CA.
//!
//! [`EtcdFixture::shared`] is one member per test process, on which every test gets a key
//! prefix of its own ([`EtcdFixture::config`]); [`EtcdFixture::start`] is a member of the
//! test's own, ended (by its PID) when dropped. Either way etcd dies with the test process
//! (`PR_SET_PDEATHSIG`), so an aborted run leaves none behind.
//!
//! The binary is `$CLOUDOS_ETCD`, or the one `scripts/fetch-inputs.sh` unpacked; missing,
//! it is a [`Missing`] prerequisite (a failure under `CLOUDOS_STRICT`).

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cloudos_cluster::pki::{ClusterCa, IssuedCert};
use cloudos_testkit::Missing;
use time::OffsetDateTime;

use super::member::{ClusterState, Member, MemberTls};
use super::{EtcdConfig, EtcdStore};

/// The etcd binary for tests.
pub fn etcd_binary() -> Result<PathBuf, Missing> {
    if let Some(path) = std::env::var_os("CLOUDOS_ETCD") {
        let path = PathBuf::from(path);
        cloudos_testkit::file(&path, "CLOUDOS_ETCD names no file")?;
        return Ok(path);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    let fix = format!("run scripts/fetch-inputs.sh --arch {arch} (scripts/test.sh does)");
    let dir = Command::new(root.join("scripts/fetch-inputs.sh"))
        .args(["--dir", "etcd-server", arch])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .ok_or_else(|| Missing {
            need: "etcd-server in image/packages.lock".into(),
            fix: fix.clone(),
        })?;
    let path = PathBuf::from(dir).join("usr/bin/etcd");
    cloudos_testkit::file(&path, &fix)?;
    Ok(path)
}

/// A free TCP port on loopback (bound and released: another process could take it in
/// between, which on a test machine does not happen in practice).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The etcd CA of a test cluster and its member certificate.
pub struct TestPki {
    pub ca: ClusterCa,
    pub member: IssuedCert,
}

impl TestPki {
    pub fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        let ca = ClusterCa::create_etcd("test", now).expect("etcd CA");
        let member = ca
            .issue_etcd_member_cert(
                "m1",
                &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
                time::Duration::days(1),
                now,
            )
            .expect("member certificate");
        TestPki { ca, member }
    }
}

impl Default for TestPki {
    fn default() -> Self {
        TestPki::new()
    }
}

/// One etcd member on loopback.
pub struct EtcdFixture {
    child: Child,
    dir: PathBuf,
    pub endpoint: String,
    pub pki: TestPki,
}

impl Drop for EtcdFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static PREFIXES: AtomicU32 = AtomicU32::new(0);

impl EtcdFixture {
    /// A member of the caller's own; `Missing` when there is no etcd binary.
    pub fn start() -> Result<EtcdFixture, Missing> {
        let etcd = etcd_binary()?;
        Ok(EtcdFixture::spawn(&etcd))
    }

    /// The member every test of this process shares (started by the first caller).
    pub fn shared() -> Result<&'static EtcdFixture, Missing> {
        static SHARED: OnceLock<Result<&'static EtcdFixture, Missing>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let etcd = etcd_binary()?;
                remove_stale_dirs();
                // PR_SET_PDEATHSIG follows the thread that forked: start it from a thread
                // that lives as long as the process, not from a test's thread.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let fixture: &'static EtcdFixture =
                        Box::leak(Box::new(EtcdFixture::spawn(&etcd)));
                    let _ = tx.send(fixture);
                    loop {
                        std::thread::park();
                    }
                });
                Ok(rx.recv().expect("the etcd fixture thread"))
            })
            .clone()
    }

    fn spawn(etcd: &Path) -> EtcdFixture {
        let dir = std::env::temp_dir().join(format!(
            "cloudos-etcd-{}-{}",
            std::process::id(),
            PREFIXES.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("fixture dir");
        let pki = TestPki::new();
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a fixture file");
            path
        };
        let tls = MemberTls {
            ca: write("ca.pem", pki.ca.cert_pem()),
            cert: write("member.pem", &pki.member.cert_pem),
            key: write("member.key", &pki.member.key_pem),
        };
        let client_url = format!("https://127.0.0.1:{}", free_port());
        let peer_url = format!("https://127.0.0.1:{}", free_port());
        let member = Member {
            name: "m1".into(),
            data_dir: dir.join("data"),
            client_url: client_url.clone(),
            peer_url: peer_url.clone(),
            initial_cluster: vec![("m1".into(), peer_url)],
            state: ClusterState::New,
            tls,
            pace: std::time::Duration::from_secs(1),
        };
        let log = std::fs::File::create(dir.join("etcd.log")).expect("etcd log");
        let mut command = Command::new(etcd);
        command
            .args(member.args())
            // Tests need not survive a power cut; etcd without fsync is many times faster.
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches only the child.
        unsafe {
            command.pre_exec(|| {
                if libc_prctl_pdeathsig() != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start etcd");
        let fixture = EtcdFixture {
            child,
            dir,
            endpoint: client_url,
            pki,
        };
        fixture.wait_ready();
        fixture
    }

    /// Waits until the member answers a client over TLS.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match EtcdStore::connect(&self.config("/ready/")) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => {
                    let log =
                        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
                    panic!("etcd did not start: {e}\n{log}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// A client configuration under `prefix`, with the member certificate as the client's.
    pub fn config(&self, prefix: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints: vec![self.endpoint.clone()],
            ca_pem: self.pki.ca.cert_pem().to_owned(),
            cert_pem: self.pki.member.cert_pem.clone(),
            key_pem: self.pki.member.key_pem.clone(),
            prefix: prefix.to_owned(),
            timeout: Duration::from_secs(5),
        }
    }

    /// A store under a prefix no other store of this process uses.
    pub fn store(&self) -> EtcdStore {
        let prefix = format!("/t{}/", PREFIXES.fetch_add(1, Ordering::Relaxed));
        EtcdStore::connect(&self.config(&prefix)).expect("connect to the etcd fixture")
    }

    /// The member's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }
}

/// Removes the directories of shared members whose test process is gone (the shared
/// member is never dropped, so its process cannot clean up after itself).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("cloudos-etcd-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`.
fn libc_prctl_pdeathsig() -> i32 {
    // SAFETY: a plain prctl call with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) }
}
