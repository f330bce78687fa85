//! Errors starting the node agent.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The kubeconfig cannot be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// A data directory cannot be created.
    #[error("cannot create data directory {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The wasmtime engine cannot start.
    #[error("cannot start the wasm engine: {0}")]
    Engine(String),
    /// The image cache cannot be opened.
    #[error("cannot open the image cache: {0}")]
    Images(String),
    /// The agent's endpoint cannot listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The Node could not be registered before shutdown.
    #[error("cannot register the node: {0}")]
    Register(String),
}
