//! What the agent knows about a pod ([`PodState`]) and the `status` it reports from it.
//!
//! [`PodState::refresh`] re-derives the phase (moving forward only) and the conditions
//! (`PodScheduled`, `Initialized`, `ContainersReady`, `Ready`), stamping `lastTransitionTime`
//! when a condition changes; [`PodState::status`] renders the Kubernetes `PodStatus` (pure).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState as K8sState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::state::{
    ContainerRecord, ContainerState, PodPhase, RestartPolicy, Termination, derive_phase,
};

/// The pod's reason once it ran past its `activeDeadlineSeconds` (kubelet's).
pub const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";
/// The pod's message then (kubelet's).
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// The condition types, in the order kubectl shows them.
const CONDITIONS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

/// Everything the agent reports about one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodState {
    /// The phase reported.
    pub phase: PodPhase,
    /// The pod's `restartPolicy`.
    pub policy: RestartPolicy,
    /// Init containers, in order.
    pub init: Vec<ContainerRecord>,
    /// App containers, in order.
    pub containers: Vec<ContainerRecord>,
    /// Ephemeral containers (`kubectl debug`), in the order they were added. They are never
    /// restarted and count neither for the phase nor for readiness.
    pub ephemeral: Vec<ContainerRecord>,
    /// Every init container succeeded (true when there are none).
    pub init_done: bool,
    /// An init container failed for good.
    pub init_failed: bool,
    /// The pod's address.
    pub pod_ip: Option<Ipv4Addr>,
    /// The node's address.
    pub host_ip: String,
    /// When the agent accepted the pod.
    pub start_time: Option<Timestamp>,
    /// The pod ran longer than its `activeDeadlineSeconds` and was stopped: it is Failed, with
    /// kubelet's reason `DeadlineExceeded`.
    pub deadline_exceeded: bool,
    /// The pod's `readinessGates`: each condition type, and its status in the pod's
    /// conditions as others set it (`None` while the condition does not exist).
    pub readiness_gates: Vec<(String, Option<String>)>,
    /// Condition type → (status, lastTransitionTime).
    conditions: BTreeMap<&'static str, (bool, Timestamp)>,
}

impl PodState {
    /// A new pod's state.
    pub fn new(
        policy: RestartPolicy,
        init: Vec<ContainerRecord>,
        containers: Vec<ContainerRecord>,
        host_ip: &str,
    ) -> PodState {
        PodState {
            phase: PodPhase::Pending,
            policy,
            init_done: init.is_empty(),
            init,
            containers,
            ephemeral: Vec::new(),
            init_failed: false,
            pod_ip: None,
            host_ip: host_ip.to_string(),
            start_time: None,
            deadline_exceeded: false,
            readiness_gates: Vec::new(),
            conditions: BTreeMap::new(),
        }
    }

