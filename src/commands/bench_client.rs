//! A load generator's HTTP client: one keep-alive HTTP/1.1 connection, requests written from
//! prepared bytes. The benchmarks use it where the client's own cost would otherwise be part of
//! what they measure on the same two cores (reqwest's pool, URL parsing and JSON building cost
//! about as much CPU per create as half the API server's handler).

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;

/// One connection to the API server.
pub struct BenchClient {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
}

impl BenchClient {
    /// Connects to `base` (`http://HOST:PORT`).
    pub async fn connect(base: &str) -> anyhow::Result<BenchClient> {
        let authority = base
            .strip_prefix("http://")
            .with_context(|| format!("{base}: the benchmark client speaks plain http:// only"))?
            .trim_end_matches('/')
            .to_string();
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

/// Creates pods through one [`BenchClient`] and fails on anything but `201 Created`.
pub async fn create_pod(
    client: &mut BenchClient,
    path: &str,
    template: &PodTemplate,
    name: &str,
) -> anyhow::Result<()> {
    let (status, body) = client.post(path, template.body(name)).await?;
    if status != 201 {
        bail!(
            "create {name}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
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
}
