//! The node's image cache against a real third-party registry (Debian's `docker-registry`,
//! started here on a loopback port, fed by skopeo and by `flotilla image push`'s library) and
//! against a small scripted registry for what a well-behaved one cannot do (corrupt blobs,
//! counting requests, demanding credentials).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use flotilla_node::image::push::{self, NoProgress, PushOptions};
use flotilla_node::image::{ImageCache, ImageContent, ImageError, PullPolicy, PullSecrets};
use oci_client::Reference;
use serde_json::json;
use sha2::{Digest as _, Sha256};

/// Every wait (a registry starting, skopeo, a pull) gets this long at most.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A minimal valid core module: `(module)`.
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn digest_of(content: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(content)))
}

/// Debian's `docker-registry` (distribution 2.8) on a free loopback port; stopped on drop.
struct DockerRegistry {
    host: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl DockerRegistry {
    async fn start() -> DockerRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let host = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = tokio::process::Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("docker-registry is not installed (it is listed in .ci/apt-packages.txt)");
        let ready = async {
            while tokio::net::TcpStream::connect(&host).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(TIMEOUT, ready)
            .await
            .expect("docker-registry did not start listening");
        DockerRegistry {
            host,
            child,
            _dir: dir,
        }
    }
}

impl Drop for DockerRegistry {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn skopeo(args: &[&str]) {
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
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A gzipped tar layer holding the given files.
fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o755);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *content).unwrap();
    }
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&builder.into_inner().unwrap()).unwrap();
    encoder.finish().unwrap()
}

/// An image: config and layers with their media types.
struct Image {
    config: (String, Vec<u8>),
    layers: Vec<(String, Vec<u8>)>,
}

