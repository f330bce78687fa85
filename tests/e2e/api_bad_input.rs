//! Every kind of bad input gets its Kubernetes status code and `Status`, and changes nothing.

use serde_json::{Value, json};

use crate::harness::Server;

struct Http {
    base: String,
    client: reqwest::blocking::Client,
}

impl Http {
    fn new(s: &Server) -> Http {
        Http {
            base: s.url.clone(),
            client: reqwest::blocking::Client::new(),
        }
    }

    fn send(&self, method: &str, path: &str, ct: &str, body: Vec<u8>) -> (u16, Value) {
        let r = self
            .client
            .request(method.parse().unwrap(), format!("{}{}", self.base, path))
            .header("content-type", ct)
            .body(body)
            .timeout(std::time::Duration::from_secs(30))
            .send()
            .expect("request");
        let code = r.status().as_u16();
        (code, r.json().unwrap_or(Value::Null))
    }

    /// The whole state that could change: the list revision of every kind we touch.
    fn snapshot(&self) -> Vec<Value> {
        [
            "/api/v1/configmaps",
            "/api/v1/pods",
            "/api/v1/services",
            "/apis/apps/v1/deployments",
            "/api/v1/namespaces",
        ]
        .iter()
        .map(|p| {
            let (_, v) = self.send("GET", p, "application/json", vec![]);
            // Items, not the list revision: the revision is global and background
            // controllers may write elsewhere.
            v["items"].clone()
        })
        .collect()
    }
}

fn cm(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

/// One request and the answer it must get: its status code, the `Status` reason (for an
/// error) and a field among the causes.
struct Case<'a> {
    what: &'a str,
    method: &'a str,
    path: &'a str,
    ct: &'a str,
    body: Vec<u8>,
    code: u16,
    reason: &'a str,
    field: Option<&'a str>,
}

