//! The Job controller: runs pods until `completions` succeed (at most `parallelism` at once),
//! fails the Job once failures exceed `backoffLimit` (with `restartPolicy: Never` every failed
//! pod counts and is replaced after Kubernetes' exponential backoff — [`failure_backoff`],
//! 10 s doubling to 6 min by default; with `OnFailure` the node restarts containers in place
//! and their restarts count) or it ran longer than `activeDeadlineSeconds`, sets the Complete
//! or Failed condition, and deletes a finished Job after `ttlSecondsAfterFinished`.
//!
//! Finished pods are counted exactly once through their tracking finalizer
//! ([`job_tracking`]), as Kubernetes does. An Indexed Job runs each completion index once to
//! success, or with `backoffLimitPerIndex` until the index fails too often ([`job_indexes`]);
//! a `podFailurePolicy` decides what a failed pod means ([`job_failure_policy`]). The delay
//! before a replacement counts the Job's failures, not the index's (Kubernetes keeps one
//! delay per index).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::job_failure_policy::{self, Action};
use super::job_indexes;
use super::job_tracking;
use super::owner;
use super::pod_cache::PodCache;
use super::pods;
use super::replicaset::write_status;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, DeleteOptions, Propagation};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::events::{EventRecorder, EventWriter};

/// The `jobs` resource.
pub fn jobs() -> &'static ResourceInfo {
    resources::find("batch", "v1", "jobs").expect("jobs served")
}

/// Settings of the Job controller.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// The delay before replacing the first failed pod; doubled for each further failure
    /// (Kubernetes' `DefaultJobPodFailureBackOff`, 10 s).
    pub backoff_base: Duration,
    /// The longest such delay (Kubernetes' `MaxJobPodFailureBackOff`, 6 min).
    pub backoff_max: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(360),
        }
    }
}

/// How long after the last of `failures` consecutive pod failures a replacement may start
/// (Kubernetes' `getRemainingTimeForFailuresCount` without the clock): none for no failure,
/// `base` for the first, doubling up to `max`.
pub fn failure_backoff(failures: i64, base: Duration, max: Duration) -> Duration {
    if failures <= 0 {
        return Duration::ZERO;
    }
    let mut d = base;
    for _ in 1..failures {
        d = d.saturating_mul(2);
        if d >= max {
            return max;
        }
    }
    d.min(max)
}

/// When a pod finished: the latest `finishedAt` of its terminated containers, else the
/// last transition of its conditions.
fn finish_time(pod: &Value) -> Option<DateTime<Utc>> {
    let containers = pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| pods::parse_time(&c["state"]["terminated"]["finishedAt"]));
    let conditions = pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| pods::parse_time(&c["lastTransitionTime"]));
    containers.max().or_else(|| conditions.max())
}

/// The failures since the last success among a Job's pods and when the last of them
/// happened (Kubernetes' backoff record).
pub fn failures_after_last_success(pods_of_job: &[&Value]) -> (i64, Option<DateTime<Utc>>) {
    let last_success = pods_of_job
        .iter()
        .filter(|p| p["status"]["phase"] == "Succeeded")
        .filter_map(|p| finish_time(p))
        .max();
    let mut n = 0;
    let mut last = None;
    for p in pods_of_job
        .iter()
        .filter(|p| p["status"]["phase"] == "Failed")
    {
        let at = finish_time(p);
        if last_success.is_some_and(|s| at.is_some_and(|a| a <= s)) {
            continue;
        }
        n += 1;
        last = last.max(at);
    }
    (n, last)
}

/// What a Job's pods add up to.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Pods running or waiting to.
    pub active: i64,
    /// Active pods that are ready.
    pub ready: i64,
    /// Pods that succeeded.
    pub succeeded: i64,
    /// Pods that failed.
    pub failed: i64,
    /// Container restarts of active pods (what `OnFailure` counts).
    pub restarts: i64,
}

