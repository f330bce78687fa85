//! Watches through the kube client crate: resume from a resourceVersion, bookmarks, and 410
//! once the revision is compacted.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};

use crate::harness::Server;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": name}}))
        .unwrap()
}

#[test]
fn a_watch_resumes_from_a_resource_version_and_sees_exactly_the_later_changes() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        api.create(&PostParams::default(), &cm("before"))
            .await
            .unwrap();
        let list = api.list(&ListParams::default()).await.unwrap();
        let rv = list.metadata.resource_version.clone().unwrap();
        for n in ["one", "two", "three"] {
            api.create(&PostParams::default(), &cm(n)).await.unwrap();
        }
        api.delete("one", &Default::default()).await.unwrap();
        let stream = api
            .watch(&WatchParams::default().timeout(10), &rv)
            .await
            .unwrap()
            .boxed();
        let events: Vec<_> = tokio::time::timeout(
            Duration::from_secs(20),
            stream.take(4).try_collect::<Vec<_>>(),
        )
        .await
        .expect("events within 20s")
        .unwrap();
        let seen: Vec<String> = events
            .iter()
            .map(|e| match e {
                WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.clone().unwrap()),
                WatchEvent::Deleted(c) => format!("DELETED {}", c.metadata.name.clone().unwrap()),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            seen,
            ["ADDED one", "ADDED two", "ADDED three", "DELETED one"]
        );
    });
}

#[test]
fn a_watch_from_a_compacted_revision_gets_410_expired() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--watch-window", "0", "--watch-history", "5"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        for i in 0..20 {
            api.create(&PostParams::default(), &cm(&format!("c{i}")))
                .await
                .unwrap();
        }
        // Compaction runs at most once a second, on a write.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        api.create(&PostParams::default(), &cm("trigger"))
            .await
            .unwrap();
        let mut stream = api
            .watch(&WatchParams::default().timeout(10), "2")
            .await
            .unwrap()
            .boxed();
        let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an answer within 10s");
        match first {
            Some(Ok(WatchEvent::Error(e))) => {
                assert_eq!(e.code, 410, "{e:?}");
                assert_eq!(e.reason, "Expired");
            }
            other => panic!("expected a 410 Expired error event, got {other:?}"),
        }
        // A recent revision still resumes.
        let list = api.list(&ListParams::default()).await.unwrap();
        let rv = list.metadata.resource_version.unwrap();
        let mut stream = api
            .watch(&WatchParams::default().timeout(5), &rv)
            .await
            .unwrap()
            .boxed();
        api.create(&PostParams::default(), &cm("after"))
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(ev, WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("after")));
    });
}

#[test]
fn a_watch_with_bookmarks_and_a_label_selector_sees_objects_enter_and_leave_the_selection() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let list = api.list(&ListParams::default()).await.unwrap();
        let rv = list.metadata.resource_version.unwrap();
        let wp = WatchParams::default().labels("color=blue").timeout(10);
        let stream = api.watch(&wp, &rv).await.unwrap().boxed();
        api.create(&PostParams::default(), &cm("x")).await.unwrap();
        let patch = |color: &str| {
            kube::api::Patch::Merge(serde_json::json!({"metadata": {"labels": {"color": color}}}))
        };
        api.patch("x", &Default::default(), &patch("blue"))
            .await
            .unwrap();
        api.patch("x", &Default::default(), &patch("red"))
            .await
            .unwrap();
        let events: Vec<_> = tokio::time::timeout(
            Duration::from_secs(20),
            stream.take(2).try_collect::<Vec<_>>(),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            matches!(&events[0], WatchEvent::Added(c) if c.metadata.name.as_deref() == Some("x")),
            "{events:?}"
        );
        assert!(matches!(&events[1], WatchEvent::Deleted(_)), "{events:?}");
    });
}
