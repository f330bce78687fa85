//! `/exec/{namespace}/{pod}/{container}?command=…`: runs a command in a running container for
//! `kubectl exec`, as kubelet's exec endpoint does for the API server. With `check=true` it
//! only says whether it would (204, or the error it would answer).
//!
//! The answer streams *frames*: one byte of channel (1 stdout, 2 stderr, 3 the final
//! `Status`, the channels of Kubernetes' remote command protocol), four bytes of length (big
//! endian), then that many bytes. The last frame is the `Status` on channel 3: `Success`, or
//! `Failure` with reason `NonZeroExitCode` and the exit code as the `ExitCode` cause, as
//! kubelet reports it. With `stdin=true` the request's body is the command's stdin. The API
//! server turns the frames into the messages of the WebSocket `kubectl exec` speaks.
//!
//! With `tty=true` (`kubectl exec -t`) the command runs on a terminal: all its output comes on
//! channel 1, and the request's body is framed too: stdin on channel 0 (closed by a frame on
//! channel 255 holding 0, the v5 `CLOSE` signal), the terminal's size on channel 4 as
//! kubectl sends it (`{"Width":80,"Height":24}`).

use std::convert::Infallible;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::resource_metrics::RunningPods;
use crate::logs::server::status;
use crate::runtime::ContainerId;

/// The channel of the final `Status`.
pub const STATUS_CHANNEL: u8 = 3;
/// The channel of stdin in a terminal's request body.
pub const STDIN_CHANNEL: u8 = 0;
/// The channel of terminal sizes in a terminal's request body.
pub const RESIZE_CHANNEL: u8 = 4;
/// The channel of the signal that a channel is closed (then the channel's number).
pub const CLOSE_CHANNEL: u8 = 255;

/// The exec route.
pub fn router(source: RunningPods) -> Router {
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .with_state(source)
}

/// One frame: channel, length, bytes.
pub fn frame(channel: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + data.len());
    b.put_u8(channel);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// The `Status` kubelet ends an exec with, for exit code `code` of `command`.
pub fn exit_status(command: &[String], code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {}, "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

async fn exec(
    State(source): State<RunningPods>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let mut command = Vec::new();
    let (mut stdin, mut tty, mut check_only) = (false, false, false);
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let on = v == "1" || v == "true";
        match k.as_ref() {
            "command" => command.push(v.into_owned()),
            "check" => check_only = on,
            "input" | "stdin" => stdin = on,
            "tty" => tty = on,
            _ => {}
        }
    }
    if command.is_empty() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least 1 command",
        );
    }
    let (handler, runtime, id) = match running_container(&source, &namespace, &pod, &container) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    if !runtime.runs_commands() {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "cannot exec in container {container}: a {handler} container runs a Wasm module, which has no shell or processes to run a command in"
            ),
        );
    }
    if check_only {
        return StatusCode::NO_CONTENT.into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<(u8, Bytes)>(16);
    if tty {
        let (input, resize) = terminal_input(body);
        let input = stdin.then_some(input);
        tokio::spawn(async move {
            let ended = runtime
                .exec_terminal(&id, &command, input, resize, tx.clone())
                .await;
            let _ = tx
                .send((STATUS_CHANNEL, ended_status(&command, ended)))
                .await;
        });
        return frames(rx);
    }
    // The request body is the command's stdin, when asked for.
    let input = stdin.then(|| {
        let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let mut body = body.into_data_stream();
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = body.next().await {
                if in_tx.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        in_rx
    });
    tokio::spawn(async move {
        let ended = runtime
            .exec_streaming(&id, &command, input, tx.clone())
            .await;
        let _ = tx
            .send((STATUS_CHANNEL, ended_status(&command, ended)))
            .await;
    });
    frames(rx)
}

/// The running container `container` of pod `namespace/pod` on this node: its runtime's
/// handler, the runtime and the container's id; else why not, to answer as a `Status`.
pub fn running_container(
    source: &RunningPods,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<
    (
        String,
        std::sync::Arc<dyn crate::runtime::Runtime>,
        ContainerId,
    ),
    Refusal,
> {
    let pods = source.registry.snapshot();
    let Some(p) = pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == pod)
    else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("pod {namespace}/{pod} does not run on this node"),
        ));
    };
    let Some(record) = p
        .state
        .containers
        .iter()
        .chain(&p.state.init)
        .chain(&p.state.ephemeral)
        .find(|c| c.name == container)
    else {
        return Err(Refusal(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("container {container} is not valid for pod {pod}"),
        ));
    };
    let Some((handler, id)) = record.running_in() else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container} is not running"),
        ));
    };
    let Some(runtime) = source.runtimes.get(handler).cloned() else {
        return Err(Refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("no runtime {handler} on this node"),
        ));
    };
    Ok((handler.to_string(), runtime, id))
}

