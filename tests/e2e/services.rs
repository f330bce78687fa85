//! Services end to end: `flotilla up` (control plane plus a local agent with its node proxy),
//! bare pods of the hello-http sample behind Services, driven by the stock kubectl, and
//! reached from outside the cluster with `kubectl port-forward`. Everything
//! here binds loopback addresses and ports above 1024, so it runs without root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{flotilla_bin, kubectl_with, push_wasm, sample, wait_for};

const NODE: &str = "svc-node";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A whole cluster from `flotilla up`, with pod, Service and NodePort ranges of its own (tests
/// run side by side); killed when dropped, restartable on the same data.
struct Cluster {
    child: Option<Child>,
    url: String,
    kubeconfig: PathBuf,
    args: Vec<String>,
    tmp: tempfile::TempDir,
    /// The first NodePort of its range.
    node_port_base: u16,
}

impl Cluster {
    fn start() -> Cluster {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let node_port_base = 30000 + ((pid % 100) as u16) * 20 + (n as u16) * 5;
        let args = vec![
            "--pod-cidr".to_string(),
            crate::harness::loopback_range(),
            "--service-cluster-ip-range".to_string(),
            crate::harness::loopback_range(),
            "--service-node-port-range".to_string(),
            format!("{}-{}", node_port_base, node_port_base + 4),
        ];
        let mut c = Cluster {
            child: None,
            url: String::new(),
            kubeconfig: PathBuf::new(),
            args,
            tmp: tempfile::tempdir().expect("tempdir"),
            node_port_base,
        };
        c.boot();
        c
    }

    fn boot(&mut self) {
        let kubeconfig = self.tmp.path().join("kubeconfig");
        let mut child = Command::new(flotilla_bin())
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .args(["--node-name", NODE])
            .args(&self.args)
            .args([
                "--restart-backoff-base-ms",
                "300",
                "--restart-backoff-max-ms",
                "2000",
            ])
            .arg("--data-dir")
            .arg(self.tmp.path())
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flotilla up");
        let rx = picked_from_stdout(&mut child, |line| {
            line.split("listening on ")
                .nth(1)
                .map(|url| url.trim().to_string())
        });
        self.url = rx
            .recv_timeout(TIMEOUT)
            .expect("flotilla up did not start within 60s");
        self.kubeconfig = kubeconfig;
        self.child = Some(child);
    }

    fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.boot();
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        kubectl_with(&self.kubeconfig, args, stdin)
    }

    fn apply_ok(&self, manifest: &str) {
        let out = self.kubectl(&["apply", "-f", "-"], Some(manifest));
        assert!(
            out.status.success(),
            "apply failed: {}\n{manifest}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).expect("json"))
    }

    /// A GET straight to the API server (faster than kubectl, for tight timing).
    fn api_get(&self, path: &str) -> Option<Value> {
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let resp = client.get(format!("{}{path}", self.url)).send().ok()?;
        resp.status()
            .is_success()
            .then(|| resp.json().ok())
            .flatten()
    }

    fn api_post(&self, path: &str, body: &Value) -> (u16, Value) {
        let client = reqwest::blocking::Client::new();
        let resp = client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .expect("post");
        let code = resp.status().as_u16();
        (code, resp.json().unwrap_or(Value::Null))
    }

    fn push(&self, wasm: &Path, reference: &str) {
        push_wasm(&self.url, wasm, reference);
    }

    fn wait_ready(&self, pod: &str) -> Value {
        wait_for(&format!("pod {pod} Ready"), TIMEOUT, || {
            self.get("pod", pod).filter(is_ready)
        })
    }
}

/// What `pick` finds in the lines `child` prints, as they come (read on a thread of its own).
fn picked_from_stdout(
    child: &mut Child,
    pick: impl Fn(&str) -> Option<String> + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(found) = pick(&line) {
                let _ = tx.send(found);
            }
        }
    });
    rx
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// A minimal HTTP/1.1 GET with `Connection: close` (a new connection, so a new balancing
/// decision, every time): (status, body), or the connection error.
fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s =
        TcpStream::connect_timeout(&addr.parse().expect("address"), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Ok((code, body))
}

/// The `POD=` line of the sample's `/env` answer.
fn pod_of(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("POD="))
        .unwrap_or("?")
        .to_string()
}

/// A tiny HTTP server whose answer (200 or 503) a test flips: the target of a pod's readiness
/// probe, so the test decides when the pod is ready.
struct Readiness {
    port: u16,
    ready: Arc<AtomicBool>,
}

