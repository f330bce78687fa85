//! Workload controllers end to end: `flotilla server` and separate `flotilla agent` processes
//! (so one can be killed), Wasm samples pushed to the cluster registry, the stock kubectl
//! driving Deployments, Jobs and DaemonSets.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Server, flotilla_bin, push_wasm, sample, wait_for};

/// Every wait for pods to get somewhere.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A node agent process, killed when dropped.
struct Agent {
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `flotilla agent` named `name` against `server`, with a pod range of its own.
    fn start(server: &Server, name: &str) -> Agent {
        Agent::start_with(server, name, &[])
    }

    /// [`Agent::start`] with more flags.
    fn start_with(server: &Server, name: &str, extra: &[&str]) -> Agent {
        let cidr = crate::harness::loopback_range();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new(flotilla_bin())
            .args([
                "agent",
                "--listen",
                "127.0.0.1:0",
                "--name",
                name,
                "--pod-cidr",
                &cidr,
            ])
            .args([
                "--restart-backoff-base-ms",
                "200",
                "--restart-backoff-max-ms",
                "1000",
            ])
            .args(extra)
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn flotilla agent");
        let agent = Agent {
            child: Some(child),
            _dir: dir,
        };
        wait_for(&format!("node {name} Ready"), TIMEOUT, || {
            let out = server.kubectl(&[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        });
        agent
    }

    /// The agent's `--data-dir`.
    fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `flotilla server` on a fixed port, returning the child and the kubeconfig.
fn spawn_server_on(dir: &Path, port: u16) -> Child {
    let kubeconfig = dir.join("kubeconfig");
    let child = Command::new(flotilla_bin())
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir)
        .arg("--write-kubeconfig")
        .arg(&kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn flotilla server");
    wait_for("the server to answer", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    child
}

/// Pushes a sample `.wasm` to the cluster's registry as `reference`.
fn push(url: &str, wasm: &str, reference: &str) {
    push_wasm(url, &sample(wasm), reference);
}

/// A Deployment of the hello-http sample (no resource requests, so many fit on a node).
fn deployment(name: &str, replicas: u32, image: &str, strategy: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels:\n      app: {name}\n{strategy}  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      runtimeClassName: wasmtime\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: web\n          image: {image}\n          ports:\n            - containerPort: 8080\n"
    )
}

fn pods(s: &Server, selector: &str) -> Vec<Value> {
    let out = s.kubectl(&["get", "pods", "-l", selector, "-o", "json"]);
    if !out.status.success() {
        return vec![];
    }
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["items"].as_array().cloned().unwrap_or_default()
}

fn is_ready(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn ready_pods(s: &Server, selector: &str) -> Vec<Value> {
    pods(s, selector).into_iter().filter(is_ready).collect()
}

fn rollout_status(s: &Server, name: &str) {
    s.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=55s",
    ]);
}

fn images(s: &Server, selector: &str) -> Vec<String> {
    let mut v: Vec<String> = pods(s, selector)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The reasons of the Events matching a field selector, space-separated.
fn event_reasons(s: &Server, field_selector: &str) -> String {
    s.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        field_selector,
        "-o",
        "jsonpath={.items[*].reason}",
    ])
}

/// A server and one node with `hello-http:v1` and `:v2` pushed, and a Deployment `name` of 3
/// v1 replicas with `strategy`, rolled out.
fn rolled_out_v1(node: &str, name: &str, strategy: &str) -> (Server, Agent) {
    let s = Server::start();
    let a = Agent::start(&s, node);
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v1");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v2");
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment(name, 3, "hello-http:v1", strategy),
    );
    rollout_status(&s, name);
    (s, a)
}

/// Lists the pods matching a label selector over and over on a thread of its own, handing each
/// list to a check, until stopped: a rollout observed throughout. It goes straight to the API
/// (a kubectl process per sample is too slow on a loaded machine to see a short rollout more
/// than once or twice).
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Sampler {
    fn start(
        s: &Server,
        selector: &str,
        mut check: impl FnMut(&[Value]) + Send + 'static,
    ) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let url = format!("{}/api/v1/namespaces/default/pods", s.url);
        let selector = selector.to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let client = reqwest::blocking::Client::new();
                let mut samples = 0;
                while !stop.load(Ordering::Relaxed) {
                    let parsed = client
                        .get(&url)
                        .query(&[("labelSelector", &selector)])
                        .send()
                        .and_then(|r| r.bytes())
                        .ok()
                        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                    if let Some(items) = parsed.as_ref().and_then(|v| v["items"].as_array()) {
                        check(items);
                        samples += 1;
                    }
                }
                samples
            }
        });
        Sampler { stop, thread }
    }

    /// Stops sampling; how many lists were checked.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("sampler thread")
    }
}

#[test]
fn a_deployment_replaces_deleted_pods_scales_rolls_out_without_dropping_below_min_available_and_rolls_back()
 {
    let strategy = "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 1\n";
    let (s, _a) = rolled_out_v1("ctl-node-1", "web", strategy);
    assert_eq!(ready_pods(&s, "app=web").len(), 3);

    // A deleted pod is replaced.
    let victim = ready_pods(&s, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    wait_for("a replacement pod", TIMEOUT, || {
        let ready = ready_pods(&s, "app=web");
        (ready.len() == 3
            && ready
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    });

    // Scale up and down.
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    wait_for("5 ready pods", TIMEOUT, || {
        (ready_pods(&s, "app=web").len() == 5).then_some(())
    });
    s.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    wait_for("3 pods left", TIMEOUT, || {
        (pods(&s, "app=web").len() == 3).then_some(())
    });
    let events = event_reasons(&s, "involvedObject.kind=ReplicaSet");
    assert!(
        events.contains("SuccessfulCreate") && events.contains("SuccessfulDelete"),
        "{events}"
    );

    // Rolling update v1 → v2, sampling readiness throughout: never fewer than
    // replicas - maxUnavailable = 2 ready pods.
    let low = Arc::new(Mutex::new(usize::MAX));
    let sampler = Sampler::start(&s, "app=web", {
        let low = low.clone();
        move |pods| {
            let n = pods.iter().filter(|p| is_ready(p)).count();
            let mut l = low.lock().unwrap();
            *l = (*l).min(n);
        }
    });
    // Each revision's change-cause is the Deployment's annotation while it was the new one.
    s.kubectl_ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=v1",
    ]);
    s.kubectl_ok(&["set", "image", "deployment/web", "web=hello-http:v2"]);
    rollout_status(&s, "web");
    s.kubectl_ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=v2",
        "--overwrite",
    ]);
    let samples = sampler.stop();
    let low = *low.lock().unwrap();
    assert!(samples >= 3, "only {samples} samples");
    assert!(
        low >= 2,
        "only {low} ready pods at one point during the rollout"
    );
    wait_for("only v2 pods", TIMEOUT, || {
        (images(&s, "app=web") == ["hello-http:v2"]).then_some(())
    });
    wait_for("the change-causes in the rollout history", TIMEOUT, || {
        let history = s.kubectl_ok(&["rollout", "history", "deployment/web"]);
        let rows: Vec<Vec<&str>> = history
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        (rows.contains(&vec!["1", "v1"]) && rows.contains(&vec!["2", "v2"])).then_some(())
    });

    // Undo returns to v1; undo --to-revision goes back to 2 (now revision 4).
    s.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    rollout_status(&s, "web");
    wait_for("only v1 pods", TIMEOUT, || {
        (images(&s, "app=web") == ["hello-http:v1"]).then_some(())
    });
    s.kubectl_ok(&["rollout", "undo", "deployment/web", "--to-revision=2"]);
    rollout_status(&s, "web");
    wait_for("v2 again", TIMEOUT, || {
        (images(&s, "app=web") == ["hello-http:v2"]).then_some(())
    });
    let rs: Value = s.kubectl_json(&["get", "rs", "-l", "app=web"]);
    let mut revisions: Vec<String> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    revisions.sort();
    assert_eq!(
        revisions,
        ["3", "4"],
        "two ReplicaSets, revisions renumbered by the rollbacks"
    );

    // Pause, resume, restart.
    s.kubectl_ok(&["rollout", "pause", "deployment/web"]);
    s.kubectl_ok(&["set", "image", "deployment/web", "web=hello-http:v1"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        images(&s, "app=web"),
        ["hello-http:v2"],
        "a paused deployment does not roll out"
    );
    let d: Value = s.kubectl_json(&["get", "deployment", "web"]);
    let progressing = d["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Progressing")
        .unwrap()
        .clone();
    assert_eq!(progressing["reason"], "DeploymentPaused");
    s.kubectl_ok(&["rollout", "resume", "deployment/web"]);
    rollout_status(&s, "web");
    s.kubectl_ok(&["rollout", "restart", "deployment/web"]);
    rollout_status(&s, "web");
    let d: Value = s.kubectl_json(&["get", "deployment", "web"]);
    assert_eq!(d["status"]["availableReplicas"], 3, "{}", d["status"]);
    let events = event_reasons(&s, "involvedObject.kind=Deployment");
    assert!(events.contains("ScalingReplicaSet"), "{events}");
}