/// Why a request for a container cannot be served: a `Status`'s code, reason and message.
#[derive(Debug)]
pub struct Refusal(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        status(self.0, self.1, &self.2)
    }
}

/// The final `Status` of a command that ended with `ended`.
fn ended_status(command: &[String], ended: Result<i32, crate::runtime::RuntimeError>) -> Bytes {
    let end = match ended {
        Ok(code) => exit_status(command, code),
        Err(e) => json!({
            "metadata": {}, "status": "Failure", "reason": "InternalError",
            "message": e.to_string(),
        }),
    };
    Bytes::from(end.to_string())
}

/// The answer: the frames that come on `rx`, as they come.
pub fn frames(rx: tokio::sync::mpsc::Receiver<(u8, Bytes)>) -> Response {
    let frames = ReceiverStream::new(rx).map(|(ch, data)| Ok::<_, Infallible>(frame(ch, &data)));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Takes one whole frame (channel, 4-byte big-endian length, bytes) off the front of `buf`.
fn take_frame(buf: &mut BytesMut) -> Option<(u8, Bytes)> {
    let len = u32::from_be_bytes(buf.get(1..5)?.try_into().ok()?) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    let channel = buf[0];
    let mut whole = buf.split_to(5 + len);
    Some((channel, whole.split_off(5).freeze()))
}

/// A terminal's size as kubectl sends it: `{"Width":80,"Height":24}`.
fn terminal_size(data: &[u8]) -> Option<(u16, u16)> {
    let v: Value = serde_json::from_slice(data).ok()?;
    let dim = |k: &str| v[k].as_u64().and_then(|n| u16::try_from(n).ok());
    Some((dim("Width")?, dim("Height")?))
}

/// Splits a framed request body (a terminal exec's, an attach's) into stdin and the
/// terminal's sizes.
pub fn terminal_input(
    body: Body,
) -> (
    tokio::sync::mpsc::Receiver<Bytes>,
    tokio::sync::mpsc::Receiver<(u16, u16)>,
) {
    let (in_tx, in_rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let (size_tx, size_rx) = tokio::sync::mpsc::channel::<(u16, u16)>(4);
    let mut body = body.into_data_stream();
    tokio::spawn(async move {
        let mut stdin = Some(in_tx);
        let mut buf = BytesMut::new();
        while let Some(Ok(chunk)) = body.next().await {
            buf.extend_from_slice(&chunk);
            while let Some((channel, data)) = take_frame(&mut buf) {
                match channel {
                    STDIN_CHANNEL => {
                        if let Some(tx) = &stdin
                            && tx.send(data).await.is_err()
                        {
                            stdin = None;
                        }
                    }
                    RESIZE_CHANNEL => {
                        if let Some(size) = terminal_size(&data) {
                            let _ = size_tx.send(size).await;
                        }
                    }
                    CLOSE_CHANNEL if data.first() == Some(&STDIN_CHANNEL) => stdin = None,
                    _ => {}
                }
            }
        }
    });
    (in_rx, size_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_body_splits_into_stdin_and_sizes() {
        let mut buf = BytesMut::new();
        for (ch, data) in [
            (RESIZE_CHANNEL, &br#"{"Width":100,"Height":30}"#[..]),
            (STDIN_CHANNEL, b"ls\n"),
            (CLOSE_CHANNEL, &[STDIN_CHANNEL]),
        ] {
            buf.extend_from_slice(&frame(ch, data));
        }
        // A frame cut in two waits for its rest.
        let mut half = buf.split_to(7);
        assert_eq!(take_frame(&mut half), None);
        half.unsplit(buf);
        let mut buf = half;
        assert_eq!(
            take_frame(&mut buf).map(|(c, d)| (c, terminal_size(&d))),
            Some((RESIZE_CHANNEL, Some((100, 30))))
        );
        assert_eq!(
            take_frame(&mut buf),
            Some((STDIN_CHANNEL, Bytes::from_static(b"ls\n")))
        );
        assert_eq!(
            take_frame(&mut buf),
            Some((CLOSE_CHANNEL, Bytes::from_static(&[STDIN_CHANNEL])))
        );
        assert!(buf.is_empty());
        assert_eq!(terminal_size(b"{\"Width\":-1,\"Height\":2}"), None);
    }

    #[test]
    fn frames_and_exit_statuses_are_kubelets() {
        assert_eq!(&frame(1, b"hi")[..], &[1, 0, 0, 0, 2, b'h', b'i']);
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(exit_status(&cmd, 0)["status"], "Success");
        let failed = exit_status(&cmd, 3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(
            failed["message"],
            "command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"
        );
    }
}
