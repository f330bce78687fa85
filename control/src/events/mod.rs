//! Kubernetes Events (`core/v1`) recorded by in-process controllers, as `kubectl describe`
//! shows them.
//!
//! [`EventRecorder::record`] never waits: it hands the event to an [`EventWriter`] task through
//! a bounded queue and, like client-go's broadcaster, drops the event (and counts the drop)
//! when that queue is full; events are for people, and a burst of them must not slow the
//! controller that emits them.
//!
//! The writer aggregates repeats as client-go's event correlator does: the same event (same
//! object, type, reason and message) recorded again bumps `count` and `lastTimestamp` of the
//! existing Event with a patch instead of creating another one. Writes of different events run
//! concurrently (the store group-commits them); writes of one event are kept in order, and
//! repeats arriving while one is in flight are folded into the next patch. Before that, the
//! [`correlator`] aggregates similar events and drops a flood about one object, as client-go
//! does.

pub mod correlator;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::ApiError;
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::{self, ResourceInfo};
use correlator::{Correlator, CorrelatorConfig};

/// Events queued for writing beyond which new ones are dropped.
pub const QUEUE_CAPACITY: usize = 4096;
/// Event writes in flight at once.
pub const MAX_IN_FLIGHT_WRITES: usize = 64;
/// Distinct events remembered for aggregation (client-go's LRU holds 4096).
pub const CACHE_SIZE: usize = 4096;

/// The `type` of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something needs attention.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug)]
struct Record {
    involved: ObjectReference,
    event_type: EventType,
    reason: String,
    message: String,
}

/// Records Events for one component (`source.component`, `reportingComponent`). Cheap to
/// clone; the [`EventWriter`] stops once every recorder is dropped.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<Record>,
    dropped: Arc<AtomicU64>,
    spam_filtered: Arc<AtomicU64>,
}

/// The task that writes recorded events; run it with [`EventWriter::run`].
#[derive(Debug)]
pub struct EventWriter {
    api: Api,
    component: String,
    rx: mpsc::Receiver<Record>,
    correlator: Correlator,
    spam_filtered: Arc<AtomicU64>,
}

impl EventRecorder {
    /// A recorder writing through `api` as `component` (e.g. `default-scheduler`), and the
    /// writer task the caller must run.
    pub fn new(api: Api, component: impl Into<String>) -> (EventRecorder, EventWriter) {
        Self::with_correlation(api, component, CorrelatorConfig::default())
    }

    /// [`Self::new`] with other aggregation and spam-filter limits.
    pub fn with_correlation(
        api: Api,
        component: impl Into<String>,
        correlation: CorrelatorConfig,
    ) -> (EventRecorder, EventWriter) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let spam_filtered = Arc::new(AtomicU64::new(0));
        (
            EventRecorder {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
                spam_filtered: spam_filtered.clone(),
            },
            EventWriter {
                api,
                component: component.into(),
                rx,
                correlator: Correlator::new(correlation),
                spam_filtered,
            },
        )
    }

    /// Records an event about `involved` (its kind, namespace, name, uid, apiVersion and
    /// resourceVersion are what `kubectl describe` matches on). Never waits.
    pub fn record(
        &self,
        involved: ObjectReference,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let rec = Record {
            involved,
            event_type,
            reason: reason.to_string(),
            message: message.into(),
        };
        if self.tx.try_send(rec).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A `Normal` event.
    pub fn normal(&self, involved: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(involved, EventType::Normal, reason, message);
    }

    /// A `Warning` event.
    pub fn warning(&self, involved: ObjectReference, reason: &str, message: impl Into<String>) {
        self.record(involved, EventType::Warning, reason, message);
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Events dropped by the spam filter (too many about one object).
    pub fn spam_filtered(&self) -> u64 {
        self.spam_filtered.load(Ordering::Relaxed)
    }
}

/// What makes two events "the same" for aggregation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    object: String,
    event_type: EventType,
    reason: String,
    message: String,
}

#[derive(Debug)]
struct Slot {
    namespace: String,
    name: String,
    record: Record,
    count: u64,
    first: Time,
    last: Time,
    /// The Event object exists (its create succeeded).
    created: bool,
    in_flight: bool,
    /// Repeats arrived while a write was in flight.
    dirty: bool,
}

enum Write {
    Create(Box<Event>),
    Patch(Vec<u8>),
}

fn events() -> &'static ResourceInfo {
    resources::find("", "v1", "events").expect("events served")
}

/// A new Event's name as Kubernetes makes them: the involved object's name, a dot, the time in
/// hex nanos.
fn event_name(involved: &ObjectReference) -> String {
    let object_name = involved.name.as_deref().unwrap_or("object");
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    format!("{object_name}.{nanos:x}")
}

