//! `flotilla bench pods`: Wasm pod apply → Running latency and pod density on one node.
//!
//! Starts a control plane in-process on a fresh data dir and a node agent as a separate
//! `flotilla agent` process (so its memory can be read alone), pushes a `wasi:http` sample to the
//! cluster's registry, runs one warm-up pod (the image is then pulled and compiled), and
//! measures, over real HTTP with the result observed through a pod watch:
//! - **sequence**: N pods one at a time, each created only after the previous one was seen
//!   Running; latency = create request sent → `Running` seen on the watch;
//! - **burst**: N more pods created by 64 concurrent clients; the same per-pod latency, split
//!   at the binding (create sent → bound, bound → Running, both as seen on the watch), and the
//!   time until the last one is Running;
//! - **density**: the agent's resident memory with the sequence and burst pods all running idle,
//!   less its memory before them, per pod.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::bench_stats::{ms, percentile};
use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// Flags of `flotilla bench pods`.
#[derive(Debug, Args)]
pub struct PodsBenchArgs {
    /// Pods created one after another (and again as many in the burst).
    #[arg(long, default_value_t = 1_000)]
    pub pods: usize,
    /// Concurrent clients of the burst.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// The `wasi:http` component every pod runs.
    #[arg(
        long,
        default_value = "samples/hello-http/hello-http.wasm",
        value_name = "FILE"
    )]
    pub wasm: PathBuf,
    /// Longest wait for any one phase, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// When each pod was first seen bound to a node and first seen Running, by name.
#[derive(Debug, Default)]
struct Phases {
    bound: HashMap<String, Instant>,
    running: HashMap<String, Instant>,
}

/// The phases seen so far, shared with the watch.
type Seen = Arc<Mutex<Phases>>;

