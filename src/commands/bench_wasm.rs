//! `flotilla bench wasm`: the wasm-runtime engine on its own (issue 3), in the release binary
//! that ships it:
//!
//! 1. per-request instantiation (store + instance from the pre-instantiated hello `wasi:http`
//!    component), median of many;
//! 2. cold start from the compile cache: load the precompiled component, start serving, first
//!    response;
//! 3. memory held by an idle service (RSS growth per service over many services that have each
//!    served one request);
//! 4. hello requests/s under keep-alive load with `wrk`, against this engine and, alternating in
//!    the same run, against `wasmtime serve` on the same component (`--wasmtime PATH`, else
//!    `$WASMTIME`, else `~/.cache/flotilla/wasmtime-cli/bin/wasmtime`, else `wasmtime` on PATH);
//! 5. neighbour isolation: p99 of sequential keep-alive hello requests, quiet and while an
//!    infinite loop and a memory bomb run as commands beside the service, with the command
//!    threads at nice 10 (the default) and, alternating in the same run, at nice 0.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bench_stats::{median, percentile};
use anyhow::{Context, bail};
use clap::Args;
use flotilla_wasm::{CacheOutcome, CommandSpec, Engine, EngineConfig, Error, HttpSpec, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Flags of `flotilla bench wasm`.
#[derive(Debug, Args)]
pub struct WasmBenchArgs {
    /// The `wasi:http` component to measure.
    #[arg(long, default_value = "samples/hello-http/hello-http.wasm")]
    pub component: PathBuf,
    /// Instantiations timed (after 1,000 to warm the pool).
    #[arg(long, default_value_t = 20_000)]
    pub instantiations: usize,
    /// Cold starts from the compile cache.
    #[arg(long, default_value_t = 30)]
    pub cold_starts: usize,
    /// Idle services for the memory figure.
    #[arg(long, default_value_t = 1_000)]
    pub services: usize,
    /// Seconds of each `wrk` round (three rounds per server, alternating).
    #[arg(long, default_value_t = 10)]
    pub wrk_seconds: u64,
    /// `wrk` connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Sequential requests per p99 in the isolation section (0 skips it).
    #[arg(long, default_value_t = 2_000)]
    pub isolation_requests: usize,
    /// The `wasmtime` CLI to compare with (`wasmtime serve`).
    #[arg(long, value_name = "PATH")]
    pub wasmtime: Option<PathBuf>,
}

/// Runs `flotilla bench wasm`.
pub async fn run(args: WasmBenchArgs) -> anyhow::Result<()> {
    if !args.component.exists() {
        bail!(
            "component {} not found (run from the repository root or pass --component)",
            args.component.display()
        );
    }
    println!("# flotilla bench wasm ({})", args.component.display());
    instantiation(&args.component, args.instantiations).await?;
    cold_start(&args.component, args.cold_starts).await?;
    idle_memory(&args.component, args.services).await?;
    if args.isolation_requests > 0 {
        isolation(&args.component, args.isolation_requests).await?;
    }
    throughput(&args).await
}

async fn instantiation(component: &Path, iterations: usize) -> anyhow::Result<()> {
    let engine = Engine::new(EngineConfig::default())?;
    let artifact = engine.load_file(component)?;
    let spec = HttpSpec::default();
    // Warm the pool's slots first.
    engine
        .time_http_instantiation(&artifact, &spec, 1_000)
        .await?;
    let mut times = engine
        .time_http_instantiation(&artifact, &spec, iterations)
        .await?;
    // These VMs run memory-bound code at one of two speeds, switching every few seconds:
    // the medians of consecutive tenths of the run show whether it switched during this one.
    let blocks = block_medians(&times, 10);
    times.sort();
    println!(
        "per-request instantiation: median {:.2} us, p99 {:.2} us ({iterations} instantiations; medians of each tenth, in order: {blocks})",
        median(&times).as_secs_f64() * 1e6,
        percentile(&times, 0.99).as_secs_f64() * 1e6,
    );
    Ok(())
}

/// The medians of `parts` consecutive blocks of `times` (unsorted, in run order), in µs.
fn block_medians(times: &[Duration], parts: usize) -> String {
    let size = times.len().div_ceil(parts.max(1)).max(1);
    times
        .chunks(size)
        .map(|block| {
            let mut block = block.to_vec();
            block.sort();
            format!("{:.1}", median(&block).as_secs_f64() * 1e6)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `GET /` on a fresh connection; the whole exchange.
async fn first_response(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    if !response.starts_with("HTTP/1.1 200") {
        bail!("unexpected response from {addr}: {response}");
    }
    Ok(response)
}

async fn cold_start(component: &Path, runs: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    };
    // Fill the cache (a node agent's earlier pull).
    Engine::new(config.clone())?.load_file(component)?;
    let engine = Engine::new(config)?;
    let mut times = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let artifact = engine.load_file(component)?;
        loads.push(started.elapsed());
        if artifact.cache_outcome() != CacheOutcome::Hit {
            bail!("the compile cache missed on a warm cache");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let service = engine.serve_http(&artifact, listener, HttpSpec::default())?;
        first_response(service.local_addr()).await?;
        times.push(started.elapsed());
        service.stop(Duration::from_secs(1)).await;
    }
    times.sort();
    loads.sort();
    println!(
        "cold start from compile cache (load precompiled + serve + first response): median {:.2} ms (load alone {:.2} ms, {runs} runs)",
        median(&times).as_secs_f64() * 1e3,
        median(&loads).as_secs_f64() * 1e3,
    );
    Ok(())
}

fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("unreadable /proc/self/statm")?;
    Ok(pages * 4096)
}

async fn idle_memory(component: &Path, services: usize) -> anyhow::Result<()> {
    let engine = Engine::new(EngineConfig::default())?;
    let artifact = engine.load_file(component)?;
    // One service first, so one-time costs (code, pool bookkeeping, runtime) are not counted
    // per service.
    let first = engine.serve_http(
        &artifact,
        TcpListener::bind("127.0.0.1:0").await?,
        HttpSpec::default(),
    )?;
    first_response(first.local_addr()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes()?;
    let mut running = Vec::with_capacity(services);
    for _ in 0..services {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let service = engine.serve_http(&artifact, listener, HttpSpec::default())?;
        first_response(service.local_addr()).await?;
        running.push(service);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes()?;
    let per = after.saturating_sub(before) as f64 / services.max(1) as f64;
    println!(
        "idle service memory: {:.1} KiB RSS per service ({services} services, each after one request; RSS {:.1} -> {:.1} MiB)",
        per / 1024.0,
        before as f64 / 1048576.0,
        after as f64 / 1048576.0,
    );
    for service in running {
        service.stop(Duration::from_millis(100)).await;
    }
    first.stop(Duration::from_millis(100)).await;
    Ok(())
}

fn wasmtime_binary(flag: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(path) = flag {
        return Some(path.clone());
    }
    if let Ok(path) = std::env::var("WASMTIME") {
        return Some(path.into());
    }
    let cached = dirs::cache_dir()?.join("flotilla/wasmtime-cli/bin/wasmtime");
    if cached.exists() {
        return Some(cached);
    }
    Command::new("wasmtime")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from("wasmtime"))
}

/// Runs wrk against `addr`; requests/s.
fn wrk(addr: SocketAddr, secs: u64, connections: usize) -> anyhow::Result<f64> {
    let output = Command::new("wrk")
        .args([
            "-t2".to_string(),
            format!("-c{connections}"),
            format!("-d{secs}s"),
            format!("http://{addr}/"),
        ])
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        bail!("wrk saw errors against {addr}:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// Kills the child when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn throughput(args: &WasmBenchArgs) -> anyhow::Result<()> {
    let engine = Engine::new(EngineConfig::default())?;
    let artifact = engine.load_file(&args.component)?;
    let service = engine.serve_http(
        &artifact,
        TcpListener::bind("127.0.0.1:0").await?,
        HttpSpec::default(),
    )?;
    let ours_addr = service.local_addr();

    let mut theirs = None;
    if let Some(bin) = wasmtime_binary(args.wasmtime.as_ref()) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(&bin)
            .args(["serve", "-Scli", "--addr", &addr.to_string()])
            .arg(&args.component)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {} serve", bin.display()))?;
        let guard = ChildGuard(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while first_response(addr).await.is_err() {
            if Instant::now() > deadline {
                bail!("`{} serve` did not answer within 30 s", bin.display());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        theirs = Some((guard, addr, bin));
    }

    // Alternate the two servers so both see the same machine conditions.
    let (secs, conns) = (args.wrk_seconds, args.connections);
    let mut ours = Vec::new();
    let mut wasmtime = Vec::new();
    for _ in 0..3 {
        ours.push(tokio::task::spawn_blocking(move || wrk(ours_addr, secs, conns)).await??);
        if let Some((_, addr, _)) = &theirs {
            let addr = *addr;
            wasmtime.push(tokio::task::spawn_blocking(move || wrk(addr, secs, conns)).await??);
        }
    }
    let ours_med = median_f64(&mut ours);
    println!(
        "hello requests/s (wrk -t2 -c{conns} -d{secs}s, keep-alive), flotilla-wasm: median {ours_med:.0} ({ours:.0?})"
    );
    match theirs {
        Some((_guard, _, bin)) => {
            let theirs_med = median_f64(&mut wasmtime);
            println!(
                "hello requests/s, `{} serve` (same component, same run): median {theirs_med:.0} ({wasmtime:.0?}); ratio {:.2}x",
                bin.display(),
                ours_med / theirs_med.max(1.0),
            );
        }
        None => println!("`wasmtime` CLI not found: no side-by-side comparison"),
    }
    service.stop(Duration::from_secs(1)).await;
    Ok(())
}

fn median_f64(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

// The engine's test fixtures: a WASI p1 command spinning forever without a host call, and one
// growing (and touching) its memory a page at a time until refused.
const INFINITE_LOOP: &str = include_str!("../../wasm-runtime/tests/fixtures/infinite_loop.wat");
const MEMORY_BOMB: &str = include_str!("../../wasm-runtime/tests/fixtures/memory_bomb.wat");

/// A keep-alive HTTP/1.1 client for `GET /`, enough for the hello component.
struct KeepAlive {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    async fn connect(addr: SocketAddr) -> anyhow::Result<KeepAlive> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(KeepAlive {
            stream,
            buf: Vec::new(),
        })
    }

    /// One request; returns once the whole response (headers and body) is in.
    async fn get(&mut self) -> anyhow::Result<()> {
        self.stream
            .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")
            .await?;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    bail!("unexpected response: {head}");
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .context("the hello response has no content-length")?;
                if self.buf.len() >= end + 4 + length {
                    self.buf.drain(..end + 4 + length);
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                bail!("the connection closed mid-response");
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// p99 latency of `n` sequential requests.
    async fn p99(&mut self, n: usize) -> anyhow::Result<Duration> {
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            self.get().await?;
            times.push(started.elapsed());
        }
        times.sort();
        Ok(percentile(&times, 0.99))
    }
}

/// Quiet and loaded p99 of one engine whose command threads run at `nice`.
async fn isolation_round(
    component: &Path,
    nice: i32,
    requests: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let engine = Engine::new(EngineConfig {
        command_nice: nice,
        ..EngineConfig::default()
    })?;
    let hello = engine.load_file(component)?;
    let spinner = engine.load_bytes(&wat::parse_str(INFINITE_LOOP)?)?;
    let bomb = engine.load_bytes(&wat::parse_str(MEMORY_BOMB)?)?;
    let service = engine.serve_http(
        &hello,
        TcpListener::bind("127.0.0.1:0").await?,
        HttpSpec::default(),
    )?;
    let mut client = KeepAlive::connect(service.local_addr()).await?;
    client.p99(requests / 4).await?; // warm up
    let quiet = client.p99(requests).await?;

    let spinning = engine.run_command(&spinner, CommandSpec::default())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bombs = {
        let (engine, stop) = (engine.clone(), stop.clone());
        tokio::spawn(async move {
            let mut runs = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let spec = CommandSpec {
                    limits: Limits {
                        memory_bytes: 1 << 30,
                        ..Limits::default()
                    },
                    ..CommandSpec::default()
                };
                match engine.run_command(&bomb, spec)?.wait().await {
                    Err(Error::OutOfMemory { .. }) => runs += 1,
                    other => bail!("the memory bomb ended with {other:?}"),
                }
            }
            Ok(runs)
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let loaded = client.p99(requests).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if spinning.is_finished() {
        bail!("the infinite loop ended on its own");
    }
    spinning.stop(Duration::ZERO).await.ok();
    let runs = bombs.await??;
    if runs == 0 {
        bail!("no memory bomb ran to its limit");
    }
    service.stop(Duration::from_secs(1)).await;
    Ok((quiet, loaded))
}

async fn isolation(component: &Path, requests: usize) -> anyhow::Result<()> {
    // Alternate the two settings so both see the same machine conditions.
    let mut ratios: [Vec<f64>; 2] = Default::default();
    let mut rounds: [Vec<(Duration, Duration)>; 2] = Default::default();
    for _ in 0..3 {
        for (i, nice) in [10, 0].into_iter().enumerate() {
            let (quiet, loaded) = isolation_round(component, nice, requests).await?;
            ratios[i].push(loaded.as_secs_f64() / quiet.as_secs_f64().max(1e-9));
            rounds[i].push((quiet, loaded));
        }
    }
    for (i, nice) in [10, 0].into_iter().enumerate() {
        let shown: Vec<String> = rounds[i]
            .iter()
            .map(|(q, l)| format!("{:.0}/{:.0}", q.as_secs_f64() * 1e6, l.as_secs_f64() * 1e6))
            .collect();
        println!(
            "neighbour isolation, command threads at nice {nice}: loaded/quiet p99 median {:.2}x (quiet/loaded p99 in us per round: {}; {requests} requests each)",
            median_f64(&mut ratios[i]),
            shown.join(", "),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_medians_follow_the_run_order() {
        let us = |v: &[u64]| {
            v.iter()
                .map(|&n| Duration::from_micros(n))
                .collect::<Vec<_>>()
        };
        assert_eq!(block_medians(&us(&[1, 9, 1, 5, 5, 6]), 2), "1.0 5.0");
        assert_eq!(block_medians(&us(&[3, 4, 5]), 10), "3.0 4.0 5.0");
        assert_eq!(block_medians(&[], 10), "");
    }
}
