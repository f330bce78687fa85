//! A load generator's HTTP client: one keep-alive HTTP/1.1 connection, requests written from
//! prepared bytes. The benchmarks use it where the client's own cost would otherwise be part of
//! what they measure on the same two cores (reqwest's pool, URL parsing and JSON building cost
//! about as much CPU per create as half the API server's handler).

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

/// The `HOST:PORT` of `base` (`http://HOST:PORT`).
fn authority(base: &str) -> anyhow::Result<String> {
    Ok(base
        .strip_prefix("http://")
        .with_context(|| format!("{base}: the benchmark client speaks plain http:// only"))?
        .trim_end_matches('/')
        .to_string())
}

/// One connection to the API server.
pub struct BenchClient {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl BenchClient {
    /// Connects to `base` (`http://HOST:PORT`).
    pub async fn connect(base: &str) -> anyhow::Result<BenchClient> {
        let authority = authority(base)?;
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("connect to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(BenchClient { sender, authority })
    }

    /// POSTs a JSON body to `path`; returns the status and the whole response body.
    pub async fn post(&mut self, path: &str, body: Bytes) -> anyhow::Result<(u16, Bytes)> {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        // Read the body to the end, so the connection is ready for the next request.
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// A pod's JSON with its name left open: [`PodTemplate::body`] fills it in by concatenation,
/// with no JSON value built per request.
pub struct PodTemplate {
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl PodTemplate {
    /// The template of `pod` (a JSON object whose `metadata.name` is [`PodTemplate::NAME`]).
    pub fn new(pod: &serde_json::Value) -> anyhow::Result<PodTemplate> {
        let text = serde_json::to_vec(pod)?;
        let mark = format!("\"{}\"", Self::NAME);
        let at = text
            .windows(mark.len())
            .position(|w| w == mark.as_bytes())
            .context("the pod template has no name placeholder")?;
        Ok(PodTemplate {
            head: text[..at + 1].to_vec(),
            tail: text[at + mark.len() - 1..].to_vec(),
        })
    }

    /// The placeholder for the name.
    pub const NAME: &str = "@name@";

    /// The body for a pod named `name` (a DNS-1123 name: nothing to escape).
    pub fn body(&self, name: &str) -> Bytes {
        let mut out = Vec::with_capacity(self.head.len() + name.len() + self.tail.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&self.tail);
        Bytes::from(out)
    }
}

/// One connection to the API server driven by plain blocking socket calls on the caller's own
/// thread: a request is one `write`, its response one or two `read`s. For latency figures, where
/// an async client's connection task would run on the server's own runtime workers (the
/// benchmarks start the server in-process) and add hand-offs between them that a client in
/// another process does not cause.
pub struct BlockingClient {
    stream: std::net::TcpStream,
    authority: String,
    buf: Vec<u8>,
}

impl BlockingClient {
    /// Connects to `base` (`http://HOST:PORT`).
    pub fn connect(base: &str) -> anyhow::Result<BlockingClient> {
        let authority = authority(base)?;
        let stream = std::net::TcpStream::connect(&authority)
            .with_context(|| format!("connect to {authority}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        Ok(BlockingClient {
            stream,
            authority,
            buf: Vec::with_capacity(16 * 1024),
        })
    }

    /// POSTs a JSON body to `path`; returns the status and the whole response body (which
    /// must come with a `Content-Length`, as the API server's answers to writes do).
    pub fn post(&mut self, path: &str, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        use std::io::{Read, Write};
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.authority,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        self.stream.write_all(&request)?;
        self.buf.clear();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            self.buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head) = response.parse(&self.buf)? else {
                continue;
            };
            let status = response.code.unwrap_or(0);
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .context("a response without Content-Length")?;
            while self.buf.len() < head + length {
                let n = self.stream.read(&mut chunk)?;
                if n == 0 {
                    bail!("the server closed the connection");
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
            return Ok((status, self.buf[head..head + length].to_vec()));
        }
    }
}

/// Creates a pod through a [`BlockingClient`] and fails on anything but `201 Created`.
pub fn create_pod_blocking(
    client: &mut BlockingClient,
    path: &str,
    template: &PodTemplate,
    name: &str,
) -> anyhow::Result<()> {
    let (status, body) = client.post(path, &template.body(name))?;
    created(name, status, &body)
}

/// `Ok` for `201 Created`; otherwise the error, with the server's answer.
fn created(name: &str, status: u16, body: &[u8]) -> anyhow::Result<()> {
    if status != 201 {
        bail!(
            "create {name}: HTTP {status}: {}",
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

/// Creates pods through one [`BenchClient`] and fails on anything but `201 Created`.
pub async fn create_pod(
    client: &mut BenchClient,
    path: &str,
    template: &PodTemplate,
    name: &str,
) -> anyhow::Result<()> {
    let (status, body) = client.post(path, template.body(name)).await?;
    created(name, status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_puts_the_name_where_the_placeholder_was() {
        let pod = serde_json::json!({"metadata": {"name": PodTemplate::NAME, "namespace": "b"}});
        let t = PodTemplate::new(&pod).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&t.body("p-7")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"metadata": {"name": "p-7", "namespace": "b"}})
        );
    }

    #[test]
    fn the_blocking_client_reads_a_response_that_comes_in_pieces() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"{}") {
                let n = conn.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 11\r\n\r\n{\"a\"")
                .unwrap();
            conn.flush().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            conn.write_all(b":\"bcd\"}").unwrap();
            String::from_utf8(seen).unwrap()
        });
        let mut client = BlockingClient::connect(&base).unwrap();
        let (status, body) = client.post("/api/v1/namespaces/b/pods", b"{}").unwrap();
        assert_eq!(status, 201);
        assert_eq!(body, b"{\"a\":\"bcd\"}");
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /api/v1/namespaces/b/pods HTTP/1.1\r\n"));
        assert!(request.contains("Content-Length: 2\r\n"));
    }
}
