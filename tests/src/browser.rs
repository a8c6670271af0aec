//! A real browser for the dashboard's tests: Debian's headless Chromium driven through
//! WebDriver (`chromedriver`), both inside a lab's namespace, where the masters are.
//!
//! The test's WebDriver client runs on a thread that entered the namespace, so its
//! connection to chromedriver's loopback port stays inside too. Chromium trusts the
//! master's serving key by its pin (`--ignore-certificate-errors-spki-list`: this key and
//! no other, as a pinned CA would), since the cluster CA is in no browser's store.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::netns::TestNet;

/// chromedriver's port inside the namespace.
const DRIVER_PORT: u16 = 9515;

/// chromedriver running in a namespace; stopped when dropped.
pub struct Driver {
    pid: u32,
    net_name: String,
}

impl Driver {
    /// Starts chromedriver in `net`; `None` (skip, or fail in strict mode) without it.
    pub fn start(net: &TestNet) -> Option<Driver> {
        cloudos_testkit::require!(cloudos_testkit::program(
            "chromedriver",
            "apt-get install chromium chromium-driver (scripts/deps.sh does)"
        ));
        cloudos_testkit::require!(cloudos_testkit::program(
            "chromium",
            "apt-get install chromium (scripts/deps.sh does)"
        ));
        let mut cmd = net.command("chromedriver");
        cmd.arg(format!("--port={DRIVER_PORT}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let pid = net.spawn(cmd).expect("start chromedriver");
        let driver = Driver {
            pid,
            net_name: net.name().to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver
            .in_namespace(|| std::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT)).is_err())
        {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(driver)
    }

    /// Runs `work` on a thread inside the namespace.
    pub fn in_namespace<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        crate::netns::inside_namespace(&self.net_name, work)
    }

    /// A new browser (its own profile: no cookies) for the master whose serving key has
    /// `spki_pin` (base64 SHA-256 of its SubjectPublicKeyInfo), and `work` run with it on
    /// a runtime inside the namespace; the browser is closed after.
    pub fn browse<T: Send + 'static>(
        &self,
        spki_pin: &str,
        profile: &Path,
        work: impl FnOnce(&tokio::runtime::Runtime, &fantoccini::Client) -> T + Send + 'static,
    ) -> T {
        let args = serde_json::json!([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,900",
            format!("--user-data-dir={}", profile.display()),
            format!("--ignore-certificate-errors-spki-list={spki_pin}"),
        ]);
        self.in_namespace(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let mut caps = serde_json::Map::new();
            caps.insert(
                "goog:chromeOptions".into(),
                serde_json::json!({ "args": args, "binary": "/usr/bin/chromium" }),
            );
            let client = runtime
                .block_on(
                    // chromedriver speaks plain HTTP on loopback: no TLS stack needed.
                    fantoccini::ClientBuilder::new(
                        hyper_util::client::legacy::connect::HttpConnector::new(),
                    )
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{DRIVER_PORT}")),
                )
                .expect("a browser session");
            let result =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&runtime, &client)));
            let _ = runtime.block_on(client.close());
            match result {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver ends the browsers it started.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
    }
}

/// The pin Chromium's `--ignore-certificate-errors-spki-list` takes for the server at
/// `addr` (`host:port`), read with openssl inside `net`.
pub fn spki_pin(net: &TestNet, addr: &str) -> String {
    let script = format!(
        "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -pubkey -noout \
         | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64"
    );
    let out = net
        .command("sh")
        .args(["-c", &script])
        .output()
        .expect("openssl");
    let pin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(pin.len(), 44, "no key pin read from {addr}: {out:?}");
    pin
}

/// Where screenshots go: `target/test-artifacts/<test>/`.
pub fn artifacts(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .join(test);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Saves a PNG of what the browser shows.
pub fn screenshot(runtime: &tokio::runtime::Runtime, client: &fantoccini::Client, file: &Path) {
    let png = runtime.block_on(client.screenshot()).expect("screenshot");
    std::fs::write(file, png).expect("write the screenshot");
}
