//! The wasmtime runtime plugin: Wasm images run in-process on `flotilla-wasm`.
//!
//! [`Runtime::prepare`] pulls through the node's [`ImageCache`] and compiles (through the
//! engine's on-disk compile cache) on a blocking thread; a container image, a corrupt binary or
//! a component of a world this engine cannot run is refused there, with a message naming the
//! image. Commands (WASI p1 modules, p2 command components) run to completion; `wasi:http/proxy`
//! components are served on the pod's address until stopped.
//!
//! A command container with `stdin` reads a stream the runtime keeps the writing side of
//! (`CommandStdin`): [`Runtime::attach`] writes to it, and with `stdinOnce` closes it after the
//! first attach. A Wasm guest has no pseudo-terminal: with `tty`, the runtime does what a
//! terminal's line discipline would ([`super::line_discipline`]: echo, lines, erase, Ctrl-D,
//! Ctrl-C, newlines shown as CR LF), so `kubectl run -it` works; terminal sizes are ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flotilla_wasm::command::StdinWriter;
use flotilla_wasm::{
    Artifact, CommandControl, CommandSpec, Engine, HttpService, HttpSpec, Limits, LogSink,
    LogStream, Preopen, Stdin, Usage,
};
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio_util::task::TaskTracker;

use super::line_discipline::LineDiscipline;
use super::{
    ContainerId, ContainerOutput, ContainerSpec, ContainerStats, ExitStatus, HttpCounters,
    ImageRequest, OutputStream, PreparedImage, Runtime, RuntimeError, WASMTIME_HANDLER, Workload,
};
use crate::image::{ImageCache, ImageContent};

/// Memory cap of an instance whose container sets no `limits.memory`: the engine's pool slot.
const UNLIMITED_MEMORY: u64 = 1 << 30;
/// A request's CPU budget for one full core (`limits.cpu: 1`); scaled by the limit.
const REQUEST_CPU_PER_CORE: Duration = Duration::from_secs(10);

/// The wasmtime plugin; cheap to clone.
#[derive(Clone)]
pub struct WasmtimeRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    images: ImageCache,
    // std mutexes: only map operations under them, never held across an await.
    artifacts: Mutex<HashMap<String, Artifact>>,
    containers: Mutex<HashMap<ContainerId, Running>>,
    tasks: TaskTracker,
}

/// A started container.
struct Running {
    exit: watch::Receiver<Option<ExitStatus>>,
    control: Control,
    usage: Usage,
    /// The writing side of its standard input: a command whose spec has `stdin`.
    stdin: Option<Arc<CommandStdin>>,
}

/// The runtime's end of a command container's standard input, which `kubectl attach` writes to.
struct CommandStdin {
    /// `None` once closed (after the first attach, with `stdinOnce`): the guest has read its
    /// end of file. A std mutex: only cloned or taken under it.
    writer: Mutex<Option<StdinWriter>>,
    /// `stdinOnce`.
    once: bool,
    /// With `tty`: the terminal's line being typed ([`super::line_discipline`]), where its
    /// echo is shown, and the guest it interrupts (Ctrl-C).
    terminal: Option<Terminal>,
}

/// The terminal of a Wasm command with `tty`.
struct Terminal {
    line: Mutex<LineDiscipline>,
    echo: Arc<dyn ContainerOutput>,
    guest: CommandControl,
}

impl CommandStdin {
    /// Serves one attach: writes what comes on `input` until it ends (or the guest has ended),
    /// through the terminal's line discipline with `tty`, and drops what comes on `resize`.
    /// With `stdinOnce`, an attach that brought input then closes the stream: the guest reads
    /// its end of file. Without it, the stream stays open, and a guest reading it waits for
    /// the next attach (or, on a terminal, for Ctrl-D).
    async fn attach(
        &self,
        input: Option<mpsc::Receiver<Bytes>>,
        resize: mpsc::Receiver<(u16, u16)>,
    ) {
        let writer = lock(&self.writer).clone();
        let (mut input, writer) = match (input, writer) {
            (Some(input), Some(writer)) => (input, writer),
            // No input, or the stream is closed already: what comes is dropped.
            (input, _) => return super::drain(input, resize).await,
        };
        let copy = async move {
            while let Some(chunk) = input.recv().await {
                let Some(terminal) = &self.terminal else {
                    if writer.write(chunk).await.is_err() {
                        // The guest has ended.
                        return;
                    }
                    continue;
                };
                let typed = lock(&terminal.line).input(&chunk);
                if !typed.echo.is_empty() {
                    terminal.echo.write(OutputStream::Stdout, &typed.echo);
                }
                if !typed.to_guest.is_empty()
                    && writer.write(Bytes::from(typed.to_guest)).await.is_err()
                {
                    return;
                }
                if typed.interrupt {
                    terminal.guest.kill();
                    return;
                }
                if typed.end_of_input {
                    drop(writer);
                    lock(&self.writer).take();
                    return;
                }
            }
            drop(writer);
            // With a terminal too: there is no pseudo-terminal here to keep open (as containerd
            // keeps a container's), and the client's input ending (kubectl read an end of
            // file) means the same as Ctrl-D.
            if self.once {
                // As soon as the input ends, the client still attached: the clone above is
                // gone, so this was the last writer (unless another attach is still
                // writing), and the guest reads its end of file.
                lock(&self.writer).take();
            }
        };
        futures::join!(copy, super::drain(None, resize));
    }
}

