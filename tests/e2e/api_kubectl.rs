//! The stock kubectl against `flotilla server`: apply, get in every output, watch, label,
//! annotate, patch, scale, delete, describe, explain, namespace deletion.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Server, manifests, wait_for};

fn apply_basic(s: &Server) -> String {
    s.kubectl_ok(&["apply", "-f", manifests("basic").to_str().unwrap()])
}

#[test]
fn applying_a_folder_creates_every_kind_and_reapplying_a_changed_folder_patches_it() {
    let s = Server::start();
    let out = apply_basic(&s);
    for line in [
        "namespace/shop created",
        "configmap/web-config created",
        "secret/web-secret created",
        "deployment.apps/web created",
        "service/web created",
        "job.batch/migrate created",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let cm = s.kubectl_json(&["get", "configmap", "web-config", "-n", "shop"]);
    assert_eq!(cm["data"]["greeting"], "hello");
    let secret = s.kubectl_json(&["get", "secret", "web-secret", "-n", "shop"]);
    assert_eq!(
        secret["data"]["token"], "czNjcjN0",
        "stringData is stored base64 in data"
    );
    let d = s.kubectl_json(&["get", "deployment", "web", "-n", "shop"]);
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaults are applied"
    );

    let out = s.kubectl_ok(&["apply", "-f", manifests("basic-v2").to_str().unwrap()]);
    assert!(out.contains("configmap/web-config configured"), "{out}");
    assert!(out.contains("deployment.apps/web configured"), "{out}");
    assert!(out.contains("service/web unchanged"), "{out}");
    let cm = s.kubectl_json(&["get", "configmap", "web-config", "-n", "shop"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"greeting": "bonjour", "extra": "added"}),
        "removed keys are pruned by the patch"
    );
    let d = s.kubectl_json(&["get", "deployment", "web", "-n", "shop"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "hello-http:v2"
    );
    let env = d["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert_eq!(env.len(), 1, "MODE was removed from env by name: {env:?}");
    assert_eq!(
        d["metadata"]["generation"], 2,
        "a spec change bumps the generation"
    );
}

#[test]
fn get_prints_tables_wide_tables_json_and_yaml() {
    let s = Server::start();
    apply_basic(&s);
    let table = s.kubectl_ok(&["get", "deployments", "-n", "shop"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    assert!(table.lines().nth(1).unwrap().starts_with("web "), "{table}");
    let wide = s.kubectl_ok(&["get", "deployments", "-n", "shop", "-o", "wide"]);
    assert!(
        wide.lines().next().unwrap().contains("CONTAINERS") && wide.contains("hello-http:v1"),
        "{wide}"
    );
    let svc = s.kubectl_ok(&["get", "svc", "-n", "shop"]);
    assert!(
        svc.starts_with("NAME") && svc.contains("TYPE") && svc.contains("PORT(S)"),
        "{svc}"
    );
    let ns = s.kubectl_ok(&["get", "namespaces"]);
    for n in [
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "shop",
    ] {
        assert!(
            ns.lines().any(|l| l.starts_with(n) && l.contains("Active")),
            "{n} in {ns}"
        );
    }
    let json = s.kubectl_json(&["get", "configmaps", "-n", "shop"]);
    assert_eq!(json["kind"], "List");
    assert!(
        json["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["metadata"]["name"] == "web-config")
    );
    let yaml = s.kubectl_ok(&["get", "service", "web", "-n", "shop", "-o", "yaml"]);
    let v: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(
        v["spec"]["ports"][0]["targetPort"],
        serde_yaml::Value::from("http")
    );
    let name_only = s.kubectl_ok(&["get", "cm,secret", "-n", "shop", "-o", "name"]);
    assert!(
        name_only.contains("configmap/web-config") && name_only.contains("secret/web-secret"),
        "{name_only}"
    );
}

#[test]
fn get_watch_reports_added_modified_and_deleted_objects() {
    let s = Server::start();
    let mut watcher = Command::new("kubectl")
        .args([
            "get",
            "configmaps",
            "-n",
            "default",
            "--watch",
            "--output-watch-events",
        ])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    s.kubectl_ok(&["create", "configmap", "watched", "--from-literal=a=1"]);
    s.kubectl_ok(&["label", "configmap", "watched", "seen=yes"]);
    s.kubectl_ok(&["delete", "configmap", "watched"]);
    std::thread::sleep(Duration::from_millis(700));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let mut out = String::new();
    watcher
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let events: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("watched"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        events,
        ["ADDED", "MODIFIED", "DELETED"],
        "watch output:\n{out}"
    );
}

#[test]
fn label_annotate_and_all_three_patch_types_change_objects() {
    let s = Server::start();
    apply_basic(&s);
    s.kubectl_ok(&[
        "label",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "tier=frontend",
    ]);
    s.kubectl_ok(&[
        "annotate",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "owner=alice",
    ]);
    let cm = s.kubectl_json(&["get", "configmap", "web-config", "-n", "shop"]);
    assert_eq!(cm["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(cm["metadata"]["annotations"]["owner"], "alice");
    s.kubectl_ok(&["label", "configmap", "web-config", "-n", "shop", "tier-"]);
    let cm = s.kubectl_json(&["get", "configmap", "web-config", "-n", "shop"]);
    assert!(
        cm["metadata"]["labels"].get("tier").is_none(),
        "label removed"
    );

    s.kubectl_ok(&[
        "patch",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "--type=merge",
        "-p",
        r#"{"data":{"mode":null,"new":"v"}}"#,
    ]);
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/data/greeting","value":"hi"}]"#,
    ]);
    let cm = s.kubectl_json(&["get", "configmap", "web-config", "-n", "shop"]);
    assert_eq!(
        cm["data"],
        serde_json::json!({"greeting": "hi", "new": "v"})
    );
    s.kubectl_ok(&["patch", "deployment", "web", "-n", "shop", "--type=strategic", "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","env":[{"name":"EXTRA","value":"1"}]}]}}}}"#]);
    let d = s.kubectl_json(&["get", "deployment", "web", "-n", "shop"]);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    let mut names: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["EXTRA", "GREETING", "MODE"],
        "strategic merge by name keeps the others"
    );
    assert_eq!(
        c["image"], "hello-http:v1",
        "the container was merged, not replaced"
    );
    let bad = s.kubectl(&[
        "patch",
        "configmap",
        "web-config",
        "-n",
        "shop",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/data/greeting","value":"nope"}]"#,
    ]);
    assert!(!bad.status.success());
}

