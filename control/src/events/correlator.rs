//! client-go's event correlation, applied before an event is written:
//!
//! - **aggregation**: once one object has had [`CorrelatorConfig::max_similar`] events of one
//!   type and reason with different messages within [`CorrelatorConfig::similar_window`], the
//!   next ones become a single Event whose message starts with `(combined from similar
//!   events): ` and whose `count` grows (client-go's `EventAggregatorByReasonFunc`, 10 within
//!   10 minutes);
//! - **spam filter**: each object gets a token bucket of [`CorrelatorConfig::spam_burst`] events
//!   refilled by one every [`CorrelatorConfig::spam_refill`]; events beyond it are dropped
//!   (client-go's `EventSourceObjectSpamFilter`, 25 then one per 5 minutes).
//!
//! Both remember at most [`CorrelatorConfig::cache_size`] objects; when full, the older half
//! is forgotten.
//!
//! So a ReplicaSet scaled to 1,000 replicas gets 25 event writes, not 1,000, as in Kubernetes;
//! each pod's own events are unaffected.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The message prefix of an aggregated event (client-go's wording).
pub const AGGREGATED_PREFIX: &str = "(combined from similar events): ";

/// Limits of the correlator; [`Default`] is client-go's.
#[derive(Debug, Clone)]
pub struct CorrelatorConfig {
    /// Distinct messages of one object, type and reason before they are aggregated.
    pub max_similar: usize,
    /// How long similar events count towards aggregation.
    pub similar_window: Duration,
    /// Events one object may get in a burst.
    pub spam_burst: u32,
    /// Time to earn back one event of the burst.
    pub spam_refill: Duration,
    /// Objects remembered (the older half is forgotten when full).
    pub cache_size: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            max_similar: 10,
            similar_window: Duration::from_secs(600),
            spam_burst: 25,
            spam_refill: Duration::from_secs(300),
            cache_size: 4096,
        }
    }
}

/// An event to write after correlation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Correlated {
    /// What identifies the Event it goes into, together with object, type and reason: the
    /// message, or [`AGGREGATED_PREFIX`] for all the aggregated ones.
    pub key_message: String,
    /// The message to write.
    pub message: String,
}

#[derive(Debug)]
struct Similar {
    messages: HashSet<String>,
    last: Instant,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Aggregation and spam filtering state of one event source (one component).
#[derive(Debug, Default)]
pub struct Correlator {
    config: CorrelatorConfig,
    similar: HashMap<(String, String, String), Similar>,
    buckets: HashMap<String, Bucket>,
}

impl Correlator {
    /// A correlator with these limits.
    pub fn new(config: CorrelatorConfig) -> Self {
        Correlator {
            config,
            similar: HashMap::new(),
            buckets: HashMap::new(),
        }
    }

    /// Correlates an event about `object` recorded at `now`: `None` when the spam filter
    /// drops it.
    pub fn correlate(
        &mut self,
        object: &str,
        event_type: &str,
        reason: &str,
        message: &str,
        now: Instant,
    ) -> Option<Correlated> {
        let correlated = self.aggregate(object, event_type, reason, message, now);
        self.allow(object, now).then_some(correlated)
    }

    fn aggregate(
        &mut self,
        object: &str,
        event_type: &str,
        reason: &str,
        message: &str,
        now: Instant,
    ) -> Correlated {
        let key = (
            object.to_string(),
            event_type.to_string(),
            reason.to_string(),
        );
        if !self.similar.contains_key(&key) && self.similar.len() >= self.config.cache_size {
            forget_oldest(&mut self.similar, |s| s.last);
        }
        let record = self.similar.entry(key).or_insert_with(|| Similar {
            messages: HashSet::new(),
            last: now,
        });
        if now.duration_since(record.last) > self.config.similar_window {
            record.messages.clear();
        }
        record.messages.insert(message.to_string());
        record.last = now;
        if record.messages.len() < self.config.max_similar {
            return Correlated {
                key_message: message.to_string(),
                message: message.to_string(),
            };
        }
        // Keep the set at its limit, as client-go does.
        if let Some(any) = record.messages.iter().next().cloned() {
            record.messages.remove(&any);
        }
        Correlated {
            key_message: AGGREGATED_PREFIX.to_string(),
            message: format!("{AGGREGATED_PREFIX}{message}"),
        }
    }

