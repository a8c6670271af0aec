//! Join tokens: the string an admin copies to a new node, the hashed record the master
//! keeps, and the checks made when a node presents one.
//!
//! # Format
//!
//! ```text
//! cloudos1_<id>_<secret>_<ca pin>
//! cloudos1_k3qx7a_4m2rz7vbq5xwd3c6hj2ny7kpt4ufsa3e_9f86d08188…(64 hex)
//! ```
//!
//! - `cloudos1` names the format (version 1).
//! - `id`: 6 characters of lowercase base32 (`a-z`, `2-7`); not secret, it names the record.
//! - `secret`: 32 characters of the same alphabet, 160 random bits.
//! - `ca pin`: the 64 hex digits of the cluster CA's pin (see [`crate::pki::CaPin`]).
//!
//! Parts are joined with `_` so the whole token is one "word": a double click selects all of
//! it in terminals, browsers and editors, and no shell quoting is needed. The base32 alphabet
//! has no `0`/`o` or `1`/`l` pairs, so a token read aloud or retyped survives. Parsing ignores
//! surrounding whitespace and letter case.
//!
//! # Storage
//!
//! The master stores a [`TokenRecord`] with `sha256(salt || secret)`, never the secret. A
//! fast hash is enough here: the secret is 160 bits from the system's random generator, so
//! there is nothing to brute-force that a slow password hash would protect. The salt keeps
//! equal secrets (never expected) from showing as equal hashes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

use crate::identity::Role;
use crate::pki::{CaPin, PinError};
use crate::util::{self, fmt_time, RandomError};

/// The first part of every token of this format.
pub const TOKEN_PREFIX: &str = "cloudos1";
/// Characters of a token id.
pub const ID_LEN: usize = 6;
/// Characters of a token secret (5 bits each: 160 bits).
pub const SECRET_LEN: usize = 32;

/// The longest a token may live. A join token is a standing invitation: a year covers a
/// long-lived autoscaling group; anyone who really wants no end says so with `never`.
pub const MAX_TTL: Duration = Duration::days(365);
/// The longest an admin or master token may live. One makes a cluster admin, the other a
/// master (which holds the CA's key), so they must expire, and soon: each is meant to be
/// used once, by a person, right after it is made.
pub const MAX_ADMIN_TTL: Duration = Duration::days(7);

const SEPARATOR: char = '_';
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Everything that can be wrong with a token, its record, or a TTL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is empty; paste the whole token printed by `cloudos token create`")]
    Empty,
    #[error("token must start with `{TOKEN_PREFIX}_` but starts with `{found}`; paste the whole token printed by `cloudos token create`")]
    WrongPrefix { found: String },
    #[error("token has {found} parts separated by `_`, expected 4 ({TOKEN_PREFIX}_<id>_<secret>_<ca pin>); it may have been cut when copying")]
    WrongPartCount { found: usize },
    #[error("token id `{found}` has {len} characters, expected {ID_LEN}")]
    IdLength { found: String, len: usize },
    #[error("token secret has {len} characters, expected {SECRET_LEN}; it may have been cut when copying")]
    SecretLength { len: usize },
    #[error("token {part} contains `{ch}`; only a-z and 2-7 are used")]
    BadCharacter { part: &'static str, ch: char },
    #[error("token CA pin is wrong: {0}")]
    Pin(#[from] PinError),
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("no token with id {id}; list tokens with `cloudos token list` or create one with `cloudos token create`")]
    UnknownId { id: String },
    #[error("wrong secret for token {id}; paste the whole token again")]
    WrongSecret { id: String },
    #[error("token {id} expired at {at}; create a new one with `cloudos token create`", at = fmt_time(*expired_at))]
    Expired {
        id: String,
        expired_at: OffsetDateTime,
    },
    #[error("token {id} has no uses left; create a new one with `cloudos token create`")]
    UsedUp { id: String },
    #[error("token {id} was revoked; create a new one with `cloudos token create`")]
    Revoked { id: String },
    #[error("token {id} is for role {actual}, not {wanted}; create a {wanted} token with `cloudos token create --role {wanted}`")]
    RoleMismatch {
        id: String,
        actual: Role,
        wanted: Role,
    },
    #[error("ttl `{input}` {why}; write a number and a unit, like 90s, 30m, 24h or 7d")]
    Ttl { input: String, why: String },
    #[error("a {role} token may live at most {max}, not {given}; give a shorter ttl", max = fmt_ttl(*max), given = fmt_ttl(*given))]
    TtlTooLong {
        role: Role,
        given: Duration,
        max: Duration,
    },
    #[error(
        "{role} tokens must expire (within {}); give a ttl such as 24h",
        fmt_ttl(MAX_ADMIN_TTL)
    )]
    MustExpire { role: Role },
}

