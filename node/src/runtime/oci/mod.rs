//! The OCI runtime plugin: container images run by an OCI runtime binary (`runc`, `crun`),
//! through the same [`Runtime`] trait as the wasmtime plugin.
//!
//! - [`detect`]: which runtimes work on this host (a trial container); only those become
//!   RuntimeClass handlers.
//! - [`rootfs`]: layers unpacked once per image (whiteouts applied), a per-container overlay
//!   (or copy) over them.
//! - [`spec`]: the OCI runtime spec from the image config and the pod's container.
//! - [`runc`]: the runtime binary's command line (create, start, state, kill, delete, exec).
//! - [`terminal`]: the pseudo-terminal of `kubectl exec -t`.
//! - [`console`]: a container's own stdin and terminal (`stdin`, `tty`), for `kubectl attach`.
//! - [`exit`]: the container's exit code and the OOM killer.
//! - [`output`]: stdout/stderr files followed into the agent's log store.
//! - [`adopt`]: containers that outlive an agent restart.
//! - [`network`]: a pod's own network namespace with a veth into the node's bridge (as root).
//!
//! On disk, under the agent's data directory: `oci/images/<digest>/rootfs` (unpacked images,
//! shared by handlers), `oci/<handler>/state` (the runtime's `--root`) and
//! `oci/<handler>/containers/<id>/` (bundle: `config.json`, `rootfs`, overlay `upper`/`work`,
//! `hosts`, `stdout`, `stderr`, `runtime.log`). Deleting a container removes its directory,
//! mount and cgroup. `oci/<handler>/containers/.spare-<n>/`: a root filesystem made ahead for
//! the next container of an image (see [`SPARE_PREFIX`]).
//!
//! Networking: when the agent runs as root, each container pod gets a network namespace of its
//! own with an `eth0` on the node's bridge and an address from the bridge's range
//! ([`network`]); the node's proxy and probes reach it there. Otherwise (or when the bridge
//! cannot be set up) containers share the host's network namespace: the pod's address (a
//! loopback address from the node's pod range, see `pod::address`) is on the host, so a
//! container that listens on it (or on all addresses) is reachable there. The pod's events say
//! which one it got.

pub mod adopt;
pub mod console;
pub mod detect;
pub mod exit;
pub mod network;
pub mod output;
pub mod rootfs;
pub mod runc;
pub mod spec;
pub mod stats;
pub mod terminal;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    ContainerId, ContainerSpec, ContainerStats, ExecOutput, ExitStatus, ImageRequest, PodNetwork,
    PreparedImage, Runtime, RuntimeError, Workload,
};
use crate::image::{ImageCache, ImageContent};
use adopt::Found;
use console::{ConsoleSocket, ContainerStdin};
use network::BridgeNetwork;
use runc::RuntimeBinary;

/// Names the directories of spare root filesystems under the containers directory: one per
/// image, made right after a container of that image started, so the next container of it
/// takes a ready overlay (a rename) instead of mounting one on its path to Running.
pub const SPARE_PREFIX: &str = ".spare-";

/// How long after a container started the spares (root filesystem, network) are made: the
/// pod's status update goes out first, not competing with them for the CPU (and the kernel's
/// network lock).
const REFILL_DELAY: Duration = Duration::from_millis(100);

/// How long, after a container with a terminal ended, what it showed last is read.
const TERMINAL_DRAIN: Duration = Duration::from_secs(1);

/// Extra time after SIGKILL for the runtime to report the container gone.
const KILL_SLACK: Duration = Duration::from_secs(10);

