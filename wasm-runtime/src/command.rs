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
//!
//! Standard input is empty, fixed bytes, or a stream written while the guest
//! runs ([`Stdin::stream`], for `kubectl attach`). A guest reading a stream
//! that has nothing yet waits in an async host call: it holds no thread.

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::AsyncStdinStream;
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
    /// What a [`StdinWriter`] writes, as it is written; end of file once every
    /// clone of the writer is dropped. Made by [`Stdin::stream`].
    Stream(StdinReader),
}

impl Stdin {
    /// A standard input written while the guest runs (`kubectl attach`): the
    /// guest's side, for [`CommandSpec::stdin`], and the writer.
    pub fn stream() -> (Stdin, StdinWriter) {
        let (tx, rx) = mpsc::channel(STDIN_CHUNKS);
        let reader = StdinReader(Arc::new(Mutex::new(Some(rx))));
        (Stdin::Stream(reader), StdinWriter(tx))
    }
}

/// Chunks written to a streamed stdin that the guest has not read yet; a
/// writer waits when this many are queued (the guest is not reading).
const STDIN_CHUNKS: usize = 16;

/// The guest's side of a streamed standard input ([`Stdin::stream`]).
///
/// It can be read by one command only: clones of a [`CommandSpec`] share it,
/// and [`Engine::run_command`] refuses it once another command has taken it.
#[derive(Clone, Debug)]
pub struct StdinReader(Arc<Mutex<Option<mpsc::Receiver<Bytes>>>>);

impl StdinReader {
    /// The channel, for the one command that reads it.
    fn take(&self) -> Option<mpsc::Receiver<Bytes>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Writes to a guest's streamed standard input ([`Stdin::stream`]). Dropping
/// every clone closes it: the guest reads end of file.
#[derive(Clone, Debug)]
pub struct StdinWriter(mpsc::Sender<Bytes>);

impl StdinWriter {
    /// Queues `bytes` for the guest, waiting while it is `STDIN_CHUNKS` (16)
    /// chunks behind. A `BrokenPipe` error once the guest has ended.
    pub async fn write(&self, bytes: Bytes) -> std::io::Result<()> {
        self.0.send(bytes).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the command no longer reads its standard input",
            )
        })
    }
}

/// A streamed stdin as an `AsyncRead`, which wasmtime-wasi's stdin takes.
struct ChannelRead {
    chunks: mpsc::Receiver<Bytes>,
    /// The rest of a chunk larger than the guest's last read.
    rest: Bytes,
}

