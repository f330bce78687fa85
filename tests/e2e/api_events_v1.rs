//! `events.k8s.io/v1` Events: what an operator's recorder (kube-rs's `Recorder`, client-go's
//! events library) writes is what `kubectl get events` shows, and the other way round.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::Resource;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use serde_json::json;

use crate::harness::Server;

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"}})).unwrap()
}

fn event_named<'a>(list: &'a serde_json::Value, reason: &str) -> &'a serde_json::Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["reason"] == reason)
        .unwrap_or_else(|| panic!("an Event with reason {reason} in {list}"))
}

#[test]
fn a_recorders_events_and_their_repeats_are_the_events_kubectl_shows() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let name = rt.block_on(async {
        let client = s.client().await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm = cms
            .create(&PostParams::default(), &config_map("web"))
            .await
            .unwrap();
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "example.com/operator".into(),
                instance: Some("operator-0".into()),
            },
        );
        let event = Event {
            type_: EventType::Warning,
            reason: "Reconciled".into(),
            note: Some("configured web".into()),
            action: "Reconcile".into(),
            secondary: None,
        };
        let reference = cm.object_ref(&());
        // The first publish creates the Event; the second, the same event again, patches its
        // series (a JSON merge patch through events.k8s.io/v1).
        recorder.publish(&event, &reference).await.unwrap();
        recorder.publish(&event, &reference).await.unwrap();
        let events: Api<EventV1> = Api::namespaced(client, "default");
        let list = events
            .list(&ListParams::default().fields("regarding.name=web"))
            .await
            .unwrap();
        assert_eq!(list.items.len(), 1, "{:?}", list.items);
        let e = &list.items[0];
        assert_eq!(e.note.as_deref(), Some("configured web"));
        assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
        e.metadata.name.clone().unwrap()
    });

    // The core view: what kubectl get events and describe read.
    let core = s.kubectl_json(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        "involvedObject.name=web",
    ]);
    let e = event_named(&core, "Reconciled");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["message"], "configured web");
    assert_eq!(e["involvedObject"]["kind"], "ConfigMap");
    assert_eq!(e["reportingComponent"], "example.com/operator");
    assert_eq!(e["reportingInstance"], "operator-0");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["series"]["count"], 2);
    let table = s.kubectl_ok(&["get", "events", "-n", "default"]);
    assert!(
        table.contains("Reconciled") && table.contains("configured web"),
        "{table}"
    );

    // The new view through kubectl, by its full name.
    let new = s.kubectl_json(&["get", "events.v1.events.k8s.io", "-n", "default", &name]);
    assert_eq!(new["apiVersion"], "events.k8s.io/v1");
    assert_eq!(new["note"], "configured web");
    assert_eq!(new["regarding"]["name"], "web");
    assert_eq!(new["reportingController"], "example.com/operator");
    assert!(new.get("message").is_none(), "{new}");

    // Discovery and the OpenAPI document know the group.
    let resources = s.kubectl_ok(&["api-resources", "--api-group=events.k8s.io"]);
    assert!(resources.contains("events.k8s.io/v1"), "{resources}");
    let explained = s.kubectl_ok(&["explain", "events.note", "--api-version=events.k8s.io/v1"]);
    assert!(explained.contains("note"), "{explained}");
}

#[test]
fn a_core_event_is_watched_in_the_new_version_and_bad_new_events_are_refused() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = s.client().await;
        let events: Api<EventV1> = Api::namespaced(client.clone(), "default");
        let rv = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .metadata
            .resource_version
            .unwrap();
        let stream = events
            .watch(&WatchParams::default().timeout(20), &rv)
            .await
            .unwrap()
            .boxed();
        // A core Event, as kubelet writes them.
        let core: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(client.clone(), "default");
        let written: k8s_openapi::api::core::v1::Event = serde_json::from_value(json!({
            "metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Started",
            "message": "Started container app",
            "source": {"component": "kubelet", "host": "n1"},
            "count": 1,
            "type": "Normal",
        }))
        .unwrap();
        core.create(&PostParams::default(), &written).await.unwrap();
        let seen = tokio::time::timeout(
            Duration::from_secs(20),
            stream.take(1).try_collect::<Vec<_>>(),
        )
        .await
        .expect("the event within 20 s")
        .unwrap();
        let WatchEvent::Added(e) = &seen[0] else {
            panic!("{seen:?}")
        };
        assert_eq!(e.note.as_deref(), Some("Started container app"));
        assert_eq!(
            e.regarding.as_ref().and_then(|r| r.name.as_deref()),
            Some("p")
        );
        assert_eq!(
            e.deprecated_source.as_ref().and_then(|s| s.host.as_deref()),
            Some("n1")
        );

        // An update through the new version may only add to the series.
        let mut changed = events.get("p.1").await.unwrap();
        changed.note = Some("rewritten".into());
        let err = events
            .replace("p.1", &PostParams::default(), &changed)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err:?}")
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(status.message.contains("note"), "{status:?}");
        let kept = core.get("p.1").await.unwrap();
        assert_eq!(kept.message.as_deref(), Some("Started container app"));
    });

    // A new Event must say when, who and what; kubectl gets the causes and nothing is stored.
    let bad = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: bad.1
  namespace: default
regarding:
  kind: Pod
  name: p
note: no reporter, no time, no action
type: Normal
"#;
    let out = s.kubectl_stdin(&["create", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "eventTime",
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        assert!(
            err.contains(&format!("{field}: Required value")),
            "{field}: {err}"
        );
    }
    let gone = s.kubectl(&["get", "events", "-n", "default", "bad.1"]);
    assert!(!gone.status.success(), "bad.1 was stored");

    // A core field name is unknown in this version: dropped, with kubectl's warning.
    let core_field = r#"
apiVersion: events.k8s.io/v1
kind: Event
metadata:
  name: good.1
  namespace: default
eventTime: "2026-12-07T06:00:00.000000Z"
reportingController: example.com/operator
reportingInstance: operator-0
action: Reconcile
reason: Reconciled
message: this is the core name of note
type: Normal
"#;
    let out = s.kubectl_stdin(&["create", "-f", "-", "--validate=warn"], core_field);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("unknown field \"message\""), "{warned}");
    let stored = s.kubectl_json(&["get", "events", "-n", "default", "good.1"]);
    assert!(stored.get("message").is_none(), "{stored}");
}