/// The OCI plugin for one runtime binary; cheap to clone.
#[derive(Clone)]
pub struct OciRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    handler: String,
    binary: RuntimeBinary,
    containers_dir: PathBuf,
    images_dir: PathBuf,
    images: ImageCache,
    // std mutexes: map operations only, never held across an await.
    prepared: Mutex<HashMap<String, Arc<Prepared>>>,
    containers: Mutex<HashMap<ContainerId, Running>>,
    claimed: Mutex<HashSet<String>>,
    /// Containers the runtime had when this agent started: the only ones that can be adopted.
    found_at_start: Mutex<HashSet<String>>,
    unpacking: tokio::sync::Mutex<()>,
    tasks: TaskTracker,
    /// Pods' own networks, or why pods share the host's.
    network: Result<Arc<BridgeNetwork>, String>,
    /// A ready container directory (overlay mounted) per unpacked image rootfs.
    spare_rootfs: Mutex<HashMap<PathBuf, PathBuf>>,
    spare_seq: std::sync::atomic::AtomicU64,
}

/// An image unpacked and ready to start containers from.
struct Prepared {
    rootfs: PathBuf,
    config: serde_json::Value,
}

/// Receives a container's exit status once it ended.
type ExitWatch = watch::Receiver<Option<ExitStatus>>;
/// The signal the agent last sent a container.
type Signalled = Arc<Mutex<Option<i32>>>;

struct Running {
    /// Its init process.
    pid: i32,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// The signal the agent last sent (for the exit code of an adopted container).
    signalled: Arc<Mutex<Option<i32>>>,
    /// Its stdin or terminal, when its spec asks for one and this agent started it.
    stdin: Option<Arc<ContainerStdin>>,
}

/// A container the runtime just started.
struct Started {
    pid: i32,
    /// Its terminal (`tty`), which the runtime sent.
    terminal: Option<std::os::fd::OwnedFd>,
    /// Where its input goes (`stdin` or `tty`).
    stdin: Option<Arc<ContainerStdin>>,
}

impl std::fmt::Debug for OciRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciRuntime")
            .field("handler", &self.inner.handler)
            .field("binary", &self.inner.binary)
            .finish_non_exhaustive()
    }
}

