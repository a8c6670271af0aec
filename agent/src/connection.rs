//! The agent's one long-lived connection to the master: a WebSocket on
//! `/v1/agent/connect` over an mTLS stream the agent opened (the master never dials a
//! node). Hello, Welcome, then a heartbeat with telemetry every interval the master asked
//! for, until the connection drops, the certificate is due for renewal, or the master
//! evicts the node. Reconnecting is the caller's job.

use std::path::Path;
use std::time::Duration;

use cloudos_cluster::api::{paths, AgentHello, AgentMessage, ErrorCode, Heartbeat, MasterMessage};
use cloudos_cluster::client::{refusal, ApiClient, ClientError};
use cloudos_cluster::nodeops::NodeBoot;
use futures::{SinkExt, StreamExt};
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{self, Message};

use super::telemetry::{arch, nodeos_version, Sampler};

/// How long the master has to answer Hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the master asks for an interval of 0.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// Why a connected session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// The master removed this node; its certificate is revoked.
    Evicted(String),
    /// The certificate is due for renewal; the connection was closed to renew.
    RenewDue,
    /// The connection broke after it was up.
    Lost(String),
    /// The node now reaches the master from another address than the one its hello gave
    /// (a tentative SLAAC address that finished DAD, a new DHCP lease): it says hello
    /// again, at once, so the master and the mesh know where it is.
    Readdressed { from: String, to: String },
}

/// What a session with the master works with: what the node says of itself (labels, data
/// directory) and the parts that serve it (metrics, the workload executor).
pub struct SessionParts<'a> {
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub data_dir: &'a Path,
    pub metrics: &'a super::metrics::NodeMetrics,
    pub executor: &'a super::workloads::Executor,
    /// The node's clock, as the OS reports it.
    pub clock: Option<&'a super::ClockReporter>,
    /// The node's installed system, as the OS reports it.
    pub system: Option<&'a super::SystemReporter>,
    /// Upgrades the master asks for.
    pub upgrader: &'a std::sync::Arc<super::upgrade::Upgrader>,
    /// How the machine reboots, where the node may reboot it.
    pub reboot: Option<&'a super::Reboot>,
    /// Told of each acknowledged heartbeat.
    pub healthy: Option<&'a super::Healthy>,
    /// Where the masters' addresses the master sends are kept.
    pub identity: &'a super::identity::IdentityStore,
}

/// Connects, says Hello and heartbeats until the session ends. An error means the session
/// never came up (master unreachable, handshake refused).
pub async fn session(
    api: &ApiClient,
    facts: &SessionParts<'_>,
    sampler: &mut Sampler,
    renew_at: Instant,
    outbox: &mut tokio::sync::mpsc::Receiver<AgentMessage>,
) -> Result<SessionEnd, ClientError> {
    let addr = api.address();
    let transport = |e: &(dyn std::error::Error + 'static)| ClientError::from_transport(&addr, e);
    let stream = api.connect().await?;
    let master_addr = stream.get_ref().0.peer_addr().ok();
    let local_ip = stream
        .get_ref()
        .0
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    let url = format!("wss://{addr}{}", paths::AGENT_CONNECT);
    let mut ws = match tokio_tungstenite::client_async(url, stream).await {
        Ok((ws, _)) => ws,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let err = refusal(status, response.body().as_deref().unwrap_or_default());
            // A revoked certificate never works again: the node was removed while away. Any
            // other refusal (a 403 for another reason, a proxy's answer) may pass, and must
            // not cost the node its identity.
            if err.code() == Some(ErrorCode::Revoked) {
                return Ok(SessionEnd::Evicted(err.to_string()));
            }
            return Err(err);
        }
        Err(e) => return Err(transport(&e)),
    };

    let hello = AgentMessage::Hello(AgentHello {
        address: local_ip.clone(),
        arch: arch().to_owned(),
        labels: facts.labels.clone(),
        nodeos_version: nodeos_version(),
        runs: facts.executor.runs(),
        boot: super::telemetry::boot_id().map(|id| NodeBoot {
            id,
            rebootable: facts.reboot.is_some(),
        }),
        mesh: facts.executor.mesh_hello(),
    });
    ws.send(to_frame(&hello)).await.map_err(|e| transport(&e))?;
    let interval = match tokio::time::timeout(WELCOME_TIMEOUT, wait_welcome(&mut ws)).await {
        Ok(Ok(Welcomed::Welcome {
            interval,
            subnet,
            range,
        })) => {
            // Before any assignment: they come after the welcome.
            facts
                .executor
                .set_subnet(subnet.as_deref(), range.as_deref())
                .await;
            Duration::from_secs(interval).max(MIN_INTERVAL)
        }
        Ok(Ok(Welcomed::Evicted(reason))) => return Ok(SessionEnd::Evicted(reason)),
        Ok(Err(e)) => return Err(transport(&e)),
        Err(_) => {
            return Err(ClientError::Protocol {
                addr,
                why: "no welcome within 10s of the hello".into(),
            })
        }
    };
    log::info!("connected to master at {addr}");
    if let Some(std::net::SocketAddr::V4(master)) = master_addr {
        facts.executor.set_master(*master.ip()).await;
    }
    facts.metrics.connected(true);
    facts.executor.set_api(api.clone());
    facts.upgrader.set_api(api.clone());
    let said = Said {
        master: master_addr,
        address: local_ip,
    };
    let end = beat_until_the_end(&mut ws, facts, sampler, interval, &said, renew_at, outbox).await;
    facts.metrics.connected(false);
    let _ = ws.close(None).await;
    Ok(end)
}

