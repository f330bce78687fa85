//! What an object counts against a ResourceQuota, as Kubernetes' quota evaluators
//! (`pkg/quota/v1/evaluator/core`) count it. Shared by the ResourceQuota admission step, which
//! charges a new object's usage, and the resource-quota controller, which adds up every
//! object's.
//!
//! - Every namespaced kind counts 1 of `count/<resource>[.<group>]`.
//! - A pod not yet finished (and not past its deletion grace period) counts `pods` and its
//!   requests and limits: `requests.cpu` (and its alias `cpu`), `limits.cpu`, the same for
//!   `memory` and `ephemeral-storage`, `requests.hugepages-*` and extended resources
//!   (`requests.example.com/gpu`), with init containers counted as the scheduler does.
//! - A Service counts `services`, `services.loadbalancers`, and `services.nodeports` (its
//!   ports, for NodePort and LoadBalancer types).
//! - A claim counts `persistentvolumeclaims` and `requests.storage`, also per StorageClass
//!   (`<class>.storageclass.storage.k8s.io/requests.storage`).
//! - ConfigMaps, Secrets and ResourceQuotas count `configmaps`, `secrets`, `resourcequotas`.
//!
//! Scopes (`Terminating`, `NotTerminating`, `BestEffort`, `NotBestEffort`, `PriorityClass`,
//! `CrossNamespacePodAffinity`) select pods; a quota with any scope matches no other kind.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::resources::ResourceInfo;
use super::strategy::qos_class;
use crate::scheduler::quantity;

/// An exact amount of a quota resource, in thousandths, and whether it was written with a
/// binary suffix (`Mi`), so that sums print as the user wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Amount {
    milli: i128,
    binary: bool,
}

impl Amount {
    /// A whole count (of objects).
    pub fn count(n: i64) -> Amount {
        Amount {
            milli: i128::from(n) * 1000,
            binary: false,
        }
    }

    /// Reads a quantity (a string, or a bare number).
    pub fn parse(v: &Value) -> Option<Amount> {
        let q = quantity::from_json(v)?;
        Some(Amount {
            milli: i128::from(q.milli_value()),
            binary: v.as_str().is_some_and(|s| s.trim_end().ends_with('i')),
        })
    }

    /// Whether the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.milli == 0
    }

    /// `self - other`, never below zero.
    pub fn minus(self, other: Amount) -> Amount {
        Amount {
            milli: (self.milli - other.milli).max(0),
            binary: self.binary,
        }
    }

    fn plus(self, other: Amount) -> Amount {
        Amount {
            milli: self.milli + other.milli,
            binary: (self.binary && self.milli != 0) || (other.binary && other.milli != 0),
        }
    }

    /// The canonical quantity string: `500m`, `2`, `1k`, `700Mi`.
    pub fn render(&self) -> String {
        if self.milli % 1000 != 0 {
            return format!("{}m", self.milli);
        }
        let units = self.milli / 1000;
        if units == 0 {
            return "0".into();
        }
        if self.binary {
            for (shift, suffix) in [
                (60, "Ei"),
                (50, "Pi"),
                (40, "Ti"),
                (30, "Gi"),
                (20, "Mi"),
                (10, "Ki"),
            ] {
                let unit = 1i128 << shift;
                if units % unit == 0 {
                    return format!("{}{suffix}", units / unit);
                }
            }
        }
        for (exp, suffix) in [
            (18, "E"),
            (15, "P"),
            (12, "T"),
            (9, "G"),
            (6, "M"),
            (3, "k"),
        ] {
            let unit = 10i128.pow(exp);
            if units % unit == 0 {
                return format!("{}{suffix}", units / unit);
            }
        }
        units.to_string()
    }
}

impl PartialOrd for Amount {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.milli.cmp(&other.milli))
    }
}

/// Amounts by resource name (`corev1.ResourceList`).
pub type ResourceList = BTreeMap<String, Amount>;

/// Reads a resource list (`spec.hard`, `status.used`), skipping values that are not quantities.
pub fn list_from_json(v: &Value) -> ResourceList {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), Amount::parse(v)?)))
        .collect()
}

/// Writes a resource list as JSON.
pub fn list_to_json(list: &ResourceList) -> Value {
    Value::Object(
        list.iter()
            .map(|(k, v)| (k.clone(), json!(v.render())))
            .collect::<Map<_, _>>(),
    )
}

/// `a + b`, name by name.
pub fn add(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let sum = out.get(k).copied().unwrap_or_default().plus(*v);
        out.insert(k.clone(), sum);
    }
    out
}

