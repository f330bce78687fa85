//! One module per subcommand; each has an args struct and a `run` function.

pub mod agent;
pub mod bench;
pub mod bench_client;
pub mod bench_container;
pub mod bench_deployment;
pub mod bench_ops;
pub mod bench_pods;
pub mod bench_scheduler;
pub mod bench_service;
pub mod bench_stats;
pub mod bench_timeline;
pub mod bench_up;
pub mod bench_wasm;
pub mod completions;
pub mod image;
pub mod server;
pub mod up;
pub mod version;

use clap::{Parser, Subcommand};

/// Flotilla: a Kubernetes-compatible orchestrator whose pods are WebAssembly first.
///
/// One binary holds the control plane (API server, store, scheduler, controllers), the node agent
/// and this CLI. Point the stock kubectl at the kubeconfig it writes.
#[derive(Debug, Parser)]
#[command(name = "flotilla", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a whole single-node cluster in one process (control plane and a local node).
    Up(up::UpArgs),
    /// Start the control plane: API server, embedded store, controllers and image registry.
    Server(server::ServerArgs),
    /// Run a node agent that joins a cluster through a kubeconfig and runs the pods bound to it.
    Agent(agent::AgentArgs),
    /// Push Wasm files and OCI images to the cluster's registry (or any registry); list it.
    Image(image::ImageArgs),
    /// Run a benchmark (results belong in BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Print shell completions for bash, zsh or fish.
    Completions(completions::CompletionsArgs),
    /// Print the version of this binary and the Kubernetes API it serves.
    Version(version::VersionArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(args),
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Image(args) => tokio::runtime::Runtime::new()?.block_on(image::run(args)),
        Command::Bench(args) => bench::run(args),
        Command::Completions(args) => completions::run(args),
        Command::Version(args) => version::run(args),
    }
}

/// Installs the `tracing` subscriber (RUST_LOG overrides the default level).
pub fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
