//! How many replicas a resource metric asks for: the arithmetic of kube-controller-manager's
//! `replica_calculator.go` for `Resource` metrics, pure and table-tested.
//!
//! The ratio of the pods' usage to the target (a utilization of their requests, or an average
//! value) scales the ready pods with metrics. Within the tolerance (10 %) nothing changes.
//! Pods are treated conservatively, as in Kubernetes:
//!
//! - pods being deleted and failed pods are ignored;
//! - for CPU, pods that are not Ready are left out of the ratio, and when it says "scale up"
//!   they count as using nothing;
//! - pods without metrics count as using nothing when scaling up, and their whole request (or
//!   the target) when scaling down;
//! - if accounting for them would flip the direction, or leaves the ratio in tolerance, the
//!   replica count stays.

/// The default tolerance (`--horizontal-pod-autoscaler-tolerance`).
pub const TOLERANCE: f64 = 0.1;

/// One pod the scale target selects.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    /// The pod's name.
    pub name: String,
    /// Whether it counts at all: not being deleted and not Failed.
    pub counted: bool,
    /// Whether its `Ready` condition is true.
    pub ready: bool,
    /// The sum of its containers' requests for the resource (millicores or bytes); `None`
    /// when a container requests none.
    pub request: Option<i64>,
    /// Its usage (millicores or bytes), if the metrics API has it.
    pub usage: Option<i64>,
}

/// The target of one resource metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// `averageUtilization`: percent of the pods' requests.
    Utilization(i64),
    /// `averageValue`: usage per pod (millicores or bytes).
    AverageValue(i64),
}

/// What a metric recommends.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The replica count it asks for.
    pub replicas: i32,
    /// The current average utilization (percent of requests), for utilization targets.
    pub utilization: Option<i64>,
    /// The current average usage per pod with metrics.
    pub average_value: i64,
}

/// Why no recommendation could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalcError {
    /// No pod had metrics.
    #[error("no metrics returned from resource metrics API")]
    NoMetrics,
    /// A utilization target, and a pod without a request for the resource.
    #[error("missing request for {resource} in pod {pod}")]
    MissingRequest {
        /// The resource.
        resource: String,
        /// The pod.
        pod: String,
    },
}

