//! API discovery documents: `/api`, `/apis`, `/apis/{group}`, the per group-version resource
//! lists, and the aggregated `apidiscovery.k8s.io` documents kubectl asks for first.
//!
//! Everything is derived from [`RESOURCES`](super::resources::RESOURCES), so a new kind shows up in `kubectl api-resources`
//! without touching this file. The functions are pure: the HTTP layer picks one by path and
//! `Accept` header ([`wants_aggregated`]) and serialises the result.
//!
//! Shapes follow `k8s.io/apimachinery/pkg/apis/meta/v1` (`APIVersions`, `APIGroupList`,
//! `APIGroup`, `APIResourceList`) and `k8s.io/api/apidiscovery/v2` (`APIGroupDiscoveryList`);
//! client-go decodes the aggregated form strictly by field name, and silently falls back to
//! the legacy endpoints (one request per group-version) when the shape is wrong.

use serde_json::{Map, Value, json};

use super::resources::{ResourceInfo, Subresource, groups, in_group_version};
use super::{resource_metrics, self_review};

/// Content type of an aggregated discovery answer, `apidiscovery.k8s.io/v2`.
pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Content type of an aggregated discovery answer, `apidiscovery.k8s.io/v2beta1` (same shape
/// as v2; still requested by clients older than Kubernetes 1.30).
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Verbs every resource supports.
const RESOURCE_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every group served: the storage table's, then `authorization.k8s.io` and
/// `authentication.k8s.io` for the self reviews ([`self_review`]) and `metrics.k8s.io` for
/// the resource metrics ([`resource_metrics`]).
fn served_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut all = groups();
    for r in self_review::RESOURCES
        .iter()
        .chain(&resource_metrics::RESOURCES)
    {
        if !all.iter().any(|(g, _)| *g == r.group) {
            all.push((r.group, vec![r.version]));
        }
    }
    all
}

/// The resources of one group-version with their verbs.
fn served_in(group: &str, version: &str) -> Vec<(&'static ResourceInfo, &'static [&'static str])> {
    let mut all: Vec<_> = in_group_version(group, version)
        .into_iter()
        .map(|r| (r, RESOURCE_VERBS))
        .collect();
    all.extend(
        self_review::RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| (r, self_review::VERBS)),
    );
    all.extend(
        resource_metrics::RESOURCES
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .map(|r| (r, resource_metrics::VERBS)),
    );
    all
}

/// `/api`: the legacy `APIVersions` document.
///
/// `server_address` is the `host:port` clients should use, reported for every client CIDR.
pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
        ]
    })
}

