//! `flotilla bench deployment`: the workload controllers end to end, with real processes.
//!
//! It starts `flotilla server` and `flotilla agent` processes (this binary) on a fresh data
//! dir, pushes the hello-http sample, and measures:
//! 1. **scale-out**: a Deployment of `--replicas` Wasm pods on one node, from the create
//!    being acknowledged to `status.readyReplicas` reaching that number (ReplicaSet and
//!    Deployment controllers, scheduler, agent and wasmtime all in the path);
//! 2. **node failure**: a second node joins, a Deployment of `--failover-replicas` spreads over
//!    both, the second agent is killed with SIGKILL, and the time until every replica is
//!    Running and Ready on the surviving node (lease grace period, eviction, ReplicaSet,
//!    scheduler, agent).
//!
//! Each phase runs `--runs` times on fresh clusters; medians are reported.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use super::bench_stats::median;
use super::bench_timeline::Timeline;

/// Flags of `flotilla bench deployment`.
#[derive(Debug, Args)]
pub struct DeploymentBenchArgs {
    /// Replicas of the scale-out phase.
    #[arg(long, default_value_t = 1000)]
    pub replicas: usize,
    /// Replicas spread over two nodes in the node-failure phase.
    #[arg(long, default_value_t = 100)]
    pub failover_replicas: usize,
    /// Fresh clusters per phase.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The sample `.wasm` served by the pods.
    #[arg(long, default_value = "samples/hello-http/hello-http.wasm")]
    pub wasm: PathBuf,
}

/// The image the pods run: a pinned tag, so pods pull it `IfNotPresent` as a real Deployment
/// would (`:latest` means `Always`, a registry round trip per pod).
const IMAGE: &str = "hello-http:v1";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Fields drop in order: the agents are killed before the server they talk to (else each
/// logs its failed requests to the vanished server), and the server before its data dir is
/// removed.
struct Cluster {
    agents: Vec<Proc>,
    server: Proc,
    dir: tempfile::TempDir,
    base: String,
    client: reqwest::Client,
}

fn exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find this executable")
}

impl Cluster {
    async fn start() -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let server = Proc(
            Command::new(exe()?)
                .args([
                    "server",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--data-dir",
                ])
                .arg(dir.path())
                .arg("--write-kubeconfig")
                .arg(dir.path().join("kubeconfig"))
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .context("starting flotilla server")?,
        );
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("server at {base} not ready within 20s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Cluster {
            base,
            dir,
            server,
            agents: Vec::new(),
            client,
        })
    }

    async fn add_agent(&mut self, name: &str, cidr: &str) -> anyhow::Result<()> {
        let data = self.dir.path().join(name);
        std::fs::create_dir_all(&data)?;
        let child = Command::new(exe()?)
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--pod-cidr",
                cidr,
                "--max-pods",
                "5000",
            ])
            .arg("--kubeconfig")
            .arg(self.dir.path().join("kubeconfig"))
            .arg("--data-dir")
            .arg(&data)
            .env(
                "RUST_LOG",
                std::env::var("BENCH_AGENT_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .context("starting flotilla agent")?;
        self.agents.push(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let node = self
                .get(&format!("/api/v1/nodes/{name}"))
                .await
                .unwrap_or_default();
            if node["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            }) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("node {name} not ready within 30s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?
            .json()
            .await?)
    }

    async fn create_deployment(&self, name: &str, replicas: usize) -> anyhow::Result<()> {
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {
                    "runtimeClassName": "wasmtime", "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": IMAGE, "ports": [{"containerPort": 8080}]}]}}},
        });
        let r = self
            .client
            .post(format!(
                "{}/apis/apps/v1/namespaces/default/deployments",
                self.base
            ))
            .json(&d)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("creating deployment {name}: {}", r.text().await?);
        }
        Ok(())
    }

    async fn wait_ready(
        &self,
        name: &str,
        replicas: usize,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self
                .get(&format!(
                    "/apis/apps/v1/namespaces/default/deployments/{name}"
                ))
                .await?;
            if d["status"]["readyReplicas"].as_u64() == Some(replicas as u64) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "deployment {name}: {} of {replicas} ready after {timeout:?}",
                    d["status"]["readyReplicas"]
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pods of `app` that are Running and Ready on `node`, and all pods of `app`.
    async fn running_on(&self, app: &str, node: &str) -> anyhow::Result<(usize, usize)> {
        let list = self
            .get(&format!(
                "/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"
            ))
            .await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let on = items
            .iter()
            .filter(|p| {
                p["spec"]["nodeName"] == node
                    && p["status"]["phase"] == "Running"
                    && p["metadata"]["deletionTimestamp"].is_null()
                    && p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
            })
            .count();
        Ok((on, items.len()))
    }
}

