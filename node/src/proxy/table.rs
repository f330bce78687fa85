//! The proxy's routing table, computed from Services and EndpointSlices (pure, table-tested):
//! which addresses to listen on (each ClusterIP:port, and each NodePort on the node's address),
//! and the ready endpoints behind each Service port.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Default ClientIP affinity timeout (Kubernetes': 3 hours).
pub const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);

/// One port of one Service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortKey {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The port's name (empty for a single unnamed port).
    pub port: String,
}

impl std::fmt::Display for PortKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// Where one Service port's traffic goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Route {
    /// Ready endpoints (pod IP and resolved target port), sorted.
    pub endpoints: Vec<SocketAddr>,
    /// ClientIP session affinity and its timeout.
    pub affinity: Option<Duration>,
}

/// A Service as name resolution sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAddress {
    /// The ClusterIP.
    pub cluster_ip: IpAddr,
    /// Its TCP ports: `(port, key)`.
    pub ports: Vec<(u16, PortKey)>,
    /// Its named ports, any protocol (DNS SRV records).
    pub named_ports: Vec<NamedPort>,
}

/// A named port, as DNS SRV records name it: `_<name>._<protocol>.<service>...`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedPort {
    /// The port's name.
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number (a Service's port, or a headless Service's endpoint port).
    pub port: u16,
}

/// A headless Service as name resolution sees it: its pods' own addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadlessAddresses {
    /// The ready endpoints' addresses, sorted.
    pub ready: Vec<IpAddr>,
    /// Ready endpoints with a `hostname` (StatefulSet pods): `<hostname>.<service>`.
    pub hostnames: BTreeMap<String, IpAddr>,
    /// The endpoints' named ports, any protocol (DNS SRV records).
    pub named_ports: Vec<NamedPort>,
}

/// The whole table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    /// Addresses to listen on, and the Service port behind each.
    pub listeners: BTreeMap<SocketAddr, PortKey>,
    /// Routes by Service port.
    pub routes: HashMap<PortKey, Route>,
    /// Services by `(namespace, name)`, for name resolution.
    pub services: HashMap<(String, String), ServiceAddress>,
    /// Headless Services by `(namespace, name)`, for name resolution.
    pub headless: HashMap<(String, String), HeadlessAddresses>,
    /// ExternalName Services by `(namespace, name)`: the name each is an alias of.
    pub external: HashMap<(String, String), String>,
}

