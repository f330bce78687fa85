//! Container pods on the OCI runtime path (runc), end to end: a `flotilla server` and a separate
//! `flotilla agent` process (so the agent can be restarted), a busybox image built here as an
//! OCI image layout and pushed with `flotilla image push`, everything driven by kubectl.
//!
//! These tests need root and runc (the suite runs as root on CI); without them they fail with
//! a message saying so rather than passing without checking anything.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sha2::Digest;

use crate::harness::{Server, flotilla_bin, kubectl_on_terminal, wait_for, wait_for_opt};

/// Every wait for a pod to get somewhere.
const POD_TIMEOUT: Duration = Duration::from_secs(90);

/// Fails the test with a clear message when the host cannot run containers.
fn require_root_and_runc() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "container tests need root (runc creates namespaces, cgroups and mounts); run the suite as root"
    );
    let runc = Command::new("runc").arg("--version").output();
    assert!(
        runc.is_ok_and(|o| o.status.success()),
        "container tests need runc on PATH (apt-get install runc, see .ci/apt-packages.txt)"
    );
    assert!(
        Path::new("/bin/busybox").exists(),
        "container tests need /bin/busybox (apt-get install busybox-static)"
    );
}

/// A node agent process, restartable over the same data directory.
struct Agent {
    child: Option<Child>,
    name: String,
    dir: PathBuf,
    kubeconfig: PathBuf,
    cidr: String,
    /// The agent's own pod bridge and its range (tests run side by side).
    bridge: String,
    bridge_cidr: String,
}

