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
