//! A container's usage from its cgroup (`/flotilla/<id>`, see [`super::spec::cgroup_path`]),
//! under cgroup v2 or the v1 `cpuacct` and `memory` hierarchies — what the kubelet's cAdvisor
//! reads for `kubectl top`.
//!
//! The working set is the memory usage less the inactive file cache, as cAdvisor computes it.

use std::path::Path;
use std::time::Duration;

use crate::runtime::ContainerStats;

/// Reads the usage of the cgroup `cgroup` under `root` (`/sys/fs/cgroup`); `None` when the
/// cgroup does not exist in either layout.
pub fn read(root: &Path, cgroup: &str) -> Option<ContainerStats> {
    let rel = cgroup.trim_start_matches('/');
    let text = |p: &str| std::fs::read_to_string(root.join(p)).ok();
    // cgroup v2: one directory with every controller's files.
    if let Some(cpu) = text(&format!("{rel}/cpu.stat")) {
        let usage_usec = field(&cpu, "usage_usec").unwrap_or(0);
        let memory = text(&format!("{rel}/memory.current"))
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let inactive = text(&format!("{rel}/memory.stat"))
            .and_then(|t| field(&t, "inactive_file"))
            .unwrap_or(0);
        return Some(ContainerStats {
            cpu_usage: Duration::from_micros(usage_usec),
            memory_working_set_bytes: memory.saturating_sub(inactive),
            http: None,
        });
    }
    // cgroup v1: cpuacct.usage in nanoseconds; memory in its own hierarchy.
    let cpu_nanos = text(&format!("cpuacct/{rel}/cpuacct.usage"))
        .or_else(|| text(&format!("cpu,cpuacct/{rel}/cpuacct.usage")))
        .and_then(|t| t.trim().parse::<u64>().ok());
    let memory = text(&format!("memory/{rel}/memory.usage_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok());
    if cpu_nanos.is_none() && memory.is_none() {
        return None;
    }
    let inactive = text(&format!("memory/{rel}/memory.stat"))
        .and_then(|t| field(&t, "total_inactive_file"))
        .unwrap_or(0);
    Some(ContainerStats {
        cpu_usage: Duration::from_nanos(cpu_nanos.unwrap_or(0)),
        memory_working_set_bytes: memory.unwrap_or(0).saturating_sub(inactive),
        http: None,
    })
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn reads_cgroup_v2_usage_less_inactive_file_cache() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "flotilla/c1/cpu.stat",
            "usage_usec 2500000\nuser_usec 2000000\n",
        );
        write(dir.path(), "flotilla/c1/memory.current", "10485760\n");
        write(
            dir.path(),
            "flotilla/c1/memory.stat",
            "anon 8388608\ninactive_file 2097152\nactive_file 0\n",
        );
        let stats = read(dir.path(), "/flotilla/c1").unwrap();
        assert_eq!(stats.cpu_usage, Duration::from_millis(2500));
        assert_eq!(stats.memory_working_set_bytes, 8 << 20);
    }

    #[test]
    fn reads_cgroup_v1_hierarchies() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "cpuacct/flotilla/c2/cpuacct.usage",
            "1500000000\n",
        );
        write(
            dir.path(),
            "memory/flotilla/c2/memory.usage_in_bytes",
            "4194304\n",
        );
        write(
            dir.path(),
            "memory/flotilla/c2/memory.stat",
            "cache 1048576\ntotal_inactive_file 1048576\n",
        );
        let stats = read(dir.path(), "/flotilla/c2").unwrap();
        assert_eq!(stats.cpu_usage, Duration::from_millis(1500));
        assert_eq!(stats.memory_working_set_bytes, 3 << 20);
    }

    #[test]
    fn a_missing_cgroup_has_no_stats() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path(), "/flotilla/none"), None);
    }
}
