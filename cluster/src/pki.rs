//! The cluster's public key infrastructure: the cluster CA, CA pins, node keys and CSRs,
//! issuing certificates and reading identities back out of them.
//!
//! - The CA is ECDSA P-256, valid ten years, named `CloudOS cluster CA <cluster name>`, with
//!   path length 0: it signs leaf certificates only.
//! - A [`CaPin`] is the sha256 of the CA certificate's SubjectPublicKeyInfo DER, written
//!   `sha256:<64 hex>` as kubeadm does. It survives re-issuing the CA certificate with the same
//!   key, and is what a join token carries.
//! - Node certificates are made from a CSR, but the master takes only the public key from it
//!   (after checking the CSR's signature, which proves the node holds the private key). The
//!   subject and SANs come from the [`NodeIdentity`] the join token authorised: SAN URI
//!   `cloudos://node/<name>?role=<role>` plus the name as DNS SAN, EKU clientAuth only: a
//!   node or admin certificate can never authenticate a server.
//! - The master's serving certificate is the only one with EKU serverAuth, and the only one
//!   carrying the master marker, the SAN URI [`MASTER_URI`]. Clients require both (see
//!   `tls`): a node that joined with a compute token holds a certificate the CA signed, and
//!   without the marker it could serve it on the LAN and collect the join and admin tokens
//!   sent to it.
//! - The masters' etcd has a CA of its own, the *etcd CA* ([`ClusterCa::create_etcd`]),
//!   made beside the cluster CA and held by masters only. etcd trusts it alone, for clients
//!   and peers, so the certificate the cluster CA gives every node opens nothing in etcd
//!   (the cluster CA has path length 0 and cannot sign an intermediate for it). Its leaves
//!   ([`ClusterCa::issue_etcd_member_cert`]) carry serverAuth and clientAuth: one
//!   certificate per master serves etcd's client and peer ports and is the master's etcd
//!   client certificate.
//! - Serial numbers are random. Certificates start [`CLOCK_SKEW`] in the past so a node whose
//!   clock lags a little still accepts them.
//!
//! This module does no I/O; storing the CA and checking TLS peers belong to `store` and `tls`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::identity::{validate_node_name, IdentityError, NodeIdentity, IDENTITY_URI_PREFIX};

/// The SAN URI that marks the master's serving certificate. Only
/// [`ClusterCa::issue_serving_cert`] writes it; node and admin certificates carry a
/// `cloudos://node/` identity instead, which never starts with this.
pub const MASTER_URI: &str = "cloudos://master";
use crate::util::{self, RandomError};

/// How long the cluster CA is valid.
pub const CA_LIFETIME: Duration = Duration::days(3650);
/// Default lifetime of a node certificate: short, renewed at two thirds (see [`renew_at`]),
/// with days of slack when the master is down for a while.
pub const NODE_CERT_LIFETIME: Duration = Duration::days(7);
/// Default lifetime of the master's serving certificate.
pub const SERVING_CERT_LIFETIME: Duration = Duration::days(90);
/// How far in the past certificates start, to tolerate clocks that lag.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

const MAX_CLUSTER_NAME_LEN: usize = 64;

/// Errors of the PKI: making, loading, signing and reading certificates.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Random(#[from] RandomError),
    #[error("cannot create {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("cluster name {why}; use 1 to {MAX_CLUSTER_NAME_LEN} printable characters")]
    ClusterName { why: String },
    #[error("no certificate found in the {what}: {why}; it must hold a -----BEGIN CERTIFICATE----- block")]
    CertPem { what: &'static str, why: String },
    #[error("no private key found in the {what}: {why}; it must hold a -----BEGIN PRIVATE KEY----- block")]
    KeyPem { what: &'static str, why: String },
    #[error("cannot parse the {what} certificate: {why}")]
    CertDer { what: &'static str, why: String },
    #[error("the CA key does not belong to the CA certificate; restore both from the same backup")]
    KeyMismatch,
    #[error("certificate `{subject}` is not a CA certificate; load the cluster CA, not a node or serving certificate")]
    NotACa { subject: String },
    #[error("the node's certificate request is invalid: {why}; retry the join, which makes a fresh request")]
    Csr { why: String },
    #[error("certificate lifetime must be positive (got {seconds}s)")]
    Lifetime { seconds: i64 },
    #[error("`{name}` is not a valid DNS name for a certificate: {source}")]
    DnsName { name: String, source: rcgen::Error },
    #[error("a serving certificate needs at least one DNS name or IP address")]
    NoServingNames,
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("certificate `{subject}` carries no cloudos://node/ identity; connect with the certificate the node got when it joined")]
    NotANodeCertificate { subject: String },
    #[error("certificate `{subject}` carries {count} cloudos://node/ identities; it was not issued by a CloudOS master")]
    AmbiguousIdentity { subject: String, count: usize },
    #[error(
        "certificate {serial} of node {name} is revoked; join the node again with a new token"
    )]
    Revoked { serial: CertSerial, name: String },
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("certificate `{subject}` is not the master's serving certificate (it lacks the {MASTER_URI} marker); something other than the master answered at this address")]
    NotTheMaster { subject: String },
}

