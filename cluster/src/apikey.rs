//! API keys: bearer credentials for automation (CI jobs, scripts), each with a user role
//! and an end.
//!
//! # Format
//!
//! ```text
//! cloudoskey_<id>_<secret>
//! cloudoskey_q7m3kd2a_4m2rz7vbq5xwd3c6hj2ny7kpt4ufsa3e
//! ```
//!
//! The id (8 base32 characters) names the record and is shown in lists and the audit log;
//! the secret is 32 base32 characters, 160 random bits. As for join tokens the master
//! keeps only `sha256(salt || secret)`: the secret is random, so a slow password hash
//! would protect nothing a fast one does not, and every request checks a key.
//!
//! A key is sent as `Authorization: Bearer <key>` over the API's TLS; a request that shows
//! a client certificate is judged by the certificate alone.

use std::fmt;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

use crate::api::ApiKeyInfo;
use crate::identity::Role;
use crate::token::{self, TokenError};
use crate::util::{self, RandomError};

/// The first part of every key.
pub const KEY_PREFIX: &str = "cloudoskey";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;
/// The longest an API key may live: keys must end, and be made again by a person.
pub const MAX_KEY_TTL: Duration = Duration::days(365);

/// What can be wrong with a key or a request for one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiKeyError {
    #[error("not a CloudOS API key: it should look like cloudoskey_<id>_<secret>")]
    Malformed,
    #[error("API key {id} is not known (it was never made, or it was deleted)")]
    Unknown { id: String },
    #[error("API key {id}: wrong secret")]
    WrongSecret { id: String },
    #[error("API key {id} was revoked")]
    Revoked { id: String },
    #[error("API key {id} expired at {expired_at}")]
    Expired {
        id: String,
        expired_at: OffsetDateTime,
    },
    #[error("an API key's role is admin, operator or viewer, not {role}")]
    NotAUserRole { role: Role },
    #[error("API key ttl: {0}")]
    Ttl(#[from] TokenError),
    #[error("an API key lives at most 365 days; give a shorter --ttl")]
    TtlTooLong,
    #[error(
        "an API key needs a name (what it is for), of letters, digits, `-` and `_`, at most 64"
    )]
    BadName,
    #[error(transparent)]
    Random(#[from] RandomError),
}

/// A key as its holder has it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl ApiKey {
    pub fn generate() -> Result<Self, RandomError> {
        Ok(ApiKey {
            id: token::random_base32::<ID_LEN>()?,
            secret: token::random_base32::<SECRET_LEN>()?,
        })
    }

    /// Reads `cloudoskey_<id>_<secret>` (surrounding whitespace and case ignored).
    pub fn parse(text: &str) -> Result<Self, ApiKeyError> {
        let text = text.trim().to_ascii_lowercase();
        let mut parts = text.split('_');
        let (Some(KEY_PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(ApiKeyError::Malformed);
        };
        let base32 = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'))
        };
        if !base32(id, ID_LEN) || !base32(secret, SECRET_LEN) {
            return Err(ApiKeyError::Malformed);
        }
        Ok(ApiKey {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The whole key, to show once.
    pub fn reveal(&self) -> String {
        format!("{KEY_PREFIX}_{}_{}", self.id, self.secret)
    }
}

/// What the master keeps of a key: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// Hex of the random per-record salt.
    pub salt: String,
    /// Hex of `sha256(salt || secret)`.
    pub secret_hash: String,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    pub revoked: bool,
}

impl ApiKeyRecord {
    /// The record of a new key `name` of `role` made by `created_by`, ending after `ttl`
    /// (such as `30d`).
    pub fn new(
        key: &ApiKey,
        name: &str,
        role: Role,
        created_by: &str,
        ttl: &str,
        now: OffsetDateTime,
    ) -> Result<Self, ApiKeyError> {
        if !role.is_user() {
            return Err(ApiKeyError::NotAUserRole { role });
        }
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ApiKeyError::BadName);
        }
        let ttl = token::parse_ttl(ttl)?;
        if ttl > MAX_KEY_TTL {
            return Err(ApiKeyError::TtlTooLong);
        }
        let salt = util::random_bytes::<16>()?;
        Ok(ApiKeyRecord {
            id: key.id.clone(),
            name: name.to_owned(),
            role,
            salt: util::to_hex(&salt),
            secret_hash: util::to_hex(&hash(&salt, &key.secret)),
            created_by: created_by.to_owned(),
            created_at: now,
            expires_at: now + ttl,
            revoked: false,
        })
    }

    /// Checks `key` against this record at `now`: the secret first, in constant time, so
    /// only a holder of the secret learns whether the key is revoked or expired.
    pub fn verify(&self, key: &ApiKey, now: OffsetDateTime) -> Result<(), ApiKeyError> {
        let id = || self.id.clone();
        let salt = util::from_hex(&self.salt).unwrap_or_default();
        let want = util::from_hex(&self.secret_hash).unwrap_or_default();
        let got = hash(&salt, &key.secret);
        if key.id != self.id || !bool::from(got.as_slice().ct_eq(want.as_slice())) {
            return Err(ApiKeyError::WrongSecret { id: id() });
        }
        if self.revoked {
            return Err(ApiKeyError::Revoked { id: id() });
        }
        if now >= self.expires_at {
            return Err(ApiKeyError::Expired {
                id: id(),
                expired_at: self.expires_at,
            });
        }
        Ok(())
    }

    /// The name the key acts under, in the audit log and as the API's caller.
    pub fn caller_name(&self) -> String {
        format!("key:{}", self.name)
    }
}

