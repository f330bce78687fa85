//! A pod's `/etc/resolv.conf`, as kubelet forms it from the pod's `dnsPolicy` and `dnsConfig`
//! (pure, table-tested):
//!
//! - `ClusterFirst` (the default): the cluster DNS server, the search path
//!   `<namespace>.svc.<domain> svc.<domain> <domain>` followed by the node's, and `ndots:5`.
//!   A `hostNetwork` pod gets `Default` instead, unless its policy is
//!   `ClusterFirstWithHostNet`. Without a cluster DNS server (an agent without a pod bridge)
//!   it falls back to `Default`, and says so.
//! - `Default`: the node's own resolver configuration (kubelet's `--resolv-conf`).
//! - `None`: nothing but the pod's `dnsConfig`.
//!
//! `dnsConfig` then adds nameservers and searches (without repeats) and merges options by
//! name. Over 3 nameservers or 32 search domains are cut, as kubelet cuts them, with a
//! warning.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::PodSpec;

/// Most nameservers a resolver uses (glibc's `MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// Most search domains kubelet writes.
pub const MAX_SEARCHES: usize = 32;

/// The contents of a `resolv.conf`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    /// `nameserver` lines, in order.
    pub nameservers: Vec<String>,
    /// The `search` line's domains.
    pub searches: Vec<String>,
    /// The `options` line's entries (`ndots:5`, `edns0`).
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads a `resolv.conf` (comments, `domain`, and unknown lines are skipped; a later
    /// `search` replaces an earlier one, as in glibc).
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_string)),
                Some("search") => conf.searches = words.map(str::to_string).collect(),
                Some("options") => conf.options.extend(words.map(str::to_string)),
                _ => {}
            }
        }
        conf
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut out = String::from("# Kubernetes-managed resolv.conf (flotilla).\n");
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The node's cluster DNS server, as pods see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDns {
    /// Its address (port 53).
    pub server: IpAddr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// A pod's DNS configuration and what forming it had to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDns {
    /// The pod's `resolv.conf`.
    pub conf: ResolvConf,
    /// Warnings for the pod's events: `(reason, message)`, kubelet's reasons
    /// (`MissingClusterDNS`, `DNSConfigForming`).
    pub warnings: Vec<(&'static str, String)>,
}

