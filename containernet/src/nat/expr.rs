//! nftables expressions, as nft compiles the few statements the node's table uses: each
//! function is one statement or match and returns the expressions that make it, in order.
//! A match loads a value into register 1 and compares it; a failed comparison ends the
//! rule. The statements at a rule's end (`dnat`, `masquerade`, `accept`, `drop`) come last.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, Expressions, Immediate, Meta, MetaKey, Operator, Payload,
    Register, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::NetfilterProtoFamily;

use super::wire;

/// `ip saddr <op> NET`.
pub fn ip_saddr(op: Operator, net: Ipv4Net) -> Vec<Expressions> {
    ip_address(wire::IPV4_SADDR_OFFSET, op, net)
}

/// `ip daddr <op> NET`.
pub fn ip_daddr(op: Operator, net: Ipv4Net) -> Vec<Expressions> {
    ip_address(wire::IPV4_DADDR_OFFSET, op, net)
}

/// The address at `offset` in the IPv4 header, masked to `net`'s prefix, compared with
/// `net`'s first address. A /32 needs no mask.
fn ip_address(offset: u32, op: Operator, net: Ipv4Net) -> Vec<Expressions> {
    let mut exprs = vec![load_payload(
        wire::NFT_PAYLOAD_NETWORK_HEADER,
        offset,
        wire::IPV4_ADDR_LEN,
    )];
    if net.prefix_len() < 32 {
        exprs.push(Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(wire::IPV4_ADDR_LEN),
            Bitwise::Mask(value(net.netmask().octets())),
            Bitwise::Xor(value([0; 4])),
        ]));
    }
    exprs.push(cmp(op, net.network().octets()));
    exprs
}

/// `oifname <op> NAME`: the output link's name. `name` is shorter than IFNAMSIZ (the
/// caller checks).
pub fn oifname(op: Operator, name: &str) -> Vec<Expressions> {
    link_name(MetaKey::Oifname, op, name)
}

/// `iifname <op> NAME`: the input link's name (a packet that came through a bridge port
/// has the bridge's). `name` is shorter than IFNAMSIZ (the caller checks).
pub fn iifname(op: Operator, name: &str) -> Vec<Expressions> {
    link_name(MetaKey::Iifname, op, name)
}

/// A link's name loaded by `key`, NUL-padded to IFNAMSIZ as the kernel loads it.
fn link_name(key: MetaKey, op: Operator, name: &str) -> Vec<Expressions> {
    let mut padded = [0u8; wire::IFNAMSIZ];
    padded[..name.len()].copy_from_slice(name.as_bytes());
    vec![meta(key), cmp(op, padded)]
}

/// `fib daddr type local`: the destination is one of this namespace's own addresses.
pub fn fib_daddr_local() -> Vec<Expressions> {
    vec![
        Expressions::Other {
            expression_type: wire::FIB.into(),
            attributes: vec![
                u32_nla(wire::NFTA_FIB_DREG, Register::Reg1.into()),
                u32_nla(wire::NFTA_FIB_RESULT, wire::NFT_FIB_RESULT_ADDRTYPE),
                u32_nla(wire::NFTA_FIB_FLAGS, wire::NFTA_FIB_F_DADDR),
            ],
        },
        cmp(Operator::Equal, wire::RTN_LOCAL.to_ne_bytes()),
    ]
}

/// `meta l4proto PROTO` (an IPPROTO number).
pub fn l4proto(protocol: u8) -> Vec<Expressions> {
    vec![meta(MetaKey::L4Proto), cmp(Operator::Equal, [protocol])]
}

/// `th dport PORT`: the transport header's destination port; only after `l4proto`, which
/// makes the transport header one with ports.
pub fn th_dport(port: u16) -> Vec<Expressions> {
    vec![
        load_payload(
            wire::NFT_PAYLOAD_TRANSPORT_HEADER,
            wire::TH_DPORT_OFFSET,
            wire::TH_PORT_LEN,
        ),
        cmp(Operator::Equal, port.to_be_bytes()),
    ]
}

/// `ct status dnat`: the connection's destination was translated.
pub fn ct_status_dnat() -> Vec<Expressions> {
    ct_any(wire::NFT_CT_STATUS, wire::IPS_DST_NAT)
}

/// `ct state established,related`: the packet belongs to a connection already let through
/// (an answer, or more of a call), or is about one (an ICMP error).
pub fn ct_state_established_related() -> Vec<Expressions> {
    ct_any(
        wire::NFT_CT_STATE,
        wire::NF_CT_STATE_ESTABLISHED | wire::NF_CT_STATE_RELATED,
    )
}

