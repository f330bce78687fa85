//! Images end to end in one process: the control plane's registry on a loopback port,
//! `flotilla image push` (the command's own code), skopeo as the standard client, and the
//! node's image cache. Plus the push-then-pull benchmark against skopeo (`--ignored`).

#[allow(dead_code)]
#[path = "../src/commands/image.rs"]
mod image_command;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use flotilla_control::registry::{self, Registry};
use flotilla_node::image::{ImageCache, ImageContent, PullPolicy, PullSecrets};
use futures::FutureExt;

/// Every wait gets this long at most.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    image: image_command::ImageArgs,
}

struct Server {
    host: String,
    registry: Registry,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_registry() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(&dir.path().join("registry")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let task = tokio::spawn(registry::serve(listener, registry.clone()).map(|r| r.unwrap()));
    Server {
        host,
        registry,
        _dir: dir,
        task,
    }
}

async fn flotilla_image(args: &[&str]) -> anyhow::Result<()> {
    let cli = Cli::try_parse_from(std::iter::once("flotilla-image").chain(args.iter().copied()))?;
    tokio::time::timeout(TIMEOUT, image_command::run(cli.image))
        .await
        .expect("flotilla image timed out")
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

fn sample_wasm(dir: &Path) -> PathBuf {
    let path = dir.join("app.wasm");
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    module.extend((0..(2u32 << 20)).map(|i| (i % 251) as u8));
    std::fs::write(&path, module).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_push_then_skopeo_pulls_the_wasm_artifact() {
    let server = start_registry().await;
    let work = tempfile::tempdir().unwrap();
    let wasm = sample_wasm(work.path());
    let url = format!("http://{}", server.host);
    flotilla_image(&[
        "push",
        wasm.to_str().unwrap(),
        "hello:v1",
        "--server",
        &url,
        "--quiet",
    ])
    .await
    .unwrap();
    assert_eq!(
        server.registry.catalog().await.unwrap()[0].tags,
        vec!["v1".to_string()]
    );

    let out = work.path().join("out");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/hello:v1", server.host),
        &format!("oci:{}:v1", out.display()),
    ])
    .await;
    let blob = std::fs::read(wasm.as_path()).unwrap();
    let digest = registry::Digest::of(&blob);
    assert_eq!(
        std::fs::read(out.join("blobs/sha256").join(digest.hex())).unwrap(),
        blob
    );

    flotilla_image(&["ls", "--server", &url]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pushes_to_the_cluster_registry_and_the_node_cache_pulls_it() {
    let server = start_registry().await;
    let work = tempfile::tempdir().unwrap();
    // A layout made by skopeo itself from an image pushed with `flotilla image push`.
    let wasm = sample_wasm(work.path());
    let url = format!("http://{}", server.host);
    flotilla_image(&[
        "push",
        wasm.to_str().unwrap(),
        "seed:v1",
        "--server",
        &url,
        "-q",
    ])
    .await
    .unwrap();
    let layout = work.path().join("layout");
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &format!("docker://{}/seed:v1", server.host),
        &format!("oci:{}:v1", layout.display()),
    ])
    .await;
    skopeo(&[
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:v1", layout.display()),
        &format!("docker://{}/team/from-skopeo:v2", server.host),
    ])
    .await;

    // No registry host in the reference: the cluster's registry.
    let cache = ImageCache::new(&work.path().join("cache"), Some(url.clone())).unwrap();
    let pulled = cache
        .pull(
            "team/from-skopeo:v2",
            PullPolicy::IfNotPresent,
            &PullSecrets::default(),
        )
        .await
        .unwrap();
    let ImageContent::Wasm { path, .. } = &pulled.content else {
        panic!("{:?}", pulled.content)
    };
    assert_eq!(std::fs::read(path).unwrap(), std::fs::read(&wasm).unwrap());

    // `flotilla image push DIR` pushes the layout (all blobs already there).
    flotilla_image(&[
        "push",
        layout.to_str().unwrap(),
        "team/from-layout:v1",
        "--server",
        &url,
        "-q",
    ])
    .await
    .unwrap();
    let names: Vec<String> = server
        .registry
        .catalog()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["seed", "team/from-layout", "team/from-skopeo"]);
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Push then pull of the 18 MB Python sample, ours against skopeo, side by side, against the
/// same built-in registry (a fresh one per round so nothing is skipped). Run with
/// `cargo test --release --test images -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn bench_push_then_pull_against_skopeo() {
    let work = tempfile::tempdir().unwrap();
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/hello-python/hello-python.wasm");
    let wasm = if sample.exists() {
        sample
    } else {
        eprintln!("sample missing; using an 18 MB generated module");
        let path = work.path().join("big.wasm");
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        module.extend((0..18_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
        std::fs::write(&path, module).unwrap();
        path
    };
    let size = std::fs::metadata(&wasm).unwrap().len();
    // The same artifact as an OCI layout for skopeo.
    let layout = work.path().join("layout");
    {
        let server = start_registry().await;
        let url = format!("http://{}", server.host);
        flotilla_image(&[
            "push",
            wasm.to_str().unwrap(),
            "seed:v1",
            "--server",
            &url,
            "-q",
        ])
        .await
        .unwrap();
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/seed:v1", server.host),
            &format!("oci:{}:v1", layout.display()),
        ])
        .await;
    }
    let rounds = 7;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let server = start_registry().await;
        let url = format!("http://{}", server.host);
        let cache_dir = work.path().join(format!("cache-{round}"));
        let started = Instant::now();
        flotilla_image(&[
            "push",
            wasm.to_str().unwrap(),
            "bench/ours:v1",
            "--server",
            &url,
            "-q",
        ])
        .await
        .unwrap();
        let pushed_in = started.elapsed();
        let cache = ImageCache::new(&cache_dir, Some(url.clone())).unwrap();
        cache
            .pull("bench/ours:v1", PullPolicy::Always, &PullSecrets::default())
            .await
            .unwrap();
        ours.push(started.elapsed());
        // Make the pull durable before the next measurement, not during it.
        cache.flush().await;

        let out = work.path().join(format!("out-{round}"));
        let started = Instant::now();
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--dest-tls-verify=false",
            &format!("oci:{}:v1", layout.display()),
            &format!("docker://{}/bench/skopeo:v1", server.host),
        ])
        .await;
        skopeo(&[
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            &format!("docker://{}/bench/skopeo:v1", server.host),
            &format!("oci:{}:v1", out.display()),
        ])
        .await;
        theirs.push(started.elapsed());

        // IfNotPresent on the cached image: no network.
        let started = Instant::now();
        let cached = cache
            .pull(
                "bench/ours:v1",
                PullPolicy::IfNotPresent,
                &PullSecrets::default(),
            )
            .await
            .unwrap();
        assert!(!cached.fetched);
        eprintln!(
            "round {round}: ours {:?} (push {pushed_in:?}), skopeo {:?}, cached IfNotPresent {:?}",
            ours[round],
            theirs[round],
            started.elapsed()
        );
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
    eprintln!(
        "{size} bytes, {rounds} rounds: median push+pull ours {ours:?}, skopeo {theirs:?}, ratio {ratio:.2}"
    );
    assert!(ratio <= 1.5, "push+pull is {ratio:.2}x skopeo's time");
}
