//! The scheduler: places every unbound pod that names `default-scheduler` on a node.
//!
//! It runs in the control-plane process and works like kube-scheduler: informers
//! ([`informer`]) keep a [`snapshot`] of nodes, bound pods and RuntimeClasses; pods waiting for
//! a node sit in the [`queue`]; for each, [`decide`] runs the [`filter`]s over the nodes and the
//! [`score`]s over the feasible ones (pure functions of the snapshot), and the [`binder`]
//! writes the result through the same API code path `kubectl` uses. A pod that fits nowhere
//! gets `PodScheduled=False` and a `FailedScheduling` event whose message ([`explain`]) says
//! why, node by node, and is retried when nodes change.
//!
//! - [`quantity`]: Kubernetes resource quantities (`100m`, `64Mi`, `1e3`).
//! - [`resources`]: CPU, memory and pod counts.
//! - [`pod`], [`node`]: the scheduling view of a Pod and of a Node (readiness as condition
//!   taints; runtime handlers from the `flotilla.dev/runtime-handlers` label, dot-separated).
//! - [`snapshot`]: the cache of nodes and what is bound to them, with assumed placements.
//! - [`filter`], [`score`], [`decide`], [`explain`]: the decision and its explanation.
//! - [`queue`]: active, backoff and unschedulable pods.
//! - [`informer`]: the watches that feed the snapshot and the queue.
//! - [`binder`]: bindings, conditions, events and evictions.
//! - [`preemption`]: when nothing fits, the pods of lower priority to evict, and where.
//!
//! Throughput: a decision reads only the in-memory snapshot and, on large clusters, a sample of
//! the nodes (see [`decide`]); the chosen node is *assumed* at once so the next pod sees the
//! reservation, and up to [`SchedulerConfig::max_in_flight_binds`] bindings are written
//! concurrently, so the store commits them in shared batches.
//!
//! Not done (yet): extended resources, host ports, volumes; preemption that evicts pods to
//! satisfy inter-pod anti-affinity.

pub mod binder;
pub mod decide;
pub mod explain;
pub mod filter;
pub mod informer;
pub mod inter_pod;
pub mod node;
pub mod pod;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod score;
pub mod snapshot;
pub mod topology_spread;
pub mod volume_binding;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::decide::Decision;
use self::informer::{Kind, Update};
use self::pod::{DEFAULT_SCHEDULER_NAME, PodInfo, PodKey};
use self::queue::SchedulingQueue;
use self::snapshot::{NodeChange, Snapshot};
use crate::apiserver::api::Api;
use crate::apiserver::error::ApiError;
use crate::events::{EventRecorder, EventWriter};

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The `schedulerName` this scheduler serves; pods naming another are left alone.
    pub scheduler_name: String,
    /// kube-scheduler's `percentageOfNodesToScore`: 0 is adaptive (see [`decide`]), 100 looks
    /// at every node.
    pub percentage_of_nodes_to_score: u32,
    /// Bindings (and failure reports) written concurrently.
    pub max_in_flight_binds: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.to_string(),
            percentage_of_nodes_to_score: 0,
            max_in_flight_binds: 512,
        }
    }
}

/// Decisions made before the loop looks at new updates and finished writes again.
const DECISIONS_PER_TURN: usize = 256;
/// Updates applied per turn before deciding again (so a flood of events cannot starve
/// decisions, nor decisions the updates).
const UPDATES_PER_TURN: usize = 4096;

/// How a write of a decision ended.
enum Outcome {
    Bound(PodKey),
    BindFailed(PodKey, ApiError),
    Reported,
}

/// The scheduling loop's state; owned by one task, so nothing is locked.
struct Scheduler {
    api: Api,
    config: SchedulerConfig,
    events: EventRecorder,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    synced: HashSet<Kind>,
    next_start: usize,
    seed: u64,
    writes: JoinSet<Outcome>,
}