impl Readiness {
    fn start() -> Readiness {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let ready = Arc::new(AtomicBool::new(true));
        let flag = ready.clone();
        std::thread::spawn(move || {
            for mut s in listener.incoming().map_while(Result::ok) {
                let mut buf = [0u8; 1024];
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.read(&mut buf);
                let status = if flag.load(Ordering::SeqCst) {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        Readiness { port, ready }
    }
}

/// A hello-http pod labelled `app: <app>`, serving on a named port `http` (8080), its readiness
/// probed at `127.0.0.1:<probe_port>`, and `POD` set to its name.
fn web_pod(name: &str, app: &str, probe_port: u16) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {app}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: hello-http:v1
      ports:
        - name: http
          containerPort: 8080
      env:
        - name: POD
          valueFrom:
            fieldRef:
              fieldPath: metadata.name
      readinessProbe:
        httpGet:
          host: 127.0.0.1
          port: {probe_port}
          path: /
        periodSeconds: 1
        failureThreshold: 1
"
    )
}

#[test]
fn a_service_balances_over_ready_pods_follows_readiness_and_is_reachable_by_name() {
    let c = Cluster::start();
    c.push(&sample("hello-http/hello-http.wasm"), "hello-http:v1");
    // The Services come first: pods created after them get their variables.
    c.apply_ok(
        "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - name: http
      port: 8080
      targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: sticky
spec:
  selector:
    app: web
  sessionAffinity: ClientIP
  ports:
    - name: http
      port: 8080
      targetPort: http
    - name: alt
      port: 9090
      targetPort: 8080
",
    );
    let web = c.get("service", "web").expect("service web");
    let cluster_ip = web["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string();
    let sticky = c.get("service", "sticky").expect("service sticky");
    let sticky_ip = sticky["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert_ne!(cluster_ip, sticky_ip);
    assert_eq!(
        sticky["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );

    let probes: Vec<Readiness> = (0..3).map(|_| Readiness::start()).collect();
    for (i, probe) in probes.iter().enumerate() {
        c.apply_ok(&web_pod(&format!("web-{i}"), "web", probe.port));
    }
    for i in 0..3 {
        c.wait_ready(&format!("web-{i}"));
    }
    let endpoints = wait_for("3 ready endpoints", TIMEOUT, || {
        c.get("endpoints", "web").filter(|e| {
            e["subsets"][0]["addresses"]
                .as_array()
                .is_some_and(|a| a.len() == 3)
        })
    });
    assert_eq!(
        endpoints["subsets"][0]["ports"][0]["port"], 8080,
        "the named targetPort resolved: {endpoints}"
    );
    let slices = c.kubectl(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "json",
        ],
        None,
    );
    let slices: Value = serde_json::from_slice(&slices.stdout).expect("slices");
    assert_eq!(
        slices["items"][0]["endpoints"].as_array().map(Vec::len),
        Some(3),
        "{slices}"
    );

    // Requests through the ClusterIP reach all three pods.
    let front = format!("{cluster_ip}:8080");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..30 {
        let (code, body) = http_get(&front, "/env").expect("through the ClusterIP");
        assert_eq!(code, 200, "{body}");
        *seen.entry(pod_of(&body)).or_default() += 1;
    }
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["web-0", "web-1", "web-2"],
        "{seen:?}"
    );
    assert!(
        seen.values().all(|n| *n >= 5),
        "round-robin spreads them: {seen:?}"
    );
    // Keep-alive through the proxy: several requests on one connection.
    let mut s = TcpStream::connect(&front).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        write!(s, "GET / HTTP/1.1\r\nHost: web\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("answer on the same connection");
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }

    // The Service variables, in a pod created after the Service.
    let (_, env) = http_get(&front, "/env").unwrap();
    assert!(
        env.contains(&format!("WEB_SERVICE_HOST={cluster_ip}\n")),
        "{env}"
    );
    assert!(env.contains("WEB_SERVICE_PORT=8080\n"), "{env}");
    assert!(
        env.contains(&format!("STICKY_PORT_9090_TCP=tcp://{sticky_ip}:9090\n")),
        "{env}"
    );

    // Session affinity: one client, one pod; the second port routes too.
    let sticky_front = format!("{sticky_ip}:8080");
    let first = pod_of(&http_get(&sticky_front, "/env").unwrap().1);
    for _ in 0..10 {
        assert_eq!(pod_of(&http_get(&sticky_front, "/env").unwrap().1), first);
    }
    let (code, _) = http_get(&format!("{sticky_ip}:9090"), "/").expect("second port");
    assert_eq!(code, 200);

    // A Wasm pod calls the Service by its names.
    let pod = c.get("pod", "web-0").unwrap();
    let web0 = format!("{}:8080", pod["status"]["podIP"].as_str().unwrap());
    for url in [
        "http://web.default.svc.cluster.local:8080/env",
        "http://web:8080/env",
        "http://web.default:8080/env",
    ] {
        let (code, body) = http_get(&web0, &format!("/fetch?url={url}")).unwrap();
        assert_eq!(code, 200, "{url}: {body}");
        assert!(
            body.starts_with("status: 200") && body.contains("POD=web-"),
            "{url}: {body}"
        );
    }
    let (code, body) = http_get(&web0, "/fetch?url=http://nosuch:8080/").unwrap();
    assert_eq!(code, 502, "an unknown name stays denied: {body}");

    // web-1 turns not ready: within 100 ms of its status saying so, no new connection reaches it.
    probes[1].ready.store(false, Ordering::SeqCst);
    let not_ready_at = wait_for("web-1 not ready", Duration::from_secs(10), || {
        c.api_get("/api/v1/namespaces/default/pods/web-1")
            .filter(|p| !is_ready(p))
            .map(|_| Instant::now())
    });
    let mut last_hit: Option<Duration> = None;
    let mut after = 0;
    while not_ready_at.elapsed() < Duration::from_millis(600) {
        let sent = not_ready_at.elapsed();
        let (code, body) = http_get(&front, "/env").expect("the others still answer");
        assert_eq!(code, 200);
        if pod_of(&body) == "web-1" {
            last_hit = Some(sent);
        }
        after += 1;
    }
    eprintln!("web-1 last reached {last_hit:?} after its not-ready status; {after} requests");
    assert!(
        last_hit.is_none_or(|t| t < Duration::from_millis(100)),
        "web-1 got traffic {last_hit:?} after turning not ready"
    );
    let ep = c.get("endpoints", "web").unwrap();
    assert_eq!(
        ep["subsets"][0]["notReadyAddresses"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "{ep}"
    );
    // Ready again: it is back in the rotation.
    probes[1].ready.store(true, Ordering::SeqCst);
    c.wait_ready("web-1");
    wait_for(
        "web-1 back in the rotation",
        Duration::from_secs(10),
        || {
            (0..6)
                .any(|_| http_get(&front, "/env").is_ok_and(|(_, b)| pod_of(&b) == "web-1"))
                .then_some(())
        },
    );

    // Deleting the Service closes its listeners.
    let out = c.kubectl(&["delete", "service", "web"], None);
    assert!(out.status.success());
    wait_for(
        "the ClusterIP to stop answering",
        Duration::from_secs(10),
        || {
            TcpStream::connect_timeout(
                &front.parse::<SocketAddr>().unwrap(),
                Duration::from_millis(200),
            )
            .is_err()
            .then_some(())
        },
    );
    wait_for("the Endpoints to go", Duration::from_secs(10), || {
        c.get("endpoints", "web").is_none().then_some(())
    });
}

#[test]
fn node_ports_answer_empty_services_refuse_at_once_and_clashes_get_422() {
    let mut c = Cluster::start();
    c.push(&sample("hello-http/hello-http.wasm"), "hello-http:v1");
    let probe = Readiness::start();
    c.apply_ok(&web_pod("np-0", "np", probe.port));
    let np = c.node_port_base + 2;
    c.apply_ok(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: np
spec:
  type: NodePort
  selector:
    app: np
  ports:
    - port: 8081
      targetPort: 8080
      nodePort: {np}
---
apiVersion: v1
kind: Service
metadata:
  name: auto
spec:
  type: NodePort
  selector:
    app: np
  ports:
    - port: 8082
      targetPort: http
---
apiVersion: v1
kind: Service
metadata:
  name: empty
spec:
  selector:
    app: nothing-has-this
  ports:
    - port: 8083
"
    ));
    c.wait_ready("np-0");
    let auto = c.get("service", "auto").unwrap();
    let auto_np = auto["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .expect("a NodePort was allocated") as u16;
    assert!(
        (c.node_port_base..=c.node_port_base + 4).contains(&auto_np) && auto_np != np,
        "{auto_np}"
    );
    for port in [np, auto_np] {
        let (code, body) = wait_for("the NodePort to answer", Duration::from_secs(10), || {
            http_get(&format!("127.0.0.1:{port}"), "/env").ok()
        });
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("POD=np-0"), "{body}");
    }

    // No endpoints: the connection fails at once, it does not hang.
    let empty = c.get("service", "empty").unwrap();
    let empty_addr = format!("{}:8083", empty["spec"]["clusterIP"].as_str().unwrap());
    let started = Instant::now();
    let result = http_get(&empty_addr, "/");
    assert!(
        result.is_err() || result.as_ref().is_ok_and(|(code, _)| *code == 0),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );

    // Clashes: a taken clusterIP, a taken NodePort, a clusterIP out of range.
    let np_ip = c.get("service", "np").unwrap()["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let clash = |c: &Cluster, ip: &str, node_port: Option<u16>| {
        let mut port = serde_json::json!({"port": 80});
        let mut spec = serde_json::json!({"clusterIP": ip, "ports": [port.clone()]});
        if let Some(p) = node_port {
            port["nodePort"] = p.into();
            spec = serde_json::json!({"type": "NodePort", "ports": [port]});
        }
        c.api_post(
            "/api/v1/namespaces/default/services",
            &serde_json::json!({"metadata": {"name": "clash"}, "spec": spec}),
        )
    };
    let (code, status) = clash(&c, &np_ip, None);
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.clusterIP",
        "{status}"
    );
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("already allocated"),
        "{status}"
    );
    let (code, status) = clash(&c, "", Some(np));
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.ports[0].nodePort",
        "{status}"
    );
    let (code, status) = clash(&c, "10.0.0.1", None);
    assert_eq!(code, 422, "{status}");
    assert!(
        status["message"].as_str().unwrap().contains("valid range"),
        "{status}"
    );
    let out = c.kubectl(&["apply", "-f", "-"], Some(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: clash2\nspec:\n  clusterIP: {np_ip}\n  ports:\n    - port: 80\n"
    )));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("provided IP is already allocated"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // After a restart the allocations are rebuilt from the stored Services.
    c.restart();
    let (code, status) = clash(&c, &np_ip, None);
    assert_eq!(code, 422, "after a restart: {status}");
    let (code, status) = clash(&c, "", Some(auto_np));
    assert_eq!(code, 422, "after a restart: {status}");

    // Deleting a Service frees its addresses and closes its NodePort.
    assert!(
        c.kubectl(&["delete", "service", "np"], None)
            .status
            .success()
    );
    wait_for("the NodePort to close", Duration::from_secs(20), || {
        TcpStream::connect_timeout(
            &format!("127.0.0.1:{np}").parse().unwrap(),
            Duration::from_millis(200),
        )
        .is_err()
        .then_some(())
    });
    let (code, status) = clash(&c, &np_ip, None);
    assert_eq!(
        code, 201,
        "the freed clusterIP can be taken again: {status}"
    );
}

#[test]
fn a_rolling_update_behind_a_service_fails_no_request() {
    let c = Cluster::start();
    let wasm = sample("hello-http/hello-http.wasm");
    c.push(&wasm, "hello-http:v1");
    c.push(&wasm, "hello-http:v2");
    c.apply_ok(
        "apiVersion: v1
kind: Service
metadata:
  name: rolling
spec:
  selector:
    app: rolling
  ports:
    - port: 8080
      targetPort: 8080
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: rolling
spec:
  replicas: 3
  selector:
    matchLabels:
      app: rolling
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  template:
    metadata:
      labels:
        app: rolling
    spec:
      runtimeClassName: wasmtime
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: hello-http:v1
          ports:
            - containerPort: 8080
          readinessProbe:
            httpGet:
              path: /
              port: 8080
            periodSeconds: 1
",
    );
    wait_for("3 ready replicas", TIMEOUT, || {
        c.get("deployment", "rolling")
            .filter(|d| d["status"]["readyReplicas"] == 3)
    });
    let service = c.get("service", "rolling").expect("service");
    let addr = format!(
        "{}:8080",
        service["spec"]["clusterIP"].as_str().expect("clusterIP")
    );

    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, addr) = (stop.clone(), addr.clone());
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match http_get(&addr, "/") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    c.kubectl(
        &["set", "image", "deployment/rolling", "web=hello-http:v2"],
        None,
    );
    let out = c.kubectl(
        &["rollout", "status", "deployment/rolling", "--timeout=120s"],
        None,
    );
    assert!(
        out.status.success(),
        "rollout status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = client.join().expect("client thread");
    assert!(
        ok >= 20,
        "only {ok} requests went through during the rollout"
    );
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the rolling update, e.g. {:?}",
        failed.len(),
        ok as usize + failed.len(),
        failed.first()
    );
    let pods = c
        .api_get("/api/v1/namespaces/default/pods?labelSelector=app%3Drolling")
        .expect("pods");
    let images: Vec<&str> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or(""))
        .collect();
    assert!(
        !images.is_empty() && images.iter().all(|i| *i == "hello-http:v2"),
        "{images:?}"
    );
}