impl Agent {
    /// An agent whose container pods get their own networks on a bridge of its own, or (with
    /// `bridge` false, `--pod-bridge ""`) share the host's.
    fn start(server: &Server, dir: &Path, bridge: bool) -> Agent {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut agent = Agent {
            child: None,
            name: format!("oci-node-{n}"),
            dir: dir.to_path_buf(),
            kubeconfig: server.kubeconfig.clone(),
            cidr: crate::harness::loopback_range(),
            bridge: if bridge {
                format!("flt{}x{n}", std::process::id() % 100_000)
            } else {
                String::new()
            },
            bridge_cidr: format!("10.{}.{}.0/24", 200 + n, std::process::id() % 250),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let mut child = Command::new(flotilla_bin())
            .args(["agent", "--listen", "127.0.0.1:0", "--name", &self.name])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(&self.dir)
            .args(["--pod-cidr", &self.cidr])
            .args(["--pod-bridge", &self.bridge])
            .args(["--pod-bridge-cidr", &self.bridge_cidr])
            .args([
                "--restart-backoff-base-ms",
                "300",
                "--restart-backoff-max-ms",
                "2000",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flotilla agent");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("flotilla agent did not start within 60s");
        self.child = Some(child);
    }

    /// SIGTERM, and a wait (at most 30 s) for the process to exit.
    fn terminate(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let exited = wait_for_opt(Duration::from_secs(30), || {
            c.try_wait().ok().flatten().map(|_| ())
        });
        if exited.is_none() {
            let _ = c.kill();
            let _ = c.wait();
            panic!("the agent did not exit within 30s of SIGTERM");
        }
    }

    fn state_root(&self) -> PathBuf {
        self.dir.join("oci/runc/state")
    }

    fn containers_dir(&self) -> PathBuf {
        self.dir.join("oci/runc/containers")
    }

    /// `runc list` under the agent's root: (id, pid, status).
    fn runc_list(&self) -> Vec<(String, i64, String)> {
        let out = Command::new("runc")
            .arg("--root")
            .arg(self.state_root())
            .args(["list", "--format", "json"])
            .output()
            .expect("runc list");
        let text = String::from_utf8_lossy(&out.stdout);
        let list: Value = serde_json::from_str(text.trim()).unwrap_or(Value::Null);
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_string(),
                    c["pid"].as_i64().unwrap_or(0),
                    c["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Pod `uid`'s own network, if it has one: its namespace (from the agent's record) and the
    /// host end of its veth pair (found through the namespace's `eth0@ifN`).
    fn pod_network(&self, uid: &str) -> Option<(String, String)> {
        let record = std::fs::read_to_string(self.dir.join("oci/network").join(uid)).ok()?;
        let netns = record.split_whitespace().nth(1)?.to_string();
        let out = Command::new("ip")
            .args(["-n", &netns, "-o", "link", "show", "eth0"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let index = text.split("eth0@if").nth(1)?.split(':').next()?.to_string();
        let links = Command::new("ip").args(["-o", "link"]).output().ok()?;
        let veth = String::from_utf8_lossy(&links.stdout)
            .lines()
            .find_map(|l| {
                let mut f = l.split(": ");
                (f.next()? == index).then(|| {
                    f.next()
                        .map(|n| n.split('@').next().unwrap_or(n).to_string())
                })?
            })?;
        Some((netns, veth))
    }

    /// What a deleted pod with `uid` could leave behind: containers, directories, mounts,
    /// cgroups, its network namespace and the host end of its veth pair (`network`, when it had
    /// one). Empty when nothing is left.
    fn leftovers(&self, uid: &str, network: Option<&(String, String)>) -> Vec<String> {
        let mut left = Vec::new();
        if let Some((netns, veth)) = network {
            let path = Path::new("/run/netns").join(netns);
            if path.exists() {
                left.push(format!("network namespace {}", path.display()));
            }
            let veth_there = Command::new("ip")
                .args(["link", "show", veth])
                .stderr(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if veth_there {
                left.push(format!("veth {veth}"));
            }
        }
        if self.dir.join("oci/network").join(uid).exists() {
            left.push(format!("network record of {uid}"));
        }
        for (id, pid, status) in self.runc_list() {
            if id.starts_with(uid) {
                left.push(format!("runc container {id} ({status}, pid {pid})"));
            }
        }
        if let Ok(entries) = std::fs::read_dir(self.containers_dir()) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(uid) {
                    left.push(format!("directory {}", e.path().display()));
                }
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if line.contains(uid) {
                left.push(format!("mount {line}"));
            }
        }
        if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
            for c in controllers.flatten() {
                if let Ok(groups) = std::fs::read_dir(c.path().join("flotilla")) {
                    for g in groups.flatten() {
                        if g.file_name().to_string_lossy().starts_with(uid) {
                            left.push(format!("cgroup {}", g.path().display()));
                        }
                    }
                }
            }
        }
        left
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Containers outlive the agent by design: remove what a failed test left running.
        for (id, _, _) in self.runc_list() {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(self.state_root())
                .args(["delete", "--force", &id])
                .status();
        }
        if let Ok(entries) = std::fs::read_dir(self.containers_dir()) {
            for e in entries.flatten() {
                let _ = Command::new("umount")
                    .arg("-l")
                    .arg(e.path().join("rootfs"))
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // And the network namespaces on the agent's bridge, and the bridge.
        if !self.bridge.is_empty() {
            let prefix = format!("{}-", self.bridge);
            for e in std::fs::read_dir("/run/netns")
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(&prefix) {
                    let _ = Command::new("ip")
                        .args(["netns", "del", &name])
                        .stderr(Stdio::null())
                        .status();
                }
            }
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A cluster: control plane, one agent with runc, the busybox image pushed as `busybox:v1`.
struct Cluster {
    // The agent first: fields drop in order, and the agent stops before its server.
    agent: Agent,
    server: Server,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(true)
    }

    /// A cluster whose agent has a pod bridge (`bridge`) or not.
    fn start_with(bridge: bool) -> Cluster {
        require_root_and_runc();
        let server = Server::start();
        let tmp = tempfile::tempdir().expect("tempdir");
        let agent = Agent::start(&server, &tmp.path().join("agent"), bridge);
        let c = Cluster {
            agent,
            server,
            _tmp: tmp,
        };
        c.wait_node_with_runc();
        let layout = c._tmp.path().join("busybox-layout");
        busybox_layout(&layout, json!({"Cmd": ["sh"], "Env": ["PATH=/bin"]}));
        c.push(&layout, "busybox:v1");
        c
    }

    fn wait_node_with_runc(&self) {
        let name = self.agent.name.clone();
        wait_for("the node to be Ready and offer runc", POD_TIMEOUT, || {
            let out = self.server.kubectl(&["get", "node", &name, "-o", "json"]);
            let node: Value = serde_json::from_slice(&out.stdout).ok()?;
            let handlers = node["metadata"]["labels"]["flotilla.dev/runtime-handlers"]
                .as_str()?
                .to_string();
            let ready = node["status"]["conditions"]
                .as_array()?
                .iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (ready && handlers.split('.').any(|h| h == "runc")).then_some(())
        });
    }

    /// `flotilla image push DIR REF` against the cluster's registry.
    fn push(&self, source: &Path, reference: &str) {
        let out = Command::new(flotilla_bin())
            .args(["image", "push", "--quiet"])
            .arg(source)
            .arg(reference)
            .args(["--server", &self.server.url])
            .output()
            .expect("flotilla image push");
        assert!(
            out.status.success(),
            "flotilla image push {reference} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn apply(&self, manifest: &str) {
        let out = self.server.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pod(&self, name: &str) -> Option<Value> {
        let out = self.server.kubectl(&["get", "pod", name, "-o", "json"]);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("pod json"))
    }

    fn wait_pod(&self, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        wait_for(&format!("pod {name}: {what}"), POD_TIMEOUT, || {
            self.pod(name).filter(|p| f(p))
        })
    }

    /// Deletes the pod, waits until it is gone, and checks that it left nothing behind.
    fn delete_and_check_nothing_left(&self, name: &str, uid: &str) {
        self.delete_with(name, uid, &[]);
    }

    /// Deletes the pod at once (`--grace-period=0 --force`: the API forgets it immediately and
    /// the agent sees it vanish), then checks that it left nothing behind.
    fn force_delete_and_check_nothing_left(&self, name: &str, uid: &str) {
        self.delete_with(name, uid, &["--grace-period=0", "--force"]);
    }

    fn delete_with(&self, name: &str, uid: &str, extra: &[&str]) {
        let network = self.agent.pod_network(uid);
        let mut args = vec!["delete", "pod", name, "--wait=true", "--timeout=60s"];
        args.extend_from_slice(extra);
        let out = self.server.kubectl(&args);
        assert!(
            out.status.success(),
            "delete failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let left = wait_for_opt(Duration::from_secs(30), || {
            let left = self.agent.leftovers(uid, network.as_ref());
            left.is_empty().then_some(())
        });
        assert!(
            left.is_some(),
            "pod {name} left things behind: {:#?}",
            self.agent.leftovers(uid, network.as_ref())
        );
    }

    /// The messages of the pod's events.
    fn events(&self, pod: &str) -> String {
        self.server.kubectl_ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.name={pod}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
    }
}

/// Writes an OCI image layout of a busybox rootfs (the static busybox, its applets as links,
/// /etc/passwd) with the given image `config` section.
fn busybox_layout(dir: &Path, config: Value) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let add_dir = |tar: &mut tar::Builder<Vec<u8>>, path: &str| {
        let mut h = new_header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        tar.append_data(&mut h, path, std::io::empty()).unwrap();
    };
    for d in ["bin", "etc", "tmp", "www"] {
        add_dir(&mut tar, d);
    }
    let busybox = std::fs::read("/bin/busybox").unwrap();
    let mut h = new_header();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    tar.append_data(&mut h, "bin/busybox", &busybox[..])
        .unwrap();
    for applet in [
        "sh", "echo", "sleep", "cat", "true", "false", "httpd", "ls", "env", "kill", "hostname",
        "dd", "wget", "tar",
    ] {
        let mut h = new_header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    for (path, content) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
        ("etc/group", "root:x:0:\n"),
        ("www/index.html", "hello from a container\n"),
    ] {
        let mut h = new_header();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        tar.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    let layer = tar.into_inner().unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let (layer_digest, layer_size) = put(&layer);
    let config = json!({
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest_digest, "size": manifest_size}],
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A pod on the runc RuntimeClass pinned to the agent's node.
fn pod(node: &str, name: &str, image: &str, container: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  runtimeClassName: runc\n  terminationGracePeriodSeconds: 3\n{spec}  containers:\n    - name: main\n      image: {image}\n{container}"
    )
}

fn status(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

#[test]
fn a_container_pod_runs_logs_restarts_and_leaves_nothing_behind() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    // A ConfigMap volume (kubelet's layout of links into `..data`, bind-mounted), and one of
    // its keys mounted alone as a file through `subPath`.
    c.apply("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: crashy\ndata:\n  motd: from a configmap\n");
    let container = "      command: [\"sh\", \"-c\", \"echo hello $(GREETING) from $(hostname); echo $(cat /cfg/motd) and $(cat /etc/motd); grep alias.test /etc/hosts; sleep 1; exit 3\"]\n      env:\n        - name: GREETING\n          value: containers\n      volumeMounts:\n        - name: cfg\n          mountPath: /cfg\n        - name: cfg\n          mountPath: /etc/motd\n          subPath: motd\n      resources:\n        limits:\n          memory: 32Mi\n          cpu: 250m\n";
    let volumes = "  hostAliases:\n    - ip: 10.9.8.7\n      hostnames: [alias.test, other.test]\n  volumes:\n    - name: cfg\n      configMap:\n        name: crashy\n";
    c.apply(&pod(&node, "crashy", "busybox:v1", container, volumes));
    let p = c.wait_pod("crashy", "restarted after exiting with 3", |p| {
        status(p)["restartCount"].as_i64().unwrap_or(0) >= 1
            && status(p)["lastState"]["terminated"]["exitCode"] == 3
    });
    assert_eq!(status(&p)["lastState"]["terminated"]["reason"], "Error");
    assert!(
        status(&p)["containerID"]
            .as_str()
            .is_some_and(|id| id.starts_with("runc://")),
        "{p}"
    );
    let logs = wait_for("the container's log", POD_TIMEOUT, || {
        let out = c.server.kubectl(&["logs", "crashy", "--previous"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("hello containers from crashy")
            .then_some(text)
    });
    assert!(logs.contains("hello containers"), "{logs}");
    assert!(
        logs.contains("from a configmap and from a configmap"),
        "{logs}"
    );
    assert!(
        logs.contains("10.9.8.7\talias.test\tother.test"),
        "hostAliases in /etc/hosts: {logs}"
    );
    let events = c.events("crashy");
    assert!(
        events.contains("BackOff") || events.contains("Started"),
        "{events}"
    );
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    c.force_delete_and_check_nothing_left("crashy", &uid);
}

#[test]
fn a_runc_pod_serves_beside_a_wasmtime_pod_with_http_and_exec_probes() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/hello-http/hello-http.wasm");
    c.push(&wasm, "hello-http:v1");
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: wasm-web\nspec:\n  nodeName: {node}\n  runtimeClassName: wasmtime\n  containers:\n    - name: main\n      image: hello-http:v1\n      ports:\n        - containerPort: 8080\n"
    ));
    let container = "      command: [\"httpd\", \"-f\", \"-h\", \"/www\", \"-p\", \"$(POD_IP):8080\"]\n      env:\n        - name: POD_IP\n          valueFrom:\n            fieldRef:\n              fieldPath: status.podIP\n      ports:\n        - containerPort: 8080\n      readinessProbe:\n        httpGet:\n          path: /index.html\n          port: 8080\n        periodSeconds: 1\n      livenessProbe:\n        exec:\n          command: [\"cat\", \"/www/index.html\"]\n        periodSeconds: 1\n";
    c.apply(&pod(&node, "container-web", "busybox:v1", container, ""));
    let web = c.wait_pod("container-web", "Running and Ready", |p| {
        p["status"]["phase"] == "Running" && is_ready(p)
    });
    let wasm_web = c.wait_pod("wasm-web", "Running", |p| p["status"]["phase"] == "Running");
    for (p, want) in [(&web, "hello from a container"), (&wasm_web, "")] {
        let ip = p["status"]["podIP"].as_str().expect("pod IP");
        let path = if want.is_empty() { "/" } else { "/index.html" };
        let (code, body) = wait_for("an HTTP answer", POD_TIMEOUT, || {
            http_get(&format!("{ip}:8080"), path)
        });
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(want), "{body}");
    }
    // As root, the container pod has a network of its own: an address from the agent's bridge
    // range on eth0 in its own namespace, with a veth into the bridge; the event says so.
    let ip = web["status"]["podIP"].as_str().unwrap_or_default();
    let prefix = c.agent.bridge_cidr.trim_end_matches("0/24");
    assert!(
        ip.starts_with(prefix),
        "pod IP {ip} in {}",
        c.agent.bridge_cidr
    );
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(
        c.agent.pod_network(&uid).is_some(),
        "the pod's eth0 has its peer on the host"
    );
    let events = c.events("container-web");
    assert!(
        events.contains("PodNetwork: Pod network: own network namespace"),
        "{events}"
    );
    assert!(
        wasm_web["status"]["podIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("127.")),
        "Wasm pods keep loopback addresses: {wasm_web}"
    );
    // The exec liveness probe keeps passing: no restarts.
    std::thread::sleep(Duration::from_secs(3));
    let web = c.pod("container-web").unwrap();
    assert_eq!(status(&web)["restartCount"], 0, "{web}");
    // `kubectl top`'s source: the container's cgroup says what it uses.
    let metrics: Value = serde_json::from_str(&c.server.kubectl_ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/container-web",
    ]))
    .expect("PodMetrics json");
    let memory = metrics["containers"][0]["usage"]["memory"]
        .as_str()
        .unwrap_or_default();
    let (digits, unit) = memory.split_at(
        memory
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(memory.len()),
    );
    let bytes = digits.parse::<u64>().unwrap_or(0)
        * match unit {
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            _ => 1,
        };
    assert!(
        bytes > 0,
        "the httpd's working set from its cgroup: {metrics}"
    );
    // `kubectl exec` runs a command in the container: its stdout and stderr apart, its exit
    // code kubectl's own.
    let out = c.server.kubectl(&[
        "exec",
        "container-web",
        "--",
        "sh",
        "-c",
        "cat /www/index.html; echo to-stderr >&2; exit 3",
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout} / {stderr}");
    assert!(stdout.contains("hello from a container"), "{stdout}");
    assert!(
        !stdout.contains("to-stderr") && stderr.contains("to-stderr"),
        "{stderr}"
    );
    assert_eq!(
        c.server
            .kubectl_ok(&["exec", "container-web", "-c", "main", "--", "echo", "ok"]),
        "ok\n"
    );
    // With -i, what kubectl reads is the command's stdin, closed at its end.
    let out = c.server.kubectl_stdin(
        &[
            "exec",
            "-i",
            "container-web",
            "--",
            "sh",
            "-c",
            "wc -l; cat >&2",
        ],
        "one\ntwo\nthree\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    // `kubectl cp` is tar through exec, both ways.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("index.html");
    c.server.kubectl_ok(&[
        "cp",
        "container-web:/www/index.html",
        copy.to_str().unwrap(),
    ]);
    let copied = std::fs::read_to_string(&copy).expect("the copied file");
    assert!(copied.contains("hello from a container"), "{copied}");
    std::fs::write(&copy, "copied in\n").unwrap();
    c.server
        .kubectl_ok(&["cp", copy.to_str().unwrap(), "container-web:/tmp/in.html"]);
    assert_eq!(
        c.server
            .kubectl_ok(&["exec", "container-web", "--", "cat", "/tmp/in.html"]),
        "copied in\n"
    );
    // `kubectl exec -it`: the command runs on a terminal of the size of kubectl's, and what
    // is typed reaches it. runc sizes the container's terminal just after the command starts
    // (a command that asks at once may see 0x0 under load), so this one asks for up to 5 s.
    let (code, shown) = kubectl_on_terminal(
        &c.server.kubeconfig,
        "exec -it container-web -- sh -c 'tty; i=0; until [ \"$(stty size 2>/dev/null)\" = \"30 100\" ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done; stty size; exit 3'",
        "",
    );
    assert_eq!(code, Some(3), "{shown}");
    assert!(shown.contains("/dev/pts/"), "a terminal: {shown}");
    assert!(
        shown.contains("30 100"),
        "kubectl's size (rows, columns): {shown}"
    );
    let (code, shown) = kubectl_on_terminal(
        &c.server.kubeconfig,
        "exec -it container-web -- sh",
        "echo typed-$((6 * 7))\nexit 4\n",
    );
    assert_eq!(code, Some(4), "{shown}");
    assert!(shown.contains("typed-42"), "{shown}");
    // A Wasm container has nothing to run a command in.
    let out = c.server.kubectl(&["exec", "wasm-web", "--", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a wasmtime container runs a Wasm module"),
        "{err}"
    );
    let uid = web["metadata"]["uid"].as_str().unwrap().to_string();
    c.delete_and_check_nothing_left("container-web", &uid);
}

#[test]
fn a_restarted_agent_adopts_its_running_containers() {
    let mut c = Cluster::start();
    let node = c.agent.name.clone();
    let container =
        "      command: [\"sh\", \"-c\", \"echo started; while true; do sleep 1; done\"]\n";
    c.apply(&pod(&node, "long", "busybox:v1", container, ""));
    let p = c.wait_pod("long", "Running", |p| p["status"]["phase"] == "Running");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let before = c.agent.runc_list();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].2, "running");
    // Two debug containers: one that outlives the agent's absence, one that ends during it.
    for (name, seconds) in [("sleeper", "3600"), ("brief", "2")] {
        c.server.kubectl_ok(&[
            "debug",
            "long",
            "--image=busybox:v1",
            "-c",
            name,
            "--",
            "sleep",
            seconds,
        ]);
    }
    let ephemeral = |p: &Value, name: &str| {
        let list = p["status"]["ephemeralContainerStatuses"]
            .as_array()
            .cloned();
        let found = list.into_iter().flatten().find(|s| s["name"] == name);
        found.unwrap_or_default()
    };
    let debugged = c.wait_pod("long", "both debug containers running", |p| {
        ["sleeper", "brief"]
            .iter()
            .all(|n| !ephemeral(p, n)["state"]["running"].is_null())
    });

    c.agent.terminate();
    std::thread::sleep(Duration::from_secs(3));
    let during = c.agent.runc_list();
    let running = |list: &[(String, i64, String)]| {
        let mut ids: Vec<String> = list
            .iter()
            .filter(|(_, _, status)| status == "running")
            .map(|(id, _, _)| id.clone())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        running(&during),
        running(&before)
            .into_iter()
            .chain([format!("{uid}-sleeper-0")])
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>(),
        "the container and the sleeper keep running while the agent is down: {during:?}"
    );
    c.agent.spawn();
    c.wait_node_with_runc();
    let logs = wait_for("the adopted container's log", POD_TIMEOUT, || {
        let out = c.server.kubectl(&["logs", "long"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("started").then_some(text)
    });
    assert!(logs.contains("started"));
    std::thread::sleep(Duration::from_secs(2));
    // The sleeper is adopted; the brief one, gone, is reported lost, not started again.
    let p2 = c.wait_pod("long", "the brief debug container reported lost", |p| {
        ephemeral(p, "brief")["state"]["terminated"]["reason"] == "ContainerStatusUnknown"
    });
    let sleeper = ephemeral(&p2, "sleeper");
    assert!(!sleeper["state"]["running"].is_null(), "{p2}");
    assert_eq!(
        sleeper["containerID"],
        ephemeral(&debugged, "sleeper")["containerID"],
        "{p2}"
    );
    let after = c.agent.runc_list();
    assert_eq!(
        running(&after),
        running(&during),
        "adopted, not started twice: {after:?}"
    );
    let p2 = c.pod("long").unwrap();
    assert_eq!(
        p2["status"]["podIP"], p["status"]["podIP"],
        "the adopted pod keeps its address (its network namespace)"
    );
    assert!(
        c.agent.pod_network(&uid).is_some(),
        "its network is still there"
    );
    let p = p2;
    assert_eq!(p["status"]["phase"], "Running");
    assert_eq!(status(&p)["restartCount"], 0, "{p}");

    // The adopted container still stops on deletion (SIGTERM ends the shell's sleep loop or
    // SIGKILL does after the grace period) and leaves nothing behind.
    c.delete_and_check_nothing_left("long", &uid);
}

#[test]
fn container_pods_with_bad_input_say_why() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    let bare = c._tmp.path().join("bare-layout");
    busybox_layout(&bare, json!({"Env": ["PATH=/bin"]}));
    c.push(&bare, "bare:v1");

    c.apply(&pod(&node, "no-entrypoint", "bare:v1", "", ""));
    c.apply(&pod(
        &node,
        "no-binary",
        "busybox:v1",
        "      command: [\"/no/such/program\"]\n",
        "",
    ));
    c.apply(&pod(
        &node,
        "exits-at-once",
        "busybox:v1",
        "      command: [\"false\"]\n",
        "  restartPolicy: Never\n",
    ));
    c.apply(&pod(
        &node,
        "bad-probe",
        "busybox:v1",
        "      command: [\"sleep\", \"3600\"]\n      readinessProbe:\n        exec:\n          command: [\"/no/such/probe\"]\n        periodSeconds: 1\n",
        "",
    ));
    c.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: on-crun\nspec:\n  runtimeClassName: crun\n  containers:\n    - name: main\n      image: busybox:v1\n",
    );

    let p = c.wait_pod("no-entrypoint", "CreateContainerError", |p| {
        status(p)["state"]["waiting"]["reason"] == "CreateContainerError"
    });
    let m = status(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(m.contains("no entrypoint or command"), "{m}");
    let p = c.wait_pod("no-binary", "CreateContainerError", |p| {
        status(p)["state"]["waiting"]["reason"] == "CreateContainerError"
    });
    let m = status(&p)["state"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(m.contains("/no/such/program"), "{m}");

    let p = c.wait_pod("exits-at-once", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(status(&p)["state"]["terminated"]["exitCode"], 1, "{p}");
    assert_eq!(status(&p)["state"]["terminated"]["reason"], "Error");

    c.wait_pod("bad-probe", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let events = wait_for("an Unhealthy event", POD_TIMEOUT, || {
        let e = c.events("bad-probe");
        e.contains("Unhealthy").then_some(e)
    });
    assert!(events.contains("/no/such/probe"), "{events}");
    let p = c.wait_pod(
        "bad-probe",
        "a Ready condition naming the probe failure",
        |p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Ready"
                        && c["status"] == "False"
                        && c["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("/no/such/probe"))
                })
            })
        },
    );
    assert!(!is_ready(&p), "{p}");

    let p = c.wait_pod("on-crun", "unschedulable", |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        })
    });
    let cond = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .unwrap()
        .clone();
    assert!(
        cond["message"]
            .as_str()
            .unwrap_or_default()
            .contains("crun")
            || cond["message"]
                .as_str()
                .unwrap_or_default()
                .contains("runtime"),
        "{cond}"
    );

    for name in ["no-entrypoint", "no-binary", "exits-at-once", "bad-probe"] {
        let uid = c.pod(name).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string();
        c.delete_and_check_nothing_left(name, &uid);
    }
}

/// A tar header owned by root with a fixed mtime (fields a container runtime unpacks).
fn new_header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

#[test]
fn a_container_over_its_memory_limit_is_oom_killed() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    // dd's 64 MiB buffer cannot fit in a 16 MiB cgroup.
    let container = "      command: [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=64M\", \"count=1\"]\n      resources:\n        limits:\n          memory: 16Mi\n";
    c.apply(&pod(
        &node,
        "hungry",
        "busybox:v1",
        container,
        "  restartPolicy: Never\n",
    ));
    let p = c.wait_pod("hungry", "Failed", |p| p["status"]["phase"] == "Failed");
    let terminated = &status(&p)["state"]["terminated"];
    assert_eq!(terminated["reason"], "OOMKilled", "{p}");
    assert_eq!(terminated["exitCode"], 137, "{p}");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    c.force_delete_and_check_nothing_left("hungry", &uid);
}

/// The body each kind of `web` pod answers `/` with.
const WASM_BODY: &str = "hello from flotilla wasi:http";
const CONTAINER_BODY: &str = "hello from a container";

/// A Deployment of the `web` app: the hello-http Wasm component on wasmtime, or busybox httpd
/// serving `/www` on runc; both on `$(POD_IP):8080` and ready once `/` answers.
fn web_deployment(name: &str, app: &str, runtime: &str, replicas: u32, extra: &str) -> String {
    let container = match runtime {
        "wasmtime" => "          image: hello-http:v1\n".to_string(),
        _ => "          image: busybox:v1\n          command: [\"httpd\", \"-f\", \"-h\", \"/www\", \"-p\", \"$(POD_IP):8080\"]\n          env:\n            - name: POD_IP\n              valueFrom:\n                fieldRef:\n                  fieldPath: status.podIP\n".to_string(),
    };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
{extra}  selector:
    matchLabels:
      app: {app}
      deployment: {name}
  template:
    metadata:
      labels:
        app: {app}
        deployment: {name}
    spec:
      runtimeClassName: {runtime}
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
{container}          ports:
            - containerPort: 8080
          readinessProbe:
            httpGet:
              path: /
              port: 8080
            periodSeconds: 1
"
    )
}

/// The pods with label `app`, not being deleted: (name, runtimeClassName, phase, ready, podIP).
fn live_pods(c: &Cluster, app: &str) -> Vec<(String, String, String, bool, String)> {
    let out = c
        .server
        .kubectl(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&p["metadata"]["name"]),
                s(&p["spec"]["runtimeClassName"]),
                s(&p["status"]["phase"]),
                is_ready(p),
                s(&p["status"]["podIP"]),
            )
        })
        .collect()
}

