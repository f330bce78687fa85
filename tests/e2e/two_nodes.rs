//! A control plane with two `flotilla agent` processes: the scheduler places pods by
//! nodeSelector, taints and tolerations, node affinity and resources; the agents run init
//! containers before the main ones and restart a container whose liveness probe fails.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Server, flotilla_bin, push_wasm, sample, wait_for};

/// Every wait for a pod or node to get somewhere.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A `flotilla agent` process, killed when dropped.
struct Agent {
    child: Child,
    _tmp: tempfile::TempDir,
}

impl Agent {
    /// Starts agent `name` against `server` with its own pod range and a short restart backoff.
    fn start(server: &Server, name: &str, cidr: &str) -> Agent {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(flotilla_bin())
            .args(["agent", "--name", name, "--listen", "127.0.0.1:0"])
            .args(["--pod-cidr", cidr])
            .args([
                "--restart-backoff-base-ms",
                "200",
                "--restart-backoff-max-ms",
                "1000",
            ])
            .arg("--kubeconfig")
            .arg(&server.kubeconfig)
            .arg("--data-dir")
            .arg(tmp.path())
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
        rx.recv_timeout(TIMEOUT)
            .expect("flotilla agent did not start within 60 s");
        Agent { child, _tmp: tmp }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod(server: &Server, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("pod json"))
}

fn wait_pod(server: &Server, name: &str, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    wait_for(&format!("pod {name}: {what}"), TIMEOUT, || {
        pod(server, name).filter(|p| f(p))
    })
}

/// Waits for pod `name` to be `PodScheduled=False`; returns the condition's message.
fn wait_unschedulable(server: &Server, name: &str) -> String {
    let pending = wait_pod(server, name, "PodScheduled=False", |p| {
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["status"] == "False")
        })
    });
    let conditions = pending["status"]["conditions"].as_array().cloned();
    conditions
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled")
        .and_then(|c| c["message"].as_str().map(String::from))
        .unwrap_or_default()
}

/// A cluster of a control plane and two nodes: `node-a` labelled `zone=a`, `node-b` tainted
/// `dedicated=b:NoSchedule`; the hello samples pushed.
fn two_nodes() -> (Server, Agent, Agent) {
    let server = Server::start();
    let a = Agent::start(&server, "node-a", &crate::harness::loopback_range());
    let b = Agent::start(&server, "node-b", &crate::harness::loopback_range());
    for node in ["node-a", "node-b"] {
        wait_for(&format!("{node} Ready"), TIMEOUT, || {
            let out = server.kubectl(&[
                "get",
                "node",
                node,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ]);
            (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
        });
    }
    server.kubectl_ok(&["label", "node", "node-a", "zone=a"]);
    server.kubectl_ok(&["taint", "node", "node-b", "dedicated=b:NoSchedule"]);
    push_wasm(
        &server.url,
        &sample("hello-wasi/hello-wasi.wasm"),
        "hello-wasi:latest",
    );
    push_wasm(
        &server.url,
        &sample("hello-http/hello-http.wasm"),
        "hello-http:latest",
    );
    (server, a, b)
}

fn http_pod(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  runtimeClassName: wasmtime\n  terminationGracePeriodSeconds: 1\n{spec}  containers:\n    - name: web\n      image: hello-http:latest\n      ports:\n        - containerPort: 8080\n"
    )
}