/// `/apis`: the `APIGroupList` of every non-core group.
pub fn api_group_list() -> Value {
    let groups: Vec<Value> = served_groups()
        .into_iter()
        .map(|(g, vs)| group_doc(g, &vs))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `/apis/{group}`: one `APIGroup`, or `None` when the group is not served.
pub fn api_group(group: &str) -> Option<Value> {
    let (name, versions) = served_groups().into_iter().find(|(g, _)| *g == group)?;
    let mut doc = group_doc(name, &versions);
    if let Some(obj) = doc.as_object_mut() {
        // The stand-alone document carries its type meta; list items do not.
        let mut with_meta = Map::new();
        with_meta.insert("kind".into(), "APIGroup".into());
        with_meta.insert("apiVersion".into(), "v1".into());
        with_meta.append(obj);
        *obj = with_meta;
    }
    Some(doc)
}

/// `/api/v1` (group `""`) and `/apis/{group}/{version}`: the `APIResourceList`, with one entry
/// per resource followed by its subresources (`pods/status`, `deployments/scale`, ...), or
/// `None` when the group-version is not served.
pub fn api_resource_list(group: &str, version: &str) -> Option<Value> {
    let resources = served_in(group, version);
    if resources.is_empty() {
        return None;
    }
    let mut entries = Vec::new();
    for (r, verbs) in resources {
        entries.push(api_resource(r, verbs));
        let mut subs: Vec<Subresource> = r.subresources.to_vec();
        subs.sort_by_key(|s| s.name());
        for sub in subs {
            entries.push(api_subresource(r, sub));
        }
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}

/// `/api` with aggregated discovery: an `APIGroupDiscoveryList` holding the core group (name
/// `""`) with all its resources.
pub fn aggregated_core() -> Value {
    aggregated(AGGREGATED_V2, true)
}

/// `/apis` with aggregated discovery: an `APIGroupDiscoveryList` holding every non-core group
/// with all its resources.
pub fn aggregated_apis() -> Value {
    aggregated(AGGREGATED_V2, false)
}

/// The aggregated document for `/api` (`core = true`) or `/apis`, typed for the content type
/// chosen by [`wants_aggregated`] (v2 and v2beta1 differ only in `apiVersion`).
pub fn aggregated(content_type: &str, core: bool) -> Value {
    let api_version = if content_type == AGGREGATED_V2BETA1 {
        "apidiscovery.k8s.io/v2beta1"
    } else {
        "apidiscovery.k8s.io/v2"
    };
    let items: Vec<Value> = if core {
        vec![group_discovery("", &["v1"])]
    } else {
        served_groups()
            .into_iter()
            .map(|(g, vs)| group_discovery(g, &vs))
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": api_version,
        "metadata": {},
        "items": items,
    })
}

/// Decides from an `Accept` header whether `/api` or `/apis` should answer with aggregated
/// discovery; returns the `Content-Type` to answer with ([`AGGREGATED_V2`] or
/// [`AGGREGATED_V2BETA1`]), or `None` for the legacy documents.
///
/// Media ranges are taken in the order given (kubectl lists its preference first); the first
/// one this server can produce wins, so a plain `application/json` listed before the
/// aggregated types selects the legacy form. Parameter order and spacing do not matter, and
/// the `profile=nopeer` parameter is accepted (this server has no peers to leave out).
pub fn wants_aggregated(accept: &str) -> Option<&'static str> {
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let (mut g, mut v, mut as_kind) = (None, None, None);
        for param in parts {
            let Some((k, val)) = param.split_once('=') else {
                continue;
            };
            let val = val.trim().trim_matches('"');
            match k.trim() {
                "g" => g = Some(val),
                "v" => v = Some(val),
                "as" => as_kind = Some(val),
                _ => {}
            }
        }
        let json_like = matches!(media.as_str(), "application/json" | "application/*" | "*/*");
        if !json_like {
            continue;
        }
        match (g, v, as_kind) {
            (None, None, None) => return None,
            (Some("apidiscovery.k8s.io"), Some("v2"), Some("APIGroupDiscoveryList")) => {
                return Some(AGGREGATED_V2);
            }
            (Some("apidiscovery.k8s.io"), Some("v2beta1"), Some("APIGroupDiscoveryList")) => {
                return Some(AGGREGATED_V2BETA1);
            }
            // Some other typed form (e.g. `as=Table`): not something discovery produces.
            _ => continue,
        }
    }
    None
}

/// One `APIGroup` as it appears in `APIGroupList.groups`.
fn group_doc(group: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({ "groupVersion": format!("{group}/{v}"), "version": v });
    let preferred = versions.first().map(|v| gv(v)).unwrap_or(Value::Null);
    json!({
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": preferred,
    })
}

/// The `(group, version, kind)` a subresource endpoint returns.
fn subresource_kind(
    r: &ResourceInfo,
    sub: Subresource,
) -> (&'static str, &'static str, &'static str) {
    match sub {
        Subresource::Status | Subresource::Log | Subresource::EphemeralContainers => {
            (r.group, r.version, r.kind)
        }
        Subresource::Scale => ("autoscaling", "v1", "Scale"),
        Subresource::Binding => ("", "v1", "Binding"),
        Subresource::Eviction => ("policy", "v1", "Eviction"),
        Subresource::Proxy => ("", "v1", "NodeProxyOptions"),
    }
}

/// The verbs a subresource endpoint supports.
fn subresource_verbs(sub: Subresource) -> &'static [&'static str] {
    match sub {
        Subresource::Status | Subresource::Scale | Subresource::EphemeralContainers => {
            &["get", "patch", "update"]
        }
        Subresource::Binding | Subresource::Eviction => &["create"],
        Subresource::Log | Subresource::Proxy => &["get"],
    }
}

/// One `APIResource` for a main resource.
fn api_resource(r: &ResourceInfo, verbs: &[&str]) -> Value {
    let mut obj = Map::new();
    obj.insert("name".into(), r.plural.into());
    obj.insert("singularName".into(), r.singular.into());
    obj.insert("namespaced".into(), r.namespaced.into());
    obj.insert("kind".into(), r.kind.into());
    obj.insert("verbs".into(), json!(verbs));
    if !r.short_names.is_empty() {
        obj.insert("shortNames".into(), json!(r.short_names));
    }
    if !r.categories.is_empty() {
        obj.insert("categories".into(), json!(r.categories));
    }
    Value::Object(obj)
}

