//! The Kubernetes REST API.
//!
//! - [`resources`]: the table of served kinds.
//! - [`discovery`]: `/api`, `/apis`, per group-version resource lists and aggregated discovery.
//! - [`openapi`]: `/openapi/v2` and `/openapi/v3` documents generated from `k8s-openapi` schemas.
//! - [`patch`]: JSON patch, JSON merge patch and strategic merge patch.
//! - [`selector`]: label and field selectors.
//! - [`table`]: server-side `Table` rendering for `kubectl get`.

pub mod discovery;
pub mod openapi;
pub mod patch;
pub mod resources;
pub mod selector;
pub mod table;
