//! The node's WireGuard key pair, and the file it is kept in: the private key in base64,
//! one line, as `wg genkey` writes it (so `wg pubkey < FILE` shows the node's public key
//! when debugging), readable by its owner only. Keys travel as base64, as WireGuard's tools
//! show them.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::prelude::{Engine as _, BASE64_STANDARD};
use x25519_dalek::{PublicKey, StaticSecret};

use crate::NetError;

/// WireGuard's keys are Curve25519 keys: 32 bytes, 44 characters of base64.
pub(crate) const KEY_LEN: usize = 32;

/// A node's WireGuard key pair. Debug shows the public key only.
pub struct MeshKey {
    // Zeroed when dropped (x25519-dalek's zeroize feature, on by default).
    secret: StaticSecret,
    public: PublicKey,
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl MeshKey {
    /// A new key pair from the kernel's random numbers. (Panics only where the kernel has
    /// none to give, which Linux's getrandom never refuses once booted.) WireGuard clamps
    /// the private key when it takes it; the public key is the same either way.
    pub fn generate() -> MeshKey {
        Self::from_secret(StaticSecret::random())
    }

    fn from_secret(secret: StaticSecret) -> MeshKey {
        let public = PublicKey::from(&secret);
        MeshKey { secret, public }
    }

    /// Reads the key at `path` (the private key in base64, one line, as `wg genkey` writes
    /// it), or makes one and writes it there: created 0600 beside `path` and renamed into
    /// place, so the file is never readable by others nor half written. An existing file
    /// others can read is made 0600. A file that holds no key is an error, not replaced:
    /// a new key is a new identity the other nodes must learn.
    pub fn load_or_create(path: &Path) -> Result<MeshKey, NetError> {
        match std::fs::read(path) {
            Ok(text) => {
                keep_private(path)?;
                return Self::parse(&text).map_err(|why| NetError::BadKey {
                    path: path.to_owned(),
                    why,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(NetError::Io {
                    action: "reading the mesh key",
                    path: path.to_owned(),
                    source,
                })
            }
        }
        let key = MeshKey::generate();
        let mut text = encode(&key.private_bytes());
        text.push('\n');
        write_private(path, text.as_bytes()).map_err(|source| NetError::Io {
            action: "writing the mesh key",
            path: path.to_owned(),
            source,
        })?;
        Ok(key)
    }

    /// The private key in a key file's text: base64 of 32 bytes, blanks around it allowed.
    fn parse(text: &[u8]) -> Result<MeshKey, String> {
        let text = std::str::from_utf8(text).map_err(|_| "not text".to_owned())?;
        decode(text.trim()).map(|bytes| Self::from_secret(StaticSecret::from(bytes)))
    }

    /// Base64, as WireGuard tools show it.
    pub fn public(&self) -> String {
        encode(self.public.as_bytes())
    }

    pub(crate) fn public_bytes(&self) -> [u8; KEY_LEN] {
        self.public.to_bytes()
    }

    /// The private key, for the message that gives it to the kernel.
    pub(crate) fn private_bytes(&self) -> [u8; KEY_LEN] {
        self.secret.to_bytes()
    }
}

/// A key in base64 (standard alphabet, padded: 44 characters).
pub(crate) fn encode(key: &[u8]) -> String {
    BASE64_STANDARD.encode(key)
}

/// A key from its base64, or why it is none.
pub(crate) fn decode(text: &str) -> Result<[u8; KEY_LEN], String> {
    let bytes = BASE64_STANDARD
        .decode(text)
        .map_err(|e| format!("not base64: {e}"))?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("{len} bytes, not {KEY_LEN}"))
}

/// Takes group and other bits off an existing key file (one left readable by hand).
fn keep_private(path: &Path) -> Result<(), NetError> {
    let io = |source| NetError::Io {
        action: "making the mesh key private (0600)",
        path: path.to_owned(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        log::warn!(
            "the mesh key {} was readable by others (mode {:o}); made 0600",
            path.display(),
            mode & 0o777
        );
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Writes `bytes` to a 0600 file beside `path`, flushed, and renames it over `path`.
/// (cluster/src/files.rs does the same for the cluster's keys; this crate stays clear of
/// that crate's TLS stack.)
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // A leftover of an earlier try may have other permissions; create_new makes sure the
    // file written is one made 0600 now.
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut file = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash once the directory is flushed.
        if let Some(dir) = dir {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7748, section 6.1: Alice's private and public keys.
    const ALICE_PRIVATE: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    const ALICE_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_public_key_is_curve25519s_in_base64() {
        let text = format!("  {}\n", encode(&hex(ALICE_PRIVATE)));
        let key = MeshKey::parse(text.as_bytes()).unwrap();
        assert_eq!(key.public(), encode(&hex(ALICE_PUBLIC)));
        assert_eq!(key.public().len(), 44);
        assert_eq!(decode(&key.public()).unwrap().to_vec(), hex(ALICE_PUBLIC));
        assert_eq!(key.private_bytes().to_vec(), hex(ALICE_PRIVATE));
    }

    #[test]
    fn debug_shows_no_private_key() {
        let key = MeshKey::generate();
        let shown = format!("{key:?}");
        assert!(shown.contains(&key.public()), "{shown}");
        assert!(!shown.contains(&encode(&key.private_bytes())), "{shown}");
        assert_ne!(
            MeshKey::generate().public(),
            key.public(),
            "keys are random"
        );
    }

    #[test]
    fn keys_that_are_none_say_why() {
        assert!(decode("not base64!").unwrap_err().contains("not base64"));
        assert_eq!(decode(&encode(&[1; 16])).unwrap_err(), "16 bytes, not 32");
        assert_eq!(MeshKey::parse(&[0xff, 0xfe]).unwrap_err(), "not text");
    }

    #[test]
    fn a_key_is_made_once_kept_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/mesh.key");
        let made = MeshKey::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n') && text.trim().len() == 44, "{text:?}");
        let read = MeshKey::load_or_create(&path).unwrap();
        assert_eq!(read.public(), made.public());
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file left"
        );

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        MeshKey::load_or_create(&path).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "tightened");

        std::fs::write(&path, "garbage\n").unwrap();
        let err = MeshKey::load_or_create(&path).unwrap_err();
        assert!(matches!(err, NetError::BadKey { .. }), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "garbage\n",
            "a bad key is left for a person to look at"
        );
        assert!(err.to_string().contains("remove it"), "{err}");
    }
}