/// A Kubernetes user's "Deployment mixing RuntimeClasses": one Deployment moved from a Wasm
/// template to a container template by a rolling update. Mid-rollout both kinds of pods run and
/// serve side by side (`minReadySeconds` keeps the old ones for a while); the rollout completes
/// with only container pods left, each serving.
#[test]
fn a_deployment_rolls_from_wasm_pods_to_container_pods() {
    let c = Cluster::start();
    c.push(
        &crate::harness::sample("hello-http/hello-http.wasm"),
        "hello-http:v1",
    );
    let strategy = "  minReadySeconds: 3\n  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n";
    c.apply(&web_deployment("web", "web", "wasmtime", 2, strategy));
    let out = c
        .server
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "the Wasm rollout: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = live_pods(&c, "web");
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(
        before.iter().all(|p| p.1 == "wasmtime" && p.3),
        "{before:?}"
    );

    c.apply(&web_deployment("web", "web", "runc", 2, strategy));
    // Both kinds Running and Ready at one moment, each answering on its own address.
    let mixed = wait_for(
        "Wasm and container pods ready side by side",
        POD_TIMEOUT,
        || {
            let pods = live_pods(&c, "web");
            let ready = |class: &str| {
                pods.iter()
                    .find(|p| p.1 == class && p.2 == "Running" && p.3)
                    .cloned()
            };
            Some((ready("wasmtime")?, ready("runc")?))
        },
    );
    for (pod, want) in [(&mixed.0, WASM_BODY), (&mixed.1, CONTAINER_BODY)] {
        let (code, body) = http_get(&format!("{}:8080", pod.4), "/")
            .unwrap_or_else(|| panic!("pod {} ({}) does not answer", pod.0, pod.1));
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(want), "pod {} ({}): {body}", pod.0, pod.1);
    }
    let out = c
        .server
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=90s"]);
    assert!(
        out.status.success(),
        "the container rollout: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = wait_for("only the 2 container pods left", POD_TIMEOUT, || {
        let pods = live_pods(&c, "web");
        (pods.len() == 2 && pods.iter().all(|p| p.1 == "runc")).then_some(pods)
    });
    for pod in &after {
        assert!(pod.2 == "Running" && pod.3, "{pod:?}");
        let (code, body) = wait_for("an answer", POD_TIMEOUT, || {
            http_get(&format!("{}:8080", pod.4), "/")
        });
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(CONTAINER_BODY), "{body}");
    }
    let d = c.server.kubectl_json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d}");
    assert_eq!(d["status"]["availableReplicas"], 2, "{d}");
}

