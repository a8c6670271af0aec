//! Pulls from a real registry: Debian's `docker-registry` (distribution 2.8), started by
//! the test on 127.0.0.1 with a temporary config and storage: open, behind htpasswd
//! basic auth, and behind bearer tokens from a token server in the test. The test
//! builds a tiny two-platform image, pushes it with oci-client and pulls it back through
//! `Puller`. Needs the `docker-registry` binary: without it the tests are skipped, or
//! fail under `CLOUDOS_STRICT=1` (scripts/test.sh).

use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use cloudos_oci::manifest::{OCI_INDEX, OCI_MANIFEST};
use cloudos_oci::{
    Credentials, Digest, ImageStore, Platform, Progress, PullConfig, PullError, Puller,
};
use cloudos_testkit::require;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

const USER: &str = "cloudos";
const PASSWORD: &str = "right horse battery";

/// How the registry checks who pulls.
enum Auth {
    Open,
    /// Basic auth against an htpasswd file holding USER/PASSWORD.
    Htpasswd,
    /// Bearer tokens from a token server (the Docker Hub scheme).
    Token(TokenServer),
}

const SERVICE: &str = "cloudos-registry";
const ISSUER: &str = "cloudos-test-issuer";

/// A minimal token server, as Docker Hub's auth.docker.io: it checks USER/PASSWORD
/// (basic auth) and answers with an ES256 JWT granting the scopes asked for, signed by
/// a key whose self-signed certificate the registry trusts. Serves until the test ends.
struct TokenServer {
    addr: String,
    cert_pem: String,
}

impl TokenServer {
    fn start() -> Self {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let rc_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let mut params = rcgen::CertificateParams::new(vec![ISSUER.to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&rc_key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let x5c = STANDARD.encode(cert.der());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = serve_token(stream, &key, &x5c);
            }
        });
        Self {
            addr,
            cert_pem: cert.pem(),
        }
    }

    /// A token for `scope`, asked for with USER/PASSWORD.
    fn fetch_token(&self, scope: &str) -> String {
        use std::io::Read as _;
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let basic = STANDARD.encode(format!("{USER}:{PASSWORD}"));
        write!(
            stream,
            "GET /token?service={SERVICE}&scope={scope} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {basic}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        body["token"].as_str().unwrap().to_string()
    }
}

/// Answers one token request: 401 without USER/PASSWORD, else a JWT for its scopes.
fn serve_token(
    mut stream: TcpStream,
    key: &ring::signature::EcdsaKeyPair,
    x5c: &str,
) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader};
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim().split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                let want = STANDARD.encode(format!("{USER}:{PASSWORD}"));
                authorized = value.trim() == format!("Basic {want}");
            }
        }
    }
    let (status, body) = if authorized {
        ("200 OK", token_body(&request_line, key, x5c))
    } else {
        (
            "401 Unauthorized",
            r#"{"details":"incorrect username or password"}"#.to_string(),
        )
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// `{"token": JWT}` granting the `scope=` parameters of the request line.
fn token_body(request_line: &str, key: &ring::signature::EcdsaKeyPair, x5c: &str) -> String {
    let query = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    let access: Vec<_> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .map(percent_decode)
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE, "iat": now, "nbf": now - 10,
        "exp": now + 300, "jti": format!("{now}-{}", access.len()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = ring::rand::SystemRandom::new();
    let signature = key.sign(&rng, signing_input.as_bytes()).unwrap();
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signature.as_ref())
    );
    serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running `docker-registry`, killed by its PID on drop.
struct Registry {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; `None` when `docker-registry` is missing and the test is
    /// skipped (in strict mode it fails instead).
    fn start(auth: Auth) -> Option<Self> {
        let binary = require!(cloudos_testkit::program(
            "docker-registry",
            "apt-get install docker-registry (scripts/deps.sh)"
        ));
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        match auth {
            Auth::Open => {}
            Auth::Htpasswd => {
                let hash = bcrypt::hash(PASSWORD, 4).unwrap();
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, format!("{USER}:{hash}\n")).unwrap();
                config += &format!(
                    "auth:\n  htpasswd:\n    realm: cloudos-test\n    path: {}\n",
                    htpasswd.display()
                );
            }
            Auth::Token(server) => {
                let bundle = dir.path().join("issuer.pem");
                std::fs::write(&bundle, &server.cert_pem).unwrap();
                config += &format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                    server.addr,
                    bundle.display()
                );
            }
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        // Its log goes to a file, shown only if it fails to start: the error lines it
        // writes for the refused pulls below are expected.
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(&registry.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                registry.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gzip'd tar layer holding `files`.
fn layer(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    let mut gz = tar.into_inner().unwrap();
    gz.flush().unwrap();
    gz.finish().unwrap()
}

fn descriptor(media_type: &str, bytes: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes).to_string(),
        "size": bytes.len(),
    })
}