impl OciRuntime {
    /// The plugin for `binary` as RuntimeClass handler `handler`, its containers under
    /// `data_dir/oci/<handler>`, its pods on `network` (or, given why not, on the host's).
    /// Containers an earlier agent left running are kept for their pods to claim; those
    /// unclaimed after [`adopt::ORPHAN_GRACE`] are removed (on `tasks`), with their networks.
    pub async fn new(
        handler: &str,
        binary: RuntimeBinary,
        data_dir: &Path,
        images: ImageCache,
        network: Result<Arc<BridgeNetwork>, String>,
        tasks: &TaskTracker,
        shutdown: CancellationToken,
    ) -> std::io::Result<OciRuntime> {
        let base = data_dir.join("oci");
        let containers_dir = base.join(handler).join("containers");
        std::fs::create_dir_all(&containers_dir)?;
        std::fs::create_dir_all(base.join("images"))?;
        let runtime = OciRuntime {
            inner: Arc::new(Inner {
                handler: handler.to_string(),
                binary,
                containers_dir,
                images_dir: base.join("images"),
                images,
                prepared: Mutex::default(),
                containers: Mutex::default(),
                claimed: Mutex::default(),
                found_at_start: Mutex::default(),
                unpacking: tokio::sync::Mutex::new(()),
                tasks: TaskTracker::new(),
                network,
                spare_rootfs: Mutex::default(),
                spare_seq: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        if let Ok(network) = &runtime.inner.network {
            let (network, stop) = (network.clone(), shutdown.clone());
            // The first spare comes with the first container pod: an agent that runs none
            // makes no namespaces.
            tasks.spawn(async move {
                stop.cancelled().await;
                network.drop_spare().await;
            });
        }
        // Spare root filesystems an earlier agent left; this one's go when it stops.
        for entry in std::fs::read_dir(&runtime.inner.containers_dir)?.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(SPARE_PREFIX)
            {
                runtime.remove_dir(&entry.path()).await;
            }
        }
        {
            let (me, stop) = (runtime.clone(), shutdown.clone());
            tasks.spawn(async move {
                stop.cancelled().await;
                let spares: Vec<PathBuf> = lock(&me.inner.spare_rootfs)
                    .drain()
                    .map(|(_, d)| d)
                    .collect();
                for dir in spares {
                    me.remove_dir(&dir).await;
                }
            });
        }
        let orphans = adopt::found_at_start(&runtime.inner.binary).await;
        *lock(&runtime.inner.found_at_start) = orphans.clone();
        let me = runtime.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(adopt::ORPHAN_GRACE) => {}
                _ = shutdown.cancelled() => return,
            }
            let claimed = lock(&me.inner.claimed).clone();
            adopt::remove_unclaimed(
                &me.inner.binary,
                &me.inner.containers_dir,
                &orphans,
                &claimed,
            )
            .await;
            if let Ok(network) = &me.inner.network {
                network.remove_unattached().await;
            }
        });
        Ok(runtime)
    }

    fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.inner.containers_dir.join(&id.0)
    }

    async fn prepare_image(&self, request: &ImageRequest) -> Result<PreparedImage, RuntimeError> {
        let pulled = self
            .inner
            .images
            .pull(&request.reference, request.policy, &request.secrets)
            .await
            .map_err(|e| RuntimeError::ImagePull(e.to_string()))?;
        let ImageContent::Container { layers } = &pulled.content else {
            return Err(RuntimeError::InvalidImage(format!(
                "image {} is a Wasm image: the {} runtime runs container images (use the \
                 wasmtime RuntimeClass for it)",
                pulled.reference, self.inner.handler
            )));
        };
        let Some(config) = pulled.config.clone() else {
            return Err(RuntimeError::InvalidImage(format!(
                "image {} has no image config",
                pulled.reference
            )));
        };
        let key = pulled.digest.replace(':', "-");
        let rootfs = self.inner.images_dir.join(&key).join("rootfs");
        if !lock(&self.inner.prepared).contains_key(&pulled.digest) {
            let _one_at_a_time = self.inner.unpacking.lock().await;
            let (layers, dest) = (layers.clone(), rootfs.clone());
            tokio::task::spawn_blocking(move || rootfs::unpack_image(&layers, &dest))
                .await
                .map_err(|e| RuntimeError::Create(format!("unpacking task failed: {e}")))?
                .map_err(|e| {
                    RuntimeError::InvalidImage(format!(
                        "image {}: cannot unpack its layers: {e}",
                        pulled.reference
                    ))
                })?;
            lock(&self.inner.prepared).insert(
                pulled.digest.clone(),
                Arc::new(Prepared {
                    rootfs: rootfs.clone(),
                    config,
                }),
            );
        }
        let repository = pulled.reference.split('@').next().unwrap_or("");
        let repository = match repository.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => repository,
        };
        let image_id = format!("{repository}@{}", pulled.digest);
        let prepared = lock(&self.inner.prepared).get(&pulled.digest).cloned();
        if let Some(p) = prepared {
            lock(&self.inner.prepared).insert(image_id.clone(), p);
        }
        Ok(PreparedImage {
            image: pulled.reference.clone(),
            image_id,
            fetched: pulled.fetched,
            workload: Workload::Command,
        })
    }

    async fn start_container(&self, spec: ContainerSpec) -> Result<(), RuntimeError> {
        let id = spec.id.clone();
        lock(&self.inner.claimed).insert(id.0.clone());
        let binary = &self.inner.binary;
        let dir = self.container_dir(&id);
        // Only a container an earlier agent left can exist already; asking the runtime about
        // any other would cost a process start on every container start.
        let state = if lock(&self.inner.found_at_start).contains(&id.0) {
            binary.state(&id.0).await.map_err(RuntimeError::Create)?
        } else {
            None
        };
        match adopt::classify(state.as_ref()) {
            Found::Running { pid } => {
                tracing::info!(container = %id, pid, "adopting a running container");
                let adopted = Started {
                    pid,
                    terminal: None,
                    stdin: None,
                };
                self.monitor(&spec, &dir, adopted, false);
                return Ok(());
            }
            Found::Stale => {
                binary.delete(&id.0).await.map_err(RuntimeError::Create)?;
                self.remove_dir(&dir).await;
            }
            Found::Nothing => self.remove_dir(&dir).await,
        }
        if spec.adopt_only {
            return Err(RuntimeError::NotFound(id));
        }
        match self.create_and_start(&spec, &dir).await {
            Ok(started) => {
                self.monitor(&spec, &dir, started, true);
                Ok(())
            }
            Err(e) => {
                let _ = binary.delete(&id.0).await;
                self.remove_dir(&dir).await;
                Err(e)
            }
        }
    }

    async fn create_and_start(
        &self,
        spec: &ContainerSpec,
        dir: &Path,
    ) -> Result<Started, RuntimeError> {
        let prepared = lock(&self.inner.prepared)
            .get(&spec.image.image_id)
            .cloned()
            .ok_or_else(|| {
                RuntimeError::Create(format!("image {} is not prepared", spec.image.image))
            })?;
        // Refuse a container with nothing to run before building anything.
        spec::argv(&prepared.config, spec).map_err(RuntimeError::InvalidImage)?;
        let io = |what: &str, e: std::io::Error| {
            RuntimeError::Create(format!("container {}: {what}: {e}", spec.id))
        };
        let spare = lock(&self.inner.spare_rootfs).remove(&prepared.rootfs);
        let took_spare = match spare {
            Some(spare) => match std::fs::rename(&spare, dir) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(dir = %spare.display(), error = %e, "cannot use a spare root filesystem");
                    self.remove_dir(&spare).await;
                    false
                }
            },
            None => false,
        };
        if !took_spare {
            std::fs::create_dir_all(dir).map_err(|e| io("cannot create its directory", e))?;
            let (image, d) = (prepared.rootfs.clone(), dir.to_path_buf());
            tokio::task::spawn_blocking(move || rootfs::make_container_rootfs(&image, &d))
                .await
                .map_err(|e| RuntimeError::Create(format!("rootfs task failed: {e}")))?
                .map_err(|e| io("cannot make its root filesystem", e))?;
        }
        let pid_namespace = match &spec.share_processes_with {
            Some(target) => {
                let pid = lock(&self.inner.containers).get(target).map(|r| r.pid);
                let pid = pid.ok_or_else(|| {
                    RuntimeError::Create(format!("container {target} is not running"))
                })?;
                Some(PathBuf::from(format!("/proc/{pid}/ns/pid")))
            }
            None => None,
        };
        let files = spec::HostFiles {
            pid_namespace,
            rootfs: dir.join("rootfs"),
            hosts: dir.join("hosts"),
            resolv_conf: match &spec.resolv_conf {
                Some(_) => dir.join("resolv.conf"),
                None => PathBuf::from("/etc/resolv.conf"),
            },
        };
        if let Some(text) = &spec.resolv_conf {
            std::fs::write(&files.resolv_conf, text)
                .map_err(|e| io("cannot write /etc/resolv.conf", e))?;
        }
        let ip = spec.listen.map(|a| a.ip());
        std::fs::write(
            &files.hosts,
            spec::hosts_file(&spec.hostname, ip, &spec.host_aliases),
        )
        .map_err(|e| io("cannot write /etc/hosts", e))?;
        let oci = spec::build(&prepared.config, spec, &spec.hostname, &files)?;
        oci.save(dir.join("config.json"))
            .map_err(|e| RuntimeError::Create(format!("cannot write the runtime spec: {e}")))?;
        let (stdout, stderr) =
            output::open_for_container(dir).map_err(|e| io("cannot open its output files", e))?;
        // A terminal comes from the runtime over a console socket; a plain stdin is a pipe.
        let console = match spec.stdio.tty {
            true => {
                Some(ConsoleSocket::bind_new().map_err(|e| io("cannot open a console socket", e))?)
            }
            false => None,
        };
        let (mut stdin, stdin_read) = match (spec.stdio.stdin, &console) {
            (true, None) => {
                let (stdin, read) = ContainerStdin::pipe(spec.stdio.stdin_once)
                    .map_err(|e| io("cannot open its stdin", e))?;
                (Some(Arc::new(stdin)), Some(read))
            }
            _ => (None, None),
        };
        let process_io = runc::ProcessIo {
            stdin: stdin_read,
            stdout,
            stderr,
            console_socket: console.as_ref().map(|c| c.path().to_path_buf()),
        };
        let binary = &self.inner.binary;
        let pid = binary
            .run_detached(&spec.id.0, dir, process_io)
            .await
            .map_err(|e| RuntimeError::Create(format!("{}: {e}", self.inner.handler)))?;
        let terminal = match &console {
            Some(console) => {
                let terminal = console
                    .receive()
                    .map_err(|e| io("cannot take its terminal", e))?;
                let input =
                    ContainerStdin::terminal(&terminal, spec.stdio.stdin, spec.stdio.stdin_once)
                        .map_err(|e| io("cannot take its terminal", e))?;
                stdin = Some(Arc::new(input));
                Some(terminal)
            }
            None => None,
        };
        self.refill(&prepared.rootfs, spec.netns.is_some());
        Ok(Started {
            pid,
            terminal,
            stdin,
        })
    }

    /// After a container started: a spare root filesystem of its image and, when it has a
    /// network of its own, a spare network, made in the background once [`REFILL_DELAY`] passed.
    fn refill(&self, image: &Path, network: bool) {
        let me = self.clone();
        let image = image.to_path_buf();
        self.inner.tasks.spawn(async move {
            tokio::time::sleep(REFILL_DELAY).await;
            me.refill_rootfs(&image);
            if let (true, Ok(network)) = (network, &me.inner.network) {
                network.refill().await;
            }
        });
    }

    /// Makes a spare root filesystem over `image` in the background, unless there is one.
    fn refill_rootfs(&self, image: &Path) {
        if lock(&self.inner.spare_rootfs).contains_key(image) {
            return;
        }
        let n = self
            .inner
            .spare_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.inner.containers_dir.join(format!("{SPARE_PREFIX}{n}"));
        let (me, image) = (self.clone(), image.to_path_buf());
        self.inner.tasks.spawn(async move {
            let (i, d) = (image.clone(), dir.clone());
            let made = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&d)?;
                rootfs::make_container_rootfs(&i, &d)
            })
            .await;
            let kept = matches!(made, Ok(Ok(_))) && {
                let mut spares = lock(&me.inner.spare_rootfs);
                let free = !spares.contains_key(&image);
                if free {
                    spares.insert(image, dir.clone());
                }
                free
            };
            if !kept {
                me.remove_dir(&dir).await;
            }
        });
    }

    /// Follows the container's output and publishes its exit status when it ends.
    fn monitor(&self, spec: &ContainerSpec, dir: &Path, started: Started, own_child: bool) {
        let (tx, rx) = watch::channel(None);
        let signalled = Arc::new(Mutex::new(None));
        let follow_stop = CancellationToken::new();
        let pid = started.pid;
        let on_terminal = started.terminal.is_some();
        let follower = match started.terminal {
            // What the container shows on its terminal goes to its log as it comes.
            // A thread of its own, not the runtime's blocking pool: it reads until the
            // container ends, and the runtime's shutdown waits for its blocking tasks (an
            // agent exits leaving its containers running).
            Some(terminal) => {
                let output = spec.output.clone();
                let copied = console::on_thread(move || console::copy_out(terminal, output));
                self.inner.tasks.spawn(async move {
                    let _ = copied.await;
                })
            }
            None => self.inner.tasks.spawn(output::follow(
                dir.to_path_buf(),
                spec.output.clone(),
                follow_stop.clone(),
            )),
        };
        let cgroup = spec::cgroup_path(&spec.id.0);
        let sent = signalled.clone();
        self.inner.tasks.spawn(async move {
            let code = exit::wait_pid(pid).await;
            follow_stop.cancel();
            if on_terminal {
                // A program the container left in the background may hold its terminal open
                // after its main process ended: what it shows later is not waited for.
                let _ = tokio::time::timeout(TERMINAL_DRAIN, follower).await;
            } else {
                let _ = follower.await;
            }
            let status = if exit::oom_killed(&cgroup) {
                ExitStatus {
                    code: code.unwrap_or(137),
                    reason: "OOMKilled".into(),
                    message: "the container exceeded its memory limit".into(),
                }
            } else {
                let code = code.or_else(|| lock(&sent).map(|s| 128 + s));
                match code {
                    Some(0) => ExitStatus::completed(),
                    Some(code) => ExitStatus {
                        code,
                        reason: "Error".into(),
                        message: String::new(),
                    },
                    None => ExitStatus {
                        code: 255,
                        reason: "Unknown".into(),
                        message: if own_child {
                            "the container's exit code could not be read".into()
                        } else {
                            "the container was adopted from an earlier agent, which saw its \
                             start; its exit code is unknown"
                                .into()
                        },
                    },
                }
            };
            let _ = tx.send(Some(status));
        });
        lock(&self.inner.containers).insert(
            spec.id.clone(),
            Running {
                pid: started.pid,
                exit: rx,
                signalled,
                stdin: started.stdin,
            },
        );
    }

    fn entry(&self, id: &ContainerId) -> Result<(ExitWatch, Signalled), RuntimeError> {
        let containers = lock(&self.inner.containers);
        let r = containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        Ok((r.exit.clone(), r.signalled.clone()))
    }

    async fn stop_container(
        &self,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        let (mut exit, signalled) = self.entry(id)?;
        if exit.borrow().is_none() {
            *lock(&signalled) = Some(15);
            if let Err(e) = self.inner.binary.kill(&id.0, "TERM").await {
                tracing::debug!(container = %id, error = %e, "SIGTERM not delivered");
            }
            if tokio::time::timeout(grace, exit.wait_for(Option::is_some))
                .await
                .is_err()
            {
                *lock(&signalled) = Some(9);
                if let Err(e) = self.inner.binary.kill(&id.0, "KILL").await {
                    tracing::debug!(container = %id, error = %e, "SIGKILL not delivered");
                }
            }
        }
        match tokio::time::timeout(KILL_SLACK, exit.wait_for(Option::is_some)).await {
            Ok(Ok(status)) => Ok(status.clone().unwrap_or_else(ExitStatus::completed)),
            _ => Err(RuntimeError::Create(format!(
                "container {id} did not stop after SIGKILL"
            ))),
        }
    }

    async fn remove_dir(&self, dir: &Path) {
        let d = dir.to_path_buf();
        if let Ok(Err(e)) =
            tokio::task::spawn_blocking(move || rootfs::remove_container_dir(&d)).await
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a container directory");
        }
    }

    /// Deletes the container from the runtime (its processes and cgroup) and its directory.
    async fn delete_container(&self, id: ContainerId) {
        lock(&self.inner.found_at_start).remove(&id.0);
        if let Err(e) = self.inner.binary.delete(&id.0).await {
            tracing::warn!(container = %id, error = %e, "cannot delete the container");
        }
        self.remove_dir(&self.container_dir(&id)).await;
        lock(&self.inner.claimed).remove(&id.0);
    }
}