impl Image {
    fn manifest(&self) -> Vec<u8> {
        let descriptor = |media_type: &str, content: &[u8]| json!({"mediaType": media_type, "digest": digest_of(content), "size": content.len()});
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor(&self.config.0, &self.config.1),
            "layers": self.layers.iter().map(|(t, c)| descriptor(t, c)).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn wasm(config_type: &str, layer_type: &str, module: &[u8]) -> Image {
        Image {
            config: (config_type.into(), b"{}".to_vec()),
            layers: vec![(layer_type.into(), module.to_vec())],
        }
    }

    fn container(config: serde_json::Value, files: &[(&str, &[u8])]) -> Image {
        Image {
            config: (
                "application/vnd.oci.image.config.v1+json".into(),
                serde_json::to_vec(&config).unwrap(),
            ),
            layers: vec![(
                "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                tar_gz(files),
            )],
        }
    }

    /// Writes it as an OCI image layout tagged `tag`.
    fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let put = |content: &[u8]| {
            std::fs::write(blobs.join(&digest_of(content)[7..]), content).unwrap();
        };
        put(&self.config.1);
        self.layers.iter().for_each(|(_, c)| put(c));
        let manifest = self.manifest();
        put(&manifest);
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let index = json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest_of(&manifest), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Pushes it with `oci-client` to `reference` on a plain-HTTP registry.
    async fn push(&self, reference: &str) {
        let reference: Reference = reference.parse().unwrap();
        let client = oci_client::Client::new(oci_client::client::ClientConfig {
            protocol: oci_client::client::ClientProtocol::Http,
            ..Default::default()
        });
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        client
            .auth(&reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        for content in std::iter::once(&self.config.1).chain(self.layers.iter().map(|(_, c)| c)) {
            client
                .push_blob(&reference, content.clone(), &digest_of(content))
                .await
                .unwrap();
        }
        client
            .push_manifest_raw(
                &reference,
                self.manifest(),
                "application/vnd.oci.image.manifest.v1+json"
                    .parse()
                    .unwrap(),
            )
            .await
            .unwrap();
    }
}

async fn pull(
    cache: &ImageCache,
    reference: &str,
) -> Result<flotilla_node::image::PulledImage, ImageError> {
    tokio::time::timeout(
        TIMEOUT,
        cache.pull(reference, PullPolicy::Always, &PullSecrets::default()),
    )
    .await
    .expect("pull timed out")
}

fn wasm_path(image: &flotilla_node::image::PulledImage) -> PathBuf {
    match &image.content {
        ImageContent::Wasm { path, .. } => path.clone(),
        other => panic!("expected a wasm image, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_to_a_third_party_registry_and_the_cache_pulls_it() {
    let registry = DockerRegistry::start().await;
    let work = tempfile::tempdir().unwrap();
    let module = b"\0asm\x01\0\0\0skopeo-pushed".to_vec();
    let wasm = Image::wasm(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        &module,
    );
    wasm.write_layout(&work.path().join("wasm"), "v1");
    let container = Image::container(
        json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]}}),
        &[("bin/sh", b"#!")],
    );
    container.write_layout(&work.path().join("container"), "v1");
    for name in ["wasm", "container"] {
        let source = format!("oci:{}:v1", work.path().join(name).display());
        let target = format!("docker://{}/demo/{name}:v1", registry.host);
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &source,
            &target,
        ])
        .await;
    }

    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let pulled = pull(&cache, &format!("{}/demo/wasm:v1", registry.host))
        .await
        .unwrap();
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), module);
    assert_eq!(pulled.digest, digest_of(&wasm.manifest()));
    assert!(pulled.fetched);

    let pulled = pull(&cache, &format!("{}/demo/container:v1", registry.host))
        .await
        .unwrap();
    let ImageContent::Container { layers } = &pulled.content else {
        panic!("expected a container image, got {:?}", pulled.content);
    };
    assert_eq!(layers.len(), 1);
    assert_eq!(
        std::fs::read(&layers[0].path).unwrap(),
        container.layers[0].1
    );
    assert_eq!(pulled.config.unwrap()["config"]["Cmd"][0], "/bin/sh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_push_wraps_a_wasm_file_and_any_registry_serves_it_back() {
    let registry = DockerRegistry::start().await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("app.wasm");
    // A component header (version 0x0d, layer 1) so the config says wasip2.
    let mut module = b"\0asm\x0d\0\x01\0".to_vec();
    module.extend(std::iter::repeat_n(7u8, 3 << 20));
    std::fs::write(&file, &module).unwrap();

    // With the registry as the default, the reference needs no host.
    let options = PushOptions {
        default_registry: Some(format!("http://{}", registry.host)),
        ..Default::default()
    };
    let pushed = push::push_wasm(&file, "team/app:v1", &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(pushed.reference, format!("{}/team/app:v1", registry.host));
    assert!(
        pushed.uploaded > module.len() as u64,
        "module and config are uploaded"
    );
    let again = push::push_wasm(&file, "team/app:v2", &options, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        (again.uploaded, again.skipped, &again.digest),
        (0, 2, &pushed.digest)
    );

    let cache = ImageCache::new(
        &work.path().join("cache"),
        Some(format!("http://{}", registry.host)),
    )
    .unwrap();
    let pulled = pull(&cache, "team/app:v1").await.unwrap();
    assert_eq!(pulled.digest, pushed.digest);
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), module);
    let ImageContent::Wasm {
        media_type, digest, ..
    } = &pulled.content
    else {
        unreachable!()
    };
    assert_eq!(
        (media_type.as_str(), digest.clone()),
        ("application/wasm", digest_of(&module))
    );
    let by_digest = pull(&cache, &format!("team/app@{}", pushed.digest))
        .await
        .unwrap();
    assert_eq!(
        wasm_path(&by_digest),
        wasm_path(&pulled),
        "blobs are shared between references"
    );

    let listed = push::list(&format!("http://{}", registry.host), &options)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].tags.len()),
        ("team/app", 2)
    );

    // A directory that is not a layout, and a file that is not wasm, are refused clearly.
    let err = push::push_layout(work.path(), "x:1", &options, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
    std::fs::write(work.path().join("bad.wasm"), b"MZ not wasm").unwrap();
    let err = push::push_wasm(&work.path().join("bad.wasm"), "x:1", &options, &NoProgress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not a WebAssembly file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wasm_media_type_convention_yields_the_module() {
    let registry = DockerRegistry::start().await;
    let work = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let spin_lock = b"{\"spin_lock_version\":1}".to_vec();
    let spin = Image {
        config: (
            "application/vnd.fermyon.spin.application.v1+config".into(),
            spin_lock.clone(),
        ),
        layers: vec![
            (
                "application/vnd.fermyon.spin.application.v1+config".into(),
                spin_lock,
            ),
            (
                "application/vnd.wasm.content.layer.v1+wasm".into(),
                b"\0asm\x01\0\0\0spin".to_vec(),
            ),
            (
                "application/vnd.wasm.content.layer.v1+wasm".into(),
                b"\0asm\x01\0\0\0second".to_vec(),
            ),
        ],
    };
    let rootfs = Image::container(
        json!({"architecture": "wasm", "os": "wasip1", "config": {"Entrypoint": ["app.wasm"], "WorkingDir": "/srv"}}),
        &[
            ("srv/app.wasm", b"\0asm\x01\0\0\0rootfs"),
            ("srv/readme", b"hi"),
        ],
    );
    let cases: Vec<(&str, Image, &[u8])> = vec![
        (
            "cncf",
            Image::wasm(
                "application/vnd.wasm.config.v0+json",
                "application/wasm",
                b"\0asm\x01\0\0\0cncf",
            ),
            b"\0asm\x01\0\0\0cncf",
        ),
        (
            "content-layer",
            Image::wasm(
                "application/vnd.wasm.config.v1+json",
                "application/vnd.wasm.content.layer.v1+wasm",
                b"\0asm\x01\0\0\0v1",
            ),
            b"\0asm\x01\0\0\0v1",
        ),
        (
            "bytecodealliance",
            Image::wasm(
                "application/vnd.wasm.config.v0+json",
                "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm",
                b"\0asm\x0d\0\x01\0bca",
            ),
            b"\0asm\x0d\0\x01\0bca",
        ),
        ("spin", spin, b"\0asm\x01\0\0\0spin"),
        ("rootfs", rootfs, b"\0asm\x01\0\0\0rootfs"),
    ];
    for (name, image, module) in cases {
        let reference = format!("{}/conventions/{name}:v1", registry.host);
        image.push(&reference).await;
        let pulled = pull(&cache, &reference)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), module, "{name}");
    }

    let helm = Image {
        config: (
            "application/vnd.cncf.helm.config.v1+json".into(),
            b"{}".to_vec(),
        ),
        layers: vec![(
            "application/vnd.cncf.helm.chart.content.v1.tar+gzip".into(),
            tar_gz(&[]),
        )],
    };
    let reference = format!("{}/conventions/helm:v1", registry.host);
    helm.push(&reference).await;
    let err = pull(&cache, &reference).await.unwrap_err();
    assert!(
        matches!(err, ImageError::UnknownMediaType { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("application/vnd.cncf.helm.config.v1+json"),
        "{err}"
    );

    let no_wasm = Image::container(
        json!({"architecture": "wasm", "os": "wasip1", "config": {"Entrypoint": ["/missing.wasm"]}}),
        &[("other.wasm", EMPTY_MODULE)],
    );
    let reference = format!("{}/conventions/no-wasm:v1", registry.host);
    no_wasm.push(&reference).await;
    let err = pull(&cache, &reference).await.unwrap_err();
    assert!(matches!(err, ImageError::WasmNotInRootfs { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_tags_unreachable_registries_and_never_give_distinct_errors() {
    let registry = DockerRegistry::start().await;
    let work = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let image = Image::wasm(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        EMPTY_MODULE,
    );
    image.push(&format!("{}/demo/app:v1", registry.host)).await;

    let err = pull(&cache, &format!("{}/demo/app:v9", registry.host))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::TagNotFound { ref tag, .. } if tag == "v9"),
        "{err:?}"
    );
    assert!(err.to_string().contains("demo/app:v9"), "{err}");
    let err = pull(&cache, &format!("{}/nothing/here:v1", registry.host))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::TagNotFound { .. }), "{err:?}");

    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = pull(&cache, &format!("127.0.0.1:{closed}/demo/app:v1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().contains("unreachable"), "{err}");

    let reference = format!("{}/demo/app:v1", registry.host);
    let err = cache
        .pull(&reference, PullPolicy::Never, &PullSecrets::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NotPresent { .. }), "{err:?}");
    pull(&cache, &reference).await.unwrap();
    let cached = cache
        .pull(&reference, PullPolicy::Never, &PullSecrets::default())
        .await
        .unwrap();
    assert!(!cached.fetched);
}

/// A served object: content type and bytes.
type Object = (String, Vec<u8>);

/// A scripted registry: serves fixed content, counts requests, can demand Basic credentials.
#[derive(Clone, Default)]
struct Scripted {
    objects: Arc<Mutex<HashMap<String, Object>>>,
    hits: Arc<Mutex<Vec<String>>>,
    basic: Option<String>,
}

impl Scripted {
    fn serve_image(&self, name: &str, tag: &str, image: &Image) {
        let mut objects = self.objects.lock().unwrap();
        let manifest = image.manifest();
        for content in std::iter::once(&image.config.1).chain(image.layers.iter().map(|(_, c)| c)) {
            objects.insert(
                format!("/v2/{name}/blobs/{}", digest_of(content)),
                ("application/octet-stream".into(), content.clone()),
            );
        }
        let manifest_type = "application/vnd.oci.image.manifest.v1+json".to_string();
        objects.insert(
            format!("/v2/{name}/manifests/{tag}"),
            (manifest_type.clone(), manifest.clone()),
        );
        objects.insert(
            format!("/v2/{name}/manifests/{}", digest_of(&manifest)),
            (manifest_type, manifest),
        );
    }

    fn hits(&self, prefix: &str) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.contains(prefix))
            .count()
    }

    async fn start(self) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
        let app = axum::Router::new()
            .fallback(scripted_handler)
            .with_state(self);
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (host, task)
    }
}

