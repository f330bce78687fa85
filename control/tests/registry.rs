//! The control plane's OCI registry, served in-process on a loopback port: the distribution API
//! spoken by hand, and skopeo (a standard client) copying an OCI layout in and out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use flotilla_control::registry::{self, Registry};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Every request and every child process gets this long at most.
const TIMEOUT: Duration = Duration::from_secs(60);

struct Server {
    base: String,
    registry: Registry,
    dir: tempfile::TempDir,
    client: Client<HttpConnector, Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    fn error_code(&self) -> String {
        let json: Value = serde_json::from_slice(&self.body).unwrap_or_default();
        json["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("registry")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let app: axum::Router = registry::router(registry.clone());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        base,
        registry,
        dir,
        client: Client::builder(TokioExecutor::new()).build_http(),
        task,
    }
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let uri = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("http://{}{path}", self.base)
        };
        let mut request = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .expect("request timed out")
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Uploads a blob monolithically; returns its digest.
    async fn blob(&self, name: &str, content: &[u8]) -> String {
        let digest = digest_of(content);
        let reply = self
            .send(
                Method::POST,
                &format!("/v2/{name}/blobs/uploads/?digest={digest}"),
                &[],
                content,
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        digest
    }

    fn stored_blobs(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.dir.path().join("registry/blobs/sha256"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
        names.sort();
        names
    }
}

fn digest_of(content: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content)))
}

fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1},
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn the_base_endpoint_announces_the_distribution_api() {
    let server = start().await;
    let reply = server.send(Method::GET, "/v2/", &[], b"").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("docker-distribution-api-version"),
        "registry/2.0"
    );
}

