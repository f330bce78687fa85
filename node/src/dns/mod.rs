//! Cluster DNS for container pods: a DNS server per node that answers Kubernetes' Service and
//! pod names and forwards everything else, and each pod's `resolv.conf`.
//!
//! - [`records`]: what a name under the cluster domain answers (pure).
//! - [`server`]: the server (UDP and TCP), answering from the node proxy's table.
//! - [`pod_config`]: a pod's `resolv.conf` from its `dnsPolicy` and `dnsConfig` (pure).
//!
//! The server listens on port 53 of the pod bridge's own address, which container pods with a
//! network of their own reach directly (it is their default gateway). It binds with
//! `IP_FREEBIND`, so it can start before the bridge has its address: the bridge is made with
//! the first container pod. Wasm guests have no resolver of their own; their outgoing
//! connections resolve Service names through the proxy directly ([`crate::proxy`]).

pub mod pod_config;
pub mod records;
pub mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use rustix::net::{AddressFamily, SocketType, sockopt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use pod_config::{ClusterDns, PodDns, ResolvConf};
pub use server::DnsServer;

/// The cluster domain Kubernetes uses unless told otherwise (kubelet's `--cluster-domain`).
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// The node's resolver configuration read from `path` (kubelet's `--resolv-conf`); empty when
/// the file cannot be read.
pub fn node_resolv_conf(path: &Path) -> ResolvConf {
    match std::fs::read_to_string(path) {
        Ok(text) => ResolvConf::parse(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the node's resolv.conf; pods with the Default DNS policy get no nameserver");
            ResolvConf::default()
        }
    }
}

/// The nameservers of `conf` other than `own`, as port-53 socket addresses.
pub fn upstreams(conf: &ResolvConf, own: IpAddr) -> Vec<SocketAddr> {
    conf.nameservers
        .iter()
        .filter_map(|ns| ns.parse::<IpAddr>().ok())
        .filter(|ip| *ip != own)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Starts `server` on `addr` (UDP and TCP), on `tasks` until `shutdown`. The sockets bind even
/// while `addr` is not yet an address of this host.
pub fn start(
    server: &DnsServer,
    addr: SocketAddr,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let udp = bind_free(addr, SocketType::DGRAM)?;
    let udp = std::net::UdpSocket::from(udp);
    udp.set_nonblocking(true)?;
    let tcp = bind_free(addr, SocketType::STREAM)?;
    rustix::net::listen(&tcp, 128)?;
    let tcp = std::net::TcpListener::from(tcp);
    tcp.set_nonblocking(true)?;
    server.serve(
        tokio::net::UdpSocket::from_std(udp)?,
        tokio::net::TcpListener::from_std(tcp)?,
        tasks,
        shutdown,
    );
    Ok(())
}

/// A socket of `kind` bound to `addr` with `IP_FREEBIND` (and `SO_REUSEADDR`).
fn bind_free(addr: SocketAddr, kind: SocketType) -> std::io::Result<std::os::fd::OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let socket = rustix::net::socket_with(family, kind, rustix::net::SocketFlags::CLOEXEC, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    if addr.is_ipv4() {
        sockopt::set_ip_freebind(&socket, true)?;
    } else {
        sockopt::set_ipv6_freebind(&socket, true)?;
    }
    rustix::net::bind(&socket, &addr)?;
    Ok(socket)
}