impl Runtime for OciRuntime {
    fn handler(&self) -> &str {
        &self.inner.handler
    }

    fn prepare<'a>(
        &'a self,
        image: &'a ImageRequest,
    ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>> {
        self.prepare_image(image).boxed()
    }

    fn start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<(), RuntimeError>> {
        self.start_container(spec).boxed()
    }

    fn wait<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>> {
        async move {
            let (mut exit, _) = self.entry(id)?;
            let status = match exit.wait_for(Option::is_some).await {
                Ok(s) => s.clone().unwrap_or_else(ExitStatus::completed),
                Err(_) => ExitStatus {
                    code: 255,
                    reason: "Unknown".into(),
                    message: "the container's monitor ended without a status".into(),
                },
            };
            Ok(status)
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>> {
        self.stop_container(id, grace).boxed()
    }

    fn stats(&self, id: &ContainerId) -> Option<ContainerStats> {
        if !lock(&self.inner.containers).contains_key(id) {
            return None;
        }
        stats::read(Path::new("/sys/fs/cgroup"), &spec::cgroup_path(&id.0))
    }

    fn remove(&self, id: &ContainerId) {
        lock(&self.inner.containers).remove(id);
        let me = self.clone();
        let id = id.clone();
        self.inner
            .tasks
            .spawn(async move { me.delete_container(id).await });
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<ExecOutput, RuntimeError>> {
        async move {
            let out = self
                .inner
                .binary
                .exec(&id.0, command, timeout)
                .await
                .map_err(RuntimeError::Exec)?;
            Ok(ExecOutput {
                code: out.code,
                output: out.output,
            })
        }
        .boxed()
    }

    fn uses_resolv_conf(&self) -> bool {
        true
    }

    fn attach<'a>(
        &'a self,
        id: &'a ContainerId,
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            let stdin = lock(&self.inner.containers)
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?
                .stdin
                .clone();
            match stdin {
                Some(stdin) => stdin.attach(input, resize).await,
                None => super::drain(input, resize).await,
            }
            Ok(())
        }
        .boxed()
    }

    fn runs_commands(&self) -> bool {
        true
    }

    fn exec_terminal<'a>(
        &'a self,
        id: &'a ContainerId,
        command: &'a [String],
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        resize: tokio::sync::mpsc::Receiver<(u16, u16)>,
        output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        async move {
            self.inner
                .binary
                .exec_terminal(&id.0, command, input, resize, output)
                .await
                .map_err(RuntimeError::Exec)
        }
        .boxed()
    }

