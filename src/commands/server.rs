//! `flotilla server`: the control plane on its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

/// Flags of `flotilla server` (and `flotilla up`).
#[derive(Debug, Args, Clone)]
pub struct ServerArgs {
    /// Address the API server (and its image registry) listens on.
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Directory holding the store file and registry blobs [default: $XDG_DATA_HOME/flotilla or ~/.local/share/flotilla].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Where to write the kubeconfig for kubectl [default: DATA_DIR/kubeconfig].
    #[arg(long, value_name = "PATH")]
    pub write_kubeconfig: Option<PathBuf>,
    /// How long watch events stay resumable before compaction, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub watch_window: u64,
    /// The newest watch events kept resumable whatever their age.
    #[arg(long, default_value_t = 1000, value_name = "EVENTS")]
    pub watch_history: usize,
    /// How long a node's Lease may go unrenewed before the node is unreachable, in ms.
    #[arg(long, default_value_t = 4000, value_name = "MS")]
    pub node_monitor_grace_period_ms: u64,
    /// How long pods without their own toleration stay on an unreachable node, in seconds.
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub default_unreachable_toleration_seconds: u64,
    /// Delay before a Job replaces its first failed pod, in ms; doubled for each further
    /// failure up to 6 min (Kubernetes: 10 s).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    pub job_backoff_base_ms: u64,
    /// Range Services get their ClusterIPs from (loopback by default, so the node proxy binds
    /// them without root; must not overlap the nodes' pod range, 127.1.0.0/16 by default).
    #[arg(long, default_value = "127.2.0.0/16", value_name = "CIDR",
          value_parser = |s: &str| s.parse::<flotilla_control::apiserver::service_ips::Ipv4Cidr>())]
    pub service_cluster_ip_range: flotilla_control::apiserver::service_ips::Ipv4Cidr,
    /// Range Services of type NodePort get their node ports from.
    #[arg(long, default_value = "30000-32767", value_name = "FROM-TO",
          value_parser = flotilla_control::apiserver::service_ips::parse_port_range)]
    pub service_node_port_range: std::ops::RangeInclusive<u16>,
    /// How long an Event is kept after it was last seen (kube-apiserver's `--event-ttl`), as
    /// a duration such as `1h`, `30m` or `90s`.
    #[arg(long, default_value = "1h", value_name = "DURATION",
          value_parser = parse_event_ttl)]
    pub event_ttl: Duration,
    /// Size of the store's write-ahead log, in bytes: writes are acknowledged once logged, and
    /// the log is checkpointed into the store file when half full. 0 turns the log off (every
    /// write batch is then its own durable store commit). The file never shrinks.
    #[arg(long, default_value_t = flotilla_control::store::DEFAULT_WAL_SIZE, value_name = "BYTES",
          value_parser = parse_wal_size)]
    pub wal_size: u64,
    /// How often each HorizontalPodAutoscaler is evaluated (kube-controller-manager's
    /// `--horizontal-pod-autoscaler-sync-period`).
    #[arg(long, default_value = "15s", value_name = "DURATION", value_parser = parse_period)]
    pub horizontal_pod_autoscaler_sync_period: Duration,
    /// How long an HPA that sets no `behavior.scaleDown.stabilizationWindowSeconds` waits
    /// before scaling down: it follows the highest recommendation of this window.
    #[arg(long, default_value = "5m", value_name = "DURATION",
          value_parser = humantime::parse_duration)]
    pub horizontal_pod_autoscaler_downscale_stabilization: Duration,
    /// Usage-to-target ratios this close to 1.0 make an HPA change nothing.
    #[arg(long, default_value_t = 0.1, value_name = "RATIO")]
    pub horizontal_pod_autoscaler_tolerance: f64,
}

/// The smallest write-ahead log `--wal-size` accepts besides 0: smaller logs checkpoint after
/// every few writes.
const MIN_WAL_SIZE: u64 = 64 << 10;

fn parse_event_ttl(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("an Event TTL must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("`{s}` is not a duration such as 1h or 90s: {e}")),
    }
}

pub(crate) fn parse_period(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("a period must be longer than 0".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("`{s}` is not a duration such as 15s or 500ms: {e}")),
    }
}

