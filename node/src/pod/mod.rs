//! Pod workers: one task per pod bound to this node, owning its state machine.
//!
//! The worker ([`worker`]) sets the pod up (address, RuntimeClass, volumes), runs the init
//! containers one after the other, then every app container in its own loop ([`container`]):
//! pull, resolve, start, wait, decide restart, back off. Each change goes into the shared
//! [`PodState`], which a status writer patches into `pods/status`. Deleting the pod stops its
//! containers within the grace period, then the worker removes it (a delete with grace 0).
//!
//! Pure parts, table-tested: [`state`] (container and pod state machines), [`backoff`],
//! [`env`](mod@env), [`volumes`] (given a directory), [`address`], [`quantity`], [`probe`] thresholds,
//! [`status`] rendering.

pub mod address;
pub mod atomic_writer;
pub mod backoff;
pub mod claims;
pub mod container;
pub mod env;
pub mod fs_group;
pub mod hook;
pub mod host_aliases;
pub mod probe;
pub mod prober;
pub mod quantity;
pub mod registry;
pub mod sources;
pub mod state;
pub mod status;
pub mod volumes;
pub mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::agent::events::EventRecorder;
use crate::logs::LogStore;
use crate::runtime::Runtime;
pub use address::{AddressPool, Cidr};
pub use backoff::Backoff;
pub use registry::PodRegistry;
pub use status::PodState;
pub use worker::PodWorker;

/// What every pod worker of the node shares.
pub struct PodContext {
    /// The API client.
    pub client: kube::Client,
    /// Watched caches of the Services and RuntimeClasses pod starts read.
    pub listers: crate::agent::listers::Listers,
    /// This node's name.
    pub node_name: String,
    /// This node's address (`status.hostIP`).
    pub host_ip: String,
    /// What this node offers pods (for `resourceFieldRef`s to unset limits).
    pub allocatable: sources::Allocatable,
    /// Runtime plugins by RuntimeClass handler.
    pub runtimes: BTreeMap<String, Arc<dyn Runtime>>,
    /// Container logs.
    pub logs: LogStore,
    /// Pod addresses.
    pub addresses: AddressPool,
    /// Events.
    pub events: EventRecorder,
    /// Per-pod directories (volumes) live under it.
    pub pods_dir: PathBuf,
    /// The directories of local-path PersistentVolumes live under it.
    pub volumes_dir: PathBuf,
    /// Restart and retry backoff.
    pub backoff: Backoff,
    /// Longest grace given to containers when the agent itself shuts down.
    pub shutdown_grace: Duration,
    /// How often API-sourced volumes are brought up to date.
    pub sync_frequency: Duration,
    /// The node proxy (resolves Service names for containers).
    pub proxy: crate::proxy::Proxy,
    /// The node's cluster DNS server, which pods on the pod bridge reach; `None` without one.
    pub cluster_dns: Option<crate::dns::ClusterDns>,
    /// The node's own resolver configuration (for the `Default` DNS policy, and the search
    /// domains every pod inherits).
    pub node_dns: crate::dns::ResolvConf,
    /// The pods being run, for the metrics endpoints.
    pub registry: PodRegistry,
}

impl std::fmt::Debug for PodContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodContext")
            .field("node_name", &self.node_name)
            .field("host_ip", &self.host_ip)
            .field("runtimes", &self.runtimes.keys().collect::<Vec<_>>())
            .field("pods_dir", &self.pods_dir)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

/// A pod's state shared between its container loops, probes and status writer.
#[derive(Debug)]
pub struct SharedState {
    // A std mutex: never held across an await.
    state: Mutex<PodState>,
    changed: Notify,
}

impl SharedState {
    /// Shares `state`.
    pub fn new(state: PodState) -> Arc<SharedState> {
        Arc::new(SharedState {
            state: Mutex::new(state),
            changed: Notify::new(),
        })
    }

    /// Changes the state, re-derives phase and conditions, and wakes the status writer.
    pub fn update<R>(&self, f: impl FnOnce(&mut PodState) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut s);
        s.refresh(k8s_openapi::jiff::Timestamp::now());
        drop(s);
        self.changed.notify_one();
        r
    }

    /// A copy of the state.
    pub fn snapshot(&self) -> PodState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the next change.
    pub async fn changed(&self) {
        self.changed.notified().await
    }
}
