//! The node agent: registers the Node, renews its Lease, reports `Ready`, serves the kubelet
//! endpoint (logs), and runs the pods bound to it. It talks to the API server only through the
//! `kube` client, so the control plane may be anywhere.
//!
//! - [`config`]: the agent's settings, [`AgentConfig`].
//! - [`machine`]: CPUs, memory, OS and architecture of this machine.
//! - [`node`]: the Node object: registration and status heartbeat.
//! - [`lease`]: the Lease in `kube-node-lease`.
//! - [`pods`]: the watch of this node's pods, feeding the pod workers.
//! - [`events`]: Kubernetes Events about pods.
//! - [`rate_limit`]: the limit on event writes.
//! - [`exec`], [`attach`]: `kubectl exec` and `kubectl attach`, through the API server.

pub mod attach;
pub mod config;
pub mod events;
pub mod exec;
pub mod lease;
pub mod listers;
pub mod machine;
pub mod metrics;
pub mod node;
pub mod pods;
pub mod rate_limit;
pub mod resource_metrics;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_wasm::{Engine, EngineConfig};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::AgentConfig;

use crate::error::AgentError;
use crate::image::ImageCache;
use crate::logs::LogStore;
use crate::pod::{AddressPool, PodContext, PodRegistry};
use crate::runtime::oci::{self, OciRuntime};
use crate::runtime::wasmtime::WasmtimeRuntime;
use crate::runtime::{Runtime, WASMTIME_HANDLER};
use events::EventRecorder;
use machine::Machine;
use node::NodeFacts;
use rate_limit::RateLimit;

/// How long the agent waits for its tasks to end after the pods stopped.
const DRAIN: Duration = Duration::from_secs(10);

