//! `flotilla bench ...`: reproducible benchmarks whose results go into BENCHMARKS.md.
//!
//! `flotilla bench api` starts a control plane in-process on a fresh data dir (or targets
//! `--server URL`), then measures over real HTTP:
//! - this machine's 4 KiB write + fdatasync latency on the data dir's filesystem (the floor of
//!   any durable write);
//! - the store alone: sequential durable creates straight into a fresh redb store in the same
//!   directory, no HTTP or API server work (the part of a create's latency the store owns),
//!   with the store's write-ahead log and without it;
//! - single-client create latency (p50, p99) and its ratio to that fdatasync;
//! - durable creates per second with N concurrent clients;
//! - watch delivery: time from a create's acknowledgement to its event arriving on a watch.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::bench_client::{
    BenchClient, BlockingClient, PodTemplate, create_pod, create_pod_blocking,
};
use super::bench_stats::percentile;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Flags of `flotilla bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub which: Bench,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Bench {
    /// API server: durable creates/s, create latency vs fdatasync, watch delivery latency.
    Api(ApiBenchArgs),
    /// Scheduler: pods bound per second on simulated nodes, per-pod scheduling latency.
    Scheduler(super::bench_scheduler::SchedulerBenchArgs),
    /// Wasm pods on one node: apply → Running latency in sequence and in a burst; density.
    Pods(super::bench_pods::PodsBenchArgs),
    /// The CPU each API operation of a pod's life costs, in-process, without HTTP.
    Ops(super::bench_ops::OpsBenchArgs),
    /// `flotilla up`: time until the cluster and its node are ready; idle memory.
    Up(super::bench_up::UpBenchArgs),
    /// Services: requests/s and latency through a ClusterIP (node proxy) vs straight to the pod.
    Service(super::bench_service::ServiceBenchArgs),
    /// Controllers: a Deployment of many Wasm replicas until all Ready; node failure until the
    /// replacements run.
    Deployment(super::bench_deployment::DeploymentBenchArgs),
    /// Container pods: create → Running on runc with a cached image, vs runc create+start.
    Container(super::bench_container::ContainerBenchArgs),
    /// The Wasm engine alone: per-request instantiation, cold start from the compile cache,
    /// idle service memory, requests/s side by side with `wasmtime serve`.
    Wasm(super::bench_wasm::WasmBenchArgs),
}

/// Flags of `flotilla bench api`.
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Benchmark an already running server instead of starting one in-process.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Data dir of the in-process server (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Concurrent clients of the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Creates in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub creates: usize,
    /// Creates in the single-client latency phase.
    #[arg(long, default_value_t = 1_000)]
    pub single: usize,
    /// Creates observed through the watch in the delivery phase.
    #[arg(long, default_value_t = 1_000)]
    pub watched: usize,
    /// fdatasync samples.
    #[arg(long, default_value_t = 500)]
    pub fsyncs: usize,
    /// Give each namespace the bench creates pods in a ResourceQuota (on pods, cpu and
    /// memory, far above what the bench asks for), so that every create is charged against
    /// it as in a namespace with a quota.
    #[arg(long)]
    pub quota: bool,
}

/// Runs a benchmark.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    super::init_logging("warn");
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    match args.which {
        Bench::Api(a) => rt.block_on(api(a)),
        Bench::Scheduler(a) => rt.block_on(super::bench_scheduler::run(a)),
        Bench::Pods(a) => rt.block_on(super::bench_pods::run(a)),
        Bench::Up(a) => rt.block_on(super::bench_up::run(a)),
        Bench::Service(a) => rt.block_on(super::bench_service::run(a)),
        Bench::Deployment(a) => rt.block_on(super::bench_deployment::run(a)),
        Bench::Container(a) => rt.block_on(super::bench_container::run(a)),
        Bench::Wasm(a) => rt.block_on(super::bench_wasm::run(a)),
        Bench::Ops(a) => rt.block_on(super::bench_ops::run(a)),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn pod(name: &str, ns: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench", "tier": "web"}},
        // Another scheduler's pods: the built-in scheduler leaves them alone (Kubernetes
        // semantics), so this measures the API server and store, not scheduling attempts
        // (`flotilla bench scheduler` measures those).
        "spec": {"schedulerName": "flotilla-bench", "runtimeClassName": "wasmtime", "containers": [{
            "name": "app", "image": "hello-http:v1",
            "ports": [{"containerPort": 8080, "name": "http"}],
            "env": [{"name": "MODE", "value": "bench"}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
        }]}
    })
}

/// 4 KiB write + fdatasync latencies in `dir`.
fn fdatasync_samples(dir: &std::path::Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    let path = dir.join("fdatasync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let block = vec![0xa5u8; 4096];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        // Append, as a log does: each sync makes new data durable.
        f.write_all(&block)?;
        f.sync_data()?;
        out.push(t.elapsed());
        if i % 256 == 255 {
            f.set_len(0)?;
        }
    }
    std::fs::remove_file(&path)?;
    out.sort();
    Ok(out)
}

/// Sequential durable creates of a pod's JSON straight into a fresh store in `dir`, with the
/// store's write-ahead log or without it (each create a durable redb commit).
async fn store_samples(
    dir: &std::path::Path,
    n: usize,
    wal: bool,
) -> anyhow::Result<Vec<Duration>> {
    use flotilla_control::store::{RedbStore, RedbStoreConfig, Store};
    let sub = tempfile::tempdir_in(dir)?;
    let mut config = RedbStoreConfig::new(sub.path().join("probe.redb"));
    if !wal {
        config.wal_size = 0;
    }
    let store = RedbStore::open(config)?;
    let value = bytes::Bytes::from(serde_json::to_vec(&pod("p", "bench"))?);
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 20 {
        let t = Instant::now();
        store
            .create(format!("/registry/pods/bench/p-{i}"), value.clone())
            .await?;
        if i >= 20 {
            out.push(t.elapsed());
        }
    }
    store.close();
    out.sort();
    Ok(out)
}

/// Where the bench's pods in `ns` are created, and the template of their bodies.
fn pod_creates(ns: &str) -> anyhow::Result<(String, PodTemplate)> {
    Ok((
        format!("/api/v1/namespaces/{ns}/pods"),
        PodTemplate::new(&pod(PodTemplate::NAME, ns))?,
    ))
}

/// The store's durable batches and the writes in them so far, from the server's `/metrics`
/// (`None` if it has none, e.g. an older server).
async fn store_counters(client: &reqwest::Client, base: &str) -> Option<(f64, f64)> {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
    };
    Some((
        read("flotilla_store_commit_batches_total ")?,
        read("flotilla_store_committed_writes_total ")?,
    ))
}

/// Creates namespace `ns` (one that exists already will do).
pub(super) async fn make_namespace(
    client: &reqwest::Client,
    base: &str,
    ns: &str,
) -> anyhow::Result<()> {
    let r = client
        .post(format!("{base}/api/v1/namespaces"))
        .json(&json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .send()
        .await?;
    if !(r.status().is_success() || r.status().as_u16() == 409) {
        bail!("create namespace {ns}: HTTP {}", r.status());
    }
    Ok(())
}

/// Creates the namespace `ns` a phase of the bench creates its pods in, with a quota if asked
/// (`--quota`).
async fn bench_namespace(
    client: &reqwest::Client,
    base: &str,
    ns: &str,
    quota: bool,
) -> anyhow::Result<()> {
    make_namespace(client, base, ns).await?;
    if quota {
        make_quota(client, base, ns).await?;
    }
    Ok(())
}

/// Gives namespace `ns` a ResourceQuota the bench's creates stay far within, and waits (at
/// most 10 s) until the controller has counted it, so that creates are charged.
async fn make_quota(client: &reqwest::Client, base: &str, ns: &str) -> anyhow::Result<()> {
    let hard = json!({"pods": "1000000", "requests.cpu": "1000000",
        "requests.memory": "1Ei", "limits.memory": "1Ei"});
    let url = format!("{base}/api/v1/namespaces/{ns}/resourcequotas");
    let r = client
        .post(&url)
        .json(&json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "bench"}, "spec": {"hard": hard}}))
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("create the quota of {ns}: HTTP {}", r.status());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q: serde_json::Value = client
            .get(format!("{url}/bench"))
            .send()
            .await?
            .json()
            .await?;
        if q["status"]["used"]["pods"].is_string() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the quota of {ns} was not counted within 10s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn api(args: ApiBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)?;
    let shutdown = CancellationToken::new();
    let (base, server) = match &args.server {
        Some(url) => (url.trim_end_matches('/').to_string(), None),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let config = flotilla_control::ServerConfig::new(&data_dir);
            let handle = tokio::spawn(flotilla_control::serve(listener, config, shutdown.clone()));
            (format!("http://{addr}"), Some(handle))
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    // Wait for readiness.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("server at {base} not ready within 10s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run_id = std::process::id();

    println!(
        "flotilla bench api — {} cores, server {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        base
    );
    let fsync = fdatasync_samples(&data_dir, args.fsyncs)?;
    let fsync_p50 = percentile(&fsync, 0.5);
    println!(
        "fdatasync 4 KiB:            p50 {:8.1} µs  p99 {:8.1} µs  (n={})",
        us(fsync_p50),
        us(percentile(&fsync, 0.99)),
        fsync.len()
    );

    for (label, wal) in [
        ("store alone, redb commit:", false),
        ("store alone, with its WAL:", true),
    ] {
        let lat = store_samples(&data_dir, args.single, wal).await?;
        let p50 = percentile(&lat, 0.5);
        println!(
            "{label:27} p50 {:8.1} µs  p99 {:8.1} µs  = {:.2}× fdatasync p50",
            us(p50),
            us(percentile(&lat, 0.99)),
            p50.as_secs_f64() / fsync_p50.as_secs_f64(),
        );
    }

    // Single client, sequential: a blocking client on a thread of its own, as a client in
    // another process would be (an async client's connection task would run on the in-process
    // server's runtime workers and add hand-offs between them to every request).
    let ns = format!("bench-single-{run_id}");
    bench_namespace(&client, &base, &ns, args.quota).await?;
    let (path, template) = pod_creates(&ns)?;
    let (single, base_url) = (args.single, base.clone());
    let (lat, dry) = tokio::task::spawn_blocking(move || {
        let mut conn = BlockingClient::connect(&base_url)?;
        for i in 0..20 {
            create_pod_blocking(&mut conn, &path, &template, &format!("warm-{i}"))?;
        }
        let mut timed = |path: &str, prefix: &str| -> anyhow::Result<Vec<Duration>> {
            let mut lat = Vec::with_capacity(single);
            for i in 0..single {
                let t = Instant::now();
                create_pod_blocking(&mut conn, path, &template, &format!("{prefix}-{i}"))?;
                lat.push(t.elapsed());
            }
            lat.sort();
            Ok(lat)
        };
        let lat = timed(&path, "p")?;
        // The same creates without the store (dryRun=All): what the HTTP round trip and the
        // API server's own work cost, apart from the durable write.
        let dry = timed(&format!("{path}?dryRun=All"), "d")?;
        anyhow::Ok((lat, dry))
    })
    .await??;
    let single_p50 = percentile(&lat, 0.5);
    println!(
        "create, 1 client:           p50 {:8.1} µs  p99 {:8.1} µs  = {:.2}× fdatasync p50  ({:.0} creates/s)",
        us(single_p50),
        us(percentile(&lat, 0.99)),
        single_p50.as_secs_f64() / fsync_p50.as_secs_f64(),
        args.single as f64 / lat.iter().sum::<Duration>().as_secs_f64()
    );
    println!(
        "  the same, dryRun=All:     p50 {:8.1} µs  p99 {:8.1} µs  (HTTP and the API server without the store)",
        us(percentile(&dry, 0.5)),
        us(percentile(&dry, 0.99)),
    );

    // Many clients.
    let ns = format!("bench-many-{run_id}");
    bench_namespace(&client, &base, &ns, args.quota).await?;
    let (path, template) = pod_creates(&ns)?;
    let (path, template) = (Arc::new(path), Arc::new(template));
    let mut conns = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        conns.push(BenchClient::connect(&base).await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let before = store_counters(&client, &base).await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (path, template, next) = (path.clone(), template.clone(), next.clone());
        let total = args.creates;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(lat);
                }
                let t = Instant::now();
                create_pod(&mut conn, &path, &template, &format!("p-{i}")).await?;
                lat.push(t.elapsed());
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    all.sort();
    println!(
        "create, {:3} clients:       {:8.0} durable creates/s  (n={}, p50 {:.1} µs, p99 {:.1} µs)",
        args.clients,
        args.creates as f64 / elapsed.as_secs_f64(),
        args.creates,
        us(percentile(&all, 0.5)),
        us(percentile(&all, 0.99))
    );
    if let (Some(b), Some(a)) = (before, store_counters(&client, &base).await) {
        let (batches, writes) = (a.0 - b.0, a.1 - b.1);
        if batches > 0.0 {
            println!(
                "  group commit:             {writes:8.0} writes in {batches:.0} durable batches = {:.1} writes per fdatasync",
                writes / batches
            );
        }
    }

    // Watch delivery: time from a create's acknowledgement to its event on an open watch.
    let ns = format!("bench-watch-{run_id}");
    bench_namespace(&client, &base, &ns, args.quota).await?;
    let list: serde_json::Value = client
        .get(format!("{base}/api/v1/namespaces/{ns}/pods"))
        .send()
        .await?
        .json()
        .await?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("0")
        .to_string();
    let resp = client
        .get(format!(
            "{base}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}"
        ))
        .send()
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watcher = tokio::spawn(async move {
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { break };
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line)
                    && let Some(name) = ev["object"]["metadata"]["name"].as_str()
                {
                    let _ = tx.send((name.to_string(), now));
                }
            }
        }
    });
    let mut acked = std::collections::HashMap::new();
    let (path, template) = pod_creates(&ns)?;
    let mut conn = BenchClient::connect(&base).await?;
    for i in 0..args.watched {
        let name = format!("w-{i}");
        create_pod(&mut conn, &path, &template, &name).await?;
        acked.insert(name, Instant::now());
        // Spread the writes out a little, as real traffic is.
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let mut delivery = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivery.len() < args.watched && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some((name, at))) => {
                if let Some(ack) = acked.get(&name) {
                    // An event may arrive before the client has read its own response.
                    delivery.push(at.saturating_duration_since(*ack));
                }
            }
            _ => break,
        }
    }
    watcher.abort();
    delivery.sort();
    if delivery.len() < args.watched {
        bail!(
            "only {} of {} watch events arrived",
            delivery.len(),
            args.watched
        );
    }
    println!(
        "watch delivery after ack:   p50 {:8.1} µs  p99 {:8.1} µs  max {:8.1} µs  (n={})",
        us(percentile(&delivery, 0.5)),
        us(percentile(&delivery, 0.99)),
        us(*delivery.last().unwrap_or(&Duration::ZERO)),
        delivery.len()
    );

    shutdown.cancel();
    if let Some(h) = server {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    Ok(())
}
