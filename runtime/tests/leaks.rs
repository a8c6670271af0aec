//! Nothing leaks: after 50 sequential runs and deletes there are no mounts
//! under the root, no cgroup directories, no state directories and no
//! child processes (its own test binary, so other tests' shims don't count).

mod common;

use std::fs;
use std::time::Duration;

use cloudos_testkit::require;

#[test]
fn no_leaks_after_50_runs() {
    require!(common::container_host());
    let (d, rt) = common::runtime();
    let ids: Vec<String> = (0..50).map(|i| common::id(&format!("leak{i}"))).collect();
    for (i, cid) in ids.iter().enumerate() {
        let mut s = common::sh(cid, "echo run; exit $0");
        s.args.push((i % 3).to_string());
        if i % 2 == 0 {
            s.resources.memory_bytes = Some(64 << 20);
            s.resources.pids = Some(64);
        }
        let r = common::run(&rt, &s);
        assert_eq!(r.exit.code, Some((i % 3) as i32));
        assert_eq!(r.stdout, "run\n");
    }
    assert!(rt.list().unwrap().is_empty());
    assert_eq!(
        fs::read_dir(d.path()).unwrap().count(),
        0,
        "state directories left"
    );
    assert!(common::mounts_under(d.path()).is_empty(), "mounts left");
    for cid in &ids {
        assert!(common::cgroup_dirs(cid).is_empty(), "cgroup of {cid} left");
    }
    // Shims are reaped by wait/delete; give the kernel a moment for the last.
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        common::children().is_empty(),
        "children left: {:?}",
        common::children()
    );
    let overlays = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(" - overlay ") && l.contains(d.path().to_str().unwrap()))
        .count();
    assert_eq!(overlays, 0);
}
