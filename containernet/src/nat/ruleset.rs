//! What the node's table holds, from [`Rules`]: the commands of the batch that replaces the
//! table, and of the one that removes it. Building them touches no kernel.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Expressions, Hook, HookNumber, InetHookNumber, NfTablesMessage,
    Operator, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};

use super::batch::Command;
use super::{expr, wire, Balance, Forward, Protocol, RoutedPort, Rules, TABLE};
use crate::NetError;

/// A base chain of the table. Each is named after its hook, as nft names them.
struct Chain {
    name: &'static str,
    /// `nat` or `filter` (wire::CHAIN_TYPE_*).
    kind: &'static str,
    hook: InetHookNumber,
    priority: i32,
}

/// Source NAT, after routing: the packet's output link is known.
const POSTROUTING: Chain = Chain {
    name: "postrouting",
    kind: wire::CHAIN_TYPE_NAT,
    hook: InetHookNumber::PostRouting,
    priority: wire::NF_IP_PRI_NAT_SRC,
};
/// Destination NAT of packets arriving from outside and from the containers, before
/// routing, so that the translated destination is what is routed.
const PREROUTING: Chain = Chain {
    name: "prerouting",
    kind: wire::CHAIN_TYPE_NAT,
    hook: InetHookNumber::PreRouting,
    priority: wire::NF_IP_PRI_NAT_DST,
};
/// Destination NAT of the node's own connections, which never pass prerouting.
const OUTPUT: Chain = Chain {
    name: "output",
    kind: wire::CHAIN_TYPE_NAT,
    hook: InetHookNumber::LocalOut,
    priority: wire::NF_IP_PRI_NAT_DST,
};
/// What containers may open on the node itself: packets for the node's own addresses,
/// after prerouting's destination NAT (a published port is forwarded, never seen here).
const INPUT: Chain = Chain {
    name: "input",
    kind: wire::CHAIN_TYPE_FILTER,
    hook: InetHookNumber::LocalIn,
    priority: wire::NF_IP_PRI_FILTER,
};
/// Where containers may not go past the node: packets the node routes on, after
/// prerouting's destination NAT (a published port's calls are here, to their container).
const FORWARD: Chain = Chain {
    name: "forward",
    kind: wire::CHAIN_TYPE_FILTER,
    hook: InetHookNumber::Forward,
    priority: wire::NF_IP_PRI_FILTER,
};

/// The table's chains, in the order they are made.
const CHAINS: [&Chain; 5] = [&POSTROUTING, &PREROUTING, &OUTPUT, &INPUT, &FORWARD];

/// 127.0.0.0/8.
const LOOPBACK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);

/// A rule: its chain, its statement in nft's syntax (for errors), why it is there (its
/// comment, which `nft list ruleset` shows on the node), and its expressions.
struct Rule {
    chain: &'static Chain,
    text: String,
    why: &'static str,
    exprs: Vec<Expressions>,
}

/// The batch that replaces the table with one holding `rules`: the table made if missing
/// (so that deleting it cannot fail), deleted, and made again with its chains and rules.
pub fn replace(rules: &Rules) -> Result<Vec<Command>, NetError> {
    check(rules)?;
    let mut commands = remove();
    commands.push(table(
        NfTablesMessage::NewTable,
        NLM_F_CREATE,
        "creating the table again",
    ));
    commands.extend(CHAINS.map(chain));
    commands.extend(table_rules(rules).into_iter().map(rule));
    Ok(commands)
}

/// The batch that removes the table, and is fine when it is missing: made if missing,
/// then deleted.
pub fn remove() -> Vec<Command> {
    vec![
        table(
            NfTablesMessage::NewTable,
            NLM_F_CREATE,
            "creating the table if it is missing",
        ),
        table(NfTablesMessage::DeleteTable, 0, "deleting the table"),
    ]
}

