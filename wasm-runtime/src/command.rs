//! Commands: WASI p1 modules and WASI p2 command components, run to completion.
//!
//! [`Engine::run_command`] sets up the WASI context (args, env, preopens, stdin,
//! output into a [`LogSink`]), starts the guest on a task on the engine's
//! lower-priority command threads and
//! returns a [`CommandHandle`]. The handle's [`wait`](CommandHandle::wait)
//! gives the outcome — `Ok` for exit code 0, else the error kind
//! ([`Error::Exit`], [`Error::Trap`], [`Error::OutOfMemory`], ...) — and
//! [`stop`](CommandHandle::stop) ends it: first a grace period for the guest to
//! finish on its own, then a forced stop at the next epoch tick (or at its next
//! host call), which works on a guest spinning in an infinite loop.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinHandle;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::artifact::{Artifact, Pre};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::limits::{self, Guard, Guarded, KillSwitch, Limits};
use crate::log::{LogSink, LogStream, NullLog, SinkStream};
use crate::usage::Usage;

/// A host directory made visible to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preopen {
    /// Where the guest sees it (`/data`, `.`).
    pub guest_path: String,
    /// The directory on the host.
    pub host_path: PathBuf,
    /// Whether the guest may only read.
    pub read_only: bool,
}

/// What the guest reads from standard input.
#[derive(Clone, Debug, Default)]
pub enum Stdin {
    /// End of file at once.
    #[default]
    None,
    /// These bytes, then end of file.
    Bytes(Bytes),
}

/// How to run a command.
#[derive(Clone)]
pub struct CommandSpec {
    /// Arguments, `argv[0]` (the program name) first.
    pub args: Vec<String>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Directories visible to the guest.
    pub preopens: Vec<Preopen>,
    /// Standard input.
    pub stdin: Stdin,
    /// Where stdout and stderr go; `None` discards them.
    pub log: Option<Arc<dyn LogSink>>,
    /// Memory, table, instance and CPU-time limits.
    pub limits: Limits,
}

impl Default for CommandSpec {
    fn default() -> Self {
        CommandSpec {
            args: vec!["main.wasm".into()],
            env: Vec::new(),
            preopens: Vec::new(),
            stdin: Stdin::None,
            log: None,
            limits: Limits::default(),
        }
    }
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("args", &self.args)
            .field("env", &self.env)
            .field("preopens", &self.preopens)
            .field("stdin", &self.stdin)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Store data of a WASI p1 command.
pub(crate) struct P1State {
    pub(crate) wasi: WasiP1Ctx,
    guard: Guard,
}

impl Guarded for P1State {
    fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

/// Store data of a WASI p2 command.
pub(crate) struct P2State {
    wasi: WasiCtx,
    table: ResourceTable,
    guard: Guard,
}

impl Guarded for P2State {
    fn guard(&mut self) -> &mut Guard {
        &mut self.guard
    }
}

impl WasiView for P2State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A running command.
#[derive(Debug)]
pub struct CommandHandle {
    task: JoinHandle<Result<()>>,
    control: CommandControl,
    usage: Usage,
}

/// Forces a running command to stop; cheap to clone and usable while another
/// task awaits [`CommandHandle::wait`].
#[derive(Clone, Debug)]
pub struct CommandControl {
    kill: KillSwitch,
    abort: tokio::task::AbortHandle,
}

impl CommandControl {
    /// Stops the guest now: at its next epoch tick if it is running wasm code,
    /// or at its next await if it is blocked in a host call.
    pub fn kill(&self) {
        self.kill.kill();
        // The guest yields to the runtime every tick, so an abort lands within
        // one tick even on a guest spinning in a loop; it also covers a guest
        // blocked in a host call, where no tick is observed.
        self.abort.abort();
    }
}

impl CommandHandle {
    /// A handle to kill the command from elsewhere.
    pub fn control(&self) -> CommandControl {
        self.control.clone()
    }

    /// The memory and CPU time of the command's instance (see [`Usage`]).
    pub fn usage(&self) -> Usage {
        self.usage.clone()
    }

    /// Whether the guest has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the guest to finish: `Ok` when it exited with code 0.
    pub async fn wait(self) -> Result<()> {
        join(self.task).await
    }

