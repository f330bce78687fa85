//! The Kubernetes REST API.
//!
//! - [`resources`]: the table of served kinds.
//! - [`api`]: the generic verbs (get, list, create, update, patch, delete, watch, scale,
//!   binding) over the store; controllers call it in-process.
//! - [`http`]: paths, query parameters, content negotiation and streaming watches.
//! - [`metrics`]: `/metrics`, Prometheus metrics named as kube-apiserver's.
//! - [`logs`]: `pods/log`, proxied to the agent of the pod's node.
//! - [`node_proxy`]: `nodes/proxy`, proxied to the node's agent.
//! - [`pod_proxy`]: `pods/proxy` and `services/proxy`, proxied to a pod.
//! - [`port_forward`]: `pods/portforward` (`kubectl port-forward`), over [`spdy`] framing, and
//!   [`port_forward_ws`], its WebSocket forms.
//! - [`agent`]: how the API server reaches a node's agent (address, client).
//! - [`resource_metrics`]: `metrics.k8s.io/v1beta1` (`kubectl top`), from the agents' resource
//!   metrics.
//! - [`strategy`] and [`validation`]: per-kind decoding, defaults and validation.
//! - [`ephemeral_containers`]: `pods/ephemeralcontainers` (`kubectl debug`), which adds
//!   containers to a running pod and changes nothing else.
//! - [`service_ips`]: ClusterIP and NodePort allocation for Services.
//! - [`error`]: errors as Kubernetes `Status` objects.
//! - [`objects`]: helpers for objects as JSON values.
//! - [`written`]: an object as a write left it, with its stored bytes.
//! - [`recent_writes`]: pods just written, handed to the in-process pod cache.
//! - [`discovery`]: `/api`, `/apis`, per group-version resource lists and aggregated discovery.
//! - [`openapi`]: `/openapi/v2` and `/openapi/v3` documents generated from `k8s-openapi` schemas.
//! - [`protobuf`]: decoding of Kubernetes protobuf request bodies (sent by `kubectl create <kind>`).
//! - [`patch`]: JSON patch, JSON merge patch and strategic merge patch.
//! - [`apply`]: server-side apply and `managedFields`.
//! - [`selector`]: label and field selectors.
//! - [`table`]: server-side `Table` rendering for `kubectl get`.
//! - [`self_review`]: `SelfSubjectAccessReview`, `SelfSubjectRulesReview` (`kubectl auth
//!   can-i`) and `SelfSubjectReview` (`kubectl auth whoami`), answered without storage.

pub mod agent;
pub mod api;
pub mod apply;
pub mod decoded_pods;
pub mod discovery;
pub mod dns_validation;
pub mod ephemeral_containers;
pub mod epoch_cache;
pub mod error;
pub mod events_v1;
pub mod eviction;
pub mod exec;
#[cfg(test)]
pub(crate) mod fake_agent;
pub mod http;
pub mod limit_range;
pub mod logs;
pub mod metrics;
pub mod networking_validation;
pub mod node_proxy;
pub mod objects;
pub mod openapi;
pub mod patch;
pub mod pod_proxy;
pub mod port_forward;
pub mod port_forward_ws;
pub mod priority;
pub mod projection;
pub mod protobuf;
pub mod quota_usage;
pub mod quota_validation;
pub mod rbac_validation;
pub mod recent_writes;
pub mod resource_metrics;
pub mod resource_quota;
pub mod resources;
pub mod security_validation;
pub mod selector;
pub mod self_review;
pub mod service_ips;
pub mod spdy;
pub mod storage_class;
pub mod storage_validation;
pub mod strategy;
pub mod table;
pub mod validation;
pub mod volume_validation;
pub mod written;

pub use api::Api;
