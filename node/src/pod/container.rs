//! One container's lifecycle loop: pull, resolve, start, wait, decide, back off, again.
//!
//! Every step goes through the [`super::state::ContainerRecord`] state machine;
//! the restart decision is the pod's `restartPolicy` and the delay is [`CrashLoop`]'s. A stop
//! signal (pod deletion, agent shutdown) interrupts any step: a running container is stopped
//! within the signal's grace period.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::backoff::{CrashLoop, Retries};
use super::env;
use super::hook;
use super::host_aliases;
use super::prober;
use super::quantity;
use super::sources::{PodFields, Sources};
use super::state::{ContainerRecord, Termination, Transition, WaitingReason};
use super::volumes::{self, VolumeDirs};
use super::{PodContext, PodState, SharedState};
use crate::agent::events::{EventType, PodRef};
use crate::image::{PullPolicy, PullSecrets};
use crate::runtime::{
    ContainerId, ContainerSpec, ContainerStdio, ExitStatus, ImageRequest, PreparedImage, Runtime,
    RuntimeError,
};

/// The port an HTTP pod serves on when its container declares none.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Init or app container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Runs to completion before the app containers start.
    Init,
    /// An init container with `restartPolicy: Always` (a sidecar): started in its turn among
    /// the init containers, it keeps running (restarted whenever it exits, whatever the pod's
    /// policy) beside the app containers, and is stopped once they have ended.
    Sidecar,
    /// An app container.
    App,
    /// An ephemeral container (`kubectl debug`), added to a running pod through
    /// `pods/ephemeralcontainers`: run once, never restarted, never probed, not counted for the
    /// pod's readiness or phase. Its index is into [`PodState::ephemeral`], in the order the
    /// containers were added.
    Ephemeral,
}

/// How a container's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It ended with code 0 and will not restart.
    Succeeded,
    /// It ended in failure and will not restart.
    Failed,
    /// A stop was signalled.
    Stopped,
}

/// Asks every container of a pod to stop within `grace`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopSignal {
    /// Time to end by itself before being killed.
    pub grace: Duration,
    /// The agent is exiting: containers of a runtime that outlives the agent are left running
    /// (for the next agent to adopt) instead of being stopped.
    pub agent_exit: bool,
    /// When the stop was asked for: what is left of `grace` counts from here.
    pub sent: std::time::Instant,
}

impl StopSignal {
    /// A stop asked for now.
    pub fn now(grace: Duration, agent_exit: bool) -> StopSignal {
        StopSignal {
            grace,
            agent_exit,
            sent: std::time::Instant::now(),
        }
    }
}

/// Waits for a stop signal; returns it (zero grace if the sender is gone).
pub async fn stop_signal(mut stop: watch::Receiver<Option<StopSignal>>) -> StopSignal {
    match stop.wait_for(Option::is_some).await {
        Ok(signal) => signal.unwrap_or(StopSignal::now(Duration::ZERO, false)),
        Err(_) => StopSignal::now(Duration::ZERO, false),
    }
}

/// Waits for a stop signal; returns its grace (zero if the sender is gone).
pub async fn stopped(mut stop: watch::Receiver<Option<StopSignal>>) -> Duration {
    match stop.wait_for(Option::is_some).await {
        Ok(signal) => signal.map_or(Duration::ZERO, |s| s.grace),
        Err(_) => Duration::ZERO,
    }
}

/// Sleeps `delay` unless a stop comes first; returns whether it was stopped.
pub async fn sleep_or_stop(delay: Duration, stop: watch::Receiver<Option<StopSignal>>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        _ = stopped(stop) => true,
    }
}

/// What one container loop needs.
pub struct Params {
    /// The node's shared context.
    pub ctx: Arc<PodContext>,
    /// The pod's state.
    pub shared: Arc<SharedState>,
    /// The pod.
    pub pod: Pod,
    /// Init or app container.
    pub kind: Kind,
    /// Its index in its list.
    pub index: usize,
    /// The runtime plugin.
    pub runtime: Arc<dyn Runtime>,
    /// The pod's volumes.
    pub volumes: Arc<VolumeDirs>,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The pod's network namespace, when it has its own.
    pub netns: Option<std::path::PathBuf>,
    /// The pod's `/etc/resolv.conf`, for runtimes that use one.
    pub resolv_conf: Option<String>,
    /// The stop signal.
    pub stop: watch::Receiver<Option<StopSignal>>,
}

