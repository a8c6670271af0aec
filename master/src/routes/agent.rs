//! The agents' side of the API: `GET /v1/agent/connect`, the one long-lived WebSocket of
//! each node (hello → welcome, heartbeat → ack, eviction), and `POST /v1/heartbeat` for
//! agents that cannot hold it open. Heartbeats update the registry in memory only.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::response::Response;
use axum::Json;
use cloudos_cluster::api::{AgentMessage, Heartbeat, MasterMessage};
use time::OffsetDateTime;

use super::caller::NodeCaller;
use super::extract::ApiJson;
use super::AppState;
use crate::error::ApiError;
use crate::health;
use crate::roster::{self, Control};
use crate::state::MasterState;
use crate::workloads;

/// How long an agent may take to say hello after connecting.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Agent messages are small; this bounds what one connection can make the master buffer.
const MAX_MESSAGE: usize = 64 * 1024;
/// Small buffers: the master holds thousands of these connections.
const READ_BUFFER: usize = 4 * 1024;

/// WebSocket close codes (RFC 6455).
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_UNSUPPORTED: u16 = 1003;
const CLOSE_INVALID: u16 = 1007;
const CLOSE_POLICY: u16 = 1008;

fn not_registered(name: &str) -> String {
    format!("node {name} is not registered with this master (it was removed); join it again with a new token")
}

pub async fn connect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    NodeCaller(identity): NodeCaller,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::BadRequest(format!("this endpoint needs a WebSocket upgrade: {e}"))
    })?;
    if !state.roster.contains(&identity.name) {
        return Err(ApiError::NodeRemoved(not_registered(&identity.name)));
    }
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| session(state, identity.name, peer.ip(), socket)))
}

async fn send(socket: &mut WebSocket, message: &MasterMessage) -> bool {
    match serde_json::to_string(message) {
        Ok(text) => socket.send(Message::text(text)).await.is_ok(),
        Err(_) => false,
    }
}

/// Sends a close frame; the reason is cut to the 123 bytes a close frame can carry.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(120);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// Waits for the agent's hello.
async fn hello(socket: &mut WebSocket) -> Result<cloudos_cluster::api::AgentHello, String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv())
        .await
        .map_err(|_| "no hello within 10s".to_owned())?;
    match first {
        Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
            Ok(AgentMessage::Hello(hello)) => Ok(hello),
            Ok(_) => Err("the first message must be a hello".to_owned()),
            Err(e) => Err(format!("not an agent message: {e}")),
        },
        _ => Err("the first message must be a hello (JSON text)".to_owned()),
    }
}

async fn session(
    state: Arc<MasterState>,
    name: String,
    seen: std::net::IpAddr,
    mut socket: WebSocket,
) {
    let hello = match hello(&mut socket).await {
        Ok(hello) => hello,
        Err(why) => {
            log::debug!("agent connection of {name} refused: {why}");
            return close(&mut socket, CLOSE_POLICY, &why).await;
        }
    };
    let Some((conn_id, mut control, transition)) =
        state
            .roster
            .connect(&name, &hello, OffsetDateTime::now_utc())
    else {
        return close(&mut socket, CLOSE_POLICY, &not_registered(&name)).await;
    };
    log::debug!("agent of {name} connected (connection {conn_id})");
    health::log_transitions(transition.as_slice());
    let subnet = container_subnet(&state, &name);
    let welcome = MasterMessage::Welcome {
        cluster_name: state.cluster_name.clone(),
        heartbeat_interval_secs: state.config.heartbeat_interval.as_secs().max(1),
        range: subnet
            .is_some()
            .then(|| state.config.container_range.to_string()),
        subnet,
    };
    if send(&mut socket, &welcome).await {
        // Its peers through the control channel at once; every other node's soon when it
        // came or moved (a burst of hellos is one announcement).
        let ranges = &state.config.mesh_endpoint_ranges;
        if state
            .roster
            .set_mesh(&name, mesh_end(&name, &hello, seen, ranges))
        {
            state.mesh.request();
        }
        crate::mesh::announce_to(&state.roster, &state.config.node_name, &name);
        // The other masters to turn to, when there are several.
        if let Some(masters) = crate::ha::masters::current(&state) {
            state.roster.send(&name, masters);
        }
        // The services the node routes; later changes come as they happen.
        let table = state.workloads.routed();
        state.roster.send(&name, MasterMessage::Services(table));
        // Reconciliation messages go through the control channel, after the welcome.
        let (s, node, runs) = (Arc::clone(&state), name.clone(), hello.runs);
        let reconciled =
            tokio::task::spawn_blocking(move || workloads::on_hello(&s, &node, &runs)).await;
        if let Err(e) = reconciled {
            log::error!("reconciling the runs of {name} failed: {e}");
        }
        run(&state, &name, conn_id, &mut socket, &mut control).await;
    }
    let transition = state.roster.disconnect(&name, conn_id);
    health::log_transitions(transition.as_slice());
}

/// The node's container subnet, given now if it has none. None when the range overlaps a
/// network the master is on (checked at each hello: DHCP may move the master), or is full;
/// the node then still runs `host` and `none` containers, and the log says why.
fn container_subnet(state: &MasterState, name: &str) -> Option<String> {
    let range = &state.config.container_range;
    let given = match range.check_lan(&crate::addresses::host_ipv4_networks()) {
        Ok(()) => state.roster.subnet(name, range)?,
        Err(e) => Err(e),
    };
    match given {
        Ok(subnet) => Some(subnet.to_string()),
        Err(e) => {
            log::error!("node {name} gets no container subnet (the setting container_range): {e}");
            None
        }
    }
}

