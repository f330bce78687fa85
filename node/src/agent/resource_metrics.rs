//! `GET /metrics/resource`: the kubelet's resource metrics — CPU and memory of the node, of
//! each pod and of each running container — in the Prometheus text format and with the names
//! metrics-server scrapes. The API server's `metrics.k8s.io` (`kubectl top`) reads them, and
//! so can a real metrics-server or Prometheus.
//!
//! - the node: CPU time of every CPU outside idle and iowait (`/proc/stat`), and memory in use
//!   (`MemTotal - MemAvailable` from `/proc/meminfo`);
//! - a container: what its runtime plugin reports ([`Runtime::stats`]); for Wasm pods that is
//!   the linear memory their live instances hold and the CPU time sampled at epoch ticks (see
//!   `flotilla_wasm::Usage`), for container pods their cgroup's usage;
//! - a pod: the sum of its running containers.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::pod::PodRegistry;
use crate::pod::registry::PodSnapshot;
use crate::pod::state::ContainerState;
use crate::runtime::{ContainerStats, Runtime};

/// One running container and what it uses.
#[derive(Clone, Debug)]
pub struct ContainerUsage {
    /// Its pod's namespace.
    pub namespace: String,
    /// Its pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// When its current run started.
    pub started_at: Timestamp,
    /// What it uses, from its runtime plugin.
    pub stats: ContainerStats,
}

/// The pods this agent runs and the runtime plugins running their containers: where the
/// metrics endpoints' figures come from, and what `kubectl exec` reaches.
#[derive(Clone)]
pub struct RunningPods {
    /// The pods being run.
    pub registry: PodRegistry,
    /// Runtime plugins by handler.
    pub runtimes: BTreeMap<String, Arc<dyn Runtime>>,
}

impl std::fmt::Debug for RunningPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningPods")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl RunningPods {
    /// Every running container (init containers included) that its runtime reports on, in
    /// namespace, pod and container order.
    pub fn containers(&self) -> Vec<ContainerUsage> {
        self.containers_of(&self.registry.snapshot())
    }

    /// [`RunningPods::containers`] of the pods of one registry snapshot.
    pub fn containers_of(&self, pods: &[PodSnapshot]) -> Vec<ContainerUsage> {
        let mut out = Vec::new();
        for pod in pods {
            for record in pod.state.init.iter().chain(&pod.state.containers) {
                let ContainerState::Running { started_at } = record.state else {
                    continue;
                };
                let Some((handler, id)) = record.running_in() else {
                    continue;
                };
                let Some(stats) = self.runtimes.get(handler).and_then(|r| r.stats(&id)) else {
                    continue;
                };
                out.push(ContainerUsage {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    container: record.name.clone(),
                    started_at,
                    stats,
                });
            }
        }
        out
    }
}

/// The node's own usage.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct NodeUsage {
    /// CPU time outside idle and iowait, summed over CPUs, in seconds.
    pub cpu_seconds: f64,
    /// Memory in use, in bytes.
    pub memory_working_set_bytes: u64,
}

impl NodeUsage {
    /// Reads `/proc` (`None` where it is missing).
    pub fn read() -> Option<NodeUsage> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        Some(NodeUsage {
            cpu_seconds: busy_cpu_seconds(&stat)?,
            memory_working_set_bytes: memory_in_use(&meminfo)?,
        })
    }
}

/// The `USER_HZ` of `/proc/stat`, fixed at 100 for user space on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// Busy CPU seconds from `/proc/stat`'s `cpu` line: user, nice, system, irq, softirq, steal.
fn busy_cpu_seconds(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0.0);
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    Some((at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) / USER_HZ)
}

