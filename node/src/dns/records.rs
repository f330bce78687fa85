//! What a name under the cluster domain answers (pure, table-tested), after the schema of
//! Kubernetes' DNS specification (kube-dns, CoreDNS's `kubernetes` plugin):
//!
//! - `<service>.<namespace>.svc.<domain>`: the ClusterIP; for a headless Service, its ready
//!   pods' addresses; for an ExternalName Service, an alias of `externalName`.
//! - `<hostname>.<service>.<namespace>.svc.<domain>`: the pod of a headless Service with that
//!   `hostname` (StatefulSet pods).
//! - `<a-b-c-d>.<namespace>.pod.<domain>`: the address `a.b.c.d`.
//!
//! Names outside the domain are the upstream resolvers' business.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use crate::proxy::table::{HeadlessAddresses, ServiceAddress};

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
    /// The name exists but has no address (a zone apex, a headless Service without ready pods).
    NoData,
    /// No such name (NXDOMAIN).
    NxDomain,
}

/// The answer for `name` (any case, with or without the final dot) in cluster `domain`.
pub fn lookup(zone: Zone<'_>, name: &str, domain: &str) -> Answer {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
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
        [host, service, ns, "svc"] => zone
            .headless
            .get(&key(ns, service))
            .and_then(|h| h.hostnames.get(*host))
            .map_or(Answer::NxDomain, |ip| Answer::Addresses(vec![*ip])),
        [dashed, _ns, "pod"] => dashed
            .replace('-', ".")
            .parse::<Ipv4Addr>()
            .map_or(Answer::NxDomain, |ip| {
                Answer::Addresses(vec![IpAddr::V4(ip)])
            }),
        _ => Answer::NxDomain,
    }
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