impl EventWriter {
    /// Writes events until every [`EventRecorder`] is dropped (then finishes the writes in
    /// flight) or `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut cache: HashMap<Key, Slot> = HashMap::new();
        let mut writes: JoinSet<(Key, Result<(), ApiError>)> = JoinSet::new();
        let mut open = true;
        while open || !writes.is_empty() {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                Some(done) = writes.join_next(), if !writes.is_empty() => {
                    if let Ok((key, result)) = done {
                        self.finished(&mut cache, &mut writes, key, result);
                    }
                }
                rec = self.rx.recv(), if open && writes.len() < MAX_IN_FLIGHT_WRITES => match rec {
                    Some(rec) => self.recorded(&mut cache, &mut writes, rec),
                    None => open = false,
                },
            }
        }
    }

    fn recorded(
        &mut self,
        cache: &mut HashMap<Key, Slot>,
        writes: &mut JoinSet<(Key, Result<(), ApiError>)>,
        rec: Record,
    ) {
        let inv = &rec.involved;
        let object = match inv.uid.as_deref().filter(|u| !u.is_empty()) {
            Some(uid) => uid.to_string(),
            None => format!(
                "{}/{}/{}",
                inv.kind.as_deref().unwrap_or(""),
                inv.namespace.as_deref().unwrap_or(""),
                inv.name.as_deref().unwrap_or("")
            ),
        };
        let Some(correlated) = self.correlator.correlate(
            &object,
            rec.event_type.as_str(),
            &rec.reason,
            &rec.message,
            Instant::now(),
        ) else {
            self.spam_filtered.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(reason = %rec.reason, object = %object, "event dropped by the spam filter");
            return;
        };
        // Whole seconds, as Event timestamps are written.
        let now = Time(
            Timestamp::from_second(chrono::Utc::now().timestamp()).unwrap_or(Timestamp::UNIX_EPOCH),
        );
        let mut rec = rec;
        rec.message = correlated.message;
        let key = Key {
            object,
            event_type: rec.event_type,
            reason: rec.reason.clone(),
            message: correlated.key_message,
        };
        if let Some(slot) = cache.get_mut(&key) {
            slot.count += 1;
            slot.last = now;
            slot.record.involved = rec.involved;
            slot.record.message = rec.message;
            if slot.in_flight {
                slot.dirty = true;
            } else {
                let w = self.next_write(slot);
                self.spawn(writes, key, slot, w);
            }
            return;
        }
        if cache.len() >= CACHE_SIZE {
            cache.retain(|_, s| s.in_flight);
        }
        let namespace = rec
            .involved
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let name = event_name(&rec.involved);
        let mut slot = Slot {
            namespace,
            name,
            record: rec,
            count: 1,
            first: now.clone(),
            last: now,
            created: false,
            in_flight: false,
            dirty: false,
        };
        let w = self.next_write(&slot);
        self.spawn(writes, key.clone(), &mut slot, w);
        cache.insert(key, slot);
    }

    fn next_write(&self, slot: &Slot) -> Write {
        if slot.created {
            Write::Patch(
                json!({"count": slot.count, "lastTimestamp": slot.last, "message": slot.record.message})
                    .to_string()
                    .into_bytes(),
            )
        } else {
            let r = &slot.record;
            Write::Create(Box::new(Event {
                metadata: ObjectMeta {
                    name: Some(slot.name.clone()),
                    namespace: Some(slot.namespace.clone()),
                    ..ObjectMeta::default()
                },
                involved_object: r.involved.clone(),
                reason: Some(r.reason.clone()),
                message: Some(r.message.clone()),
                type_: Some(r.event_type.as_str().to_string()),
                source: Some(EventSource {
                    component: Some(self.component.clone()),
                    host: None,
                }),
                reporting_component: Some(self.component.clone()),
                reporting_instance: Some(String::new()),
                count: Some(i32::try_from(slot.count).unwrap_or(i32::MAX)),
                first_timestamp: Some(slot.first.clone()),
                last_timestamp: Some(slot.last.clone()),
                ..Event::default()
            }))
        }
    }

    fn spawn(
        &self,
        writes: &mut JoinSet<(Key, Result<(), ApiError>)>,
        key: Key,
        slot: &mut Slot,
        w: Write,
    ) {
        slot.in_flight = true;
        slot.dirty = false;
        let (api, ns, name) = (self.api.clone(), slot.namespace.clone(), slot.name.clone());
        writes.spawn(async move {
            let result = match w {
                Write::Create(event) => api
                    .create_typed(events(), Some(&ns), &*event, &WriteOptions::default())
                    .await
                    .map(|_| ()),
                Write::Patch(body) => api
                    .patch(
                        events(),
                        Some(&ns),
                        &name,
                        PatchType::Merge,
                        &body,
                        None,
                        &WriteOptions::default(),
                    )
                    .await
                    .map(|_| ()),
            };
            (key, result)
        });
    }

    fn finished(
        &self,
        cache: &mut HashMap<Key, Slot>,
        writes: &mut JoinSet<(Key, Result<(), ApiError>)>,
        key: Key,
        result: Result<(), ApiError>,
    ) {
        let Some(slot) = cache.get_mut(&key) else {
            return;
        };
        slot.in_flight = false;
        match result {
            Ok(()) => slot.created = true,
            Err(e) if slot.created && e.code == 404 => {
                // The Event expired or was deleted: start a new one carrying the count.
                slot.created = false;
                slot.name = event_name(&slot.record.involved);
                slot.dirty = true;
            }
            Err(e) => {
                tracing::debug!(error = %e, reason = %key.reason, "cannot write event");
                if !slot.created {
                    cache.remove(&key);
                    return;
                }
            }
        }
        if slot.dirty {
            let w = self.next_write(slot);
            self.spawn(writes, key, slot, w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::api::ApiConfig;
    use crate::apiserver::api::ListParams;
    use crate::store::{RedbStore, RedbStoreConfig};
    use std::time::Duration;

    /// A store, an API on it, and a recorder whose writer runs, for one test.
    struct Harness {
        _dir: tempfile::TempDir,
        store: RedbStore,
        api: Api,
        recorder: EventRecorder,
        writer: tokio::task::JoinHandle<()>,
    }

    impl Harness {
        async fn start(component: &str) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
            let api = Api::new(Arc::new(store.clone()), ApiConfig::default());
            crate::server::bootstrap(&api).await.unwrap();
            let (recorder, writer) = EventRecorder::new(api.clone(), component);
            let writer = tokio::spawn(writer.run(CancellationToken::new()));
            Harness {
                _dir: dir,
                store,
                api,
                recorder,
                writer,
            }
        }

        /// Drops the recorder and waits for the writer to finish its writes and stop.
        async fn finish(self) {
            drop(self.recorder);
            tokio::time::timeout(Duration::from_secs(5), self.writer)
                .await
                .unwrap()
                .unwrap();
            self.store.close();
        }
    }

    #[tokio::test]
    async fn repeated_events_are_aggregated_into_one_with_a_count() {
        let h = Harness::start("test-controller").await;
        let (api, rec) = (&h.api, &h.recorder);
        let pod = ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some("default".into()),
            name: Some("web".into()),
            uid: Some("u-1".into()),
            api_version: Some("v1".into()),
            ..Default::default()
        };
        for _ in 0..5 {
            rec.warning(
                pod.clone(),
                "FailedScheduling",
                "0/1 nodes are available: 1 Insufficient cpu.",
            );
        }
        rec.normal(
            pod.clone(),
            "Scheduled",
            "Successfully assigned default/web to n1",
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (items, _, _) = api
                .list(events(), Some("default"), &ListParams::default())
                .await
                .unwrap();
            let failed: Vec<_> = items
                .iter()
                .filter(|e| e["reason"] == "FailedScheduling")
                .collect();
            if items.len() == 2 && failed.len() == 1 && failed[0]["count"] == 5 {
                let e = failed[0];
                assert_eq!(e["type"], "Warning");
                assert_eq!(e["source"]["component"], "test-controller");
                assert_eq!(e["reportingComponent"], "test-controller");
                assert_eq!(e["involvedObject"]["uid"], "u-1");
                assert!(e["metadata"]["name"].as_str().unwrap().starts_with("web."));
                assert!(e["firstTimestamp"].is_string() && e["lastTimestamp"].is_string());
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events not aggregated: {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.finish().await;
    }

    #[tokio::test]
    async fn a_flood_about_one_object_is_aggregated_then_spam_filtered() {
        let h = Harness::start("replicaset-controller").await;
        let (api, rec) = (&h.api, &h.recorder);
        let rs = ObjectReference {
            kind: Some("ReplicaSet".into()),
            namespace: Some("default".into()),
            name: Some("web".into()),
            uid: Some("rs-1".into()),
            api_version: Some("apps/v1".into()),
            ..Default::default()
        };
        for i in 0..30 {
            rec.normal(
                rs.clone(),
                "SuccessfulCreate",
                format!("Created pod: web-{i}"),
            );
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (items, _, _) = api
                .list(events(), Some("default"), &ListParams::default())
                .await
                .unwrap();
            let aggregated: Vec<_> = items
                .iter()
                .filter(|e| {
                    e["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(correlator::AGGREGATED_PREFIX))
                })
                .collect();
            // Nine events of their own, then one aggregate counting events 10 to 25; the
            // last five are over the burst of 25.
            if items.len() == 10
                && aggregated.len() == 1
                && aggregated[0]["count"] == 16
                && aggregated[0]["message"] == "(combined from similar events): Created pod: web-24"
            {
                assert!(items.iter().all(|e| e["reason"] == "SuccessfulCreate"));
                assert_eq!(rec.spam_filtered(), 5);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "events not correlated: {items:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.finish().await;
    }
}
