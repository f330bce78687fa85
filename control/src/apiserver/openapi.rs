//! OpenAPI documents for `/openapi/v3`, `/openapi/v3/{api/v1 | apis/{group}/{version}}` and
//! `/openapi/v2`, generated from the `k8s-openapi` schemars impls.
//!
//! kubectl 1.32 depends on these documents in three places, which fix their shape:
//! - `kubectl explain` reads `/openapi/v3`, fetches the group-version document, finds the
//!   resource's kind through the `x-kubernetes-group-version-kind` of an operation on the
//!   resource's path, then the schema whose `x-kubernetes-group-version-kind` list holds that
//!   same `{group, kind, version}` map, and walks `properties`, `items`, `additionalProperties`
//!   and `allOf` (resolving `#/components/schemas/...` refs).
//! - `kubectl apply`/`create` (`--validate=strict`, the default) ask the v3 document whether the
//!   PATCH operation of the kind declares the `fieldValidation` query parameter; if so the server
//!   validates and kubectl skips its client-side (OpenAPI v2 protobuf) validation. A document
//!   that fails to parse makes those commands fail outright. For a kind missing from the v3
//!   documents kubectl fetches the protobuf v2 document instead; it gets an empty one (no
//!   schemas), so it skips validating that kind as it would skip any unknown kind.
//! - client-side `kubectl apply` computes its strategic merge patch from the kind schema found
//!   by `x-kubernetes-group-version-kind`, reading `x-kubernetes-patch-strategy` and
//!   `x-kubernetes-patch-merge-key` on list fields; without them lists would be replaced whole
//!   while the server merges them, so the common ones are added here ([`PATCH_STRATEGIES`]).
//!
//! Ref'd properties are wrapped as `allOf: [{$ref}]` with their description beside it, like
//! Kubernetes' own document (a `$ref` may not have siblings in OpenAPI 3.0); the v2 document
//! unwraps them into `$ref` + `description` as Kubernetes' swagger does.
//!
//! Documents are built once and cached for the life of the process; serving returns
//! `&'static Value`s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling_v2,
    batch::v1 as batch, coordination::v1 as coordination, core::v1 as core,
    discovery::v1 as discovery, events::v1 as events, networking::v1 as networking,
    node::v1 as node, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha512};

use super::resources::{RESOURCES, ResourceInfo, Subresource, groups, in_group_version};

/// The Kubernetes release whose schemas `k8s-openapi` was built for (feature `v1_33`).
const SCHEMA_VERSION: &str = "v1.33.0";

/// Where schemas live in an OpenAPI 3.0 document.
const V3_REF: &str = "#/components/schemas/";
/// Where schemas live in a Swagger 2.0 document.
const V2_REF: &str = "#/definitions/";

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// Registers `T`'s schema (and everything it references) and returns its definition name.
type Register = fn(&mut SchemaGenerator) -> String;

fn reg<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The `k8s-openapi` type of each kind a [`ResourceInfo`] may name, by group, version and
/// kind. Kinds in [`RESOURCES`] without an entry here get paths but no schema (a unit test
/// keeps the table complete).
#[rustfmt::skip]
static KINDS: &[(&str, &str, &str, Register)] = &[
    ("", "v1", "Binding", reg::<core::Binding>),
    ("", "v1", "ConfigMap", reg::<core::ConfigMap>),
    ("", "v1", "Endpoints", reg::<core::Endpoints>),
    ("", "v1", "Event", reg::<core::Event>),
    ("", "v1", "LimitRange", reg::<core::LimitRange>),
    ("", "v1", "Namespace", reg::<core::Namespace>),
    ("", "v1", "Node", reg::<core::Node>),
    ("", "v1", "PersistentVolume", reg::<core::PersistentVolume>),
    ("", "v1", "PersistentVolumeClaim", reg::<core::PersistentVolumeClaim>),
    ("", "v1", "Pod", reg::<core::Pod>),
    ("", "v1", "PodTemplate", reg::<core::PodTemplate>),
    ("", "v1", "ReplicationController", reg::<core::ReplicationController>),
    ("", "v1", "ResourceQuota", reg::<core::ResourceQuota>),
    ("", "v1", "Secret", reg::<core::Secret>),
    ("", "v1", "Service", reg::<core::Service>),
    ("", "v1", "ServiceAccount", reg::<core::ServiceAccount>),
    ("apps", "v1", "ControllerRevision", reg::<apps::ControllerRevision>),
    ("apps", "v1", "DaemonSet", reg::<apps::DaemonSet>),
    ("apps", "v1", "Deployment", reg::<apps::Deployment>),
    ("apps", "v1", "ReplicaSet", reg::<apps::ReplicaSet>),
    ("apps", "v1", "StatefulSet", reg::<apps::StatefulSet>),
    ("autoscaling", "v1", "HorizontalPodAutoscaler", reg::<autoscaling_v1::HorizontalPodAutoscaler>),
    ("autoscaling", "v1", "Scale", reg::<autoscaling_v1::Scale>),
    ("autoscaling", "v2", "HorizontalPodAutoscaler", reg::<autoscaling_v2::HorizontalPodAutoscaler>),
    ("batch", "v1", "CronJob", reg::<batch::CronJob>),
    ("batch", "v1", "Job", reg::<batch::Job>),
    ("coordination.k8s.io", "v1", "Lease", reg::<coordination::Lease>),
    ("discovery.k8s.io", "v1", "EndpointSlice", reg::<discovery::EndpointSlice>),
    ("events.k8s.io", "v1", "Event", reg::<events::Event>),
    ("networking.k8s.io", "v1", "Ingress", reg::<networking::Ingress>),
    ("networking.k8s.io", "v1", "IngressClass", reg::<networking::IngressClass>),
    ("networking.k8s.io", "v1", "NetworkPolicy", reg::<networking::NetworkPolicy>),
    ("node.k8s.io", "v1", "RuntimeClass", reg::<node::RuntimeClass>),
    ("policy", "v1", "Eviction", reg::<policy::Eviction>),
    ("policy", "v1", "PodDisruptionBudget", reg::<policy::PodDisruptionBudget>),
    ("rbac.authorization.k8s.io", "v1", "ClusterRole", reg::<rbac::ClusterRole>),
    ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", reg::<rbac::ClusterRoleBinding>),
    ("rbac.authorization.k8s.io", "v1", "Role", reg::<rbac::Role>),
    ("rbac.authorization.k8s.io", "v1", "RoleBinding", reg::<rbac::RoleBinding>),
    ("scheduling.k8s.io", "v1", "PriorityClass", reg::<scheduling::PriorityClass>),
    ("storage.k8s.io", "v1", "StorageClass", reg::<storage::StorageClass>),
];

