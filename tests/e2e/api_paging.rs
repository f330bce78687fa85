//! Paged lists through the kube client crate and kubectl: the pages of one list are a
//! consistent snapshot at the first page's resourceVersion, `resourceVersionMatch=Exact` lists
//! a past revision, and a continue token older than the watch window gets kube-apiserver's 410
//! with a token for the rest.

use std::time::Duration;

use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, ObjectList, PostParams, VersionMatch};

use crate::harness::Server;

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": value}}))
        .unwrap()
}

/// Each item's name, `data.k` and resourceVersion.
fn shown(list: &ObjectList<ConfigMap>) -> Vec<(String, String, String)> {
    list.items
        .iter()
        .map(|c| {
            (
                c.metadata.name.clone().unwrap(),
                c.data.as_ref().unwrap()["k"].clone(),
                c.metadata.resource_version.clone().unwrap(),
            )
        })
        .collect()
}

async fn create_all(api: &Api<ConfigMap>, names: &[&str]) {
    for n in names {
        api.create(&PostParams::default(), &cm(n, "v1"))
            .await
            .unwrap();
    }
}

#[test]
fn the_pages_of_a_list_are_one_snapshot_whatever_is_written_between_them() {
    let s = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let api: Api<ConfigMap> = Api::namespaced(s.client().await, "default");
        create_all(&api, &["p0", "p1", "p2", "p3", "p4"]).await;
        let whole = api.list(&ListParams::default()).await.unwrap();
        let rv = whole.metadata.resource_version.clone().unwrap();

        let first = api.list(&ListParams::default().limit(2)).await.unwrap();
        assert_eq!(
            first.metadata.resource_version.as_deref(),
            Some(rv.as_str())
        );
        let token = first.metadata.continue_.clone().expect("a continue token");
        // Between the pages: a deletion, an update, and a creation.
        api.delete("p2", &Default::default()).await.unwrap();
        let mut p3 = api.get("p3").await.unwrap();
        p3.data.as_mut().unwrap().insert("k".into(), "v2".into());
        api.replace("p3", &PostParams::default(), &p3)
            .await
            .unwrap();
        api.create(&PostParams::default(), &cm("p5", "v1"))
            .await
            .unwrap();

        let second = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap();
        let token = second.metadata.continue_.clone().expect("a third page");
        let third = api
            .list(&ListParams::default().limit(2).continue_token(&token))
            .await
            .unwrap();
        assert_eq!(third.metadata.continue_, None);
        for page in [&second, &third] {
            assert_eq!(page.metadata.resource_version.as_deref(), Some(rv.as_str()));
        }
        let paged: Vec<_> = [first, second, third].iter().flat_map(shown).collect();
        assert_eq!(paged, shown(&whole), "the pages are the list at {rv}");

        // The same revision listed exactly, and the present for comparison.
        let exact = api
            .list(&ListParams::default().at(&rv).matching(VersionMatch::Exact))
            .await
            .unwrap();
        assert_eq!(shown(&exact), shown(&whole));
        let now = api.list(&ListParams::default()).await.unwrap();
        let names: Vec<_> = shown(&now).into_iter().map(|(n, v, _)| (n, v)).collect();
        let expected = [
            ("p0", "v1"),
            ("p1", "v1"),
            ("p3", "v2"),
            ("p4", "v1"),
            ("p5", "v1"),
        ];
        assert_eq!(names, expected.map(|(n, v)| (n.to_string(), v.to_string())));
    });
    // kubectl's own chunking (continue pages of 2) lists the present state whole.
    let out = s.kubectl_ok(&[
        "get",
        "configmaps",
        "--chunk-size=2",
        "-o",
        "custom-columns=NAME:.metadata.name",
        "--no-headers",
    ]);
    let names: Vec<_> = out.lines().filter(|l| l.starts_with('p')).collect();
    assert_eq!(names, ["p0", "p1", "p3", "p4", "p5"]);
}

#[test]
fn a_continue_token_past_the_watch_window_gets_410_and_a_token_for_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_in(tmp.path(), &["--watch-window", "0", "--watch-history", "5"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = s.client().await;
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        create_all(&api, &["p0", "p1", "p2", "p3"]).await;
        let first = api.list(&ListParams::default().limit(2)).await.unwrap();
        let rv = first.metadata.resource_version.clone().unwrap();
        let token = first.metadata.continue_.clone().unwrap();
        api.delete("p2", &Default::default()).await.unwrap();
        for i in 0..10 {
            api.create(&PostParams::default(), &cm(&format!("q{i}"), "v1"))
                .await
                .unwrap();
        }
        // Compaction runs at most once a second, on a write.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        api.create(&PostParams::default(), &cm("trigger", "v1"))
            .await
            .unwrap();

        let exact = api
            .list(&ListParams::default().at(&rv).matching(VersionMatch::Exact))
            .await;
        match exact {
            Err(kube::Error::Api(e)) => {
                assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
                assert!(e.message.contains("too old"), "{e:?}");
            }
            other => panic!("expected 410 for a compacted revision, got {other:?}"),
        }

        // The raw answer, to read the Status's metadata.continue.
        let uri = format!("/api/v1/namespaces/default/configmaps?limit=2&continue={token}");
        let request = hyper::Request::get(uri).body(Vec::new()).unwrap();
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            client.send(request.map(Into::into)),
        )
        .await
        .expect("an answer within 10s")
        .unwrap();
        assert_eq!(response.status().as_u16(), 410);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], "Expired", "{status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .starts_with("The provided continue parameter is too old"),
            "{status}"
        );
        let rest_token = status["metadata"]["continue"].as_str().expect("a token");
        // That token lists the rest of the keys from the present state (p2 is gone now).
        let rest = api
            .list(&ListParams::default().limit(3).continue_token(rest_token))
            .await
            .unwrap();
        let names: Vec<_> = shown(&rest).into_iter().map(|(n, _, _)| n).collect();
        assert_eq!(names, ["p3", "q0", "q1"]);
        assert_ne!(rest.metadata.resource_version.as_deref(), Some(rv.as_str()));
    });
}
