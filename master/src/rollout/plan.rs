//! The rollout's rules, without I/O: which nodes a request covers and in what order, what
//! refuses it before anything starts, which nodes go next, and what phase the rollout is
//! in. [`super::run`] drives a rollout by these rules.

use cloudos_cluster::api::{NodeInfo, NodeState, UpgradeState};
use cloudos_cluster::rollout::{Rollout, RolloutNode, RolloutPhase, RolloutRequest, RolloutStep};
use cloudos_cluster::Role;
use cloudos_release::Version;

use super::RolloutError;

/// The master as a rollout sees itself.
#[derive(Debug, Clone)]
pub struct MasterSelf {
    pub name: String,
    pub arch: String,
    pub version: String,
    /// Whether this master can upgrade itself (an installed appliance, or a host installed
    /// with the curl line).
    pub can_upgrade: bool,
}

/// The rollout's nodes for `request`: the compute nodes it selects, by name, then the
/// master. Refuses (nothing started) when no compute node matches a selector, when a
/// selected node is not Ready, runs a newer version (unless downgrades are allowed), or
/// already fell back from this release (unless retried), and when a release is missing
/// (`has_release(arch)`).
pub fn choose(
    request: &RolloutRequest,
    nodes: &[NodeInfo],
    master: &MasterSelf,
    has_release: &dyn Fn(&str) -> bool,
) -> Result<Vec<RolloutNode>, RolloutError> {
    let target = Version::parse(&request.version)
        .map_err(|_| RolloutError::BadVersion(request.version.clone()))?;
    if request.max_unavailable == 0 {
        return Err(RolloutError::NoneAvailable);
    }
    let mut chosen = Vec::new();
    let mut problems = Vec::new();
    // The master's own node (a master that runs workloads) is its machine: it is upgraded
    // as the master, last, and never rebooted in the middle of a rollout as a node.
    let compute = nodes
        .iter()
        .filter(|n| n.role == Role::Compute && n.name != master.name);
    for node in compute {
        let selected = request
            .nodes
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v));
        if !selected {
            continue;
        }
        let mut entry = RolloutNode::new(&node.name, &node.arch, false);
        let running = node.telemetry.as_ref().map(|t| t.nodeos_version.clone());
        entry.from = running.clone();
        match running.as_deref().map(Version::parse) {
            Some(Ok(v)) if v == target && !request.allow_downgrade => {
                entry.step = RolloutStep::Skipped;
                entry.detail = Some(format!("already runs {target}"));
            }
            Some(Ok(v)) if v > target && !request.allow_downgrade => problems.push(format!(
                "node {} runs {v}, newer than {target} (pass --allow-downgrade to go back)",
                node.name
            )),
            _ => {}
        }
        if entry.step == RolloutStep::Waiting {
            if node.state != NodeState::Ready {
                problems.push(format!(
                    "node {} is {} (bring it back, or leave it out with --nodes)",
                    node.name,
                    state_word(node.state)
                ));
            }
            if !request.retry_failed {
                if let Some(why) = failed_before(node, &request.version) {
                    problems.push(format!(
                        "node {} already failed to upgrade to {}: {why} (fix the release, or pass --retry-failed)",
                        node.name, request.version
                    ));
                }
            }
            if !has_release(&node.arch) {
                problems.push(format!(
                    "no release {} for {} (node {}); add it with `cloudos release add`",
                    request.version, node.arch, node.name
                ));
            }
        }
        chosen.push(entry);
    }
    if chosen.is_empty() && !request.nodes.is_empty() {
        return Err(RolloutError::NoNodes);
    }
    chosen.sort_by(|a, b| a.name.cmp(&b.name));
    if !request.skip_master {
        let mut me = RolloutNode::new(&master.name, &master.arch, true);
        me.from = Some(master.version.clone());
        match Version::parse(&master.version) {
            Ok(v) if v == target && !request.allow_downgrade => {
                me.step = RolloutStep::Skipped;
                me.detail = Some(format!("already runs {target}"));
            }
            Ok(v) if v > target && !request.allow_downgrade => problems.push(format!(
                "the master runs {v}, newer than {target} (pass --allow-downgrade, or --skip-master)"
            )),
            _ if !master.can_upgrade => {
                me.step = RolloutStep::Skipped;
                me.detail = Some(
                    "this master was installed neither to a disk nor with the curl line, so \
                     nothing may replace its system; upgrade its nodeos by hand"
                        .into(),
                );
            }
            _ if !has_release(&master.arch) => problems.push(format!(
                "no release {} for {} (the master); add it, or pass --skip-master",
                request.version, master.arch
            )),
            _ => {}
        }
        chosen.push(me);
    }
    if !problems.is_empty() {
        problems.sort();
        problems.dedup();
        return Err(RolloutError::Refused(problems.join("; ")));
    }
    if chosen.iter().all(|n| n.step == RolloutStep::Skipped) {
        return Err(RolloutError::NothingToDo(request.version.clone()));
    }
    Ok(chosen)
}