#[test]
fn a_recreate_rollout_stops_every_old_pod_before_it_starts_a_new_one() {
    let strategy = "  strategy:\n    type: Recreate\n";
    let (s, _a) = rolled_out_v1("ctl-recreate", "redo", strategy);
    // Kubernetes' Recreate: no new pod exists while an old one is still running (terminating
    // counts as running until it has stopped).
    let overlap = Arc::new(Mutex::new(None::<Vec<String>>));
    let sampler = Sampler::start(&s, "app=redo", {
        let overlap = overlap.clone();
        move |pods| {
            let live = |image: &str| {
                pods.iter().any(|p| {
                    p["spec"]["containers"][0]["image"] == image
                        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
                })
            };
            if live("hello-http:v1") && live("hello-http:v2") {
                let names = pods
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {}",
                            p["metadata"]["name"], p["spec"]["containers"][0]["image"]
                        )
                    })
                    .collect();
                overlap.lock().unwrap().get_or_insert(names);
            }
        }
    });
    s.kubectl_ok(&["set", "image", "deployment/redo", "web=hello-http:v2"]);
    rollout_status(&s, "redo");
    wait_for("three v2 pods ready", TIMEOUT, || {
        (images(&s, "app=redo") == ["hello-http:v2"] && ready_pods(&s, "app=redo").len() == 3)
            .then_some(())
    });
    let samples = sampler.stop();
    assert!(samples >= 3, "only {samples} samples");
    let overlap = overlap.lock().unwrap().clone();
    assert!(overlap.is_none(), "old and new pods at once: {overlap:?}");
}

/// Waits (up to 50 s) for Job `name`'s `condition`; returns the Job.
fn wait_job(s: &Server, name: &str, condition: &str) -> Value {
    s.kubectl_ok(&[
        "wait",
        &format!("--for=condition={condition}"),
        &format!("job/{name}"),
        "--timeout=50s",
    ]);
    s.kubectl_json(&["get", "job", name])
}

/// A Job's condition of type `kind` (which it must have).
fn job_condition(job: &Value, kind: &str) -> Value {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .cloned()
        .unwrap_or_else(|| panic!("no {kind} condition in {}", job["status"]))
}

/// A Job `name` with the `spec` lines given (indented two spaces) whose pods run hello-wasi,
/// exiting with `exit`.
fn hello_job(name: &str, spec: &str, exit: u32) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      runtimeClassName: wasmtime\n      restartPolicy: Never\n      containers:\n        - name: main\n          image: hello-wasi:latest\n          env:\n            - name: HELLO_EXIT\n              value: \"{exit}\"\n"
    )
}

/// A control plane whose Job controller replaces failed pods after 200 ms, 400 ms, …
/// (Kubernetes: 10 s, 20 s), an agent `node`, and the hello-wasi image pushed. The directory
/// comes first so that it goes last.
fn job_cluster(node: &str) -> (tempfile::TempDir, Server, Agent) {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Server::start_in(dir.path(), &["--job-backoff-base-ms", "200"]);
    let a = Agent::start(&s, node);
    push(&s.url, "hello-wasi/hello-wasi.wasm", "hello-wasi:latest");
    (dir, s, a)
}

#[test]
fn a_pod_failure_policy_fails_a_job_at_once_or_ignores_a_failure() {
    let (_dir, s, _a) = job_cluster("ctl-policy-node");
    let job = |name: &str, exit: u32, backoff: u32, rule: &str| {
        let spec =
            format!("  backoffLimit: {backoff}\n  podFailurePolicy:\n    rules:\n      - {rule}\n");
        hello_job(name, &spec, exit)
    };
    // Exit code 3 fails the Job at its first pod, however many failures backoffLimit allows.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job(
            "fatal",
            3,
            6,
            "{action: FailJob, onExitCodes: {containerName: main, operator: In, values: [3]}}",
        ),
    );
    // Exit code 4 is ignored: a Job that allows no failure keeps replacing the pod.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &job(
            "tolerant",
            4,
            0,
            "{action: Ignore, onExitCodes: {operator: In, values: [4]}}",
        ),
    );
    let j = wait_job(&s, "fatal", "Failed");
    for kind in ["FailureTarget", "Failed"] {
        let c = job_condition(&j, kind);
        assert_eq!(c["reason"], "PodFailurePolicy", "{c}");
        let message = c["message"].as_str().unwrap();
        assert!(
            message.starts_with("Container main for pod default/fatal-")
                && message.ends_with("failed with exit code 3 matching FailJob rule at index 0"),
            "{message}"
        );
    }
    assert_eq!(
        pods(&s, "job-name=fatal").len(),
        1,
        "no pod after the first"
    );

    wait_for("the ignored failures replaced twice", TIMEOUT, || {
        (pods(&s, "job-name=tolerant")
            .iter()
            .filter(|p| p["status"]["phase"] == "Failed")
            .count()
            >= 3)
            .then_some(())
    });
    let j: Value = s.kubectl_json(&["get", "job", "tolerant"]);
    assert!(j["status"]["failed"].is_null(), "{}", j["status"]);
    assert!(
        j["status"]["conditions"]
            .as_array()
            .is_none_or(|cs| cs.iter().all(|c| c["type"] != "Failed")),
        "{}",
        j["status"]
    );
}

