//! Shared helpers: engines sized for tests, fixtures and samples, and a small
//! keep-alive HTTP client.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use flotilla_wasm::{Artifact, Engine, EngineConfig};
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

/// Every wait in these tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// An engine with a small instance pool (tests run many engines at once).
pub fn engine() -> Engine {
    Engine::new(test_config()).expect("engine")
}

pub fn test_config() -> EngineConfig {
    EngineConfig {
        max_instances: 64,
        max_memory_bytes: 1 << 30,
        ..EngineConfig::default()
    }
}

/// The repository's `samples/` folder.
pub fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../samples")
}

/// A committed sample artifact.
pub fn sample(path: &str) -> PathBuf {
    samples().join(path)
}

/// A fixture file.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Compiles a WAT fixture to bytes.
pub fn wat_fixture(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    wat(&text)
}

/// Compiles WAT text to a binary.
pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).expect("valid wat")
}

/// Loads a WAT fixture.
pub fn load_wat(engine: &Engine, name: &str) -> Artifact {
    engine.load_bytes(&wat_fixture(name)).expect("loads")
}

/// Waits for `fut`, failing the test after [`TIMEOUT`].
pub async fn within<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, fut).await.expect("timed out")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn failure(&self) -> Option<&str> {
        self.headers
            .get("x-flotilla-failure")
            .and_then(|v| v.to_str().ok())
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: std::net::SocketAddr,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr) -> Client {
        let stream = within(TcpStream::connect(addr)).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("handshake");
        tokio::spawn(connection);
        Client { sender, addr }
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, Bytes::new(), None).await
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Bytes,
        content_type: Option<&str>,
    ) -> Reply {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let request = request.body(Full::new(body)).unwrap();
        within(async {
            self.sender.ready().await.expect("connection ready");
            let response = self.sender.send_request(request).await.expect("response");
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            Reply {
                status,
                headers,
                body,
            }
        })
        .await
    }
}

/// One request on a fresh connection.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> Reply {
    Client::connect(addr).await.get(path).await
}
