//! `flotilla up`: a whole cluster in one process. Today that is the control plane; the node
//! agent joins it here once it exists.

use anyhow::Context;
use clap::Args;

use super::server::ServerArgs;

/// Flags of `flotilla up`: the same as `flotilla server`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Control-plane flags.
    #[command(flatten)]
    pub server: ServerArgs,
}

/// Starts the cluster and blocks until SIGINT or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(super::server::serve(args.server, "cluster"))
}