#[test]
fn an_indexed_job_runs_each_index_once_to_success_or_until_its_success_policy_is_met() {
    let (_dir, s, _a) = job_cluster("ctl-indexed-node");
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &hello_job(
            "indexed",
            "  completionMode: Indexed\n  completions: 3\n  parallelism: 2\n",
            0,
        ),
    );
    let j = wait_job(&s, "indexed", "Complete");
    assert_eq!(j["status"]["completedIndexes"], "0-2", "{}", j["status"]);
    assert_eq!(j["status"]["succeeded"], 3, "{}", j["status"]);
    let mut seen: Vec<i64> = Vec::new();
    for p in pods(&s, "job-name=indexed") {
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .expect("the index annotation")
            .to_string();
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        assert!(name.starts_with(&format!("indexed-{index}-")), "{name}");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            index.as_str()
        );
        assert_eq!(p["spec"]["hostname"], format!("indexed-{index}"));
        let logs = s.kubectl_ok(&["logs", &name]);
        assert!(
            logs.contains(&format!("env: JOB_COMPLETION_INDEX={index}")),
            "{name}: {logs}"
        );
        seen.push(index.parse().unwrap());
    }
    seen.sort();
    assert_eq!(seen, [0, 1, 2], "one pod per index");

    // A success policy met by index 0 alone completes a Job of five indexes.
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &hello_job(
            "first",
            "  completionMode: Indexed\n  completions: 5\n  parallelism: 1\n  successPolicy:\n    rules:\n      - succeededIndexes: \"0\"\n",
            0,
        ),
    );
    let j = wait_job(&s, "first", "Complete");
    assert_eq!(j["status"]["completedIndexes"], "0", "{}", j["status"]);
    for kind in ["SuccessCriteriaMet", "Complete"] {
        let c = job_condition(&j, kind);
        assert_eq!(c["reason"], "SuccessPolicy", "{c}");
        assert_eq!(c["message"], "Matched rules at index 0", "{c}");
    }
    assert_eq!(pods(&s, "job-name=first").len(), 1, "indexes 1-4 never ran");

    // With a backoff limit per index, each failing index runs twice, then fails for good, and
    // the Job fails once every index is settled; with maxFailedIndexes 0, at the first.
    let failing = |name: &str, extra: &str| {
        let spec = format!(
            "  completionMode: Indexed\n  completions: 2\n  parallelism: 2\n  backoffLimitPerIndex: 1\n{extra}"
        );
        hello_job(name, &spec, 5)
    };
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &failing("per-index", ""));
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &failing("no-failed-index", "  maxFailedIndexes: 0\n"),
    );
    for (name, reason) in [
        ("per-index", "FailedIndexes"),
        ("no-failed-index", "MaxFailedIndexesExceeded"),
    ] {
        let j = wait_job(&s, name, "Failed");
        let failed = job_condition(&j, "Failed");
        assert_eq!(failed["reason"], reason, "{name}: {}", j["status"]);
    }
    let j: Value = s.kubectl_json(&["get", "job", "per-index"]);
    assert_eq!(j["status"]["failedIndexes"], "0-1", "{}", j["status"]);
    let mut tries: Vec<(String, String)> = pods(&s, "job-name=per-index")
        .iter()
        .map(|p| {
            let a = &p["metadata"]["annotations"];
            (
                a["batch.kubernetes.io/job-completion-index"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                a["batch.kubernetes.io/job-index-failure-count"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    tries.sort();
    let want = [("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")];
    assert_eq!(tries, want.map(|(i, n)| (i.to_string(), n.to_string())));
}

#[test]
fn a_job_with_a_failing_command_stops_at_its_backoff_limit_and_a_good_one_completes() {
    let (_dir, s, _a) = job_cluster("ctl-job-node");
    let job = |name: &str, exit: u32, completions: u32, extra: &str| {
        let spec =
            format!("{extra}  backoffLimit: 2\n  completions: {completions}\n  parallelism: 2\n");
        hello_job(name, &spec, exit)
    };
    s.kubectl_stdin(&["apply", "-f", "-"], &job("fails", 3, 1, ""));
    s.kubectl_stdin(&["apply", "-f", "-"], &job("works", 0, 3, ""));
    // A finished Job with ttlSecondsAfterFinished is deleted, its pods with it.
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &job("tidy", 0, 1, "  ttlSecondsAfterFinished: 1\n"),
    );
    let j = wait_job(&s, "fails", "Failed");
    assert_eq!(
        j["status"]["failed"], 3,
        "backoffLimit 2 allows 3 failures: {}",
        j["status"]
    );
    let failed = job_condition(&j, "Failed");
    assert_eq!(failed["reason"], "BackoffLimitExceeded");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pods(&s, "job-name=fails").len(),
        3,
        "no pod after the limit"
    );
    let j = wait_job(&s, "works", "Complete");
    assert_eq!(j["status"]["succeeded"], 3, "{}", j["status"]);
    assert!(j["status"]["completionTime"].is_string());
    assert_eq!(
        j["status"]["uncountedTerminatedPods"],
        serde_json::json!({})
    );
    assert!(j["status"]["failed"].is_null(), "{}", j["status"]);

    // Counted pods no longer hold the tracking finalizer: deleting the Jobs is not blocked,
    // whether the pods go with them or are orphaned.
    let finalizers = |sel: &str| -> Vec<Value> {
        pods(&s, sel)
            .iter()
            .filter_map(|p| p["metadata"]["finalizers"].as_array().cloned())
            .flatten()
            .collect()
    };
    wait_for("finalizers released", TIMEOUT, || {
        (finalizers("job-name=works").is_empty() && finalizers("job-name=fails").is_empty())
            .then_some(())
    });
    s.kubectl_ok(&["delete", "job", "works", "--timeout=50s"]);
    wait_for("the Job's pods gone with it", TIMEOUT, || {
        pods(&s, "job-name=works").is_empty().then_some(())
    });
    s.kubectl_ok(&[
        "delete",
        "job",
        "fails",
        "--cascade=orphan",
        "--timeout=50s",
    ]);
    assert_eq!(pods(&s, "job-name=fails").len(), 3, "orphaned pods stay");

    wait_for("the finished Job with a TTL deleted", TIMEOUT, || {
        let out = s.kubectl(&["get", "job", "tidy", "-o", "name"]);
        let err = String::from_utf8_lossy(&out.stderr);
        (!out.status.success() && err.contains("NotFound")).then_some(())
    });
    wait_for("its pods gone with it", TIMEOUT, || {
        pods(&s, "job-name=tidy").is_empty().then_some(())
    });
    let events = event_reasons(&s, "involvedObject.name=tidy");
    assert!(events.contains("Completed"), "it completed first: {events}");
}

/// A Deployment whose pods stay Pending (the cluster has no node), so deletions are instant.
fn cascade_fixture(s: &Server, name: &str) {
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment(name, 2, "hello-http:v1", ""),
    );
    wait_for(&format!("{name}: a ReplicaSet and 2 pods"), TIMEOUT, || {
        let rs = s.kubectl_json(&["get", "rs", "-l", &format!("app={name}")]);
        (rs["items"].as_array().unwrap().len() == 1 && pods(s, &format!("app={name}")).len() == 2)
            .then_some(())
    });
}

#[test]
fn cascading_deletion_works_in_background_foreground_and_orphan_modes() {
    let s = Server::start();
    for name in ["bg", "fg", "orphan"] {
        cascade_fixture(&s, name);
    }
    let count = |kind: &str, name: &str| {
        s.kubectl_json(&["get", kind, "-l", &format!("app={name}")])["items"]
            .as_array()
            .unwrap()
            .len()
    };

    s.kubectl_ok(&["delete", "deployment", "bg", "--cascade=background"]);
    wait_for("background: ReplicaSet and pods gone", TIMEOUT, || {
        (count("rs", "bg") == 0 && count("pods", "bg") == 0).then_some(())
    });

    // Foreground: kubectl waits for the Deployment to go, which happens only after its
    // dependents are gone.
    s.kubectl_ok(&[
        "delete",
        "deployment",
        "fg",
        "--cascade=foreground",
        "--timeout=50s",
    ]);
    assert_eq!(
        count("rs", "fg"),
        0,
        "foreground: the ReplicaSet went before its owner"
    );
    assert_eq!(
        count("pods", "fg"),
        0,
        "foreground: the pods went before their owner's owner"
    );

    // An eviction (policy/v1) deletes the pod; its ReplicaSet replaces it.
    let victim = pods(&s, "app=orphan")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let eviction = serde_json::json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": victim, "namespace": "default"}});
    let r = reqwest::blocking::Client::new()
        .post(format!(
            "{}/api/v1/namespaces/default/pods/{victim}/eviction",
            s.url
        ))
        .json(&eviction)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    wait_for("the evicted pod replaced", TIMEOUT, || {
        let p = pods(&s, "app=orphan");
        (p.len() == 2 && p.iter().all(|p| p["metadata"]["name"] != victim.as_str())).then_some(())
    });
    s.kubectl_ok(&[
        "delete",
        "deployment",
        "orphan",
        "--cascade=orphan",
        "--timeout=50s",
    ]);
    let rs = s.kubectl_json(&["get", "rs", "-l", "app=orphan"]);
    let items = rs["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "orphan: the ReplicaSet stays");
    assert!(
        items[0]["metadata"]["ownerReferences"].is_null(),
        "orphan: no owner left: {}",
        items[0]["metadata"]
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        count("rs", "orphan"),
        1,
        "the collector leaves orphans alone"
    );
    assert_eq!(count("pods", "orphan"), 2);
}

#[test]
fn a_daemonset_follows_nodes_and_a_dead_nodes_pods_run_elsewhere_within_ten_seconds() {
    let s = Server::start();
    let _a = Agent::start(&s, "ctl-a");
    let mut b = Agent::start(&s, "ctl-b");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v1");
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: daemon\nspec:\n  selector:\n    matchLabels:\n      app: daemon\n  template:\n    metadata:\n      labels:\n        app: daemon\n    spec:\n      runtimeClassName: wasmtime\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: d\n          image: hello-http:v1\n";
    s.kubectl_stdin(&["apply", "-f", "-"], ds);
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment("spread", 4, "hello-http:v1", ""),
    );
    let nodes_of = |sel: &str| {
        let mut n: Vec<String> = ready_pods(&s, sel)
            .iter()
            .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    };
    wait_for("a daemon pod on each node", TIMEOUT, || {
        (nodes_of("app=daemon") == ["ctl-a", "ctl-b"]).then_some(())
    });
    wait_for("4 ready pods over both nodes", TIMEOUT, || {
        let n = nodes_of("app=spread");
        (n.len() == 4 && n.contains(&"ctl-b".to_string())).then_some(())
    });

    // kill -9 one node: its pods run on the other within the default time.
    let killed = Instant::now();
    b.kill9();
    let took = wait_for(
        "the dead node's pods running on ctl-a",
        Duration::from_secs(30),
        || {
            let ready = ready_pods(&s, "app=spread");
            let all_on_a = ready.len() == 4
                && ready
                    .iter()
                    .all(|p| p["spec"]["nodeName"] == "ctl-a" && p["status"]["phase"] == "Running");
            all_on_a.then(|| killed.elapsed())
        },
    );
    eprintln!("a dead node's pods were running elsewhere after {took:?}");
    assert!(took <= Duration::from_secs(10), "took {took:?}");
    let node: Value = s.kubectl_json(&["get", "node", "ctl-b"]);
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown");
    assert!(
        node["spec"]["taints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
    );
    // Daemon pods tolerate an unreachable node; when the node leaves, so does its daemon.
    s.kubectl_ok(&["delete", "node", "ctl-b"]);
    wait_for("the daemon pod of the removed node gone", TIMEOUT, || {
        pods(&s, "app=daemon")
            .iter()
            .all(|p| p["spec"]["nodeName"] == "ctl-a")
            .then_some(())
    });
    // A joining node gets its daemon.
    let _c = Agent::start(&s, "ctl-c");
    wait_for("a daemon pod on the new node", TIMEOUT, || {
        (nodes_of("app=daemon") == ["ctl-a", "ctl-c"]).then_some(())
    });
    let d: Value = s.kubectl_json(&["get", "ds", "daemon"]);
    assert_eq!(d["status"]["desiredNumberScheduled"], 2, "{}", d["status"]);
    // A rolling update replaces the daemon pods with the new template.
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v2");
    s.kubectl_ok(&["set", "image", "daemonset/daemon", "d=hello-http:v2"]);
    s.kubectl_ok(&["rollout", "status", "daemonset/daemon", "--timeout=55s"]);
    wait_for("v2 daemon pods on both nodes", TIMEOUT, || {
        (images(&s, "app=daemon") == ["hello-http:v2"]
            && nodes_of("app=daemon") == ["ctl-a", "ctl-c"])
        .then_some(())
    });
}

#[test]
fn a_rollout_interrupted_by_a_control_plane_restart_completes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = spawn_server_on(dir.path(), port);
    let s = Server::attach(dir.path(), &format!("http://127.0.0.1:{port}"));
    let _a = Agent::start(&s, "ctl-restart");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v1");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v2");
    // One pod at a time, each waiting a second to count as available: a slow rollout.
    let strategy = "  minReadySeconds: 1\n  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 1\n      maxUnavailable: 0\n";
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &deployment("slow", 4, "hello-http:v1", strategy),
    );
    rollout_status(&s, "slow");
    s.kubectl_ok(&["set", "image", "deployment/slow", "web=hello-http:v2"]);
    wait_for("the rollout under way", TIMEOUT, || {
        let d = s.kubectl_json(&["get", "deployment", "slow"]);
        let updated = d["status"]["updatedReplicas"].as_i64().unwrap_or(0);
        (1..4).contains(&updated).then_some(())
    });
    let _ = server.kill();
    let _ = server.wait();
    let mut server = spawn_server_on(dir.path(), port);
    rollout_status(&s, "slow");
    wait_for("only v2 pods", TIMEOUT, || {
        (images(&s, "app=slow") == ["hello-http:v2"] && ready_pods(&s, "app=slow").len() == 4)
            .then_some(())
    });
    let _ = server.kill();
    let _ = server.wait();
}

