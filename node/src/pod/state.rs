//! The pod and container state machines, as explicit enums with transition methods.
//!
//! A container is `Waiting` (with a Kubernetes reason), `Running` or `Terminated`; a
//! [`ContainerRecord`] moves between them only through [`ContainerRecord::apply`], which refuses
//! illegal transitions and keeps `lastState` and `restartCount` as Kubernetes does. The pod's
//! phase is derived from its containers ([`derive_phase`]) and only moves forward
//! ([`PodPhase::advance`]): terminal phases are final.

use k8s_openapi::jiff::Timestamp;

/// Why a container is waiting (the Kubernetes spellings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitingReason {
    /// Being created (image pulled, volumes set up).
    ContainerCreating,
    /// An init container has not finished yet.
    PodInitializing,
    /// The last image pull failed.
    ErrImagePull,
    /// Waiting before pulling again.
    ImagePullBackOff,
    /// The configuration cannot be resolved (a missing ConfigMap key, an unknown RuntimeClass).
    CreateContainerConfigError,
    /// The container cannot be created (a corrupt or unsupported image).
    CreateContainerError,
    /// Waiting before restarting a container that exited.
    CrashLoopBackOff,
}

impl WaitingReason {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingReason::ContainerCreating => "ContainerCreating",
            WaitingReason::PodInitializing => "PodInitializing",
            WaitingReason::ErrImagePull => "ErrImagePull",
            WaitingReason::ImagePullBackOff => "ImagePullBackOff",
            WaitingReason::CreateContainerConfigError => "CreateContainerConfigError",
            WaitingReason::CreateContainerError => "CreateContainerError",
            WaitingReason::CrashLoopBackOff => "CrashLoopBackOff",
        }
    }

    /// Whether this is a failure (as opposed to progress).
    pub fn is_error(self) -> bool {
        !matches!(
            self,
            WaitingReason::ContainerCreating | WaitingReason::PodInitializing
        )
    }
}

