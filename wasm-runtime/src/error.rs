//! The error kinds of the engine, and the one place where wasmtime's errors are
//! sorted into them.
//!
//! Every way a guest can end badly has its own variant, so a caller (the node
//! agent) can map it to a container state without parsing messages: a memory
//! cap hit is [`Error::OutOfMemory`], a CPU budget overrun is
//! [`Error::DeadlineExceeded`], a non-zero `proc_exit` is [`Error::Exit`], and so
//! on. `Error::from_guest` does the sorting.

use std::path::PathBuf;

use crate::limits::LimitHit;

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong loading or running a guest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bytes are not a WebAssembly module or component, or fail validation.
    #[error("invalid wasm binary: {0}")]
    InvalidBinary(String),
    /// The guest imports something this engine does not provide.
    #[error("unknown import: {0}")]
    UnknownImport(String),
    /// The guest lacks the export its kind needs (`_start`, `wasi:cli/run`,
    /// `wasi:http/incoming-handler`).
    #[error("missing export: {0}")]
    MissingExport(String),
    /// The artifact is of another kind than the operation needs (a command
    /// given to `serve_http`, say).
    #[error("wrong artifact kind: expected {expected}, got {actual}")]
    WrongKind {
        /// What the operation needs.
        expected: &'static str,
        /// What the artifact is.
        actual: &'static str,
    },
    /// The guest hit its linear-memory cap (or could not get its initial memory).
    #[error("out of memory: guest exceeded its memory limit of {limit} bytes")]
    OutOfMemory {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The guest hit its table-element cap.
    #[error("table limit exceeded: guest exceeded {limit} table elements")]
    TableLimit {
        /// The cap, in elements.
        limit: u64,
    },
    /// The guest tried to create more instances, tables or memories than allowed.
    #[error("instance limit exceeded: {0}")]
    InstanceLimit(String),
    /// The guest used up its CPU-time budget.
    #[error("deadline exceeded: guest used more than {budget_ms} ms of CPU time")]
    DeadlineExceeded {
        /// The budget, in milliseconds.
        budget_ms: u64,
    },
    /// The guest exhausted its wasm stack.
    #[error("stack overflow: {message}\n{backtrace}")]
    StackOverflow {
        /// wasmtime's trap message.
        message: String,
        /// The wasm backtrace, one frame a line.
        backtrace: String,
    },
    /// The guest trapped (unreachable, out-of-bounds access, a host call failing
    /// fatally, ...).
    #[error("trap: {message}\n{backtrace}")]
    Trap {
        /// The trap's message.
        message: String,
        /// The wasm backtrace, one frame a line (empty when there is none).
        backtrace: String,
    },
    /// The guest exited with a non-zero code (`proc_exit` / `wasi:cli/exit`).
    #[error("exited with code {0}")]
    Exit(i32),
    /// The guest was stopped by its owner before it finished.
    #[error("stopped")]
    Stopped,
    /// The engine's instance pool has no free slot (too many instances at once
    /// on this engine).
    #[error("engine capacity exhausted: {0}")]
    Capacity(String),
    /// The compile cache could not be used (an entry that fails its checks is not
    /// an error: it is discarded and rebuilt).
    #[error("compile cache {path}: {message}")]
    Cache {
        /// The file or directory involved.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Reading an artifact or setting up a preopen or listener failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Anything else wasmtime reported (engine set-up, host-side failures).
    #[error("engine: {0}")]
    Engine(String),
}

impl Error {
    /// A short stable tag for this kind, for logs, metrics and container state
    /// reasons (`OOMKilled`-like decisions are the caller's).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidBinary(_) => "invalid-binary",
            Error::UnknownImport(_) => "unknown-import",
            Error::MissingExport(_) => "missing-export",
            Error::WrongKind { .. } => "wrong-kind",
            Error::OutOfMemory { .. } => "out-of-memory",
            Error::TableLimit { .. } => "table-limit",
            Error::InstanceLimit(_) => "instance-limit",
            Error::DeadlineExceeded { .. } => "deadline-exceeded",
            Error::StackOverflow { .. } => "stack-overflow",
            Error::Trap { .. } => "trap",
            Error::Exit(_) => "exit",
            Error::Stopped => "stopped",
            Error::Capacity(_) => "capacity",
            Error::Cache { .. } => "cache",
            Error::Io { .. } => "io",
            Error::Engine(_) => "engine",
        }
    }

    /// The exit code a process would report for this outcome, the way a
    /// container runtime does: the guest's own code for [`Error::Exit`], 137
    /// (killed) for limits and stops, 134 (aborted) for traps, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exit(code) => *code,
            Error::OutOfMemory { .. }
            | Error::TableLimit { .. }
            | Error::InstanceLimit(_)
            | Error::DeadlineExceeded { .. }
            | Error::Stopped => 137,
            Error::Trap { .. } | Error::StackOverflow { .. } => 134,
            _ => 1,
        }
    }

    /// Sorts an error that came out of running guest code into its kind.
    ///
    /// `hit` is what the store's limiter and CPU meter recorded, because a guest
    /// that is refused memory usually traps (or aborts) a moment later and the
    /// trap alone would hide the cause.
    pub(crate) fn from_guest(err: wasmtime::Error, hit: Option<LimitHit>) -> Error {
        if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return if exit.0 == 0 {
                // Callers treat Ok as exit 0; this arm is for completeness.
                Error::Exit(0)
            } else {
                Error::Exit(exit.0)
            };
        }
        if let Some(hit) = err.downcast_ref::<LimitHit>() {
            return hit.clone().into();
        }
        if let Some(hit) = hit {
            return hit.into();
        }
        if let Some(err) = err.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
            return Error::Capacity(err.to_string());
        }
        let message = root_message(&err);
        if message.contains("resource limit exceeded") && message.contains("count too high") {
            return Error::InstanceLimit(message);
        }
        let backtrace = err
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|bt| bt.to_string())
            .unwrap_or_default();
        match err.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::StackOverflow) => Error::StackOverflow {
                message: wasmtime::Trap::StackOverflow.to_string(),
                backtrace,
            },
            Some(trap) => Error::Trap {
                message: trap.to_string(),
                backtrace,
            },
            None => Error::Trap { message, backtrace },
        }
    }

    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps a wasmtime error that is not about guest behaviour.
    pub(crate) fn engine(err: wasmtime::Error) -> Error {
        Error::Engine(format!("{err:#}"))
    }
}

