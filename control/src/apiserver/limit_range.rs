//! LimitRanges, as kube-apiserver's LimitRanger admission plugin applies them to new pods and
//! claims of their namespace:
//!
//! - `type: Container` items give each container without a limit (or request) for a resource
//!   the item's `default` (or `defaultRequest`), noted in the pod's
//!   `kubernetes.io/limit-ranger` annotation, then bound each container's requests and limits
//!   by `min`, `max` and `maxLimitRequestRatio`;
//! - `type: Pod` items bound the pod's total (its containers' sum, or its largest init
//!   container);
//! - `type: PersistentVolumeClaim` items bound a claim's storage request.
//!
//! A pod or claim outside the bounds is refused with 403 Forbidden and kube-apiserver's words
//! ("maximum memory usage per Container is 1Gi, but limit is 2Gi"). The LimitRanges are read
//! once and kept until one is written, so pods in namespaces without any cost a lookup.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::objects;
use super::resources::{self, ResourceInfo};
use super::validation::shown;
use crate::scheduler::quantity::from_json as quantity;

/// The annotation listing the defaults a pod got.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

/// The `limitranges` resource.
pub fn limit_ranges() -> &'static ResourceInfo {
    resources::find("", "v1", "limitranges").expect("limitranges served")
}

/// LimitRanges by namespace.
type ByNamespace = Arc<HashMap<String, Vec<Value>>>;

/// Every LimitRange, read once and kept until one is written.
pub type LimitRangeCache = super::epoch_cache::EpochCache<ByNamespace>;

/// Reads every LimitRange, by namespace.
async fn load_all(api: &Api) -> ApiResult<ByNamespace> {
    let listed = api
        .store()
        .list(&limit_ranges().key_prefix(), Default::default())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut all: HashMap<String, Vec<Value>> = HashMap::new();
    for e in &listed.entries {
        let lr = objects::from_entry(e);
        let ns = objects::namespace(&lr).unwrap_or("").to_string();
        all.entry(ns).or_default().push(lr);
    }
    Ok(Arc::new(all))
}

/// kube-apiserver's defaulting of a LimitRange item: a Container item's `default` comes from
/// `max`, and its `defaultRequest` from `default`, then `min`.
pub fn default_item(item: &mut Map<String, Value>) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let fill = |item: &mut Map<String, Value>, to: &str, from: &str| {
        let source = item.get(from).and_then(Value::as_object).cloned();
        let target = item.entry(to).or_insert_with(|| json!({}));
        if !target.is_object() {
            *target = json!({});
        }
        let target = target.as_object_mut().expect("just made an object");
        for (k, v) in source.into_iter().flatten() {
            target.entry(k).or_insert(v);
        }
    };
    fill(item, "default", "max");
    fill(item, "defaultRequest", "default");
    fill(item, "defaultRequest", "min");
}

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|lr| lr["spec"]["limits"].as_array().into_iter().flatten())
        .filter(move |i| i["type"] == kind)
}

/// Gives the pod's containers the defaults of `ranges`' Container items; returns the
/// annotation value saying what was set, if anything was.
pub fn apply_defaults(spec: &mut Value, ranges: &[Value]) -> Option<String> {
    let mut notes = Vec::new();
    for (list, label) in [
        ("initContainers", "init container"),
        ("containers", "container"),
    ] {
        let Some(cs) = spec[list].as_array_mut() else {
            continue;
        };
        for c in cs {
            let mut set: [BTreeSet<String>; 2] = [BTreeSet::new(), BTreeSet::new()];
            for item in items(ranges, "Container") {
                for (i, (from, to)) in [("defaultRequest", "requests"), ("default", "limits")]
                    .into_iter()
                    .enumerate()
                {
                    for (k, v) in item[from].as_object().into_iter().flatten() {
                        let resources = &mut c["resources"];
                        if !resources.is_object() {
                            *resources = json!({});
                        }
                        if !resources[to].is_object() {
                            resources[to] = json!({});
                        }
                        if resources[to].get(k).is_none() {
                            resources[to][k] = v.clone();
                            set[i].insert(k.clone());
                        }
                    }
                }
            }
            let name = c["name"].as_str().unwrap_or("");
            for (what, keys) in ["request", "limit"].into_iter().zip(&set) {
                if !keys.is_empty() {
                    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                    notes.push(format!("{} {what} for {label} {name}", keys.join(", ")));
                }
            }
        }
    }
    (!notes.is_empty()).then(|| format!("LimitRanger plugin set: {}", notes.join("; ")))
}