    /// Stops the guest: waits up to `grace` for it to finish by itself (WASI
    /// has no signals, so this is the cooperative part), then kills it.
    /// Returns how it ended ([`Error::Stopped`] when it had to be killed).
    pub async fn stop(mut self, grace: Duration) -> Result<()> {
        if let Ok(result) = tokio::time::timeout(grace, &mut self.task).await {
            return flatten(result);
        }
        self.control.kill();
        join(self.task).await
    }
}

async fn join(task: JoinHandle<Result<()>>) -> Result<()> {
    flatten(task.await)
}

fn flatten(result: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    match result {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(Error::Stopped),
        Err(e) => Err(Error::Engine(format!("command task panicked: {e}"))),
    }
}

impl Engine {
    /// Starts a command (a WASI p1 module or p2 command component) on a new
    /// task on the engine's command threads, which run at a lower CPU priority
    /// (see [`crate::EngineConfig::command_nice`]).
    ///
    /// Set-up errors (a missing preopen directory, the wrong artifact kind)
    /// are returned here; everything the guest does is reported by the handle.
    pub fn run_command(&self, artifact: &Artifact, spec: CommandSpec) -> Result<CommandHandle> {
        let runtime = &self.inner().commands;
        let kill = KillSwitch::default();
        let usage = Usage::default();
        let guard = Guard::new(
            spec.limits.clone(),
            &self.inner().clock,
            kill.clone(),
            self.inner().throttle.clone(),
        )
        .with_usage(usage.clone());
        let mut builder = wasi_builder(&spec)?;
        let engine = self.inner().wasmtime.clone();
        let task = match artifact.pre().clone() {
            Pre::P1(pre) => {
                let state = P1State {
                    wasi: builder.build_p1(),
                    guard,
                };
                runtime.spawn(async move {
                    let mut store = Store::new(&engine, state);
                    limits::install(&mut store);
                    let result = async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await
                    }
                    .await;
                    outcome(result, store.data_mut().guard.hit())
                })
            }
            Pre::P2(pre) => {
                let state = P2State {
                    wasi: builder.build(),
                    table: ResourceTable::new(),
                    guard,
                };
                runtime.spawn(async move {
                    let mut store = Store::new(&engine, state);
                    limits::install(&mut store);
                    let result = async {
                        let command = pre.instantiate_async(&mut store).await?;
                        command.wasi_cli_run().call_run(&mut store).await
                    }
                    .await;
                    let result = match result {
                        Ok(Ok(())) => Ok(()),
                        // `wasi:cli/run` returning `err` is exit code 1.
                        Ok(Err(())) => Err(wasmtime::Error::new(wasmtime_wasi::I32Exit(1))),
                        Err(e) => Err(e),
                    };
                    outcome(result, store.data_mut().guard.hit())
                })
            }
            Pre::Http(_) => {
                return Err(Error::WrongKind {
                    expected: "a command",
                    actual: artifact.kind().as_str(),
                });
            }
        };
        let abort = task.abort_handle();
        Ok(CommandHandle {
            task,
            control: CommandControl { kill, abort },
            usage,
        })
    }
}

/// Sorts how the guest ended.
fn outcome(result: wasmtime::Result<()>, hit: Option<limits::LimitHit>) -> Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => match Error::from_guest(e, hit) {
            Error::Exit(0) => Ok(()),
            other => Err(other),
        },
    }
}

/// The WASI context shared by both command kinds.
fn wasi_builder(spec: &CommandSpec) -> Result<WasiCtxBuilder> {
    let mut builder = WasiCtxBuilder::new();
    builder.args(&spec.args).envs(&spec.env);
    if let Stdin::Bytes(bytes) = &spec.stdin {
        builder.stdin(MemoryInputPipe::new(bytes.clone()));
    }
    let sink: Arc<dyn LogSink> = spec.log.clone().unwrap_or_else(|| Arc::new(NullLog));
    builder
        .stdout(SinkStream::new(sink.clone(), LogStream::Stdout))
        .stderr(SinkStream::new(sink, LogStream::Stderr));
    for preopen in &spec.preopens {
        let perms = if preopen.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&preopen.host_path, &preopen.guest_path, perms)
            .map_err(|e| Error::Io {
                context: format!(
                    "preopening {} as {}",
                    preopen.host_path.display(),
                    preopen.guest_path
                ),
                source: std::io::Error::other(format!("{e:#}")),
            })?;
    }
    Ok(builder)
}