/// Meta types every group-version document carries (request and response bodies of the
/// generic operations), plus the discovery documents served under `/api` and `/apis`.
static META_TYPES: &[Register] = &[
    reg::<meta::APIGroup>,
    reg::<meta::APIGroupList>,
    reg::<meta::APIResourceList>,
    reg::<meta::APIVersions>,
    reg::<meta::DeleteOptions>,
    reg::<meta::Patch>,
    reg::<meta::Status>,
    reg::<meta::WatchEvent<core::Pod>>,
];

/// Strategic-merge-patch metadata of list and struct fields, as Kubernetes' Go struct tags
/// declare it: `(definition, property, x-kubernetes-patch-strategy,
/// x-kubernetes-patch-merge-key)`. `k8s-openapi` does not carry these, and client-side
/// `kubectl apply` needs them to compute patches the server merges the same way.
#[rustfmt::skip]
pub static PATCH_STRATEGIES: &[(&str, &str, &str, Option<&str>)] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", Some("uid")),
    ("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", Some("topologyKey")),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.Container", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.Container", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", Some("name")),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", Some("containerPort")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", Some("mountPath")),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", Some("devicePath")),
    ("io.k8s.api.core.v1.PodStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", Some("name")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", Some("type")),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", Some("port")),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", Some("name")),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", Some("type")),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", Some("type")),
];

/// `/openapi/v3`: the index of group-version documents, each with a `serverRelativeURL`
/// carrying a content hash (clients cache documents by URL).
pub fn v3_index() -> &'static Value {
    static INDEX: OnceLock<Value> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut paths = Map::new();
        for (path, doc) in v3_docs() {
            let bytes = serde_json::to_vec(doc).unwrap_or_default();
            let hash: String = Sha512::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect();
            paths.insert(
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            );
        }
        json!({ "paths": paths })
    })
}

/// `/openapi/v3/{path}` for `path` like `api/v1` or `apis/apps/v1` (also `api` and `apis`,
/// the discovery endpoints' own documents): an OpenAPI 3.0 document, or `None` for a
/// group-version that is not served. Any `?hash=` query is the caller's to strip.
pub fn v3_group_version(path: &str) -> Option<&'static Value> {
    v3_docs().get(path.trim_matches('/'))
}

