//! HTTP services: `wasi:http/proxy` components served on a caller's listener.
//!
//! Each request gets a fresh instance from the artifact's pre-instantiated
//! component, in its own store with its own limits: a CPU budget (epoch
//! metered) and a memory cap. A request whose instance traps, overruns its
//! budget or its memory gets a `500` whose body and log line name the reason,
//! and no other request notices — instances share nothing but the engine.
//! [`HttpSpec::warm_instances`] opts in to reusing instances that finished a
//! request cleanly (faster, but state leaks between requests of one service).
//! [`HttpSpec::max_concurrency`] caps the requests in flight; more wait.
//! [`HttpService::stop`] stops accepting, lets in-flight requests finish
//! within the drain period, then kills what is left.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::artifact::{Artifact, Pre};
use crate::clock::EpochClock;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::limits::{self, Guard, Guarded, KillSwitch, Limits, Throttle};
use crate::log::{LogSink, LogStream, NullLog, SinkStream};
use crate::outgoing::{AllowList, OutgoingPolicy, Resolver};
use crate::usage::Usage;

/// How to serve a `wasi:http/proxy` component.
#[derive(Clone)]
pub struct HttpSpec {
    /// Limits for each request's instance. The CPU budget is per request.
    pub limits: Limits,
    /// How many instances that served a request cleanly are kept for reuse.
    /// 0 (the default) gives every request a fresh instance.
    pub warm_instances: usize,
    /// Most requests handled at once; further requests wait for a slot.
    pub max_concurrency: usize,
    /// Wall-clock time a request may take to produce its response head,
    /// whatever the guest is waiting on.
    pub request_timeout: Duration,
    /// Hosts the guest may send HTTP requests to.
    pub allowed_hosts: AllowList,
    /// Names resolved before the allow list is asked (cluster Services); a resolved name is
    /// allowed.
    pub resolver: Option<Arc<dyn Resolver>>,
    /// Environment variables every instance sees.
    pub env: Vec<(String, String)>,
    /// Where the guest's stdout and stderr go; `None` discards them.
    pub log: Option<Arc<dyn LogSink>>,
}

impl Default for HttpSpec {
    fn default() -> Self {
        HttpSpec {
            limits: Limits {
                cpu_time: Some(Duration::from_secs(10)),
                ..Limits::default()
            },
            warm_instances: 0,
            max_concurrency: 256,
            request_timeout: Duration::from_secs(60),
            allowed_hosts: AllowList::default(),
            resolver: None,
            env: Vec::new(),
            log: None,
        }
    }
}

impl std::fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpec")
            .field("limits", &self.limits)
            .field("warm_instances", &self.warm_instances)
            .field("max_concurrency", &self.max_concurrency)
            .field("request_timeout", &self.request_timeout)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// Store data of one request's instance.
pub(crate) struct HttpState {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: OutgoingPolicy,
    guard: Guard,
}

impl Guarded for HttpState {
    fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Counters of a service, for tests, metrics and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpStats {
    /// Requests received.
    pub requests: u64,
    /// Requests whose instance ended cleanly.
    pub succeeded: u64,
    /// Failed requests by reason ([`Error::reason`], or `timeout`).
    pub failed: BTreeMap<&'static str, u64>,
    /// Instances created (fewer than requests when warm reuse is on).
    pub instantiations: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    succeeded: AtomicU64,
    instantiations: AtomicU64,
    failed: Mutex<BTreeMap<&'static str, u64>>,
}

/// A warm instance waiting for its next request.
struct Warm {
    store: Store<HttpState>,
    proxy: Proxy,
}

struct Shared {
    engine: wasmtime::Engine,
    clock: EpochClock,
    throttle: Option<Arc<Throttle>>,
    pre: ProxyPre<HttpState>,
    spec: HttpSpec,
    sink: Arc<dyn LogSink>,
    slots: Arc<Semaphore>,
    warm: Mutex<Vec<Warm>>,
    counters: Counters,
    usage: Usage,
    tasks: TaskTracker,
    /// Cancelled to stop accepting and start draining.
    shutdown: CancellationToken,
    /// Cancelled when the drain period is over: everything left is dropped.
    kill: CancellationToken,
}

impl Shared {
    fn fail(&self, reason: &'static str) {
        let mut failed = self.failed_lock();
        *failed.entry(reason).or_default() += 1;
    }

