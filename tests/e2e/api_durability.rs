//! Nothing acknowledged is lost on kill -9, and nothing is half-written.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::harness::Server;

#[test]
fn concurrent_acknowledged_creates_survive_kill_9() {
    const N: usize = 400;
    const CLIENTS: usize = 32;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let url = s.url.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let acknowledged: Vec<String> = rt.block_on(async {
        let client = Arc::new(reqwest::Client::new());
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (client, next, url) = (client.clone(), next.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= N {
                        return acked;
                    }
                    let name = format!("durable-{i:04}");
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                        "data": {"index": i.to_string(), "payload": "p".repeat(512)}});
                    let r = client
                        .post(format!("{url}/api/v1/namespaces/default/configmaps"))
                        .json(&body)
                        .timeout(std::time::Duration::from_secs(30))
                        .send()
                        .await
                        .expect("request");
                    assert_eq!(r.status().as_u16(), 201);
                    acked.push(name);
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert_eq!(acknowledged.len(), N);
    s.kill9();

    let s = Server::start_in(dir.path(), &[]);
    let list: Value =
        reqwest::blocking::get(format!("{}/api/v1/namespaces/default/configmaps", s.url))
            .unwrap()
            .json()
            .unwrap();
    let items = list["items"].as_array().unwrap();
    for name in &acknowledged {
        let item = items
            .iter()
            .find(|i| i["metadata"]["name"] == name.as_str())
            .unwrap_or_else(|| panic!("{name} lost"));
        let index: usize = name.trim_start_matches("durable-").parse().unwrap();
        assert_eq!(item["data"]["index"], index.to_string(), "{name} intact");
        assert_eq!(
            item["data"]["payload"].as_str().unwrap().len(),
            512,
            "{name} intact"
        );
        assert!(
            item["metadata"]["uid"].is_string() && item["metadata"]["resourceVersion"].is_string()
        );
    }
    assert_eq!(items.len(), N);
    // The restarted server keeps counting revisions up, never reusing one.
    let rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv >= N as u64);
}

#[test]
fn updates_and_deletions_survive_kill_9_with_their_watch_history() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_in(dir.path(), &[]);
    let client = reqwest::blocking::Client::new();
    let cms = |url: &str| format!("{url}/api/v1/namespaces/default/configmaps");
    for i in 0..30 {
        let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("wal-{i:02}")}, "data": {"v": "1"}});
        let r = client.post(cms(&s.url)).json(&body).send().unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let before: Value = client.get(cms(&s.url)).send().unwrap().json().unwrap();
    let rv = before["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..10 {
        let r = client
            .patch(format!("{}/wal-{i:02}", cms(&s.url)))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"data":{"v":"2"}}"#)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    for i in 10..20 {
        let r = client
            .delete(format!("{}/wal-{i:02}", cms(&s.url)))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    s.kill9();

    let s = Server::start_in(dir.path(), &[]);
    let list: Value = client.get(cms(&s.url)).send().unwrap().json().unwrap();
    let items = list["items"].as_array().unwrap();
    let v_of = |i: usize| {
        items
            .iter()
            .find(|it| it["metadata"]["name"] == format!("wal-{i:02}").as_str())
            .map(|it| it["data"]["v"].as_str().unwrap().to_string())
    };
    assert_eq!(items.len(), 20);
    for i in 0..30 {
        let expected = match i {
            0..10 => Some("2".to_string()),
            10..20 => None,
            _ => Some("1".to_string()),
        };
        assert_eq!(v_of(i), expected, "wal-{i:02} after the restart");
    }
    // The watch history of those writes survived too: resuming a watch from before them
    // replays each modification and deletion, in order.
    let watch = client
        .get(format!(
            "{}?watch=true&resourceVersion={rv}&timeoutSeconds=2",
            cms(&s.url)
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let seen: Vec<(String, String)> = watch
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = (0..10)
        .map(|i| ("MODIFIED".to_string(), format!("wal-{i:02}")))
        .chain((10..20).map(|i| ("DELETED".to_string(), format!("wal-{i:02}"))))
        .collect();
    assert_eq!(seen, expected);
}