impl Params {
    fn container(&self) -> Container {
        let spec = self.pod.spec.clone().unwrap_or_default();
        match self.kind {
            Kind::Init | Kind::Sidecar => {
                spec.init_containers.unwrap_or_default()[self.index].clone()
            }
            Kind::App => spec.containers[self.index].clone(),
            Kind::Ephemeral => self
                .ephemeral()
                .map(ephemeral_as_container)
                .unwrap_or_else(|| Container {
                    name: self.shared.snapshot().ephemeral[self.index].name.clone(),
                    ..Container::default()
                }),
        }
    }

    /// An ephemeral container's spec: the one of the pod's named as its record is.
    fn ephemeral(&self) -> Option<k8s_openapi::api::core::v1::EphemeralContainer> {
        if self.kind != Kind::Ephemeral {
            return None;
        }
        let name = self.shared.snapshot().ephemeral[self.index].name.clone();
        let list = self.pod.spec.as_ref()?.ephemeral_containers.as_ref()?;
        list.iter().find(|c| c.name == name).cloned()
    }

    /// The `targetContainerName` of an ephemeral container: the container whose processes it
    /// sees.
    fn target(&self) -> Option<String> {
        self.ephemeral()?.target_container_name
    }

    fn update(&self, f: impl FnOnce(&mut ContainerRecord)) {
        let (kind, index) = (self.kind, self.index);
        self.shared
            .update(|s: &mut PodState| f(&mut records(s, kind)[index]));
    }

    fn apply(&self, transition: Transition) {
        self.update(|r| {
            if let Err(e) = r.apply(transition) {
                tracing::warn!(error = %e, "container state machine refused a transition");
            }
        });
    }
}

/// The records of a pod's containers of one kind.
fn records(s: &mut PodState, kind: Kind) -> &mut Vec<ContainerRecord> {
    match kind {
        Kind::Init | Kind::Sidecar => &mut s.init,
        Kind::App => &mut s.containers,
        Kind::Ephemeral => &mut s.ephemeral,
    }
}

/// An ephemeral container as the container it runs as: the same fields, less its
/// `targetContainerName`.
pub fn ephemeral_as_container(ec: k8s_openapi::api::core::v1::EphemeralContainer) -> Container {
    let mut value = serde_json::to_value(ec).unwrap_or_default();
    if let Some(o) = value.as_object_mut() {
        o.remove("targetContainerName");
    }
    serde_json::from_value(value).unwrap_or_default()
}

/// The container an ephemeral container's `targetContainerName` names, as the runtime knows
/// it while it runs.
fn running_target(p: &Params, target: &str) -> Result<ContainerId, String> {
    let s = p.shared.snapshot();
    let record = s
        .containers
        .iter()
        .chain(&s.init)
        .find(|c| c.name == target)
        .ok_or_else(|| format!("target container {target} is not in the pod"))?;
    record
        .running_in()
        .map(|(_, id)| id)
        .ok_or_else(|| format!("target container {target} is not running"))
}

