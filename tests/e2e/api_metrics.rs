//! `/metrics`: request counters, latencies and open watches, read the way Prometheus and
//! `kubectl get --raw /metrics` read them.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Server, wait_for};

/// The value of the sample whose name and labels start `prefix`, if it is in `text`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `apiserver_request_total` of one verb on configmaps with one response code.
fn configmap_requests(text: &str, verb: &str, code: u16) -> Option<f64> {
    sample(
        text,
        &format!(
            r#"apiserver_request_total{{verb="{verb}",group="",version="v1",resource="configmaps",subresource="",code="{code}"}}"#
        ),
    )
}

#[test]
fn metrics_count_requests_by_verb_resource_and_code_and_track_open_watches() {
    let s = Server::start();
    s.kubectl_ok(&["create", "configmap", "m1", "--from-literal=a=b"]);
    s.kubectl_ok(&["get", "configmaps"]);
    let missing = s.kubectl(&["get", "configmap", "nope"]);
    assert!(!missing.status.success());

    let text = s.kubectl_ok(&["get", "--raw", "/metrics"]);
    assert_eq!(configmap_requests(&text, "POST", 201), Some(1.0), "{text}");
    assert!(
        configmap_requests(&text, "LIST", 200).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(configmap_requests(&text, "GET", 404), Some(1.0), "{text}");
    let latency = sample(
        &text,
        r#"apiserver_request_duration_seconds_count{verb="POST",group="",version="v1",resource="configmaps",subresource=""}"#,
    );
    assert_eq!(latency, Some(1.0), "{text}");
    assert!(
        sample(&text, "process_resident_memory_bytes").is_some_and(|b| b > 1e6),
        "{text}"
    );
    assert!(
        sample(&text, "flotilla_store_revision").is_some_and(|r| r >= 1.0),
        "{text}"
    );
    // The store counted its durable batches: at least the ConfigMap's, never more batches
    // than writes (group commit puts several writes in one).
    let batches = sample(&text, "flotilla_store_commit_batches_total").unwrap_or(0.0);
    let writes = sample(&text, "flotilla_store_committed_writes_total").unwrap_or(0.0);
    assert!(batches >= 1.0 && writes >= batches, "{text}");
    assert!(
        sample(&text, "flotilla_store_sync_seconds_total").is_some_and(|s| s > 0.0),
        "{text}"
    );

    // An open watch counts while it is open and stops counting when the client leaves.
    let open_watches = r#"apiserver_longrunning_requests{verb="WATCH",group="",version="v1",resource="configmaps",subresource=""}"#;
    let mut watcher = Command::new("kubectl")
        .args(["get", "configmaps", "--watch"])
        .env("KUBECONFIG", &s.kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl is installed");
    wait_for("the watch to be counted", Duration::from_secs(20), || {
        let text = s.kubectl_ok(&["get", "--raw", "/metrics"]);
        (sample(&text, open_watches) == Some(1.0)).then_some(())
    });
    watcher.kill().expect("kill the watch");
    let _ = watcher.wait();
    wait_for("the watch to end", Duration::from_secs(20), || {
        let text = s.kubectl_ok(&["get", "--raw", "/metrics"]);
        (sample(&text, open_watches) == Some(0.0)).then_some(())
    });
}