    fn exec_streaming<'a>(
        &'a self,
        id: &'a ContainerId,
        command: &'a [String],
        input: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
        output: tokio::sync::mpsc::Sender<(u8, bytes::Bytes)>,
    ) -> BoxFuture<'a, Result<i32, RuntimeError>> {
        async move {
            self.inner
                .binary
                .exec_streaming(&id.0, command, input, output)
                .await
                .map_err(RuntimeError::Exec)
        }
        .boxed()
    }

    fn outlives_agent(&self) -> bool {
        true
    }

    fn pod_network<'a>(
        &'a self,
        pod_uid: &'a str,
        wanted: Option<std::net::Ipv4Addr>,
    ) -> BoxFuture<'a, Result<PodNetwork, RuntimeError>> {
        async move {
            match &self.inner.network {
                Ok(network) => {
                    let _ = wanted; // the address comes with the network
                    // The next pod's network is made once this one's container started.
                    let attached = network
                        .attach(pod_uid)
                        .await
                        .map_err(RuntimeError::Create)?;
                    Ok(PodNetwork::Own {
                        description: format!(
                            "own network namespace {}: eth0 {}/{} on bridge {}",
                            attached.netns.display(),
                            attached.ip,
                            network.range().prefix,
                            network.bridge()
                        ),
                        ip: attached.ip,
                        netns: attached.netns,
                    })
                }
                Err(why) => Ok(PodNetwork::Node {
                    note: Some(format!(
                        "host network: {why}, so the containers share the node's network \
                         namespace and serve on the pod's address from the node's pod range"
                    )),
                }),
            }
        }
        .boxed()
    }

    fn remove_pod_network<'a>(&'a self, pod_uid: &'a str) -> BoxFuture<'a, ()> {
        async move {
            if let Ok(network) = &self.inner.network {
                network.detach(pod_uid).await;
            }
        }
        .boxed()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