/// Runs the container until it ends for good (by the restart policy) or a stop is signalled.
pub async fn run(p: Params) -> Outcome {
    let container = p.container();
    let name = container.name.clone();
    let pref = PodRef {
        namespace: p
            .pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: p.pod.metadata.name.clone().unwrap_or_default(),
        uid: p.pod.metadata.uid.clone().unwrap_or_default(),
    };
    let policy = p.shared.snapshot().policy;
    let image = container.image.clone().unwrap_or_default();
    let pull_policy = container
        .image_pull_policy
        .as_deref()
        .and_then(PullPolicy::parse)
        .unwrap_or_else(|| PullPolicy::default_for(&image));
    let events = &p.ctx.events;
    let event = |t: EventType, reason: &str, message: String| {
        events.record(&pref, Some(&name), t, reason, message)
    };
    let mut crash = CrashLoop::default();
    let mut retries = Retries::default();
    let mut prepared: Option<PreparedImage> = None;
    let (mut run_number, adopt_only) = {
        let mut s = p.shared.snapshot();
        let record = &records(&mut s, p.kind)[p.index];
        // Ended for good under an earlier agent: its outcome stands.
        if record.ended_earlier
            && let Some(t) = record.termination()
        {
            return if t.exit_code == 0 {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
        }
        (record.restart_count as u32, record.adopt_only)
    };
    let stop = || p.stop.clone();
    loop {
        if p.stop.borrow().is_some() {
            return Outcome::Stopped;
        }
        p.apply(Transition::Creating);

        // The image.
        if prepared.is_none() || pull_policy == PullPolicy::Always {
            let request = ImageRequest {
                reference: image.clone(),
                policy: pull_policy,
                secrets: pull_secrets(&p.ctx.client, &p.pod).await,
            };
            if prepared.is_none() {
                event(
                    EventType::Normal,
                    "Pulling",
                    format!("Pulling image \"{image}\""),
                );
            }
            let started = Instant::now();
            let result = tokio::select! {
                r = p.runtime.prepare(&request) => r,
                _ = stopped(stop()) => return Outcome::Stopped,
            };
            match result {
                Ok(image_ready) => {
                    if prepared.is_none() {
                        let message = if image_ready.fetched {
                            format!(
                                "Successfully pulled image \"{image}\" in {}ms",
                                started.elapsed().as_millis()
                            )
                        } else {
                            format!("Container image \"{image}\" already present on machine")
                        };
                        event(EventType::Normal, "Pulled", message);
                    }
                    let (shown, id) = (image_ready.image.clone(), image_ready.image_id.clone());
                    p.update(|r| {
                        r.image = shown;
                        r.image_id = id;
                    });
                    prepared = Some(image_ready);
                }
                Err(e) => {
                    let (reason, message) = match &e {
                        RuntimeError::ImagePull(m) => {
                            event(
                                EventType::Warning,
                                "Failed",
                                format!("Failed to pull image \"{image}\": {m}"),
                            );
                            (WaitingReason::ErrImagePull, m.clone())
                        }
                        other => (WaitingReason::CreateContainerError, other.to_string()),
                    };
                    event(
                        EventType::Warning,
                        "Failed",
                        format!("Error: {}", reason.as_str()),
                    );
                    if fail_and_back_off(&p, &mut retries, reason, message, &image).await {
                        return Outcome::Stopped;
                    }
                    continue;
                }
            }
        }
        let Some(image_ready) = prepared.clone() else {
            continue;
        };

        tracing::debug!(pod = %pref.name, container = %name, "image ready");
        // The configuration.
        let config = tokio::select! {
            c = resolve(&p, &container) => c,
            _ = stopped(stop()) => return Outcome::Stopped,
        };
        let (env, args, mounts) = match config {
            Ok(c) => c,
            Err(message) => {
                event(EventType::Warning, "Failed", format!("Error: {message}"));
                let reason = WaitingReason::CreateContainerConfigError;
                if fail_and_back_off(&p, &mut retries, reason, message, &image).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };

        // An ephemeral container's target: its processes are the ones this one sees.
        let share_processes_with = match p.target().map(|t| running_target(&p, &t)) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(message)) => {
                event(EventType::Warning, "Failed", format!("Error: {message}"));
                let reason = WaitingReason::CreateContainerError;
                if fail_and_back_off(&p, &mut retries, reason, message, &image).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };

        // Start.
        let id = ContainerId::new(&pref.uid, &name, run_number);
        run_number += 1;
        let log = match p.ctx.logs.open(
            &pref.namespace,
            &pref.name,
            &pref.uid,
            &name,
            run_number - 1,
        ) {
            Ok(log) => log,
            Err(e) => {
                let message = format!("cannot open the container log: {e}");
                let reason = WaitingReason::CreateContainerError;
                if fail_and_back_off(&p, &mut retries, reason, message, &image).await {
                    return Outcome::Stopped;
                }
                continue;
            }
        };
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let port = container
            .ports
            .iter()
            .flatten()
            .next()
            .and_then(|p| u16::try_from(p.container_port).ok())
            .unwrap_or(DEFAULT_HTTP_PORT);
        let aliases = host_aliases::of(&p.pod);
        let spec = ContainerSpec {
            id: id.clone(),
            image: image_ready.clone(),
            args,
            command: container
                .command
                .as_ref()
                .map(|c| c.iter().map(|a| env::expand(a, &env)).collect()),
            command_args: container
                .args
                .as_ref()
                .map(|c| c.iter().map(|a| env::expand(a, &env)).collect()),
            working_dir: container.working_dir.clone(),
            // `spec.hostname` when set (StatefulSet and Indexed Job pods), else the pod's name.
            hostname: p
                .pod
                .spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pref.name.clone()),
            env,
            mounts,
            memory_limit: limits
                .get("memory")
                .and_then(|q| quantity::memory_bytes(&q.0)),
            cpu_millis: limits.get("cpu").and_then(|q| quantity::cpu_millis(&q.0)),
            listen: Some(SocketAddr::new(IpAddr::V4(p.ip), port)),
            netns: p.netns.clone(),
            resolver: host_aliases::AliasResolver::wrap(
                aliases.clone(),
                Some(p.ctx.proxy.resolver(&pref.namespace)),
            ),
            host_aliases: aliases,
            resolv_conf: p.resolv_conf.clone(),
            output: log.clone(),
            share_processes_with,
            security: crate::runtime::security::Security::of(
                p.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.security_context.as_ref()),
                container.security_context.as_ref(),
            ),
            host_namespaces: crate::runtime::HostNamespaces {
                pid: p.pod.spec.as_ref().and_then(|s| s.host_pid) == Some(true),
                ipc: p.pod.spec.as_ref().and_then(|s| s.host_ipc) == Some(true),
            },
            adopt_only,
            stdio: ContainerStdio {
                stdin: container.stdin.unwrap_or(false),
                stdin_once: container.stdin_once.unwrap_or(false),
                tty: container.tty.unwrap_or(false),
            },
        };
        tracing::debug!(pod = %pref.name, container = %name, "configuration resolved; starting");
        if let Err(e) = p.runtime.start(spec).await {
            log.finish();
            if adopt_only && matches!(e, RuntimeError::NotFound(_)) {
                // An ephemeral container that ran under an earlier agent and is gone: it
                // ended unseen (kubelet's words for a container it lost).
                let now = Timestamp::now();
                p.update(|r| {
                    r.state = super::state::ContainerState::Terminated(Termination {
                        exit_code: 137,
                        reason: "ContainerStatusUnknown".into(),
                        message: "The container could not be located when the agent restarted. The container used to be Running".into(),
                        started_at: now,
                        finished_at: now,
                    });
                });
                return Outcome::Failed;
            }
            event(EventType::Warning, "Failed", format!("Error: {e}"));
            let reason = match e {
                RuntimeError::Config(_) => WaitingReason::CreateContainerConfigError,
                _ => WaitingReason::CreateContainerError,
            };
            if fail_and_back_off(&p, &mut retries, reason, e.to_string(), &image).await {
                return Outcome::Stopped;
            }
            continue;
        }
        retries.reset();
        tracing::debug!(pod = %pref.name, container = %name, "started");
        // postStart: the container counts as started only once its hook has run.
        let hook_exec = prober::RuntimeExec {
            runtime: p.runtime.as_ref(),
            id: &id,
        };
        let post_start_failure = match hook::post_start(&container, IpAddr::V4(p.ip)) {
            None => None,
            Some(Err(e)) => Some(("PostStart lifecycle hook".to_string(), e)),
            Some(Ok(h)) => tokio::select! {
                // Boxed: hooks are rare, and the container's task should not carry their
                // state inline.
                r = Box::pin(h.run(Some(&hook_exec), POST_START_LIMIT)) => r.err().map(|e| (h.describe(), e)),
                _ = stopped(stop()) => None,
            },
        };
        // Kubelet's words for a failed hook.
        let hook_failed = |reason: &str, (what, error): (String, String)| {
            event(
                EventType::Warning,
                reason,
                format!(
                    "{what} for Container \"{name}\" in Pod \"{}_{}({})\" failed - error: {error}",
                    pref.name, pref.namespace, pref.uid
                ),
            );
        };
        let started_at = Timestamp::now();
        let started = Instant::now();
        // App containers and sidecars are probed; plain init containers run to completion, and
        // ephemeral ones are neither probed nor ever ready.
        let is_app = matches!(p.kind, Kind::App | Kind::Sidecar);
        let has_startup = is_app && container.startup_probe.is_some();
        let has_readiness = is_app && container.readiness_probe.is_some();
        p.update(|r| {
            let _ = r.apply(Transition::Started { at: started_at });
            r.container_id = Some(format!("{}://{id}", p.runtime.handler()));
            r.started = !has_startup;
            r.ready = is_app && !has_readiness && !has_startup;
        });
        // The events after the status: the status patch goes out first, and nobody waits on
        // the events.
        event(
            EventType::Normal,
            "Created",
            format!("Created container {name}"),
        );
        event(
            EventType::Normal,
            "Started",
            format!("Started container {name}"),
        );

        // Probes.
        let probes_stop = CancellationToken::new();
        let unhealthy = Arc::new(Notify::new());
        let probes = is_app.then(|| {
            tokio::spawn(prober::run(prober::Params {
                ctx: p.ctx.clone(),
                shared: p.shared.clone(),
                pod: pref.clone(),
                container: container.clone(),
                sidecar: p.kind == Kind::Sidecar,
                index: p.index,
                ip: p.ip,
                runtime: p.runtime.clone(),
                id: id.clone(),
                unhealthy: unhealthy.clone(),
                stop: probes_stop.clone(),
            }))
        });

        // preStop runs before a stop, within the grace period; the stop gets what is left.
        let (container_ref, hook_exec_ref, hook_failed_ref) =
            (&container, &hook_exec, &hook_failed);
        let pre_stop = |grace: Duration| async move {
            let Some(h) = hook::pre_stop(container_ref, IpAddr::V4(p.ip)) else {
                return grace;
            };
            let began = Instant::now();
            let failure = match h {
                Err(e) => Some(("PreStop lifecycle hook".to_string(), e)),
                Ok(h) => h
                    .run(Some(hook_exec_ref), grace)
                    .await
                    .err()
                    .map(|e| (h.describe(), e)),
            };
            if let Some(f) = failure {
                hook_failed_ref("FailedPreStopHook", f);
            }
            grace.saturating_sub(began.elapsed())
        };

        // Wait for it to end, a stop, or a failed liveness probe.
        let grace = termination_grace(&p.pod);
        let (result, stopped_by_signal) = if let Some(f) = post_start_failure {
            hook_failed("FailedPostStartHook", f);
            event(
                EventType::Normal,
                "Killing",
                "FailedPostStartHook".to_string(),
            );
            (p.runtime.stop(&id, grace).await, false)
        } else {
            tokio::select! {
                r = p.runtime.wait(&id) => (r, false),
                signal = stop_signal(stop()) => {
                    if signal.agent_exit && p.runtime.outlives_agent() {
                        // Left running for the next agent to adopt; its log stays on disk.
                        probes_stop.cancel();
                        if let Some(handle) = probes {
                            let _ = handle.await;
                        }
                        return Outcome::Stopped;
                    }
                    event(EventType::Normal, "Killing", format!("Stopping container {name}"));
                    let left = Box::pin(pre_stop(signal.grace)).await;
                    (p.runtime.stop(&id, left).await, true)
                }
                _ = unhealthy.notified() => {
                    event(EventType::Normal, "Killing",
                        format!("Container {name} failed liveness probe, will be restarted"));
                    let left = Box::pin(pre_stop(grace)).await;
                    (p.runtime.stop(&id, left).await, false)
                }
            }
        };
        probes_stop.cancel();
        if let Some(handle) = probes {
            let _ = handle.await;
        }
        log.finish();
        p.runtime.remove(&id);
        let exit = result.unwrap_or_else(|e| ExitStatus {
            code: 128,
            reason: "Error".into(),
            message: e.to_string(),
        });
        let code = exit.code;
        p.apply(Transition::Exited(Termination {
            exit_code: exit.code,
            reason: exit.reason,
            message: exit.message,
            started_at,
            finished_at: Timestamp::now(),
        }));
        if stopped_by_signal {
            return Outcome::Stopped;
        }
        let restart = match p.kind {
            Kind::Init => code != 0 && policy.retries_init(code),
            Kind::Sidecar => true,
            Kind::App => policy.restarts(code),
            Kind::Ephemeral => false,
        };
        if !restart {
            return if code == 0 {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
        }
        if p.kind == Kind::Init && code == 0 {
            return Outcome::Succeeded;
        }
        let delay = crash.next_delay(&p.ctx.backoff, started.elapsed());
        if !delay.is_zero() {
            let message = format!(
                "back-off {} restarting failed container={name} pod={}_{}({})",
                human(delay),
                pref.name,
                pref.namespace,
                pref.uid
            );
            p.apply(Transition::BackOff { message });
            event(
                EventType::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {name} in pod {}_{}({})",
                    pref.name, pref.namespace, pref.uid
                ),
            );
            if sleep_or_stop(delay, stop()).await {
                return Outcome::Stopped;
            }
        }
    }
}

