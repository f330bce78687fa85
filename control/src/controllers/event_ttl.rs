//! Events expire: kube-apiserver stores each Event with an etcd lease of `--event-ttl` (1 h by
//! default), renewed by every write, so Events of the past hour are kept and older ones go away
//! on their own. The store has no leases; this controller does the same by sweeping: every
//! [`EventTtlConfig::period`] it deletes the Events whose last sighting (`lastTimestamp`,
//! `series.lastObservedTime`, `eventTime`, or else `metadata.creationTimestamp`, whichever is
//! latest) is older than the TTL. A delete carries the `resourceVersion` it read as a
//! precondition, so an Event bumped meanwhile (a repeat counted into it) is kept.
//!
//! Without it, every `Scheduled`, `Pulled` or `BackOff` Event ever recorded stays in the store,
//! and so in memory, for the life of the data directory.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, DeleteOptions};
use crate::apiserver::resources::{self, ResourceInfo};
use crate::store::ListOptions;

/// Settings of the Event TTL sweep.
#[derive(Debug, Clone)]
pub struct EventTtlConfig {
    /// How long an Event is kept after its last sighting (kube-apiserver's `--event-ttl`).
    pub ttl: Duration,
    /// How often expired Events are looked for.
    pub period: Duration,
}

impl EventTtlConfig {
    /// A TTL, swept a quarter of it at a time (at least every second, at most every minute).
    pub fn new(ttl: Duration) -> Self {
        EventTtlConfig {
            ttl,
            period: (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

impl Default for EventTtlConfig {
    fn default() -> Self {
        EventTtlConfig::new(Duration::from_secs(3600))
    }
}

/// Deletes in flight at once (the store commits them in shared batches).
const CONCURRENT_DELETES: usize = 32;

fn events() -> &'static ResourceInfo {
    resources::find("", "v1", "events").expect("events served")
}

/// The few fields of an Event that say when it was last seen.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sighting {
    #[serde(default)]
    metadata: SightingMeta,
    last_timestamp: Option<String>,
    event_time: Option<String>,
    series: Option<Series>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SightingMeta {
    namespace: Option<String>,
    name: Option<String>,
    creation_timestamp: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Series {
    last_observed_time: Option<String>,
}

impl Sighting {
    /// The latest of the Event's timestamps that parse.
    fn last_seen(&self) -> Option<DateTime<Utc>> {
        [
            self.last_timestamp.as_deref(),
            self.series
                .as_ref()
                .and_then(|s| s.last_observed_time.as_deref()),
            self.event_time.as_deref(),
            self.metadata.creation_timestamp.as_deref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .max()
    }
}

/// When an Event (its stored JSON) was last seen: the latest of its timestamps that parse.
pub fn last_seen(event: &[u8]) -> Option<DateTime<Utc>> {
    serde_json::from_slice::<Sighting>(event).ok()?.last_seen()
}

/// One Event due for deletion.
struct Expired {
    namespace: String,
    name: String,
    resource_version: String,
}

/// The Events last seen before `cutoff`.
async fn expired(api: &Api, cutoff: DateTime<Utc>) -> Vec<Expired> {
    let prefix = events().namespace_prefix(None);
    let listed = match api.store().list(&prefix, ListOptions::default()).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(error = %e, "event TTL: cannot list events");
            return Vec::new();
        }
    };
    listed
        .entries
        .iter()
        .filter_map(|entry| {
            let sighting: Sighting = serde_json::from_slice(&entry.value).ok()?;
            sighting.last_seen().filter(|t| *t < cutoff)?;
            Some(Expired {
                namespace: sighting.metadata.namespace?,
                name: sighting.metadata.name?,
                resource_version: entry.mod_revision.to_string(),
            })
        })
        .collect()
}

/// Deletes the Events last seen more than the TTL ago; returns how many went.
pub async fn sweep(api: &Api, ttl: Duration) -> usize {
    let Ok(ttl) = chrono::Duration::from_std(ttl) else {
        return 0;
    };
    let due = expired(api, Utc::now() - ttl).await;
    futures::stream::iter(due)
        .map(|e| async move {
            let opts = DeleteOptions {
                precondition_resource_version: Some(e.resource_version),
                ..Default::default()
            };
            match api
                .delete(events(), Some(&e.namespace), &e.name, &opts)
                .await
            {
                Ok(_) => true,
                // Gone already, or bumped since it was read (kept: it was seen again).
                Err(err) if err.code == 404 || err.code == 409 => false,
                Err(err) => {
                    tracing::warn!(event = %e.name, namespace = %e.namespace, error = %err, "event TTL: cannot delete");
                    false
                }
            }
        })
        .buffer_unordered(CONCURRENT_DELETES)
        .filter(|deleted| std::future::ready(*deleted))
        .count()
        .await
}

/// Sweeps every `config.period` until `shutdown`.
pub async fn run(api: Api, config: EventTtlConfig, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(config.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let deleted = sweep(&api, config.ttl).await;
        if deleted > 0 {
            tracing::debug!(deleted, "event TTL: expired events deleted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_seen_is_the_latest_timestamp_that_parses() {
        let e = br#"{"metadata":{"name":"e","creationTimestamp":"2026-01-01T00:00:00Z"},
            "lastTimestamp":"2026-01-01T02:00:00Z","eventTime":"2026-01-01T01:00:00.000000Z",
            "series":{"lastObservedTime":"2026-01-01T03:00:00.500000Z"}}"#;
        assert_eq!(
            last_seen(e).unwrap().to_rfc3339(),
            "2026-01-01T03:00:00.500+00:00"
        );
        let e = br#"{"metadata":{"name":"e","creationTimestamp":"2026-01-01T00:00:00Z"},
            "lastTimestamp":null,"eventTime":"not a time"}"#;
        assert_eq!(
            last_seen(e).unwrap().to_rfc3339(),
            "2026-01-01T00:00:00+00:00"
        );
        assert_eq!(last_seen(br#"{"metadata":{"name":"e"}}"#), None);
        assert_eq!(last_seen(b"not json"), None);
    }

    #[test]
    fn the_sweep_period_is_a_quarter_of_the_ttl_within_bounds() {
        assert_eq!(
            EventTtlConfig::default().period,
            Duration::from_secs(60),
            "1 h"
        );
        assert_eq!(
            EventTtlConfig::new(Duration::from_secs(120)).period,
            Duration::from_secs(30)
        );
        assert_eq!(
            EventTtlConfig::new(Duration::from_secs(2)).period,
            Duration::from_secs(1)
        );
    }
}
