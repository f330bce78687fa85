//! `flotilla agent`: a node agent joining a cluster through a kubeconfig.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flotilla_node::AgentConfig;
use flotilla_node::pod::Backoff;
use tokio_util::sync::CancellationToken;

/// Node settings shared by `flotilla agent` and `flotilla up`.
#[derive(Debug, Args, Clone)]
pub struct NodeArgs {
    /// The node's address (InternalIP, pods' hostIP) [default: the agent's listen address, or 127.0.0.1].
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<IpAddr>,
    /// The range pod addresses come from (loopback addresses bind without root).
    #[arg(long, default_value = flotilla_node::agent::config::DEFAULT_POD_CIDR, value_name = "CIDR")]
    pub pod_cidr: String,
    /// The bridge container pods get their own network namespaces on when the agent runs as
    /// root ("" for none: container pods then share the node's network, as without root).
    #[arg(long, default_value = flotilla_node::agent::config::DEFAULT_POD_BRIDGE, value_name = "NAME")]
    pub pod_bridge: String,
    /// The address range of the pods on that bridge (the bridge takes its first address).
    #[arg(long, default_value = flotilla_node::agent::config::DEFAULT_POD_BRIDGE_CIDR, value_name = "CIDR")]
    pub pod_bridge_cidr: String,
    /// First delay before restarting a crashed container or retrying a failed pull, in ms.
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub restart_backoff_base_ms: u64,
    /// Longest such delay, in ms.
    #[arg(long, default_value_t = 300_000, value_name = "MS")]
    pub restart_backoff_max_ms: u64,
    /// How often running pods' configMap, secret and projected volumes are brought up to date
    /// with their ConfigMaps and Secrets (kubelet's `--sync-frequency`), and the directories of
    /// deleted local-path volumes removed.
    #[arg(long, default_value = "1m", value_name = "DURATION", value_parser = super::server::parse_period)]
    pub sync_frequency: Duration,
    /// Most pods this node accepts (its `capacity.pods`).
    #[arg(long, default_value_t = flotilla_node::agent::config::DEFAULT_MAX_PODS, value_name = "N")]
    pub max_pods: u32,
    /// Registry for image references without a host [default: the API server's].
    #[arg(long, value_name = "HOST:PORT")]
    pub registry: Option<String>,
    /// Registry hosts to pull from over plain HTTP (loopback hosts always are).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Event writes per second after the burst, as kubelet's flag (0: no limit).
    #[arg(long, default_value_t = flotilla_node::agent::config::DEFAULT_EVENT_QPS, value_name = "QPS")]
    pub event_qps: f64,
    /// Event writes allowed at once, as kubelet's flag.
    #[arg(long, default_value_t = flotilla_node::agent::config::DEFAULT_EVENT_BURST, value_name = "N")]
    pub event_burst: u32,
    /// The cluster's DNS domain: container pods' search path, and the names the node's cluster
    /// DNS server answers (`<service>.<namespace>.svc.<domain>`).
    #[arg(long, default_value = flotilla_node::dns::DEFAULT_CLUSTER_DOMAIN, value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// The node's resolver configuration: what pods with the `Default` DNS policy get, and
    /// where the cluster DNS server sends names outside the cluster.
    #[arg(long, default_value = "/etc/resolv.conf", value_name = "FILE")]
    pub resolv_conf: PathBuf,
}

impl NodeArgs {
    /// Fills these settings into `config`.
    pub fn apply(&self, config: &mut AgentConfig) -> anyhow::Result<()> {
        config.node_ip = self.node_ip;
        config.pod_cidr = self
            .pod_cidr
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--pod-cidr")?;
        config.pod_bridge = self.pod_bridge.clone();
        config.pod_bridge_cidr = self
            .pod_bridge_cidr
            .parse()
            .map_err(anyhow::Error::msg)
            .context("--pod-bridge-cidr")?;
        config.backoff = Backoff {
            initial: Duration::from_millis(self.restart_backoff_base_ms.max(1)),
            max: Duration::from_millis(
                self.restart_backoff_max_ms
                    .max(self.restart_backoff_base_ms)
                    .max(1),
            ),
        };
        config.sync_frequency = self.sync_frequency;
        config.max_pods = self.max_pods.max(1);
        config.default_registry = self.registry.clone();
        config.insecure_registries = self.insecure_registries.clone();
        if !(self.event_qps >= 0.0 && self.event_qps.is_finite()) {
            anyhow::bail!("--event-qps must be a number >= 0, not {}", self.event_qps);
        }
        config.event_qps = self.event_qps;
        config.event_burst = self.event_burst;
        let domain = self
            .cluster_domain
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let label = flotilla_control::apiserver::validation::dns1123_label;
        if !domain.split('.').all(|l| label(l).is_none()) {
            anyhow::bail!(
                "--cluster-domain must be a DNS domain name, not {:?}",
                self.cluster_domain
            );
        }
        config.cluster_domain = domain;
        config.resolv_conf = self.resolv_conf.clone();
        Ok(())
    }
}

/// Flags of `flotilla agent`.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster to join [default: $KUBECONFIG, ~/.kube/config].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The Node's name [default: this machine's host name].
    #[arg(long)]
    pub name: Option<String>,
    /// Where images, compiled code, logs and volumes live [default: $XDG_DATA_HOME/flotilla/agent].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The agent's HTTP endpoint (logs for `kubectl logs`); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:10250", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Node settings.
    #[command(flatten)]
    pub node: NodeArgs,
}

/// The default Node name: the host name.
pub fn default_node_name() -> String {
    flotilla_node::agent::machine::Machine::detect().hostname
}

/// Starts the agent and blocks until SIGINT or SIGTERM.
pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(serve(args))
}

async fn serve(args: AgentArgs) -> anyhow::Result<()> {
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => dirs::data_dir()
            .map(|d| d.join("flotilla").join("agent"))
            .context("no per-user data directory on this system; pass --data-dir")?,
    };
    let name = args.name.clone().unwrap_or_else(default_node_name);
    let mut config = AgentConfig::new(&name, data_dir);
    config.kubeconfig = args.kubeconfig.clone();
    config.listen = args.listen;
    args.node.apply(&mut config)?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal.cancel();
    });
    let agent = flotilla_node::Agent::start(config, shutdown).await?;
    println!("flotilla agent {name} listening on http://{}", agent.addr());
    agent.join().await;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
