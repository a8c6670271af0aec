//! Pulls from a hostile registry: an HTTP server of the test's own on 127.0.0.1 that
//! serves a manifest and then blobs that do not keep its promises (more bytes than the
//! manifest declares, endless bodies, declarations far above the caps), and a slow one
//! that holds the last blob while a garbage collection runs. Real HTTP through
//! `Puller` (oci-client and reqwest), a real store on disk.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use cloudos_oci::manifest::OCI_MANIFEST;
use cloudos_oci::{Digest, ImageStore, Limits, PullConfig, PullError, Puller};
use common::{gzip, Tar};

/// How the registry answers for one blob.
#[derive(Clone)]
enum Serve {
    /// The bytes, honestly.
    Bytes(Vec<u8>),
    /// A body announced as 10 GiB and sent until the client hangs up.
    Endless,
    /// The bytes, once the test says so; `held` learns that the request came.
    Hold {
        bytes: Vec<u8>,
        held: mpsc::Sender<()>,
        release: Arc<Mutex<mpsc::Receiver<()>>>,
    },
}

struct Hostile {
    addr: String,
    /// Body bytes written for blobs, and the paths asked for.
    sent: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Hostile {
    /// Serves `manifest` for any tag of `app` and `blobs` by digest, until the test ends.
    fn start(manifest: Vec<u8>, blobs: BTreeMap<String, Serve>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let sent = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let state = Arc::new((manifest, blobs));
        let (s, r) = (Arc::clone(&sent), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (state, sent, requests) = (Arc::clone(&state), Arc::clone(&s), Arc::clone(&r));
                std::thread::spawn(move || {
                    let _ = answer(stream, &state.0, &state.1, &sent, &requests);
                });
            }
        });
        Self {
            addr,
            sent,
            requests,
        }
    }

    fn image(&self) -> String {
        format!("{}/attacker/app:1", self.addr)
    }

    fn puller(&self) -> Puller {
        Puller::new(PullConfig {
            plain_http_registries: vec![self.addr.clone()],
            ..PullConfig::default()
        })
        .unwrap()
    }

    fn blob_requests(&self) -> usize {
        let requests = self.requests.lock().unwrap();
        requests.iter().filter(|p| p.contains("/blobs/")).count()
    }
}

/// One request, one answer, then the connection closes.
fn answer(
    mut stream: TcpStream,
    manifest: &[u8],
    blobs: &BTreeMap<String, Serve>,
    sent: &AtomicU64,
    requests: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    requests.lock().unwrap().push(path.clone());
    let head = |stream: &mut TcpStream, status: &str, kind: &str, len: u64, extra: &str| {
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len}\r\n{extra}Connection: close\r\n\r\n"
        )
    };
    if path.contains("/manifests/") {
        let digest = format!("Docker-Content-Digest: {}\r\n", Digest::of(manifest));
        head(
            &mut stream,
            "200 OK",
            OCI_MANIFEST,
            manifest.len() as u64,
            &digest,
        )?;
        return stream.write_all(manifest);
    }
    let Some(serve) = path.rsplit('/').next().and_then(|d| blobs.get(d)) else {
        return head(&mut stream, "200 OK", "application/json", 2, "")
            .and_then(|()| stream.write_all(b"{}"));
    };
    let octets = "application/octet-stream";
    match serve {
        Serve::Bytes(bytes) => {
            head(&mut stream, "200 OK", octets, bytes.len() as u64, "")?;
            stream.write_all(bytes)?;
            sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
        }
        Serve::Endless => {
            head(&mut stream, "200 OK", octets, 10 << 30, "")?;
            let chunk = vec![0u8; 64 << 10];
            loop {
                stream.write_all(&chunk)?;
                sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
        }
        Serve::Hold {
            bytes,
            held,
            release,
        } => {
            let _ = held.send(());
            let _ = release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(60));
            head(&mut stream, "200 OK", octets, bytes.len() as u64, "")?;
            stream.write_all(bytes)?;
        }
    }
    Ok(())
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> serde_json::Value {
    serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// A manifest naming `config` and `layers` as (digest, declared size).
fn manifest(config: (&Digest, u64), layers: &[(&Digest, u64)]) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(CONFIG, config.0, config.1),
        "layers": layers.iter().map(|(d, s)| descriptor(LAYER, d, *s)).collect::<Vec<_>>(),
    })
    .to_string()
    .into_bytes()
}

