//! `flotilla bench up`: how fast `flotilla up` is ready, and how much memory it holds idle.
//!
//! Starts `flotilla up` (this same binary) several times, each on a fresh data dir and free
//! ports, and measures:
//! - **ready**: process spawn → the kubeconfig written, the API server answering and the local
//!   Node `Ready` (checked over HTTP);
//! - **idle RSS**: the process's resident memory after it has sat idle for `--idle` seconds,
//!   split into anonymous memory and file-backed pages (the binary's own code);
//! - **idle CPU**: the CPU time (user + system) the process used over that idle window, as a
//!   percentage of one core.
//!
//! With `--objects N` the cluster first gets N pods that stay Pending (they name a scheduler
//! nobody runs) and are owned by one ConfigMap, so the idle figures are those of a control
//! plane that holds N pods in its store, caches and garbage-collection graph. With
//! `--deployments N` it holds N Deployments of no replicas (and their ReplicaSets), which the
//! controllers reconcile again at every resync.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use super::bench_client::{BenchClient, PodTemplate, create_pod};

/// Flags of `flotilla bench up`.
#[derive(Debug, Args)]
pub struct UpBenchArgs {
    /// How many times to start a cluster.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds each cluster sits idle before its memory is read.
    #[arg(long, default_value_t = 5)]
    pub idle: u64,
    /// Pods created (and left Pending) before the idle window.
    #[arg(long, default_value_t = 0)]
    pub objects: usize,
    /// Deployments (`replicas: 0`) created before the idle window: the Deployment and
    /// ReplicaSet controllers keep N of each, reconciled again at every resync.
    #[arg(long, default_value_t = 0)]
    pub deployments: usize,
    /// The `flotilla` binary to start (default: this one), to compare builds side by side.
    #[arg(long, value_name = "PATH")]
    pub binary: Option<std::path::PathBuf>,
}

/// Runs the benchmark and prints a report.
pub async fn run(args: UpBenchArgs) -> anyhow::Result<()> {
    let mut ready = Vec::new();
    let mut memory = Vec::new();
    let mut cpu = Vec::new();
    let client = reqwest::Client::new();
    for run in 0..args.runs.max(1) {
        let tmp = tempfile::tempdir()?;
        let started = Instant::now();
        let binary = match &args.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe()?,
        };
        let mut child = tokio::process::Command::new(binary)
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .args(["--node-name", "bench-up"])
            .arg("--data-dir")
            .arg(tmp.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start `flotilla up`")?;
        let pid = child.id().context("flotilla up exited at once")?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return Ok(url.trim().to_string());
                }
            }
            bail!("flotilla up exited before it was ready")
        })
        .await
        .context("flotilla up did not start within 60 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let node_url = format!("{url}/api/v1/nodes/bench-up");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if node_ready(&client, &node_url).await && tmp.path().join("kubeconfig").is_file() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the node did not become Ready within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = started.elapsed();
        if args.objects > 0 {
            let created = Instant::now();
            create_objects(&client, &url, args.objects).await?;
            println!(
                "run {}: {} pods created in {:.1} s",
                run + 1,
                args.objects,
                created.elapsed().as_secs_f64()
            );
            // Let the controllers see them before the idle window starts.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        if args.deployments > 0 {
            let created = Instant::now();
            create_deployments(&client, &url, args.deployments).await?;
            println!(
                "run {}: {} Deployments and their ReplicaSets created in {:.1} s",
                run + 1,
                args.deployments,
                created.elapsed().as_secs_f64()
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let (cpu_before, at) = (cpu_seconds(pid)?, Instant::now());
        tokio::time::sleep(Duration::from_secs(args.idle)).await;
        let busy = (cpu_seconds(pid)? - cpu_before) / at.elapsed().as_secs_f64() * 100.0;
        let (total, anon, file) = rss(pid)?;
        println!(
            "run {}: ready in {:.0} ms; idle RSS {:.1} MiB (anonymous {:.1} MiB, file-backed {:.1} MiB); idle CPU {:.2} % of a core",
            run + 1,
            took.as_secs_f64() * 1e3,
            mib(total),
            mib(anon),
            mib(file),
            busy
        );
        ready.push(took);
        memory.push(total);
        cpu.push(busy);
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    ready.sort();
    memory.sort();
    cpu.sort_by(f64::total_cmp);
    println!(
        "median of {}: ready in {:.0} ms, idle RSS {:.1} MiB, idle CPU {:.2} % of a core{}",
        ready.len(),
        ready[ready.len() / 2].as_secs_f64() * 1e3,
        mib(memory[memory.len() / 2]),
        cpu[cpu.len() / 2],
        match (args.objects, args.deployments) {
            (0, 0) => String::new(),
            (p, 0) => format!(" (holding {p} pods)"),
            (0, d) => format!(" (holding {d} Deployments)"),
            (p, d) => format!(" (holding {p} pods and {d} Deployments)"),
        }
    );
    Ok(())
}

/// Creates `n` Pending pods in `default`, all owned by one ConfigMap, over a few lean
/// connections.
async fn create_objects(client: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<()> {
    let owner = client
        .post(format!("{url}/api/v1/namespaces/default/configmaps"))
        .json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bench-idle-owner"}}))
        .send()
        .await?
        .error_for_status()?
        .json::<serde_json::Value>()
        .await?;
    let uid = owner["metadata"]["uid"].as_str().context("owner uid")?;
    let template = std::sync::Arc::new(PodTemplate::new(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": PodTemplate::NAME, "namespace": "default", "labels": {"app": "bench-idle"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "bench-idle-owner", "uid": uid}]},
        // A scheduler nobody runs: the pods stay Pending, held by the control plane only.
        "spec": {"schedulerName": "bench-idle", "containers": [{"name": "app", "image": "hello-http:v1",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}
    }))?);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut conn = BenchClient::connect(url).await?;
        let (template, next) = (template.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                create_pod(
                    &mut conn,
                    "/api/v1/namespaces/default/pods",
                    &template,
                    &format!("idle-{i}"),
                )
                .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Creates `n` Deployments of no replicas in `default` over 8 connections, then waits (up to
/// 120 s) until the Deployment controller has made a ReplicaSet for each.
async fn create_deployments(client: &reqwest::Client, url: &str, n: usize) -> anyhow::Result<()> {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, next) = (client.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let name = format!("idle-{i}");
                client
                    .post(format!("{url}/apis/apps/v1/namespaces/default/deployments"))
                    .json(&json!({
                        "apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": name},
                        "spec": {"replicas": 0, "selector": {"matchLabels": {"app": name}},
                            "template": {"metadata": {"labels": {"app": name}},
                                "spec": {"containers": [{"name": "app", "image": "hello-http:v1"}]}}}
                    }))
                    .send()
                    .await?
                    .error_for_status()?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list: serde_json::Value = client
            .get(format!("{url}/apis/apps/v1/namespaces/default/replicasets"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let have = list["items"].as_array().map_or(0, Vec::len);
        if have >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {have} of {n} ReplicaSets after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// User plus system CPU time of `pid` so far, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = procfs::process::Process::new(pid as i32)?.stat()?;
    Ok((stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64)
}

async fn node_ready(client: &reqwest::Client, url: &str) -> bool {
    let Ok(response) = client.get(url).send().await else {
        return false;
    };
    let Ok(node) = response.json::<serde_json::Value>().await else {
        return false;
    };
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Resident memory of `pid` in KiB: total, anonymous, file-backed.
fn rss(pid: u32) -> anyhow::Result<(u64, u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("RssAnon:"), field("RssFile:")))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
