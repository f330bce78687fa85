//! One pod's worker: set-up, init containers, app containers, deletion, clean-up.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::node::v1::RuntimeClass;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::backoff::Retries;
use super::container::{self, Kind, Outcome, StopSignal, termination_grace};
use super::sources::{PodFields, Sources};
use super::state::{ContainerRecord, PodPhase, RestartPolicy, Transition, WaitingReason};
use super::volumes::{self, VolumeDirs};
use super::{PodContext, PodState, SharedState};
use crate::agent::events::{EventType, PodRef};
use crate::runtime::{PodNetwork, Runtime, WASMTIME_HANDLER};

/// Longest wait for a pod's first status report (see `write_status`).
const FIRST_REPORT_AFTER: Duration = Duration::from_millis(100);

/// Extra time, beyond the grace period, for containers to report that they stopped.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// The dispatcher's handle on a pod worker.
#[derive(Debug)]
pub struct PodWorker {
    pod: watch::Sender<Pod>,
    gone: CancellationToken,
}

impl PodWorker {
    /// Starts a worker for `pod` on `tasks`; it stops its containers (without deleting the pod)
    /// when `shutdown` is cancelled.
    pub fn spawn(
        ctx: Arc<PodContext>,
        pod: Pod,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> PodWorker {
        let (tx, rx) = watch::channel(pod);
        let gone = CancellationToken::new();
        tasks.spawn(run(ctx, rx, gone.clone(), shutdown));
        PodWorker { pod: tx, gone }
    }

    /// Passes on a newer version of the pod.
    pub fn update(&self, pod: Pod) {
        self.pod.send_replace(pod);
    }

    /// The pod is gone from the API: stop at once and clean up.
    pub fn gone(&self) {
        self.gone.cancel();
    }
}

/// Why the worker ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The pod is being deleted gracefully.
    Deleting,
    /// The pod disappeared from the API.
    Gone,
    /// The agent is shutting down.
    Shutdown,
}