#[test]
fn scale_sets_the_replicas_of_a_deployment() {
    let s = Server::start();
    apply_basic(&s);
    let out = s.kubectl_ok(&["scale", "deployment", "web", "-n", "shop", "--replicas=5"]);
    assert!(out.contains("deployment.apps/web scaled"), "{out}");
    let d = s.kubectl_json(&["get", "deployment", "web", "-n", "shop"]);
    assert_eq!(d["spec"]["replicas"], 5);
    let bad = s.kubectl(&[
        "scale",
        "deployment",
        "web",
        "-n",
        "shop",
        "--replicas=2",
        "--resource-version=1",
    ]);
    assert!(!bad.status.success(), "a stale resourceVersion is refused");
}

#[test]
fn delete_by_label_removes_only_the_matching_objects() {
    let s = Server::start();
    s.kubectl_ok(&["create", "configmap", "a", "--from-literal=x=1"]);
    s.kubectl_ok(&["create", "configmap", "b", "--from-literal=x=1"]);
    s.kubectl_ok(&["create", "configmap", "c", "--from-literal=x=1"]);
    s.kubectl_ok(&["label", "configmap", "a", "b", "batch=old"]);
    let out = s.kubectl_ok(&["delete", "configmaps", "-l", "batch=old"]);
    assert!(
        out.contains("\"a\" deleted") && out.contains("\"b\" deleted"),
        "{out}"
    );
    let left = s.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    assert!(
        left.contains("configmap/c") && !left.contains("configmap/a"),
        "{left}"
    );
}