#[test]
fn the_scheduler_places_pods_by_selector_taints_affinity_and_resources() {
    let (s, _a, _b) = two_nodes();
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &http_pod("by-selector", "  nodeSelector:\n    zone: a\n"),
    );
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &http_pod(
            "tolerates-b",
            "  tolerations:\n    - key: dedicated\n      operator: Equal\n      value: b\n      effect: NoSchedule\n  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n          - matchExpressions:\n              - key: kubernetes.io/hostname\n                operator: In\n                values: [node-b]\n",
        ),
    );
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &http_pod(
            "untolerated",
            "  nodeSelector:\n    kubernetes.io/hostname: node-b\n",
        ),
    );
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            "{}      resources:\n        requests:\n          memory: 100000Gi\n",
            http_pod("too-big", "")
        ),
    );
    // Without any constraint, a pod avoids the tainted node.
    s.kubectl_stdin(&["apply", "-f", "-"], &http_pod("anywhere", ""));

    for (name, node) in [
        ("by-selector", "node-a"),
        ("tolerates-b", "node-b"),
        ("anywhere", "node-a"),
    ] {
        let p = wait_pod(&s, name, "Running", |p| p["status"]["phase"] == "Running");
        assert_eq!(
            p["spec"]["nodeName"], node,
            "{name} placed on the wrong node"
        );
        assert_eq!(p["status"]["hostIP"], "127.0.0.1");
    }
    let message = wait_unschedulable(&s, "untolerated");
    assert!(message.starts_with("0/2 nodes are available"), "{message}");
    assert!(message.contains("untolerated taint"), "{message}");
    assert!(
        message.contains("didn't match Pod's node affinity/selector"),
        "{message}"
    );
    assert!(pod(&s, "untolerated").expect("untolerated")["spec"]["nodeName"].is_null());

    let describe = wait_for("FailedScheduling for too-big", TIMEOUT, || {
        let d = s.kubectl_ok(&["describe", "pod", "too-big"]);
        d.contains("FailedScheduling").then_some(d)
    });
    assert!(describe.contains("Insufficient memory"), "{describe}");

    // Removing the taint makes node-b eligible; the pending pod is retried and placed.
    s.kubectl_ok(&["taint", "node", "node-b", "dedicated=b:NoSchedule-"]);
    let placed = wait_pod(&s, "untolerated", "Running on node-b", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(placed["spec"]["nodeName"], "node-b");
}

#[test]
fn required_pod_anti_affinity_keeps_replicas_on_different_nodes() {
    let (s, _a, _b) = two_nodes();
    // Three pods that must not share a node, on two nodes (node-b's taint tolerated).
    let spread = |name: &str| {
        http_pod(
            name,
            "  tolerations:\n    - key: dedicated\n      operator: Exists\n  affinity:\n    podAntiAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        - topologyKey: kubernetes.io/hostname\n          labelSelector:\n            matchLabels:\n              app: spread\n",
        )
        .replace("  name: ", "  labels:\n    app: spread\n  name: ")
    };
    for name in ["spread-1", "spread-2"] {
        let out = s.kubectl_stdin(&["apply", "-f", "-"], &spread(name));
        assert!(out.status.success(), "{out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("Warning"),
            "the required term draws no warning: {out:?}"
        );
        // One at a time, so each decision sees the one before.
        wait_pod(&s, name, "bound", |p| p["spec"]["nodeName"].is_string());
    }
    let nodes: Vec<String> = ["spread-1", "spread-2"]
        .iter()
        .map(|n| {
            let p = wait_pod(&s, n, "Running", |p| p["status"]["phase"] == "Running");
            p["spec"]["nodeName"].as_str().unwrap().to_string()
        })
        .collect();
    assert_ne!(nodes[0], nodes[1], "two replicas on one node");
    s.kubectl_stdin(&["apply", "-f", "-"], &spread("spread-3"));
    let message = wait_unschedulable(&s, "spread-3");
    assert!(
        message.starts_with("0/2 nodes are available")
            && message.contains("didn't satisfy existing pods anti-affinity rules"),
        "{message}"
    );
    // One replica goes: the third takes its place.
    s.kubectl_ok(&["delete", "pod", "spread-1", "--wait=false"]);
    let placed = wait_pod(&s, "spread-3", "placed where spread-1 was", |p| {
        p["spec"]["nodeName"].is_string()
    });
    assert_eq!(placed["spec"]["nodeName"], nodes[0].as_str());
}