/// The media type clients ask for the protobuf form of `/openapi/v2` with (gnostic's
/// `openapi_v2.Document`).
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The content type that form is served with, as kube-apiserver does: `@` is not allowed in a
/// media type, and Go's parser (kubectl's) rejects a response that carries one.
pub const V2_PROTOBUF_SERVED: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2`: one Swagger 2.0 document with every path and definition, as JSON. A request
/// for the protobuf form gets an empty document (see the HTTP handler).
pub fn v2() -> &'static Value {
    static V2: OnceLock<Value> = OnceLock::new();
    V2.get_or_init(|| {
        let cat = catalog();
        let mut paths = Map::new();
        let mut roots: Vec<String> = Vec::new();
        for (group, versions) in served_group_versions() {
            for version in versions {
                let resources = in_group_version(group, version);
                for p in resource_paths(&resources) {
                    paths.insert(p.path.clone(), p.to_v2());
                }
                roots.extend(gv_roots(cat, &resources));
            }
        }
        for p in discovery_paths() {
            paths.insert(p.path.clone(), p.to_v2());
        }
        roots.extend(["APIVersions", "APIGroupList"].map(|k| format!("{META}{k}")));
        let definitions: Map<String, Value> = closure(cat, &roots)
            .into_iter()
            .filter_map(|name| cat.schemas.get(&name).map(|s| (name, to_v2_schema(s))))
            .collect();
        json!({
            "swagger": "2.0",
            "info": { "title": "Kubernetes", "version": SCHEMA_VERSION },
            "paths": paths,
            "definitions": definitions,
            "securityDefinitions": {
                "BearerToken": {
                    "description": "Bearer Token authentication",
                    "type": "apiKey",
                    "name": "authorization",
                    "in": "header"
                }
            },
            "security": [{ "BearerToken": [] }]
        })
    })
}

/// All schemas, in OpenAPI 3.0 form, with the Kubernetes extensions added.
struct Catalog {
    /// Definitions by name (`io.k8s.api.core.v1.Pod`).
    schemas: Map<String, Value>,
    /// Definition name of each kind, keyed by `(group, version, kind)`.
    kinds: BTreeMap<(&'static str, &'static str, &'static str), String>,
}

impl Catalog {
    fn kind(&self, group: &str, version: &str, kind: &str) -> Option<&String> {
        self.kinds
            .iter()
            .find(|((g, v, k), _)| *g == group && *v == version && *k == kind)
            .map(|(_, n)| n)
    }

    /// Definition name of a resource's list kind (`io.k8s.api.core.v1.PodList`).
    fn list(&self, r: &ResourceInfo) -> Option<String> {
        self.kind(r.group, r.version, r.kind)
            .map(|n| format!("{n}List"))
    }
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

fn build_catalog() -> Catalog {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let mut kinds = BTreeMap::new();
    // Served kinds plus the kinds subresources return.
    let mut wanted: Vec<(&'static str, &'static str, &'static str)> = RESOURCES
        .iter()
        .map(|r| (r.group, r.version, r.kind))
        .collect();
    wanted.extend([
        ("autoscaling", "v1", "Scale"),
        ("", "v1", "Binding"),
        ("policy", "v1", "Eviction"),
    ]);
    for (group, version, kind, register) in KINDS {
        if wanted.contains(&(group, version, kind)) {
            kinds.insert((*group, *version, *kind), register(&mut generator));
        }
    }
    for register in META_TYPES {
        register(&mut generator);
    }
    let mut schemas = generator.take_definitions(true);

    // List kinds: `k8s-openapi` has a generic `List<T>` without a schema.
    for r in RESOURCES {
        let Some(name) = kinds.get(&(r.group, r.version, r.kind)) else {
            continue;
        };
        schemas.insert(format!("{name}List"), list_schema(r, name));
    }

    // x-kubernetes-group-version-kind on every kind (and list kind) schema.
    for ((group, version, kind), name) in &kinds {
        unrequire_metadata(&mut schemas, name);
        set_gvk(&mut schemas, name, vec![gvk(group, version, kind)]);
        if RESOURCES
            .iter()
            .any(|r| r.group == *group && r.version == *version && r.kind == *kind)
        {
            set_gvk(
                &mut schemas,
                &format!("{name}List"),
                vec![gvk(group, version, &format!("{kind}List"))],
            );
        }
    }
    set_gvk(
        &mut schemas,
        &format!("{META}Status"),
        vec![gvk("", "v1", "Status")],
    );
    let every_gv: Vec<(&str, &str)> = served_group_versions()
        .into_iter()
        .flat_map(|(g, vs)| vs.into_iter().map(move |v| (g, v)))
        .collect();
    for kind in ["DeleteOptions", "WatchEvent"] {
        let list = every_gv.iter().map(|(g, v)| gvk(g, v, kind)).collect();
        set_gvk(&mut schemas, &format!("{META}{kind}"), list);
    }

    for (definition, property, strategy, merge_key) in PATCH_STRATEGIES {
        let Some(prop) = schemas
            .get_mut(*definition)
            .and_then(|d| d.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        if let Some(reference) = prop.remove("$ref") {
            // OpenAPI 3.0 ignores siblings of `$ref`: wrap it like Kubernetes does.
            prop.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
        prop.insert("x-kubernetes-patch-strategy".into(), (*strategy).into());
        if let Some(key) = merge_key {
            prop.insert("x-kubernetes-patch-merge-key".into(), (*key).into());
        }
    }

    Catalog { schemas, kinds }
}

/// The `{Kind}List` schema of a resource whose kind schema is `item`.
fn list_schema(r: &ResourceInfo, item: &str) -> Value {
    json!({
        "description": format!("{}List is a list of {}.", r.kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string"
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": { "allOf": [{ "$ref": format!("{V3_REF}{item}") }], "default": {} }
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string"
            },
            "metadata": {
                "allOf": [{ "$ref": format!("{V3_REF}{META}ListMeta") }],
                "default": {},
                "description": "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
            }
        },
        "required": ["items"]
    })
}

/// `k8s-openapi` marks `metadata` required on kinds (its Rust field is not optional);
/// Kubernetes does not, and `kubectl explain` would print `-required-` for it.
fn unrequire_metadata(schemas: &mut Map<String, Value>, name: &str) {
    let Some(obj) = schemas.get_mut(name).and_then(Value::as_object_mut) else {
        return;
    };
    let empty = match obj.get_mut("required").and_then(Value::as_array_mut) {
        Some(required) => {
            required.retain(|field| field != "metadata");
            required.is_empty()
        }
        None => false,
    };
    if empty {
        obj.remove("required");
    }
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn set_gvk(schemas: &mut Map<String, Value>, name: &str, list: Vec<Value>) {
    if let Some(obj) = schemas.get_mut(name).and_then(Value::as_object_mut) {
        obj.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
    }
}

/// `(group, versions)` of every served group, core (`""`) first.
fn served_group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out = Vec::new();
    if RESOURCES.iter().any(|r| r.group.is_empty()) {
        out.push(("", vec!["v1"]));
    }
    out.extend(groups());
    out
}

/// The v3 document path of a group-version: `api/v1` or `apis/{group}/{version}`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Every v3 document by path, built once.
fn v3_docs() -> &'static BTreeMap<String, Value> {
    static DOCS: OnceLock<BTreeMap<String, Value>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let cat = catalog();
        let mut docs = BTreeMap::new();
        for (group, versions) in served_group_versions() {
            for version in versions {
                let resources = in_group_version(group, version);
                let paths: Vec<PathItem> = resource_paths(&resources);
                let roots = gv_roots(cat, &resources);
                docs.insert(gv_path(group, version), v3_document(cat, &paths, &roots));
            }
        }
        let [api, apis] = discovery_paths();
        docs.insert(
            "api".into(),
            v3_document(cat, &[api], &[format!("{META}APIVersions")]),
        );
        docs.insert(
            "apis".into(),
            v3_document(cat, &[apis], &[format!("{META}APIGroupList")]),
        );
        docs
    })
}

/// Definitions a group-version document starts from: its kinds and list kinds, the kinds its
/// subresources return, and the generic request/response bodies.
fn gv_roots(cat: &Catalog, resources: &[&ResourceInfo]) -> Vec<String> {
    let mut roots: Vec<String> = ["Status", "DeleteOptions", "WatchEvent", "Patch"]
        .iter()
        .map(|k| format!("{META}{k}"))
        .collect();
    for r in resources {
        roots.extend(cat.kind(r.group, r.version, r.kind).cloned());
        roots.extend(cat.list(r));
        for sub in r.subresources {
            if let Some((g, v, k)) = subresource_kind(r, *sub) {
                roots.extend(cat.kind(g, v, k).cloned());
            }
        }
    }
    roots
}

fn v3_document(cat: &Catalog, paths: &[PathItem], roots: &[String]) -> Value {
    let paths: Map<String, Value> = paths.iter().map(|p| (p.path.clone(), p.to_v3())).collect();
    let schemas: Map<String, Value> = closure(cat, roots)
        .into_iter()
        .filter_map(|name| cat.schemas.get(&name).map(|s| (name, s.clone())))
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": SCHEMA_VERSION },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header"
                }
            }
        },
        "security": [{ "BearerToken": [] }]
    })
}

/// The names of `roots` and every definition they reference, transitively, sorted.
fn closure(cat: &Catalog, roots: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.to_vec();
    while let Some(name) = todo.pop() {
        let Some(schema) = cat.schemas.get(&name) else {
            continue;
        };
        if !seen.insert(name) {
            continue;
        }
        collect_refs(schema, &mut todo);
    }
    seen
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(obj) => {
            for (k, v) in obj {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix(V3_REF) {
                            out.push(name.to_string());
                        }
                    }
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// A v3 schema in Swagger 2.0 form: refs point at `#/definitions/`, single-ref `allOf`
/// wrappers become `$ref` with siblings (as in Kubernetes' swagger.json), `nullable` becomes
/// `x-nullable`.
fn to_v2_schema(value: &Value) -> Value {
    match value {
        Value::Object(obj) => {
            let mut out = Map::new();
            let single_ref = match obj.get("allOf") {
                Some(Value::Array(items))
                    if items.len() == 1 && !obj.contains_key("properties") =>
                {
                    items[0].get("$ref").and_then(Value::as_str)
                }
                _ => None,
            };
            if let Some(r) = single_ref {
                out.insert("$ref".into(), r.replacen(V3_REF, V2_REF, 1).into());
            }
            for (k, v) in obj {
                match k.as_str() {
                    "allOf" if single_ref.is_some() => {}
                    "$ref" => {
                        let r = v.as_str().unwrap_or_default().replacen(V3_REF, V2_REF, 1);
                        out.insert(k.clone(), r.into());
                    }
                    "nullable" => {
                        out.insert("x-nullable".into(), v.clone());
                    }
                    // Extension values are data, not schemas.
                    _ if k.starts_with("x-") => {
                        out.insert(k.clone(), v.clone());
                    }
                    _ => {
                        out.insert(k.clone(), to_v2_schema(v));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v2_schema).collect()),
        other => other.clone(),
    }
}

/// The `(group, version, kind)` a subresource takes and returns, `None` for `log` (text) and
/// `proxy` (whatever the agent answers; left out of the documents).
fn subresource_kind(
    r: &ResourceInfo,
    sub: Subresource,
) -> Option<(&'static str, &'static str, &'static str)> {
    match sub {
        Subresource::Status | Subresource::EphemeralContainers => {
            Some((r.group, r.version, r.kind))
        }
        Subresource::Scale => Some(("autoscaling", "v1", "Scale")),
        Subresource::Binding => Some(("", "v1", "Binding")),
        Subresource::Eviction => Some(("policy", "v1", "Eviction")),
        Subresource::Log | Subresource::Proxy => None,
    }
}

// ---------------------------------------------------------------------------------------------
// Paths and operations: one intermediate form rendered as OpenAPI 3.0 or Swagger 2.0.

/// A path with its operations.
struct PathItem {
    path: String,
    /// `name` and/or `namespace` path parameters (plus the `pretty` query parameter).
    path_params: Vec<(&'static str, String)>,
    ops: Vec<Operation>,
}

/// The body an operation takes.
enum Body {
    /// A JSON object of the named definition.
    Object(String),
    /// A patch document, in any of the four patch content types.
    Patch,
}

/// What an operation returns on success.
enum Returns {
    Object(String),
    Text,
}

struct Operation {
    method: &'static str,
    id: String,
    description: String,
    action: &'static str,
    gvk: Option<Gvk>,
    query: &'static [&'static str],
    body: Option<Body>,
    returns: Returns,
    codes: &'static [(&'static str, &'static str)],
}

const LIST_QUERY: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE_QUERY: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH_QUERY: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE_QUERY: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "orphanDependents",
    "propagationPolicy",
];
const DELETE_COLLECTION_QUERY: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "ignoreStoreReadErrorWithClusterBreakingPotential",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];
const LOG_QUERY: &[&str] = &[
    "container",
    "follow",
    "insecureSkipTLSVerifyBackend",
    "limitBytes",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "stream",
    "tailLines",
    "timestamps",
];

