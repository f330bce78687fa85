//! `flotilla bench ops`: the CPU each API operation costs the control plane, without HTTP.
//!
//! Opens a fresh store (the real redb file and write-ahead log) and an `Api` on it in this
//! process, with nothing else running (no scheduler, controllers or watchers), and runs each
//! operation a pod goes through N times, 64 at a time so that writes share durable batches as
//! they do under load. For each it reports the process's CPU time per operation (user + system,
//! all threads: the caller's work, the store's committer and applier) and the rate. This is the
//! floor of what a pod costs the API server before HTTP, watches and controllers add theirs.

use std::future::Future;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use flotilla_control::apiserver::api::{Api, ApiConfig, WriteOptions};
use flotilla_control::apiserver::patch::PatchType;
use flotilla_control::apiserver::resources::{self, Subresource};
use flotilla_control::store::{RedbStore, RedbStoreConfig};
use serde_json::{Value, json};

/// Flags of `flotilla bench ops`.
#[derive(Debug, Args)]
pub struct OpsBenchArgs {
    /// Times each operation runs.
    #[arg(long, default_value_t = 20_000)]
    pub ops: usize,
    /// Operations in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Runs the benchmark and prints one line per operation.
pub async fn run(args: OpsBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("store.redb")))?;
    let api = Api::new(std::sync::Arc::new(store.clone()), ApiConfig::default());
    flotilla_control::server::bootstrap(&api)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {}", e.message))?;
    let pods = resources::find_kind("v1", "Pod").context("pods are served")?;
    let events = resources::find_kind("v1", "Event").context("events are served")?;
    let opts = WriteOptions::default();
    let (n, c) = (args.ops.max(1), args.concurrency.max(1));
    println!(
        "flotilla bench ops — {} cores, {n} of each, {c} at a time, in-process API on a fresh store",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    phase("create pod", n, c, |i| {
        let (api, opts) = (&api, &opts);
        async move {
            api.create(pods, Some("default"), pod(i), opts).await?;
            Ok(())
        }
    })
    .await?;
    phase("bind (pods/binding)", n, c, |i| {
        let api = &api;
        async move {
            let target = json!({"target": {"name": "node-1"}});
            api.bind("default", &format!("p-{i}"), &target).await?;
            Ok(())
        }
    })
    .await?;
    phase("create event", n, c, |i| {
        let (api, opts) = (&api, &opts);
        async move {
            api.create(events, Some("default"), event(i), opts).await?;
            Ok(())
        }
    })
    .await?;
    phase("patch pod status (merge)", n, c, |i| {
        let (api, opts) = (&api, &opts);
        async move {
            let name = format!("p-{i}");
            let sub = Some(Subresource::Status);
            api.patch_written(
                pods,
                Some("default"),
                &name,
                PatchType::Merge,
                STATUS,
                sub,
                opts,
            )
            .await?;
            Ok(())
        }
    })
    .await?;
    phase("get pod", n, c, |i| {
        let api = &api;
        async move {
            api.get(pods, Some("default"), &format!("p-{i}")).await?;
            Ok(())
        }
    })
    .await?;
    store.close();
    Ok(())
}

/// Runs `op(0..n)`, `c` at a time, and prints its CPU time per operation and its rate.
async fn phase<F, Fut>(what: &str, n: usize, c: usize, op: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), flotilla_control::apiserver::error::ApiError>>,
{
    let (cpu0, t0) = (cpu_seconds()?, Instant::now());
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(c) {
        for r in futures::future::join_all(chunk.iter().map(|i| op(*i))).await {
            r.map_err(|e| anyhow::anyhow!("{what}: {} {}", e.code, e.message))?;
        }
    }
    let (cpu, wall) = (cpu_seconds()? - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "{what:26} {:7.1} µs CPU per op  {:8.0} ops/s",
        cpu * 1e6 / n as f64,
        n as f64 / wall
    );
    Ok(())
}

/// User plus system CPU time of this process so far, in seconds.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = procfs::process::Process::myself()?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

/// Pod `i`, as `flotilla bench pods` creates them.
fn pod(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("p-{i}"), "labels": {"app": "bench"}},
        "spec": {"runtimeClassName": "wasmtime", "containers": [{
            "name": "web", "image": "bench/hello-http:v1", "imagePullPolicy": "IfNotPresent",
            "ports": [{"containerPort": 8080}]}]}
    })
}

/// The `Scheduled` Event of pod `i`, as the scheduler records it.
fn event(i: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("p-{i}.187a3c5d2e1f0a9b"), "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": format!("p-{i}"),
            "uid": "5b2c7d1e-0000-4000-8000-000000000000", "apiVersion": "v1"},
        "reason": "Scheduled", "message": format!("Successfully assigned default/p-{i} to node-1"),
        "type": "Normal", "source": {"component": "default-scheduler"},
        "reportingComponent": "default-scheduler", "reportingInstance": "",
        "count": 1, "firstTimestamp": "2026-12-06T23:00:00Z", "lastTimestamp": "2026-12-06T23:00:00Z"
    })
}

/// A node agent's status write for a started pod.
const STATUS: &[u8] = br#"{"status":{"phase":"Running","podIP":"10.1.0.7","hostIP":"127.0.0.1","startTime":"2026-12-06T23:00:00Z","conditions":[{"type":"Initialized","status":"True","lastTransitionTime":"2026-12-06T23:00:00Z"},{"type":"Ready","status":"True","lastTransitionTime":"2026-12-06T23:00:00Z"},{"type":"ContainersReady","status":"True","lastTransitionTime":"2026-12-06T23:00:00Z"}],"containerStatuses":[{"name":"web","ready":true,"restartCount":0,"image":"bench/hello-http:v1","imageID":"sha256:0","started":true,"state":{"running":{"startedAt":"2026-12-06T23:00:00Z"}}}]}}"#;