enum Control {
    Command(CommandControl),
    Http {
        service: Arc<Mutex<Option<HttpService>>>,
        exit: Arc<watch::Sender<Option<ExitStatus>>>,
    },
}

impl std::fmt::Debug for WasmtimeRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmtimeRuntime")
            .field("engine", &self.inner.engine)
            .finish_non_exhaustive()
    }
}

impl WasmtimeRuntime {
    /// A plugin running guests on `engine`, pulling through `images`.
    pub fn new(engine: Engine, images: ImageCache) -> WasmtimeRuntime {
        WasmtimeRuntime {
            inner: Arc::new(Inner {
                engine,
                images,
                artifacts: Mutex::default(),
                containers: Mutex::default(),
                tasks: TaskTracker::new(),
            }),
        }
    }

    fn artifact(&self, image_id: &str) -> Option<Artifact> {
        lock(&self.inner.artifacts).get(image_id).cloned()
    }

    async fn prepare_image(&self, request: &ImageRequest) -> Result<PreparedImage, RuntimeError> {
        let pulled = self
            .inner
            .images
            .pull(&request.reference, request.policy, &request.secrets)
            .await
            .map_err(|e| RuntimeError::ImagePull(e.to_string()))?;
        let ImageContent::Wasm { path, digest, .. } = &pulled.content else {
            return Err(RuntimeError::InvalidImage(format!(
                "image {} is a container image, not Wasm: the wasmtime runtime runs only Wasm \
                 images (name a RuntimeClass with a container runtime to run it)",
                pulled.reference
            )));
        };
        let artifact = match self.artifact(digest) {
            Some(a) => a,
            None => {
                let engine = self.inner.engine.clone();
                let path = path.clone();
                let loaded = tokio::task::spawn_blocking(move || engine.load_file(&path))
                    .await
                    .map_err(|e| RuntimeError::Create(format!("compiling task failed: {e}")))?;
                let artifact = loaded.map_err(|e| {
                    RuntimeError::InvalidImage(format!(
                        "image {} cannot run on wasmtime: {e} (this node runs WASI preview 1 \
                         modules, WASI preview 2 command components and wasi:http/proxy \
                         components)",
                        pulled.reference
                    ))
                })?;
                lock(&self.inner.artifacts).insert(digest.clone(), artifact.clone());
                artifact
            }
        };
        let repository = pulled.reference.split('@').next().unwrap_or("");
        let repository = match repository.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => repo,
            _ => repository,
        };
        let image_id = format!("{repository}@{}", pulled.digest);
        lock(&self.inner.artifacts).insert(image_id.clone(), artifact.clone());
        Ok(PreparedImage {
            image: pulled.reference.clone(),
            image_id,
            fetched: pulled.fetched,
            workload: if artifact.kind().is_command() {
                Workload::Command
            } else {
                Workload::HttpService
            },
        })
    }

    async fn start_container(&self, spec: ContainerSpec) -> Result<(), RuntimeError> {
        let artifact = self.artifact(&spec.image.image_id).ok_or_else(|| {
            RuntimeError::Create(format!("image {} is not prepared", spec.image.image))
        })?;
        let log: Arc<dyn LogSink> = Arc::new(OutputSink(spec.output.clone()));
        let memory = spec.memory_limit.unwrap_or(UNLIMITED_MEMORY);
        let (tx, rx) = watch::channel(None);
        let usage;
        let mut stdin = None;
        let control = match spec.image.workload {
            Workload::Command => {
                let (guest_stdin, writer) = if spec.stdio.stdin {
                    let (guest_stdin, writer) = Stdin::stream();
                    (guest_stdin, Some(writer))
                } else {
                    // End of file at once.
                    (Stdin::None, None)
                };
                let log: Arc<dyn LogSink> = match spec.stdio.tty {
                    true => Arc::new(TerminalSink(spec.output.clone())),
                    false => log,
                };
                let command = CommandSpec {
                    args: spec.args.clone(),
                    env: spec.env.clone(),
                    preopens: preopens(&spec),
                    stdin: guest_stdin,
                    log: Some(log),
                    limits: Limits {
                        memory_bytes: memory,
                        ..Limits::default()
                    },
                };
                let handle = self
                    .inner
                    .engine
                    .run_command(&artifact, command)
                    .map_err(|e| RuntimeError::Create(format!("container {}: {e}", spec.id)))?;
                let control = handle.control();
                usage = handle.usage();
                stdin = writer.map(|writer| {
                    Arc::new(CommandStdin {
                        writer: Mutex::new(Some(writer)),
                        once: spec.stdio.stdin_once,
                        terminal: spec.stdio.tty.then(|| Terminal {
                            line: Mutex::default(),
                            echo: spec.output.clone(),
                            guest: control.clone(),
                        }),
                    })
                });
                self.inner.tasks.spawn(async move {
                    let status = exit_status(handle.wait().await);
                    let _ = tx.send(Some(status));
                });
                Control::Command(control)
            }
            Workload::HttpService => {
                let addr = spec.listen.ok_or_else(|| {
                    RuntimeError::Create(format!("container {}: no address to serve on", spec.id))
                })?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| RuntimeError::Create(format!("cannot listen on {addr}: {e}")))?;
                let cpu = spec
                    .cpu_millis
                    .map(|m| {
                        (REQUEST_CPU_PER_CORE * m as u32 / 1000).max(Duration::from_millis(10))
                    })
                    .unwrap_or(REQUEST_CPU_PER_CORE);
                let http = HttpSpec {
                    limits: Limits {
                        memory_bytes: memory,
                        cpu_time: Some(cpu),
                        ..Limits::default()
                    },
                    env: spec.env.clone(),
                    log: Some(log),
                    resolver: spec
                        .resolver
                        .clone()
                        .map(|r| Arc::new(ResolverAdapter(r)) as Arc<dyn flotilla_wasm::Resolver>),
                    ..HttpSpec::default()
                };
                let service = self
                    .inner
                    .engine
                    .serve_http(&artifact, listener, http)
                    .map_err(|e| RuntimeError::Create(format!("container {}: {e}", spec.id)))?;
                usage = service.usage();
                Control::Http {
                    service: Arc::new(Mutex::new(Some(service))),
                    exit: Arc::new(tx),
                }
            }
        };
        lock(&self.inner.containers).insert(
            spec.id,
            Running {
                exit: rx,
                control,
                usage,
                stdin,
            },
        );
        Ok(())
    }

    fn entry(
        &self,
        id: &ContainerId,
    ) -> Result<(watch::Receiver<Option<ExitStatus>>, ControlRef), RuntimeError> {
        let containers = lock(&self.inner.containers);
        let running = containers
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))?;
        let control = match &running.control {
            Control::Command(c) => ControlRef::Command(c.clone()),
            Control::Http { service, exit } => ControlRef::Http(service.clone(), exit.clone()),
        };
        Ok((running.exit.clone(), control))
    }

    async fn stop_container(
        &self,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<ExitStatus, RuntimeError> {
        let (mut exit, control) = self.entry(id)?;
        match control {
            ControlRef::Command(control) => {
                if tokio::time::timeout(grace, wait_exit(&mut exit))
                    .await
                    .is_err()
                {
                    control.kill();
                }
            }
            ControlRef::Http(service, tx) => {
                let service = lock(&service).take();
                if let Some(service) = service {
                    // Keep accepting for a moment: the pod is Terminating, and the Endpoints
                    // and node proxies take it out of rotation within milliseconds; closing the
                    // listener first would reset connections already routed here.
                    tokio::time::sleep(DEREGISTRATION_DELAY.min(grace / 2)).await;
                    let drained = service.stop(grace).await;
                    let status = if drained {
                        ExitStatus::completed()
                    } else {
                        ExitStatus {
                            code: 137,
                            reason: "Error".into(),
                            message: "requests still in flight after the grace period were \
                                      dropped"
                                .into(),
                        }
                    };
                    tx.send_replace(Some(status));
                }
            }
        }
        Ok(wait_exit(&mut exit).await)
    }
}

