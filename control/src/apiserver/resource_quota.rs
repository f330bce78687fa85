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
//! cannot both get it. As kube-apiserver's quota evaluator does, the charges waiting in a
//! namespace are made together: one writer checks the whole batch in order and writes each
//! quota once, so concurrent creates share a quota write as they share the store's commits.
//! A charge holds the namespace's gate (shared) until its object is stored (a write that
//! fails gives its charge back first), and the resource-quota controller recounts a namespace
//! holding the gate alone: a recount never misses an object charged but not yet stored.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde_json::Value;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock, oneshot};

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::objects;
use super::quota_usage::{self as usage, ResourceList, ScopeSelector};
use super::resources::{self, ResourceInfo, Subresource};
use crate::store::ListOptions;

/// Attempts at charging the quotas of a namespace whose status another writer changed
/// meanwhile.
const ATTEMPTS: usize = 10;

/// The `resourcequotas` resource.
pub fn resource_quotas() -> &'static ResourceInfo {
    resources::find("", "v1", "resourcequotas").expect("resourcequotas served")
}

/// The namespaces holding a ResourceQuota, read once and kept until a quota is created or
/// removed.
pub type QuotaCache = super::epoch_cache::EpochCache<Arc<HashSet<String>>>;

/// A write waiting to be charged.
struct Request {
    res: ResourceInfo,
    name: String,
    object: Value,
    delta: ResourceList,
    reply: oneshot::Sender<ApiResult<Vec<String>>>,
}

/// The charging of one namespace.
#[derive(Default)]
struct Charging {
    /// Shared by every charge from its check until its object is stored; taken alone by a
    /// recount.
    gate: Arc<RwLock<()>>,
    /// Writes waiting for the next batch.
    waiting: Mutex<Vec<Request>>,
    /// Held by the writer charging a batch.
    batch: tokio::sync::Mutex<()>,
}

/// The charging state of every namespace that has had a quota.
#[derive(Default)]
pub struct ChargeLocks(Mutex<HashMap<String, Arc<Charging>>>);

impl std::fmt::Debug for ChargeLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChargeLocks").finish_non_exhaustive()
    }
}

impl ChargeLocks {
    fn of(&self, namespace: &str) -> Arc<Charging> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(namespace.to_string())
            .or_default()
            .clone()
    }

    /// Waits until no charge in `namespace` is waiting for its object to be stored, and
    /// holds new charges back until the guard is dropped: what a recount holds.
    pub async fn recount(&self, namespace: &str) -> OwnedRwLockWriteGuard<()> {
        self.of(namespace).gate.clone().write_owned().await
    }
}

/// What a write was charged, to give back if the write fails; it holds the namespace's gate
/// until it is dropped (once the write is stored) or refunded.
#[derive(Debug)]
#[must_use = "a charge is held until the write is stored, or given back if it fails"]
pub struct Charge {
    namespace: String,
    delta: ResourceList,
    quotas: Vec<String>,
    _held: OwnedRwLockReadGuard<()>,
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
    let mut quotas: Vec<Value> = listed.entries.iter().map(objects::from_entry).collect();
    quotas.sort_by(|a, b| objects::name(a).cmp(objects::name(b)));
    Ok(quotas)
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

/// A quota as a batch checks it: its name, hard amounts and scopes, and its usage so far.
struct Counted {
    quota: Value,
    hard: ResourceList,
    scopes: Vec<ScopeSelector>,
    used: ResourceList,
}

impl Counted {
    fn new(quota: Value) -> Counted {
        Counted {
            hard: usage::list_from_json(&quota["status"]["hard"]),
            scopes: usage::scope_selectors(&quota),
            used: usage::list_from_json(&quota["status"]["used"]),
            quota,
        }
    }

    fn name(&self) -> &str {
        objects::name(&self.quota)
    }