#[test]
fn topology_spread_overrides_a_preference_and_keeps_a_pod_pending_when_it_cannot_be_met() {
    let (s, _a, _b) = two_nodes();
    let even = |name: &str, spec: &str| {
        http_pod(name, spec).replace("  name: ", "  labels:\n    app: even\n  name: ")
    };
    // One pod of the group on node-a, placed by its node selector.
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &even("even-1", "  nodeSelector:\n    zone: a\n"),
    );
    wait_pod(&s, "even-1", "bound", |p| p["spec"]["nodeName"] == "node-a");
    // The next prefers node-a strongly (which alone would put it there), but may not make the
    // nodes differ by more than one pod of the group.
    let spread = |min_domains: &str| {
        format!(
            "  tolerations:\n    - key: dedicated\n      operator: Exists\n  affinity:\n    nodeAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n        - weight: 100\n          preference:\n            matchExpressions:\n              - key: zone\n                operator: In\n                values: [a]\n  topologySpreadConstraints:\n    - maxSkew: 1\n      topologyKey: kubernetes.io/hostname\n      whenUnsatisfiable: DoNotSchedule\n{min_domains}      labelSelector:\n        matchLabels:\n          app: even\n"
        )
    };
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &even("even-2", &spread("")));
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Warning"),
        "topology spread draws no warning: {out:?}"
    );
    let placed = wait_pod(&s, "even-2", "bound", |p| p["spec"]["nodeName"].is_string());
    assert_eq!(placed["spec"]["nodeName"], "node-b");
    // With three domains wanted and two nodes, the missing one counts as empty: one more pod
    // of the group would make the skew two wherever it went.
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        &even("even-3", &spread("      minDomains: 3\n")),
    );
    let message = wait_unschedulable(&s, "even-3");
    assert_eq!(
        message,
        "0/2 nodes are available: 2 node(s) didn't match pod topology spread constraints. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.."
    );
    // A bad constraint is refused with kube-apiserver's cause.
    let bad = even("even-4", &spread("      minDomains: 0\n"));
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.topologySpreadConstraints[0].minDomains: Invalid value")
            && err.contains("must be greater than 0"),
        "{err}"
    );
}

#[test]
fn preferred_pod_affinity_draws_a_pod_to_its_partners_node() {
    let (s, _a, _b) = two_nodes();
    let tolerate = "  tolerations:\n    - key: dedicated\n      operator: Exists\n";
    // A cache pinned to node-b; a web pod that prefers the cache's node. Without the
    // preference, the emptier node-a would win on resources.
    let cache = http_pod(
        "cache",
        &format!("{tolerate}  nodeSelector:\n    kubernetes.io/hostname: node-b\n"),
    )
    .replace("  name: ", "  labels:\n    app: cache\n  name: ");
    s.kubectl_stdin(&["apply", "-f", "-"], &cache);
    wait_pod(&s, "cache", "bound", |p| p["spec"]["nodeName"] == "node-b");
    let near = http_pod(
        "near",
        &format!(
            "{tolerate}  affinity:\n    podAffinity:\n      preferredDuringSchedulingIgnoredDuringExecution:\n        - weight: 100\n          podAffinityTerm:\n            topologyKey: kubernetes.io/hostname\n            labelSelector:\n              matchLabels:\n                app: cache\n"
        ),
    );
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &near);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Warning"),
        "the preferred term draws no warning: {out:?}"
    );
    let placed = wait_pod(&s, "near", "bound", |p| p["spec"]["nodeName"].is_string());
    assert_eq!(placed["spec"]["nodeName"], "node-b");
}

#[test]
fn init_containers_run_first_and_a_failing_liveness_probe_restarts_the_container() {
    let (s, _a, _b) = two_nodes();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: staged\nspec:\n  runtimeClassName: wasmtime\n  terminationGracePeriodSeconds: 1\n  nodeSelector:\n    zone: a\n  initContainers:\n    - name: prepare\n      image: hello-wasi:latest\n      args: [prepare]\n      env:\n        - name: HELLO_FILE\n          value: /nonexistent\n  containers:\n    - name: web\n      image: hello-http:latest\n      ports:\n        - containerPort: 8080\n      livenessProbe:\n        httpGet:\n          path: /no-such-route\n          port: 8080\n        periodSeconds: 1\n        failureThreshold: 2\n    - name: sidecar\n      image: hello-http:latest\n      ports:\n        - containerPort: 8081\n";
    s.kubectl_stdin(&["apply", "-f", "-"], manifest);
    let p = wait_pod(
        &s,
        "staged",
        "the web container restarted by its liveness probe",
        |p| {
            p["status"]["containerStatuses"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == "web"))
                .is_some_and(|c| c["restartCount"].as_i64().unwrap_or(0) >= 1)
        },
    );
    let init = &p["status"]["initContainerStatuses"][0];
    assert_eq!(init["name"], "prepare");
    assert_eq!(init["state"]["terminated"]["reason"], "Completed", "{init}");
    let initialized = p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Initialized")
        .cloned()
        .unwrap_or_default();
    assert_eq!(initialized["status"], "True", "{p}");
    assert_eq!(
        p["status"]["containerStatuses"].as_array().map(Vec::len),
        Some(2),
        "{p}"
    );
    let logs = s.kubectl_ok(&["logs", "staged", "-c", "prepare"]);
    assert!(
        logs.contains("hello from wasi p1") && logs.contains(" prepare"),
        "{logs}"
    );
    let describe = s.kubectl_ok(&["describe", "pod", "staged"]);
    assert!(
        describe.contains("Unhealthy") && describe.contains("Liveness probe failed"),
        "{describe}"
    );
}

