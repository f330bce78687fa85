//! The CronJob controller (kube-controller-manager's cronjob controller): creates a CronJob's
//! Jobs on its schedule and keeps its status.
//!
//! Each sync:
//!
//! 1. follows the CronJob's Jobs: finished ones leave `status.active` (`SawCompletedJob`),
//!    deleted ones too (`MissingJob`), and the latest `completionTime` of a successful one is
//!    `status.lastSuccessfulTime`;
//! 2. unless the CronJob is suspended or being deleted, finds the most recent start time missed
//!    since `status.lastScheduleTime` (or its creation), at most `startingDeadlineSeconds` ago
//!    (later is `MissSchedule`), and starts a Job for it, named `<cronjob>-<minutes since the
//!    epoch>` so a time is never run twice, honouring `concurrencyPolicy` (`Allow`; `Forbid`
//!    skips it while a Job runs, `JobAlreadyActive`; `Replace` deletes the running ones first);
//! 3. deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` and
//!    `failedJobsHistoryLimit`;
//! 4. asks to be run again at the next start time.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::apiserver::api::{Api, DeleteOptions, ListParams, Propagation, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};
use crate::events::{EventRecorder, EventWriter};

use super::job::{finished, jobs};
use super::owner;
use super::replicaset::write_status;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::cron::{MANY_MISSED, Schedule};

/// The annotation a scheduled Job carries with its start time, in the CronJob's time zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// The CronJob resource.
pub fn cronjobs() -> &'static ResourceInfo {
    resources::find("batch", "v1", "cronjobs").expect("cronjobs are served")
}

/// The CronJob reconciler.
struct CronJobController {
    api: Api,
    events: EventRecorder,
}

/// The name of the Job for the start time `t` (Kubernetes' `getJobName`).
pub fn job_name(cronjob: &str, t: Timestamp) -> String {
    format!("{cronjob}-{}", t.as_second() / 60)
}

fn reference(job: &Value) -> Value {
    json!({
        "kind": "Job", "apiVersion": "batch/v1",
        "namespace": objects::namespace(job), "name": objects::name(job),
        "uid": owner::uid(job), "resourceVersion": job["metadata"]["resourceVersion"],
    })
}

fn timestamp(v: &Value) -> Option<Timestamp> {
    v.as_str()?.parse().ok()
}

fn rfc3339(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The Job a CronJob starts for `scheduled`: its template, owned by the CronJob.
pub fn job_for(cronjob: &Value, schedule: &Schedule, scheduled: Timestamp) -> Value {
    let template = &cronjob["spec"]["jobTemplate"];
    let mut annotations = template["metadata"]["annotations"].clone();
    if !annotations.is_object() {
        annotations = json!({});
    }
    annotations[SCHEDULED_TIMESTAMP] = json!(schedule.local_rfc3339(scheduled));
    let mut meta = json!({
        "name": job_name(objects::name(cronjob), scheduled),
        "annotations": annotations,
        "ownerReferences": [owner::reference_to(cronjob)],
    });
    if let Some(labels) = template["metadata"]["labels"].as_object() {
        meta["labels"] = Value::Object(labels.clone());
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template["spec"]})
}

/// The finished Jobs to delete: the oldest (by start time) beyond each history limit.
pub fn beyond_history(cronjob: &Value, jobs: &[&Value]) -> Vec<String> {
    let spec = &cronjob["spec"];
    let mut out = Vec::new();
    for (kind, limit) in [
        (
            "Complete",
            spec["successfulJobsHistoryLimit"].as_i64().unwrap_or(3),
        ),
        (
            "Failed",
            spec["failedJobsHistoryLimit"].as_i64().unwrap_or(1),
        ),
    ] {
        let mut done: Vec<&&Value> = jobs
            .iter()
            .filter(|j| finished(j).is_some_and(|(k, _)| k == kind))
            .collect();
        done.sort_by_key(|j| {
            (
                timestamp(&j["status"]["startTime"]),
                objects::name(j).to_string(),
            )
        });
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        out.extend(done[..extra].iter().map(|j| objects::name(j).to_string()));
    }
    out
}

