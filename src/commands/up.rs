//! `flotilla up`: a whole cluster in one process: the control plane, then a node agent joining
//! it through the kubeconfig just written (the same path a remote agent takes).

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use super::agent::NodeArgs;
use super::server::ServerArgs;

/// Flags of `flotilla up`: the control plane's, and the local node's.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Control-plane flags.
    #[command(flatten)]
    pub server: ServerArgs,
    /// The local Node's name [default: this machine's host name].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// The local agent's HTTP endpoint (logs); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:10250", value_name = "ADDR:PORT")]
    pub agent_listen: SocketAddr,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Starts the cluster and blocks until SIGINT or SIGTERM.
pub fn run(args: UpArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = args.server.data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.server.listen))?;
    let addr = listener.local_addr()?;
    let mut config = flotilla_control::ServerConfig::new(&data_dir);
    args.server.apply(&mut config);
    // Before the kubeconfig is written: a data dir in use by another cluster must leave that
    // cluster's kubeconfig alone.
    let store = flotilla_control::server::open_store(&config)?;
    let kubeconfig = args
        .server
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| data_dir.join("kubeconfig"));
    flotilla_control::kubeconfig::write(&kubeconfig, &format!("http://{addr}"), "flotilla")
        .with_context(|| format!("cannot write kubeconfig {}", kubeconfig.display()))?;

    let server_stop = CancellationToken::new();
    let agent_stop = CancellationToken::new();
    let signal = agent_stop.clone();
    tokio::spawn(async move {
        super::agent::wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let mut server = tokio::spawn(flotilla_control::server::serve_opened(
        listener,
        config,
        store,
        server_stop.clone(),
    ));

    let name = args
        .node_name
        .clone()
        .unwrap_or_else(super::agent::default_node_name);
    let mut agent_config = flotilla_node::AgentConfig::new(&name, data_dir.join("agent"));
    agent_config.kubeconfig = Some(kubeconfig.clone());
    agent_config.listen = args.agent_listen;
    args.node.apply(&mut agent_config)?;
    let agent = tokio::select! {
        agent = flotilla_node::Agent::start(agent_config, agent_stop.clone()) => agent?,
        ended = &mut server => {
            ended.context("control plane task failed")??;
            anyhow::bail!("the control plane stopped before the node joined");
        }
    };
    println!("flotilla cluster listening on http://{addr}");
    println!("node:       {name} (agent at http://{})", agent.addr());
    println!("data dir:   {}", data_dir.display());
    println!("kubeconfig: {}", kubeconfig.display());
    println!(
        "try:        KUBECONFIG={} kubectl get nodes",
        kubeconfig.display()
    );
    // The agent goes first, so its pods stop while the API server can still hear about it.
    tokio::select! {
        _ = agent.join() => {}
        ended = &mut server => {
            agent_stop.cancel();
            ended.context("control plane task failed")??;
            return Ok(());
        }
    }
    server_stop.cancel();
    server.await.context("control plane task failed")??;
    Ok(())
}