    fn failed_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        self.counters
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn warm_lock(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.warm.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running HTTP service. Dropping it without [`stop`](HttpService::stop)
/// kills everything at once.
pub struct HttpService {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Drop for HttpService {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.shared.kill.cancel();
        self.shared.tasks.close();
    }
}

impl HttpService {
    /// The address the service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The service's counters so far.
    pub fn stats(&self) -> HttpStats {
        let c = &self.shared.counters;
        HttpStats {
            requests: c.requests.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            instantiations: c.instantiations.load(Ordering::Relaxed),
            failed: self.shared.failed_lock().clone(),
        }
    }

    /// The memory and CPU time of the service's instances (see [`Usage`]).
    pub fn usage(&self) -> Usage {
        self.shared.usage.clone()
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.shared.spec.max_concurrency - self.shared.slots.available_permits()
    }

    /// Stops the service: no new connections, in-flight requests get up to
    /// `drain` to finish (idle keep-alive connections are closed), then
    /// whatever is left is dropped. Returns whether the drain completed.
    pub async fn stop(self, drain: Duration) -> bool {
        let shared = &self.shared;
        shared.shutdown.cancel();
        shared.tasks.close();
        let drained = tokio::time::timeout(drain, shared.tasks.wait())
            .await
            .is_ok();
        if !drained {
            shared.kill.cancel();
            // Every task selects on `kill`, and guests yield every epoch tick,
            // so this takes about one tick; the bound is a safety net.
            let _ = tokio::time::timeout(Duration::from_secs(5), shared.tasks.wait()).await;
        }
        shared.warm_lock().clear();
        drained
    }
}

impl Engine {
    /// Serves a `wasi:http/proxy` component on `listener` until stopped.
    pub fn serve_http(
        &self,
        artifact: &Artifact,
        listener: TcpListener,
        spec: HttpSpec,
    ) -> Result<HttpService> {
        let Pre::Http(pre) = artifact.pre() else {
            return Err(Error::WrongKind {
                expected: ArtifactKindName::HTTP,
                actual: artifact.kind().as_str(),
            });
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Engine("serve_http needs a tokio runtime".into()))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the listener's address", e))?;
        let shared = Arc::new(Shared {
            engine: self.inner().wasmtime.clone(),
            clock: self.inner().clock.clone(),
            throttle: self.inner().throttle.clone(),
            pre: pre.clone(),
            sink: spec.log.clone().unwrap_or_else(|| Arc::new(NullLog)),
            slots: Arc::new(Semaphore::new(spec.max_concurrency.max(1))),
            spec: HttpSpec {
                max_concurrency: spec.max_concurrency.max(1),
                ..spec
            },
            warm: Mutex::new(Vec::new()),
            counters: Counters::default(),
            usage: Usage::default(),
            tasks: TaskTracker::new(),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
        });
        let accept = accept_loop(shared.clone(), listener);
        let _guard = runtime.enter();
        shared.tasks.spawn(accept);
        Ok(HttpService { shared, local_addr })
    }
}

impl Engine {
    /// Creates a request's store and instance exactly as [`Engine::serve_http`]
    /// does, `iterations` times, and returns how long each took. For the
    /// benchmarks; each instance is dropped at once.
    #[doc(hidden)]
    pub async fn time_http_instantiation(
        &self,
        artifact: &Artifact,
        spec: &HttpSpec,
        iterations: usize,
    ) -> Result<Vec<Duration>> {
        let Pre::Http(pre) = artifact.pre() else {
            return Err(Error::WrongKind {
                expected: ArtifactKindName::HTTP,
                actual: artifact.kind().as_str(),
            });
        };
        let sink: Arc<dyn LogSink> = Arc::new(NullLog);
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = std::time::Instant::now();
            let mut store = new_store(
                &self.inner().wasmtime,
                &self.inner().clock,
                self.inner().throttle.clone(),
                spec,
                &sink,
                None,
            );
            let proxy = pre
                .instantiate_async(&mut store)
                .await
                .map_err(Error::engine)?;
            times.push(started.elapsed());
            drop((proxy, store));
        }
        Ok(times)
    }
}

/// Names used in [`Error::WrongKind`].
struct ArtifactKindName;

impl ArtifactKindName {
    const HTTP: &'static str = "a wasi:http/proxy component";
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                shared.tasks.spawn(serve_connection(shared.clone(), stream));
            }
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let service = {
        let shared = shared.clone();
        hyper::service::service_fn(move |request| handle(shared.clone(), request))
    };
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shared.kill.cancelled() => {}
        _ = shared.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = shared.kill.cancelled() => {}
            }
        }
    }
}