/// Where the hello said the node is, and the master it said it to.
struct Said {
    master: Option<std::net::SocketAddr>,
    address: String,
}

impl Said {
    /// The address the kernel would now pick to reach the master, when it is another than
    /// the hello's. A UDP socket that is connected sends nothing: it only asks for a route.
    fn moved_to(&self) -> Option<String> {
        let master = self.master?;
        let any: std::net::SocketAddr = match master {
            std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let probe = std::net::UdpSocket::bind(any).ok()?;
        probe.connect(master).ok()?;
        let now = probe.local_addr().ok()?.ip().to_string();
        (now != self.address).then_some(now)
    }
}

/// Heartbeats on an established connection until it ends.
async fn beat_until_the_end<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    facts: &SessionParts<'_>,
    sampler: &mut Sampler,
    interval: Duration,
    said: &Said,
    renew_at: Instant,
    outbox: &mut tokio::sync::mpsc::Receiver<AgentMessage>,
) -> SessionEnd
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    // Three missed answers in a row: the connection is dead even if TCP has not noticed
    // (a master that lost power sends no FIN).
    let silence_limit = cloudos_cluster::api::agent_silence_limit(interval);
    let mut last_heard = Instant::now();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seq = 0u64;
    // The last heartbeat sent, to time the master's acknowledgement.
    let mut in_flight: Option<(u64, Instant)> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if last_heard.elapsed() > silence_limit {
                    return SessionEnd::Lost(format!(
                        "no answer for {}s", last_heard.elapsed().as_secs()
                    ));
                }
                if let Some(to) = said.moved_to() {
                    return SessionEnd::Readdressed { from: said.address.clone(), to };
                }
                seq += 1;
                let mut telemetry = sampler.sample(facts.data_dir);
                telemetry.clock = facts.clock.and_then(|report| report());
                telemetry.system = system_report(facts).map(Box::new);
                facts.metrics.sampled(&telemetry);
                facts.metrics.workloads(facts.executor.footprint());
                let runs = facts.executor.active_runs();
                let beat = AgentMessage::Heartbeat(Heartbeat {
                    seq,
                    sent_at: OffsetDateTime::now_utc(),
                    telemetry,
                    usage: facts.executor.usage(&runs),
                    runs,
                });
                in_flight = Some((seq, Instant::now()));
                if let Err(e) = ws.send(to_frame(&beat)).await {
                    return SessionEnd::Lost(lost_reason(&e));
                }
            }
            frame = ws.next() => {
                last_heard = Instant::now();
                match frame {
                    None => return SessionEnd::Lost("the master closed the connection".into()),
                    Some(Err(e)) => return SessionEnd::Lost(lost_reason(&e)),
                    Some(Ok(Message::Close(close))) => {
                        let why = close.map(|c| c.reason.to_string()).filter(|r| !r.is_empty());
                        return SessionEnd::Lost(format!(
                            "the master closed the connection{}",
                            why.map(|r| format!(" ({r})")).unwrap_or_default()
                        ));
                    }
                    Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
                        Ok(MasterMessage::Evicted { reason }) => return SessionEnd::Evicted(reason),
                        Ok(MasterMessage::HeartbeatAck { seq: acked }) => {
                            if let Some((_, sent)) = in_flight.take_if(|(s, _)| *s == acked) {
                                facts.metrics.acknowledged(sent.elapsed());
                            }
                            if let Some(healthy) = facts.healthy {
                                healthy();
                            }
                        }
                        Ok(MasterMessage::Welcome { .. }) => {}
                        Ok(MasterMessage::Masters { addresses }) => {
                            if facts.identity.masters() != addresses {
                                log::info!("the masters are at {}", addresses.join(", "));
                                if let Err(e) = facts.identity.save_masters(&addresses) {
                                    log::warn!("cannot keep the masters' addresses: {e}");
                                }
                            }
                        }
                        Ok(MasterMessage::Mesh { peers }) => facts.executor.set_mesh(peers).await,
                        Ok(MasterMessage::Services(table)) => facts.executor.set_services(table).await,
                        Ok(MasterMessage::Reboot { reason }) => reboot(facts.reboot, &reason),
                        Ok(workload @ (MasterMessage::Assign(_)
                        | MasterMessage::Stop { .. }
                        | MasterMessage::RemoveVolume { .. }
                        | MasterMessage::SetVolumeLimit { .. }
                        | MasterMessage::LogOffsets { .. })) => facts.executor.handle(workload),
                        Ok(MasterMessage::Upgrade { id, version, allow_downgrade }) => {
                            facts.upgrader.start(id, version, allow_downgrade);
                        }
                        Ok(MasterMessage::Rollback { id }) => facts.upgrader.roll_back(id),
                        Err(e) => log::debug!("ignoring a message from the master: {e}"),
                    },
                    // Pings are answered by tungstenite itself on the next write.
                    Some(Ok(_)) => {}
                }
            }
            Some(message) = outbox.recv() => {
                if let Err(e) = ws.send(to_frame(&message)).await {
                    return SessionEnd::Lost(lost_reason(&e));
                }
            }
            _ = tokio::time::sleep_until(renew_at) => return SessionEnd::RenewDue,
        }
    }
}

