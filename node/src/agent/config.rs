//! The agent's settings.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::AgentError;
use crate::logs::store::DEFAULT_MAX_FILE_BYTES;
use crate::pod::{Backoff, Cidr};

/// The default pod address range: loopback, bindable without privileges.
pub const DEFAULT_POD_CIDR: &str = "127.1.0.0/16";
/// The bridge container pods get their own networks on (as root).
pub const DEFAULT_POD_BRIDGE: &str = "flotilla0";
/// The address range of the pods on that bridge (its first address is the bridge's).
pub const DEFAULT_POD_BRIDGE_CIDR: &str = "10.244.0.0/24";
/// How often running pods' API-sourced volumes are brought up to date: kubelet's default
/// `syncFrequency`.
pub const DEFAULT_SYNC_FREQUENCY: Duration = Duration::from_secs(60);
/// The kubelet's default pod limit.
pub const DEFAULT_MAX_PODS: u32 = 110;
/// Event writes per second after the burst: kubelet's default `eventRecordQPS`.
pub const DEFAULT_EVENT_QPS: f64 = 50.0;
/// Event writes allowed at once: kubelet's default `eventBurst`.
pub const DEFAULT_EVENT_BURST: u32 = 100;

/// How a node agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The kubeconfig to reach the API server with; `None` infers (in-cluster, `$KUBECONFIG`,
    /// `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// The Node's name.
    pub name: String,
    /// Where images, compiled code, logs and pod volumes live.
    pub data_dir: PathBuf,
    /// The agent's HTTP endpoint (logs), port 0 for any.
    pub listen: SocketAddr,
    /// The node's address (`InternalIP`, pods' `hostIP`); default: the listen address, or
    /// 127.0.0.1 when that is unspecified.
    pub node_ip: Option<IpAddr>,
    /// Pod addresses come from here.
    pub pod_cidr: Cidr,
    /// The bridge container pods with a network of their own are on (as root); empty: container
    /// pods share the node's network, as when the agent is not root.
    pub pod_bridge: String,
    /// The addresses of the pods on `pod_bridge`.
    pub pod_bridge_cidr: Cidr,
    /// Restart and retry backoff (Kubernetes' 10 s doubling to 5 min by default).
    pub backoff: Backoff,
    /// How often the Lease is renewed.
    pub lease_interval: Duration,
    /// How often the Node status (conditions) is reported.
    pub status_interval: Duration,
    /// Most pods the node accepts (`capacity.pods`).
    pub max_pods: u32,
    /// Registry for image references without a host; default: the API server's.
    pub default_registry: Option<String>,
    /// Registries spoken to over plain HTTP (loopback ones always are).
    pub insecure_registries: Vec<String>,
    /// Longest grace containers get when the agent itself stops.
    pub shutdown_grace: Duration,
    /// Size of one container log file before rotation.
    pub max_log_file_bytes: u64,
    /// Whether the node proxy serves Services on this node (and, with a pod bridge, cluster
    /// DNS to container pods).
    pub proxy: bool,
    /// The cluster's DNS domain (kubelet's `--cluster-domain`, `cluster.local`).
    pub cluster_domain: String,
    /// The node's resolver configuration: what `Default`-policy pods get and where the cluster
    /// DNS server forwards names outside the cluster (kubelet's `--resolv-conf`).
    pub resolv_conf: PathBuf,
    /// Event writes per second after the burst (kubelet's `eventRecordQPS`, 50); 0 for no
    /// limit. Events beyond the queue are dropped, as kubelet's are.
    pub event_qps: f64,
    /// Event writes allowed at once (kubelet's `eventBurst`, 100; 0 counts as 1).
    pub event_burst: u32,
    /// How often a running pod's `configMap`, `secret` and `projected` volumes are compared
    /// with their ConfigMaps and Secrets and brought up to date (kubelet's `syncFrequency`,
    /// 1 min). Labels and annotations in `downwardAPI` files follow a change at once.
    pub sync_frequency: Duration,
}

impl AgentConfig {
    /// Defaults for node `name` storing under `data_dir`.
    pub fn new(name: impl Into<String>, data_dir: impl Into<PathBuf>) -> AgentConfig {
        AgentConfig {
            kubeconfig: None,
            name: name.into(),
            data_dir: data_dir.into(),
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 10250),
            node_ip: None,
            pod_cidr: DEFAULT_POD_CIDR.parse().expect("the default range parses"),
            pod_bridge: DEFAULT_POD_BRIDGE.to_string(),
            pod_bridge_cidr: DEFAULT_POD_BRIDGE_CIDR
                .parse()
                .expect("the default bridge range parses"),
            backoff: Backoff::default(),
            // Renewed every second so the control plane notices a dead node within seconds
            // (its grace period defaults to 4 s).
            lease_interval: Duration::from_secs(1),
            status_interval: Duration::from_secs(10),
            max_pods: DEFAULT_MAX_PODS,
            default_registry: None,
            insecure_registries: Vec::new(),
            shutdown_grace: Duration::from_secs(5),
            max_log_file_bytes: DEFAULT_MAX_FILE_BYTES,
            proxy: true,
            cluster_domain: crate::dns::DEFAULT_CLUSTER_DOMAIN.to_string(),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            event_qps: DEFAULT_EVENT_QPS,
            event_burst: DEFAULT_EVENT_BURST,
            sync_frequency: DEFAULT_SYNC_FREQUENCY,
        }
    }

    /// The node's address.
    pub fn node_ip(&self) -> IpAddr {
        self.node_ip.unwrap_or_else(|| {
            let ip = self.listen.ip();
            if ip.is_unspecified() {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            } else {
                ip
            }
        })
    }

    /// A client for the API server, and the server as `scheme://host:port` (the cluster's
    /// registry lives there).
    pub async fn connect(&self) -> Result<(kube::Client, String), AgentError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)
                    .map_err(|e| AgentError::Kubeconfig(format!("{}: {e}", path.display())))?;
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| AgentError::Kubeconfig(format!("{}: {e}", path.display())))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| AgentError::Kubeconfig(e.to_string()))?,
        };
        let uri = &config.cluster_url;
        let server = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("https"),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        let client =
            kube::Client::try_from(config).map_err(|e| AgentError::Kubeconfig(e.to_string()))?;
        Ok((client, server))
    }
}
