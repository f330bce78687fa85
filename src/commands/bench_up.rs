//! `flotilla bench up`: how fast `flotilla up` is ready, and how much memory it holds idle.
//!
//! Starts `flotilla up` (this same binary) several times, each on a fresh data dir and free
//! ports, and measures:
//! - **ready**: process spawn → the kubeconfig written, the API server answering and the local
//!   Node `Ready` (checked over HTTP);
//! - **idle RSS**: the process's resident memory after it has sat idle for `--idle` seconds,
//!   split into anonymous memory and file-backed pages (the binary's own code).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::AsyncBufReadExt;

/// Flags of `flotilla bench up`.
#[derive(Debug, Args)]
pub struct UpBenchArgs {
    /// How many times to start a cluster.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Seconds each cluster sits idle before its memory is read.
    #[arg(long, default_value_t = 5)]
    pub idle: u64,
}

/// Runs the benchmark and prints a report.
pub async fn run(args: UpBenchArgs) -> anyhow::Result<()> {
    let mut ready = Vec::new();
    let mut memory = Vec::new();
    let client = reqwest::Client::new();
    for run in 0..args.runs.max(1) {
        let tmp = tempfile::tempdir()?;
        let started = Instant::now();
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
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
        tokio::time::sleep(Duration::from_secs(args.idle)).await;
        let (total, anon, file) = rss(pid)?;
        println!(
            "run {}: ready in {:.0} ms; idle RSS {:.1} MiB (anonymous {:.1} MiB, file-backed {:.1} MiB)",
            run + 1,
            took.as_secs_f64() * 1e3,
            mib(total),
            mib(anon),
            mib(file)
        );
        ready.push(took);
        memory.push(total);
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    ready.sort();
    memory.sort();
    println!(
        "median of {}: ready in {:.0} ms, idle RSS {:.1} MiB",
        ready.len(),
        ready[ready.len() / 2].as_secs_f64() * 1e3,
        mib(memory[memory.len() / 2])
    );
    Ok(())
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