/// `a - b`, name by name, never below zero, without the names that come to zero.
pub fn subtract_to_positive(a: &ResourceList, b: &ResourceList) -> ResourceList {
    a.iter()
        .map(|(k, v)| (k.clone(), v.minus(b.get(k).copied().unwrap_or_default())))
        .filter(|(_, left)| !left.is_zero())
        .collect()
}

/// `name=amount` pairs, sorted and comma-joined, as kube-apiserver's quota messages print them.
pub fn pretty(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={}", v.render()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The name a kind is counted under: `count/pods`, `count/deployments.apps`.
pub fn count_name(res: &ResourceInfo) -> String {
    if res.group.is_empty() {
        format!("count/{}", res.plural)
    } else {
        format!("count/{}.{}", res.plural, res.group)
    }
}

/// Whether the kind is counted at all (Kubernetes' quota ignores Events).
pub fn is_counted(res: &ResourceInfo) -> bool {
    res.namespaced && !(res.group.is_empty() && res.kind == "Event")
}

const POD_RESOURCES: &[&str] = &[
    "pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// The domain of per-StorageClass claim resources.
const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Whether a resource name is an extended resource (`example.com/gpu`): in a domain that is
/// not Kubernetes' own, and not a quota's `requests.` name for one.
pub fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Whether `name` is a quota resource that objects of `res` count towards.
pub fn tracks(res: &ResourceInfo, name: &str) -> bool {
    if !is_counted(res) {
        return false;
    }
    if name == count_name(res) {
        return true;
    }
    if !res.group.is_empty() {
        return false;
    }
    match res.kind {
        "Pod" => {
            POD_RESOURCES.contains(&name)
                || name.starts_with("requests.hugepages-")
                || name.strip_prefix("requests.").is_some_and(is_extended)
        }
        "Service" => matches!(
            name,
            "services" | "services.nodeports" | "services.loadbalancers"
        ),
        "PersistentVolumeClaim" => {
            matches!(name, "persistentvolumeclaims" | "requests.storage")
                || name.split_once(STORAGE_CLASS_SUFFIX).is_some_and(|(_, r)| {
                    matches!(r, "persistentvolumeclaims" | "requests.storage")
                })
        }
        "ConfigMap" => name == "configmaps",
        "Secret" => name == "secrets",
        "ResourceQuota" => name == "resourcequotas",
        _ => false,
    }
}

/// Whether a pod is still counted: not finished, and not past its deletion grace period
/// (Kubernetes' `QuotaV1Pod`).
pub fn pod_is_counted(pod: &Value, now: DateTime<Utc>) -> bool {
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return false;
    }
    let meta = &pod["metadata"];
    if let (Some(at), Some(grace)) = (
        meta["deletionTimestamp"]
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
        meta["deletionGracePeriodSeconds"].as_i64(),
    ) && now > at.with_timezone(&Utc) + chrono::TimeDelta::seconds(grace)
    {
        return false;
    }
    true
}

fn container_list(c: &Value, which: &str) -> ResourceList {
    list_from_json(&c["resources"][which])
}

fn max_of(a: &ResourceList, b: &ResourceList) -> ResourceList {
    let mut out = a.clone();
    for (k, v) in b {
        let e = out.entry(k.clone()).or_default();
        if v.milli > e.milli {
            *e = *v;
        }
    }
    out
}

/// A pod's effective requests (or limits): its containers' sum, or more if an init container
/// (with the sidecars started before it) asks for more, plus the pod's overhead — the
/// scheduler's sum (`resourcehelper.PodRequests`).
pub fn pod_total(spec: &Value, which: &str) -> ResourceList {
    let mut total = ResourceList::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        total = add(&total, &container_list(c, which));
    }
    let mut sidecars = ResourceList::new();
    let mut init_peak = ResourceList::new();
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let own = container_list(c, which);
        let during = if c["restartPolicy"] == "Always" {
            total = add(&total, &own);
            sidecars = add(&sidecars, &own);
            sidecars.clone()
        } else {
            add(&own, &sidecars)
        };
        init_peak = max_of(&init_peak, &during);
    }
    let total = max_of(&total, &init_peak);
    add(&total, &list_from_json(&spec["overhead"]))
}

/// A pod's compute usage from its requests and limits (`podComputeUsageHelper`).
fn pod_compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), Amount::count(1));
    for (name, amount) in requests {
        match name.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                out.insert(name.clone(), *amount);
                out.insert(format!("requests.{name}"), *amount);
            }
            n if n.starts_with("hugepages-") || is_extended(n) => {
                out.insert(format!("requests.{name}"), *amount);
            }
            _ => {}
        }
    }
    for (name, amount) in limits {
        if matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
            out.insert(format!("limits.{name}"), *amount);
        }
    }
    out
}

