//! `pods/portforward`: `kubectl port-forward POD LOCAL:REMOTE` over SPDY/3.1
//! (`portforward.k8s.io`), directly or tunnelled through a WebSocket, and the WebSocket channel
//! protocol of other clients (see [`super::port_forward_ws`]).
//!
//! kubectl 1.31 and later first ask for the WebSocket tunnel, and fall back to a plain SPDY
//! upgrade when it fails; both carry the same SPDY session. The SPDY upgrade is answered
//! `101 Switching Protocols`; then, for every local connection, kubectl opens two streams
//! carrying the same `requestID` and `port` headers: an *error* stream, which this side
//! writes a message to if forwarding fails, and a *data* stream, whose bytes are relayed to
//! and from `{pod IP}:{port}`. When the pod closes its side, the data stream is finished,
//! then the error stream (kubectl waits for both). Pings are echoed.
//!
//! Like `pods/proxy` (see [`super::pod_proxy`]), the API server connects to the pod's address
//! itself, which is reachable from the control plane on a single machine (`flotilla up`);
//! kube-apiserver goes through the kubelet instead.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::exec::ExecTarget;
use super::resources;
use super::spdy::{self, FLAG_FIN, Frame, HeaderCodec};

/// The stream protocol served (`X-Stream-Protocol-Version`).
pub const PROTOCOL: &str = "portforward.k8s.io";

/// How long connecting to the pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves one port-forward request: checks the pod and upgrades the connection to SPDY.
pub async fn serve(api: &Api, target: &ExecTarget, mut req: Request<Body>) -> ApiResult<Response> {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let pod = api.get(pods, Some(&target.namespace), &target.name).await?;
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        return Err(ApiError::bad_request(format!(
            "cannot forward ports to a completed pod; current phase is {phase}"
        )));
    }
    let ip: IpAddr = pod["status"]["podIP"]
        .as_str()
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {} does not have an IP address yet",
                target.name
            ))
        })?;
    let about = format!(
        "pod {}, uid {}",
        target.name,
        pod["metadata"]["uid"].as_str().unwrap_or("")
    );
    let upgrade = header_value(req.headers(), header::UPGRADE);
    if upgrade.eq_ignore_ascii_case("websocket") {
        return super::port_forward_ws::serve(req, ip, about).await;
    }
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let offered = header_value(req.headers(), "x-stream-protocol-version");
    if !offered.is_empty() && !offered.split(',').any(|p| p.trim() == PROTOCOL) {
        return Err(ApiError::bad_request(format!(
            "unable to upgrade: unable to negotiate protocol: client supports [{offered}], \
             server supports [{PROTOCOL}]"
        )));
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            session(TokioIo::new(upgraded), ip, about).await;
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PROTOCOL)
        .body(Body::empty())
        .expect("a valid response"))
}

/// A request header as text ("" when absent).
pub fn header_value(headers: &HeaderMap, name: impl header::AsHeaderName) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// The streams of one forwarded connection seen so far (kubectl opens the error stream first
/// and waits for its reply before opening the data stream).
#[derive(Default)]
struct PendingPair {
    port: u16,
    error: Option<u32>,
    data: Option<(u32, mpsc::Receiver<Bytes>)>,
}