/// The rules of the table, in order.
fn table_rules(rules: &Rules) -> Vec<Rule> {
    let subnet = rules.subnet.trunc();
    let bridge = rules.bridge.as_str();
    // Into the mesh a container keeps its own address: the peers route the node's subnet
    // back through the mesh, and accept only sources inside it.
    let (mesh_text, mesh_exprs) = match &rules.mesh_link {
        Some(mesh) => (
            format!(" oifname != \"{mesh}\""),
            expr::oifname(Operator::NotEqual, mesh),
        ),
        None => (String::new(), Vec::new()),
    };
    let mut out = vec![
        Rule {
            chain: &POSTROUTING,
            text: format!("ip saddr {subnet} oifname != \"{bridge}\"{mesh_text} masquerade"),
            why: "containers reach past the node from the node's own address",
            exprs: [
                expr::ip_saddr(Operator::Equal, subnet),
                expr::oifname(Operator::NotEqual, bridge),
                mesh_exprs,
                expr::masquerade(),
            ]
            .concat(),
        },
        // Without it the container behind the port sees the caller's own address and
        // answers it straight over the bridge, past the node that translated the call, from
        // an address the caller did not call. (A container calling its own published port
        // also needs hairpin mode on its bridge port where br_netfilter hands bridged
        // packets to these hooks: the bridge must send the call back out where it came in.)
        Rule {
            chain: &POSTROUTING,
            text: format!("ip saddr {subnet} oifname \"{bridge}\" ct status dnat masquerade"),
            why: "hairpin: a container reaching a published port of its own node gets the answers through the node",
            exprs: [
                expr::ip_saddr(Operator::Equal, subnet),
                expr::oifname(Operator::Equal, bridge),
                expr::ct_status_dnat(),
                expr::masquerade(),
            ]
            .concat(),
        },
    ];
    // Only calls to the node's own addresses: a container calling port 8080 of another
    // host goes there, not to the container that published 8080.
    out.extend(rules.forwards.iter().map(|forward| Rule {
        chain: &PREROUTING,
        text: forward_text("", forward),
        why: "a published port: connections to the node's own addresses go to the container",
        exprs: forward_exprs(forward),
    }));
    // The node's own connections to its own (non-loopback) addresses. Loopback is left
    // alone: a connection to 127.0.0.1 translated to a container would leave through the
    // bridge with a loopback source, which the kernel drops unless route_localnet is set;
    // untranslated it is refused at once instead of hanging.
    out.extend(rules.forwards.iter().map(|forward| Rule {
        chain: &OUTPUT,
        text: forward_text(&format!("ip daddr != {LOOPBACK} "), forward),
        why: "a published port, for the node's own connections to its own addresses (loopback would need route_localnet)",
        exprs: [expr::ip_daddr(Operator::NotEqual, LOOPBACK), forward_exprs(forward)].concat(),
    }));
    out.extend(balance_rules(rules));
    out.extend(guard_rules(rules));
    out
}

/// The services: each address, and each routed port, as one rule per backend in
/// prerouting and again in output. The backends are tried in order, the i-th of n taken
/// with chance 1/(n-i) (the last always), which gives each 1/n: stateless, no set or map.
/// In NAT chains only a connection's first packet meets these; conntrack keeps the rest
/// of it on the backend chosen.
fn balance_rules(rules: &Rules) -> Vec<Rule> {
    let mut out = Vec::new();
    let routes = rules.balances.iter().any(|b| !b.ports.is_empty());
    if let (Some(mesh), true) = (&rules.mesh_link, routes) {
        // The routing mesh: a caller from outside reaching a replica on another node is
        // seen by it from this node's mesh address, so the answer comes back here to be
        // translated (and the peer takes only sources of this node's subnet).
        let bridge = rules.bridge.as_str();
        out.push(Rule {
            chain: &POSTROUTING,
            text: format!("iifname != \"{bridge}\" oifname \"{mesh}\" ct status dnat masquerade"),
            why: "routing mesh: a published service's caller reaches a replica on another node from this node",
            exprs: [
                expr::iifname(Operator::NotEqual, bridge),
                expr::oifname(Operator::Equal, mesh),
                expr::ct_status_dnat(),
                expr::masquerade(),
            ]
            .concat(),
        });
    }
    for balance in &rules.balances {
        let vip = Ipv4Net::from(balance.address);
        for (i, backend) in balance.backends.iter().enumerate() {
            let (pick_text, pick) = pick(i, balance.backends.len());
            for chain in [&PREROUTING, &OUTPUT] {
                out.push(Rule {
                    chain,
                    text: format!("ip daddr {}{pick_text} dnat to {backend}", balance.address),
                    why: "a service's address: each new connection goes to one of its replicas",
                    exprs: [
                        expr::ip_daddr(Operator::Equal, vip),
                        pick.clone(),
                        expr::dnat_address(*backend),
                    ]
                    .concat(),
                });
            }
        }
        for port in &balance.ports {
            for (i, backend) in balance.backends.iter().enumerate() {
                let (pick_text, pick) = pick(i, balance.backends.len());
                let text = routed_text(port, &pick_text, *backend);
                out.push(Rule {
                    chain: &PREROUTING,
                    text: text.clone(),
                    why: "routing mesh: a service's published port on a node without its own replica",
                    exprs: routed_exprs(port, pick.clone(), *backend),
                });
                out.push(Rule {
                    chain: &OUTPUT,
                    text: format!("ip daddr != {LOOPBACK} {text}"),
                    why: "routing mesh, for the node's own connections to its own addresses",
                    exprs: [
                        expr::ip_daddr(Operator::NotEqual, LOOPBACK),
                        routed_exprs(port, pick, *backend),
                    ]
                    .concat(),
                });
            }
        }
    }
    out
}