/// Runs the benchmark and prints a report.
pub async fn run(args: PodsBenchArgs) -> anyhow::Result<()> {
    if !args.wasm.is_file() {
        bail!(
            "{}: no such file (run from the repository root or pass --wasm)",
            args.wasm.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let data_dir = tmp.path().join("control");
    std::fs::create_dir_all(&data_dir)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let kubeconfig = tmp.path().join("kubeconfig");
    flotilla_control::kubeconfig::write(&kubeconfig, &base, "flotilla")?;
    let stop = CancellationToken::new();
    let server = tokio::spawn(flotilla_control::serve(
        listener,
        flotilla_control::ServerConfig::new(&data_dir),
        stop.clone(),
    ));

    let total = 2 * args.pods + 1;
    let mut agent = tokio::process::Command::new(std::env::current_exe()?)
        .args(["agent", "--name", "bench-node", "--listen", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--data-dir")
        .arg(tmp.path().join("agent"))
        .arg("--max-pods")
        .arg((total + 10).to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `flotilla agent`")?;
    let agent_pid = agent.id().context("the agent exited at once")?;
    let mut lines = tokio::io::BufReader::new(agent.stdout.take().context("agent stdout")?).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if line.contains("listening on") {
                return Ok(());
            }
        }
        bail!("the agent exited before it was ready")
    })
    .await
    .context("the agent did not start within 30 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let options = flotilla_node::image::push::PushOptions {
        default_registry: Some(base.clone()),
        insecure: Vec::new(),
        credentials: Default::default(),
    };
    flotilla_node::image::push::push_wasm(
        &args.wasm,
        "bench/hello-http:v1",
        &options,
        &flotilla_node::image::push::NoProgress,
    )
    .await
    .context("cannot push the sample")?;

    let client = reqwest::Client::new();
    let pods_url = format!("{base}/api/v1/namespaces/default/pods");
    let seen: Seen = Arc::default();
    let watch = tokio::spawn(watch_running(
        client.clone(),
        pods_url.clone(),
        seen.clone(),
    ));
    let timeout = Duration::from_secs(args.timeout);

    // Warm-up: the node is Ready, the image pulled and compiled.
    let warm = Instant::now();
    create(&client, &pods_url, "warm").await?;
    wait_running(&seen, &["warm".to_string()], timeout).await?;
    println!(
        "warm-up pod Running in {:.1} ms (pull + compile)",
        ms(warm.elapsed())
    );
    let rss_before = rss_kib(agent_pid)?;

    let mut sequence = Vec::with_capacity(args.pods);
    for i in 0..args.pods {
        let name = format!("seq-{i}");
        let sent = Instant::now();
        create(&client, &pods_url, &name).await?;
        let at = wait_running(&seen, std::slice::from_ref(&name), timeout).await?;
        sequence.push(at - sent);
    }
    report("sequence", &mut sequence);

    let names: Vec<String> = (0..args.pods).map(|i| format!("burst-{i}")).collect();
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    futures::stream::iter(names.clone())
        .map(|name| {
            let (client, url, sent_at) = (client.clone(), pods_url.clone(), sent_at.clone());
            async move {
                let sent = Instant::now();
                create(&client, &url, &name).await?;
                sent_at.lock().unwrap().insert(name, sent);
                anyhow::Ok(())
            }
        })
        .buffer_unordered(args.clients.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<Vec<()>>>()?;
    let last = wait_running(&seen, &names, timeout).await?;
    let (mut burst, mut to_bound, mut to_running) = {
        let seen = seen.lock().unwrap();
        let sent_at = sent_at.lock().unwrap();
        let mut phases = (Vec::new(), Vec::new(), Vec::new());
        for n in &names {
            let (sent, running) = (sent_at[n], seen.running[n]);
            phases.0.push(running - sent);
            // A pod seen Running was seen bound on the same watch, at the latest then.
            let bound = seen.bound.get(n).copied().unwrap_or(running);
            phases.1.push(bound.saturating_duration_since(sent));
            phases.2.push(running - bound);
        }
        phases
    };
    report("burst", &mut burst);
    to_bound.sort();
    to_running.sort();
    println!(
        "burst: create sent → bound p50 {:.2} ms, p99 {:.2} ms; bound → Running p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&to_bound, 0.5)),
        ms(percentile(&to_bound, 0.99)),
        ms(percentile(&to_running, 0.5)),
        ms(percentile(&to_running, 0.99))
    );
    println!(
        "burst: {} pods Running {:.0} ms after the first create ({:.0} pods/s)",
        args.pods,
        ms(last - start),
        args.pods as f64 / (last - start).as_secs_f64()
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_kib(agent_pid)?;
    let running = 2 * args.pods;
    println!(
        "density: agent RSS {:.1} MiB with the warm-up pod, {:.1} MiB with {running} more idle \
         HTTP pods: {:.1} KiB per pod",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        (rss_after.saturating_sub(rss_before)) as f64 / running as f64
    );

    watch.abort();
    let _ = agent.start_kill();
    let _ = agent.wait().await;
    stop.cancel();
    server.await.context("control plane task")??;
    Ok(())
}

/// Creates pod `name` running the sample as a `wasi:http` service on port 8080.
async fn create(client: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<()> {
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "runtimeClassName": "wasmtime",
            "containers": [{
                "name": "web",
                "image": "bench/hello-http:v1",
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"containerPort": 8080}],
            }],
        },
    });
    let response = client.post(url).json(&pod).send().await?;
    if !response.status().is_success() {
        bail!(
            "create {name}: {} {}",
            response.status(),
            response.text().await?
        );
    }
    Ok(())
}

/// Watches the pods and records when each is first seen Running.
async fn watch_running(client: reqwest::Client, url: String, seen: Seen) -> anyhow::Result<()> {
    let response = client
        .get(format!("{url}?watch=true&labelSelector=app%3Dbench"))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let now = Instant::now();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let object = &event["object"];
            let Some(name) = object["metadata"]["name"].as_str() else {
                continue;
            };
            let mut seen = seen.lock().unwrap();
            if object["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
            {
                seen.bound.entry(name.to_string()).or_insert(now);
            }
            if object["status"]["phase"] == "Running" {
                seen.running.entry(name.to_string()).or_insert(now);
            }
        }
    }
    Ok(())
}

/// Waits until every pod of `names` was seen Running; returns when the last one was.
async fn wait_running(seen: &Seen, names: &[String], timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        {
            let seen = seen.lock().unwrap();
            let times: Option<Vec<Instant>> =
                names.iter().map(|n| seen.running.get(n).copied()).collect();
            if let Some(times) = times {
                return Ok(times.into_iter().max().unwrap_or_else(Instant::now));
            }
        }
        if Instant::now() > deadline {
            let seen = seen.lock().unwrap();
            let missing = names
                .iter()
                .filter(|n| !seen.running.contains_key(*n))
                .count();
            bail!("{missing} pods not Running within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")
}

fn report(what: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |p: f64| percentile(samples, p);
    println!(
        "{what}: {} pods, create → Running p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        ms(at(0.5)),
        ms(at(0.9)),
        ms(at(0.99)),
        ms(at(1.0))
    );
}