/// The node's end of the mesh from its hello; a key that is not one is logged and ignored
/// (the node then has no peers, and no node has it as one).
fn mesh_end(
    name: &str,
    hello: &cloudos_cluster::api::AgentHello,
    seen: std::net::IpAddr,
    endpoint_ranges: &[ipnet::IpNet],
) -> Option<roster::MeshEnd> {
    let mesh = hello.mesh.as_ref()?;
    if let Err(e) = cloudos_cluster::mesh::check_key(&mesh.public_key) {
        log::warn!("node {name} left out of the mesh: {e}");
        return None;
    }
    // An IPv4-mapped address is the IPv4 peer it stands for.
    let seen = match seen {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(seen),
        v4 => v4,
    };
    let endpoint = mesh.endpoint.filter(|&endpoint| {
        let allowed = crate::mesh::endpoint_allowed(endpoint, seen, endpoint_ranges);
        if !allowed {
            log::warn!(
                "node {name} names {endpoint} as its mesh endpoint, but its connection comes \
                 from {seen}: ignored, it is planned as behind NAT (a master's \
                 mesh_endpoint_ranges may allow that address)"
            );
        }
        allowed
    });
    Some(roster::MeshEnd {
        public_key: mesh.public_key.clone(),
        port: mesh.port,
        address: hello.address.clone(),
        seen,
        endpoint,
    })
}

/// Serves one connection until it closes, is evicted or replaced. Pings it a few times
/// within `not_ready_after` (its agent answers at once, whatever its heartbeat interval):
/// any frame from it says the node lives.
async fn run(
    state: &Arc<MasterState>,
    name: &str,
    conn_id: u64,
    socket: &mut WebSocket,
    control: &mut tokio::sync::mpsc::Receiver<Control>,
) {
    // A connection that sends nothing of its own (no heartbeat, no report: pongs to our
    // pings do not count) long after the node would count as NotReady only holds a
    // connection slot: close it. The agent reconnects when it lives.
    let silence = (state.config.not_ready_after * 5)
        .max(state.config.heartbeat_interval * 3)
        .max(Duration::from_secs(1));
    let mut deadline = tokio::time::Instant::now() + silence;
    let mut pings = tokio::time::interval(state.config.ping_interval());
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = pings.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let reason = format!("nothing received for {} s", silence.as_secs());
                log::info!("closing the silent agent connection of {name}: {reason}");
                return close(socket, CLOSE_POLICY, &reason).await;
            }
            command = control.recv() => {
                let (code, reason) = match command {
                    Some(Control::Send(message)) => {
                        if !send(socket, &message).await {
                            return;
                        }
                        continue;
                    }
                    Some(Control::Evict { reason }) => {
                        send(socket, &MasterMessage::Evicted { reason: reason.clone() }).await;
                        (CLOSE_NORMAL, reason)
                    }
                    None => (CLOSE_NORMAL, "replaced by a newer connection of this node".to_owned()),
                };
                return close(socket, code, &reason).await;
            }
            message = socket.recv() => {
                if let Some(Ok(frame)) = &message {
                    health::log_transitions(state.roster.alive(name, conn_id).as_slice());
                    if !matches!(frame, Message::Pong(_)) {
                        deadline = tokio::time::Instant::now() + silence;
                    }
                }
                let text = match message {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        return close(socket, CLOSE_UNSUPPORTED, "send JSON text frames").await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                };
                match serde_json::from_str::<AgentMessage>(text.as_str()) {
                    Ok(AgentMessage::Heartbeat(beat)) => {
                        let started = std::time::Instant::now();
                        let seq = beat.seq;
                        workloads::on_heartbeat_runs(state, name, &beat.runs);
                        state.workloads.usage.note(name, beat.usage);
                        state.roster.note_runs(name, &beat.runs);
                        let now = OffsetDateTime::now_utc();
                        let telemetry = roster::with_clock_skew(beat.telemetry, beat.sent_at, now);
                        match state.roster.heartbeat(name, telemetry, now) {
                            Ok(transition) => health::log_transitions(transition.as_slice()),
                            Err(()) => return,
                        }
                        if !send(socket, &MasterMessage::HeartbeatAck { seq }).await {
                            return;
                        }
                        state.metrics.heartbeat_handled(started.elapsed());
                    }
                    Ok(AgentMessage::Hello(_)) => log::debug!("{name} said hello twice; ignored"),
                    Ok(AgentMessage::Run(report)) => {
                        let (s, node) = (Arc::clone(state), name.to_owned());
                        let _ = tokio::task::spawn_blocking(move || {
                            workloads::on_report(&s, &node, &report)
                        })
                        .await;
                    }
                    Ok(AgentMessage::Log(chunk)) => workloads::on_log(state, name, &chunk),
                    Err(e) => {
                        let reason = format!("not an agent message: {e}");
                        return close(socket, CLOSE_INVALID, &reason).await;
                    }
                }
            }
        }
    }
}

/// `POST /v1/heartbeat`: the same bookkeeping without a connection; answers with the ack.
pub async fn heartbeat(
    State(state): State<AppState>,
    NodeCaller(identity): NodeCaller,
    ApiJson(beat): ApiJson<Heartbeat>,
) -> Result<Json<MasterMessage>, ApiError> {
    let now = OffsetDateTime::now_utc();
    state.roster.note_runs(&identity.name, &beat.runs);
    let telemetry = roster::with_clock_skew(beat.telemetry, beat.sent_at, now);
    let transition = state
        .roster
        .heartbeat(&identity.name, telemetry, now)
        .map_err(|()| ApiError::Forbidden(not_registered(&identity.name)))?;
    health::log_transitions(transition.as_slice());
    Ok(Json(MasterMessage::HeartbeatAck { seq: beat.seq }))
}