impl Scheduler {
    fn apply(&mut self, update: Update, now: Instant) {
        match update {
            Update::Pod(pod) => {
                let key = pod.key();
                if pod.wants_scheduling_by(&self.config.scheduler_name) {
                    // An older event of a pod already assumed somewhere: keep the assumption.
                    if !self.snapshot.is_placed(&key) {
                        self.queue.add((*pod).clone(), now);
                    }
                } else {
                    self.queue.remove(&key);
                    self.snapshot.clear_nomination(&key);
                }
                let frees =
                    pod.node_name.is_some() && pod.terminal && self.snapshot.is_placed(&key);
                self.snapshot.apply_pod(&pod);
                if frees {
                    self.queue.move_all(now);
                }
            }
            Update::PodDeleted(key) => {
                self.queue.remove(&key);
                if self.snapshot.is_placed(&key) {
                    self.snapshot.delete_pod(&key);
                    self.queue.move_all(now);
                }
            }
            Update::Node(node) => {
                if self.snapshot.apply_node(&node) == NodeChange::Changed {
                    self.queue.move_all(now);
                }
            }
            Update::NodeDeleted(name) => self.snapshot.delete_node(&name),
            Update::RuntimeClass { name, handler } => {
                self.snapshot.apply_runtime_class(&name, &handler);
                self.queue.move_all(now);
            }
            Update::RuntimeClassDeleted(name) => self.snapshot.delete_runtime_class(&name),
            Update::Budget(b) => self.snapshot.apply_budget(*b),
            Update::BudgetDeleted(key) => self.snapshot.delete_budget(&key),
            Update::Namespace { name, labels } => {
                // New labels may let a pod's namespaceSelector terms be met.
                if self.snapshot.namespace_labels(&name) != Some(&labels) {
                    self.snapshot.apply_namespace(&name, labels);
                    self.queue.move_all(now);
                }
            }
            Update::NamespaceDeleted(name) => self.snapshot.delete_namespace(&name),
            Update::Claim(key, claim) => {
                // A claim made or bound may let a pod that mounts it fit.
                if self.snapshot.apply_claim(key, claim) {
                    self.queue.move_all(now);
                }
            }
            Update::ClaimDeleted(key) => self.snapshot.delete_claim(&key),
            Update::Volume(name, terms) => {
                if self.snapshot.apply_volume(name, terms) {
                    self.queue.move_all(now);
                }
            }
            Update::VolumeDeleted(name) => self.snapshot.delete_volume(&name),
            Update::Synced { kind, names } => {
                let listed: HashSet<String> = names.into_iter().collect();
                // What the snapshot holds that the fresh list no longer has.
                let gone = |held: Vec<String>| -> Vec<String> {
                    held.into_iter().filter(|k| !listed.contains(k)).collect()
                };
                match kind {
                    Kind::Pods => {
                        for key in gone(self.snapshot.pod_keys()) {
                            self.snapshot.delete_pod(&key);
                            self.queue.remove(&key);
                        }
                    }
                    Kind::Nodes => {
                        for name in gone(self.snapshot.node_names()) {
                            self.snapshot.delete_node(&name);
                        }
                    }
                    Kind::Budgets => {
                        for key in gone(self.snapshot.budget_keys()) {
                            self.snapshot.delete_budget(&key);
                        }
                    }
                    Kind::RuntimeClasses => {
                        for name in gone(self.snapshot.runtime_class_names()) {
                            self.snapshot.delete_runtime_class(&name);
                        }
                    }
                    Kind::Namespaces => {
                        for name in gone(self.snapshot.namespace_names()) {
                            self.snapshot.delete_namespace(&name);
                        }
                    }
                    Kind::Claims => {
                        for key in gone(self.snapshot.claim_keys()) {
                            self.snapshot.delete_claim(&key);
                        }
                    }
                    Kind::Volumes => {
                        for name in gone(self.snapshot.volume_names()) {
                            self.snapshot.delete_volume(&name);
                        }
                    }
                }
                if self.synced.insert(kind) && self.ready() {
                    tracing::info!(
                        scheduler = %self.config.scheduler_name,
                        nodes = self.snapshot.node_count(),
                        pending = self.queue.len(),
                        "scheduler caches synced"
                    );
                }
                self.queue.move_all(now);
            }
        }
    }

    fn ready(&self) -> bool {
        self.synced.len() == INFORMED.len()
    }

    fn has_room(&self) -> bool {
        self.writes.len() < self.config.max_in_flight_binds
    }

    /// Decides pods from the active queue while writes have room, up to a turn's worth.
    fn schedule_some(&mut self, now: Instant) {
        if !self.ready() {
            return;
        }
        for _ in 0..DECISIONS_PER_TURN {
            if !self.has_room() {
                return;
            }
            let Some(pod) = self.queue.pop(now) else {
                return;
            };
            self.schedule_one(pod, now);
        }
    }

