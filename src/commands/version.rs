//! `flotilla version`.

use clap::Args;

/// Flags of `flotilla version`.
#[derive(Debug, Args)]
pub struct VersionArgs {}

/// Prints the binary's version and the Kubernetes API level it serves.
pub fn run(_args: VersionArgs) -> anyhow::Result<()> {
    println!("flotilla {}", env!("CARGO_PKG_VERSION"));
    println!(
        "kubernetes api: v1.{}",
        flotilla_control::apiserver::http::KUBERNETES_MINOR
    );
    Ok(())
}