/// The chance the `i`-th of `n` backends is taken, as text and expressions: none for the
/// last one (every connection that got this far).
fn pick(i: usize, n: usize) -> (String, Vec<Expressions>) {
    let left = u32::try_from(n - i).unwrap_or(u32::MAX);
    if left <= 1 {
        return (String::new(), Vec::new());
    }
    (
        format!(" numgen random mod {left} == 0"),
        expr::one_in(left),
    )
}

fn routed_text(port: &RoutedPort, pick: &str, backend: Ipv4Addr) -> String {
    format!(
        "fib daddr type local meta l4proto {} th dport {}{pick} dnat to {backend}:{}",
        port.protocol, port.host_port, port.container_port
    )
}

fn routed_exprs(port: &RoutedPort, pick: Vec<Expressions>, backend: Ipv4Addr) -> Vec<Expressions> {
    [
        expr::fib_daddr_local(),
        expr::l4proto(ip_protocol(port.protocol)),
        expr::th_dport(port.host_port),
        pick,
        expr::dnat(backend, port.container_port),
    ]
    .concat()
}

/// The guard: what containers may reach of the node, and past it. A container's packets
/// come in through the bridge; other nodes' containers' through the mesh link.
fn guard_rules(rules: &Rules) -> Vec<Rule> {
    let bridge = rules.bridge.as_str();
    // The node's own connections to its containers, and what a container was let open:
    // their packets are answers, or more of the same call.
    let mut out = vec![Rule {
        chain: &INPUT,
        text: format!("iifname \"{bridge}\" ct state established,related accept"),
        why: "answers to the node's connections to its containers, and more of what they may open",
        exprs: [
            expr::iifname(Operator::Equal, bridge),
            expr::ct_state_established_related(),
            expr::accept(),
        ]
        .concat(),
    }];
    out.extend(unique(&rules.node_ports).map(|&(protocol, port)| {
        Rule {
            chain: &INPUT,
            text: format!("iifname \"{bridge}\" meta l4proto {protocol} th dport {port} accept"),
            why: "a port of the node the admin opened to containers",
            exprs: [
                expr::iifname(Operator::Equal, bridge),
                expr::l4proto(ip_protocol(protocol)),
                expr::th_dport(port),
                expr::accept(),
            ]
            .concat(),
        }
    }));
    out.push(Rule {
        chain: &INPUT,
        text: format!("iifname \"{bridge}\" drop"),
        why: "the rest of the node is closed to its containers",
        exprs: [expr::iifname(Operator::Equal, bridge), expr::drop()].concat(),
    });
    // Other nodes' containers reach this node's containers through forwarding; the node
    // itself only answers through the mesh (the node's own calls into it).
    if let Some(mesh) = &rules.mesh_link {
        out.extend([
            Rule {
                chain: &INPUT,
                text: format!("iifname \"{mesh}\" ct state established,related accept"),
                why: "answers to the node's connections into the mesh",
                exprs: [
                    expr::iifname(Operator::Equal, mesh),
                    expr::ct_state_established_related(),
                    expr::accept(),
                ]
                .concat(),
            },
            Rule {
                chain: &INPUT,
                text: format!("iifname \"{mesh}\" drop"),
                why: "other nodes' containers reach this node's containers, never the node itself",
                exprs: [expr::iifname(Operator::Equal, mesh), expr::drop()].concat(),
            },
        ]);
    }
    if rules.blocked.is_empty() {
        return out;
    }
    // First: a blocked address that called a published port gets its answers, and the
    // drops below only ever see a container's new connections.
    out.push(Rule {
        chain: &FORWARD,
        text: "ct state established,related accept".into(),
        why: "answers, also to a blocked address that called a published port",
        exprs: [expr::ct_state_established_related(), expr::accept()].concat(),
    });
    out.extend(unique(&rules.blocked).map(|&address| {
        Rule {
            chain: &FORWARD,
            text: format!("iifname \"{bridge}\" ip daddr {address} drop"),
            why: "an address containers may not reach (a master's API)",
            exprs: [
                expr::iifname(Operator::Equal, bridge),
                expr::ip_daddr(Operator::Equal, address.into()),
                expr::drop(),
            ]
            .concat(),
        }
    }));
    out
}

/// `items` in their order, each once: an entry the admin listed twice is one rule.
fn unique<T: Ord>(items: &[T]) -> impl Iterator<Item = &T> {
    let mut seen = BTreeSet::new();
    items.iter().filter(move |item| seen.insert(*item))
}

