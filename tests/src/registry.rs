//! A real OCI registry for end-to-end tests: Debian's `docker-registry` started by the test
//! inside its network namespace, and images built by the test from Debian's busybox-static
//! and pushed over the distribution API with `curl`, as any registry client would.
//!
//! Needs `docker-registry`, `curl` and `/bin/busybox` (busybox-static), which
//! `scripts/deps.sh` installs; [`Registry::start`] says which one is missing.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0} is not installed; run scripts/deps.sh")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("docker-registry did not answer on {addr} within 15s: {log}")]
    NotUp { addr: String, log: String },
    #[error("pushing {what} failed: {why}")]
    Push { what: String, why: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
    let what = what.into();
    move |source| RegistryError::Io { what, source }
}

/// Builds a command that runs inside the test's network namespace.
pub type InNet<'a> = &'a dyn Fn(&str) -> Command;

/// A running `docker-registry` serving plain HTTP on `addr`; stopped when dropped.
pub struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    /// `user:password` when the registry wants basic auth.
    auth: Option<String>,
}

impl Registry {
    /// Starts the registry on `addr` (an address of the namespace `in_net` runs in).
    pub fn start(in_net: InNet<'_>, addr: &str) -> Result<Registry, RegistryError> {
        Registry::start_with(in_net, addr, None)
    }

    /// [`Registry::start`] behind htpasswd basic auth for `user` with `password`.
    pub fn start_with_password(
        in_net: InNet<'_>,
        addr: &str,
        user: &str,
        password: &str,
    ) -> Result<Registry, RegistryError> {
        Registry::start_with(in_net, addr, Some((user, password)))
    }