#[test]
fn describe_shows_a_deployment_and_services_and_explain_answers_from_openapi() {
    let s = Server::start();
    apply_basic(&s);
    let d = s.kubectl_ok(&["describe", "deployment", "web", "-n", "shop"]);
    for want in [
        "Name:",
        "web",
        "Namespace:",
        "shop",
        "Selector:",
        "app=web",
        "hello-http:v1",
        "RollingUpdate",
    ] {
        assert!(d.contains(want), "{want} missing in:\n{d}");
    }
    // A Service with a named port and one with an unnamed port (kubectl reads each
    // EndpointSlice port's name, which is always set, empty for an unnamed port).
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Service\nmetadata: {name: plain, namespace: shop}\n\
         spec: {selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}\n",
    );
    for svc in ["web", "plain"] {
        wait_for(
            "the Service's EndpointSlice",
            Duration::from_secs(20),
            || {
                let l = s.kubectl_ok(&[
                    "get",
                    "endpointslices",
                    "-n",
                    "shop",
                    "-l",
                    &format!("kubernetes.io/service-name={svc}"),
                    "-o",
                    "name",
                ]);
                (!l.trim().is_empty()).then_some(())
            },
        );
        let d = s.kubectl_ok(&["describe", "service", svc, "-n", "shop"]);
        for want in ["Name:", svc, "Selector:", "app=web", "IP:", "Endpoints:"] {
            assert!(d.contains(want), "{want} missing in:\n{d}");
        }
    }
    // Inter-pod terms, with a namespaceSelector with requirements, are all acted on by the
    // scheduler, and draw no warning.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: apart, namespace: shop}\nspec:\n  \
         affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: [\
         {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}], \
         preferredDuringSchedulingIgnoredDuringExecution: [{weight: 1, podAffinityTerm: \
         {topologyKey: zone, labelSelector: {matchLabels: {app: web}}, \
         namespaceSelector: {matchLabels: {team: a}}}}]}}\n  \
         containers: [{name: c, image: i}]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("Warning:").count(), 0, "{err}");
    let e = s.kubectl_ok(&["explain", "pod.spec.containers"]);
    assert!(
        e.contains("KIND:") && e.contains("Pod") && e.contains("FIELD: containers"),
        "{e}"
    );
    assert!(e.contains("image"), "{e}");
    let e = s.kubectl_ok(&["explain", "deployment.spec.strategy"]);
    assert!(e.contains("rollingUpdate"), "{e}");
}

/// A manifest holding a kind the server does not serve: kubectl applies the rest and names
/// the missing kind, as against kube-apiserver without that CRD. (kubectl looks such a kind
/// up in the protobuf OpenAPI v2 document; a JSON answer there failed the whole manifest.)
#[test]
fn a_manifest_with_an_unserved_kind_applies_its_other_objects_and_names_the_kind() {
    let s = Server::start();
    let manifest = "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: old\nspec:\n  selector: {app: old}\n  template:\n    metadata:\n      labels: {app: old}\n    spec:\n      containers: [{name: c, image: i}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: beside\ndata: {a: b}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], manifest);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the ReplicationController cannot be applied"
    );
    assert!(
        stderr.contains("no matches for kind \"ReplicationController\" in version \"v1\""),
        "{stderr}"
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configmap/beside created"),
        "{stderr}"
    );
    assert_eq!(
        s.kubectl_ok(&["get", "configmap", "beside", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    // A kind served but not in the OpenAPI documents (a review) needs no --validate=false.
    let review = "apiVersion: authorization.k8s.io/v1\nkind: SelfSubjectAccessReview\nspec:\n  resourceAttributes: {verb: get, resource: pods}\n";
    let allowed = s.kubectl_stdin_ok(
        &["create", "-f", "-", "-o", "jsonpath={.status.allowed}"],
        review,
    );
    assert_eq!(allowed, "true");
}

#[test]
fn deleting_a_namespace_terminates_it_removes_its_contents_then_removes_it() {
    let s = Server::start();
    apply_basic(&s);
    s.kubectl_ok(&["delete", "namespace", "shop", "--wait=false"]);
    wait_for(
        "namespace shop to disappear",
        Duration::from_secs(20),
        || {
            let out = s.kubectl(&["get", "namespace", "shop"]);
            (!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound"))
                .then_some(())
        },
    );
    let left = s.kubectl_ok(&[
        "get",
        "configmaps,deployments,services,jobs",
        "-n",
        "shop",
        "-o",
        "name",
    ]);
    assert!(left.trim().is_empty(), "contents were deleted: {left}");
    let refused = s.kubectl(&["create", "configmap", "x", "-n", "shop"]);
    assert!(!refused.status.success());
}

#[test]
fn graceful_shutdown_on_sigterm_exits_cleanly() {
    let mut s = Server::start();
    s.kubectl_ok(&["get", "namespaces"]);
    assert!(s.terminate(), "flotilla server exits 0 on SIGTERM");
}

#[test]
fn kubectl_create_generators_which_send_protobuf_work_for_builtin_kinds() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "gen"]);
    s.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "gen",
        "--image=hello-http:v1",
        "--replicas=0",
        "--port=8080",
    ]);
    s.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "gen",
        "--from-literal=user=admin",
    ]);
    s.kubectl_ok(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "gen",
        "--tcp=80:8080",
    ]);
    s.kubectl_ok(&[
        "create",
        "job",
        "once",
        "-n",
        "gen",
        "--image=hello-wasi:v1",
    ]);
    s.kubectl_ok(&["create", "serviceaccount", "robot", "-n", "gen"]);
    let d = s.kubectl_json(&["get", "deployment", "web", "-n", "gen"]);
    assert_eq!(
        d["spec"]["replicas"], 0,
        "an explicit zero survives protobuf decoding"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        8080
    );
    let secret = s.kubectl_json(&["get", "secret", "creds", "-n", "gen"]);
    assert_eq!(secret["data"]["user"], "YWRtaW4=");
    let svc = s.kubectl_json(&["get", "service", "web", "-n", "gen"]);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    let job = s.kubectl_json(&["get", "job", "once", "-n", "gen"]);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    s.kubectl_ok(&["get", "serviceaccount", "robot", "-n", "gen"]);
}

