//! Which members a store's client sends to. etcd-client balances requests over every
//! endpoint it was given, dead ones included: a member that is gone would take a share of
//! the requests (refused at once, or, for a machine powered off, silent until the
//! deadline). Every [`PROBE_EVERY`] a TCP connection to each member's client port is
//! tried; a member that does not take it within [`PROBE_TIMEOUT`] leaves the balancer
//! and comes back once it does. The last member standing is never removed: with none
//! left nothing could work anyway, and requests then say why.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::Client;

/// How often the members are probed.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long a member may take to accept a connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Keeps `client`'s endpoints to the members that answer, until the runtime stops.
pub(super) async fn keep_live(client: Client, endpoints: Vec<String>) {
    let mut out: BTreeSet<String> = BTreeSet::new();
    loop {
        for endpoint in &endpoints {
            let up = reachable(endpoint).await;
            let is_out = out.contains(endpoint);
            if !up && !is_out && out.len() + 1 < endpoints.len() {
                if client.remove_endpoint(endpoint).await.is_ok() {
                    log::info!("etcd member at {endpoint} does not answer; not sending to it");
                    out.insert(endpoint.clone());
                }
            } else if up && is_out && client.add_endpoint(endpoint).await.is_ok() {
                log::info!("etcd member at {endpoint} answers again");
                out.remove(endpoint);
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Whether the member at `endpoint` (`https://host:port`) accepts a TCP connection within
/// [`PROBE_TIMEOUT`].
pub async fn reachable(endpoint: &str) -> bool {
    let Some(authority) = endpoint
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'))
    else {
        return true;
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(authority)).await,
        Ok(Ok(_))
    )
}