/// How long an HTTP service keeps accepting after it is asked to stop (at most half its grace
/// period), so that Services stop routing to it before its listener closes.
const DEREGISTRATION_DELAY: Duration = Duration::from_millis(500);

enum ControlRef {
    Command(CommandControl),
    Http(
        Arc<Mutex<Option<HttpService>>>,
        Arc<watch::Sender<Option<ExitStatus>>>,
    ),
}

async fn wait_exit(exit: &mut watch::Receiver<Option<ExitStatus>>) -> ExitStatus {
    match exit.wait_for(Option::is_some).await {
        Ok(status) => status.clone().unwrap_or_else(ExitStatus::completed),
        // The sender is gone without a status: the task was dropped.
        Err(_) => ExitStatus {
            code: 137,
            reason: "Error".into(),
            message: "the container's task ended without a status".into(),
        },
    }
}

impl Runtime for WasmtimeRuntime {
    fn handler(&self) -> &str {
        WASMTIME_HANDLER
    }

    fn prepare<'a>(
        &'a self,
        image: &'a ImageRequest,
    ) -> BoxFuture<'a, Result<PreparedImage, RuntimeError>> {
        self.prepare_image(image).boxed()
    }

    fn start(&self, spec: ContainerSpec) -> BoxFuture<'_, Result<(), RuntimeError>> {
        if spec.adopt_only {
            // Guests live in the agent's process: none outlives it.
            return std::future::ready(Err(RuntimeError::NotFound(spec.id))).boxed();
        }
        self.start_container(spec).boxed()
    }

    fn wait<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, Result<ExitStatus, RuntimeError>> {
        async move {
            let (mut exit, _) = self.entry(id)?;
            Ok(wait_exit(&mut exit).await)
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

    fn attach<'a>(
        &'a self,
        id: &'a ContainerId,
        input: Option<mpsc::Receiver<Bytes>>,
        resize: mpsc::Receiver<(u16, u16)>,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            let stdin = lock(&self.inner.containers)
                .get(id)
                .ok_or_else(|| RuntimeError::NotFound(id.clone()))?
                .stdin
                .clone();
            match stdin {
                Some(stdin) => stdin.attach(input, resize).await,
                // An HTTP service, or a command whose spec asks for no stdin.
                None => super::drain(input, resize).await,
            }
            Ok(())
        }
        .boxed()
    }

    fn stats(&self, id: &ContainerId) -> Option<ContainerStats> {
        let containers = lock(&self.inner.containers);
        let running = containers.get(id)?;
        let http = match &running.control {
            Control::Http { service, .. } => lock(service).as_ref().map(|service| {
                let stats = service.stats();
                HttpCounters {
                    requests: stats.requests,
                    failed: stats.failed,
                    instantiations: stats.instantiations,
                    in_flight: service.in_flight() as u64,
                }
            }),
            Control::Command(_) => None,
        };
        Some(ContainerStats {
            cpu_usage: running.usage.cpu_time(),
            memory_working_set_bytes: running.usage.memory_bytes(),
            http,
        })
    }

    fn remove(&self, id: &ContainerId) {
        let removed = lock(&self.inner.containers).remove(id);
        if let Some(Running {
            control: Control::Command(control),
            exit,
            ..
        }) = removed
            && exit.borrow().is_none()
        {
            control.kill();
        }
    }
}

