//! Server-side apply: `kubectl apply --server-side` and the kube crate's `Patch::Apply`, with
//! field ownership in `managedFields`, removal of fields a manager gives up, and conflicts.

use kube::api::{Api, Patch, PatchParams};

use crate::harness::{Server, manifests};

fn deployment(replicas: u32, image: &str, tier_label: bool) -> String {
    let tier = if tier_label { "\n    tier: front" } else { "" };
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels:
    app: web{tier}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: {image}
"
    )
}

fn managers(obj: &serde_json::Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or("").to_string(),
                        e["operation"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kubectl_apply_server_side_owns_fields_removes_what_it_drops_and_reports_conflicts() {
    let s = Server::start();
    // A folder of several kinds, applied client-side first, then server-side twice: kubectl
    // hands the client-side fields to its server-side manager, and the server-side applies
    // then change no object (defaults and what the server generated, such as the Job's
    // selector, stay; no generation moves).
    let folder = manifests("basic");
    let folder = folder.to_str().unwrap();
    let objects = || {
        let mut list = s.kubectl_json(&["get", "-f", folder]);
        for item in list["items"].as_array_mut().unwrap() {
            let item = item.as_object_mut().unwrap();
            item.remove("status");
            let meta = item["metadata"].as_object_mut().unwrap();
            meta.remove("resourceVersion");
            meta.remove("managedFields");
        }
        list["items"].clone()
    };
    s.kubectl_ok(&["apply", "-f", folder]);
    let client_side = objects();
    for _ in 0..2 {
        let out = s.kubectl(&["apply", "--server-side", "-f", folder]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("serverside-applied"),
            "{out:?}"
        );
        assert!(!stderr.contains("Warning"), "{stderr}");
        assert_eq!(objects(), client_side);
    }

    // The first server-side apply after a client-side one may change what the client-side
    // apply set: kube-apiserver lets kubectl take those fields over without a conflict.
    let cm = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: upgraded}}\ndata: {{a: \"{v}\"}}\n"
        )
    };
    let out = s.kubectl_stdin(&["apply", "-f", "-"], &cm("1"));
    assert!(out.status.success(), "{out:?}");
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &cm("2"));
    assert!(out.status.success(), "{out:?}");
    let got = s.kubectl_json(&["get", "configmap", "upgraded", "--show-managed-fields"]);
    assert_eq!(got["data"]["a"], "2");
    assert!(
        managers(&got).contains(&("kubectl".into(), "Apply".into())),
        "{:?}",
        managers(&got)
    );
    // A field changed since by someone else is still a conflict.
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "upgraded",
        "-p",
        r#"{"data":{"a":"3"}}"#,
    ]);
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &cm("4"));
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("conflict"),
        "{out:?}"
    );

    let out = s.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &deployment(3, "registry.local/web:1", true),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("deployment.apps/web serverside-applied")
    );
    let d = s.kubectl_json(&["get", "deployment", "web", "--show-managed-fields"]);
    assert!(
        managers(&d).contains(&("kubectl".into(), "Apply".into())),
        "{:?}",
        managers(&d)
    );
    let owned = d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "kubectl")
        .unwrap()["fieldsV1"]
        .clone();
    assert_eq!(owned["f:spec"]["f:replicas"], serde_json::json!({}));
    assert!(
        owned["f:metadata"]["f:labels"].get("f:tier").is_some(),
        "{owned}"
    );

    // Applied again without the label and with a new image: the label goes, the image changes,
    // and what the server and controllers set (the revision annotation, status) stays.
    let out = s.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        &deployment(3, "registry.local/web:2", false),
    );
    assert!(out.status.success(), "{out:?}");
    let d = s.kubectl_json(&["get", "deployment", "web"]);
    assert!(d["metadata"]["labels"].get("tier").is_none(), "{d}");
    assert_eq!(d["metadata"]["labels"]["app"], "web");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.local/web:2"
    );
    assert_eq!(
        d["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults kept"
    );
    // The new image started a rollout, and the Deployment controller writes the status as
    // it goes: wait until it has settled (the same resourceVersion a second apart), so that a
    // change below is the conflicting apply's and not the controller's.
    let rv = crate::harness::wait_for(
        "the Deployment's rollout to settle",
        std::time::Duration::from_secs(30),
        || {
            let before =
                s.kubectl_json(&["get", "deployment", "web"])["metadata"]["resourceVersion"]
                    .clone();
            std::thread::sleep(std::time::Duration::from_secs(1));
            let after =
                s.kubectl_json(&["get", "deployment", "web"])["metadata"]["resourceVersion"]
                    .clone();
            (before == after).then_some(after)
        },
    );

    // Another manager changing kubectl's replicas is a conflict, and nothing changes.
    let other = s.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=autoscaler", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec: {replicas: 5}\n",
    );
    assert!(!other.status.success(), "{other:?}");
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas") && err.contains("\"kubectl\""),
        "{err}"
    );
    let d = s.kubectl_json(&["get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["resourceVersion"], rv);

    // --dry-run=server with --force-conflicts answers without storing.
    let dry = s.kubectl_stdin(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager=autoscaler",
            "--dry-run=server",
            "-o",
            "json",
            "-f",
            "-",
        ],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec: {replicas: 5}\n",
    );
    assert!(dry.status.success(), "{dry:?}");
    let shown: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(shown["spec"]["replicas"], 5);
    assert_eq!(
        s.kubectl_json(&["get", "deployment", "web"])["spec"]["replicas"],
        3
    );

    // Forced: the field changes hands, so kubectl's next apply without replicas keeps 5.
    let forced = s.kubectl_stdin(
        &["apply", "--server-side", "--force-conflicts", "--field-manager=autoscaler", "-f", "-"],
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\nspec: {replicas: 5}\n",
    );
    assert!(forced.status.success(), "{forced:?}");
    let without_replicas =
        deployment(3, "registry.local/web:2", false).replace("  replicas: 3\n", "");
    s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], &without_replicas);
    let d = s.kubectl_json(&["get", "deployment", "web", "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 5);
    let m = managers(&d);
    assert!(m.contains(&("autoscaler".into(), "Apply".into())), "{m:?}");

    // An ordinary patch of an applied object takes the fields it changes, so applying the old
    // value back is a conflict with the patch's manager.
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: default}\ndata: {level: \"1\"}\n";
    let out = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], cm);
    assert!(out.status.success(), "{out:?}");
    s.kubectl_ok(&[
        "patch",
        "configmap",
        "cfg",
        "--type=merge",
        "-p",
        r#"{"data":{"level":"2"}}"#,
        "--field-manager=editor",
    ]);
    let again = s.kubectl_stdin(&["apply", "--server-side", "-f", "-"], cm);
    assert!(!again.status.success(), "{again:?}");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("\"editor\"") && err.contains(".data.level"),
        "{err}"
    );
    let shown = s.kubectl_json(&["get", "configmap", "cfg", "--show-managed-fields"]);
    assert_eq!(shown["data"]["level"], "2");
    let m = managers(&shown);
    assert!(m.contains(&("editor".into(), "Update".into())), "{m:?}");

    // kubectl names its manager on every write, so what `kubectl create` set is owned too.
    s.kubectl_ok(&["create", "configmap", "made", "--from-literal=size=small"]);
    let over = s.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: made, namespace: default}\ndata: {size: large}\n",
    );
    assert!(!over.status.success(), "{over:?}");
    let err = String::from_utf8_lossy(&over.stderr);
    assert!(
        err.contains("\"kubectl-create\"") && err.contains(".data.size"),
        "{err}"
    );

    // Bad input: no fieldManager is a 400 that writes nothing.
    let r = reqwest::blocking::Client::new()
        .patch(format!(
            "{}/apis/apps/v1/namespaces/default/deployments/web",
            s.url
        ))
        .header("Content-Type", "application/apply-patch+yaml")
        .body("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let status: serde_json::Value = r.json().unwrap();
    assert!(
        status["message"].as_str().unwrap().contains("fieldManager"),
        "{status}"
    );
    assert_eq!(
        s.kubectl_json(&["get", "deployment", "web"])["spec"]["replicas"],
        5
    );
}