fn parse_wal_size(s: &str) -> Result<u64, String> {
    let n: u64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes"))?;
    if n != 0 && n < MIN_WAL_SIZE {
        return Err(format!(
            "{n} bytes is too small: use 0 (no log) or at least {MIN_WAL_SIZE}"
        ));
    }
    Ok(n)
}

impl ServerArgs {
    /// Puts these flags into a control-plane configuration.
    pub fn apply(&self, config: &mut flotilla_control::ServerConfig) {
        config.watch_window = Duration::from_secs(self.watch_window);
        config.watch_history = self.watch_history;
        config.node_lifecycle.grace_period =
            Duration::from_millis(self.node_monitor_grace_period_ms);
        config.node_lifecycle.default_toleration =
            Duration::from_secs(self.default_unreachable_toleration_seconds);
        config.job.backoff_base = Duration::from_millis(self.job_backoff_base_ms);
        config.service_ranges = flotilla_control::apiserver::service_ips::ServiceRanges {
            cluster_ips: self.service_cluster_ip_range,
            node_ports: self.service_node_port_range.clone(),
        };
        config.wal_size = self.wal_size;
        config.event_ttl =
            flotilla_control::controllers::event_ttl::EventTtlConfig::new(self.event_ttl);
        config.hpa.sync_period = self.horizontal_pod_autoscaler_sync_period;
        config.hpa.downscale_stabilization = self.horizontal_pod_autoscaler_downscale_stabilization;
        config.hpa.tolerance = self.horizontal_pod_autoscaler_tolerance;
    }
}

impl ServerArgs {
    /// The data directory, defaulted per user.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.data_dir {
            Some(d) => Ok(d.clone()),
            None => dirs::data_dir()
                .map(|d| d.join("flotilla"))
                .context("no per-user data directory on this system; pass --data-dir"),
        }
    }
}

/// Starts the control plane and blocks until SIGINT or SIGTERM.
pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    super::init_logging("info");
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(serve(args, "control plane"))
}

/// Binds, writes the kubeconfig, serves until a signal, then shuts down gracefully.
pub async fn serve(args: ServerArgs, what: &str) -> anyhow::Result<()> {
    let data_dir = args.data_dir()?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create data dir {}", data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut config = flotilla_control::ServerConfig::new(&data_dir);
    args.apply(&mut config);
    // Before the kubeconfig is written or anything announced: a data dir in use by another
    // server must leave that server's kubeconfig alone.
    let store = flotilla_control::server::open_store(&config)?;
    let kubeconfig = args
        .write_kubeconfig
        .clone()
        .unwrap_or_else(|| data_dir.join("kubeconfig"));
    flotilla_control::kubeconfig::write(&kubeconfig, &format!("http://{addr}"), "flotilla")
        .with_context(|| format!("cannot write kubeconfig {}", kubeconfig.display()))?;

    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        signal_token.cancel();
    });
    let server = tokio::spawn(flotilla_control::server::serve_opened(
        listener,
        config,
        store,
        shutdown.clone(),
    ));
    println!("flotilla {what} listening on http://{addr}");
    println!("data dir:   {}", data_dir.display());
    println!("kubeconfig: {}", kubeconfig.display());
    println!(
        "try:        KUBECONFIG={} kubectl get namespaces",
        kubeconfig.display()
    );
    server.await.context("control plane task failed")??;
    Ok(())
}

async fn wait_for_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ttl_is_a_positive_duration() {
        assert_eq!(parse_event_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_event_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_event_ttl("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_event_ttl("0s").unwrap_err().contains("longer than 0"));
        assert!(
            parse_event_ttl("banana")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn wal_size_is_zero_or_at_least_the_minimum() {
        assert_eq!(parse_wal_size("0"), Ok(0));
        assert_eq!(parse_wal_size("65536"), Ok(65536));
        assert_eq!(parse_wal_size("8388608"), Ok(8 << 20));
        assert!(parse_wal_size("65535").unwrap_err().contains("too small"));
        assert!(parse_wal_size("8MiB").unwrap_err().contains("not a size"));
    }
}
