//! Generic netlink, as the mesh uses it: a plain synchronous socket in the calling thread's
//! network namespace, WireGuard's family id asked of the kernel's controller (`nlctrl`)
//! when it opens, then one request at a time: a change, answered by an ack or an errno, or
//! a dump, answered by messages up to NLMSG_DONE. The socket closes with the [`Genl`].

use std::fmt::Debug;

use netlink_packet_core::{
    DecodeError, Emitable, NetlinkBuffer, NetlinkDeserializable, NetlinkMessage, NetlinkPayload,
    ParseableParametrized, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_generic::ctrl::nlas::GenlCtrlAttrs;
use netlink_packet_generic::ctrl::{GenlCtrl, GenlCtrlCmd};
use netlink_packet_generic::{GenlFamily, GenlHeader, GenlMessage};
use netlink_packet_wireguard::WireguardMessage;
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};
use nix::errno::Errno;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use crate::NetError;

/// How long to wait for an answer. The kernel answers at once; this only keeps a lost
/// answer from hanging the caller.
const ANSWER_TIMEOUT_SECONDS: i64 = 5;
/// Send buffer room: a change goes in one message, however many peers it names (about 150
/// bytes a peer with one subnet), so the buffer is made to fit it.
const MIN_BUFFER: usize = 256 * 1024;
/// How often a dump the kernel says was interrupted (the device changed meanwhile) is
/// asked for again before giving up.
const DUMP_TRIES: usize = 3;

/// A generic netlink socket that talks to WireGuard's family.
pub struct Genl {
    socket: Socket,
    family: u16,
    sequence: u32,
}