#[test]
fn bad_requests_get_their_status_codes_and_change_nothing() {
    let s = Server::start();
    let h = Http::new(&s);
    // The namespace controller gives each namespace its default ServiceAccount; let it settle.
    crate::harness::wait_for(
        "default service accounts",
        std::time::Duration::from_secs(10),
        || {
            let (_, v) = h.send("GET", "/api/v1/serviceaccounts", "application/json", vec![]);
            (v["items"].as_array().map_or(0, Vec::len) >= 4).then_some(())
        },
    );
    let (code, existing) = h.send(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        cm("existing"),
    );
    assert_eq!(code, 201);
    let stale_rv = existing["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    // Make the stored revision move past the one we hold.
    let (code, _) = h.send(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/existing",
        "application/merge-patch+json",
        br#"{"data":{"k":"v2"}}"#.to_vec(),
    );
    assert_eq!(code, 200);
    let before = h.snapshot();

    let pod_no_containers = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}});
    let bad_name =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "Bad_Name"}});
    let wrong_kind = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
    let wrong_ns = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}});
    let bad_deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let mut stale = existing.clone();
    stale["metadata"]["resourceVersion"] = json!(stale_rv);
    stale["data"] = json!({"k": "stale write"});
    let big = {
        let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}});
        v["data"] = json!({"blob": "x".repeat(3 * 1024 * 1024 + 10)});
        serde_json::to_vec(&v).unwrap()
    };
    let j = |v: &Value| serde_json::to_vec(v).unwrap();

    let cases = vec![
        Case {
            what: "malformed json",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/json",
            body: b"{\"kind\": ".to_vec(),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "malformed yaml",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/yaml",
            body: b"kind: [unclosed".to_vec(),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "unknown resource",
            method: "POST",
            path: "/api/v1/namespaces/default/widgets",
            ct: "application/json",
            body: cm("w"),
            code: 404,
            reason: "NotFound",
            field: None,
        },
        Case {
            what: "unknown group",
            method: "GET",
            path: "/apis/example.com/v1/things",
            ct: "application/json",
            body: vec![],
            code: 404,
            reason: "NotFound",
            field: None,
        },
        Case {
            what: "unknown version",
            method: "GET",
            path: "/apis/apps/v7/deployments",
            ct: "application/json",
            body: vec![],
            code: 404,
            reason: "NotFound",
            field: None,
        },
        Case {
            what: "invalid name",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/json",
            body: j(&bad_name),
            code: 422,
            reason: "Invalid",
            field: Some("metadata.name"),
        },
        Case {
            what: "missing required field",
            method: "POST",
            path: "/api/v1/namespaces/default/pods",
            ct: "application/json",
            body: j(&pod_no_containers),
            code: 422,
            reason: "Invalid",
            field: Some("spec.containers"),
        },
        Case {
            what: "selector not matching template",
            method: "POST",
            path: "/apis/apps/v1/namespaces/default/deployments",
            ct: "application/json",
            body: j(&bad_deploy),
            code: 422,
            reason: "Invalid",
            field: Some("spec.template.metadata.labels"),
        },
        Case {
            what: "kind not matching the url",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/json",
            body: j(&wrong_kind),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "body namespace differs from url",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/json",
            body: j(&wrong_ns),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "body over 3 MiB",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/json",
            body: big,
            code: 413,
            reason: "RequestEntityTooLarge",
            field: None,
        },
        Case {
            what: "stale resourceVersion",
            method: "PUT",
            path: "/api/v1/namespaces/default/configmaps/existing",
            ct: "application/json",
            body: j(&stale),
            code: 409,
            reason: "Conflict",
            field: None,
        },
        Case {
            what: "existing name",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "application/json",
            body: cm("existing"),
            code: 409,
            reason: "AlreadyExists",
            field: None,
        },
        Case {
            what: "namespace that does not exist",
            method: "POST",
            path: "/api/v1/namespaces/nope/configmaps",
            ct: "application/json",
            body: cm("x"),
            code: 404,
            reason: "NotFound",
            field: None,
        },
        Case {
            what: "unsupported media type",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps",
            ct: "text/plain",
            body: cm("x"),
            code: 415,
            reason: "UnsupportedMediaType",
            field: None,
        },
        Case {
            what: "patch of a missing object",
            method: "PATCH",
            path: "/api/v1/namespaces/default/configmaps/ghost",
            ct: "application/merge-patch+json",
            body: b"{}".to_vec(),
            code: 404,
            reason: "NotFound",
            field: None,
        },
        Case {
            what: "malformed patch",
            method: "PATCH",
            path: "/api/v1/namespaces/default/configmaps/existing",
            ct: "application/json-patch+json",
            body: b"{\"op\":1}".to_vec(),
            code: 400,
            reason: "BadRequest",
            field: None,
        },
        Case {
            what: "dry run create",
            method: "POST",
            path: "/api/v1/namespaces/default/configmaps?dryRun=All",
            ct: "application/json",
            body: cm("dry"),
            code: 201,
            reason: "",
            field: None,
        },
    ];
    for c in cases {
        let (code, status) = h.send(c.method, c.path, c.ct, c.body);
        assert_eq!(code, c.code, "{}: {status}", c.what);
        if c.code >= 400 {
            assert_eq!(status["kind"], "Status", "{}: {status}", c.what);
            assert_eq!(status["reason"], c.reason, "{}: {status}", c.what);
            assert_eq!(status["code"], c.code, "{}", c.what);
            assert!(
                !status["message"].as_str().unwrap_or("").is_empty(),
                "{}",
                c.what
            );
        }
        if let Some(field) = c.field {
            let causes = status["details"]["causes"]
                .as_array()
                .unwrap_or_else(|| panic!("{}: causes in {status}", c.what));
            assert!(
                causes.iter().any(|cause| cause["field"] == field),
                "{}: {field} in {status}",
                c.what
            );
        }
        assert_eq!(h.snapshot(), before, "{} changed the stored state", c.what);
    }
}

#[test]
fn strict_field_validation_rejects_unknown_fields_and_kubectl_reports_them() {
    let s = Server::start();
    let h = Http::new(&s);
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "u"}, "data": {}, "bogus": 1});
    let (code, status) = h.send(
        "POST",
        "/api/v1/namespaces/default/configmaps?fieldValidation=Strict",
        "application/json",
        serde_json::to_vec(&body).unwrap(),
    );
    assert_eq!(code, 400, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"bogus\""),
        "{status}"
    );
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: u\nspecc: {}\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("specc"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _) = h.send(
        "GET",
        "/api/v1/namespaces/default/configmaps/u",
        "application/json",
        vec![],
    );
    assert_eq!(code, 404, "nothing was written");
}

