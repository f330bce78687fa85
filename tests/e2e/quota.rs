//! ResourceQuotas with the stock kubectl against `flotilla server`: `kubectl create quota`,
//! the controller's counting, admission's refusals, replenishment on delete, scopes, and a
//! ReplicaSet held back by its namespace's quota.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{Server, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// Waits until quota `name` in `ns` has counted `resource` as `value`.
fn wait_used(s: &Server, ns: &str, name: &str, resource: &str, value: &str) -> Value {
    wait_for(
        &format!("quota {name} to count {resource}={value}"),
        WAIT,
        || {
            let q = s.kubectl_json(&["get", "quota", name, "-n", ns]);
            (q["status"]["used"][resource] == value).then_some(q)
        },
    )
}

fn pod(name: &str, ns: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  containers:\n    - name: c\n      image: hello-http:v1\n{resources}"
    )
}

fn sized(cpu: &str, memory: &str) -> String {
    format!(
        "      resources:\n        requests: {{cpu: \"{cpu}\"}}\n        limits: {{memory: {memory}}}\n"
    )
}

/// Applies `yaml`, which must be refused; returns kubectl's error.
fn refused(s: &Server, yaml: &str) -> String {
    let out = s.kubectl_stdin(&["apply", "-f", "-"], yaml);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "accepted: {yaml}");
    err
}

#[test]
fn a_quota_counts_its_namespace_and_refuses_what_would_exceed_it() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "team"]);
    // `kubectl create quota` sends protobuf.
    s.kubectl_ok(&[
        "create",
        "quota",
        "compute",
        "-n",
        "team",
        "--hard=pods=2,requests.cpu=1,limits.memory=1Gi",
    ]);
    let q = wait_used(&s, "team", "compute", "pods", "0");
    assert_eq!(
        q["status"]["hard"],
        serde_json::json!({"pods": "2", "requests.cpu": "1", "limits.memory": "1Gi"})
    );
    assert_eq!(q["status"]["used"]["requests.cpu"], "0");

    // Every container must state what the quota restricts.
    let err = refused(&s, &pod("bare", "team", ""));
    assert!(
        err.contains(
            "pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"
        ),
        "{err}"
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod("a", "team", &sized("400m", "256Mi")),
    );
    let q = wait_used(&s, "team", "compute", "pods", "1");
    assert_eq!(q["status"]["used"]["requests.cpu"], "400m");
    assert_eq!(q["status"]["used"]["limits.memory"], "256Mi");
    let err = refused(&s, &pod("b", "team", &sized("700m", "256Mi")));
    assert!(
        err.contains(
            "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=700m, used: requests.cpu=400m, limited: requests.cpu=1"
        ),
        "{err}"
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod("b", "team", &sized("600m", "256Mi")),
    );
    let err = refused(&s, &pod("c", "team", &sized("0", "64Mi")));
    assert!(
        err.contains("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"),
        "{err}"
    );
    assert!(
        !s.kubectl(&["get", "pod", "c", "-n", "team"])
            .status
            .success(),
        "a refused pod is not stored"
    );

    // kubectl's columns and describe.
    let table = s.kubectl_ok(&["get", "quota", "-n", "team"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "AGE", "REQUEST", "LIMIT"], "{table}");
    let row = lines.next().unwrap();
    assert!(
        row.contains("pods: 2/2, requests.cpu: 1/1") && row.contains("limits.memory: 512Mi/1Gi"),
        "{table}"
    );
    let described = s.kubectl_ok(&["describe", "quota", "compute", "-n", "team"]);
    let pods_line = described
        .lines()
        .find(|l| l.trim_start().starts_with("pods"))
        .unwrap_or_default();
    assert_eq!(
        pods_line.split_whitespace().collect::<Vec<_>>(),
        ["pods", "2", "2"],
        "{described}"
    );

    // A deletion gives its usage back.
    s.kubectl_ok(&[
        "delete",
        "pod",
        "a",
        "-n",
        "team",
        "--grace-period=0",
        "--force",
    ]);
    let q = wait_used(&s, "team", "compute", "pods", "1");
    assert_eq!(q["status"]["used"]["requests.cpu"], "600m");

    // A ReplicaSet held back by the quota says why.
    let rs = "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web\n  namespace: team\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n        - name: c\n          image: hello-http:v1\n          resources:\n            requests: {cpu: 100m}\n            limits: {memory: 64Mi}\n";
    s.kubectl_stdin_ok(&["apply", "-f", "-"], rs);
    let condition = wait_for("the ReplicaSet's ReplicaFailure condition", WAIT, || {
        let rs = s.kubectl_json(&["get", "rs", "web", "-n", "team"]);
        rs["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "ReplicaFailure")
            .cloned()
    });
    assert_eq!(condition["reason"], "FailedCreate", "{condition}");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("exceeded quota: compute"),
        "{condition}"
    );
    wait_used(&s, "team", "compute", "pods", "2");
    let pods = s.kubectl_json(&["get", "pods", "-n", "team", "-l", "app=web"]);
    assert_eq!(pods["items"].as_array().unwrap().len(), 1, "one fitted");

    // Raising the quota lets the ReplicaSet finish.
    s.kubectl_ok(&[
        "patch",
        "quota",
        "compute",
        "-n",
        "team",
        "--type=merge",
        "-p",
        r#"{"spec":{"hard":{"pods":"4"}}}"#,
    ]);
    wait_for("the ReplicaSet's third pod", WAIT, || {
        let pods = s.kubectl_json(&["get", "pods", "-n", "team", "-l", "app=web"]);
        (pods["items"].as_array()?.len() == 3).then_some(())
    });
    wait_used(&s, "team", "compute", "pods", "4");
}