    /// The quota's usage with a write of `object` added (`None` if the quota does not count
    /// it), or why the write is refused (kube-apiserver's words).
    fn check(
        &self,
        res: &ResourceInfo,
        object: &Value,
        delta: &ResourceList,
    ) -> Result<Option<ResourceList>, String> {
        let name = self.name();
        let restricted = usage::matching_resources(&self.hard, &self.scopes, res, object);
        if restricted.is_empty() {
            return Ok(None);
        }
        if res.group.is_empty() && res.kind == "Pod" {
            usage::pod_constraints(&restricted, object)
                .map_err(|e| format!("failed quota: {name}: {e}"))?;
        }
        let unknown: Vec<&str> = restricted
            .iter()
            .filter(|r| !self.used.contains_key(*r))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "status unknown for quota: {name}, resources: {}",
                unknown.join(",")
            ));
        }
        let mine = only(delta, &restricted);
        if mine.is_empty() {
            return Ok(None);
        }
        let new_used = usage::add(&only(&self.used, &restricted), &mine);
        let exceeded: Vec<String> = mine
            .keys()
            .filter(|k| new_used.get(*k) > self.hard.get(*k))
            .cloned()
            .collect();
        if !exceeded.is_empty() {
            return Err(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                usage::pretty(&only(delta, &exceeded)),
                usage::pretty(&only(&self.used, &exceeded)),
                usage::pretty(&only(&self.hard, &exceeded)),
            ));
        }
        Ok(Some(new_used))
    }
}

/// Checks one write against every quota (`None`: fits), with `quotas` counting it if so;
/// returns which quotas it was charged to, by index.
fn charge_one(
    quotas: &mut [Counted],
    res: &ResourceInfo,
    object: &Value,
    delta: &ResourceList,
) -> Result<Vec<usize>, String> {
    let mut tentative = Vec::new();
    for (i, q) in quotas.iter().enumerate() {
        if let Some(new_used) = q.check(res, object, delta)? {
            tentative.push((i, new_used));
        }
    }
    let charged = tentative.iter().map(|(i, _)| *i).collect();
    for (i, new_used) in tentative {
        quotas[i].used.extend(new_used);
    }
    Ok(charged)
}