/// The `metadata.ownerReferences[controller].name` of an object, or "" when it has none.
fn controller_name(obj: &Value) -> String {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
        .and_then(|r| r["name"].as_str())
        .unwrap_or("")
        .to_string()
}

fn apply(s: &Server, manifest: &str) {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn orphans_are_adopted_and_dependents_whose_labels_stop_matching_are_released() {
    // No node: pods stay Pending, which is all ownership needs.
    let s = Server::start();

    // A ReplicaSet adopts a matching bare pod (created before and after it) and releases a
    // pod relabelled away from its selector, replacing it.
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: adopt\nspec:\n  containers:\n    - name: c\n      image: hello-http:v1\n"
        )
    };
    apply(&s, &pod("early"));
    apply(
        &s,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: keeper\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: adopt\n  template:\n    metadata:\n      labels:\n        app: adopt\n    spec:\n      containers:\n        - name: c\n          image: hello-http:v1\n",
    );
    wait_for("the early pod adopted and 3 pods in all", TIMEOUT, || {
        let p = pods(&s, "app=adopt");
        (p.len() == 3 && p.iter().all(|p| controller_name(p) == "keeper")).then_some(())
    });
    // A bare pod made later is adopted too, and one pod too many goes.
    apply(&s, &pod("late"));
    wait_for("the late pod adopted, back to 3 pods", TIMEOUT, || {
        let p = pods(&s, "app=adopt");
        (p.len() == 3 && p.iter().all(|p| controller_name(p) == "keeper")).then_some(())
    });
    let kept = pods(&s, "app=adopt")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["label", "pod", &kept, "app=gone", "--overwrite"]);
    wait_for("the relabelled pod released and replaced", TIMEOUT, || {
        let gone = s.kubectl_json(&["get", "pod", &kept]);
        let p = pods(&s, "app=adopt");
        (gone["metadata"]["ownerReferences"].is_null()
            && p.len() == 3
            && p.iter().all(|p| controller_name(p) == "keeper"))
        .then_some(())
    });

    // A Deployment adopts a matching orphan ReplicaSet with its template (and makes no
    // other), then releases it when its labels stop matching and makes its own.
    let d = deployment("adoptee", 2, "hello-http:v1", "");
    let template = &d[d.find("  template:").unwrap()..];
    apply(
        &s,
        &format!(
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: handmade\n  labels:\n    app: adoptee\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: adoptee\n{template}"
        ),
    );
    apply(&s, &d);
    wait_for("the orphan ReplicaSet adopted", TIMEOUT, || {
        let rs = s.kubectl_json(&["get", "rs", "handmade"]);
        (controller_name(&rs) == "adoptee").then_some(())
    });
    rollout_revision_settles(&s, "adoptee");
    let sets = s.kubectl_json(&["get", "rs", "-l", "app=adoptee"]);
    assert_eq!(
        sets["items"].as_array().unwrap().len(),
        1,
        "the adopted ReplicaSet is the Deployment's: {}",
        sets["items"]
    );
    s.kubectl_ok(&["label", "rs", "handmade", "app=other", "--overwrite"]);
    wait_for(
        "the relabelled ReplicaSet released, a new one made",
        TIMEOUT,
        || {
            let released = s.kubectl_json(&["get", "rs", "handmade"]);
            let sets = s.kubectl_json(&["get", "rs", "-l", "app=adoptee"]);
            let sets = sets["items"].as_array().unwrap();
            (released["metadata"]["ownerReferences"].is_null()
                && sets.len() == 1
                && controller_name(&sets[0]) == "adoptee"
                && sets[0]["spec"]["replicas"] == 2)
                .then_some(())
        },
    );
}

/// Waits until the Deployment `name` has a revision and its status counts 2 replicas.
fn rollout_revision_settles(s: &Server, name: &str) {
    wait_for(&format!("{name}: revision set"), TIMEOUT, || {
        let d = s.kubectl_json(&["get", "deployment", name]);
        (d["metadata"]["annotations"]["deployment.kubernetes.io/revision"].is_string()
            && d["status"]["replicas"] == 2)
            .then_some(())
    });
}

