//! hello-http: a `wasi:http/proxy` component.
//!
//! Routes:
//! - `GET /` — a greeting.
//! - `/echo` — the request body back, with the request's content type.
//! - `GET /api/info` — JSON describing the request.
//! - `POST /api/sum` — JSON array of numbers in, `{"sum":..,"count":..}` out.
//! - `GET /env` — the environment, one `KEY=value` a line.
//! - `GET /log` — writes a line to stdout and one to stderr.
//! - `GET /sleep?ms=N` — answers after N ms (for drain tests).
//! - `GET /fetch?url=http://...` — an outgoing GET; answers with its status and
//!   body, or 502 and the error (for allow-list tests).
//! Hostile routes, for the engine's isolation tests:
//! - `GET /spin` — loops forever.
//! - `GET /alloc?mb=N` — allocates and touches N MiB.
//! - `GET /trap` — panics (a wasm trap).

use wasi::http::outgoing_handler;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};

struct Service;

wasi::http::proxy::export!(Service);

impl wasi::exports::http::incoming_handler::Guest for Service {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_else(|| "/".into());
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_with_query.clone(), String::new()),
        };
        let method = request.method();
        match (&method, path.as_str()) {
            (Method::Get, "/") => respond(
                response_out,
                200,
                "text/plain",
                b"hello from flotilla wasi:http\n",
            ),
            (_, "/echo") => {
                let content_type = header(&request, "content-type")
                    .unwrap_or_else(|| "application/octet-stream".into());
                let body = read_body(request);
                respond(response_out, 200, &content_type, &body);
            }
            (Method::Get, "/api/info") => {
                let json = format!(
                    "{{\"service\":\"hello-http\",\"method\":\"{}\",\"path\":\"{}\",\"query\":\"{}\"}}",
                    method_name(&method),
                    escape(&path),
                    escape(&query)
                );
                respond(response_out, 200, "application/json", json.as_bytes());
            }
            (Method::Post, "/api/sum") => {
                let body = read_body(request);
                match sum(&String::from_utf8_lossy(&body)) {
                    Ok((total, count)) => {
                        let json = format!("{{\"sum\":{total},\"count\":{count}}}");
                        respond(response_out, 200, "application/json", json.as_bytes());
                    }
                    Err(e) => {
                        let json = format!("{{\"error\":\"{}\"}}", escape(&e));
                        respond(response_out, 400, "application/json", json.as_bytes());
                    }
                }
            }
            (Method::Get, "/env") => {
                // Through `wasi:cli/environment` rather than `std::env`, whose wasi-libc
                // implementation would pull WASI p1 imports (and so the p1 adapter) into the
                // component.
                let mut vars: Vec<String> = wasi::cli::environment::get_environment()
                    .into_iter()
                    .map(|(k, v)| format!("{k}={v}\n"))
                    .collect();
                vars.sort();
                respond(response_out, 200, "text/plain", vars.concat().as_bytes());
            }
            (Method::Get, "/log") => {
                // `wasi:cli` streams rather than `println!`, for the same reason.
                let _ = wasi::cli::stdout::get_stdout()
                    .blocking_write_and_flush(b"hello-http: a line on stdout\n");
                let _ = wasi::cli::stderr::get_stderr()
                    .blocking_write_and_flush(b"hello-http: a line on stderr\n");
                respond(response_out, 200, "text/plain", b"logged\n");
            }
            (Method::Get, "/fetch") => {
                let url = query.strip_prefix("url=").unwrap_or_default();
                match fetch(url) {
                    Ok((status, body)) => {
                        let mut text = format!("status: {status}\n").into_bytes();
                        text.extend_from_slice(&body);
                        respond(response_out, 200, "text/plain", &text);
                    }
                    Err(e) => respond(response_out, 502, "text/plain", format!("error: {e}\n").as_bytes()),
                }
            }
            (Method::Get, "/sleep") => {
                let ms: u64 = query
                    .strip_prefix("ms=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(100);
                wasi::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
                respond(response_out, 200, "text/plain", format!("slept {ms} ms\n").as_bytes());
            }
            (Method::Get, "/spin") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            (Method::Get, "/alloc") => {
                let mb: usize = query
                    .strip_prefix("mb=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                for _ in 0..mb {
                    chunks.push(vec![1u8; 1 << 20]);
                }
                let total: usize = chunks.iter().map(|c| c.len()).sum();
                respond(
                    response_out,
                    200,
                    "text/plain",
                    format!("allocated {} MiB\n", total >> 20).as_bytes(),
                );
            }
            (Method::Get, "/trap") => panic!("trap requested"),
            _ => respond(response_out, 404, "text/plain", b"not found\n"),
        }
    }
}

fn respond(out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        ("content-length".to_string(), body.len().to_string().into_bytes()),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("body once");
    ResponseOutparam::set(out, Ok(response));
    {
        let stream = outgoing.write().expect("stream once");
        // blocking_write_and_flush takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                // The client went away mid-response (a closed connection): there is no one
                // to answer, and that is not the guest's fault, so end quietly instead of
                // trapping. The body is dropped unfinished, which tells the host it is
                // incomplete.
                return;
            }
        }
    }
    // Fails only when the response was already abandoned (the client went away).
    let _ = OutgoingBody::finish(outgoing, None);
}

fn header(request: &IncomingRequest, name: &str) -> Option<String> {
    request
        .headers()
        .get(&name.to_string())
        .first()
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn read_body(request: IncomingRequest) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(body) = request.consume() else {
        return out;
    };
    {
        let stream = body.stream().expect("stream once");
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            out.extend_from_slice(&chunk);
        }
    }
    IncomingBody::finish(body);
    out
}

fn fetch(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(format!("unsupported url {url:?}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&scheme)).map_err(|()| "bad scheme")?;
    request.set_authority(Some(authority)).map_err(|()| "bad authority")?;
    request.set_path_with_query(Some(path)).map_err(|()| "bad path")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    let response = loop {
        if let Some(result) = future.get() {
            break result
                .map_err(|()| "response taken twice".to_string())?
                .map_err(|e| format!("{e:?}"))?;
        }
        future.subscribe().block();
    };
    let status = response.status();
    let body = response.consume().map_err(|()| "body taken twice")?;
    let mut bytes = Vec::new();
    {
        let stream = body.stream().map_err(|()| "stream taken twice")?;
        while let Ok(chunk) = stream.blocking_read(64 * 1024) {
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok((status, bytes))
}

fn sum(text: &str) -> Result<(f64, usize), String> {
    let inner = text
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or("expected a JSON array of numbers")?;
    let mut total = 0.0;
    let mut count = 0;
    for item in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        total += item
            .parse::<f64>()
            .map_err(|_| format!("not a number: {item}"))?;
        count += 1;
    }
    Ok((total, count))
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

fn escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}