/// A TTL as its largest whole unit when exact (`7d`), else in seconds.
fn fmt_ttl(d: Duration) -> String {
    let secs = d.whole_seconds();
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

/// Checks a token's lifetime for its role: bounded by [`MAX_TTL`] (and [`MAX_ADMIN_TTL`]
/// for admin and master tokens, which must expire). A TTL too long for the calendar is
/// refused here too, never read as "no expiry".
pub fn check_ttl(role: Role, ttl: Option<Duration>) -> Result<(), TokenError> {
    let short_lived = role.is_user() || role == Role::Master;
    let max = if short_lived { MAX_ADMIN_TTL } else { MAX_TTL };
    match ttl {
        None if short_lived => Err(TokenError::MustExpire { role }),
        None => Ok(()),
        Some(given) if given > max => Err(TokenError::TtlTooLong { role, given, max }),
        Some(_) => Ok(()),
    }
}

/// A token id: 6 lowercase base32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TokenId(String);

impl TokenId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TokenId {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        check_alphabet("id", &s)?;
        if s.len() != ID_LEN {
            return Err(TokenError::IdLength {
                len: s.chars().count(),
                found: crate::util::excerpt(&s, 2 * ID_LEN),
            });
        }
        Ok(TokenId(s))
    }
}

/// A full join token: id, secret and the CA pin. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    id: TokenId,
    secret: String,
    pin: CaPin,
}

impl Token {
    /// A new random token for the cluster whose CA has `pin`.
    pub fn generate(pin: CaPin) -> Result<Self, TokenError> {
        Ok(Token {
            id: TokenId(random_base32::<ID_LEN>()?),
            secret: random_base32::<SECRET_LEN>()?,
            pin,
        })
    }

    pub fn id(&self) -> &TokenId {
        &self.id
    }

    /// The secret; send it only over a connection whose CA matched [`Token::pin`].
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn pin(&self) -> CaPin {
        self.pin
    }
}

pub(crate) fn random_base32<const N: usize>() -> Result<String, RandomError> {
    // 32 divides 256, so masking a random byte to 5 bits is unbiased.
    Ok(util::random_bytes::<N>()?
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b & 31)]))
        .collect())
}

fn check_alphabet(part: &'static str, s: &str) -> Result<(), TokenError> {
    match s
        .chars()
        .find(|c| !(c.is_ascii() && ALPHABET.contains(&(*c as u8))))
    {
        Some(ch) => Err(TokenError::BadCharacter { part, ch }),
        None => Ok(()),
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}{SEPARATOR}{}{SEPARATOR}{}{SEPARATOR}{}",
            self.id,
            self.secret,
            self.pin.to_hex()
        )
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("pin", &self.pin)
            .finish()
    }
}

impl FromStr for Token {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        let parts: Vec<&str> = s.split(SEPARATOR).collect();
        if parts[0] != TOKEN_PREFIX {
            return Err(TokenError::WrongPrefix {
                found: crate::util::excerpt(parts[0], 12),
            });
        }
        let [_, id, secret, pin] = parts.as_slice() else {
            return Err(TokenError::WrongPartCount { found: parts.len() });
        };
        let id = id.parse()?;
        check_alphabet("secret", secret)?;
        if secret.len() != SECRET_LEN {
            return Err(TokenError::SecretLength { len: secret.len() });
        }
        Ok(Token {
            id,
            secret: (*secret).to_owned(),
            pin: CaPin::from_hex(pin)?,
        })
    }
}