#[test]
fn scaling_a_deployment_in_the_middle_of_a_rollout_spreads_replicas_proportionally() {
    // Kubernetes' documented example. No node: no pod gets ready, so the rollout from v1 to
    // v2 stops with 8 old and 5 new pods (10 replicas, maxSurge 3, maxUnavailable 2).
    let s = Server::start();
    let strategy = "  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 3\n      maxUnavailable: 2\n";
    apply(&s, &deployment("prop", 10, "hello-http:v1", strategy));
    wait_for("10 pods", TIMEOUT, || {
        (pods(&s, "app=prop").len() == 10).then_some(())
    });
    let sizes = || -> Vec<(String, i64)> {
        let rs = s.kubectl_json(&["get", "rs", "-l", "app=prop"]);
        let mut v: Vec<(String, i64)> = rs["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r["spec"]["replicas"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        v.sort();
        v
    };
    s.kubectl_ok(&["set", "image", "deployment/prop", "web=hello-http:v2"]);
    let stuck = vec![
        ("hello-http:v1".to_string(), 8),
        ("hello-http:v2".to_string(), 5),
    ];
    wait_for("the rollout stuck at 8 old and 5 new", TIMEOUT, || {
        (sizes() == stuck).then_some(())
    });
    s.kubectl_ok(&["scale", "deployment/prop", "--replicas=15"]);
    let spread = vec![
        ("hello-http:v1".to_string(), 11),
        ("hello-http:v2".to_string(), 7),
    ];
    wait_for("3 more old and 2 more new", TIMEOUT, || {
        (sizes() == spread).then_some(())
    });
    let rs = s.kubectl_json(&["get", "rs", "-l", "app=prop"]);
    for r in rs["items"].as_array().unwrap() {
        let a = &r["metadata"]["annotations"];
        assert_eq!(a["deployment.kubernetes.io/desired-replicas"], "15", "{a}");
        assert_eq!(a["deployment.kubernetes.io/max-replicas"], "18", "{a}");
    }
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(sizes(), spread, "the spread holds");
}

#[test]
fn a_daemonset_keeps_controller_revisions_rolls_back_surges_and_waits_on_delete() {
    let s = Server::start();
    let _a = Agent::start(&s, "ctl-ds");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v1");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v2");
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: hist\nspec:\n  selector:\n    matchLabels:\n      app: hist\n  template:\n    metadata:\n      labels:\n        app: hist\n    spec:\n      runtimeClassName: wasmtime\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: d\n          image: hello-http:v1\n";
    apply(&s, ds);
    let status = || s.kubectl_ok(&["rollout", "status", "ds/hist", "--timeout=55s"]);
    let only = |image: &str| {
        wait_for(&format!("only {image} daemon pods"), TIMEOUT, || {
            let p = pods(&s, "app=hist");
            (p.len() == 1 && is_ready(&p[0]) && p[0]["spec"]["containers"][0]["image"] == image)
                .then_some(())
        });
    };
    status();
    only("hello-http:v1");
    s.kubectl_ok(&["set", "image", "ds/hist", "d=hello-http:v2"]);
    status();
    only("hello-http:v2");
    let history = s.kubectl_ok(&["rollout", "history", "ds/hist"]);
    let revisions = |h: &str| -> Vec<String> {
        h.lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    };
    assert_eq!(revisions(&history), ["1", "2"], "{history}");
    let v1 = s.kubectl_ok(&["rollout", "history", "ds/hist", "--revision=1"]);
    assert!(v1.contains("hello-http:v1"), "{v1}");
    let crs = s.kubectl_ok(&["get", "controllerrevisions"]);
    assert!(crs.contains("daemonset.apps/hist"), "{crs}");

    // Undo goes back to v1, whose revision becomes 3.
    s.kubectl_ok(&["rollout", "undo", "ds/hist"]);
    status();
    only("hello-http:v1");
    let history = s.kubectl_ok(&["rollout", "history", "ds/hist"]);
    assert_eq!(revisions(&history), ["2", "3"], "{history}");

    // maxSurge: the new pod starts beside the old one, which goes once the new one is
    // ready, so the node always has a ready daemon.
    s.kubectl_ok(&[
        "patch",
        "ds/hist",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((usize::MAX, 0usize, 0usize)));
    let sampler = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let url = format!(
            "{}/api/v1/namespaces/default/pods?labelSelector=app%3Dhist",
            s.url
        );
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let parsed = client
                    .get(&url)
                    .send()
                    .and_then(|r| r.bytes())
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
                if let Some(v) = parsed {
                    let items = v["items"].as_array().cloned().unwrap_or_default();
                    let ready = items.iter().filter(|p| is_ready(p)).count();
                    let mut s = seen.lock().unwrap();
                    s.0 = s.0.min(ready);
                    s.1 = s.1.max(items.len());
                    s.2 += 1;
                }
            }
        })
    };
    s.kubectl_ok(&["set", "image", "ds/hist", "d=hello-http:v2"]);
    status();
    only("hello-http:v2");
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let (low, most, samples) = *seen.lock().unwrap();
    assert!(samples >= 3, "only {samples} samples");
    assert!(low >= 1, "a moment without a ready daemon pod");
    assert!(most >= 2, "the new pod never ran beside the old one");

    // OnDelete: a new template waits until the user deletes the pod.
    s.kubectl_ok(&[
        "patch",
        "ds/hist",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ]);
    s.kubectl_ok(&["set", "image", "ds/hist", "d=hello-http:v1"]);
    std::thread::sleep(Duration::from_millis(1500));
    let p = pods(&s, "app=hist");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["spec"]["containers"][0]["image"], "hello-http:v2");
    let name = p[0]["metadata"]["name"].as_str().unwrap().to_string();
    s.kubectl_ok(&["delete", "pod", &name, "--wait=false"]);
    only("hello-http:v1");

    // Deleted with --cascade=orphan and made again, the DaemonSet adopts its pod (kept, it
    // has the current template) and its history.
    let kept = pods(&s, "app=hist")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.kubectl_ok(&["delete", "ds", "hist", "--cascade=orphan", "--timeout=50s"]);
    apply(&s, ds);
    wait_for("the orphaned pod and history adopted", TIMEOUT, || {
        let p = pods(&s, "app=hist");
        let crs = s.kubectl_json(&["get", "controllerrevisions", "-l", "app=hist"]);
        let crs = crs["items"].as_array().cloned().unwrap_or_default();
        (p.len() == 1
            && p[0]["metadata"]["name"] == kept.as_str()
            && controller_name(&p[0]) == "hist"
            && !crs.is_empty()
            && crs.iter().all(|c| controller_name(c) == "hist"))
        .then_some(())
    });
    status();
    std::thread::sleep(Duration::from_millis(500));
    let p = pods(&s, "app=hist");
    assert_eq!(p.len(), 1, "the adopted pod was not replaced");
    assert_eq!(p[0]["metadata"]["name"], kept.as_str());
}

