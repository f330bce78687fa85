//! The runtime plugin: a small, CRI-like async trait the pod workers drive.
//!
//! A [`Runtime`] only does the work (pull and prepare an image, start a container, wait for it,
//! stop it); the agent owns the pod state machine, restart policy and backoff, and decides when
//! each method is called. Nothing in these signatures names wasmtime or OCI types, so a plugin
//! can be swapped (wasmtime, or an OCI runtime binary) without touching the agent.
//!
//! - [`wasmtime`]: the plugin for Wasm images, over `flotilla-wasm`.
//! - [`oci`]: the plugin for container images, over an OCI runtime binary (`runc`, `crun`).

pub mod line_discipline;
pub mod oci;
pub mod security;
pub mod stats;
pub mod wasmtime;

pub use stats::{ContainerStats, HttpCounters};

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::image::{PullPolicy, PullSecrets};

/// The handler name of the wasmtime runtime (and of the default RuntimeClass).
pub const WASMTIME_HANDLER: &str = "wasmtime";

/// Identifies one run of one container: pod uid, container name and attempt.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerId(pub String);

impl ContainerId {
    /// The id of attempt `attempt` of container `name` in the pod with `pod_uid`.
    pub fn new(pod_uid: &str, name: &str, attempt: u32) -> ContainerId {
        ContainerId(format!("{pod_uid}-{name}-{attempt}"))
    }
}

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a pod asks of an image.
#[derive(Clone, Debug)]
pub struct ImageRequest {
    /// The reference as the pod names it (`hello:v1`, `ghcr.io/x/y@sha256:..`).
    pub reference: String,
    /// The pod's `imagePullPolicy` (already defaulted).
    pub policy: PullPolicy,
    /// Credentials from the pod's `imagePullSecrets`.
    pub secrets: PullSecrets,
}

/// How a prepared image runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Runs to completion; its exit code is the container's.
    Command,
    /// Serves HTTP on the pod's address until stopped.
    HttpService,
}

/// An image pulled and ready to start containers from.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// The canonical reference (`containerStatuses[].image`).
    pub image: String,
    /// The content id (`containerStatuses[].imageID`).
    pub image_id: String,
    /// Whether preparing it downloaded anything (for the `Pulled` event's wording).
    pub fetched: bool,
    /// What kind of workload it is.
    pub workload: Workload,
}

/// A host directory visible inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Where the container sees it (the volumeMount's `mountPath`).
    pub container_path: String,
    /// The directory on the host.
    pub host_path: PathBuf,
    /// Whether the container may only read it.
    pub read_only: bool,
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl OutputStream {
    /// The CRI log spelling (`stdout`, `stderr`).
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Receives a container's output; the agent's log store implements it. Must not block.
pub trait ContainerOutput: Send + Sync + 'static {
    /// One chunk of output (not necessarily a whole line).
    fn write(&self, stream: OutputStream, bytes: &[u8]);
}

/// Maps names a container's outgoing requests use onto addresses (cluster Service names onto
/// ClusterIPs, see [`crate::proxy`]). Must not block.
pub trait NameResolver: Send + Sync + 'static {
    /// Where a connection to `host` on `port` goes; `None` for a name it does not know.
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr>;
}

/// Everything needed to start one container.
#[derive(Clone)]
pub struct ContainerSpec {
    /// This run's id.
    pub id: ContainerId,
    /// The image, from [`Runtime::prepare`].
    pub image: PreparedImage,
    /// argv, program name first (`command` + `args`, expanded).
    pub args: Vec<String>,
    /// The container's `command`, expanded; `None` when unset (the image's entrypoint runs).
    pub command: Option<Vec<String>>,
    /// The container's `args`, expanded; `None` when unset (the image's `Cmd` is used).
    pub command_args: Option<Vec<String>>,
    /// The container's `workingDir`, if set.
    pub working_dir: Option<String>,
    /// The pod's host name (`spec.hostname`, else its name).
    pub hostname: String,
    /// The resolved environment.
    pub env: Vec<(String, String)>,
    /// Volumes.
    pub mounts: Vec<Mount>,
    /// `limits.memory` in bytes: the cap of each instance's memory.
    pub memory_limit: Option<u64>,
    /// `limits.cpu` in millicores: the CPU share, enforced through deadlines.
    pub cpu_millis: Option<u64>,
    /// Where an HTTP service listens (pod IP and container port).
    pub listen: Option<SocketAddr>,
    /// The network namespace to join (from [`Runtime::pod_network`]); `None`: the node's.
    pub netns: Option<PathBuf>,
    /// Resolves Service names for the container's outgoing HTTP (Wasm guests have no DNS).
    pub resolver: Option<Arc<dyn NameResolver>>,
    /// The pod's `hostAliases` (a container's `/etc/hosts` lists them).
    pub host_aliases: crate::pod::host_aliases::HostAliases,
    /// The pod's `/etc/resolv.conf` ([`crate::dns::pod_config`]), for runtimes that
    /// [`Runtime::uses_resolv_conf`]; `None`: the node's own.
    pub resolv_conf: Option<String>,
    /// Where output goes.
    pub output: Arc<dyn ContainerOutput>,
    /// How its standard input and terminal are set up (`stdin`, `stdinOnce`, `tty`).
    pub stdio: ContainerStdio,
    /// The running container whose processes this one shares (an ephemeral container's
    /// `targetContainerName`): a container runtime joins its process namespace. Wasm guests
    /// have no processes to see, and the Wasm runtime ignores it.
    pub share_processes_with: Option<ContainerId>,
    /// Its effective `securityContext` (user, groups, capabilities, read-only root); container
    /// runtimes apply it, the Wasm runtime has nothing to apply it to.
    pub security: security::Security,
    /// The pod's `hostPID` and `hostIPC`: a container runtime leaves the container in the
    /// node's process or IPC namespace instead of giving it one of its own.
    pub host_namespaces: HostNamespaces,
    /// Take over the container an earlier agent left running under this id, but never start
    /// it: [`RuntimeError::NotFound`] when it no longer runs (an ephemeral container, which
    /// runs once).
    pub adopt_only: bool,
}

