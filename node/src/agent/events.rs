//! Kubernetes Events the agent emits about pods (`Pulling`, `Pulled`, `Created`, `Started`,
//! `Killing`, `BackOff`, `Unhealthy`, `Failed`), as `kubectl describe pod` shows them.
//!
//! [`EventRecorder::record`] never waits: events go through a bounded queue to one writer task
//! and are dropped when it is full (events are for people; a burst must not slow a pod). The
//! writer is rate limited as kubelet's is (`--event-qps` 50 after a `--event-burst` of 100), so
//! a burst of pods does not flood the API server with their events. The
//! writer folds repeats of one event (same object, field, reason and message) into the existing
//! Event's `count` and `lastTimestamp`, as client-go's correlator does.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rate_limit::RateLimit;

/// Events queued beyond this are dropped.
const QUEUE: usize = 1024;
/// Distinct events remembered for folding repeats.
const REMEMBERED: usize = 4096;

/// Which pod (and which of its containers) an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Uid.
    pub uid: String,
}

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Expected progress.
    Normal,
    /// Something a user should look at.
    Warning,
}

#[derive(Debug)]
struct Record {
    pod: PodRef,
    field_path: Option<String>,
    event_type: EventType,
    reason: String,
    message: String,
}

/// Sends events to the writer; cheap to clone.
#[derive(Clone, Debug)]
pub struct EventRecorder {
    tx: mpsc::Sender<Record>,
}

impl EventRecorder {
    /// A recorder and the writer task to run (until `shutdown`).
    pub fn new(
        client: kube::Client,
        node_name: String,
        limit: RateLimit,
        shutdown: CancellationToken,
    ) -> (EventRecorder, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            EventRecorder { tx },
            write_events(client, node_name, limit, rx, shutdown),
        )
    }

    /// Records an event about `pod`, about its container `container` when given.
    pub fn record(
        &self,
        pod: &PodRef,
        container: Option<&str>,
        event_type: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let record = Record {
            pod: pod.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            event_type,
            reason: reason.to_string(),
            message: message.into(),
        };
        if self.tx.try_send(record).is_err() {
            tracing::debug!("event queue full; event dropped");
        }
    }
}

/// What makes two events the same: object, field path, reason and message.
type EventKey = (PodRef, Option<String>, String, String);

async fn write_events(
    client: kube::Client,
    node_name: String,
    mut limit: RateLimit,
    mut rx: mpsc::Receiver<Record>,
    shutdown: CancellationToken,
) {
    let mut seen: HashMap<EventKey, (String, i32)> = HashMap::new();
    loop {
        let record = tokio::select! {
            r = rx.recv() => match r { Some(r) => r, None => return },
            _ = shutdown.cancelled() => return,
        };
        tokio::select! {
            _ = limit.wait() => {}
            _ = shutdown.cancelled() => return,
        }
        let api: Api<Event> = Api::namespaced(client.clone(), &record.pod.namespace);
        let key = (
            record.pod.clone(),
            record.field_path.clone(),
            record.reason.clone(),
            record.message.clone(),
        );
        let now = Timestamp::now();
        if let Some((name, count)) = seen.get_mut(&key) {
            *count += 1;
            let patch = json!({"count": *count, "lastTimestamp": Time(now)});
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => continue,
                Err(e) => tracing::debug!(error = %e, "cannot update event; creating a new one"),
            }
        }
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        let name = format!("{}.{:x}", record.pod.name, now.as_nanosecond());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(record.pod.namespace.clone()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(record.pod.namespace.clone()),
                name: Some(record.pod.name.clone()),
                uid: Some(record.pod.uid.clone()),
                field_path: record.field_path.clone(),
                ..ObjectReference::default()
            },
            reason: Some(record.reason.clone()),
            message: Some(record.message.clone()),
            type_: Some(
                match record.event_type {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(node_name.clone()),
            }),
            reporting_component: Some("flotilla-agent".into()),
            reporting_instance: Some(node_name.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: None::<MicroTime>,
            count: Some(1),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(key, (name, 1));
            }
            Err(e) => tracing::debug!(error = %e, "cannot write event"),
        }
    }
}