#[test]
fn events_expire_once_not_seen_for_the_event_ttl() {
    // `--event-ttl 5s` sweeps every 1.25 s. Two Events are recorded with a microsecond
    // `eventTime`; one is seen again 3.1 s later (`series.lastObservedTime` and its count
    // bumped). The other goes 5 to 6.25 s after it was written, while the bumped one is still
    // there (it is due at 8.1 s at the earliest), then the bumped one goes too.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--event-ttl", "5s"]);
    let client = reqwest::blocking::Client::new();
    let events = format!("{}/api/v1/namespaces/default/events", s.url);
    let now = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let started = Instant::now();
    for name in ["once", "again"] {
        let body = serde_json::json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "p"},
            "reason": "Testing", "message": name, "type": "Normal", "action": "Testing",
            "reportingComponent": "e2e", "reportingInstance": "e2e", "eventTime": now()});
        let r = client.post(&events).json(&body).send().unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let exists = |name: &str| {
        let code = client
            .get(format!("{events}/{name}"))
            .send()
            .unwrap()
            .status()
            .as_u16();
        assert!(code == 200 || code == 404, "GET {name}: {code}");
        code == 200
    };
    std::thread::sleep(Duration::from_millis(3100).saturating_sub(started.elapsed()));
    assert!(
        exists("once") && exists("again"),
        "both kept within the TTL"
    );
    let r = client
        .patch(format!("{events}/again"))
        .header("Content-Type", "application/merge-patch+json")
        .body(serde_json::json!({"series": {"count": 2, "lastObservedTime": now()}}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_for(
        "the event not seen again to expire",
        Duration::from_secs(15),
        || (!exists("once")).then_some(()),
    );
    assert!(
        exists("again"),
        "the event seen again is kept ({:?} after the start)",
        started.elapsed()
    );
    wait_for(
        "the bumped event to expire too",
        Duration::from_secs(15),
        || (!exists("again")).then_some(()),
    );
}

/// The PodDisruptionBudget `guarded` of the Deployment `guarded`'s pods, keeping `min` Ready.
fn budget(min: u32) -> String {
    format!(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: guarded\nspec:\n  minAvailable: {min}\n  selector:\n    matchLabels:\n      app: guarded\n"
    )
}

fn budget_status(s: &Server) -> Value {
    s.kubectl_json(&["get", "pdb", "guarded"])["status"].clone()
}

#[test]
fn kubectl_drain_honours_a_pod_disruption_budget() {
    let s = Server::start();
    let _a = Agent::start(&s, "node-a");
    let _b = Agent::start(&s, "node-b");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v1");
    apply(&s, &deployment("guarded", 2, "hello-http:v1", ""));
    rollout_status(&s, "guarded");
    apply(&s, &budget(2));
    // Two pods, both needed: nothing may be evicted.
    let status = wait_for("the budget's status", TIMEOUT, || {
        let st = budget_status(&s);
        (st["observedGeneration"] == 1 && st["currentHealthy"] == 2).then_some(st)
    });
    assert_eq!(status["desiredHealthy"], 2, "{status}");
    assert_eq!(status["expectedPods"], 2, "{status}");
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");
    assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");
    let table = s.kubectl_ok(&["get", "pdb"]);
    assert!(
        table.contains("ALLOWED DISRUPTIONS") && table.contains("N/A"),
        "{table}"
    );
    let node_of_first = pods(&s, "app=guarded")[0]["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string();
    let out = s.kubectl(&["drain", &node_of_first, "--timeout=6s"]);
    assert!(!out.status.success(), "the drain should have been refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Cannot evict pod as it would violate the pod's disruption budget."),
        "{err}"
    );
    assert_eq!(ready_pods(&s, "app=guarded").len(), 2);
    s.kubectl_ok(&["uncordon", &node_of_first]);

    // One may go at a time: draining a node moves its pod to the other node.
    apply(&s, &budget(1));
    wait_for("one disruption allowed", TIMEOUT, || {
        let st = budget_status(&s);
        (st["observedGeneration"] == 2 && st["disruptionsAllowed"] == 1).then_some(())
    });
    let drained = s.kubectl(&["drain", "node-a", "--timeout=50s"]);
    assert!(
        drained.status.success(),
        "{}",
        String::from_utf8_lossy(&drained.stderr)
    );
    let on_b = wait_for("both pods Ready on node-b", TIMEOUT, || {
        let ready = ready_pods(&s, "app=guarded");
        (ready.len() == 2 && ready.iter().all(|p| p["spec"]["nodeName"] == "node-b"))
            .then_some(ready)
    });
    // Draining node-b too: its first eviction takes the one disruption; its replacement has
    // nowhere to run, so the second eviction is refused until the drain gives up.
    let out = s.kubectl(&["drain", "node-b", "--timeout=8s"]);
    assert!(
        !out.status.success(),
        "the second eviction should have been refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("violate the pod's disruption budget"), "{err}");
    let left: Vec<Value> = ready_pods(&s, "app=guarded");
    assert_eq!(left.len(), 1, "exactly one of {} evicted", on_b.len());
    let status = budget_status(&s);
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");
    assert_eq!(status["currentHealthy"], 1, "{status}");
}

fn cronjob(name: &str, schedule: &str, extra: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {name}\nspec:\n  schedule: \"{schedule}\"\n{extra}  successfulJobsHistoryLimit: 1\n  jobTemplate:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      template:\n        spec:\n          runtimeClassName: wasmtime\n          restartPolicy: Never\n          containers:\n            - name: main\n              image: hello-wasi:latest\n"
    )
}

#[test]
fn a_cronjob_starts_its_jobs_on_schedule_and_keeps_its_history() {
    let s = Server::start();
    let _a = Agent::start(&s, "ctl-cron-node");
    push(&s.url, "hello-wasi/hello-wasi.wasm", "hello-wasi:latest");
    // Bad schedules and time zones are refused with their causes, and nothing is stored.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &cronjob("bad", "61 * * * *", "  timeZone: Mars/Olympus\n"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.schedule: Invalid value")
            && err.contains("spec.timeZone: Invalid value"),
        "{err}"
    );
    assert!(!s.kubectl(&["get", "cronjob", "bad"]).status.success());

    // Every minute; the first Job starts at the next minute's turn.
    apply(
        &s,
        &cronjob("tick", "* * * * *", "  timeZone: Europe/Paris\n"),
    );
    let job = wait_for("the scheduled Job", Duration::from_secs(90), || {
        let jobs = s.kubectl_json(&["get", "jobs", "-l", "app=tick"]);
        jobs["items"].as_array().and_then(|a| a.first().cloned())
    });
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let minutes: u64 = name
        .strip_prefix("tick-")
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("{name} is tick-<minutes>"));
    let stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap_or_default();
    assert!(stamp.ends_with("+01:00"), "Paris time in winter: {stamp}");
    let scheduled: chrono::DateTime<chrono::Utc> = stamp.parse().expect("RFC 3339");
    assert_eq!(scheduled.timestamp() as u64, minutes * 60);
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Complete",
        &format!("job/{name}"),
        "--timeout=50s",
    ]);
    let cj = wait_for("lastSuccessfulTime", TIMEOUT, || {
        let cj = s.kubectl_json(&["get", "cronjob", "tick"]);
        (!cj["status"]["lastSuccessfulTime"].is_null() && cj["status"]["active"].is_null())
            .then_some(cj)
    });
    assert_eq!(
        cj["status"]["lastScheduleTime"],
        scheduled.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    let table = s.kubectl_ok(&["get", "cronjob", "tick"]);
    assert!(
        table.contains("SCHEDULE") && table.contains("* * * * *") && table.contains("Europe/Paris"),
        "{table}"
    );
    let events = event_reasons(&s, "involvedObject.name=tick");
    assert!(events.contains("SuccessfulCreate"), "{events}");

    // Suspended, it starts nothing more. A Job started by hand from its template runs, and
    // counts in its history of one successful Job: the scheduled ones, older, go.
    s.kubectl_ok(&[
        "patch",
        "cronjob",
        "tick",
        "--type=merge",
        "-p",
        "{\"spec\":{\"suspend\":true}}",
    ]);
    let table = s.kubectl_ok(&["get", "cronjob", "tick"]);
    assert!(table.contains("true"), "{table}");
    // History is ordered by start time, to the second, and a tie goes by name (as in
    // Kubernetes): the Job by hand must start in a later second than the scheduled one.
    let started = s.kubectl_json(&["get", "job", &name])["status"]["startTime"]
        .as_str()
        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        .expect("the scheduled Job has a startTime");
    let later = started + chrono::Duration::seconds(1);
    if let Ok(wait) = (later - chrono::Utc::now()).to_std() {
        std::thread::sleep(wait.min(Duration::from_secs(2)));
    }
    s.kubectl_ok(&["create", "job", "by-hand", "--from=cronjob/tick"]);
    s.kubectl_ok(&[
        "wait",
        "--for=condition=Complete",
        "job/by-hand",
        "--timeout=50s",
    ]);
    wait_for("only the newest Job kept", TIMEOUT, || {
        let jobs = s.kubectl_json(&["get", "jobs", "-l", "app=tick"]);
        let names: Vec<String> = jobs["items"]
            .as_array()?
            .iter()
            .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
            .map(|j| j["metadata"]["name"].as_str().unwrap_or("").to_string())
            .collect();
        (names == ["by-hand"]).then_some(())
    });
    let events = event_reasons(&s, "involvedObject.name=tick");
    assert!(events.contains("SuccessfulDelete"), "{events}");
}

