//! The node's DNS for its `bridge` containers (decision 57), on the bridge's gateway
//! address, port 53, UDP and TCP: names under [`DOMAIN`] are answered from the master's
//! service table, everything else is forwarded to the node's own resolvers as it came.
//!
//! - `NAME.svc.cloudos`: service NAME's virtual address, which balances over its replicas.
//! - `tasks.NAME.svc.cloudos`: the addresses of NAME's replicas that run now, for software
//!   that wants its peers one by one (a database cluster).
//!
//! Answers live 5 seconds: a deleted service's name must not outlive it in a cache for
//! long. A container's `resolv.conf` names the gateway and searches [`DOMAIN`], so the bare
//! name `web` works too.
//!
//! [`answer`] is pure (message in, what to do out); `server` holds the sockets.

mod server;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use cloudos_cluster::routing::{ServiceTable, DOMAIN};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};

pub(super) use server::DnsServer;

/// How long an answer may be cached.
const TTL: u32 = 5;

/// The names the node answers itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    /// By service name: its address, and its running replicas' addresses.
    services: BTreeMap<String, (Ipv4Addr, Vec<Ipv4Addr>)>,
}

impl Names {
    pub fn from_table(table: &ServiceTable) -> Names {
        Names {
            services: table
                .services
                .iter()
                .map(|s| (s.name.clone(), (s.address, s.replicas.clone())))
                .collect(),
        }
    }

    /// The addresses `name` (lowercase, no trailing dot, inside the zone) stands for;
    /// `None`: no such name.
    fn lookup(&self, name: &str) -> Option<Vec<Ipv4Addr>> {
        let label = name.strip_suffix(DOMAIN)?.strip_suffix('.')?;
        if let Some(service) = label.strip_prefix("tasks.") {
            return self.services.get(service).map(|(_, r)| r.clone());
        }
        self.services.get(label).map(|(vip, _)| vec![*vip])
    }
}

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// Send these bytes back.
    Answer(Vec<u8>),
    /// Not the node's to answer: send the query to the node's resolvers.
    Forward,
    /// Not a query (an answer, garbage): say nothing.
    Ignore,
}

/// What the node does with the DNS message `query`.
pub fn answer(query: &[u8], names: &Names) -> Reply {
    let Ok(message) = Message::from_vec(query) else {
        return Reply::Ignore;
    };
    if message.message_type() != MessageType::Query {
        return Reply::Ignore;
    }
    let [question] = message.queries() else {
        return Reply::Forward;
    };
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    if name != DOMAIN && !name.ends_with(&format!(".{DOMAIN}")) {
        return Reply::Forward;
    }
    let mut reply = Message::new();
    reply
        .set_id(message.id())
        .set_message_type(MessageType::Response)
        .set_op_code(message.op_code())
        .set_authoritative(true)
        .set_recursion_desired(message.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    if message.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
    } else if name == DOMAIN {
        // The zone itself: there, but with no address.
    } else {
        match names.lookup(name) {
            None => {
                reply.set_response_code(ResponseCode::NXDomain);
            }
            Some(addresses) => {
                let wants_a = matches!(question.query_type(), RecordType::A | RecordType::ANY)
                    && matches!(question.query_class(), DNSClass::IN | DNSClass::ANY);
                if wants_a {
                    for address in addresses {
                        reply.add_answer(Record::from_rdata(
                            question.name().clone(),
                            TTL,
                            RData::A(A(address)),
                        ));
                    }
                }
            }
        }
    }
    match reply.to_vec() {
        Ok(bytes) => Reply::Answer(bytes),
        Err(e) => {
            log::warn!("cannot write a DNS answer for {name}: {e}");
            Reply::Ignore
        }
    }
}