fn config_blob() -> Vec<u8> {
    br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.to_vec()
}

fn store(dir: &tempfile::TempDir) -> ImageStore {
    ImageStore::open(dir.path().join("store")).unwrap()
}

fn tmp_is_empty(store: &ImageStore) -> bool {
    std::fs::read_dir(store.root().join("tmp")).unwrap().count() == 0
}

/// The registry promises a 1 KiB layer and sends without end: the pull stops at the
/// first chunk past the promise, long before the 10 GiB it announced.
#[tokio::test(flavor = "current_thread")]
async fn hostile_registry_sending_more_than_declared_is_cut_off() {
    let config = config_blob();
    let claimed = Digest::of(b"the layer the manifest promises");
    let registry = Hostile::start(
        manifest(
            (&Digest::of(&config), config.len() as u64),
            &[(&claimed, 1024)],
        ),
        BTreeMap::from([
            (
                Digest::of(&config).to_string(),
                Serve::Bytes(config.clone()),
            ),
            (claimed.to_string(), Serve::Endless),
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let started = Instant::now();
    let err = registry
        .puller()
        .pull(&store, &registry.image())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::BlobSizeMismatch { digest, declared: 1024, received, .. }
            if *digest == claimed && *received > 1024),
        "{err}"
    );
    assert!(err.to_string().contains(&registry.image()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // What the socket buffers took before the hang-up, not the 10 GiB announced.
    let sent = registry.sent.load(Ordering::SeqCst);
    assert!(sent < 64 << 20, "{sent} bytes were sent");
    assert!(!store.has_blob(&claimed));
    assert!(store.refs().unwrap().is_empty());
    assert!(tmp_is_empty(&store));
}

/// The blob matches its digest but is bigger than the manifest says: the digest alone
/// would accept it, the size check does not.
#[tokio::test(flavor = "current_thread")]
async fn hostile_registry_blob_bigger_than_declared_is_refused_even_with_its_digest() {
    let config = config_blob();
    let layer: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 7919 % 251) as u8).collect();
    let digest = Digest::of(&layer);
    let registry = Hostile::start(
        manifest(
            (&Digest::of(&config), config.len() as u64),
            &[(&digest, 1000)],
        ),
        BTreeMap::from([
            (
                Digest::of(&config).to_string(),
                Serve::Bytes(config.clone()),
            ),
            (digest.to_string(), Serve::Bytes(layer)),
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let err = registry
        .puller()
        .pull(&store, &registry.image())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::BlobSizeMismatch { declared: 1000, .. }),
        "{err}"
    );
    assert!(!store.has_blob(&digest));
    assert!(tmp_is_empty(&store));
}

/// Declarations above the caps are refused before any blob is asked for.
#[tokio::test(flavor = "current_thread")]
async fn hostile_manifest_declaring_too_much_is_refused_before_download() {
    let config = config_blob();
    let config_digest = Digest::of(&config);
    let blob = Digest::of(b"never sent");
    let blobs = || {
        BTreeMap::from([
            (config_digest.to_string(), Serve::Bytes(config.clone())),
            (blob.to_string(), Serve::Endless),
        ])
    };
    let cfg = (&config_digest, config.len() as u64);
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);

    // One layer of 5 GiB: above the default 4 GiB per blob.
    let registry = Hostile::start(manifest(cfg, &[(&blob, 5 << 30)]), blobs());
    let err = registry
        .puller()
        .pull(&store, &registry.image())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::BlobTooLarge { size, .. } if *size == 5 << 30),
        "{err}"
    );
    assert_eq!(registry.blob_requests(), 0);

    // Five layers of 3.9 GiB: each under the blob cap, together over the image cap.
    let layers = vec![(&blob, 3_900 << 20); 5];
    let registry = Hostile::start(manifest(cfg, &layers), blobs());
    let err = registry
        .puller()
        .pull(&store, &registry.image())
        .await
        .unwrap_err();
    assert!(matches!(&err, PullError::ImageTooLarge { .. }), "{err}");
    assert_eq!(registry.blob_requests(), 0);

    // A thousand layers.
    let layers = vec![(&blob, 10); 1000];
    let registry = Hostile::start(manifest(cfg, &layers), blobs());
    let err = registry
        .puller()
        .pull(&store, &registry.image())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PullError::TooManyLayers {
                count: 1000,
                limit: 128,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(registry.blob_requests(), 0);

    // And the caps are the store's: a tighter one applies.
    let small = store.clone().with_limits(Limits {
        max_blob_bytes: 100,
        ..Limits::default()
    });
    let registry = Hostile::start(manifest(cfg, &[(&blob, 101)]), blobs());
    let err = registry
        .puller()
        .pull(&small, &registry.image())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PullError::BlobTooLarge { limit: 100, .. }),
        "{err}"
    );
    assert!(store.refs().unwrap().is_empty());
}

