//! Controllers that run inside the control-plane process. Each is a level-triggered,
//! idempotent reconcile loop over the in-process [`Api`](crate::apiserver::Api), one per file.
//!
//! - [`runner`]: watches, resync and the work queue every workload controller shares.
//! - [`owner`], [`pods`]: ownerReferences and what controllers read from and make of pods.
//! - [`pod_cache`]: every pod, fed by the store's watch and indexed by namespace and
//!   controller, shared by controllers; [`expectations`]: the writes a controller reading it
//!   waits to observe before it writes again.
//! - [`namespace`]: empties a terminating namespace, then removes it; gives every namespace its
//!   `default` ServiceAccount.
//! - [`replicaset`], [`deployment`] (with the pure [`rollout`] arithmetic), [`job`] (with
//!   [`job_tracking`], [`job_indexes`] and [`job_failure_policy`]),
//!   [`daemonset`] (with its [`controller_history`]): the workload controllers.
//! - [`statefulset`]: pods with a stable identity, made, replaced and removed in order.
//! - [`persistent_volume`]: binds claims to volumes and provisions `local-path` ones.
//! - [`node_lifecycle`]: marks nodes whose Lease expired unreachable and evicts their pods.
//! - [`garbage_collector`]: ownerReferences cascades (Background, Foreground, Orphan).
//! - [`endpoints`] and [`endpointslice`]: a selector Service's Endpoints and EndpointSlices from
//!   its pods' addresses and readiness, driven by [`service_pods`] (Services and Pods watched
//!   in-process).
//! - [`horizontal_pod_autoscaler`] (with the pure [`replica_calculator`]): scales Deployments
//!   and ReplicaSets on their pods' CPU and memory from the metrics API.
//! - [`event_ttl`]: deletes Events not seen for `--event-ttl` (1 h), as kube-apiserver's
//!   Event leases do.
//! - [`disruption`]: PodDisruptionBudgets' status, which evictions read and take from.
//! - [`resource_quota`]: ResourceQuotas' `status.used`, counted from their namespaces'
//!   objects, which quota admission charges.
//! - [`cronjob`]: starts CronJobs' Jobs on their schedules ([`crate::cron`]).

pub mod controller_history;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod event_ttl;
pub mod expectations;
pub mod finalizers;
pub mod garbage_collector;
pub mod horizontal_pod_autoscaler;
pub mod job;
pub mod job_failure_policy;
pub mod job_indexes;
pub mod job_tracking;
pub mod namespace;
pub mod node_lifecycle;
pub mod owner;
pub mod persistent_volume;
pub mod pod_cache;
pub mod pods;
pub mod replica_calculator;
pub mod replicaset;
pub mod resource_quota;
pub mod rollout;
pub mod runner;
pub mod service_pods;
pub mod statefulset;
pub mod store_mirror;