fn pod_ref(pod: &Pod) -> PodRef {
    PodRef {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

fn deleting(pod: &Pod) -> Option<Duration> {
    pod.metadata.deletion_timestamp.as_ref()?;
    let grace = pod.metadata.deletion_grace_period_seconds.map_or_else(
        || termination_grace(pod),
        |g| Duration::from_secs(g.max(0) as u64),
    );
    Some(grace)
}

/// When the pod's `activeDeadlineSeconds` runs out, counted from its start time (it may be
/// changed while the pod runs); `None` without one, or once it has been acted on.
fn active_deadline(pod: &Pod, shared: &SharedState) -> Option<tokio::time::Instant> {
    let seconds = pod.spec.as_ref()?.active_deadline_seconds?;
    let state = shared.snapshot();
    if state.deadline_exceeded || state.phase.is_terminal() {
        return None;
    }
    let started = state.start_time?;
    let elapsed = Timestamp::now()
        .duration_since(started)
        .try_into()
        .unwrap_or(Duration::ZERO);
    let left = Duration::from_secs(seconds.max(0) as u64).saturating_sub(elapsed);
    Some(tokio::time::Instant::now() + left)
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until_deadline(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run(
    ctx: Arc<PodContext>,
    mut pod_rx: watch::Receiver<Pod>,
    gone: CancellationToken,
    shutdown: CancellationToken,
) {
    let pod = pod_rx.borrow_and_update().clone();
    let pref = pod_ref(&pod);
    tracing::debug!(pod = %pref.name, "pod worker started");
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let policy = RestartPolicy::parse(spec.restart_policy.as_deref());
    let previous_phase = status.phase.as_deref().and_then(PodPhase::parse);
    let restarts = |name: &str, list: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        list.iter()
            .flatten()
            .find(|c| c.name == name)
            .map_or(0, |c| c.restart_count)
    };
    let init: Vec<ContainerRecord> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| {
            let sidecar = c.restart_policy.as_deref() == Some("Always");
            let record = ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or(""))
                .with_restart_count(restarts(&c.name, &status.init_container_statuses))
                .as_sidecar(sidecar);
            // An init container that succeeded under an earlier agent is not run again.
            carry_over(record, &status.init_container_statuses, |code| {
                !sidecar && code == 0
            })
        })
        .collect();
    let containers: Vec<ContainerRecord> = spec
        .containers
        .iter()
        .map(|c| {
            let image = c.image.as_deref().unwrap_or("");
            let record = if init.is_empty() {
                ContainerRecord::new(&c.name, image)
            } else {
                ContainerRecord::initializing(&c.name, image)
            };
            let record = record.with_restart_count(restarts(&c.name, &status.container_statuses));
            // One that ended for good under an earlier agent (restartPolicy Never, or
            // OnFailure and it succeeded) is not run again.
            carry_over(record, &status.container_statuses, |code| {
                !policy.restarts(code)
            })
        })
        .collect();
    // Ephemeral containers never restart: one that ended under an earlier agent stays ended.
    let ephemeral: Vec<ContainerRecord> = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| {
            let mut record = ContainerRecord::new(&c.name, c.image.as_deref().unwrap_or(""));
            let statuses = status.ephemeral_container_statuses.iter().flatten();
            record.adopt_only = statuses
                .filter(|s| s.name == c.name)
                .any(|s| s.state.as_ref().is_some_and(|s| s.running.is_some()));
            carry_over(record, &status.ephemeral_container_statuses, |_| true)
        })
        .collect();
    if previous_phase.is_some_and(PodPhase::is_terminal) {
        // Finished under an earlier agent: nothing runs again, and the status it reported
        // stays (a fresh state here would report the pod Pending again). Its logs are still
        // on disk and are served as they were.
        for c in init.iter().chain(&containers).chain(&ephemeral) {
            ctx.logs
                .adopt(&pref.namespace, &pref.name, &pref.uid, &c.name);
        }
        let end = wait_for_end(&mut pod_rx, &gone, &shutdown).await;
        finish(&ctx, &pref, end).await;
        return;
    }
    for c in init
        .iter()
        .chain(&containers)
        .chain(&ephemeral)
        .filter(|c| c.ended_earlier)
    {
        ctx.logs
            .adopt(&pref.namespace, &pref.name, &pref.uid, &c.name);
    }
    let wanted_ip: Option<Ipv4Addr> = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok());
    let mut state = PodState::new(policy, init, containers, &ctx.host_ip);
    state.ephemeral = ephemeral;
    state.start_time = Some(status.start_time.map_or_else(Timestamp::now, |t| t.0));
    state.readiness_gates = PodState::gates_of(&pod);
    let shared = SharedState::new(state);
    let _registered = ctx
        .registry
        .register(&pref.uid, &pref.namespace, &pref.name, shared.clone());

    let writer_stop = CancellationToken::new();
    let mut writer = Some(tokio::spawn(write_status(
        ctx.clone(),
        pref.clone(),
        shared.clone(),
        writer_stop.clone(),
    )));

    let (stop_tx, stop_rx) = watch::channel(None);
    let end = if let Some(grace) = deleting(&pod) {
        let _ = grace;
        Some(End::Deleting)
    } else {
        let body = run_pod(
            ctx.clone(),
            shared.clone(),
            pod_rx.clone(),
            wanted_ip,
            stop_rx,
        );
        tokio::pin!(body);
        let end = loop {
            let deadline = active_deadline(&pod_rx.borrow(), &shared);
            tokio::select! {
                _ = &mut body => break None,
                () = sleep_until_deadline(deadline) => {
                    // Kubelet's active deadline: the containers stop (with the pod's grace
                    // period) and the pod fails, but stays until it is deleted.
                    let grace = termination_grace(&pod_rx.borrow());
                    ctx.events.record(
                        &pref,
                        None,
                        EventType::Warning,
                        super::status::DEADLINE_EXCEEDED,
                        super::status::DEADLINE_MESSAGE,
                    );
                    shared.update(|s| s.deadline_exceeded = true);
                    stop_tx.send_replace(Some(StopSignal::now(grace, false)));
                    if tokio::time::timeout(grace + STOP_SLACK, &mut body).await.is_err() {
                        tracing::warn!(pod = %pref.name, "containers did not stop in time");
                    }
                    break None;
                }
                changed = pod_rx.changed() => match changed {
                    Ok(()) => {
                        let latest = pod_rx.borrow_and_update().clone();
                        if let Some(grace) = deleting(&latest) {
                            stop_tx.send_replace(Some(StopSignal::now(grace, false)));
                            break Some((End::Deleting, grace));
                        }
                        // Conditions others set for the pod's readiness gates (a pod without
                        // gates, the common case, skips this).
                        let gates = PodState::gates_of(&latest);
                        if !gates.is_empty() && gates != shared.snapshot().readiness_gates {
                            shared.update(|s| s.readiness_gates = gates);
                        }
                    }
                    // The dispatcher dropped its handle: either the pod is gone (it cancels
                    // `gone` first, and both branches can be ready at once) or the agent stops.
                    Err(_) if gone.is_cancelled() => {
                        stop_tx.send_replace(Some(StopSignal::now(Duration::ZERO, false)));
                        break Some((End::Gone, Duration::ZERO));
                    }
                    Err(_) => {
                        break Some((End::Shutdown, ctx.shutdown_grace));
                    }
                },
                _ = gone.cancelled() => {
                    stop_tx.send_replace(Some(StopSignal::now(Duration::ZERO, false)));
                    break Some((End::Gone, Duration::ZERO));
                }
                _ = shutdown.cancelled() => break Some((End::Shutdown, ctx.shutdown_grace)),
            }
        };
        if let Some((end, grace)) = end {
            if end == End::Shutdown {
                // The agent stops, not the pod: how its containers end from here (a Wasm
                // container ends with the agent's process) is not the pod's state, so the
                // writer reports what it has and stops first.
                writer_stop.cancel();
                if let Some(w) = writer.take() {
                    let _ = w.await;
                }
                stop_tx.send_replace(Some(StopSignal::now(grace, true)));
            }
            if tokio::time::timeout(grace + STOP_SLACK, body)
                .await
                .is_err()
            {
                tracing::warn!(pod = %pref.name, "containers did not stop in time");
            }
            Some(end)
        } else {
            None
        }
    };
    let end = match end {
        Some(end) => end,
        None => wait_for_end(&mut pod_rx, &gone, &shutdown).await,
    };
    // Let the writer report the last state (its containers' terminations) before leaving.
    writer_stop.cancel();
    if let Some(w) = writer {
        let _ = w.await;
    }
    finish(&ctx, &pref, end).await;
}

