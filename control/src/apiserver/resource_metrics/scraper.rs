//! Scraping agents' `/metrics/resource` on request, and the samples kept between requests.
//!
//! Nothing is scraped in the background: a cluster may register thousands of nodes that have
//! no agent (the API benchmark does), and only a metrics request says which nodes matter. A
//! request scrapes its nodes concurrently; CPU needs two samples, so each node's latest
//! samples are kept and the new one is paired with a kept one at least [`Timing::min_window`]
//! older (and at most [`Timing::max_age`]). A node with no such sample is scraped a second
//! time after `min_window`, so the first `kubectl top` answers, over a short window, instead
//! of saying metrics are not available yet.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures::StreamExt;
use http_body_util::{BodyExt, Limited};

use super::sample::{self, Sample};
use crate::apiserver::agent::{self, AgentClient};

/// How many agents one request scrapes at a time (each socket is a file descriptor).
const MAX_CONCURRENT_SCRAPES: usize = 64;

/// The most samples kept per node (scrapes closer together than a window pile up until then).
const MAX_KEPT: usize = 16;

/// The largest scrape read; kubelet's answer for a node full of pods is tens of kilobytes.
const MAX_SCRAPE_BYTES: usize = 16 << 20;

/// How scrapes are timed.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long one scrape (connect, answer, body) may take before the node is skipped.
    pub timeout: Duration,
    /// The shortest window a rate is computed over, and the wait before a second scrape.
    pub min_window: Duration,
    /// The oldest kept sample a rate is computed against.
    pub max_age: Duration,
}

impl Default for Timing {
    /// Metrics-server's figures, with a 1 s first window instead of its 15 s resolution.
    fn default() -> Self {
        Timing {
            timeout: Duration::from_secs(2),
            min_window: Duration::from_secs(1),
            max_age: Duration::from_secs(600),
        }
    }
}

/// An agent to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The node's name.
    pub node: String,
    /// Its agent's `host:port`.
    pub addr: String,
}

/// Two samples of one node that make a window.
#[derive(Debug, Clone)]
pub struct Pair {
    /// The earlier sample.
    pub prev: Sample,
    /// The later sample.
    pub last: Sample,
}

/// Why a scrape gave nothing (the node is skipped; the reason is logged).
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// No connection or no answer.
    #[error("cannot reach the agent: {0}")]
    Unreachable(String),
    /// No complete answer within [`Timing::timeout`].
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// An answer other than 200.
    #[error("the agent answered {0}")]
    Status(http::StatusCode),
    /// The body broke off or was too large.
    #[error("cannot read the answer: {0}")]
    Body(String),
    /// The body is not the text format.
    #[error("invalid resource metrics: {0}")]
    Parse(#[from] sample::ParseError),
}

/// Scrapes agents and keeps their latest samples: a cheap handle, shared by every request.
#[derive(Debug, Clone)]
pub struct Scraper {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: AgentClient,
    timing: Timing,
    /// Per node, its latest samples (see [`Scraper::keep`]), oldest first. A std mutex: it is never held
    /// across an await.
    kept: Mutex<HashMap<String, VecDeque<Kept>>>,
}

#[derive(Debug, Clone)]
struct Kept {
    at: Instant,
    sample: Sample,
}

impl Default for Scraper {
    fn default() -> Self {
        Scraper::new(Timing::default())
    }
}