impl From<&ApiKeyRecord> for ApiKeyInfo {
    fn from(r: &ApiKeyRecord) -> Self {
        ApiKeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked: r.revoked,
        }
    }
}

fn hash(salt: &[u8], secret: &str) -> [u8; 32] {
    util::sha256(&[salt, secret.as_bytes()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);

    fn made(role: Role) -> (ApiKey, ApiKeyRecord) {
        let key = ApiKey::generate().expect("random");
        let record = ApiKeyRecord::new(&key, "ci", role, "alice", "30d", NOW).expect("record");
        (key, record)
    }

    #[test]
    fn a_key_reads_back_and_its_record_holds_no_secret() {
        let (key, record) = made(Role::Operator);
        let text = key.reveal();
        assert!(text.starts_with("cloudoskey_"), "{text}");
        assert_eq!(
            ApiKey::parse(&format!("  {}\n", text.to_uppercase())),
            Ok(key.clone())
        );
        let stored = serde_json::to_string(&record).expect("json");
        assert!(
            !stored.contains(&key.secret),
            "the secret must not be stored: {stored}"
        );
        assert!(!format!("{key:?}").contains(&key.secret));
        assert_eq!(record.verify(&key, NOW), Ok(()));
    }

    #[test]
    fn a_wrong_revoked_or_expired_key_is_refused() {
        let (key, mut record) = made(Role::Viewer);
        let (other, _) = made(Role::Viewer);
        let forged = ApiKey {
            id: key.id.clone(),
            secret: other.secret.clone(),
        };
        assert!(matches!(
            record.verify(&forged, NOW),
            Err(ApiKeyError::WrongSecret { .. })
        ));
        let later = NOW + Duration::days(30);
        assert!(matches!(
            record.verify(&key, later),
            Err(ApiKeyError::Expired { .. })
        ));
        record.revoked = true;
        assert!(matches!(
            record.verify(&key, NOW),
            Err(ApiKeyError::Revoked { .. })
        ));
    }

    #[test]
    fn keys_are_for_people_roles_end_within_a_year_and_have_a_name() {
        let key = ApiKey::generate().expect("random");
        let new = |role, name, ttl| ApiKeyRecord::new(&key, name, role, "alice", ttl, NOW);
        assert!(matches!(
            new(Role::Compute, "ci", "1d"),
            Err(ApiKeyError::NotAUserRole { .. })
        ));
        assert!(matches!(
            new(Role::Master, "ci", "1d"),
            Err(ApiKeyError::NotAUserRole { .. })
        ));
        assert!(matches!(
            new(Role::Admin, "ci", "400d"),
            Err(ApiKeyError::TtlTooLong)
        ));
        assert!(matches!(
            new(Role::Admin, "ci", "never"),
            Err(ApiKeyError::Ttl(_))
        ));
        assert!(matches!(
            new(Role::Admin, "", "1d"),
            Err(ApiKeyError::BadName)
        ));
        assert!(matches!(
            new(Role::Admin, "a b", "1d"),
            Err(ApiKeyError::BadName)
        ));
        for bad in [
            "",
            "cloudoskey_x_y",
            "cloudos1_abcdefgh_4m2rz7vbq5xwd3c6hj2ny7kpt4ufsa3e",
        ] {
            assert_eq!(ApiKey::parse(bad), Err(ApiKeyError::Malformed), "{bad}");
        }
    }
}