/// Which of the node's namespaces a pod's containers share (`hostPID`, `hostIPC`; the
/// network is [`PodNetwork`]'s).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostNamespaces {
    /// `hostPID`: the node's processes.
    pub pid: bool,
    /// `hostIPC`: the node's System V IPC and POSIX message queues.
    pub ipc: bool,
}

/// A container's standard input and terminal, as its spec asks (`kubectl run -i -t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContainerStdio {
    /// `stdin`: the container reads a standard input that `kubectl attach -i` writes to; it
    /// stays open between attaches. Without it, its stdin is empty.
    pub stdin: bool,
    /// `stdinOnce`: the standard input ends (end of file) when the first attach ends.
    pub stdin_once: bool,
    /// `tty`: the container runs on a terminal of its own (stdout and stderr merged).
    pub tty: bool,
}

impl std::fmt::Debug for ContainerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerSpec")
            .field("id", &self.id)
            .field("image", &self.image)
            .field("args", &self.args)
            .field("mounts", &self.mounts)
            .field("memory_limit", &self.memory_limit)
            .field("cpu_millis", &self.cpu_millis)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code (137 when killed, as a container runtime reports it).
    pub code: i32,
    /// The Kubernetes reason: `Completed`, `Error`, `OOMKilled`, `DeadlineExceeded`...
    pub reason: String,
    /// What happened, for a person (empty for a clean exit).
    pub message: String,
}

impl ExitStatus {
    /// A clean exit with code 0.
    pub fn completed() -> ExitStatus {
        ExitStatus {
            code: 0,
            reason: "Completed".into(),
            message: String::new(),
        }
    }
}

/// Why a runtime call failed; the variant decides the container's waiting reason.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image could not be pulled (`ErrImagePull`, then `ImagePullBackOff`).
    #[error("{0}")]
    ImagePull(String),
    /// The image was pulled but cannot run here: not Wasm, corrupt, an unsupported world
    /// (`CreateContainerError`).
    #[error("{0}")]
    InvalidImage(String),
    /// The container could not be created from a good image (`CreateContainerError`).
    #[error("{0}")]
    Create(String),
    /// The container's configuration cannot be applied to this image, e.g. `runAsNonRoot`
    /// with an image that runs as root (`CreateContainerConfigError`).
    #[error("{0}")]
    Config(String),
    /// No container with this id is known.
    #[error("container {0} not found")]
    NotFound(ContainerId),
    /// The runtime cannot run commands inside its containers, or running one failed.
    #[error("{0}")]
    Exec(String),
}

/// How a command run inside a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its exit code.
    pub code: i32,
    /// Its output (stdout then stderr), trimmed.
    pub output: String,
}

/// The channel of an exec's standard output (as in Kubernetes' remote command protocol).
pub const EXEC_STDOUT: u8 = 1;
/// The channel of an exec's standard error.
pub const EXEC_STDERR: u8 = 2;

