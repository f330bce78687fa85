//! Wires the control plane together: store, API, controllers, registry, HTTP server.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::apiserver::api::{Api, ApiConfig, WriteOptions};
use crate::apiserver::http::{self, HttpState};
use crate::apiserver::resources;
use crate::apiserver::service_ips::ServiceRanges;
use crate::controllers;
use crate::store::{RedbStore, RedbStoreConfig, Store};

/// Settings of a control plane.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the store file (and the registry's blobs) live.
    pub data_dir: PathBuf,
    /// How long watch events stay resumable.
    pub watch_window: Duration,
    /// The newest watch events always kept, whatever their age.
    pub watch_history: usize,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// When nodes count as unreachable and their pods are evicted.
    pub node_lifecycle: controllers::node_lifecycle::NodeLifecycleConfig,
    /// The Job controller's pod failure backoff.
    pub job: controllers::job::JobConfig,
    /// Where Services get their ClusterIPs and NodePorts (`--service-cluster-ip-range`,
    /// `--service-node-port-range`).
    pub service_ranges: ServiceRanges,
    /// The HorizontalPodAutoscaler controller's sync period, tolerance and default
    /// scale-down stabilization.
    pub hpa: controllers::horizontal_pod_autoscaler::HpaConfig,
    /// How long Events are kept after they were last seen (`--event-ttl`).
    pub event_ttl: controllers::event_ttl::EventTtlConfig,
    /// Size of the store's write-ahead log in bytes (`--wal-size`); 0 turns it off. See
    /// [`RedbStoreConfig::wal_size`].
    pub wal_size: u64,
}

impl ServerConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            watch_window: Duration::from_secs(300),
            watch_history: 1000,
            max_body_bytes: 3 * 1024 * 1024,
            node_lifecycle: Default::default(),
            job: Default::default(),
            service_ranges: ServiceRanges::default(),
            event_ttl: Default::default(),
            hpa: Default::default(),
            wal_size: crate::store::DEFAULT_WAL_SIZE,
        }
    }
}

/// Errors starting the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store could not be opened.
    #[error("cannot open the store in {dir}: {reason}")]
    Store {
        /// The data directory.
        dir: PathBuf,
        /// Why (part of the message, so not also a `source`: callers print error chains).
        reason: crate::store::StoreError,
    },
    /// The registry storage could not be opened.
    #[error("cannot open the image registry storage: {0}")]
    Registry(String),
    /// Bootstrapping default objects failed.
    #[error("cannot create default objects: {0}")]
    Bootstrap(String),
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// The namespaces every cluster has from its first start.
pub const DEFAULT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the default namespaces, the built-in PriorityClasses and the `wasmtime`, `runc` and
/// `crun` RuntimeClasses if missing (idempotent).
pub async fn bootstrap(api: &Api) -> Result<(), crate::apiserver::error::ApiError> {
    let ns_res = resources::find("", "v1", "namespaces").expect("served");
    for ns in DEFAULT_NAMESPACES {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        create_if_missing(api, ns_res, obj).await?;
    }
    // The built-in PriorityClasses.
    let pc = crate::apiserver::priority::classes();
    for (name, value, description) in crate::apiserver::priority::SYSTEM_CLASSES {
        let class = json!({
            "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description,
        });
        create_if_missing(api, pc, class).await?;
    }
    // One RuntimeClass per handler a node may offer: `wasmtime` (every node) and the OCI
    // runtimes `runc` and `crun` (nodes advertise those only when they work there, and the
    // scheduler places pods accordingly).
    let rc = resources::find("node.k8s.io", "v1", "runtimeclasses").expect("served");
    for handler in ["wasmtime", "runc", "crun"] {
        let class = json!({
            "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": handler, "labels": {"app.kubernetes.io/managed-by": "flotilla"}},
            "handler": handler,
        });
        create_if_missing(api, rc, class).await?;
    }
    // The `cluster-admin` role every cluster has, bound to `system:masters` (stored and served;
    // not enforced: every request is allowed).
    let bootstrap_labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let admin = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "cluster-admin", "labels": bootstrap_labels},
        "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    });
    let clusterroles = resources::find("rbac.authorization.k8s.io", "v1", "clusterroles");
    create_if_missing(api, clusterroles.expect("served"), admin).await?;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-admin", "labels": bootstrap_labels},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}],
    });
    let bindings = resources::find("rbac.authorization.k8s.io", "v1", "clusterrolebindings");
    create_if_missing(api, bindings.expect("served"), binding).await?;
    // The default StorageClass: node-local directories.
    create_if_missing(
        api,
        crate::apiserver::storage_class::storage_classes(),
        crate::apiserver::storage_class::local_path_class(),
    )
    .await?;
    Ok(())
}