#[tokio::test]
async fn monolithic_and_chunked_uploads_store_blobs_by_digest() {
    let server = start().await;
    let digest = server.blob("demo/app", b"hello blob").await;
    let head = server
        .send(
            Method::HEAD,
            &format!("/v2/demo/app/blobs/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), "10");
    assert_eq!(head.header("docker-content-digest"), digest);
    let get = server
        .send(
            Method::GET,
            &format!("/v2/demo/app/blobs/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(&get.body[..], b"hello blob");
    let range = server
        .send(
            Method::GET,
            &format!("/v2/demo/app/blobs/{digest}"),
            &[("range", "bytes=6-9")],
            b"",
        )
        .await;
    assert_eq!(
        (range.status, &range.body[..]),
        (StatusCode::PARTIAL_CONTENT, &b"blob"[..])
    );

    // Chunked: POST, two PATCHes with Content-Range, status, PUT with the digest.
    let start = server
        .send(Method::POST, "/v2/demo/app/blobs/uploads/", &[], b"")
        .await;
    assert_eq!(start.status, StatusCode::ACCEPTED);
    let location = start.header("location");
    assert!(
        location.starts_with("/v2/demo/app/blobs/uploads/"),
        "{location}"
    );
    let first = server
        .send(
            Method::PATCH,
            &location,
            &[
                ("content-range", "0-4"),
                ("content-type", "application/octet-stream"),
            ],
            b"chunk",
        )
        .await;
    assert_eq!(
        (first.status, first.header("range")),
        (StatusCode::ACCEPTED, "0-4".to_string())
    );
    let gap = server
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "7-9")],
            b"xyz",
        )
        .await;
    assert_eq!(gap.status, StatusCode::RANGE_NOT_SATISFIABLE);
    let second = server
        .send(
            Method::PATCH,
            &location,
            &[("content-range", "5-9")],
            b"ed!!!",
        )
        .await;
    assert_eq!(second.header("range"), "0-9");
    let status = server.send(Method::GET, &location, &[], b"").await;
    assert_eq!(
        (status.status, status.header("range")),
        (StatusCode::NO_CONTENT, "0-9".to_string())
    );
    let digest = digest_of(b"chunked!!!");
    let done = server
        .send(
            Method::PUT,
            &format!("{location}?digest={digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(done.status, StatusCode::CREATED);
    assert_eq!(done.header("docker-content-digest"), digest);
    let get = server
        .send(
            Method::GET,
            &format!("/v2/demo/app/blobs/{digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(&get.body[..], b"chunked!!!");
    // The session is over.
    let again = server.send(Method::GET, &location, &[], b"").await;
    assert_eq!(
        (again.status, again.error_code()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN".into())
    );
}

#[tokio::test]
async fn a_digest_mismatch_on_upload_is_rejected_and_nothing_is_stored() {
    let server = start().await;
    let claimed = digest_of(b"what the client claims");
    let reply = server
        .send(
            Method::POST,
            &format!("/v2/demo/app/blobs/uploads/?digest={claimed}"),
            &[],
            b"something else",
        )
        .await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID".into())
    );
    let head = server
        .send(
            Method::HEAD,
            &format!("/v2/demo/app/blobs/{claimed}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND);

    let start = server
        .send(Method::POST, "/v2/demo/app/blobs/uploads/", &[], b"")
        .await;
    let location = start.header("location");
    let reply = server
        .send(
            Method::PUT,
            &format!("{location}?digest={claimed}"),
            &[],
            b"other bytes",
        )
        .await;
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    assert!(
        server.stored_blobs().is_empty(),
        "stored: {:?}",
        server.stored_blobs()
    );
    let uploads = std::fs::read_dir(server.dir.path().join("registry/uploads"))
        .unwrap()
        .count();
    assert_eq!(uploads, 0, "the failed upload's bytes are deleted");

    let bad = server
        .send(
            Method::POST,
            "/v2/demo/app/blobs/uploads/?digest=sha256:nothex",
            &[],
            b"x",
        )
        .await;
    assert_eq!(bad.error_code(), "DIGEST_INVALID");
}

#[tokio::test]
async fn manifests_are_served_by_tag_and_by_digest_and_tags_are_listed() {
    let server = start().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = b"not really a tar";
    let config_digest = server.blob("demo/app", config).await;
    let layer_digest = server.blob("demo/app", layer).await;
    let manifest = image_manifest(
        (&config_digest, config.len()),
        &[(&layer_digest, layer.len())],
    );
    let manifest_digest = digest_of(&manifest);
    let media_type = "application/vnd.oci.image.manifest.v1+json";

    let put = server
        .send(
            Method::PUT,
            "/v2/demo/app/manifests/v1",
            &[("content-type", media_type)],
            &manifest,
        )
        .await;
    assert_eq!(
        put.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&put.body)
    );
    assert_eq!(put.header("docker-content-digest"), manifest_digest);
    let by_digest = server
        .send(
            Method::PUT,
            &format!("/v2/demo/app/manifests/{manifest_digest}"),
            &[("content-type", media_type)],
            &manifest,
        )
        .await;
    assert_eq!(by_digest.status, StatusCode::CREATED);
    server
        .send(
            Method::PUT,
            "/v2/demo/app/manifests/v2",
            &[("content-type", media_type)],
            &manifest,
        )
        .await;

    let get = server
        .send(Method::GET, "/v2/demo/app/manifests/v1", &[], b"")
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.header("content-type"), media_type);
    assert_eq!(get.header("docker-content-digest"), manifest_digest);
    assert_eq!(&get.body[..], &manifest[..]);
    let head = server
        .send(
            Method::HEAD,
            &format!("/v2/demo/app/manifests/{manifest_digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(
        (head.status, head.header("content-length")),
        (StatusCode::OK, manifest.len().to_string())
    );

    let tags = server
        .send(Method::GET, "/v2/demo/app/tags/list", &[], b"")
        .await;
    let tags: Value = serde_json::from_slice(&tags.body).unwrap();
    assert_eq!(tags, json!({"name": "demo/app", "tags": ["v1", "v2"]}));
    let page = server
        .send(Method::GET, "/v2/demo/app/tags/list?n=1", &[], b"")
        .await;
    assert!(
        page.header("link").contains("last=v1"),
        "{}",
        page.header("link")
    );
    let catalog = server.send(Method::GET, "/v2/_catalog", &[], b"").await;
    let catalog: Value = serde_json::from_slice(&catalog.body).unwrap();
    assert_eq!(catalog, json!({"repositories": ["demo/app"]}));
    let listed = server.registry.catalog().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].tags.clone()),
        ("demo/app", vec!["v1".to_string(), "v2".to_string()])
    );

    // Deleting a tag leaves the other; deleting by digest removes the manifest and its tags.
    let delete = server
        .send(Method::DELETE, "/v2/demo/app/manifests/v1", &[], b"")
        .await;
    assert_eq!(delete.status, StatusCode::ACCEPTED);
    let gone = server
        .send(Method::GET, "/v2/demo/app/manifests/v1", &[], b"")
        .await;
    assert_eq!(
        (gone.status, gone.error_code()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".into())
    );
    assert_eq!(
        server
            .send(Method::GET, "/v2/demo/app/manifests/v2", &[], b"")
            .await
            .status,
        StatusCode::OK
    );
    let delete = server
        .send(
            Method::DELETE,
            &format!("/v2/demo/app/manifests/{manifest_digest}"),
            &[],
            b"",
        )
        .await;
    assert_eq!(delete.status, StatusCode::ACCEPTED);
    let gone = server
        .send(Method::GET, "/v2/demo/app/manifests/v2", &[], b"")
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_manifests_and_names_get_spec_errors() {
    let server = start().await;
    let missing = digest_of(b"never uploaded");
    let manifest = image_manifest((&missing, 1), &[]);
    let reply = server
        .send(Method::PUT, "/v2/demo/app/manifests/v1", &[], &manifest)
        .await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let reply = server
        .send(Method::PUT, "/v2/demo/app/manifests/v1", &[], b"{not json")
        .await;
    assert_eq!(reply.error_code(), "MANIFEST_INVALID");
    let reply = server
        .send(
            Method::PUT,
            &format!("/v2/demo/app/manifests/{missing}"),
            &[],
            br#"{"schemaVersion":2,"config":{}}"#,
        )
        .await;
    assert_eq!(reply.error_code(), "DIGEST_INVALID");
    let reply = server
        .send(Method::GET, "/v2/nothing/here/manifests/v1", &[], b"")
        .await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN".into())
    );
    let reply = server
        .send(Method::GET, "/v2/Bad/manifests/v1", &[], b"")
        .await;
    assert_eq!(reply.error_code(), "NAME_INVALID");
    let reply = server
        .send(Method::GET, "/v2/a/../b/manifests/v1", &[], b"")
        .await;
    assert_ne!(reply.status, StatusCode::OK);
    let reply = server
        .send(Method::GET, "/v2/demo/tags/list", &[], b"")
        .await;
    assert_eq!(reply.error_code(), "NAME_UNKNOWN");
    let reply = server
        .send(Method::GET, &format!("/v2/demo/blobs/{missing}"), &[], b"")
        .await;
    assert_eq!(
        (reply.status, reply.error_code()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN".into())
    );
}

#[tokio::test]
async fn blobs_survive_a_reopen_and_half_uploads_do_not() {
    let server = start().await;
    let digest = server.blob("demo/app", b"durable").await;
    let start = server
        .send(Method::POST, "/v2/demo/app/blobs/uploads/", &[], b"")
        .await;
    server
        .send(Method::PATCH, &start.header("location"), &[], b"half")
        .await;
    let reopened = Registry::open(&server.dir.path().join("registry")).unwrap();
    drop(reopened);
    assert_eq!(
        server.stored_blobs(),
        vec![digest.trim_start_matches("sha256:").to_string()]
    );
    assert_eq!(
        std::fs::read_dir(server.dir.path().join("registry/uploads"))
            .unwrap()
            .count(),
        0
    );
}

/// A ustar archive holding one regular file.
fn tar_with_one_file(name: &str, content: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    header[100..108].copy_from_slice(b"0000644\0");
    header[108..116].copy_from_slice(b"0000000\0");
    header[116..124].copy_from_slice(b"0000000\0");
    header[124..136].copy_from_slice(format!("{:011o}\0", content.len()).as_bytes());
    header[136..148].copy_from_slice(b"00000000000\0");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut archive = header.to_vec();
    archive.extend_from_slice(content);
    archive.resize(archive.len().div_ceil(512) * 512 + 1024, 0);
    archive
}

/// Writes an OCI image layout with one image (a tar layer) tagged `tag`; returns its manifest
/// digest.
fn write_layout(dir: &Path, tag: &str) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |content: &[u8]| {
        let digest = digest_of(content);
        std::fs::write(blobs.join(digest.trim_start_matches("sha256:")), content).unwrap();
        (digest, content.len())
    };
    let layer = put(&tar_with_one_file("hello.txt", b"hello"));
    let config = put(&serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer.0]},
        "config": {"Cmd": ["/bin/true"]}
    }))
    .unwrap());
    let manifest = put(&image_manifest(
        (&config.0, config.1),
        &[(&layer.0, layer.1)],
    ));
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest.0, "size": manifest.1,
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    manifest.0
}