/// Errors parsing a [`CaPin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    #[error("CA pin `{found}` must start with `sha256:`")]
    MissingPrefix { found: String },
    #[error("CA pin has {found} hex characters, expected 64; copy the whole pin")]
    Length { found: usize },
    #[error("CA pin contains `{ch}`, which is not a hex digit (0-9, a-f)")]
    NotHex { ch: char },
}

/// The sha256 of a CA certificate's SubjectPublicKeyInfo DER. Shown as `sha256:<64 hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    /// The pin of a SubjectPublicKeyInfo DER.
    pub fn from_spki_der(spki_der: &[u8]) -> Self {
        CaPin(util::sha256(&[spki_der]))
    }

    /// The pin of a CA certificate (DER).
    pub fn of_cert(cert_der: &[u8]) -> Result<Self, PkiError> {
        let cert = parse_cert(cert_der, "CA")?;
        Ok(CaPin::from_spki_der(cert.tbs_certificate.subject_pki.raw))
    }

    /// Parses the bare 64-hex form (the one inside a join token); any case is accepted.
    pub fn from_hex(hex: &str) -> Result<Self, PinError> {
        if let Some(ch) = hex.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(PinError::NotHex { ch });
        }
        if hex.len() != 64 {
            return Err(PinError::Length { found: hex.len() });
        }
        let bytes = util::from_hex(hex).ok_or(PinError::Length { found: hex.len() })?;
        let mut pin = [0u8; 32];
        pin.copy_from_slice(&bytes);
        Ok(CaPin(pin))
    }

    /// The bare lowercase 64-hex form, without `sha256:`.
    pub fn to_hex(&self) -> String {
        util::to_hex(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The pin of a CA certificate (DER): sha256 of its SubjectPublicKeyInfo.
pub fn ca_pin(cert_der: &[u8]) -> Result<CaPin, PkiError> {
    CaPin::of_cert(cert_der)
}

impl fmt::Display for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({self})")
    }
}

impl FromStr for CaPin {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .trim()
            .strip_prefix("sha256:")
            .ok_or_else(|| PinError::MissingPrefix {
                found: s.to_owned(),
            })?;
        CaPin::from_hex(hex)
    }
}

impl Serialize for CaPin {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CaPin {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A certificate serial number as lowercase hex of its DER integer bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CertSerial(String);

impl CertSerial {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        CertSerial(util::to_hex(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for CertSerial {
    type Err = SerialError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        match util::from_hex(&s) {
            Some(bytes) if !bytes.is_empty() && bytes.len() <= 20 => Ok(CertSerial(s)),
            _ => Err(SerialError { found: s }),
        }
    }
}

impl TryFrom<String> for CertSerial {
    type Error = SerialError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CertSerial> for String {
    fn from(s: CertSerial) -> String {
        s.0
    }
}

/// A serial number that is not 1 to 20 bytes of hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("certificate serial `{found}` is not 2 to 40 hex digits; copy it from `cloudos node list`")]
pub struct SerialError {
    found: String,
}

/// A random positive serial of 16 bytes whose first byte is never zero, so the DER integer
/// bytes are exactly these 16 bytes and [`CertSerial`] reads back the same.
fn random_serial() -> Result<(SerialNumber, CertSerial), PkiError> {
    let mut bytes = util::random_bytes::<16>()?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok((
        SerialNumber::from_slice(&bytes),
        CertSerial::from_bytes(&bytes),
    ))
}

/// When a certificate should be renewed: two thirds into its lifetime.
pub fn renew_at(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    let life = not_after - not_before;
    if life <= Duration::ZERO {
        return not_before;
    }
    not_before.checked_add(life - life / 3).unwrap_or(not_after)
}

/// What the master learns from a certificate it issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub serial: CertSerial,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    /// When to renew this certificate, see [`renew_at`].
    pub fn renew_at(&self) -> OffsetDateTime {
        renew_at(self.not_before, self.not_after)
    }
}

fn parse_cert<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, PkiError> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| PkiError::CertDer {
        what,
        why: e.to_string(),
    })?;
    Ok(cert)
}

fn asn1_time(t: x509_parser::time::ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp()).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Serial, subject and validity of a certificate (DER).
pub fn inspect_cert(der: &[u8]) -> Result<CertInfo, PkiError> {
    let cert = parse_cert(der, "peer")?;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        serial: CertSerial::from_bytes(cert.raw_serial()),
        not_before: asn1_time(cert.validity().not_before),
        not_after: asn1_time(cert.validity().not_after),
    })
}