/// SERVFAIL for `query`: no resolver of the node answered it. `None` for what is no
/// query.
pub fn failure(query: &[u8]) -> Option<Vec<u8>> {
    let message = Message::from_vec(query).ok()?;
    if message.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(message.id())
        .set_message_type(MessageType::Response)
        .set_op_code(message.op_code())
        .set_recursion_desired(message.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::ServFail)
        .add_queries(message.queries().to_vec());
    reply.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::routing::ServiceRoute;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn names() -> Names {
        Names::from_table(&ServiceTable {
            range: "10.251.0.0/16".into(),
            services: vec![
                ServiceRoute {
                    name: "web".into(),
                    address: Ipv4Addr::new(10, 251, 0, 1),
                    publish: Vec::new(),
                    replicas: vec![Ipv4Addr::new(10, 250, 0, 2), Ipv4Addr::new(10, 250, 1, 2)],
                },
                ServiceRoute {
                    name: "idle".into(),
                    address: Ipv4Addr::new(10, 251, 0, 2),
                    publish: Vec::new(),
                    replicas: Vec::new(),
                },
            ],
        })
    }

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        m.to_vec().unwrap()
    }

    /// The answer's code and addresses.
    fn asked(name: &str, kind: RecordType) -> (ResponseCode, Vec<Ipv4Addr>) {
        let Reply::Answer(bytes) = answer(&query(name, kind), &names()) else {
            panic!("{name}: not answered here");
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.id(), 4242);
        assert_eq!(m.message_type(), MessageType::Response);
        assert!(m.authoritative() && m.recursion_desired());
        assert_eq!(m.queries().len(), 1);
        let addresses = m
            .answers()
            .iter()
            .map(|r| {
                assert_eq!(r.ttl(), TTL);
                match r.data() {
                    RData::A(a) => a.0,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        (m.response_code(), addresses)
    }

    #[test]
    fn a_service_name_is_its_address_and_its_tasks_name_its_running_replicas() {
        let vip = Ipv4Addr::new(10, 251, 0, 1);
        assert_eq!(
            asked("web.svc.cloudos.", RecordType::A),
            (ResponseCode::NoError, vec![vip])
        );
        // Any case, with or without the root's dot.
        assert_eq!(
            asked("WEB.Svc.Cloudos", RecordType::A),
            (ResponseCode::NoError, vec![vip])
        );
        assert_eq!(
            asked("tasks.web.svc.cloudos.", RecordType::A),
            (
                ResponseCode::NoError,
                vec![Ipv4Addr::new(10, 250, 0, 2), Ipv4Addr::new(10, 250, 1, 2)]
            )
        );
        // A service with no replica running keeps its name; its tasks are none.
        assert_eq!(
            asked("tasks.idle.svc.cloudos.", RecordType::A),
            (ResponseCode::NoError, vec![])
        );
    }

    #[test]
    fn unknown_names_in_the_zone_do_not_exist_and_other_types_have_no_data() {
        assert_eq!(
            asked("db.svc.cloudos.", RecordType::A),
            (ResponseCode::NXDomain, vec![])
        );
        assert_eq!(
            asked("tasks.db.svc.cloudos.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        assert_eq!(
            asked("a.web.svc.cloudos.", RecordType::A).0,
            ResponseCode::NXDomain
        );
        // IPv4 only: a service's name has no AAAA, but exists.
        assert_eq!(
            asked("web.svc.cloudos.", RecordType::AAAA),
            (ResponseCode::NoError, vec![])
        );
        assert_eq!(
            asked("svc.cloudos.", RecordType::A),
            (ResponseCode::NoError, vec![])
        );
    }

    #[test]
    fn names_outside_the_zone_are_forwarded_and_garbage_is_ignored() {
        for name in [
            "example.org.",
            "cloudos.",
            "websvc.cloudos.",
            "svc.cloudos.example.org.",
        ] {
            assert_eq!(
                answer(&query(name, RecordType::A), &names()),
                Reply::Forward,
                "{name}"
            );
        }
        assert_eq!(answer(b"\x01\x02garbage", &names()), Reply::Ignore);
        // An answer sent to the server is no question.
        let Reply::Answer(reply) = answer(&query("web.svc.cloudos.", RecordType::A), &names())
        else {
            panic!("no answer");
        };
        assert_eq!(answer(&reply, &names()), Reply::Ignore);
    }

    #[test]
    fn a_query_no_resolver_answered_fails_as_itself() {
        let bytes = failure(&query("example.org.", RecordType::A)).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!((m.id(), m.response_code()), (4242, ResponseCode::ServFail));
        assert_eq!(m.queries()[0].name().to_ascii(), "example.org.");
        assert_eq!(failure(b"nope"), None);
    }
}