/// A started agent: registered, serving, running its pods.
pub struct Agent {
    addr: SocketAddr,
    name: String,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    client: kube::Client,
    facts: NodeFacts,
    since: Timestamp,
    shutdown_grace: Duration,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts the agent: opens its stores, binds its endpoint, registers the Node (retrying
    /// until the API server answers or `shutdown`), then runs in the background until
    /// `shutdown` is cancelled. Returns once the Node is registered.
    pub async fn start(
        config: AgentConfig,
        shutdown: CancellationToken,
    ) -> Result<Agent, AgentError> {
        let (client, server) = config.connect().await?;
        let data_dir = config.data_dir.clone();
        for sub in ["images", "compile-cache", "logs", "pods", "oci"] {
            std::fs::create_dir_all(data_dir.join(sub)).map_err(|e| AgentError::DataDir {
                dir: data_dir.join(sub),
                source: e,
            })?;
        }
        let engine = Engine::new(EngineConfig {
            cache_dir: Some(data_dir.join("compile-cache")),
            ..EngineConfig::default()
        })
        .map_err(|e| AgentError::Engine(e.to_string()))?;
        let registry = config.default_registry.clone().or(Some(server));
        let images = ImageCache::with_insecure_registries(
            &data_dir.join("images"),
            registry,
            config.insecure_registries.clone(),
        )
        .map_err(|e| AgentError::Images(e.to_string()))?;
        let wasmtime: Arc<dyn Runtime> = Arc::new(WasmtimeRuntime::new(engine, images.clone()));
        let mut runtimes = BTreeMap::from([(WASMTIME_HANDLER.to_string(), wasmtime)]);
        let tasks = TaskTracker::new();
        let (oci, bridge) = oci_runtimes(&config, &images, &tasks, shutdown.child_token()).await;
        runtimes.extend(oci);

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| AgentError::Listen {
                addr: config.listen,
                source: e,
            })?;
        let addr = listener.local_addr().map_err(|e| AgentError::Listen {
            addr: config.listen,
            source: e,
        })?;
        let node_ip = config.node_ip();
        let facts = NodeFacts {
            name: config.name.clone(),
            machine: Machine::detect(),
            internal_ip: node_ip.to_string(),
            port: addr.port(),
            handlers: runtimes.keys().cloned().collect(),
            max_pods: config.max_pods,
            pod_cidr: config.pod_cidr.to_string(),
        };
        let since = Timestamp::now();
        loop {
            match node::register(&client, &facts, since).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, node = %facts.name, "cannot register the node; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => return Err(AgentError::Register(e.to_string())),
                    }
                }
            }
        }
        tracing::info!(node = %facts.name, %addr, "node registered");

        let logs = LogStore::new(&data_dir.join("logs"), config.max_log_file_bytes);
        let (events, writer) = EventRecorder::new(
            client.clone(),
            facts.name.clone(),
            RateLimit::new(config.event_qps, config.event_burst),
            shutdown.child_token(),
        );
        tasks.spawn(writer);
        let registry = PodRegistry::default();
        let running = resource_metrics::RunningPods {
            registry: registry.clone(),
            runtimes: runtimes.clone(),
        };
        let app = crate::logs::server::router(logs.clone())
            .merge(metrics::router(facts.name.clone(), running.clone()))
            .merge(exec::router(running.clone()))
            .merge(attach::router(attach::Attachable {
                running,
                logs: logs.clone(),
            }));
        let http_stop = shutdown.child_token();
        tasks.spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(http_stop.cancelled_owned())
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "agent endpoint failed");
            }
        });
        tasks.spawn(heartbeat(
            client.clone(),
            facts.clone(),
            since,
            config.lease_interval,
            config.status_interval,
            shutdown.child_token(),
        ));
        let proxy = crate::proxy::Proxy::for_domain(&config.cluster_domain);
        if config.proxy {
            proxy.start(client.clone(), node_ip, &tasks, shutdown.child_token());
        }
        let node_dns = crate::dns::node_resolv_conf(&config.resolv_conf);
        let cluster_dns = match bridge {
            Some(bridge) if config.proxy => {
                start_cluster_dns(&config, &bridge, &proxy, &node_dns, &tasks, &shutdown)
            }
            _ => None,
        };
        let listers = listers::Listers::start(&client, &tasks, &shutdown);
        let ctx = Arc::new(PodContext {
            client: client.clone(),
            listers,
            node_name: facts.name.clone(),
            host_ip: node_ip.to_string(),
            allocatable: facts.allocatable(),
            runtimes,
            logs,
            addresses: AddressPool::new(config.pod_cidr),
            events,
            pods_dir: data_dir.join("pods"),
            volumes_dir: data_dir.join("volumes"),
            backoff: config.backoff,
            shutdown_grace: config.shutdown_grace,
            sync_frequency: config.sync_frequency,
            proxy,
            cluster_dns,
            node_dns,
            registry,
        });
        tasks.spawn(crate::pod::claims::run_sweeper(
            client.clone(),
            ctx.volumes_dir.clone(),
            config.sync_frequency,
            shutdown.child_token(),
        ));
        tasks.spawn(pods::dispatch(ctx, tasks.clone(), shutdown.child_token()));
        Ok(Agent {
            addr,
            name: facts.name.clone(),
            tasks,
            shutdown,
            client,
            facts,
            since,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The agent's HTTP endpoint.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the shutdown signal, stops the pods (within the shutdown grace), drains the
    /// tasks, and marks the Node not ready.
    pub async fn join(self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(self.shutdown_grace + DRAIN, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("agent tasks did not stop in time");
        }
        let report = node::report(&self.client, &self.facts, Timestamp::now(), false);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(2), report).await {
            tracing::debug!(error = %e, "cannot mark the node not ready");
        }
        let _ = self.since;
    }
}

