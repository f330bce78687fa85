//! Service addresses: ClusterIPs from the service range and NodePorts from the node-port range,
//! as kube-apiserver's allocators hand them out.
//!
//! [`Allocations`] is the pure bookkeeping (table-tested): which address and ports each Service
//! holds, what a create or update takes and frees, and the `422 Invalid` causes of a clash.
//! [`ServiceAddresses`] shares it between writers; it is rebuilt from the stored Services the
//! first time a Service is written after start, so allocations survive restarts without a
//! separate record (the Services themselves are the record, durable with them).
//!
//! The default range is loopback (`127.2.0.0/16`): every address binds without privileges, so
//! the node proxy can listen on each ClusterIP in rootless mode. It must not overlap the nodes'
//! pod range (`127.1.0.0/16` by default).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use serde_json::{Value, json};

use super::error::Cause;

/// The default ClusterIP range (`--service-cluster-ip-range`).
pub const DEFAULT_SERVICE_CIDR: &str = "127.2.0.0/16";
/// The default NodePort range (`--service-node-port-range`).
pub const DEFAULT_NODE_PORTS: RangeInclusive<u16> = 30000..=32767;

/// An IPv4 range in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Ipv4Cidr {
    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Whether `ip` is a usable host address of the range (not network nor broadcast).
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        let (n, base) = (u32::from(ip), u32::from(self.network));
        n > base && n < base + self.size() - 1
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Ipv4Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR like 127.2.0.0/16"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Parses a port range written `30000-32767`.
pub fn parse_port_range(s: &str) -> Result<RangeInclusive<u16>, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?}: expected a port range like 30000-32767"))?;
    let (a, b): (u16, u16) = (
        a.trim()
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not a port"))?,
        b.trim()
            .parse()
            .map_err(|_| format!("{s:?}: {b:?} is not a port"))?,
    );
    if a == 0 || a > b {
        return Err(format!(
            "{s:?}: the range must be non-empty and start above 0"
        ));
    }
    Ok(a..=b)
}

/// The ranges Services get their addresses from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRanges {
    /// ClusterIPs come from here.
    pub cluster_ips: Ipv4Cidr,
    /// NodePorts come from here.
    pub node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    fn default() -> Self {
        ServiceRanges {
            cluster_ips: DEFAULT_SERVICE_CIDR.parse().expect("the default parses"),
            node_ports: DEFAULT_NODE_PORTS,
        }
    }
}

/// What one write took, so it can be given back if the write fails, and what it let go, to be
/// freed once the write is stored.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Change {
    /// Newly taken ClusterIP.
    pub took_ip: Option<Ipv4Addr>,
    /// Newly taken NodePorts.
    pub took_ports: Vec<u16>,
    /// ClusterIP the Service no longer holds.
    pub freed_ip: Option<Ipv4Addr>,
    /// NodePorts the Service no longer holds.
    pub freed_ports: Vec<u16>,
}

/// Which Service holds which ClusterIP and NodePort.
#[derive(Debug, Clone)]
pub struct Allocations {
    ranges: ServiceRanges,
    ips: BTreeMap<Ipv4Addr, String>,
    ports: BTreeMap<u16, String>,
    next_ip: u32,
    next_port: u16,
}

fn is_set(v: &Value) -> bool {
    v.as_str().is_some_and(|s| !s.is_empty())
}

fn wants_node_ports(spec: &Value) -> bool {
    matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"))
}

fn wants_cluster_ip(spec: &Value) -> bool {
    spec["type"] != "ExternalName" && spec["clusterIP"] != "None"
}

impl Allocations {
    /// Nothing allocated yet.
    pub fn new(ranges: ServiceRanges) -> Allocations {
        let next_port = *ranges.node_ports.start();
        Allocations {
            ranges,
            ips: BTreeMap::new(),
            ports: BTreeMap::new(),
            next_ip: 1,
            next_port,
        }
    }

    /// The ranges.
    pub fn ranges(&self) -> &ServiceRanges {
        &self.ranges
    }