#[test]
fn kube_client_patch_apply_creates_then_updates_objects_and_their_status() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(patch_apply_with_the_kube_client(&s));
}

async fn patch_apply_with_the_kube_client(s: &Server) {
    use k8s_openapi::api::core::v1::{ConfigMap, Service};

    let client = s.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let params = PatchParams::apply("flotilla-e2e");
    let applied = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "fast", "level": "3"}
    });
    let cm = cms
        .patch("settings", &params, &Patch::Apply(&applied))
        .await
        .expect("apply creates");
    assert_eq!(cm.data.as_ref().unwrap()["mode"], "fast");
    let applied = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings"},
        "data": {"mode": "slow"}
    });
    let cm = cms
        .patch("settings", &params, &Patch::Apply(&applied))
        .await
        .expect("apply updates");
    let data = cm.data.unwrap();
    assert_eq!(data["mode"], "slow");
    assert!(!data.contains_key("level"), "{data:?}");
    let mf = cm.metadata.managed_fields.unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("flotilla-e2e"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Status through its subresource, as controllers do.
    let svcs: Api<Service> = Api::namespaced(client, "default");
    let svc = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "front"},
        "spec": {"type": "LoadBalancer", "selector": {"app": "front"}, "ports": [{"port": 80}]}
    });
    svcs.patch("front", &params, &Patch::Apply(&svc))
        .await
        .expect("service applied");
    let status = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "front"},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}
    });
    let lb = PatchParams::apply("lb-controller");
    let svc = svcs
        .patch_status("front", &lb, &Patch::Apply(&status))
        .await
        .expect("status applied");
    let ingress = svc.status.unwrap().load_balancer.unwrap().ingress.unwrap();
    assert_eq!(ingress[0].ip.as_deref(), Some("192.0.2.10"));
    let mf = svc.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|e| e.manager.as_deref() == Some("lb-controller")
                && e.subresource.as_deref() == Some("status")),
        "{mf:?}"
    );
    assert!(
        mf.iter()
            .any(|e| e.manager.as_deref() == Some("flotilla-e2e")),
        "the spec's manager is kept: {mf:?}"
    );
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 80);
}