/// One Service in front of a Wasm pod and a container pod of the same app (same selector, same
/// port, from two Deployments with different RuntimeClasses): requests to its ClusterIP through
/// the node proxy reach both, and none fails.
#[test]
fn one_service_fronts_a_wasm_pod_and_a_container_pod() {
    let c = Cluster::start();
    c.push(
        &crate::harness::sample("hello-http/hello-http.wasm"),
        "hello-http:v1",
    );
    c.apply(&web_deployment("hello-wasm", "hello", "wasmtime", 1, ""));
    c.apply(&web_deployment("hello-container", "hello", "runc", 1, ""));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  selector:\n    app: hello\n  ports:\n    - port: 8080\n      targetPort: 8080\n",
    );
    wait_for(
        "a ready Wasm pod and a ready container pod",
        POD_TIMEOUT,
        || {
            let pods = live_pods(&c, "hello");
            let ready = |class: &str| pods.iter().any(|p| p.1 == class && p.3);
            (ready("wasmtime") && ready("runc")).then_some(())
        },
    );
    // As root the container pod has an address of its own network (on the agent's bridge),
    // the Wasm pod a loopback one: the proxy routes to both kinds.
    let pods = live_pods(&c, "hello");
    let container_ip = &pods
        .iter()
        .find(|p| p.1 == "runc")
        .expect("container pod")
        .4;
    assert!(
        !container_ip.starts_with("127."),
        "the container pod's address {container_ip} is its own"
    );
    let service = c.server.kubectl_json(&["get", "service", "hello"]);
    let front = format!(
        "{}:8080",
        service["spec"]["clusterIP"].as_str().expect("clusterIP")
    );
    // The proxy picks the endpoints up from the EndpointSlice: wait for the first answer.
    wait_for("the Service to answer", POD_TIMEOUT, || {
        http_get(&front, "/")
    });
    let (mut wasm, mut container, mut failed) = (0, 0, Vec::new());
    for _ in 0..60 {
        match http_get(&front, "/") {
            Some((200, body)) if body.contains(WASM_BODY) => wasm += 1,
            Some((200, body)) if body.contains(CONTAINER_BODY) => container += 1,
            other => failed.push(format!("{other:?}")),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 60 requests failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        wasm > 0 && container > 0,
        "both pods answer: {wasm} from the Wasm pod, {container} from the container pod"
    );

    // A container pod (in its own network namespace, as root) reaches the Service by ClusterIP.
    let node = c.agent.name.clone();
    let client = format!(
        "      command: [\"sh\", \"-c\", \"until wget -q -O - http://{front}/; do sleep 0.2; done; sleep 3600\"]\n"
    );
    c.apply(&pod(&node, "client", "busybox:v1", &client, ""));
    let logs = wait_for(
        "the client pod's answer from the Service",
        POD_TIMEOUT,
        || {
            let out = c.server.kubectl(&["logs", "client"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (text.contains(WASM_BODY) || text.contains(CONTAINER_BODY)).then_some(text)
        },
    );
    assert!(logs.contains("hello from"), "{logs}");
}

/// Without a pod bridge (as without root) a container pod shares the host's network: its
/// address is a loopback one from the node's pod range, it serves there, and its events say so.
#[test]
fn without_a_pod_bridge_a_container_pod_shares_the_host_network() {
    let c = Cluster::start_with(false);
    let node = c.agent.name.clone();
    let container = "      command: [\"httpd\", \"-f\", \"-h\", \"/www\", \"-p\", \"$(POD_IP):8080\"]\n      env:\n        - name: POD_IP\n          valueFrom:\n            fieldRef:\n              fieldPath: status.podIP\n      readinessProbe:\n        httpGet:\n          path: /\n          port: 8080\n        periodSeconds: 1\n";
    c.apply(&pod(&node, "host-web", "busybox:v1", container, ""));
    let p = c.wait_pod("host-web", "Running and Ready", |p| {
        p["status"]["phase"] == "Running" && is_ready(p)
    });
    let ip = p["status"]["podIP"].as_str().expect("pod IP").to_string();
    assert!(ip.starts_with("127."), "a loopback address: {ip}");
    let (code, body) = wait_for("an HTTP answer", POD_TIMEOUT, || {
        http_get(&format!("{ip}:8080"), "/")
    });
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(CONTAINER_BODY), "{body}");
    let events = c.events("host-web");
    assert!(
        events.contains("PodNetwork: Pod network: host network: no pod bridge is configured"),
        "{events}"
    );
    // Without a bridge there is no cluster DNS server the pod can reach: it gets the node's
    // resolv.conf, and says why, as kubelet does without `--cluster-dns`.
    assert!(
        events.contains("MissingClusterDNS: ")
            && events.contains("Falling back to \"Default\" policy"),
        "{events}"
    );
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    assert!(c.agent.pod_network(&uid).is_none(), "no network of its own");
    c.delete_and_check_nothing_left("host-web", &uid);
}

/// Container pods on the pod bridge resolve names through the node's cluster DNS server: with
/// the default `ClusterFirst` policy a Service's bare name works (the search path), its full
/// name answers the ClusterIP, its named port an SRV record and the ClusterIP a PTR record; a
/// `dnsPolicy: None` pod gets exactly its `dnsConfig`; and a `None` pod without one is refused.
#[test]
fn container_pods_resolve_services_through_cluster_dns() {
    let c = Cluster::start();
    c.push(
        &crate::harness::sample("hello-http/hello-http.wasm"),
        "hello-http:v1",
    );
    c.apply(&web_deployment("hello-wasm", "hello", "wasmtime", 1, ""));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: hello\nspec:\n  selector:\n    app: hello\n  ports:\n    - name: http\n      port: 8080\n      targetPort: 8080\n",
    );
    wait_for("a ready Wasm pod", POD_TIMEOUT, || {
        live_pods(&c, "hello").iter().any(|p| p.3).then_some(())
    });
    let service = c.server.kubectl_json(&["get", "service", "hello"]);
    let cluster_ip = service["spec"]["clusterIP"]
        .as_str()
        .expect("clusterIP")
        .to_string();
    let gateway = c.agent.bridge_cidr.replace(".0/24", ".1");

    let node = c.agent.name.clone();
    let client = format!(
        "      command: [\"sh\", \"-c\", \"cat /etc/resolv.conf; nslookup hello.default.svc.cluster.local; nslookup -type=SRV _http._tcp.hello.default.svc.cluster.local; nslookup {cluster_ip}; until wget -q -O - http://hello:8080/; do sleep 0.2; done; sleep 3600\"]\n"
    );
    c.apply(&pod(&node, "dns-client", "busybox:v1", &client, ""));
    let logs = wait_for(
        "the client pod's answer from the Service by name",
        POD_TIMEOUT,
        || {
            let out = c.server.kubectl(&["logs", "dns-client"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(WASM_BODY).then_some(text)
        },
    );
    for line in [
        "search default.svc.cluster.local svc.cluster.local cluster.local",
        &format!("nameserver {gateway}"),
        "options ndots:5",
    ] {
        assert!(
            logs.contains(line),
            "{line:?} in the pod's resolv.conf: {logs}"
        );
    }
    assert!(
        logs.contains(&format!("Address: {cluster_ip}")),
        "nslookup of the Service's full name answers its ClusterIP {cluster_ip}: {logs}"
    );
    assert!(
        logs.contains("service = 0 100 8080 hello.default.svc.cluster.local"),
        "the named port's SRV record: {logs}"
    );
    assert!(
        logs.contains("name = hello.default.svc.cluster.local"),
        "the ClusterIP's PTR record: {logs}"
    );

    let cat = "      command: [\"sh\", \"-c\", \"cat /etc/resolv.conf; sleep 3600\"]\n";
    let none = "  dnsPolicy: None\n  dnsConfig:\n    nameservers: [\"192.0.2.53\"]\n    searches: [\"corp.example\"]\n    options:\n      - name: ndots\n        value: \"2\"\n";
    c.apply(&pod(&node, "dns-none", "busybox:v1", cat, none));
    let conf = wait_for("the None pod's resolv.conf", POD_TIMEOUT, || {
        let out = c.server.kubectl(&["logs", "dns-none"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("nameserver").then_some(text)
    });
    let lines: Vec<&str> = conf.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "search corp.example",
            "nameserver 192.0.2.53",
            "options ndots:2"
        ],
        "{conf}"
    );

    let out = c.server.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod(&node, "dns-bad", "busybox:v1", cat, "  dnsPolicy: None\n"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a None pod without dnsConfig is refused"
    );
    assert!(
        stderr.contains(
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"
        ),
        "{stderr}"
    );
    assert!(c.pod("dns-bad").is_none(), "nothing was stored");
}

/// Runs `kubectl ARGS` (a shell line) with `input` as its stdin, ended after `seconds` (exit
/// code 124).
fn kubectl_fed(c: &Cluster, seconds: u32, args: &str, input: &str) -> std::process::Output {
    Command::new("sh")
        .args(["-c", &format!("exec timeout {seconds} kubectl {args}")])
        .env("KUBECONFIG", &c.server.kubeconfig)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(input.as_bytes())?;
            // Its end is the end of kubectl's input.
            drop(stdin);
            child.wait_with_output()
        })
        .expect("kubectl runs")
}