    /// Records what a stored Service holds (at start-up). Entries outside the ranges (the range
    /// changed) are still recorded, so nothing is handed out twice.
    pub fn load(&mut self, owner: &str, spec: &Value) {
        if let Some(ip) = spec["clusterIP"]
            .as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        {
            self.ips.insert(ip, owner.to_string());
        }
        for p in spec["ports"].as_array().into_iter().flatten() {
            if let Some(np) = p["nodePort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
            {
                self.ports.insert(np, owner.to_string());
            }
        }
    }

    /// The Service (`namespace/name`) holding `ip`.
    #[cfg(test)]
    pub fn owner_of(&self, ip: Ipv4Addr) -> Option<&str> {
        self.ips.get(&ip).map(String::as_str)
    }

    /// Frees everything `owner` holds.
    pub fn release_owner(&mut self, owner: &str) {
        self.ips.retain(|_, o| o != owner);
        self.ports.retain(|_, o| o != owner);
    }

    /// Gives back what a failed write took.
    pub fn undo(&mut self, change: &Change) {
        if let Some(ip) = change.took_ip {
            self.ips.remove(&ip);
        }
        for p in &change.took_ports {
            self.ports.remove(p);
        }
    }

    /// Frees what a stored write let go.
    pub fn commit(&mut self, owner: &str, change: &Change) {
        if let Some(ip) = change.freed_ip
            && self.ips.get(&ip).is_some_and(|o| o == owner)
        {
            self.ips.remove(&ip);
        }
        for p in &change.freed_ports {
            if self.ports.get(p).is_some_and(|o| o == owner) {
                self.ports.remove(p);
            }
        }
    }

    /// Fills in `spec`'s ClusterIP and NodePorts for Service `owner` (`namespace/name`), keeping
    /// what `old` (the stored spec, on update) held. Returns what changed, or the causes of a
    /// clash; on error nothing is taken.
    pub fn assign(
        &mut self,
        owner: &str,
        spec: &mut Value,
        old: Option<&Value>,
    ) -> Result<Change, Vec<Cause>> {
        let mut change = Change::default();
        let mut causes = Vec::new();
        if !spec.is_object() {
            return Ok(change);
        }
        // An update that leaves the address out keeps the old one, as kube-apiserver does.
        if let Some(old) = old
            && !is_set(&spec["clusterIP"])
            && is_set(&old["clusterIP"])
            && wants_cluster_ip(old)
            && spec["type"] != "ExternalName"
        {
            spec["clusterIP"] = old["clusterIP"].clone();
        }
        let old_ip = old
            .and_then(|o| o["clusterIP"].as_str())
            .and_then(|s| s.parse::<Ipv4Addr>().ok());
        if wants_cluster_ip(spec) {
            match spec["clusterIP"].as_str().filter(|s| !s.is_empty()) {
                Some(wanted) => {
                    if let Ok(ip) = wanted.parse::<Ipv4Addr>() {
                        let mine = old_ip == Some(ip);
                        if !mine {
                            if !self.ranges.cluster_ips.holds(ip) {
                                causes.push(Cause::invalid(
                                    "spec.clusterIP",
                                    wanted,
                                    format!(
                                        "provided IP is not in the valid range. The range of valid IPs is {}",
                                        self.ranges.cluster_ips
                                    ),
                                ));
                            } else if self.ips.contains_key(&ip) {
                                causes.push(Cause::invalid(
                                    "spec.clusterIP",
                                    wanted,
                                    "provided IP is already allocated",
                                ));
                            } else {
                                change.took_ip = Some(ip);
                            }
                        }
                    }
                    // Not an IPv4 address: validation reports it.
                }
                None => match self.free_ip() {
                    Some(ip) => {
                        change.took_ip = Some(ip);
                        spec["clusterIP"] = json!(ip.to_string());
                    }
                    None => causes.push(Cause::invalid(
                        "spec.clusterIP",
                        "",
                        format!(
                            "failed to allocate a serviceIP: range is full ({})",
                            self.ranges.cluster_ips
                        ),
                    )),
                },
            }
        }
        let now_ip = spec["clusterIP"]
            .as_str()
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
            .filter(|_| wants_cluster_ip(spec));
        if old_ip.is_some() && old_ip != now_ip {
            change.freed_ip = old_ip;
        }
        if let Some(ip) = spec["clusterIP"]
            .as_str()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
        {
            spec["clusterIPs"] = json!([ip]);
        }
        if wants_cluster_ip(spec) {
            spec["ipFamilies"] = json!(["IPv4"]);
            if spec["ipFamilyPolicy"].is_null() {
                spec["ipFamilyPolicy"] = json!("SingleStack");
            }
        }

        // NodePorts.
        let old_ports: Vec<(Value, Value, u16)> = old
            .filter(|o| wants_node_ports(o))
            .and_then(|o| o["ports"].as_array())
            .into_iter()
            .flatten()
            .filter_map(|p| {
                let np = p["nodePort"]
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| *n > 0)?;
                Some((p["port"].clone(), p["protocol"].clone(), np))
            })
            .collect();
        let mut kept = Vec::new();
        let want_np = wants_node_ports(spec);
        let count = spec["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let p = &mut spec["ports"][i];
            if !want_np {
                // Turning into a ClusterIP Service drops the NodePorts it held.
                let np = p.get("nodePort").and_then(Value::as_u64);
                if np == Some(0) || old_ports.iter().any(|(_, _, o)| Some(*o as u64) == np) {
                    p.as_object_mut().expect("object").remove("nodePort");
                }
                continue;
            }
            let field = format!("spec.ports[{i}].nodePort");
            match p["nodePort"].as_u64().filter(|n| *n > 0) {
                Some(np) => {
                    let Ok(np) = u16::try_from(np) else {
                        causes.push(Cause::invalid(
                            field,
                            np,
                            "must be between 1 and 65535, inclusive",
                        ));
                        continue;
                    };
                    let held = old_ports.iter().any(|(_, _, o)| *o == np);
                    if held {
                        kept.push(np);
                        continue;
                    }
                    if !self.ranges.node_ports.contains(&np) {
                        causes.push(Cause::invalid(
                            field,
                            np,
                            format!(
                                "provided port is not in the valid range. The range of valid ports is {}-{}",
                                self.ranges.node_ports.start(),
                                self.ranges.node_ports.end()
                            ),
                        ));
                    } else if self.ports.contains_key(&np) || change.took_ports.contains(&np) {
                        causes.push(Cause::invalid(
                            field,
                            np,
                            "provided port is already allocated",
                        ));
                    } else {
                        change.took_ports.push(np);
                    }
                }
                None => {
                    // An update keeps the NodePort of the same port and protocol.
                    let same = old_ports.iter().find(|(port, proto, np)| {
                        *port == p["port"] && *proto == p["protocol"] && !kept.contains(np)
                    });
                    if let Some((_, _, np)) = same {
                        kept.push(*np);
                        p["nodePort"] = json!(np);
                        continue;
                    }
                    match self.free_port(&change.took_ports) {
                        Some(np) => {
                            change.took_ports.push(np);
                            p["nodePort"] = json!(np);
                        }
                        None => causes.push(Cause::invalid(
                            field,
                            0,
                            "failed to allocate a nodePort: range is full",
                        )),
                    }
                }
            }
        }
        change.freed_ports = old_ports
            .iter()
            .map(|(_, _, np)| *np)
            .filter(|np| !kept.contains(np))
            .collect();
        if !causes.is_empty() {
            return Err(causes);
        }
        if let Some(ip) = change.took_ip {
            self.ips.insert(ip, owner.to_string());
            self.next_ip = u32::from(ip) - u32::from(self.ranges.cluster_ips.network) + 1;
        }
        for p in &change.took_ports {
            self.ports.insert(*p, owner.to_string());
        }
        Ok(change)
    }