/// The bounds of one item checked against one set of requests and limits (`of` names it:
/// `Container`, `Pod`, `PersistentVolumeClaim`), in kube-apiserver's words.
fn check(item: &Value, of: &str, requests: &Value, limits: &Value, out: &mut Vec<String>) {
    for (k, min) in item["min"].as_object().into_iter().flatten() {
        let Some(m) = quantity(min) else { continue };
        match requests.get(k).and_then(quantity) {
            None => out.push(format!(
                "minimum {k} usage per {of} is {}.  No request is specified",
                shown(min)
            )),
            Some(r) if r.milli_value() < m.milli_value() => out.push(format!(
                "minimum {k} usage per {of} is {}, but request is {}",
                shown(min),
                shown(&requests[k])
            )),
            Some(_) => {
                if let Some(l) = limits.get(k).and_then(quantity)
                    && l.milli_value() < m.milli_value()
                {
                    out.push(format!(
                        "minimum {k} usage per {of} is {}, but limit is {}",
                        shown(min),
                        shown(&limits[k])
                    ));
                }
            }
        }
    }
    for (k, max) in item["max"].as_object().into_iter().flatten() {
        let Some(m) = quantity(max) else { continue };
        // A claim has no limits: its request is bounded.
        let (bounded, what) = if of == "PersistentVolumeClaim" {
            (requests, "request")
        } else {
            (limits, "limit")
        };
        match bounded.get(k).and_then(quantity) {
            None => out.push(format!(
                "maximum {k} usage per {of} is {}.  No {what} is specified",
                shown(max)
            )),
            Some(l) if l.milli_value() > m.milli_value() => out.push(format!(
                "maximum {k} usage per {of} is {}, but {what} is {}",
                shown(max),
                shown(&bounded[k])
            )),
            Some(_) => {
                if of != "PersistentVolumeClaim"
                    && let Some(r) = requests.get(k).and_then(quantity)
                    && r.milli_value() > m.milli_value()
                {
                    out.push(format!(
                        "maximum {k} usage per {of} is {}, but request is {}",
                        shown(max),
                        shown(&requests[k])
                    ));
                }
            }
        }
    }
    for (k, ratio) in item["maxLimitRequestRatio"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let Some(most) = quantity(ratio) else {
            continue;
        };
        let (Some(l), r) = (
            limits.get(k).and_then(quantity),
            requests.get(k).and_then(quantity),
        ) else {
            continue;
        };
        match r.filter(|r| r.milli_value() > 0) {
            None => out.push(format!(
                "{k} max limit to request ratio per {of} is {}, but no request is specified or request is 0",
                shown(ratio)
            )),
            Some(r) => {
                let observed = l.milli_value() as f64 / r.milli_value() as f64;
                if observed > most.milli_value() as f64 / 1000.0 {
                    out.push(format!(
                        "{k} max limit to request ratio per {of} is {}, but provided ratio is {observed:.6}",
                        shown(ratio)
                    ));
                }
            }
        }
    }
}

/// Sums (or, with `max`, takes the largest of) resource lists.
fn combine(into: &mut Map<String, Value>, list: &Value, max: bool) {
    for (k, v) in list.as_object().into_iter().flatten() {
        let Some(q) = quantity(v) else { continue };
        let milli = q.milli_value();
        let current = into.get(k).and_then(Value::as_i64).unwrap_or(0);
        let next = if max {
            current.max(milli)
        } else {
            current + milli
        };
        into.insert(k.clone(), json!(next));
    }
}

/// A pod's total requests and limits (its containers' sum, or its largest init container),
/// as quantity strings (whole units when they are whole).
fn pod_totals(spec: &Value) -> (Value, Value) {
    let mut totals = [Map::new(), Map::new()];
    for c in spec["containers"].as_array().into_iter().flatten() {
        combine(&mut totals[0], &c["resources"]["requests"], false);
        combine(&mut totals[1], &c["resources"]["limits"], false);
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        combine(&mut totals[0], &c["resources"]["requests"], true);
        combine(&mut totals[1], &c["resources"]["limits"], true);
    }
    let as_quantities = |m: &Map<String, Value>| -> Value {
        Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let milli = v.as_i64().unwrap_or(0);
                    let q = if milli % 1000 == 0 {
                        (milli / 1000).to_string()
                    } else {
                        format!("{milli}m")
                    };
                    (k.clone(), json!(q))
                })
                .collect(),
        )
    };
    (as_quantities(&totals[0]), as_quantities(&totals[1]))
}

/// What `ranges` refuse in a pod's spec (defaults already applied).
pub fn pod_violations(spec: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for item in items(ranges, "Container") {
        for list in ["initContainers", "containers"] {
            for c in spec[list].as_array().into_iter().flatten() {
                let r = &c["resources"];
                check(item, "Container", &r["requests"], &r["limits"], &mut out);
            }
        }
    }
    let pod_items: Vec<&Value> = items(ranges, "Pod").collect();
    if !pod_items.is_empty() {
        let (requests, limits) = pod_totals(spec);
        for item in pod_items {
            check(item, "Pod", &requests, &limits, &mut out);
        }
    }
    out
}

/// What `ranges` refuse in a claim's spec.
pub fn claim_violations(spec: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for item in items(ranges, "PersistentVolumeClaim") {
        check(
            item,
            "PersistentVolumeClaim",
            &spec["resources"]["requests"],
            &Value::Null,
            &mut out,
        );
    }
    out
}