/// A pod of high priority that fits nowhere preempts a pod of lower priority: the victim is
/// marked `DisruptionTarget`, gets a `Preempted` event and goes; the preemptor is nominated
/// to its node, and a pending pod of equal priority whose policy is `Never` neither preempts
/// nor takes the room the preemptor waited for.
#[test]
fn a_pod_of_higher_priority_preempts_one_of_lower_priority() {
    let (s, _a, _b) = two_nodes();
    // Requests of 60 % of node-a's CPU: one such pod fills it.
    let node = s.kubectl_json(&["get", "node", "node-a"]);
    let cpu = node["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap()
        .to_string();
    let milli: u64 = cpu
        .strip_suffix('m')
        .map(|m| m.parse().unwrap())
        .unwrap_or_else(|| cpu.parse::<u64>().unwrap() * 1000);
    let request = format!("{}m", milli * 6 / 10);
    let ranked = |name: &str, class: &str| -> String {
        format!(
            "{}      resources:\n        requests:\n          cpu: {request}\n",
            http_pod(
                name,
                &format!("  priorityClassName: {class}\n  nodeSelector:\n    zone: a\n")
            )
        )
    };
    s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: low\nvalue: 100\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high\nvalue: 1000\n---\napiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: high-polite\nvalue: 1000\npreemptionPolicy: Never\n",
    );
    // The victim takes two seconds to stop (a preStop sleep), so its last state is seen.
    let victim = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: victim\nspec:\n  runtimeClassName: wasmtime\n  terminationGracePeriodSeconds: 10\n  priorityClassName: low\n  nodeSelector:\n    zone: a\n  containers:\n    - name: web\n      image: hello-http:latest\n      lifecycle:\n        preStop:\n          sleep:\n            seconds: 2\n      resources:\n        requests:\n          cpu: {request}\n"
    );
    s.kubectl_stdin(&["apply", "-f", "-"], &victim);
    let victim = wait_pod(&s, "victim", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    let victim_uid = victim["metadata"]["uid"].as_str().unwrap().to_string();

    // preemptionPolicy: Never: it waits, and the victim keeps running.
    s.kubectl_stdin(&["apply", "-f", "-"], &ranked("polite", "high-polite"));
    let message = wait_unschedulable(&s, "polite");
    assert!(message.contains("Insufficient cpu"), "{message}");
    std::thread::sleep(Duration::from_secs(1));
    let still = pod(&s, "victim").expect("the victim is still there");
    assert!(still["metadata"]["deletionTimestamp"].is_null(), "{still}");

    // PreemptLowerPriority (the default): the victim goes, the preemptor runs in its place.
    s.kubectl_stdin(&["apply", "-f", "-"], &ranked("urgent", "high"));
    let going = wait_pod(&s, "victim", "terminating", |p| {
        !p["metadata"]["deletionTimestamp"].is_null()
    });
    let target = going["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget").cloned())
        .unwrap_or_else(|| panic!("no DisruptionTarget condition: {going}"));
    assert_eq!(
        (&target["status"], &target["reason"]),
        (&Value::from("True"), &Value::from("PreemptionByScheduler"))
    );
    let urgent = wait_pod(&s, "urgent", "Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(urgent["spec"]["nodeName"], "node-a");
    assert_eq!(urgent["status"]["nominatedNodeName"], "node-a");
    wait_for("the victim gone", TIMEOUT, || {
        pod(&s, "victim").is_none().then_some(())
    });
    let events = s.kubectl_json(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.uid={victim_uid}"),
    ]);
    let preempted = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == "Preempted")
        .unwrap_or_else(|| panic!("no Preempted event: {events}"));
    let urgent_uid = urgent["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        preempted["message"],
        format!("Preempted by pod {urgent_uid} on node node-a")
    );
    // The polite pod of the same priority did not take the room urgent was nominated to.
    let polite = pod(&s, "polite").expect("polite");
    assert!(polite["spec"]["nodeName"].is_null(), "{polite}");
}
