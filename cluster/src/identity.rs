//! Who a node is: its name and its role, and how both are written into and read back from
//! the SAN URI of its certificate.
//!
//! The URI form is `cloudos://node/<name>?role=<role>`, for example
//! `cloudos://node/rack1-n3?role=compute`. Names are lowercase RFC 1123 host names, so they
//! need no escaping inside the URI and double as the certificate's DNS SAN.
//!
//! This module only parses and formats; trusting an identity is the TLS layer's job (a
//! certificate is only read after it was verified against the cluster CA).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The scheme and authority that prefix every node identity URI.
pub const IDENTITY_URI_PREFIX: &str = "cloudos://node/";

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// What a certificate or token allows its holder to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Runs workloads.
    Compute,
    /// Runs the master (and may run workloads).
    Master,
    /// A person (or an API key) who may do everything: manage people, tokens, nodes and
    /// releases as well as work.
    Admin,
    /// A person who runs and stops work (tasks, services, volumes, secrets), and reads
    /// everything, but manages no people, tokens, nodes or releases.
    Operator,
    /// A person who reads everything but the values of secrets and of environments.
    Viewer,
}

impl Role {
    /// All roles, in a stable order (for help texts and tests).
    pub const ALL: [Role; 5] = [
        Role::Compute,
        Role::Master,
        Role::Admin,
        Role::Operator,
        Role::Viewer,
    ];
    /// The roles of people and API keys, most powerful first.
    pub const USERS: [Role; 3] = [Role::Admin, Role::Operator, Role::Viewer];

    /// The lowercase name used in URIs, JSON and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Compute => "compute",
            Role::Master => "master",
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    /// Whether the role is a person's (or an API key's) rather than a machine's.
    pub fn is_user(self) -> bool {
        matches!(self, Role::Admin | Role::Operator | Role::Viewer)
    }

    /// Whether a user of this role may do what `needed` may: admin ⊇ operator ⊇ viewer.
    /// Machines' roles grant no user's rights.
    pub fn grants(self, needed: Role) -> bool {
        let rank = |r: Role| match r {
            Role::Viewer => Some(1),
            Role::Operator => Some(2),
            Role::Admin => Some(3),
            Role::Compute | Role::Master => None,
        };
        match (rank(self), rank(needed)) {
            (Some(have), Some(need)) => have >= need,
            _ => false,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| IdentityError::UnknownRole { role: s.to_owned() })
    }
}

/// A node's name and role, as the master's CA vouches for them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub name: String,
    pub role: Role,
}

impl NodeIdentity {
    /// Builds an identity after checking the name with [`validate_node_name`].
    pub fn new(name: impl Into<String>, role: Role) -> Result<Self, IdentityError> {
        let name = name.into();
        validate_node_name(&name)?;
        Ok(NodeIdentity { name, role })
    }

    /// The SAN URI that carries this identity: `cloudos://node/<name>?role=<role>`.
    pub fn to_uri(&self) -> String {
        format!("{IDENTITY_URI_PREFIX}{}?role={}", self.name, self.role)
    }

    /// Parses the SAN URI written by [`NodeIdentity::to_uri`].
    pub fn from_uri(uri: &str) -> Result<Self, IdentityError> {
        let malformed = |why: &str| IdentityError::MalformedUri {
            uri: uri.to_owned(),
            why: why.to_owned(),
        };
        let rest = uri
            .strip_prefix(IDENTITY_URI_PREFIX)
            .ok_or_else(|| malformed("it does not start with cloudos://node/"))?;
        let (name, query) = rest
            .split_once('?')
            .ok_or_else(|| malformed("it has no ?role= part"))?;
        let role = query
            .strip_prefix("role=")
            .ok_or_else(|| malformed("the query is not role=<role>"))?;
        NodeIdentity::new(name, role.parse()?)
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.role)
    }
}

/// Errors about node names, roles and identity URIs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("node name is empty; give the node a host name such as rack1-n3")]
    EmptyName,
    #[error(
        "node name `{name}` is longer than {MAX_NAME_LEN} characters; choose a shorter host name"
    )]
    NameTooLong { name: String },
    #[error(
        "node name `{name}` is not a valid host name: {why}; use lowercase letters, digits, `-` \
         and `.` (like rack1-n3)"
    )]
    InvalidName { name: String, why: String },
    #[error("unknown role `{role}`; use compute, master or admin")]
    UnknownRole { role: String },
    #[error(
        "identity uri `{uri}` is malformed: {why}; expected cloudos://node/<name>?role=<role>"
    )]
    MalformedUri { uri: String, why: String },
    #[error("node name `{name}` is reserved: {why}; give this machine another host name")]
    Reserved { name: String, why: &'static str },
}

/// Checks the name a joiner asks for, beyond [`validate_node_name`]: it becomes a DNS name
/// in a certificate the cluster CA signs, so it must not be one clients could take for the
/// master. Refused: `localhost` and its subdomains, names that look like an IP address
/// (the last label all digits, as `10.0.0.5` or `127.1`), and every name in `reserved`
/// (the master's own name and its `--tls-san` names), compared without case.
pub fn validate_join_name(name: &str, reserved: &[String]) -> Result<(), IdentityError> {
    validate_node_name(name)?;
    let refuse = |why| {
        Err(IdentityError::Reserved {
            name: name.to_owned(),
            why,
        })
    };
    if name == "localhost" || name.ends_with(".localhost") {
        return refuse("it names this machine to every client");
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return refuse("it looks like an IP address");
    }
    if reserved.iter().any(|r| r.eq_ignore_ascii_case(name)) {
        return refuse("it is one of the master's names");
    }
    Ok(())
}