/// One `APIResource` for `{plural}/{subresource}`; `group`/`version` are set only when the
/// returned kind lives in another group-version than the parent (`autoscaling/v1` `Scale`).
fn api_subresource(r: &ResourceInfo, sub: Subresource) -> Value {
    let (group, version, kind) = subresource_kind(r, sub);
    let mut obj = Map::new();
    obj.insert("name".into(), format!("{}/{}", r.plural, sub.name()).into());
    obj.insert("singularName".into(), "".into());
    obj.insert("namespaced".into(), r.namespaced.into());
    if group != r.group || version != r.version {
        obj.insert("group".into(), group.into());
        obj.insert("version".into(), version.into());
    }
    obj.insert("kind".into(), kind.into());
    obj.insert("verbs".into(), json!(subresource_verbs(sub)));
    Value::Object(obj)
}

/// One `APIGroupDiscovery` (group name `""` for core).
fn group_discovery(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let resources: Vec<Value> = served_in(group, v)
                .into_iter()
                .map(|(r, verbs)| resource_discovery(r, verbs))
                .collect();
            json!({ "version": v, "resources": resources, "freshness": "Current" })
        })
        .collect();
    json!({ "metadata": { "name": group }, "versions": versions })
}

/// One `APIResourceDiscovery`.
fn resource_discovery(r: &ResourceInfo, verbs: &[&str]) -> Value {
    let mut obj = Map::new();
    obj.insert("resource".into(), r.plural.into());
    obj.insert("responseKind".into(), gvk(r.group, r.version, r.kind));
    obj.insert(
        "scope".into(),
        if r.namespaced {
            "Namespaced"
        } else {
            "Cluster"
        }
        .into(),
    );
    obj.insert("singularResource".into(), r.singular.into());
    obj.insert("verbs".into(), json!(verbs));
    if !r.short_names.is_empty() {
        obj.insert("shortNames".into(), json!(r.short_names));
    }
    if !r.categories.is_empty() {
        obj.insert("categories".into(), json!(r.categories));
    }
    if !r.subresources.is_empty() {
        let mut subs: Vec<Subresource> = r.subresources.to_vec();
        subs.sort_by_key(|s| s.name());
        let subs: Vec<Value> = subs
            .into_iter()
            .map(|sub| {
                let (g, v, k) = subresource_kind(r, sub);
                json!({
                    "subresource": sub.name(),
                    "responseKind": gvk(g, v, k),
                    "verbs": subresource_verbs(sub),
                })
            })
            .collect();
        obj.insert("subresources".into(), Value::Array(subs));
    }
    Value::Object(obj)
}