/// `ct KEY BITS`: any of `bits` set in the connection's `key`, a bit set the kernel loads
/// as a u32 in its own byte order.
fn ct_any(key: u32, bits: u32) -> Vec<Expressions> {
    let mask = bits.to_ne_bytes();
    vec![
        Expressions::Other {
            expression_type: wire::CT.into(),
            attributes: vec![
                u32_nla(wire::NFTA_CT_DREG, Register::Reg1.into()),
                u32_nla(wire::NFTA_CT_KEY, key),
            ],
        },
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(mask.len() as u32),
            Bitwise::Mask(value(mask)),
            Bitwise::Xor(value([0; 4])),
        ]),
        cmp(Operator::NotEqual, [0; 4]),
    ]
}

/// `dnat to ADDRESS:PORT`: the address in register 1, the port in register 2, both in
/// network byte order.
pub fn dnat(address: Ipv4Addr, port: u16) -> Vec<Expressions> {
    vec![
        immediate(Register::Reg1, address.octets()),
        immediate(Register::Reg2, port.to_be_bytes()),
        nat_dnat(true),
    ]
}

/// `dnat to ADDRESS`: the destination address only; the port stays (a service's address
/// takes every port).
pub fn dnat_address(address: Ipv4Addr) -> Vec<Expressions> {
    vec![immediate(Register::Reg1, address.octets()), nat_dnat(false)]
}

/// The `nat` expression of a DNAT to the address in register 1 and, with `port`, the
/// port in register 2.
fn nat_dnat(port: bool) -> Expressions {
    let mut attributes = vec![
        u32_nla(wire::NFTA_NAT_TYPE, wire::NFT_NAT_DNAT),
        u32_nla(
            wire::NFTA_NAT_FAMILY,
            u8::from(NetfilterProtoFamily::IPv4).into(),
        ),
        u32_nla(wire::NFTA_NAT_REG_ADDR_MIN, Register::Reg1.into()),
    ];
    let mut flags = wire::NF_NAT_RANGE_MAP_IPS;
    if port {
        attributes.push(u32_nla(wire::NFTA_NAT_REG_PROTO_MIN, Register::Reg2.into()));
        flags |= wire::NF_NAT_RANGE_PROTO_SPECIFIED;
    }
    attributes.push(u32_nla(wire::NFTA_NAT_FLAGS, flags));
    Expressions::Other {
        expression_type: wire::NAT.into(),
        attributes,
    }
}

/// `numgen random mod MODULUS == 0`: true once in `modulus` times, drawn afresh for each
/// packet that meets it (in a NAT chain: each new connection).
pub fn one_in(modulus: u32) -> Vec<Expressions> {
    vec![
        Expressions::Other {
            expression_type: wire::NUMGEN.into(),
            attributes: vec![
                u32_nla(wire::NFTA_NG_DREG, Register::Reg1.into()),
                u32_nla(wire::NFTA_NG_MODULUS, modulus),
                u32_nla(wire::NFTA_NG_TYPE, wire::NFT_NG_RANDOM),
            ],
        },
        // Zero is zero in either byte order.
        cmp(Operator::Equal, [0; 4]),
    ]
}

/// `masquerade`: the source becomes the output link's address.
pub fn masquerade() -> Vec<Expressions> {
    vec![Expressions::Other {
        expression_type: wire::MASQ.into(),
        attributes: Vec::new(),
    }]
}

/// `accept`: the packet passes this chain; the hook's other chains still see it.
pub fn accept() -> Vec<Expressions> {
    verdict(wire::NF_ACCEPT)
}

/// `drop`: the packet goes no further, and its sender hears nothing.
pub fn drop() -> Vec<Expressions> {
    verdict(wire::NF_DROP)
}

/// The rule's verdict: `code` into the verdict register.
fn verdict(code: u32) -> Vec<Expressions> {
    vec![Expressions::Immediate(vec![
        Immediate::DestinationRegister(Register::Verdict),
        Immediate::Data(DataAttribute::Verdict(vec![VerdictAttribute::Code(
            Verdict::Other(code),
        )])),
    ])]
}

fn load_payload(base: u32, offset: u32, len: u32) -> Expressions {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
}

fn meta(key: MetaKey) -> Expressions {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
}

fn cmp(op: Operator, data: impl Into<Vec<u8>>) -> Expressions {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(value(data)),
    ])
}

fn immediate(register: Register, data: impl Into<Vec<u8>>) -> Expressions {
    Expressions::Immediate(vec![
        Immediate::DestinationRegister(register),
        Immediate::Data(value(data)),
    ])
}

fn value(data: impl Into<Vec<u8>>) -> DataAttribute {
    DataAttribute::Value(data.into())
}

/// An attribute of an expression the netlink crate has no type for: a big-endian u32, as
/// all of theirs are.
fn u32_nla(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}
