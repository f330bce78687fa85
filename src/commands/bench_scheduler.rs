//! `flotilla bench scheduler`: scheduler throughput and per-pod scheduling latency on simulated
//! nodes, in the manner of kube-scheduler's `scheduler_perf`.
//!
//! It starts a control plane in-process on a fresh data dir (or targets `--server URL`),
//! registers `--nodes` fake Ready nodes through the HTTP API (allocatable CPU, memory and pods,
//! and the `wasmtime`/`runc` runtime handlers), checks the scheduler sees the last of them,
//! then creates `--pods` pods over HTTP from `--clients` concurrent clients while a watch on
//! pods with `spec.nodeName` set observes each binding. It reports pods bound per second (first
//! create sent → last binding observed) and each pod's latency from its create being
//! acknowledged to its binding being observed (p50, p99).
//!
//! Before that, it times the scheduling decision alone (filter, score, pick and assume on an
//! in-memory snapshot of the same nodes, no writes): decisions per second and per-decision
//! latency, the ceiling the write path is measured against.
//!
//! A second phase (in-process servers only; `--skip-backlog` leaves it out) isolates the
//! scheduler from the API's create rate: it creates `--pods` more pods naming a scheduler that
//! is not running yet, then starts a second instance of the same scheduler for that name and
//! measures how fast it binds the whole backlog (scheduler start → last binding observed), as
//! kube-scheduler's `scheduler_perf` measures throughput on a pre-created backlog.
//!
//! The in-process server's node lifecycle controller gets a day's grace period: the fake nodes
//! renew no Lease, and would otherwise be tainted unreachable and emptied by eviction mid-run.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bench::make_namespace;
use super::bench_client::{BenchClient, PodTemplate, create_pod};
use super::bench_stats::{ms, percentile};
use anyhow::{Context, bail};
use clap::Args;
use flotilla_control::apiserver::api::{Api, ApiConfig};
use flotilla_control::scheduler::SchedulerConfig;
use flotilla_control::scheduler::decide::{Decision, decide};
use flotilla_control::scheduler::pod::PodInfo;
use flotilla_control::scheduler::snapshot::Snapshot;
use flotilla_control::server::serve_with_store;
use flotilla_control::store::{RedbStore, RedbStoreConfig};
use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The label listing a node's runtime handlers (see the scheduler's module docs).
const HANDLERS_LABEL: &str = "flotilla.dev/runtime-handlers";

/// Flags of `flotilla bench scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerBenchArgs {
    /// Benchmark an already running server instead of starting one in-process.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Data dir of the in-process server (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
    /// Fake nodes to register.
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    /// Pods to create and have scheduled.
    #[arg(long, default_value_t = 50_000)]
    pub pods: usize,
    /// Concurrent HTTP clients creating nodes and pods.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Leave out the backlog phase (scheduler alone on pre-created pods).
    #[arg(long)]
    pub skip_backlog: bool,
    /// Give up waiting for bindings after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

fn node(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", HANDLERS_LABEL: "wasmtime.runc"}},
        "spec": {},
        "status": {
            "capacity": {"cpu": "32", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated"}],
        },
    })
}

fn pod(name: &str, ns: &str, scheduler: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "spec": {"schedulerName": scheduler, "runtimeClassName": "wasmtime", "containers": [{
            "name": "app", "image": "hello-http:v1",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}}
        }]}
    })
}

