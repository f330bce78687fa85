//! What a container uses, as a runtime plugin reports it (CRI's `ContainerStats`): the figures
//! behind the kubelet-style resource metrics and `kubectl top`.

use std::collections::BTreeMap;
use std::time::Duration;

/// A running container's usage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// CPU time consumed so far, in all its processes or instances.
    pub cpu_usage: Duration,
    /// Memory in use that cannot be reclaimed without harm (the kubelet's "working set"): a
    /// container's cgroup usage less its inactive file cache; a Wasm container's live linear
    /// memories.
    pub memory_working_set_bytes: u64,
    /// Request counters, for runtimes that serve HTTP themselves (Wasm `wasi:http` services).
    pub http: Option<HttpCounters>,
}

/// Requests a Wasm HTTP service has handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCounters {
    /// Requests received.
    pub requests: u64,
    /// Failed requests by reason (`trap`, `out-of-memory`, `deadline-exceeded`, ...).
    pub failed: BTreeMap<&'static str, u64>,
    /// Instances created (fewer than requests when warm instances are reused).
    pub instantiations: u64,
    /// Requests being handled now.
    pub in_flight: u64,
}