    fn start_with(
        in_net: InNet<'_>,
        addr: &str,
        auth: Option<(&str, &str)>,
    ) -> Result<Registry, RegistryError> {
        if !Path::new("/usr/bin/docker-registry").is_file() {
            return Err(RegistryError::Missing("docker-registry"));
        }
        let dir = tempfile::Builder::new()
            .prefix("cloudos-registry-")
            .tempdir()
            .map_err(io("registry temp dir"))?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 4).map_err(|e| RegistryError::Push {
                what: "htpasswd".into(),
                why: e.to_string(),
            })?;
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).map_err(io("htpasswd"))?;
            config += &format!(
                "auth:\n  htpasswd:\n    realm: cloudos-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).map_err(io("registry config"))?;
        let log = std::fs::File::create(dir.path().join("registry.log")).map_err(io("log"))?;
        let mut cmd = in_net("/usr/bin/docker-registry");
        cmd.arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log);
        let child = crate::nodes::spawn_tied(cmd).map_err(io("start docker-registry"))?;
        let registry = Registry {
            child,
            addr: addr.to_owned(),
            dir,
            auth: auth.map(|(u, p)| format!("{u}:{p}")),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let up = in_net("curl")
                .args(["-sf", "-o", "/dev/null"])
                // No auth, no arguments: an empty one would be taken for a URL, and
                // `-o` would apply to it instead of the registry's answer.
                .args(
                    registry
                        .auth
                        .as_deref()
                        .map(|a| vec!["-u", a])
                        .unwrap_or_default(),
                )
                .arg(format!("http://{addr}/v2/"))
                .status()
                .map_err(|_| RegistryError::Missing("curl"))?;
            if up.success() {
                return Ok(registry);
            }
            if Instant::now() >= deadline {
                return Err(RegistryError::NotUp {
                    addr: addr.to_owned(),
                    log: registry.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The registry's own log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes `image` as `repo:tag`; returns the manifest's digest.
    pub fn push(
        &self,
        in_net: InNet<'_>,
        repo: &str,
        tag: &str,
        image: &Image,
    ) -> Result<String, RegistryError> {
        push(in_net, &self.addr, self.auth.as_deref(), repo, tag, image)
    }

    /// Pushes one image per architecture and an OCI image index over them as
    /// `repo:tag`, as `docker buildx --platform linux/amd64,linux/arm64` publishes;
    /// returns the index's digest.
    pub fn push_index(
        &self,
        in_net: InNet<'_>,
        repo: &str,
        tag: &str,
        images: &[(&str, &Image)],
    ) -> Result<String, RegistryError> {
        push_index(in_net, &self.addr, self.auth.as_deref(), repo, tag, images)
    }

    /// [`Registry::push_index`] to the open plain-HTTP registry at `addr`.
    pub fn push_index_to(
        in_net: InNet<'_>,
        addr: &str,
        repo: &str,
        tag: &str,
        images: &[(&str, &Image)],
    ) -> Result<String, RegistryError> {
        push_index(in_net, addr, None, repo, tag, images)
    }

    /// Pushes `image` as `repo:tag` to the open plain-HTTP registry at `addr`.
    pub fn push_to(
        in_net: InNet<'_>,
        addr: &str,
        repo: &str,
        tag: &str,
        image: &Image,
    ) -> Result<String, RegistryError> {
        push(in_net, addr, None, repo, tag, image)
    }
}

fn push(
    in_net: InNet<'_>,
    addr: &str,
    auth: Option<&str>,
    repo: &str,
    tag: &str,
    image: &Image,
) -> Result<String, RegistryError> {
    let scratch = tempfile::Builder::new()
        .prefix("cloudos-push-")
        .tempdir()
        .map_err(io("push temp dir"))?;
    for blob in image.layers.iter().chain([&image.config]) {
        push_blob(in_net, addr, auth, scratch.path(), repo, blob)?;
    }
    put_manifest(
        in_net,
        addr,
        auth,
        repo,
        tag,
        "application/vnd.oci.image.manifest.v1+json",
        &image.manifest(),
    )
}

fn push_index(
    in_net: InNet<'_>,
    addr: &str,
    auth: Option<&str>,
    repo: &str,
    tag: &str,
    images: &[(&str, &Image)],
) -> Result<String, RegistryError> {
    let mut manifests = Vec::new();
    for (arch, image) in images {
        let manifest = image.manifest();
        let digest = push(in_net, addr, auth, repo, &digest_of(&manifest), image)?;
        manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap_or_default();
    put_manifest(
        in_net,
        addr,
        auth,
        repo,
        tag,
        "application/vnd.oci.image.index.v1+json",
        &index,
    )
}

/// A manifest or index of type `media_type`, as `repo:reference`; returns its digest.
fn put_manifest(
    in_net: InNet<'_>,
    addr: &str,
    auth: Option<&str>,
    repo: &str,
    reference: &str,
    media_type: &str,
    bytes: &[u8],
) -> Result<String, RegistryError> {
    let scratch = tempfile::Builder::new()
        .prefix("cloudos-push-")
        .tempdir()
        .map_err(io("push temp dir"))?;
    let file = scratch.path().join("manifest.json");
    std::fs::write(&file, bytes).map_err(io("manifest file"))?;
    put_file(
        in_net,
        auth,
        &format!("manifest {repo}:{reference}"),
        media_type,
        &file,
        &format!("http://{addr}/v2/{repo}/manifests/{reference}"),
    )?;
    Ok(digest_of(bytes))
}

/// One blob, by the distribution API's two-step upload (POST, then PUT with the digest).
fn push_blob(
    in_net: InNet<'_>,
    addr: &str,
    auth: Option<&str>,
    scratch: &Path,
    repo: &str,
    blob: &[u8],
) -> Result<(), RegistryError> {
    let digest = digest_of(blob);
    let what = format!("blob {digest}");
    let started = curl(
        in_net,
        auth,
        &what,
        &[
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            &format!("http://{addr}/v2/{repo}/blobs/uploads/"),
        ],
    )?;
    let location = started
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .ok_or_else(|| RegistryError::Push {
            what: what.clone(),
            why: format!("no Location in the answer: {started}"),
        })?;
    let location = if location.starts_with('/') {
        format!("http://{addr}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    let file = scratch.join("blob");
    std::fs::write(&file, blob).map_err(io("blob file"))?;
    put_file(
        in_net,
        auth,
        &what,
        "application/octet-stream",
        &file,
        &format!("{location}{sep}digest={digest}"),
    )?;
    Ok(())
}

/// PUTs the bytes of `file` to `url` as `content_type` (a blob's upload or a manifest).
fn put_file(
    in_net: InNet<'_>,
    auth: Option<&str>,
    what: &str,
    content_type: &str,
    file: &Path,
    url: &str,
) -> Result<String, RegistryError> {
    curl(
        in_net,
        auth,
        what,
        &[
            "-X",
            "PUT",
            "-H",
            &format!("Content-Type: {content_type}"),
            "--data-binary",
            &format!("@{}", file.display()),
            url,
        ],
    )
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn curl(
    in_net: InNet<'_>,
    auth: Option<&str>,
    what: &str,
    args: &[&str],
) -> Result<String, RegistryError> {
    let out = in_net("curl")
        .args(["-sS", "--fail-with-body"])
        .args(auth.map(|a| vec!["-u", a]).unwrap_or_default())
        .args(args)
        .output()
        .map_err(|_| RegistryError::Missing("curl"))?;
    if !out.status.success() {
        return Err(RegistryError::Push {
            what: what.to_owned(),
            why: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// An image to push: gzip'd tar layers (bottom first) and its config.
pub struct Image {
    pub layers: Vec<Vec<u8>>,
    pub config: Vec<u8>,
}

impl Image {
    /// A single-layer image of busybox for `arch` (`amd64`, `arm64`) whose default
    /// command is `sh`, plus `extra` files in a second layer.
    pub fn busybox(
        arch: &str,
        busybox: &Path,
        extra: &[(&str, &[u8])],
    ) -> Result<Image, RegistryError> {
        let (base, base_diff) = busybox_layer(busybox)?;
        let mut layers = vec![base];
        let mut diffs = vec![base_diff];
        if !extra.is_empty() {
            let (layer, diff) = files_layer(extra)?;
            layers.push(layer);
            diffs.push(diff);
        }
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": { "Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/" },
            "rootfs": { "type": "layers", "diff_ids": diffs },
        });
        Ok(Image {
            layers,
            config: serde_json::to_vec(&config).unwrap_or_default(),
        })
    }

    /// The image as an OCI image-layout tarball naming it `name` (for `nodeos image import`).
    pub fn layout_tar(&self, name: &str) -> Result<Vec<u8>, RegistryError> {
        let manifest = self.manifest();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest_of(&manifest),
                "size": manifest.len(),
                "annotations": { "org.opencontainers.image.ref.name": name },
            }],
        });
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: String, bytes: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            h.set_cksum();
            tar.append_data(&mut h, path, bytes)
                .map_err(io("layout tar"))
        };
        add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add(
            "index.json".into(),
            &serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        for blob in self.layers.iter().chain([&self.config, &manifest]) {
            let hex = digest_of(blob).trim_start_matches("sha256:").to_owned();
            add(format!("blobs/sha256/{hex}"), blob)?;
        }
        tar.into_inner().map_err(io("layout tar"))
    }

    fn manifest(&self) -> Vec<u8> {
        let descriptor = |media: &str, bytes: &[u8]| serde_json::json!({ "mediaType": media, "digest": digest_of(bytes), "size": bytes.len() });
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", &self.config),
            "layers": self.layers.iter()
                .map(|l| descriptor("application/vnd.oci.image.layer.v1.tar+gzip", l))
                .collect::<Vec<_>>(),
        });
        serde_json::to_vec(&manifest).unwrap_or_default()
    }
}

/// `/bin/busybox` with a link per applet, and the directories a container needs.
fn busybox_layer(busybox: &Path) -> Result<(Vec<u8>, String), RegistryError> {
    if !busybox.is_file() {
        return Err(RegistryError::Missing("busybox-static (/bin/busybox)"));
    }
    // The host's own busybox lists the applets: `busybox` may be built for another
    // architecture (arm64 on an x86_64 host), from the same Debian package version.
    let applets = busybox_applets().map_err(io("busybox --list"))?;
    let binary = std::fs::read(busybox).map_err(io("read busybox"))?;
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "output"] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(if dir == "tmp" { 0o1777 } else { 0o755 });
        h.set_size(0);
        h.set_cksum();
        tar.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .map_err(io("tar"))?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o755);
    h.set_size(binary.len() as u64);
    h.set_cksum();
    tar.append_data(&mut h, "bin/busybox", &binary[..])
        .map_err(io("tar"))?;
    for applet in applets {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .map_err(io("tar"))?;
    }
    gzip(tar.into_inner().map_err(io("tar"))?)
}

fn files_layer(files: &[(&str, &[u8])]) -> Result<(Vec<u8>, String), RegistryError> {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        h.set_cksum();
        tar.append_data(&mut h, path, *content).map_err(io("tar"))?;
    }
    gzip(tar.into_inner().map_err(io("tar"))?)
}