/// Sorts how a command ended into a container's exit code and reason.
fn exit_status(result: flotilla_wasm::Result<()>) -> ExitStatus {
    use flotilla_wasm::Error;
    match result {
        Ok(()) => ExitStatus::completed(),
        Err(e) => {
            let code = e.exit_code();
            let (reason, message) = match &e {
                Error::Exit(_) => ("Error", String::new()),
                Error::OutOfMemory { .. } => ("OOMKilled", e.to_string()),
                Error::DeadlineExceeded { .. } => ("DeadlineExceeded", e.to_string()),
                Error::Stopped => ("Error", "stopped".to_string()),
                _ => ("Error", e.to_string()),
            };
            ExitStatus {
                code,
                reason: reason.into(),
                message,
            }
        }
    }
}

fn preopens(spec: &ContainerSpec) -> Vec<Preopen> {
    spec.mounts
        .iter()
        .map(|m| Preopen {
            guest_path: m.container_path.clone(),
            host_path: m.host_path.clone(),
            read_only: m.read_only,
        })
        .collect()
}

/// The agent's name resolver, as the engine's outgoing-HTTP hook.
struct ResolverAdapter(Arc<dyn super::NameResolver>);

impl flotilla_wasm::Resolver for ResolverAdapter {
    fn resolve(&self, host: &str, port: u16) -> Option<std::net::SocketAddr> {
        self.0.resolve(host, port)
    }
}

