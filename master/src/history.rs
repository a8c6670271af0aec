//! Metric history: what each node measured, kept by the master in the cluster's store at
//! two resolutions — a point a minute for the last day (*fine*) and a point an hour for
//! the last month (*coarse*) — so it survives a master's loss with etcd and is bounded:
//! 1,440 fine and 744 coarse points per node at most, about 90 KB a node.
//!
//! Once a minute the leader samples every Ready node's latest telemetry (heartbeats carry
//! it) into the node's fine record of that hour (`fine/<node>/<YYYYMMDDHH>`, up to 60
//! points); when an hour has passed, its fine points are averaged into one coarse point
//! in the node's record of that day (`coarse/<node>/<YYYYMMDD>`). Records past their
//! window are deleted hourly. Network counters become rates between samples.
//!
//! Points are stored as arrays (`[unix seconds, cpu, …]`), not objects: a month of a
//! hundred nodes is 220,000 points, and field names would double it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudos_cluster::api::{HistoryPoint, NodeState, Telemetry};
use cloudos_store::{KeyRange, Store, StoreError, Table, Write};
use time::OffsetDateTime;

use super::state::MasterState;

/// How often a fine point is taken.
pub const FINE_EVERY: Duration = Duration::from_secs(60);
/// How long fine points are kept (a day, and the hour being filled).
pub const FINE_KEEP: time::Duration = time::Duration::hours(25);
/// How long coarse points are kept (a month).
pub const COARSE_KEEP: time::Duration = time::Duration::days(31);

/// A stored point: `[unix, cpu busy fraction, cpu cores, mem used, mem total, disk used,
/// disk total, rx bytes/s, tx bytes/s, load1]`.
type Row = (i64, f64, f64, u64, u64, u64, u64, f64, f64, f64);

fn to_row(p: &HistoryPoint) -> Row {
    (
        p.at.unix_timestamp(),
        p.cpu_usage,
        p.cpu_cores,
        p.mem_used_bytes,
        p.mem_total_bytes,
        p.disk_used_bytes,
        p.disk_total_bytes,
        p.net_rx_bytes_per_sec,
        p.net_tx_bytes_per_sec,
        p.load1,
    )
}

fn from_row(r: &Row) -> Option<HistoryPoint> {
    Some(HistoryPoint {
        at: OffsetDateTime::from_unix_timestamp(r.0).ok()?,
        cpu_usage: r.1,
        cpu_cores: r.2,
        mem_used_bytes: r.3,
        mem_total_bytes: r.4,
        disk_used_bytes: r.5,
        disk_total_bytes: r.6,
        net_rx_bytes_per_sec: r.7,
        net_tx_bytes_per_sec: r.8,
        load1: r.9,
    })
}

fn hour_key(node: &str, at: OffsetDateTime) -> String {
    format!(
        "fine/{node}/{:04}{:02}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour()
    )
}