/// How a container run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    /// Its exit code.
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled`...
    pub reason: String,
    /// Details for a person.
    pub message: String,
    /// When it started.
    pub started_at: Timestamp,
    /// When it ended.
    pub finished_at: Timestamp,
}

/// A container's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    /// Not running yet, or between runs.
    Waiting {
        /// Why.
        reason: WaitingReason,
        /// Details a user can act on.
        message: String,
    },
    /// Running since `started_at`.
    Running {
        /// When it started.
        started_at: Timestamp,
    },
    /// Ended.
    Terminated(Termination),
}

impl ContainerState {
    /// A short name for messages and tests.
    pub fn name(&self) -> &'static str {
        match self {
            ContainerState::Waiting { .. } => "Waiting",
            ContainerState::Running { .. } => "Running",
            ContainerState::Terminated(_) => "Terminated",
        }
    }
}

/// Something that happened to a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// Creating it (again) started: volumes, image.
    Creating,
    /// A step failed; it waits with this reason.
    Failed {
        /// `ErrImagePull`, `CreateContainerError`, `CreateContainerConfigError`, or
        /// `ContainerCreating` while a volume cannot be set up (kubelet's `FailedMount`).
        reason: WaitingReason,
        /// What went wrong.
        message: String,
    },
    /// Waiting before the next attempt: a failed pull becomes `ImagePullBackOff`, an exited
    /// container `CrashLoopBackOff`; other failures keep their reason.
    BackOff {
        /// "back-off 10s restarting failed container=...".
        message: String,
    },
    /// It started.
    Started {
        /// When.
        at: Timestamp,
    },
    /// It ended.
    Exited(Termination),
}

impl Transition {
    fn name(&self) -> &'static str {
        match self {
            Transition::Creating => "Creating",
            Transition::Failed { .. } => "Failed",
            Transition::BackOff { .. } => "BackOff",
            Transition::Started { .. } => "Started",
            Transition::Exited(_) => "Exited",
        }
    }
}

/// A transition the state machine refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("container {container}: illegal transition {transition} from {from}")]
pub struct IllegalTransition {
    /// The container.
    pub container: String,
    /// Its state.
    pub from: &'static str,
    /// What was attempted.
    pub transition: &'static str,
}

/// Everything the agent knows about one container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    /// The container's name.
    pub name: String,
    /// Its state now.
    pub state: ContainerState,
    /// How its previous run ended (`lastState.terminated`).
    pub last_termination: Option<Termination>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Whether it passes its readiness probe (or has none and runs).
    pub ready: bool,
    /// Whether it passed its startup probe (or has none and runs).
    pub started: bool,
    /// The image as resolved (`image`), once known.
    pub image: String,
    /// The image's content id (`imageID`), once known.
    pub image_id: String,
    /// The current run's id.
    pub container_id: Option<String>,
    /// Why its readiness probe fails, while it does (shown in the `Ready` condition).
    pub probe_failure: Option<String>,
    /// An init container with `restartPolicy: Always` (a sidecar).
    pub sidecar: bool,
    /// It ended for good under an earlier agent (see [`ContainerRecord::ended_earlier`]): it
    /// is not run again.
    pub ended_earlier: bool,
    /// An ephemeral container an earlier agent reported running: it runs once, so this agent
    /// may take it over if the runtime still runs it, but never starts it again.
    pub adopt_only: bool,
    runs: u32,
}

impl ContainerRecord {
    /// A container about to be created.
    pub fn new(name: &str, image: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.to_string(),
            state: ContainerState::Waiting {
                reason: WaitingReason::ContainerCreating,
                message: String::new(),
            },
            last_termination: None,
            restart_count: 0,
            ready: false,
            started: false,
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            probe_failure: None,
            sidecar: false,
            ended_earlier: false,
            adopt_only: false,
            runs: 0,
        }
    }

    /// Marks an init container as a sidecar (`restartPolicy: Always`) when `sidecar`.
    pub fn as_sidecar(mut self, sidecar: bool) -> ContainerRecord {
        self.sidecar = sidecar;
        self
    }

    /// A container that waits for the pod's init containers.
    pub fn initializing(name: &str, image: &str) -> ContainerRecord {
        let mut r = ContainerRecord::new(name, image);
        r.state = ContainerState::Waiting {
            reason: WaitingReason::PodInitializing,
            message: String::new(),
        };
        r
    }

    /// Continues the restart count of an earlier agent's run of this pod.
    pub fn with_restart_count(mut self, restarts: i32) -> ContainerRecord {
        self.restart_count = restarts.max(0);
        self.runs = if restarts > 0 { restarts as u32 } else { 0 };
        self
    }

    /// A container whose run under an earlier agent ended as `t`, for good (the pod's
    /// restartPolicy does not run it again): it stays terminated, as kubelet, which keeps
    /// exited containers across its own restarts, leaves it. It shows the image and image id
    /// that run reported.
    pub fn ended_earlier(
        mut self,
        t: Termination,
        (image, image_id): (&str, &str),
        container_id: Option<&str>,
    ) -> ContainerRecord {
        self.state = ContainerState::Terminated(t);
        self.runs = self.runs.max(1);
        if !image.is_empty() {
            self.image = image.to_string();
        }
        self.image_id = image_id.to_string();
        self.container_id = container_id.map(String::from);
        self.ended_earlier = true;
        self
    }

    /// Applies a transition, or refuses it leaving the record unchanged.
    pub fn apply(&mut self, transition: Transition) -> Result<(), IllegalTransition> {
        let illegal = |r: &ContainerRecord, t: &Transition| IllegalTransition {
            container: r.name.clone(),
            from: r.state.name(),
            transition: t.name(),
        };
        let next = match (&self.state, &transition) {
            (
                ContainerState::Waiting { .. } | ContainerState::Terminated(_),
                Transition::Creating,
            ) => {
                // Keep an error reason while retrying: users see why it is still waiting.
                match &self.state {
                    ContainerState::Waiting { reason, .. } if reason.is_error() => return Ok(()),
                    _ => ContainerState::Waiting {
                        reason: WaitingReason::ContainerCreating,
                        message: String::new(),
                    },
                }
            }
            (ContainerState::Waiting { .. }, Transition::Failed { reason, message }) => {
                if !matches!(
                    reason,
                    WaitingReason::ErrImagePull
                        | WaitingReason::CreateContainerError
                        | WaitingReason::CreateContainerConfigError
                        | WaitingReason::ContainerCreating
                ) {
                    return Err(illegal(self, &transition));
                }
                ContainerState::Waiting {
                    reason: *reason,
                    message: message.clone(),
                }
            }
            (
                ContainerState::Waiting {
                    reason,
                    message: old,
                },
                Transition::BackOff { message },
            ) => match reason {
                WaitingReason::ErrImagePull | WaitingReason::ImagePullBackOff => {
                    ContainerState::Waiting {
                        reason: WaitingReason::ImagePullBackOff,
                        message: message.clone(),
                    }
                }
                WaitingReason::CreateContainerError | WaitingReason::CreateContainerConfigError => {
                    ContainerState::Waiting {
                        reason: *reason,
                        message: old.clone(),
                    }
                }
                WaitingReason::CrashLoopBackOff => ContainerState::Waiting {
                    reason: WaitingReason::CrashLoopBackOff,
                    message: message.clone(),
                },
                WaitingReason::ContainerCreating | WaitingReason::PodInitializing => {
                    return Err(illegal(self, &transition));
                }
            },
            (ContainerState::Terminated(_), Transition::BackOff { message }) => {
                ContainerState::Waiting {
                    reason: WaitingReason::CrashLoopBackOff,
                    message: message.clone(),
                }
            }
            (
                ContainerState::Waiting { .. } | ContainerState::Terminated(_),
                Transition::Started { at },
            ) => {
                if self.runs > 0 {
                    self.restart_count += 1;
                }
                self.runs += 1;
                ContainerState::Running { started_at: *at }
            }
            (ContainerState::Running { .. }, Transition::Exited(t)) => {
                self.ready = false;
                self.started = false;
                ContainerState::Terminated(t.clone())
            }
            _ => return Err(illegal(self, &transition)),
        };
        if let ContainerState::Terminated(t) = &self.state
            && !matches!(next, ContainerState::Terminated(_))
        {
            self.last_termination = Some(t.clone());
        }
        self.state = next;
        Ok(())
    }

    /// How its latest run ended, if it is not running now.
    pub fn termination(&self) -> Option<&Termination> {
        match &self.state {
            ContainerState::Terminated(t) => Some(t),
            _ => None,
        }
    }

    /// Whether it is running.
    pub fn is_running(&self) -> bool {
        matches!(self.state, ContainerState::Running { .. })
    }

    /// While it runs: the runtime handler running it and its id there (its `containerID` is
    /// `handler://id`, as the status reports it).
    pub fn running_in(&self) -> Option<(&str, crate::runtime::ContainerId)> {
        if !self.is_running() {
            return None;
        }
        let (handler, id) = self.container_id.as_deref()?.split_once("://")?;
        Some((handler, crate::runtime::ContainerId(id.to_string())))
    }
}