/// `kubectl run` of a pod on the agent's node and the runc RuntimeClass, with `flags`.
fn kubectl_run(c: &Cluster, name: &str, flags: &str, command: &str) -> String {
    let overrides = json!({"spec": {
        "nodeName": c.agent.name,
        "runtimeClassName": "runc",
        "terminationGracePeriodSeconds": 3,
    }});
    format!(
        "run {name} {flags} --restart=Never --image=busybox:v1 --overrides='{overrides}' -- {command}"
    )
}

#[test]
fn kubectl_run_and_attach_reach_a_containers_stdin_and_terminal() {
    let mut c = Cluster::start();
    let node = c.agent.name.clone();
    // `kubectl run -i --rm`: what kubectl reads is the container's stdin (stdinOnce: it ends
    // with kubectl's), its stdout and stderr come back apart, its exit code is kubectl's, and
    // the pod is gone afterwards.
    let line = kubectl_run(
        &c,
        "catty",
        "-i --rm",
        "sh -c 'read line; echo got-$line; echo err-$line >&2; cat; echo after-eof; exit 3'",
    );
    let out = kubectl_fed(&c, 60, &line, "hello\nmore\n");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stdout} / {stderr}");
    assert!(stdout.contains("got-hello"), "{stdout} / {stderr}");
    assert!(
        stdout.contains("more\nafter-eof"),
        "the rest of the input, then its end: {stdout} / {stderr}"
    );
    assert!(
        stderr.contains("err-hello") && !stdout.contains("err-hello"),
        "{stdout} / {stderr}"
    );
    wait_for("the --rm pod deleted", POD_TIMEOUT, || {
        let out = c.server.kubectl(&["get", "pod", "catty"]);
        (!out.status.success()).then_some(())
    });

    // `kubectl run -it`: the container runs on a terminal of kubectl's size, what is typed
    // reaches its shell, and the shell's exit code is kubectl's.
    let (code, shown) = kubectl_on_terminal(
        &c.server.kubeconfig,
        &kubectl_run(&c, "tty", "-it --rm", "sh"),
        "i=0; until [ \"$(stty size)\" = \"30 100\" ] || [ $i -ge 50 ]; do sleep 0.1; i=$((i+1)); done; stty size; tty; echo typed-$((6 * 7)) $TERM; exit 4\n",
    );
    assert_eq!(code, Some(4), "{shown}");
    assert!(shown.contains("typed-42 xterm"), "{shown}");
    assert!(shown.contains("30 100"), "kubectl's size: {shown}");
    assert!(
        shown.contains("/dev/pts/0"),
        "the container's own terminal: {shown}"
    );

    // A pod whose stdin stays open between attaches (no stdinOnce): each `kubectl attach -i`
    // writes to the same reader.
    c.apply(&pod(
        &node,
        "echoer",
        "busybox:v1",
        "      stdin: true\n      command: [\"sh\", \"-c\", \"while read l; do [ \\\"$l\\\" = quit ] && exit 0; echo echo-$l; done; echo stdin-ended\"]\n",
        "  restartPolicy: Never\n",
    ));
    wait_for("the echoer running", POD_TIMEOUT, || {
        let p = c.server.kubectl_json(&["get", "pod", "echoer"]);
        is_ready(&p).then_some(())
    });
    // kubectl's input ends here but the container's does not: the attach lasts until the
    // container ends, so this one is cut short by `timeout`.
    let first = kubectl_fed(&c, 8, "attach -i echoer", "one\n");
    let shown = String::from_utf8_lossy(&first.stdout);
    assert!(
        shown.contains("echo-one"),
        "{shown} / {}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = c
        .server
        .kubectl_stdin(&["attach", "-i", "echoer"], "two\nquit\n");
    let shown = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "{shown} / {}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        shown.contains("echo-two") && !shown.contains("stdin-ended"),
        "{shown}"
    );
    let logs = c.server.kubectl_ok(&["logs", "echoer"]);
    assert_eq!(logs, "echo-one\necho-two\n");
    wait_for("the echoer Succeeded", POD_TIMEOUT, || {
        let p = c.server.kubectl_json(&["get", "pod", "echoer"]);
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    // The API server refuses an attach to a finished pod before reaching its node, in
    // kubectl's words (kubectl itself checks first, so this asks over HTTP).
    let out = c.server.kubectl(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/echoer/attach?container=main&stdout=true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "cannot attach a container in a completed pod; current phase is Succeeded"
            ),
        "{err}"
    );

    // An agent reading a running container's terminal and holding its stdin still exits on
    // SIGTERM (within `terminate`'s 30 s), leaving the container to the next agent.
    c.apply(&pod(
        &node,
        "shell",
        "busybox:v1",
        "      stdin: true\n      tty: true\n      command: [\"sh\"]\n",
        "",
    ));
    wait_for("the shell running", POD_TIMEOUT, || {
        let p = c.server.kubectl_json(&["get", "pod", "shell"]);
        is_ready(&p).then_some(())
    });
    c.agent.terminate();
}

