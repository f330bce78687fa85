//! The scheduling queue: pods waiting for a decision. Pure bookkeeping; it never sleeps, the
//! caller passes the time and asks [`SchedulingQueue::next_wake`] when to look again.
//!
//! As kube-scheduler's queue it has three parts:
//! - **active**: pods to try now, the highest `spec.priority` first, then first in first out
//!   (kube-scheduler's `PrioritySort`);
//! - **backoff**: pods that failed and wait `1s × 2^(attempts-1)` (at most 10 s) before trying
//!   again;
//! - **unschedulable**: pods no node fits. They stay until something changes that could make
//!   them fit (a node added or changed, a bound pod gone: [`SchedulingQueue::move_all`]), or at
//!   most [`MAX_UNSCHEDULABLE`], then go through backoff to active. A change that happens while
//!   a pod is being decided is remembered, so the pod does not miss it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pod::{PodInfo, PodKey};

/// The first retry delay after a failure.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest retry delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest a pod stays unschedulable without a retry (`podMaxInUnschedulablePodsDuration`).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// Popped and being decided (or bound); `move_seq` at the time it was popped.
    InFlight {
        move_seq: u64,
    },
    Backoff,
    Unschedulable {
        since: Instant,
    },
}

#[derive(Debug)]
struct Entry {
    pod: Arc<PodInfo>,
    attempts: u32,
    last_attempt: Option<Instant>,
    state: State,
}

/// Pods to try now: the highest priority first, then in the order they became active.
#[derive(Debug, Default)]
struct Active {
    heap: BinaryHeap<(i32, Reverse<u64>, PodKey)>,
    seq: u64,
}

impl Active {
    fn push(&mut self, priority: i32, key: PodKey) {
        self.seq += 1;
        self.heap.push((priority, Reverse(self.seq), key));
    }

    fn pop(&mut self) -> Option<PodKey> {
        self.heap.pop().map(|(_, _, key)| key)
    }

    fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The queue of pods to schedule.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    entries: HashMap<PodKey, Entry>,
    active: Active,
    backoff: BinaryHeap<Reverse<(Instant, PodKey)>>,
    /// Unschedulable pods in the order they were parked (times only grow), for the
    /// [`MAX_UNSCHEDULABLE`] flush; entries whose pod moved on are skipped.
    parked: VecDeque<(Instant, PodKey)>,
    move_seq: u64,
}

/// The delay before the next try after `attempts` failed ones.
pub fn backoff_for(attempts: u32) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (attempts - 1).min(16);
    (INITIAL_BACKOFF * factor).min(MAX_BACKOFF)
}

