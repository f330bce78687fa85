//! Controllers that run inside the control-plane process. Each is a level-triggered,
//! idempotent reconcile loop over the in-process [`Api`](crate::apiserver::Api), one per file.
//!
//! - [`namespace`]: empties a terminating namespace, then removes it; gives every namespace its
//!   `default` ServiceAccount.
//! - [`endpoints`] and [`endpointslice`]: a selector Service's Endpoints and EndpointSlices from
//!   its pods' addresses and readiness, driven by [`service_pods`] (Services and Pods watched
//!   in-process).

pub mod endpoints;
pub mod endpointslice;
pub mod namespace;
pub mod service_pods;