/// Builds the table; `node_ip` is where NodePorts listen.
pub fn build<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    node_ip: IpAddr,
) -> Table {
    let mut table = Table::default();
    let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        let ns = slice.metadata.namespace.clone().unwrap_or_default();
        if let Some(svc) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            by_service.entry((ns, svc.clone())).or_default().push(slice);
        }
    }
    for service in services {
        let ns = service.metadata.namespace.clone().unwrap_or_default();
        let name = service.metadata.name.clone().unwrap_or_default();
        let Some(spec) = &service.spec else { continue };
        if spec.type_.as_deref() == Some("ExternalName") {
            // Nothing to proxy; its name is a DNS alias (CNAME) of `externalName`.
            if let Some(target) = spec.external_name.as_deref().filter(|t| !t.is_empty()) {
                table.external.insert((ns, name), target.to_string());
            }
            continue;
        }
        let cluster_ip: Option<IpAddr> = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok());
        if cluster_ip.is_none() {
            // Headless: clients reach the pods themselves; nothing to proxy, but their names
            // resolve to the pods.
            let mut h = HeadlessAddresses::default();
            for ep in by_service
                .get(&(ns.clone(), name.clone()))
                .into_iter()
                .flatten()
                .flat_map(|s| &s.endpoints)
                .filter(|ep| ep.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            {
                let ips = ep.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok());
                for ip in ips {
                    h.ready.push(ip);
                    if let Some(host) = &ep.hostname {
                        h.hostnames.insert(host.to_ascii_lowercase(), ip);
                    }
                }
            }
            h.ready.sort();
            h.ready.dedup();
            h.named_ports = by_service
                .get(&(ns.clone(), name.clone()))
                .into_iter()
                .flatten()
                .flat_map(|s| s.ports.iter().flatten())
                .filter_map(|p| {
                    Some(NamedPort {
                        name: p.name.clone().filter(|n| !n.is_empty())?,
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            h.named_ports.sort();
            h.named_ports.dedup();
            table.headless.insert((ns, name), h);
            continue;
        }
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .map_or(DEFAULT_AFFINITY, |s| Duration::from_secs(s.max(1) as u64))
        });
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let slices = by_service.get(&(ns.clone(), name.clone()));
        let mut addr = cluster_ip.map(|ip| ServiceAddress {
            cluster_ip: ip,
            ports: Vec::new(),
            named_ports: spec
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(NamedPort {
                        name: p.name.clone().filter(|n| !n.is_empty())?,
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        port: u16::try_from(p.port).ok()?,
                    })
                })
                .collect(),
        });
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let key = PortKey {
                namespace: ns.clone(),
                service: name.clone(),
                port: port.name.clone().unwrap_or_default(),
            };
            let mut endpoints: Vec<SocketAddr> = Vec::new();
            for slice in slices.into_iter().flatten() {
                let Some(target) = slice.ports.iter().flatten().find(|p| {
                    p.name.clone().unwrap_or_default() == key.port
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                }) else {
                    continue;
                };
                let Some(target) = target.port.and_then(|p| u16::try_from(p).ok()) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                    if !ready {
                        continue;
                    }
                    for ip in &ep.addresses {
                        if let Ok(ip) = ip.parse::<IpAddr>() {
                            endpoints.push(SocketAddr::new(ip, target));
                        }
                    }
                }
            }
            endpoints.sort();
            endpoints.dedup();
            let Ok(service_port) = u16::try_from(port.port) else {
                continue;
            };
            if let Some(ip) = cluster_ip {
                table
                    .listeners
                    .insert(SocketAddr::new(ip, service_port), key.clone());
            }
            if let Some(a) = addr.as_mut() {
                a.ports.push((service_port, key.clone()));
            }
            if node_ports
                && let Some(np) = port.node_port.and_then(|p| u16::try_from(p).ok())
                && np > 0
            {
                table
                    .listeners
                    .insert(SocketAddr::new(node_ip, np), key.clone());
            }
            table.routes.insert(
                key,
                Route {
                    endpoints,
                    affinity,
                },
            );
        }
        if let Some(a) = addr {
            table.services.insert((ns, name), a);
        }
    }
    table
}

/// The `(namespace, service, hostname)` a host name means for a pod in `namespace` when it names
/// a pod of a headless Service: `HOST.SERVICE`, `HOST.SERVICE.NAMESPACE`,
/// `HOST.SERVICE.NAMESPACE.svc` and `HOST.SERVICE.NAMESPACE.svc.<domain>` (the cluster domain,
/// `cluster.local`). A two-part name is tried this way first, as the pod's DNS search path does
/// (`<namespace>.svc.<domain>` before `svc.<domain>`).
pub fn pod_of_host(host: &str, namespace: &str, domain: &str) -> Option<(String, String, String)> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host
        .strip_suffix(&format!(".{}", domain.trim_end_matches('.')))
        .unwrap_or(&host);
    let host = host.strip_suffix(".svc").unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !parts.iter().all(|p| valid(p)) {
        return None;
    }
    match parts.as_slice() {
        [h, s] => Some((namespace.to_string(), s.to_string(), h.to_string())),
        [h, s, ns] => Some((ns.to_string(), s.to_string(), h.to_string())),
        _ => None,
    }
}

