//! `pods/portforward` over WebSocket, in the two forms clients ask for:
//!
//! - **kubectl's tunnel** (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31 and later): binary
//!   messages carry the bytes of a SPDY connection, served by the same session as a plain SPDY
//!   upgrade ([`super::port_forward::session`]).
//! - **the channel protocol** (`v5.channel.k8s.io` or `v4.channel.k8s.io`, as the kube crate's
//!   `Api::portforward` speaks it): the ports come in the `ports` query; port *i*'s bytes go on
//!   channel 2*i* and its error on 2*i*+1, each message's first byte naming its channel. Each
//!   channel opens with the port number (2 bytes, little endian). One connection to the pod is
//!   made per port. v5's `CLOSE` signal (255, then the channel) ends what is sent to that
//!   port; the WebSocket closes once the pod has closed every port.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::FromRequest;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::error::{ApiError, ApiResult};
use super::exec::{CLOSE_SIGNAL, normal_close, on_channel};
use super::port_forward::{
    CHUNK, connect, header_value, pod_to_client, session, to_pod_until_closed,
};

/// kubectl's tunnel of SPDY through a WebSocket.
pub const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

/// The channel protocols served, preferred first.
pub const CHANNELS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// The most ports one channel-protocol connection forwards (channels 0 to 253).
const MAX_PORTS: usize = 127;

/// Serves a WebSocket port-forward request to the pod at `ip` (`about` names it in errors).
pub async fn serve(req: Request<Body>, ip: IpAddr, about: String) -> ApiResult<Response> {
    let offered = header_value(req.headers(), "sec-websocket-protocol");
    let offers = |p: &str| offered.split(',').any(|o| o.trim() == p);
    let ports = ports(req.uri().query().unwrap_or(""))?;
    let upgrade = WebSocketUpgrade::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?;
    if offers(TUNNEL) {
        return Ok(upgrade
            .protocols([TUNNEL])
            .on_upgrade(move |ws| tunnel(ws, ip, about))
            .into_response());
    }
    if !CHANNELS.iter().any(|p| offers(p)) {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{offered}], \
             server supports [{TUNNEL}, {}]",
            CHANNELS.join(", ")
        )));
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request(
            "query parameter \"port\" is required: at least 1 port must be specified",
        ));
    }
    // Two channels a port, numbered by one byte, 255 being the CLOSE signal.
    if ports.len() > MAX_PORTS {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_PORTS} ports can be forwarded over one connection"
        )));
    }
    Ok(upgrade
        .protocols(CHANNELS)
        .on_upgrade(move |ws| channels(ws, ip, about, ports))
        .into_response())
}

/// The `ports` of the query (repeated, or separated by commas).
fn ports(query: &str) -> ApiResult<Vec<u16>> {
    let mut ports = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match p.parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unable to parse \"{p}\" as a port: must be a number from 1 to 65535"
                    )));
                }
            }
        }
    }
    Ok(ports)
}

/// kubectl's tunnel: the WebSocket's binary messages are the SPDY connection's bytes.
async fn tunnel(ws: WebSocket, ip: IpAddr, about: String) {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let spdy = tokio::spawn(session(ours, ip, about));
    let (mut from_session, mut to_session) = tokio::io::split(theirs);
    let (mut sink, mut stream) = ws.split();
    let inbound = async {
        while let Some(Ok(msg)) = stream.next().await {
            let bytes = match msg {
                Message::Binary(bytes) => bytes,
                Message::Close(_) => break,
                _ => continue,
            };
            if to_session.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n @ 1..) = from_session.read(&mut buf).await {
            let bytes = Bytes::copy_from_slice(&buf[..n]);
            if sink.send(Message::Binary(bytes)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
    };
    tokio::join!(inbound, outbound);
    let _ = spdy.await;
}

/// The channel protocol: one connection to the pod per port.
async fn channels(ws: WebSocket, ip: IpAddr, about: String, ports: Vec<u16>) {
    let (mut sink, mut stream) = ws.split();
    let (out, mut queued) = mpsc::channel::<Message>(64);
    // The writer ends, closing the WebSocket, once every port's forward has ended.
    let writer = tokio::spawn(async move {
        while let Some(msg) = queued.recv().await {
            if sink.send(msg).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
    });
    let mut to_pods = Vec::with_capacity(ports.len());
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        for channel in [data, data + 1] {
            let _ = out.send(on_channel(channel, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        to_pods.push(Some(tx));
        let to = SocketAddr::new(ip, port);
        forwards.spawn(forward(data, to, about.clone(), rx, out.clone()));
    }
    drop(out);
    while let Some(Ok(msg)) = stream.next().await {
        let Message::Binary(bytes) = msg else {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            continue;
        };
        match bytes.first().copied() {
            Some(CLOSE_SIGNAL) => {
                if let Some(&channel) = bytes.get(1)
                    && let Some(tx) = to_pods.get_mut(usize::from(channel) / 2)
                    && channel % 2 == 0
                {
                    *tx = None;
                }
            }
            Some(channel) if channel % 2 == 0 => {
                if let Some(Some(tx)) = to_pods.get(usize::from(channel) / 2)
                    && bytes.len() > 1
                {
                    let _ = tx.send(bytes.slice(1..)).await;
                }
            }
            _ => {}
        }
    }
    // The client is gone: nothing more can be delivered.
    forwards.abort_all();
    let _ = writer.await;
}

/// One port: connects to the pod and relays bytes both ways, or reports on the error channel
/// (`data + 1`) why it could not connect.
async fn forward(
    data: u8,
    to: SocketAddr,
    about: String,
    from_client: mpsc::Receiver<Bytes>,
    out: mpsc::Sender<Message>,
) {
    let socket = match connect(to, &about).await {
        Ok(s) => s,
        Err(message) => {
            let _ = out.send(on_channel(data + 1, message.as_bytes())).await;
            return;
        }
    };
    let (mut from_pod, to_pod) = socket.into_split();
    let upstream = to_pod_until_closed(from_client, to_pod);
    let downstream = pod_to_client(&mut from_pod, &out, |bytes| on_channel(data, bytes));
    // The pod closing its side ends the port, whatever the client still sends.
    tokio::select! {
        _ = downstream => {}
        () = async {
            upstream.await;
            std::future::pending::<()>().await
        } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_read_from_repeated_and_comma_separated_parameters() {
        assert_eq!(
            ports("ports=80%2C1234&ports=8080").unwrap(),
            [80, 1234, 8080]
        );
        assert_eq!(ports("&ports=80").unwrap(), [80]);
        assert!(ports("x=1").unwrap().is_empty());
        for bad in ["ports=http", "ports=0", "ports=70000"] {
            let e = ports(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
            assert!(e.message.contains("as a port"), "{bad}: {}", e.message);
        }
    }
}
