//! The HorizontalPodAutoscaler controller (`autoscaling/v2`), as kube-controller-manager's:
//! every sync period (`--horizontal-pod-autoscaler-sync-period`, 15 s) each HPA reads its
//! target's scale subresource, the usage of the pods the scale's selector picks from the
//! metrics API (in-process: [`resource_metrics::pod_usage`]), and asks
//! [`super::replica_calculator`] what each `Resource` metric wants. The
//! largest recommendation then goes through the HPA's `behavior`:
//!
//! - stabilization: scaling down follows the highest recommendation of the last
//!   `scaleDown.stabilizationWindowSeconds` (300 s by default), scaling up the lowest of
//!   `scaleUp.stabilizationWindowSeconds` (0);
//! - rate policies (by default up: 4 pods or 100 % per 15 s, whichever is more; down: 100 %
//!   per 15 s), `selectPolicy` Max, Min or Disabled;
//! - `minReplicas` (1) and `maxReplicas`.
//!
//! A change is written through the target's `scale` subresource, with a `SuccessfulRescale`
//! Event. The status carries `currentReplicas`, `desiredReplicas`, `currentMetrics`,
//! `lastScaleTime` and the `AbleToScale`, `ScalingActive` and `ScalingLimited` conditions,
//! with the reasons kube-controller-manager gives; a target replica count of 0 turns
//! autoscaling off (`ScalingDisabled`).
//!
//! Only `Resource` metrics (cpu, memory; `averageUtilization` or `averageValue`) are served;
//! other metric types make `ScalingActive` false with a reason saying so. What Wasm pods
//! report as CPU and memory is described in the agent's resource metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::owner;
use super::pods;
use super::replica_calculator::{self, CalcError, PodSample, Recommendation, Target};
use super::replicaset::write_status;
use super::runner::{self, ObjectKey, Reconciler, RunnerConfig, Watched};
use crate::apiserver::api::{Api, ListParams, ScaleChange, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::patch::PatchType;
use crate::apiserver::resource_metrics::usage::{cpu_quantity, memory_quantity};
use crate::apiserver::resource_metrics::{self, PodUsage, Scraper};
use crate::apiserver::resources::{self, ResourceInfo};
use crate::apiserver::selector::LabelSelector;
use crate::events::{EventRecorder, EventWriter};
use crate::scheduler::quantity::Quantity;

/// Settings of the HorizontalPodAutoscaler controller.
#[derive(Debug, Clone)]
pub struct HpaConfig {
    /// How often each HPA is evaluated (`--horizontal-pod-autoscaler-sync-period`).
    pub sync_period: Duration,
    /// Ratios this close to 1 change nothing (`--horizontal-pod-autoscaler-tolerance`).
    pub tolerance: f64,
    /// The scale-down stabilization window of HPAs that set none
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`).
    pub downscale_stabilization: Duration,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            sync_period: Duration::from_secs(15),
            tolerance: replica_calculator::TOLERANCE,
            downscale_stabilization: Duration::from_secs(300),
        }
    }
}

/// The `horizontalpodautoscalers` resource.
pub fn hpas() -> &'static ResourceInfo {
    resources::find("autoscaling", "v2", "horizontalpodautoscalers").expect("hpas served")
}

/// What the controller remembers of one HPA between syncs (by namespace and name; forgotten
/// when the HPA is gone, reset when one of the same name replaces it).
#[derive(Debug, Default)]
struct Memory {
    /// The HPA's uid.
    uid: String,
    /// Recommendations and when they were made.
    recommendations: Vec<(Instant, i32)>,
    /// Replica changes made, and when.
    scale_events: Vec<(Instant, i32)>,
}

/// The controller.
pub struct HpaController {
    api: Api,
    scraper: Scraper,
    events: EventRecorder,
    config: HpaConfig,
    memory: Mutex<HashMap<String, Memory>>,
}

/// One metric's outcome.
struct MetricResult {
    recommendation: Recommendation,
    /// `status.currentMetrics` entry.
    current: Value,
    /// For the rescale reason: `cpu resource utilization (percentage of request)`.
    description: String,
}

/// A condition as the status carries it.
struct Condition {
    kind: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

impl Condition {
    fn new(
        kind: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            kind,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// A scaling policy of `behavior`.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    percent: bool,
    value: i64,
    period: Duration,
}

/// One direction of `behavior`.
#[derive(Debug, Clone, PartialEq)]
struct Rules {
    window: Duration,
    policies: Vec<Policy>,
    /// `Max`, `Min` or `Disabled`.
    select: String,
}

impl Rules {
    fn from_spec(spec: &Value, default_window: Duration, up: bool) -> Rules {
        let window = spec["stabilizationWindowSeconds"]
            .as_i64()
            .map_or(default_window, |s| Duration::from_secs(s.max(0) as u64));
        let policies = spec["policies"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| Policy {
                        percent: p["type"] == "Percent",
                        value: p["value"].as_i64().unwrap_or(0),
                        period: Duration::from_secs(
                            p["periodSeconds"].as_i64().unwrap_or(15).max(1) as u64,
                        ),
                    })
                    .collect()
            })
            .unwrap_or_else(|| {
                let p = |percent, value| Policy {
                    percent,
                    value,
                    period: Duration::from_secs(15),
                };
                if up {
                    vec![p(false, 4), p(true, 100)]
                } else {
                    vec![p(true, 100)]
                }
            });
        Rules {
            window,
            policies,
            select: spec["selectPolicy"].as_str().unwrap_or("Max").to_string(),
        }
    }
}

/// The most replicas the scale-up policies allow now, from `current` and past scale-ups.
fn scale_up_limit(rules: &Rules, current: i32, events: &[(Instant, i32)], now: Instant) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let limits = rules.policies.iter().map(|p| {
        let added: i32 = events
            .iter()
            .filter(|(t, change)| *change > 0 && now.duration_since(*t) < p.period)
            .map(|(_, c)| c)
            .sum();
        let start = (current - added).max(0);
        if p.percent {
            (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i32
        } else {
            start + p.value as i32
        }
    });
    let limit = if rules.select == "Min" {
        limits.min()
    } else {
        limits.max()
    };
    limit.unwrap_or(i32::MAX).max(current)
}

/// The fewest replicas the scale-down policies allow now, from `current` and past scale-downs.
fn scale_down_limit(rules: &Rules, current: i32, events: &[(Instant, i32)], now: Instant) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let limits = rules.policies.iter().map(|p| {
        let removed: i32 = events
            .iter()
            .filter(|(t, change)| *change < 0 && now.duration_since(*t) < p.period)
            .map(|(_, c)| -c)
            .sum();
        let start = current + removed;
        if p.percent {
            (start as f64 * (1.0 - p.value as f64 / 100.0)).ceil() as i32
        } else {
            start - p.value as i32
        }
    });
    let limit = if rules.select == "Min" {
        limits.max()
    } else {
        limits.min()
    };
    limit.unwrap_or(0).min(current)
}

/// Sums the containers' requests for `resource` (millicores for cpu, bytes otherwise); `None`
/// when a container requests none.
fn pod_request(pod: &Value, resource: &str) -> Option<i64> {
    let mut sum = 0;
    for c in pod["spec"]["containers"].as_array()? {
        let q = Quantity::parse(c["resources"]["requests"][resource].as_str()?).ok()?;
        sum += if resource == "cpu" {
            q.milli_value()
        } else {
            q.value()
        };
    }
    Some(sum)
}

fn usage_of(u: &PodUsage, resource: &str) -> i64 {
    if resource == "cpu" {
        u.cpu_millis
    } else {
        u.memory_bytes
    }
}

/// A quantity for `currentMetrics`, printed as the metrics API prints it (`250m`, `1`,
/// `64Mi`): `v` is millicores for cpu, bytes otherwise.
fn quantity_text(resource: &str, v: i64) -> String {
    let v = v.max(0) as u64;
    if resource == "cpu" {
        cpu_quantity(v * 1_000_000)
    } else {
        memory_quantity(v)
    }
}

impl HpaController {
    /// A controller writing through `api`, reading usage through `scraper`, and the event
    /// writer to run beside it.
    pub fn new(api: Api, scraper: Scraper, config: HpaConfig) -> (Self, EventWriter) {
        let (events, writer) = EventRecorder::new(api.clone(), "horizontal-pod-autoscaler");
        (
            HpaController {
                api,
                scraper,
                events,
                config,
                memory: Mutex::new(HashMap::new()),
            },
            writer,
        )
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<String, Memory>> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Evaluates every metric of `spec` for `pods`.
    fn compute(
        &self,
        spec: &Value,
        current: i32,
        pods: &[Value],
        usage: &HashMap<String, PodUsage>,
    ) -> Result<Vec<MetricResult>, (&'static str, String)> {
        let default_metrics = vec![
            json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}),
        ];
        let metrics = spec["metrics"]
            .as_array()
            .filter(|m| !m.is_empty())
            .cloned()
            .unwrap_or(default_metrics);
        let mut out = Vec::new();
        for m in &metrics {
            let kind = m["type"].as_str().unwrap_or("");
            if kind != "Resource" {
                return Err((
                    "InvalidMetricSourceType",
                    format!("the HPA controller serves only Resource metrics, not {kind}"),
                ));
            }
            let resource = m["resource"]["name"].as_str().unwrap_or("");
            let t = &m["resource"]["target"];
            let target = match t["type"].as_str() {
                Some("Utilization") => {
                    Target::Utilization(t["averageUtilization"].as_i64().unwrap_or(80))
                }
                Some("AverageValue") => {
                    let q = t["averageValue"]
                        .as_str()
                        .and_then(|s| Quantity::parse(s).ok())
                        .ok_or((
                            "InvalidMetricSourceType",
                            format!("invalid averageValue for {resource}"),
                        ))?;
                    Target::AverageValue(if resource == "cpu" {
                        q.milli_value()
                    } else {
                        q.value()
                    })
                }
                other => {
                    return Err((
                        "InvalidMetricSourceType",
                        format!("unsupported target type {other:?} for resource {resource}"),
                    ));
                }
            };
            let samples: Vec<PodSample> = pods
                .iter()
                .map(|p| PodSample {
                    name: objects::name(p).to_string(),
                    counted: !objects::is_deleting(p) && p["status"]["phase"] != "Failed",
                    ready: pods::is_ready(p),
                    request: pod_request(p, resource),
                    usage: usage.get(objects::name(p)).map(|u| usage_of(u, resource)),
                })
                .collect();
            let rec = replica_calculator::replicas(
                resource,
                current,
                &samples,
                target,
                self.config.tolerance,
            )
            .map_err(|e| {
                let detail = match &e {
                    CalcError::NoMetrics => {
                        format!("unable to get metrics for resource {resource}: {e}")
                    }
                    CalcError::MissingRequest { .. } => e.to_string(),
                };
                (
                    "FailedGetResourceMetric",
                    format!("the HPA was unable to compute the replica count: {detail}"),
                )
            })?;
            let mut current_metric =
                json!({"averageValue": quantity_text(resource, rec.average_value)});
            let description = match (target, rec.utilization) {
                (Target::Utilization(_), Some(u)) => {
                    current_metric["averageUtilization"] = json!(u);
                    format!("{resource} resource utilization (percentage of request)")
                }
                _ => format!("{resource} resource"),
            };
            out.push(MetricResult {
                current: json!({"type": "Resource", "resource": {"name": resource, "current": current_metric}}),
                recommendation: rec,
                description,
            });
        }
        Ok(out)
    }

    async fn sync(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let hpa = match self.api.get(hpas(), Some(ns), &key.name).await {
            Ok(h) => h,
            Err(e) if e.code == 404 => {
                self.memory().remove(&format!("{ns}/{}", key.name));
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let uid = owner::uid(&hpa).to_string();
        let remembered = format!("{ns}/{}", key.name);
        let spec = &hpa["spec"];
        let min = spec["minReplicas"].as_i64().unwrap_or(1) as i32;
        let max = spec["maxReplicas"].as_i64().unwrap_or(1) as i32;
        let target_ref = &spec["scaleTargetRef"];
        let target_kind = target_ref["kind"].as_str().unwrap_or("");
        let target_name = target_ref["name"].as_str().unwrap_or("");
        let reference = format!("{target_kind}/{target_name}");
        let mut status = json!({
            "observedGeneration": hpa["metadata"]["generation"],
            "currentReplicas": hpa["status"]["currentReplicas"].as_i64().unwrap_or(0),
            "desiredReplicas": hpa["status"]["desiredReplicas"].as_i64().unwrap_or(0),
        });
        if let Some(t) = hpa["status"]["lastScaleTime"].as_str() {
            status["lastScaleTime"] = json!(t);
        }
        let mut conditions = Vec::new();

        let target_res = target_ref["apiVersion"]
            .as_str()
            .and_then(|v| resources::find_kind(v, target_kind))
            .filter(|r| r.has(resources::Subresource::Scale));
        let target = match target_res {
            Some(res) => self
                .api
                .get(res, Some(ns), target_name)
                .await
                .ok()
                .map(|obj| (res, obj)),
            None => None,
        };
        let Some((res, target_obj)) = target else {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: {reference} not found or has no scale subresource"
            );
            self.events
                .warning(owner::object_reference(&hpa), "FailedGetScale", &message);
            conditions.push(Condition::new(
                "AbleToScale",
                false,
                "FailedGetScale",
                message,
            ));
            return self.finish(&hpa, status, conditions).await;
        };
        let scale = Api::scale_of(res, &target_obj);
        let current = scale["spec"]["replicas"].as_i64().unwrap_or(0) as i32;
        status["currentReplicas"] = json!(scale["status"]["replicas"].as_i64().unwrap_or(0));
        if current == 0 && min > 0 {
            status["desiredReplicas"] = json!(0);
            conditions.push(Condition::new(
                "AbleToScale",
                true,
                "SucceededGetScale",
                "the HPA controller was able to get the target's current scale",
            ));
            conditions.push(Condition::new(
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            ));
            return self.finish(&hpa, status, conditions).await;
        }

        let selector = scale["status"]["selector"].as_str().unwrap_or("");
        let pods = match LabelSelector::parse(selector) {
            Ok(sel) if !selector.is_empty() => {
                let params = ListParams {
                    label_selector: Some(sel),
                    ..ListParams::default()
                };
                self.api.list(pods::pods(), Some(ns), &params).await?.0
            }
            _ => {
                let message = format!("the HPA target's scale is missing a selector: {reference}");
                conditions.push(Condition::new(
                    "ScalingActive",
                    false,
                    "InvalidSelector",
                    message,
                ));
                return self.finish(&hpa, status, conditions).await;
            }
        };
        let usage = resource_metrics::pod_usage(&self.api, &self.scraper, &pods).await;
        let results = match self.compute(spec, current, &pods, &usage) {
            Ok(r) => r,
            Err((reason, message)) => {
                self.events
                    .warning(owner::object_reference(&hpa), reason, &message);
                conditions.push(Condition::new(
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale",
                ));
                conditions.push(Condition::new("ScalingActive", false, reason, message));
                status["desiredReplicas"] = json!(current);
                return self.finish(&hpa, status, conditions).await;
            }
        };
        status["currentMetrics"] = json!(
            results
                .iter()
                .map(|r| r.current.clone())
                .collect::<Vec<_>>()
        );
        let best = results
            .iter()
            .max_by_key(|r| r.recommendation.replicas)
            .expect("at least one metric");
        let proposed = best.recommendation.replicas;

        // Behaviour: stabilization, rate policies, bounds.
        let now = Instant::now();
        let behavior = &spec["behavior"];
        let up = Rules::from_spec(&behavior["scaleUp"], Duration::ZERO, true);
        let down = Rules::from_spec(
            &behavior["scaleDown"],
            self.config.downscale_stabilization,
            false,
        );
        let (desired, limited) = {
            let mut memory = self.memory();
            let m = memory.entry(remembered.clone()).or_default();
            if m.uid != uid {
                *m = Memory {
                    uid: uid.clone(),
                    ..Memory::default()
                };
            }
            let keep_for = up.window.max(down.window);
            m.recommendations
                .retain(|(t, _)| now.duration_since(*t) <= keep_for);
            m.recommendations.push((now, proposed));
            let in_window = |w: Duration| {
                m.recommendations
                    .iter()
                    .filter(move |(t, _)| now.duration_since(*t) <= w)
                    .map(|(_, r)| *r)
            };
            let up_rec = in_window(up.window).min().unwrap_or(proposed);
            let down_rec = in_window(down.window).max().unwrap_or(proposed);
            let mut desired = current;
            if desired < up_rec {
                desired = up_rec;
            }
            if desired > down_rec {
                desired = down_rec;
            }
            let longest = up
                .policies
                .iter()
                .chain(&down.policies)
                .map(|p| p.period)
                .max()
                .unwrap_or(Duration::from_secs(15));
            m.scale_events
                .retain(|(t, _)| now.duration_since(*t) < longest);
            let mut limited = None;
            if desired > current {
                let limit = scale_up_limit(&up, current, &m.scale_events, now);
                if desired > limit {
                    desired = limit;
                    limited = Some((
                        "ScaleUpLimit",
                        "the desired replica count is increasing faster than the maximum scale rate",
                    ));
                }
            } else if desired < current {
                let limit = scale_down_limit(&down, current, &m.scale_events, now);
                if desired < limit {
                    desired = limit;
                    limited = Some((
                        "ScaleDownLimit",
                        "the desired replica count is decreasing faster than the maximum scale rate",
                    ));
                }
            }
            if desired > max {
                desired = max;
                limited = Some((
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                ));
            } else if desired < min {
                desired = min;
                limited = Some((
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                ));
            }
            (desired, limited)
        };
        status["desiredReplicas"] = json!(desired);
        conditions.push(Condition::new(
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!(
                "the HPA was able to successfully calculate a replica count from {}",
                best.description
            ),
        ));
        conditions.push(match limited {
            Some((reason, message)) => Condition::new("ScalingLimited", true, reason, message),
            None => Condition::new(
                "ScalingLimited",
                false,
                "DesiredWithinRange",
                "the desired count is within the acceptable range",
            ),
        });

        if desired == current {
            conditions.insert(
                0,
                Condition::new(
                    "AbleToScale",
                    true,
                    "ReadyForNewScale",
                    "recommended size matches current size",
                ),
            );
            return self.finish(&hpa, status, conditions).await;
        }
        let reason = if current > max {
            "Current number of replicas above Spec.MaxReplicas".to_string()
        } else if current < min {
            "Current number of replicas below Spec.MinReplicas".to_string()
        } else if desired > current {
            format!("{} above target", best.description)
        } else {
            "All metrics below target".to_string()
        };
        let body = json!({"spec": {"replicas": desired}}).to_string();
        let opts = WriteOptions {
            field_manager: Some("horizontal-pod-autoscaler".into()),
            ..WriteOptions::default()
        };
        match self
            .api
            .write_scale(
                res,
                Some(ns),
                target_name,
                ScaleChange::Patch(PatchType::Merge, body.as_bytes()),
                &opts,
            )
            .await
        {
            Ok(_) => {
                self.memory()
                    .entry(remembered)
                    .or_default()
                    .scale_events
                    .push((now, desired - current));
                self.events.normal(
                    owner::object_reference(&hpa),
                    "SuccessfulRescale",
                    format!("New size: {desired}; reason: {reason}"),
                );
                status["lastScaleTime"] = json!(objects::now_rfc3339());
                conditions.insert(
                    0,
                    Condition::new(
                        "AbleToScale",
                        true,
                        "SucceededRescale",
                        format!(
                            "the HPA controller was able to update the target scale to {desired}"
                        ),
                    ),
                );
            }
            Err(e) => {
                let message = format!(
                    "New size: {desired}; reason: {reason}; error: {}",
                    e.message
                );
                self.events
                    .warning(owner::object_reference(&hpa), "FailedRescale", &message);
                conditions.insert(
                    0,
                    Condition::new(
                        "AbleToScale",
                        false,
                        "FailedUpdateScale",
                        format!(
                            "the HPA controller was unable to update the target scale: {}",
                            e.message
                        ),
                    ),
                );
                status["desiredReplicas"] = json!(current);
            }
        }
        self.finish(&hpa, status, conditions).await
    }

    /// Writes the status with `conditions` (keeping each one's transition time while its
    /// status holds) and asks to be evaluated again after the sync period.
    async fn finish(
        &self,
        hpa: &Value,
        mut status: Value,
        conditions: Vec<Condition>,
    ) -> ApiResult<Option<Duration>> {
        let now = objects::now_rfc3339();
        let old = hpa["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let conditions: Vec<Value> = conditions
            .into_iter()
            .map(|c| {
                let status = if c.status { "True" } else { "False" };
                let since = old
                    .iter()
                    .find(|o| o["type"] == c.kind && o["status"] == status)
                    .and_then(|o| o["lastTransitionTime"].as_str().map(String::from))
                    .unwrap_or_else(|| now.clone());
                json!({"type": c.kind, "status": status, "lastTransitionTime": since,
                       "reason": c.reason, "message": c.message})
            })
            .collect();
        status["conditions"] = json!(conditions);
        write_status(&self.api, hpas(), hpa, status).await?;
        Ok(Some(self.config.sync_period))
    }
}

impl Reconciler for HpaController {
    async fn reconcile(&self, key: &ObjectKey) -> ApiResult<Option<Duration>> {
        self.sync(key).await
    }
}

/// Runs the controller until `shutdown`.
pub async fn run(api: Api, scraper: Scraper, config: HpaConfig, shutdown: CancellationToken) {
    let sync_period = config.sync_period;
    let (controller, writer) = HpaController::new(api.clone(), scraper, config);
    let events = tokio::spawn(writer.run(shutdown.clone()));
    let config = RunnerConfig {
        name: "horizontal-pod-autoscaler",
        workers: 2,
        resync: sync_period,
        // As kube-controller-manager's fixed-interval rate limiter: an HPA's own status write
        // (or any edit) does not make it sync sooner than once per period.
        batch: sync_period,
    };
    runner::run(
        api,
        vec![Watched::primary(hpas())],
        Arc::new(controller),
        config,
        shutdown,
    )
    .await;
    let _ = events.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(spec: Value, up: bool) -> Rules {
        Rules::from_spec(&spec, Duration::from_secs(300), up)
    }

    #[test]
    fn default_policies_allow_four_pods_or_doubling_up_and_anything_down() {
        let now = Instant::now();
        let up = rules(Value::Null, true);
        assert_eq!(up.window, Duration::from_secs(300), "the given default");
        assert_eq!(scale_up_limit(&up, 1, &[], now), 5, "max(1 + 4, 2 × 1)");
        assert_eq!(scale_up_limit(&up, 10, &[], now), 20, "max(14, 20)");
        // 6 of the 10 were added 5 s ago: the period started at 4 replicas.
        assert_eq!(
            scale_up_limit(&up, 10, &[(now - Duration::from_secs(5), 6)], now),
            10
        );
        let down = rules(Value::Null, false);
        assert_eq!(scale_down_limit(&down, 10, &[], now), 0);
    }

    #[test]
    fn explicit_policies_windows_and_select_policy_are_read() {
        let now = Instant::now();
        let down = rules(
            json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Min",
                   "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60},
                                {"type": "Percent", "value": 50, "periodSeconds": 60}]}),
            false,
        );
        assert_eq!(down.window, Duration::ZERO);
        // Min picks the policy that changes least: 10 - 1 = 9 rather than 5.
        assert_eq!(scale_down_limit(&down, 10, &[], now), 9);
        let disabled = rules(json!({"selectPolicy": "Disabled"}), true);
        assert_eq!(scale_up_limit(&disabled, 3, &[], now), 3);
    }

    #[test]
    fn requests_are_summed_over_containers_and_a_missing_one_is_none() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}},
            {"resources": {"requests": {"cpu": "0.5"}}}
        ]}});
        assert_eq!(pod_request(&pod, "cpu"), Some(600));
        assert_eq!(pod_request(&pod, "memory"), None);
    }

    async fn create(api: &Api, group: &str, plural: &str, obj: Value) {
        let res = resources::find(group, "v2", plural)
            .or_else(|| resources::find(group, "v1", plural))
            .expect("served");
        api.create(res, Some("default"), obj, &WriteOptions::default())
            .await
            .expect("create");
    }

    fn hpa(name: &str, target: &str, metric_type: &str) -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
               "metadata": {"name": name, "namespace": "default"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                        "minReplicas": 1, "maxReplicas": 5,
                        "metrics": [{"type": metric_type, "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 50}}}]}})
    }

    async fn condition(api: &Api, name: &str, kind: &str) -> (String, String) {
        let h = api.get(hpas(), Some("default"), name).await.unwrap();
        let c = h["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in {h}"))
            .clone();
        (
            c["status"].as_str().unwrap().to_string(),
            c["reason"].as_str().unwrap().to_string(),
        )
    }

    #[tokio::test]
    async fn a_missing_target_or_an_unserved_metric_type_is_a_condition_and_scales_nothing() {
        let (api, _dir) = crate::apiserver::fake_agent::api().await;
        let (c, _events) =
            HpaController::new(api.clone(), Scraper::default(), HpaConfig::default());
        let key = |name: &str| ObjectKey {
            namespace: Some("default".into()),
            name: name.into(),
        };
        create(
            &api,
            "autoscaling",
            "horizontalpodautoscalers",
            hpa("lost", "nope", "Resource"),
        )
        .await;
        assert_eq!(
            c.sync(&key("lost")).await.unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            condition(&api, "lost", "AbleToScale").await,
            ("False".into(), "FailedGetScale".into())
        );

        create(
            &api,
            "apps",
            "deployments",
            json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}}),
        )
        .await;
        create(
            &api,
            "autoscaling",
            "horizontalpodautoscalers",
            hpa("external", "web", "External"),
        )
        .await;
        c.sync(&key("external")).await.unwrap();
        assert_eq!(
            condition(&api, "external", "ScalingActive").await,
            ("False".into(), "InvalidMetricSourceType".into())
        );
        // No pod has metrics (there is no agent): scaling stays off, replicas stay.
        create(
            &api,
            "autoscaling",
            "horizontalpodautoscalers",
            hpa("cpu", "web", "Resource"),
        )
        .await;
        c.sync(&key("cpu")).await.unwrap();
        assert_eq!(
            condition(&api, "cpu", "ScalingActive").await,
            ("False".into(), "FailedGetResourceMetric".into())
        );
        let deployments = resources::find("apps", "v1", "deployments").unwrap();
        let web = api.get(deployments, Some("default"), "web").await.unwrap();
        assert_eq!(web["spec"]["replicas"], 2);
    }

    #[test]
    fn current_values_print_as_quantities() {
        assert_eq!(quantity_text("cpu", 250), "250m");
        assert_eq!(quantity_text("cpu", 2000), "2");
        assert_eq!(quantity_text("memory", 64 << 20), "64Mi");
        assert_eq!(quantity_text("memory", 1000), "1000");
    }
}