/// The quota usage of an object of `res` at `now`.
pub fn usage(res: &ResourceInfo, obj: &Value, now: DateTime<Utc>) -> ResourceList {
    let mut out = ResourceList::new();
    if !is_counted(res) {
        return out;
    }
    out.insert(count_name(res), Amount::count(1));
    if !res.group.is_empty() {
        return out;
    }
    let spec = &obj["spec"];
    match res.kind {
        "Pod" if pod_is_counted(obj, now) => {
            let requests = pod_total(spec, "requests");
            let limits = pod_total(spec, "limits");
            out.extend(pod_compute_usage(&requests, &limits));
        }
        "Service" => {
            out.insert("services".into(), Amount::count(1));
            let ports = spec["ports"].as_array().map_or(&[][..], Vec::as_slice);
            let node_ports = match spec["type"].as_str() {
                Some("NodePort") => ports.len(),
                Some("LoadBalancer") if spec["allocateLoadBalancerNodePorts"] == false => ports
                    .iter()
                    .filter(|p| p["nodePort"].as_i64().unwrap_or(0) != 0)
                    .count(),
                Some("LoadBalancer") => ports.len(),
                _ => 0,
            };
            if node_ports > 0 {
                out.insert(
                    "services.nodeports".into(),
                    Amount::count(node_ports as i64),
                );
            }
            if spec["type"] == "LoadBalancer" {
                out.insert("services.loadbalancers".into(), Amount::count(1));
            }
        }
        "PersistentVolumeClaim" => {
            out.insert("persistentvolumeclaims".into(), Amount::count(1));
            let requested = Amount::parse(&spec["resources"]["requests"]["storage"]);
            let allocated = Amount::parse(&obj["status"]["allocatedResources"]["storage"]);
            let storage = match (requested, allocated) {
                (Some(r), Some(a)) if a.milli > r.milli => Some(a),
                (Some(r), _) => Some(r),
                (None, a) => a,
            };
            let class = spec["storageClassName"].as_str().or_else(|| {
                obj["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].as_str()
            });
            if let Some(class) = class.filter(|c| !c.is_empty()) {
                out.insert(
                    format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
                    Amount::count(1),
                );
                if let Some(s) = storage {
                    out.insert(format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"), s);
                }
            }
            if let Some(s) = storage {
                out.insert("requests.storage".into(), s);
            }
        }
        "ConfigMap" => {
            out.insert("configmaps".into(), Amount::count(1));
        }
        "Secret" => {
            out.insert("secrets".into(), Amount::count(1));
        }
        "ResourceQuota" => {
            out.insert("resourcequotas".into(), Amount::count(1));
        }
        _ => {}
    }
    out
}

/// One scope a quota is restricted to: a `spec.scopes` entry (operator `Exists`) or a
/// `spec.scopeSelector` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeSelector {
    /// `scopeName`.
    pub scope: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values of `In` and `NotIn`.
    pub values: Vec<String>,
}

/// A quota's scopes, from `spec.scopes` and `spec.scopeSelector`.
pub fn scope_selectors(quota: &Value) -> Vec<ScopeSelector> {
    let spec = &quota["spec"];
    let mut out: Vec<ScopeSelector> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| ScopeSelector {
            scope: s.to_string(),
            operator: "Exists".into(),
            values: Vec::new(),
        })
        .collect();
    for e in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(ScopeSelector {
            scope: e["scopeName"].as_str().unwrap_or_default().to_string(),
            operator: e["operator"].as_str().unwrap_or_default().to_string(),
            values: e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        });
    }
    out
}

/// Whether a pod's affinity terms reach other namespaces (`namespaces` or
/// `namespaceSelector`).
fn uses_cross_namespace_affinity(spec: &Value) -> bool {
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let a = &spec["affinity"][kind];
        let required = a["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten();
        let preferred = a["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| &w["podAffinityTerm"]);
        required.chain(preferred).any(|t| {
            t["namespaces"].as_array().is_some_and(|n| !n.is_empty())
                || !t["namespaceSelector"].is_null()
        })
    })
}

