//! `flotilla bench service`: HTTP requests per second and latency through a Service's ClusterIP
//! (the node proxy) against straight to the pod, side by side in one run.
//!
//! It starts a control plane and a node agent in-process on a fresh data dir (what `flotilla up`
//! runs), pushes the hello-http sample, runs one pod of it behind a ClusterIP Service, then
//! alternates `wrk` runs against `podIP:8080` and `ClusterIP:8080` (`--rounds` of each, so
//! both see the same machine load), and reports the medians: requests per second, their ratio,
//! p50 and p99 latency, and the p99 the proxy adds.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use tokio_util::sync::CancellationToken;

/// Flags of `flotilla bench service`.
#[derive(Debug, Clone, Args)]
pub struct ServiceBenchArgs {
    /// The `wasi:http` component to serve.
    #[arg(
        long,
        default_value = "samples/hello-http/hello-http.wasm",
        value_name = "PATH"
    )]
    pub wasm: PathBuf,
    /// wrk runs against each target.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Seconds per wrk run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// wrk connections (kept alive).
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Path requested.
    #[arg(long, default_value = "/")]
    pub path: String,
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
}

fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// Reads `Requests/sec` and the 50% and 99% lines of `wrk --latency` output.
fn parse_wrk(out: &str) -> Option<Run> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in out.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("Requests/sec:") => rps = words.next().and_then(|w| w.parse().ok()),
            Some("50%") => p50 = words.next().and_then(parse_duration),
            Some("99%") => p99 = words.next().and_then(parse_duration),
            _ => {}
        }
    }
    Some(Run {
        rps: rps?,
        p50: p50?,
        p99: p99?,
    })
}