/// Longest a `postStart` hook may run (kubelet gives it no limit of its own; a hung hook
/// would hold the container in ContainerCreating for good).
const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// How long kubelet waits before syncing a pod again after its sync failed
/// (`workerBackOffPeriod`).
const KUBELET_WORKER_BACKOFF: Duration = Duration::from_secs(10);

/// Reports a failed step, then waits out its backoff. An image pull failure shows
/// `ErrImagePull` until kubelet's next sync of a pod whose sync failed would come (its worker
/// backoff, 10 s; half the delay when that is shorter) and `ImagePullBackOff` for the rest, so
/// a pull backing off for 5 minutes reads `ImagePullBackOff`, as in Kubernetes. Returns whether
/// a stop came meanwhile.
async fn fail_and_back_off(
    p: &Params,
    retries: &mut Retries,
    reason: WaitingReason,
    message: String,
    image: &str,
) -> bool {
    p.apply(Transition::Failed { reason, message });
    let delay = retries.next_delay(&p.ctx.backoff);
    let half = (delay / 2).min(KUBELET_WORKER_BACKOFF);
    if sleep_or_stop(half, p.stop.clone()).await {
        return true;
    }
    p.apply(Transition::BackOff {
        message: format!("Back-off pulling image \"{image}\""),
    });
    if reason == WaitingReason::ErrImagePull {
        let pref = PodRef {
            namespace: p.pod.metadata.namespace.clone().unwrap_or_default(),
            name: p.pod.metadata.name.clone().unwrap_or_default(),
            uid: p.pod.metadata.uid.clone().unwrap_or_default(),
        };
        let name = p.container().name;
        p.ctx.events.record(
            &pref,
            Some(&name),
            EventType::Normal,
            "BackOff",
            format!("Back-off pulling image \"{image}\""),
        );
    }
    sleep_or_stop(delay - half, p.stop.clone()).await
}