/// Handles one request: runs the guest on its own task and answers with its
/// response, or with a 500 naming why there is none.
async fn handle(
    shared: Arc<Shared>,
    request: hyper::Request<Incoming>,
) -> std::result::Result<hyper::Response<HyperOutgoingBody>, Infallible> {
    shared.counters.requests.fetch_add(1, Ordering::Relaxed);
    let permit = tokio::select! {
        permit = shared.slots.clone().acquire_owned() => match permit {
            Ok(permit) => permit,
            Err(_) => return Ok(failure(503, "stopping")),
        },
        _ = shared.kill.cancelled() => return Ok(failure(503, "stopping")),
    };
    let (tx, rx) = oneshot::channel();
    let guest = shared
        .tasks
        .spawn(run_guest(shared.clone(), request, tx, permit));
    let response = tokio::select! {
        response = tokio::time::timeout(shared.spec.request_timeout, rx) => response,
        _ = shared.kill.cancelled() => return Ok(failure(503, "stopping")),
    };
    Ok(match response {
        Ok(Ok(Ok(response))) => response,
        Ok(Ok(Err(code))) => {
            // The guest answered with an error code instead of a response.
            shared.fail("guest-error");
            tracing::warn!(reason = "guest-error", error = ?code, "request failed");
            failure(500, "guest-error")
        }
        Ok(Err(_)) => match guest.await {
            Ok(Err(e)) => failure(500, e.reason()),
            Ok(Ok(())) => {
                shared.fail("no-response");
                tracing::warn!(reason = "no-response", "guest returned without a response");
                failure(500, "no-response")
            }
            Err(_) => failure(500, "stopped"),
        },
        Err(_elapsed) => {
            guest.abort();
            shared.fail("timeout");
            tracing::warn!(reason = "timeout", "request took longer than its timeout");
            failure(500, "timeout")
        }
    })
}

/// Runs the guest for one request. Failures are logged and counted here, once.
async fn run_guest(
    shared: Arc<Shared>,
    request: hyper::Request<Incoming>,
    tx: oneshot::Sender<std::result::Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
    permit: OwnedSemaphorePermit,
) -> Result<()> {
    let _permit = permit;
    tokio::select! {
        result = serve_one(&shared, request, tx) => {
            match &result {
                Ok(()) => {
                    shared.counters.succeeded.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    shared.fail(e.reason());
                    tracing::warn!(reason = e.reason(), error = %e, "request failed");
                }
            }
            result
        }
        _ = shared.kill.cancelled() => {
            shared.fail(Error::Stopped.reason());
            Err(Error::Stopped)
        }
    }
}

async fn serve_one(
    shared: &Shared,
    request: hyper::Request<Incoming>,
    tx: oneshot::Sender<std::result::Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>,
) -> Result<()> {
    let warm = if shared.spec.warm_instances > 0 {
        shared.warm_lock().pop()
    } else {
        None
    };
    let Warm { mut store, proxy } = match warm {
        Some(warm) => warm,
        None => instantiate(shared).await?,
    };
    let result = async {
        let request = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)?;
        let out = store.data_mut().http().new_response_outparam(tx)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, request, out)
            .await
    }
    .await;
    match result {
        Ok(()) => {
            if shared.spec.warm_instances > 0 && !shared.shutdown.is_cancelled() {
                store.data_mut().guard.reset();
                let mut warm = shared.warm_lock();
                if warm.len() < shared.spec.warm_instances {
                    warm.push(Warm { store, proxy });
                }
            }
            Ok(())
        }
        Err(e) => {
            let hit = store.data_mut().guard.hit();
            Err(Error::from_guest(e, hit))
        }
    }
}

/// A fresh instance in a fresh store.
async fn instantiate(shared: &Shared) -> Result<Warm> {
    let mut store = new_store(
        &shared.engine,
        &shared.clock,
        shared.throttle.clone(),
        &shared.spec,
        &shared.sink,
        Some(&shared.usage),
    );
    shared
        .counters
        .instantiations
        .fetch_add(1, Ordering::Relaxed);
    match shared.pre.instantiate_async(&mut store).await {
        Ok(proxy) => Ok(Warm { store, proxy }),
        Err(e) => {
            let hit = store.data_mut().guard.hit();
            Err(Error::from_guest(e, hit))
        }
    }
}

fn new_store(
    engine: &wasmtime::Engine,
    clock: &EpochClock,
    throttle: Option<Arc<Throttle>>,
    spec: &HttpSpec,
    sink: &Arc<dyn LogSink>,
    usage: Option<&Usage>,
) -> Store<HttpState> {
    let mut guard = Guard::new(spec.limits.clone(), clock, KillSwitch::default(), throttle);
    if let Some(usage) = usage {
        guard = guard.with_usage(usage.clone());
    }
    let mut wasi = WasiCtxBuilder::new();
    wasi.envs(&spec.env)
        .stdout(SinkStream::new(sink.clone(), LogStream::Stdout))
        .stderr(SinkStream::new(sink.clone(), LogStream::Stderr));
    let state = HttpState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        http: WasiHttpCtx::new(),
        hooks: OutgoingPolicy::new(spec.allowed_hosts.clone(), spec.resolver.clone()),
        guard,
    };
    let mut store = Store::new(engine, state);
    limits::install(&mut store);
    store
}

/// A response the host makes when the guest could not: the status, and the
/// reason as the body and in `x-flotilla-failure`.
fn failure(status: u16, reason: &'static str) -> hyper::Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from(format!("{reason}\n")))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "x-flotilla-failure",
        hyper::header::HeaderValue::from_static(reason),
    );
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}