/// A `GroupVersionKind` object.
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_reports_v1_and_the_server_address() {
        let doc = api_versions("127.0.0.1:6443");
        assert_eq!(doc["versions"], json!(["v1"]));
        assert_eq!(
            doc["serverAddressByClientCIDRs"][0]["clientCIDR"],
            "0.0.0.0/0"
        );
        assert_eq!(
            doc["serverAddressByClientCIDRs"][0]["serverAddress"],
            "127.0.0.1:6443"
        );
    }

    #[test]
    fn group_list_names_every_non_core_group_with_a_preferred_version() {
        let doc = api_group_list();
        assert_eq!(doc["kind"], "APIGroupList");
        let apps = doc["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "apps")
            .unwrap();
        assert_eq!(
            apps["preferredVersion"],
            json!({ "groupVersion": "apps/v1", "version": "v1" })
        );
        assert!(
            doc["groups"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| g["name"] != "")
        );
    }

    #[test]
    fn unknown_group_and_version_are_none() {
        assert!(api_group("nope.example.com").is_none());
        assert!(api_resource_list("apps", "v1beta9").is_none());
        assert_eq!(api_group("apps").unwrap()["kind"], "APIGroup");
    }

    #[test]
    fn core_resource_list_has_pods_and_their_subresources() {
        let doc = api_resource_list("", "v1").unwrap();
        assert_eq!(doc["groupVersion"], "v1");
        let find = |n: &str| {
            doc["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == n)
                .cloned()
                .unwrap()
        };
        let pods = find("pods");
        assert_eq!(pods["kind"], "Pod");
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        assert_eq!(pods["verbs"].as_array().unwrap().len(), 8);
        assert_eq!(
            find("pods/status")["verbs"],
            json!(["get", "patch", "update"])
        );
        assert_eq!(find("pods/binding")["kind"], "Binding");
        assert_eq!(find("pods/log")["verbs"], json!(["get"]));
        let debug = find("pods/ephemeralcontainers");
        assert_eq!(
            (debug["kind"].clone(), debug["verbs"].clone()),
            (json!("Pod"), json!(["get", "patch", "update"]))
        );
        let eviction = find("pods/eviction");
        assert_eq!(
            (eviction["group"].clone(), eviction["version"].clone()),
            (json!("policy"), json!("v1"))
        );
        assert_eq!(eviction["kind"], "Eviction");
        assert!(find("nodes")["namespaced"] == false);
    }

    /// The entry of resource `name` in the group version's resource list.
    fn listed(group: &str, version: &str, name: &str) -> Value {
        let doc = api_resource_list(group, version).unwrap();
        doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    }

    #[test]
    fn deployment_scale_is_an_autoscaling_v1_scale() {
        let scale = listed("apps", "v1", "deployments/scale");
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["version"], "v1");
        assert_eq!(scale["kind"], "Scale");
    }

    #[test]
    fn aggregated_documents_follow_apidiscovery_v2() {
        let core = aggregated_core();
        assert_eq!(core["kind"], "APIGroupDiscoveryList");
        assert_eq!(core["apiVersion"], "apidiscovery.k8s.io/v2");
        assert_eq!(core["items"][0]["metadata"]["name"], "");
        let v1 = &core["items"][0]["versions"][0];
        assert_eq!(v1["version"], "v1");
        assert_eq!(v1["freshness"], "Current");
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "pods")
            .unwrap();
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["singularResource"], "pod");
        assert_eq!(
            pods["responseKind"],
            json!({ "group": "", "version": "v1", "kind": "Pod" })
        );
        let subs = pods["subresources"].as_array().unwrap();
        assert!(subs.iter().any(
            |s| s["subresource"] == "status" && s["verbs"] == json!(["get", "patch", "update"])
        ));
        assert!(subs.contains(&json!({"subresource": "ephemeralcontainers",
            "responseKind": {"group": "", "version": "v1", "kind": "Pod"},
            "verbs": ["get", "patch", "update"]})));

        let apis = aggregated_apis();
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        let scale = deploy["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["subresource"] == "scale")
            .unwrap();
        assert_eq!(
            scale["responseKind"],
            json!({ "group": "autoscaling", "version": "v1", "kind": "Scale" })
        );
        let nodes = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "nodes")
            .unwrap();
        assert_eq!(nodes["scope"], "Cluster");
        assert_eq!(
            aggregated(AGGREGATED_V2BETA1, true)["apiVersion"],
            "apidiscovery.k8s.io/v2beta1"
        );
    }

    #[test]
    fn node_proxy_is_a_get_only_subresource_of_nodes() {
        let proxy = listed("", "v1", "nodes/proxy");
        assert_eq!(
            proxy,
            json!({"name": "nodes/proxy", "singularName": "", "namespaced": false,
                "kind": "NodeProxyOptions", "verbs": ["get"]})
        );
        let core = aggregated_core();
        let nodes = core["items"][0]["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "nodes")
            .unwrap();
        assert!(nodes["subresources"].as_array().unwrap().contains(&json!({
            "subresource": "proxy",
            "responseKind": {"group": "", "version": "v1", "kind": "NodeProxyOptions"},
            "verbs": ["get"],
        })));
    }

    #[test]
    fn the_resource_metrics_group_is_discoverable_every_way() {
        let list = api_group_list();
        let group = list["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "metrics.k8s.io")
            .unwrap();
        let v1beta1 = json!({"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"});
        assert_eq!(group["preferredVersion"], v1beta1);
        assert_eq!(
            api_group("metrics.k8s.io").unwrap()["versions"],
            json!([v1beta1])
        );
        let resources = api_resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(
            resources["resources"],
            json!([
                {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
                {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            ])
        );
        let apis = aggregated_apis();
        let metrics = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
            .unwrap();
        let v = &metrics["versions"][0];
        assert_eq!(v["version"], "v1beta1");
        assert_eq!(v["resources"][0]["resource"], "nodes");
        assert_eq!(v["resources"][0]["scope"], "Cluster");
        assert_eq!(
            v["resources"][1]["responseKind"],
            json!({"group": "metrics.k8s.io", "version": "v1beta1", "kind": "PodMetrics"})
        );
        assert_eq!(v["resources"][1]["verbs"], json!(["get", "list"]));
    }

    #[test]
    fn accept_header_negotiation() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        let cases: &[(&str, Option<&str>)] = &[
            (kubectl, Some(AGGREGATED_V2)),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
                Some(AGGREGATED_V2BETA1),
            ),
            (
                "application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io",
                Some(AGGREGATED_V2),
            ),
            (
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer",
                Some(AGGREGATED_V2),
            ),
            ("application/json", None),
            ("", None),
            ("*/*", None),
            (
                "application/json, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                None,
            ),
            (
                "application/vnd.kubernetes.protobuf, application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
                Some(AGGREGATED_V2),
            ),
            ("application/json;g=meta.k8s.io;v=v1;as=Table", None),
        ];
        for (accept, want) in cases {
            assert_eq!(wants_aggregated(accept), *want, "{accept}");
        }
    }
}