/// The container's environment, argv and mounts.
async fn resolve(
    p: &Params,
    container: &Container,
) -> Result<
    (
        Vec<(String, String)>,
        Vec<String>,
        Vec<crate::runtime::Mount>,
    ),
    String,
> {
    let sources = Sources::fetch(&p.ctx.client, &p.pod)
        .await
        .map_err(|e| e.0)?;
    let ip = p.ip.to_string();
    let fields = PodFields {
        pod: &p.pod,
        pod_ip: &ip,
        host_ip: &p.ctx.host_ip,
        node_name: &p.ctx.node_name,
        allocatable: p.ctx.allocatable,
    };
    let links = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let services = if links {
        service_env_of(&p.ctx, &p.pod).await
    } else {
        Vec::new()
    };
    let env = env::resolve_env_over(services, container, &sources, &fields).map_err(|e| e.0)?;
    let args = env::argv(container, &env);
    let uid = p.pod.metadata.uid.as_deref().unwrap_or_default();
    let subpaths = p.ctx.pods_dir.join(uid).join("volume-subpaths");
    let mounts = volumes::mounts(container, &p.volumes, &subpaths).map_err(|e| e.0)?;
    Ok((env, args, mounts))
}

/// The Service variables of the pod's namespace, from the agent's Service lister (before it has
/// synced: from a list; none when the Services cannot be listed).
async fn service_env_of(ctx: &PodContext, pod: &Pod) -> Vec<(String, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    if let Some(services) = ctx.listers.services(ns) {
        return env::service_env(&services);
    }
    let client = &ctx.client;
    let api: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(client.clone(), ns);
    match api.list(&Default::default()).await {
        Ok(list) => env::service_env(&list.items),
        Err(e) => {
            tracing::debug!(namespace = %ns, error = %e, "cannot list Services for the environment");
            Vec::new()
        }
    }
}