/// The gzip'd layer and the digest of its uncompressed tar (the config's diff id).
fn gzip(tar: Vec<u8>) -> Result<(Vec<u8>, String), RegistryError> {
    let diff = digest_of(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).map_err(io("gzip"))?;
    Ok((gz.finish().map_err(io("gzip"))?, diff))
}

/// Debian's static busybox.
pub fn host_busybox() -> PathBuf {
    PathBuf::from("/bin/busybox")
}

/// The applets of the host's busybox (`busybox --list`) but `busybox` itself: the links
/// an image makes to it, one per command.
pub fn busybox_applets() -> std::io::Result<Vec<String>> {
    let list = Command::new(host_busybox()).arg("--list").output()?;
    Ok(String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| !a.is_empty() && *a != "busybox")
        .map(str::to_owned)
        .collect())
}

/// Debian's static busybox for arm64, the pinned package `scripts/fetch-inputs.sh`
/// unpacks for the aarch64 image (fetched if the cache lacks it).
pub fn arm64_busybox() -> Result<PathBuf, RegistryError> {
    let dir = crate::artifacts::pinned_package("busybox-static", "arm64").map_err(|e| {
        RegistryError::Io {
            what: "busybox-static for arm64".into(),
            source: std::io::Error::other(e.to_string()),
        }
    })?;
    let path = dir.join("bin/busybox");
    if !path.is_file() {
        return Err(RegistryError::Missing(
            "busybox-static for arm64 (run scripts/build.sh --arch aarch64)",
        ));
    }
    Ok(path)
}
