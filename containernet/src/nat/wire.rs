//! The kernel's numbers the node's table is written in, each said once, under the name the
//! kernel's headers give it: those netlink-packet-netfilter has no type for (the `nat`,
//! `masq`, `fib` and `ct` expressions, payload bases, verdict codes, the batch's header)
//! and the facts about packets and links the rules match on. Where the libc crate has the
//! constant it is taken from there; the others are from `linux/netfilter/nf_tables.h`,
//! `nf_nat.h`, `nfnetlink.h` and `nf_conntrack_common.h`.
//!
//! Registers hold what the kernel loads in its own byte order where the headers say "host
//! byte order" (`ct state`, `ct status`, `fib ... type`) and in network byte order for
//! packet fields.

use nix::libc;

// nfnetlink.h: the header of a batch's begin and end messages names the subsystem the
// batch is for in its resource id.
pub const NFNETLINK_V0: u8 = libc::NFNETLINK_V0 as u8;
pub const NFNL_SUBSYS_NFTABLES: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;

// netfilter_ipv4.h: the NAT chains' priorities (`dstnat`, `srcnat`).
pub const NF_IP_PRI_NAT_DST: i32 = libc::NF_IP_PRI_NAT_DST;
pub const NF_IP_PRI_NAT_SRC: i32 = libc::NF_IP_PRI_NAT_SRC;

// netfilter_ipv4.h: the filter chains' priority (`filter`).
pub const NF_IP_PRI_FILTER: i32 = libc::NF_IP_PRI_FILTER;

// The chain type the NAT chains are (nft_chain_nat's); `nat` and `masq` work only there.
pub const CHAIN_TYPE_NAT: &str = "nat";
// The chain type the guard's chains are: a packet's verdict, no translation.
pub const CHAIN_TYPE_FILTER: &str = "filter";

// netfilter.h: the verdicts a rule ends with (`accept`, `drop`), as nftables' verdict
// codes (NFTA_VERDICT_CODE).
pub const NF_DROP: u32 = libc::NF_DROP as u32;
pub const NF_ACCEPT: u32 = libc::NF_ACCEPT as u32;

// nf_tables.h, enum nft_payload_bases.
pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = libc::NFT_PAYLOAD_NETWORK_HEADER as u32;
pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = libc::NFT_PAYLOAD_TRANSPORT_HEADER as u32;

// nf_tables.h, enum nft_nat_attributes and enum nft_nat_types.
pub const NAT: &str = "nat";
pub const NFTA_NAT_TYPE: u16 = 1;
pub const NFTA_NAT_FAMILY: u16 = 2;
pub const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
pub const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
pub const NFTA_NAT_FLAGS: u16 = 7;
pub const NFT_NAT_DNAT: u32 = libc::NFT_NAT_DNAT as u32;
// nf_nat.h: a range with an address and a port.
pub const NF_NAT_RANGE_MAP_IPS: u32 = 1 << 0;
pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;

// nf_tables.h, enum nft_masq_attributes: none needed (no flags, no port range).
pub const MASQ: &str = "masq";

// nf_tables.h, enum nft_fib_attributes, nft_fib_result and nft_fib_flags.
pub const FIB: &str = "fib";
pub const NFTA_FIB_DREG: u16 = 1;
pub const NFTA_FIB_RESULT: u16 = 2;
pub const NFTA_FIB_FLAGS: u16 = 3;
pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
pub const NFTA_FIB_F_DADDR: u32 = 1 << 1;
// rtnetlink.h: the address type `fib ... type` loads (host byte order, 4 bytes).
pub const RTN_LOCAL: u32 = libc::RTN_LOCAL as u32;

// nf_tables.h, enum nft_ng_attributes and enum nft_ng_types: `numgen random mod N`
// loads a random number below N (a u32, host byte order).
pub const NUMGEN: &str = "numgen";
pub const NFTA_NG_DREG: u16 = 1;
pub const NFTA_NG_MODULUS: u16 = 2;
pub const NFTA_NG_TYPE: u16 = 3;
pub const NFT_NG_RANDOM: u32 = libc::NFT_NG_RANDOM as u32;

// nf_tables.h, enum nft_ct_attributes and enum nft_ct_keys.
pub const CT: &str = "ct";
pub const NFTA_CT_DREG: u16 = 1;
pub const NFTA_CT_KEY: u16 = 2;
pub const NFT_CT_STATE: u32 = libc::NFT_CT_STATE as u32;
pub const NFT_CT_STATUS: u32 = libc::NFT_CT_STATUS as u32;
// nf_conntrack_common.h, NF_CT_STATE_BIT(IP_CT_ESTABLISHED) and (IP_CT_RELATED): the
// packet belongs to a connection both ways have seen, or to one an open connection made
// (an ICMP error about it); what `ct state` loads (host byte order, 4 bytes).
pub const NF_CT_STATE_ESTABLISHED: u32 = 1 << 1;
pub const NF_CT_STATE_RELATED: u32 = 1 << 2;
// nf_conntrack_common.h, enum ip_conntrack_status: the connection's destination was
// translated (host byte order, 4 bytes).
pub const IPS_DST_NAT: u32 = 1 << 5;

// The IPv4 header (RFC 791): where its addresses are, and how long.
pub const IPV4_SADDR_OFFSET: u32 = 12;
pub const IPV4_DADDR_OFFSET: u32 = 16;
pub const IPV4_ADDR_LEN: u32 = 4;
// TCP (RFC 9293) and UDP (RFC 768) both have the destination port at offset 2, two bytes,
// which is what nft's `th dport` loads.
pub const TH_DPORT_OFFSET: u32 = 2;
pub const TH_PORT_LEN: u32 = 2;
// in.h: `meta l4proto` loads one byte.
pub const IPPROTO_TCP: u8 = libc::IPPROTO_TCP as u8;
pub const IPPROTO_UDP: u8 = libc::IPPROTO_UDP as u8;
// if.h: `meta iifname` and `meta oifname` load the name NUL-padded to this many bytes.
pub const IFNAMSIZ: usize = libc::IFNAMSIZ;

// libnftnl's rule user data, which `nft list ruleset` reads: type-length-value items, one
// byte each for type and length; the comment is a NUL-terminated string of at most 128
// bytes with its NUL.
pub const NFTNL_UDATA_RULE_COMMENT: u8 = 0;
pub const NFTNL_UDATA_COMMENT_MAXLEN: usize = 128;