/// A CRI-like runtime plugin. See the module docs for who does what.
pub trait Runtime: Send + Sync + 'static {
    /// The RuntimeClass handler it serves (`wasmtime`).
    fn handler(&self) -> &str;

    /// Pulls the image (under its policy) and readies it to start; cheap when already done.
    fn prepare<'a>(
        &'a self,
        image: &'a ImageRequest,
    ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>>;

    /// Starts a container; returns once it is running.
    fn start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<(), RuntimeError>>;

    /// Waits until the container ends (an HTTP service ends only when stopped).
    fn wait<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>>;

    /// Stops the container: `grace` to end by itself, then forcibly. Returns how it ended.
    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>>;

    /// Forgets an ended container (its resources are freed).
    fn remove(&self, id: &ContainerId);

    /// Runs `command` inside the running container (exec probes), within `timeout`.
    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        let _ = (id, command, timeout);
        Box::pin(async move {
            Err(RuntimeError::Exec(format!(
                "exec probes are not supported by the {} runtime",
                self.handler()
            )))
        })
    }

    /// Whether its containers can run commands ([`Runtime::exec_streaming`]): a Wasm
    /// container has no processes to start one in.
    fn runs_commands(&self) -> bool {
        false
    }

    /// Whether its containers read an `/etc/resolv.conf` ([`ContainerSpec::resolv_conf`]): a
    /// Wasm guest has no resolver of its own ([`ContainerSpec::resolver`] serves it).
    fn uses_resolv_conf(&self) -> bool {
        false
    }

    /// Runs `command` inside the running container for `kubectl exec`, without a terminal:
    /// its stdin is what comes on `input` (closed when `input` ends; none without it), and
    /// what it writes to its stdout and stderr is sent on `output` as it comes, tagged with
    /// the stream's channel ([`EXEC_STDOUT`], [`EXEC_STDERR`]). Returns its exit code. Ends
    /// the command if `output` is closed (the client went away).
    fn exec_streaming<'a>(
        &'a self,
        id: &'a ContainerId,
        command: &'a [String],
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        let _ = (id, command, input, output);
        Box::pin(async move {
            Err(RuntimeError::Exec(format!(
                "containers of the {} runtime cannot run commands (kubectl exec)",
                self.handler()
            )))
        })
    }

    /// Runs `command` inside the running container on a terminal, for `kubectl exec -t`: what
    /// comes on `input` is typed into it, what it shows is sent on `output` as
    /// [`EXEC_STDOUT`] (a terminal merges stdout and stderr), and each `(width, height)` on
    /// `resize` sets its size. Returns the exit code; ends the command if `output` is closed.
    fn exec_terminal<'a>(
        &'a self,
        id: &'a ContainerId,
        command: &'a [String],
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
        output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        let _ = (id, command, input, resize, output);
        Box::pin(async move {
            Err(RuntimeError::Exec(format!(
                "containers of the {} runtime cannot run commands on a terminal (kubectl exec -t)",
                self.handler()
            )))
        })
    }

    /// Connects `kubectl attach` to the running container's standard input and terminal:
    /// what comes on `input` is written to its stdin (a `stdinOnce` container gets its end of
    /// file when `input` ends), and each `(width, height)` on `resize` sizes its terminal.
    /// Returns once both have ended. What the container writes reaches the attached client
    /// through its log ([`crate::logs`]), whatever the runtime. The default: a container
    /// without standard input (what comes on `input` is dropped, as for a container whose spec
    /// asks for none) and without a terminal.
    fn attach<'a>(
        &'a self,
        id: &'a ContainerId,
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        let _ = id;
        Box::pin(async move {
            drain(input, resize).await;
            Ok(())
        })
    }

    /// What a running container uses right now; `None` when the container is unknown or the
    /// runtime cannot tell.
    fn stats(&self, id: &ContainerId) -> Option<ContainerStats> {
        let _ = id;
        None
    }

    /// Whether its containers keep running when the agent exits (and are adopted by the next
    /// agent): then an agent shutdown leaves them alone instead of stopping them.
    fn outlives_agent(&self) -> bool {
        false
    }

    /// Gives pod `pod_uid` its network before its containers start (`wanted`: the address it
    /// had, for a pod an earlier agent ran). The default: the pod uses the node's network and
    /// an address from the node's pod range.
    fn pod_network<'a>(
        &'a self,
        pod_uid: &'a str,
        wanted: Option<Ipv4Addr>,
    ) -> BoxFuture<'a, Result<PodNetwork, RuntimeError>> {
        let _ = (pod_uid, wanted);
        Box::pin(async { Ok(PodNetwork::Node { note: None }) })
    }

    /// Takes away what [`Runtime::pod_network`] gave pod `pod_uid`, once the pod is gone (a
    /// no-op when it gave nothing).
    fn remove_pod_network<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, ()> {
        let _ = pod_uid;
        Box::pin(async {})
    }
}

/// Where a pod's network comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodNetwork {
    /// The node's network: the pod's address comes from the node's pod range and is one of the
    /// node's own (Wasm pods; container pods when the agent is not root).
    Node {
        /// Why, for the pod's events (`None`: nothing worth saying).
        note: Option<String>,
    },
    /// A network of the pod's own.
    Own {
        /// The pod's address.
        ip: Ipv4Addr,
        /// The network namespace its containers join.
        netns: PathBuf,
        /// What it is, for the pod's events.
        description: String,
    },
}

/// Reads `input` and `resize` to their ends, dropping what comes: an attach to a container
/// that takes no input.
pub async fn drain(
    input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
    mut resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
) {
    let drain_input = async {
        if let Some(mut input) = input {
            while input.recv().await.is_some() {}
        }
    };
    let drain_resize = async { while resize.recv().await.is_some() {} };
    futures::join!(drain_input, drain_resize);
}
