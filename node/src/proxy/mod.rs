//! The node proxy (kube-proxy's role), in user space and without root: it watches Services and
//! EndpointSlices through the `kube` client and, for every Service port with ready endpoints,
//! listens on `ClusterIP:port` (and on `nodeIP:nodePort` for NodePort Services), splicing each
//! connection to a ready endpoint ([`listener`]).
//!
//! - [`table`]: the routing table from Services and slices (pure).
//! - [`balancer`]: round-robin and ClientIP affinity over a port's ready endpoints.
//! - [`listener`]: accept and relay; refused endpoints are skipped.
//!
//! A Service port is listened on only while it has a ready endpoint, so a Service whose
//! selector matches nothing refuses connections at once. An endpoint that turns not ready
//! leaves the balancer when its slice changes (established connections stay). In rootless
//! mode ClusterIPs come from a loopback range, so every listener binds without privileges
//! except ports below 1024 (`net.ipv4.ip_unprivileged_port_start`); such a port is reported
//! once and stays reachable by name for Wasm guests, whose resolver ([`Proxy::resolver`]) then
//! connects straight to an endpoint.

pub mod balancer;
pub mod listener;
pub mod table;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::runtime::NameResolver;
use balancer::Balancer;
use table::{PortKey, Table};

/// A listener the proxy runs.
struct Listening {
    key: PortKey,
    stop: CancellationToken,
}

/// The proxy's shared state.
#[derive(Default)]
struct State {
    balancers: HashMap<PortKey, Arc<Balancer>>,
    services: HashMap<(String, String), table::ServiceAddress>,
    headless: HashMap<(String, String), table::HeadlessAddresses>,
    external: HashMap<(String, String), String>,
    bound: HashSet<SocketAddr>,
}

/// The node proxy; cheap to clone.
#[derive(Clone)]
pub struct Proxy {
    // A std lock: map reads and swaps only, never held across an await.
    state: Arc<RwLock<State>>,
    /// The cluster domain Service names end in (`cluster.local`).
    domain: Arc<str>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy").finish_non_exhaustive()
    }
}

impl Default for Proxy {
    fn default() -> Self {
        Proxy::new()
    }
}

impl Proxy {
    /// A proxy with an empty table, for the cluster domain `cluster.local`.
    pub fn new() -> Proxy {
        Proxy::for_domain(crate::dns::DEFAULT_CLUSTER_DOMAIN)
    }

    /// A proxy with an empty table, for cluster `domain` (Service names'
    /// `<name>.<namespace>.svc.<domain>`).
    pub fn for_domain(domain: &str) -> Proxy {
        Proxy {
            state: Arc::new(RwLock::new(State::default())),
            domain: domain.trim_end_matches('.').to_ascii_lowercase().into(),
        }
    }

    /// Starts watching Services and EndpointSlices and serving them, on `tasks`, until
    /// `shutdown`; NodePorts listen on `node_ip`.
    pub fn start(
        &self,
        client: kube::Client,
        node_ip: IpAddr,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        tasks.spawn(self.clone().run(client, node_ip, tasks.clone(), shutdown));
    }

    /// A resolver of Service names for pods in `namespace`.
    pub fn resolver(&self, namespace: &str) -> Arc<dyn NameResolver> {
        Arc::new(ServiceNames {
            proxy: self.clone(),
            namespace: namespace.to_string(),
        })
    }

    /// Takes the Services' names and addresses (what name resolution and DNS answer) from
    /// `table` (the proxy's own loop does this as it syncs; tests of what reads them call it).
    #[cfg(test)]
    pub(crate) fn set_names(&self, table: &Table) {
        take_names(
            &mut self.state.write().unwrap_or_else(|p| p.into_inner()),
            table,
        );
    }

    /// What cluster DNS answers for `name` in cluster `domain` ([`crate::dns::records`]).
    pub fn dns_lookup(&self, name: &str, domain: &str) -> crate::dns::records::Answer {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        let zone = crate::dns::records::Zone {
            services: &state.services,
            headless: &state.headless,
            external: &state.external,
        };
        crate::dns::records::lookup(zone, name, domain)
    }

