//! What a name under the cluster domain answers (pure, table-tested), after the schema of
//! Kubernetes' DNS specification (kube-dns, CoreDNS's `kubernetes` plugin):
//!
//! - `<service>.<namespace>.svc.<domain>`: the ClusterIP; for a headless Service, its ready
//!   pods' addresses; for an ExternalName Service, an alias of `externalName`.
//! - `<hostname>.<service>.<namespace>.svc.<domain>`: the pod of a headless Service with that
//!   `hostname` (StatefulSet pods).
//! - `<a-b-c-d>.<service>.<namespace>.svc.<domain>`: a ready pod of a headless Service without
//!   a `hostname`.
//! - `_<port>._<protocol>.<service>.<namespace>.svc.<domain>`: SRV records of a named port,
//!   to the Service's name (port: the Service's), or to each ready pod of a headless Service
//!   (port: the endpoint's).
//! - `<a-b-c-d>.<namespace>.pod.<domain>`: the address `a.b.c.d`.
//! - `d.c.b.a.in-addr.arpa`: PTR to the Service whose ClusterIP is `a.b.c.d`, or to the name
//!   of a headless Service's pod with that address.
//!
//! Names outside the domain (and other reverse lookups) are the upstream resolvers' business.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::proxy::table::{HeadlessAddresses, NamedPort, ServiceAddress};

/// The cluster's Services as DNS sees them (views of the node proxy's table).
#[derive(Clone, Copy, Debug)]
pub struct Zone<'a> {
    /// Services with a ClusterIP, by `(namespace, name)`.
    pub services: &'a HashMap<(String, String), ServiceAddress>,
    /// Headless Services, by `(namespace, name)`.
    pub headless: &'a HashMap<(String, String), HeadlessAddresses>,
    /// ExternalName Services' targets, by `(namespace, name)`.
    pub external: &'a HashMap<(String, String), String>,
}

/// The answer for a name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Not under the cluster domain: for the upstream resolvers.
    Upstream,
    /// The name's addresses.
    Addresses(Vec<IpAddr>),
    /// The name is an alias (CNAME) of this one.
    Alias(String),
    /// The name's SRV records.
    Services(Vec<SrvTarget>),
    /// A reverse lookup's name (PTR).
    Pointer(String),
    /// The name exists but has no address (a zone apex, a headless Service without ready pods).
    NoData,
    /// No such name (NXDOMAIN).
    NxDomain,
}

/// One SRV record's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// The port.
    pub port: u16,
    /// Its share of the traffic among the records (100 split evenly).
    pub weight: u16,
    /// The target's name (without the final dot).
    pub target: String,
    /// The target's address (for the answer's additional section).
    pub address: IpAddr,
}