#[test]
fn kubectl_names_each_invalid_field_once_and_nothing_is_written() {
    let s = Server::start();
    // Each manifest (an object named `r`), its kind, and what kubectl must print. kubectl
    // prints each cause as `FIELD: MESSAGE` (after `*` when there are several), so a cause's
    // message must not name its field again.
    let cases: [(&str, &str, &[&str]); 7] = [
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r}\nspec:\n  selector: {matchLabels: {app: a}}\n  \
             template:\n    metadata: {labels: {app: b}}\n    spec: {containers: [{name: c, image: i}]}\n",
            "deployment",
            &["The Deployment \"r\" is invalid: spec.template.metadata.labels: Invalid value: "],
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: r}\nspec:\n  containers:\n  - name: c\n    \
             image: i\n    resources: {requests: {cpu: '2'}, limits: {cpu: '1', memory: lots}}\n",
            "pod",
            &[
                "* spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match",
                "* spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
            ],
        ),
        // Volumes and env sources the node agent would only fail on later.
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: r}\nspec:\n  containers:\n  - name: c\n    \
             image: i\n    env: [{name: IP, valueFrom: {fieldRef: {fieldPath: status.podIPz}}}]\n  volumes:\n  \
             - {name: v, emptyDir: {}, configMap: {name: cm, items: [{key: k, path: ../up}]}}\n",
            "pod",
            &[
                "* spec.volumes[0].configMap: Forbidden: may not specify more than 1 volume type",
                "* spec.volumes[0].configMap.items[0].path: Invalid value: \"../up\": must not contain '..'",
                "* spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"status.podIPz\": supported values: \"metadata.name\"",
            ],
        ),
        // A Secret of a built-in type without the keys its type promises.
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: r}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x}\n",
            "secret",
            &["The Secret \"r\" is invalid: data[tls.key]: Required value"],
        ),
        // Settings a controller could never act on.
        (
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: r}\nspec:\n  strategy: {type: Recreate, \
             rollingUpdate: {maxSurge: 1}}\n  selector: {matchLabels: {app: a}}\n  template:\n    \
             metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: i}]}\n",
            "deployment",
            &[
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
            ],
        ),
        (
            "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: r}\nspec:\n  \
             scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}\n  minReplicas: 5\n  maxReplicas: 2\n",
            "hpa",
            &["spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"],
        ),
        // An Indexed Job needs its completions, and maxFailedIndexes a backoffLimitPerIndex.
        (
            "apiVersion: batch/v1\nkind: Job\nmetadata: {name: r}\nspec:\n  completionMode: Indexed\n  parallelism: 2\n  \
             maxFailedIndexes: 1\n  \
             template:\n    spec: {restartPolicy: Never, containers: [{name: c, image: i}]}\n",
            "job",
            &[
                "spec.completions: Required value: when completion mode is Indexed",
                "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
            ],
        ),
    ];
    for (manifest, kind, wants) in cases {
        let out = s.kubectl_stdin(&["apply", "-f", "-"], manifest);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        for want in wants {
            assert!(err.contains(want), "{want} missing in {err}");
        }
        let parts: Vec<&str> = err.split(": ").collect();
        assert!(
            !parts.windows(2).any(|w| w[0] == w[1]),
            "a field named twice: {err}"
        );
        assert!(
            !s.kubectl(&["get", kind, "r"]).status.success(),
            "nothing was written"
        );
    }

    // An immutable ConfigMap keeps its data, and stays immutable.
    let out = s.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\ndata: {a: \"1\"}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (patch, want) in [
        (
            r#"{"data":{"a":"2"}}"#,
            "data: Forbidden: field is immutable when `immutable` is set",
        ),
        (
            r#"{"immutable":false}"#,
            "immutable: Forbidden: field is immutable when `immutable` is set",
        ),
    ] {
        let out = s.kubectl(&["patch", "configmap", "frozen", "-p", patch]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(want),
            "{patch}: {err}"
        );
    }
    let out = s.kubectl(&[
        "get",
        "configmap",
        "frozen",
        "-o",
        "jsonpath={.immutable} {.data.a}",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "true 1");
}

