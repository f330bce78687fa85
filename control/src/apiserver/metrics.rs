//! `/metrics`: the API server's Prometheus metrics, named and labelled as kube-apiserver's so
//! that existing dashboards and alerts read them.
//!
//! - `apiserver_request_total{verb,group,version,resource,subresource,code}`: every request;
//!   `verb` is the HTTP method, or `LIST`, `WATCH` and `APPLY` (server-side apply) as in
//!   Kubernetes.
//! - `apiserver_request_duration_seconds{verb,group,version,resource,subresource}`: time to the
//!   response head, for every request but watches (which last as long as the client wants).
//! - `apiserver_longrunning_requests{verb,group,version,resource,subresource}`: open watches.
//! - `apiserver_current_inflight_requests{request_kind}`: `readOnly` and `mutating` requests
//!   being served.
//! - `flotilla_store_revision`: the store's current revision (the newest `resourceVersion`).
//! - `flotilla_store_commit_batches_total`, `flotilla_store_committed_writes_total`,
//!   `flotilla_store_sync_seconds_total`, `flotilla_store_checkpoints_total`: group commit at
//!   work (the ratio of the first two is how many writers shared one `fdatasync`).
//! - `process_resident_memory_bytes`, `process_cpu_seconds_total`, `process_open_fds`,
//!   `process_start_time_seconds`: read from `/proc` at each scrape (Linux, `procfs`).
//!
//! The text is OpenMetrics (`prometheus-client`), which Prometheus scrapes natively and
//! `kubectl get --raw /metrics` prints.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

use super::resource_metrics;
use super::resources::{self, Subresource};
use crate::store::StoreStats;

/// What a request addressed, as the metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`, `DELETE`.
    pub verb: &'static str,
    /// API group (empty for core and for non-resource paths).
    pub group: &'static str,
    /// API version (empty for non-resource paths).
    pub version: &'static str,
    /// Resource plural (empty for non-resource paths such as `/version` or discovery).
    pub resource: &'static str,
    /// Subresource (`status`, `scale`, …) or empty.
    pub subresource: &'static str,
}

/// [`RequestLabels`] and the response's status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

/// The API server's metrics and their registry.
pub struct ApiMetrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    watches: Family<RequestLabels, Gauge>,
    inflight: Family<KindLabels, Gauge>,
    revision: Gauge,
    batches: Counter,
    writes: Counter,
    sync_seconds: Counter<f64, AtomicU64>,
    checkpoints: Counter,
    /// Scrapes turn absolute readings into counter increments; one at a time.
    scrape: Mutex<()>,
    resident: Gauge,
    cpu_seconds: Counter<f64, AtomicU64>,
    open_fds: Gauge,
    start_time: Gauge,
}

impl std::fmt::Debug for ApiMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiMetrics")
    }
}