/// A running `kubectl port-forward`, stopped when dropped.
struct PortForward {
    child: Child,
    /// The local address kubectl listens on.
    local: String,
    /// What kubectl printed on stderr after forwarding began.
    stderr: Arc<std::sync::Mutex<String>>,
}

impl PortForward {
    /// `kubectl port-forward TARGET :PORT` (a free local port, read from what kubectl prints),
    /// over kubectl's WebSocket tunnel, or `plain_spdy` as kubectl before 1.31 did.
    fn start(c: &Cluster, target: &str, port: u16, plain_spdy: bool) -> PortForward {
        let mut child = Command::new("kubectl")
            .args(["port-forward", target, &format!(":{port}")])
            .args(["--address", "127.0.0.1"])
            .env("KUBECONFIG", &c.kubeconfig)
            .env(
                "KUBECTL_PORT_FORWARD_WEBSOCKETS",
                if plain_spdy { "false" } else { "true" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl port-forward");
        // "Forwarding from 127.0.0.1:40123 -> 8080"
        let rx = picked_from_stdout(&mut child, |line| {
            let rest = line.strip_prefix("Forwarding from ")?;
            Some(rest.split(" -> ").next().unwrap_or("").to_string())
        });
        let stderr = Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let text = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let local = match rx.recv_timeout(TIMEOUT) {
            Ok(local) => local,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "kubectl port-forward {target} did not start: {}",
                    stderr.lock().unwrap()
                );
            }
        };
        PortForward {
            child,
            local,
            stderr,
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn port_forwards_of_kubectl_and_the_kube_crate_reach_a_pod_and_report_a_closed_port() {
    let c = Cluster::start();
    c.push(&sample("hello-http/hello-http.wasm"), "hello-http:v1");
    c.apply_ok(&format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: fwd
  labels:
    app: fwd
spec:
  nodeName: {NODE}
  containers:
    - name: main
      image: hello-http:v1
      ports:
        - name: http
          containerPort: 8080
      env:
        - name: POD
          value: fwd
---
apiVersion: v1
kind: Service
metadata:
  name: fwd
spec:
  selector:
    app: fwd
  ports:
    - port: 80
      targetPort: http
"
    ));
    let pod = c.wait_ready("fwd");
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_string();
    let direct = http_get(&format!("{pod_ip}:8080"), "/").expect("the pod answers");
    assert_eq!(direct.0, 200);

    // Through the pod: several connections one after another, then side by side.
    let fwd = PortForward::start(&c, "pod/fwd", 8080, false);
    for _ in 0..3 {
        let through = http_get(&fwd.local, "/").expect("an answer through the forward");
        assert_eq!(through, direct, "the same answer as from the pod");
    }
    // kubectl before 1.31 upgrades to SPDY directly, without the WebSocket tunnel.
    let plain = PortForward::start(&c, "pod/fwd", 8080, true);
    assert_eq!(http_get(&plain.local, "/").expect("an answer"), direct);
    let parallel: Vec<_> = (0..6)
        .map(|_| {
            let local = fwd.local.clone();
            std::thread::spawn(move || http_get(&local, "/"))
        })
        .collect();
    for t in parallel {
        let through = t.join().unwrap().expect("an answer through the forward");
        assert_eq!(through, direct);
    }

    // Through the Service: kubectl picks its pod and the target port behind port 80.
    let svc = PortForward::start(&c, "service/fwd", 80, false);
    assert_eq!(http_get(&svc.local, "/").expect("an answer").0, 200);

    // A port the pod does not listen on: the connection ends and kubectl reports why, as
    // kube-apiserver words it.
    let closed = PortForward::start(&c, "pod/fwd", 9, false);
    let _ = http_get(&closed.local, "/");
    let said = wait_for("kubectl's report of the refused port", TIMEOUT, || {
        let text = closed.stderr.lock().unwrap().clone();
        text.contains("error forwarding port 9 to pod fwd")
            .then_some(text)
    });
    assert!(said.contains("refused"), "{said}");

    // The kube crate's `Api::portforward`: the WebSocket channel protocol, two ports at once.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let kc = kube::config::Kubeconfig::read_from(&c.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, "default");
        let mut pf = tokio::time::timeout(TIMEOUT, pods.portforward("fwd", &[8080, 9]))
            .await
            .expect("an upgrade within 60s")
            .expect("the upgrade");
        let refused = pf.take_error(9).expect("port 9's error");
        let mut stream = pf.take_stream(8080).expect("port 8080's stream");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: fwd\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut text))
            .await
            .expect("the answer within 60s")
            .unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.ends_with(&direct.1), "{text}");
        let why = tokio::time::timeout(TIMEOUT, refused)
            .await
            .expect("port 9's error within 60s")
            .expect("an error message");
        assert!(why.contains("error forwarding port 9 to pod fwd"), "{why}");
    });
}