/// The first ephemeral container status named `name`.
fn ephemeral_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["status"]["ephemeralContainerStatuses"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

#[test]
fn kubectl_debug_adds_an_ephemeral_container_that_sees_its_targets_processes() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    c.apply(&pod(
        &node,
        "debuggee",
        "busybox:v1",
        "      command: [\"sleep\", \"3600\"]\n",
        "",
    ));
    let p = c.wait_pod("debuggee", "running", is_ready);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();

    // `kubectl debug -i --target`: the debug container runs in the target's process
    // namespace (its PID 1 is the target's `sleep`) and what kubectl reads is its stdin. As
    // with kubelet, the attach ends with Success whatever the code the container exits with;
    // the code is in its status.
    let out = kubectl_fed(
        &c,
        90,
        "debug debuggee -i --image=busybox:v1 --target=main -c debugger -- sh",
        "cat /proc/1/cmdline; echo; echo done-debugging; exit 5\n",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        stdout.contains("sleep\u{0}3600") && stdout.contains("done-debugging"),
        "{stdout} / {stderr}"
    );
    assert!(out.status.success(), "{stdout} / {stderr}");
    let p = c.wait_pod("debuggee", "the debugger's end reported", |p| {
        ephemeral_status(p, "debugger").is_some_and(|s| !s["state"]["terminated"].is_null())
    });
    let ended = &ephemeral_status(&p, "debugger").unwrap()["state"]["terminated"];
    assert_eq!(ended["exitCode"], 5, "{p}");
    // The pod itself is untouched: still running and ready, its container never restarted.
    assert_eq!(p["status"]["phase"], "Running", "{p}");
    assert!(is_ready(&p), "{p}");
    assert_eq!(status(&p)["restartCount"], 0, "{p}");
    let logs = c.server.kubectl_ok(&["logs", "debuggee", "-c", "debugger"]);
    assert!(logs.contains("done-debugging"), "{logs}");
    let described = c.server.kubectl_ok(&["describe", "pod", "debuggee"]);
    assert!(
        described.contains("Ephemeral Containers:") && described.contains("debugger:"),
        "{described}"
    );

    // Without a target it has a process namespace of its own: its PID 1 is its own shell.
    let out = kubectl_fed(
        &c,
        90,
        "debug debuggee -i --image=busybox:v1 -c loner -- sh",
        "cat /proc/1/cmdline; echo; exit 0\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("sh") && !stdout.contains("sleep"),
        "{stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Bad input: a target the pod does not have is refused and changes nothing (the API
    // server's other refusals are in api_bad_input).
    let before = c.server.kubectl_json(&["get", "pod", "debuggee"]);
    let out = c.server.kubectl(&[
        "debug",
        "debuggee",
        "--image=busybox:v1",
        "-c",
        "other",
        "--target=nosuch",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("targetContainerName"),
        "{err}"
    );
    let after = c.server.kubectl_json(&["get", "pod", "debuggee"]);
    assert_eq!(
        before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"],
        "nothing written"
    );

    // One still running when the pod is deleted stops with it, and nothing is left.
    c.server.kubectl_ok(&[
        "debug",
        "debuggee",
        "--image=busybox:v1",
        "-c",
        "sleeper",
        "--",
        "sleep",
        "3600",
    ]);
    c.wait_pod("debuggee", "the sleeper running", |p| {
        ephemeral_status(p, "sleeper").is_some_and(|s| !s["state"]["running"].is_null())
    });
    assert_eq!(
        c.agent
            .runc_list()
            .iter()
            .filter(|(id, _, status)| id.starts_with(&uid) && status == "running")
            .count(),
        2,
        "the app container and the sleeper: {:?}",
        c.agent.runc_list()
    );
    c.delete_and_check_nothing_left("debuggee", &uid);
}

#[test]
fn a_container_runs_as_its_security_context_says() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    c.apply("apiVersion: v1\nkind: Secret\nmetadata:\n  name: owned\nstringData:\n  token: s3cret-for-the-group\n");
    // The pod's user, group and supplemental groups (fsGroup among them: it owns the volumes,
    // so a secret of mode 0400 is readable and files made in an emptyDir get it); the container's
    // capabilities (all dropped but one), no privilege escalation and a read-only root.
    let report = "busybox id; busybox grep -E '^(CapBnd|NoNewPrivs)' /proc/self/status; busybox touch /file 2>/dev/null || echo root-read-only; echo x > /scratch/f && echo scratch-writable; busybox stat -c 'new-file-gid=%g' /scratch/f; busybox cat /secret/token && echo; sleep 3600";
    c.apply(&pod(
        &node,
        "secured",
        "busybox:v1",
        &format!(
            "      command: [\"sh\", \"-c\", \"{report}\"]\n      securityContext:\n        readOnlyRootFilesystem: true\n        allowPrivilegeEscalation: false\n        capabilities:\n          drop: [ALL]\n          add: [NET_BIND_SERVICE]\n      volumeMounts:\n        - name: scratch\n          mountPath: /scratch\n        - name: secret\n          mountPath: /secret\n"
        ),
        "  securityContext:\n    runAsUser: 1000\n    runAsGroup: 3000\n    supplementalGroups: [4000]\n    fsGroup: 2000\n  volumes:\n    - name: scratch\n      emptyDir: {}\n    - name: secret\n      secret:\n        secretName: owned\n        defaultMode: 0400\n",
    ));
    // A privileged container has every capability.
    c.apply(&pod(
        &node,
        "privileged",
        "busybox:v1",
        "      command: [\"sh\", \"-c\", \"busybox grep CapEff /proc/self/status; sleep 3600\"]\n      securityContext:\n        privileged: true\n",
        "",
    ));
    let logs_of = |name: &str, want: &str| {
        let report = wait_for_opt(POD_TIMEOUT, || {
            let out = c.server.kubectl(&["logs", name]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains(want).then_some(text)
        });
        report.unwrap_or_else(|| {
            panic!(
                "no report from {name}: {:#}",
                c.pod(name).unwrap_or_default()
            )
        })
    };
    let secured = logs_of("secured", "NoNewPrivs");
    assert!(
        secured.contains("uid=1000") && secured.contains("gid=3000"),
        "{secured}"
    );
    assert!(
        secured.contains("4000") && secured.contains("2000"),
        "supplemental groups: {secured}"
    );
    assert!(
        secured.contains("CapBnd:\t0000000000000400"),
        "NET_BIND_SERVICE only: {secured}"
    );
    assert!(secured.contains("NoNewPrivs:\t1"), "{secured}");
    assert!(secured.contains("root-read-only"), "{secured}");
    assert!(
        secured.contains("scratch-writable"),
        "an emptyDir is writable by any user: {secured}"
    );
    assert!(secured.contains("new-file-gid=2000"), "{secured}");
    assert!(
        secured.contains("s3cret-for-the-group"),
        "fsGroup reads the 0400 secret: {secured}"
    );
    // Every capability the agent has (this machine may withhold some from root).
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let all = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:\t"))
        .unwrap()
        .to_string();
    let privileged = logs_of("privileged", "CapEff");
    assert!(
        privileged.contains(&format!("CapEff:\t{all}")),
        "{privileged}"
    );

    // `kubectl debug --profile=sysadmin`: a privileged debug container, as the pod's user.
    let out = kubectl_fed(
        &c,
        90,
        "debug secured -i --image=busybox:v1 --profile=sysadmin -c admin -- sh",
        "busybox id; busybox grep CapBnd /proc/self/status; exit\n",
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("uid=1000") && shown.contains(&format!("CapBnd:\t{all}")),
        "{shown} / {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // runAsNonRoot with an image that runs as root: the container does not start, and says
    // why, as kubelet does.
    c.apply(&pod(
        &node,
        "nonroot",
        "busybox:v1",
        "      command: [\"sleep\", \"3600\"]\n",
        "  securityContext:\n    runAsNonRoot: true\n",
    ));
    let p = c.wait_pod("nonroot", "CreateContainerConfigError", |p| {
        status(p)["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    });
    assert_eq!(
        status(&p)["state"]["waiting"]["message"],
        "container has runAsNonRoot and image will run as root",
        "{p}"
    );

    // Bad input: an id out of range is refused, and nothing is stored.
    let out = c.server.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod(
            &node,
            "negative",
            "busybox:v1",
            "      securityContext:\n        runAsUser: -1\n",
            "",
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("spec.containers[0].securityContext.runAsUser")
            && err.contains("must be between 0 and 2147483647, inclusive"),
        "{err}"
    );
    assert!(c.pod("negative").is_none(), "nothing was stored");
}

#[test]
fn a_pod_with_host_pid_and_host_ipc_shares_the_nodes_namespaces() {
    let c = Cluster::start();
    let node = c.agent.name.clone();
    let report = "busybox readlink /proc/self/ns/pid; busybox readlink /proc/self/ns/ipc; busybox test -d /proc/$TEST_PID && echo sees-the-test; sleep 3600";
    for (name, spec) in [
        ("on-host", "  hostPID: true\n  hostIPC: true\n"),
        ("own", ""),
    ] {
        c.apply(&pod(
            &node,
            name,
            "busybox:v1",
            &format!(
                "      command: [\"sh\", \"-c\", \"{report}\"]\n      env:\n        - name: TEST_PID\n          value: \"{}\"\n",
                std::process::id()
            ),
            spec,
        ));
    }
    let namespaces = |name: &str| {
        let shown = wait_for_opt(POD_TIMEOUT, || {
            let out = c.server.kubectl(&["logs", name]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.contains("ipc:[").then_some(text)
        });
        let shown = shown.unwrap_or_else(|| {
            let logs = c.server.kubectl(&["logs", name]);
            panic!(
                "no report from {name}: {} {:#}",
                String::from_utf8_lossy(&logs.stdout),
                c.pod(name).unwrap_or_default()["status"]
            )
        });
        let first_two: Vec<String> = shown.lines().take(2).map(str::to_string).collect();
        (first_two, shown)
    };
    let node_ns: Vec<String> = ["pid", "ipc"]
        .iter()
        .map(|n| {
            std::fs::read_link(format!("/proc/self/ns/{n}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let (on_host, shown) = namespaces("on-host");
    assert_eq!(on_host, node_ns, "{shown}");
    assert!(shown.contains("sees-the-test"), "{shown}");
    let (own, shown) = namespaces("own");
    assert!(
        own[0] != node_ns[0] && own[1] != node_ns[1],
        "{own:?} / {node_ns:?}"
    );
    assert!(!shown.contains("sees-the-test"), "{shown}");
}