/// The node identity written in a certificate's `cloudos://node/` SAN URI.
///
/// Only call this on a certificate the TLS layer verified against the cluster CA: the
/// identity is as trustworthy as the signature over it.
pub fn identity_from_cert(der: &[u8]) -> Result<NodeIdentity, PkiError> {
    let cert = parse_cert(der, "peer")?;
    let subject = cert.subject().to_string();
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::CertDer {
            what: "peer",
            why: format!("bad subject alternative names: {e}"),
        })?;
    let uris: Vec<&str> = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with(IDENTITY_URI_PREFIX) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(PkiError::NotANodeCertificate { subject }),
        [uri] => Ok(NodeIdentity::from_uri(uri)?),
        more => Err(PkiError::AmbiguousIdentity {
            subject,
            count: more.len(),
        }),
    }
}

/// Checks that a server certificate is the master's: it carries the [`MASTER_URI`] marker
/// that only the master's own issuance sets. Call it after the chain was verified against
/// the cluster CA.
pub fn require_master_cert(der: &[u8]) -> Result<(), PkiError> {
    let cert = parse_cert(der, "server")?;
    let sans = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::CertDer {
            what: "server",
            why: format!("bad subject alternative names: {e}"),
        })?;
    let marked = sans
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .any(|name| matches!(name, GeneralName::URI(uri) if *uri == MASTER_URI));
    if marked {
        Ok(())
    } else {
        Err(PkiError::NotTheMaster {
            subject: cert.subject().to_string(),
        })
    }
}

/// Reads a verified peer certificate's identity and refuses it when its serial is revoked.
/// `is_revoked` is usually a lookup in the store's revoked serials.
pub fn authorize_peer(
    der: &[u8],
    is_revoked: impl FnOnce(&CertSerial) -> bool,
) -> Result<(NodeIdentity, CertInfo), PkiError> {
    let identity = identity_from_cert(der)?;
    let info = inspect_cert(der)?;
    if is_revoked(&info.serial) {
        return Err(PkiError::Revoked {
            serial: info.serial,
            name: identity.name,
        });
    }
    Ok((identity, info))
}

/// All certificates in a PEM text, in order; an error when there is none.
pub fn certs_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::CertPem {
            what,
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PkiError::CertPem {
            what,
            why: "the text has no certificate block".to_owned(),
        });
    }
    Ok(certs)
}