/// The `(namespace, name)` of the Service a host name means for a pod in `namespace`:
/// `NAME`, `NAME.NAMESPACE`, `NAME.NAMESPACE.svc` and `NAME.NAMESPACE.svc.<domain>`.
pub fn service_of_host(host: &str, namespace: &str, domain: &str) -> Option<(String, String)> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let host = host
        .strip_suffix(&format!(".{}", domain.trim_end_matches('.')))
        .unwrap_or(&host)
        .to_string();
    let host = host.strip_suffix(".svc").unwrap_or(&host);
    let parts: Vec<&str> = host.split('.').collect();
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match parts.as_slice() {
        [name] if valid(name) && !name.chars().all(|c| c.is_ascii_digit()) => {
            Some((namespace.to_string(), name.to_string()))
        }
        [name, ns] if valid(name) && valid(ns) => Some((ns.to_string(), name.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    fn slice(v: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cluster_ips_node_ports_and_ready_endpoints_make_the_table() {
        let web = service(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"type": "NodePort", "clusterIP": "127.2.0.1", "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080, "protocol": "TCP"},
                               {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }));
        let headless = service(json!({
            "metadata": {"name": "h", "namespace": "ns"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80}]}
        }));
        let s = slice(json!({
            "metadata": {"name": "web-x", "namespace": "ns", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.1.0.2"], "conditions": {"ready": true}},
                {"addresses": ["127.1.0.1"], "conditions": {"ready": true}},
                {"addresses": ["127.1.0.3"], "conditions": {"ready": false}},
            ]
        }));
        let other = slice(json!({
            "metadata": {"name": "x", "namespace": "other", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 1, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["127.1.9.9"]}]
        }));
        let t = build(
            [&web, &headless],
            [&s, &other],
            "127.0.0.1".parse().unwrap(),
        );
        let key = PortKey {
            namespace: "ns".into(),
            service: "web".into(),
            port: "http".into(),
        };
        let listeners: Vec<String> = t.listeners.keys().map(|a| a.to_string()).collect();
        assert_eq!(listeners, ["127.0.0.1:30080", "127.2.0.1:80"]);
        assert_eq!(
            t.routes[&key].endpoints,
            vec![
                "127.1.0.1:8080".parse::<SocketAddr>().unwrap(),
                "127.1.0.2:8080".parse().unwrap()
            ]
        );
        assert!(t.headless[&("ns".into(), "h".into())].ready.is_empty());
        assert_eq!(t.routes[&key].affinity, Some(DEFAULT_AFFINITY));
        assert_eq!(
            t.routes.len(),
            1,
            "UDP ports and headless Services have no route"
        );
        assert_eq!(
            t.services[&("ns".into(), "web".into())].ports,
            vec![(80, key.clone())]
        );
    }

    #[test]
    fn a_headless_service_resolves_to_its_ready_pods_and_their_hostnames() {
        let db = service(json!({
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }));
        let s = slice(json!({
            "metadata": {"name": "db-x", "namespace": "ns", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["127.1.0.7"], "hostname": "db-1", "conditions": {"ready": true}},
                {"addresses": ["127.1.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["127.1.0.9"], "hostname": "db-2", "conditions": {"ready": false}},
            ]
        }));
        let t = build([&db], [&s], "127.0.0.1".parse().unwrap());
        let h = &t.headless[&("ns".into(), "db".into())];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(h.ready, [ip("127.1.0.5"), ip("127.1.0.7")]);
        assert_eq!(
            h.hostnames,
            BTreeMap::from([
                ("db-0".into(), ip("127.1.0.5")),
                ("db-1".into(), ip("127.1.0.7"))
            ])
        );
        assert!(t.listeners.is_empty() && t.services.is_empty());
    }

    #[test]
    fn pod_host_names_resolve_the_kubernetes_way() {
        let table = [
            ("db-0.db", Some(("pods", "db", "db-0"))),
            ("db-0.db.shop", Some(("shop", "db", "db-0"))),
            ("db-0.db.shop.svc", Some(("shop", "db", "db-0"))),
            (
                "DB-0.db.shop.svc.cluster.local.",
                Some(("shop", "db", "db-0")),
            ),
            ("db", None),
            ("a.b.c.d", None),
            ("a..b", None),
        ];
        for (host, want) in table {
            assert_eq!(
                pod_of_host(host, "pods", "cluster.local"),
                want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())),
                "{host}"
            );
        }
    }

    #[test]
    fn host_names_resolve_the_kubernetes_way() {
        let table = [
            ("web", Some(("pods", "web"))),
            ("web.shop", Some(("shop", "web"))),
            ("web.shop.svc", Some(("shop", "web"))),
            ("Web.Shop.svc.cluster.local", Some(("shop", "web"))),
            ("web.shop.svc.cluster.local.", Some(("shop", "web"))),
            ("example.com.evil", None),
            ("127", None),
            ("a.b.c", None),
        ];
        for (host, want) in table {
            assert_eq!(
                service_of_host(host, "pods", "cluster.local"),
                want.map(|(a, b)| (a.to_string(), b.to_string())),
                "{host}"
            );
        }
        // Another cluster domain (`--cluster-domain corp.example`).
        let corp = "corp.example";
        assert_eq!(
            service_of_host("web.shop.svc.corp.example.", "pods", corp),
            Some(("shop".to_string(), "web".to_string()))
        );
        assert_eq!(
            service_of_host("web.shop.svc.cluster.local", "pods", corp),
            None
        );
        assert_eq!(
            pod_of_host("db-0.db.shop.svc.corp.example", "pods", corp),
            Some(("shop".into(), "db".into(), "db-0".into()))
        );
    }
}
