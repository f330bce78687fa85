//! `GET /metrics`: the agent's own Prometheus metrics, named as the kubelet's where the kubelet
//! has one, gathered at each scrape from the pods being run (nothing is counted on the pods'
//! own paths).
//!
//! - `kubelet_node_name{node}`: always 1; says which node this is.
//! - `kubelet_running_pods`: pods with at least one running container.
//! - `kubelet_running_containers{container_state}`: containers `running`, or `exited` (ended,
//!   or waiting to restart after a run).
//! - `flotilla_wasm_http_requests_total{namespace,pod,container}`,
//!   `flotilla_wasm_http_failed_requests_total{namespace,pod,container,reason}`,
//!   `flotilla_wasm_instantiations_total{namespace,pod,container}` and
//!   `flotilla_wasm_http_requests_in_flight{namespace,pod,container}`: each running Wasm HTTP
//!   service's requests, failures by reason (`trap`, `out-of-memory`, `deadline-exceeded`,
//!   ...), instances created, and requests being handled — since the container started.
//!
//! - `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//!   `process_start_time_seconds`: the agent process itself, from `/proc` (`procfs`).
//!
//! CPU and memory per container are in `/metrics/resource` ([`super::resource_metrics`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::routing::get;
use k8s_openapi::jiff::Timestamp;

use super::resource_metrics::{self, NodeUsage, RunningPods};
use crate::pod::state::ContainerState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    container_state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    namespace: String,
    pod: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    #[prometheus(flatten)]
    container: ContainerLabels,
    reason: &'static str,
}

fn registered<M: Metric + Clone>(r: &mut Registry, name: &str, help: &str, metric: M) -> M {
    r.register(name, help, metric.clone());
    metric
}

/// The agent's metrics routes: `/metrics` and `/metrics/resource`.
pub fn router(node: String, source: RunningPods) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(
                |State((node, source)): State<(String, RunningPods)>| async move {
                    let text = tokio::task::spawn_blocking(move || render(&node, &source))
                        .await
                        .unwrap_or_default();
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        text,
                    )
                },
            ),
        )
        .route(
            "/metrics/resource",
            get(
                |State((_, source)): State<(String, RunningPods)>| async move {
                    let text = tokio::task::spawn_blocking(move || {
                        resource_metrics::render(
                            NodeUsage::read(),
                            &source.containers(),
                            Timestamp::now(),
                        )
                    })
                    .await
                    .unwrap_or_default();
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    )
                },
            ),
        )
        .with_state((node, source))
}

