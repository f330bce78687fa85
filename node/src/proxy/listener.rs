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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::table::Route;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A proxy listener on a free loopback port over `endpoints`.
    async fn proxy(endpoints: Vec<SocketAddr>) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let balancer = Arc::new(Balancer::new(Route {
            endpoints,
            affinity: None,
        }));
        let stop = CancellationToken::new();
        let key = PortKey {
            namespace: "ns".into(),
            service: "s".into(),
            port: String::new(),
        };
        tokio::spawn(serve(
            listener,
            key,
            balancer,
            TaskTracker::new(),
            stop.clone(),
            stop.clone(),
        ));
        (addr, stop)
    }

    #[tokio::test]
    async fn a_refused_endpoint_is_skipped_and_bytes_flow_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        // A port nobody listens on: bound, then closed.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let (addr, stop) = proxy(vec![closed, echo_addr]).await;
        for i in 0..4u8 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&[i; 3]).await.unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [i; 3], "connection {i} reached the live endpoint");
        }
        stop.cancel();
    }

    #[tokio::test]
    async fn with_no_endpoint_a_connection_is_reset_at_once() {
        let (addr, stop) = proxy(Vec::new()).await;
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("no hang");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        stop.cancel();
    }
}