/// `MemTotal - MemAvailable` from `/proc/meminfo`, in bytes.
fn memory_in_use(meminfo: &str) -> Option<u64> {
    let kib = |key: &str| -> Option<u64> {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(kib("MemTotal:")?.saturating_sub(kib("MemAvailable:")?) * 1024)
}

/// The text of `/metrics/resource` for `node` and `containers`, stamped `now`.
pub fn render(node: Option<NodeUsage>, containers: &[ContainerUsage], now: Timestamp) -> String {
    let ts = now.as_millisecond();
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value} {ts}");
        }
    };
    let container_labels = |c: &ContainerUsage| {
        labels(&[
            ("container", &c.container),
            ("namespace", &c.namespace),
            ("pod", &c.pod),
        ])
    };
    let mut pods: BTreeMap<(&str, &str), (f64, u64)> = BTreeMap::new();
    for c in containers {
        let p = pods.entry((&c.namespace, &c.pod)).or_default();
        p.0 += c.stats.cpu_usage.as_secs_f64();
        p.1 += c.stats.memory_working_set_bytes;
    }
    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        containers
            .iter()
            .map(|c| (container_labels(c), number(c.stats.cpu_usage.as_secs_f64())))
            .collect(),
    );
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
        containers
            .iter()
            .map(|c| {
                (
                    container_labels(c),
                    c.stats.memory_working_set_bytes.to_string(),
                )
            })
            .collect(),
    );
    family(
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
        containers
            .iter()
            .map(|c| {
                (
                    container_labels(c),
                    number(c.started_at.as_millisecond() as f64 / 1000.0),
                )
            })
            .collect(),
    );
    if let Some(node) = node {
        family(
            "node_cpu_usage_seconds_total",
            "counter",
            "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            vec![(String::new(), number(node.cpu_seconds))],
        );
        family(
            "node_memory_working_set_bytes",
            "gauge",
            "[STABLE] Current working set of the node in bytes",
            vec![(String::new(), node.memory_working_set_bytes.to_string())],
        );
    }
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        pods.iter()
            .map(|((ns, pod), (cpu, _))| (labels(&[("namespace", ns), ("pod", pod)]), number(*cpu)))
            .collect(),
    );
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
        pods.iter()
            .map(|((ns, pod), (_, mem))| {
                (labels(&[("namespace", ns), ("pod", pod)]), mem.to_string())
            })
            .collect(),
    );
    let _ = writeln!(
        out,
        "# HELP scrape_error [ALPHA] 1 if there was an error while getting container metrics, 0 otherwise"
    );
    let _ = writeln!(out, "# TYPE scrape_error gauge");
    let _ = writeln!(out, "scrape_error {}", u8::from(node.is_none()));
    out
}

/// `{k="v",...}` with the text format's escapes.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

/// A float as Prometheus prints one (no exponent for ordinary values).
fn number(v: f64) -> String {
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn node_usage_comes_from_proc_stat_and_meminfo() {
        let stat = "cpu  1000 50 300 90000 200 10 40 0 0 0\ncpu0 500 25 150 45000 100 5 20 0 0 0\n";
        assert_eq!(busy_cpu_seconds(stat), Some(14.0));
        let meminfo =
            "MemTotal:       24000000 kB\nMemFree:  1000 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(memory_in_use(meminfo), Some(4_000_000 * 1024));
    }

    #[test]
    fn renders_the_kubelet_names_labels_and_pod_sums() {
        let started_at: Timestamp = "2026-12-02T10:00:00.5Z".parse().unwrap();
        let c = |pod: &str, container: &str, cpu_ms: u64, mem: u64| ContainerUsage {
            namespace: "default".into(),
            pod: pod.into(),
            container: container.into(),
            started_at,
            stats: ContainerStats {
                cpu_usage: Duration::from_millis(cpu_ms),
                memory_working_set_bytes: mem,
                http: None,
            },
        };
        let containers = [
            c("web", "app", 250, 65536),
            c("web", "side", 50, 131072),
            c("job", "main", 1000, 0),
        ];
        let now: Timestamp = "2026-12-02T10:01:00Z".parse().unwrap();
        let node = NodeUsage {
            cpu_seconds: 12.5,
            memory_working_set_bytes: 1 << 30,
        };
        let text = render(Some(node), &containers, now);
        let ts = now.as_millisecond();
        for line in [
            format!(
                "container_cpu_usage_seconds_total{{container=\"app\",namespace=\"default\",pod=\"web\"}} 0.25 {ts}"
            ),
            format!(
                "container_memory_working_set_bytes{{container=\"side\",namespace=\"default\",pod=\"web\"}} 131072 {ts}"
            ),
            format!(
                "container_start_time_seconds{{container=\"main\",namespace=\"default\",pod=\"job\"}} 1796205600.5 {ts}"
            ),
            format!("pod_cpu_usage_seconds_total{{namespace=\"default\",pod=\"web\"}} 0.3 {ts}"),
            format!(
                "pod_memory_working_set_bytes{{namespace=\"default\",pod=\"web\"}} 196608 {ts}"
            ),
            format!("node_cpu_usage_seconds_total 12.5 {ts}"),
            format!("node_memory_working_set_bytes 1073741824 {ts}"),
            "# TYPE container_cpu_usage_seconds_total counter".to_string(),
            "scrape_error 0".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert!(render(None, &[], now).contains("scrape_error 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(labels(&[("a", "x\"y\\z")]), "{a=\"x\\\"y\\\\z\"}");
    }
}