    fn schedule_one(&mut self, pod: Arc<PodInfo>, now: Instant) {
        self.seed = self
            .seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let (decision, next) = decide::decide(
            &self.snapshot,
            &pod,
            self.next_start,
            self.config.percentage_of_nodes_to_score,
            self.seed,
        );
        self.next_start = next;
        let (api, events) = (self.api.clone(), self.events.clone());
        match decision {
            Decision::Bind(i) => {
                self.snapshot.assume(&pod, i);
                let node = self.snapshot.nodes()[i].name.clone();
                let unbound = if pod.claims.is_some() {
                    volume_binding::unbound(self.snapshot.claims(), &pod)
                } else {
                    Vec::new()
                };
                self.writes.spawn(async move {
                    let claims_ready = async {
                        binder::select_node(&api, &pod, &unbound, &node).await?;
                        binder::wait_bound(&api, &pod, &unbound, binder::BIND_TIMEOUT).await
                    };
                    if let Err(e) = claims_ready.await {
                        // A claim's trouble, not the pod's: try the pod again.
                        let e = crate::apiserver::error::ApiError::internal(format!(
                            "running PreBind plugin \"VolumeBinding\" for node {node}: {}",
                            e.message
                        ));
                        return Outcome::BindFailed(pod.key(), e);
                    }
                    match binder::bind(&api, &events, &pod, &node).await {
                        Ok(()) => Outcome::Bound(pod.key()),
                        Err(e) => Outcome::BindFailed(pod.key(), e),
                    }
                });
            }
            Decision::Unschedulable(mut diagnosis) => {
                let key = pod.key();
                self.queue.unschedulable(&key, now);
                let plan = match preemption::plan(&self.snapshot, &pod, &diagnosis) {
                    Ok(plan) => Some(plan),
                    Err(why) => {
                        diagnosis.post_filter = Some(why);
                        None
                    }
                };
                let message = diagnosis.message();
                tracing::debug!(pod = %key, %message, "pod is unschedulable");
                if let Some(plan) = plan {
                    let node = self.snapshot.nodes()[plan.node].name.clone();
                    tracing::info!(pod = %key, %node, victims = plan.victims.len(), "preempting");
                    self.snapshot.nominate(&pod, plan.node);
                    let (api, events, pod) = (api.clone(), events.clone(), pod.clone());
                    let scheduler = self.config.scheduler_name.clone();
                    self.writes.spawn(async move {
                        if let Err(e) =
                            binder::preempt(&api, &events, &scheduler, &pod, &node, &plan.victims)
                                .await
                        {
                            tracing::warn!(pod = %pod.key(), error = %e, "preemption failed");
                        }
                        Outcome::Reported
                    });
                }
                self.writes.spawn(async move {
                    if let Err(e) = binder::report_unschedulable(&api, &events, &pod, &message).await {
                        tracing::debug!(pod = %pod.key(), error = %e, "cannot record the scheduling failure");
                    }
                    Outcome::Reported
                });
            }
        }
    }

    fn finished(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Bound(key) => self.queue.remove(&key),
            Outcome::BindFailed(key, e) => {
                self.snapshot.forget(&key);
                if e.code == 404 || e.code == 409 {
                    // Gone, being deleted, or bound by someone else: the watch tells the rest.
                    tracing::debug!(pod = %key, error = %e, "binding not needed any more");
                    self.queue.remove(&key);
                } else {
                    tracing::warn!(pod = %key, error = %e, "binding failed; retrying");
                    self.queue.retry(&key);
                }
            }
            Outcome::Reported => {}
        }
    }
}

/// The kinds the scheduler follows, pods last (so their first decisions see the rest).
const INFORMED: [Kind; 7] = [
    Kind::Namespaces,
    Kind::Claims,
    Kind::Volumes,
    Kind::RuntimeClasses,
    Kind::Budgets,
    Kind::Nodes,
    Kind::Pods,
];

/// Runs the scheduler until `shutdown` is cancelled.
pub async fn run(api: Api, config: SchedulerConfig, shutdown: CancellationToken) {
    let tasks = TaskTracker::new();
    let token = shutdown.child_token();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for kind in INFORMED {
        tasks.spawn(informer::run(api.clone(), kind, tx.clone(), token.clone()));
    }
    drop(tx);
    let (events, writer): (EventRecorder, EventWriter) =
        EventRecorder::new(api.clone(), config.scheduler_name.clone());
    tasks.spawn(writer.run(token.clone()));
    tasks.close();

    let mut s = Scheduler {
        api,
        config,
        events,
        snapshot: Snapshot::new(),
        queue: SchedulingQueue::new(),
        synced: HashSet::new(),
        next_start: 0,
        seed: rand::random(),
        writes: JoinSet::new(),
    };
    loop {
        let now = Instant::now();
        for _ in 0..UPDATES_PER_TURN {
            match rx.try_recv() {
                Ok(u) => s.apply(u, now),
                Err(_) => break,
            }
        }
        while let Some(done) = s.writes.try_join_next() {
            if let Ok(outcome) = done {
                s.finished(outcome);
            }
        }
        s.schedule_some(now);
        if s.ready() && s.has_room() && s.queue.has_active() {
            // More to decide: let the writes and informers run, then carry on.
            tokio::task::yield_now().await;
            continue;
        }
        let wake = s.queue.next_wake().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(done) = s.writes.join_next(), if !s.writes.is_empty() => {
                if let Ok(outcome) = done {
                    s.finished(outcome);
                }
            }
            u = rx.recv() => match u {
                Some(u) => s.apply(u, Instant::now()),
                None => break,
            },
            _ = tokio::time::sleep_until(wake.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600))), if wake.is_some() => {}
        }
    }
    token.cancel();
    s.writes.shutdown().await;
    drop(s);
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("scheduler tasks did not stop within 5s");
    }
}
