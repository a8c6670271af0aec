//! The signature over a manifest: ed25519 by a release key, named by its key id.
//!
//! What is signed is a fixed context string followed by the manifest's exact bytes, so a
//! signature made for a manifest can never be passed off as one over anything else a key
//! might sign later (domain separation). The bundle stores it as `manifest.sig`:
//! `{"key": "<key id>", "ed25519": "<base64 of 64 bytes>"}`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use super::keys::{KeyId, Keyring, PublicKey, SecretKey};

const CONTEXT: &[u8] = b"cloudos release manifest v1\0";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the bundle has no readable signature: {0}")]
    Form(String),
    #[error(
        "the bundle is signed with key {key}, which this node does not trust (it trusts {trusted})"
    )]
    UnknownKey { key: KeyId, trusted: String },
    #[error("the bundle's signature does not match its manifest (key {key}): the bundle was changed after it was signed, or it is not what it claims")]
    Mismatch { key: KeyId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub key: KeyId,
    bytes: [u8; 64],
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    key: String,
    ed25519: String,
}

impl Signature {
    pub fn to_json(&self) -> Vec<u8> {
        let file = SignatureFile {
            key: self.key.to_string(),
            ed25519: BASE64.encode(self.bytes),
        };
        let mut out = serde_json::to_vec_pretty(&file).unwrap_or_default();
        out.push(b'\n');
        out
    }

    pub fn from_json(bytes: &[u8]) -> Result<Signature, SignError> {
        let file: SignatureFile =
            serde_json::from_slice(bytes).map_err(|e| SignError::Form(e.to_string()))?;
        let key = KeyId::parse(&file.key)
            .ok_or_else(|| SignError::Form(format!("key id {:?} is not 8 hex bytes", file.key)))?;
        let raw = BASE64
            .decode(&file.ed25519)
            .map_err(|e| SignError::Form(e.to_string()))?;
        let bytes: [u8; 64] = raw
            .try_into()
            .map_err(|_| SignError::Form("an ed25519 signature is 64 bytes".into()))?;
        Ok(Signature { key, bytes })
    }
}

fn message(manifest: &[u8]) -> Vec<u8> {
    [CONTEXT, manifest].concat()
}

pub fn sign(key: &SecretKey, manifest: &[u8]) -> Signature {
    Signature {
        key: key.public().id(),
        bytes: key.sign(&message(manifest)),
    }
}

/// The trusted key that made `signature` over `manifest`, or why there is none.
pub fn verify<'k>(
    keyring: &'k Keyring,
    manifest: &[u8],
    signature: &Signature,
) -> Result<&'k PublicKey, SignError> {
    let key = keyring
        .find(signature.key)
        .ok_or_else(|| SignError::UnknownKey {
            key: signature.key,
            trusted: trusted_list(keyring),
        })?;
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(&message(manifest), &signature.bytes)
        .map_err(|_| SignError::Mismatch { key: signature.key })?;
    Ok(key)
}

fn trusted_list(keyring: &Keyring) -> String {
    let ids: Vec<String> = keyring.ids().iter().map(ToString::to_string).collect();
    if ids.is_empty() {
        "no key at all".into()
    } else {
        ids.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring_of(key: &SecretKey) -> Keyring {
        Keyring::new(vec![key.public()])
    }

    #[test]
    fn a_signature_verifies_and_survives_its_file_form() {
        let key = SecretKey::generate().unwrap();
        let sig = sign(&key, b"{\"version\":\"1.0.0\"}");
        let again = Signature::from_json(&sig.to_json()).unwrap();
        assert_eq!(again, sig);
        let ring = ring_of(&key);
        assert_eq!(
            verify(&ring, b"{\"version\":\"1.0.0\"}", &again).unwrap(),
            &key.public()
        );
    }

    #[test]
    fn an_attacker_who_edits_the_manifest_is_caught() {
        let key = SecretKey::generate().unwrap();
        let sig = sign(&key, b"{\"version\":\"1.0.0\"}");
        let err = verify(&ring_of(&key), b"{\"version\":\"9.0.0\"}", &sig).unwrap_err();
        assert!(matches!(err, SignError::Mismatch { .. }), "{err}");
    }

    #[test]
    fn an_attacker_with_their_own_key_is_not_trusted_even_naming_the_trusted_id() {
        let trusted = SecretKey::generate().unwrap();
        let attacker = SecretKey::generate().unwrap();
        let ring = ring_of(&trusted);
        let own = sign(&attacker, b"m");
        assert!(matches!(
            verify(&ring, b"m", &own),
            Err(SignError::UnknownKey { .. })
        ));
        // The same signature relabelled with the trusted key's id.
        let mut relabelled = own.clone();
        relabelled.key = trusted.public().id();
        assert!(matches!(
            verify(&ring, b"m", &relabelled),
            Err(SignError::Mismatch { .. })
        ));
    }

    #[test]
    fn a_signature_over_the_bare_bytes_without_the_context_does_not_verify() {
        let key = SecretKey::generate().unwrap();
        let bare = Signature {
            key: key.public().id(),
            bytes: key.sign(b"m"),
        };
        assert!(verify(&ring_of(&key), b"m", &bare).is_err());
    }
}