fn day_key(node: &str, at: OffsetDateTime) -> String {
    format!(
        "coarse/{node}/{:04}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

/// Appends `point` to the record at `key` (a new record if none).
fn append(store: &dyn Store, key: &str, point: &HistoryPoint) -> Result<(), StoreError> {
    store.update_raw(Table::History, key, &mut |old| {
        let mut rows: Vec<Row> = old
            .and_then(|bytes| serde_json::from_slice(bytes).ok())
            .unwrap_or_default();
        // A point per minute (per hour in coarse records): a second one for the same
        // minute (a leader change) replaces the first.
        rows.retain(|r| r.0 != point.at.unix_timestamp());
        rows.push(to_row(point));
        rows.sort_by_key(|r| r.0);
        let bytes = serde_json::to_vec(&rows).map_err(|source| StoreError::Encode {
            table: Table::History,
            key: key.to_owned(),
            source,
        })?;
        Ok(Write::Put(bytes))
    })
}

fn read(store: &dyn Store, prefix: &str) -> Result<Vec<HistoryPoint>, StoreError> {
    let mut points: Vec<HistoryPoint> = store
        .range_raw(Table::History, KeyRange::Prefix(prefix))?
        .iter()
        .filter_map(|(_, bytes)| serde_json::from_slice::<Vec<Row>>(bytes).ok())
        .flatten()
        .filter_map(|r| from_row(&r))
        .collect();
    points.sort_by_key(|p| p.at);
    Ok(points)
}

/// The points of `node` from `since` on: fine ones when `since` is within the last day,
/// else coarse ones.
pub fn query(
    store: &dyn Store,
    node: &str,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(u32, Vec<HistoryPoint>), StoreError> {
    let (resolution, prefix) = if now - since <= time::Duration::hours(24) {
        (60, format!("fine/{node}/"))
    } else {
        (3600, format!("coarse/{node}/"))
    };
    let mut points = read(store, &prefix)?;
    points.retain(|p| p.at >= since);
    Ok((resolution, points))
}

/// `node`'s history from `since` on, as the API and the dashboard serve it.
pub fn node_history(
    store: &dyn Store,
    node: &str,
    since: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<cloudos_cluster::api::NodeHistory, StoreError> {
    let (resolution_secs, points) = query(store, node, since, now)?;
    Ok(cloudos_cluster::api::NodeHistory {
        node: node.to_owned(),
        resolution_secs,
        points,
    })
}

/// Writes `points` of `node` as they would have been recorded (fine ones within the last
/// `FINE_KEEP` of `now`, the rest as coarse), each record in one write: for importing
/// history, and for benchmarks that need a month of it at once.
pub fn backfill(
    store: &dyn Store,
    node: &str,
    fine: &[HistoryPoint],
    coarse: &[HistoryPoint],
) -> Result<(), StoreError> {
    let mut records: std::collections::BTreeMap<String, Vec<Row>> = Default::default();
    for p in fine {
        records
            .entry(hour_key(node, p.at))
            .or_default()
            .push(to_row(p));
    }
    for p in coarse {
        records
            .entry(day_key(node, p.at))
            .or_default()
            .push(to_row(p));
    }
    store.transact_raw(&mut |txn| {
        for (key, rows) in &records {
            let bytes = serde_json::to_vec(rows).map_err(|source| StoreError::Encode {
                table: Table::History,
                key: key.clone(),
                source,
            })?;
            txn.put(Table::History, key, &bytes)?;
        }
        Ok(())
    })
}

/// The mean of fine points: one coarse point at `at`.
fn average(points: &[HistoryPoint], at: OffsetDateTime) -> Option<HistoryPoint> {
    let n = points.len();
    if n == 0 {
        return None;
    }
    let mean = |f: fn(&HistoryPoint) -> f64| points.iter().map(f).sum::<f64>() / n as f64;
    let mean_u = |f: fn(&HistoryPoint) -> u64| points.iter().map(f).sum::<u64>() / n as u64;
    Some(HistoryPoint {
        at,
        cpu_usage: mean(|p| p.cpu_usage),
        cpu_cores: mean(|p| p.cpu_cores),
        mem_used_bytes: mean_u(|p| p.mem_used_bytes),
        mem_total_bytes: mean_u(|p| p.mem_total_bytes),
        disk_used_bytes: mean_u(|p| p.disk_used_bytes),
        disk_total_bytes: mean_u(|p| p.disk_total_bytes),
        net_rx_bytes_per_sec: mean(|p| p.net_rx_bytes_per_sec),
        net_tx_bytes_per_sec: mean(|p| p.net_tx_bytes_per_sec),
        load1: mean(|p| p.load1),
    })
}

/// The sampler's memory between ticks: each node's last counters, for rates.
#[derive(Debug, Default)]
pub struct Sampler {
    last: Mutex<HashMap<String, (OffsetDateTime, u64, u64)>>,
}

impl Sampler {
    /// The point `telemetry` makes at `at` (rates from the node's previous sample).
    pub fn point(&self, node: &str, t: &Telemetry, at: OffsetDateTime) -> HistoryPoint {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let rate = |now: u64, before: u64, secs: f64| {
            (secs > 0.0 && now >= before).then(|| (now - before) as f64 / secs)
        };
        let (rx, tx) = match last.get(node) {
            Some((then, rx, tx)) => {
                let secs = (at - *then).as_seconds_f64();
                (
                    rate(t.net_rx_bytes, *rx, secs).unwrap_or_default(),
                    rate(t.net_tx_bytes, *tx, secs).unwrap_or_default(),
                )
            }
            None => (0.0, 0.0),
        };
        last.insert(node.to_owned(), (at, t.net_rx_bytes, t.net_tx_bytes));
        HistoryPoint {
            at,
            cpu_usage: t.cpu_usage,
            cpu_cores: t.cpu_usage * t.capacity.cpu_millicores as f64 / 1000.0,
            mem_used_bytes: t.mem_used_bytes,
            mem_total_bytes: t.mem_total_bytes,
            disk_used_bytes: t.disk_used_bytes,
            disk_total_bytes: t.disk_total_bytes,
            net_rx_bytes_per_sec: rx,
            net_tx_bytes_per_sec: tx,
            load1: t.load1,
        }
    }
}

/// Records `point` of `node`, and when `point` opens a new hour, the coarse point of the
/// hour before.
pub fn record(store: &dyn Store, node: &str, point: &HistoryPoint) -> Result<(), StoreError> {
    let hour_before = point.at - time::Duration::hours(1);
    let opens_hour = read_hour(store, node, point.at)?.is_empty();
    append(store, &hour_key(node, point.at), point)?;
    if opens_hour {
        let before = read_hour(store, node, hour_before)?;
        let start = hour_before
            .replace_minute(0)
            .and_then(|t| t.replace_second(0))
            .and_then(|t| t.replace_nanosecond(0))
            .unwrap_or(hour_before);
        if let Some(coarse) = average(&before, start) {
            append(store, &day_key(node, start), &coarse)?;
        }
    }
    Ok(())
}

fn read_hour(
    store: &dyn Store,
    node: &str,
    at: OffsetDateTime,
) -> Result<Vec<HistoryPoint>, StoreError> {
    read(store, &hour_key(node, at))
}

/// Deletes records past their window, and every record of nodes no longer in `nodes`.
pub fn prune(
    store: &dyn Store,
    nodes: &[String],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    let fine_cut = hour_key("", now - FINE_KEEP);
    let coarse_cut = day_key("", now - COARSE_KEEP);
    let mut removed = 0;
    for key in store.range_keys(Table::History, KeyRange::All)? {
        let mut parts = key.splitn(3, '/');
        let (Some(kind), Some(node), Some(stamp)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let old = match kind {
            "fine" => format!("fine//{stamp}") < fine_cut,
            "coarse" => format!("coarse//{stamp}") < coarse_cut,
            _ => false,
        };
        if old || !nodes.iter().any(|n| n == node) {
            store.delete_raw(Table::History, &key)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The leader's sampling loop: a point every `history_interval` (a minute) for every
/// Ready node; pruning hourly.
pub async fn run(state: Arc<MasterState>) {
    let every = state.config.history_interval.max(Duration::from_secs(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let per_hour = (3600 / every.as_secs()).max(1);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let s = Arc::clone(&state);
        let prune_now = ticks % per_hour == 1;
        let done = tokio::task::spawn_blocking(move || sample(&s, prune_now)).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::warn!("metric history: {e}"),
            Err(e) => log::warn!("metric history: {e}"),
        }
    }
}

fn sample(state: &MasterState, prune_now: bool) -> Result<(), StoreError> {
    // On the interval's grid, so a point taken twice (a leader change) replaces itself.
    let every = state.config.history_interval.as_secs().max(1) as i64;
    let unix = OffsetDateTime::now_utc().unix_timestamp();
    let now = OffsetDateTime::from_unix_timestamp(unix - unix.rem_euclid(every))
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let nodes = state.roster.list();
    for node in nodes.iter().filter(|n| n.state == NodeState::Ready) {
        if let Some(t) = &node.telemetry {
            let point = state.history.point(&node.name, t, now);
            record(state.store.as_ref(), &node.name, &point)?;
        }
    }
    if prune_now {
        let names: Vec<String> = nodes.into_iter().map(|n| n.name).collect();
        let removed = prune(state.store.as_ref(), &names, now)?;
        if removed > 0 {
            log::info!("metric history: {removed} records past their window deleted");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudos_store::redb::RedbStore;
    use time::macros::datetime;

    fn telemetry(cpu: f64, rx: u64) -> Telemetry {
        Telemetry {
            cpu_usage: cpu,
            mem_total_bytes: 1000,
            mem_used_bytes: 500,
            net_rx_bytes: rx,
            capacity: cloudos_cluster::api::Capacity {
                cpu_millicores: 2000,
                memory_bytes: 1000,
            },
            ..Telemetry::default()
        }
    }

    #[test]
    fn minutes_fill_a_day_hours_fill_a_month_and_old_ones_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path().join("s.redb")).expect("store");
        let sampler = Sampler::default();
        let start = datetime!(2026-12-01 00:00 UTC);
        // Three days of n1, whose CPU is 10 % in even hours and 30 % in odd, sampled every
        // ten minutes (the master samples every minute; the rules are the same).
        for step in 0..(3 * 24 * 6) {
            let minute = step * 10;
            let at = start + time::Duration::minutes(minute);
            let cpu = if (minute / 60) % 2 == 0 { 0.1 } else { 0.3 };
            let point = sampler.point("n1", &telemetry(cpu, step as u64 * 60_000), at);
            record(&store, "n1", &point).expect("record");
        }
        let now = start + time::Duration::days(3);
        // The last hour: its fine points, with the network rate (60 kB per 600 s).
        let (resolution, fine) =
            query(&store, "n1", now - time::Duration::hours(1), now).expect("q");
        assert_eq!((resolution, fine.len()), (60, 6));
        assert!(
            (fine[3].net_rx_bytes_per_sec - 100.0).abs() < 1e-9,
            "{:?}",
            fine[3]
        );
        assert!((fine[0].cpu_cores - 0.6).abs() < 1e-9);
        // A month: coarse points, an hour apart, each the mean of its hour.
        let (resolution, coarse) =
            query(&store, "n1", now - time::Duration::days(30), now).expect("q");
        assert_eq!(resolution, 3600);
        assert_eq!(coarse.len(), 3 * 24 - 1, "every finished hour");
        assert!(
            (coarse[0].cpu_usage - 0.1).abs() < 1e-9 && (coarse[1].cpu_usage - 0.3).abs() < 1e-9
        );
        assert_eq!(coarse[1].at - coarse[0].at, time::Duration::hours(1));
        // Pruning at day 40 keeps the coarse month and drops the old minutes; a node that
        // left loses its history.
        let later = start + time::Duration::days(33);
        prune(&store, &["n1".to_owned()], later).expect("prune");
        let (_, fine) = query(&store, "n1", later - time::Duration::hours(24), later).expect("q");
        assert!(fine.is_empty());
        let (_, coarse) = query(&store, "n1", start, later).expect("q");
        assert!(
            !coarse.is_empty() && coarse[0].at >= later - COARSE_KEEP - time::Duration::days(1)
        );
        prune(&store, &[], later).expect("prune");
        assert!(store.list_raw(Table::History).expect("list").is_empty());
    }

    #[test]
    fn a_second_sample_of_a_minute_replaces_the_first() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = RedbStore::open(dir.path().join("s.redb")).expect("store");
        let sampler = Sampler::default();
        let at = datetime!(2026-12-01 10:05 UTC);
        for cpu in [0.2, 0.4] {
            record(&store, "n1", &sampler.point("n1", &telemetry(cpu, 0), at)).expect("record");
        }
        let (_, points) = query(&store, "n1", at - time::Duration::minutes(1), at).expect("q");
        assert_eq!(points.len(), 1);
        assert!((points[0].cpu_usage - 0.4).abs() < 1e-9);
    }
}