/// The OpenMetrics text of the agent's metrics for node `node`, read from `source` now.
pub fn render(node: &str, source: &RunningPods) -> String {
    let mut r = Registry::default();
    registered(
        &mut r,
        "kubelet_node_name",
        "The node's name. The count is always 1",
        Family::<NodeLabels, Gauge>::default(),
    )
    .get_or_create(&NodeLabels {
        node: node.to_string(),
    })
    .set(1);
    let running_pods = registered(
        &mut r,
        "kubelet_running_pods",
        "Number of pods that have a running container",
        Gauge::<i64>::default(),
    );
    let containers = registered(
        &mut r,
        "kubelet_running_containers",
        "Number of containers currently running or exited, by state",
        Family::<StateLabels, Gauge>::default(),
    );
    let requests = registered(
        &mut r,
        "flotilla_wasm_http_requests",
        "Requests received by each running Wasm HTTP service",
        Family::<ContainerLabels, Counter>::default(),
    );
    let failed = registered(
        &mut r,
        "flotilla_wasm_http_failed_requests",
        "Requests of each running Wasm HTTP service that failed, by reason",
        Family::<FailureLabels, Counter>::default(),
    );
    let instantiations = registered(
        &mut r,
        "flotilla_wasm_instantiations",
        "Instances each running Wasm HTTP service created",
        Family::<ContainerLabels, Counter>::default(),
    );
    let in_flight = registered(
        &mut r,
        "flotilla_wasm_http_requests_in_flight",
        "Requests each running Wasm HTTP service is handling",
        Family::<ContainerLabels, Gauge>::default(),
    );

    for state in ["running", "exited"] {
        // Both states are listed, at zero when nothing is in them.
        containers
            .get_or_create(&StateLabels {
                container_state: state,
            })
            .set(0);
    }
    let pods = source.registry.snapshot();
    for pod in &pods {
        let mut any_running = false;
        for record in pod.state.init.iter().chain(&pod.state.containers) {
            let state = match record.state {
                ContainerState::Running { .. } => "running",
                ContainerState::Terminated(_) => "exited",
                // Between runs (backing off) there is an exited run; before the first, nothing.
                ContainerState::Waiting { .. } if record.last_termination.is_some() => "exited",
                ContainerState::Waiting { .. } => continue,
            };
            any_running |= state == "running";
            containers
                .get_or_create(&StateLabels {
                    container_state: state,
                })
                .inc();
        }
        if any_running {
            running_pods.inc();
        }
    }
    for c in source.containers_of(&pods) {
        let Some(http) = &c.stats.http else { continue };
        let labels = ContainerLabels {
            namespace: c.namespace.clone(),
            pod: c.pod.clone(),
            container: c.container.clone(),
        };
        requests.get_or_create(&labels).inc_by(http.requests);
        instantiations
            .get_or_create(&labels)
            .inc_by(http.instantiations);
        in_flight.get_or_create(&labels).set(http.in_flight as i64);
        for (reason, n) in &http.failed {
            failed
                .get_or_create(&FailureLabels {
                    container: labels.clone(),
                    reason,
                })
                .inc_by(*n);
        }
    }
    register_process(&mut r);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// The agent process's own figures, named as every Prometheus client library names them.
fn register_process(r: &mut Registry) {
    use procfs::WithCurrentSystemInfo;
    let Ok(me) = procfs::process::Process::myself() else {
        return;
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        registered(
            r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            Gauge::<i64>::default(),
        )
        .set(stat.rss_bytes().get() as i64);
        registered(
            r,
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            Counter::<f64, AtomicU64>::default(),
        )
        .inc_by((stat.utime + stat.stime) as f64 / ticks);
        if let Ok(boot) = procfs::boot_time_secs() {
            registered(
                r,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                Gauge::<i64>::default(),
            )
            .set(boot as i64 + (stat.starttime as f64 / ticks) as i64);
        }
    }
    if let Ok(fds) = me.fd_count() {
        registered(
            r,
            "process_open_fds",
            "Number of open file descriptors",
            Gauge::<i64>::default(),
        )
        .set(fds as i64);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::Duration;

    use futures::future::BoxFuture;

    use super::*;
    use crate::pod::state::{ContainerRecord, RestartPolicy, Transition};
    use crate::pod::{PodRegistry, PodState, SharedState};
    use crate::runtime::{
        ContainerId, ContainerSpec, ContainerStats, ExitStatus, HttpCounters, ImageRequest,
        PreparedImage, Runtime, RuntimeError,
    };

    /// A runtime that only answers `stats`, with fixed figures.
    struct FixedStats;

    impl Runtime for FixedStats {
        fn handler(&self) -> &str {
            "fixed"
        }
        fn prepare<'a>(
            &'a self,
            _: &'a ImageRequest,
        ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>> {
            Box::pin(async { Err(RuntimeError::Create("unused".into())) })
        }
        fn start(&self, _: ContainerSpec) -> BoxFuture<'_, Result<(), RuntimeError>> {
            Box::pin(async { Err(RuntimeError::Create("unused".into())) })
        }
        fn wait<'a>(
            &'a self,
            id: &'a ContainerId,
        ) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>> {
            Box::pin(async move { Err(RuntimeError::NotFound(id.clone())) })
        }
        fn stop<'a>(
            &'a self,
            id: &'a ContainerId,
            _: Duration,
        ) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>> {
            Box::pin(async move { Err(RuntimeError::NotFound(id.clone())) })
        }
        fn remove(&self, _: &ContainerId) {}
        fn stats(&self, id: &ContainerId) -> Option<ContainerStats> {
            (id.0 == "run-1").then(|| ContainerStats {
                cpu_usage: Duration::from_millis(30),
                memory_working_set_bytes: 1 << 16,
                http: Some(HttpCounters {
                    requests: 7,
                    failed: BTreeMap::from([("trap", 2)]),
                    instantiations: 7,
                    in_flight: 1,
                }),
            })
        }
    }

    #[test]
    fn counts_pods_and_containers_by_state_and_reports_wasm_http_counters() {
        let registry = PodRegistry::default();
        let mut running = ContainerRecord::new("app", "hello:v1");
        running
            .apply(Transition::Started {
                at: Timestamp::now(),
            })
            .unwrap();
        running.container_id = Some("fixed://run-1".into());
        let waiting = ContainerRecord::new("side", "side:v1");
        let state = SharedState::new(PodState::new(
            RestartPolicy::Always,
            vec![],
            vec![running, waiting],
            "127.0.0.1",
        ));
        let _pod = registry.register("uid-1", "default", "web", state);
        let source = RunningPods {
            registry,
            runtimes: BTreeMap::from([(
                "fixed".to_string(),
                Arc::new(FixedStats) as Arc<dyn Runtime>,
            )]),
        };
        let text = render("node-a", &source);
        for line in [
            "kubelet_node_name{node=\"node-a\"} 1",
            "kubelet_running_pods 1",
            "kubelet_running_containers{container_state=\"running\"} 1",
            "kubelet_running_containers{container_state=\"exited\"} 0",
            "flotilla_wasm_http_requests_total{namespace=\"default\",pod=\"web\",container=\"app\"} 7",
            "flotilla_wasm_http_failed_requests_total{namespace=\"default\",pod=\"web\",container=\"app\",reason=\"trap\"} 2",
            "flotilla_wasm_instantiations_total{namespace=\"default\",pod=\"web\",container=\"app\"} 7",
            "flotilla_wasm_http_requests_in_flight{namespace=\"default\",pod=\"web\",container=\"app\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<u64>().ok());
        assert!(
            rss.is_some_and(|b| b > 0),
            "the agent's own memory in\n{text}"
        );
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        let usage = source.containers();
        assert_eq!(usage.len(), 1, "only the running container: {usage:?}");
        assert_eq!(usage[0].stats.memory_working_set_bytes, 1 << 16);
    }
}