/// Whether a pod falls in one scope (`podMatchesScopeFunc`).
fn pod_matches(sel: &ScopeSelector, pod: &Value) -> bool {
    let spec = &pod["spec"];
    let best_effort = || qos_class(spec) == "BestEffort";
    let terminating = || {
        spec["activeDeadlineSeconds"]
            .as_i64()
            .is_some_and(|d| d >= 0)
    };
    match sel.scope.as_str() {
        "Terminating" => terminating(),
        "NotTerminating" => !terminating(),
        "BestEffort" => best_effort(),
        "NotBestEffort" => !best_effort(),
        "CrossNamespacePodAffinity" => uses_cross_namespace_affinity(spec),
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().filter(|c| !c.is_empty());
            match sel.operator.as_str() {
                "In" => class.is_some_and(|c| sel.values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !sel.values.iter().any(|v| v == c)),
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                _ => false,
            }
        }
        _ => false,
    }
}

/// The names of `hard` that an object of `res` counts towards, if the quota applies to the
/// object at all (its scopes select it); empty when it does not.
pub fn matching_resources(
    hard: &ResourceList,
    scopes: &[ScopeSelector],
    res: &ResourceInfo,
    obj: &Value,
) -> Vec<String> {
    let names: Vec<String> = hard.keys().filter(|n| tracks(res, n)).cloned().collect();
    if names.is_empty() {
        return names;
    }
    let is_pod = res.group.is_empty() && res.kind == "Pod";
    if scopes.iter().all(|s| is_pod && pod_matches(s, obj)) {
        names
    } else {
        Vec::new()
    }
}