/// What the OS says of its slot, with the upgrade this agent runs (if any) in place of the
/// OS's record of the last one: the live state is the newer.
fn system_report(facts: &SessionParts<'_>) -> Option<cloudos_cluster::api::SystemReport> {
    let mut report = facts.system.and_then(|report| report());
    if let Some(live) = facts.upgrader.report() {
        let system = report.get_or_insert(cloudos_cluster::api::SystemReport {
            slot: None,
            confirmed: false,
            upgrade: None,
        });
        system.upgrade = Some(live);
    }
    report
}

/// The master asks for a reboot: handed to the machine's owner; the session goes on
/// until the machine goes down (the master sends it only to a node that said it can).
fn reboot(how: Option<&super::Reboot>, reason: &str) {
    let Some(how) = how else {
        log::warn!(
            "the master asked for a reboot ({reason}), but this node does not reboot its machine"
        );
        return;
    };
    log::info!("rebooting as the master asks ({reason})");
    if let Err(e) = how() {
        log::error!("cannot reboot: {e}");
    }
}

enum Welcomed {
    Welcome {
        interval: u64,
        subnet: Option<String>,
        range: Option<String>,
    },
    Evicted(String),
}

async fn wait_welcome<S>(ws: &mut S) -> Result<Welcomed, tungstenite::Error>
where
    S: futures::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    while let Some(frame) = ws.next().await {
        if let Message::Text(text) = frame? {
            match serde_json::from_str(text.as_str()) {
                Ok(MasterMessage::Welcome {
                    heartbeat_interval_secs,
                    subnet,
                    range,
                    ..
                }) => {
                    return Ok(Welcomed::Welcome {
                        interval: heartbeat_interval_secs,
                        subnet,
                        range,
                    })
                }
                Ok(MasterMessage::Evicted { reason }) => return Ok(Welcomed::Evicted(reason)),
                _ => {}
            }
        }
    }
    Err(tungstenite::Error::ConnectionClosed)
}

/// Why a connection that was up broke, in words: a master that stopped or lost power shows
/// as an end of stream without a TLS or WebSocket goodbye.
fn lost_reason(e: &tungstenite::Error) -> String {
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the master went away without closing the connection".into()
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            "the master went away without closing the connection".into()
        }
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            "the master closed the connection".into()
        }
        other => match ClientError::from_transport("", other) {
            ClientError::Unreachable { reason, .. } | ClientError::Tls { reason, .. } => reason,
            classified => classified.to_string(),
        },
    }
}

fn to_frame(message: &AgentMessage) -> Message {
    // Serializing these types cannot fail: they hold only strings, numbers and maps.
    Message::text(serde_json::to_string(message).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::Said;

    #[test]
    fn a_node_that_still_reaches_the_master_from_its_hellos_address_has_not_moved() {
        let said = Said {
            master: Some("127.0.0.1:9443".parse().unwrap()),
            address: "127.0.0.1".into(),
        };
        assert_eq!(said.moved_to(), None);
    }

    #[test]
    fn a_node_whose_route_to_the_master_now_starts_at_another_address_has_moved_there() {
        let said = Said {
            master: Some("127.0.0.1:9443".parse().unwrap()),
            address: "fe80::5054:ff:fe78:1".into(),
        };
        assert_eq!(said.moved_to().as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn a_session_without_a_known_master_address_never_counts_as_moved() {
        let said = Said {
            master: None,
            address: "10.0.0.9".into(),
        };
        assert_eq!(said.moved_to(), None);
    }
}
