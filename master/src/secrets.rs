//! Secrets at rest (decision 65): each value sealed with ChaCha20-Poly1305 under a key
//! derived from the cluster CA's private key (HKDF-SHA256), its name the associated data,
//! so a sealed value cannot be moved to another name, and a backup, which carries the CA
//! key, restores them. The store, its snapshots and the backups hold ciphertext only;
//! plain values exist in the master's memory while an assignment is being sent, and on
//! the nodes' memory file systems.

use cloudos_cluster::secret::{self, SecretRecord, SecretValue};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

/// Names the key's purpose: another use of the CA key gets another key.
const INFO: &[u8] = b"cloudos secrets v1";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot seal secret {0}: the system's random source failed")]
    Random(String),
    #[error("secret {0} does not open with this cluster's key (damaged, or from another cluster)")]
    Open(String),
}

/// Seals and opens secrets with the cluster's key.
pub struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    /// The sealer of the cluster whose CA key (PEM) is `ca_key_pem`.
    pub fn new(ca_key_pem: &str) -> Self {
        let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"cloudos");
        let prk = salt.extract(ca_key_pem.as_bytes());
        let info = [INFO];
        // Expanding to the AEAD's own key length cannot fail (it is far below 255 × 32).
        let okm = prk
            .expand(&info, &CHACHA20_POLY1305)
            .unwrap_or_else(|_| unreachable!("HKDF output of 32 bytes"));
        Sealer {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            random: SystemRandom::new(),
        }
    }

    /// Secret `name` with `value`, sealed, as the store keeps it.
    pub fn seal(
        &self,
        name: &str,
        value: &SecretValue,
        now: OffsetDateTime,
    ) -> Result<SecretRecord, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random(name.to_owned()))?;
        let mut data = value.0.clone();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(name.as_bytes()),
                &mut data,
            )
            .map_err(|_| SealError::Random(name.to_owned()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&data);
        Ok(SecretRecord {
            name: name.to_owned(),
            created_at: now,
            bytes: value.0.len() as u64,
            sealed: secret::encode(&sealed),
        })
    }

    /// The value of a sealed record.
    pub fn open(&self, record: &SecretRecord) -> Result<SecretValue, SealError> {
        let fail = || SealError::Open(record.name.clone());
        let sealed = secret::decode(&record.sealed).ok_or_else(fail)?;
        if sealed.len() < NONCE_LEN {
            return Err(fail());
        }
        let (nonce, data) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(record.name.as_bytes()), &mut data)
            .map_err(|_| fail())?;
        Ok(SecretValue(plain.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);

    #[test]
    fn a_sealed_secret_opens_only_with_its_clusters_key_under_its_name() {
        let ours = Sealer::new("-----BEGIN PRIVATE KEY-----\nours\n-----END PRIVATE KEY-----\n");
        let theirs =
            Sealer::new("-----BEGIN PRIVATE KEY-----\ntheirs\n-----END PRIVATE KEY-----\n");
        let value = SecretValue(b"hunter2".to_vec());
        let record = ours.seal("db-password", &value, NOW).unwrap();
        assert_eq!(record.bytes, 7);
        assert!(
            !record.sealed.contains("aHVudGVy"),
            "the value shows: {record:?}"
        );
        assert_eq!(ours.open(&record).unwrap(), value);
        // Each seal has its own nonce.
        let again = ours.seal("db-password", &value, NOW).unwrap();
        assert_ne!(again.sealed, record.sealed);
        assert!(theirs.open(&record).is_err());
        let moved = SecretRecord {
            name: "other".into(),
            ..record.clone()
        };
        assert!(ours.open(&moved).is_err());
        let mut bytes = secret::decode(&record.sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let flipped = SecretRecord {
            sealed: secret::encode(&bytes),
            ..record
        };
        let err = ours.open(&flipped).unwrap_err().to_string();
        assert!(err.contains("does not open"), "{err}");
    }
}
