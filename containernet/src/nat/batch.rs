//! One nftables batch on a netfilter netlink socket, and the kernel's answers to it.
//!
//! nftables changes in batches: a begin message, the commands, an end message, sent in one
//! datagram; the kernel applies all of the commands or none (a transaction). Every command
//! asks for an answer (NLM_F_ACK), and the kernel answers each, 0 or an errno, once it has
//! taken the whole batch; so a refusal names the command that failed. The socket is opened
//! for the batch, in the calling thread's network namespace, and closed after it.

use std::collections::BTreeSet;

use netlink_packet_core::{
    DecodeError, Emitable, ErrorBuffer, ErrorMessage, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, Parseable, NLMSG_ALIGNTO, NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::wire;
use crate::NetError;

/// One command of a batch: an nftables message (family ip), its netlink flags beyond
/// REQUEST and ACK (NLM_F_CREATE, NLM_F_APPEND), and what it does in words, for errors.
#[derive(Debug, Clone)]
pub struct Command {
    pub message: NfTablesMessage,
    pub flags: u16,
    pub what: String,
}

/// The first sequence number of a batch; each batch has a socket of its own, so any does.
const FIRST_SEQUENCE: u32 = 1;
/// How long to wait for the answers. The kernel queues them while it takes the batch, so
/// they are there when sending returns; this only keeps a lost answer from hanging.
const ANSWER_TIMEOUT_SECONDS: i64 = 5;
/// Socket buffer room: the batch goes in one datagram, and every answer is queued before
/// the first is read. An answer takes well under this much of the receive buffer.
const MIN_BUFFER: usize = 256 * 1024;
const ROOM_PER_ANSWER: usize = 2048;

/// Sends `commands` as one batch and waits for every answer: Ok when the kernel took all
/// of them, else the first refusal, naming its command.
pub fn run(commands: &[Command]) -> Result<(), NetError> {
    let batch = encode(commands, FIRST_SEQUENCE);
    let socket = open(batch.len(), commands.len())?;
    let sent = socket
        .send(&batch, 0)
        .map_err(io("sending the batch".into()))?;
    if sent != batch.len() {
        return Err(NetError::NfTablesIo {
            action: format!("sending the batch: {sent} of {} bytes sent", batch.len()),
            source: std::io::ErrorKind::WriteZero.into(),
        });
    }
    let mut answers = Answers::new(commands, FIRST_SEQUENCE);
    while !answers.pending.is_empty() {
        let (datagram, _) = socket.recv_from_full().map_err(io(format!(
            "waiting for the kernel's answers ({} of {} missing after {ANSWER_TIMEOUT_SECONDS} s at most)",
            answers.pending.len(),
            commands.len()
        )))?;
        answers.read(&datagram)?;
    }
    Ok(())
}

fn io(action: String) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::NfTablesIo { action, source }
}

/// A netfilter netlink socket bound to the kernel, with room for the batch and its answers.
fn open(batch_len: usize, commands: usize) -> Result<Socket, NetError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| {
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EPROTONOSUPPORT) => NetError::NoNfTables {
                what: "no netfilter netlink socket (nfnetlink)".into(),
            },
            _ => io("opening a netfilter netlink socket".into())(e),
        }
    })?;
    socket
        .bind_auto()
        .map_err(io("binding the netfilter netlink socket".into()))?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(io(
        "connecting the netfilter netlink socket to the kernel".into(),
    ))?;
    // A refusal then echoes only the refused message's header, not the whole message: its
    // sequence number is all that is read of it.
    socket
        .set_cap_ack(true)
        .map_err(io("asking for short answers".into()))?;
    let sys = |action: &str| {
        let action = action.to_owned();
        move |e: Errno| NetError::NfTablesIo {
            action,
            source: e.into(),
        }
    };
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::new(ANSWER_TIMEOUT_SECONDS, 0),
    )
    .map_err(sys("setting the answers' timeout"))?;
    // The forced sizes pass the system's limits (net.core.wmem_max, rmem_max); they need
    // CAP_NET_ADMIN, as changing nftables does.
    setsockopt(
        &socket,
        sockopt::SndBufForce,
        &MIN_BUFFER.max(batch_len * 2),
    )
    .map_err(sys("making room for the batch (needs CAP_NET_ADMIN)"))?;
    setsockopt(
        &socket,
        sockopt::RcvBufForce,
        &MIN_BUFFER.max((commands + 2) * ROOM_PER_ANSWER),
    )
    .map_err(sys("making room for the answers (needs CAP_NET_ADMIN)"))?;
    Ok(socket)
}

