//! Flotilla's WebAssembly engine: runs WASI commands and serves `wasi:http`
//! components on wasmtime, each instance inside its own limits. It knows
//! nothing about Kubernetes; the node agent drives it.
//!
//! ```text
//! Engine::new(EngineConfig)          one per process: pooling allocator, epoch ticker
//!   .load_bytes / .load_file  ─────▶ Artifact { kind, digest }   (compile cache)
//!   .run_command(&artifact, CommandSpec) ─▶ CommandHandle { wait, stop(grace) }
//!   .serve_http(&artifact, listener, HttpSpec) ─▶ HttpService { stop(drain), stats }
//! ```
//!
//! Modules:
//! - [`engine`]: the engine, its configuration, its ticker, loading.
//! - [`artifact`]: a loaded guest and how its kind is decided.
//! - [`cache`]: the on-disk compile cache.
//! - [`command`]: WASI p1 / p2 commands run to completion.
//! - [`http`]: `wasi:http/proxy` services, one instance per request.
//! - [`outgoing`]: the allow list for guests' outgoing HTTP.
//! - [`limits`]: per-instance memory, table, instance and CPU limits.
//! - [`log`]: sinks for guests' stdout and stderr.
//! - [`error`]: the error kinds.
//!
//! HTTP services run on the caller's tokio runtime; commands run on the
//! engine's own lower-priority threads (`command_pool`). Guests yield at every
//! epoch tick, so a spinning guest never starves its neighbours' tasks.

pub mod artifact;
pub mod cache;
mod clock;
pub mod command;
mod command_pool;
pub mod engine;
pub mod error;
pub mod http;
pub mod limits;
pub mod log;
pub mod outgoing;
pub mod usage;

pub use artifact::{Artifact, ArtifactKind};
pub use cache::{CacheOutcome, CompileCache};
pub use command::{CommandControl, CommandHandle, CommandSpec, Preopen, Stdin};
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use http::{HttpService, HttpSpec, HttpStats};
pub use limits::Limits;
pub use log::{BoundedLog, LogSink, LogStream, NullLog};
pub use outgoing::{AllowList, Resolver};
pub use usage::Usage;