async fn skopeo(args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new("skopeo");
    command
        .arg("--insecure-policy")
        .args(args)
        .kill_on_drop(true);
    let output = tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("skopeo timed out")
        .expect("skopeo is not installed (it is listed in .ci/apt-packages.txt)");
    assert!(
        output.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_an_oci_layout_in_and_out() {
    let server = start().await;
    let work = tempfile::tempdir().unwrap();
    let source: PathBuf = work.path().join("source");
    let manifest_digest = write_layout(&source, "v1");
    let remote = format!("docker://{}/demo/app:v1", server.base);

    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", source.display()),
        &remote,
    ])
    .await;
    let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &remote]).await;
    let raw = raw.stdout.strip_suffix(b"\n").unwrap_or(&raw.stdout);
    assert_eq!(
        digest_of(raw),
        manifest_digest,
        "the manifest is stored byte for byte: {}",
        String::from_utf8_lossy(raw)
    );

    let out = work.path().join("out");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-oci-accept-uncompressed-layers",
        "--src-tls-verify=false",
        &remote,
        &format!("oci:{}:v1", out.display()),
    ])
    .await;
    for entry in std::fs::read_dir(source.join("blobs/sha256")).unwrap() {
        let name = entry.unwrap().file_name();
        let original = std::fs::read(source.join("blobs/sha256").join(&name)).unwrap();
        let copied = std::fs::read(out.join("blobs/sha256").join(&name)).unwrap();
        assert_eq!(original, copied, "blob {name:?}");
    }
    let tags = skopeo(&[
        "list-tags",
        "--tls-verify=false",
        &format!("docker://{}/demo/app", server.base),
    ])
    .await;
    let tags: Value = serde_json::from_slice(&tags.stdout).unwrap();
    assert_eq!(tags["Tags"], json!(["v1"]));
}