    /// The `readinessGates` of `pod` with the statuses its conditions give them now.
    pub fn gates_of(pod: &k8s_openapi::api::core::v1::Pod) -> Vec<(String, Option<String>)> {
        let conditions = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        pod.spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten())
            .map(|g| {
                let status = conditions
                    .iter()
                    .find(|c| c.type_ == g.condition_type)
                    .map(|c| c.status.clone());
                (g.condition_type.clone(), status)
            })
            .collect()
    }

    /// Kubelet's messages for the gates that are not `True` (none when all are).
    fn unready_gates(&self) -> Vec<String> {
        self.readiness_gates
            .iter()
            .filter_map(|(kind, status)| match status.as_deref() {
                Some("True") => None,
                Some(other) => Some(format!(
                    "the status of pod readiness gate \"{kind}\" is not \"True\", but {other}"
                )),
                None => Some(format!(
                    "corresponding condition of pod readiness gate \"{kind}\" does not exist."
                )),
            })
            .collect()
    }

    /// Re-derives the phase and the conditions at `now`.
    pub fn refresh(&mut self, now: Timestamp) {
        let derived = derive_phase(
            self.policy,
            self.init_done,
            self.init_failed,
            &self.containers,
        );
        let derived = if self.deadline_exceeded {
            PodPhase::Failed
        } else {
            derived
        };
        self.phase = self.phase.advance(derived);
        // Sidecars count as kubelet counts restartable init containers: they must be ready too.
        let containers_ready = self.init_done
            && !self.phase.is_terminal()
            && !self.containers.is_empty()
            && self.containers.iter().all(|c| c.ready)
            && self.init.iter().filter(|c| c.sidecar).all(|c| c.ready);
        // Ready also waits for the readiness gates, as kubelet's does.
        let ready = containers_ready && self.unready_gates().is_empty();
        let values = [true, self.init_done, containers_ready, ready];
        for (kind, value) in CONDITIONS.iter().zip(values) {
            match self.conditions.get(kind) {
                Some((old, _)) if *old == value => {}
                _ => {
                    self.conditions.insert(*kind, (value, now));
                }
            }
        }
    }

    /// The sidecars, then the app containers: what must be ready.
    fn probed(&self) -> impl Iterator<Item = &ContainerRecord> {
        self.init
            .iter()
            .filter(|c| c.sidecar)
            .chain(&self.containers)
    }

    /// Names of containers (sidecars and app containers) that are not ready.
    fn unready(&self) -> Vec<&str> {
        self.probed()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect()
    }

    /// `; main: Readiness probe failed: ...` for unready containers whose probe fails.
    fn probe_failures(&self) -> String {
        self.probed()
            .filter(|c| !c.ready)
            .filter_map(|c| Some(format!("; {}: {}", c.name, c.probe_failure.as_ref()?)))
            .collect()
    }

    /// The Kubernetes status.
    pub fn status(&self) -> PodStatus {
        let conditions = CONDITIONS
            .iter()
            .filter_map(|kind| self.conditions.get(kind).map(|c| (*kind, c)))
            .map(|(kind, (value, at))| {
                let (reason, message) = match (kind, value) {
                    (_, true) => (None, None),
                    ("Initialized", false) => (
                        Some("ContainersNotInitialized".to_string()),
                        Some(format!(
                            "containers with incomplete status: [{}]",
                            self.init
                                .iter()
                                .filter(|c| if c.sidecar {
                                    !(c.is_running() && c.started)
                                } else {
                                    c.termination().is_none_or(|t| t.exit_code != 0)
                                })
                                .map(|c| c.name.as_str())
                                .collect::<Vec<_>>()
                                .join(" ")
                        )),
                    ),
                    (_, false) if self.phase.is_terminal() => {
                        (Some("PodCompleted".to_string()), None)
                    }
                    ("Ready", false)
                        if self.conditions.get("ContainersReady").is_some_and(|c| c.0) =>
                    {
                        (
                            Some("ReadinessGatesNotReady".to_string()),
                            Some(self.unready_gates().join(", ")),
                        )
                    }
                    ("ContainersReady" | "Ready", false) => (
                        Some("ContainersNotReady".to_string()),
                        Some(format!(
                            "containers with unready status: [{}]{}",
                            self.unready().join(" "),
                            self.probe_failures()
                        )),
                    ),
                    _ => (None, None),
                };
                PodCondition {
                    type_: kind.to_string(),
                    status: if *value { "True" } else { "False" }.into(),
                    last_transition_time: Some(Time(*at)),
                    reason,
                    message,
                    ..PodCondition::default()
                }
            })
            .collect();
        let ip = self.pod_ip.map(|ip| ip.to_string());
        PodStatus {
            phase: Some(self.phase.as_str().into()),
            conditions: Some(conditions),
            host_ip: Some(self.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.host_ip.clone(),
            }]),
            pod_ip: ip.clone(),
            pod_ips: ip.map(|ip| vec![PodIP { ip }]),
            start_time: self.start_time.map(Time),
            init_container_statuses: (!self.init.is_empty())
                .then(|| self.init.iter().map(container_status).collect()),
            container_statuses: Some(self.containers.iter().map(container_status).collect()),
            ephemeral_container_statuses: (!self.ephemeral.is_empty())
                .then(|| self.ephemeral.iter().map(container_status).collect()),
            // The API server set the QoS class at creation; it is not the agent's to report.
            qos_class: None,
            reason: self
                .deadline_exceeded
                .then(|| DEADLINE_EXCEEDED.to_string()),
            message: self.deadline_exceeded.then(|| DEADLINE_MESSAGE.to_string()),
            ..PodStatus::default()
        }
    }
}