/// One SPDY connection: reads frames, replies to streams, pairs them and starts forwarding.
pub async fn session<S>(io: S, ip: IpAddr, about: String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    // Frames are written by one task, in the order they are queued.
    let (out, mut queued) = mpsc::channel::<Vec<u8>>(64);
    let done = CancellationToken::new();
    let write_done = done.clone();
    tokio::spawn(async move {
        while let Some(frame) = tokio::select! {
            f = queued.recv() => f,
            () = write_done.cancelled() => None,
        } {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut codec = HeaderCodec::default();
    // Inbound bytes of each data stream, by stream id.
    let mut inbound: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut requests: HashMap<String, PendingPair> = HashMap::new();
    while let Ok(Some(frame)) = spdy::read_frame(&mut reader, &mut codec).await {
        match frame {
            Frame::SynStream {
                stream_id, headers, ..
            } => {
                let get = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str())
                };
                let port = get("port").and_then(|p| p.parse::<u16>().ok());
                let (Some(kind @ ("error" | "data")), Some(port)) = (get("streamtype"), port)
                else {
                    let _ = out
                        .send(spdy::rst_stream(stream_id, spdy::PROTOCOL_ERROR))
                        .await;
                    continue;
                };
                // Old clients send no request id: their streams pair by port.
                let id = get("requestid").unwrap_or(&port.to_string()).to_string();
                if out.send(codec.syn_reply(stream_id)).await.is_err() {
                    break;
                }
                let request = requests.entry(id.clone()).or_default();
                request.port = port;
                if kind == "error" {
                    request.error = Some(stream_id);
                } else {
                    let (tx, rx) = mpsc::channel(16);
                    inbound.insert(stream_id, tx);
                    request.data = Some((stream_id, rx));
                }
                if request.error.is_none() || request.data.is_none() {
                    continue;
                }
                if let Some(PendingPair {
                    port,
                    error: Some(error),
                    data: Some((data, rx)),
                }) = requests.remove(&id)
                {
                    let pair = Pair {
                        to: SocketAddr::new(ip, port),
                        about: about.clone(),
                        error,
                        data,
                    };
                    tokio::spawn(pair.forward(rx, out.clone(), done.clone()));
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(tx) = inbound.get(&stream_id)
                    && !data.is_empty()
                {
                    let _ = tx.send(data).await;
                }
                if flags & FLAG_FIN != 0 {
                    inbound.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id } => {
                inbound.remove(&stream_id);
            }
            Frame::Ping(id) => {
                let _ = out.send(spdy::ping(id)).await;
            }
            Frame::GoAway => break,
            Frame::Ignored => {}
        }
    }
    done.cancel();
}

/// The most bytes read from a pod (or a tunnelled session) and sent on as one message.
pub const CHUNK: usize = spdy::MAX_DATA;

/// Sends what the pod sends, a chunk at a time as `message(chunk)`, until the pod closes its
/// side (true) or the client's queue is gone (false).
pub async fn pod_to_client<M>(
    from_pod: &mut tokio::net::tcp::OwnedReadHalf,
    out: &mpsc::Sender<M>,
    message: impl Fn(&[u8]) -> M,
) -> bool {
    let mut buf = vec![0u8; CHUNK];
    while let Ok(n @ 1..) = from_pod.read(&mut buf).await {
        if out.send(message(&buf[..n])).await.is_err() {
            return false;
        }
    }
    true
}

/// Writes what the client sends on one connection to the pod, then closes the pod's input.
pub async fn to_pod_until_closed(
    mut from_client: mpsc::Receiver<Bytes>,
    mut to_pod: tokio::net::tcp::OwnedWriteHalf,
) {
    while let Some(bytes) = from_client.recv().await {
        if to_pod.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = to_pod.shutdown().await;
}

/// Connects to a pod's port, or says why not as kube-apiserver words it ("error forwarding
/// port 9 to pod NAME, uid UID: dial tcp ADDR: ...").
pub async fn connect(to: SocketAddr, about: &str) -> Result<TcpStream, String> {
    let why = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await {
        Ok(Ok(socket)) => {
            let _ = socket.set_nodelay(true);
            return Ok(socket);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
    };
    Err(format!(
        "error forwarding port {} to {about}: dial tcp {to}: {why}",
        to.port()
    ))
}

/// The two streams of one forwarded connection.
struct Pair {
    /// The pod's address and port.
    to: SocketAddr,
    /// "pod NAME, uid UID", for error messages.
    about: String,
    /// The error stream's id.
    error: u32,
    /// The data stream's id.
    data: u32,
}

impl Pair {
    /// Connects to the pod and relays bytes both ways until the pod closes its side (or
    /// the connection ends); then finishes the data stream and the error stream.
    async fn forward(
        self,
        inbound: mpsc::Receiver<Bytes>,
        out: mpsc::Sender<Vec<u8>>,
        done: CancellationToken,
    ) {
        let socket = match connect(self.to, &self.about).await {
            Ok(s) => s,
            Err(message) => {
                let _ = out
                    .send(spdy::data(self.error, 0, message.as_bytes()))
                    .await;
                self.finish(&out).await;
                return;
            }
        };
        let (mut from_pod, to_pod) = socket.into_split();
        let upstream = to_pod_until_closed(inbound, to_pod);
        let downstream = async {
            let sent = |bytes: &[u8]| spdy::data(self.data, 0, bytes);
            if pod_to_client(&mut from_pod, &out, sent).await {
                self.finish(&out).await;
            }
        };
        tokio::select! {
            _ = async { tokio::join!(upstream, downstream) } => {}
            () = done.cancelled() => {}
        }
    }

    /// Ends this side of both streams.
    async fn finish(&self, out: &mpsc::Sender<Vec<u8>>) {
        let _ = out.send(spdy::data(self.data, FLAG_FIN, &[])).await;
        let _ = out.send(spdy::data(self.error, FLAG_FIN, &[])).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::fake_agent;
    use super::*;

    fn request(upgrade: &str, protocol: &str) -> Request<Body> {
        let mut r = Request::post("/api/v1/namespaces/default/pods/web/portforward");
        if !upgrade.is_empty() {
            r = r
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, upgrade);
        }
        if !protocol.is_empty() {
            r = r.header("X-Stream-Protocol-Version", protocol);
        }
        r.body(Body::empty()).unwrap()
    }

    async fn answer(api: &Api, req: Request<Body>) -> (u16, String) {
        let target = ExecTarget::for_subresource(req.uri().path(), "portforward").unwrap();
        match serve(api, &target, req).await {
            Ok(r) => (r.status().as_u16(), String::new()),
            Err(e) => (e.code, e.message),
        }
    }

    #[tokio::test]
    async fn only_a_spdy_upgrade_to_a_pod_with_an_address_is_switched() {
        let (api, _dir) = fake_agent::api().await;
        let (code, _) = answer(&api, request("SPDY/3.1", PROTOCOL)).await;
        assert_eq!(code, 404, "no such pod");
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "c", "image": "x"}]}});
        fake_agent::create(&api, pod).await;
        let (code, message) = answer(&api, request("SPDY/3.1", PROTOCOL)).await;
        assert_eq!(code, 400);
        assert!(message.contains("does not have an IP address"), "{message}");

        let status = json!({"phase": "Running", "podIP": "127.0.0.1"});
        fake_agent::patch_pod_status(&api, "web", status).await;
        let (code, message) = answer(&api, request("", "")).await;
        assert_eq!((code, message.as_str()), (400, "Upgrade request required"));
        let (code, message) = answer(&api, request("SPDY/3.1", "v4.channel.k8s.io")).await;
        assert_eq!(code, 400);
        assert!(
            message.contains("unable to negotiate protocol"),
            "{message}"
        );
        let (code, _) = answer(&api, request("SPDY/3.1", PROTOCOL)).await;
        assert_eq!(code, 101);
        let (code, _) = answer(&api, request("spdy/3.1", "")).await;
        assert_eq!(code, 101, "without a protocol header, the one served");
    }
}