/// The answer for `name` (any case, with or without the final dot) in cluster `domain`.
pub fn lookup(zone: Zone<'_>, name: &str, domain: &str) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(reversed) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<&str> = reversed.split('.').collect();
        octets.reverse();
        return octets
            .join(".")
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(|ip| pointer(zone, IpAddr::V4(ip), &domain))
            .map_or(Answer::Upstream, Answer::Pointer);
    }
    if name == domain {
        return Answer::NoData;
    }
    let Some(relative) = name.strip_suffix(&format!(".{domain}")) else {
        return Answer::Upstream;
    };
    let labels: Vec<&str> = relative.split('.').collect();
    let key = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    match labels.as_slice() {
        ["svc" | "pod"] | [_, "svc" | "pod"] => Answer::NoData,
        [service, ns, "svc"] => {
            let key = key(ns, service);
            if let Some(s) = zone.services.get(&key) {
                Answer::Addresses(vec![s.cluster_ip])
            } else if let Some(h) = zone.headless.get(&key) {
                if h.ready.is_empty() {
                    Answer::NoData
                } else {
                    Answer::Addresses(h.ready.clone())
                }
            } else if let Some(target) = zone.external.get(&key) {
                Answer::Alias(target.trim_end_matches('.').to_string())
            } else {
                Answer::NxDomain
            }
        }
        [port, protocol, service, ns, "svc"]
            if port.starts_with('_') && protocol.starts_with('_') =>
        {
            let wanted = |p: &&NamedPort| {
                p.name.eq_ignore_ascii_case(&port[1..])
                    && p.protocol.eq_ignore_ascii_case(&protocol[1..])
            };
            let key = key(ns, service);
            let base = format!("{service}.{ns}.svc.{domain}");
            if let Some(s) = zone.services.get(&key) {
                s.named_ports
                    .iter()
                    .find(wanted)
                    .map_or(Answer::NxDomain, |p| {
                        Answer::Services(vec![SrvTarget {
                            port: p.port,
                            weight: 100,
                            target: base,
                            address: s.cluster_ip,
                        }])
                    })
            } else if let Some(h) = zone.headless.get(&key) {
                let Some(p) = h.named_ports.iter().find(wanted) else {
                    return Answer::NxDomain;
                };
                let weight = (100 / h.ready.len().max(1)).max(1) as u16;
                Answer::Services(
                    h.ready
                        .iter()
                        .map(|ip| SrvTarget {
                            port: p.port,
                            weight,
                            target: format!("{}.{base}", host_label(h, *ip)),
                            address: *ip,
                        })
                        .collect(),
                )
            } else {
                Answer::NxDomain
            }
        }
        [host, service, ns, "svc"] => zone
            .headless
            .get(&key(ns, service))
            .and_then(|h| {
                h.hostnames.get(*host).copied().or_else(|| {
                    let ip = IpAddr::V4(dashed_ipv4(host)?);
                    h.ready.contains(&ip).then_some(ip)
                })
            })
            .map_or(Answer::NxDomain, |ip| Answer::Addresses(vec![ip])),
        [dashed, _ns, "pod"] => dashed_ipv4(dashed).map_or(Answer::NxDomain, |ip| {
            Answer::Addresses(vec![IpAddr::V4(ip)])
        }),
        _ => Answer::NxDomain,
    }
}

/// The address a label like `10-244-0-7` names.
fn dashed_ipv4(label: &str) -> Option<Ipv4Addr> {
    label.replace('-', ".").parse().ok()
}

/// The first label of a headless Service's pod at `ip`: its `hostname`, else its address with
/// dashes.
fn host_label(h: &HeadlessAddresses, ip: IpAddr) -> String {
    h.hostnames
        .iter()
        .find(|(_, a)| **a == ip)
        .map(|(name, _)| name.clone())
        .unwrap_or_else(|| ip.to_string().replace(['.', ':'], "-"))
}