/// The batch's bytes: begin, `commands` (each asking for an answer), end, numbered from
/// `first`.
fn encode(commands: &[Command], first: u32) -> Vec<u8> {
    // The begin and end messages are nfnetlink's own; their resource id names the
    // subsystem the batch is for.
    let control = |message| {
        let header = NetfilterHeader::new(
            NetfilterProtoFamily::Unspec,
            wire::NFNETLINK_V0,
            wire::NFNL_SUBSYS_NFTABLES,
        );
        (NetfilterMessage::new(header, message), NLM_F_REQUEST)
    };
    let command = |c: &Command| {
        let header = NetfilterHeader::new(NetfilterProtoFamily::IPv4, wire::NFNETLINK_V0, 0);
        (
            NetfilterMessage::new(header, c.message.clone()),
            NLM_F_REQUEST | NLM_F_ACK | c.flags,
        )
    };
    let messages = std::iter::once(control(ControlMessage::BatchBegin))
        .chain(commands.iter().map(command))
        .chain(std::iter::once(control(ControlMessage::BatchEnd)));
    let mut out = Vec::new();
    for (sequence, (message, flags)) in (first..).zip(messages) {
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        message.finalize();
        let start = out.len();
        out.resize(start + message.buffer_len(), 0);
        message.serialize(&mut out[start..]);
    }
    out
}

/// The answers still awaited, by sequence number.
struct Answers<'a> {
    commands: &'a [Command],
    first: u32,
    pending: BTreeSet<u32>,
}

impl<'a> Answers<'a> {
    fn new(commands: &'a [Command], first: u32) -> Self {
        // The commands follow the begin message.
        let pending = (1..=commands.len() as u32).map(|i| first + i).collect();
        Answers {
            commands,
            first,
            pending,
        }
    }

    /// Takes the answers in one datagram; the first refusal is the error.
    fn read(&mut self, mut datagram: &[u8]) -> Result<(), NetError> {
        while !datagram.is_empty() {
            let buffer = NetlinkBuffer::new_checked(datagram).map_err(undecodable)?;
            if buffer.message_type() == NLMSG_ERROR {
                let payload = buffer.payload();
                let error = ErrorBuffer::new_checked(&payload)
                    .and_then(|b| ErrorMessage::parse(&b))
                    .map_err(undecodable)?;
                self.answer(&error)?;
            }
            // Nothing else is sent to this socket: no dump, no echo, no group.
            let len = (buffer.length() as usize).next_multiple_of(NLMSG_ALIGNTO.into());
            datagram = datagram.get(len..).unwrap_or_default();
        }
        Ok(())
    }

    fn answer(&mut self, error: &ErrorMessage) -> Result<(), NetError> {
        // The answered message's header comes back after the errno.
        let header_len = NetlinkHeader::default().buffer_len();
        let header = error.header.get(..header_len).ok_or_else(|| {
            undecodable(DecodeError::from(
                "an answer without the header of the message it answers",
            ))
        })?;
        let sequence = NetlinkBuffer::new(header).sequence_number();
        match error.code {
            None => {
                self.pending.remove(&sequence);
                Ok(())
            }
            Some(code) => Err(self.refusal(sequence, Errno::from_raw(-code.get()))),
        }
    }

    fn refusal(&self, sequence: u32, errno: Errno) -> NetError {
        let index = sequence.wrapping_sub(self.first) as usize;
        let what = match index.checked_sub(1).and_then(|i| self.commands.get(i)) {
            Some(command) => command.what.clone(),
            // nfnetlink refuses the batch's begin message when it has no nftables.
            None if index == 0 && errno == Errno::EOPNOTSUPP => {
                return NetError::NoNfTables {
                    what: format!("nfnetlink refused an nftables batch: {errno}"),
                }
            }
            None if index == 0 => "the batch's begin message".into(),
            None if index == self.commands.len() + 1 => "the batch's end message".into(),
            None => format!("a message it was not sent (sequence number {sequence})"),
        };
        NetError::NfTablesRefused { what, errno }
    }
}

