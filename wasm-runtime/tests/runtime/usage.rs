//! Usage accounting: the memory a service's or command's instances hold and the CPU time they
//! spend, as the node agent reports them for `kubectl top`.

use std::time::Duration;

use flotilla_wasm::{CommandSpec, HttpSpec, Limits, Usage};
use tokio::net::TcpListener;

use crate::common::*;

/// Polls `f` every few milliseconds until it holds; fails after [`TIMEOUT`].
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_running_command_holds_its_memory_and_accumulates_cpu_time_until_it_ends() {
    let engine = engine();
    let artifact = engine
        .load_bytes(&wat(
            r#"(module (memory (export "memory") 3) (func (export "_start") (loop $l (br $l))))"#,
        ))
        .unwrap();
    let handle = engine
        .run_command(&artifact, CommandSpec::default())
        .unwrap();
    let usage: Usage = handle.usage();
    until("20 ms of CPU time counted", || {
        usage.cpu_time() >= Duration::from_millis(20)
    })
    .await;
    assert_eq!(usage.memory_bytes(), 3 << 16, "three 64 KiB pages");
    assert_eq!(usage.instances(), 1);
    let spent = usage.cpu_time();
    let _ = within(handle.stop(Duration::ZERO)).await;
    until("the instance released", || usage.instances() == 0).await;
    assert_eq!(usage.memory_bytes(), 0);
    assert!(usage.cpu_time() >= spent, "CPU time only grows");
}

#[tokio::test]
async fn growth_counts_and_a_refused_growth_does_not() {
    let engine = engine();
    let artifact = load_wat(&engine, "memory_bomb.wat");
    let spec = CommandSpec {
        limits: Limits {
            memory_bytes: 1 << 20,
            ..Limits::default()
        },
        ..CommandSpec::default()
    };
    let handle = engine.run_command(&artifact, spec).unwrap();
    let usage = handle.usage();
    assert!(within(handle.wait()).await.is_err(), "out of memory");
    // The bomb grew to the 1 MiB cap, then was refused; once it ended, nothing is held.
    until("the instance released", || usage.instances() == 0).await;
    assert_eq!(usage.memory_bytes(), 0);
}

#[tokio::test]
async fn an_http_service_holds_memory_only_while_instances_live() {
    let engine = engine();
    let hello = engine
        .load_file(sample("hello-http/hello-http.wasm"))
        .unwrap();
    // A fresh instance per request: none is left once the response is out.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fresh = engine
        .serve_http(&hello, listener, HttpSpec::default())
        .unwrap();
    for _ in 0..3 {
        assert_eq!(get(fresh.local_addr(), "/").await.status, 200);
    }
    let usage = fresh.usage();
    until("no instance left", || usage.instances() == 0).await;
    assert_eq!(usage.memory_bytes(), 0);

    // A warm instance keeps its memory between requests.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let spec = HttpSpec {
        warm_instances: 1,
        ..HttpSpec::default()
    };
    let warm = engine.serve_http(&hello, listener, spec).unwrap();
    assert_eq!(get(warm.local_addr(), "/").await.status, 200);
    let usage = warm.usage();
    until("the warm instance kept", || usage.instances() == 1).await;
    assert!(
        usage.memory_bytes() >= 1 << 16,
        "at least one page: {}",
        usage.memory_bytes()
    );
    within(warm.stop(Duration::from_secs(1))).await;
    assert_eq!(usage.instances(), 0, "stop drops the warm instance");
    assert_eq!(usage.memory_bytes(), 0);
}