fn ip_protocol(protocol: Protocol) -> u8 {
    match protocol {
        Protocol::Tcp => wire::IPPROTO_TCP,
        Protocol::Udp => wire::IPPROTO_UDP,
    }
}

/// A published port of one container is a routed port with one backend, taken always.
fn as_routed(f: &Forward) -> RoutedPort {
    RoutedPort {
        protocol: f.protocol,
        host_port: f.host_port,
        container_port: f.container_port,
    }
}

fn forward_text(prefix: &str, f: &Forward) -> String {
    format!("{prefix}{}", routed_text(&as_routed(f), "", f.address))
}

/// `fib daddr type local meta l4proto PROTO th dport HOST_PORT dnat to ADDRESS:PORT`.
fn forward_exprs(f: &Forward) -> Vec<Expressions> {
    routed_exprs(&as_routed(f), Vec::new(), f.address)
}

/// What the kernel would refuse, or take and misapply, said before anything is sent.
fn check(rules: &Rules) -> Result<(), NetError> {
    let bad = |why: String| Err(NetError::BadRules(why));
    let links = std::iter::once(("bridge", &rules.bridge))
        .chain(rules.mesh_link.iter().map(|mesh| ("mesh link", mesh)));
    for (what, name) in links {
        if name.is_empty() || name.len() >= wire::IFNAMSIZ || name.contains('\0') {
            return bad(format!(
                "the {what}'s name {name:?} is not a link name (1 to {} bytes, no NUL)",
                wire::IFNAMSIZ - 1
            ));
        }
    }
    let mut published = BTreeSet::new();
    for f in &rules.forwards {
        if f.host_port == 0 || f.container_port == 0 {
            return bad(format!(
                "{} port {} to {}:{}: port 0 is no port",
                f.protocol, f.host_port, f.address, f.container_port
            ));
        }
        if !published.insert((f.protocol, f.host_port)) {
            return bad(format!(
                "{} port {} is published twice",
                f.protocol, f.host_port
            ));
        }
    }
    for balance in &rules.balances {
        check_balance(balance, &mut published).map_err(NetError::BadRules)?;
    }
    if let Some((protocol, _)) = rules.node_ports.iter().find(|(_, port)| *port == 0) {
        return bad(format!(
            "{protocol} port 0 of the node opened to containers: port 0 is no port"
        ));
    }
    let subnet = rules.subnet.trunc();
    if let Some(address) = rules.blocked.iter().find(|a| subnet.contains(*a)) {
        return bad(format!(
            "{address} is blocked but inside the containers' subnet {subnet}: what crosses the bridge between containers meets these rules only where the kernel hands bridged packets to them (br_netfilter)"
        ));
    }
    Ok(())
}

/// A service's routed ports are no port 0, and no host port another rule has taken
/// (`published`: the node's own forwards and the services checked before).
fn check_balance(
    balance: &Balance,
    published: &mut BTreeSet<(Protocol, u16)>,
) -> Result<(), String> {
    for port in &balance.ports {
        if port.host_port == 0 || port.container_port == 0 {
            return Err(format!(
                "{} port {} of service {}: port 0 is no port",
                port.protocol, port.host_port, balance.address
            ));
        }
        if !published.insert((port.protocol, port.host_port)) {
            return Err(format!(
                "{} port {} is published twice (service {})",
                port.protocol, port.host_port, balance.address
            ));
        }
    }
    Ok(())
}

fn table(message: fn(TableMessage) -> NfTablesMessage, flags: u16, what: &str) -> Command {
    Command {
        message: message(TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.into())],
        }),
        flags,
        what: format!("{what} (ip {TABLE})"),
    }
}

fn chain(chain: &Chain) -> Command {
    Command {
        message: NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(TABLE.into()),
                ChainAttribute::Name(chain.name.into()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(chain.hook)),
                    // The kernel reads the priority as a signed 32-bit number.
                    Hook::Priority(chain.priority as u32),
                ]),
                ChainAttribute::Type(chain.kind.into()),
            ],
        }),
        flags: NLM_F_CREATE,
        what: format!(
            "the chain {} (type {} hook {} priority {})",
            chain.name, chain.kind, chain.name, chain.priority
        ),
    }
}

fn rule(rule: Rule) -> Command {
    Command {
        message: NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(TABLE.into()),
                RuleAttribute::Chain(rule.chain.name.into()),
                RuleAttribute::Expressions(rule.exprs.into_iter().map(Into::into).collect()),
                RuleAttribute::UserData(comment(rule.why)),
            ],
        }),
        flags: NLM_F_CREATE | NLM_F_APPEND,
        what: format!("the rule `{}` in the chain {}", rule.text, rule.chain.name),
    }
}

