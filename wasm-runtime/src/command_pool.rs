//! The threads guest commands run on: a tokio runtime of the engine's own whose
//! threads run at a lower CPU priority than the rest of the process.
//!
//! Commands (WASI p1 modules, p2 command components) are batch work: a Job's pod,
//! a long computation, or a hostile guest spinning in a loop. HTTP requests and
//! the node agent's own work (Lease renewals, status reports) are latency work.
//! Epoch yields already keep a spinning command from holding a tokio worker
//! forever, but on a machine with few cores the kernel still hands a busy
//! command thread full timeslices while a request waits. Running commands on
//! threads with a higher nice value (Linux: per thread, `setpriority` on the
//! thread id) lets the kernel preempt them the moment latency work wakes up,
//! the way a Kubernetes node gives BestEffort pods a small `cpu.weight`.
//!
//! Raising one's own nice value needs no privilege. Where it cannot be set (not
//! Linux, or refused), commands still run on these threads at normal priority.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// The command runtime. Dropping it stops its threads without waiting for
/// the commands still running on them (they are dropped, their stores freed).
pub(crate) struct CommandPool {
    runtime: Option<Runtime>,
}

impl CommandPool {
    /// A runtime of `threads` workers whose threads run at `nice` (0 keeps
    /// the process's priority).
    pub(crate) fn new(threads: usize, nice: i32) -> Result<CommandPool> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("flotilla-wasm-cmd")
            .enable_all()
            .on_thread_start(move || lower_priority(nice))
            .build()
            .map_err(|e| Error::io("starting the command threads", e))?;
        Ok(CommandPool {
            runtime: Some(runtime),
        })
    }

    /// Runs `future` on the command threads.
    pub(crate) fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the pool is dropped")
            .spawn(future)
    }
}

impl Drop for CommandPool {
    fn drop(&mut self) {
        // Not `drop(runtime)`: that blocks, and the last engine clone may well
        // be dropped inside an async task.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Raises the calling thread's nice value to `nice` (never lowers it: a
/// process started under `nice` keeps its own, higher value).
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let tid = Some(rustix::thread::gettid());
        if rustix::process::getpriority_process(tid).is_ok_and(|current| current >= nice) {
            return;
        }
        if let Err(e) = rustix::process::setpriority_process(tid, nice) {
            tracing::debug!(error = %e, nice, "cannot lower the priority of a command thread");
        }
    }
}

/// The nice value of the calling thread (Linux), for tests.
#[cfg(all(test, target_os = "linux"))]
fn current_nice() -> i32 {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn command_threads_run_at_the_given_nice_value() {
        let before = current_nice();
        let pool = CommandPool::new(2, 10).unwrap();
        let nice = futures_block_on(pool.spawn(async { current_nice() }));
        assert_eq!(nice, before.max(10));
        // The caller's thread is left alone.
        assert_eq!(current_nice(), before);
    }

    #[test]
    fn nice_zero_keeps_the_priority() {
        let before = current_nice();
        let pool = CommandPool::new(1, 0).unwrap();
        assert_eq!(
            futures_block_on(pool.spawn(async { current_nice() })),
            before
        );
    }

    fn futures_block_on<T>(handle: JoinHandle<T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(handle)
            .unwrap()
    }
}
