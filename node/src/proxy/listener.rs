//! One listening address of a Service port: accepts connections and splices each to an endpoint
//! the balancer picks, trying the next one when a connection is refused. With no endpoint to
//! reach, the client's connection is reset at once rather than left hanging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::balancer::Balancer;
use super::table::PortKey;

/// How long a connection attempt to one endpoint may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts on `listener` until `stop`; connections run on `tasks` and end with `shutdown`.
pub async fn serve(
    listener: TcpListener,
    key: PortKey,
    balancer: Arc<Balancer>,
    tasks: TaskTracker,
    stop: CancellationToken,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        match accepted {
            Ok((client, peer)) => {
                let balancer = balancer.clone();
                let shutdown = shutdown.clone();
                let key = key.clone();
                tasks.spawn(async move {
                    tokio::select! {
                        _ = relay(client, peer, &key, &balancer) => {}
                        _ = shutdown.cancelled() => {}
                    }
                });
            }
            Err(e) => {
                tracing::debug!(service = %key, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Connects to the first endpoint that answers and copies both ways until either side closes.
async fn relay(client: TcpStream, peer: SocketAddr, key: &PortKey, balancer: &Balancer) {
    let now = Instant::now();
    let mut upstream = None;
    for endpoint in balancer.candidates(peer.ip(), now) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(s)) => {
                balancer.connected(peer.ip(), endpoint, now);
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => {
                tracing::debug!(service = %key, %endpoint, error = %e, "endpoint refused; trying the next")
            }
            Err(_) => {
                tracing::debug!(service = %key, %endpoint, "endpoint timed out; trying the next")
            }
        }
    }
    let Some(mut upstream) = upstream else {
        // Nothing to send it to: reset, so the client fails fast instead of waiting. (A zero
        // linger never blocks on close, which is what the deprecation warns about.)
        #[allow(deprecated)]
        let _ = client.set_linger(Some(Duration::ZERO));
        drop(client);
        return;
    };
    let mut client = client;
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}
