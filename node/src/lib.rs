//! Flotilla's node agent.
//!
//! [`run`] (or [`Agent::start`] then [`Agent::join`]) is the whole agent: `flotilla agent` and
//! `flotilla up` are thin binaries over it.
//!
//! Module map:
//! - [`agent`]: Node registration, Lease, heartbeat, the pod watch, Events; [`AgentConfig`].
//! - [`pod`]: pod workers and the pod/container state machines, restart backoff, env and
//!   volumes, probes, pod addresses, status reporting.
//! - [`runtime`]: the CRI-like runtime plugin trait and its wasmtime implementation.
//! - [`proxy`]: the node proxy: Services' ClusterIPs and NodePorts balanced over ready endpoints,
//!   and Service name resolution for Wasm guests.
//! - [`dns`]: cluster DNS for container pods: the node's DNS server (Service and pod names,
//!   everything else forwarded) and each pod's `resolv.conf`.
//! - [`logs`]: container logs on disk and the `/containerLogs` endpoint.
//! - [`image`]: the node's image cache: resolves pod image references, pulls Wasm and container
//!   images from any OCI registry into content-addressed storage, and pushes images (the OCI
//!   client side of `flotilla image push`).
//! - [`error`]: the agent's start-up errors, [`AgentError`].

pub mod agent;
pub mod dns;
pub mod error;
pub mod image;
pub mod logs;
pub mod pod;
pub mod proxy;
pub mod runtime;

pub use agent::{Agent, AgentConfig, run};
pub use error::AgentError;