/// kube-apiserver's buckets for `apiserver_request_duration_seconds`.
const DURATION_BUCKETS: [f64; 24] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0,
    8.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ApiMetrics {
    /// Registers every metric, all at zero.
    pub fn new() -> ApiMetrics {
        let mut r = Registry::default();
        let requests = registered(
            &mut r,
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, version, resource, subresource and HTTP response code",
            None,
            Family::<CodeLabels, Counter>::default(),
        );
        let durations = registered(
            &mut r,
            "apiserver_request_duration",
            "Response latency distribution for each verb, group, version, resource and subresource (watches excluded)",
            Some(Unit::Seconds),
            Family::<RequestLabels, Histogram>::new_with_constructor(
                (|| Histogram::new(DURATION_BUCKETS)) as fn() -> Histogram,
            ),
        );
        let watches = registered(
            &mut r,
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests (watches)",
            None,
            Family::<RequestLabels, Gauge>::default(),
        );
        let inflight = registered(
            &mut r,
            "apiserver_current_inflight_requests",
            "Requests being served, per request kind (readOnly or mutating)",
            None,
            Family::<KindLabels, Gauge>::default(),
        );
        let revision = registered(
            &mut r,
            "flotilla_store_revision",
            "The store's current revision: the newest resourceVersion",
            None,
            Gauge::default(),
        );
        let batches = registered(
            &mut r,
            "flotilla_store_commit_batches",
            "Durable batches the store wrote, one fdatasync each",
            None,
            Counter::default(),
        );
        let writes = registered(
            &mut r,
            "flotilla_store_committed_writes",
            "Writes (creates, updates, deletes) in those batches",
            None,
            Counter::default(),
        );
        let sync_seconds = registered(
            &mut r,
            "flotilla_store_sync",
            "Time spent writing and syncing those batches",
            Some(Unit::Seconds),
            Counter::<f64, AtomicU64>::default(),
        );
        let checkpoints = registered(
            &mut r,
            "flotilla_store_checkpoints",
            "Checkpoints: the write-ahead log made redundant by a durable redb commit",
            None,
            Counter::default(),
        );
        let resident = registered(
            &mut r,
            "process_resident_memory",
            "Resident memory size in bytes",
            Some(Unit::Bytes),
            Gauge::default(),
        );
        let cpu_seconds = registered(
            &mut r,
            "process_cpu",
            "Total user and system CPU time spent in seconds",
            Some(Unit::Seconds),
            Counter::<f64, AtomicU64>::default(),
        );
        let open_fds = registered(
            &mut r,
            "process_open_fds",
            "Number of open file descriptors",
            None,
            Gauge::default(),
        );
        let start_time = registered(
            &mut r,
            "process_start_time",
            "Start time of the process since unix epoch in seconds",
            Some(Unit::Seconds),
            Gauge::default(),
        );
        ApiMetrics {
            registry: r,
            requests,
            durations,
            watches,
            inflight,
            revision,
            batches,
            writes,
            sync_seconds,
            checkpoints,
            scrape: Mutex::new(()),
            resident,
            cpu_seconds,
            open_fds,
            start_time,
        }
    }

    /// The metrics in OpenMetrics text, with `revision` the store's current revision and
    /// `store` its counters.
    pub fn render(&self, revision: u64, store: StoreStats) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        catch_up(&self.batches, store.batches);
        catch_up(&self.writes, store.writes);
        catch_up_f64(&self.sync_seconds, store.sync_seconds);
        catch_up(&self.checkpoints, store.checkpoints);
        if let Some(p) = ProcessStats::read() {
            self.resident.set(p.resident_bytes);
            catch_up_f64(&self.cpu_seconds, p.cpu_seconds);
            self.open_fds.set(p.open_fds);
            self.start_time.set(p.start_time_seconds);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Brings a counter up to an absolute reading (counters only go up).
fn catch_up(counter: &Counter, reading: u64) {
    let seen = counter.get();
    if reading > seen {
        counter.inc_by(reading - seen);
    }
}

/// [`catch_up`] for a counter of seconds.
fn catch_up_f64(counter: &Counter<f64, AtomicU64>, reading: f64) {
    let seen = counter.get();
    if reading > seen {
        counter.inc_by(reading - seen);
    }
}

/// Registers `metric` under `name` (with its `unit`, if any) and returns it.
fn registered<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Classifies a request for its labels: the verb, and the resource it addresses when it
/// addresses one of the served resources.
pub fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
) -> RequestLabels {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => ("", "", &[]),
    };
    let (watch_path, rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let (plural, tail): (&str, &[&str]) = match rest {
        ["namespaces", _, plural, tail @ ..] => (plural, tail),
        [plural, tail @ ..] => (plural, tail),
        [] => ("", &[]),
    };
    let found = resources::find(group, version, plural)
        .filter(|r| r.plural == plural)
        .or_else(|| {
            resource_metrics::RESOURCES
                .iter()
                .find(|r| r.group == group && r.version == version && r.plural == plural)
        });
    let Some(res) = found else {
        // Namespaces themselves (`/api/v1/namespaces/{name}`) and non-resource paths.
        let verb = method_verb(method, false, false, false, true);
        return RequestLabels {
            verb,
            group: "",
            version: "",
            resource: "",
            subresource: "",
        };
    };
    let named = !tail.is_empty();
    let subresource = tail
        .get(1)
        .map(|s| match Subresource::parse(s) {
            Some(sub) => sub.name(),
            None if *s == "finalize" => "finalize",
            None => "",
        })
        .unwrap_or("");
    let watch = watch_path
        || query.is_some_and(|q| {
            form_urlencoded::parse(q.as_bytes())
                .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
        });
    let apply = content_type.is_some_and(|ct| ct.starts_with("application/apply-patch"));
    RequestLabels {
        verb: method_verb(method, named, watch, apply, false),
        group: res.group,
        version: res.version,
        resource: res.plural,
        subresource,
    }
}

fn method_verb(
    method: &Method,
    named: bool,
    watch: bool,
    apply: bool,
    plain: bool,
) -> &'static str {
    match *method {
        Method::GET if watch => "WATCH",
        Method::GET if !named && !plain => "LIST",
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH if apply => "APPLY",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Middleware recording every request of the router it wraps.
pub async fn record(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let labels = classify(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        req.headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let kind = KindLabels {
        request_kind: match *req.method() {
            Method::GET | Method::HEAD | Method::OPTIONS => "readOnly",
            _ => "mutating",
        },
    };
    let inflight = metrics.inflight.get_or_create(&kind).clone();
    inflight.inc();
    let start = Instant::now();
    let response = next.run(req).await;
    inflight.dec();
    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&CodeLabels {
            request: labels.clone(),
            code,
        })
        .inc();
    if labels.verb != "WATCH" {
        metrics
            .durations
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        return response;
    }
    if response.status() != StatusCode::OK {
        return response;
    }
    // An open watch counts until its body is dropped (the stream ended or the client left).
    let open = metrics.watches.get_or_create(&labels).clone();
    open.inc();
    let guard = WatchGuard(open);
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Decrements the open-watch gauge when the watch's body goes away.
struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `GET /metrics`.
pub fn response(metrics: &ApiMetrics, revision: u64, store: StoreStats) -> Response {
    let mut r = metrics.render(revision, store).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    r
}

/// What `/proc` says about this process (read with `procfs`).
struct ProcessStats {
    resident_bytes: i64,
    cpu_seconds: f64,
    open_fds: i64,
    start_time_seconds: i64,
}

impl ProcessStats {
    fn read() -> Option<ProcessStats> {
        use procfs::WithCurrentSystemInfo;
        let me = procfs::process::Process::myself().ok()?;
        let stat = me.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        let boot = procfs::boot_time_secs().ok()? as i64;
        Some(ProcessStats {
            resident_bytes: stat.rss_bytes().get() as i64,
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            open_fds: me.fd_count().map_or(0, |n| n as i64),
            start_time_seconds: boot + (stat.starttime as f64 / ticks) as i64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verb_of(
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> (&'static str, &'static str, &'static str) {
        let l = classify(&method, path, query, None);
        (l.verb, l.resource, l.subresource)
    }

    #[test]
    fn requests_are_labelled_as_kube_apiserver_labels_them() {
        assert_eq!(
            verb_of(Method::GET, "/api/v1/namespaces/default/pods", None),
            ("LIST", "pods", "")
        );
        assert_eq!(
            verb_of(Method::GET, "/api/v1/namespaces/default/pods/p", None),
            ("GET", "pods", "")
        );
        assert_eq!(
            verb_of(
                Method::GET,
                "/api/v1/namespaces/default/pods",
                Some("watch=true&resourceVersion=5")
            ),
            ("WATCH", "pods", "")
        );
        assert_eq!(
            verb_of(Method::GET, "/api/v1/watch/pods", None),
            ("WATCH", "pods", "")
        );
        assert_eq!(
            verb_of(
                Method::PUT,
                "/apis/apps/v1/namespaces/x/deployments/d/status",
                None
            ),
            ("PUT", "deployments", "status")
        );
        assert_eq!(
            verb_of(Method::POST, "/api/v1/namespaces/x/pods/p/binding", None),
            ("POST", "pods", "binding")
        );
        assert_eq!(
            verb_of(Method::GET, "/api/v1/nodes", None),
            ("LIST", "nodes", "")
        );
        assert_eq!(
            verb_of(Method::GET, "/api/v1/nodes/n1/proxy/metrics/resource", None),
            ("GET", "nodes", "proxy")
        );
        let top = classify(
            &Method::GET,
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods",
            None,
            None,
        );
        assert_eq!(
            (top.verb, top.group, top.resource),
            ("LIST", "metrics.k8s.io", "pods")
        );
        assert_eq!(
            verb_of(Method::GET, "/apis/metrics.k8s.io/v1beta1/nodes/n1", None),
            ("GET", "nodes", "")
        );
        assert_eq!(verb_of(Method::GET, "/version", None), ("GET", "", ""));
        assert_eq!(verb_of(Method::GET, "/apis", None), ("GET", "", ""));
        assert_eq!(
            verb_of(Method::GET, "/api/v1/nosuch", None),
            ("GET", "", "")
        );
        let apply = classify(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/x/deployments/d",
            Some("fieldManager=kubectl"),
            Some("application/apply-patch+yaml"),
        );
        assert_eq!(
            (apply.verb, apply.group, apply.version),
            ("APPLY", "apps", "v1")
        );
    }

    #[test]
    fn a_scrape_shows_requests_revision_and_process_figures() {
        let m = ApiMetrics::new();
        let labels = classify(&Method::POST, "/api/v1/namespaces/default/pods", None, None);
        m.requests
            .get_or_create(&CodeLabels {
                request: labels.clone(),
                code: 201,
            })
            .inc();
        m.durations.get_or_create(&labels).observe(0.002);
        let store = StoreStats {
            batches: 3,
            writes: 10,
            sync_seconds: 0.5,
            checkpoints: 1,
        };
        let text = m.render(42, store);
        assert!(
            text.contains(r#"apiserver_request_total{verb="POST",group="",version="v1",resource="pods",subresource="",code="201"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("apiserver_request_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("flotilla_store_revision 42"), "{text}");
        assert!(
            text.contains("flotilla_store_commit_batches_total 3"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_store_committed_writes_total 10"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_store_sync_seconds_total 0.5"),
            "{text}"
        );
        // A later scrape reports the later readings, not their sum.
        let text = m.render(
            43,
            StoreStats {
                batches: 5,
                ..store
            },
        );
        assert!(
            text.contains("flotilla_store_commit_batches_total 5"),
            "{text}"
        );
        assert!(
            text.contains("flotilla_store_committed_writes_total 10"),
            "{text}"
        );
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .expect("rss reported");
        assert!(rss.parse::<f64>().unwrap() > 0.0, "{rss}");
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