/// The compute resources a quota on them makes every container state
/// (`podEvaluator.Constraints`): `must specify limits.cpu for: app; requests.memory for: app`.
pub fn pod_constraints(required: &[String], pod: &Value) -> Result<(), String> {
    const VALIDATED: &[&str] = &[
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
        "cpu",
        "memory",
    ];
    let required: Vec<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| VALIDATED.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let spec = &pod["spec"];
    for c in ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec[l].as_array())
        .flatten()
    {
        let has = pod_compute_usage(&container_list(c, "requests"), &container_list(c, "limits"));
        for r in &required {
            if !has.contains_key(*r) {
                let name = c["name"].as_str().unwrap_or_default().to_string();
                let names = missing.entry(r).or_default();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .into_iter()
        .map(|(r, mut names)| {
            names.sort();
            format!("{r} for: {}", names.join(","))
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources;

    fn res(group: &str, plural: &str) -> &'static ResourceInfo {
        resources::find(group, "v1", plural).unwrap()
    }

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Amount::parse(&json!(v)).unwrap()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        "2026-12-07T20:00:00Z".parse().unwrap()
    }

    #[test]
    fn sums_print_in_the_form_they_were_written() {
        let a = list(&[("memory", "600Mi"), ("cpu", "500m"), ("pods", "999")]);
        let b = list(&[("memory", "424Mi"), ("cpu", "500m"), ("pods", "1")]);
        let sum = add(&a, &b);
        assert_eq!(
            list_to_json(&sum),
            json!({"memory": "1Gi", "cpu": "1", "pods": "1k"})
        );
        assert_eq!(Amount::parse(&json!("1.5")).unwrap().render(), "1500m");
        assert_eq!(Amount::parse(&json!("1500")).unwrap().render(), "1500");
        assert_eq!(Amount::parse(&json!("1G")).unwrap().render(), "1G");
        assert_eq!(Amount::parse(&json!(0)).unwrap().render(), "0");
        let left = subtract_to_positive(&b, &a);
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            pretty(&subtract_to_positive(&a, &b)),
            "memory=176Mi,pods=998"
        );
    }

    #[test]
    fn a_pod_counts_its_requests_limits_and_itself_and_nothing_once_finished() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"},
                    "limits": {"cpu": "200m", "example.com/gpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "300m", "example.com/gpu": "1"}}}],
            "initContainers": [
                {"name": "init", "resources": {"requests": {"cpu": "1", "memory": "32Mi"}}}]},
            "status": {"phase": "Running"}});
        let u = usage(res("", "pods"), &pod, now());
        assert_eq!(
            list_to_json(&u),
            json!({"count/pods": "1", "pods": "1", "cpu": "1", "requests.cpu": "1",
                "memory": "64Mi", "requests.memory": "64Mi", "limits.cpu": "200m",
                "requests.example.com/gpu": "1"})
        );
        let mut done = pod.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert_eq!(
            list_to_json(&usage(res("", "pods"), &done, now())),
            json!({"count/pods": "1"})
        );
        let mut gone = pod;
        gone["metadata"]["deletionTimestamp"] = json!("2026-12-07T19:59:00Z");
        gone["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        assert_eq!(usage(res("", "pods"), &gone, now()).len(), 1);
    }

    #[test]
    fn services_and_claims_count_ports_balancers_and_storage_per_class() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            list_to_json(&usage(res("", "services"), &svc, now())),
            json!({"count/services": "1", "services": "1", "services.nodeports": "2"})
        );
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        let u = usage(res("", "services"), &lb, now());
        assert_eq!(u["services.loadbalancers"], Amount::count(1));
        assert_eq!(u["services.nodeports"], Amount::count(1));
        let pvc = json!({"spec": {"storageClassName": "gold",
            "resources": {"requests": {"storage": "2Gi"}}}});
        assert_eq!(
            list_to_json(&usage(res("", "persistentvolumeclaims"), &pvc, now())),
            json!({"count/persistentvolumeclaims": "1", "persistentvolumeclaims": "1",
                "requests.storage": "2Gi",
                "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1",
                "gold.storageclass.storage.k8s.io/requests.storage": "2Gi"})
        );
        assert_eq!(
            list_to_json(&usage(res("apps", "deployments"), &json!({}), now())),
            json!({"count/deployments.apps": "1"})
        );
        assert!(usage(res("", "events"), &json!({}), now()).is_empty());
    }

    #[test]
    fn only_the_names_a_kind_counts_are_tracked_for_it() {
        let pods = res("", "pods");
        assert!(tracks(pods, "requests.cpu"));
        assert!(tracks(pods, "requests.example.com/gpu"));
        assert!(!tracks(pods, "requests.storage"));
        assert!(!tracks(pods, "services"));
        assert!(tracks(
            res("", "persistentvolumeclaims"),
            "requests.storage"
        ));
        assert!(tracks(
            res("", "persistentvolumeclaims"),
            "gold.storageclass.storage.k8s.io/requests.storage"
        ));
        assert!(tracks(res("apps", "deployments"), "count/deployments.apps"));
        assert!(!tracks(res("apps", "deployments"), "count/deployments"));
    }

    #[test]
    fn scopes_select_pods_and_no_other_kind() {
        let hard = list(&[("pods", "2"), ("count/configmaps", "1")]);
        let scope = |name: &str, op: &str, values: &[&str]| ScopeSelector {
            scope: name.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        };
        let pods = res("", "pods");
        let best_effort = json!({"spec": {"containers": [{"name": "a"}]}});
        let burstable = json!({"spec": {"priorityClassName": "high", "activeDeadlineSeconds": 5,
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}});
        let be = [scope("BestEffort", "Exists", &[])];
        assert_eq!(matching_resources(&hard, &be, pods, &best_effort), ["pods"]);
        assert!(matching_resources(&hard, &be, pods, &burstable).is_empty());
        let high = [scope("PriorityClass", "In", &["high"])];
        assert_eq!(matching_resources(&hard, &high, pods, &burstable), ["pods"]);
        assert!(matching_resources(&hard, &high, pods, &best_effort).is_empty());
        let not_high = [scope("PriorityClass", "NotIn", &["high"])];
        assert_eq!(
            matching_resources(&hard, &not_high, pods, &best_effort),
            ["pods"]
        );
        let terminating = [scope("Terminating", "Exists", &[])];
        assert_eq!(
            matching_resources(&hard, &terminating, pods, &burstable),
            ["pods"]
        );
        let cms = res("", "configmaps");
        assert_eq!(
            matching_resources(&hard, &[], cms, &json!({})),
            ["count/configmaps"]
        );
        assert!(matching_resources(&hard, &be, cms, &json!({})).is_empty());
    }

    #[test]
    fn a_quota_on_cpu_or_memory_makes_every_container_state_it() {
        let pod = json!({"spec": {"containers": [
            {"name": "app", "resources": {"requests": {"cpu": "1"}}},
            {"name": "side"}],
            "initContainers": [{"name": "init", "resources": {"limits": {"memory": "1Gi"}}}]}});
        let required = [
            "requests.cpu".to_string(),
            "limits.memory".to_string(),
            "pods".into(),
        ];
        assert_eq!(
            pod_constraints(&required, &pod).unwrap_err(),
            "must specify limits.memory for: app,side; requests.cpu for: init,side"
        );
        assert_eq!(pod_constraints(&["pods".to_string()], &pod), Ok(()));
    }

    #[test]
    fn init_containers_and_sidecars_count_as_the_scheduler_counts_them() {
        let spec = json!({
            "containers": [{"resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [
                {"restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                {"resources": {"requests": {"cpu": "2"}}}],
            "overhead": {"cpu": "100m"}});
        assert_eq!(
            list_to_json(&pod_total(&spec, "requests")),
            json!({"cpu": "2600m"})
        );
    }
}