impl AsyncRead for ChannelRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.rest.is_empty() {
            match ready!(self.chunks.poll_recv(cx)) {
                Some(chunk) => self.rest = chunk,
                // Every writer is gone: end of file.
                None => return Poll::Ready(Ok(())),
            }
        }
        let n = self.rest.len().min(buf.remaining());
        buf.put_slice(&self.rest[..n]);
        self.rest.advance(n);
        Poll::Ready(Ok(()))
    }
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
        let builder = wasi_builder(&spec)?;
        let engine = self.inner().wasmtime.clone();
        let task = match artifact.pre().clone() {
            Pre::P1(pre) => {
                let stdin = take_stream(&spec.stdin)?;
                runtime.spawn(async move {
                    let state = P1State {
                        wasi: with_stream(builder, stdin).build_p1(),
                        guard,
                    };
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
                let stdin = take_stream(&spec.stdin)?;
                runtime.spawn(async move {
                    let state = P2State {
                        wasi: with_stream(builder, stdin).build(),
                        table: ResourceTable::new(),
                        guard,
                    };
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

/// The channel of a streamed stdin, taken for the command about to start.
fn take_stream(stdin: &Stdin) -> Result<Option<mpsc::Receiver<Bytes>>> {
    match stdin {
        Stdin::Stream(reader) => reader.take().map(Some).ok_or_else(|| {
            Error::Engine("the standard input stream was given to another command".into())
        }),
        Stdin::None | Stdin::Bytes(_) => Ok(None),
    }
}

/// Gives the guest a streamed stdin. Called on the command's own task, not in
/// [`wasi_builder`]: wasmtime-wasi starts a task that reads the stream, which
/// then runs on the command threads and ends with the guest's store.
fn with_stream(
    mut builder: WasiCtxBuilder,
    stdin: Option<mpsc::Receiver<Bytes>>,
) -> WasiCtxBuilder {
    if let Some(chunks) = stdin {
        builder.stdin(AsyncStdinStream::new(ChannelRead {
            chunks,
            rest: Bytes::new(),
        }));
    }
    builder
}

/// The WASI context shared by both command kinds (a streamed stdin is added by
/// [`with_stream`]).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::log::BoundedLog;

    /// A WASI p1 command copying stdin to stdout until end of file, then
    /// exiting 0.
    const ECHO: &str = r#"
        (module
          (import "wasi_snapshot_preview1" "fd_read"
            (func $fd_read (param i32 i32 i32 i32) (result i32)))
          (import "wasi_snapshot_preview1" "fd_write"
            (func $fd_write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          ;; 0: iovec to read into 64..1088; 16: bytes read;
          ;; 32: iovec of what was read; 48: bytes written.
          (func (export "_start")
            (loop $next
              (i32.store (i32.const 0) (i32.const 64))
              (i32.store (i32.const 4) (i32.const 1024))
              (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16))
                (then unreachable))
              (if (i32.eqz (i32.load (i32.const 16))) (then return))
              (i32.store (i32.const 32) (i32.const 64))
              (i32.store (i32.const 36) (i32.load (i32.const 16)))
              (if (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 48))
                (then unreachable))
              (br $next))))
    "#;

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            max_instances: 4,
            command_threads: 1,
            ..EngineConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_streamed_stdin_reaches_the_guest_as_written_and_ends_when_closed() {
        let engine = engine();
        let echo = engine.load_bytes(&wat::parse_str(ECHO).unwrap()).unwrap();
        let log = BoundedLog::new(4096);
        let (stdin, writer) = Stdin::stream();
        let spec = CommandSpec {
            stdin,
            log: Some(log.clone()),
            ..CommandSpec::default()
        };
        let handle = engine.run_command(&echo, spec).unwrap();
        writer.write(Bytes::from_static(b"one\n")).await.unwrap();
        let echoed = async {
            while log.stdout_text() != "one\n" {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, echoed)
            .await
            .expect("the guest echoes what was written after it started");
        assert!(!handle.is_finished(), "the guest waits for more input");
        writer.write(Bytes::from_static(b"two\n")).await.unwrap();
        drop(writer);
        tokio::time::timeout(TIMEOUT, handle.wait())
            .await
            .expect("the guest ends at end of file")
            .expect("exits 0");
        assert_eq!(log.stdout_text(), "one\ntwo\n");
    }

    /// A WASI p1 command that spins about 300 million loop turns (tens to hundreds of
    /// milliseconds, well past the long-running threshold), then runs `then`.
    fn spin_then(then: &str) -> String {
        format!(
            r#"
            (module
              (import "wasi_snapshot_preview1" "fd_read"
                (func $fd_read (param i32 i32 i32 i32) (result i32)))
              (memory (export "memory") 1)
              (func (export "_start") (local $i i32)
                (loop $spin
                  (local.set $i (i32.add (local.get $i) (i32.const 1)))
                  (br_if $spin (i32.lt_u (local.get $i) (i32.const 300000000))))
                {then}))
            "#
        )
    }

    /// Reads stdin once (64 bytes at 64).
    const READ: &str = "(i32.store (i32.const 0) (i32.const 64)) (i32.store (i32.const 4) (i32.const 64)) (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)))";

    #[tokio::test]
    async fn a_long_runner_waiting_in_a_host_call_leaves_its_background_slot_to_others() {
        let engine = Engine::new(EngineConfig {
            max_instances: 4,
            command_threads: 2,
            background_slots: 1,
            ..EngineConfig::default()
        })
        .unwrap();
        let waiter = engine
            .load_bytes(&wat::parse_str(spin_then(READ)).unwrap())
            .unwrap();
        let spinner = engine
            .load_bytes(&wat::parse_str(spin_then("")).unwrap())
            .unwrap();
        let (stdin, writer) = Stdin::stream();
        let waiting = engine
            .run_command(
                &waiter,
                CommandSpec {
                    stdin,
                    ..CommandSpec::default()
                },
            )
            .unwrap();
        // Past the threshold (it held the only slot), then waiting for input.
        let usage = waiting.usage();
        let spun = async {
            while usage.cpu_time() < Duration::from_millis(20) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        tokio::time::timeout(TIMEOUT, spun)
            .await
            .expect("the waiter spins past the long-running threshold");
        assert!(!waiting.is_finished(), "the waiter waits for its input");
        let spinning = engine
            .run_command(&spinner, CommandSpec::default())
            .unwrap();
        tokio::time::timeout(TIMEOUT, spinning.wait())
            .await
            .expect("another long runner gets the slot while the waiter waits for input")
            .expect("exits 0");
        drop(writer);
        tokio::time::timeout(TIMEOUT, waiting.wait())
            .await
            .expect("the waiter ends at its end of file")
            .expect("exits 0");
    }

    #[tokio::test]
    async fn a_streamed_stdin_is_read_by_one_command_only() {
        let engine = engine();
        let echo = engine.load_bytes(&wat::parse_str(ECHO).unwrap()).unwrap();
        let (stdin, writer) = Stdin::stream();
        let spec = CommandSpec {
            stdin,
            ..CommandSpec::default()
        };
        let first = engine.run_command(&echo, spec.clone()).unwrap();
        let err = engine.run_command(&echo, spec).unwrap_err();
        assert!(matches!(err, Error::Engine(_)), "{err}");
        drop(writer);
        tokio::time::timeout(TIMEOUT, first.wait())
            .await
            .unwrap()
            .unwrap();
    }
}