/// The first certificate in a PEM text.
pub fn cert_from_pem(pem: &str, what: &'static str) -> Result<CertificateDer<'static>, PkiError> {
    certs_from_pem(pem, what)?
        .into_iter()
        .next()
        .ok_or(PkiError::CertPem {
            what,
            why: "the text has no certificate block".to_owned(),
        })
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM text.
pub fn key_from_pem(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| PkiError::KeyPem {
        what,
        why: e.to_string(),
    })
}

/// PEM of one DER certificate.
pub fn cert_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

fn check_lifetime(lifetime: Duration) -> Result<(), PkiError> {
    if lifetime <= Duration::ZERO {
        return Err(PkiError::Lifetime {
            seconds: lifetime.whole_seconds(),
        });
    }
    Ok(())
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Generate { what, source }
}

/// Leaf parameters shared by serving and node certificates.
fn leaf_params(
    common_name: &str,
    sans: Vec<SanType>,
    ekus: Vec<ExtendedKeyUsagePurpose>,
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<(CertificateParams, CertSerial), PkiError> {
    check_lifetime(lifetime)?;
    let (serial_number, serial) = random_serial()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.subject_alt_names = sans;
    params.extended_key_usages = ekus;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial_number);
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + lifetime;
    Ok((params, serial))
}

/// A certificate the CA issued, with its key when the CA made the key too.
#[derive(Clone)]
pub struct IssuedCert {
    /// The leaf certificate.
    pub cert_pem: String,
    /// The leaf followed by the CA certificate: what a server sends, so a pinned client can
    /// check the CA (see `tls::client_config_pinned`).
    pub chain_pem: String,
    /// PKCS#8 PEM of the key; empty for certificates signed from a CSR.
    pub key_pem: String,
    pub info: CertInfo,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("info", &self.info)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The cluster CA: its certificate and signing key.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("pin", &self.pin())
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Makes a new cluster CA named `CloudOS cluster CA <cluster_name>`, valid from `now`
    /// (less [`CLOCK_SKEW`]) for [`CA_LIFETIME`].
    pub fn create(cluster_name: &str, now: OffsetDateTime) -> Result<Self, PkiError> {
        ClusterCa::create_named(
            &format!("CloudOS cluster CA {cluster_name}"),
            cluster_name,
            now,
        )
    }

    /// Makes the etcd CA of cluster `cluster_name` (`CloudOS etcd CA <cluster_name>`): the
    /// only CA the masters' etcd trusts, so that no node certificate reaches etcd.
    pub fn create_etcd(cluster_name: &str, now: OffsetDateTime) -> Result<Self, PkiError> {
        ClusterCa::create_named(
            &format!("CloudOS etcd CA {cluster_name}"),
            cluster_name,
            now,
        )
    }

    fn create_named(
        common_name: &str,
        cluster_name: &str,
        now: OffsetDateTime,
    ) -> Result<Self, PkiError> {
        validate_cluster_name(cluster_name)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err("the CA key"))?;
        let (serial_number, _) = random_serial()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "CloudOS");
        dn.push(DnType::CommonName, common_name);
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        // Path length 0: the CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(serial_number);
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + CA_LIFETIME;
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("the CA certificate"))?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key,
        })
    }

    /// Loads a CA saved with [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`], checking that
    /// the key belongs to the certificate and that it is a CA.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let cert_der = cert_from_pem(cert_pem, "CA certificate PEM")?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::KeyPem {
            what: "CA key PEM",
            why: e.to_string(),
        })?;
        {
            let cert = parse_cert(&cert_der, "CA")?;
            if !cert.is_ca() {
                return Err(PkiError::NotACa {
                    subject: cert.subject().to_string(),
                });
            }
            use rcgen::PublicKeyData;
            if cert.tbs_certificate.subject_pki.raw != key.subject_public_key_info().as_slice() {
                return Err(PkiError::KeyMismatch);
            }
        }
        Ok(ClusterCa {
            cert_pem: cert_to_pem(&cert_der),
            cert_der,
            key,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA's private key as PKCS#8 PEM. Keep it on the master's data partition only.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    pub fn pin(&self) -> CaPin {
        use rcgen::PublicKeyData;
        CaPin::from_spki_der(&self.key.subject_public_key_info())
    }

    pub fn info(&self) -> Result<CertInfo, PkiError> {
        inspect_cert(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(gen_err("the CA issuer"))
    }

    /// Issues the master's HTTPS serving certificate (new P-256 key) for the given DNS names
    /// and IP addresses.
    pub fn issue_serving_cert(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            let ia5 = name
                .as_str()
                .try_into()
                .map_err(|source| PkiError::DnsName {
                    name: name.clone(),
                    source,
                })?;
            sans.push(SanType::DnsName(ia5));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        sans.push(SanType::URI(
            MASTER_URI
                .try_into()
                .map_err(gen_err("the master marker"))?,
        ));
        let common_name = match (dns_names.first(), ips.first()) {
            (Some(name), _) => name.clone(),
            (None, Some(ip)) => ip.to_string(),
            (None, None) => return Err(PkiError::NoServingNames),
        };
        let (params, _) = leaf_params(
            &common_name,
            sans,
            vec![ExtendedKeyUsagePurpose::ServerAuth],
            lifetime,
            now,
        )?;
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(gen_err("the serving key"))?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(gen_err("the serving certificate"))?;
        self.issued(cert.der(), key.serialize_pem())
    }

    /// An etcd member's certificate (new P-256 key), from the etcd CA: named after the
    /// master `name`, valid for `localhost`, `name` and `ips`, with serverAuth (its client
    /// and peer ports) and clientAuth (to its peers, and the master's own etcd client).
    pub fn issue_etcd_member_cert(
        &self,
        name: &str,
        ips: &[IpAddr],
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let params = etcd_member_params(name, ips, lifetime, now)?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(gen_err("the etcd member key"))?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(gen_err("the etcd member certificate"))?;
        self.issued(cert.der(), key.serialize_pem())
    }

    /// [`ClusterCa::issue_etcd_member_cert`] for a key the member keeps: only the CSR's
    /// public key is used (its signature is checked), the rest comes from `name` and `ips`.
    pub fn sign_etcd_csr(
        &self,
        csr_pem: &str,
        name: &str,
        ips: &[IpAddr],
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        let public_key = csr_public_key(csr_pem)?;
        let params = etcd_member_params(name, ips, lifetime, now)?;
        let cert = params
            .signed_by(&public_key, &self.issuer()?)
            .map_err(gen_err("the etcd member certificate"))?;
        self.issued(cert.der(), String::new())
    }

    /// Signs a node's CSR for `identity`. Only the CSR's public key is used: its subject and
    /// requested extensions are ignored, so a node cannot ask for a name or role the token did
    /// not grant. The CSR's own signature is checked (the node must hold the private key).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        self.sign_csr_with(
            csr_pem,
            identity,
            vec![ExtendedKeyUsagePurpose::ClientAuth],
            lifetime,
            now,
        )
    }

    /// A node certificate as masters before the master marker issued them: EKU clientAuth
    /// and serverAuth. Tests use it to show such a certificate cannot pose as the master.
    #[cfg(test)]
    pub(crate) fn sign_csr_with_server_auth(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
    ) -> Result<IssuedCert, PkiError> {
        self.sign_csr_with(
            csr_pem,
            identity,
            vec![
                ExtendedKeyUsagePurpose::ClientAuth,
                ExtendedKeyUsagePurpose::ServerAuth,
            ],
            NODE_CERT_LIFETIME,
            OffsetDateTime::now_utc(),
        )
    }

    fn sign_csr_with(
        &self,
        csr_pem: &str,
        identity: &NodeIdentity,
        ekus: Vec<ExtendedKeyUsagePurpose>,
        lifetime: Duration,
        now: OffsetDateTime,
    ) -> Result<IssuedCert, PkiError> {
        validate_node_name(&identity.name)?;
        let public_key = csr_public_key(csr_pem)?;
        let dns = identity
            .name
            .as_str()
            .try_into()
            .map_err(|source| PkiError::DnsName {
                name: identity.name.clone(),
                source,
            })?;
        let uri = identity
            .to_uri()
            .try_into()
            .map_err(gen_err("the identity uri"))?;
        let (params, _) = leaf_params(
            &identity.name,
            vec![SanType::URI(uri), SanType::DnsName(dns)],
            ekus,
            lifetime,
            now,
        )?;
        let cert = params
            .signed_by(&public_key, &self.issuer()?)
            .map_err(gen_err("the node certificate"))?;
        self.issued(cert.der(), String::new())
    }

    fn issued(&self, der: &[u8], key_pem: String) -> Result<IssuedCert, PkiError> {
        let cert_pem = cert_to_pem(der);
        Ok(IssuedCert {
            chain_pem: format!("{cert_pem}{}", self.cert_pem),
            cert_pem,
            key_pem,
            info: inspect_cert(der)?,
        })
    }
}