/// The replicas the metric asks for, from `current` replicas and the `pods` selected.
/// `cpu` selects the readiness rule for CPU.
pub fn replicas(
    resource: &str,
    current: i32,
    pods: &[PodSample],
    target: Target,
    tolerance: f64,
) -> Result<Recommendation, CalcError> {
    let cpu = resource == "cpu";
    let counted: Vec<&PodSample> = pods.iter().filter(|p| p.counted).collect();
    let with_metrics: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| p.usage.is_some() && (!cpu || p.ready))
        .collect();
    if with_metrics.is_empty() {
        return Err(CalcError::NoMetrics);
    }
    let unready: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| cpu && !p.ready)
        .collect();
    let missing: Vec<&PodSample> = counted
        .iter()
        .copied()
        .filter(|p| p.usage.is_none() && (!cpu || p.ready))
        .collect();
    let request_of = |p: &PodSample| -> Result<i64, CalcError> {
        p.request.ok_or_else(|| CalcError::MissingRequest {
            resource: resource.to_string(),
            pod: p.name.clone(),
        })
    };
    // (usage, request) sums over the pods taken into account.
    let ratio_of = |samples: &[(i64, i64)]| -> Result<(f64, Option<i64>, i64), CalcError> {
        let usage: i64 = samples.iter().map(|s| s.0).sum();
        let average = usage / samples.len().max(1) as i64;
        match target {
            Target::Utilization(t) => {
                let requests: i64 = samples.iter().map(|s| s.1).sum();
                if requests <= 0 {
                    return Err(CalcError::NoMetrics);
                }
                let utilization = usage as f64 * 100.0 / requests as f64;
                Ok((
                    utilization / t.max(1) as f64,
                    Some(utilization as i64),
                    average,
                ))
            }
            Target::AverageValue(v) => Ok((average as f64 / v.max(1) as f64, None, average)),
        }
    };
    let mut samples = Vec::with_capacity(counted.len());
    for p in &with_metrics {
        let request = match target {
            Target::Utilization(_) => request_of(p)?,
            Target::AverageValue(_) => 0,
        };
        samples.push((p.usage.unwrap_or(0), request));
    }
    let (ratio, utilization, average_value) = ratio_of(&samples)?;
    let keep = |replicas: i32| Recommendation {
        replicas,
        utilization,
        average_value,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= tolerance {
            return Ok(keep(current));
        }
        return Ok(keep((ratio * samples.len() as f64).ceil() as i32));
    }
    for p in &missing {
        let (usage, request) = match target {
            Target::Utilization(_) => {
                let r = request_of(p)?;
                (if ratio < 1.0 { r } else { 0 }, r)
            }
            Target::AverageValue(v) => (if ratio < 1.0 { v } else { 0 }, 0),
        };
        samples.push((usage, request));
    }
    if scale_up_with_unready {
        for p in &unready {
            let request = match target {
                Target::Utilization(_) => request_of(p)?,
                Target::AverageValue(_) => 0,
            };
            samples.push((0, request));
        }
    }
    let (new_ratio, _, _) = ratio_of(&samples)?;
    if (1.0 - new_ratio).abs() <= tolerance
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(keep(current));
    }
    let proposed = (new_ratio * samples.len() as f64).ceil() as i32;
    if (new_ratio < 1.0 && proposed > current) || (new_ratio > 1.0 && proposed < current) {
        return Ok(keep(current));
    }
    Ok(keep(proposed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, request: i64, usage: Option<i64>) -> PodSample {
        PodSample {
            name: name.into(),
            counted: true,
            ready,
            request: Some(request),
            usage,
        }
    }

    fn cpu(current: i32, pods: &[PodSample], target: i64) -> Result<i32, CalcError> {
        replicas("cpu", current, pods, Target::Utilization(target), TOLERANCE).map(|r| r.replicas)
    }

    #[test]
    fn utilization_above_target_scales_up_in_proportion() {
        // Three pods at 90% of 100m against a 30% target: 3 × 3 = 9.
        let pods: Vec<PodSample> = (0..3)
            .map(|i| pod(&format!("p{i}"), true, 100, Some(90)))
            .collect();
        let r = replicas("cpu", 3, &pods, Target::Utilization(30), TOLERANCE).unwrap();
        assert_eq!((r.replicas, r.utilization), (9, Some(90)));
    }

    #[test]
    fn within_tolerance_nothing_changes_and_below_target_scales_down() {
        let near: Vec<PodSample> = (0..4)
            .map(|i| pod(&format!("p{i}"), true, 100, Some(52)))
            .collect();
        assert_eq!(cpu(4, &near, 50), Ok(4), "4 % off is within 10 %");
        let idle: Vec<PodSample> = (0..4)
            .map(|i| pod(&format!("p{i}"), true, 100, Some(10)))
            .collect();
        assert_eq!(cpu(4, &idle, 50), Ok(1), "ceil(0.2 × 4)");
        let none: Vec<PodSample> = (0..4)
            .map(|i| pod(&format!("p{i}"), true, 100, Some(0)))
            .collect();
        assert_eq!(cpu(4, &none, 50), Ok(0), "the caller clamps to minReplicas");
    }

    #[test]
    fn pods_without_metrics_are_counted_against_the_direction() {
        // Scaling up: the missing pod counts as using nothing: (200+0)/300 = 0.67 of the
        // 100% target... with the target at 50%: ratio 1.33 → ceil(1.33 × 3) = 4.
        let pods = [
            pod("a", true, 100, Some(100)),
            pod("b", true, 100, Some(100)),
            pod("c", true, 100, None),
        ];
        assert_eq!(cpu(3, &pods, 50), Ok(4));
        // Scaling down: the missing pod counts as its whole request: (0+0+100)/300 = 33% of a
        // 50% target → ceil(0.67 × 3) = 2.
        let pods = [
            pod("a", true, 100, Some(0)),
            pod("b", true, 100, Some(0)),
            pod("c", true, 100, None),
        ];
        assert_eq!(cpu(3, &pods, 50), Ok(2));
        // If counting it flips the direction, nothing changes: 60% of 50% up, but with the
        // missing pod at 0 it is 40% — below target — so stay.
        let pods = [pod("a", true, 100, Some(60)), pod("b", true, 100, None)];
        assert_eq!(cpu(2, &pods, 50), Ok(2));
    }

    #[test]
    fn unready_pods_dampen_a_cpu_scale_up_and_ignored_pods_do_not_count() {
        let mut gone = pod("gone", true, 100, Some(1000));
        gone.counted = false;
        let pods = [
            pod("a", true, 100, Some(200)),
            pod("starting", false, 100, Some(500)),
            gone,
        ];
        // Ready a at 200% of a 100% target; the unready pod counts as 0: (200+0)/200 = 1.0,
        // within tolerance → stay at 2.
        assert_eq!(cpu(2, &pods, 100), Ok(2));
        // Memory has no readiness rule: both pods count.
        let r = replicas("memory", 2, &pods, Target::Utilization(100), TOLERANCE).unwrap();
        assert_eq!(r.replicas, 7, "(200+500)/200 = 3.5 → ceil(3.5 × 2)");
    }

    #[test]
    fn average_value_targets_need_no_requests() {
        let pods = [
            PodSample {
                request: None,
                ..pod("a", true, 0, Some(300 << 20))
            },
            PodSample {
                request: None,
                ..pod("b", true, 0, Some(100 << 20))
            },
        ];
        let r = replicas(
            "memory",
            2,
            &pods,
            Target::AverageValue(100 << 20),
            TOLERANCE,
        )
        .unwrap();
        assert_eq!((r.replicas, r.average_value), (4, 200 << 20));
    }

    #[test]
    fn errors_name_what_is_missing() {
        let pods = [PodSample {
            request: None,
            ..pod("a", true, 0, Some(10))
        }];
        assert_eq!(
            cpu(1, &pods, 50),
            Err(CalcError::MissingRequest {
                resource: "cpu".into(),
                pod: "a".into()
            })
        );
        assert_eq!(
            cpu(1, &[pod("a", true, 100, None)], 50),
            Err(CalcError::NoMetrics)
        );
    }
}
