//! Join latency: `nodeos agent` started as a process on host 10.77.0.3 of a namespace
//! bridge, timed until the master at 10.77.0.2 lists it Ready; the clock reads the node list
//! every 25 ms from the bridge (10.77.0.1), as an admin would.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cloudos_cluster::api::NodeState;
use cloudos_cluster::api::TokenCreateRequest;
use cloudos_cluster::client::{self, ApiClient};
use cloudos_cluster::Role;
use cloudos_tests::{NetHost, TestNet};

use crate::procs::{enter_netns, start_master, NodeosProc};

const POLL: Duration = Duration::from_millis(25);
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct JoinResult {
    /// With `--master ADDRESS`.
    pub direct: Vec<Duration>,
    /// Without an address: the master found by mDNS.
    pub mdns: Vec<Duration>,
}

pub fn run(nodeos: &Path, runs: usize) -> anyhow::Result<JoinResult> {
    let net = TestNet::new()?;
    let master_host = NetHost::new(&net, 2)?;
    let agent_host = NetHost::new(&net, 3)?;
    let dir = tempfile::Builder::new()
        .prefix("cloudos-bench-join-")
        .tempdir()?;
    let (_master, token) = start_master(master_host.name(), nodeos, dir.path(), &[])?;
    let addr = format!("{}:9443", master_host.ip());
    let bridge = net.name().to_owned();
    let logs = dir.path().to_owned();
    let nodeos = nodeos.to_owned();
    let agent_ns = agent_host.name().to_owned();
    // This thread joins the bridge's namespace: it is the admin's laptop.
    std::thread::spawn(move || -> anyhow::Result<JoinResult> {
        enter_netns(&bridge)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let admin = client::join(
                &addr,
                &token,
                "bench-admin",
                "x86_64",
                &BTreeMap::new(),
                Some(Role::Admin),
            )
            .await?;
            let api = ApiClient::from_identity(&admin)?;
            let created = api
                .create_token(&TokenCreateRequest {
                    role: Role::Compute,
                    ttl: Some("1h".into()),
                    uses: None,
                    description: "join bench".into(),
                    labels: Default::default(),
                })
                .await?;
            let mut result = JoinResult {
                direct: Vec::new(),
                mdns: Vec::new(),
            };
            for (by_mdns, times) in [(false, &mut result.direct), (true, &mut result.mdns)] {
                for i in 0..runs {
                    let name = format!("{}-{i}", if by_mdns { "mdns" } else { "direct" });
                    let data = logs.join(&name).to_string_lossy().into_owned();
                    let mut args = vec![
                        "agent",
                        "--data-dir",
                        &data,
                        "--name",
                        &name,
                        "--token",
                        &created.token,
                    ];
                    if !by_mdns {
                        args.extend(["--master", &addr]);
                    }
                    let start = Instant::now();
                    let mut agent = NodeosProc::start(&agent_ns, &nodeos, &args, &logs, &name)?;
                    let took = wait_ready(&api, &name, start).await;
                    agent.stop();
                    let took = took
                        .with_context(|| std::fs::read_to_string(&agent.err).unwrap_or_default())?;
                    eprintln!("join {name}: {took:?}");
                    times.push(took);
                }
            }
            Ok(result)
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the join bench thread panicked"))?
}

async fn wait_ready(api: &ApiClient, name: &str, start: Instant) -> anyhow::Result<Duration> {
    loop {
        let nodes = api.nodes().await?;
        if nodes
            .iter()
            .any(|n| n.name == name && n.state == NodeState::Ready)
        {
            return Ok(start.elapsed());
        }
        if start.elapsed() > TIMEOUT {
            bail!("{name} not Ready after {TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}
