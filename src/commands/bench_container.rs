//! `flotilla bench container`: how long a container pod takes from `create` to `Running` with
//! its image cached, next to the OCI runtime's own `create` + `start` of the same bundle, in
//! one run on one machine.
//!
//! It starts a control plane and a node agent in-process (fresh data dir), builds a busybox
//! image (from the host's static busybox) as an OCI image layout, pushes it, and runs one warm-up
//! pod (pull and unpack). Then, `--pods` times each, alternating:
//! - pod: create (runtimeClassName `runc`, scheduled by the scheduler) acknowledged → the API
//!   shows `Running` (polled every 2 ms), then a delete (not timed);
//! - runtime alone: `runc create` + `runc start` of a bundle made exactly as the agent makes
//!   one (overlay over the same unpacked image, the `config.json` the agent wrote for the warm-up
//!   pod; a network namespace made beforehand and joined, as the pod's), then `runc delete
//!   --force` (not timed).
//!
//! Needs root and runc.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::bench_stats::ms;
use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

/// Flags of `flotilla bench container`.
#[derive(Debug, Args)]
pub struct ContainerBenchArgs {
    /// Pods (and bare runtime runs) to time.
    #[arg(long, default_value_t = 20)]
    pub pods: usize,
    /// Data dir (default: a fresh temporary directory).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The bridge the benchmark's container pods get their networks on.
const BENCH_BRIDGE: &str = "flotilla-bench";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Runs the benchmark.
pub async fn run(args: ContainerBenchArgs) -> anyhow::Result<()> {
    if !Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!("flotilla bench container needs runc on PATH");
    }
    let tmp = tempfile::tempdir()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(|| tmp.path().into());
    std::fs::create_dir_all(&data_dir)?;
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let base = format!("http://{addr}");
    let kubeconfig = data_dir.join("kubeconfig");
    flotilla_control::kubeconfig::write(&kubeconfig, &base, "flotilla")?;
    let server = tokio::spawn(flotilla_control::serve(
        listener,
        flotilla_control::ServerConfig::new(data_dir.join("server")),
        shutdown.clone(),
    ));
    let mut config = flotilla_node::AgentConfig::new("bench-node", data_dir.join("agent"));
    config.kubeconfig = Some(kubeconfig);
    config.listen = "127.0.0.1:0".parse()?;
    // A bridge of its own (removed at the end), so a node agent on this host is not disturbed.
    config.pod_bridge = BENCH_BRIDGE.to_string();
    config.pod_bridge_cidr = "10.245.0.0/24".parse().map_err(anyhow::Error::msg)?;
    let agent = flotilla_node::Agent::start(config, shutdown.child_token()).await?;
    let agent_task = tokio::spawn(agent.join());

    let client = reqwest::Client::new();
    let node_url = format!("{base}/api/v1/nodes/bench-node");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let node: Value = client.get(&node_url).send().await?.json().await?;
        let handlers = node["metadata"]["labels"]["flotilla.dev/runtime-handlers"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if handlers.split('.').any(|h| h == "runc") {
            break;
        }
        if Instant::now() > deadline {
            bail!("the node does not offer runc (handlers: {handlers:?}); is this root?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let layout = data_dir.join("busybox-layout");
    busybox_layout(&layout)?;
    let options = flotilla_node::image::push::PushOptions {
        default_registry: Some(base.clone()),
        ..Default::default()
    };
    flotilla_node::image::push::push_layout(
        &layout,
        "bench-busybox:v1",
        &options,
        &flotilla_node::image::push::NoProgress,
    )
    .await
    .context("pushing the busybox image")?;

    println!(
        "flotilla bench container — {} cores, runc, {} pods, busybox image (cached after a warm-up pod)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.pods
    );
    let pods_url = format!("{base}/api/v1/namespaces/default/pods");
    // Warm-up: pull, unpack, and a config.json to reuse for the bare runtime runs.
    let (_, uid) = run_pod(&client, &pods_url, "warm-up").await?;
    let containers = data_dir.join("agent/oci/runc/containers");
    let warm_dir = std::fs::read_dir(&containers)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&uid))
        })
        .context("the warm-up container's bundle")?;
    let spec: Value = serde_json::from_slice(&std::fs::read(warm_dir.join("config.json"))?)?;
    let images = data_dir.join("agent/oci/images");
    let image_rootfs = std::fs::read_dir(&images)?
        .flatten()
        .map(|e| e.path().join("rootfs"))
        .find(|p| p.is_dir())
        .context("the unpacked image")?;
    delete_pod(&client, &pods_url, "warm-up").await?;

    // Interleaved (a pod, then a bare run), so both see the same load on a shared machine.
    let bare_root = data_dir.join("bare");
    let (mut pod_times, mut runc_times) = (Vec::new(), Vec::new());
    for i in 0..args.pods {
        let (took, _) = run_pod(&client, &pods_url, &format!("bench-{i}")).await?;
        pod_times.push(took);
        delete_pod(&client, &pods_url, &format!("bench-{i}")).await?;
        runc_times.push(bare_run(&bare_root, &image_rootfs, &spec, i)?);
    }
    let (pod, runc) = (median(pod_times), median(runc_times));
    println!(
        "  pod create acknowledged → Running: median {:.1} ms",
        ms(pod)
    );
    println!(
        "  runc create + start of the same bundle: median {:.1} ms",
        ms(runc)
    );
    println!(
        "  ratio: {:.2}× (target ≤ 1.5×)",
        pod.as_secs_f64() / runc.as_secs_f64().max(1e-9)
    );
    shutdown.cancel();
    let _ = agent_task.await;
    let _ = server.await;
    let _ = Command::new("ip")
        .args(["link", "del", BENCH_BRIDGE])
        .stderr(std::process::Stdio::null())
        .status();
    Ok(())
}