/// A rule's comment as nft stores it in the rule's user data.
fn comment(why: &str) -> Vec<u8> {
    debug_assert!(why.len() < wire::NFTNL_UDATA_COMMENT_MAXLEN, "{why}");
    let mut tlv = vec![wire::NFTNL_UDATA_RULE_COMMENT, (why.len() + 1) as u8];
    tlv.extend_from_slice(why.as_bytes());
    tlv.push(0);
    tlv
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_netfilter::nftables::{
        Bitwise, DataAttribute, Immediate, Meta, MetaKey, Register, Verdict, VerdictAttribute,
    };

    fn rules(forwards: Vec<Forward>) -> Rules {
        Rules {
            bridge: "cloudos0".into(),
            subnet: "10.250.3.1/24".parse().unwrap(),
            forwards,
            mesh_link: None,
            node_ports: Vec::new(),
            blocked: Vec::new(),
            balances: Vec::new(),
        }
    }

    /// Rules with every part of the guard: a mesh, ports the admin opened (one twice), and
    /// blocked addresses.
    fn guarded() -> Rules {
        Rules {
            mesh_link: Some("cloudos-wg".into()),
            node_ports: vec![
                (Protocol::Tcp, 9101),
                (Protocol::Udp, 53),
                (Protocol::Tcp, 9101),
            ],
            blocked: vec![Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 11)],
            ..rules(vec![web()])
        }
    }

    /// The data a `cmp` compares with, or an `immediate` loads.
    fn data(e: &Expressions) -> Option<DataAttribute> {
        use netlink_packet_netfilter::nftables::Cmp;
        match e {
            Expressions::Cmp(attrs) => attrs.iter().find_map(|a| match a {
                Cmp::Data(d) => Some(d.clone()),
                _ => None,
            }),
            Expressions::Immediate(attrs) => attrs.iter().find_map(|a| match a {
                Immediate::Data(d) => Some(d.clone()),
                _ => None,
            }),
            _ => None,
        }
    }

    fn web() -> Forward {
        Forward {
            protocol: Protocol::Tcp,
            host_port: 8080,
            address: Ipv4Addr::new(10, 250, 3, 2),
            container_port: 80,
        }
    }

    /// Each expression's kind, as `nft --debug=netlink` names it.
    fn kinds(exprs: &[Expressions]) -> Vec<&str> {
        exprs
            .iter()
            .map(|e| match e {
                Expressions::Other {
                    expression_type, ..
                } => expression_type.as_str(),
                Expressions::Cmp(_) => "cmp",
                Expressions::Meta(_) => "meta",
                Expressions::Payload(_) => "payload",
                Expressions::Bitwise(_) => "bitwise",
                Expressions::Immediate(_) => "immediate",
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_table_is_made_deleted_and_made_again_with_its_chains_and_rules() {
        let commands = replace(&rules(vec![web()])).unwrap();
        let kinds: Vec<_> = commands
            .iter()
            .map(|c| match &c.message {
                NfTablesMessage::NewTable(_) => "table",
                NfTablesMessage::DeleteTable(_) => "delete",
                NfTablesMessage::NewChain(_) => "chain",
                NfTablesMessage::NewRule(_) => "rule",
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "table", "delete", "table", "chain", "chain", "chain", "chain", "chain", "rule",
                "rule", "rule", "rule", "rule", "rule"
            ]
        );
        let texts: Vec<_> = commands.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            texts[3..],
            [
                "the chain postrouting (type nat hook postrouting priority 100)",
                "the chain prerouting (type nat hook prerouting priority -100)",
                "the chain output (type nat hook output priority -100)",
                "the chain input (type filter hook input priority 0)",
                "the chain forward (type filter hook forward priority 0)",
                // The subnet is its network, whatever address the caller wrote.
                "the rule `ip saddr 10.250.3.0/24 oifname != \"cloudos0\" masquerade` in the chain postrouting",
                "the rule `ip saddr 10.250.3.0/24 oifname \"cloudos0\" ct status dnat masquerade` in the chain postrouting",
                "the rule `fib daddr type local meta l4proto tcp th dport 8080 dnat to 10.250.3.2:80` in the chain prerouting",
                "the rule `ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto tcp th dport 8080 dnat to 10.250.3.2:80` in the chain output",
                // No port opened: the whole node is closed to containers.
                "the rule `iifname \"cloudos0\" ct state established,related accept` in the chain input",
                "the rule `iifname \"cloudos0\" drop` in the chain input",
            ]
        );
        assert_eq!(remove().len(), 2);
        assert_eq!(
            replace(&rules(vec![])).unwrap().len(),
            12,
            "no forward, no dnat rule"
        );
    }

    #[test]
    fn with_a_mesh_containers_keep_their_address_into_it() {
        let mesh = Rules {
            mesh_link: Some("cloudos-wg".into()),
            ..rules(vec![web()])
        };
        let commands = replace(&mesh).unwrap();
        assert_eq!(
            commands[8].what,
            "the rule `ip saddr 10.250.3.0/24 oifname != \"cloudos0\" oifname != \"cloudos-wg\" masquerade` in the chain postrouting"
        );
        let made = table_rules(&mesh);
        assert_eq!(
            kinds(&made[0].exprs),
            ["payload", "bitwise", "cmp", "meta", "cmp", "meta", "cmp", "masq"],
            "saddr, oifname twice, masquerade"
        );
        use netlink_packet_netfilter::nftables::Cmp;
        let compared: Vec<_> = made[0]
            .exprs
            .iter()
            .filter_map(|e| match e {
                Expressions::Cmp(attrs) => Some(attrs),
                _ => None,
            })
            .collect();
        let mut padded = [0u8; wire::IFNAMSIZ];
        padded[..10].copy_from_slice(b"cloudos-wg");
        assert!(compared[2].contains(&Cmp::Op(Operator::NotEqual)));
        assert!(compared[2].contains(&Cmp::Data(DataAttribute::Value(padded.to_vec()))));
        // The other NAT rules do not change; the guard closes the node to the mesh too.
        let without = table_rules(&rules(vec![web()]));
        assert_eq!(made[1].text, without[1].text);
        assert_eq!(made.len(), without.len() + 2);

        let long = Rules {
            mesh_link: Some("a-mesh-link-too-long".into()),
            ..rules(vec![])
        };
        let err = replace(&long).unwrap_err().to_string();
        assert!(err.contains("the mesh link's name"), "{err}");
    }

    #[test]
    fn a_forward_compiles_as_nft_compiles_it() {
        let exprs = forward_exprs(&web());
        assert_eq!(
            kinds(&exprs),
            [
                "fib",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "cmp",
                "immediate",
                "immediate",
                "nat"
            ]
        );
        use netlink_packet_netfilter::nftables::Cmp;
        let data = |e: &Expressions| match e {
            Expressions::Cmp(attrs) => attrs.iter().find_map(|a| match a {
                Cmp::Data(DataAttribute::Value(v)) => Some(v.clone()),
                _ => None,
            }),
            Expressions::Immediate(attrs) => attrs.iter().find_map(|a| match a {
                Immediate::Data(DataAttribute::Value(v)) => Some(v.clone()),
                _ => None,
            }),
            _ => None,
        };
        assert_eq!(
            data(&exprs[1]),
            Some(2u32.to_ne_bytes().to_vec()),
            "RTN_LOCAL"
        );
        assert_eq!(data(&exprs[3]), Some(vec![6]), "tcp");
        assert_eq!(
            data(&exprs[5]),
            Some(vec![0x1f, 0x90]),
            "8080, network order"
        );
        assert_eq!(data(&exprs[6]), Some(vec![10, 250, 3, 2]));
        assert_eq!(data(&exprs[7]), Some(vec![0, 80]));
    }

    #[test]
    fn rules_the_kernel_would_misread_are_refused_before_sending() {
        let mut long = rules(vec![]);
        long.bridge = "a-bridge-name-too-long".into();
        assert!(matches!(replace(&long), Err(NetError::BadRules(_))));
        let twice = rules(vec![
            web(),
            Forward {
                address: Ipv4Addr::new(10, 250, 3, 3),
                ..web()
            },
        ]);
        let err = replace(&twice).unwrap_err().to_string();
        assert!(err.contains("tcp port 8080 is published twice"), "{err}");
        let udp = Forward {
            protocol: Protocol::Udp,
            ..web()
        };
        assert!(
            replace(&rules(vec![web(), udp])).is_ok(),
            "tcp and udp 8080 are two ports"
        );
        let zero = Forward {
            container_port: 0,
            ..web()
        };
        assert!(replace(&rules(vec![zero])).is_err());

        let no_port = Rules {
            node_ports: vec![(Protocol::Tcp, 9101), (Protocol::Udp, 0)],
            ..rules(vec![])
        };
        let err = replace(&no_port).unwrap_err().to_string();
        assert!(err.contains("udp port 0 of the node"), "{err}");
        let a_container = Rules {
            blocked: vec![Ipv4Addr::new(10, 250, 3, 7)],
            ..rules(vec![])
        };
        let err = replace(&a_container).unwrap_err().to_string();
        assert!(
            err.contains("10.250.3.7 is blocked but inside the containers' subnet 10.250.3.0/24"),
            "{err}"
        );
        assert!(replace(&guarded()).is_ok());
    }

    #[test]
    fn the_guard_closes_the_node_to_containers_but_the_ports_the_admin_opened() {
        let texts: Vec<_> = table_rules(&guarded())
            .into_iter()
            .filter(|r| r.chain.kind == wire::CHAIN_TYPE_FILTER)
            .map(|r| format!("{}: {}", r.chain.name, r.text))
            .collect();
        assert_eq!(
            texts,
            [
                "input: iifname \"cloudos0\" ct state established,related accept",
                // In the admin's order, each once.
                "input: iifname \"cloudos0\" meta l4proto tcp th dport 9101 accept",
                "input: iifname \"cloudos0\" meta l4proto udp th dport 53 accept",
                "input: iifname \"cloudos0\" drop",
                // Through the mesh the node only answers: no port is open there.
                "input: iifname \"cloudos-wg\" ct state established,related accept",
                "input: iifname \"cloudos-wg\" drop",
                "forward: ct state established,related accept",
                "forward: iifname \"cloudos0\" ip daddr 192.0.2.10 drop",
                "forward: iifname \"cloudos0\" ip daddr 192.0.2.11 drop",
            ]
        );
        // Nothing blocked: the forward chain is there, empty.
        let open = Rules {
            blocked: Vec::new(),
            ..guarded()
        };
        assert!(!table_rules(&open).iter().any(|r| r.chain.name == "forward"));
        assert_eq!(
            replace(&open).unwrap()[7].what,
            "the chain forward (type filter hook forward priority 0)"
        );
    }

    #[test]
    fn the_guard_compiles_as_nft_compiles_it() {
        let made = table_rules(&guarded());
        let rule = |text: &str| {
            made.iter()
                .find(|r| r.text == text)
                .unwrap_or_else(|| panic!("no rule `{text}`"))
        };
        let mut bridge = [0u8; wire::IFNAMSIZ];
        bridge[..8].copy_from_slice(b"cloudos0");
        let bridge = Some(DataAttribute::Value(bridge.to_vec()));
        let verdict = |code: u32| {
            Some(DataAttribute::Verdict(vec![VerdictAttribute::Code(
                Verdict::from(code),
            )]))
        };

        let established = rule("iifname \"cloudos0\" ct state established,related accept");
        assert_eq!(
            kinds(&established.exprs),
            ["meta", "cmp", "ct", "bitwise", "cmp", "immediate"]
        );
        assert_eq!(
            established.exprs[0],
            Expressions::Meta(vec![
                Meta::DestinationRegister(Register::Reg1),
                Meta::Key(MetaKey::Iifname)
            ]),
            "the input link's name"
        );
        assert_eq!(data(&established.exprs[1]), bridge);
        let Expressions::Bitwise(bitwise) = &established.exprs[3] else {
            unreachable!()
        };
        assert!(
            bitwise.contains(&Bitwise::Mask(DataAttribute::Value(
                6u32.to_ne_bytes().to_vec()
            ))),
            "established (1 << 1) and related (1 << 2), in the kernel's byte order: {bitwise:?}"
        );
        assert_eq!(
            data(&established.exprs[4]),
            Some(DataAttribute::Value(vec![0; 4]))
        );
        let Expressions::Immediate(immediate) = &established.exprs[5] else {
            unreachable!()
        };
        assert!(immediate.contains(&Immediate::DestinationRegister(Register::Verdict)));
        assert_eq!(data(&established.exprs[5]), verdict(1), "NF_ACCEPT");

        let port = rule("iifname \"cloudos0\" meta l4proto udp th dport 53 accept");
        assert_eq!(
            kinds(&port.exprs),
            ["meta", "cmp", "meta", "cmp", "payload", "cmp", "immediate"]
        );
        assert_eq!(
            data(&port.exprs[3]),
            Some(DataAttribute::Value(vec![17])),
            "udp"
        );
        assert_eq!(
            data(&port.exprs[5]),
            Some(DataAttribute::Value(vec![0, 53]))
        );
        assert_eq!(data(&port.exprs[6]), verdict(1));

        let closed = rule("iifname \"cloudos0\" drop");
        assert_eq!(kinds(&closed.exprs), ["meta", "cmp", "immediate"]);
        assert_eq!(data(&closed.exprs[2]), verdict(0), "NF_DROP");

        let blocked = rule("iifname \"cloudos0\" ip daddr 192.0.2.10 drop");
        assert_eq!(
            kinds(&blocked.exprs),
            ["meta", "cmp", "payload", "cmp", "immediate"],
            "a single address needs no mask"
        );
        assert_eq!(
            data(&blocked.exprs[3]),
            Some(DataAttribute::Value(vec![192, 0, 2, 10]))
        );
        assert_eq!(data(&blocked.exprs[4]), verdict(0));
    }

    #[test]
    fn comments_fit_and_are_terminated() {
        for rule in table_rules(&guarded()) {
            let tlv = comment(rule.why);
            assert!(
                tlv.len() - 2 <= wire::NFTNL_UDATA_COMMENT_MAXLEN,
                "{}",
                rule.why
            );
            assert_eq!(usize::from(tlv[1]), tlv.len() - 2);
            assert_eq!(tlv.last(), Some(&0));
        }
    }

    fn web_service(backends: &[&str], ports: Vec<RoutedPort>) -> Balance {
        Balance {
            address: Ipv4Addr::new(10, 251, 0, 1),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            ports,
        }
    }

    const ROUTED: RoutedPort = RoutedPort {
        protocol: Protocol::Tcp,
        host_port: 9090,
        container_port: 80,
    };

    #[test]
    fn a_service_address_takes_each_backend_with_the_same_chance_in_both_nat_chains() {
        let with = Rules {
            mesh_link: Some("cloudos-wg".into()),
            balances: vec![web_service(
                &["10.250.3.2", "10.250.4.2", "10.250.5.2"],
                Vec::new(),
            )],
            ..rules(vec![])
        };
        let texts: Vec<_> = table_rules(&with)
            .into_iter()
            .filter(|r| r.text.contains("10.251.0.1"))
            .map(|r| format!("{}: {}", r.chain.name, r.text))
            .collect();
        assert_eq!(
            texts,
            [
                "prerouting: ip daddr 10.251.0.1 numgen random mod 3 == 0 dnat to 10.250.3.2",
                "output: ip daddr 10.251.0.1 numgen random mod 3 == 0 dnat to 10.250.3.2",
                "prerouting: ip daddr 10.251.0.1 numgen random mod 2 == 0 dnat to 10.250.4.2",
                "output: ip daddr 10.251.0.1 numgen random mod 2 == 0 dnat to 10.250.4.2",
                "prerouting: ip daddr 10.251.0.1 dnat to 10.250.5.2",
                "output: ip daddr 10.251.0.1 dnat to 10.250.5.2",
            ]
        );
        let made = table_rules(&with);
        let first = made.iter().find(|r| r.text.contains("mod 3")).unwrap();
        assert_eq!(
            kinds(&first.exprs),
            ["payload", "cmp", "numgen", "cmp", "immediate", "nat"],
            "a /32 needs no mask; the port is left alone"
        );
        // No routed port: no routing-mesh masquerade either.
        assert!(!made.iter().any(|r| r.text.contains("iifname !=")));
        // No backend: no rule at all (the address is unreachable by the route).
        let none = Rules {
            balances: vec![web_service(&[], vec![ROUTED])],
            ..with.clone()
        };
        assert!(!table_rules(&none)
            .iter()
            .any(|r| r.text.contains("dnat to 10.250")));
    }

    #[test]
    fn a_routed_port_reaches_the_backends_and_their_answers_come_back_through_this_node() {
        let with = Rules {
            mesh_link: Some("cloudos-wg".into()),
            balances: vec![web_service(&["10.250.4.2", "10.250.5.2"], vec![ROUTED])],
            ..rules(vec![web()])
        };
        let texts: Vec<_> = table_rules(&with)
            .into_iter()
            .filter(|r| r.text.contains("9090") || r.text.starts_with("iifname !="))
            .map(|r| format!("{}: {}", r.chain.name, r.text))
            .collect();
        assert_eq!(
            texts,
            [
                "postrouting: iifname != \"cloudos0\" oifname \"cloudos-wg\" ct status dnat masquerade",
                "prerouting: fib daddr type local meta l4proto tcp th dport 9090 numgen random mod 2 == 0 dnat to 10.250.4.2:80",
                "output: ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto tcp th dport 9090 numgen random mod 2 == 0 dnat to 10.250.4.2:80",
                "prerouting: fib daddr type local meta l4proto tcp th dport 9090 dnat to 10.250.5.2:80",
                "output: ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto tcp th dport 9090 dnat to 10.250.5.2:80",
            ]
        );
        // A routed port the node forwards to a container of its own already is refused.
        let twice = Rules {
            balances: vec![web_service(
                &["10.250.4.2"],
                vec![RoutedPort {
                    host_port: 8080,
                    ..ROUTED
                }],
            )],
            ..with.clone()
        };
        let err = replace(&twice).unwrap_err().to_string();
        assert!(err.contains("tcp port 8080 is published twice"), "{err}");
        let zero = Rules {
            balances: vec![web_service(
                &["10.250.4.2"],
                vec![RoutedPort {
                    container_port: 0,
                    ..ROUTED
                }],
            )],
            ..with
        };
        assert!(replace(&zero).is_err());
    }
}
