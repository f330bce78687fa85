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

/// Creates ConfigMaps `ckpt-{round}-{i}` from `clients` concurrent clients until the server
/// stops answering; returns the indices of those acknowledged (201). Anything but a 201 or a
/// lost connection fails the test.
async fn create_until_killed(
    url: &str,
    round: usize,
    clients: usize,
    acks: Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<usize> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (client, next, acks) = (client.clone(), next.clone(), acks.clone());
        let url = format!("{url}/api/v1/namespaces/default/configmaps");
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("ckpt-{round}-{i:05}")},
                    "data": {"index": i.to_string(), "payload": "c".repeat(512)}});
                let sent = client
                    .post(&url)
                    .json(&body)
                    .timeout(std::time::Duration::from_secs(30))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 201 => {
                        acked.push(i);
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("create {i}: unexpected {}", r.status()),
                    // The server was killed under this request.
                    Err(_) => return acked,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Every acknowledged `(round, index)` is listed, intact; whatever else is listed (created
/// but not acknowledged before the kill) is intact too.
fn assert_intact(url: &str, acknowledged: &[(usize, usize)]) {
    let list: Value = reqwest::blocking::get(format!("{url}/api/v1/namespaces/default/configmaps"))
        .unwrap()
        .json()
        .unwrap();
    let items = list["items"].as_array().unwrap();
    let mut names = std::collections::HashSet::new();
    for item in items {
        let name = item["metadata"]["name"].as_str().unwrap();
        let index: usize = name.rsplit('-').next().unwrap().parse().unwrap();
        assert_eq!(item["data"]["index"], index.to_string(), "{name} intact");
        assert_eq!(
            item["data"]["payload"].as_str().unwrap().len(),
            512,
            "{name}"
        );
        names.insert(name.to_string());
    }
    for (round, i) in acknowledged {
        let name = format!("ckpt-{round}-{i:05}");
        assert!(names.contains(&name), "acknowledged {name} lost");
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_in_the_middle_of_checkpoints() {
    // A 64 KiB log is checkpointed into the store file whenever half full: every ~40 of
    // these creates. Each round kills the server after a different number of
    // acknowledgements, with all clients still writing, so kills land at different points
    // of the checkpoint cycle (the applier's durable commit, the log's restart, or
    // between them); the next start replays what the log holds over what the file holds.
    const ROUNDS: usize = 4;
    const CLIENTS: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut acknowledged: Vec<(usize, usize)> = Vec::new();
    for round in 0..ROUNDS {
        let mut s = Server::start_in(dir.path(), &["--wal-size", "65536"]);
        assert_intact(&s.url, &acknowledged);
        assert_eq!(
            std::fs::metadata(dir.path().join("store.wal"))
                .unwrap()
                .len(),
            65536,
            "the log has the size asked for"
        );
        let kill_after = 150 + 117 * round;
        let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writers = {
            let (url, acks) = (s.url.clone(), acks.clone());
            let handle = rt.handle().clone();
            std::thread::spawn(move || {
                handle.block_on(create_until_killed(&url, round, CLIENTS, acks))
            })
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while acks.load(std::sync::atomic::Ordering::SeqCst) < kill_after {
            assert!(
                std::time::Instant::now() < deadline,
                "round {round}: only {} creates acknowledged in 60 s",
                acks.load(std::sync::atomic::Ordering::SeqCst)
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        s.kill9();
        let acked = writers.join().unwrap();
        assert!(acked.len() >= kill_after);
        acknowledged.extend(acked.into_iter().map(|i| (round, i)));
    }
    let s = Server::start_in(dir.path(), &["--wal-size", "65536"]);
    assert_intact(&s.url, &acknowledged);
}
