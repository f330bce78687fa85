//! `/attach/{namespace}/{pod}/{container}?stdin=…&stdout=…&stderr=…&tty=…`: connects `kubectl
//! attach` (and `kubectl run -i`) to a running container, as kubelet's attach endpoint does
//! for the API server. With `check=true` it only says whether it would (204, or the error it
//! would answer).
//!
//! The answer streams frames as an exec's does ([`super::exec`]): what the container writes
//! from now on, on channel 1 (stdout; everything, for a container with a terminal) and 2
//! (stderr), each as asked, then `Success` on channel 3 once the container's run ends. The
//! request's body is framed as a terminal exec's: stdin on channel 0 (closed by a frame on
//! channel 255 holding 0), terminal sizes on channel 4. Stdin reaches a container whose spec
//! has `stdin` (else it is dropped, as for kubelet); with `stdinOnce` the container reads an
//! end of file when the first attach ends.

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::json;

use super::exec::{STATUS_CHANNEL, frames, running_container, terminal_input};
use super::resource_metrics::RunningPods;
use crate::logs::server::status;
use crate::logs::store::LogStore;
use crate::runtime::{EXEC_STDERR, EXEC_STDOUT, OutputStream};

/// What an attach needs: the pods being run and their logs.
#[derive(Clone, Debug)]
pub struct Attachable {
    /// The pods being run.
    pub running: RunningPods,
    /// Their containers' logs, whose live copies are the attached output.
    pub logs: LogStore,
}

/// The attach route.
pub fn router(source: Attachable) -> Router {
    Router::new()
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach).post(attach),
        )
        .with_state(source)
}

async fn attach(
    State(source): State<Attachable>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let (mut stdin, mut stdout, mut stderr, mut check_only) = (false, false, false, false);
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let on = v == "1" || v == "true";
        match k.as_ref() {
            "check" => check_only = on,
            "input" | "stdin" => stdin = on,
            "output" | "stdout" => stdout = on,
            "error" | "stderr" => stderr = on,
            _ => {}
        }
    }
    let (_, runtime, id) = match running_container(&source.running, &namespace, &pod, &container) {
        Ok(found) => found,
        Err(refused) => return refused.into_response(),
    };
    let log = match source.logs.find(&namespace, &pod, &container, false) {
        Ok(log) => log,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    if check_only {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut output = log.tap();
    let (input, resize) = terminal_input(body);
    let input = stdin.then_some(input);
    // Input flows until the client's side ends, whether or not the container still runs.
    tokio::spawn(async move {
        if let Err(e) = runtime.attach(&id, input, resize).await {
            tracing::debug!(container = %id, error = %e, "attach: input not delivered");
        }
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<(u8, Bytes)>(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                chunk = output.recv() => match chunk {
                    Some((stream, bytes)) => {
                        let (channel, wanted) = match stream {
                            OutputStream::Stdout => (EXEC_STDOUT, stdout),
                            OutputStream::Stderr => (EXEC_STDERR, stderr),
                        };
                        if wanted && tx.send((channel, bytes)).await.is_err() {
                            return;
                        }
                    }
                    // The run ended: so does the attach, as kubelet ends it.
                    None => break,
                },
                () = tx.closed() => return,
            }
        }
        let done = json!({"metadata": {}, "status": "Success"}).to_string();
        let _ = tx.send((STATUS_CHANNEL, Bytes::from(done))).await;
    });
    frames(rx)
}