/// What follows a pod's end: a deleted pod's object is removed for good (grace period 0), and
/// unless the agent is only stopping, the pod's address, network, logs and files go.
async fn finish(ctx: &PodContext, pref: &PodRef, end: End) {
    if end == End::Deleting {
        let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pref.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(pref.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = api.delete(&pref.name, &params).await {
            tracing::debug!(pod = %pref.name, error = %e, "cannot finish deleting the pod");
        }
    }
    if end != End::Shutdown {
        ctx.addresses.release(&pref.uid);
        for runtime in ctx.runtimes.values() {
            runtime.remove_pod_network(&pref.uid).await;
        }
        ctx.logs.remove_pod(&pref.namespace, &pref.name, &pref.uid);
        let _ = tokio::fs::remove_dir_all(ctx.pods_dir.join(&pref.uid)).await;
    }
}

/// After the pod finished (or could not start): waits until it is deleted or the agent stops.
async fn wait_for_end(
    pod_rx: &mut watch::Receiver<Pod>,
    gone: &CancellationToken,
    shutdown: &CancellationToken,
) -> End {
    loop {
        if deleting(&pod_rx.borrow_and_update()).is_some() {
            return End::Deleting;
        }
        tokio::select! {
            changed = pod_rx.changed() => if changed.is_err() {
                return if gone.is_cancelled() { End::Gone } else { End::Shutdown };
            },
            _ = gone.cancelled() => return End::Gone,
            _ = shutdown.cancelled() => return End::Shutdown,
        }
    }
}

/// Sets the pod up and runs its containers until they all end for good or a stop is signalled.
async fn run_pod(
    ctx: Arc<PodContext>,
    shared: Arc<SharedState>,
    pod_rx: watch::Receiver<Pod>,
    wanted_ip: Option<Ipv4Addr>,
    stop: watch::Receiver<Option<StopSignal>>,
) {
    let pod = pod_rx.borrow().clone();
    let pref = pod_ref(&pod);
    let spec = pod.spec.clone().unwrap_or_default();
    let Some(runtime) = retry_setup(&ctx, &shared, &pref, &stop, SANDBOX_FAILED, || {
        runtime_for(&ctx, &pod)
    })
    .await
    else {
        return;
    };
    tracing::debug!(pod = %pref.name, "runtime resolved");
    let network = if spec.host_network == Some(true) {
        PodNetwork::Node { note: None }
    } else {
        let Some(network) = retry_setup(&ctx, &shared, &pref, &stop, SANDBOX_FAILED, || async {
            runtime
                .pod_network(&pref.uid, wanted_ip)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        else {
            return;
        };
        network
    };
    let (ip, netns) = match network {
        PodNetwork::Own {
            ip,
            netns,
            description,
        } => {
            let message = format!("Pod network: {description}");
            ctx.events
                .record(&pref, None, EventType::Normal, "PodNetwork", &message);
            (ip, Some(netns))
        }
        PodNetwork::Node { note } => {
            let Some(ip) = ctx.addresses.allocate(&pref.uid, wanted_ip) else {
                shared.update(|s| {
                    for c in s.init.iter_mut().chain(s.containers.iter_mut()) {
                        let _ = c.apply(Transition::Failed {
                            reason: WaitingReason::CreateContainerConfigError,
                            message: "no free pod address in this node's pod range".into(),
                        });
                    }
                });
                return;
            };
            if let Some(note) = note {
                let message = format!("Pod network: {note} ({ip})");
                ctx.events
                    .record(&pref, None, EventType::Normal, "PodNetwork", &message);
            }
            (ip, None)
        }
    };
    shared.update(|s| s.pod_ip = Some(ip));
    tracing::debug!(pod = %pref.name, %ip, "network ready");
    let resolv_conf = runtime.uses_resolv_conf().then(|| {
        // The cluster's server is on the pod bridge: reachable from the pod's own network
        // and from the node's (host-network pods), not from a container sharing the node's
        // network because there is no bridge.
        let reachable = netns.is_some() || spec.host_network == Some(true);
        let cluster = ctx.cluster_dns.as_ref().filter(|_| reachable);
        let dns = crate::dns::pod_config::for_pod(&spec, &pref.namespace, cluster, &ctx.node_dns);
        for (reason, message) in &dns.warnings {
            ctx.events
                .record(&pref, None, EventType::Warning, reason, message);
        }
        dns.conf.render()
    });
    let pod_dir = ctx.pods_dir.join(&pref.uid);
    let Some((volumes, sources)) = retry_setup(&ctx, &shared, &pref, &stop, MOUNT_FAILED, || {
        materialise_volumes(&ctx, &pod, ip, &pod_dir)
    })
    .await
    else {
        return;
    };
    let volumes = Arc::new(volumes);
    tracing::debug!(pod = %pref.name, "volumes ready");
    // Sidecars stop after the app containers, on a signal of their own; a pod without sidecars
    // (most) carries no state for them.
    let is_sidecar =
        |c: &k8s_openapi::api::core::v1::Container| c.restart_policy.as_deref() == Some("Always");
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let mut sidecars = init
        .iter()
        .any(is_sidecar)
        .then(|| (tokio::task::JoinSet::new(), watch::channel(None)));
    let run_in = |pod: Pod, kind: Kind, index: usize, stop: watch::Receiver<Option<StopSignal>>| {
        container::run(container::Params {
            ctx: ctx.clone(),
            shared: shared.clone(),
            pod,
            kind,
            index,
            runtime: runtime.clone(),
            volumes: volumes.clone(),
            ip,
            netns: netns.clone(),
            resolv_conf: resolv_conf.clone(),
            stop,
        })
    };
    let run_with = |kind: Kind, index: usize, stop: watch::Receiver<Option<StopSignal>>| {
        run_in(pod.clone(), kind, index, stop)
    };
    let run = |kind: Kind, index: usize| run_with(kind, index, stop.clone());
    let containers = async {
        for (i, c) in init.iter().enumerate() {
            if let Some((set, (_, sidecar_stop))) = sidecars.as_mut().filter(|_| is_sidecar(c)) {
                set.spawn(run_with(Kind::Sidecar, i, sidecar_stop.clone()));
                let probed = c.startup_probe.is_some();
                if !sidecar_started(&shared, i, probed, &stop).await {
                    return;
                }
                continue;
            }
            match run(Kind::Init, i).await {
                Outcome::Succeeded => {}
                Outcome::Failed => {
                    shared.update(|s| s.init_failed = true);
                    return;
                }
                Outcome::Stopped => return,
            }
        }
        shared.update(|s| s.init_done = true);
        join_all((0..spec.containers.len()).map(|i| run(Kind::App, i))).await;
    };
    // Ephemeral containers (`kubectl debug`) start as they are added, beside the others, on a
    // stop signal of their own: the pod's, passed on, or one of their own once the app
    // containers have ended.
    let (ephemeral_stop, ephemeral_stop_rx) = watch::channel(None);
    let mut ephemerals = tokio::task::JoinSet::new();
    let mut ephemeral_rx = pod_rx.clone();
    let add_ephemerals = async {
        let pod_rx = &mut ephemeral_rx;
        let mut started = std::collections::HashSet::new();
        loop {
            let latest = pod_rx.borrow_and_update().clone();
            let added = latest
                .spec
                .iter()
                .flat_map(|s| s.ephemeral_containers.iter().flatten());
            for c in added {
                if !started.insert(c.name.clone()) {
                    continue;
                }
                let index = shared.update(|s| {
                    s.ephemeral
                        .iter()
                        .position(|r| r.name == c.name)
                        .unwrap_or_else(|| {
                            let image = c.image.as_deref().unwrap_or("");
                            s.ephemeral.push(ContainerRecord::new(&c.name, image));
                            s.ephemeral.len() - 1
                        })
                });
                let stop = ephemeral_stop_rx.clone();
                ephemerals.spawn(run_in(latest.clone(), Kind::Ephemeral, index, stop));
            }
            if pod_rx.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    let pass_stop_on = async {
        let signal = container::stop_signal(stop.clone()).await;
        ephemeral_stop.send_replace(Some(signal));
        std::future::pending().await
    };
    // The volumes follow their sources for as long as the containers run.
    tokio::select! {
        () = containers => {}
        () = volume_refresher(&ctx, &pref, pod_rx, ip, &pod_dir, sources) => {}
        () = add_ephemerals => {}
        () = pass_stop_on => {}
    }
    if !ephemerals.is_empty() {
        let signal = match *stop.borrow() {
            Some(s) => s,
            None => StopSignal::now(termination_grace(&pod), false),
        };
        // Unless the pod's own stop was passed on already.
        ephemeral_stop.send_if_modified(|s| {
            let unsent = s.is_none();
            if unsent {
                *s = Some(signal);
            }
            unsent
        });
        while ephemerals.join_next().await.is_some() {}
    }
    if let Some((mut set, (sidecar_stop, _))) = sidecars {
        // The app containers have ended (for good, or stopped): the sidecars go now, within
        // what the pod's stop left of its grace period (at least kubelet's 2 s minimum, unless
        // the stop was forced), or within the whole of it when the app containers finished.
        let signal = match *stop.borrow() {
            Some(s) => StopSignal {
                grace: sidecar_grace(s.grace, s.sent.elapsed()),
                ..s
            },
            None => StopSignal::now(termination_grace(&pod), false),
        };
        sidecar_stop.send_replace(Some(signal));
        while set.join_next().await.is_some() {}
    }
}

/// `record`, marked as ended for good when the pod's status (written by an earlier agent)
/// shows it terminated with an exit code `final_exit` says is final.
fn carry_over(
    record: ContainerRecord,
    statuses: &Option<Vec<k8s_openapi::api::core::v1::ContainerStatus>>,
    final_exit: impl Fn(i32) -> bool,
) -> ContainerRecord {
    let status = statuses.iter().flatten().find(|c| c.name == record.name);
    let Some(status) = status else {
        return record;
    };
    let Some(t) = status.state.as_ref().and_then(|s| s.terminated.as_ref()) else {
        return record;
    };
    if !final_exit(t.exit_code) {
        return record;
    }
    let (Some(started), Some(finished)) = (&t.started_at, &t.finished_at) else {
        return record;
    };
    let termination = super::state::Termination {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone().unwrap_or_default(),
        started_at: started.0,
        finished_at: finished.0,
    };
    record.ended_earlier(
        termination,
        (&status.image, &status.image_id),
        status.container_id.as_deref(),
    )
}

/// kubelet's `minimumGracePeriodInSeconds`: the least time a container is given to stop.
const MIN_GRACE: Duration = Duration::from_secs(2);

/// The grace period left to the sidecars when the app containers have stopped `elapsed`
/// after a stop with `grace`: the rest of it, but not less than [`MIN_GRACE`]; a forced stop
/// (no grace) stays forced.
fn sidecar_grace(grace: Duration, elapsed: Duration) -> Duration {
    if grace.is_zero() {
        return grace;
    }
    grace.saturating_sub(elapsed).max(MIN_GRACE)
}

/// Waits until sidecar `index` runs and has passed its startup probe (`probed`: it has one),
/// as the next init container waits for it; `false` if the pod is stopped first. A sidecar
/// without a startup probe that has started once counts as started, even if it exited since
/// (it is restarted on its own).
async fn sidecar_started(
    shared: &SharedState,
    index: usize,
    probed: bool,
    stop: &watch::Receiver<Option<StopSignal>>,
) -> bool {
    loop {
        if stop.borrow().is_some() {
            return false;
        }
        let c = &shared.snapshot().init[index];
        let ran = c.termination().is_some() || c.last_termination.is_some();
        if (c.is_running() && c.started) || (!probed && ran) {
            return true;
        }
        tokio::time::sleep(SIDECAR_POLL).await;
    }
}

/// How often a pod waiting for a sidecar to start looks again.
const SIDECAR_POLL: Duration = Duration::from_millis(20);

/// Brings the pod's API-sourced volumes up to date, as kubelet's pod sync does: every
/// `sync_frequency` from freshly read ConfigMaps and Secrets, and at once when the pod's labels
/// or annotations change (the downward API's files). A volume that cannot be brought up to date
/// keeps its files, and a `FailedMount` warning says why (once per distinct reason). Never
/// returns while the pod has such volumes.
fn volume_refresher<'a>(
    ctx: &'a PodContext,
    pref: &'a PodRef,
    pod_rx: watch::Receiver<Pod>,
    ip: Ipv4Addr,
    pod_dir: &'a std::path::Path,
    sources: Sources,
) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    let refreshed = |v: &k8s_openapi::api::core::v1::Volume| {
        v.config_map.is_some()
            || v.secret.is_some()
            || v.downward_api.is_some()
            || v.projected.is_some()
    };
    let needed = pod_rx
        .borrow()
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(refreshed);
    // Boxed, and only when needed: a pod without such volumes (most) carries no refresher
    // state for its whole life.
    if needed {
        Box::pin(keep_volumes_current(
            ctx, pref, pod_rx, ip, pod_dir, sources,
        ))
    } else {
        Box::pin(std::future::pending())
    }
}

/// See [`volume_refresher`].
async fn keep_volumes_current(
    ctx: &PodContext,
    pref: &PodRef,
    mut pod_rx: watch::Receiver<Pod>,
    ip: Ipv4Addr,
    pod_dir: &std::path::Path,
    mut sources: Sources,
) {
    let metadata = |p: &Pod| (p.metadata.labels.clone(), p.metadata.annotations.clone());
    let mut seen = metadata(&pod_rx.borrow_and_update());
    let mut last_error: Option<String> = None;
    let ip = ip.to_string();
    loop {
        let fetch = tokio::select! {
            () = tokio::time::sleep(ctx.sync_frequency) => true,
            changed = pod_rx.changed() => {
                if changed.is_err() {
                    // The worker is ending; its stop signal ends this too.
                    return std::future::pending().await;
                }
                let now = metadata(&pod_rx.borrow_and_update());
                if now == seen {
                    continue;
                }
                seen = now;
                false
            }
        };
        let pod = pod_rx.borrow().clone();
        let result = async {
            if fetch {
                sources = Sources::fetch(&ctx.client, &pod).await?;
            }
            let fields = PodFields {
                pod: &pod,
                pod_ip: &ip,
                host_ip: &ctx.host_ip,
                node_name: &ctx.node_name,
                allocatable: ctx.allocatable,
            };
            volumes::refresh(&pod, &sources, &fields, &pod_dir.join("volumes"))
        }
        .await;
        match result {
            Ok(changed) => {
                if !changed.is_empty() {
                    tracing::debug!(pod = %pref.name, volumes = ?changed, "volumes updated");
                }
                last_error = None;
            }
            Err(e) if last_error.as_deref() != Some(e.0.as_str()) => {
                let message = format!("MountVolume.SetUp failed: {e}");
                ctx.events
                    .record(pref, None, EventType::Warning, "FailedMount", &message);
                last_error = Some(e.0);
            }
            Err(_) => {}
        }
    }
}

/// How a failed set-up step is reported: the Warning event's reason and the waiting reason of
/// every container.
type SetupFailure = (&'static str, WaitingReason);

/// A sandbox step (runtime, network): kubelet's `FailedCreatePodSandBox`, and a configuration
/// error the user must fix.
const SANDBOX_FAILED: SetupFailure = (
    "FailedCreatePodSandBox",
    WaitingReason::CreateContainerConfigError,
);

/// Volumes: kubelet's `FailedMount`; the containers stay `ContainerCreating` meanwhile.
const MOUNT_FAILED: SetupFailure = ("FailedMount", WaitingReason::ContainerCreating);

/// Runs a set-up step until it succeeds, reporting failures as `failure` says and backing off;
/// `None` when stopped meanwhile.
async fn retry_setup<T, F, Fut>(
    ctx: &PodContext,
    shared: &SharedState,
    pref: &PodRef,
    stop: &watch::Receiver<Option<StopSignal>>,
    failure: SetupFailure,
    mut step: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut retries = Retries::default();
    loop {
        let result = tokio::select! {
            r = step() => r,
            _ = container::stopped(stop.clone()) => return None,
        };
        match result {
            Ok(v) => return Some(v),
            Err(message) => {
                let (event, waiting) = failure;
                ctx.events
                    .record(pref, None, EventType::Warning, event, &message);
                shared.update(|s| {
                    for c in s.init.iter_mut().chain(s.containers.iter_mut()) {
                        let _ = c.apply(Transition::Failed {
                            reason: waiting,
                            message: message.clone(),
                        });
                    }
                });
                let delay = retries.next_delay(&ctx.backoff);
                if container::sleep_or_stop(delay, stop.clone()).await {
                    return None;
                }
            }
        }
    }
}

/// The runtime plugin for the pod's RuntimeClass (none named: wasmtime).
async fn runtime_for(ctx: &PodContext, pod: &Pod) -> Result<Arc<dyn Runtime>, String> {
    let class = pod.spec.as_ref().and_then(|s| s.runtime_class_name.clone());
    let handler = match class {
        None => WASMTIME_HANDLER.to_string(),
        Some(name) => match ctx.listers.runtime_class(&name) {
            Some(rc) => rc.handler.clone(),
            None => {
                let api: Api<RuntimeClass> = Api::all(ctx.client.clone());
                match api.get_opt(&name).await {
                    Ok(Some(rc)) => rc.handler,
                    Ok(None) => return Err(format!("RuntimeClass \"{name}\" not found")),
                    Err(e) => return Err(format!("cannot read RuntimeClass \"{name}\": {e}")),
                }
            }
        },
    };
    ctx.runtimes.get(&handler).cloned().ok_or_else(|| {
        format!(
            "runtime handler \"{handler}\" is not available on node {} (it has: {})",
            ctx.node_name,
            ctx.runtimes.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })
}

/// The pod's volumes, and the ConfigMaps and Secrets they were made from.
async fn materialise_volumes(
    ctx: &PodContext,
    pod: &Pod,
    ip: Ipv4Addr,
    pod_dir: &std::path::Path,
) -> Result<(VolumeDirs, Sources), String> {
    let mut sources = Sources::fetch(&ctx.client, pod).await.map_err(|e| e.0)?;
    sources.claims = super::claims::resolve(&ctx.client, pod, &ctx.volumes_dir)
        .await
        .map_err(|e| format!("MountVolume.SetUp failed: {}", e.0))?;
    let ip = ip.to_string();
    let fields = PodFields {
        pod,
        pod_ip: &ip,
        host_ip: &ctx.host_ip,
        node_name: &ctx.node_name,
        allocatable: ctx.allocatable,
    };
    let volumes = volumes::materialise(pod, &sources, &fields, &pod_dir.join("volumes"))
        .map_err(|e| format!("MountVolume.SetUp failed: {e}"))?;
    Ok((volumes, sources))
}

/// Patches `pods/status` whenever the state changes, until `stop` (then once more).
async fn write_status(
    ctx: Arc<PodContext>,
    pref: PodRef,
    shared: Arc<SharedState>,
    stop: CancellationToken,
) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &pref.namespace);
    let mut last: Option<serde_json::Value> = None;
    // The first report waits until the pod leaves Pending (a Wasm container is usually Running
    // within milliseconds) or FIRST_REPORT_AFTER passes, whichever comes first: a pod that
    // starts at once costs one status write instead of one per set-up step (its address, then
    // its running containers).
    let first_deadline = tokio::time::Instant::now() + FIRST_REPORT_AFTER;
    let mut first = true;
    loop {
        let stopping = if first {
            tokio::select! {
                _ = shared.changed() => {
                    if shared.snapshot().phase == PodPhase::Pending
                        && tokio::time::Instant::now() < first_deadline
                    {
                        continue;
                    }
                    false
                }
                _ = tokio::time::sleep_until(first_deadline) => false,
                _ = stop.cancelled() => true,
            }
        } else {
            tokio::select! {
                _ = shared.changed() => false,
                _ = stop.cancelled() => true,
            }
        };
        first = false;
        // Sent as a strategic merge patch, as kubelet's: conditions merge by type, so those that
        // others set (readiness gates, DisruptionTarget) stay. The lists of container statuses
        // are replaced whole; a condition's reason and message, when it has none now, are
        // deleted explicitly (null) rather than left as they were.
        let mut status = serde_json::to_value(shared.snapshot().status()).unwrap_or_default();
        for c in status["conditions"].as_array_mut().into_iter().flatten() {
            if let Some(c) = c.as_object_mut() {
                for key in ["reason", "message"] {
                    c.entry(key).or_insert(serde_json::Value::Null);
                }
            }
        }
        if last.as_ref() != Some(&status) {
            let patch = json!({"status": status});
            match api
                .patch_status(
                    &pref.name,
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::debug!(pod = %pref.name, phase = %status["phase"], "status patched");
                    last = Some(status)
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) => {
                    tracing::debug!(pod = %pref.name, error = %e, "cannot patch pod status; retrying");
                    if !stopping {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        shared.update(|_| ());
                    }
                }
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_get_what_the_app_containers_left_of_the_grace_period() {
        let s = Duration::from_secs;
        // Apps stopped after 3 s of a 30 s grace period: 27 s left.
        assert_eq!(sidecar_grace(s(30), s(3)), s(27));
        // Apps used it all (or more): kubelet's 2 s minimum.
        assert_eq!(sidecar_grace(s(30), s(29)), MIN_GRACE);
        assert_eq!(sidecar_grace(s(30), s(40)), MIN_GRACE);
        // A forced stop stays forced.
        assert_eq!(sidecar_grace(Duration::ZERO, s(1)), Duration::ZERO);
    }
}