fn push(base: &str, wasm: &Path) -> anyhow::Result<()> {
    let out = Command::new(exe()?)
        .args(["image", "push", "-q", "--server", base])
        .arg(wasm)
        .arg(IMAGE)
        .stdout(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!(
            "pushing {}: {}",
            wasm.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Runs the benchmark.
pub async fn run(args: DeploymentBenchArgs) -> anyhow::Result<()> {
    println!(
        "flotilla bench deployment — {} cores, {} replicas on one node, {} replicas over two nodes, {} runs",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        args.replicas,
        args.failover_replicas,
        args.runs
    );
    let mut scale_out = Vec::new();
    let mut failover = Vec::new();
    for run in 0..args.runs.max(1) {
        // Phase 1: many replicas on one node.
        let mut c = Cluster::start().await?;
        c.add_agent("bench-a", "127.64.0.0/16").await?;
        push(&c.base, &args.wasm)?;
        // Warm the node's image and compile caches with one pod first.
        c.create_deployment("warm", 1).await?;
        c.wait_ready("warm", 1, Duration::from_secs(60)).await?;
        let timeline = Timeline::start(&c.client, &c.base, "default", "app=many").await?;
        let t0 = Instant::now();
        c.create_deployment("many", args.replicas).await?;
        c.wait_ready("many", args.replicas, Duration::from_secs(300))
            .await?;
        let took = t0.elapsed();
        println!(
            "  run {}: {} replicas all Ready in {:.2} s; the pods, as seen on a watch:",
            run + 1,
            args.replicas,
            took.as_secs_f64()
        );
        timeline
            .settle(args.replicas, Duration::from_secs(10))
            .await;
        timeline.report(t0);
        scale_out.push(took);
        drop(c);

        // Phase 2: node failure.
        let mut c = Cluster::start().await?;
        c.add_agent("bench-a", "127.65.0.0/16").await?;
        c.add_agent("bench-b", "127.66.0.0/16").await?;
        push(&c.base, &args.wasm)?;
        c.create_deployment("failover", args.failover_replicas)
            .await?;
        c.wait_ready("failover", args.failover_replicas, Duration::from_secs(120))
            .await?;
        let (on_a, _) = c.running_on("failover", "bench-a").await?;
        let t0 = Instant::now();
        drop(c.agents.pop()); // SIGKILL bench-b
        let deadline = t0 + Duration::from_secs(120);
        loop {
            let (on, _) = c.running_on("failover", "bench-a").await?;
            if on == args.failover_replicas {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "after a node failure only {on} of {} replicas run on the surviving node",
                    args.failover_replicas
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = t0.elapsed();
        println!(
            "  run {}: node with {} of {} replicas killed; all Running on the other after {:.2} s",
            run + 1,
            args.failover_replicas - on_a,
            args.failover_replicas,
            took.as_secs_f64()
        );
        failover.push(took);
        let _ = &c.server;
    }
    scale_out.sort();
    failover.sort();
    println!(
        "  median: {} replicas Ready in {:.2} s; node failure → replacements Running in {:.2} s",
        args.replicas,
        median(&scale_out).as_secs_f64(),
        median(&failover).as_secs_f64()
    );
    Ok(())
}