/// What the master stores for a token: everything but the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: TokenId,
    /// Hex of the random per-record salt.
    pub salt: String,
    /// Hex of `sha256(salt || secret)`.
    pub secret_hash: String,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// `None`: unlimited uses.
    pub uses_left: Option<u32>,
    pub revoked: bool,
    pub description: String,
    /// Labels every node that joins with this token gets, set by the admin who made it:
    /// the labels selectors match (what a node says of itself is only reported).
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Made by a master for its own machine's node (a master that runs workloads): the
    /// one kind of token that may join under the master's own name, and only under it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_node: bool,
    /// Made by `cloudos user add` for this user: only this name may log in with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl TokenRecord {
    /// The record for a freshly generated token; its TTL is checked ([`check_ttl`]).
    pub fn new(
        token: &Token,
        role: Role,
        now: OffsetDateTime,
        ttl: Option<Duration>,
        uses: Option<u32>,
        description: impl Into<String>,
    ) -> Result<Self, TokenError> {
        check_ttl(role, ttl)?;
        let expires_at = match ttl {
            Some(ttl) => Some(now.checked_add(ttl).ok_or(TokenError::TtlTooLong {
                role,
                given: ttl,
                max: MAX_TTL,
            })?),
            None => None,
        };
        let salt = util::random_bytes::<16>()?;
        Ok(TokenRecord {
            id: token.id.clone(),
            salt: util::to_hex(&salt),
            secret_hash: util::to_hex(&hash_secret(&salt, &token.secret)),
            role,
            created_at: now,
            expires_at,
            uses_left: uses,
            revoked: false,
            description: description.into(),
            labels: Default::default(),
            own_node: false,
            user: None,
        })
    }

    /// Takes one use after a successful [`verify`]; unlimited tokens are unchanged.
    pub fn consume_use(&mut self) {
        if let Some(n) = self.uses_left.as_mut() {
            *n = n.saturating_sub(1);
        }
    }
}

fn hash_secret(salt: &[u8], secret: &str) -> [u8; 32] {
    util::sha256(&[salt, secret.as_bytes()])
}

/// Checks `secret` against `record` at `now`. The secret is checked first and in constant
/// time, so only a holder of the secret learns whether the token is expired or revoked.
pub fn verify(record: &TokenRecord, secret: &str, now: OffsetDateTime) -> Result<(), TokenError> {
    let id = || record.id.to_string();
    let salt = util::from_hex(&record.salt).unwrap_or_default();
    let want = util::from_hex(&record.secret_hash).unwrap_or_default();
    let got = hash_secret(&salt, &secret.trim().to_ascii_lowercase());
    if !bool::from(got.as_slice().ct_eq(want.as_slice())) {
        return Err(TokenError::WrongSecret { id: id() });
    }
    if record.revoked {
        return Err(TokenError::Revoked { id: id() });
    }
    if let Some(expired_at) = record.expires_at.filter(|at| now >= *at) {
        return Err(TokenError::Expired {
            id: id(),
            expired_at,
        });
    }
    if record.uses_left == Some(0) {
        return Err(TokenError::UsedUp { id: id() });
    }
    Ok(())
}

/// [`verify`], then checks that the token grants `wanted`.
pub fn verify_for_role(
    record: &TokenRecord,
    secret: &str,
    now: OffsetDateTime,
    wanted: Role,
) -> Result<(), TokenError> {
    verify(record, secret, now)?;
    if record.role != wanted {
        return Err(TokenError::RoleMismatch {
            id: record.id.to_string(),
            actual: record.role,
            wanted,
        });
    }
    Ok(())
}

