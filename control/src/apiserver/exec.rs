//! `pods/exec` and `pods/attach`: `kubectl exec POD -- COMMAND` and `kubectl attach POD`
//! (`kubectl run -i`) over the WebSocket protocol kubectl speaks (`v5.channel.k8s.io`, or
//! `v4.channel.k8s.io`).
//!
//! Like kube-apiserver, the API server checks the pod (it exists, is bound, has not
//! finished, has the container) and hands the request to the agent of its node
//! (`/exec/{namespace}/{pod}/{container}`, see the agent's `exec` module). The agent streams
//! framed output: each frame (channel, length, bytes) becomes one binary WebSocket message
//! whose first byte is the channel (1 stdout, 2 stderr, 3 the final `Status`, from which
//! kubectl takes the exit code). Errors before the command starts are answered as `Status`
//! objects instead of an upgrade. With `-i`, what kubectl sends on channel 0 is the
//! command's stdin, closed by the v5 `CLOSE` signal. With `-t` the command runs on a terminal
//! the agent opens: stdin (channel 0), the `CLOSE` signal and kubectl's terminal sizes
//! (channel 4) go to the agent as frames in its request's body, and the terminal's output
//! comes back on channel 1.
//!
//! An attach goes the same way to the agent's `/attach/{namespace}/{pod}/{container}`: what
//! the container writes from then on comes back (channels 1 and 2), and with `-i` (or a
//! container with a terminal) stdin, `CLOSE` and sizes go to the agent framed. It ends when
//! the container's run ends, with `Success` on channel 3.

use axum::body::Body;
use axum::extract::FromRequest;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::Request;
use axum::response::Response;
use bytes::{Buf, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http_body_util::BodyExt;

use super::agent;
use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::logs::pick_container;
use super::resources;

/// The WebSocket subprotocols served, preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// `/api/v1/namespaces/{namespace}/pods/{name}/exec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

impl ExecTarget {
    /// The pod of `/api/v1/namespaces/{namespace}/pods/{name}/{subresource}`.
    pub fn for_subresource(path: &str, subresource: &str) -> Option<ExecTarget> {
        let rest = path.strip_prefix("/api/v1/namespaces/")?;
        let mut parts = rest.split('/');
        let (ns, kind, name, sub) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if kind != "pods"
            || sub != subresource
            || parts.next().is_some()
            || ns.is_empty()
            || name.is_empty()
        {
            return None;
        }
        Some(ExecTarget {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    }
}

/// Which streaming subresource of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    /// `pods/exec`: runs a command.
    Exec,
    /// `pods/attach`: connects to the container's own streams.
    Attach,
}

impl Streaming {
    /// The subresource's name, also the agent's path's first part.
    pub fn name(self) -> &'static str {
        match self {
            Streaming::Exec => "exec",
            Streaming::Attach => "attach",
        }
    }
}

/// Serves one exec or attach request.
pub async fn serve(
    api: &Api,
    target: &ExecTarget,
    what: Streaming,
    req: Request<Body>,
) -> ApiResult<Response> {
    let pods = resources::find("", "v1", "pods").expect("pods served");
    let pod = api.get(pods, Some(&target.namespace), &target.name).await?;
    let query = req.uri().query().unwrap_or("").to_string();
    let mut container = None;
    let mut commands = 0;
    let (mut stdin, mut tty) = (false, false);
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let on = v == "1" || v == "true";
        match k.as_ref() {
            "container" if !v.is_empty() => container = Some(v.into_owned()),
            "command" => commands += 1,
            "stdin" | "input" => stdin = on,
            "tty" => tty = on,
            _ => {}
        }
    }
    if commands == 0 && what == Streaming::Exec {
        return Err(ApiError::bad_request("you must specify at least 1 command"));
    }
    let container = pick_container(&pod, container.as_deref())?;
    let name = &target.name;
    let node = agent::pod_node(&pod)?;
    if let Some(phase @ ("Succeeded" | "Failed")) = pod["status"]["phase"].as_str() {
        // kubectl's own words for each.
        let verb = match what {
            Streaming::Exec => "exec into",
            Streaming::Attach => "attach",
        };
        return Err(ApiError::bad_request(format!(
            "cannot {verb} a container in a completed pod; current phase is {phase}"
        )));
    }
    let ns = &target.namespace;
    let sub = what.name();
    let path = format!("/{sub}/{ns}/{name}/{container}?{query}");
    // Only a WebSocket upgrade can carry the streams. kubectl falls back to SPDY when the
    // upgrade fails: that request gets the agent's reason, found without running anything,
    // or else this one.
    let Ok(upgrade) = WebSocketUpgrade::from_request(req, &()).await else {
        let checked = agent::get(api, node, sub, &format!("{path}&check=true")).await?;
        if !checked.status().is_success() {
            return Ok(agent::streamed(checked));
        }
        return Err(ApiError::bad_request(format!(
            "pods/{sub} is served over WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) only; \
             SPDY is not supported: use kubectl 1.30 or later"
        )));
    };
    // With stdin, the agent's request body streams what comes on channel 0; on a terminal,
    // and for an attach, framed, with the terminal's sizes.
    let framed = tty || what == Streaming::Attach;
    let (method, request_body, stdin_tx) = if stdin || tty {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
        (http::Method::POST, Body::from_stream(stream), Some(tx))
    } else {
        (http::Method::GET, Body::empty(), None)
    };
    let resp = agent::send(api, node, sub, method, &path, request_body).await?;
    if !resp.status().is_success() {
        // The agent answers errors as Kubernetes Status objects: pass them on as they are.
        return Ok(agent::streamed(resp));
    }
    let body = resp.into_body();
    Ok(upgrade
        .protocols(PROTOCOLS)
        .on_upgrade(move |socket| relay(body, socket, stdin_tx, framed)))
}