fn state_word(state: NodeState) -> &'static str {
    match state {
        NodeState::Ready => "ready",
        NodeState::NotReady | NodeState::Cordoned => "not ready",
    }
}

/// Why `node` failed to upgrade to `version` the last time it tried, if it did. The node
/// reports its last upgrade in every heartbeat, so this survives restarts of both sides.
pub fn failed_before(node: &NodeInfo, version: &str) -> Option<String> {
    let last = node.telemetry.as_ref()?.system.as_ref()?.upgrade.as_ref()?;
    let failed = matches!(last.state, UpgradeState::FellBack | UpgradeState::Failed);
    (failed && last.version == version).then(|| {
        last.reason
            .clone()
            .unwrap_or_else(|| "no reason given".into())
    })
}

/// The compute nodes to start now: while the rollout runs and no node failed, the next
/// waiting ones in order, so that at most `max_unavailable` are under way. The master
/// goes alone, after every compute node settled well.
pub fn next(rollout: &Rollout) -> Vec<String> {
    if rollout.phase != RolloutPhase::Running || any_failed(rollout) {
        return Vec::new();
    }
    let busy = rollout
        .nodes
        .iter()
        .filter(|n| n.step.is_under_way())
        .count();
    let room = (rollout.request.max_unavailable as usize).saturating_sub(busy);
    let waiting: Vec<String> = rollout
        .nodes
        .iter()
        .filter(|n| !n.master && n.step == RolloutStep::Waiting)
        .take(room)
        .map(|n| n.name.clone())
        .collect();
    if !waiting.is_empty() {
        return waiting;
    }
    let computes_settled = rollout
        .nodes
        .iter()
        .filter(|n| !n.master)
        .all(RolloutNode::is_settled);
    match rollout.nodes.iter().find(|n| n.master) {
        Some(me) if computes_settled && me.step == RolloutStep::Waiting => vec![me.name.clone()],
        _ => Vec::new(),
    }
}

fn any_failed(rollout: &Rollout) -> bool {
    rollout.nodes.iter().any(|n| n.step == RolloutStep::Failed)
}

/// The nodes under way (started and not settled).
pub fn under_way(rollout: &Rollout) -> Vec<String> {
    rollout
        .nodes
        .iter()
        .filter(|n| n.step.is_under_way())
        .map(|n| n.name.clone())
        .collect()
}

/// The phase once nothing is under way and [`next`] has nothing to start.
pub fn settled_phase(rollout: &Rollout) -> RolloutPhase {
    if any_failed(rollout) {
        RolloutPhase::Failed
    } else if rollout.phase == RolloutPhase::Aborting
        || rollout.nodes.iter().any(|n| n.step == RolloutStep::Waiting)
    {
        RolloutPhase::Aborted
    } else {
        RolloutPhase::Done
    }
}

