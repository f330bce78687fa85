//! A pod timeline for the `flotilla bench ...` reports: a watch on a set of pods that records
//! when each was first seen created, bound to a node, Running and Ready, so a benchmark can
//! say where its time went.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;

use super::bench_stats::{ms, percentile};

/// When one pod reached each stage, as first seen on the watch.
#[derive(Debug, Default, Clone, Copy)]
struct Stages {
    created: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
    ready: Option<Instant>,
}

/// A running pod watch; `report` summarises it.
pub struct Timeline {
    pods: Arc<Mutex<HashMap<String, Stages>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    /// Starts watching the pods of `namespace` matching `label_selector` on the API server at
    /// `base`; returns once the watch is established.
    pub async fn start(
        client: &reqwest::Client,
        base: &str,
        namespace: &str,
        label_selector: &str,
    ) -> anyhow::Result<Timeline> {
        let response = client
            .get(format!("{base}/api/v1/namespaces/{namespace}/pods"))
            .query(&[("watch", "true"), ("labelSelector", label_selector)])
            .send()
            .await?
            .error_for_status()?;
        let pods: Arc<Mutex<HashMap<String, Stages>>> = Arc::default();
        let seen = pods.clone();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buf = Vec::new();
            while let Some(Ok(chunk)) = body.next().await {
                buf.extend_from_slice(&chunk);
                while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=end).collect();
                    let now = Instant::now();
                    if let Ok(event) = serde_json::from_slice::<Value>(&line) {
                        record(&mut seen.lock().unwrap(), &event["object"], now);
                    }
                }
            }
        });
        Ok(Timeline { pods, task })
    }

    /// Waits until the watch has seen `expected` pods Ready, or `timeout` passes: the watch runs
    /// in the benchmark's own process and can lag behind the cluster under load, and a report cut
    /// off early would count fewer pods than there are.
    pub async fn settle(&self, expected: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let ready = self
                .pods
                .lock()
                .unwrap()
                .values()
                .filter(|s| s.ready.is_some())
                .count();
            if ready >= expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops watching and prints, for each stage, how many pods reached it and when (p50, p90,
    /// last) counted from `t0`.
    pub fn report(self, t0: Instant) {
        self.task.abort();
        let pods = self.pods.lock().unwrap();
        let stage = |name: &str, pick: fn(&Stages) -> Option<Instant>| {
            let mut times: Vec<Duration> = pods
                .values()
                .filter_map(pick)
                .map(|t| t.saturating_duration_since(t0))
                .collect();
            times.sort();
            println!(
                "    {name:<8} {:>5} pods: p50 {:>7.0} ms, p90 {:>7.0} ms, last {:>7.0} ms",
                times.len(),
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.9)),
                ms(times.last().copied().unwrap_or_default()),
            );
        };
        stage("created", |s| s.created);
        stage("bound", |s| s.bound);
        stage("running", |s| s.running);
        stage("ready", |s| s.ready);
    }
}

fn record(pods: &mut HashMap<String, Stages>, pod: &Value, now: Instant) {
    let Some(name) = pod["metadata"]["name"].as_str() else {
        return;
    };
    let stages = pods.entry(name.to_string()).or_default();
    stages.created.get_or_insert(now);
    if pod["spec"]["nodeName"].is_string() {
        stages.bound.get_or_insert(now);
    }
    if pod["status"]["phase"] == "Running" {
        stages.running.get_or_insert(now);
    }
    let ready = pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    if ready {
        stages.ready.get_or_insert(now);
    }
}