impl CronJobController {
    async fn delete_job(&self, cronjob: &Value, ns: &str, name: &str) -> ApiResult<()> {
        let opts = DeleteOptions {
            propagation: Some(Propagation::Background),
            ..Default::default()
        };
        match self.api.delete(jobs(), Some(ns), name, &opts).await {
            Ok(_) => {
                self.events.normal(
                    owner::object_reference(cronjob),
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                );
                Ok(())
            }
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let Some(cronjob) = runner::get_object(&self.api, cronjobs(), key).await? else {
            return Ok(None);
        };
        let me = owner::object_reference(&cronjob);
        let (listed, _, _) = self
            .api
            .list(jobs(), Some(ns), &ListParams::default())
            .await?;
        let uid = owner::uid(&cronjob);
        let mine: Vec<&Value> = listed
            .iter()
            .filter(|j| owner::is_controlled_by(j, uid))
            .collect();
        let mut status = cronjob["status"].clone();
        if !status.is_object() {
            status = json!({});
        }

        // 1. What its Jobs did.
        let mut active: Vec<Value> = status["active"].as_array().cloned().unwrap_or_default();
        active.retain(|r| {
            let job = mine.iter().find(|j| owner::uid(j) == r["uid"]);
            match job {
                None => {
                    self.events.normal(
                        me.clone(),
                        "MissingJob",
                        format!(
                            "Active job went missing: {}",
                            r["name"].as_str().unwrap_or("")
                        ),
                    );
                    false
                }
                Some(j) => match finished(j) {
                    Some((condition, _)) => {
                        self.events.normal(
                            me.clone(),
                            "SawCompletedJob",
                            format!(
                                "Saw completed job: {}, condition: {condition}",
                                objects::name(j)
                            ),
                        );
                        false
                    }
                    None => true,
                },
            }
        });
        let last_success = mine
            .iter()
            .filter(|j| finished(j).is_some_and(|(k, _)| k == "Complete"))
            .filter_map(|j| timestamp(&j["status"]["completionTime"]))
            .chain(timestamp(&status["lastSuccessfulTime"]))
            .max();
        if let Some(t) = last_success {
            status["lastSuccessfulTime"] = json!(rfc3339(t));
        }

        // 3 (first, so a new Job is never among those deleted). Old finished Jobs.
        for name in beyond_history(&cronjob, &mine) {
            self.delete_job(&cronjob, ns, &name).await?;
        }

        let next = self
            .start_due(&cronjob, ns, &mine, &mut active, &mut status)
            .await?;
        status["active"] = json!(active);
        if active.is_empty() {
            status.as_object_mut().map(|s| s.remove("active"));
        }
        write_status(&self.api, cronjobs(), &cronjob, status).await?;
        Ok(next.map(|t| {
            let wait = (t - Timestamp::now()).get_milliseconds().max(0) as u64;
            Duration::from_millis(wait + 100)
        }))
    }

    /// Step 2: starts the Job of the most recent missed start time, if it is due and allowed;
    /// returns the next start time.
    async fn start_due(
        &self,
        cronjob: &Value,
        ns: &str,
        mine: &[&Value],
        active: &mut Vec<Value>,
        status: &mut Value,
    ) -> ApiResult<Option<Timestamp>> {
        let spec = &cronjob["spec"];
        let me = owner::object_reference(cronjob);
        if objects::is_deleting(cronjob) || spec["suspend"] == true {
            return Ok(None);
        }
        let schedule = match Schedule::parse(
            spec["schedule"].as_str().unwrap_or(""),
            spec["timeZone"].as_str(),
        ) {
            Ok(s) => s,
            Err(why) => {
                self.events.warning(
                    me,
                    "UnparseableSchedule",
                    format!("unparseable schedule: {:?} : {why}", spec["schedule"]),
                );
                return Ok(None);
            }
        };
        let now = Timestamp::now();
        let next = schedule.next_after(now);
        let mut earliest = timestamp(&status["lastScheduleTime"])
            .or_else(|| timestamp(&cronjob["metadata"]["creationTimestamp"]))
            .unwrap_or(now);
        let deadline = spec["startingDeadlineSeconds"].as_i64();
        if let Some(d) = deadline
            && let Ok(limit) = now.checked_sub(jiff::SignedDuration::from_secs(d))
            && limit > earliest
        {
            earliest = limit;
        }
        let missed = match schedule.missed(earliest, now) {
            Ok(m) => m,
            Err(why) => {
                self.events
                    .warning(me, "InvalidSchedule", format!("invalid schedule: {why}"));
                return Ok(None);
            }
        };
        if missed.count > MANY_MISSED {
            self.events.warning(
                me.clone(),
                "TooManyMissedTimes",
                format!(
                    "too many missed start times: {}. Set or decrease \
                     .spec.startingDeadlineSeconds or check clock skew",
                    missed.count
                ),
            );
        }
        let Some(scheduled) = missed.most_recent else {
            return Ok(next);
        };
        if let Some(d) = deadline
            && scheduled + jiff::SignedDuration::from_secs(d) < now
        {
            self.events.warning(
                me,
                "MissSchedule",
                format!(
                    "Missed scheduled time to start a job: {}",
                    schedule.local_rfc3339(scheduled)
                ),
            );
            return Ok(next);
        }
        let name = job_name(objects::name(cronjob), scheduled);
        if mine.iter().any(|j| objects::name(j) == name)
            || timestamp(&status["lastScheduleTime"]) == Some(scheduled)
        {
            return Ok(next);
        }
        match spec["concurrencyPolicy"].as_str().unwrap_or("Allow") {
            "Forbid" if !active.is_empty() => {
                self.events.normal(
                    me,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy \
                     is Forbid",
                );
                return Ok(next);
            }
            "Replace" => {
                for r in active.drain(..) {
                    self.delete_job(cronjob, ns, r["name"].as_str().unwrap_or(""))
                        .await?;
                }
            }
            _ => {}
        }
        let job = job_for(cronjob, &schedule, scheduled);
        match self
            .api
            .create(jobs(), Some(ns), job, &WriteOptions::default())
            .await
        {
            Ok((created, _)) => {
                self.events
                    .normal(me, "SuccessfulCreate", format!("Created job {name}"));
                active.push(reference(&created));
            }
            // Created by an earlier sync whose status write was lost: its time is done.
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => {
                self.events.warning(
                    me,
                    "FailedCreate",
                    format!("Error creating job: {}", e.message),
                );
                return Err(e);
            }
        }
        status["lastScheduleTime"] = json!(rfc3339(scheduled));
        Ok(next)
    }
}

impl Reconciler for CronJobController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        self.sync(key).await
    }
}