/// What the client sends: stdin on channel 0, until the v5 `CLOSE` signal for it (channel
/// 255, then 0) or the end of the connection, whichever comes first. On a terminal
/// (`framed`), every message on channels 0, 4 (sizes) and 255 goes on as one frame of the
/// agent's protocol instead.
async fn read_stdin(
    mut incoming: futures::stream::SplitStream<WebSocket>,
    mut stdin: Option<tokio::sync::mpsc::Sender<Bytes>>,
    framed: bool,
) {
    while let Some(Ok(msg)) = incoming.next().await {
        let Message::Binary(data) = msg else {
            if matches!(msg, Message::Close(_)) {
                return;
            }
            continue;
        };
        if framed {
            if let (Some(&channel @ (0 | RESIZE_CHANNEL | CLOSE_SIGNAL)), Some(tx)) =
                (data.first(), &stdin)
                && tx.send(frame(channel, &data[1..])).await.is_err()
            {
                return;
            }
            continue;
        }
        match data.first() {
            Some(0) => {
                if let Some(tx) = &stdin
                    && tx.send(data.slice(1..)).await.is_err()
                {
                    stdin = None;
                }
            }
            Some(&CLOSE_SIGNAL) if data.get(1) == Some(&0) => stdin = None,
            _ => {}
        }
    }
}

/// Sends each frame of the agent's answer as one binary message, then closes; meanwhile
/// passes the client's stdin on to `stdin_tx`.
async fn relay(
    mut body: hyper::body::Incoming,
    socket: WebSocket,
    stdin_tx: Option<tokio::sync::mpsc::Sender<Bytes>>,
    tty: bool,
) {
    let (mut socket, incoming) = socket.split();
    let reader = tokio::spawn(read_stdin(incoming, stdin_tx, tty));
    let mut buf = BytesMut::new();
    loop {
        while let Some((channel, data)) = next_frame(&mut buf) {
            if socket.send(on_channel(channel, &data)).await.is_err() {
                reader.abort();
                return;
            }
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "exec: the agent's stream broke");
                break;
            }
            None => break,
        }
    }
    // A normal closure: kubectl reads its streams to their end only then.
    let _ = socket.send(normal_close()).await;
    reader.abort();
}

/// The v5 channel protocol's signal that a channel is closed (then the channel's number).
pub const CLOSE_SIGNAL: u8 = 255;
/// The channel of a terminal's size (`{"Width":80,"Height":24}`).
pub const RESIZE_CHANNEL: u8 = 4;

/// One frame of the agent's protocol: channel, 4-byte big-endian length, bytes.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(5 + data.len());
    b.push(channel);
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b.into()
}

/// A binary message on `channel` of the channel protocols (`v4`/`v5.channel.k8s.io`).
pub fn on_channel(channel: u8, payload: &[u8]) -> Message {
    let mut msg = Vec::with_capacity(1 + payload.len());
    msg.push(channel);
    msg.extend_from_slice(payload);
    Message::Binary(msg.into())
}

/// A normal closure (1000) of a WebSocket.
pub fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    }))
}

/// Takes one whole frame (channel, 4-byte big-endian length, bytes) off the front of `buf`.
pub fn next_frame(buf: &mut BytesMut) -> Option<(u8, Bytes)> {
    if buf.len() < 5 {
        return None;
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let channel = buf[0];
    buf.advance(5);
    Some((channel, buf.split_to(len).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_paths_and_frames_are_read() {
        assert_eq!(
            ExecTarget::for_subresource("/api/v1/namespaces/default/pods/web/exec", "exec"),
            Some(ExecTarget {
                namespace: "default".into(),
                name: "web".into()
            })
        );
        assert_eq!(
            ExecTarget::for_subresource("/api/v1/namespaces/default/pods/web/log", "exec"),
            None
        );
        assert_eq!(
            ExecTarget::for_subresource("/api/v1/namespaces/default/pods/web/exec/x", "exec"),
            None
        );
        let mut buf = BytesMut::from(&[1u8, 0, 0, 0, 2, b'h', b'i', 3, 0, 0][..]);
        assert_eq!(next_frame(&mut buf), Some((1, Bytes::from_static(b"hi"))));
        // Half a frame waits for the rest.
        assert_eq!(next_frame(&mut buf), None);
        buf.extend_from_slice(&[0, 1, b'{']);
        assert_eq!(next_frame(&mut buf), Some((3, Bytes::from_static(b"{"))));
        assert!(buf.is_empty());
    }
}