#[test]
fn statefulset_pods_are_reachable_by_their_stable_names_through_a_headless_service() {
    let c = Cluster::start();
    c.push(&sample("hello-http/hello-http.wasm"), "hello-http:v1");
    c.apply_ok(
        "apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector:
    app: db
  ports:
    - port: 8080
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  serviceName: db
  replicas: 2
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      app: db
  template:
    metadata:
      labels:
        app: db
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: main
          image: hello-http:v1
          ports:
            - containerPort: 8080
          env:
            - name: POD
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
",
    );
    let db0 = c.wait_ready("db-0");
    c.wait_ready("db-1");
    let from = format!("{}:8080", db0["status"]["podIP"].as_str().unwrap());
    let fetch = |url: &str| http_get(&from, &format!("/fetch?url={url}")).unwrap();
    // Each pod by its own name, in every form a pod's DNS search path accepts.
    for (url, pod) in [
        ("http://db-1.db:8080/env", "db-1"),
        ("http://db-0.db.default:8080/env", "db-0"),
        ("http://db-1.db.default.svc.cluster.local:8080/env", "db-1"),
    ] {
        let body = wait_for(&format!("{url} answered"), TIMEOUT, || {
            let (code, body) = fetch(url);
            (code == 200).then_some(body)
        });
        assert_eq!(pod_of(&body), pod, "{url}: {body}");
    }
    // The Service's own name reaches one of its pods.
    let (code, body) = fetch("http://db:8080/env");
    assert_eq!(code, 200, "{body}");
    assert!(pod_of(&body).starts_with("db-"), "{body}");
    // A hostname the Service does not have stays unknown.
    let (code, body) = fetch("http://db-7.db:8080/env");
    assert_eq!(code, 502, "{body}");
    // The endpoints carry the hostnames.
    let slices = c
        .api_get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Ddb")
        .unwrap();
    let mut hosts: Vec<String> = slices["items"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["hostname"].as_str().unwrap_or("").to_string())
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["db-0", "db-1"]);
}

#[test]
fn the_statefulset_sample_runs_on_flotilla_up_with_a_volume_per_pod() {
    let c = Cluster::start();
    c.push(&sample("hello-wasi/hello-wasi.wasm"), "hello-wasi:latest");
    let manifest = std::fs::read_to_string(sample("hello-wasi/statefulset.yaml")).unwrap();
    c.apply_ok(&manifest);
    for n in 0..2 {
        let pod = c.wait_ready(&format!("journal-{n}"));
        assert_eq!(pod["spec"]["hostname"], format!("journal-{n}"));
        let claim = wait_for(&format!("data-journal-{n} bound"), TIMEOUT, || {
            c.get("pvc", &format!("data-journal-{n}"))
                .filter(|p| p["status"]["phase"] == "Bound")
        });
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
        let logs = wait_for("the guest wrote its file", TIMEOUT, || {
            let out = c.kubectl(&["logs", &format!("journal-{n}")], None);
            let logs = String::from_utf8_lossy(&out.stdout).into_owned();
            logs.contains("written by hello-wasi").then_some(logs)
        });
        assert!(logs.contains("wrote /data/written-by-guest.txt"), "{logs}");
    }
}