impl SchedulingQueue {
    /// An empty queue.
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    /// Pods known to the queue (in any part).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the queue holds no pod.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Pods waiting as unschedulable.
    pub fn unschedulable_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| matches!(e.state, State::Unschedulable { .. }))
            .count()
    }

    /// Adds a pod that wants scheduling, or updates the one queued. An unschedulable pod whose
    /// scheduling inputs changed is retried (after its backoff).
    pub fn add(&mut self, pod: PodInfo, now: Instant) {
        let key = pod.key();
        match self.entries.get_mut(&key) {
            None => {
                let priority = pod.priority;
                self.entries.insert(
                    key.clone(),
                    Entry {
                        pod: Arc::new(pod),
                        attempts: 0,
                        last_attempt: None,
                        state: State::Active,
                    },
                );
                self.active.push(priority, key);
            }
            Some(e) => {
                let changed = e.pod.scheduling_inputs_differ(&pod);
                e.pod = Arc::new(pod);
                if changed && matches!(e.state, State::Unschedulable { .. }) {
                    self.requeue(&key, now);
                }
            }
        }
    }

    /// Forgets a pod (deleted, bound, or no longer this scheduler's).
    pub fn remove(&mut self, key: &str) {
        // Stale keys left in `active`/`backoff` are skipped when they come up.
        self.entries.remove(key);
    }

    /// The next pod to decide, if any is due. Moves due backoff pods to active first.
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        self.flush(now);
        while let Some(key) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&key)
                && e.state == State::Active
            {
                e.state = State::InFlight {
                    move_seq: self.move_seq,
                };
                e.last_attempt = Some(now);
                return Some(e.pod.clone());
            }
        }
        None
    }

    /// The decided pod fits nowhere: park it as unschedulable, or, if the cluster changed
    /// while it was being decided, send it through backoff at once.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let seq = self.move_seq;
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.attempts += 1;
        match e.state {
            State::InFlight { move_seq } if move_seq != seq => self.send_to_backoff(key),
            _ => {
                e.state = State::Unschedulable { since: now };
                self.parked.push_back((now, key.to_string()));
            }
        }
    }

    /// The decided pod could not be bound (an error, not a lack of room): retry after backoff.
    pub fn retry(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            e.attempts += 1;
            self.send_to_backoff(key);
        }
    }

    /// Something changed that may let unschedulable pods fit: retry them all (after backoff).
    pub fn move_all(&mut self, now: Instant) {
        self.move_seq += 1;
        for (since, key) in std::mem::take(&mut self.parked) {
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == State::Unschedulable { since })
            {
                self.requeue(&key, now);
            }
        }
    }

    /// When the caller should call [`Self::pop`] again at the latest (a backoff ending or an
    /// unschedulable pod reaching [`MAX_UNSCHEDULABLE`]); `None` if nothing is waiting on time.
    pub fn next_wake(&self) -> Option<Instant> {
        let backoff = self.backoff.peek().map(|Reverse((t, _))| *t);
        let stale = self
            .parked
            .iter()
            .find(|(since, k)| {
                self.entries
                    .get(k)
                    .is_some_and(|e| e.state == State::Unschedulable { since: *since })
            })
            .map(|(since, _)| *since + MAX_UNSCHEDULABLE);
        match (backoff, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether pods are ready to pop now.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let due = e.last_attempt.map_or(now, |t| t + backoff_for(e.attempts));
        if due <= now {
            e.state = State::Active;
            self.active.push(e.pod.priority, key.to_string());
        } else {
            self.send_to_backoff(key);
        }
    }

    fn send_to_backoff(&mut self, key: &str) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let due = e.last_attempt.unwrap_or_else(Instant::now) + backoff_for(e.attempts);
        e.state = State::Backoff;
        self.backoff.push(Reverse((due, key.to_string())));
    }

    fn flush(&mut self, now: Instant) {
        while let Some(Reverse((due, _))) = self.backoff.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, key))) = self.backoff.pop() else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&key)
                && e.state == State::Backoff
            {
                e.state = State::Active;
                self.active.push(e.pod.priority, key);
            }
        }
        while let Some((since, _)) = self.parked.front() {
            if *since + MAX_UNSCHEDULABLE > now {
                break;
            }
            let Some((since, key)) = self.parked.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|e| e.state == State::Unschedulable { since })
            {
                self.requeue(&key, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str) -> PodInfo {
        PodInfo::from_value(&json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": [{"name": "c"}]}})).unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        let secs: Vec<u64> = (0..7).map(|a| backoff_for(a).as_secs()).collect();
        assert_eq!(secs, vec![0, 1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn pods_come_out_first_in_first_out_once() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a"), now);
        q.add(pod("b"), now);
        q.add(pod("a"), now);
        assert_eq!(q.pop(now).unwrap().name, "a");
        assert_eq!(q.pop(now).unwrap().name, "b");
        assert!(q.pop(now).is_none());
    }

    #[test]
    fn higher_priorities_come_out_first_and_equals_in_order() {
        let now = Instant::now();
        let mut q = SchedulingQueue::new();
        let with_priority = |name: &str, p: i32| {
            PodInfo::from_value(&json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"priority": p, "containers": [{"name": "c"}]}}))
            .unwrap()
        };
        q.add(with_priority("low-1", 0), now);
        q.add(with_priority("high", 1000), now);
        q.add(with_priority("low-2", 0), now);
        q.add(with_priority("mid", 10), now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(now).map(|p| p.name.clone())).collect();
        assert_eq!(order, ["high", "mid", "low-1", "low-2"]);
    }

    #[test]
    fn an_unschedulable_pod_waits_for_a_change_then_its_backoff() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a"), t0);
        q.pop(t0).unwrap();
        q.unschedulable("d/a", t0);
        assert!(
            q.pop(t0 + Duration::from_secs(30)).is_none(),
            "waits for a change"
        );
        // A node appears at t0+0.5s: the pod's 1s backoff is not over yet.
        q.move_all(t0 + Duration::from_millis(500));
        assert!(q.pop(t0 + Duration::from_millis(600)).is_none());
        assert_eq!(q.next_wake(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop(t0 + Duration::from_secs(1)).unwrap().name, "a");
    }

    #[test]
    fn a_change_during_the_decision_is_not_missed() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a"), t0);
        q.pop(t0).unwrap();
        q.move_all(t0);
        q.unschedulable("d/a", t0);
        assert_eq!(q.pop(t0 + Duration::from_secs(1)).unwrap().name, "a");
    }

    #[test]
    fn unschedulable_pods_are_retried_after_five_minutes_anyway() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a"), t0);
        q.pop(t0).unwrap();
        q.unschedulable("d/a", t0);
        assert_eq!(q.next_wake(), Some(t0 + MAX_UNSCHEDULABLE));
        assert!(q.pop(t0 + MAX_UNSCHEDULABLE).is_some());
    }

    #[test]
    fn removed_and_status_only_updated_pods_do_not_come_back() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::new();
        q.add(pod("a"), t0);
        q.remove("d/a");
        assert!(q.pop(t0).is_none());
        q.add(pod("b"), t0);
        q.pop(t0).unwrap();
        q.unschedulable("d/b", t0);
        // The scheduler's own status write comes back through the watch: no retry.
        q.add(pod("b"), t0 + Duration::from_secs(5));
        assert!(q.pop(t0 + Duration::from_secs(5)).is_none());
        // A real change (a new toleration) is retried.
        let mut changed = pod("b");
        changed.tolerations.push(Default::default());
        q.add(changed, t0 + Duration::from_secs(5));
        assert!(q.pop(t0 + Duration::from_secs(5)).is_some());
        assert_eq!(q.len(), 1);
    }
}
