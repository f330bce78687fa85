//! Container logs: written by the runtime through [`ContainerLog`], kept on disk per container
//! run in the CRI log format with size-based rotation, and served at
//! `/containerLogs/{namespace}/{pod}/{container}` for the API server's `pods/log` proxy.
//!
//! - [`cri`]: the line format (`<RFC3339Nano> <stream> <F|P> <text>`) and the query options.
//! - [`store`]: [`LogStore`]: where each container run's log lives, rotation, reading, following.
//! - [`server`]: the agent's HTTP routes.

pub mod cri;
pub mod server;
pub mod store;

pub use cri::LogOptions;
pub use store::{ContainerLog, LogError, LogStore};