const OK: &[(&str, &str)] = &[("200", "OK"), ("401", "Unauthorized")];
const CREATED: &[(&str, &str)] = &[
    ("200", "OK"),
    ("201", "Created"),
    ("202", "Accepted"),
    ("401", "Unauthorized"),
];
const REPLACED: &[(&str, &str)] = &[("200", "OK"), ("201", "Created"), ("401", "Unauthorized")];
const DELETED: &[(&str, &str)] = &[("200", "OK"), ("202", "Accepted"), ("401", "Unauthorized")];

/// `(type, description)` of a query parameter.
fn query_param(name: &str) -> (&'static str, &'static str) {
    match name {
        "allowWatchBookmarks" => (
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag.",
        ),
        "continue" => (
            "string",
            "The continue option should be set when retrieving more results from the server, with the value returned in the previous list's metadata.continue.",
        ),
        "dryRun" => (
            "string",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
        ),
        "fieldManager" => (
            "string",
            "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
        ),
        "fieldSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        "fieldValidation" => (
            "string",
            "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
        ),
        "force" => (
            "boolean",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
        ),
        "gracePeriodSeconds" => (
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately.",
        ),
        "ignoreStoreReadErrorWithClusterBreakingPotential" => (
            "boolean",
            "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error.",
        ),
        "labelSelector" => (
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        "limit" => (
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        "orphanDependents" => (
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned.",
        ),
        "propagationPolicy" => (
            "string",
            "Whether and how garbage collection will be performed. Acceptable values are: 'Orphan', 'Background' and 'Foreground'.",
        ),
        "resourceVersion" => (
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. Defaults to unset",
        ),
        "resourceVersionMatch" => (
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. Defaults to unset",
        ),
        "sendInitialEvents" => (
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection.",
        ),
        "timeoutSeconds" => (
            "integer",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        ),
        "watch" => (
            "boolean",
            "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion.",
        ),
        "container" => (
            "string",
            "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
        ),
        "follow" => (
            "boolean",
            "Follow the log stream of the pod. Defaults to false.",
        ),
        "insecureSkipTLSVerifyBackend" => (
            "boolean",
            "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.",
        ),
        "limitBytes" => (
            "integer",
            "If set, the number of bytes to read from the server before terminating the log output.",
        ),
        "previous" => (
            "boolean",
            "Return previous terminated container logs. Defaults to false.",
        ),
        "sinceSeconds" => (
            "integer",
            "A relative time in seconds before the current time from which to show logs.",
        ),
        "sinceTime" => ("string", "An RFC3339 timestamp from which to show logs."),
        "stream" => (
            "string",
            "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used.",
        ),
        "tailLines" => (
            "integer",
            "If set, the number of lines from the end of the logs to show.",
        ),
        "timestamps" => (
            "boolean",
            "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
        ),
        "pretty" => (
            "string",
            "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
        ),
        _ => ("string", ""),
    }
}

const JSON_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
];
const WATCH_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/json;stream=watch",
    "application/vnd.kubernetes.protobuf;stream=watch",
];
const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];