    fn allow(&mut self, object: &str, now: Instant) -> bool {
        if !self.buckets.contains_key(object) && self.buckets.len() >= self.config.cache_size {
            forget_oldest(&mut self.buckets, |b| b.last);
        }
        let burst = f64::from(self.config.spam_burst);
        let bucket = self
            .buckets
            .entry(object.to_string())
            .or_insert_with(|| Bucket {
                tokens: burst,
                last: now,
            });
        let refill = self.config.spam_refill.as_secs_f64();
        if refill > 0.0 {
            let earned = now.duration_since(bucket.last).as_secs_f64() / refill;
            bucket.tokens = (bucket.tokens + earned).min(burst);
        } else {
            bucket.tokens = burst;
        }
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Forgets the older half of a full map (at least one entry), so that a stream of new
/// objects costs amortised constant time.
fn forget_oldest<K: Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    last: impl Fn(&V) -> Instant,
) {
    let mut times: Vec<Instant> = map.values().map(&last).collect();
    if times.is_empty() {
        return;
    }
    let mid = (times.len() - 1) / 2;
    let (_, &mut cutoff, _) = times.select_nth_unstable(mid);
    map.retain(|_, v| last(v) > cutoff);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similar_events_are_aggregated_after_ten_distinct_messages() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t = Instant::now();
        let out: Vec<_> = (0..12)
            .map(|i| {
                c.correlate(
                    "rs-uid",
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: web-{i}"),
                    t,
                )
                .unwrap()
            })
            .collect();
        for (i, o) in out.iter().take(9).enumerate() {
            assert_eq!(o.message, format!("Created pod: web-{i}"));
            assert_eq!(o.key_message, o.message);
        }
        for (i, o) in out.iter().enumerate().skip(9) {
            assert_eq!(
                o.message,
                format!("(combined from similar events): Created pod: web-{i}")
            );
            assert_eq!(o.key_message, AGGREGATED_PREFIX);
        }
        // Another reason or another object is not aggregated with them.
        let other = c
            .correlate(
                "rs-uid",
                "Normal",
                "SuccessfulDelete",
                "Deleted pod: web-0",
                t,
            )
            .unwrap();
        assert_eq!(other.message, "Deleted pod: web-0");
    }

    #[test]
    fn identical_repeats_do_not_count_towards_aggregation() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t = Instant::now();
        for _ in 0..20 {
            let o = c
                .correlate("pod-uid", "Warning", "BackOff", "Back-off restarting", t)
                .unwrap();
            assert_eq!(o.message, "Back-off restarting");
        }
    }

    #[test]
    fn aggregation_starts_over_after_its_window() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t = Instant::now();
        for i in 0..9 {
            c.correlate("o", "Normal", "R", &format!("m{i}"), t)
                .unwrap();
        }
        let later = t + Duration::from_secs(601);
        let o = c.correlate("o", "Normal", "R", "m9", later).unwrap();
        assert_eq!(o.message, "m9");
    }

    #[test]
    fn the_spam_filter_allows_a_burst_of_25_per_object_then_one_per_refill() {
        let mut c = Correlator::new(CorrelatorConfig::default());
        let t = Instant::now();
        let allowed = (0..40)
            .filter(|i| {
                c.correlate("rs", "Normal", "R", &format!("m{i}"), t)
                    .is_some()
            })
            .count();
        assert_eq!(allowed, 25);
        // Another object has its own burst.
        assert!(c.correlate("other", "Normal", "R", "m", t).is_some());
        // One more after one refill period, not two.
        let later = t + Duration::from_secs(300);
        assert!(c.correlate("rs", "Normal", "R", "x", later).is_some());
        assert!(c.correlate("rs", "Normal", "R", "y", later).is_none());
    }

    #[test]
    fn a_full_cache_forgets_the_oldest_object() {
        let mut c = Correlator::new(CorrelatorConfig {
            cache_size: 2,
            spam_burst: 1,
            ..CorrelatorConfig::default()
        });
        let t = Instant::now();
        assert!(c.correlate("a", "Normal", "R", "m", t).is_some());
        assert!(c.correlate("a", "Normal", "R", "m", t).is_none());
        let t1 = t + Duration::from_millis(1);
        assert!(c.correlate("b", "Normal", "R", "m", t1).is_some());
        let t2 = t + Duration::from_millis(2);
        assert!(c.correlate("c", "Normal", "R", "m", t2).is_some());
        // "a" was forgotten, so it starts with a fresh burst.
        assert!(c.correlate("a", "Normal", "R", "m", t2).is_some());
        assert!(c.buckets.len() <= 2);
    }
}