/// Creates a cluster-scoped `obj` of `res` unless it exists already.
async fn create_if_missing(
    api: &Api,
    res: &crate::apiserver::resources::ResourceInfo,
    obj: serde_json::Value,
) -> Result<(), crate::apiserver::error::ApiError> {
    match api.create(res, None, obj, &WriteOptions::default()).await {
        Ok(_) => Ok(()),
        Err(e) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Runs the control plane on `listener` until `shutdown` is cancelled, then drains.
pub async fn serve(
    listener: TcpListener,
    config: ServerConfig,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let store = open_store(&config)?;
    serve_opened(listener, config, store, shutdown).await
}

/// Opens (and, after a crash, recovers) the store of `config`'s data directory. Callers that
/// announce the server or write a kubeconfig do this first, so a store that cannot be opened
/// (say, locked by a server already running on the same data directory) fails the start
/// before anything is printed or overwritten.
pub fn open_store(config: &ServerConfig) -> Result<RedbStore, ServeError> {
    let mut store_config = RedbStoreConfig::new(config.data_dir.join("store.redb"));
    store_config.watch_window = config.watch_window;
    store_config.watch_min_events = config.watch_history;
    store_config.wal_size = config.wal_size;
    RedbStore::open(store_config).map_err(|reason| ServeError::Store {
        dir: config.data_dir.clone(),
        reason,
    })
}

/// Runs the control plane over a store from [`open_store`] until `shutdown` is cancelled,
/// then closes the store.
pub async fn serve_opened(
    listener: TcpListener,
    config: ServerConfig,
    store: RedbStore,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let result = serve_with_store(listener, config, Arc::new(store.clone()), shutdown).await;
    store.close();
    result
}

/// Runs the control plane over an already open store.
pub async fn serve_with_store(
    listener: TcpListener,
    config: ServerConfig,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let api = Api::new(
        store,
        ApiConfig {
            max_body_bytes: config.max_body_bytes,
            advertise_address: addr.to_string(),
            service_ranges: config.service_ranges.clone(),
        },
    );
    bootstrap(&api)
        .await
        .map_err(|e| ServeError::Bootstrap(e.to_string()))?;

    let tasks = TaskTracker::new();
    let controllers_token = shutdown.child_token();
    tasks.spawn(controllers::namespace::run(
        api.clone(),
        controllers_token.clone(),
    ));
    let pod_cache = controllers::pod_cache::PodCache::new();
    tasks.spawn(
        pod_cache
            .clone()
            .run(api.clone(), controllers_token.clone()),
    );
    tasks.spawn(controllers::replicaset::run(
        api.clone(),
        pod_cache.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::deployment::run(
        api.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::job::run(
        api.clone(),
        pod_cache.clone(),
        config.job.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::daemonset::run(
        api.clone(),
        pod_cache.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::statefulset::run(
        api.clone(),
        pod_cache.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::persistent_volume::run(
        api.clone(),
        pod_cache.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::garbage_collector::run(
        api.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::cronjob::run(
        api.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::disruption::run(
        api.clone(),
        pod_cache.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::resource_quota::run(
        api.clone(),
        pod_cache.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::node_lifecycle::run(
        api.clone(),
        pod_cache,
        config.node_lifecycle.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::endpoints::run(
        api.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::endpointslice::run(
        api.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(controllers::event_ttl::run(
        api.clone(),
        config.event_ttl.clone(),
        controllers_token.clone(),
    ));
    // One scraper for `kubectl top` and the autoscaler, so they share the samples kept.
    let metrics_scraper = crate::apiserver::resource_metrics::Scraper::default();
    tasks.spawn(controllers::horizontal_pod_autoscaler::run(
        api.clone(),
        metrics_scraper.clone(),
        config.hpa.clone(),
        controllers_token.clone(),
    ));
    tasks.spawn(crate::scheduler::run(
        api.clone(),
        crate::scheduler::SchedulerConfig::default(),
        controllers_token.clone(),
    ));

    let registry = crate::registry::Registry::open(&config.data_dir.join("registry"))
        .map_err(|e| ServeError::Registry(e.to_string()))?;
    let app = http::router(HttpState {
        api: api.clone(),
        shutdown: shutdown.clone(),
        metrics_scraper,
    })
    .merge(crate::registry::router(registry));
    tracing::info!(%addr, "control plane serving");
    // Without TCP_NODELAY a watch's small event writes wait for the client's delayed ACK
    // (Nagle's algorithm): tens of milliseconds per event on an otherwise idle connection.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await?;

    controllers_token.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("controllers did not stop within 5s");
    }
    Ok(())
}