/// Charges a batch of writes of one namespace, in order, and answers each: the quotas it was
/// charged to, or why it is refused. Each quota is written once per attempt.
async fn charge_batch(api: &Api, ns: &str, batch: Vec<Request>) {
    let n = batch.len();
    let mut refused: Vec<Option<ApiError>> = vec![None; n];
    let mut charged: Vec<Vec<String>> = vec![Vec::new(); n];
    let mut done: HashSet<String> = HashSet::new();
    let mut failure: Option<ApiError> = None;
    let mut settled = false;
    for _ in 0..ATTEMPTS {
        let mut quotas: Vec<Counted> = match quotas_in(api, ns).await {
            Ok(q) => q
                .into_iter()
                .filter(|q| !done.contains(objects::name(q)))
                .map(Counted::new)
                .collect(),
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        let mut takers: Vec<Vec<usize>> = vec![Vec::new(); quotas.len()];
        for (i, r) in batch.iter().enumerate() {
            if refused[i].is_some() {
                continue;
            }
            match charge_one(&mut quotas, &r.res, &r.object, &r.delta) {
                Ok(on) => on.into_iter().for_each(|q| takers[q].push(i)),
                Err(why) => refused[i] = Some(ApiError::forbidden(&r.res, &r.name, &why)),
            }
        }
        let mut conflicted = false;
        for (q, takers) in quotas.iter().zip(&takers) {
            if takers.is_empty() {
                continue;
            }
            match write_used(api, &q.quota, &q.used).await {
                Ok(true) => {
                    done.insert(q.name().to_string());
                    for &i in takers {
                        charged[i].push(q.name().to_string());
                    }
                }
                Ok(false) => conflicted = true,
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if !conflicted || failure.is_some() {
            settled = true;
            break;
        }
        // Another writer changed a quota: the batch is checked again against the quotas
        // not yet charged.
    }
    if !settled && failure.is_none() {
        failure = Some(ApiError::conflict(
            resource_quotas(),
            "",
            "the quotas of the namespace kept changing; please try again",
        ));
    }
    for ((r, refused), charged) in batch.into_iter().zip(refused).zip(charged) {
        let answer = match refused.or_else(|| failure.clone()) {
            Some(e) => {
                refund_locked(api, ns, &r.delta, &charged).await;
                Err(e)
            }
            None => Ok(charged),
        };
        let _ = r.reply.send(answer);
    }
}

/// Charges a write of `new` (replacing `old`, for an update) of `res` in namespace `ns`
/// against the namespace's quotas; with `dry_run`, only checks. Returns the charge to give
/// back with [`refund`] if the write then fails, and to drop once it is stored.
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
    let charging = api.quota_charge_locks().of(ns);
    let held = charging.gate.clone().read_owned().await;
    if dry_run {
        let mut quotas: Vec<Counted> = quotas_in(api, ns)
            .await?
            .into_iter()
            .map(Counted::new)
            .collect();
        charge_one(&mut quotas, res, new, &delta)
            .map_err(|why| ApiError::forbidden(res, name, &why))?;
        return Ok(None);
    }
    let (reply, answer) = oneshot::channel();
    charging
        .waiting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Request {
            res: *res,
            name: name.to_string(),
            object: new.clone(),
            delta: delta.clone(),
            reply,
        });
    {
        // Whoever holds this charges every write waiting, this one included unless an
        // earlier batch took it; either way it is answered before the lock is let go.
        let _batch = charging.batch.lock().await;
        let batch =
            std::mem::take(&mut *charging.waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if !batch.is_empty() {
            charge_batch(api, ns, batch).await;
        }
    }
    let quotas = answer
        .await
        .map_err(|_| ApiError::internal("a quota charge was dropped unanswered"))??;
    if quotas.is_empty() {
        return Ok(None);
    }
    Ok(Some(Charge {
        namespace: ns.to_string(),
        delta,
        quotas,
        _held: held,
    }))
}

/// Gives a charge back once its write failed (and lets the namespace's gate go).
pub async fn refund(api: &Api, charge: Charge) {
    let charging = api.quota_charge_locks().of(&charge.namespace);
    let _batch = charging.batch.lock().await;
    refund_locked(api, &charge.namespace, &charge.delta, &charge.quotas).await;
}

/// Takes `delta` off the `status.used` of the `quotas` of `ns`, with the namespace's batch
/// lock held. A quota that cannot be written is left to the controller's next count.
async fn refund_locked(api: &Api, ns: &str, delta: &ResourceList, quotas: &[String]) {
    for name in quotas {
        for _ in 0..ATTEMPTS {
            let Ok(q) = api.get(resource_quotas(), Some(ns), name).await else {
                break;
            };
            let used = usage::list_from_json(&q["status"]["used"]);
            let back: ResourceList = used
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.minus(*delta.get(k)?))))
                .collect();
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_creates_share_batches_and_never_overrun_the_quota() {
        let (api, _dir) = fake_agent::api().await;
        quota(&api, "count", json!({"pods": "7"}), json!({"pods": "0"})).await;
        let mut creates = tokio::task::JoinSet::new();
        for i in 0..24 {
            let api = api.clone();
            creates
                .spawn(async move { create_pod(&api, pod(&format!("p{i}"), None), false).await });
        }
        let (mut made, mut refused) = (0, 0);
        while let Some(result) = creates.join_next().await {
            match result.unwrap() {
                Ok(_) => made += 1,
                Err(e) => {
                    assert_eq!(e.code, 403, "{e:?}");
                    assert!(e.message.contains("exceeded quota: count"), "{e:?}");
                    refused += 1;
                }
            }
        }
        assert_eq!((made, refused), (7, 17));
        assert_eq!(used(&api, "count").await, json!({"pods": "7"}));
        let (stored, _, _) = api
            .list(pods(), Some("default"), &Default::default())
            .await
            .unwrap();
        assert_eq!(stored.len(), 7);
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