    /// Where a connection to Service `host` (as a pod in `namespace` names it) on `port` goes.
    /// A headless Service's name goes to its first ready pod, and `<hostname>.<service>` to
    /// that pod, on `port` itself, as their DNS records would.
    pub fn resolve(&self, namespace: &str, host: &str, port: u16) -> Option<SocketAddr> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if let Some((ns, service, hostname)) = table::pod_of_host(host, namespace, &self.domain)
            && let Some(ip) = state
                .headless
                .get(&(ns, service))
                .and_then(|h| h.hostnames.get(&hostname))
        {
            return Some(SocketAddr::new(*ip, port));
        }
        let key = table::service_of_host(host, namespace, &self.domain)?;
        if let Some(h) = state.headless.get(&key) {
            return h.ready.first().map(|ip| SocketAddr::new(*ip, port));
        }
        let service = state.services.get(&key)?;
        let (_, key) = service.ports.iter().find(|(p, _)| *p == port)?;
        let frontend = SocketAddr::new(service.cluster_ip, port);
        if state.bound.contains(&frontend) {
            return Some(frontend);
        }
        // Not listening (no ready endpoint, or a port this user may not bind): straight to an
        // endpoint when there is one, else the ClusterIP, which refuses at once.
        let balancer = state.balancers.get(key)?;
        Some(
            balancer
                .candidates(IpAddr::from([127, 0, 0, 1]), Instant::now())
                .first()
                .copied()
                .unwrap_or(frontend),
        )
    }

    async fn run(
        self,
        client: kube::Client,
        node_ip: IpAddr,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) {
        let services = watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .map(|e| e.map(|e| Change::Service(Box::new(e))));
        let slices = watcher::watcher(
            Api::<EndpointSlice>::all(client),
            watcher::Config::default(),
        )
        .default_backoff()
        .map(|e| e.map(|e| Change::Slice(Box::new(e))));
        let mut events = std::pin::pin!(futures::stream::select(services, slices));
        let mut svcs: BTreeMap<(String, String), Service> = BTreeMap::new();
        let mut slices: BTreeMap<(String, String), EndpointSlice> = BTreeMap::new();
        let mut init_svcs: Option<BTreeMap<(String, String), Service>> = None;
        let mut init_slices: Option<BTreeMap<(String, String), EndpointSlice>> = None;
        let mut listening: HashMap<SocketAddr, Listening> = HashMap::new();
        let mut reported: HashSet<SocketAddr> = HashSet::new();
        loop {
            let first = tokio::select! {
                e = events.next() => e,
                _ = shutdown.cancelled() => break,
            };
            // Take every event already waiting, then apply the table once.
            let mut batch = vec![first];
            while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
                batch.push(Some(e));
            }
            let mut changed = false;
            for event in batch {
                match event {
                    None => return,
                    Some(Err(e)) => tracing::warn!(error = %e, "proxy watch failed; retrying"),
                    Some(Ok(change)) => {
                        changed |= apply(
                            change,
                            &mut svcs,
                            &mut slices,
                            &mut init_svcs,
                            &mut init_slices,
                        )
                    }
                }
            }
            if changed {
                let table = table::build(svcs.values(), slices.values(), node_ip);
                self.sync(&table, &mut listening, &mut reported, &tasks, &shutdown)
                    .await;
            }
        }
        for (_, l) in listening.drain() {
            l.stop.cancel();
        }
    }

    /// Makes the balancers and listeners match `table`.
    async fn sync(
        &self,
        table: &Table,
        listening: &mut HashMap<SocketAddr, Listening>,
        reported: &mut HashSet<SocketAddr>,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            state.balancers.retain(|k, _| table.routes.contains_key(k));
            for (key, route) in &table.routes {
                match state.balancers.get(key) {
                    Some(b) => b.set(route.clone()),
                    None => {
                        state
                            .balancers
                            .insert(key.clone(), Arc::new(Balancer::new(route.clone())));
                    }
                }
            }
            take_names(&mut state, table);
        }
        let wanted: BTreeMap<SocketAddr, PortKey> = table
            .listeners
            .iter()
            .filter(|(_, key)| {
                table
                    .routes
                    .get(*key)
                    .is_some_and(|r| !r.endpoints.is_empty())
            })
            .map(|(a, k)| (*a, k.clone()))
            .collect();
        listening.retain(|addr, l| {
            let keep = wanted.get(addr) == Some(&l.key);
            if !keep {
                l.stop.cancel();
                tracing::debug!(%addr, service = %l.key, "proxy stopped listening");
            }
            keep
        });
        for (addr, key) in wanted {
            if listening.contains_key(&addr) {
                continue;
            }
            let balancer = {
                let state = self.state.read().unwrap_or_else(|p| p.into_inner());
                state.balancers.get(&key).cloned()
            };
            let Some(balancer) = balancer else { continue };
            match bind(addr).await {
                Ok(listener) => {
                    reported.remove(&addr);
                    let stop = shutdown.child_token();
                    tasks.spawn(listener::serve(
                        listener,
                        key.clone(),
                        balancer,
                        tasks.clone(),
                        stop.clone(),
                        shutdown.clone(),
                    ));
                    tracing::debug!(%addr, service = %key, "proxy listening");
                    listening.insert(addr, Listening { key, stop });
                }
                Err(e) => {
                    if reported.insert(addr) {
                        let why = match e.kind() {
                            std::io::ErrorKind::PermissionDenied => {
                                " (ports below 1024 need privileges)"
                            }
                            std::io::ErrorKind::AddrInUse => {
                                " (another process, or another node agent on this machine, holds it)"
                            }
                            _ => "",
                        };
                        tracing::warn!(%addr, service = %key, error = %e,
                            "cannot listen for the Service{why}");
                    }
                }
            }
        }
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.bound = listening.keys().copied().collect();
    }
}

