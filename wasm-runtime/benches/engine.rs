//! Benchmarks of the engine (results go in BENCHMARKS.md):
//!
//! 1. per-request instantiation (store + instance from the pre-instantiated
//!    hello `wasi:http` component), median of many;
//! 2. cold start from the compile cache: load the precompiled component,
//!    start serving, first response;
//! 3. memory held by an idle service (RSS growth per service over many
//!    services that have each served one request);
//! 4. requests/s of hello under keep-alive load with `wrk`, against this
//!    engine and, in the same run, against `wasmtime serve` on the same
//!    component (if a `wasmtime` binary is found: `$WASMTIME`, else
//!    `~/.cache/flotilla/wasmtime-cli/bin/wasmtime`, else `wasmtime` on PATH).
//!
//! Run: `cargo bench -p flotilla-wasm --bench engine` (env `BENCH_QUICK=1`
//! for a short run; `BENCH_SERVICES`, `BENCH_WRK_SECS` to resize).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_wasm::{Engine, EngineConfig, HttpSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn component() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples/hello-http/hello-http.wasm")
}

async fn run() {
    let quick = std::env::var("BENCH_QUICK").is_ok();
    println!("# flotilla-wasm benchmarks");
    instantiation(if quick { 2_000 } else { 20_000 }).await;
    cold_start(if quick { 5 } else { 30 }).await;
    idle_memory(env_num("BENCH_SERVICES", if quick { 200 } else { 1000 })).await;
    throughput(env_num("BENCH_WRK_SECS", if quick { 3 } else { 10 })).await;
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, p: usize) -> Duration {
    samples.sort();
    samples[(samples.len() * p / 100).min(samples.len() - 1)]
}

async fn instantiation(iterations: usize) {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let artifact = engine.load_file(component()).expect("load");
    let spec = HttpSpec::default();
    // Warm the pool's slots first.
    engine
        .time_http_instantiation(&artifact, &spec, 1_000)
        .await
        .expect("instantiate");
    let times = engine
        .time_http_instantiation(&artifact, &spec, iterations)
        .await
        .expect("instantiate");
    println!(
        "per-request instantiation: median {:.2} us, p99 {:.2} us ({iterations} instantiations)",
        median(times.clone()).as_secs_f64() * 1e6,
        percentile(times, 99).as_secs_f64() * 1e6,
    );
}

/// One `GET /` on a fresh connection; the whole exchange.
async fn first_response(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    response
}

async fn cold_start(runs: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        ..EngineConfig::default()
    };
    // Fill the cache (a node agent's earlier pull).
    Engine::new(config.clone())
        .expect("engine")
        .load_file(component())
        .expect("load");
    let engine = Engine::new(config).expect("engine");
    let mut times = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let artifact = engine.load_file(component()).expect("load");
        loads.push(started.elapsed());
        assert_eq!(artifact.cache_outcome(), flotilla_wasm::CacheOutcome::Hit);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let service = engine
            .serve_http(&artifact, listener, HttpSpec::default())
            .expect("serve");
        let response = first_response(service.local_addr()).await;
        times.push(started.elapsed());
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        service.stop(Duration::from_secs(1)).await;
    }
    println!(
        "cold start from compile cache (load precompiled + serve + first response): median {:.2} ms (load alone {:.2} ms, {runs} runs)",
        median(times).as_secs_f64() * 1e3,
        median(loads).as_secs_f64() * 1e3,
    );
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("rss");
    pages * 4096
}

async fn idle_memory(services: usize) {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let artifact = engine.load_file(component()).expect("load");
    // One service first, so one-time costs (code, pool bookkeeping, runtime)
    // are not counted per service.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let first = engine
        .serve_http(&artifact, listener, HttpSpec::default())
        .expect("serve");
    first_response(first.local_addr()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_bytes();
    let mut running = Vec::with_capacity(services);
    for _ in 0..services {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let service = engine
            .serve_http(&artifact, listener, HttpSpec::default())
            .expect("serve");
        let response = first_response(service.local_addr()).await;
        assert!(response.starts_with("HTTP/1.1 200"));
        running.push(service);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_bytes();
    let per = (after.saturating_sub(before)) as f64 / services as f64;
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
}

fn wasmtime_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("WASMTIME") {
        return Some(path.into());
    }
    let home = std::env::var("HOME").ok()?;
    let cached = PathBuf::from(home).join(".cache/flotilla/wasmtime-cli/bin/wasmtime");
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

/// Runs wrk against `addr`, returns requests/s.
fn wrk(addr: std::net::SocketAddr, secs: usize) -> Option<f64> {
    let output = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            &format!("-d{secs}s"),
            &format!("http://{addr}/"),
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    if text.contains("Non-2xx") {
        eprintln!("wrk saw errors:\n{text}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

async fn throughput(secs: usize) {
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let artifact = engine.load_file(component()).expect("load");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let service = engine
        .serve_http(&artifact, listener, HttpSpec::default())
        .expect("serve");
    let ours_addr = service.local_addr();

    let theirs = wasmtime_binary().and_then(|bin| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(&bin)
            .args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")])
            .arg(component())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some((
            child,
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            bin,
        ))
    });
    if let Some((_, addr, _)) = &theirs {
        // Wait for `wasmtime serve` to listen.
        for _ in 0..100 {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // Alternate the two servers so both see the same machine conditions.
    let rounds = 3;
    let mut ours = Vec::new();
    let mut wasmtime = Vec::new();
    for _ in 0..rounds {
        let addr = ours_addr;
        ours.push(
            tokio::task::spawn_blocking(move || wrk(addr, secs))
                .await
                .unwrap()
                .unwrap_or(0.0),
        );
        if let Some((_, addr, _)) = &theirs {
            let addr = *addr;
            wasmtime.push(
                tokio::task::spawn_blocking(move || wrk(addr, secs))
                    .await
                    .unwrap()
                    .unwrap_or(0.0),
            );
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let ours_med = med(ours.clone());
    println!(
        "hello requests/s (wrk -t2 -c32 -d{secs}s, keep-alive), flotilla-wasm: median {ours_med:.0} ({ours:.0?})"
    );
    match theirs {
        Some((mut child, _, bin)) => {
            let theirs_med = med(wasmtime.clone());
            println!(
                "hello requests/s, `{} serve` (same component, same run): median {theirs_med:.0} ({wasmtime:.0?}); ratio {:.2}x",
                bin.display(),
                ours_med / theirs_med.max(1.0),
            );
            let _ = child.kill();
            let _ = child.wait();
        }
        None => println!("`wasmtime` binary not found: no side-by-side comparison"),
    }
    service.stop(Duration::from_secs(1)).await;
}
