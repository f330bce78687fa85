//! HTTP services: routes, fresh and warm instances, per-request failures,
//! concurrency cap, drain, outgoing allow list, env and logs.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use flotilla_wasm::{AllowList, Artifact, BoundedLog, Engine, HttpService, HttpSpec, Limits};
use tokio::net::TcpListener;

use crate::common::*;

fn hello(engine: &Engine) -> Artifact {
    engine
        .load_file(sample("hello-http/hello-http.wasm"))
        .expect("loads")
}

async fn serve(engine: &Engine, artifact: &Artifact, spec: HttpSpec) -> HttpService {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    engine.serve_http(artifact, listener, spec).expect("serves")
}

#[tokio::test]
async fn serves_hello_echo_and_a_json_api() {
    let engine = engine();
    let service = serve(&engine, &hello(&engine), HttpSpec::default()).await;
    let mut client = Client::connect(service.local_addr()).await;

    let reply = client.get("/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from flotilla wasi:http\n");

    let reply = client
        .send(
            "POST",
            "/echo",
            Bytes::from_static(b"ping pong"),
            Some("text/x-test"),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ping pong");
    assert_eq!(reply.headers["content-type"], "text/x-test");

    let reply = client.get("/api/info?x=1").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        r#"{"service":"hello-http","method":"GET","path":"/api/info","query":"x=1"}"#
    );

    let reply = client
        .send("POST", "/api/sum", Bytes::from_static(b"[1, 2, 3.5]"), None)
        .await;
    assert_eq!(reply.text(), r#"{"sum":6.5,"count":3}"#);
    let reply = client
        .send("POST", "/api/sum", Bytes::from_static(b"nope"), None)
        .await;
    assert_eq!(reply.status, 400);

    assert_eq!(client.get("/missing").await.status, 404);
    let stats = service.stats();
    assert_eq!(stats.requests, 6);
    assert_eq!(stats.succeeded, 6);
    assert!(within(service.stop(Duration::from_secs(5))).await);
}

#[tokio::test]
async fn every_request_gets_a_fresh_instance_by_default() {
    let engine = engine();
    let service = serve(&engine, &hello(&engine), HttpSpec::default()).await;
    let mut client = Client::connect(service.local_addr()).await;
    for _ in 0..5 {
        assert_eq!(client.get("/").await.status, 200);
    }
    assert_eq!(service.stats().instantiations, 5);
}

#[tokio::test]
async fn warm_instances_are_reused_when_asked_for() {
    let engine = engine();
    let spec = HttpSpec {
        warm_instances: 2,
        ..HttpSpec::default()
    };
    let service = serve(&engine, &hello(&engine), spec).await;
    let mut client = Client::connect(service.local_addr()).await;
    for _ in 0..10 {
        assert_eq!(client.get("/").await.status, 200);
    }
    let stats = service.stats();
    assert_eq!(stats.succeeded, 10);
    assert!(stats.instantiations <= 2, "{stats:?}");
}

#[tokio::test]
async fn trap_deadline_and_memory_each_give_a_500_with_their_own_reason() {
    let engine = engine();
    let spec = HttpSpec {
        limits: Limits {
            memory_bytes: 32 << 20,
            cpu_time: Some(Duration::from_millis(200)),
            ..Limits::default()
        },
        ..HttpSpec::default()
    };
    let service = serve(&engine, &hello(&engine), spec).await;
    let addr = service.local_addr();

    let reply = get(addr, "/trap").await;
    assert_eq!((reply.status, reply.failure()), (500, Some("trap")));
    let reply = get(addr, "/spin").await;
    assert_eq!(
        (reply.status, reply.failure()),
        (500, Some("deadline-exceeded"))
    );
    let reply = get(addr, "/alloc?mb=100").await;
    assert_eq!(
        (reply.status, reply.failure()),
        (500, Some("out-of-memory"))
    );
    // Within the cap, the same route works.
    let reply = get(addr, "/alloc?mb=4").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // And the service is unharmed.
    assert_eq!(get(addr, "/").await.status, 200);

    let stats = service.stats();
    assert_eq!(stats.failed.get("trap"), Some(&1));
    assert_eq!(stats.failed.get("deadline-exceeded"), Some(&1));
    assert_eq!(stats.failed.get("out-of-memory"), Some(&1));
}

#[tokio::test]
async fn a_failing_request_does_not_disturb_one_in_flight_beside_it() {
    let engine = engine();
    let spec = HttpSpec {
        limits: Limits {
            cpu_time: Some(Duration::from_millis(300)),
            ..Limits::default()
        },
        ..HttpSpec::default()
    };
    let service = serve(&engine, &hello(&engine), spec).await;
    let addr = service.local_addr();
    let spinner = tokio::spawn(async move { get(addr, "/spin").await });
    let mut client = Client::connect(addr).await;
    for _ in 0..20 {
        let reply = client.get("/api/info").await;
        assert_eq!(reply.status, 200);
    }
    let reply = within(spinner).await.unwrap();
    assert_eq!(reply.failure(), Some("deadline-exceeded"));
}

#[tokio::test]
async fn concurrency_cap_makes_extra_requests_wait() {
    let engine = engine();
    let spec = HttpSpec {
        max_concurrency: 1,
        ..HttpSpec::default()
    };
    let service = serve(&engine, &hello(&engine), spec).await;
    let addr = service.local_addr();
    let slow = tokio::spawn(async move { get(addr, "/sleep?ms=400").await });
    // Let the slow request take the only slot.
    within(async {
        while service.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let started = Instant::now();
    assert_eq!(get(addr, "/").await.status, 200);
    let waited = started.elapsed();
    assert_eq!(within(slow).await.unwrap().status, 200);
    assert!(
        waited >= Duration::from_millis(200),
        "waited only {waited:?}"
    );
}

#[tokio::test]
async fn stop_drains_requests_in_flight_and_refuses_new_connections() {
    let engine = engine();
    let service = serve(&engine, &hello(&engine), HttpSpec::default()).await;
    let addr = service.local_addr();
    let slow = tokio::spawn(async move { get(addr, "/sleep?ms=300").await });
    within(async {
        while service.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        within(service.stop(Duration::from_secs(10))).await,
        "drained"
    );
    assert_eq!(within(slow).await.unwrap().status, 200);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn stop_gives_up_on_requests_that_outlast_the_drain() {
    let engine = engine();
    let service = serve(&engine, &hello(&engine), HttpSpec::default()).await;
    let addr = service.local_addr();
    let _slow =
        tokio::spawn(async move { Client::connect(addr).await.get("/sleep?ms=20000").await });
    within(async {
        while service.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let started = Instant::now();
    assert!(!within(service.stop(Duration::from_millis(200))).await);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A plain HTTP server on the loopback, standing in for an upstream API.
async fn upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"upstream says hi"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn outgoing_requests_need_the_host_on_the_allow_list() {
    let engine = engine();
    let artifact = hello(&engine);
    let up = upstream().await;
    let path = format!("/fetch?url=http://{up}/");

    let denied = serve(&engine, &artifact, HttpSpec::default()).await;
    let reply = get(denied.local_addr(), &path).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );

    let other_host = HttpSpec {
        allowed_hosts: AllowList::new(["api.example.com"]),
        ..HttpSpec::default()
    };
    let denied = serve(&engine, &artifact, other_host).await;
    let reply = get(denied.local_addr(), &path).await;
    assert!(
        reply.text().contains("HttpRequestDenied"),
        "{}",
        reply.text()
    );

    let allowed = HttpSpec {
        allowed_hosts: AllowList::new(["127.0.0.1"]),
        ..HttpSpec::default()
    };
    let allowed = serve(&engine, &artifact, allowed).await;
    let reply = get(allowed.local_addr(), &path).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "status: 200\nupstream says hi");
}

#[tokio::test]
async fn instances_see_the_service_env_and_log_into_its_sink() {
    let engine = engine();
    let log = BoundedLog::new(4096);
    let spec = HttpSpec {
        env: vec![("POD_NAME".into(), "web-1".into())],
        log: Some(log.clone()),
        ..HttpSpec::default()
    };
    let service = serve(&engine, &hello(&engine), spec).await;
    let mut client = Client::connect(service.local_addr()).await;
    assert!(client.get("/env").await.text().contains("POD_NAME=web-1\n"));
    assert_eq!(client.get("/log").await.status, 200);
    assert!(log.stdout_text().contains("hello-http: a line on stdout"));
    assert!(log.stderr_text().contains("hello-http: a line on stderr"));
}

#[tokio::test]
async fn python_component_serves_when_built() {
    let path = sample("hello-python/hello-python.wasm");
    if !path.exists() {
        eprintln!(
            "skipping: {} is absent (run samples/build.sh hello-python to build it)",
            path.display()
        );
        return;
    }
    // Compiling 18 MB of CPython takes a while: keep the compiled form in a
    // cache that outlives the test run (entries are checked on every load).
    let engine = Engine::new(flotilla_wasm::EngineConfig {
        cache_dir: Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")),
        ..test_config()
    })
    .unwrap();
    let artifact = engine.load_file(&path).expect("loads");
    assert_eq!(artifact.kind(), flotilla_wasm::ArtifactKind::HttpProxy);
    let service = serve(&engine, &artifact, HttpSpec::default()).await;
    let mut client = Client::connect(service.local_addr()).await;
    let reply = client.get("/").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "hello from python wasi:http\n");
    let reply = client.get("/api/info?a=b").await;
    assert!(
        reply.text().contains("\"query\": \"a=b\""),
        "{}",
        reply.text()
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_request_is_not_a_guest_trap() {
    use tokio::io::AsyncWriteExt;
    let engine = engine();
    let service = serve(&engine, &hello(&engine), HttpSpec::default()).await;
    let mut socket = tokio::net::TcpStream::connect(service.local_addr())
        .await
        .unwrap();
    socket
        .write_all(b"GET /sleep?ms=300 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    within(async {
        while service.in_flight() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The client goes away before the guest writes its answer.
    drop(socket);
    within(async {
        while service.in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let stats = service.stats();
    assert_eq!(stats.requests, 1);
    assert!(stats.failed.is_empty(), "{stats:?}");
    assert!(within(service.stop(Duration::from_secs(5))).await);
}