/// Race (a) of issue 16: a garbage collection runs while a pull waits for its last
/// blob. The pull's config and first layer have no ref yet; the lease keeps them, so
/// the image is complete and unpacks once the pull ends. An orphan is still collected.
#[tokio::test(flavor = "current_thread")]
async fn gc_during_a_slow_pull_keeps_the_pulls_blobs() {
    let config = config_blob();
    let first = gzip(&Tar::new().file("bin/first", b"one", 0o755).finish());
    let last = gzip(&Tar::new().file("bin/last", b"two", 0o755).finish());
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let digests = [Digest::of(&config), Digest::of(&first), Digest::of(&last)];
    let registry = Hostile::start(
        manifest(
            (&digests[0], config.len() as u64),
            &[
                (&digests[1], first.len() as u64),
                (&digests[2], last.len() as u64),
            ],
        ),
        BTreeMap::from([
            (digests[0].to_string(), Serve::Bytes(config.clone())),
            (digests[1].to_string(), Serve::Bytes(first.clone())),
            (
                digests[2].to_string(),
                Serve::Hold {
                    bytes: last.clone(),
                    held: held_tx,
                    release: Arc::new(Mutex::new(release_rx)),
                },
            ),
        ]),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let orphan = store.put_bytes(b"no ref, no lease").unwrap();
    let pull = tokio::spawn({
        let (store, puller, image) = (store.clone(), registry.puller(), registry.image());
        async move { puller.pull(&store, &image).await }
    });
    tokio::task::spawn_blocking(move || held_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("the pull asked for its last blob");
    assert!(store.has_blob(&digests[0]) && store.has_blob(&digests[1]));
    assert!(
        store.refs().unwrap().is_empty(),
        "no ref yet: only the lease"
    );

    let report = store.gc().unwrap();
    assert_eq!(report.removed, vec![orphan], "the gc ran for real");

    release_tx.send(()).unwrap();
    let pulled = pull.await.unwrap().unwrap();
    for digest in &digests {
        assert!(store.has_blob(digest), "{digest} was collected mid-pull");
    }
    assert_eq!(store.get_ref(&registry.image()).unwrap(), pulled.manifest);
    for (layer, file) in [(&digests[1], "bin/first"), (&digests[2], "bin/last")] {
        assert!(store.unpack_layer(layer).unwrap().join(file).is_file());
    }
    // With the pull over, the ref holds it: another collection keeps everything.
    assert!(store.gc().unwrap().removed.is_empty());
}
