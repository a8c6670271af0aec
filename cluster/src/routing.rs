//! Services as the nodes route them (decision 57): each service's stable address (its
//! virtual IP, from the master's `service_range`), its published ports, and the addresses
//! of its replicas that run now. The master sends the whole table to every node whenever
//! it changes; each node then answers DNS for the names under [`DOMAIN`] and balances
//! connections to a service's address (and to its published ports, on nodes without a
//! replica of their own) over the replicas.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::workload::PortMapping;

/// The zone each node answers for its containers: `web.svc.cloudos` is service `web`'s
/// address, `tasks.web.svc.cloudos` its replicas' own. `.cloudos` is no public top-level
/// domain, and a search line makes the bare name `web` work.
pub const DOMAIN: &str = "svc.cloudos";

/// The range services' addresses come from when the master's settings name none: next to
/// the default container range, as private and as unlikely on a LAN.
pub const DEFAULT_SERVICE_RANGE: &str = "10.251.0.0/16";

/// One service, as every node routes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceRoute {
    pub name: String,
    /// The service's virtual address: connections to it (any port) go to a replica.
    pub address: Ipv4Addr,
    /// The service's published ports: on a node without a replica of its own, connections
    /// to the host port go to a replica elsewhere (the routing mesh).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PortMapping>,
    /// The replicas that run now, by their container addresses, in order: only these get
    /// new connections.
    pub replicas: Vec<Ipv4Addr>,
}

/// Everything every node routes: sent whole, so a node never holds half of a change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTable {
    /// The master's service range (`10.251.0.0/16`): addresses in it that no service has
    /// are unreachable, never sent on to the LAN.
    pub range: String,
    pub services: Vec<ServiceRoute>,
}

impl ServiceTable {
    /// The service named `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&ServiceRoute> {
        self.services.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_goes_over_the_wire_and_back_unchanged() {
        let table = ServiceTable {
            range: DEFAULT_SERVICE_RANGE.into(),
            services: vec![ServiceRoute {
                name: "web".into(),
                address: Ipv4Addr::new(10, 251, 0, 1),
                publish: vec!["8080:80".parse().unwrap()],
                replicas: vec![Ipv4Addr::new(10, 250, 0, 2), Ipv4Addr::new(10, 250, 1, 2)],
            }],
        };
        let json = serde_json::to_string(&table).unwrap();
        assert!(json.contains("\"8080:80/tcp\""), "{json}");
        assert_eq!(serde_json::from_str::<ServiceTable>(&json).unwrap(), table);
        assert_eq!(table.get("web").map(|s| s.replicas.len()), Some(2));
        assert!(table.get("db").is_none());
    }
}