/// Starts the node's cluster DNS server on port 53 of the pod bridge's address; `None` (and a
/// warning) when it cannot listen there.
fn start_cluster_dns(
    config: &AgentConfig,
    bridge: &oci::network::BridgeNetwork,
    proxy: &crate::proxy::Proxy,
    node_dns: &crate::dns::ResolvConf,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Option<crate::dns::ClusterDns> {
    let ip = std::net::IpAddr::V4(bridge.gateway());
    let server = crate::dns::DnsServer::new(
        proxy.clone(),
        &config.cluster_domain,
        crate::dns::upstreams(node_dns, ip),
    );
    let addr = SocketAddr::new(ip, 53);
    match crate::dns::start(&server, addr, tasks, shutdown.child_token()) {
        Ok(()) => {
            tracing::info!(%addr, domain = %config.cluster_domain, "cluster DNS for container pods");
            Some(crate::dns::ClusterDns {
                server: ip,
                domain: config.cluster_domain.clone(),
            })
        }
        Err(e) => {
            tracing::warn!(%addr, error = %e, "cannot serve cluster DNS; container pods use the node's resolv.conf");
            None
        }
    }
}

/// The bridge container pods get their own networks on, or why they share the host's.
async fn pod_network(
    config: &AgentConfig,
    work: &std::path::Path,
) -> Result<Arc<oci::network::BridgeNetwork>, String> {
    if config.pod_bridge.is_empty() {
        return Err("no pod bridge is configured".into());
    }
    oci::network::usable()?;
    match oci::network::BridgeNetwork::new(
        &config.pod_bridge,
        config.pod_bridge_cidr,
        &work.join("network"),
    )
    .await
    {
        Ok(network) => {
            tracing::info!(bridge = %config.pod_bridge, range = %config.pod_bridge_cidr, "container pods get their own network namespaces on the pod bridge");
            Ok(Arc::new(network))
        }
        Err(e) => {
            tracing::warn!(bridge = %config.pod_bridge, error = %e, "cannot set up the pod bridge; container pods share the host's network");
            Err(format!(
                "the pod bridge {} cannot be set up ({e})",
                config.pod_bridge
            ))
        }
    }
}

/// The OCI runtimes that work on this host (see [`oci::detect`]), each as a plugin under its
/// RuntimeClass handler, and the pod bridge they share when there is one; the agent becomes
/// the reaper of their containers' processes.
async fn oci_runtimes(
    config: &AgentConfig,
    images: &ImageCache,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> (
    Vec<(String, Arc<dyn Runtime>)>,
    Option<Arc<oci::network::BridgeNetwork>>,
) {
    let data_dir = &config.data_dir;
    let mut found = Vec::new();
    let work = data_dir.join("oci");
    let mut network = None;
    for program in oci::detect::CANDIDATES {
        let state_root = work.join(program).join("state");
        match oci::detect::probe(program, &work, &state_root).await {
            Ok(binary) => {
                if network.is_none() {
                    network = Some(pod_network(config, &work).await);
                }
                match OciRuntime::new(
                    program,
                    binary,
                    data_dir,
                    images.clone(),
                    network.clone().expect("set above"),
                    tasks,
                    shutdown.clone(),
                )
                .await
                {
                    Ok(runtime) => {
                        found.push((program.to_string(), Arc::new(runtime) as Arc<dyn Runtime>))
                    }
                    Err(e) => {
                        tracing::warn!(runtime = program, error = %e, "cannot set up the OCI runtime")
                    }
                }
            }
            Err(reason) => {
                tracing::info!(runtime = program, %reason, "OCI runtime not offered on this node")
            }
        }
    }
    if !found.is_empty()
        && let Err(e) = oci::exit::become_subreaper()
    {
        tracing::warn!(error = %e, "cannot become the reaper of container processes; their exit codes will be unknown");
    }
    let bridge = match network {
        Some(Ok(bridge)) if !found.is_empty() => Some(bridge),
        _ => None,
    };
    (found, bridge)
}

/// Renews the Lease and reports the Node status on their intervals.
async fn heartbeat(
    client: kube::Client,
    facts: NodeFacts,
    since: Timestamp,
    lease_every: Duration,
    status_every: Duration,
    stop: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_uid: Option<String> = None;
    let mut lease = tokio::time::interval(lease_every);
    let mut status = tokio::time::interval(status_every);
    status.tick().await;
    loop {
        tokio::select! {
            _ = lease.tick() => {
                if node_uid.is_none() {
                    node_uid = nodes.get_opt(&facts.name).await.ok().flatten().and_then(|n| n.metadata.uid);
                }
                if let Err(e) = lease::renew(&client, &facts.name, node_uid.as_deref()).await {
                    tracing::warn!(error = %e, "cannot renew the node lease");
                }
            }
            _ = status.tick() => {
                if let Err(e) = node::report(&client, &facts, since, true).await {
                    tracing::warn!(error = %e, "cannot report the node status");
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}

/// Runs an agent until `shutdown` is cancelled (see [`Agent::start`] and [`Agent::join`]).
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    Agent::start(config, shutdown).await?.join().await;
    Ok(())
}
