//! Runs one container run's probes: the startup probe until it passes, then readiness (which
//! drives the container's `ready`) and liveness (whose failure restarts the container) on their
//! periods, until the container ends.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Probe as ProbeSpec};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::probe::{Probe, Tracker};
use super::state::ContainerRecord;
use super::{PodContext, SharedState};
use crate::agent::events::{EventType, PodRef};
use crate::runtime::{ContainerId, Runtime};

/// Exec probes through the container's runtime.
/// Runs commands in one container through its runtime plugin (exec probes and hooks).
pub(crate) struct RuntimeExec<'a> {
    /// The container's runtime.
    pub runtime: &'a dyn Runtime,
    /// The container.
    pub id: &'a ContainerId,
}

impl super::probe::Exec for RuntimeExec<'_> {
    fn exec<'a>(
        &'a self,
        command: &'a [String],
        timeout: std::time::Duration,
    ) -> futures::future::BoxFuture<'a, Result<(i32, String), String>> {
        Box::pin(async move {
            self.runtime
                .exec(self.id, command, timeout)
                .await
                .map(|o| (o.code, o.output))
                .map_err(|e| e.to_string())
        })
    }
}

/// What the prober needs.
pub struct Params {
    /// The node's shared context.
    pub ctx: Arc<PodContext>,
    /// The pod's state.
    pub shared: Arc<SharedState>,
    /// The pod.
    pub pod: PodRef,
    /// The app container, or the sidecar (an init container with `restartPolicy: Always`).
    pub container: Container,
    /// Whether it is a sidecar: `index` is then among the init containers.
    pub sidecar: bool,
    /// Its index among the app containers (or the init containers).
    pub index: usize,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The container's runtime (for exec probes).
    pub runtime: Arc<dyn Runtime>,
    /// The container run.
    pub id: ContainerId,
    /// Notified when the container must be restarted (liveness or startup failure).
    pub unhealthy: Arc<Notify>,
    /// Cancelled when the container run ends.
    pub stop: CancellationToken,
}

impl Params {
    /// The probed container's record in `s`.
    fn record<'a>(&self, s: &'a mut super::PodState) -> &'a mut ContainerRecord {
        if self.sidecar {
            &mut s.init[self.index]
        } else {
            &mut s.containers[self.index]
        }
    }
}

/// Runs the probes until `stop`.
pub async fn run(p: Params) {
    let stop = p.stop.clone();
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = probe_all(&p) => {}
    }
}

async fn probe_all(p: &Params) {
    let build = |kind: &str, spec: &Option<ProbeSpec>| -> Option<Probe> {
        let spec = spec.as_ref()?;
        match Probe::from_spec(spec, &p.container, IpAddr::V4(p.ip)) {
            Ok(probe) => Some(probe),
            Err(e) => {
                p.ctx.events.record(
                    &p.pod,
                    Some(&p.container.name),
                    EventType::Warning,
                    "Unhealthy",
                    format!("{kind} probe errored: {e}"),
                );
                None
            }
        }
    };
    let startup = build("Startup", &p.container.startup_probe);
    let readiness = build("Readiness", &p.container.readiness_probe);
    let liveness = build("Liveness", &p.container.liveness_probe);
    let set = |f: &dyn Fn(&mut ContainerRecord)| {
        p.shared.update(|s| f(p.record(s)));
    };
    if let Some(probe) = startup {
        if !watch(p, "Startup", &probe, |passing| passing).await {
            p.unhealthy.notify_one();
            return;
        }
        let no_readiness = readiness.is_none();
        set(&|r: &mut ContainerRecord| {
            r.started = true;
            if no_readiness {
                r.ready = true;
            }
        });
    }
    let readiness_loop = async {
        if let Some(probe) = &readiness {
            watch(p, "Readiness", probe, |passing| {
                set(&|r: &mut ContainerRecord| r.ready = passing);
                true
            })
            .await;
        }
        std::future::pending::<()>().await
    };
    let liveness_loop = async {
        if let Some(probe) = &liveness {
            watch(p, "Liveness", probe, |passing| passing).await;
            p.unhealthy.notify_one();
            return;
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = readiness_loop => {}
        _ = liveness_loop => {}
    }
}

/// Checks `probe` on its period, reporting each failure as an `Unhealthy` event; calls
/// `verdict` when the verdict changes and returns its answer when that is `false` (stop
/// watching) — or, for a startup probe, the first verdict.
async fn watch(p: &Params, kind: &str, probe: &Probe, verdict: impl Fn(bool) -> bool) -> bool {
    tokio::time::sleep(probe.initial_delay).await;
    let mut tracker = Tracker::default();
    loop {
        let exec = RuntimeExec {
            runtime: p.runtime.as_ref(),
            id: &p.id,
        };
        let result = probe.check(Some(&exec)).await;
        if kind == "Readiness" {
            let failure = result
                .as_ref()
                .err()
                .map(|m| format!("Readiness probe failed: {m}"));
            let unchanged = p.record(&mut p.shared.snapshot()).probe_failure == failure;
            if !unchanged {
                p.shared
                    .update(|s| p.record(s).probe_failure = failure.clone());
            }
        }
        if let Err(message) = &result {
            p.ctx.events.record(
                &p.pod,
                Some(&p.container.name),
                EventType::Warning,
                "Unhealthy",
                format!("{kind} probe failed: {message}"),
            );
        }
        if let Some(passing) = tracker.observe(
            result.is_ok(),
            probe.success_threshold,
            probe.failure_threshold,
        ) {
            let keep_going = verdict(passing);
            if kind == "Startup" || !keep_going {
                return passing;
            }
        }
        tokio::time::sleep(probe.period).await;
    }
}