impl Genl {
    /// Opens the socket and looks up WireGuard's family; a kernel without WireGuard has
    /// none (the lookup tries to load the module first).
    pub fn wireguard() -> Result<Genl, NetError> {
        let mut genl = Genl {
            socket: open()?,
            family: 0,
            sequence: 0,
        };
        let ask = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName(
                WireguardMessage::family_name().into(),
            )],
        };
        let answers = match genl.request(ask, 0, NLM_F_ACK, "looking up its family") {
            Err(NetError::WireGuardRefused {
                errno: Errno::ENOENT,
                ..
            }) => {
                return Err(NetError::NoWireGuard {
                    what: "no generic netlink family wireguard".into(),
                })
            }
            other => other?,
        };
        genl.family = answers
            .iter()
            .flat_map(|answer| &answer.nlas)
            .find_map(|attribute| match attribute {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| {
                undecodable(DecodeError::from(
                    "the controller named no id for the family wireguard",
                ))
            })?;
        Ok(genl)
    }

    /// Sends a change and waits for the kernel's ack; an errno is the error, naming `what`.
    pub fn change(&mut self, message: WireguardMessage, what: &str) -> Result<(), NetError> {
        self.request(message, self.family, NLM_F_ACK, what)
            .map(|_| ())
    }

    /// Asks for a dump and returns all of its messages.
    pub fn dump(
        &mut self,
        message: WireguardMessage,
        what: &str,
    ) -> Result<Vec<WireguardMessage>, NetError> {
        for _ in 1..DUMP_TRIES {
            match self.request(message.clone(), self.family, NLM_F_DUMP, what) {
                Err(NetError::WireGuardRefused {
                    errno: Errno::EINTR,
                    ..
                }) => continue,
                other => return other,
            }
        }
        self.request(message, self.family, NLM_F_DUMP, what)
    }

    /// Sends `payload` to `family` (0: the payload's own static id) with `flags` beyond
    /// NLM_F_REQUEST, and reads answers to it until the ack or NLMSG_DONE; returns the
    /// messages before that. An interrupted dump is EINTR.
    fn request<F>(
        &mut self,
        payload: F,
        family: u16,
        flags: u16,
        what: &str,
    ) -> Result<Vec<F>, NetError>
    where
        F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + Debug,
    {
        self.sequence += 1;
        let sequence = self.sequence;
        let bytes = encode(payload, family, flags, sequence);
        self.room_for(bytes.len())?;
        let sent = self
            .socket
            .send(&bytes, 0)
            .map_err(io(format!("sending the request {what}")))?;
        if sent != bytes.len() {
            return Err(NetError::GenlIo {
                action: format!("sending {what}: {sent} of {} bytes sent", bytes.len()),
                source: std::io::ErrorKind::WriteZero.into(),
            });
        }
        let mut answers = Vec::new();
        let mut interrupted = false;
        loop {
            let (datagram, _) = self.socket.recv_from_full().map_err(io(format!(
                "waiting for the kernel's answer to {what} ({ANSWER_TIMEOUT_SECONDS} s at most)"
            )))?;
            for message in messages::<GenlMessage<F>>(&datagram)? {
                // Anything else is an answer to an earlier request that gave up waiting.
                if message.header.sequence_number != sequence {
                    continue;
                }
                interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
                match message.payload {
                    NetlinkPayload::InnerMessage(answer) => answers.push(answer.payload),
                    NetlinkPayload::Error(e) => match e.code {
                        None => return Ok(answers),
                        Some(code) => {
                            return Err(NetError::WireGuardRefused {
                                what: what.to_owned(),
                                errno: Errno::from_raw(-code.get()),
                            })
                        }
                    },
                    NetlinkPayload::Done(_) if interrupted => {
                        return Err(NetError::WireGuardRefused {
                            what: format!("{what} (the dump was interrupted by a change)"),
                            errno: Errno::EINTR,
                        })
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Noop => {}
                    NetlinkPayload::Overrun(_) => {
                        return Err(undecodable(DecodeError::from(
                            "the kernel's answer overran the socket",
                        )))
                    }
                    _ => {}
                }
            }
        }
    }

    /// A send buffer that takes a message of `len` bytes at once; forcing it past the
    /// system's limit (net.core.wmem_max) needs CAP_NET_ADMIN, as WireGuard does.
    fn room_for(&self, len: usize) -> Result<(), NetError> {
        if len * 2 <= MIN_BUFFER {
            return Ok(());
        }
        setsockopt(&self.socket, sockopt::SndBufForce, &(len * 2)).map_err(|e| NetError::GenlIo {
            action: format!("making room for a {len}-byte request (needs CAP_NET_ADMIN)"),
            source: e.into(),
        })
    }
}

fn io(action: String) -> impl FnOnce(std::io::Error) -> NetError {
    move |source| NetError::GenlIo { action, source }
}

fn undecodable(e: DecodeError) -> NetError {
    NetError::GenlIo {
        action: "reading the kernel's answer".into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    }
}

/// A generic netlink socket bound to the kernel, answers capped to the answered message's
/// header, a timeout on reading.
fn open() -> Result<Socket, NetError> {
    let mut socket =
        Socket::new(NETLINK_GENERIC).map_err(io("opening a generic netlink socket".into()))?;
    socket
        .bind_auto()
        .map_err(io("binding the generic netlink socket".into()))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(io("connecting the generic netlink socket".into()))?;
    // A refusal echoes only the header of the refused message (which holds the private
    // key), not the whole of it: the sequence number is all that is read of it.
    socket
        .set_cap_ack(true)
        .map_err(io("asking for short answers".into()))?;
    setsockopt(
        &socket,
        sockopt::ReceiveTimeout,
        &TimeVal::new(ANSWER_TIMEOUT_SECONDS, 0),
    )
    .map_err(|e| NetError::GenlIo {
        action: "setting the answers' timeout".into(),
        source: e.into(),
    })?;
    Ok(socket)
}