/// Creates a `sleep` pod on runc and waits until it runs: the time taken and its uid.
async fn run_pod(
    client: &reqwest::Client,
    pods_url: &str,
    name: &str,
) -> anyhow::Result<(Duration, String)> {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"runtimeClassName": "runc", "terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "main", "image": "bench-busybox:v1",
                                 "command": ["sleep", "3600"]}]},
    });
    let started = Instant::now();
    let created = client.post(pods_url).json(&pod).send().await?;
    if !created.status().is_success() {
        bail!("creating pod {name}: {}", created.text().await?);
    }
    let created: Value = created.json().await?;
    let uid = created["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let deadline = started + Duration::from_secs(60);
    loop {
        let p: Value = client
            .get(format!("{pods_url}/{name}"))
            .send()
            .await?
            .json()
            .await?;
        if p["status"]["phase"] == "Running" {
            return Ok((started.elapsed(), uid));
        }
        if Instant::now() > deadline {
            bail!("pod {name} not Running within 60s: {}", p["status"]);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn delete_pod(client: &reqwest::Client, pods_url: &str, name: &str) -> anyhow::Result<()> {
    client.delete(format!("{pods_url}/{name}")).send().await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while client
        .get(format!("{pods_url}/{name}"))
        .send()
        .await?
        .status()
        .is_success()
    {
        if Instant::now() > deadline {
            bail!("pod {name} not deleted within 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// One timed `runc create` + `runc start` of a bundle like the agent's; cleaned up after.
fn bare_run(root: &Path, image: &Path, spec: &Value, i: usize) -> anyhow::Result<Duration> {
    let id = format!("bench-bare-{}-{i}", std::process::id());
    let dir = root.join(&id);
    let rootfs = dir.join("rootfs");
    for d in ["rootfs", "upper", "work"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&rootfs)
        .status()?;
    if !mounted.success() {
        bail!("cannot mount an overlay for the bare runtime run");
    }
    let mut spec = spec.clone();
    spec["root"]["path"] = json!(rootfs);
    spec["linux"]["cgroupsPath"] = json!(format!("/flotilla/{id}"));
    // The warm-up pod's network namespace is gone with it. As the pod's, the bare run's is made
    // beforehand (untimed, like its overlay) and joined; none when the pod had none.
    let netns = format!("{id}-net");
    let mut made_netns = false;
    if let Some(namespaces) = spec["linux"]["namespaces"].as_array_mut() {
        for ns in namespaces.iter_mut().filter(|ns| ns["type"] == "network") {
            if !made_netns {
                let added = Command::new("ip").args(["netns", "add", &netns]).status()?;
                if !added.success() {
                    bail!("cannot make a network namespace for the bare runtime run");
                }
                made_netns = true;
            }
            *ns = json!({"type": "network", "path": format!("/run/netns/{netns}")});
        }
    }
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1\tlocalhost\n")?;
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        for m in mounts {
            if m["destination"] == "/etc/hosts" {
                m["source"] = json!(hosts);
            }
        }
    }
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&spec)?)?;
    let state = root.join("state");
    let runc = |args: &[&str]| {
        Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    let bundle = dir.to_string_lossy().into_owned();
    let started = Instant::now();
    let created = runc(&["create", "--bundle", &bundle, &id])?;
    let ran = created.success() && runc(&["start", &id])?.success();
    let took = started.elapsed();
    let _ = runc(&["delete", "--force", &id]);
    if made_netns {
        let _ = Command::new("ip").args(["netns", "del", &netns]).status();
    }
    let _ = Command::new("umount").arg(&rootfs).status();
    let _ = std::fs::remove_dir_all(&dir);
    if !ran {
        bail!("runc create/start of the bare bundle failed");
    }
    Ok(took)
}

/// An OCI image layout of the host's static busybox (`sleep` and `sh` as links).
fn busybox_layout(dir: &Path) -> anyhow::Result<()> {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs)?;
    let busybox = std::fs::read("/bin/busybox").context("needs /bin/busybox (busybox-static)")?;
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = new_header();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    tar.append_data(&mut h, "bin", std::io::empty())?;
    let mut h = new_header();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", &busybox[..])?;
    for applet in ["sh", "sleep"] {
        let mut h = new_header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    let layer = tar.into_inner()?;
    let put = |bytes: &[u8]| -> anyhow::Result<(String, usize)> {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes)?;
        Ok((format!("sha256:{hex}"), bytes.len()))
    };
    let (layer_digest, layer_size) = put(&layer)?;
    let config = json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}});
    let (config_digest, config_size) = put(&serde_json::to_vec(&config)?)?;
    let manifest = json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}]});
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest)?)?;
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": manifest_digest, "size": manifest_size}]});
    std::fs::write(dir.join("index.json"), index.to_string())?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    Ok(())
}

/// A tar header owned by root with a fixed mtime (fields a container runtime unpacks).
fn new_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}