#[test]
fn object_counts_node_ports_storage_and_scopes_are_quota_resources() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "objects"]);
    let quotas = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: objects\n  namespace: objects\nspec:\n  hard:\n    count/configmaps: 1\n    services.nodeports: 0\n    requests.storage: 1Gi\n---\napiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: best-effort\n  namespace: objects\nspec:\n  hard:\n    pods: 1\n  scopes: [BestEffort]\n";
    s.kubectl_stdin_ok(&["apply", "-f", "-"], quotas);
    wait_used(&s, "objects", "objects", "count/configmaps", "0");
    wait_used(&s, "objects", "best-effort", "pods", "0");

    s.kubectl_ok(&["create", "configmap", "one", "-n", "objects"]);
    wait_used(&s, "objects", "objects", "count/configmaps", "1");
    let out = s.kubectl(&["create", "configmap", "two", "-n", "objects"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "configmaps \"two\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"
            ),
        "{err}"
    );

    // A ClusterIP Service fits; turning it into a NodePort one does not.
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: objects\nspec:\n  selector:\n    app: web\n  ports:\n    - port: 80\n";
    s.kubectl_stdin_ok(&["apply", "-f", "-"], svc);
    let out = s.kubectl(&[
        "patch",
        "svc",
        "web",
        "-n",
        "objects",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "exceeded quota: objects, requested: services.nodeports=1, used: services.nodeports=0, limited: services.nodeports=0"
            ),
        "{err}"
    );
    assert_eq!(
        s.kubectl_json(&["get", "svc", "web", "-n", "objects"])["spec"]["type"],
        "ClusterIP"
    );

    let claim = |name: &str, size: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\n  namespace: objects\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {{storage: {size}}}\n"
        )
    };
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &claim("small", "600Mi"));
    let err = refused(&s, &claim("more", "600Mi"));
    assert!(
        err.contains("requested: requests.storage=600Mi, used: requests.storage=600Mi, limited: requests.storage=1Gi"),
        "{err}"
    );

    // The BestEffort quota counts best-effort pods only.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("free", "objects", ""));
    wait_used(&s, "objects", "best-effort", "pods", "1");
    let err = refused(&s, &pod("free2", "objects", ""));
    assert!(
        err.contains(
            "exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1"
        ),
        "{err}"
    );
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod("sized", "objects", &sized("100m", "64Mi")),
    );

    // Bad quotas are refused with kube's words, and nothing is written.
    let out = s.kubectl(&[
        "create",
        "quota",
        "bad",
        "-n",
        "objects",
        "--hard=widgets=1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("must be a standard resource for quota"),
        "{err}"
    );
    let bad = "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: bad\n  namespace: objects\nspec:\n  hard:\n    services: 1\n  scopes: [BestEffort]\n";
    let err = refused(&s, bad);
    assert!(
        err.contains("spec.scopes: Invalid value: []core.ResourceQuotaScope{\"BestEffort\"}: unsupported scope applied to resource"),
        "{err}"
    );
    assert!(
        !s.kubectl(&["get", "quota", "bad", "-n", "objects"])
            .status
            .success(),
        "nothing written"
    );
}

/// Concurrent creates over HTTP race for a quota's last units: exactly as many as it allows
/// are stored, each refusal is a 403, and the charges survive kill -9.
#[test]
fn concurrent_creates_never_overrun_a_quota_and_its_charges_survive_kill_9() {
    const CREATES: usize = 60;
    const ALLOWED: usize = 25;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    s.kubectl_ok(&[
        "create",
        "quota",
        "cms",
        &format!("--hard=configmaps={ALLOWED}"),
    ]);
    wait_used(&s, "default", "cms", "configmaps", "0");
    let url = s.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let codes: Vec<u16> = rt.block_on(async {
        let client = reqwest::Client::new();
        let mut tasks = Vec::new();
        for i in 0..CREATES {
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let body = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i}")}});
                client
                    .post(format!("{url}/api/v1/namespaces/default/configmaps"))
                    .json(&body)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16()
            }));
        }
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap());
        }
        codes
    });
    assert_eq!(
        codes.iter().filter(|c| **c == 201).count(),
        ALLOWED,
        "{codes:?}"
    );
    assert_eq!(
        codes.iter().filter(|c| **c == 403).count(),
        CREATES - ALLOWED,
        "{codes:?}"
    );
    let stored = s.kubectl_json(&["get", "configmaps"]);
    assert_eq!(stored["items"].as_array().unwrap().len(), ALLOWED);
    s.kill9();

    let s = Server::start_in(dir.path(), &[]);
    let q = s.kubectl_json(&["get", "quota", "cms"]);
    assert_eq!(
        q["status"]["used"]["configmaps"],
        ALLOWED.to_string(),
        "{q}"
    );
    let out = s.kubectl(&["create", "configmap", "one-more"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("exceeded quota: cms"),
        "{err}"
    );
}
