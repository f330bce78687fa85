//! ResourceQuota admission, as kube-apiserver's ResourceQuota plugin: the last step before a
//! write reaches the store.
//!
//! A new object (and a Service or claim whose update uses more) is charged against every quota
//! of its namespace that counts it ([`quota_usage`]): the quota's `status.used` plus the
//! object's usage must stay within `status.hard` for each resource the quota restricts, or the
//! write is refused with 403 and kube-apiserver's words (`exceeded quota: q, requested:
//! pods=1, used: pods=2, limited: pods=2`). A quota on `cpu` or `memory` also makes every
//! container of a new pod state that resource (`failed quota: q: must specify limits.cpu for:
//! app`), and a quota whose usage the controller has not worked out yet refuses what it would
//! count (`status unknown for quota`).
//!
//! The charge is written to the quotas' `status.used` (compare-and-swap on their
//! resourceVersion) before the object is stored, so two writes racing for the last unit
//! cannot both get it. The namespace's charge lock is held from the charge until the object
//! is stored (a write that fails gives its charge back first), and the resource-quota
//! controller recounts a namespace under the same lock: a recount never misses an object
//! that was charged but not yet stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::Value;

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::objects;
use super::quota_usage::{self as usage, ResourceList};
use super::resources::{self, ResourceInfo, Subresource};
use crate::store::ListOptions;

/// Attempts at charging the quotas of a namespace whose status another writer (the
/// controller) changed meanwhile.
const ATTEMPTS: usize = 10;

/// The `resourcequotas` resource.
pub fn resource_quotas() -> &'static ResourceInfo {
    resources::find("", "v1", "resourcequotas").expect("resourcequotas served")
}

/// The namespaces holding a ResourceQuota, read once and kept until a quota is written.
pub type QuotaCache = super::epoch_cache::EpochCache<Arc<HashSet<String>>>;

/// One lock per namespace, held while its quotas are charged.
#[derive(Debug, Default)]
pub struct ChargeLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ChargeLocks {
    /// The lock of `namespace`.
    pub fn of(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(namespace.to_string())
            .or_default()
            .clone()
    }
}