fn terminated(t: &Termination) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        reason: Some(t.reason.clone()),
        message: Some(t.message.clone()).filter(|m| !m.is_empty()),
        started_at: Some(Time(t.started_at)),
        finished_at: Some(Time(t.finished_at)),
        ..ContainerStateTerminated::default()
    }
}

/// One container's status.
pub fn container_status(c: &ContainerRecord) -> ContainerStatus {
    let state = match &c.state {
        ContainerState::Waiting { reason, message } => K8sState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.as_str().into()),
                message: Some(message.clone()).filter(|m| !m.is_empty()),
            }),
            ..K8sState::default()
        },
        ContainerState::Running { started_at } => K8sState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..K8sState::default()
        },
        ContainerState::Terminated(t) => K8sState {
            terminated: Some(terminated(t)),
            ..K8sState::default()
        },
    };
    ContainerStatus {
        name: c.name.clone(),
        state: Some(state),
        last_state: Some(K8sState {
            terminated: c.last_termination.as_ref().map(terminated),
            ..K8sState::default()
        }),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::state::Transition;

    fn condition_of(status: &PodStatus, kind: &str) -> PodCondition {
        let conditions = status.conditions.as_ref().unwrap();
        conditions.iter().find(|c| c.type_ == kind).unwrap().clone()
    }

    fn condition(status: &PodStatus, kind: &str) -> String {
        condition_of(status, kind).status
    }

    /// A pod of one app container, started at the epoch.
    fn running_app() -> PodState {
        let mut s = PodState::new(
            RestartPolicy::Always,
            vec![],
            vec![ContainerRecord::new("app", "i")],
            "127.0.0.1",
        );
        let at = Timestamp::UNIX_EPOCH;
        s.containers[0].apply(Transition::Started { at }).unwrap();
        s
    }

    #[test]
    fn conditions_follow_init_and_readiness() {
        let mut s = PodState::new(
            RestartPolicy::Always,
            vec![ContainerRecord::new("init", "i")],
            vec![ContainerRecord::initializing("app", "i")],
            "127.0.0.1",
        );
        s.pod_ip = Some("127.1.0.9".parse().unwrap());
        s.refresh(Timestamp::UNIX_EPOCH);
        let st = s.status();
        assert_eq!(st.phase.as_deref(), Some("Pending"));
        assert_eq!(condition(&st, "PodScheduled"), "True");
        assert_eq!(condition(&st, "Initialized"), "False");
        assert_eq!(st.pod_ip.as_deref(), Some("127.1.0.9"));
        assert_eq!(
            st.container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing")
        );

        s.init_done = true;
        let at = Timestamp::UNIX_EPOCH;
        s.containers[0].apply(Transition::Started { at }).unwrap();
        s.refresh(Timestamp::UNIX_EPOCH);
        let st = s.status();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&st, "Initialized"), "True");
        assert_eq!(
            condition(&st, "Ready"),
            "False",
            "not ready until its probe passes"
        );

        s.containers[0].ready = true;
        let later = Timestamp::from_second(100).unwrap();
        s.refresh(later);
        let st = s.status();
        assert_eq!(condition(&st, "Ready"), "True");
        let ready = condition_of(&st, "Ready");
        assert_eq!(
            ready.last_transition_time,
            Some(Time(later)),
            "stamped when it changed"
        );
    }

    #[test]
    fn a_sidecar_must_be_ready_too_and_its_app_alone_decides_the_phase() {
        let mut s = PodState::new(
            RestartPolicy::Never,
            vec![ContainerRecord::new("proxy", "i").as_sidecar(true)],
            vec![ContainerRecord::initializing("app", "i")],
            "127.0.0.1",
        );
        let at = Timestamp::UNIX_EPOCH;
        s.init[0].apply(Transition::Started { at }).unwrap();
        s.init_done = true;
        s.containers[0].apply(Transition::Started { at }).unwrap();
        s.containers[0].ready = true;
        s.refresh(at);
        let st = s.status();
        assert_eq!(condition(&st, "Initialized"), "True");
        let ready = condition_of(&st, "ContainersReady");
        assert_eq!(ready.status, "False");
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [proxy]")
        );
        s.init[0].ready = true;
        s.refresh(at);
        assert_eq!(condition(&s.status(), "Ready"), "True");
        // The app ends: the pod has succeeded, whatever its running sidecar does.
        s.containers[0]
            .apply(Transition::Exited(Termination {
                exit_code: 0,
                reason: "Completed".into(),
                message: String::new(),
                started_at: at,
                finished_at: at,
            }))
            .unwrap();
        s.refresh(at);
        assert_eq!(s.status().phase.as_deref(), Some("Succeeded"));
    }

    #[test]
    fn ready_waits_for_the_readiness_gates_as_kubelet_says() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "spec": {"containers": [{"name": "app"}], "readinessGates": [
                {"conditionType": "example.com/lb"}, {"conditionType": "example.com/db"}]},
            "status": {"conditions": [{"type": "example.com/db", "status": "False"}]}
        }))
        .unwrap();
        let mut s = running_app();
        s.readiness_gates = PodState::gates_of(&pod);
        assert_eq!(
            s.readiness_gates,
            [
                ("example.com/lb".to_string(), None),
                ("example.com/db".to_string(), Some("False".to_string()))
            ]
        );
        let at = Timestamp::UNIX_EPOCH;
        s.containers[0].ready = true;
        s.refresh(at);
        let st = s.status();
        assert_eq!(condition(&st, "ContainersReady"), "True");
        let ready = condition_of(&st, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist., \
                 the status of pod readiness gate \"example.com/db\" is not \"True\", but False"
            )
        );
        s.readiness_gates = vec![
            ("example.com/lb".into(), Some("True".into())),
            ("example.com/db".into(), Some("True".into())),
        ];
        s.refresh(at);
        assert_eq!(condition(&s.status(), "Ready"), "True");
    }

    #[test]
    fn a_pod_past_its_deadline_is_failed_with_kubelets_reason() {
        let mut s = running_app();
        let at = Timestamp::UNIX_EPOCH;
        s.refresh(at);
        assert_eq!(s.status().phase.as_deref(), Some("Running"));
        assert!(s.status().reason.is_none());
        s.deadline_exceeded = true;
        s.refresh(at);
        let st = s.status();
        assert_eq!(st.phase.as_deref(), Some("Failed"));
        assert_eq!(st.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(st.message.as_deref(), Some(DEADLINE_MESSAGE));
    }

    #[test]
    fn ephemeral_containers_are_reported_apart_and_count_for_neither_phase_nor_readiness() {
        let mut s = running_app();
        s.containers[0].ready = true;
        s.refresh(Timestamp::UNIX_EPOCH);
        let before = s.status();
        assert!(before.ephemeral_container_statuses.is_none());
        s.ephemeral
            .push(ContainerRecord::new("debugger", "busybox"));
        s.refresh(Timestamp::UNIX_EPOCH);
        let waiting = s.status();
        let statuses = waiting.ephemeral_container_statuses.clone().unwrap();
        assert_eq!(statuses.len(), 1);
        assert_eq!(statuses[0].name, "debugger");
        assert!(statuses[0].state.as_ref().unwrap().waiting.is_some());
        assert_eq!(condition(&waiting, "Ready"), "True");
        let at = Timestamp::UNIX_EPOCH;
        s.ephemeral[0].apply(Transition::Started { at }).unwrap();
        s.ephemeral[0]
            .apply(Transition::Exited(Termination {
                exit_code: 1,
                reason: "Error".into(),
                message: String::new(),
                started_at: at,
                finished_at: at,
            }))
            .unwrap();
        s.refresh(Timestamp::UNIX_EPOCH);
        let ended = s.status();
        assert_eq!(ended.phase.as_deref(), Some("Running"));
        assert_eq!(condition(&ended, "Ready"), "True");
        assert_eq!(ended.container_statuses, before.container_statuses);
        let state = ended.ephemeral_container_statuses.unwrap()[0].state.clone();
        assert_eq!(state.unwrap().terminated.unwrap().exit_code, 1);
    }
}
