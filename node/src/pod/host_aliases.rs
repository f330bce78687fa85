//! A pod's `hostAliases`: extra host names for addresses, as kubelet writes them into each
//! container's `/etc/hosts`. Container pods get them in that file; Wasm guests, which have no
//! `/etc/hosts`, get them from the resolver of their outgoing requests, ahead of Service names.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::runtime::NameResolver;

/// Address → the host names that lead to it, in the pod's order.
pub type HostAliases = Vec<(IpAddr, Vec<String>)>;

/// The pod's `hostAliases` whose address parses (the API server refuses others).
pub fn of(pod: &Pod) -> HostAliases {
    pod.spec
        .iter()
        .flat_map(|s| s.host_aliases.iter().flatten())
        .filter_map(|a| {
            let ip = a.ip.parse().ok()?;
            Some((ip, a.hostnames.clone().unwrap_or_default()))
        })
        .filter(|(_, names)| !names.is_empty())
        .collect()
}

/// Kubelet's block of `/etc/hosts` for them (empty without any).
pub fn hosts_entries(aliases: &HostAliases) -> String {
    if aliases.is_empty() {
        return String::new();
    }
    let mut s = String::from("\n# Entries added by HostAliases.\n");
    for (ip, names) in aliases {
        s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
    }
    s
}

/// Resolves the aliases first, then asks `inner` (Service names).
pub struct AliasResolver {
    aliases: HostAliases,
    inner: Option<Arc<dyn NameResolver>>,
}

impl AliasResolver {
    /// `inner` behind `aliases`; just `inner` when there are none.
    pub fn wrap(
        aliases: HostAliases,
        inner: Option<Arc<dyn NameResolver>>,
    ) -> Option<Arc<dyn NameResolver>> {
        if aliases.is_empty() {
            return inner;
        }
        Some(Arc::new(AliasResolver { aliases, inner }))
    }
}

impl NameResolver for AliasResolver {
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        let alias = self
            .aliases
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(host)));
        match alias {
            Some((ip, _)) => Some(SocketAddr::new(*ip, port)),
            None => self.inner.as_ref()?.resolve(host, port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Services;
    impl NameResolver for Services {
        fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
            (host == "web").then(|| SocketAddr::from(([127, 2, 0, 1], port)))
        }
    }

    #[test]
    fn aliases_become_hosts_lines_and_resolve_before_services() {
        let pod: Pod = serde_json::from_value(json!({"spec": {"containers": [], "hostAliases": [
            {"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]},
            {"ip": "127.0.0.1", "hostnames": ["web"]},
            {"ip": "not-an-ip", "hostnames": ["x"]}]}}))
        .unwrap();
        let aliases = of(&pod);
        assert_eq!(aliases.len(), 2);
        assert_eq!(
            hosts_entries(&aliases),
            "\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n127.0.0.1\tweb\n"
        );
        let r = AliasResolver::wrap(aliases, Some(Arc::new(Services))).unwrap();
        assert_eq!(
            r.resolve("BAR.local", 80),
            Some("10.1.2.3:80".parse().unwrap())
        );
        assert_eq!(
            r.resolve("web", 8080),
            Some("127.0.0.1:8080".parse().unwrap()),
            "an alias wins over a Service of the same name, as /etc/hosts wins over DNS"
        );
        assert_eq!(r.resolve("other", 80), None);
        assert!(AliasResolver::wrap(Vec::new(), None).is_none());
        assert_eq!(hosts_entries(&Vec::new()), "");
    }
}