async fn post(client: &reqwest::Client, url: &str, body: &serde_json::Value) -> anyhow::Result<()> {
    let r = client.post(url).json(body).send().await?;
    if r.status().as_u16() != 201 {
        bail!(
            "POST {url}: HTTP {}: {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

/// Runs `total` jobs over one concurrent worker per element of `workers`; `job(w, i)` does
/// job `i` with the worker's own state `w` (a connection, say) and hands it back.
async fn pool<W, F, Fut>(workers: Vec<W>, total: usize, job: F) -> anyhow::Result<()>
where
    W: Send + 'static,
    F: Fn(W, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<W>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for mut worker in workers {
        let (next, job) = (next.clone(), job.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(());
                }
                worker = job(worker, i).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// The index `i` of pod `p-<i>` named in a watch line. A byte search rather than a JSON
/// parse, so the observer costs the server (sharing the machine) as little as possible; no
/// other string in the benchmark's pods starts with `p-`.
fn pod_index(line: &[u8]) -> Option<usize> {
    const NEEDLE: &[u8] = b"\"name\":\"p-";
    let at = line.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// The scheduler name of the backlog phase's second scheduler.
const BACKLOG_SCHEDULER: &str = "bench-backlog-scheduler";

/// Opens a watch of the pods of `ns` that have a node; the receiver yields, once all `total`
/// pods `p-<i>` were seen bound, the time each binding was observed.
async fn watch_bindings(
    client: &reqwest::Client,
    base: &str,
    ns: &str,
    total: usize,
) -> anyhow::Result<(
    tokio::sync::oneshot::Receiver<Vec<Option<Instant>>>,
    tokio::task::JoinHandle<()>,
)> {
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
        .get(format!("{base}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}&fieldSelector=spec.nodeName%21%3D"))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("watch: HTTP {}", resp.status());
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut bound: Vec<Option<Instant>> = vec![None; total];
        let mut seen = 0usize;
        let mut stream = resp.bytes_stream();
        let mut buf = Vec::new();
        while seen < total {
            let Some(Ok(chunk)) = stream.next().await else {
                break;
            };
            let now = Instant::now();
            buf.extend_from_slice(&chunk);
            let mut start = 0;
            while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
                let line = &buf[start..start + pos];
                start += pos + 1;
                let Some(i) = pod_index(line) else { continue };
                if i < total && bound[i].is_none() {
                    bound[i] = Some(now);
                    seen += 1;
                }
            }
            buf.drain(..start);
        }
        if seen == total {
            let _ = done_tx.send(bound);
        }
    });
    Ok((done_rx, task))
}

/// Creates pods `p-0`…`p-<total-1>` in `ns` from `clients` concurrent clients (one
/// connection each); returns when each create was acknowledged.
async fn create_pods(
    base: &str,
    ns: &str,
    scheduler: &str,
    total: usize,
    clients: usize,
) -> anyhow::Result<Vec<Option<Instant>>> {
    let acked: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let path = Arc::new(format!("/api/v1/namespaces/{ns}/pods"));
    let template = Arc::new(PodTemplate::new(&pod(PodTemplate::NAME, ns, scheduler))?);
    let mut conns = Vec::with_capacity(clients.max(1));
    for _ in 0..clients.max(1) {
        conns.push(BenchClient::connect(base).await?);
    }
    pool(conns, total, {
        let acked = acked.clone();
        move |mut conn, i| {
            let (path, template, acked) = (path.clone(), template.clone(), acked.clone());
            async move {
                create_pod(&mut conn, &path, &template, &format!("p-{i}")).await?;
                acked.lock().expect("not poisoned")[i] = Some(Instant::now());
                Ok(conn)
            }
        }
    })
    .await
    .context("creating pods")?;
    let acked = acked.lock().expect("not poisoned").clone();
    Ok(acked)
}

async fn wait_bound(
    rx: tokio::sync::oneshot::Receiver<Vec<Option<Instant>>>,
    task: tokio::task::JoinHandle<()>,
    timeout: Duration,
) -> anyhow::Result<Vec<Option<Instant>>> {
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => bail!("the watch ended before every pod was bound"),
        Err(_) => {
            task.abort();
            bail!("not every pod was bound within {} s", timeout.as_secs());
        }
    }
}

/// Times `pods` decisions, each assumed, on a snapshot of `nodes` simulated nodes.
fn decisions_alone(nodes: usize, pods: usize) -> anyhow::Result<()> {
    let mut snapshot = Snapshot::new();
    for i in 0..nodes {
        snapshot.apply_node(&serde_json::from_value(node(&format!("sim-{i}")))?);
    }
    snapshot.apply_runtime_class("wasmtime", "wasmtime");
    let template = PodInfo::from_value(&pod("p", "bench", "default-scheduler"))?;
    let mut latency = Vec::with_capacity(pods);
    let (mut start, mut seed) = (0usize, 0x5eed_u64);
    let t = Instant::now();
    for i in 0..pods {
        let mut p = template.clone();
        p.name = format!("p-{i}");
        let d = Instant::now();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (decision, next) = decide(&snapshot, &p, start, 0, seed);
        start = next;
        match decision {
            Decision::Bind(n) => snapshot.assume(&p, n),
            Decision::Unschedulable(why) => bail!("pod {i} fits nowhere: {}", why.message()),
        }
        latency.push(d.elapsed());
    }
    let elapsed = t.elapsed();
    latency.sort();
    println!(
        "decisions alone (filter, score, assume; no writes): {:.0} pods/s, per decision p50 {:.1} µs  p99 {:.1} µs",
        pods as f64 / elapsed.as_secs_f64(),
        ms(percentile(&latency, 0.5)) * 1e3,
        ms(percentile(&latency, 0.99)) * 1e3
    );
    Ok(())
}

/// Runs the benchmark.
pub async fn run(args: SchedulerBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)?;
    let shutdown = CancellationToken::new();
    let (base, server, api, store) = match &args.server {
        Some(url) => (url.trim_end_matches('/').to_string(), None, None, None),
        None => {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let mut config = flotilla_control::ServerConfig::new(&data_dir);
            // The fake nodes have no kubelet renewing their Leases. With the node lifecycle
            // controller's fast defaults they would turn unreachable a few seconds in, be
            // tainted, and have their pods evicted mid-run, so the run would measure evictions
            // and end with nothing schedulable. kube-scheduler's `scheduler_perf` runs no
            // controller manager for the same reason; here the grace period outlasts the run.
            config.node_lifecycle.grace_period = Duration::from_secs(24 * 3600);
            let mut store_config = RedbStoreConfig::new(data_dir.join("store.redb"));
            store_config.watch_window = config.watch_window;
            store_config.watch_min_events = config.watch_history;
            let store = RedbStore::open(store_config).context("opening the store")?;
            let shared: Arc<dyn flotilla_control::store::Store> = Arc::new(store.clone());
            let api = Api::new(shared.clone(), ApiConfig::default());
            let handle = tokio::spawn(serve_with_store(listener, config, shared, shutdown.clone()));
            (
                format!("http://{addr}"),
                Some(handle),
                Some(api),
                Some(store),
            )
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if Instant::now() > deadline {
            bail!("server at {base} not ready within 10s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run_id = std::process::id();
    println!(
        "flotilla bench scheduler — {} cores, server {base}, {} nodes, {} pods, {} clients",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.nodes,
        args.pods,
        args.clients
    );

    decisions_alone(args.nodes, args.pods)?;

    // Nodes.
    let t = Instant::now();
    let prefix = format!("sim-{run_id}-");
    pool(vec![(); args.clients.max(1)], args.nodes, {
        let (client, base, prefix) = (client.clone(), base.clone(), prefix.clone());
        move |(), i| {
            let (client, url, body) = (
                client.clone(),
                format!("{base}/api/v1/nodes"),
                node(&format!("{prefix}{i}")),
            );
            async move { post(&client, &url, &body).await }
        }
    })
    .await
    .context("registering nodes")?;
    println!(
        "registered {} nodes in {:.2} s",
        args.nodes,
        t.elapsed().as_secs_f64()
    );

    // Probe: a pod pinned to the last node proves the scheduler has seen every node.
    let probe_ns = format!("bench-probe-{run_id}");
    make_namespace(&client, &base, &probe_ns).await?;
    if args.nodes > 0 {
        let mut probe = pod("probe", &probe_ns, "default-scheduler");
        probe["spec"]["nodeSelector"] =
            json!({"kubernetes.io/hostname": format!("{prefix}{}", args.nodes - 1)});
        post(
            &client,
            &format!("{base}/api/v1/namespaces/{probe_ns}/pods"),
            &probe,
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let p: serde_json::Value = client
                .get(format!("{base}/api/v1/namespaces/{probe_ns}/pods/probe"))
                .send()
                .await?
                .json()
                .await?;
            if p["spec"]["nodeName"].is_string() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the scheduler did not bind a probe pod within 60s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let total = args.pods;
    let timeout = Duration::from_secs(args.timeout_secs);

    // Phase 1: pods created over HTTP while the scheduler binds them.
    let ns = format!("bench-sched-{run_id}");
    make_namespace(&client, &base, &ns).await?;
    let (rx, task) = watch_bindings(&client, &base, &ns, total).await?;
    let start = Instant::now();
    let acked = create_pods(&base, &ns, "default-scheduler", total, args.clients).await?;
    let created = start.elapsed();
    let bound = wait_bound(rx, task, timeout).await?;
    let last = bound.iter().flatten().max().copied().unwrap_or(start);
    let elapsed = last.saturating_duration_since(start);
    let mut latency: Vec<Duration> = acked
        .iter()
        .zip(&bound)
        .filter_map(|(a, b)| Some(b.as_ref()?.saturating_duration_since(*a.as_ref()?)))
        .collect();
    latency.sort();
    println!("end to end: pods created over HTTP while being scheduled");
    println!(
        "  created {total} pods in {:.2} s ({:.0} creates/s)",
        created.as_secs_f64(),
        total as f64 / created.as_secs_f64()
    );
    println!(
        "  bound {total} pods on {} nodes in {:.2} s: {:.0} pods/s (first create sent → last binding observed)",
        args.nodes,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  per-pod latency, create acknowledged → binding observed: p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
        ms(percentile(&latency, 0.5)),
        ms(percentile(&latency, 0.99)),
        ms(latency.last().copied().unwrap_or_default())
    );

    // Phase 2: a backlog of pending pods, then a scheduler for them starts.
    if let (Some(api), false) = (&api, args.skip_backlog) {
        let ns = format!("bench-backlog-{run_id}");
        make_namespace(&client, &base, &ns).await?;
        let t = Instant::now();
        create_pods(&base, &ns, BACKLOG_SCHEDULER, total, args.clients).await?;
        println!(
            "backlog: {total} pending pods created in {:.2} s, then a scheduler starts",
            t.elapsed().as_secs_f64()
        );
        let (rx, task) = watch_bindings(&client, &base, &ns, total).await?;
        let token = shutdown.child_token();
        let config = SchedulerConfig {
            scheduler_name: BACKLOG_SCHEDULER.into(),
            ..SchedulerConfig::default()
        };
        let start = Instant::now();
        let scheduler = tokio::spawn(flotilla_control::scheduler::run(
            api.clone(),
            config,
            token.clone(),
        ));
        let bound = wait_bound(rx, task, timeout).await?;
        let last = bound.iter().flatten().max().copied().unwrap_or(start);
        let elapsed = last.saturating_duration_since(start);
        let mut since_start: Vec<Duration> = bound
            .iter()
            .flatten()
            .map(|b| b.saturating_duration_since(start))
            .collect();
        since_start.sort();
        println!(
            "  bound {total} pods on {} nodes in {:.2} s: {:.0} pods/s (scheduler start → last binding observed; first bound after {:.2} s, half after {:.2} s)",
            args.nodes,
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            since_start
                .first()
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
            percentile(&since_start, 0.5).as_secs_f64()
        );
        token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), scheduler).await;
    }

    shutdown.cancel();
    if let Some(h) = server {
        let _ = tokio::time::timeout(Duration::from_secs(10), h).await;
    }
    if let Some(store) = store {
        store.close();
    }
    Ok(())
}