/// The error chain without the backtrace context wasmtime attaches, one cause
/// after the other.
fn root_message(err: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.starts_with("error while executing at wasm backtrace") {
            continue;
        }
        if !parts.contains(&text) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_limit_kind_has_its_own_reason() {
        let kinds = [
            Error::OutOfMemory { limit: 1 },
            Error::DeadlineExceeded { budget_ms: 1 },
            Error::Trap {
                message: String::new(),
                backtrace: String::new(),
            },
            Error::StackOverflow {
                message: String::new(),
                backtrace: String::new(),
            },
            Error::Exit(3),
            Error::TableLimit { limit: 1 },
            Error::Stopped,
        ];
        let mut reasons: Vec<_> = kinds.iter().map(Error::reason).collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), kinds.len());
    }

    #[test]
    fn exit_code_follows_container_conventions() {
        assert_eq!(Error::Exit(3).exit_code(), 3);
        assert_eq!(Error::OutOfMemory { limit: 1 }.exit_code(), 137);
        assert_eq!(Error::DeadlineExceeded { budget_ms: 1 }.exit_code(), 137);
        assert_eq!(Error::Stopped.exit_code(), 137);
        assert_eq!(
            Error::Trap {
                message: String::new(),
                backtrace: String::new()
            }
            .exit_code(),
            134
        );
    }

    #[test]
    fn i32_exit_is_sorted_as_exit() {
        let err = wasmtime::Error::new(wasmtime_wasi::I32Exit(3));
        assert!(matches!(Error::from_guest(err, None), Error::Exit(3)));
    }

    #[test]
    fn a_recorded_limit_hit_wins_over_the_trap_it_caused() {
        let err = wasmtime::Error::new(wasmtime::Trap::UnreachableCodeReached);
        let sorted = Error::from_guest(err, Some(LimitHit::Memory { limit: 64 }));
        assert!(matches!(sorted, Error::OutOfMemory { limit: 64 }));
    }
}