impl Scraper {
    /// A scraper with nothing kept yet.
    pub fn new(timing: Timing) -> Scraper {
        Scraper {
            shared: Arc::new(Shared {
                client: agent::client(),
                timing,
                kept: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Scrapes the targets concurrently and pairs each node's new sample with a kept one (or a
    /// second scrape); nodes that cannot be scraped are left out, as metrics-server leaves them.
    pub async fn pairs(&self, targets: Vec<Target>) -> HashMap<String, Pair> {
        self.forget_old();
        futures::stream::iter(targets)
            .map(|t| async move {
                let pair = self.pair(&t).await;
                (t.node, pair)
            })
            .buffer_unordered(MAX_CONCURRENT_SCRAPES)
            .filter_map(|(node, pair)| async move { Some((node, pair?)) })
            .collect()
            .await
    }

    async fn pair(&self, t: &Target) -> Option<Pair> {
        let first = self.scrape_logged(t).await?;
        let now = Instant::now();
        let baseline = self.baseline(&t.node, now);
        self.keep(&t.node, now, first.clone());
        if let Some(prev) = baseline {
            return Some(Pair { prev, last: first });
        }
        tokio::time::sleep(self.shared.timing.min_window).await;
        let second = self.scrape_logged(t).await?;
        self.keep(&t.node, Instant::now(), second.clone());
        Some(Pair {
            prev: first,
            last: second,
        })
    }

    async fn scrape_logged(&self, t: &Target) -> Option<Sample> {
        match self.scrape(&t.addr).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(node = %t.node, addr = %t.addr, error = %e, "skipping node in resource metrics");
                None
            }
        }
    }

    /// One scrape of `http://{addr}/metrics/resource`.
    pub async fn scrape(&self, addr: &str) -> Result<Sample, ScrapeError> {
        let timeout = self.shared.timing.timeout;
        tokio::time::timeout(timeout, self.scrape_unbounded(addr))
            .await
            .map_err(|_| ScrapeError::Timeout(timeout))?
    }

    async fn scrape_unbounded(&self, addr: &str) -> Result<Sample, ScrapeError> {
        let uri: hyper::Uri = format!("http://{addr}/metrics/resource")
            .parse()
            .map_err(|e| ScrapeError::Unreachable(format!("bad address {addr}: {e}")))?;
        let req = hyper::Request::get(uri)
            .body(Body::empty())
            .map_err(|e| ScrapeError::Unreachable(e.to_string()))?;
        let resp = self
            .shared
            .client
            .request(req)
            .await
            .map_err(|e| ScrapeError::Unreachable(agent::error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status(resp.status()));
        }
        let bytes = Limited::new(resp.into_body(), MAX_SCRAPE_BYTES)
            .collect()
            .await
            .map_err(|e| ScrapeError::Body(e.to_string()))?
            .to_bytes();
        let text = String::from_utf8_lossy(&bytes);
        Ok(sample::parse(&text, chrono::Utc::now())?)
    }

    /// The newest kept sample of `node` that makes a window with one taken `now`.
    fn baseline(&self, node: &str, now: Instant) -> Option<Sample> {
        let timing = self.shared.timing;
        let kept = self.shared.kept.lock().expect("kept samples lock");
        kept.get(node)?
            .iter()
            .rev()
            .find(|k| {
                let age = now.saturating_duration_since(k.at);
                age >= timing.min_window && age <= timing.max_age
            })
            .map(|k| k.sample.clone())
    }

    /// Keeps a new sample of `node`, with the samples still needed as baselines: the newest
    /// one at least `min_window` older than it, and every one since (each becomes the baseline
    /// in its turn). Older ones go, so a node scraped every second (the autoscaler does) pairs
    /// with a sample about a second old, never with one from before its pods started.
    fn keep(&self, node: &str, at: Instant, sample: Sample) {
        let min_window = self.shared.timing.min_window;
        let mut kept = self.shared.kept.lock().expect("kept samples lock");
        let history = kept.entry(node.to_string()).or_default();
        history.push_back(Kept { at, sample });
        while history.len() >= 2 && at.saturating_duration_since(history[1].at) >= min_window {
            history.pop_front();
        }
        while history.len() > MAX_KEPT {
            history.pop_front();
        }
    }

    /// Drops the samples of nodes not scraped within `max_age` (deleted nodes, nodes nobody
    /// asks about any more).
    fn forget_old(&self) {
        let max_age = self.shared.timing.max_age;
        let now = Instant::now();
        let mut kept = self.shared.kept.lock().expect("kept samples lock");
        kept.retain(|_, h| {
            h.back()
                .is_some_and(|k| now.saturating_duration_since(k.at) <= max_age)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu: f64) -> Sample {
        Sample {
            node: Some(sample::Point {
                cpu_seconds: cpu,
                memory_bytes: 1.0,
                time: chrono::Utc::now(),
                start_time: None,
            }),
            containers: Default::default(),
        }
    }

    fn cpu(s: &Sample) -> f64 {
        s.node.as_ref().unwrap().cpu_seconds
    }

    #[test]
    fn a_baseline_is_the_newest_sample_old_enough_and_not_too_old() {
        let timing = Timing {
            timeout: Duration::from_secs(1),
            min_window: Duration::from_secs(1),
            max_age: Duration::from_secs(600),
        };
        let s = Scraper::new(timing);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert!(s.baseline("n", at(0)).is_none());
        s.keep("n", at(0), sample(1.0));
        assert!(s.baseline("n", at(500)).is_none(), "too recent");
        assert_eq!(cpu(&s.baseline("n", at(1000)).unwrap()), 1.0);
        // A quick follow-up replaces the latest, the older one stays the baseline.
        s.keep("n", at(1500), sample(2.0));
        s.keep("n", at(1800), sample(3.0));
        assert_eq!(cpu(&s.baseline("n", at(2000)).unwrap()), 1.0);
        assert_eq!(cpu(&s.baseline("n", at(2900)).unwrap()), 3.0);
        // Too old.
        assert!(s.baseline("n", at(700_000)).is_none());
        assert!(s.baseline("other", at(2000)).is_none());
    }

    #[test]
    fn frequent_scrapes_keep_a_recent_baseline_not_the_first_sample() {
        let s = Scraper::new(Timing::default());
        let t0 = Instant::now();
        // A scrape every 0.9 s for 18 s, as an autoscaler syncing every second might make.
        for i in 0..=20u64 {
            s.keep("n", t0 + Duration::from_millis(900 * i), sample(i as f64));
        }
        let now = t0 + Duration::from_millis(900 * 20 + 100);
        // The newest sample at least 1 s old: the one of 0.9 s × 19 = 17.1 s.
        assert_eq!(cpu(&s.baseline("n", now).unwrap()), 19.0);
        assert!(s.shared.kept.lock().unwrap()["n"].len() <= 3);
    }
}