    /// The next free address after the last one handed out (wrapping), so a freed address is
    /// not reused at once.
    fn free_ip(&self) -> Option<Ipv4Addr> {
        let range = self.ranges.cluster_ips;
        let base = u32::from(range.network);
        let usable = range.size() - 2;
        (0..usable)
            .map(|i| base + 1 + (self.next_ip.saturating_sub(1) + i) % usable)
            .map(Ipv4Addr::from)
            .find(|ip| !self.ips.contains_key(ip))
    }

    fn free_port(&self, also_taken: &[u16]) -> Option<u16> {
        let (start, end) = (
            *self.ranges.node_ports.start() as u32,
            *self.ranges.node_ports.end() as u32,
        );
        let len = end - start + 1;
        let from = (self.next_port as u32).clamp(start, end) - start;
        (0..len)
            .map(|i| (start + (from + i) % len) as u16)
            .find(|p| !self.ports.contains_key(p) && !also_taken.contains(p))
    }

    /// Remembers where NodePort allocation continues.
    fn advance_port(&mut self, change: &Change) {
        if let Some(last) = change.took_ports.last() {
            self.next_port = last.saturating_add(1);
        }
    }
}

/// The allocations shared by every writer of Services.
#[derive(Debug)]
pub struct ServiceAddresses {
    ranges: ServiceRanges,
    // A tokio mutex: held across the store list that rebuilds it, and across the write that
    // makes an allocation durable (so two creates cannot race for one address).
    state: tokio::sync::Mutex<Option<Allocations>>,
}