impl Operation {
    fn produces(&self) -> &'static [&'static str] {
        match (&self.returns, self.action) {
            (Returns::Text, _) => &["text/plain"],
            (_, "list") => WATCH_TYPES,
            _ => JSON_TYPES,
        }
    }

    fn to_v3(&self) -> Value {
        let mut op = Map::new();
        op.insert("tags".into(), json!([self.tag()]));
        op.insert("description".into(), self.description.clone().into());
        op.insert("operationId".into(), self.id.clone().into());
        let params: Vec<Value> = self
            .query
            .iter()
            .map(|name| {
                let (ty, description) = query_param(name);
                json!({
                    "name": name,
                    "in": "query",
                    "description": description,
                    "schema": { "type": ty, "uniqueItems": true }
                })
            })
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        match &self.body {
            Some(Body::Object(name)) => {
                let content: Map<String, Value> = JSON_TYPES
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({ "schema": { "$ref": format!("{V3_REF}{name}") } }),
                        )
                    })
                    .collect();
                op.insert(
                    "requestBody".into(),
                    json!({ "content": content, "required": self.method != "delete" }),
                );
            }
            Some(Body::Patch) => {
                let content: Map<String, Value> = PATCH_TYPES
                    .iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({ "schema": { "$ref": format!("{V3_REF}{META}Patch") } }),
                        )
                    })
                    .collect();
                op.insert(
                    "requestBody".into(),
                    json!({ "content": content, "required": true }),
                );
            }
            None => {}
        }
        let schema = match &self.returns {
            Returns::Object(name) => json!({ "$ref": format!("{V3_REF}{name}") }),
            Returns::Text => json!({ "type": "string" }),
        };
        let mut responses = Map::new();
        for (code, description) in self.codes {
            if *code == "401" {
                responses.insert((*code).into(), json!({ "description": description }));
            } else {
                let content: Map<String, Value> = self
                    .produces()
                    .iter()
                    .map(|t| (t.to_string(), json!({ "schema": schema })))
                    .collect();
                responses.insert(
                    (*code).into(),
                    json!({ "description": description, "content": content }),
                );
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), self.action.into());
        if let Some((g, v, k)) = self.gvk {
            op.insert(
                "x-kubernetes-group-version-kind".into(),
                json!({ "group": g, "version": v, "kind": k }),
            );
        }
        Value::Object(op)
    }

    fn to_v2(&self) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), self.description.clone().into());
        let consumes: &[&str] = match self.body {
            Some(Body::Patch) => PATCH_TYPES,
            _ => &["*/*"],
        };
        op.insert("consumes".into(), json!(consumes));
        op.insert("produces".into(), json!(self.produces()));
        op.insert("schemes".into(), json!(["https"]));
        op.insert("tags".into(), json!([self.tag()]));
        op.insert("operationId".into(), self.id.clone().into());
        let mut params: Vec<Value> = Vec::new();
        match &self.body {
            Some(Body::Object(name)) => params.push(json!({
                "name": "body", "in": "body", "required": self.method != "delete",
                "schema": { "$ref": format!("{V2_REF}{name}") }
            })),
            Some(Body::Patch) => params.push(json!({
                "name": "body", "in": "body", "required": true,
                "schema": { "$ref": format!("{V2_REF}{META}Patch") }
            })),
            None => {}
        }
        for name in self.query {
            let (ty, description) = query_param(name);
            params.push(json!({ "uniqueItems": true, "type": ty, "description": description, "name": name, "in": "query" }));
        }
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        let schema = match &self.returns {
            Returns::Object(name) => json!({ "$ref": format!("{V2_REF}{name}") }),
            Returns::Text => json!({ "type": "string" }),
        };
        let mut responses = Map::new();
        for (code, description) in self.codes {
            if *code == "401" {
                responses.insert((*code).into(), json!({ "description": description }));
            } else {
                responses.insert(
                    (*code).into(),
                    json!({ "description": description, "schema": schema }),
                );
            }
        }
        op.insert("responses".into(), Value::Object(responses));
        op.insert("x-kubernetes-action".into(), self.action.into());
        if let Some((g, v, k)) = self.gvk {
            op.insert(
                "x-kubernetes-group-version-kind".into(),
                json!({ "group": g, "kind": k, "version": v }),
            );
        }
        Value::Object(op)
    }

    fn tag(&self) -> String {
        match self.gvk {
            Some((g, v, _)) => format!("{}_{}", group_tag(g), v),
            None => "core".to_string(),
        }
    }
}

