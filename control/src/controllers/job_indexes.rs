//! Indexed Jobs (`completionMode: Indexed`): each pod runs one completion index from 0 to
//! `completions` − 1, and the Job is complete once every index has a pod that succeeded.
//!
//! As Kubernetes does, a pod of index *i* is named `<job>-<i>-<random>`, carries the index in
//! the `batch.kubernetes.io/job-completion-index` annotation and label and in the
//! `JOB_COMPLETION_INDEX` variable of every container, and gets the hostname `<job>-<i>`. The
//! indexes done are kept in `status.completedIndexes` as ranges (`"0-2,5"`), and
//! `status.succeeded` counts them. With `backoffLimitPerIndex`, a pod also carries the
//! failures of its index before it (`batch.kubernetes.io/job-index-failure-count`); an index
//! that failed more often than the limit, or by a `FailIndex` rule, fails for good and is
//! kept in `status.failedIndexes`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::job_failure_policy::{self, Action};
use super::pods;

/// The annotation and label holding a pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// The variable holding the index in every container.
pub const INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// The annotation counting the failures of a pod's index before the pod (with
/// `backoffLimitPerIndex`).
pub const FAILURE_COUNT_KEY: &str = "batch.kubernetes.io/job-index-failure-count";

/// With `backoffLimitPerIndex`: each index's failures so far, and the indexes failed for good
/// (more failures than the limit, a `FailIndex` rule, or already in `status.failedIndexes`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IndexFailures {
    /// Failures per index (what its next pod's annotation says).
    pub counts: BTreeMap<i64, i64>,
    /// The indexes that failed for good.
    pub failed: BTreeSet<i64>,
}

/// A Job's [`IndexFailures`]; `None` without `backoffLimitPerIndex`.
pub fn index_failures(job: &Value, pods_of_job: &[&Value]) -> Option<IndexFailures> {
    let limit = job["spec"]["backoffLimitPerIndex"].as_i64()?;
    let completions = job["spec"]["completions"].as_i64().unwrap_or(0);
    let mut out = IndexFailures {
        counts: BTreeMap::new(),
        failed: parse(job["status"]["failedIndexes"].as_str().unwrap_or("")),
    };
    for p in pods_of_job {
        let Some(i) = index_of(p) else {
            continue;
        };
        let mut n = p["metadata"]["annotations"][FAILURE_COUNT_KEY]
            .as_str()
            .and_then(|c| c.parse::<i64>().ok())
            .unwrap_or(0);
        if p["status"]["phase"] == "Failed" {
            match job_failure_policy::evaluate(job, p) {
                Action::Ignore => {}
                Action::FailIndex => {
                    out.failed.insert(i);
                }
                _ => n += 1,
            }
        }
        let count = out.counts.entry(i).or_default();
        *count = (*count).max(n);
    }
    for (&i, &n) in &out.counts {
        if n > limit {
            out.failed.insert(i);
        }
    }
    out.failed.retain(|i| (0..completions).contains(i));
    Some(out)
}

/// Whether a Job's pods run completion indexes.
pub fn is_indexed(job: &Value) -> bool {
    job["spec"]["completionMode"] == "Indexed"
}

/// A pod's completion index, from its annotation.
pub fn index_of(pod: &Value) -> Option<i64> {
    pod["metadata"]["annotations"][INDEX_KEY]
        .as_str()?
        .parse()
        .ok()
}

/// Reads `status.completedIndexes` (`"0-2,5"`); what does not parse is left out.
pub fn parse(ranges: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    for part in ranges.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<i64>(), last.parse::<i64>()) {
            out.extend(first..=last);
        }
    }
    out
}