async fn scripted_handler(
    State(registry): State<Scripted>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    registry
        .hits
        .lock()
        .unwrap()
        .push(format!("{} {path}", request.method()));
    if let Some(expected) = &registry.basic {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            let body =
                json!({"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]});
            return (
                StatusCode::UNAUTHORIZED,
                [("www-authenticate", "Basic realm=\"scripted\"")],
                axum::Json(body),
            )
                .into_response();
        }
    }
    if path == "/v2/" {
        return axum::Json(json!({})).into_response();
    }
    if path.contains("/blobs/") {
        // Slow enough that concurrent pulls overlap.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let object = registry.objects.lock().unwrap().get(&path).cloned();
    match object {
        Some((content_type, bytes)) => {
            (StatusCode::OK, [("content-type", content_type)], bytes).into_response()
        }
        None => {
            let body = json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_fetch_each_blob_once_and_a_cached_image_costs_no_request() {
    let registry = Scripted::default();
    let image = Image::container(
        json!({"os": "linux", "architecture": "amd64"}),
        &[("a", b"1")],
    );
    registry.serve_image("demo/app", "v1", &image);
    let (host, server) = registry.clone().start().await;
    let work = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let reference = format!("{host}/demo/app:v1");

    let (a, b) = tokio::join!(pull(&cache, &reference), pull(&cache, &reference));
    assert_eq!(a.unwrap().digest, b.unwrap().digest);
    for content in [&image.config.1, &image.layers[0].1] {
        assert_eq!(
            registry.hits(&format!("GET /v2/demo/app/blobs/{}", digest_of(content))),
            1
        );
    }

    let before = registry.hits("");
    let cached = cache
        .pull(
            &reference,
            PullPolicy::IfNotPresent,
            &PullSecrets::default(),
        )
        .await
        .unwrap();
    assert!(!cached.fetched);
    assert_eq!(
        registry.hits(""),
        before,
        "IfNotPresent on a cached image makes no request"
    );

    // Once flushed, the image survives a restart of the cache.
    cache.flush().await;
    drop(cache);
    let reopened = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let cached = reopened
        .pull(&reference, PullPolicy::Never, &PullSecrets::default())
        .await
        .unwrap();
    assert!(!cached.fetched);
    assert_eq!(registry.hits(""), before);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_mismatch_on_pull_is_rejected_and_nothing_is_stored() {
    let registry = Scripted::default();
    let image = Image::wasm(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        b"\0asm\x01\0\0\0real",
    );
    registry.serve_image("demo/app", "v1", &image);
    // The registry now serves other bytes under the module's digest.
    let blob_path = format!("/v2/demo/app/blobs/{}", digest_of(&image.layers[0].1));
    registry
        .objects
        .lock()
        .unwrap()
        .get_mut(&blob_path)
        .unwrap()
        .1 = b"\0asm\x01\0\0\0evil".to_vec();
    let (host, server) = registry.clone().start().await;
    let work = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();

    let reference = format!("{host}/demo/app:v1");
    let err = pull(&cache, &reference).await.unwrap_err();
    assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err:?}");
    let stored = work
        .path()
        .join("cache/blobs/sha256")
        .join(&digest_of(&image.layers[0].1)[7..]);
    assert!(
        !stored.exists(),
        "a corrupt blob is never stored under its digest"
    );
    assert!(!cache.contains(&reference).await.unwrap());
    assert_eq!(
        std::fs::read_dir(work.path().join("cache/tmp"))
            .unwrap()
            .count(),
        0
    );

    // A reference pinned to a digest the manifest does not have is refused too.
    let wrong = digest_of(b"another manifest");
    registry.objects.lock().unwrap().insert(
        format!("/v2/demo/app/manifests/{wrong}"),
        (
            "application/vnd.oci.image.manifest.v1+json".into(),
            image.manifest(),
        ),
    );
    let err = pull(&cache, &format!("{host}/demo/app@{wrong}"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::DigestMismatch { .. } | ImageError::Registry { .. }
        ),
        "{err:?}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_unlock_a_registry_that_demands_credentials() {
    let credentials = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let registry = Scripted {
        basic: Some(format!("Basic {credentials}")),
        ..Default::default()
    };
    let image = Image::wasm(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        EMPTY_MODULE,
    );
    registry.serve_image("private/app", "v1", &image);
    let (host, server) = registry.start().await;
    let work = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let reference = format!("{host}/private/app:v1");

    let err = pull(&cache, &reference).await.unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
    let secret = format!(r#"{{"auths":{{"{host}":{{"auth":"{wrong}"}}}}}}"#);
    let secrets = PullSecrets::from_docker_config_json(secret.as_bytes()).unwrap();
    let err = cache
        .pull(&reference, PullPolicy::Always, &secrets)
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Unauthorized { .. }), "{err:?}");

    let secret = format!(r#"{{"auths":{{"{host}":{{"auth":"{credentials}"}}}}}}"#);
    let secrets = PullSecrets::from_docker_config_json(secret.as_bytes()).unwrap();
    let pulled = tokio::time::timeout(
        TIMEOUT,
        cache.pull(&reference, PullPolicy::Always, &secrets),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(std::fs::read(wasm_path(&pulled)).unwrap(), EMPTY_MODULE);
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_keeps_shared_blobs_and_drops_unreferenced_ones() {
    let registry = Scripted::default();
    let shared = b"\0asm\x01\0\0\0shared".to_vec();
    let a = Image::wasm(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        &shared,
    );
    let b = Image::wasm(
        "application/vnd.wasm.config.v1+json",
        "application/vnd.wasm.content.layer.v1+wasm",
        &shared,
    );
    let c = Image::wasm(
        "application/vnd.wasm.config.v0+json",
        "application/wasm",
        b"\0asm\x01\0\0\0only-c",
    );
    registry.serve_image("demo/a", "v1", &a);
    registry.serve_image("demo/b", "v1", &b);
    registry.serve_image("demo/c", "v1", &c);
    let (host, server) = registry.start().await;
    let work = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(&work.path().join("cache"), None).unwrap();
    let (pa, pb, pc) = (
        pull(&cache, &format!("{host}/demo/a:v1")).await.unwrap(),
        pull(&cache, &format!("{host}/demo/b:v1")).await.unwrap(),
        pull(&cache, &format!("{host}/demo/c:v1")).await.unwrap(),
    );
    assert_eq!(wasm_path(&pa), wasm_path(&pb), "one blob for both images");

    assert!(cache.remove(&format!("{host}/demo/a:v1")).await.unwrap());
    assert!(cache.remove(&format!("{host}/demo/c:v1")).await.unwrap());
    let report = cache.gc().await.unwrap();
    assert_eq!(
        report.blobs, 3,
        "c's module and manifest, a's manifest: {report:?}"
    );
    assert!(wasm_path(&pb).exists());
    assert!(!wasm_path(&pc).exists());
    let again = cache
        .pull(
            &format!("{host}/demo/b:v1"),
            PullPolicy::Never,
            &PullSecrets::default(),
        )
        .await
        .unwrap();
    assert_eq!(wasm_path(&again), wasm_path(&pb));
    assert_eq!(cache.images().await.unwrap().len(), 1);
    server.abort();
}