/// The pod events of `selector` since `rv`, replayed from the server's watch history:
/// `(type, name, ready, being deleted)` in order.
fn pod_history(s: &Server, selector: &str, rv: &str) -> Vec<(String, String, bool, bool)> {
    let body = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=1&labelSelector={selector}",
            s.url
        ))
        .send()
        .and_then(|r| r.text())
        .expect("watch");
    body.lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a watch event"))
        .filter(|e| e["type"] != "BOOKMARK")
        .map(|e| {
            let p = &e["object"];
            (
                e["type"].as_str().unwrap_or("").to_string(),
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                is_ready(p),
                !p["metadata"]["deletionTimestamp"].is_null(),
            )
        })
        .collect()
}

/// A pod list's `resourceVersion` (read over HTTP: kubectl prints lists without one): where a
/// later [`pod_history`] starts.
fn pods_revision(s: &Server) -> String {
    let v: Value = reqwest::blocking::get(format!("{}/api/v1/namespaces/default/pods", s.url))
        .and_then(|r| r.json())
        .expect("list pods");
    let rv = v["metadata"]["resourceVersion"].as_str().unwrap_or("");
    assert!(!rv.is_empty(), "a list without a resourceVersion: {v}");
    rv.to_string()
}

/// Where in `history` `name` first matches `what`.
fn first_event(
    history: &[(String, String, bool, bool)],
    name: &str,
    what: impl Fn(&(String, String, bool, bool)) -> bool,
) -> usize {
    history
        .iter()
        .position(|e| e.1 == name && what(e))
        .unwrap_or_else(|| panic!("no such event of {name} in {history:?}"))
}

fn statefulset(name: &str, replicas: u32, image: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: None\n  selector:\n    app: {name}\n  ports:\n    - port: 8080\n---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  serviceName: {name}\n  replicas: {replicas}\n{extra}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      runtimeClassName: wasmtime\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: c\n          image: {image}\n          ports:\n            - containerPort: 8080\n"
    )
}