/// Runs the CronJob controller until `shutdown`.
pub async fn run(api: Api, shutdown: CancellationToken) {
    let (events, writer) = EventRecorder::new(api.clone(), "cronjob-controller");
    let writer: EventWriter = writer;
    let events_task = tokio::spawn(writer.run(shutdown.clone()));
    let watched = vec![
        Watched::primary(cronjobs()),
        Watched::owned_by(jobs(), "CronJob"),
    ];
    let controller = CronJobController {
        api: api.clone(),
        events,
    };
    let config = RunnerConfig {
        name: "cronjob",
        workers: 2,
        resync: Duration::from_secs(30),
        batch: Duration::ZERO,
    };
    runner::run(api, watched, Arc::new(controller), config, shutdown).await;
    let _ = events_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cronjob() -> Value {
        json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "report", "namespace": "d", "uid": "u-1"},
            "spec": {"schedule": "*/5 * * * *", "timeZone": "Europe/Paris",
                "successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1,
                "jobTemplate": {"metadata": {"labels": {"app": "report"}},
                    "spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "x"}]}}}}}})
    }

    #[test]
    fn a_scheduled_job_is_named_by_its_minute_and_owned_by_its_cronjob() {
        let cj = cronjob();
        let schedule = Schedule::parse("*/5 * * * *", Some("Europe/Paris")).unwrap();
        let t: Timestamp = "2026-12-07T06:35:00Z".parse().unwrap();
        let job = job_for(&cj, &schedule, t);
        assert_eq!(job["metadata"]["name"], "report-29943755");
        assert_eq!(
            job["metadata"]["annotations"][SCHEDULED_TIMESTAMP],
            "2026-12-07T07:35:00+01:00"
        );
        assert_eq!(job["metadata"]["labels"]["app"], "report");
        assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
        assert_eq!(job["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn the_oldest_finished_jobs_beyond_the_history_limits_go() {
        let job = |name: &str, started: &str, condition: Option<&str>| {
            let mut j = json!({"metadata": {"name": name}, "status": {"startTime": started}});
            if let Some(c) = condition {
                j["status"]["conditions"] =
                    json!([{"type": c, "status": "True", "lastTransitionTime": started}]);
            }
            j
        };
        let jobs = [
            job("ok-3", "2026-12-07T06:15:00Z", Some("Complete")),
            job("ok-1", "2026-12-07T06:05:00Z", Some("Complete")),
            job("ok-2", "2026-12-07T06:10:00Z", Some("Complete")),
            job("bad-1", "2026-12-07T06:00:00Z", Some("Failed")),
            job("bad-2", "2026-12-07T06:20:00Z", Some("Failed")),
            job("running", "2026-12-07T06:25:00Z", None),
        ];
        let refs: Vec<&Value> = jobs.iter().collect();
        assert_eq!(beyond_history(&cronjob(), &refs), ["ok-1", "bad-1"]);
    }
}
