//! Flotilla's control plane: a Kubernetes-compatible API server on an embedded store.
//!
//! Module map:
//! - [`store`]: the `Store` trait (revisioned KV, compare-and-swap, watch) and its redb backend
//!   with group commit.
//! - [`apiserver`]: the Kubernetes REST API (discovery, OpenAPI, generic REST handler, per-kind
//!   strategies, patches, selectors, server-side tables, watch).
//! - [`controllers`]: reconcile loops that run inside the control-plane process.
//! - [`scheduler`]: places pods on nodes (filter, score, bind through `pods/binding`).
//! - [`cron`]: CronJob schedules (validated by the API server, followed by a controller).
//! - [`events`]: records Kubernetes Events for in-process components, aggregating repeats.
//! - [`registry`]: an OCI distribution registry served on the API server's listener.
//! - [`kubeconfig`]: writes the kubeconfig a client uses to reach this server.
//! - [`server`]: wires everything together: [`serve`] runs the control plane on a listener.

// `ApiError` (a Kubernetes Status with causes) is deliberately rich; it travels on cold paths.
#![allow(clippy::result_large_err)]

pub mod apiserver;
pub mod controllers;
pub mod cron;
pub mod events;
pub mod kubeconfig;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod store;

pub use server::{ServerConfig, serve};