fn refused(res: &ResourceInfo, name: &str, violations: Vec<String>) -> ApiError {
    let why = if violations.len() == 1 {
        violations.into_iter().next().unwrap_or_default()
    } else {
        format!("[{}]", violations.join(", "))
    };
    ApiError::forbidden(res, name, &why)
}

/// LimitRanger for a pod about to be created: defaults, then bounds.
pub async fn admit_pod(
    api: &Api,
    res: &ResourceInfo,
    name: &str,
    pod: &mut Value,
) -> ApiResult<()> {
    let all = api.limit_ranges().get_or_load(|| load_all(api)).await?;
    let Some(ranges) = objects::namespace(pod).and_then(|ns| all.get(ns)) else {
        return Ok(());
    };
    if let Some(note) = apply_defaults(&mut pod["spec"], ranges) {
        let meta = &mut pod["metadata"];
        if !meta["annotations"].is_object() {
            meta["annotations"] = json!({});
        }
        meta["annotations"][ANNOTATION] = json!(note);
    }
    let violations = pod_violations(&pod["spec"], ranges);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(refused(res, name, violations))
    }
}

/// LimitRanger for a claim about to be created.
pub async fn admit_claim(
    api: &Api,
    res: &ResourceInfo,
    name: &str,
    claim: &Value,
) -> ApiResult<()> {
    let all = api.limit_ranges().get_or_load(|| load_all(api)).await?;
    let Some(ranges) = objects::namespace(claim).and_then(|ns| all.get(ns)) else {
        return Ok(());
    };
    let violations = claim_violations(&claim["spec"], ranges);
    if violations.is_empty() {
        Ok(())
    } else {
        Err(refused(res, name, violations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(items: Value) -> Vec<Value> {
        let mut lr = json!({"spec": {"limits": items}});
        for i in lr["spec"]["limits"].as_array_mut().unwrap() {
            default_item(i.as_object_mut().unwrap());
        }
        vec![lr]
    }

    #[test]
    fn a_container_item_defaults_from_max_then_default_then_min() {
        let r =
            range(json!([{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}}]));
        let item = &r[0]["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2"}));
        assert_eq!(
            item["defaultRequest"],
            json!({"cpu": "2", "memory": "64Mi"})
        );
    }

    #[test]
    fn containers_get_the_defaults_they_lack_and_the_annotation_says_which() {
        let r = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m", "memory": "128Mi"}}]));
        let mut spec = json!({"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "1Gi"}}},
        ]});
        let note = apply_defaults(&mut spec, &r).unwrap();
        assert_eq!(
            note,
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; cpu request for container b; cpu limit for container b"
        );
        assert_eq!(
            spec["containers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
        assert_eq!(
            spec["containers"][1]["resources"]["limits"]["memory"],
            "1Gi"
        );
        assert!(pod_violations(&spec, &r).is_empty());
        let mut untouched = json!({"containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1", "memory": "1Gi"}}}]});
        assert!(apply_defaults(&mut untouched, &r).is_none());
    }

    #[test]
    fn bounds_are_refused_in_kube_apiservers_words() {
        let r = range(
            json!([{"type": "Container", "min": {"cpu": "100m"}, "max": {"memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "2"}, "default": {}, "defaultRequest": {}}]),
        );
        let spec = json!({"containers": [{"name": "a", "resources": {
            "requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "2Gi"}}}]});
        assert_eq!(
            pod_violations(&spec, &r),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 20.000000",
            ]
        );
        let bare = json!({"containers": [{"name": "a"}]});
        assert_eq!(
            pod_violations(&bare, &r),
            [
                "minimum cpu usage per Container is 100m.  No request is specified",
                "maximum memory usage per Container is 1Gi.  No limit is specified",
            ]
        );
    }

    #[test]
    fn pod_items_bound_the_sum_and_claim_items_the_storage_request() {
        let r = range(json!([{"type": "Pod", "max": {"cpu": "1"}},
                             {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "10Gi"}}]));
        let c = |cpu: &str| json!({"name": "c", "resources": {"limits": {"cpu": cpu}, "requests": {"cpu": cpu}}});
        let fits = json!({"containers": [c("500m"), c("500m")]});
        assert!(pod_violations(&fits, &r).is_empty());
        let over = json!({"containers": [c("500m"), c("600m")]});
        assert_eq!(
            pod_violations(&over, &r),
            ["maximum cpu usage per Pod is 1, but limit is 1100m"]
        );
        let small = json!({"resources": {"requests": {"storage": "500Mi"}}});
        assert_eq!(
            claim_violations(&small, &r),
            ["minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"]
        );
        let big = json!({"resources": {"requests": {"storage": "20Gi"}}});
        assert_eq!(
            claim_violations(&big, &r),
            ["maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"]
        );
    }
}