fn wrk(args: &ServiceBenchArgs, addr: &str) -> anyhow::Result<Run> {
    let out = Command::new("wrk")
        .args([
            "-t",
            &args.threads.to_string(),
            "-c",
            &args.connections.to_string(),
        ])
        .args(["-d", &format!("{}s", args.seconds), "--latency"])
        .arg(format!("http://{addr}{}", args.path))
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk against {addr} reported errors:\n{text}");
    }
    parse_wrk(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// Runs the benchmark.
pub async fn run(args: ServiceBenchArgs) -> anyhow::Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let tmp = tempfile::tempdir().context("temporary directory")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let kubeconfig = tmp.path().join("kubeconfig");
    flotilla_control::kubeconfig::write(&kubeconfig, &format!("http://{addr}"), "flotilla")?;
    let stop = CancellationToken::new();
    let mut config = flotilla_control::ServerConfig::new(tmp.path());
    let pid = std::process::id() % 250;
    config.service_ranges.cluster_ips = format!("127.251.{pid}.0/24")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let server = tokio::spawn(flotilla_control::serve(listener, config, stop.clone()));
    let mut agent_config = flotilla_node::AgentConfig::new("bench-node", tmp.path().join("agent"));
    agent_config.kubeconfig = Some(kubeconfig.clone());
    agent_config.listen = "127.0.0.1:0".parse()?;
    agent_config.pod_cidr = format!("127.250.{pid}.0/24")
        .parse()
        .map_err(anyhow::Error::msg)?;
    // The agent stops first, while the API server can still hear about it.
    let agent_stop = CancellationToken::new();
    let agent = flotilla_node::Agent::start(agent_config, agent_stop.clone()).await?;

    let options = flotilla_node::image::push::PushOptions {
        default_registry: Some(format!("http://{addr}")),
        ..Default::default()
    };
    flotilla_node::image::push::push_wasm(
        &args.wasm,
        "bench-http:v1",
        &options,
        &flotilla_node::image::push::NoProgress,
    )
    .await
    .with_context(|| format!("cannot push {}", args.wasm.display()))?;
    let client = reqwest::Client::new();
    let base = format!("http://{addr}/api/v1/namespaces/default");
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bench", "labels": {"app": "bench"}},
        "spec": {"nodeName": "bench-node", "containers": [{"name": "main", "image": "bench-http:v1",
                 "ports": [{"name": "http", "containerPort": 8080}]}]},
    });
    let svc = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "bench"},
        "spec": {"selector": {"app": "bench"}, "ports": [{"port": 8080, "targetPort": "http"}]},
    });
    for (path, body) in [("services", &svc), ("pods", &pod)] {
        let resp = client
            .post(format!("{base}/{path}"))
            .json(body)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "cannot create the {path}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
    }
    let started = Instant::now();
    let (pod_addr, front) = loop {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the pod did not become ready and reachable through its Service within 60s");
        }
        let pod: serde_json::Value = client
            .get(format!("{base}/pods/bench"))
            .send()
            .await?
            .json()
            .await?;
        let svc: serde_json::Value = client
            .get(format!("{base}/services/bench"))
            .send()
            .await?
            .json()
            .await?;
        let ip = pod["status"]["podIP"].as_str().unwrap_or("");
        let cip = svc["spec"]["clusterIP"].as_str().unwrap_or("");
        let ready = pod["status"]["containerStatuses"][0]["ready"] == true;
        if ready && !ip.is_empty() {
            let (p, f) = (format!("{ip}:8080"), format!("{cip}:8080"));
            if tokio::net::TcpStream::connect(&f).await.is_ok() {
                break (p, f);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    println!(
        "# flotilla bench service: wrk -t{} -c{} -d{}s, {} rounds each, GET {}",
        args.threads, args.connections, args.seconds, args.rounds, args.path
    );
    println!("# pod {pod_addr} (hello-http on wasmtime), Service ClusterIP {front}");
    let (mut direct, mut proxied) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let args2 = args.clone();
        let (pa, fa) = (pod_addr.clone(), front.clone());
        let (d, p) = tokio::task::spawn_blocking(move || -> anyhow::Result<(Run, Run)> {
            Ok((wrk(&args2, &pa)?, wrk(&args2, &fa)?))
        })
        .await??;
        println!(
            "round {round}: direct {:.0} req/s p99 {:?} | service {:.0} req/s p99 {:?}",
            d.rps, d.p99, p.rps, p.p99
        );
        direct.push(d);
        proxied.push(p);
    }
    let stat = |runs: &[Run]| {
        (
            median(runs.iter().map(|r| r.rps).collect()),
            median(runs.iter().map(|r| r.p50).collect()),
            median(runs.iter().map(|r| r.p99).collect()),
        )
    };
    let (d_rps, d_p50, d_p99) = stat(&direct);
    let (s_rps, s_p50, s_p99) = stat(&proxied);
    println!("| path | req/s (median) | p50 | p99 |");
    println!("|---|---|---|---|");
    println!("| straight to the pod | {d_rps:.0} | {d_p50:?} | {d_p99:?} |");
    println!("| through the Service | {s_rps:.0} | {s_p50:?} | {s_p99:?} |");
    println!(
        "ratio {:.2}x (target >= 0.8x); added p99 {} us (target <= 200 us)",
        s_rps / d_rps,
        s_p99.as_micros() as i128 - d_p99.as_micros() as i128
    );
    agent_stop.cancel();
    agent.join().await;
    stop.cancel();
    let _ = server.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 1s test @ http://127.0.0.1:8080/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   512.00us  100.00us   2.00ms   90.00%\n  Latency Distribution\n     50%  480.00us\n     75%  600.00us\n     90%  700.00us\n     99%    1.20ms\n  31000 requests in 1.00s, 3.00MB read\nRequests/sec:  31000.50\nTransfer/sec:      3.00MB\n";
        let run = parse_wrk(out).unwrap();
        assert_eq!(run.rps, 31000.5);
        assert_eq!(run.p50, Duration::from_micros(480));
        assert_eq!(run.p99, Duration::from_micros(1200));
    }
}
