//! Release keys: an ed25519 key pair per signer. The secret key stays with whoever builds
//! releases; nodes carry the public keys they trust, compiled into `nodeos` (its build
//! reads `image/release-keys/*.pub`), so every install path (ISO, disk, Pi card, the curl
//! line) trusts exactly what the binary it runs was built to trust.
//!
//! Text forms, one line each, so a key can be pasted, diffed and reviewed:
//! `cloudos-release-public-v1 <base64 of the 32-byte key>` and
//! `cloudos-release-secret-v1 <base64 of the PKCS#8 v2 document ring makes>`.
//! A key is named by its id: the first 8 bytes of the SHA-256 of the public key, in hex.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use sha2::{Digest, Sha256};

pub const PUBLIC_PREFIX: &str = "cloudos-release-public-v1";
pub const SECRET_PREFIX: &str = "cloudos-release-secret-v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a release key: expected a line `{expected} <base64>`")]
    Form { expected: &'static str },
    #[error("release key is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    #[error("a release public key is 32 bytes, this one is {0}")]
    Length(usize),
    #[error("release secret key rejected by ring (not an ed25519 PKCS#8 v2 document)")]
    Secret,
    #[error("could not generate a key: the system's random source failed")]
    Random,
}

/// The short name of a key: the first 8 bytes of the SHA-256 of its public half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl KeyId {
    pub fn parse(text: &str) -> Option<KeyId> {
        let bytes = hex::decode(text).ok()?;
        Some(KeyId(bytes.try_into().ok()?))
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; 32],
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id())
    }
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey { bytes }
    }

    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = parse_line(text, PUBLIC_PREFIX)?;
        let len = bytes.len();
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Length(len))?;
        Ok(PublicKey { bytes })
    }

    pub fn to_text(&self) -> String {
        format!("{PUBLIC_PREFIX} {}\n", BASE64.encode(self.bytes))
    }

    pub fn id(&self) -> KeyId {
        let digest = Sha256::digest(self.bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// A signer's key pair. Its text form is a secret: never log it.
pub struct SecretKey {
    pkcs8: Vec<u8>,
    pair: Ed25519KeyPair,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.public().id())
    }
}

impl SecretKey {
    pub fn generate() -> Result<SecretKey, KeyError> {
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        SecretKey::from_pkcs8(document.as_ref().to_vec())
    }

    pub fn parse(text: &str) -> Result<SecretKey, KeyError> {
        SecretKey::from_pkcs8(parse_line(text, SECRET_PREFIX)?)
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<SecretKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| KeyError::Secret)?;
        Ok(SecretKey { pkcs8, pair })
    }

    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX} {}\n", BASE64.encode(&self.pkcs8))
    }

    pub fn public(&self) -> PublicKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey { bytes }
    }

    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(message).as_ref());
        out
    }
}

/// The public keys a node trusts.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<PublicKey>,
}

impl Keyring {
    pub fn new(keys: Vec<PublicKey>) -> Keyring {
        Keyring { keys }
    }

    /// Every `cloudos-release-public-v1` line of `text` (blank lines and `#` comments
    /// skipped): the form `nodeos` compiles its trusted keys in.
    pub fn parse(text: &str) -> Result<Keyring, KeyError> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(PublicKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring { keys })
    }

    pub fn find(&self, id: KeyId) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(PublicKey::id).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// The keys this build trusts (compiled in by build.rs). An unreadable list trusts nothing:
/// every bundle is then refused, which is the safe failure.
pub fn trusted() -> Keyring {
    Keyring::parse(include_str!(concat!(env!("OUT_DIR"), "/trusted.pub"))).unwrap_or_default()
}

/// Whether this build trusts the public development key (image/release-keys/dev.pub): fine
/// for a lab, never for production, and shown as a warning where admins look.
pub fn trusts_development_key() -> bool {
    let dev = include_str!(concat!(env!("OUT_DIR"), "/dev.pub"));
    match PublicKey::parse(dev.trim()) {
        Ok(dev) => trusted().find(dev.id()).is_some(),
        Err(_) => false,
    }
}

fn parse_line(text: &str, prefix: &'static str) -> Result<Vec<u8>, KeyError> {
    let form = KeyError::Form { expected: prefix };
    let mut words = text.split_whitespace();
    if words.next() != Some(prefix) {
        return Err(form);
    }
    let encoded = words.next().ok_or(form)?;
    if words.next().is_some() {
        return Err(KeyError::Form { expected: prefix });
    }
    Ok(BASE64.decode(encoded)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let secret = SecretKey::generate().unwrap();
        let again = SecretKey::parse(&secret.to_text()).unwrap();
        assert_eq!(again.public(), secret.public());
        let public = PublicKey::parse(&secret.public().to_text()).unwrap();
        assert_eq!(public.id(), secret.public().id());
        assert_eq!(KeyId::parse(&public.id().to_string()), Some(public.id()));
    }

    #[test]
    fn a_secret_key_is_not_taken_for_a_public_one_nor_the_reverse() {
        let secret = SecretKey::generate().unwrap();
        assert!(matches!(
            PublicKey::parse(&secret.to_text()),
            Err(KeyError::Form { .. })
        ));
        assert!(matches!(
            SecretKey::parse(&secret.public().to_text()),
            Err(KeyError::Form { .. })
        ));
        assert!(matches!(
            PublicKey::parse("cloudos-release-public-v1 AAAA"),
            Err(KeyError::Length(3))
        ));
    }

    #[test]
    fn a_keyring_skips_comments_and_finds_keys_by_id() {
        let a = SecretKey::generate().unwrap().public();
        let b = SecretKey::generate().unwrap().public();
        let text = format!("# the release key\n{}\n\n{}", a.to_text(), b.to_text());
        let ring = Keyring::parse(&text).unwrap();
        assert_eq!(ring.find(b.id()), Some(&b));
        let stranger = SecretKey::generate().unwrap().public();
        assert_eq!(ring.find(stranger.id()), None);
    }

    #[test]
    fn this_build_trusts_the_development_key_and_says_so() {
        // Tests are built without CLOUDOS_RELEASE_KEYS: the development key is the one.
        assert!(!trusted().is_empty());
        assert!(trusts_development_key());
    }

    #[test]
    fn debug_output_names_the_key_and_never_prints_the_secret() {
        let secret = SecretKey::generate().unwrap();
        let shown = format!("{secret:?}");
        let encoded = secret.to_text();
        let body = encoded.split_whitespace().nth(1).unwrap();
        assert!(!shown.contains(body));
        assert!(shown.contains(&secret.public().id().to_string()));
    }
}