#[test]
fn a_statefulset_starts_updates_and_removes_its_pods_in_ordinal_order() {
    let s = Server::start();
    let _a = Agent::start(&s, "ctl-sts");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v1");
    push(&s.url, "hello-http/hello-http.wasm", "hello-http:v2");
    let status = || s.kubectl_ok(&["rollout", "status", "sts/db", "--timeout=55s"]);
    let image_of = |i: u32| -> String {
        s.kubectl_ok(&[
            "get",
            "pod",
            &format!("db-{i}"),
            "-o",
            "jsonpath={.spec.containers[0].image}",
        ])
    };

    // OrderedReady: db-n is made only once db-(n-1) is Ready.
    let rv = pods_revision(&s);
    apply(&s, &statefulset("db", 3, "hello-http:v1", ""));
    status();
    let history = pod_history(&s, "app%3Ddb", &rv);
    for n in 1..3 {
        let added = first_event(&history, &format!("db-{n}"), |e| e.0 == "ADDED");
        let below_ready = first_event(&history, &format!("db-{}", n - 1), |e| e.2);
        assert!(
            below_ready < added,
            "db-{n} made before db-{} was ready: {history:?}",
            n - 1
        );
    }
    let p = s.kubectl_json(&["get", "pod", "db-1"]);
    assert_eq!(p["spec"]["hostname"], "db-1");
    assert_eq!(p["spec"]["subdomain"], "db");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "db-1"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(controller_name(&p), "db");
    let table = s.kubectl_ok(&["get", "sts", "db"]);
    assert!(table.contains("3/3"), "{table}");

    // A rolling update replaces db-2, then db-1, then db-0, each once the one above it is
    // ready again.
    let rv = pods_revision(&s);
    s.kubectl_ok(&["set", "image", "sts/db", "c=hello-http:v2"]);
    status();
    assert_eq!(
        (0..3).map(image_of).collect::<Vec<_>>(),
        ["hello-http:v2"; 3]
    );
    let history = pod_history(&s, "app%3Ddb", &rv);
    let going = |n: u32| first_event(&history, &format!("db-{n}"), |e| e.3);
    assert!(going(2) < going(1) && going(1) < going(0), "{history:?}");
    for n in [2, 1] {
        let back = history[going(n)..]
            .iter()
            .position(|e| e.0 == "ADDED" && e.1 == format!("db-{n}"))
            .map(|i| i + going(n))
            .expect("made again");
        let ready_again = history[back..]
            .iter()
            .position(|e| e.1 == format!("db-{n}") && e.2)
            .map(|i| i + back)
            .expect("ready again");
        assert!(
            ready_again < going(n - 1),
            "db-{} went before db-{n} was back: {history:?}",
            n - 1
        );
    }
    let sts = s.kubectl_json(&["get", "sts", "db"]);
    assert_eq!(
        sts["status"]["currentRevision"],
        sts["status"]["updateRevision"]
    );
    assert_eq!(
        p["metadata"]["labels"]["controller-revision-hash"]
            .as_str()
            .map(|h| h.starts_with("db-")),
        Some(true)
    );

    // History and undo.
    let history = s.kubectl_ok(&["rollout", "history", "sts/db"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    s.kubectl_ok(&["rollout", "undo", "sts/db"]);
    status();
    assert_eq!(
        (0..3).map(image_of).collect::<Vec<_>>(),
        ["hello-http:v1"; 3]
    );

    // A partition of 2 updates only db-2.
    s.kubectl_ok(&[
        "patch",
        "sts/db",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ]);
    s.kubectl_ok(&["set", "image", "sts/db", "c=hello-http:v2"]);
    let out = status();
    assert!(out.contains("partitioned roll out complete"), "{out}");
    assert_eq!(
        (0..3).map(image_of).collect::<Vec<_>>(),
        ["hello-http:v1", "hello-http:v1", "hello-http:v2"]
    );

    // Scale-down: db-2 is gone before db-1 starts to go.
    let rv = pods_revision(&s);
    s.kubectl_ok(&["scale", "sts/db", "--replicas=1"]);
    wait_for("only db-0 left", TIMEOUT, || {
        let p = pods(&s, "app=db");
        (p.len() == 1 && p[0]["metadata"]["name"] == "db-0").then_some(())
    });
    let history = pod_history(&s, "app%3Ddb", &rv);
    let gone2 = first_event(&history, "db-2", |e| e.0 == "DELETED");
    let going1 = first_event(&history, "db-1", |e| e.3);
    assert!(gone2 < going1, "{history:?}");

    // A deleted pod comes back with its name.
    let uid = s.kubectl_ok(&["get", "pod", "db-0", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_ok(&["delete", "pod", "db-0", "--wait=false"]);
    wait_for("db-0 made again", TIMEOUT, || {
        let p = pods(&s, "app=db");
        (p.len() == 1 && p[0]["metadata"]["uid"] != uid.as_str() && is_ready(&p[0])).then_some(())
    });

    // Parallel makes them all without waiting.
    let rv = pods_revision(&s);
    apply(
        &s,
        &statefulset(
            "par",
            3,
            "hello-http:v1",
            "  podManagementPolicy: Parallel\n",
        ),
    );
    s.kubectl_ok(&["rollout", "status", "sts/par", "--timeout=55s"]);
    let history = pod_history(&s, "app%3Dpar", &rv);
    let last_added = (0..3)
        .map(|n| first_event(&history, &format!("par-{n}"), |e| e.0 == "ADDED"))
        .max()
        .unwrap();
    let first_ready = history.iter().position(|e| e.2).expect("a ready pod");
    assert!(last_added < first_ready, "{history:?}");

    // What kube-apiserver refuses.
    let claims = statefulset(
        "pv",
        1,
        "hello-http:v1",
        "  volumeClaimTemplates:\n    - metadata:\n        name: data\n      spec:\n        resources:\n          requests:\n            storage: 1Gi\n",
    );
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &claims);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("spec.volumeClaimTemplates[0].spec.accessModes"),
        "{err}"
    );
    let out = s.kubectl(&[
        "patch",
        "sts/db",
        "-p",
        r#"{"spec":{"serviceName":"other"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("updates to statefulset spec"),
        "{err}"
    );
}

/// The JSON of `kind/name`, or `None` while it does not exist.
fn get_json(s: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("kubectl printed JSON"))
}

#[test]
fn statefulset_claims_get_local_volumes_that_outlive_their_pods() {
    let s = Server::start();
    // Deleted volumes' directories are swept every second.
    let agent = Agent::start_with(&s, "ctl-pvc", &["--sync-frequency", "1s"]);
    push(&s.url, "hello-wasi/hello-wasi.wasm", "hello-wasi:v1");
    let sc = s.kubectl_ok(&["get", "storageclass"]);
    assert!(
        sc.contains("local-path (default)") && sc.contains("WaitForFirstConsumer"),
        "{sc}"
    );
    // Each pod writes a file into its volume, then shows what the file holds.
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: vol\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: vol\n  template:\n    metadata:\n      labels:\n        app: vol\n    spec:\n      runtimeClassName: wasmtime\n      terminationGracePeriodSeconds: 1\n      containers:\n        - name: c\n          image: hello-wasi:v1\n          env:\n            - name: HELLO_WRITE_DIR\n              value: /data\n            - name: HELLO_FILE\n              value: /data/written-by-guest.txt\n            - name: HELLO_REPEAT_MS\n              value: \"100\"\n          volumeMounts:\n            - name: data\n              mountPath: /data\n  volumeClaimTemplates:\n    - metadata:\n        name: data\n      spec:\n        accessModes: [ReadWriteOnce]\n        resources:\n          requests:\n            storage: 1Mi\n";
    apply(&s, sts);
    s.kubectl_ok(&["rollout", "status", "sts/vol", "--timeout=55s"]);
    let mut volumes = Vec::new();
    for n in 0..2 {
        let claim = get_json(&s, "pvc", &format!("data-vol-{n}")).expect("the claim");
        assert_eq!(claim["status"]["phase"], "Bound", "{claim}");
        assert_eq!(claim["spec"]["storageClassName"], "local-path");
        assert_eq!(claim["metadata"]["labels"]["app"], "vol");
        let volume = claim["spec"]["volumeName"].as_str().unwrap().to_string();
        let pv = get_json(&s, "pv", &volume).expect("the volume");
        assert_eq!(pv["status"]["phase"], "Bound");
        assert_eq!(pv["spec"]["claimRef"]["name"], format!("data-vol-{n}"));
        assert_eq!(
            pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"]
                [0],
            "ctl-pvc"
        );
        let file = agent
            .data_dir()
            .join("volumes")
            .join(&volume)
            .join("written-by-guest.txt");
        wait_for(&format!("{} written", file.display()), TIMEOUT, || {
            file.is_file().then_some(())
        });
        volumes.push(volume);
    }
    assert_ne!(volumes[0], volumes[1], "each pod has a volume of its own");
    let table = s.kubectl_ok(&["get", "pvc"]);
    assert!(
        table.contains("Bound") && table.contains("RWO") && table.contains("local-path"),
        "{table}"
    );
    let logs = s.kubectl_ok(&["logs", "vol-0"]);
    assert!(
        logs.contains("cannot read /data/written-by-guest.txt"),
        "a fresh volume is empty: {logs}"
    );

    // vol-0 made again mounts the same volume and finds its file from the start.
    let uid = s.kubectl_ok(&["get", "pod", "vol-0", "-o", "jsonpath={.metadata.uid}"]);
    s.kubectl_ok(&["delete", "pod", "vol-0", "--wait=false"]);
    let logs = wait_for("vol-0 made again and running", TIMEOUT, || {
        let p = get_json(&s, "pod", "vol-0")?;
        if p["metadata"]["uid"] == uid.as_str() || !is_ready(&p) {
            return None;
        }
        let logs = s.kubectl_ok(&["logs", "vol-0"]);
        logs.contains("written by hello-wasi").then_some(logs)
    });
    assert!(
        !logs.contains("cannot read"),
        "the data did not survive: {logs}"
    );
    let claim = get_json(&s, "pvc", "data-vol-0").unwrap();
    assert_eq!(claim["spec"]["volumeName"], volumes[0].as_str());

    // A pod whose claim does not exist is not scheduled, and is once the claim is made.
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: waits\nspec:\n  runtimeClassName: wasmtime\n  terminationGracePeriodSeconds: 1\n  containers:\n    - name: c\n      image: hello-wasi:v1\n      env:\n        - name: HELLO_REPEAT_MS\n          value: \"100\"\n      volumeMounts:\n        - name: d\n          mountPath: /data\n  volumes:\n    - name: d\n      persistentVolumeClaim:\n        claimName: later\n";
    apply(&s, pod);
    wait_for("FailedScheduling for the missing claim", TIMEOUT, || {
        event_reasons(&s, "involvedObject.name=waits")
            .contains("FailedScheduling")
            .then_some(())
    });
    let p = get_json(&s, "pod", "waits").unwrap();
    let message = p["status"]["conditions"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        message.contains("persistentvolumeclaim \"later\" not found"),
        "{p}"
    );
    apply(
        &s,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: later\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Mi\n",
    );
    wait_for("the waiting pod running", TIMEOUT, || {
        get_json(&s, "pod", "waits").filter(is_ready).map(|_| ())
    });
    let later = get_json(&s, "pvc", "later").unwrap();
    assert_eq!(later["status"]["phase"], "Bound");
    let later_volume = later["spec"]["volumeName"].as_str().unwrap().to_string();

    // A claim in use is kept, Terminating, until its pod is gone; then it and its volume go.
    s.kubectl_ok(&["delete", "pvc", "later", "--wait=false"]);
    std::thread::sleep(Duration::from_millis(1500));
    let table = s.kubectl_ok(&["get", "pvc", "later"]);
    assert!(table.contains("Terminating"), "{table}");
    assert!(get_json(&s, "pv", &later_volume).is_some());
    s.kubectl_ok(&["delete", "pod", "waits", "--timeout=50s"]);
    wait_for("the released claim and its volume gone", TIMEOUT, || {
        (get_json(&s, "pvc", "later").is_none() && get_json(&s, "pv", &later_volume).is_none())
            .then_some(())
    });

    // A bound volume deleted by hand stays, Terminating, until its claim lets go (below).
    s.kubectl_ok(&["delete", "pv", &volumes[0], "--wait=false"]);
    std::thread::sleep(Duration::from_millis(1000));
    let table = s.kubectl_ok(&["get", "pv", &volumes[0]]);
    assert!(table.contains("Terminating"), "{table}");

    // whenScaled: Delete: a scale-down takes the removed pod's claim, and the claim its volume.
    s.kubectl_ok(&[
        "patch",
        "sts/vol",
        "-p",
        r#"{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Delete"}}}"#,
    ]);
    s.kubectl_ok(&["scale", "sts/vol", "--replicas=1"]);
    wait_for("vol-1's claim and volume gone", TIMEOUT, || {
        (get_json(&s, "pvc", "data-vol-1").is_none() && get_json(&s, "pv", &volumes[1]).is_none())
            .then_some(())
    });
    assert!(get_json(&s, "pvc", "data-vol-0").is_some());

    // Claims outlive their StatefulSet (whenDeleted: Retain); a deleted claim takes its
    // volume with it (reclaimPolicy: Delete).
    s.kubectl_ok(&["delete", "sts", "vol", "--timeout=50s"]);
    wait_for("the pods gone", TIMEOUT, || {
        pods(&s, "app=vol").is_empty().then_some(())
    });
    assert!(get_json(&s, "pvc", "data-vol-0").is_some());
    s.kubectl_ok(&["delete", "pvc", "data-vol-0", "--timeout=50s"]);
    wait_for("the volume of the deleted claim gone", TIMEOUT, || {
        get_json(&s, "pv", &volumes[0]).is_none().then_some(())
    });
    // And then its directory on the node.
    for v in &volumes {
        let dir = agent.data_dir().join("volumes").join(v);
        wait_for(&format!("{} removed", dir.display()), TIMEOUT, || {
            (!dir.exists()).then_some(())
        });
    }

    // A claim without access modes or a size is refused.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: bad\nspec:\n  resources: {}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("spec.accessModes")
            && err.contains("spec.resources[storage]"),
        "{err}"
    );
}