/// A request's bytes: the netlink header (type: the family's id), the generic netlink
/// header, the payload.
fn encode<F>(payload: F, family: u16, flags: u16, sequence: u32) -> Vec<u8>
where
    F: GenlFamily + Emitable + Debug,
{
    let mut message = GenlMessage::from_payload(payload);
    message.set_resolved_family_id(family);
    let mut message = NetlinkMessage::from(message);
    message.header.flags = NLM_F_REQUEST | flags;
    message.header.sequence_number = sequence;
    message.finalize();
    let mut bytes = vec![0; message.buffer_len()];
    message.serialize(&mut bytes);
    bytes
}

/// The netlink messages in one datagram.
fn messages<I: NetlinkDeserializable>(
    mut datagram: &[u8],
) -> Result<Vec<NetlinkMessage<I>>, NetError> {
    let mut out = Vec::new();
    while !datagram.is_empty() {
        let len = NetlinkBuffer::new_checked(datagram)
            .map_err(undecodable)?
            .length() as usize;
        let message = NetlinkMessage::deserialize(&datagram[..len]).map_err(undecodable)?;
        out.push(message);
        let aligned = len.next_multiple_of(netlink_packet_core::NLMSG_ALIGNTO.into());
        datagram = datagram.get(aligned..).unwrap_or_default();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{ErrorMessage, NetlinkHeader};
    use netlink_packet_wireguard::{WireguardAttribute, WireguardCmd};
    use std::num::NonZeroI32;

    #[test]
    fn a_request_is_the_familys_message_numbered_asking_for_its_answer() {
        let message = WireguardMessage {
            cmd: WireguardCmd::SetDevice,
            attributes: vec![WireguardAttribute::ListenPort(51820)],
        };
        let bytes = encode(message.clone(), 0x1f, NLM_F_ACK, 9);
        let decoded = messages::<GenlMessage<WireguardMessage>>(&bytes).unwrap();
        assert_eq!(decoded.len(), 1);
        let header = decoded[0].header;
        assert_eq!(header.message_type, 0x1f, "the family's id");
        assert_eq!(header.flags, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(header.sequence_number, 9);
        assert_eq!(header.length as usize, bytes.len());
        let NetlinkPayload::InnerMessage(genl) = &decoded[0].payload else {
            panic!("{:?}", decoded[0])
        };
        assert_eq!(genl.header.cmd, 1, "WG_CMD_SET_DEVICE");
        assert_eq!(genl.header.version, 1, "WG_GENL_VERSION");
        assert_eq!(genl.payload, message);

        // The controller's lookup goes to its static id, whatever is passed.
        let ask = GenlCtrl {
            cmd: GenlCtrlCmd::GetFamily,
            nlas: vec![GenlCtrlAttrs::FamilyName("wireguard".into())],
        };
        let bytes = encode(ask, 0, NLM_F_ACK, 1);
        assert_eq!(
            NetlinkBuffer::new(&bytes).message_type(),
            netlink_packet_generic::constants::GENL_ID_CTRL
        );
    }

    #[test]
    fn several_answers_in_one_datagram_are_read_in_order() {
        let answer = |sequence, code: i32| {
            let mut error = ErrorMessage::default();
            error.code = NonZeroI32::new(-code);
            error.header = vec![0; 16];
            let mut message = NetlinkMessage::<GenlMessage<WireguardMessage>>::new(
                NetlinkHeader::default(),
                NetlinkPayload::Error(error),
            );
            message.header.sequence_number = sequence;
            message.finalize();
            let mut bytes = vec![0; message.buffer_len()];
            message.serialize(&mut bytes);
            bytes
        };
        let datagram = [answer(3, 0), answer(4, Errno::ENODEV as i32)].concat();
        let read = messages::<GenlMessage<WireguardMessage>>(&datagram).unwrap();
        let codes: Vec<_> = read
            .iter()
            .map(|m| match &m.payload {
                NetlinkPayload::Error(e) => (m.header.sequence_number, e.raw_code()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(codes, [(3, 0), (4, -(Errno::ENODEV as i32))]);
        assert!(messages::<GenlMessage<WireguardMessage>>(&datagram[..7]).is_err());
    }
}