fn undecodable(e: DecodeError) -> NetError {
    NetError::NfTablesIo {
        action: "reading the kernel's answer".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
    use netlink_packet_netfilter::nftables::{ChainAttribute, NfTablesMessage, RuleAttribute};
    use netlink_packet_netfilter::{NetfilterMessageInner, NetfilterSubsystem};
    use std::num::NonZeroI32;

    use crate::nat::{ruleset, Forward, Protocol, Rules};

    fn rules() -> Rules {
        Rules {
            bridge: "cloudos0".into(),
            subnet: "10.250.3.0/24".parse().unwrap(),
            forwards: vec![Forward {
                protocol: Protocol::Udp,
                host_port: 5353,
                address: "10.250.3.9".parse().unwrap(),
                container_port: 53,
            }],
            mesh_link: Some("cloudos-wg".into()),
            node_ports: vec![(Protocol::Tcp, 9101)],
            blocked: vec!["192.0.2.10".parse().unwrap()],
            balances: vec![super::super::Balance {
                address: "10.251.0.1".parse().unwrap(),
                backends: vec!["10.250.3.9".parse().unwrap(), "10.250.4.2".parse().unwrap()],
                ports: vec![super::super::RoutedPort {
                    protocol: Protocol::Tcp,
                    host_port: 8080,
                    container_port: 80,
                }],
            }],
        }
    }

    /// The batch's messages as the kernel reads them: header, and the netfilter message.
    fn decode(mut bytes: &[u8]) -> Vec<(NetlinkHeader, NetfilterMessage)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = NetlinkBuffer::new_checked(bytes).unwrap().length() as usize;
            assert_eq!(len % 4, 0, "messages stay aligned");
            let message = NetlinkMessage::<NetfilterMessage>::deserialize(&bytes[..len]).unwrap();
            match message.payload {
                NetlinkPayload::InnerMessage(inner) => out.push((message.header, inner)),
                other => panic!("{other:?}"),
            }
            bytes = &bytes[len..];
        }
        out
    }

    #[test]
    fn a_batch_is_begin_numbered_commands_asking_for_answers_and_end() {
        let commands = ruleset::replace(&rules()).unwrap();
        let messages = decode(&encode(&commands, 41));
        assert_eq!(messages.len(), commands.len() + 2);
        for (i, (header, _)) in messages.iter().enumerate() {
            assert_eq!(header.sequence_number, 41 + i as u32);
            assert_ne!(header.flags & NLM_F_REQUEST, 0);
        }
        let (begin, end) = (&messages[0], &messages[messages.len() - 1]);
        for (header, message) in [begin, end] {
            assert_eq!(
                header.flags, NLM_F_REQUEST,
                "begin and end ask for no answer"
            );
            assert_eq!(message.subsys(), NetfilterSubsystem::None);
            assert_eq!(message.header.res_id, wire::NFNL_SUBSYS_NFTABLES);
        }
        assert_eq!(
            begin.1.inner,
            NetfilterMessageInner::None(ControlMessage::BatchBegin)
        );
        assert_eq!(
            end.1.inner,
            NetfilterMessageInner::None(ControlMessage::BatchEnd)
        );
        for ((header, message), command) in messages[1..].iter().zip(&commands) {
            assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_ACK | command.flags);
            assert_eq!(message.header.family, NetfilterProtoFamily::IPv4);
            // What the kernel reads back is what was built, attribute for attribute.
            assert_eq!(
                message.inner,
                NetfilterMessageInner::NfTables(command.message.clone())
            );
        }
        let rule = messages.iter().find_map(|(header, m)| match &m.inner {
            NetfilterMessageInner::NfTables(NfTablesMessage::NewRule(r)) => Some((header, r)),
            _ => None,
        });
        let (header, rule) = rule.unwrap();
        assert_eq!(
            header.flags & (NLM_F_CREATE | NLM_F_APPEND),
            NLM_F_CREATE | NLM_F_APPEND
        );
        assert!(rule
            .attributes
            .contains(&RuleAttribute::Chain("postrouting".into())));
        let chain = messages.iter().find_map(|(_, m)| match &m.inner {
            NetfilterMessageInner::NfTables(NfTablesMessage::NewChain(c)) => Some(c),
            _ => None,
        });
        assert!(chain
            .unwrap()
            .attributes
            .contains(&ChainAttribute::Type("nat".into())));
    }

    /// The kernel's answer to the message numbered `sequence`: `errno`, or 0 (an ack).
    fn answer(sequence: u32, errno: i32) -> Vec<u8> {
        let mut echoed = NetlinkHeader::default();
        echoed.sequence_number = sequence;
        echoed.length = 123;
        let mut header_bytes = vec![0; echoed.buffer_len()];
        echoed.emit(&mut header_bytes);
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(-errno);
        error.header = header_bytes;
        let mut message = NetlinkMessage::<NetfilterMessage>::new(
            NetlinkHeader::default(),
            NetlinkPayload::Error(error),
        );
        message.finalize();
        let mut bytes = vec![0; message.buffer_len()];
        message.serialize(&mut bytes);
        bytes
    }

    #[test]
    fn answers_are_counted_and_a_refusal_names_its_command() {
        let commands = ruleset::replace(&rules()).unwrap();
        let mut answers = Answers::new(&commands, 7);
        assert_eq!(answers.pending.len(), commands.len());
        // Several answers in one datagram, as the kernel sends them.
        let acks: Vec<u8> = (8..8 + commands.len() as u32 - 1)
            .flat_map(|s| answer(s, 0))
            .collect();
        answers.read(&acks).unwrap();
        assert_eq!(answers.pending.len(), 1);
        answers.read(&answer(7 + commands.len() as u32, 0)).unwrap();
        assert!(answers.pending.is_empty());

        let mut answers = Answers::new(&commands, 7);
        let last_rule = commands.len() as u32 + 7;
        let err = answers
            .read(&[answer(8, 0), answer(last_rule, Errno::ENOENT as i32)].concat())
            .unwrap_err();
        match &err {
            NetError::NfTablesRefused { what, errno } => {
                assert_eq!(*errno, Errno::ENOENT);
                assert_eq!(what, &commands.last().unwrap().what);
            }
            other => panic!("{other:?}"),
        }
        let shown = err.to_string();
        assert!(
            shown.contains(
                "the rule `iifname \"cloudos0\" ip daddr 192.0.2.10 drop` in the chain forward"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("nft_chain_nat"),
            "says which modules: {shown}"
        );

        let err = Answers::new(&commands, 7)
            .read(&answer(7, Errno::EOPNOTSUPP as i32))
            .unwrap_err();
        assert!(matches!(err, NetError::NoNfTables { .. }), "{err}");
        let err = Answers::new(&commands, 7)
            .read(&answer(7, 0)[..10])
            .unwrap_err();
        assert!(
            matches!(err, NetError::NfTablesIo { .. }),
            "a cut answer: {err}"
        );
    }

    /// Runs `work` on a thread of its own network namespace (this host's is never touched).
    fn in_new_namespace<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("a namespace");
            work()
        })
        .join()
        .expect("the namespace's thread")
    }

    #[test]
    fn the_kernel_takes_a_batch_whole_or_not_at_all_and_names_the_refused_message() {
        cloudos_testkit::require!(cloudos_testkit::root("nftables in a network namespace"));
        in_new_namespace(|| {
            let mut commands = ruleset::replace(&rules()).unwrap();
            let mut bogus = commands.last().unwrap().clone();
            let NfTablesMessage::NewRule(rule) = &mut bogus.message else {
                panic!("{bogus:?}")
            };
            for attribute in &mut rule.attributes {
                if let RuleAttribute::Expressions(exprs) = attribute {
                    exprs.push(
                        netlink_packet_netfilter::nftables::Expressions::Other {
                            expression_type: "cloudos-none".into(),
                            attributes: vec![],
                        }
                        .into(),
                    );
                }
            }
            bogus.what = "the rule with an expression no kernel has".into();
            commands.push(bogus);
            match run(&commands) {
                Err(NetError::NfTablesRefused { what, errno }) => {
                    assert_eq!(what, "the rule with an expression no kernel has");
                    assert_eq!(errno, Errno::ENOENT);
                }
                other => panic!("{other:?}"),
            }
            // Nothing of that batch was applied: the table it made is not there to delete.
            let delete = &ruleset::remove()[1..];
            match run(delete) {
                Err(NetError::NfTablesRefused { what, errno }) => {
                    assert_eq!(errno, Errno::ENOENT);
                    assert_eq!(what, "deleting the table (ip cloudos)");
                }
                other => panic!("{other:?}"),
            }
            // A large table goes in one batch: a thousand published ports.
            let mut many = rules();
            many.forwards = (1..=1000)
                .map(|port| Forward {
                    protocol: Protocol::Tcp,
                    host_port: 20000 + port,
                    address: "10.250.3.9".parse().unwrap(),
                    container_port: port,
                })
                .collect();
            crate::nat::apply(&many).expect("a thousand forwards");
            run(delete).expect("the table is there now");
        });
    }
}