/// Pushes a two-platform image (linux/amd64 and linux/arm64, one layer each) to
/// `image` and returns the digests of the amd64 and arm64 manifests.
async fn push_image(image: &str, auth: &RegistryAuth) -> (Digest, Digest) {
    let reference: Reference = image.parse().unwrap();
    // reqwest is built without a TLS provider (see pull.rs); Puller installs ring, and
    // this client may come first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    client
        .auth(&reference, auth, RegistryOperation::Push)
        .await
        .unwrap();
    let mut entries = Vec::new();
    let mut digests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let layer = layer(&[
            ("etc/arch", arch),
            ("hello.txt", "hello from a CloudOS test image\n"),
        ]);
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Cmd": ["/bin/true"]},
        })
        .to_string()
        .into_bytes();
        for blob in [&layer, &config] {
            client
                .push_blob(&reference, blob.clone(), &Digest::of(blob).to_string())
                .await
                .unwrap();
        }
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.oci.image.config.v1+json", &config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", &layer)],
        })
        .to_string()
        .into_bytes();
        let digest = Digest::of(&manifest);
        client
            .push_manifest_raw(
                &reference.clone_with_digest(digest.to_string()),
                manifest.clone(),
                OCI_MANIFEST.parse().unwrap(),
            )
            .await
            .unwrap();
        let mut entry = descriptor(OCI_MANIFEST, &manifest);
        entry["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
        entries.push(entry);
        digests.push(digest);
    }
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries,
    })
    .to_string()
    .into_bytes();
    client
        .push_manifest_raw(&reference, index, OCI_INDEX.parse().unwrap())
        .await
        .unwrap();
    (digests.remove(0), digests.remove(0))
}

fn puller(registry: &Registry, credentials: Credentials, arch: &str) -> Puller {
    Puller::new(PullConfig {
        credentials,
        platform: Platform::linux(arch),
        plain_http_registries: vec![registry.addr.clone()],
    })
    .unwrap()
}