/// What a write was charged, to give back if the write fails; it holds the namespace's
/// charge lock until it is dropped (once the write is stored) or refunded.
#[derive(Debug)]
#[must_use = "a charge is held until the write is stored, or given back if it fails"]
pub struct Charge {
    namespace: String,
    delta: ResourceList,
    quotas: Vec<String>,
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

async fn namespaces_with_quotas(api: &Api) -> ApiResult<Arc<HashSet<String>>> {
    api.quota_namespaces()
        .get_or_load(|| async {
            let listed = api
                .store()
                .list(&resource_quotas().key_prefix(), ListOptions::default())
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(Arc::new(
                listed
                    .entries
                    .iter()
                    .map(|e| {
                        let q = objects::from_entry(e);
                        objects::namespace(&q).unwrap_or_default().to_string()
                    })
                    .collect(),
            ))
        })
        .await
}

async fn quotas_in(api: &Api, ns: &str) -> ApiResult<Vec<Value>> {
    let listed = api
        .store()
        .list(
            &resource_quotas().namespace_prefix(Some(ns)),
            ListOptions::default(),
        )
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(listed.entries.iter().map(objects::from_entry).collect())
}

fn only(list: &ResourceList, names: &[String]) -> ResourceList {
    list.iter()
        .filter(|(k, _)| names.contains(k))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

/// Writes a quota's new `status.used`; `Ok(false)` when the quota changed since it was read.
async fn write_used(api: &Api, quota: &Value, used: &ResourceList) -> ApiResult<bool> {
    let mut updated = quota.clone();
    for (k, v) in usage::list_to_json(used).as_object().into_iter().flatten() {
        updated["status"]["used"][k] = v.clone();
    }
    match api
        .update(
            resource_quotas(),
            objects::namespace(quota),
            objects::name(quota),
            updated,
            Some(Subresource::Status),
            &Default::default(),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.code == 409 || e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Charges a write of `new` (replacing `old`, for an update) of `res` in namespace `ns`
/// against the namespace's quotas; with `dry_run`, only checks. Returns the charge to give
/// back with [`refund`] if the write then fails.
#[allow(clippy::too_many_arguments)]
pub async fn admit(
    api: &Api,
    res: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    old: Option<&Value>,
    new: &Value,
    dry_run: bool,
) -> ApiResult<Option<Charge>> {
    let Some(ns) = ns.filter(|_| usage::is_counted(res)) else {
        return Ok(None);
    };
    if !namespaces_with_quotas(api).await?.contains(ns) {
        return Ok(None);
    }
    let now = Utc::now();
    let mut delta = usage::usage(res, new, now);
    if let Some(old) = old {
        delta = usage::subtract_to_positive(&delta, &usage::usage(res, old, now));
    }
    delta.retain(|_, v| !v.is_zero());
    if delta.is_empty() {
        return Ok(None);
    }
    let held = api.quota_charge_locks().of(ns).lock_owned().await;
    let is_pod = res.group.is_empty() && res.kind == "Pod";
    let mut charged: Vec<String> = Vec::new();
    for _ in 0..ATTEMPTS {
        let mut quotas = quotas_in(api, ns).await?;
        quotas.retain(|q| !charged.iter().any(|c| c == objects::name(q)));
        quotas.sort_by(|a, b| objects::name(a).cmp(objects::name(b)));
        // Every quota is checked before any is charged.
        let mut writes = Vec::new();
        for q in &quotas {
            let quota_name = objects::name(q);
            let hard = usage::list_from_json(&q["status"]["hard"]);
            let restricted = usage::matching_resources(&hard, &usage::scope_selectors(q), res, new);
            if restricted.is_empty() {
                continue;
            }
            let refused = if is_pod {
                usage::pod_constraints(&restricted, new)
                    .err()
                    .map(|e| format!("failed quota: {quota_name}: {e}"))
            } else {
                None
            };
            let used = usage::list_from_json(&q["status"]["used"]);
            let unknown: Vec<&str> = restricted
                .iter()
                .filter(|r| !used.contains_key(*r))
                .map(String::as_str)
                .collect();
            let refused = refused.or_else(|| {
                (!unknown.is_empty()).then(|| {
                    format!(
                        "status unknown for quota: {quota_name}, resources: {}",
                        unknown.join(",")
                    )
                })
            });
            let mine = only(&delta, &restricted);
            let new_used = usage::add(&only(&used, &restricted), &mine);
            let exceeded: Vec<String> = mine
                .keys()
                .filter(|k| new_used.get(*k) > hard.get(*k))
                .cloned()
                .collect();
            let refused = refused.or_else(|| {
                (!exceeded.is_empty()).then(|| {
                    format!(
                        "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
                        usage::pretty(&only(&delta, &exceeded)),
                        usage::pretty(&only(&used, &exceeded)),
                        usage::pretty(&only(&hard, &exceeded)),
                    )
                })
            });
            if let Some(why) = refused {
                refund_locked(api, ns, &delta, &charged).await;
                return Err(ApiError::forbidden(res, name, &why));
            }
            if !mine.is_empty() {
                writes.push((q, new_used));
            }
        }
        if dry_run {
            return Ok(None);
        }
        let mut conflicted = false;
        for (q, new_used) in writes {
            if write_used(api, q, &new_used).await? {
                charged.push(objects::name(q).to_string());
            } else {
                conflicted = true;
            }
        }
        if !conflicted {
            if charged.is_empty() {
                return Ok(None);
            }
            return Ok(Some(Charge {
                namespace: ns.to_string(),
                delta,
                quotas: charged,
                _held: Some(held),
            }));
        }
    }
    refund_locked(api, ns, &delta, &charged).await;
    Err(ApiError::conflict(
        resource_quotas(),
        "",
        "the quotas of the namespace kept changing; please try again",
    ))
}

/// Gives a charge back once its write failed (and releases the namespace's lock).
pub async fn refund(api: &Api, charge: Charge) {
    refund_locked(api, &charge.namespace, &charge.delta, &charge.quotas).await;
}

/// Takes `delta` off the `status.used` of the `quotas` of `ns`, with the namespace's lock
/// held. A quota that cannot be written is left to the controller's next count.
async fn refund_locked(api: &Api, ns: &str, delta: &ResourceList, quotas: &[String]) {
    for name in quotas {
        for _ in 0..ATTEMPTS {
            let Ok(q) = api.get(resource_quotas(), Some(ns), name).await else {
                break;
            };
            let used = usage::list_from_json(&q["status"]["used"]);
            let mut back = only(&used, &delta.keys().cloned().collect::<Vec<_>>());
            for (k, v) in back.iter_mut() {
                let taken = delta.get(k).copied().unwrap_or_default();
                let left = usage::subtract_to_positive(
                    &ResourceList::from([(k.clone(), *v)]),
                    &ResourceList::from([(k.clone(), taken)]),
                );
                *v = left.get(k).copied().unwrap_or_default();
            }
            match write_used(api, &q, &back).await {
                Ok(true) | Err(_) => break,
                Ok(false) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::apiserver::api::WriteOptions;
    use crate::apiserver::fake_agent;

    fn pods() -> &'static ResourceInfo {
        resources::find("", "v1", "pods").unwrap()
    }

    fn pod(name: &str, cpu: Option<&str>) -> Value {
        let mut c = json!({"name": "app", "image": "app.wasm"});
        if let Some(cpu) = cpu {
            c["resources"] = json!({"requests": {"cpu": cpu}, "limits": {"cpu": cpu}});
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [c]}})
    }

    /// A quota whose status the controller has counted as `used`.
    async fn quota(api: &Api, name: &str, hard: Value, used: Value) {
        fake_agent::create(
            api,
            json!({"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name},
                "spec": {"hard": hard.clone()}}),
        )
        .await;
        let body = json!({"status": {"hard": hard, "used": used}}).to_string();
        api.patch(
            resource_quotas(),
            Some("default"),
            name,
            crate::apiserver::patch::PatchType::Merge,
            body.as_bytes(),
            Some(Subresource::Status),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    }

    async fn used(api: &Api, name: &str) -> Value {
        let q = api
            .get(resource_quotas(), Some("default"), name)
            .await
            .unwrap();
        q["status"]["used"].clone()
    }

    async fn create_pod(api: &Api, pod: Value, dry_run: bool) -> ApiResult<Value> {
        let opts = WriteOptions {
            dry_run,
            ..Default::default()
        };
        Ok(api.create(pods(), Some("default"), pod, &opts).await?.0)
    }

    #[tokio::test]
    async fn creates_are_charged_until_the_quota_is_spent_then_refused_with_kubes_words() {
        let (api, _dir) = fake_agent::api().await;
        quota(
            &api,
            "compute",
            json!({"pods": "2", "requests.cpu": "1"}),
            json!({"pods": "0", "requests.cpu": "0"}),
        )
        .await;
        create_pod(&api, pod("a", Some("400m")), false)
            .await
            .unwrap();
        assert_eq!(
            used(&api, "compute").await,
            json!({"pods": "1", "requests.cpu": "400m"})
        );
        // A dry run is checked, not charged.
        create_pod(&api, pod("dry", Some("400m")), true)
            .await
            .unwrap();
        assert_eq!(used(&api, "compute").await["pods"], "1");
        let err = create_pod(&api, pod("b", Some("700m")), false)
            .await
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=700m, \
             used: requests.cpu=400m, limited: requests.cpu=1"
        );
        let err = create_pod(&api, pod("c", None), false).await.unwrap_err();
        assert_eq!(
            err.message,
            "pods \"c\" is forbidden: failed quota: compute: must specify requests.cpu for: app"
        );
        // Nothing refused was stored or charged.
        assert_eq!(
            used(&api, "compute").await,
            json!({"pods": "1", "requests.cpu": "400m"})
        );
        assert!(api.get(pods(), Some("default"), "b").await.is_err());
        create_pod(&api, pod("d", Some("600m")), false)
            .await
            .unwrap();
        assert_eq!(
            used(&api, "compute").await,
            json!({"pods": "2", "requests.cpu": "1"})
        );
    }

    #[tokio::test]
    async fn a_write_that_fails_gives_its_charge_back() {
        let (api, _dir) = fake_agent::api().await;
        quota(&api, "count", json!({"pods": "5"}), json!({"pods": "0"})).await;
        create_pod(&api, pod("a", None), false).await.unwrap();
        let err = create_pod(&api, pod("a", None), false).await.unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(used(&api, "count").await, json!({"pods": "1"}));
    }

    #[tokio::test]
    async fn a_quota_not_yet_counted_refuses_what_it_restricts() {
        let (api, _dir) = fake_agent::api().await;
        quota(&api, "fresh", json!({"pods": "5"}), json!({})).await;
        let err = create_pod(&api, pod("a", None), false).await.unwrap_err();
        assert_eq!(
            err.message,
            "pods \"a\" is forbidden: status unknown for quota: fresh, resources: pods"
        );
    }

    #[tokio::test]
    async fn a_service_update_to_node_ports_is_charged_the_difference() {
        let (api, _dir) = fake_agent::api().await;
        quota(
            &api,
            "svc",
            json!({"services.nodeports": "1"}),
            json!({"services.nodeports": "0"}),
        )
        .await;
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}});
        let mut svc = fake_agent::create(&api, svc).await;
        svc["spec"]["type"] = json!("NodePort");
        let services = resources::find("", "v1", "services").unwrap();
        let err = api
            .update(
                services,
                Some("default"),
                "web",
                svc,
                None,
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "services \"web\" is forbidden: exceeded quota: svc, requested: \
             services.nodeports=2, used: services.nodeports=0, limited: services.nodeports=1"
        );
    }
}