/// Counts a Job's pods.
pub fn tally(pods_of_job: &[&Value]) -> Tally {
    let mut t = Tally::default();
    for p in pods_of_job {
        match p["status"]["phase"].as_str() {
            Some("Succeeded") => t.succeeded += 1,
            Some("Failed") => t.failed += 1,
            _ if !objects::is_deleting(p) => {
                t.active += 1;
                if pods::is_ready(p) {
                    t.ready += 1;
                }
                t.restarts += p["status"]["containerStatuses"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| c["restartCount"].as_i64().unwrap_or(0))
                            .sum()
                    })
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    t
}

/// What a Job should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start this many pods (negative: delete that many active ones).
    Run(i64),
    /// Every completion is done.
    Complete,
    /// An Indexed Job's `successPolicy` is met (with the message saying which rule).
    SuccessPolicy(String),
    /// The Job failed: reason and message.
    Fail(&'static str, String),
}

/// Decides from the Job's spec, its counts (`failed`/`succeeded` including those recorded
/// earlier) and how long it has been active.
pub fn decide(job: &Value, t: &Tally, active_for: Duration) -> Decision {
    let spec = &job["spec"];
    let backoff = spec["backoffLimit"].as_i64().unwrap_or(6);
    let on_failure = spec["template"]["spec"]["restartPolicy"] == "OnFailure";
    if let Some(deadline) = spec["activeDeadlineSeconds"].as_i64()
        && active_for >= Duration::from_secs(deadline.max(0) as u64)
    {
        return Decision::Fail(
            "DeadlineExceeded",
            "Job was active longer than specified deadline".into(),
        );
    }
    let past_on_failure = on_failure
        && if backoff == 0 {
            t.restarts > 0
        } else {
            t.restarts >= backoff
        };
    if t.failed > backoff || past_on_failure {
        return Decision::Fail(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
        );
    }
    let parallelism = spec["parallelism"].as_i64().unwrap_or(1).max(0);
    match spec["completions"].as_i64() {
        Some(c) => {
            if t.succeeded >= c {
                return Decision::Complete;
            }
            Decision::Run(parallelism.min(c - t.succeeded) - t.active)
        }
        None => {
            // A work queue: done when one succeeded and none runs any more.
            if t.succeeded > 0 {
                if t.active == 0 {
                    Decision::Complete
                } else {
                    Decision::Run(0)
                }
            } else {
                Decision::Run(parallelism - t.active)
            }
        }
    }
}

/// With `backoffLimitPerIndex`, whether the failed indexes fail the Job (Kubernetes): more of
/// them than `maxFailedIndexes`, or every index settled with some failed.
fn failed_indexes_verdict(
    job: &Value,
    failures: &job_indexes::IndexFailures,
    settled: Option<&std::collections::BTreeSet<i64>>,
) -> Option<Decision> {
    if failures.failed.is_empty() {
        return None;
    }
    let max = job["spec"]["maxFailedIndexes"].as_i64();
    if max.is_some_and(|m| failures.failed.len() as i64 > m) {
        return Some(Decision::Fail(
            "MaxFailedIndexesExceeded",
            "Job has exceeded the specified maximal number of failed indexes".into(),
        ));
    }
    let completions = job["spec"]["completions"].as_i64().unwrap_or(0);
    (settled.map_or(0, |s| s.len() as i64) >= completions)
        .then(|| Decision::Fail("FailedIndexes", "Job has failed indexes".into()))
}

/// The `Suspended` condition to write, if it must change (Kubernetes): True with
/// `JobSuspended` while `spec.suspend` is set, False with `JobResumed` once it is cleared
/// again; nothing for a Job never suspended.
pub fn suspended_condition(conditions: &[Value], suspend: bool, now: &str) -> Option<Value> {
    let current = conditions.iter().find(|c| c["type"] == "Suspended");
    let (status, reason, message) = match (suspend, current) {
        (true, _) => ("True", "JobSuspended", "Job suspended"),
        (false, Some(_)) => ("False", "JobResumed", "Job resumed"),
        (false, None) => return None,
    };
    if current.is_some_and(|c| c["status"] == status) {
        return None;
    }
    Some(
        json!({"type": "Suspended", "status": status, "reason": reason, "message": message, "lastProbeTime": now, "lastTransitionTime": now}),
    )
}

/// How a Job finished (`Complete` or `Failed`) and when, from its conditions.
pub fn finished(job: &Value) -> Option<(&'static str, DateTime<Utc>)> {
    let conds = job["status"]["conditions"].as_array()?;
    for kind in ["Complete", "Failed"] {
        if let Some(c) = conds
            .iter()
            .find(|c| c["type"] == kind && c["status"] == "True")
        {
            let at = pods::parse_time(&c["lastTransitionTime"]).unwrap_or_else(Utc::now);
            return Some((
                if kind == "Complete" {
                    "Complete"
                } else {
                    "Failed"
                },
                at,
            ));
        }
    }
    None
}

/// The Job reconciler.
pub struct JobController {
    api: Api,
    events: EventRecorder,
    config: JobConfig,
}

impl JobController {
    /// A controller writing through `api`, and the event writer to run beside it.
    pub fn new(api: Api, config: JobConfig) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "job-controller");
        (
            JobController {
                api,
                events,
                config,
            },
            writer,
        )
    }

    /// Deletes the Job's active pods.
    async fn delete_active(&self, job: &Value, mine: &[&Value]) -> ApiResult<()> {
        let ns = objects::namespace(job).unwrap_or("default");
        let victims: Vec<String> = mine
            .iter()
            .filter(|p| pods::is_active(p))
            .map(|p| objects::name(p).to_string())
            .collect();
        let (_, err) = pods::delete_recorded(&self.api, &self.events, job, ns, victims).await;
        err.map_or(Ok(()), Err)
    }

    /// Removes the tracking finalizer from pods no Job will count: orphans, and pods of a
    /// Job named `name` that is gone or is another Job now (`uid` the current one's).
    async fn release_untracked(
        &self,
        all: &[Value],
        name: Option<&str>,
        uid: Option<&str>,
    ) -> ApiResult<()> {
        for p in all.iter().filter(|p| job_tracking::has_finalizer(p)) {
            let stale = match owner::controller_ref(p) {
                None => true,
                Some(r) => {
                    r["kind"] == "Job"
                        && name.is_some_and(|n| r["name"] == n)
                        && uid.is_none_or(|u| r["uid"] != u)
                }
            };
            if stale {
                match job_tracking::remove_finalizer(&self.api, p).await {
                    Ok(()) => {}
                    Err(e) if e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        if key.is_all() {
            // An orphan pod with the tracking finalizer changed.
            let all = pods::list(&self.api, ns).await?;
            self.release_untracked(&all, None, None).await?;
            return Ok(None);
        }
        let job = match self.api.get(jobs(), Some(ns), &key.name).await {
            Ok(j) => j,
            Err(e) if e.code == 404 => {
                let all = pods::list(&self.api, ns).await?;
                self.release_untracked(&all, Some(&key.name), None).await?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let uid = owner::uid(&job).to_string();
        let all = pods::list(&self.api, ns).await?;
        self.release_untracked(&all, Some(&key.name), Some(&uid))
            .await?;
        let mine: Vec<&Value> = all
            .iter()
            .filter(|p| owner::is_controlled_by(p, &uid))
            .collect();
        if objects::is_deleting(&job) {
            // A Job being deleted lets its pods go.
            for p in mine.iter().filter(|p| job_tracking::has_finalizer(p)) {
                job_tracking::remove_finalizer(&self.api, p).await?;
            }
            return Ok(None);
        }
        // Count what finished (exactly once, through the pods' tracking finalizer).
        let job = {
            let was_finished = finished(&job).is_some();
            job_tracking::track(&self.api, jobs(), job, &mine, was_finished).await?
        };
        let now = Utc::now();
        if let Some((_, at)) = finished(&job) {
            self.delete_active(&job, &mine).await?;
            if let Some(ttl) = job["spec"]["ttlSecondsAfterFinished"].as_i64() {
                let expires = at + chrono::Duration::seconds(ttl.max(0));
                if expires <= now {
                    let opts = DeleteOptions {
                        propagation: Some(Propagation::Background),
                        precondition_uid: Some(uid),
                        ..Default::default()
                    };
                    match self.api.delete(jobs(), Some(ns), &key.name, &opts).await {
                        Ok(_) => {}
                        Err(e) if e.code == 404 || e.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                    return Ok(None);
                }
                return Ok((expires - now)
                    .to_std()
                    .ok()
                    .map(|d| d + Duration::from_millis(50)));
            }
            return Ok(None);
        }
        // The counters hold every pod whose finalizer is gone; the uncounted ones are on
        // their way there.
        let mut t = tally(&mine);
        let uncounted = job_tracking::Uncounted::of(&job);
        let counted_succeeded = job["status"]["succeeded"].as_i64().unwrap_or(0);
        let counted_failed = job["status"]["failed"].as_i64().unwrap_or(0);
        t.succeeded = counted_succeeded + uncounted.succeeded.len() as i64;
        t.failed = counted_failed + uncounted.failed.len() as i64;
        // An Indexed Job counts the indexes done, not the pods.
        let done = job_indexes::is_indexed(&job).then(|| job_indexes::completed(&job, &mine));
        let index_failures = job_indexes::index_failures(&job, &mine);
        // Indexes done, and (with backoffLimitPerIndex) failed for good: none is run again.
        let settled: Option<std::collections::BTreeSet<i64>> = done.as_ref().map(|d| {
            let failed = index_failures.iter().flat_map(|f| f.failed.iter().copied());
            d.iter().copied().chain(failed).collect()
        });
        if let Some(settled) = &settled {
            t.succeeded = settled.len() as i64;
        }
        let start = pods::parse_time(&job["status"]["startTime"]).unwrap_or(now);
        let active_for = (now - start).to_std().unwrap_or_default();
        let suspended = job["spec"]["suspend"].as_bool().unwrap_or(false);
        let decision = if let Some(target) = job_tracking::failure_target(&job) {
            // A pod matched a FailJob rule of the podFailurePolicy.
            let message = target["message"].as_str().unwrap_or("").to_string();
            Decision::Fail("PodFailurePolicy", message)
        } else if let Some(why) = index_failures
            .as_ref()
            .and_then(|f| failed_indexes_verdict(&job, f, settled.as_ref()))
        {
            why
        } else if suspended {
            Decision::Run(-t.active)
        } else {
            match decide(&job, &t, active_for) {
                Decision::Run(n) => done
                    .as_ref()
                    .and_then(|d| job_indexes::success_policy_met(&job, d))
                    .map_or(Decision::Run(n), Decision::SuccessPolicy),
                other => other,
            }
        };
        let mut status = job["status"].clone();
        if !status.is_object() {
            status = json!({});
        }
        let now_s = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut conditions: Vec<Value> =
            status["conditions"].as_array().cloned().unwrap_or_default();
        if let Some(c) = suspended_condition(&conditions, suspended, &now_s) {
            if c["status"] == "False" {
                // Resumed: activeDeadlineSeconds counts from now.
                status["startTime"] = json!(now_s);
            }
            conditions.retain(|x| x["type"] != "Suspended");
            conditions.push(c);
        }
        if !suspended && status["startTime"].is_null() {
            status["startTime"] = json!(now_s);
        }
        let mut requeue = None;
        // Failed pods are replaced only after the backoff since the last failure (failures the
        // podFailurePolicy ignores do not count).
        let counted: Vec<&Value> = mine
            .iter()
            .copied()
            .filter(|p| {
                p["status"]["phase"] != "Failed"
                    || job_failure_policy::evaluate(&job, p) != Action::Ignore
            })
            .collect();
        let (failures, last_failure) = failures_after_last_success(&counted);
        let wait = last_failure
            .map(|at| {
                let until = at
                    + chrono::Duration::from_std(failure_backoff(
                        failures,
                        self.config.backoff_base,
                        self.config.backoff_max,
                    ))
                    .unwrap_or_default();
                (until - now).to_std().unwrap_or_default()
            })
            .unwrap_or_default();
        match &decision {
            Decision::Run(n) if *n > 0 && !wait.is_zero() => {
                requeue = Some(wait + Duration::from_millis(50));
            }
            Decision::Run(n) if *n > 0 => {
                let name = objects::name(&job).to_string();
                let labels = [
                    ("batch.kubernetes.io/controller-uid", uid.as_str()),
                    ("controller-uid", uid.as_str()),
                    ("batch.kubernetes.io/job-name", name.as_str()),
                    ("job-name", name.as_str()),
                ];
                let indexes: Vec<Option<i64>> = match &settled {
                    Some(settled) => job_indexes::to_start(&job, &mine, settled, *n as usize)
                        .into_iter()
                        .map(Some)
                        .collect(),
                    None => vec![None; *n as usize],
                };
                let new: Vec<Value> = indexes
                    .into_iter()
                    .map(|index| {
                        let mut p = pods::from_template(
                            &job["spec"]["template"],
                            &job,
                            &format!("{name}-"),
                            &labels,
                        );
                        p["metadata"]["finalizers"] = json!([job_tracking::FINALIZER]);
                        if let Some(i) = index {
                            let failures = index_failures
                                .as_ref()
                                .map(|f| f.counts.get(&i).copied().unwrap_or(0));
                            job_indexes::assign(&mut p, &name, i, failures);
                        }
                        p
                    })
                    .collect();
                let (created, err) =
                    pods::create_recorded(&self.api, &self.events, &job, ns, new).await;
                t.active += created.len() as i64;
                if err.is_some() {
                    requeue = Some(Duration::from_secs(1));
                }
            }
            Decision::Run(n) if *n < 0 => {
                let mut active: Vec<&Value> = mine
                    .iter()
                    .copied()
                    .filter(|p| pods::is_active(p))
                    .collect();
                active.sort_by(|a, b| pods::deletion_order(a, b));
                let victims: Vec<String> = active
                    .iter()
                    .take((-n) as usize)
                    .map(|p| objects::name(p).to_string())
                    .collect();
                let (deleted, err) =
                    pods::delete_recorded(&self.api, &self.events, &job, ns, victims).await;
                t.active -= deleted.len() as i64;
                if err.is_some() {
                    requeue = Some(Duration::from_secs(1));
                }
            }
            Decision::Run(_) => {}
            Decision::Complete | Decision::SuccessPolicy(_) => {
                self.delete_active(&job, &mine).await?;
                t.active = 0;
                let (reason, message) = match &decision {
                    Decision::SuccessPolicy(m) => ("SuccessPolicy", m.as_str()),
                    _ => (
                        "CompletionsReached",
                        "Reached expected number of succeeded pods",
                    ),
                };
                for kind in ["SuccessCriteriaMet", "Complete"] {
                    conditions.push(json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now_s, "lastTransitionTime": now_s}));
                }
                status["completionTime"] = json!(now_s);
                self.events
                    .normal(owner::object_reference(&job), "Completed", "Job completed");
            }
            Decision::Fail(reason, message) => {
                // Pods stopped because the Job failed count as failed (tracking counts them
                // on the next pass), as in Kubernetes.
                self.delete_active(&job, &mine).await?;
                t.active = 0;
                for kind in ["FailureTarget", "Failed"] {
                    if kind == "FailureTarget" && job_tracking::failure_target(&job).is_some() {
                        continue;
                    }
                    conditions.push(json!({"type": kind, "status": "True", "reason": reason, "message": message, "lastProbeTime": now_s, "lastTransitionTime": now_s}));
                }
                self.events
                    .warning(owner::object_reference(&job), reason, message.clone());
            }
        }
        if matches!(decision, Decision::Run(_))
            && let Some(deadline) = job["spec"]["activeDeadlineSeconds"].as_i64()
        {
            let left = Duration::from_secs(deadline.max(0) as u64).saturating_sub(active_for);
            requeue =
                Some(requeue.map_or(left, |r: Duration| r.min(left)) + Duration::from_millis(50));
        }
        // Kubernetes omits the zero counters and always shows `ready` and
        // uncountedTerminatedPods.
        let succeeded = done.as_ref().map_or(counted_succeeded, |d| d.len() as i64);
        let obj = status.as_object_mut().expect("made an object above");
        let index_sets = [
            ("completedIndexes", done.as_ref()),
            ("failedIndexes", index_failures.as_ref().map(|f| &f.failed)),
        ];
        for (field, set) in index_sets {
            match set.map(job_indexes::format) {
                Some(ranges) if !ranges.is_empty() => {
                    obj.insert(field.into(), json!(ranges));
                }
                _ => {
                    obj.remove(field);
                }
            }
        }
        for (field, n) in [
            ("active", t.active),
            ("succeeded", succeeded),
            ("failed", counted_failed),
        ] {
            if n > 0 {
                obj.insert(field.into(), json!(n));
            } else {
                obj.remove(field);
            }
        }
        status["ready"] = json!(t.ready.min(t.active));
        status["uncountedTerminatedPods"] = uncounted.to_json();
        status["terminating"] = json!(
            mine.iter()
                .filter(|p| objects::is_deleting(p) && !pods::is_terminal(p))
                .count()
        );
        if !conditions.is_empty() {
            status["conditions"] = json!(conditions);
        }
        write_status(&self.api, jobs(), &job, status).await?;
        Ok(requeue)
    }
}

impl Reconciler for JobController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        self.sync(key).await
    }
}

/// Runs the Job controller until `shutdown`.
pub async fn run(api: Api, pods: PodCache, config: JobConfig, shutdown: CancellationToken) {
    let (controller, writer) = JobController::new(api.clone(), config);
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(jobs()),
        // Its pods, and orphans still holding the tracking finalizer (their Job was deleted
        // with --cascade=orphan) to let go; fed by the shared pod cache, which has decoded
        // every pod change already.
        Watched::with_map(pods::pods(), {
            let owned = Watched::owned_by(pods::pods(), "Job").map;
            move |p| {
                if owner::controller_ref(p).is_some() {
                    owned(p)
                } else if job_tracking::has_finalizer(p) {
                    vec![ObjectKey::all_in(objects::namespace(p))]
                } else {
                    vec![]
                }
            }
        })
        .from_cache(&pods, |_| {}),
    ];
    let config = RunnerConfig {
        name: "job",
        workers: 4,
        resync: Duration::from_secs(10),
        batch: Duration::ZERO,
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(spec: Value) -> Value {
        json!({"spec": spec})
    }

    fn t(active: i64, succeeded: i64, failed: i64, restarts: i64) -> Tally {
        Tally {
            active,
            ready: 0,
            succeeded,
            failed,
            restarts,
        }
    }

    #[test]
    fn pods_run_up_to_parallelism_until_completions_succeed() {
        let j = job(
            json!({"completions": 5, "parallelism": 2, "backoffLimit": 6, "template": {"spec": {"restartPolicy": "Never"}}}),
        );
        assert_eq!(decide(&j, &t(0, 0, 0, 0), Duration::ZERO), Decision::Run(2));
        assert_eq!(decide(&j, &t(2, 0, 0, 0), Duration::ZERO), Decision::Run(0));
        assert_eq!(decide(&j, &t(1, 4, 0, 0), Duration::ZERO), Decision::Run(0));
        assert_eq!(decide(&j, &t(0, 4, 0, 0), Duration::ZERO), Decision::Run(1));
        assert_eq!(
            decide(&j, &t(0, 5, 0, 0), Duration::ZERO),
            Decision::Complete
        );
        let scaled_down =
            job(json!({"completions": 5, "parallelism": 1, "template": {"spec": {}}}));
        assert_eq!(
            decide(&scaled_down, &t(3, 0, 0, 0), Duration::ZERO),
            Decision::Run(-2)
        );
    }

    #[test]
    fn never_counts_failed_pods_and_on_failure_counts_restarts_against_the_backoff_limit() {
        let never = job(
            json!({"completions": 1, "parallelism": 1, "backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never"}}}),
        );
        assert_eq!(
            decide(&never, &t(0, 0, 2, 0), Duration::ZERO),
            Decision::Run(1)
        );
        assert!(matches!(
            decide(&never, &t(0, 0, 3, 0), Duration::ZERO),
            Decision::Fail("BackoffLimitExceeded", _)
        ));
        // Restarts do not count with Never.
        assert_eq!(
            decide(&never, &t(1, 0, 0, 9), Duration::ZERO),
            Decision::Run(0)
        );
        let on_failure = job(
            json!({"completions": 1, "parallelism": 1, "backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure"}}}),
        );
        assert_eq!(
            decide(&on_failure, &t(1, 0, 0, 1), Duration::ZERO),
            Decision::Run(0)
        );
        assert!(matches!(
            decide(&on_failure, &t(1, 0, 0, 2), Duration::ZERO),
            Decision::Fail("BackoffLimitExceeded", _)
        ));
    }

    #[test]
    fn failed_pods_are_replaced_after_a_doubling_backoff_capped_at_six_minutes() {
        let (base, max) = (Duration::from_secs(10), Duration::from_secs(360));
        let secs = |n| failure_backoff(n, base, max).as_secs();
        assert_eq!(
            [0, 1, 2, 3, 4, 5, 6, 7, 100].map(secs),
            [0, 10, 20, 40, 80, 160, 320, 360, 360]
        );
        let fast = failure_backoff(3, Duration::from_millis(200), max);
        assert_eq!(fast, Duration::from_millis(800));
    }

    #[test]
    fn the_backoff_counts_failures_since_the_last_success() {
        let pod = |phase: &str, finished: &str| {
            json!({"status": {"phase": phase, "containerStatuses": [
                {"state": {"terminated": {"finishedAt": finished}}}]}})
        };
        let f1 = pod("Failed", "2024-01-01T00:00:01Z");
        let s2 = pod("Succeeded", "2024-01-01T00:00:02Z");
        let f3 = pod("Failed", "2024-01-01T00:00:03Z");
        let f4 = pod("Failed", "2024-01-01T00:00:04Z");
        let running = json!({"status": {"phase": "Running"}});
        let (n, last) = failures_after_last_success(&[&f1, &s2, &f4, &f3, &running]);
        assert_eq!(n, 2);
        assert_eq!(last, pods::parse_time(&json!("2024-01-01T00:00:04Z")));
        assert_eq!(failures_after_last_success(&[&s2, &running]), (0, None));
        // A failed pod without terminated containers falls back on its conditions.
        let bare = json!({"status": {"phase": "Failed", "conditions": [
            {"type": "Ready", "lastTransitionTime": "2024-01-01T00:00:09Z"}]}});
        assert_eq!(
            failures_after_last_success(&[&bare]),
            (1, pods::parse_time(&json!("2024-01-01T00:00:09Z")))
        );
    }

    #[test]
    fn a_suspended_job_says_so_and_a_resumed_one_says_it_resumed() {
        let now = "2024-01-01T00:00:00Z";
        assert_eq!(suspended_condition(&[], false, now), None);
        let c = suspended_condition(&[], true, now).unwrap();
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("True"), Some("JobSuspended"))
        );
        assert_eq!(
            suspended_condition(std::slice::from_ref(&c), true, now),
            None
        );
        let r = suspended_condition(&[c], false, now).unwrap();
        assert_eq!(
            (r["status"].as_str(), r["reason"].as_str()),
            (Some("False"), Some("JobResumed"))
        );
        assert_eq!(suspended_condition(&[r], false, now), None);
    }

    #[test]
    fn a_job_past_its_active_deadline_fails() {
        let j = job(
            json!({"completions": 1, "activeDeadlineSeconds": 3, "template": {"spec": {"restartPolicy": "Never"}}}),
        );
        assert_eq!(
            decide(&j, &t(1, 0, 0, 0), Duration::from_secs(2)),
            Decision::Run(0)
        );
        assert!(matches!(
            decide(&j, &t(1, 0, 0, 0), Duration::from_secs(3)),
            Decision::Fail("DeadlineExceeded", _)
        ));
    }

    #[test]
    fn a_work_queue_job_completes_when_one_succeeded_and_none_runs() {
        let j = job(json!({"parallelism": 3, "template": {"spec": {}}}));
        assert_eq!(decide(&j, &t(0, 0, 0, 0), Duration::ZERO), Decision::Run(3));
        assert_eq!(decide(&j, &t(2, 1, 0, 0), Duration::ZERO), Decision::Run(0));
        assert_eq!(
            decide(&j, &t(0, 1, 0, 0), Duration::ZERO),
            Decision::Complete
        );
    }
}
