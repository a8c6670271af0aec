//! Services as the nodes route them (decision 57), as the book sees it: each service's
//! virtual address, given once from the service range and kept with its record, and the
//! table every node gets (`cloudos_cluster::routing`): a service's replicas are in it
//! while they run with an address, and leave it in the same change that stops, loses or
//! restarts them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use cloudos_cluster::routing::{ServiceRoute, ServiceTable};
use cloudos_cluster::workload::{TaskState, WorkloadSpec};
use ipnet::Ipv4Net;

use super::{Book, BookError, Effects};

impl Book {
    /// The range services' addresses come from. Services without an address, or with one
    /// outside `range` (the setting changed), get one now: the records to save.
    pub fn set_service_range(&mut self, range: Ipv4Net) -> Effects {
        self.service_range = Some(range.trunc());
        let mut effects = Effects::default();
        let names: Vec<String> = self
            .services
            .values()
            .filter(|s| !s.address.is_some_and(|a| range.contains(&a)))
            .map(|s| s.name.clone())
            .collect();
        for name in names {
            let address = match self.free_service_address(range) {
                Ok(address) => address,
                Err(e) => {
                    log::error!("service {name} gets no address: {e}");
                    continue;
                }
            };
            if let Some(record) = self.services.get_mut(&name) {
                record.address = Some(address);
                effects.save_services.push(record.clone());
            }
        }
        effects
    }

    /// The lowest address of `range` no service has (not the network's or broadcast's).
    pub(super) fn free_service_address(&self, range: Ipv4Net) -> Result<Ipv4Addr, BookError> {
        range
            .hosts()
            .find(|a| !self.services.values().any(|s| s.address == Some(*a)))
            .ok_or(BookError::NoServiceAddress { range })
    }

    /// A service's published host ports are its own on every node (the routing mesh): no
    /// other service may publish one of them.
    pub(super) fn check_published(&self, name: &str, spec: &WorkloadSpec) -> Result<(), BookError> {
        for want in &spec.publish {
            let taken = self.services.values().find(|s| {
                s.name != name
                    && s.spec
                        .publish
                        .iter()
                        .any(|p| p.host == want.host && p.protocol == want.protocol)
            });
            if let Some(other) = taken {
                return Err(BookError::PortPublished {
                    port: format!("{}/{}", want.host, want.protocol),
                    service: other.name.clone(),
                });
            }
        }
        Ok(())
    }