#[test]
fn kubectl_debug_adds_an_ephemeral_container_and_bad_ones_change_nothing() {
    let s = Server::start();
    let h = Http::new(&s);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
    let pods = "/api/v1/namespaces/default/pods";
    let (code, _) = h.send(
        "POST",
        pods,
        "application/json",
        serde_json::to_vec(&pod).unwrap(),
    );
    assert_eq!(code, 201);
    // kubectl's own patch (no -i: nothing to attach to without a node).
    s.kubectl_ok(&[
        "debug",
        "web",
        "--image=busybox:1.36",
        "--target=app",
        "-c",
        "debugger",
    ]);
    // The scheduler may write the (unschedulable) pod's status meanwhile: compare specs.
    let spec = || h.send("GET", &format!("{pods}/web"), "", vec![]).1["spec"].clone();
    let before = spec();
    assert_eq!(
        before["ephemeralContainers"],
        json!([{"name": "debugger", "image": "busybox:1.36", "targetContainerName": "app",
            "imagePullPolicy": "IfNotPresent", "resources": {},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"}])
    );
    let out = s.kubectl(&["debug", "web", "--image=busybox:1.36", "--target=nope"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(".targetContainerName: Not found: \"nope\""),
        "{err}"
    );
    assert_eq!(
        spec(),
        before,
        "kubectl debug --target=nope changed the pod"
    );

    let sub = &format!("{pods}/web/ephemeralcontainers");
    let json_patch = "application/json-patch+json";
    let add = |c: Value| {
        serde_json::to_vec(
            &json!([{"op": "add", "path": "/spec/ephemeralContainers/-", "value": c}]),
        )
        .unwrap()
    };
    let mut created = pod.clone();
    created["metadata"]["name"] = json!("new");
    created["spec"]["ephemeralContainers"] = json!([{"name": "d", "image": "busybox"}]);
    let subresource_patch = |what, body, field| Case {
        what,
        method: "PATCH",
        path: sub,
        ct: json_patch,
        body,
        code: 422,
        reason: "Invalid",
        field: Some(field),
    };
    let pod_path = format!("{pods}/web");
    let apply_path = format!("{sub}?fieldManager=t");
    let cases = [
        subresource_patch(
            "a port",
            add(json!({"name": "d", "image": "busybox", "ports": [{"containerPort": 80}]})),
            "spec.ephemeralContainers[1].ports",
        ),
        subresource_patch(
            "a changed image",
            br#"[{"op": "replace", "path": "/spec/ephemeralContainers/0/image", "value": "alpine"}]"#
                .to_vec(),
            "spec.ephemeralContainers[debugger]",
        ),
        subresource_patch(
            "a removal",
            br#"[{"op": "remove", "path": "/spec/ephemeralContainers/0"}]"#.to_vec(),
            "spec.ephemeralContainers",
        ),
        Case {
            path: &pod_path,
            ..subresource_patch(
                "an addition through the pod itself",
                add(json!({"name": "d", "image": "busybox"})),
                "spec",
            )
        },
        Case {
            what: "a create with one",
            method: "POST",
            path: pods,
            ct: "application/json",
            body: serde_json::to_vec(&created).unwrap(),
            code: 422,
            reason: "Invalid",
            field: Some("spec.ephemeralContainers"),
        },
        Case {
            what: "server-side apply",
            method: "PATCH",
            path: &apply_path,
            ct: "application/apply-patch+yaml",
            body: b"{}".to_vec(),
            code: 415,
            reason: "UnsupportedMediaType",
            field: None,
        },
        Case {
            what: "a kind without it",
            method: "GET",
            path: "/api/v1/namespaces/default/configmaps/x/ephemeralcontainers",
            ct: "",
            body: vec![],
            code: 404,
            reason: "NotFound",
            field: None,
        },
    ];
    for c in cases {
        let (code, status) = h.send(c.method, c.path, c.ct, c.body);
        assert_eq!(
            (code, status["reason"].as_str()),
            (c.code, Some(c.reason)),
            "{}: {status}",
            c.what
        );
        if let Some(field) = c.field {
            let causes = status["details"]["causes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                causes.iter().any(|cause| cause["field"] == field),
                "{}: {field} in {status}",
                c.what
            );
        }
        assert_eq!(spec(), before, "{} changed the pod", c.what);
    }
    let (code, _) = h.send("GET", &format!("{pods}/new"), "", vec![]);
    assert_eq!(code, 404, "the pod created with an ephemeral container");
}

#[test]
fn the_cli_prints_one_line_and_exits_non_zero_on_bad_flags() {
    // Runs `flotilla ARGS`, which must fail; its stderr.
    let fails = |args: &[&str]| {
        let out = std::process::Command::new(crate::harness::flotilla_bin())
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = fails(&["server", "--listen", "not-an-address"]);
    assert!(err.contains("--listen"), "{err}");
    let err = fails(&["server", "--wal-size", "100"]);
    assert!(
        err.contains("--wal-size") && err.contains("too small"),
        "{err}"
    );
    let err = fails(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        "/proc/no-such/dir",
    ]);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: cannot create data dir"), "{err}");

    // A file that is neither a .wasm nor an OCI layout: the message names what is accepted
    // (checked before any registry is contacted).
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not an image\n").unwrap();
    let text = text.to_str().unwrap();
    let err = fails(&[
        "image",
        "push",
        "-q",
        "--registry",
        "127.0.0.1:9",
        text,
        "notes:v1",
    ]);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("neither a WebAssembly file nor an OCI image layout"),
        "{err}"
    );
}

#[test]
fn a_second_server_on_a_data_dir_in_use_fails_and_leaves_the_first_ones_kubeconfig_alone() {
    let dir = tempfile::tempdir().unwrap();
    let s = crate::harness::Server::start_in(dir.path(), &[]);
    // The first server answers (so it holds its store) before the second one starts.
    assert!(s.kubectl(&["get", "namespaces"]).status.success());
    let kubeconfig = std::fs::read_to_string(&s.kubeconfig).unwrap();
    let out = std::process::Command::new(crate::harness::flotilla_bin())
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.starts_with("error: cannot open the store in")
            && err.contains("in use by another process"),
        "{err}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "nothing announced"
    );
    assert_eq!(
        std::fs::read_to_string(&s.kubeconfig).unwrap(),
        kubeconfig,
        "the running server's kubeconfig is untouched"
    );
    assert!(s.kubectl(&["get", "namespaces"]).status.success());
}