/// Parses a TTL such as `90s`, `30m`, `24h`, `7d`, `2w`, or a sum like `1h30m`.
pub fn parse_ttl(input: &str) -> Result<Duration, TokenError> {
    let err = |why: &str| TokenError::Ttl {
        input: input.to_owned(),
        why: why.to_owned(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("is empty"));
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(match rest.chars().next() {
                Some(c) if !c.is_ascii_alphabetic() => {
                    err(&format!("contains `{c}`, which is not a digit or a unit"))
                }
                _ => err("has a unit without a number before it"),
            });
        }
        let (number, after) = rest.split_at(digits);
        let number: i64 = number.parse().map_err(|_| err("is too large"))?;
        let unit_len = after.len()
            - after
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            "" if after.is_empty() => return Err(err("has no unit")),
            "" => {
                let c = after.chars().next().unwrap_or(' ');
                return Err(err(&format!(
                    "contains `{c}`, which is not a digit or a unit"
                )));
            }
            _ => {
                return Err(err(&format!(
                    "has unknown unit `{unit}` (use s, m, h, d or w)"
                )))
            }
        };
        total = number
            .checked_mul(seconds)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| err("is too large"))?;
        rest = after;
    }
    if total == 0 {
        return Err(err("is zero"));
    }
    Ok(Duration::seconds(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    fn pin() -> CaPin {
        CaPin::from_hex(&"5a".repeat(32)).expect("pin")
    }

    fn token() -> Token {
        Token::generate(pin()).expect("token")
    }

    #[test]
    fn generated_token_round_trips() {
        let t = token();
        let s = t.to_string();
        assert_eq!(s.len(), TOKEN_PREFIX.len() + 3 + ID_LEN + SECRET_LEN + 64);
        assert_eq!(s.parse::<Token>().as_ref(), Ok(&t));
        assert_eq!(
            format!("  {}\n", s.to_uppercase()).parse::<Token>(),
            Ok(t.clone())
        );
        assert_ne!(token().secret(), t.secret());
    }

    #[test]
    fn debug_redacts_the_secret() {
        let t = token();
        let shown = format!("{t:?}");
        assert!(!shown.contains(t.secret()), "{shown}");
        assert!(shown.contains("redacted") && shown.contains(t.id().as_str()));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let id = "abcdef";
        let secret = "a".repeat(SECRET_LEN);
        let pin = "5a".repeat(32);
        let cases: Vec<(String, TokenError)> = vec![
            ("".into(), TokenError::Empty),
            (
                format!("k10_{id}_{secret}_{pin}"),
                TokenError::WrongPrefix {
                    found: "k10".into(),
                },
            ),
            (
                format!("cloudos1_{id}_{secret}"),
                TokenError::WrongPartCount { found: 3 },
            ),
            (
                format!("cloudos1_{id}_{secret}_{pin}_x"),
                TokenError::WrongPartCount { found: 5 },
            ),
            (
                format!("cloudos1_abc_{secret}_{pin}"),
                TokenError::IdLength {
                    found: "abc".into(),
                    len: 3,
                },
            ),
            (
                format!("cloudos1_abcde0_{secret}_{pin}"),
                TokenError::BadCharacter {
                    part: "id",
                    ch: '0',
                },
            ),
            (
                format!("cloudos1_{id}_{}_{pin}", &secret[1..]),
                TokenError::SecretLength {
                    len: SECRET_LEN - 1,
                },
            ),
            (
                format!("cloudos1_{id}_{}1_{pin}", &secret[1..]),
                TokenError::BadCharacter {
                    part: "secret",
                    ch: '1',
                },
            ),
            (
                format!("cloudos1_{id}_{secret}_{}", &pin[2..]),
                TokenError::Pin(PinError::Length { found: 62 }),
            ),
            (
                format!("cloudos1_{id}_{secret}_{}zz", &pin[2..]),
                TokenError::Pin(PinError::NotHex { ch: 'z' }),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Token>(), Err(want), "{input}");
        }
    }

    #[test]
    fn verify_table() {
        let t = token();
        let fresh = TokenRecord::new(
            &t,
            Role::Compute,
            NOW,
            Some(Duration::hours(24)),
            Some(2),
            "rack 1",
        )
        .expect("record");
        assert!(!serde_json::to_string(&fresh)
            .expect("json")
            .contains(t.secret()));
        let id = t.id().to_string();
        let later = NOW + Duration::hours(24);
        let mut revoked = fresh.clone();
        revoked.revoked = true;
        let mut used_up = fresh.clone();
        used_up.uses_left = Some(0);
        let mut forever = fresh.clone();
        forever.expires_at = None;
        forever.uses_left = None;
        let upper = t.secret().to_uppercase();
        let wrong = "b".repeat(32);
        type Case<'a> = (
            &'a str,
            &'a TokenRecord,
            &'a str,
            OffsetDateTime,
            Result<(), TokenError>,
        );
        let cases: Vec<Case> = vec![
            ("ok", &fresh, t.secret(), NOW, Ok(())),
            ("ok upper case", &fresh, &upper, NOW, Ok(())),
            (
                "wrong secret",
                &fresh,
                &wrong,
                NOW,
                Err(TokenError::WrongSecret { id: id.clone() }),
            ),
            (
                "empty secret",
                &fresh,
                "",
                NOW,
                Err(TokenError::WrongSecret { id: id.clone() }),
            ),
            (
                "expired",
                &fresh,
                t.secret(),
                later,
                Err(TokenError::Expired {
                    id: id.clone(),
                    expired_at: later,
                }),
            ),
            (
                "revoked",
                &revoked,
                t.secret(),
                NOW,
                Err(TokenError::Revoked { id: id.clone() }),
            ),
            (
                "revoked wrong secret",
                &revoked,
                "x",
                NOW,
                Err(TokenError::WrongSecret { id: id.clone() }),
            ),
            (
                "used up",
                &used_up,
                t.secret(),
                NOW,
                Err(TokenError::UsedUp { id: id.clone() }),
            ),
            (
                "no limits",
                &forever,
                t.secret(),
                later + Duration::days(999),
                Ok(()),
            ),
        ];
        for (name, record, secret, now, want) in cases {
            assert_eq!(verify(record, secret, now), want, "{name}");
        }
    }

    #[test]
    fn expired_error_names_time_and_command() {
        let err = TokenError::Expired {
            id: "abcdef".into(),
            expired_at: NOW,
        }
        .to_string();
        assert_eq!(
            err,
            "token abcdef expired at 2026-03-01T10:00:00Z; create a new one with `cloudos token create`"
        );
    }

    #[test]
    fn role_is_checked() {
        let t = token();
        let record = TokenRecord::new(&t, Role::Compute, NOW, None, None, "").expect("record");
        assert_eq!(
            verify_for_role(&record, t.secret(), NOW, Role::Compute),
            Ok(())
        );
        assert_eq!(
            verify_for_role(&record, t.secret(), NOW, Role::Master),
            Err(TokenError::RoleMismatch {
                id: t.id().to_string(),
                actual: Role::Compute,
                wanted: Role::Master
            })
        );
    }

    #[test]
    fn consume_use_counts_down() {
        let t = token();
        let mut record =
            TokenRecord::new(&t, Role::Compute, NOW, None, Some(1), "").expect("record");
        assert_eq!(verify(&record, t.secret(), NOW), Ok(()));
        record.consume_use();
        assert_eq!(
            verify(&record, t.secret(), NOW),
            Err(TokenError::UsedUp {
                id: t.id().to_string()
            })
        );
        record.consume_use();
        assert_eq!(record.uses_left, Some(0));
    }

    /// The attacker (or a slip of the keyboard) asks for a TTL so long that adding it to
    /// the clock overflows, which used to store "never expires". Refused, for every role.
    #[test]
    fn huge_ttl_is_refused_never_read_as_never() {
        let t = token();
        for role in [Role::Compute, Role::Admin] {
            for ttl in [
                Duration::MAX,
                Duration::seconds(i64::MAX),
                Duration::days(366),
                Duration::weeks(9_999_999),
            ] {
                let err =
                    TokenRecord::new(&t, role, NOW, Some(ttl), None, "").expect_err("too long");
                assert!(
                    matches!(err, TokenError::TtlTooLong { .. }),
                    "{role} {ttl}: {err}"
                );
                assert!(err.to_string().contains("at most"), "{err}");
            }
        }
        let longest = TokenRecord::new(&t, Role::Compute, NOW, Some(MAX_TTL), None, "")
            .expect("a year is fine");
        assert_eq!(longest.expires_at, Some(NOW + MAX_TTL));
        let err = TokenRecord::new(&t, Role::Admin, NOW, Some(Duration::days(8)), None, "")
            .expect_err("admin: a week at most");
        assert!(err.to_string().contains("at most 7d"), "{err}");
        assert_eq!(
            TokenRecord::new(&t, Role::Admin, NOW, None, Some(1), ""),
            Err(TokenError::MustExpire { role: Role::Admin })
        );
        assert_eq!(
            TokenRecord::new(&t, Role::Master, NOW, None, Some(1), ""),
            Err(TokenError::MustExpire { role: Role::Master })
        );
        let never = TokenRecord::new(&t, Role::Compute, NOW, None, None, "").expect("explicit");
        assert_eq!(never.expires_at, None);
    }

    #[test]
    fn ttl_table() {
        let ok = [
            ("90s", 90),
            ("30m", 1800),
            ("24h", 86_400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("1h30m", 5400),
            (" 5m ", 300),
        ];
        for (input, secs) in ok {
            assert_eq!(parse_ttl(input), Ok(Duration::seconds(secs)), "{input}");
        }
        let bad = [
            ("", "is empty"),
            ("24", "has no unit"),
            ("h", "unit without a number"),
            ("10y", "unknown unit `y`"),
            ("1h-3m", "contains `-`"),
            ("-3m", "contains `-`"),
            ("5 m", "contains ` `"),
            ("0s", "is zero"),
            ("99999999999999999999s", "too large"),
            ("9999999999999999w", "too large"),
        ];
        for (input, want) in bad {
            let err = parse_ttl(input).expect_err(input).to_string();
            assert!(
                err.contains(want) && err.contains("like 90s"),
                "{input}: {err}"
            );
        }
    }
}