/// The name a reverse lookup of `ip` answers: the Service with that ClusterIP, else a headless
/// Service's pod (the first by name when several match).
fn pointer(zone: Zone<'_>, ip: IpAddr, domain: &str) -> Option<String> {
    let services = zone
        .services
        .iter()
        .filter(|(_, s)| s.cluster_ip == ip)
        .map(|((ns, name), _)| format!("{name}.{ns}.svc.{domain}"));
    let pods = zone
        .headless
        .iter()
        .filter(|(_, h)| h.ready.contains(&ip))
        .map(|((ns, name), h)| format!("{}.{name}.{ns}.svc.{domain}", host_label(h, ip)));
    services.min().or_else(|| pods.min())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::PortKey;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_answer_as_kubernetes_dns_specifies() {
        let mut services = HashMap::new();
        services.insert(
            ("shop".to_string(), "web".to_string()),
            ServiceAddress {
                cluster_ip: ip("127.2.0.9"),
                named_ports: vec![NamedPort {
                    name: "http".into(),
                    protocol: "TCP".into(),
                    port: 80,
                }],
                ports: vec![(
                    80,
                    PortKey {
                        namespace: "shop".into(),
                        service: "web".into(),
                        port: String::new(),
                    },
                )],
            },
        );
        let mut headless = HashMap::new();
        headless.insert(
            ("shop".to_string(), "db".to_string()),
            HeadlessAddresses {
                ready: vec![ip("10.244.0.5"), ip("10.244.0.6")],
                hostnames: [("db-0".to_string(), ip("10.244.0.5"))].into(),
                named_ports: vec![NamedPort {
                    name: "pg".into(),
                    protocol: "TCP".into(),
                    port: 5432,
                }],
            },
        );
        headless.insert(
            ("shop".to_string(), "empty".to_string()),
            HeadlessAddresses::default(),
        );
        let mut external = HashMap::new();
        external.insert(
            ("shop".to_string(), "mail".to_string()),
            "smtp.example.com.".to_string(),
        );
        let zone = Zone {
            services: &services,
            headless: &headless,
            external: &external,
        };
        let d = "cluster.local";
        let cases = [
            (
                "web.shop.svc.cluster.local.",
                Answer::Addresses(vec![ip("127.2.0.9")]),
            ),
            (
                "WEB.Shop.svc.Cluster.Local",
                Answer::Addresses(vec![ip("127.2.0.9")]),
            ),
            (
                "db.shop.svc.cluster.local.",
                Answer::Addresses(vec![ip("10.244.0.5"), ip("10.244.0.6")]),
            ),
            (
                "db-0.db.shop.svc.cluster.local.",
                Answer::Addresses(vec![ip("10.244.0.5")]),
            ),
            ("db-1.db.shop.svc.cluster.local.", Answer::NxDomain),
            // A headless Service's pod without a hostname, by its address.
            (
                "10-244-0-6.db.shop.svc.cluster.local.",
                Answer::Addresses(vec![ip("10.244.0.6")]),
            ),
            ("10-244-0-9.db.shop.svc.cluster.local.", Answer::NxDomain),
            (
                "_http._tcp.web.shop.svc.cluster.local.",
                Answer::Services(vec![SrvTarget {
                    port: 80,
                    weight: 100,
                    target: "web.shop.svc.cluster.local".into(),
                    address: ip("127.2.0.9"),
                }]),
            ),
            ("_http._udp.web.shop.svc.cluster.local.", Answer::NxDomain),
            ("_grpc._tcp.web.shop.svc.cluster.local.", Answer::NxDomain),
            (
                "_PG._TCP.db.shop.svc.cluster.local.",
                Answer::Services(vec![
                    SrvTarget {
                        port: 5432,
                        weight: 50,
                        target: "db-0.db.shop.svc.cluster.local".into(),
                        address: ip("10.244.0.5"),
                    },
                    SrvTarget {
                        port: 5432,
                        weight: 50,
                        target: "10-244-0-6.db.shop.svc.cluster.local".into(),
                        address: ip("10.244.0.6"),
                    },
                ]),
            ),
            (
                "9.0.2.127.in-addr.arpa.",
                Answer::Pointer("web.shop.svc.cluster.local".into()),
            ),
            (
                "5.0.244.10.in-addr.arpa.",
                Answer::Pointer("db-0.db.shop.svc.cluster.local".into()),
            ),
            (
                "6.0.244.10.in-addr.arpa.",
                Answer::Pointer("10-244-0-6.db.shop.svc.cluster.local".into()),
            ),
            ("1.1.1.1.in-addr.arpa.", Answer::Upstream),
            ("empty.shop.svc.cluster.local.", Answer::NoData),
            (
                "mail.shop.svc.cluster.local.",
                Answer::Alias("smtp.example.com".into()),
            ),
            ("web.other.svc.cluster.local.", Answer::NxDomain),
            // What a pod's search path tries first for `web.shop`.
            ("web.shop.shop.svc.cluster.local.", Answer::NxDomain),
            ("web.shop.cluster.local.", Answer::NxDomain),
            (
                "10-244-0-7.shop.pod.cluster.local.",
                Answer::Addresses(vec![ip("10.244.0.7")]),
            ),
            ("10-244-0.shop.pod.cluster.local.", Answer::NxDomain),
            ("shop.svc.cluster.local.", Answer::NoData),
            ("svc.cluster.local.", Answer::NoData),
            ("cluster.local.", Answer::NoData),
            ("deb.debian.org.", Answer::Upstream),
            ("web.", Answer::Upstream),
            ("notcluster.local.", Answer::Upstream),
        ];
        for (name, want) in cases {
            assert_eq!(lookup(zone, name, d), want, "{name}");
        }
        // Another cluster domain.
        assert_eq!(
            lookup(zone, "web.shop.svc.corp.", "corp"),
            Answer::Addresses(vec![ip("127.2.0.9")])
        );
    }
}