/// The DNS configuration of a pod in `namespace` with `spec`; `cluster` is the cluster DNS
/// server this pod can reach (none: container pods without a network of their own) and `node`
/// the node's own resolver configuration.
pub fn for_pod(
    spec: &PodSpec,
    namespace: &str,
    cluster: Option<&ClusterDns>,
    node: &ResolvConf,
) -> PodDns {
    let mut warnings = Vec::new();
    let host_network = spec.host_network == Some(true);
    let policy = spec
        .dns_policy
        .as_deref()
        .filter(|p| !p.is_empty())
        .unwrap_or("ClusterFirst");
    let wants_cluster = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let mut conf = match (policy, wants_cluster, cluster) {
        ("None", ..) => ResolvConf::default(),
        (_, true, Some(dns)) => {
            let mut searches = vec![
                format!("{namespace}.svc.{}", dns.domain),
                format!("svc.{}", dns.domain),
                dns.domain.clone(),
            ];
            searches.extend(node.searches.iter().cloned());
            ResolvConf {
                nameservers: vec![dns.server.to_string()],
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        (_, true, None) => {
            warnings.push((
                "MissingClusterDNS",
                format!(
                    "this node has no cluster DNS server the pod can reach (container pods \
                     need a pod bridge), so it cannot use the \"{policy}\" DNS policy. \
                     Falling back to \"Default\" policy."
                ),
            ));
            node.clone()
        }
        _ => node.clone(),
    };
    if let Some(extra) = &spec.dns_config {
        for ns in extra.nameservers.iter().flatten() {
            if !conf.nameservers.contains(ns) {
                conf.nameservers.push(ns.clone());
            }
        }
        for s in extra.searches.iter().flatten() {
            let s = s.trim_end_matches('.');
            if !s.is_empty() && !conf.searches.iter().any(|have| have == s) {
                conf.searches.push(s.to_string());
            }
        }
        for o in extra.options.iter().flatten() {
            let entry = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or_default()),
                None => o.name.clone().unwrap_or_default(),
            };
            let name = entry.split(':').next().unwrap_or_default().to_string();
            conf.options
                .retain(|have| have.split(':').next() != Some(&name));
            conf.options.push(entry);
        }
    }
    if conf.nameservers.len() > MAX_NAMESERVERS {
        conf.nameservers.truncate(MAX_NAMESERVERS);
        warnings.push((
            "DNSConfigForming",
            format!(
                "Nameserver limits were exceeded, some nameservers have been omitted, the \
                 applied nameserver line is: {}",
                conf.nameservers.join(" ")
            ),
        ));
    }
    if conf.searches.len() > MAX_SEARCHES {
        conf.searches.truncate(MAX_SEARCHES);
        warnings.push((
            "DNSConfigForming",
            format!(
                "Search Line limits were exceeded, some search paths have been omitted, the \
                 applied search line is: {}",
                conf.searches.join(" ")
            ),
        ));
    }
    PodDns { conf, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn node() -> ResolvConf {
        ResolvConf::parse(
            "# from DHCP\nnameserver 10.255.255.53\nnameserver 10.0.0.2 ; second\nsearch corp.example\noptions edns0 timeout:2\ndomain x\n",
        )
    }

    fn cluster() -> ClusterDns {
        ClusterDns {
            server: "10.244.0.1".parse().unwrap(),
            domain: "cluster.local".into(),
        }
    }

    #[test]
    fn the_node_file_parses_and_renders() {
        let n = node();
        assert_eq!(n.nameservers, ["10.255.255.53", "10.0.0.2"]);
        assert_eq!(n.searches, ["corp.example"]);
        assert_eq!(n.options, ["edns0", "timeout:2"]);
        assert_eq!(
            n.render(),
            "# Kubernetes-managed resolv.conf (flotilla).\nsearch corp.example\nnameserver 10.255.255.53\nnameserver 10.0.0.2\noptions edns0 timeout:2\n"
        );
    }

    #[test]
    fn cluster_first_names_the_cluster_server_and_search_path() {
        let d = for_pod(
            &spec(json!({"containers": []})),
            "shop",
            Some(&cluster()),
            &node(),
        );
        assert!(d.warnings.is_empty());
        assert_eq!(d.conf.nameservers, ["10.244.0.1"]);
        assert_eq!(
            d.conf.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(d.conf.options, ["ndots:5"]);
    }

    #[test]
    fn host_network_and_default_use_the_node_file() {
        let host =
            spec(json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirst"}));
        assert_eq!(for_pod(&host, "a", Some(&cluster()), &node()).conf, node());
        let with_host_net = spec(
            json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
        );
        assert_eq!(
            for_pod(&with_host_net, "a", Some(&cluster()), &node())
                .conf
                .nameservers,
            ["10.244.0.1"]
        );
        let default = spec(json!({"containers": [], "dnsPolicy": "Default"}));
        let d = for_pod(&default, "a", Some(&cluster()), &node());
        assert_eq!(d.conf, node());
        assert!(d.warnings.is_empty());
    }

    #[test]
    fn without_a_cluster_server_cluster_first_falls_back_and_says_so() {
        let d = for_pod(&spec(json!({"containers": []})), "a", None, &node());
        assert_eq!(d.conf, node());
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.warnings[0].0, "MissingClusterDNS");
        assert!(
            d.warnings[0]
                .1
                .contains("Falling back to \"Default\" policy")
        );
    }

    #[test]
    fn dns_config_adds_and_merges() {
        let none = spec(json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
            "nameservers": ["1.1.1.1"], "searches": ["a.example."],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        let d = for_pod(&none, "a", Some(&cluster()), &node());
        assert_eq!(
            d.conf,
            ResolvConf {
                nameservers: vec!["1.1.1.1".into()],
                searches: vec!["a.example".into()],
                options: vec!["ndots:2".into(), "edns0".into()],
            }
        );
        let merged = spec(json!({"containers": [], "dnsConfig": {
            "nameservers": ["10.244.0.1", "8.8.8.8"], "searches": ["svc.cluster.local", "x.example"],
            "options": [{"name": "ndots", "value": "1"}]}}));
        let d = for_pod(&merged, "shop", Some(&cluster()), &node());
        assert_eq!(d.conf.nameservers, ["10.244.0.1", "8.8.8.8"]);
        assert_eq!(
            d.conf.searches,
            [
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example",
                "x.example"
            ]
        );
        assert_eq!(d.conf.options, ["ndots:1"]);
    }

    #[test]
    fn over_three_nameservers_are_cut_with_a_warning() {
        let many = spec(
            json!({"containers": [], "dnsPolicy": "Default", "dnsConfig": {
            "nameservers": ["1.1.1.1", "8.8.8.8"]}}),
        );
        let d = for_pod(&many, "a", None, &node());
        assert_eq!(d.conf.nameservers, ["10.255.255.53", "10.0.0.2", "1.1.1.1"]);
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.warnings[0].0, "DNSConfigForming");
        assert!(
            d.warnings[0]
                .1
                .ends_with("the applied nameserver line is: 10.255.255.53 10.0.0.2 1.1.1.1")
        );
    }
}