#[test]
fn kubectl_auth_can_i_says_yes_to_everything_as_the_server_allows_everything() {
    let s = Server::start();
    let out = s.kubectl(&["auth", "can-i", "create", "pods"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = s.kubectl(&["auth", "can-i", "delete", "deployments.apps", "-A"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let out = s.kubectl(&["auth", "can-i", "--list"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.lines().any(|l| l.starts_with("*.*")), "{list}");
    // Discovered as create-only, cluster-scoped resources, as kube-apiserver lists them.
    let out = s.kubectl(&[
        "api-resources",
        "--api-group=authorization.k8s.io",
        "-o",
        "wide",
    ]);
    let resources = String::from_utf8_lossy(&out.stdout);
    for name in ["selfsubjectaccessreviews", "selfsubjectrulesreviews"] {
        let line = resources
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not discovered: {resources}"));
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert!(
            columns.contains(&"false") && columns.last() == Some(&"create"),
            "{line}"
        );
    }
    // A review asking about nothing is invalid, with the field named.
    let r = reqwest::blocking::Client::new()
        .post(format!(
            "{}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
            s.url
        ))
        .json(&serde_json::json!({"apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview", "spec": {}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 422);
    let status: serde_json::Value = r.json().unwrap();
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.resourceAttributes"
    );
}

#[test]
fn kubectl_auth_whoami_says_every_caller_is_anonymous() {
    let s = Server::start();
    let out = s.kubectl_ok(&["auth", "whoami"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("Username") && l.trim_end().ends_with("system:anonymous")),
        "{out}"
    );
    let review = s.kubectl_json(&["auth", "whoami"]);
    assert_eq!(review["kind"], "SelfSubjectReview");
    assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(
        review["status"]["userInfo"]["groups"],
        serde_json::json!(["system:unauthenticated"])
    );
    let groups = s.kubectl_ok(&["api-versions"]);
    assert!(
        groups.lines().any(|l| l == "authentication.k8s.io/v1"),
        "{groups}"
    );
}

/// PriorityClasses: the built-in ones exist, a new pod gets its class's priority, and a pod
/// naming a class that does not exist is refused by admission.
#[test]
fn pods_get_the_priority_of_their_priority_class() {
    let s = Server::start();
    let table = s.kubectl_ok(&["get", "priorityclasses"]);
    assert!(
        table.contains("system-cluster-critical")
            && table.contains("2000001000")
            && table.contains("PREEMPTIONPOLICY"),
        "{table}"
    );
    let manifest = "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata:\n  name: batch-low\nvalue: -10\ndescription: best effort batch\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: ranked\nspec:\n  priorityClassName: batch-low\n  containers: [{name: a, image: hello-http:v1}]\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pod = s.kubectl_json(&["get", "pod", "ranked"]);
    assert_eq!(pod["spec"]["priority"], -10, "{pod}");
    assert_eq!(pod["spec"]["preemptionPolicy"], "PreemptLowerPriority");
    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: unranked\nspec:\n  priorityClassName: no-such-class\n  containers: [{name: a, image: hello-http:v1}]\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "pods \"unranked\" is forbidden: no PriorityClass with name no-such-class was found"
        ),
        "{err}"
    );
    assert!(!s.kubectl(&["get", "pod", "unranked"]).status.success());
}

#[test]
fn rbac_ingress_and_network_policy_objects_apply_list_and_are_validated() {
    let s = Server::start();
    // What a chart typically carries beside its workload.
    let manifest = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: app\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: reader\nrules:\n  - apiGroups: [\"\"]\n    resources: [pods, configmaps]\n    verbs: [get, list, watch]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: app-reads\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: Role\n  name: reader\nsubjects:\n  - kind: ServiceAccount\n    name: app\n    namespace: default\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: node-viewer\nrules:\n  - apiGroups: [\"\"]\n    resources: [nodes]\n    verbs: [get, list]\n  - nonResourceURLs: [/healthz]\n    verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: app-views-nodes\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: node-viewer\nsubjects:\n  - kind: ServiceAccount\n    name: app\n    namespace: default\n  - kind: Group\n    apiGroup: rbac.authorization.k8s.io\n    name: ops\n---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: edge\nspec:\n  controller: example.com/edge\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: front\nspec:\n  ingressClassName: edge\n  tls:\n    - hosts: [shop.example]\n  rules:\n    - host: shop.example\n      http:\n        paths:\n          - path: /\n            pathType: Prefix\n            backend:\n              service:\n                name: web\n                port: {number: 80}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: only-front\nspec:\n  podSelector:\n    matchLabels: {app: web}\n  policyTypes: [Ingress]\n  ingress:\n    - from:\n        - podSelector:\n            matchLabels: {app: front}\n      ports:\n        - protocol: TCP\n          port: 8080\n";
    s.kubectl_stdin_ok(&["apply", "-f", "-"], manifest);
    // Applied again unchanged: nothing to do.
    let again = s.kubectl_stdin_ok(&["apply", "-f", "-"], manifest);
    assert!(
        again.contains("role.rbac.authorization.k8s.io/reader unchanged"),
        "{again}"
    );
    assert!(
        again.contains("ingress.networking.k8s.io/front unchanged"),
        "{again}"
    );

    let roles = s.kubectl_ok(&["get", "roles"]);
    assert!(
        roles.contains("NAME") && roles.contains("CREATED AT") && roles.contains("reader"),
        "{roles}"
    );
    let bindings = s.kubectl_ok(&["get", "rolebindings", "-o", "wide"]);
    assert!(
        bindings.contains("Role/reader") && bindings.contains("default/app"),
        "{bindings}"
    );
    let cluster = s.kubectl_ok(&["get", "clusterrolebindings", "-o", "wide"]);
    assert!(
        cluster.contains("ClusterRole/node-viewer") && cluster.contains("ops"),
        "{cluster}"
    );
    // The bootstrap role every cluster has.
    assert!(
        cluster.contains("ClusterRole/cluster-admin") && cluster.contains("system:masters"),
        "{cluster}"
    );
    let ing = s.kubectl_ok(&["get", "ingress"]);
    assert!(
        ing.contains("front")
            && ing.contains("edge")
            && ing.contains("shop.example")
            && ing.contains("80, 443"),
        "{ing}"
    );
    let netpol = s.kubectl_ok(&["get", "netpol"]);
    assert!(
        netpol.contains("only-front") && netpol.contains("app=web"),
        "{netpol}"
    );
    let describe = s.kubectl_ok(&["describe", "role", "reader"]);
    assert!(
        describe.contains("pods") && describe.contains("[get list watch]"),
        "{describe}"
    );

    // kubectl's generators send these kinds as protobuf.
    s.kubectl_ok(&[
        "create",
        "role",
        "cm-editor",
        "--verb=get,update",
        "--resource=configmaps",
    ]);
    s.kubectl_ok(&[
        "create",
        "rolebinding",
        "edits",
        "--role=cm-editor",
        "--user=jane",
    ]);
    s.kubectl_ok(&[
        "create",
        "clusterrole",
        "ns-reader",
        "--verb=get",
        "--resource=namespaces",
    ]);
    s.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "reads-ns",
        "--clusterrole=ns-reader",
        "--group=devs",
    ]);
    s.kubectl_ok(&["create", "ingress", "simple", "--rule=a.example/=web:80"]);
    let role = s.kubectl_json(&["get", "role", "cm-editor"]);
    assert_eq!(
        role["rules"][0]["verbs"],
        serde_json::json!(["get", "update"])
    );
    s.kubectl_ok(&["delete", "role", "cm-editor"]);
    s.kubectl_ok(&["delete", "ingress", "simple"]);

    // What kube-apiserver refuses, with its words.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: bad\nrules:\n  - resources: [pods]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("rules[0].verbs"),
        "{err}"
    );
    let out = s.kubectl(&[
        "patch",
        "rolebinding",
        "app-reads",
        "-p",
        r#"{"roleRef":{"name":"other"}}"#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("cannot change roleRef"),
        "{err}"
    );
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: untyped\nspec:\n  rules:\n    - http:\n        paths:\n          - path: /\n            backend:\n              service: {name: web, port: {number: 80}}\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("pathType must be specified"),
        "{err}"
    );
    assert!(
        !s.kubectl(&["get", "ingress", "untyped"]).status.success(),
        "nothing was written"
    );
}

#[test]
fn limit_ranges_default_and_bound_the_pods_and_claims_of_their_namespace() {
    let s = Server::start();
    s.kubectl_ok(&["create", "namespace", "team"]);
    let limits = "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bounds\n  namespace: team\nspec:\n  limits:\n    - type: Container\n      default: {cpu: 200m, memory: 64Mi}\n      defaultRequest: {cpu: 100m, memory: 32Mi}\n      max: {memory: 1Gi}\n    - type: PersistentVolumeClaim\n      max: {storage: 1Gi}\n";
    s.kubectl_stdin_ok(&["apply", "-f", "-"], limits);
    let lr = s.kubectl_json(&["get", "limits", "bounds", "-n", "team"]);
    assert_eq!(lr["spec"]["limits"][0]["max"]["memory"], "1Gi");
    let pod = |name: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: team\nspec:\n  containers:\n    - name: c\n      image: hello-http:v1\n{resources}"
        )
    };
    // No node runs it: admission is all this checks.
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &pod("plain", ""));
    let p = s.kubectl_json(&["get", "pod", "plain", "-n", "team"]);
    let r = &p["spec"]["containers"][0]["resources"];
    assert_eq!(
        r["limits"],
        serde_json::json!({"cpu": "200m", "memory": "64Mi"})
    );
    assert_eq!(
        r["requests"],
        serde_json::json!({"cpu": "100m", "memory": "32Mi"})
    );
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );
    // The same pod elsewhere gets nothing.
    let other = pod("plain", "").replace("namespace: team", "namespace: default");
    s.kubectl_stdin_ok(&["apply", "-f", "-"], &other);
    let p = s.kubectl_json(&["get", "pod", "plain", "-n", "default"]);
    assert!(
        p["spec"]["containers"][0]["resources"]["limits"].is_null(),
        "{p}"
    );

    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("big", "      resources:\n        limits: {memory: 2Gi}\n"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("pods \"big\" is forbidden: maximum memory usage per Container is 1Gi, but limit is 2Gi"),
        "{err}"
    );
    assert!(
        !s.kubectl(&["get", "pod", "big", "-n", "team"])
            .status
            .success(),
        "nothing written"
    );
    let claim = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: huge\n  namespace: team\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {storage: 5Gi}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], claim);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(
                "maximum storage usage per PersistentVolumeClaim is 1Gi, but request is 5Gi"
            ),
        "{err}"
    );
    // A LimitRange whose bounds contradict each other is refused.
    let bad = "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: bad\n  namespace: team\nspec:\n  limits:\n    - type: Container\n      min: {cpu: \"2\"}\n      max: {cpu: \"1\"}\n";
    let out = s.kubectl_stdin(&["apply", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("min value 2 is greater than max value 1"),
        "{err}"
    );
    // Deleting the LimitRange lifts it at once.
    s.kubectl_ok(&["delete", "limits", "bounds", "-n", "team"]);
    s.kubectl_stdin_ok(
        &["apply", "-f", "-"],
        &pod("big", "      resources:\n        limits: {memory: 2Gi}\n"),
    );
}