async fn pull_err(
    registry: &Registry,
    credentials: Credentials,
    arch: &str,
    store: &ImageStore,
    image: &str,
) -> PullError {
    match puller(registry, credentials, arch).pull(store, image).await {
        Ok(pulled) => panic!("pulling {image} should fail, got {pulled:?}"),
        Err(e) => e,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn pulls_the_platform_manifest_and_says_what_is_missing() {
    let Some(registry) = Registry::start(Auth::Open) else {
        return;
    };
    let image = format!("{}/cloudos/hello:1", registry.addr);
    let (amd64, arm64) = push_image(&image, &RegistryAuth::Anonymous).await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();

    let mut events = Vec::new();
    let pulled = puller(&registry, Credentials::Anonymous, "amd64")
        .pull_with_progress(&store, &image, |p| events.push(p))
        .await
        .unwrap();
    assert_eq!(pulled.manifest, amd64);
    let layer = &pulled.layers[0];
    assert!(events.contains(&Progress::Started {
        digest: layer.digest.clone(),
        total: layer.size
    }));
    assert!(events.contains(&Progress::Advanced {
        digest: layer.digest.clone(),
        done: layer.size
    }));
    assert_eq!(
        events.last(),
        Some(&Progress::Finished {
            digest: layer.digest.clone(),
            total: layer.size
        })
    );
    assert_eq!(store.get_ref(&image).unwrap(), amd64);
    assert_eq!(pulled.layers.len(), 1);
    for blob in [&pulled.config.digest, &pulled.layers[0].digest, &amd64] {
        assert!(store.has_blob(blob), "{blob} missing");
    }
    let root = store.unpack_layer(&pulled.layers[0].digest).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/arch")).unwrap(),
        "amd64"
    );

    let pulled = puller(&registry, Credentials::Anonymous, "arm64")
        .pull(&store, &image)
        .await
        .unwrap();
    assert_eq!(pulled.manifest, arm64);
    let arm_layer = pulled.layers[0].digest.clone();
    let root = store.unpack_layer(&arm_layer).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/arch")).unwrap(),
        "arm64"
    );

    // By digest: the manifest is checked against the digest asked for.
    let by_digest = format!("{}/cloudos/hello@{amd64}", registry.addr);
    let pulled = puller(&registry, Credentials::Anonymous, "amd64")
        .pull(&store, &by_digest)
        .await
        .unwrap();
    assert_eq!(pulled.manifest, amd64);

    let err = pull_err(&registry, Credentials::Anonymous, "riscv64", &store, &image).await;
    assert!(matches!(err, PullError::Platform { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("image {image} has no linux/riscv64 variant; it has: linux/amd64, linux/arm64")
    );

    // The ref now points at amd64 (pulled last by digest under another name, and by
    // tag before): removing the tag's ref and collecting leaves the arm64 layer unused.
    store.remove_ref(&image).unwrap();
    let report = store.gc().unwrap();
    assert!(report.layers_removed.contains(&arm_layer), "{report:?}");
    assert!(!store.layer_dir(&arm_layer).exists());

    for missing in [
        format!("{}/cloudos/hello:2", registry.addr),
        format!("{}/cloudos/nothing:1", registry.addr),
    ] {
        let err = pull_err(&registry, Credentials::Anonymous, "amd64", &store, &missing).await;
        assert!(
            matches!(err, PullError::NotFound { .. }),
            "{missing}: {err:?}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn tells_the_platforms_of_an_index_and_of_a_single_manifest() {
    let Some(registry) = Registry::start(Auth::Open) else {
        return;
    };
    let image = format!("{}/cloudos/multi:1", registry.addr);
    let (amd64, _) = push_image(&image, &RegistryAuth::Anonymous).await;
    let puller = puller(&registry, Credentials::Anonymous, "amd64");
    let names = |platforms: Vec<Platform>| -> Vec<String> {
        platforms
            .into_iter()
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect()
    };
    // The index lists both.
    assert_eq!(
        names(puller.platforms(&image).await.unwrap()),
        ["linux/amd64", "linux/arm64"]
    );
    // A single manifest (here the amd64 one by digest) says it in its config.
    let single = format!("{}/cloudos/multi@{amd64}", registry.addr);
    assert_eq!(
        names(puller.platforms(&single).await.unwrap()),
        ["linux/amd64"]
    );
    let err = puller
        .platforms(&format!("{}/cloudos/none:1", registry.addr))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound { .. }), "{err:?}");
}

/// Pushes with the right credentials, then pulls with the right ones (and `also_right`),
/// a wrong password, a made-up token and none: only the right ones may succeed, the
/// others say the credentials were refused.
async fn right_and_wrong_credentials(auth: Auth, also_right: Option<Credentials>) {
    let Some(registry) = Registry::start(auth) else {
        return;
    };
    let image = format!("{}/cloudos/private:1", registry.addr);
    let (amd64, _) = push_image(
        &image,
        &RegistryAuth::Basic(USER.to_string(), PASSWORD.to_string()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::open(dir.path()).unwrap();
    let basic = |password: &str| Credentials::Basic {
        username: USER.to_string(),
        password: password.to_string(),
    };

    for credentials in std::iter::once(basic(PASSWORD)).chain(also_right) {
        let pulled = puller(&registry, credentials.clone(), "amd64")
            .pull(&store, &image)
            .await
            .unwrap_or_else(|e| panic!("{credentials:?}: {e}"));
        assert_eq!(pulled.manifest, amd64);
    }

    let made_up = Credentials::Bearer("not-a-token".to_string());
    for credentials in [basic("wrong"), made_up, Credentials::Anonymous] {
        let err = pull_err(&registry, credentials.clone(), "amd64", &store, &image).await;
        assert!(
            matches!(err, PullError::Unauthorized { .. }),
            "{credentials:?}: {err:?}"
        );
        assert!(err.to_string().contains("refused the credentials"), "{err}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn basic_auth_right_and_wrong_password() {
    right_and_wrong_credentials(Auth::Htpasswd, None).await;
}

#[tokio::test(flavor = "current_thread")]
async fn bearer_token_from_a_token_server() {
    let server = TokenServer::start();
    // A token got beforehand (as a CI system hands one out) is sent as it is.
    let token = server.fetch_token("repository:cloudos/private:pull");
    let bearer = Credentials::Bearer(token);
    right_and_wrong_credentials(Auth::Token(server), Some(bearer)).await;
}