impl ServiceAddresses {
    /// Allocations over `ranges`, loaded lazily from the store.
    pub fn new(ranges: ServiceRanges) -> ServiceAddresses {
        ServiceAddresses {
            ranges,
            state: tokio::sync::Mutex::new(None),
        }
    }

    /// The ranges.
    pub fn ranges(&self) -> &ServiceRanges {
        &self.ranges
    }

    /// Locks the allocations, loading them with `load` (the stored Services as
    /// `(namespace/name, spec)`) the first time.
    pub async fn lock<F, Fut>(&self, load: F) -> Result<ServiceLock<'_>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<(String, Value)>, String>>,
    {
        let mut guard = self.state.lock().await;
        if guard.is_none() {
            let mut a = Allocations::new(self.ranges.clone());
            for (owner, spec) in load().await? {
                a.load(&owner, &spec);
            }
            *guard = Some(a);
        }
        Ok(ServiceLock { guard })
    }
}

/// Exclusive access to the allocations.
#[derive(Debug)]
pub struct ServiceLock<'a> {
    guard: tokio::sync::MutexGuard<'a, Option<Allocations>>,
}

impl ServiceLock<'_> {
    /// The allocations.
    pub fn get(&mut self) -> &mut Allocations {
        self.guard.as_mut().expect("loaded when locked")
    }

    /// [`Allocations::assign`], then remembers where allocation continues.
    pub fn assign(
        &mut self,
        owner: &str,
        spec: &mut Value,
        old: Option<&Value>,
    ) -> Result<Change, Vec<Cause>> {
        let a = self.get();
        let change = a.assign(owner, spec, old)?;
        a.advance_port(&change);
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(cidr: &str, ports: RangeInclusive<u16>) -> ServiceRanges {
        ServiceRanges {
            cluster_ips: cidr.parse().unwrap(),
            node_ports: ports,
        }
    }

    fn spec(v: Value) -> Value {
        v
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(
            "127.2.3.4/16".parse::<Ipv4Cidr>().unwrap().to_string(),
            "127.2.0.0/16"
        );
        assert!("127.2.0.0".parse::<Ipv4Cidr>().is_err());
        assert_eq!(parse_port_range("30000-32767").unwrap(), 30000..=32767);
        assert!(parse_port_range("5-4").is_err());
        assert!(parse_port_range("x-4").is_err());
    }

    #[test]
    fn cluster_ips_are_allocated_unique_honoured_and_released() {
        let mut a = Allocations::new(ranges("127.2.0.0/29", 30000..=30001));
        let mut s1 = spec(json!({"type": "ClusterIP", "ports": [{"port": 80, "protocol": "TCP"}]}));
        a.assign("ns/a", &mut s1, None).unwrap();
        assert_eq!(s1["clusterIP"], "127.2.0.1");
        assert_eq!(s1["clusterIPs"], json!(["127.2.0.1"]));
        let mut fixed = spec(json!({"type": "ClusterIP", "clusterIP": "127.2.0.5"}));
        assert_eq!(
            a.assign("ns/b", &mut fixed, None).unwrap().took_ip,
            Some("127.2.0.5".parse().unwrap())
        );
        let mut clash = spec(json!({"type": "ClusterIP", "clusterIP": "127.2.0.5"}));
        let causes = a.assign("ns/c", &mut clash, None).unwrap_err();
        assert_eq!(causes[0].field, "spec.clusterIP");
        assert!(
            causes[0].message.contains("already allocated"),
            "{causes:?}"
        );
        let mut outside = spec(json!({"type": "ClusterIP", "clusterIP": "10.0.0.1"}));
        let causes = a.assign("ns/c", &mut outside, None).unwrap_err();
        assert!(causes[0].message.contains("127.2.0.0/29"), "{causes:?}");
        // Headless and ExternalName take nothing.
        let mut headless = spec(json!({"type": "ClusterIP", "clusterIP": "None"}));
        assert_eq!(
            a.assign("ns/h", &mut headless, None).unwrap(),
            Change::default()
        );
        assert_eq!(headless["clusterIPs"], json!(["None"]));
        let mut ext = spec(json!({"type": "ExternalName", "externalName": "x.example"}));
        a.assign("ns/e", &mut ext, None).unwrap();
        assert!(ext["clusterIP"].is_null());
        // The next address follows the last one, skipping taken ones; a /29 has 6 usable.
        let mut got = Vec::new();
        for n in 0..4 {
            let mut s = spec(json!({"type": "ClusterIP"}));
            a.assign(&format!("ns/x{n}"), &mut s, None).unwrap();
            got.push(s["clusterIP"].as_str().unwrap().to_string());
        }
        assert_eq!(got, ["127.2.0.6", "127.2.0.2", "127.2.0.3", "127.2.0.4"]);
        let mut full = spec(json!({"type": "ClusterIP"}));
        assert!(
            a.assign("ns/full", &mut full, None).is_err(),
            "range is full"
        );
        a.release_owner("ns/a");
        a.assign("ns/full", &mut full, None).unwrap();
        assert_eq!(full["clusterIP"], "127.2.0.1");
    }

    #[test]
    fn node_ports_are_allocated_checked_kept_on_update_and_freed() {
        let mut a = Allocations::new(ranges("127.2.0.0/24", 30000..=30002));
        let mut s = spec(json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 80, "protocol": "TCP"},
            {"name": "b", "port": 81, "protocol": "TCP", "nodePort": 30002}]}));
        let change = a.assign("ns/a", &mut s, None).unwrap();
        assert_eq!(change.took_ports, [30000, 30002]);
        assert_eq!(s["ports"][0]["nodePort"], 30000);
        let mut clash = spec(
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30002}]}),
        );
        let causes = a.assign("ns/b", &mut clash, None).unwrap_err();
        assert_eq!(causes[0].field, "spec.ports[0].nodePort");
        assert!(causes[0].message.contains("already allocated"));
        let mut outside = spec(
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 40000}]}),
        );
        let causes = a.assign("ns/b", &mut outside, None).unwrap_err();
        assert!(causes[0].message.contains("30000-30002"), "{causes:?}");
        // Same in a single write: two ports asking for one NodePort.
        let mut twice = spec(json!({"type": "NodePort", "ports": [
            {"name": "a", "port": 1, "protocol": "TCP", "nodePort": 30001},
            {"name": "b", "port": 2, "protocol": "TCP", "nodePort": 30001}]}));
        assert_eq!(
            a.assign("ns/c", &mut twice, None).unwrap_err()[0].field,
            "spec.ports[1].nodePort"
        );

        // An update without nodePorts keeps them; turning into ClusterIP frees them.
        let old = s.clone();
        let mut again = spec(
            json!({"type": "NodePort", "clusterIP": old["clusterIP"], "ports": [
            {"name": "a", "port": 80, "protocol": "TCP"}, {"name": "b", "port": 81, "protocol": "TCP"}]}),
        );
        let change = a.assign("ns/a", &mut again, Some(&old)).unwrap();
        assert_eq!(change, Change::default());
        assert_eq!(
            (
                again["ports"][0]["nodePort"].clone(),
                again["ports"][1]["nodePort"].clone()
            ),
            (json!(30000), json!(30002))
        );
        let mut cip = spec(
            json!({"type": "ClusterIP", "ports": [{"name": "a", "port": 80, "protocol": "TCP"}]}),
        );
        let change = a.assign("ns/a", &mut cip, Some(&again)).unwrap();
        assert_eq!(cip["clusterIP"], old["clusterIP"], "the address is kept");
        assert_eq!(change.freed_ports, [30000, 30002]);
        a.commit("ns/a", &change);
        let mut s2 = spec(
            json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30002}]}),
        );
        a.assign("ns/d", &mut s2, None).unwrap();
    }

    #[test]
    fn a_failed_write_is_undone_and_load_rebuilds_the_state() {
        let mut a = Allocations::new(ranges("127.2.0.0/24", 30000..=30002));
        let mut s = spec(json!({"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}));
        let change = a.assign("ns/a", &mut s, None).unwrap();
        a.undo(&change);
        let mut same = spec(
            json!({"type": "NodePort", "clusterIP": s["clusterIP"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": s["ports"][0]["nodePort"]}]}),
        );
        a.assign("ns/b", &mut same, None).unwrap();

        let mut rebuilt = Allocations::new(ranges("127.2.0.0/24", 30000..=30002));
        rebuilt.load("ns/b", &same);
        let mut clash = same.clone();
        let causes = rebuilt.assign("ns/c", &mut clash, None).unwrap_err();
        assert_eq!(causes.len(), 2, "{causes:?}");
    }
}