    /// What every node routes now: each service with an address, and its replicas that
    /// run with one, in address order.
    pub fn service_table(&self) -> ServiceTable {
        // One pass over the tasks, not one per service: this runs at every change.
        let mut running: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
        for task in self.tasks.values() {
            // A replica with a check serves once it passed and until it fails.
            // An update's leaving replica gets no new connections while it is stopped.
            let serves = task.health.is_none_or(|h| h.serves()) && task.leaving_since.is_none();
            if let (Some(service), TaskState::Running, Some(address), true) =
                (task.service.as_deref(), task.state, task.address, serves)
            {
                running.entry(service).or_default().push(address);
            }
        }
        let services = self
            .services
            .values()
            .filter_map(|record| {
                let mut replicas = running.remove(record.name.as_str()).unwrap_or_default();
                replicas.sort();
                Some(ServiceRoute {
                    name: record.name.clone(),
                    address: record.address?,
                    publish: record.spec.publish.clone(),
                    replicas,
                })
            })
            .collect();
        ServiceTable {
            range: self
                .service_range
                .map(|r| r.to_string())
                .unwrap_or_default(),
            services,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Book;
    use cloudos_cluster::health::Health;
    use cloudos_cluster::workload::{
        RunReport, RunState, ServiceCreateRequest, TaskState, WorkloadSpec,
    };
    use time::OffsetDateTime;

    fn spec(publish: &[&str]) -> WorkloadSpec {
        let mut spec = WorkloadSpec::new("registry:5000/web:1");
        spec.publish = publish.iter().map(|p| p.parse().unwrap()).collect();
        spec
    }

    fn deploy(book: &mut Book, name: &str, replicas: u32, publish: &[&str]) {
        let request = ServiceCreateRequest {
            request_id: None,
            name: name.into(),
            spec: spec(publish),
            replicas,
        };
        book.create_service(request, OffsetDateTime::now_utc())
            .unwrap();
    }

    /// Marks replica `id` running at `address` on `node`, as its node would report it.
    fn running(book: &mut Book, id: &str, node: &str, address: Option<&str>) {
        checked(book, id, node, address, None);
    }

    /// [`running`], with what its health check says.
    fn checked(
        book: &mut Book,
        id: &str,
        node: &str,
        address: Option<&str>,
        health: Option<Health>,
    ) {
        let t = book.tasks.get_mut(id).unwrap();
        t.node = Some(node.into());
        t.run = Some(format!("{id}.1"));
        if t.state != TaskState::Running {
            t.state = TaskState::Pulling;
        }
        let report = RunReport {
            run: format!("{id}.1"),
            state: RunState::Running {
                health_reason: None,
                health,
                restarts: 0,
                address: address.map(|a| a.parse().unwrap()),
            },
        };
        book.report(node, &report, OffsetDateTime::now_utc());
    }

    #[test]
    fn a_replica_with_a_check_serves_once_healthy_and_leaves_when_unhealthy() {
        let mut book = Book::default();
        book.set_service_range("10.251.0.0/24".parse().unwrap());
        deploy(&mut book, "web", 2, &[]);
        running(&mut book, "web-r0", "n1", Some("10.250.0.2"));
        checked(
            &mut book,
            "web-r1",
            "n2",
            Some("10.250.1.2"),
            Some(Health::Starting),
        );
        assert_eq!(
            table_text(&book),
            ["web 10.251.0.1 [10.250.0.2]"],
            "not yet"
        );
        checked(
            &mut book,
            "web-r1",
            "n2",
            Some("10.250.1.2"),
            Some(Health::Healthy),
        );
        assert_eq!(
            table_text(&book),
            ["web 10.251.0.1 [10.250.0.2 10.250.1.2]"]
        );
        let report = RunReport {
            run: "web-r1.1".into(),
            state: RunState::Running {
                health_reason: None,
                health: Some(Health::Unhealthy),
                restarts: 0,
                address: Some("10.250.1.2".parse().unwrap()),
            },
        };
        let effects = book.report("n2", &report, OffsetDateTime::now_utc());
        assert_eq!(effects.save_tasks.len(), 1, "the change is kept (and sent)");
        assert_eq!(table_text(&book), ["web 10.251.0.1 [10.250.0.2]"], "out");
        assert_eq!(book.task("web-r1").unwrap().health, Some(Health::Unhealthy));
        // Scaled down to one: the sick replica goes, though its index is the lower.
        let r1 = Some("10.250.1.2");
        checked(&mut book, "web-r1", "n2", r1, Some(Health::Healthy));
        let r0 = Some("10.250.0.2");
        checked(&mut book, "web-r0", "n1", r0, Some(Health::Unhealthy));
        book.scale("web", 1, OffsetDateTime::now_utc()).unwrap();
        let left: Vec<String> = book
            .service("web")
            .unwrap()
            .instances
            .iter()
            .map(|t| t.id.clone())
            .collect();
        assert_eq!(left, ["web-r1"]);
    }

    fn table_text(book: &Book) -> Vec<String> {
        book.service_table()
            .services
            .iter()
            .map(|s| {
                let replicas: Vec<String> = s.replicas.iter().map(|r| r.to_string()).collect();
                format!("{} {} [{}]", s.name, s.address, replicas.join(" "))
            })
            .collect()
    }

    #[test]
    fn services_get_the_lowest_free_address_of_the_range_and_keep_it() {
        let mut book = Book::default();
        book.set_service_range("10.251.0.0/24".parse().unwrap());
        deploy(&mut book, "web", 1, &[]);
        deploy(&mut book, "db", 1, &[]);
        assert_eq!(table_text(&book), ["db 10.251.0.2 []", "web 10.251.0.1 []"]);
        book.delete_service("web", OffsetDateTime::now_utc())
            .unwrap();
        deploy(&mut book, "cache", 1, &[]);
        // web's address is free again; db keeps its own.
        assert_eq!(
            table_text(&book),
            ["cache 10.251.0.1 []", "db 10.251.0.2 []"]
        );
        assert_eq!(book.service_table().range, "10.251.0.0/24");
    }

    #[test]
    fn a_changed_range_gives_every_service_outside_it_a_new_address_to_save() {
        let mut book = Book::default();
        deploy(&mut book, "web", 1, &[]);
        // No range yet: no address, and no route.
        assert!(book.service_table().services.is_empty());
        let effects = book.set_service_range("10.251.0.0/24".parse().unwrap());
        assert_eq!(effects.save_services.len(), 1);
        assert_eq!(table_text(&book), ["web 10.251.0.1 []"]);
        // The same range again changes nothing.
        assert!(book
            .set_service_range("10.251.0.0/24".parse().unwrap())
            .save_services
            .is_empty());
        book.set_service_range("10.252.7.0/24".parse().unwrap());
        assert_eq!(table_text(&book), ["web 10.252.7.1 []"]);
    }

    #[test]
    fn a_full_range_refuses_the_next_service_with_the_setting_named() {
        let mut book = Book::default();
        // A /30 holds two host addresses.
        book.set_service_range("10.251.0.0/30".parse().unwrap());
        deploy(&mut book, "a", 1, &[]);
        deploy(&mut book, "b", 1, &[]);
        let request = ServiceCreateRequest {
            request_id: None,
            name: "c".into(),
            spec: spec(&[]),
            replicas: 1,
        };
        let err = book
            .create_service(request, OffsetDateTime::now_utc())
            .unwrap_err();
        assert!(err.to_string().contains("service_range"), "{err}");
    }

    #[test]
    fn only_running_replicas_with_an_address_are_routed_and_an_exit_takes_one_out() {
        let mut book = Book::default();
        book.set_service_range("10.251.0.0/24".parse().unwrap());
        deploy(&mut book, "web", 3, &["8080:80"]);
        running(&mut book, "web-r0", "n1", Some("10.250.0.2"));
        running(&mut book, "web-r1", "n2", Some("10.250.1.2"));
        // A host-network replica has no address to route to.
        running(&mut book, "web-r2", "n3", None);
        let table = book.service_table();
        assert_eq!(table.services[0].publish[0].to_string(), "8080:80/tcp");
        assert_eq!(
            table_text(&book),
            ["web 10.251.0.1 [10.250.0.2 10.250.1.2]"]
        );
        // web-1's container exits: its node restarts it, and until then it gets nothing.
        let exited = RunReport {
            run: "web-r0.1".into(),
            state: RunState::Exited {
                code: Some(1),
                signal: None,
                oom_killed: false,
                output_bytes: None,
            },
        };
        let effects = book.report("n1", &exited, OffsetDateTime::now_utc());
        assert_eq!(effects.save_tasks.len(), 1, "the change is kept");
        assert_eq!(table_text(&book), ["web 10.251.0.1 [10.250.1.2]"]);
        running(&mut book, "web-r0", "n1", Some("10.250.0.2"));
        assert_eq!(
            table_text(&book),
            ["web 10.251.0.1 [10.250.0.2 10.250.1.2]"]
        );
        // Its node is lost: out at once, queued again.
        book.nodes_lost(&|node, _| node != "n1", OffsetDateTime::now_utc());
        assert_eq!(table_text(&book), ["web 10.251.0.1 [10.250.1.2]"]);
    }

    #[test]
    fn a_host_port_of_one_service_is_refused_to_another_but_not_to_tasks() {
        let mut book = Book::default();
        deploy(&mut book, "web", 1, &["8080:80"]);
        let request = ServiceCreateRequest {
            request_id: None,
            name: "api".into(),
            spec: spec(&["9000:9000", "8080:8080"]),
            replicas: 1,
        };
        let err = book
            .create_service(request, OffsetDateTime::now_utc())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "host port 8080/tcp is published by service web already, on every node (the routing mesh); choose another host port"
        );
        // The same number over UDP is another port.
        deploy(&mut book, "dns", 1, &["8080:53/udp"]);
    }
}