/// Resuming: failed nodes are tried again when asked, otherwise left out (with their
/// reason kept), and the rollout runs again.
pub fn resume(rollout: &mut Rollout, retry_failed: bool) {
    for node in rollout
        .nodes
        .iter_mut()
        .filter(|n| n.step == RolloutStep::Failed)
    {
        if retry_failed {
            node.step = RolloutStep::Waiting;
            node.request = None;
            node.finished_at = None;
        } else {
            node.step = RolloutStep::Skipped;
            let why = node.detail.take().unwrap_or_default();
            node.detail = Some(format!("left out after it failed: {why}"));
        }
    }
    rollout.phase = RolloutPhase::Running;
    rollout.reason = None;
    rollout.finished_at = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_cluster::api::{SystemReport, Telemetry, UpgradeReport};
    use std::collections::BTreeMap;

    fn node(name: &str, version: &str, labels: &[(&str, &str)]) -> NodeInfo {
        let now = time::OffsetDateTime::now_utc();
        NodeInfo {
            name: name.into(),
            role: Role::Compute,
            address: "10.0.0.2".into(),
            arch: "x86_64".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            reported_labels: BTreeMap::new(),
            state: NodeState::Ready,
            unschedulable: false,
            boot: None,
            subnet: None,
            joined_at: now,
            last_seen: now,
            telemetry: Some(Telemetry {
                nodeos_version: version.into(),
                ..Telemetry::default()
            }),
        }
    }

    fn master(version: &str, can_upgrade: bool) -> MasterSelf {
        MasterSelf {
            name: "m1".into(),
            arch: "x86_64".into(),
            version: version.into(),
            can_upgrade,
        }
    }

    fn every(_: &str) -> bool {
        true
    }

    fn rollout(nodes: Vec<RolloutNode>, max_unavailable: u32) -> Rollout {
        let mut request = RolloutRequest::to("0.2.0");
        request.max_unavailable = max_unavailable;
        Rollout {
            id: "r-1".into(),
            request,
            phase: RolloutPhase::Running,
            nodes,
            reason: None,
            by: "alice".into(),
            started_at: time::OffsetDateTime::now_utc(),
            finished_at: None,
        }
    }

    #[test]
    fn compute_nodes_go_by_name_and_the_master_last() {
        // m1 is the master's own node (a master that runs workloads): its machine is
        // upgraded as the master, not as a node of its own.
        let nodes = [
            node("c2", "0.1.0", &[]),
            node("m1", "0.1.0", &[]),
            node("c1", "0.1.0", &[]),
        ];
        let chosen = choose(
            &RolloutRequest::to("0.2.0"),
            &nodes,
            &master("0.1.0", true),
            &every,
        )
        .unwrap();
        let names: Vec<_> = chosen.iter().map(|n| (n.name.as_str(), n.master)).collect();
        assert_eq!(names, [("c1", false), ("c2", false), ("m1", true)]);
        assert!(chosen.iter().all(|n| n.step == RolloutStep::Waiting));
    }

    #[test]
    fn a_selector_picks_nodes_by_label_and_one_that_matches_nothing_is_refused() {
        let nodes = [
            node("c1", "0.1.0", &[("pool", "a")]),
            node("c2", "0.1.0", &[("pool", "b")]),
        ];
        let mut request = RolloutRequest::to("0.2.0");
        request.nodes.insert("pool".into(), "b".into());
        request.skip_master = true;
        let chosen = choose(&request, &nodes, &master("0.1.0", true), &every).unwrap();
        assert_eq!(chosen.len(), 1);
        assert_eq!(chosen[0].name, "c2");
        request.nodes.insert("pool".into(), "c".into());
        let err = choose(&request, &nodes, &master("0.1.0", true), &every).unwrap_err();
        assert!(matches!(err, RolloutError::NoNodes), "{err}");
    }

    #[test]
    fn nodes_on_the_version_are_skipped_and_a_master_without_slots_is_left_out() {
        let nodes = [node("c1", "0.2.0", &[]), node("c2", "0.1.0", &[])];
        let chosen = choose(
            &RolloutRequest::to("0.2.0"),
            &nodes,
            &master("0.1.0", false),
            &every,
        )
        .unwrap();
        assert_eq!(chosen[0].step, RolloutStep::Skipped);
        assert_eq!(chosen[1].step, RolloutStep::Waiting);
        assert_eq!(chosen[2].step, RolloutStep::Skipped);
        assert!(chosen[2].detail.as_deref().unwrap().contains("by hand"));
        let err = choose(
            &RolloutRequest::to("0.2.0"),
            &[node("c1", "0.2.0", &[])],
            &master("0.2.0", true),
            &every,
        )
        .unwrap_err();
        assert!(matches!(err, RolloutError::NothingToDo(_)), "{err}");
    }

    #[test]
    fn refusals_name_every_node_and_what_to_do() {
        let mut away = node("c1", "0.1.0", &[]);
        away.state = NodeState::NotReady;
        let mut fell = node("c2", "0.1.0", &[]);
        fell.telemetry.as_mut().unwrap().system = Some(Box::new(SystemReport {
            slot: Some("a".into()),
            confirmed: true,
            upgrade: Some(UpgradeReport {
                id: "u-1".into(),
                version: "0.2.0".into(),
                from: "0.1.0".into(),
                state: UpgradeState::FellBack,
                reason: Some("services not ready in 60s".into()),
            }),
        }));
        let newer = node("c3", "0.3.0", &[]);
        let nodes = [away, fell, newer];
        let err = choose(
            &RolloutRequest::to("0.2.0"),
            &nodes,
            &master("0.1.0", true),
            &every,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("node c1 is not ready"), "{err}");
        assert!(
            err.contains("node c2 already failed to upgrade to 0.2.0: services not ready in 60s"),
            "{err}"
        );
        assert!(err.contains("--retry-failed"), "{err}");
        assert!(
            err.contains("node c3 runs 0.3.0, newer than 0.2.0"),
            "{err}"
        );

        let mut request = RolloutRequest::to("0.2.0");
        request.retry_failed = true;
        request.allow_downgrade = true;
        let err = choose(&request, &nodes[1..], &master("0.1.0", true), &|_| false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no release 0.2.0 for x86_64"), "{err}");
        assert!(choose(&request, &nodes[1..], &master("0.1.0", true), &every).is_ok());
    }

    #[test]
    fn batches_keep_to_max_unavailable_and_the_master_waits_for_all() {
        let mut r = rollout(
            vec![
                RolloutNode::new("c1", "x86_64", false),
                RolloutNode::new("c2", "x86_64", false),
                RolloutNode::new("c3", "x86_64", false),
                RolloutNode::new("m1", "x86_64", true),
            ],
            2,
        );
        assert_eq!(next(&r), ["c1", "c2"]);
        r.nodes[0].step = RolloutStep::Upgrading;
        r.nodes[1].step = RolloutStep::Draining;
        assert!(next(&r).is_empty());
        r.nodes[0].step = RolloutStep::Done;
        assert_eq!(next(&r), ["c3"]);
        r.nodes[2].step = RolloutStep::Settling;
        r.nodes[1].step = RolloutStep::Done;
        assert!(next(&r).is_empty(), "the master waits for c3");
        r.nodes[2].step = RolloutStep::Done;
        assert_eq!(next(&r), ["m1"]);
        r.nodes[3].step = RolloutStep::Done;
        assert_eq!(settled_phase(&r), RolloutPhase::Done);
    }

    #[test]
    fn a_failure_stops_new_starts_and_resume_leaves_it_out_or_retries_it() {
        let mut r = rollout(
            vec![
                RolloutNode::new("c1", "x86_64", false),
                RolloutNode::new("c2", "x86_64", false),
                RolloutNode::new("m1", "x86_64", true),
            ],
            1,
        );
        r.nodes[0].step = RolloutStep::Failed;
        r.nodes[0].detail = Some("fell back".into());
        assert!(next(&r).is_empty());
        assert_eq!(settled_phase(&r), RolloutPhase::Failed);

        let mut left_out = r.clone();
        resume(&mut left_out, false);
        assert_eq!(left_out.nodes[0].step, RolloutStep::Skipped);
        assert!(left_out.nodes[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("fell back"));
        assert_eq!(next(&left_out), ["c2"]);

        resume(&mut r, true);
        assert_eq!(next(&r), ["c1"]);
    }

    #[test]
    fn an_abort_ends_as_aborted_once_nodes_under_way_settle() {
        let mut r = rollout(
            vec![
                RolloutNode::new("c1", "x86_64", false),
                RolloutNode::new("c2", "x86_64", false),
            ],
            1,
        );
        r.nodes[0].step = RolloutStep::Upgrading;
        r.phase = RolloutPhase::Aborting;
        assert!(next(&r).is_empty());
        assert_eq!(under_way(&r), ["c1"]);
        r.nodes[0].step = RolloutStep::Done;
        assert_eq!(settled_phase(&r), RolloutPhase::Aborted);
    }
}