/// Credentials from the pod's `imagePullSecrets` (unreadable ones are skipped).
async fn pull_secrets(client: &kube::Client, pod: &Pod) -> PullSecrets {
    let mut secrets = PullSecrets::default();
    let names = pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default();
    if names.is_empty() {
        return secrets;
    }
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for r in names {
        if let Ok(Some(secret)) = api.get_opt(&r.name).await
            && let Some(data) = secret
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
            && let Err(e) = secrets.add_docker_config_json(&data.0)
        {
            tracing::debug!(secret = %r.name, error = %e, "skipping an unusable image pull secret");
        }
    }
    secrets
}

/// The pod's `terminationGracePeriodSeconds` (default 30 s).
pub(crate) fn termination_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

/// `10s`, `2m40s`, `300ms` as Go prints durations (near enough for messages).
fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if !ms.is_multiple_of(1000) {
        format!("{:.1}s", d.as_secs_f64())
    } else if d.as_secs() >= 60 {
        let (m, s) = (d.as_secs() / 60, d.as_secs() % 60);
        format!("{m}m{s}s")
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_go() {
        let table = [
            (300, "300ms"),
            (10_000, "10s"),
            (160_000, "2m40s"),
            (1_500, "1.5s"),
        ];
        for (ms, want) in table {
            assert_eq!(human(Duration::from_millis(ms)), want);
        }
    }
}