/// RFC 1123 host name: labels of letters, digits and inner hyphens.
///
/// Unlike [`validate_node_name`] it accepts upper case: it checks what a person types (a
/// host name or cluster name in boot settings or the installer), which is lowercased after.
/// It lives here, not in `nodeos`, so the installer and the node settings share one rule.
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{name:?} must be 1 to 253 characters long"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{name:?} is not a valid host name (letters, digits and inner hyphens, labels of at most 63)"
            ));
        }
    }
    Ok(())
}

/// Checks that `name` is a lowercase RFC 1123 host name (dot-separated labels of `a-z`, `0-9`
/// and inner `-`, each at most 63 characters).
///
/// Lowercase only, so that one node cannot hold two identities differing by case.
pub fn validate_node_name(name: &str) -> Result<(), IdentityError> {
    let invalid = |why: String| IdentityError::InvalidName {
        name: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(IdentityError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(IdentityError::NameTooLong {
            name: name.to_owned(),
        });
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err(invalid(
                "it has an empty label (two dots in a row, or a dot at an end)".into(),
            ));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid(format!(
                "label `{label}` is longer than {MAX_LABEL_LEN} characters"
            )));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(invalid(format!("character `{c}` is not allowed")));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(format!("label `{label}` starts or ends with `-`")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_roles_nest_and_machines_grant_no_user_rights() {
        use Role::*;
        assert!(Admin.grants(Operator) && Admin.grants(Viewer) && Operator.grants(Viewer));
        assert!(!Viewer.grants(Operator) && !Operator.grants(Admin) && !Viewer.grants(Admin));
        for machine in [Compute, Master] {
            assert!(!machine.is_user());
            for user in Role::USERS {
                assert!(!machine.grants(user), "{machine} must not act as {user}");
                assert!(!user.grants(machine), "{user} must not act as {machine}");
            }
        }
    }

    #[test]
    fn node_names() {
        let long_label = "a".repeat(64);
        let long_name = ["a"; 128].join(".");
        let cases: &[(&str, bool)] = &[
            ("n1", true),
            ("rack1-n3", true),
            ("node.example.lan", true),
            ("0", true),
            ("", false),
            ("Node1", false),
            ("-n1", false),
            ("n1-", false),
            ("a..b", false),
            (".a", false),
            ("a_b", false),
            ("a b", false),
            ("nœud", false),
            (&long_label, false),
            (&long_name, false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_node_name(name).is_ok(), *ok, "{name}");
        }
    }

    /// The attacker joins with a compute token under a name clients trust for the master.
    #[test]
    fn join_names_that_clients_trust_for_the_master_are_refused() {
        let reserved = ["master-1".to_owned(), "api.example.org".to_owned()];
        let cases: &[(&str, bool)] = &[
            ("n1", true),
            ("rack1-n3.lan", true),
            ("n1.10", false),
            ("master-1", false),
            ("api.example.org", false),
            ("localhost", false),
            ("foo.localhost", false),
            ("10.0.0.5", false),
            ("127.1", false),
            ("0", false),
            ("Master-1", false),
            ("master-1.lan", true),
        ];
        for (name, ok) in cases {
            let got = validate_join_name(name, &reserved);
            assert_eq!(got.is_ok(), *ok, "{name}: {got:?}");
        }
    }

    #[test]
    fn host_names_as_typed() {
        let cases: &[(&str, bool)] = &[
            ("n1", true),
            ("Node-1", true),
            ("node.example.lan", true),
            ("", false),
            ("-bad-", false),
            ("a_b", false),
            ("a..b", false),
            (&"a".repeat(64), false),
            (&["a"; 128].join("."), false),
        ];
        for (name, ok) in cases {
            assert_eq!(validate_hostname(name).is_ok(), *ok, "{name}");
        }
    }

    #[test]
    fn role_round_trips() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            let json = serde_json::to_string(&role).ok();
            assert_eq!(json, Some(format!("\"{role}\"")));
        }
        assert!(matches!(
            "Admin".parse::<Role>(),
            Err(IdentityError::UnknownRole { .. })
        ));
    }

    #[test]
    fn identity_uri_round_trips() {
        for role in Role::ALL {
            let id = NodeIdentity::new("rack1-n3", role).expect("valid identity");
            assert_eq!(NodeIdentity::from_uri(&id.to_uri()), Ok(id));
        }
        assert_eq!(
            NodeIdentity::new("n1", Role::Compute).map(|i| i.to_uri()),
            Ok("cloudos://node/n1?role=compute".to_owned())
        );
    }

    #[test]
    fn identity_uri_errors() {
        let cases: &[(&str, &str)] = &[
            ("https://node/n1?role=compute", "does not start"),
            ("cloudos://node/n1", "no ?role="),
            ("cloudos://node/n1?x=compute", "role=<role>"),
            ("cloudos://node/n1?role=root", "unknown role"),
            ("cloudos://node/N1?role=compute", "not a valid host name"),
            ("cloudos://node/?role=compute", "empty"),
        ];
        for (uri, want) in cases {
            let err = NodeIdentity::from_uri(uri).expect_err(uri).to_string();
            assert!(err.contains(want), "{uri}: {err}");
        }
    }
}