impl PathItem {
    fn params_v3(&self) -> Vec<Value> {
        let mut out: Vec<Value> = self
            .path_params
            .iter()
            .map(|(name, description)| {
                json!({
                    "name": name, "in": "path", "description": description, "required": true,
                    "schema": { "type": "string", "uniqueItems": true }
                })
            })
            .collect();
        let (_, pretty) = query_param("pretty");
        out.push(json!({ "name": "pretty", "in": "query", "description": pretty, "schema": { "type": "string", "uniqueItems": true } }));
        out
    }

    fn to_v3(&self) -> Value {
        let mut item = Map::new();
        for op in &self.ops {
            item.insert(op.method.into(), op.to_v3());
        }
        item.insert("parameters".into(), Value::Array(self.params_v3()));
        Value::Object(item)
    }

    fn to_v2(&self) -> Value {
        let mut item = Map::new();
        for op in &self.ops {
            item.insert(op.method.into(), op.to_v2());
        }
        let mut params: Vec<Value> = self
            .path_params
            .iter()
            .map(|(name, description)| {
                json!({ "uniqueItems": true, "type": "string", "description": description, "name": name, "in": "path", "required": true })
            })
            .collect();
        let (_, pretty) = query_param("pretty");
        params.push(json!({ "uniqueItems": true, "type": "string", "description": pretty, "name": "pretty", "in": "query" }));
        item.insert("parameters".into(), Value::Array(params));
        Value::Object(item)
    }
}

/// `apps` → `apps`, `discovery.k8s.io` → `discovery`, `""` → `core` (operation tags).
fn group_tag(group: &str) -> String {
    if group.is_empty() {
        return "core".into();
    }
    group.trim_end_matches(".k8s.io").replace(['.', '-'], "_")
}

/// `""` → `Core`, `discovery.k8s.io` → `Discovery`, `rbac.authorization.k8s.io` →
/// `RbacAuthorization` (operation ids, like Kubernetes').
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A group/version/kind triple, as operations declare it.
type Gvk = (&'static str, &'static str, &'static str);

impl Operation {
    /// An operation without query parameters or body, answering 200.
    fn new(
        method: &'static str,
        action: &'static str,
        id: String,
        description: String,
        gvk: Option<Gvk>,
        returns: Returns,
    ) -> Self {
        Operation {
            method,
            id,
            description,
            action,
            gvk,
            query: &[],
            body: None,
            returns,
            codes: OK,
        }
    }

    fn query(mut self, query: &'static [&'static str]) -> Self {
        self.query = query;
        self
    }

    fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }

    fn codes(mut self, codes: &'static [(&'static str, &'static str)]) -> Self {
        self.codes = codes;
        self
    }
}

/// The paths of the discovery documents themselves (`/api/`, `/apis/`).
fn discovery_paths() -> [PathItem; 2] {
    let get = |id: &str, returns: &str| {
        let returns = Returns::Object(format!("{META}{returns}"));
        Operation::new(
            "get",
            "get",
            id.into(),
            "get available API versions".into(),
            None,
            returns,
        )
    };
    [
        PathItem {
            path: "/api/".into(),
            path_params: vec![],
            ops: vec![get("getCoreAPIVersions", "APIVersions")],
        },
        PathItem {
            path: "/apis/".into(),
            path_params: vec![],
            ops: vec![get("getAPIVersions", "APIGroupList")],
        },
    ]
}

