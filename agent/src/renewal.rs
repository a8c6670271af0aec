//! Certificate renewal: at two thirds of the certificate's lifetime (the master says when
//! in `renew_after`) the agent asks for a new certificate for a new key over mTLS, stores
//! it, and reconnects with it.

use std::time::Duration;

use cloudos_cluster::client::{ApiClient, ClientError};
use time::OffsetDateTime;

use super::identity::StoredIdentity;

/// How long from `now` until `at`; zero when it has passed.
pub fn until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    let left = at - now;
    if left.is_negative() {
        Duration::ZERO
    } else {
        left.unsigned_abs()
    }
}

/// A new key and certificate for `current`'s node, from the master `api` talks to.
pub async fn renew(
    api: &ApiClient,
    current: &StoredIdentity,
) -> Result<StoredIdentity, ClientError> {
    let joined = api.renew(&current.node_name).await?;
    Ok(StoredIdentity {
        node_name: current.node_name.clone(),
        joined,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn time_until_renewal() {
        let now = datetime!(2026-03-01 10:00 UTC);
        assert_eq!(
            until(datetime!(2026-03-01 10:01 UTC), now),
            Duration::from_secs(60)
        );
        assert_eq!(until(datetime!(2026-03-01 09:00 UTC), now), Duration::ZERO);
    }
}
