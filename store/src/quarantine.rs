//! Records that do not decode: one bad record (a bit flip, a bug in an older version) must
//! not keep the master from starting and serving the rest. At start the master moves each
//! such record, bytes untouched, into the `quarantine` table with its table, key and the
//! decode error, and logs it; an operator can read it back from there.
//!
//! The `meta` table is not swept: it holds the cluster's CA, without which a master must
//! refuse to start. A quarantined revocation keeps its serial revoked (the key is the
//! serial), so damage can never make a revoked certificate valid again.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{encode, NodeRecord, RevokedCert, Store, StoreError, Table};
use cloudos_cluster::pki::CertSerial;
use cloudos_cluster::token::TokenRecord;
use cloudos_cluster::workload::{ServiceRecord, TaskInfo};

/// The tables swept, each with a fixed record type.
const SWEPT: [Table; 10] = [
    Table::Tokens,
    Table::Users,
    Table::ApiKeys,
    Table::Audit,
    Table::Nodes,
    Table::RevokedCerts,
    Table::Tasks,
    Table::Services,
    Table::Volumes,
    Table::Secrets,
];

/// A record moved aside because it did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantined {
    /// The table it was in.
    pub table: String,
    /// Its key there.
    pub key: String,
    /// Why it did not decode.
    pub error: String,
    /// Its bytes, in hex (they need not be text).
    pub raw_hex: String,
    #[serde(with = "time::serde::rfc3339")]
    pub quarantined_at: OffsetDateTime,
}

/// Why a revocation record was replaced by a minimal one.
pub const KEPT_REVOKED: &str = "its record was unreadable and was quarantined; still revoked";

/// Whether `bytes` decode as the record type of `table`.
fn check(table: Table, bytes: &[u8]) -> Result<(), serde_json::Error> {
    use serde_json::from_slice;
    match table {
        Table::Tokens => from_slice::<TokenRecord>(bytes).map(drop),
        Table::Nodes => from_slice::<NodeRecord>(bytes).map(drop),
        // An unreadable admin is locked out until it logs in again: the safe side.
        Table::Users => from_slice::<super::UserRecord>(bytes).map(drop),
        // An unreadable key stops working: the safe side.
        Table::ApiKeys => from_slice::<cloudos_cluster::apikey::ApiKeyRecord>(bytes).map(drop),
        Table::Audit => from_slice::<cloudos_cluster::api::AuditEntry>(bytes).map(drop),
        Table::RevokedCerts => from_slice::<RevokedCert>(bytes).map(drop),
        Table::Tasks => from_slice::<TaskInfo>(bytes).map(drop),
        Table::Services => from_slice::<ServiceRecord>(bytes).map(drop),
        Table::Volumes => from_slice::<cloudos_cluster::volume::VolumeRecord>(bytes).map(drop),
        Table::Secrets => from_slice::<cloudos_cluster::secret::SecretRecord>(bytes).map(drop),
        // History records are read leniently (an unreadable one is skipped), never moved.
        Table::Meta | Table::Quarantine | Table::History => Ok(()),
    }
}

/// See [`Store::quarantine_unreadable`].
pub(super) fn sweep<S: Store + ?Sized>(
    store: &S,
    now: OffsetDateTime,
) -> Result<Vec<Quarantined>, StoreError> {
    let mut moved = Vec::new();
    store.transact_raw(&mut |txn| {
        moved.clear();
        for table in SWEPT {
            for (key, bytes) in txn.list(table)? {
                let Err(e) = check(table, &bytes) else {
                    continue;
                };
                let record = Quarantined {
                    table: table.name().to_owned(),
                    key: key.clone(),
                    error: e.to_string(),
                    raw_hex: cloudos_cluster::to_hex(&bytes),
                    quarantined_at: now,
                };
                // The time in the key: a record damaged twice keeps both copies.
                let qkey = format!("{table}/{key}/{}", now.unix_timestamp_nanos());
                txn.put(
                    Table::Quarantine,
                    &qkey,
                    &encode(Table::Quarantine, &qkey, &record)?,
                )?;
                txn.delete(table, &key)?;
                if table == Table::RevokedCerts {
                    if let Ok(serial) = key.parse::<CertSerial>() {
                        let kept = RevokedCert {
                            serial,
                            node: None,
                            revoked_at: now,
                            reason: KEPT_REVOKED.to_owned(),
                        };
                        txn.put(table, &key, &encode(table, &key, &kept)?)?;
                    }
                }
                moved.push(record);
            }
        }
        Ok(())
    })?;
    Ok(moved)
}
