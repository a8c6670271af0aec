//! Records and store errors as the API shows them: the one place where the master's
//! storage meets the wire types (which know nothing of it).

use cloudos_cluster::api::{ErrorBody, ErrorCode, NodeInfo, UserInfo};

use crate::{NodeRecord, StoreError, UserRecord};

impl From<&NodeRecord> for NodeInfo {
    /// Telemetry that no longer parses (an older agent's) is shown as absent.
    fn from(n: &NodeRecord) -> Self {
        NodeInfo {
            name: n.name.clone(),
            role: n.role,
            address: n.address.clone(),
            arch: n.arch.clone(),
            labels: n.labels.clone(),
            reported_labels: n.reported_labels.clone(),
            state: n.state,
            joined_at: n.joined_at,
            last_seen: n.last_seen,
            telemetry: n
                .telemetry
                .as_ref()
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            unschedulable: n.unschedulable,
            boot: n.boot.clone(),
            subnet: n.subnet.clone(),
        }
    }
}

impl From<&UserRecord> for UserInfo {
    fn from(a: &UserRecord) -> Self {
        UserInfo {
            name: a.name.clone(),
            role: a.role,
            address: a.address.clone(),
            cert_serial: a.cert_serial.clone(),
            pending_serial: a.pending_serial.clone(),
            token_id: a.token_id.clone(),
            joined_at: a.joined_at,
        }
    }
}

impl From<&StoreError> for ErrorBody {
    fn from(e: &StoreError) -> Self {
        match e {
            StoreError::Token(t) => t.into(),
            StoreError::NotFound { .. } => ErrorBody::new(ErrorCode::NotFound, e.to_string()),
            StoreError::AlreadyInitialized { .. } => {
                ErrorBody::new(ErrorCode::Conflict, e.to_string())
            }
            StoreError::Unavailable { .. } | StoreError::Fenced | StoreError::Contention { .. } => {
                ErrorBody::new(ErrorCode::Unavailable, e.to_string())
            }
            _ => ErrorBody::new(ErrorCode::Internal, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cloudos_cluster::api::{Capacity, Telemetry};
    use cloudos_cluster::identity::Role;
    use cloudos_cluster::token::TokenError;
    use time::macros::datetime;
    use time::OffsetDateTime;

    use super::*;
    use crate::NodeState;

    const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);

    #[test]
    fn node_info_reads_telemetry_from_the_record() {
        let telemetry = Telemetry {
            load1: 0.25,
            capacity: Capacity {
                cpu_millicores: 4000,
                memory_bytes: 8 << 30,
            },
            ..Telemetry::default()
        };
        let mut record = NodeRecord {
            name: "n1".into(),
            role: Role::Compute,
            address: "10.0.0.2:4000".into(),
            arch: "aarch64".into(),
            labels: BTreeMap::new(),
            reported_labels: Default::default(),
            pending_serial: None,
            cert_serial: "01".parse().expect("serial"),
            joined_at: NOW,
            last_seen: NOW,
            telemetry: serde_json::to_value(&telemetry).ok(),
            state: NodeState::Ready,
            unschedulable: false,
            boot: None,
            subnet: None,
        };
        assert_eq!(NodeInfo::from(&record).telemetry, Some(telemetry));
        record.telemetry = Some(serde_json::json!({"garbage": true}));
        assert_eq!(NodeInfo::from(&record).telemetry, None);
    }

    #[test]
    fn store_errors_map_to_codes_and_statuses() {
        let cases: Vec<(ErrorBody, ErrorCode, u16)> = vec![
            (
                (&StoreError::NotFound {
                    what: "node",
                    key: "n".into(),
                })
                    .into(),
                ErrorCode::NotFound,
                404,
            ),
            (
                (&StoreError::AlreadyInitialized { name: "lab".into() }).into(),
                ErrorCode::Conflict,
                409,
            ),
            (
                (&StoreError::Token(TokenError::Revoked { id: "x".into() })).into(),
                ErrorCode::TokenInvalid,
                403,
            ),
        ];
        for (body, code, status) in cases {
            assert_eq!(body.code, code, "{body}");
            assert_eq!(body.code.http_status(), status, "{body}");
        }
    }
}