/// Passes guest output to the agent's log store.
struct OutputSink(Arc<dyn ContainerOutput>);

/// A guest's output shown on its terminal (`tty`): newlines after carriage returns, and
/// stderr merged into stdout, as on any terminal.
struct TerminalSink(Arc<dyn ContainerOutput>);

impl LogSink for TerminalSink {
    fn write(&self, _: LogStream, bytes: &[u8]) {
        self.0
            .write(OutputStream::Stdout, &super::line_discipline::output(bytes));
    }
}

impl LogSink for OutputSink {
    fn write(&self, stream: LogStream, bytes: &[u8]) {
        let stream = match stream {
            LogStream::Stdout => OutputStream::Stdout,
            LogStream::Stderr => OutputStream::Stderr,
        };
        self.0.write(stream, bytes);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_outcomes_become_container_exit_statuses() {
        assert_eq!(exit_status(Ok(())), ExitStatus::completed());
        let exit = exit_status(Err(flotilla_wasm::Error::Exit(3)));
        assert_eq!((exit.code, exit.reason.as_str()), (3, "Error"));
        let stopped = exit_status(Err(flotilla_wasm::Error::Stopped));
        assert_eq!(stopped.code, 137);
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A container's output, kept.
    #[derive(Default)]
    struct Kept(Mutex<Vec<u8>>);

    impl ContainerOutput for Kept {
        fn write(&self, _: OutputStream, bytes: &[u8]) {
            lock(&self.0).extend_from_slice(bytes);
        }
    }

    impl Kept {
        fn text(&self) -> String {
            String::from_utf8_lossy(&lock(&self.0)).into_owned()
        }
    }

    /// A runtime with the `hello-c` sample prepared (a WASI p1 command that counts the lines
    /// of its stdin, then prints `stdin lines: N`), and a spec running it.
    fn hello_c(stdio: super::super::ContainerStdio) -> (WasmtimeRuntime, ContainerSpec, Arc<Kept>) {
        let engine = Engine::new(flotilla_wasm::EngineConfig {
            max_instances: 4,
            command_threads: 1,
            ..flotilla_wasm::EngineConfig::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let images = ImageCache::new(dir.path(), None).unwrap();
        let runtime = WasmtimeRuntime::new(engine.clone(), images);
        let sample = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../samples/hello-c/hello-c.wasm"
        );
        let artifact = engine.load_file(sample).unwrap();
        lock(&runtime.inner.artifacts).insert("hello-c@sha256:1".into(), artifact);
        let output = Arc::new(Kept::default());
        let spec = ContainerSpec {
            id: ContainerId("uid-main-0".into()),
            image: super::super::PreparedImage {
                image: "hello-c:v1".into(),
                image_id: "hello-c@sha256:1".into(),
                fetched: false,
                workload: Workload::Command,
            },
            args: vec!["hello-c".into()],
            command: None,
            command_args: None,
            working_dir: None,
            hostname: "hello".into(),
            env: Vec::new(),
            mounts: Vec::new(),
            memory_limit: None,
            cpu_millis: None,
            listen: None,
            netns: None,
            resolver: None,
            host_aliases: Vec::new(),
            resolv_conf: None,
            output: output.clone(),
            stdio,
            share_processes_with: None,
            security: Default::default(),
            host_namespaces: Default::default(),
            adopt_only: false,
        };
        (runtime, spec, output)
    }

    /// An attach that writes `text`, then ends.
    async fn attach_text(
        runtime: &WasmtimeRuntime,
        id: &ContainerId,
        text: &'static str,
    ) -> Result<(), RuntimeError> {
        let (tx, rx) = mpsc::channel(1);
        let (_, resize) = mpsc::channel(1);
        tx.send(Bytes::from_static(text.as_bytes())).await.unwrap();
        drop(tx);
        tokio::time::timeout(TIMEOUT, runtime.attach(id, Some(rx), resize))
            .await
            .expect("the attach ends with its input")
    }

    #[tokio::test]
    async fn a_stdin_once_command_reads_its_end_of_file_after_the_first_attach() {
        let stdio = super::super::ContainerStdio {
            stdin: true,
            stdin_once: true,
            tty: false,
        };
        let (runtime, spec, output) = hello_c(stdio);
        let id = spec.id.clone();
        runtime.start(spec).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            lock(&runtime.inner.containers)[&id].exit.borrow().is_none(),
            "the guest waits for its input"
        );
        // The client stays attached (its terminal-size channel open) after its input ended:
        // the end of file comes with the end of the input, not of the attach.
        let (tx, rx) = mpsc::channel(1);
        let (size_tx, resize) = mpsc::channel(1);
        tx.send(Bytes::from_static(b"a\nb\n")).await.unwrap();
        drop(tx);
        let attached = {
            let (runtime, id) = (runtime.clone(), id.clone());
            tokio::spawn(async move { runtime.attach(&id, Some(rx), resize).await })
        };
        let exit = tokio::time::timeout(TIMEOUT, runtime.wait(&id))
            .await
            .expect("the guest ends at its end of file")
            .unwrap();
        assert_eq!(exit, ExitStatus::completed());
        drop(size_tx);
        attached.await.unwrap().unwrap();
        assert!(
            output.text().contains("stdin lines: 2"),
            "{}",
            output.text()
        );
    }

    #[tokio::test]
    async fn a_tty_command_gets_a_terminals_echo_lines_end_of_file_and_interrupt() {
        let stdio = super::super::ContainerStdio {
            stdin: true,
            stdin_once: true,
            tty: true,
        };
        let (runtime, spec, output) = hello_c(stdio);
        let id = spec.id.clone();
        runtime.start(spec).await.unwrap();
        // kubectl's raw terminal sends Enter as a carriage return; DEL erases; Ctrl-D at a
        // line's start ends the input.
        attach_text(&runtime, &id, "a\rbx\x7f\r\x04").await.unwrap();
        let exit = tokio::time::timeout(TIMEOUT, runtime.wait(&id))
            .await
            .expect("the guest ends at its end of file")
            .unwrap();
        assert_eq!(exit, ExitStatus::completed());
        let shown = output.text();
        assert!(
            shown.contains("a\r\nbx\x08 \x08\r\n"),
            "the echo: {shown:?}"
        );
        assert!(
            shown.contains("stdin lines: 2\r\n"),
            "two lines, shown with CR LF: {shown:?}"
        );

        // Ctrl-C interrupts the guest.
        let (runtime, mut spec, output) = hello_c(stdio);
        spec.id = ContainerId("uid-main-1".into());
        let id = spec.id.clone();
        runtime.start(spec).await.unwrap();
        attach_text(&runtime, &id, "half\x03").await.unwrap();
        let exit = tokio::time::timeout(TIMEOUT, runtime.wait(&id))
            .await
            .expect("the interrupted guest ends")
            .unwrap();
        assert_ne!(exit, ExitStatus::completed(), "{exit:?}");
        assert!(output.text().contains("half^C"), "{:?}", output.text());
    }

    #[tokio::test]
    async fn a_stdin_stays_open_between_attaches_without_stdin_once() {
        let stdio = super::super::ContainerStdio {
            stdin: true,
            ..Default::default()
        };
        let (runtime, spec, output) = hello_c(stdio);
        let id = spec.id.clone();
        runtime.start(spec).await.unwrap();
        attach_text(&runtime, &id, "a\n").await.unwrap();
        attach_text(&runtime, &id, "b\nc\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            lock(&runtime.inner.containers)[&id].exit.borrow().is_none(),
            "the guest still waits for more input"
        );
        runtime.stop(&id, Duration::ZERO).await.unwrap();
        assert!(!output.text().contains("stdin lines"), "{}", output.text());
    }

    #[tokio::test]
    async fn a_command_without_stdin_reads_end_of_file_at_once_and_drops_attached_input() {
        let (runtime, spec, output) = hello_c(Default::default());
        let id = spec.id.clone();
        runtime.start(spec).await.unwrap();
        let exit = tokio::time::timeout(TIMEOUT, runtime.wait(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit, ExitStatus::completed());
        assert!(
            output.text().contains("stdin lines: 0"),
            "{}",
            output.text()
        );
        attach_text(&runtime, &id, "dropped\n").await.unwrap();
        let unknown = ContainerId("uid-other-0".into());
        let err = attach_text(&runtime, &unknown, "x").await.unwrap_err();
        assert!(matches!(err, RuntimeError::NotFound(_)), "{err}");
    }
}