/// A pod's `restartPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    /// Restart whatever the exit code (the default).
    #[default]
    Always,
    /// Restart on a non-zero exit code.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses the Kubernetes spelling; anything else is the default.
    pub fn parse(text: Option<&str>) -> RestartPolicy {
        match text {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `exit_code` restarts.
    pub fn restarts(self, exit_code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => exit_code != 0,
            RestartPolicy::Never => false,
        }
    }

    /// Whether a failed init container is retried (`Never` fails the pod instead).
    pub fn retries_init(self, exit_code: i32) -> bool {
        exit_code != 0 && self != RestartPolicy::Never
    }
}

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Accepted, not all containers started yet.
    Pending,
    /// Bound, all containers created, at least one running (or restarting).
    Running,
    /// All containers ended successfully and will not restart.
    Succeeded,
    /// All containers ended, at least one in failure, and none will restart.
    Failed,
}

impl PodPhase {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        }
    }

    /// Parses the Kubernetes spelling.
    pub fn parse(text: &str) -> Option<PodPhase> {
        match text {
            "Pending" => Some(PodPhase::Pending),
            "Running" => Some(PodPhase::Running),
            "Succeeded" => Some(PodPhase::Succeeded),
            "Failed" => Some(PodPhase::Failed),
            _ => None,
        }
    }

    /// Whether the phase is final.
    pub fn is_terminal(self) -> bool {
        matches!(self, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Whether the pod may move from this phase to `to`.
    pub fn can_become(self, to: PodPhase) -> bool {
        use PodPhase::*;
        match (self, to) {
            (a, b) if a == b => true,
            (Pending, _) => true,
            (Running, Succeeded | Failed) => true,
            _ => false,
        }
    }

    /// The phase after observing `derived`: moves there if legal, else stays.
    pub fn advance(self, derived: PodPhase) -> PodPhase {
        if self.can_become(derived) {
            derived
        } else {
            self
        }
    }
}

/// Derives the phase from the containers, as the kubelet does.
///
/// `init_done`: every init container succeeded. `init_failed`: an init container failed and
/// will not be retried.
pub fn derive_phase(
    policy: RestartPolicy,
    init_done: bool,
    init_failed: bool,
    containers: &[ContainerRecord],
) -> PodPhase {
    if init_failed {
        return PodPhase::Failed;
    }
    if !init_done {
        return PodPhase::Pending;
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            ContainerState::Running { .. } => running += 1,
            ContainerState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            ContainerState::Waiting { .. } if c.last_termination.is_some() => stopped += 1,
            ContainerState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        PodPhase::Pending
    } else if running > 0 {
        PodPhase::Running
    } else if stopped > 0 {
        match policy {
            RestartPolicy::Always => PodPhase::Running,
            _ if stopped == succeeded => PodPhase::Succeeded,
            RestartPolicy::OnFailure => PodPhase::Running,
            RestartPolicy::Never => PodPhase::Failed,
        }
    } else {
        PodPhase::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(code: i32) -> Termination {
        Termination {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: Timestamp::UNIX_EPOCH,
        }
    }

    fn waiting(reason: WaitingReason) -> ContainerState {
        ContainerState::Waiting {
            reason,
            message: String::new(),
        }
    }

    fn failed(reason: WaitingReason) -> Transition {
        Transition::Failed {
            reason,
            message: "m".into(),
        }
    }

    fn backoff() -> Transition {
        Transition::BackOff {
            message: "back-off".into(),
        }
    }

    fn started() -> Transition {
        Transition::Started {
            at: Timestamp::UNIX_EPOCH,
        }
    }

    /// Every (state, transition) pair: the resulting state's name and reason, or `None` when
    /// the transition is illegal.
    #[test]
    fn container_transition_table() {
        use WaitingReason::*;
        let running = ContainerState::Running {
            started_at: Timestamp::UNIX_EPOCH,
        };
        let states = [
            ("Waiting(ContainerCreating)", waiting(ContainerCreating)),
            ("Waiting(ErrImagePull)", waiting(ErrImagePull)),
            (
                "Waiting(CreateContainerError)",
                waiting(CreateContainerError),
            ),
            ("Running", running),
            ("Terminated", ContainerState::Terminated(t(1))),
        ];
        let transitions = [
            ("Creating", Transition::Creating),
            ("Failed(ErrImagePull)", failed(ErrImagePull)),
            ("Failed(CrashLoopBackOff)", failed(CrashLoopBackOff)),
            ("BackOff", backoff()),
            ("Started", started()),
            ("Exited", Transition::Exited(t(0))),
        ];
        #[rustfmt::skip]
        let want: [[Option<&str>; 6]; 5] = [
            // Creating                       Failed(ErrImagePull)   Failed(CLB) BackOff                          Started          Exited
            [Some("ContainerCreating"),       Some("ErrImagePull"), None,       None,                            Some("Running"), None],
            [Some("ErrImagePull"),            Some("ErrImagePull"), None,       Some("ImagePullBackOff"),        Some("Running"), None],
            [Some("CreateContainerError"),    Some("ErrImagePull"), None,       Some("CreateContainerError"),    Some("Running"), None],
            [None,                            None,                 None,       None,                            None,            Some("Terminated")],
            [Some("ContainerCreating"),       None,                 None,       Some("CrashLoopBackOff"),        Some("Running"), None],
        ];
        for (si, (sname, state)) in states.iter().enumerate() {
            for (ti, (tname, transition)) in transitions.iter().enumerate() {
                let mut r = ContainerRecord::new("c", "img");
                r.state = state.clone();
                let before = r.clone();
                let got = match r.apply(transition.clone()) {
                    Ok(()) => Some(match &r.state {
                        ContainerState::Waiting { reason, .. } => reason.as_str(),
                        other => other.name(),
                    }),
                    Err(_) => {
                        assert_eq!(r, before, "a refused transition changes nothing");
                        None
                    }
                };
                assert_eq!(got, want[si][ti], "{sname} + {tname}");
            }
        }
    }

    #[test]
    fn restarts_count_and_keep_the_last_termination() {
        let mut r = ContainerRecord::new("c", "img");
        r.apply(started()).unwrap();
        assert_eq!(r.restart_count, 0);
        r.apply(Transition::Exited(t(3))).unwrap();
        r.apply(started()).unwrap();
        assert_eq!(r.restart_count, 1);
        assert_eq!(r.last_termination.as_ref().unwrap().exit_code, 3);
        r.apply(Transition::Exited(t(4))).unwrap();
        r.apply(backoff()).unwrap();
        assert_eq!(r.last_termination.as_ref().unwrap().exit_code, 4);
        assert!(matches!(
            r.state,
            ContainerState::Waiting {
                reason: WaitingReason::CrashLoopBackOff,
                ..
            }
        ));
        r.apply(Transition::Creating).unwrap();
        assert!(
            matches!(
                r.state,
                ContainerState::Waiting {
                    reason: WaitingReason::CrashLoopBackOff,
                    ..
                }
            ),
            "the back-off reason stays while it is created again"
        );
        r.apply(started()).unwrap();
        assert_eq!(r.restart_count, 2);
    }

    #[test]
    fn restart_policy_decides_by_exit_code() {
        let table = [
            (RestartPolicy::Always, 0, true),
            (RestartPolicy::Always, 1, true),
            (RestartPolicy::OnFailure, 0, false),
            (RestartPolicy::OnFailure, 1, true),
            (RestartPolicy::Never, 0, false),
            (RestartPolicy::Never, 1, false),
        ];
        for (policy, code, want) in table {
            assert_eq!(policy.restarts(code), want, "{policy:?} exit {code}");
        }
        assert_eq!(RestartPolicy::parse(None), RestartPolicy::Always);
        assert_eq!(RestartPolicy::parse(Some("Never")), RestartPolicy::Never);
    }

    #[test]
    fn pod_phase_transition_table() {
        use PodPhase::*;
        let all = [Pending, Running, Succeeded, Failed];
        #[rustfmt::skip]
        let want = [
            //           Pending Running Succeeded Failed
            /* Pending */   [true, true,  true,  true],
            /* Running */   [false, true, true,  true],
            /* Succeeded */ [false, false, true, false],
            /* Failed */    [false, false, false, true],
        ];
        for (i, from) in all.iter().enumerate() {
            for (j, to) in all.iter().enumerate() {
                assert_eq!(from.can_become(*to), want[i][j], "{from:?} -> {to:?}");
            }
        }
        assert_eq!(Succeeded.advance(Running), Succeeded);
        assert_eq!(Running.advance(Pending), Running);
    }

    #[test]
    fn phase_is_derived_from_the_containers() {
        let run = |mut r: ContainerRecord| {
            r.apply(started()).unwrap();
            r
        };
        let exit = |code| {
            let mut r = run(ContainerRecord::new("c", "i"));
            r.apply(Transition::Exited(t(code))).unwrap();
            r
        };
        let creating = ContainerRecord::new("c", "i");
        let running = run(ContainerRecord::new("c", "i"));
        let mut backing_off = exit(1);
        backing_off.apply(backoff()).unwrap();
        use PodPhase::*;
        use RestartPolicy::*;
        let table: Vec<(RestartPolicy, bool, bool, Vec<ContainerRecord>, PodPhase)> = vec![
            (Always, false, false, vec![creating.clone()], Pending),
            (Never, true, true, vec![creating.clone()], Failed),
            (Always, true, false, vec![creating.clone()], Pending),
            (
                Always,
                true,
                false,
                vec![running.clone(), creating.clone()],
                Pending,
            ),
            (Always, true, false, vec![running.clone()], Running),
            (Always, true, false, vec![running.clone(), exit(0)], Running),
            (Never, true, false, vec![exit(0), exit(0)], Succeeded),
            (Never, true, false, vec![exit(0), exit(3)], Failed),
            (OnFailure, true, false, vec![exit(0)], Succeeded),
            (OnFailure, true, false, vec![exit(2)], Running),
            (Always, true, false, vec![exit(0)], Running),
            (Always, true, false, vec![backing_off], Running),
        ];
        for (i, (policy, init_done, init_failed, containers, want)) in table.into_iter().enumerate()
        {
            assert_eq!(
                derive_phase(policy, init_done, init_failed, &containers),
                want,
                "row {i}"
            );
        }
    }
}