/// Writes indexes as `status.completedIndexes` does: ascending, runs of consecutive indexes
/// as `first-last`.
pub fn format(indexes: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(i64, i64)> = None;
    for &i in indexes {
        run = match run {
            Some((first, last)) if i == last + 1 => Some((first, i)),
            Some(done) => {
                out.push(range(done));
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    out.extend(run.map(range));
    out.join(",")
}

fn range((first, last): (i64, i64)) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// The indexes done: those already in the Job's status and those of its pods that succeeded.
pub fn completed(job: &Value, pods_of_job: &[&Value]) -> BTreeSet<i64> {
    let completions = job["spec"]["completions"].as_i64().unwrap_or(0);
    let mut done = parse(job["status"]["completedIndexes"].as_str().unwrap_or(""));
    done.extend(
        pods_of_job
            .iter()
            .filter(|p| p["status"]["phase"] == "Succeeded")
            .filter_map(|p| index_of(p)),
    );
    done.retain(|i| (0..completions).contains(i));
    done
}

/// The first rule of an Indexed Job's `successPolicy` the indexes `done` meet, as Kubernetes'
/// `matchSuccessPolicy`: "Matched rules at index i". A rule with `succeededIndexes` is met when
/// `succeededCount` of those (all, without a count) are done; one with only a count when that
/// many indexes are done.
pub fn success_policy_met(job: &Value, done: &BTreeSet<i64>) -> Option<String> {
    let rules = job["spec"]["successPolicy"]["rules"].as_array()?;
    for (i, rule) in rules.iter().enumerate() {
        let count = rule["succeededCount"].as_i64();
        let met = match rule["succeededIndexes"].as_str() {
            Some(indexes) => {
                let wanted = parse(indexes);
                let have = wanted.intersection(done).count() as i64;
                have >= count.unwrap_or(wanted.len() as i64)
            }
            None => count.is_some_and(|c| done.len() as i64 >= c),
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// The lowest `n` indexes that are neither `settled` (done, or failed for good) nor run by an
/// active pod.
pub fn to_start(
    job: &Value,
    pods_of_job: &[&Value],
    settled: &BTreeSet<i64>,
    n: usize,
) -> Vec<i64> {
    let running: BTreeSet<i64> = pods_of_job
        .iter()
        .filter(|p| pods::is_active(p))
        .filter_map(|p| index_of(p))
        .collect();
    let completions = job["spec"]["completions"].as_i64().unwrap_or(0);
    (0..completions)
        .filter(|i| !settled.contains(i) && !running.contains(i))
        .take(n)
        .collect()
}

/// Makes `pod` (from the Job's template) the pod of `index` of Job `job_name`, the index
/// having failed `failures` times before (with `backoffLimitPerIndex`).
pub fn assign(pod: &mut Value, job_name: &str, index: i64, failures: Option<i64>) {
    let value = index.to_string();
    let meta = &mut pod["metadata"];
    meta["generateName"] = json!(format!("{job_name}-{index}-"));
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][INDEX_KEY] = json!(value);
    if let Some(n) = failures {
        meta["annotations"][FAILURE_COUNT_KEY] = json!(n.to_string());
    }
    meta["labels"][INDEX_KEY] = json!(value);
    let spec = &mut pod["spec"];
    if spec["hostname"].as_str().is_none_or(str::is_empty) {
        spec["hostname"] = json!(format!("{job_name}-{index}"));
    }
    for list in ["initContainers", "containers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if !c["env"].is_array() {
                c["env"] = json!([]);
            }
            let env = c["env"].as_array_mut().expect("made an array above");
            env.retain(|e| e["name"] != INDEX_ENV);
            env.push(json!({"name": INDEX_ENV, "value": value}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completed_indexes_read_and_write_as_ranges() {
        let set = parse("0-2,5, 7-8,x,9-");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), [0, 1, 2, 5, 7, 8]);
        assert_eq!(format(&set), "0-2,5,7-8");
        assert_eq!(format(&BTreeSet::new()), "");
        assert_eq!(format(&parse("3")), "3");
    }

    #[test]
    fn the_lowest_indexes_not_done_or_running_start_next() {
        let job = json!({"spec": {"completionMode": "Indexed", "completions": 5},
            "status": {"completedIndexes": "1"}});
        let pod = |i: i64, phase: &str| {
            json!({"metadata": {"annotations": {INDEX_KEY: i.to_string()}},
                "status": {"phase": phase}})
        };
        let (running, succeeded, failed) =
            (pod(0, "Running"), pod(3, "Succeeded"), pod(2, "Failed"));
        let mine = [&running, &succeeded, &failed];
        let done = completed(&job, &mine);
        assert_eq!(format(&done), "1,3");
        assert_eq!(to_start(&job, &mine, &done, 5), [2, 4]);
        assert_eq!(to_start(&job, &mine, &done, 1), [2]);
    }

    #[test]
    fn each_index_fails_for_good_past_its_own_backoff_limit() {
        let job = json!({"spec": {"completionMode": "Indexed", "completions": 4,
            "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [9]}},
                {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [7]}}]}},
            "status": {"failedIndexes": "3"}});
        let pod = |i: i64, count: i64, phase: &str, code: i64| {
            json!({"metadata": {"annotations": {INDEX_KEY: i.to_string(),
                    FAILURE_COUNT_KEY: count.to_string()}},
                "status": {"phase": phase, "containerStatuses": [
                    {"name": "c", "state": {"terminated": {"exitCode": code}}}]}})
        };
        let pods = [
            pod(0, 0, "Failed", 1),
            pod(0, 1, "Failed", 1),
            pod(1, 0, "Failed", 1),
            pod(1, 1, "Running", 0),
            pod(2, 0, "Failed", 7),
            pod(2, 0, "Failed", 9),
        ];
        let refs: Vec<&Value> = pods.iter().collect();
        let f = index_failures(&job, &refs).unwrap();
        assert_eq!(f.counts, BTreeMap::from([(0, 2), (1, 1), (2, 0)]));
        assert_eq!(format(&f.failed), "0,2-3");
        assert_eq!(index_failures(&json!({"spec": {}}), &refs), None);
    }

    #[test]
    fn a_success_policy_is_met_by_its_first_rule_the_indexes_done_meet() {
        let job = json!({"spec": {"successPolicy": {"rules": [
            {"succeededIndexes": "0,2-3"},
            {"succeededIndexes": "4-9", "succeededCount": 2},
            {"succeededCount": 4}]}}});
        let met = |done: &str| success_policy_met(&job, &parse(done));
        assert_eq!(met("0,2"), None);
        assert_eq!(met("0,2-3").as_deref(), Some("Matched rules at index 0"));
        assert_eq!(met("5,9").as_deref(), Some("Matched rules at index 1"));
        assert_eq!(met("0,1,5,6").as_deref(), Some("Matched rules at index 1"));
        assert_eq!(met("0-1,3,5").as_deref(), Some("Matched rules at index 2"));
        assert_eq!(
            success_policy_met(&json!({"spec": {}}), &parse("0-9")),
            None
        );
    }

    #[test]
    fn a_pod_is_given_its_index_name_hostname_and_variable() {
        let mut pod = json!({"metadata": {"generateName": "work-", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "env": [{"name": "X", "value": "1"}]}],
                "initContainers": [{"name": "i"}]}});
        assign(&mut pod, "work", 4, Some(2));
        assert_eq!(pod["metadata"]["annotations"][FAILURE_COUNT_KEY], "2");
        assert_eq!(pod["metadata"]["generateName"], "work-4-");
        assert_eq!(pod["metadata"]["annotations"][INDEX_KEY], "4");
        assert_eq!(pod["metadata"]["labels"][INDEX_KEY], "4");
        assert_eq!(pod["metadata"]["labels"]["a"], "b");
        assert_eq!(pod["spec"]["hostname"], "work-4");
        assert_eq!(
            pod["spec"]["containers"][0]["env"],
            json!([{"name": "X", "value": "1"}, {"name": INDEX_ENV, "value": "4"}])
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["env"],
            json!([{"name": INDEX_ENV, "value": "4"}])
        );
        assert_eq!(index_of(&pod), Some(4));
    }
}