/// Every path of the given resources (one group-version): the collection, the item, the
/// all-namespaces list of namespaced kinds, and each subresource.
fn resource_paths(resources: &[&ResourceInfo]) -> Vec<PathItem> {
    let cat = catalog();
    let mut out = Vec::new();
    for r in resources {
        let Some(kind_def) = cat.kind(r.group, r.version, r.kind).cloned() else {
            continue;
        };
        let list_def = format!("{kind_def}List");
        let object = || Returns::Object(kind_def.clone());
        let prefix = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        // Operation ids as Kubernetes spells them: `listCoreV1NamespacedPod`.
        let gv = format!("{}{}", group_camel(r.group), capitalize(r.version));
        let scope = if r.namespaced { "Namespaced" } else { "" };
        let kind = r.kind;
        let own = Some((r.group, r.version, r.kind));
        let collection = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{prefix}/{}", r.plural)
        };
        let item = format!("{collection}/{{name}}");
        let mut collection_params = Vec::new();
        if r.namespaced {
            collection_params.push((
                "namespace",
                "object name and auth scope, such as for teams and projects".to_string(),
            ));
        }
        let mut item_params = vec![("name", format!("name of the {kind}"))];
        item_params.extend(collection_params.iter().cloned());
        let delete_options = || Body::Object(format!("{META}DeleteOptions"));

        out.push(PathItem {
            path: collection.clone(),
            path_params: collection_params,
            ops: vec![
                Operation::new(
                    "get",
                    "list",
                    format!("list{gv}{scope}{kind}"),
                    format!("list or watch objects of kind {kind}"),
                    own,
                    Returns::Object(list_def.clone()),
                )
                .query(LIST_QUERY),
                Operation::new(
                    "post",
                    "post",
                    format!("create{gv}{scope}{kind}"),
                    format!("create a {kind}"),
                    own,
                    object(),
                )
                .query(WRITE_QUERY)
                .body(Body::Object(kind_def.clone()))
                .codes(CREATED),
                Operation::new(
                    "delete",
                    "deletecollection",
                    format!("deleteCollection{gv}{scope}{kind}"),
                    format!("delete collection of {kind}"),
                    own,
                    Returns::Object(format!("{META}Status")),
                )
                .query(DELETE_COLLECTION_QUERY)
                .body(delete_options()),
            ],
        });
        out.push(PathItem {
            path: item.clone(),
            path_params: item_params.clone(),
            ops: vec![
                Operation::new(
                    "get",
                    "get",
                    format!("read{gv}{scope}{kind}"),
                    format!("read the specified {kind}"),
                    own,
                    object(),
                ),
                Operation::new(
                    "put",
                    "put",
                    format!("replace{gv}{scope}{kind}"),
                    format!("replace the specified {kind}"),
                    own,
                    object(),
                )
                .query(WRITE_QUERY)
                .body(Body::Object(kind_def.clone()))
                .codes(REPLACED),
                Operation::new(
                    "delete",
                    "delete",
                    format!("delete{gv}{scope}{kind}"),
                    format!("delete a {kind}"),
                    own,
                    object(),
                )
                .query(DELETE_QUERY)
                .body(delete_options())
                .codes(DELETED),
                Operation::new(
                    "patch",
                    "patch",
                    format!("patch{gv}{scope}{kind}"),
                    format!("partially update the specified {kind}"),
                    own,
                    object(),
                )
                .query(PATCH_QUERY)
                .body(Body::Patch)
                .codes(REPLACED),
            ],
        });
        if r.namespaced {
            out.push(PathItem {
                path: format!("{prefix}/{}", r.plural),
                path_params: vec![],
                ops: vec![
                    Operation::new(
                        "get",
                        "list",
                        format!("list{gv}{kind}ForAllNamespaces"),
                        format!("list or watch objects of kind {kind}"),
                        own,
                        Returns::Object(list_def.clone()),
                    )
                    .query(LIST_QUERY),
                ],
            });
        }
        let mut subs = r.subresources.to_vec();
        subs.sort_by_key(|s| s.name());
        for sub in subs {
            let name = sub.name();
            let suffix = capitalize(name);
            let sub_kind = subresource_kind(r, sub);
            let def = sub_kind.and_then(|(g, v, k)| cat.kind(g, v, k).cloned());
            let ops = match (sub, def) {
                (
                    Subresource::Status | Subresource::Scale | Subresource::EphemeralContainers,
                    Some(def),
                ) => vec![
                    Operation::new(
                        "get",
                        "get",
                        format!("read{gv}{scope}{kind}{suffix}"),
                        format!("read {name} of the specified {kind}"),
                        sub_kind,
                        Returns::Object(def.clone()),
                    ),
                    Operation::new(
                        "put",
                        "put",
                        format!("replace{gv}{scope}{kind}{suffix}"),
                        format!("replace {name} of the specified {kind}"),
                        sub_kind,
                        Returns::Object(def.clone()),
                    )
                    .query(WRITE_QUERY)
                    .body(Body::Object(def.clone()))
                    .codes(REPLACED),
                    Operation::new(
                        "patch",
                        "patch",
                        format!("patch{gv}{scope}{kind}{suffix}"),
                        format!("partially update {name} of the specified {kind}"),
                        sub_kind,
                        Returns::Object(def),
                    )
                    .query(PATCH_QUERY)
                    .body(Body::Patch)
                    .codes(REPLACED),
                ],
                (Subresource::Binding | Subresource::Eviction, Some(def)) => vec![
                    Operation::new(
                        "post",
                        "post",
                        format!("create{gv}{scope}{kind}{suffix}"),
                        format!("create {name} of a {kind}"),
                        sub_kind,
                        Returns::Object(def.clone()),
                    )
                    .query(WRITE_QUERY)
                    .body(Body::Object(def))
                    .codes(CREATED),
                ],
                (Subresource::Log, _) => vec![
                    Operation::new(
                        "get",
                        "get",
                        format!("read{gv}{scope}{kind}{suffix}"),
                        format!("read {name} of the specified {kind}"),
                        own,
                        Returns::Text,
                    )
                    .query(LOG_QUERY),
                ],
                // A subresource whose kind has no schema: leave the path out.
                _ => continue,
            };
            out.push(PathItem {
                path: format!("{item}/{name}"),
                path_params: item_params.clone(),
                ops,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str) -> &'static Value {
        v3_group_version(path).unwrap_or_else(|| panic!("no document for {path}"))
    }

    fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
        &doc["components"]["schemas"][name]
    }

    #[test]
    fn every_served_kind_has_a_schema() {
        for r in RESOURCES {
            assert!(
                catalog().kind(r.group, r.version, r.kind).is_some(),
                "{} has no schema in KINDS",
                r.kind
            );
        }
    }

    #[test]
    fn index_lists_every_group_version_with_a_hashed_url() {
        let index = v3_index();
        let paths = index["paths"].as_object().unwrap();
        for key in [
            "api",
            "apis",
            "api/v1",
            "apis/apps/v1",
            "apis/batch/v1",
            "apis/discovery.k8s.io/v1",
        ] {
            let url = paths[key]["serverRelativeURL"].as_str().unwrap();
            assert!(
                url.starts_with(&format!("/openapi/v3/{key}?hash=")),
                "{url}"
            );
            assert!(v3_group_version(key).is_some());
        }
        assert!(v3_group_version("apis/apps/v9").is_none());
    }

    #[test]
    fn kind_schemas_carry_their_group_version_kind() {
        let core = doc("api/v1");
        assert_eq!(
            schema(core, "io.k8s.api.core.v1.Pod")["x-kubernetes-group-version-kind"],
            json!([{ "group": "", "kind": "Pod", "version": "v1" }])
        );
        assert_eq!(
            schema(core, "io.k8s.api.core.v1.PodList")["x-kubernetes-group-version-kind"],
            json!([{ "group": "", "kind": "PodList", "version": "v1" }])
        );
        let apps = doc("apis/apps/v1");
        assert_eq!(
            schema(apps, "io.k8s.api.autoscaling.v1.Scale")["x-kubernetes-group-version-kind"],
            json!([{ "group": "autoscaling", "kind": "Scale", "version": "v1" }])
        );
        assert!(schema(apps, "io.k8s.api.apps.v1.DeploymentStrategy").is_object());
        assert!(schema(apps, "io.k8s.api.core.v1.PodSpec").is_object());
        assert!(schema(apps, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta").is_object());
        assert!(schema(core, "io.k8s.api.policy.v1.Eviction").is_object());
    }

    #[test]
    fn every_ref_resolves_inside_its_document() {
        let mut docs: Vec<&Value> = v3_docs().values().collect();
        docs.push(v2());
        for d in docs {
            let mut refs = Vec::new();
            collect_all_refs(d, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let target = if let Some(name) = r.strip_prefix(V3_REF) {
                    &d["components"]["schemas"][name]
                } else if let Some(name) = r.strip_prefix(V2_REF) {
                    &d["definitions"][name]
                } else {
                    panic!("ref outside the document: {r}")
                };
                assert!(target.is_object(), "dangling ref {r}");
            }
        }
    }

    fn collect_all_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    if k == "$ref" {
                        out.push(v.as_str().unwrap().to_string());
                    } else {
                        collect_all_refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_all_refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn v3_refs_have_no_siblings() {
        fn check(v: &Value) {
            match v {
                Value::Object(o) => {
                    if o.contains_key("$ref") {
                        assert_eq!(o.len(), 1, "$ref with siblings: {v}");
                    }
                    o.values().for_each(check);
                }
                Value::Array(a) => a.iter().for_each(check),
                _ => {}
            }
        }
        v3_docs().values().for_each(check);
    }

    #[test]
    fn patch_operations_declare_field_validation_and_strategic_merge() {
        for d in v3_docs().values() {
            for (path, item) in d["paths"].as_object().unwrap() {
                let Some(patch) = item.get("patch") else {
                    continue;
                };
                let names: Vec<&str> = patch["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                for want in ["fieldValidation", "dryRun", "fieldManager"] {
                    assert!(names.contains(&want), "{path} lacks {want}");
                }
                assert!(
                    patch["requestBody"]["content"]["application/strategic-merge-patch+json"]
                        .is_object()
                );
                assert!(patch["x-kubernetes-group-version-kind"]["kind"].is_string());
            }
        }
    }

    #[test]
    fn explain_finds_pods_through_the_namespaced_collection_path() {
        let core = doc("api/v1");
        let op = &core["paths"]["/api/v1/namespaces/{namespace}/pods"]["get"];
        assert_eq!(
            op["x-kubernetes-group-version-kind"],
            json!({ "group": "", "version": "v1", "kind": "Pod" })
        );
        let nodes = &core["paths"]["/api/v1/nodes/{name}"]["get"];
        assert_eq!(nodes["x-kubernetes-group-version-kind"]["kind"], "Node");
        assert!(core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/log"]["get"].is_object());
        assert!(
            core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"].is_object()
        );
        let debug =
            &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers"];
        for verb in ["get", "put", "patch"] {
            assert_eq!(
                debug[verb]["x-kubernetes-group-version-kind"]["kind"],
                "Pod"
            );
        }
        assert_eq!(
            debug["patch"]["operationId"],
            "patchCoreV1NamespacedPodEphemeralcontainers"
        );
        let apps = doc("apis/apps/v1");
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]
            ["patch"];
        assert_eq!(scale["x-kubernetes-group-version-kind"]["kind"], "Scale");
        assert_eq!(scale["operationId"], "patchAppsV1NamespacedDeploymentScale");
    }

    #[test]
    fn containers_merge_by_name() {
        let spec = schema(doc("api/v1"), "io.k8s.api.core.v1.PodSpec");
        let containers = &spec["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            containers["items"]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.Container"
        );
        let strategy = &schema(doc("apis/apps/v1"), "io.k8s.api.apps.v1.DeploymentSpec")["properties"]
            ["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        assert_eq!(
            strategy["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"
        );
    }

    #[test]
    fn swagger_v2_uses_definitions_and_plain_refs() {
        let d = v2();
        assert_eq!(d["swagger"], "2.0");
        let pod = &d["definitions"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(
            pod["properties"]["metadata"]["$ref"],
            "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(pod["properties"]["metadata"]["description"].is_string());
        let patch = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(
            patch["consumes"]
                .as_array()
                .unwrap()
                .contains(&json!("application/strategic-merge-patch+json"))
        );
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"body") && names.contains(&"fieldValidation"));
        assert!(!serde_json::to_string(d).unwrap().contains("#/components/"));
        let debug = &d["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/ephemeralcontainers"];
        assert!(["get", "put", "patch"].iter().all(|v| debug[v].is_object()));
    }
}