/// Binds with `SO_REUSEADDR`, so a port just closed (its Service briefly without endpoints)
/// binds again at once.
async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// A watch event of either kind.
enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// The Services' names and addresses of `table`, into `state`.
fn take_names(state: &mut State, table: &Table) {
    state.services = table.services.clone();
    state.headless = table.headless.clone();
    state.external = table.external.clone();
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Applies one watch event to the caches; whether the table may have changed.
fn apply(
    change: Change,
    svcs: &mut BTreeMap<(String, String), Service>,
    slices: &mut BTreeMap<(String, String), EndpointSlice>,
    init_svcs: &mut Option<BTreeMap<(String, String), Service>>,
    init_slices: &mut Option<BTreeMap<(String, String), EndpointSlice>>,
) -> bool {
    match change {
        Change::Service(e) => apply_one(*e, svcs, init_svcs, |s| key_of(&s.metadata)),
        Change::Slice(e) => apply_one(*e, slices, init_slices, |s| key_of(&s.metadata)),
    }
}

fn apply_one<T>(
    event: Event<T>,
    cache: &mut BTreeMap<(String, String), T>,
    init: &mut Option<BTreeMap<(String, String), T>>,
    key: impl Fn(&T) -> (String, String),
) -> bool {
    match event {
        Event::Init => {
            *init = Some(BTreeMap::new());
            false
        }
        Event::InitApply(obj) => {
            if let Some(i) = init.as_mut() {
                i.insert(key(&obj), obj);
            }
            false
        }
        Event::InitDone => {
            if let Some(i) = init.take() {
                *cache = i;
            }
            true
        }
        Event::Apply(obj) => {
            cache.insert(key(&obj), obj);
            true
        }
        Event::Delete(obj) => {
            cache.remove(&key(&obj));
            true
        }
    }
}

/// Resolves Service names for the pods of one namespace.
struct ServiceNames {
    proxy: Proxy,
    namespace: String,
}

impl NameResolver for ServiceNames {
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        self.proxy.resolve(&self.namespace, host, port)
    }
}