/// The public key of a PEM CSR whose signature verifies (its holder has the private key).
fn csr_public_key(csr_pem: &str) -> Result<rcgen::SubjectPublicKeyInfo, PkiError> {
    let csr_err = |why: String| PkiError::Csr { why };
    let csr_der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|e| csr_err(format!("not a PEM certificate request ({e})")))?;
    let (_, csr) = X509CertificationRequest::from_der(&csr_der)
        .map_err(|e| csr_err(format!("cannot parse it ({e})")))?;
    csr.verify_signature()
        .map_err(|e| csr_err(format!("its signature does not verify ({e})")))?;
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| csr_err(format!("unsupported public key ({e})")))
}

/// An etcd member certificate's parameters: see [`ClusterCa::issue_etcd_member_cert`].
fn etcd_member_params(
    name: &str,
    ips: &[IpAddr],
    lifetime: Duration,
    now: OffsetDateTime,
) -> Result<CertificateParams, PkiError> {
    validate_node_name(name)?;
    let mut sans = Vec::with_capacity(ips.len() + 3);
    for dns in ["localhost", name] {
        let ia5 = dns.try_into().map_err(|source| PkiError::DnsName {
            name: dns.to_owned(),
            source,
        })?;
        sans.push(SanType::DnsName(ia5));
    }
    sans.push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    sans.extend(ips.iter().copied().map(SanType::IpAddress));
    let (params, _) = leaf_params(
        name,
        sans,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        lifetime,
        now,
    )?;
    Ok(params)
}

fn validate_cluster_name(name: &str) -> Result<(), PkiError> {
    let why = if name.trim().is_empty() {
        "is empty".to_owned()
    } else if name.chars().count() > MAX_CLUSTER_NAME_LEN {
        format!("`{name}` is too long")
    } else if name.chars().any(char::is_control) {
        format!("`{}` contains control characters", name.escape_debug())
    } else {
        return Ok(());
    };
    Err(PkiError::ClusterName { why })
}

/// A node's own key pair (ECDSA P-256). The private key never leaves the node.
pub struct NodeKey(KeyPair);

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeKey(<redacted>)")
    }
}

impl NodeKey {
    pub fn generate() -> Result<Self, PkiError> {
        KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map(NodeKey)
            .map_err(gen_err("the node key"))
    }

    pub fn from_pem(pem: &str) -> Result<Self, PkiError> {
        KeyPair::from_pem(pem)
            .map(NodeKey)
            .map_err(|e| PkiError::KeyPem {
                what: "node key PEM",
                why: e.to_string(),
            })
    }

    /// PKCS#8 PEM, for the node's data partition.
    pub fn to_pem(&self) -> String {
        self.0.serialize_pem()
    }

    /// The key as rustls wants it for a client or server config.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.0.serialize_der().into())
    }

    /// A PEM CSR naming the node (the master decides the final subject; see
    /// [`ClusterCa::sign_csr`]).
    pub fn csr_pem(&self, node_name: &str) -> Result<String, PkiError> {
        validate_node_name(node_name)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_name);
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params
            .serialize_request(&self.0)
            .and_then(|csr| csr.pem())
            .map_err(gen_err("the certificate request"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-01-10 12:00 UTC);

    fn ca() -> ClusterCa {
        ClusterCa::create("lab", NOW).expect("create CA")
    }

    fn san_strings(cert: &X509Certificate<'_>) -> Vec<String> {
        cert.subject_alternative_name()
            .expect("san")
            .expect("has san")
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect()
    }

    fn der_of(pem: &str) -> CertificateDer<'static> {
        cert_from_pem(pem, "test").expect("pem")
    }

    #[test]
    fn ca_has_name_lifetime_and_is_ca() {
        let ca = ca();
        let (_, cert) = X509Certificate::from_der(ca.cert_der()).expect("parse");
        assert!(cert.is_ca());
        assert!(cert
            .subject()
            .to_string()
            .contains("CN=CloudOS cluster CA lab"));
        let info = ca.info().expect("info");
        assert_eq!(info.not_after - info.not_before, CA_LIFETIME + CLOCK_SKEW);
        assert_eq!(info.serial.as_str().len(), 32);
    }

    #[test]
    fn ca_save_and_load_round_trips() {
        let ca = ca();
        let loaded = ClusterCa::load(ca.cert_pem(), &ca.key_pem()).expect("load");
        assert_eq!(loaded.pin(), ca.pin());
        assert_eq!(loaded.cert_der(), ca.cert_der());
    }

    #[test]
    fn ca_load_errors() {
        let ca = ca();
        let other = ClusterCa::create("other", NOW).expect("other CA");
        let node = NodeKey::generate().expect("node key");
        let id = NodeIdentity::new("n1", crate::Role::Compute).expect("id");
        let leaf = ca
            .sign_csr(
                &node.csr_pem("n1").expect("csr"),
                &id,
                NODE_CERT_LIFETIME,
                NOW,
            )
            .expect("sign");
        let key_pem = ca.key_pem();
        let cases: Vec<(&str, &str, &str)> = vec![
            ("", &key_pem, "no certificate found"),
            (ca.cert_pem(), "junk", "no private key found"),
            (other.cert_pem(), &key_pem, "does not belong"),
            (&leaf.cert_pem, &key_pem, "not a CA certificate"),
        ];
        for (cert, key, want) in cases {
            let err = ClusterCa::load(cert, key).expect_err(want).to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn ca_pin_is_sha256_of_spki() {
        let ca = ca();
        let pin = ca_pin(ca.cert_der()).expect("pin");
        assert_eq!(pin, ca.pin());
        let (_, cert) = X509Certificate::from_der(ca.cert_der()).expect("parse");
        assert_eq!(
            pin.as_bytes(),
            &util::sha256(&[cert.tbs_certificate.subject_pki.raw])
        );
        let shown = pin.to_string();
        assert!(shown.starts_with("sha256:") && shown.len() == 71, "{shown}");
        assert_eq!(shown.parse::<CaPin>(), Ok(pin));
        let json = serde_json::to_string(&pin).expect("json");
        assert_eq!(serde_json::from_str::<CaPin>(&json).ok(), Some(pin));
    }

    #[test]
    fn ca_pin_parse_errors() {
        let good = "ab".repeat(32);
        let cases: Vec<(String, PinError)> = vec![
            (
                good.clone(),
                PinError::MissingPrefix {
                    found: good.clone(),
                },
            ),
            (
                format!("sha256:{}", &good[..62]),
                PinError::Length { found: 62 },
            ),
            (format!("sha256:{good}00"), PinError::Length { found: 66 }),
            (
                format!("sha256:{}xy", &good[..62]),
                PinError::NotHex { ch: 'x' },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<CaPin>(), Err(want), "{input}");
        }
        assert!(format!("sha256:{}", good.to_uppercase())
            .parse::<CaPin>()
            .is_ok());
    }

    #[test]
    fn sign_csr_uses_identity_not_request() {
        let ca = ca();
        let node = NodeKey::generate().expect("node key");
        // The node asks for another name; the master signs what the token granted.
        let csr = node.csr_pem("evil-master").expect("csr");
        let id = NodeIdentity::new("rack1-n3", crate::Role::Compute).expect("id");
        let issued = ca
            .sign_csr(&csr, &id, NODE_CERT_LIFETIME, NOW)
            .expect("sign");
        let der = der_of(&issued.cert_pem);
        assert_eq!(identity_from_cert(&der).expect("identity"), id);
        let (_, cert) = X509Certificate::from_der(&der).expect("parse");
        assert!(!cert.subject().to_string().contains("evil"));
        let sans = san_strings(&cert);
        assert_eq!(
            sans,
            [
                "URI(cloudos://node/rack1-n3?role=compute)",
                "DNSName(rack1-n3)"
            ]
        );
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("has eku")
            .value;
        // clientAuth only: a node certificate can never authenticate a server.
        assert!(eku.client_auth && !eku.server_auth);
        // The public key is the node's own.
        use rcgen::PublicKeyData;
        assert_eq!(
            cert.tbs_certificate.subject_pki.raw,
            node.0.subject_public_key_info().as_slice()
        );
        assert_eq!(issued.info.not_before, NOW - CLOCK_SKEW);
        assert_eq!(issued.info.not_after, NOW + NODE_CERT_LIFETIME);
        assert!(issued.key_pem.is_empty());
        assert!(issued.chain_pem.ends_with(ca.cert_pem()));
    }

    #[test]
    fn sign_csr_rejects_bad_requests() {
        let ca = ca();
        let id = NodeIdentity::new("n1", crate::Role::Compute).expect("id");
        let csr = NodeKey::generate()
            .expect("key")
            .csr_pem("n1")
            .expect("csr");
        // Flip a byte inside the signed body: the signature no longer verifies.
        let mut der = CertificateSigningRequestDer::from_pem_slice(csr.as_bytes())
            .expect("der")
            .as_ref()
            .to_vec();
        let at = der.len() / 2;
        der[at] ^= 0x01;
        let tampered = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der));
        let cases: Vec<(String, Duration, &str)> = vec![
            (
                "junk".into(),
                NODE_CERT_LIFETIME,
                "not a PEM certificate request",
            ),
            (tampered, NODE_CERT_LIFETIME, "invalid"),
            (csr.clone(), Duration::ZERO, "lifetime must be positive"),
        ];
        for (csr, lifetime, want) in cases {
            let err = ca
                .sign_csr(&csr, &id, lifetime, NOW)
                .expect_err(want)
                .to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }

    #[test]
    fn serial_numbers_are_random_and_read_back() {
        let ca = ca();
        let id = NodeIdentity::new("n1", crate::Role::Compute).expect("id");
        let csr = NodeKey::generate()
            .expect("key")
            .csr_pem("n1")
            .expect("csr");
        let a = ca.sign_csr(&csr, &id, NODE_CERT_LIFETIME, NOW).expect("a");
        let b = ca.sign_csr(&csr, &id, NODE_CERT_LIFETIME, NOW).expect("b");
        assert_ne!(a.info.serial, b.info.serial);
        assert_eq!(a.info.serial.as_str().len(), 32);
        assert_eq!(
            a.info.serial.as_str().parse::<CertSerial>().ok(),
            Some(a.info.serial)
        );
    }

    #[test]
    fn serving_cert_has_names_and_key() {
        let ca = ca();
        let ip: IpAddr = "10.0.0.5".parse().expect("ip");
        let issued = ca
            .issue_serving_cert(&["master.lan".into()], &[ip], SERVING_CERT_LIFETIME, NOW)
            .expect("serving");
        assert!(key_from_pem(&issued.key_pem, "test").is_ok());
        assert_eq!(
            certs_from_pem(&issued.chain_pem, "test")
                .expect("chain")
                .len(),
            2
        );
        let der = der_of(&issued.cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).expect("parse");
        let sans = san_strings(&cert);
        assert_eq!(
            sans,
            [
                "DNSName(master.lan)",
                "IPAddress(0a:00:00:05)",
                "URI(cloudos://master)"
            ]
        );
        let eku = cert
            .extended_key_usage()
            .expect("eku")
            .expect("has eku")
            .value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(matches!(
            identity_from_cert(&der),
            Err(PkiError::NotANodeCertificate { .. })
        ));
        assert!(matches!(
            ca.issue_serving_cert(&[], &[], SERVING_CERT_LIFETIME, NOW),
            Err(PkiError::NoServingNames)
        ));
    }

    #[test]
    fn authorize_peer_checks_revocation() {
        let ca = ca();
        let id = NodeIdentity::new("n1", crate::Role::Master).expect("id");
        let csr = NodeKey::generate()
            .expect("key")
            .csr_pem("n1")
            .expect("csr");
        let issued = ca
            .sign_csr(&csr, &id, NODE_CERT_LIFETIME, NOW)
            .expect("sign");
        let der = der_of(&issued.cert_pem);
        let (got, info) = authorize_peer(&der, |_| false).expect("allowed");
        assert_eq!(got, id);
        assert_eq!(info.serial, issued.info.serial);
        let err = authorize_peer(&der, |s| *s == issued.info.serial).expect_err("revoked");
        assert!(err.to_string().contains("is revoked"), "{err}");
    }

    #[test]
    fn renew_at_is_two_thirds() {
        let start = datetime!(2026-01-01 00:00 UTC);
        let cases = [
            (Duration::hours(3), datetime!(2026-01-01 02:00 UTC)),
            (Duration::days(30), datetime!(2026-01-21 00:00 UTC)),
            (Duration::ZERO, start),
            (Duration::hours(-3), start),
        ];
        for (life, want) in cases {
            assert_eq!(renew_at(start, start + life), want, "{life}");
        }
    }

    #[test]
    fn cluster_names() {
        let long = "x".repeat(65);
        let cases = [
            ("lab", true),
            ("Home Lab 2", true),
            ("", false),
            (" ", false),
            (&long, false),
            ("a\nb", false),
        ];
        for (name, ok) in cases {
            assert_eq!(ClusterCa::create(name, NOW).is_ok(), ok, "{name:?}");
        }
    }

    #[test]
    fn node_key_pem_round_trips_and_csr_checks_name() {
        let key = NodeKey::generate().expect("key");
        let again = NodeKey::from_pem(&key.to_pem()).expect("reload");
        assert_eq!(again.to_pem(), key.to_pem());
        assert!(format!("{key:?}").contains("redacted"));
        assert!(matches!(
            key.csr_pem("Bad Name"),
            Err(PkiError::Identity(_))
        ));
    }

    #[test]
    fn cert_pem_encoding_matches_rcgen() {
        let ca = ca();
        let norm = |s: &str| s.replace("\r\n", "\n");
        assert_eq!(norm(&cert_to_pem(ca.cert_der())), norm(ca.cert_pem()));
    }
}
