//! The generic REST logic: every verb for every kind, table-driven by [`ResourceInfo`] and the
//! per-kind strategy. The HTTP layer ([`super::http`]) and in-process controllers both call it,
//! so a controller's write takes exactly the path a `kubectl` write takes.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::store::{Entry, ListOptions, Revision, Store, StoreError, WatchStream};

use super::apply;
use super::decoded_pods::DecodedPods;
use super::ephemeral_containers;
use super::error::{ApiError, ApiResult, Cause};
use super::objects::{self, from_entry};
use super::patch::{self, PatchType};
use super::projection::Projection;
use super::recent_writes::{PendingWrite, RecentWrites};
use super::resources::{self, ResourceInfo, Subresource};
use super::selector::{FieldSelector, LabelSelector};
use super::service_ips::{Change, ServiceAddresses, ServiceLock, ServiceRanges};
use super::strategy;
use super::written::Written;

/// How strictly unknown fields are treated (`fieldValidation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown fields silently.
    Ignore,
    /// Drop them and warn (the server default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

/// Options of create, update and patch.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: do everything but store the result.
    pub dry_run: bool,
    /// `fieldValidation`.
    pub field_validation: FieldValidation,
    /// The field manager of an HTTP write (`fieldManager`, else the client's `User-Agent`
    /// product), recorded in `managedFields` of objects that have them. `None` for the
    /// control plane's own writes and for server-side apply, which records itself.
    pub field_manager: Option<String>,
    /// The client named its field manager (`fieldManager`, as kubectl does on every write).
    /// A create then records it in `managedFields` (see [`apply::record_create`]).
    pub field_manager_named: bool,
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted in the background after the owner is gone.
    Background,
    /// The owner stays (with the `foregroundDeletion` finalizer) until its dependents are gone.
    Foreground,
    /// Dependents are kept and lose their owner reference.
    Orphan,
}

/// Options of a delete (`DeleteOptions`).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `propagationPolicy`.
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub precondition_uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub precondition_resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` JSON body (fields absent are left as they are).
    pub fn merge_json(&mut self, body: &Value) -> ApiResult<()> {
        if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
            self.grace_period_seconds = Some(g);
        }
        if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
            self.propagation = Some(parse_propagation(p)?);
        } else if let Some(orphan) = body.get("orphanDependents").and_then(Value::as_bool) {
            self.propagation = Some(if orphan {
                Propagation::Orphan
            } else {
                Propagation::Background
            });
        }
        if let Some(uid) = body["preconditions"]["uid"].as_str() {
            self.precondition_uid = Some(uid.to_string());
        }
        if let Some(rv) = body["preconditions"]["resourceVersion"].as_str() {
            self.precondition_resource_version = Some(rv.to_string());
        }
        if body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|d| d == "All"))
        {
            self.dry_run = true;
        }
        Ok(())
    }
}

/// Parses a `propagationPolicy` value.
pub fn parse_propagation(p: &str) -> ApiResult<Propagation> {
    match p {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \"Background\", \"Foreground\", \"Orphan\""
        ))),
    }
}

/// Options of list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    /// `labelSelector`.
    pub label_selector: Option<LabelSelector>,
    /// `fieldSelector`.
    pub field_selector: Option<FieldSelector>,
    /// `limit` (0 = all).
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
    /// List as of this revision (`resourceVersion` with `resourceVersionMatch=Exact`) instead
    /// of the present; a continue token's own revision comes first.
    pub exact_revision: Option<Revision>,
}

impl ListParams {
    /// Whether an object passes both selectors.
    pub fn matches(&self, obj: &Value) -> bool {
        self.label_selector
            .as_ref()
            .is_none_or(|s| s.matches_object(obj))
            && self.field_selector.as_ref().is_none_or(|s| s.matches(obj))
    }

    /// The parts of an object [`ListParams::matches`] reads: matching the object decoded
    /// through it gives the same answer as matching the whole object.
    pub fn projection(&self) -> Projection {
        let mut p = Projection::new();
        if self.label_selector.is_some() {
            p.keep(&["metadata", "labels"]);
        }
        for path in self.field_selector.iter().flat_map(FieldSelector::paths) {
            p.keep(path);
        }
        p
    }

    /// Whether an object's stored JSON passes both selectors, deciding on the fields they
    /// read ([`ListParams::projection`]) without decoding the whole object.
    pub fn bytes_matcher(&self) -> impl Fn(&[u8]) -> bool + '_ {
        let projection = (!self.selects_everything()).then(|| self.projection());
        move |bytes| {
            projection
                .as_ref()
                .is_none_or(|p| p.decode(bytes).is_some_and(|o| self.matches(&o)))
        }
    }

    /// Whether every object passes (no selector at all).
    pub fn selects_everything(&self) -> bool {
        self.label_selector.is_none() && self.field_selector.is_none()
    }
}

/// The outcome of a delete: the object, and whether it is gone or still there (finalizers or
/// graceful deletion).
#[derive(Debug, Clone)]
pub struct Deleted {
    /// The object as deleted, or as it now stands with `deletionTimestamp` set.
    pub object: Value,
    /// Whether the object was removed from the store.
    pub gone: bool,
}

/// Settings of the API layer.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// The address clients reach the server at (for discovery's serverAddressByClientCIDRs).
    pub advertise_address: String,
    /// Where Services get their ClusterIPs and NodePorts.
    pub service_ranges: ServiceRanges,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_bytes: 3 * 1024 * 1024,
            advertise_address: "127.0.0.1:6443".into(),
            service_ranges: ServiceRanges::default(),
        }
    }
}

/// The API: a cheap handle over the store implementing every verb.
#[derive(Clone)]
pub struct Api {
    store: Arc<dyn Store>,
    config: Arc<ApiConfig>,
    services: Arc<ServiceAddresses>,
    recent: Arc<RecentWrites>,
    decoded: Arc<DecodedPods>,
    /// The global default PriorityClass, read again after a PriorityClass is written.
    default_class: Arc<super::priority::DefaultClass>,
    /// Every LimitRange, read again after one is written.
    limit_ranges: Arc<super::limit_range::LimitRangeCache>,
    /// The namespaces holding a ResourceQuota, read again after one is written.
    quota_namespaces: Arc<super::resource_quota::QuotaCache>,
    /// One lock per namespace for charging its quotas.
    quota_charge_locks: Arc<super::resource_quota::ChargeLocks>,
    /// Makes a name from `generateName` ([`objects::generate_name`]; tests choose their own).
    generate_name: fn(&str) -> String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").field("config", &self.config).finish()
    }
}

const NAMESPACES: &str = "namespaces";
/// Times a patch is retried when the object changed under it.
const PATCH_RETRIES: usize = 8;
/// Names tried for a create with `generateName` before a clash is reported (kube-apiserver's
/// `maxNameGenerationCreateAttempts`).
const GENERATE_NAME_ATTEMPTS: usize = 8;

fn services_resource() -> &'static ResourceInfo {
    resources::find("", "v1", "services").expect("services is served")
}

/// Frees the addresses of a Service just removed from the store.
fn forget_service(lock: Option<ServiceLock<'_>>, ns: Option<&str>, name: &str) {
    if let Some(mut lock) = lock {
        lock.get().release_owner(&service_owner(ns, name));
    }
}

/// How the Service allocations name a Service.
fn service_owner(ns: Option<&str>, name: &str) -> String {
    format!("{}/{name}", ns.unwrap_or(""))
}

fn namespaces_resource() -> &'static ResourceInfo {
    resources::find("", "v1", NAMESPACES).expect("namespaces is served")
}

impl Api {
    /// An API over a store.
    pub fn new(store: Arc<dyn Store>, config: ApiConfig) -> Self {
        let services = Arc::new(ServiceAddresses::new(config.service_ranges.clone()));
        Api {
            store,
            config: Arc::new(config),
            services,
            recent: Arc::default(),
            decoded: Arc::default(),
            default_class: Arc::default(),
            limit_ranges: Arc::default(),
            quota_namespaces: Arc::default(),
            quota_charge_locks: Arc::default(),
            generate_name: objects::generate_name,
        }
    }

    /// This API with its `generateName` names made by `generate` (tests force clashes).
    #[cfg(test)]
    pub(crate) fn with_name_generator(mut self, generate: fn(&str) -> String) -> Self {
        self.generate_name = generate;
        self
    }

    /// The pods this API has just written, for the in-process pod cache.
    pub fn recent_writes(&self) -> &RecentWrites {
        &self.recent
    }

    /// Where this API finds pods already decoded (the in-process pod cache offers its own).
    pub fn decoded_pods(&self) -> &DecodedPods {
        &self.decoded
    }

    /// The object a write starts from: as stored, decoded, or for a pod the decoded copy of
    /// that same revision when one is at hand.
    async fn get_current(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Arc<Value>> {
        let entry = self.get_entry(res, ns, name).await?;
        if is_pods(res)
            && let Some(pod) = self.decoded.get(ns.unwrap_or(""), name, entry.mod_revision)
        {
            return Ok(pod);
        }
        Ok(Arc::new(from_entry(&entry)))
    }

    /// Locks the Service address allocations, loading them from the stored Services on first use.
    async fn lock_services(&self) -> ApiResult<ServiceLock<'_>> {
        let store = self.store.clone();
        let services = services_resource();
        self.services
            .lock(|| async move {
                let listed = store
                    .list(&services.namespace_prefix(None), ListOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(listed
                    .entries
                    .iter()
                    .map(|e| {
                        let obj = from_entry(e);
                        (
                            service_owner(objects::namespace(&obj), objects::name(&obj)),
                            obj["spec"].clone(),
                        )
                    })
                    .collect())
            })
            .await
            .map_err(|e| {
                ApiError::internal(format!("cannot load the Service address allocations: {e}"))
            })
    }

    /// The allocation lock when `res` is Services (held across a removal, see [`forget_service`]).
    async fn lock_services_of(&self, res: &ResourceInfo) -> ApiResult<Option<ServiceLock<'_>>> {
        if res.kind == "Service" {
            self.lock_services().await.map(Some)
        } else {
            Ok(None)
        }
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The settings.
    pub fn config(&self) -> &ApiConfig {
        &self.config
    }

    fn check_namespace_arg(res: &ResourceInfo, ns: Option<&str>) -> ApiResult<()> {
        if res.namespaced && ns.is_none() {
            return Err(ApiError::bad_request(format!(
                "the server could not find the requested resource: {} is namespaced; a namespace is required",
                res.plural
            )));
        }
        Ok(())
    }

    /// Reads one object.
    pub async fn get(&self, res: &ResourceInfo, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        Ok(from_entry(&self.get_entry(res, ns, name).await?))
    }

    /// Reads one object's store entry (its stored bytes and revisions).
    pub async fn get_entry(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Entry> {
        Self::check_namespace_arg(res, ns)?;
        self.store
            .get(&res.key(ns, name))
            .await
            .map_err(|e| ApiError::from_store(e, res, name))?
            .ok_or_else(|| ApiError::not_found(res, name))
    }

    /// Lists objects (in one namespace, or all when `ns` is `None`), filtered and paged.
    /// Returns the items, the list's revision and the next `continue` token.
    pub async fn list(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
    ) -> ApiResult<(Vec<Value>, Revision, Option<String>)> {
        let prefix = res.namespace_prefix(ns);
        let (start_after, token_rev) = match &params.continue_token {
            Some(t) => {
                let (key, rev) = decode_continue(t)?;
                if !key.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue key is not valid for this list",
                    ));
                }
                (Some(key), Some(rev))
            }
            None => (None, None),
        };
        // A continue token reads on at its first page's revision (0: the present, for the rest
        // of a list whose revision was compacted), so the pages make one consistent list.
        let at = match token_rev {
            Some(0) => None,
            Some(rev) => Some(rev),
            None => params.exact_revision,
        };
        let listed = self
            .store
            .list(
                &prefix,
                ListOptions {
                    start_after: start_after.clone(),
                    limit: 0,
                    revision: at,
                },
            )
            .await
            .map_err(|e| match (e, start_after) {
                (StoreError::Compacted { .. }, Some(key)) => ApiError {
                    continue_token: Some(encode_continue(&key, 0)),
                    ..ApiError::expired(CONTINUE_EXPIRED)
                },
                (StoreError::Compacted { .. }, None) => ApiError::expired(LIST_EXPIRED),
                (e, _) => ApiError::internal(e.to_string()),
            })?;
        let mut items = Vec::new();
        let mut next = None;
        let mut last_key: Option<&str> = None;
        // With a selector, each object is matched on the few fields it reads, and only the
        // objects that match are decoded whole.
        let matches = params.bytes_matcher();
        for entry in &listed.entries {
            if !matches(&entry.value) {
                continue;
            }
            if params.limit > 0 && items.len() == params.limit {
                next = last_key.map(|k| encode_continue(k, listed.revision));
                break;
            }
            last_key = Some(&entry.key);
            items.push(from_entry(entry));
        }
        Ok((items, listed.revision, next))
    }

    /// Checks that a namespace exists and is not terminating before content is created in it.
    async fn admit_namespace(&self, ns: &str) -> ApiResult<()> {
        let nsres = namespaces_resource();
        match self
            .store
            .get(&nsres.key(None, ns))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
        {
            None => Err(ApiError::not_found(nsres, ns)),
            Some(e) => {
                if NamespaceView::terminating(&e.value) {
                    let mut err = ApiError::bad_request(format!(
                        "unable to create new content in namespace {ns} because it is being terminated"
                    ));
                    err.code = 403;
                    err.reason = "Forbidden";
                    Err(err)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Checks `apiVersion`/`kind` (filling them when absent) and the namespace of a body.
    pub fn check_body(res: &ResourceInfo, ns: Option<&str>, obj: &mut Value) -> ApiResult<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        let api_version = res.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => obj["apiVersion"] = json!(api_version),
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match obj.get("kind").and_then(Value::as_str) {
            None | Some("") => obj["kind"] = json!(res.kind),
            Some(k) if k == res.kind => {}
            Some(k) => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    res.kind
                )));
            }
        }
        if !obj["metadata"].is_object() && !obj["metadata"].is_null() {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let meta = objects::meta_mut(obj);
        if res.namespaced {
            let url_ns = ns.unwrap_or_default();
            match meta.get("namespace").and_then(Value::as_str) {
                None | Some("") => {
                    meta.insert("namespace".into(), json!(url_ns));
                }
                Some(body_ns) if body_ns == url_ns => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        } else {
            meta.remove("namespace");
        }
        Ok(())
    }

    /// Decodes through the typed kind, applying `fieldValidation`; returns warnings (unknown
    /// fields under `Warn`).
    fn decode(
        res: &ResourceInfo,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        let (normal, unknown) = strategy::decode(res, obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                res.kind, res.version, res.kind
            ))
        })?;
        let warnings = Self::unknown_fields(&unknown, opts)?;
        Ok((normal, warnings))
    }

    /// Applies `fieldValidation` to the paths of a body's unknown fields: an error under
    /// `Strict`, warnings for the client under `Warn`, nothing under `Ignore`.
    pub fn unknown_fields(unknown: &[String], opts: &WriteOptions) -> ApiResult<Vec<String>> {
        let warnings: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match opts.field_validation {
            FieldValidation::Strict if !warnings.is_empty() => {
                let mut err = ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    warnings.join(", ")
                ));
                err.causes = unknown
                    .iter()
                    .map(|f| Cause::unknown_field(f.clone()))
                    .collect();
                Err(err)
            }
            FieldValidation::Warn => Ok(warnings),
            _ => Ok(Vec::new()),
        }
    }

    /// [`Api::decode`] of a write's new object. A status write takes the status (and the
    /// field managers) from it and nothing else, so only those parts are decoded; what else the
    /// body holds is ignored unread, as it would be ignored once decoded.
    fn decode_write(
        res: &ResourceInfo,
        mut obj: Value,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        if sub == Some(Subresource::Status)
            && let Some(fields) = obj.as_object_mut()
        {
            fields
                .retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        }
        Self::decode(res, obj, opts)
    }

    /// Creates an object. Returns it as stored, plus warnings for the client.
    pub async fn create(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        let (written, warnings) = self.create_written(res, ns, obj, opts).await?;
        Ok((Arc::unwrap_or_clone(written.object), warnings))
    }

    /// Creates an object, as [`Api::create`], and also returns the bytes stored for it (from
    /// which the API server answers without encoding the object again).
    pub async fn create_written(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<(Written, Vec<String>)> {
        Self::check_namespace_arg(res, ns)?;
        Self::check_body(res, ns, &mut obj)?;
        let (obj, warnings) = Self::decode(res, obj, opts)?;
        self.create_decoded(res, ns, obj, warnings, opts).await
    }

    /// Creates an object the control plane built as its Kubernetes type `K` (an Event, say),
    /// as [`Api::create_written`]. Its JSON is already what decoding a client's body gives (the
    /// typed round trip of a client's object), so that step is skipped.
    pub async fn create_typed<K>(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        obj: &K,
        opts: &WriteOptions,
    ) -> ApiResult<(Written, Vec<String>)>
    where
        K: k8s_openapi::Resource + serde::Serialize,
    {
        Self::check_namespace_arg(res, ns)?;
        if K::KIND != res.kind || K::API_VERSION != res.api_version() {
            return Err(ApiError::internal(format!(
                "a {} {} written as {} {}",
                K::API_VERSION,
                K::KIND,
                res.api_version(),
                res.kind
            )));
        }
        let mut obj = serde_json::to_value(obj).map_err(|e| ApiError::internal(e.to_string()))?;
        Self::check_body(res, ns, &mut obj)?;
        self.create_decoded(res, ns, obj, Vec::new(), opts).await
    }

    /// The rest of a create once the body is decoded: server-managed metadata, defaults,
    /// validation, then the store.
    async fn create_decoded(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        mut obj: Value,
        warnings: Vec<String>,
        opts: &WriteOptions,
    ) -> ApiResult<(Written, Vec<String>)> {
        if let (true, Some(ns)) = (res.namespaced, ns) {
            self.admit_namespace(ns).await?;
        }
        let meta = objects::meta_mut(&mut obj);
        let generate = meta
            .get("generateName")
            .and_then(Value::as_str)
            .map(String::from);
        let has_name = meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name && let Some(prefix) = &generate {
            meta.insert("name".into(), json!((self.generate_name)(prefix)));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(objects::now_rfc3339()));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            meta.remove(k);
        }
        if strategy::has_generation(res) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
        strategy::apply_defaults(res, &mut obj);
        strategy::prepare_for_create(res, &mut obj);
        if is_pods(res) {
            let pod_name = objects::name(&obj).to_string();
            super::priority::admit_pod(self, &pod_name, &mut obj).await?;
            super::limit_range::admit_pod(self, res, &pod_name, &mut obj).await?;
        } else if res.kind == "PriorityClass" {
            super::priority::admit_class(self, &obj).await?;
        } else if res.kind == "PersistentVolume" {
            super::storage_class::admit_volume(&mut obj);
        } else if res.kind == "PersistentVolumeClaim" {
            super::storage_class::admit_claim(self, &mut obj).await?;
            let name = objects::name(&obj).to_string();
            super::limit_range::admit_claim(self, res, &name, &obj).await?;
        }
        if let (true, Some(manager)) = (opts.field_manager_named, &opts.field_manager) {
            let api_version = res.api_version();
            let request = manager_request(res, &api_version, manager, None);
            apply::record_create(&mut obj, &request);
        }
        strategy::generate_for_create(res, &mut obj);
        let mut name = objects::name(&obj).to_string();
        let mut causes = strategy::validate(res, &obj);
        causes.extend(strategy::validate_create(res, &obj));
        if !causes.is_empty() {
            return Err(ApiError::invalid(res, &name, causes));
        }
        // A Service's addresses are taken under the allocation lock, held until the write is
        // stored (or undone when it fails), so two creates never get the same address.
        let mut services = None;
        if res.kind == "Service" {
            let mut lock = self.lock_services().await?;
            let change = lock
                .assign(&service_owner(ns, &name), &mut obj["spec"], None)
                .map_err(|causes| ApiError::invalid(res, &name, causes))?;
            services = Some((lock, change));
        }
        // ResourceQuota admission comes last, once the object is what will be stored.
        let charge = match super::resource_quota::admit(
            self,
            res,
            ns,
            &name,
            None,
            &obj,
            opts.dry_run,
        )
        .await
        {
            Ok(charge) => charge,
            Err(e) => {
                if let Some((mut lock, change)) = services {
                    lock.get().undo(&change);
                }
                return Err(e);
            }
        };
        if opts.dry_run {
            if let Some((mut lock, change)) = services {
                lock.get().undo(&change);
            }
            return Ok((Written::unstored(obj), warnings));
        }
        // A generated name that is taken is generated again, as kube-apiserver does since
        // 1.32 (RetryGenerateName): five random characters collide often enough at scale.
        let generated = generate.filter(|_| !has_name);
        let mut attempts = 1;
        let (entry, stored, _pending) = loop {
            let stored = objects::to_bytes(&obj);
            let key = res.key(ns, &name);
            let pending = self.announce(res, &key);
            match self.store.create(key, stored.clone()).await {
                Ok(entry) => break (entry, stored, pending),
                Err(StoreError::AlreadyExists(_))
                    if attempts < GENERATE_NAME_ATTEMPTS
                        && let Some(prefix) = &generated =>
                {
                    attempts += 1;
                    name = (self.generate_name)(prefix);
                    objects::meta_mut(&mut obj).insert("name".into(), json!(name));
                    if let Some((lock, change)) = services.as_mut() {
                        // The addresses follow the Service's new name.
                        lock.get().undo(change);
                        *change = lock
                            .assign(&service_owner(ns, &name), &mut obj["spec"], None)
                            .map_err(|causes| ApiError::invalid(res, &name, causes))?;
                    }
                }
                Err(e) => {
                    if let Some((lock, change)) = services.as_mut() {
                        lock.get().undo(change);
                    }
                    if let Some(charge) = charge {
                        super::resource_quota::refund(self, charge).await;
                    }
                    return Err(ApiError::from_store(e, res, &name));
                }
            }
        };
        Ok((self.stored(res, obj, stored, &entry), warnings))
    }

    /// Replaces an object (PUT), or its status with `sub = Some(Status)`.
    pub async fn update(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        let (written, warnings) = self.update_written(res, ns, name, obj, sub, opts).await?;
        Ok((Arc::unwrap_or_clone(written.object), warnings))
    }

    /// Replaces an object, as [`Api::update`], and also returns the bytes stored for it.
    pub async fn update_written(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Written, Vec<String>)> {
        Self::check_namespace_arg(res, ns)?;
        Self::check_body(res, ns, &mut obj)?;
        match objects::name(&obj) {
            "" => {
                objects::meta_mut(&mut obj).insert("name".into(), json!(name));
            }
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        let wanted_rv = match objects::resource_version(&obj) {
            Some(Ok(rv)) => Some(rv),
            Some(Err(bad)) => {
                return Err(ApiError::invalid(
                    res,
                    name,
                    vec![Cause::invalid(
                        "metadata.resourceVersion",
                        bad,
                        "must be a number",
                    )],
                ));
            }
            None => None,
        };
        let (obj, warnings) = Self::decode_write(res, obj, sub, opts)?;
        let current = self.get_current(res, ns, name).await?;
        let current_rv = objects::resource_version(&current)
            .and_then(Result::ok)
            .unwrap_or(0);
        if wanted_rv.is_some_and(|rv| rv != current_rv) {
            return Err(ApiError::stale(res, name));
        }
        let written = self
            .write_update(res, ns, name, obj, &current, current_rv, sub, opts)
            .await?;
        Ok((written, warnings))
    }

    /// The common tail of update and patch: merges server-owned parts from `current`, validates
    /// and writes with compare-and-swap on `current_rv`.
    #[allow(clippy::too_many_arguments)]
    async fn write_update(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        incoming: Value,
        current: &Value,
        current_rv: Revision,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let mut obj = match sub {
            Some(Subresource::Status) => {
                // A status write changes status and nothing else: the current object but its
                // status (not copied, as it is replaced), with the new status moved in.
                let mut incoming = incoming;
                let mut o: Value = Value::Object(
                    current
                        .as_object()
                        .into_iter()
                        .flatten()
                        .filter(|(k, _)| k.as_str() != "status")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                );
                let status = incoming.get_mut("status").map(Value::take);
                if let Some(status) = status.filter(|s| !s.is_null()) {
                    o["status"] = status;
                }
                // A pod's QoS class was set at its creation; a status that leaves it out keeps
                // it (as kube-apiserver backfills it for kubelets that drop it).
                if is_pods(res)
                    && o["status"]["qosClass"].is_null()
                    && let Some(qos) = current["status"].get("qosClass")
                    && o["status"].is_object()
                {
                    o["status"]["qosClass"] = qos.clone();
                }
                // Server-side apply to `status` records its manager with the write.
                if let Some(mf) = incoming
                    .get_mut("metadata")
                    .and_then(|m| m.get_mut("managedFields"))
                    .map(Value::take)
                    .filter(|m| !m.is_null())
                {
                    objects::meta_mut(&mut o).insert("managedFields".into(), mf);
                }
                o
            }
            // Only the ephemeral containers change (kube-apiserver's
            // podEphemeralContainersStrategy).
            Some(Subresource::EphemeralContainers) => {
                ephemeral_containers::written(current, incoming)
            }
            _ => {
                let mut o = incoming;
                if res.has(Subresource::Status) {
                    match current.get("status") {
                        Some(s) => o["status"] = s.clone(),
                        None => {
                            o.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                o
            }
        };
        {
            let cur_meta = &current["metadata"];
            let meta = objects::meta_mut(&mut obj);
            for k in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
            ] {
                match cur_meta.get(k) {
                    Some(v) if !v.is_null() => {
                        meta.insert(k.into(), v.clone());
                    }
                    _ => {
                        meta.remove(k);
                    }
                }
            }
            meta.remove("selfLink");
            // A write that does not send managedFields keeps the recorded ones, as in
            // Kubernetes (a client replacing an object from a file does not wipe them).
            if meta.get("managedFields").is_none_or(Value::is_null)
                && let Some(mf) = cur_meta.get("managedFields").filter(|m| !m.is_null())
            {
                meta.insert("managedFields".into(), mf.clone());
            }
        }
        strategy::apply_defaults(res, &mut obj);
        if res.kind == "Secret" {
            strategy::merge_string_data(&mut obj);
        }
        if res.kind == "PriorityClass" {
            super::priority::admit_class(self, &obj).await?;
        }
        if res.kind == "Namespace" && sub.is_none() {
            // Namespace status (phase) is server-managed.
            obj["status"] = current["status"].clone();
        }
        if strategy::has_generation(res) && sub.is_none() && strategy::spec_changed(&obj, current) {
            let g = current["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            objects::meta_mut(&mut obj).insert("generation".into(), json!(g));
        }
        // A Service keeps its addresses unless the update changes them (see `create`).
        let mut services: Option<(ServiceLock<'_>, Change)> = None;
        if res.kind == "Service" && sub.is_none() {
            let mut lock = self.lock_services().await?;
            let change = lock
                .assign(
                    &service_owner(ns, name),
                    &mut obj["spec"],
                    Some(&current["spec"]),
                )
                .map_err(|causes| ApiError::invalid(res, name, causes))?;
            services = Some((lock, change));
        }
        let undo = |services: &mut Option<(ServiceLock<'_>, Change)>| {
            if let Some((lock, change)) = services.as_mut() {
                lock.get().undo(change);
            }
        };
        // A status write keeps the stored spec and metadata, which were validated when they
        // were written: as kube-apiserver's status strategies do, only the update rules
        // (immutable fields) are checked again.
        let mut causes = match sub {
            Some(Subresource::Status) => Vec::new(),
            _ => strategy::validate(res, &obj),
        };
        causes.extend(match sub {
            // The rest of the pod is the stored one; what may change is the ephemeral
            // containers, and only by additions.
            Some(Subresource::EphemeralContainers) => {
                ephemeral_containers::validate_update(&obj, current)
            }
            _ => strategy::validate_update(res, &obj, current),
        });
        if !causes.is_empty() {
            undo(&mut services);
            return Err(ApiError::invalid(res, name, causes));
        }
        if let Some(manager) = &opts.field_manager
            && obj["metadata"].get("managedFields") == current["metadata"].get("managedFields")
        {
            let api_version = res.api_version();
            let request = manager_request(res, &api_version, manager, sub);
            apply::record_update(current, &mut obj, manager, &request);
        }
        objects::set_resource_version(&mut obj, current_rv);
        if obj == *current {
            // Nothing changed: no write, no new revision, no watch event.
            undo(&mut services);
            return Ok(Written::unstored(obj));
        }
        // A Service or claim that comes to use more (a NodePort, more storage) is charged
        // the difference, as kube-apiserver's quota admission does for these kinds.
        let charge = if sub.is_none() && matches!(res.kind, "Service" | "PersistentVolumeClaim") {
            // Boxed: admission writes quota status through this same update path.
            let admitted = Box::pin(super::resource_quota::admit(
                self,
                res,
                ns,
                name,
                Some(current),
                &obj,
                opts.dry_run,
            ));
            match admitted.await {
                Ok(charge) => charge,
                Err(e) => {
                    undo(&mut services);
                    return Err(e);
                }
            }
        } else {
            None
        };
        if opts.dry_run {
            undo(&mut services);
            return Ok(Written::unstored(obj));
        }
        let key = res.key(ns, name);
        // A namespace also waits for its spec finalizers (content removal by the namespace
        // controller); a pod waits for its node to confirm the stop (a delete with grace 0,
        // which leaves deletionGracePeriodSeconds 0: Kubernetes' ShouldDeleteDuringUpdate).
        let spec_finalizers_left = res.kind == "Namespace"
            && obj["spec"]["finalizers"]
                .as_array()
                .is_some_and(|f| !f.is_empty());
        let stop_confirmed =
            res.kind != "Pod" || obj["metadata"]["deletionGracePeriodSeconds"].as_i64() == Some(0);
        if objects::is_deleting(&obj)
            && objects::finalizers(&obj).is_empty()
            && stop_confirmed
            && !spec_finalizers_left
        {
            // The last finalizer is gone: the deletion completes.
            let deleted = self.store.delete(key, Some(current_rv)).await;
            self.written(res, true);
            if let Some((lock, _)) = services.as_mut() {
                match &deleted {
                    Ok(_) => lock.get().release_owner(&service_owner(ns, name)),
                    Err(_) => undo(&mut services),
                }
            }
            let entry = deleted.map_err(|e| ApiError::from_store(e, res, name))?;
            objects::set_resource_version(&mut obj, entry.mod_revision);
            return Ok(Written::unstored(obj));
        }
        let stored = objects::to_bytes(&obj);
        let _pending = self.announce(res, &key);
        let updated = self
            .store
            .update(key, stored.clone(), Some(current_rv))
            .await;
        if let Some((lock, change)) = services.as_mut() {
            match &updated {
                Ok(_) => lock.get().commit(&service_owner(ns, name), change),
                Err(_) => lock.get().undo(change),
            }
        }
        if let (Err(_), Some(charge)) = (&updated, charge) {
            Box::pin(super::resource_quota::refund(self, charge)).await;
        }
        let entry = updated.map_err(|e| ApiError::from_store(e, res, name))?;
        Ok(self.stored(res, obj, stored, &entry))
    }

    /// What a write that stored `obj` as `bytes` in `entry` returns: the object with its new
    /// `resourceVersion`, and the bytes. A pod (created, bound, or updated: the agents' status
    /// writes are most of a pod's writes) is also handed to the pod cache decoded.
    /// Announces a pod write about to go to the store under `key` (see
    /// [`RecentWrites::pending`]); keep the guard until after [`Api::stored`].
    fn announce(&self, res: &ResourceInfo, key: &str) -> Option<PendingWrite<'_>> {
        if is_pods(res) {
            self.recent.pending(key)
        } else {
            None
        }
    }

    /// The cache of the global default PriorityClass (see [`super::priority`]).
    pub(crate) fn default_class(&self) -> &super::priority::DefaultClass {
        &self.default_class
    }

    /// The cache of LimitRanges (see [`super::limit_range`]).
    pub(crate) fn limit_ranges(&self) -> &super::limit_range::LimitRangeCache {
        &self.limit_ranges
    }

    /// The cache of the namespaces holding a ResourceQuota (see [`super::resource_quota`]).
    pub(crate) fn quota_namespaces(&self) -> &super::resource_quota::QuotaCache {
        &self.quota_namespaces
    }

    /// The locks serialising quota charges, one per namespace.
    pub(crate) fn quota_charge_locks(&self) -> &super::resource_quota::ChargeLocks {
        &self.quota_charge_locks
    }

    /// What follows every write of `res` that reached the store; `came_or_went` for a
    /// create or a removal (not an update).
    fn written(&self, res: &ResourceInfo, came_or_went: bool) {
        match res.kind {
            "PriorityClass" => self.default_class.changed(),
            "LimitRange" => self.limit_ranges.changed(),
            // Which namespaces hold a quota changes only when one comes or goes (admission
            // writes a quota's status on every charge).
            "ResourceQuota" if came_or_went => self.quota_namespaces.changed(),
            _ => {}
        }
    }

    fn stored(&self, res: &ResourceInfo, mut obj: Value, bytes: Bytes, entry: &Entry) -> Written {
        let created = entry.create_revision == entry.mod_revision;
        self.written(res, created);
        objects::set_resource_version(&mut obj, entry.mod_revision);
        let obj = Arc::new(obj);
        if is_pods(res) {
            self.recent
                .record(&entry.key, entry.mod_revision, obj.clone());
        }
        Written::stored(obj, bytes, entry.mod_revision)
    }

    /// Patches an object (or its status), retrying when it changed concurrently unless the
    /// patch itself names a `resourceVersion`.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>)> {
        let (written, warnings) = self
            .patch_written(res, ns, name, patch_type, body, sub, opts)
            .await?;
        Ok((Arc::unwrap_or_clone(written.object), warnings))
    }

    /// Patches an object, as [`Api::patch`], and also returns the bytes stored for it.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch_written(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        patch_type: PatchType,
        body: &[u8],
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Written, Vec<String>)> {
        Self::check_namespace_arg(res, ns)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get_current(res, ns, name).await?;
            let current_rv = objects::resource_version(&current)
                .and_then(Result::ok)
                .unwrap_or(0);
            let mut patched = patch::apply_patch(res.kind, &current, body, patch_type)
                .map_err(|e| patch_error(res, name, e))?;
            let pinned = match objects::resource_version(&patched) {
                Some(Ok(rv)) if rv != current_rv => return Err(ApiError::stale(res, name)),
                Some(Ok(_)) => objects::resource_version(
                    &serde_json::from_slice::<Value>(body).unwrap_or_default(),
                )
                .is_some(),
                Some(Err(_)) => return Err(ApiError::stale(res, name)),
                None => false,
            };
            if objects::name(&patched) != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    objects::name(&patched)
                )));
            }
            Self::check_body(res, ns, &mut patched)?;
            let (normal, warnings) = Self::decode_write(res, patched, sub, opts)?;
            match self
                .write_update(res, ns, name, normal, &current, current_rv, sub, opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && !pinned && attempt < PATCH_RETRIES => continue,
                other => return other.map(|o| (o, warnings)),
            }
        }
    }

    /// Server-side apply (see [`super::apply`]): applies `body`, a YAML or JSON applied
    /// configuration, for the field manager `manager`, creating the object when it does not
    /// exist. Returns the stored object, warnings, and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub async fn apply(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        body: &[u8],
        manager: &str,
        force: bool,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, Vec<String>, bool)> {
        Self::check_namespace_arg(res, ns)?;
        if manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH requests of type apply must include a fieldManager",
            ));
        }
        let applied: Value = serde_yaml::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("error decoding YAML applied configuration: {e}"))
        })?;
        if !applied.is_object() {
            return Err(ApiError::bad_request(
                "the applied configuration must be an object",
            ));
        }
        match objects::name(&applied) {
            n if n == name => {}
            "" => {
                return Err(ApiError::bad_request(
                    "metadata.name must be set in an applied configuration",
                ));
            }
            n => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let pinned_rv = match objects::resource_version(&applied) {
            Some(Ok(rv)) => Some(rv),
            Some(Err(_)) => return Err(ApiError::stale(res, name)),
            None => None,
        };
        let api_version = res.api_version();
        let request = apply::ApplyRequest {
            force,
            ..manager_request(res, &api_version, manager, sub)
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = match self.get(res, ns, name).await {
                Err(e) if e.code == 404 && sub.is_none() && pinned_rv.is_none() => None,
                other => Some(other?),
            };
            let Some(current) = current else {
                let obj = apply::apply(None, applied.clone(), &request)
                    .map_err(|e| apply_error(res, name, e))?;
                match self.create(res, ns, obj, opts).await {
                    Err(e) if e.reason == "AlreadyExists" && attempt < PATCH_RETRIES => continue,
                    other => return other.map(|(o, w)| (o, w, true)),
                }
            };
            let current_rv = objects::resource_version(&current)
                .and_then(Result::ok)
                .unwrap_or(0);
            if pinned_rv.is_some_and(|rv| rv != current_rv) {
                return Err(ApiError::stale(res, name));
            }
            let mut merged = apply::apply(Some(&current), applied.clone(), &request)
                .map_err(|e| apply_error(res, name, e))?;
            objects::set_resource_version(&mut merged, current_rv);
            Self::check_body(res, ns, &mut merged)?;
            let (normal, warnings) = Self::decode_write(res, merged, sub, opts)?;
            let opts = WriteOptions {
                field_manager: None,
                ..opts.clone()
            };
            match self
                .write_update(res, ns, name, normal, &current, current_rv, sub, &opts)
                .await
            {
                Err(e)
                    if e.reason == "Conflict"
                        && e.causes.is_empty()
                        && pinned_rv.is_none()
                        && attempt < PATCH_RETRIES =>
                {
                    continue;
                }
                other => return other.map(|w| (Arc::unwrap_or_clone(w.object), warnings, false)),
            }
        }
    }

    /// Deletes an object, honouring finalizers, graceful pod deletion, propagation policy and
    /// preconditions.
    pub async fn delete(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        Self::check_namespace_arg(res, ns)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.delete_once(res, ns, name, opts).await {
                Err(e)
                    if e.reason == "Conflict"
                        && attempt < PATCH_RETRIES
                        && opts.precondition_resource_version.is_none() =>
                {
                    continue;
                }
                other => return other,
            }
        }
    }

    async fn delete_once(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> ApiResult<Deleted> {
        let current = self.get(res, ns, name).await?;
        let rv = objects::resource_version(&current)
            .and_then(Result::ok)
            .unwrap_or(0);
        if let Some(uid) = &opts.precondition_uid {
            let actual = current["metadata"]["uid"].as_str().unwrap_or("");
            if uid != actual {
                return Err(ApiError::conflict(
                    res,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                    ),
                ));
            }
        }
        if let Some(want) = &opts.precondition_resource_version
            && *want != rv.to_string()
        {
            return Err(ApiError::conflict(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
        let key = res.key(ns, name);
        let mut obj = current.clone();
        let mut finalizers = objects::finalizers(&obj);
        match opts.propagation {
            Some(Propagation::Foreground)
                if !finalizers.iter().any(|f| f == "foregroundDeletion") =>
            {
                finalizers.push("foregroundDeletion".into())
            }
            Some(Propagation::Orphan) if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            _ => {}
        }
        // Graceful deletion: a pod running on a node is asked to stop and removed by its node.
        let graceful = if res.kind == "Pod" {
            let bound = obj["spec"]["nodeName"]
                .as_str()
                .is_some_and(|n| !n.is_empty());
            let terminal = matches!(
                obj["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
            let grace = opts
                .grace_period_seconds
                .or_else(|| obj["spec"]["terminationGracePeriodSeconds"].as_i64())
                .unwrap_or(30)
                .max(0);
            if bound && !terminal && grace > 0 {
                Some(grace)
            } else {
                None
            }
        } else {
            None
        };
        let is_namespace = res.kind == "Namespace";
        let keep = !finalizers.is_empty() || graceful.is_some() || is_namespace;
        if !keep {
            if opts.dry_run {
                return Ok(Deleted {
                    object: obj,
                    gone: true,
                });
            }
            let services = self.lock_services_of(res).await?;
            let entry = self
                .store
                .delete(key, Some(rv))
                .await
                .map_err(|e| ApiError::from_store(e, res, name))?;
            self.written(res, true);
            forget_service(services, ns, name);
            objects::set_resource_version(&mut obj, entry.mod_revision);
            return Ok(Deleted {
                object: obj,
                gone: true,
            });
        }
        let meta = objects::meta_mut(&mut obj);
        if !finalizers.is_empty() {
            meta.insert("finalizers".into(), json!(finalizers));
        }
        let already = meta.get("deletionTimestamp").is_some_and(Value::is_string);
        match graceful {
            Some(grace) => {
                let shorter = meta
                    .get("deletionGracePeriodSeconds")
                    .and_then(Value::as_i64)
                    .is_none_or(|g| grace < g);
                if !already || shorter {
                    meta.insert(
                        "deletionTimestamp".into(),
                        json!(objects::rfc3339_in(grace)),
                    );
                    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
            }
            None => {
                if !already {
                    meta.insert("deletionTimestamp".into(), json!(objects::now_rfc3339()));
                }
                // An immediate delete of an object kept by finalizers (a pod its node stopped)
                // shortens the grace to 0, so removing the last finalizer removes it.
                meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            }
        }
        if is_namespace {
            obj["status"]["phase"] = json!("Terminating");
        }
        if obj == current || opts.dry_run {
            return Ok(Deleted {
                object: obj,
                gone: false,
            });
        }
        let entry = self
            .store
            .update(key, objects::to_bytes(&obj), Some(rv))
            .await
            .map_err(|e| ApiError::from_store(e, res, name))?;
        objects::set_resource_version(&mut obj, entry.mod_revision);
        Ok(Deleted {
            object: obj,
            gone: false,
        })
    }

    /// Removes an object whose deletion is complete (a pod its node stopped, a namespace that
    /// was emptied), with compare-and-swap on its current revision.
    pub async fn finalize_removal(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        rv: Revision,
    ) -> ApiResult<Value> {
        let services = self.lock_services_of(res).await?;
        let entry = self
            .store
            .delete(res.key(ns, name), Some(rv))
            .await
            .map_err(|e| ApiError::from_store(e, res, name))?;
        self.written(res, true);
        forget_service(services, ns, name);
        Ok(from_entry(&entry))
    }

    /// Deletes every object matching the selectors; returns what was deleted.
    pub async fn delete_collection(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        params: &ListParams,
        opts: &DeleteOptions,
    ) -> ApiResult<(Vec<Value>, Revision)> {
        let (items, _, _) = self
            .list(
                res,
                ns,
                &ListParams {
                    limit: 0,
                    continue_token: None,
                    ..params.clone()
                },
            )
            .await?;
        let mut deleted = Vec::new();
        for item in items {
            let name = objects::name(&item).to_string();
            let item_ns = objects::namespace(&item).map(String::from);
            match self.delete(res, item_ns.as_deref(), &name, opts).await {
                Ok(d) => deleted.push(d.object),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, self.store.current_revision()))
    }

    /// Starts a watch of a resource (in one namespace or all) after revision `after`.
    pub fn watch(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        after: Revision,
    ) -> ApiResult<WatchStream> {
        self.store
            .watch(&res.namespace_prefix(ns), after)
            .map_err(|e| match e {
                StoreError::Compacted {
                    requested,
                    compacted,
                } => ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                )),
                other => ApiError::internal(other.to_string()),
            })
    }

    /// The `autoscaling/v1` `Scale` of a Deployment or ReplicaSet.
    pub fn scale_of(res: &ResourceInfo, obj: &Value) -> Value {
        let meta = &obj["metadata"];
        let selector = obj["spec"]["selector"].clone();
        let selector_string = serde_json::from_value::<
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
        >(selector)
        .ok()
        .and_then(|s| LabelSelector::from_k8s(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
        let _ = res;
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
                "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
            },
            "spec": {"replicas": obj["spec"]["replicas"].as_i64().unwrap_or(0)},
            "status": {"replicas": obj["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector_string},
        })
    }

    /// Writes a new `spec.replicas` through the scale subresource (update or patch of a Scale).
    pub async fn write_scale(
        &self,
        res: &ResourceInfo,
        ns: Option<&str>,
        name: &str,
        scale_change: ScaleChange<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get_current(res, ns, name).await?;
            let current_rv = objects::resource_version(&current)
                .and_then(Result::ok)
                .unwrap_or(0);
            let scale = Self::scale_of(res, &current);
            let new_scale = match &scale_change {
                ScaleChange::Replace(s) => (*s).clone(),
                ScaleChange::Patch(ty, body) => patch::apply_patch("Scale", &scale, body, *ty)
                    .map_err(|e| patch_error(res, name, e))?,
            };
            if let Some(Ok(rv)) = objects::resource_version(&new_scale)
                && rv != current_rv
            {
                return Err(ApiError::stale(res, name));
            }
            let replicas = match &new_scale["spec"]["replicas"] {
                Value::Number(n) if n.as_i64().is_some_and(|r| r >= 0 && r <= i32::MAX as i64) => {
                    n.as_i64().unwrap_or(0)
                }
                Value::Null => 0,
                other => {
                    return Err(ApiError::invalid(
                        res,
                        name,
                        vec![Cause::invalid(
                            "spec.replicas",
                            other,
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
            };
            let mut updated = Value::clone(&current);
            updated["spec"]["replicas"] = json!(replicas);
            match self
                .write_update(res, ns, name, updated, &current, current_rv, None, opts)
                .await
            {
                Err(e) if e.reason == "Conflict" && attempt < PATCH_RETRIES => continue,
                Err(e) => return Err(e),
                Ok(written) => return Ok(Self::scale_of(res, &written.object)),
            }
        }
    }

    /// Binds a pod to a node (`pods/binding`).
    pub async fn bind(&self, ns: &str, name: &str, binding: &Value) -> ApiResult<()> {
        let pods = resources::find("", "v1", "pods").expect("pods served");
        let node = binding["target"]["name"].as_str().unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::invalid(
                pods,
                name,
                vec![Cause::required("target.name")],
            ));
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let current = self.get_current(pods, Some(ns), name).await?;
            if objects::is_deleting(&current) {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            if let Some(existing) = current["spec"]["nodeName"]
                .as_str()
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::conflict(
                    pods,
                    name,
                    &format!("pod {name} is already assigned to node \"{existing}\""),
                ));
            }
            let rv = objects::resource_version(&current)
                .and_then(Result::ok)
                .unwrap_or(0);
            let mut obj = Arc::unwrap_or_clone(current);
            obj["spec"]["nodeName"] = json!(node);
            let conditions = obj["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conditions: Vec<Value> = conditions
                .into_iter()
                .filter(|c| c["type"] != "PodScheduled")
                .collect();
            conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": objects::now_rfc3339()}));
            obj["status"]["conditions"] = json!(conditions);
            let bytes = objects::to_bytes(&obj);
            let key = pods.key(Some(ns), name);
            let _pending = self.announce(pods, &key);
            match self.store.update(key, bytes.clone(), Some(rv)).await {
                Ok(entry) => {
                    self.stored(pods, obj, bytes, &entry);
                    return Ok(());
                }
                Err(StoreError::Conflict { .. }) if attempt < PATCH_RETRIES => continue,
                Err(e) => return Err(ApiError::from_store(e, pods, name)),
            }
        }
    }
}

/// Whether `res` is core/v1 pods (whose writes the pod cache takes from [`RecentWrites`]).
fn is_pods(res: &ResourceInfo) -> bool {
    res.group.is_empty() && res.kind == "Pod"
}

/// A change through the scale subresource.
#[derive(Debug)]
pub enum ScaleChange<'a> {
    /// PUT of a whole `Scale`.
    Replace(&'a Value),
    /// PATCH of the `Scale`.
    Patch(PatchType, &'a [u8]),
}

/// What `manager` writes to `res` (its subresource `sub`, if any), for the field ownership of
/// [`apply`]; `api_version` is `res.api_version()`.
fn manager_request<'a>(
    res: &'a ResourceInfo,
    api_version: &'a str,
    manager: &'a str,
    sub: Option<Subresource>,
) -> apply::ApplyRequest<'a> {
    apply::ApplyRequest {
        kind: res.kind,
        api_version,
        manager,
        force: false,
        subresource: sub.map(Subresource::name),
        has_status: res.has(Subresource::Status),
    }
}

/// A refused server-side apply as a Kubernetes `Status`: 400 for a malformed applied
/// configuration, 409 with a `FieldManagerConflict` cause per field for conflicts.
fn apply_error(res: &ResourceInfo, name: &str, e: apply::ApplyError) -> ApiError {
    match e {
        apply::ApplyError::BadRequest(msg) => ApiError::bad_request(msg),
        apply::ApplyError::Conflicts(conflicts) => {
            let message = match conflicts.as_slice() {
                [one] => format!(
                    "Apply failed with 1 conflict: {}: {}",
                    one.message(),
                    one.field
                ),
                many => {
                    let lines: Vec<String> = many
                        .iter()
                        .map(|c| format!("- {}: {}", c.message(), c.field))
                        .collect();
                    format!(
                        "Apply failed with {} conflicts:\n{}",
                        many.len(),
                        lines.join("\n")
                    )
                }
            };
            let causes = conflicts
                .into_iter()
                .map(|c| Cause {
                    reason: "FieldManagerConflict",
                    message: c.message(),
                    field: c.field,
                })
                .collect();
            ApiError::apply_conflict(res, name, message, causes)
        }
    }
}

fn patch_error(res: &ResourceInfo, name: &str, e: patch::PatchError) -> ApiError {
    let msg = e.to_string();
    if msg.contains("test") && msg.contains("fail") {
        ApiError::invalid(
            res,
            name,
            vec![Cause {
                reason: "FieldValueInvalid",
                message: msg,
                field: "patch".into(),
            }],
        )
    } else {
        ApiError::bad_request(msg)
    }
}

/// kube-apiserver's 410 for a list at a revision no longer retained.
const LIST_EXPIRED: &str = "The resourceVersion for the provided list is too old.";

/// kube-apiserver's 410 for a continue token whose revision is no longer retained; the
/// Status carries a token for the rest, read from the present.
const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or use \
    the continue token in this response to retrieve the remainder of the results. Continuing \
    with the provided token results in an inconsistent list - objects that were created, \
    modified, or deleted between the time the first chunk was returned and now may show up in \
    the list.";

fn encode_continue(key: &str, rev: Revision) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(String, Revision)> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: the provided continue parameter is not valid",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["start"].as_str().ok_or_else(bad)?.to_string(),
        v["rv"].as_u64().ok_or_else(bad)?,
    ))
}

/// The parts of a stored Namespace that admission reads, decoded without the rest.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NamespaceView {
    metadata: NamespaceMetaView,
    status: NamespaceStatusView,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct NamespaceMetaView {
    deletion_timestamp: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct NamespaceStatusView {
    phase: Option<String>,
}

impl NamespaceView {
    /// Whether a stored Namespace is being deleted (a `deletionTimestamp`, or the phase
    /// `Terminating`). Unreadable bytes count as not terminating, as a full decode would.
    fn terminating(bytes: &[u8]) -> bool {
        let ns: NamespaceView = serde_json::from_slice(bytes).unwrap_or_default();
        ns.metadata.deletion_timestamp.is_some()
            || ns.status.phase.as_deref() == Some("Terminating")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::fake_agent;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Names made so far by the generators below.
    static MADE: AtomicUsize = AtomicUsize::new(0);

    /// `PREFIXtaken` for the first three names, then `PREFIXfree`.
    fn taken_three_times(prefix: &str) -> String {
        match MADE.fetch_add(1, Ordering::SeqCst) {
            0..3 => format!("{prefix}taken"),
            _ => format!("{prefix}free"),
        }
    }

    /// Always `PREFIXtaken`.
    fn always_taken(prefix: &str) -> String {
        MADE.fetch_add(1, Ordering::SeqCst);
        format!("{prefix}taken")
    }

    /// A JSON merge patch of `default/NAME` (or of its subresource `sub`) that must succeed.
    async fn merge_patch(
        api: &Api,
        res: &ResourceInfo,
        name: &str,
        body: &[u8],
        sub: Option<Subresource>,
    ) -> Value {
        api.patch(
            res,
            Some("default"),
            name,
            PatchType::Merge,
            body,
            sub,
            &WriteOptions::default(),
        )
        .await
        .unwrap()
        .0
    }

    #[test]
    fn matching_the_projection_answers_as_matching_the_whole_object() {
        let objects = [
            json!({"kind": "Pod", "metadata": {"name": "a", "namespace": "default",
                "labels": {"app": "web", "tier": "front"}},
                "spec": {"nodeName": "n1", "hostNetwork": true, "containers": [{"name": "c"}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1"}}),
            json!({"kind": "Pod", "metadata": {"name": "b", "namespace": "kube-system",
                "labels": {"app": "db"}}, "spec": {"restartPolicy": "Never"}}),
            json!({"kind": "Pod", "metadata": {"name": "c"}, "spec": null, "status": "odd"}),
            json!({"kind": "Event", "metadata": {"name": "e"},
                "regarding": {"kind": "Pod", "name": "a"}, "reason": "Started"}),
            json!({"kind": "Event", "metadata": {"name": "f"},
                "involvedObject": {"kind": "Pod", "name": "b"}, "reason": "Killing"}),
            json!({"kind": "Node", "metadata": {"name": "n1"}, "spec": {"unschedulable": true}}),
            json!({"kind": "Node", "metadata": {"name": "n2", "labels": {"app": "web"}}}),
        ];
        let selectors = [
            ("Pod", "app=web", ""),
            ("Pod", "app!=web", ""),
            ("Pod", "app in (web,db),tier", ""),
            ("Pod", "app notin (db),!tier", ""),
            ("Pod", "", "spec.nodeName=n1"),
            ("Pod", "", "spec.nodeName="),
            ("Pod", "", "spec.nodeName!=n1,status.phase!=Running"),
            ("Pod", "", "spec.hostNetwork=false"),
            (
                "Pod",
                "",
                "spec.restartPolicy=Never,metadata.namespace=kube-system",
            ),
            ("Pod", "app=web", "metadata.name=a,status.podIP=10.0.0.1"),
            ("Event", "", "involvedObject.kind=Pod,involvedObject.name=a"),
            ("Event", "", "reason=Started"),
            ("Node", "", "spec.unschedulable=false"),
            ("Node", "app=web", "spec.unschedulable!=true"),
        ];
        for (kind, labels, fields) in selectors {
            let params = ListParams {
                label_selector: (!labels.is_empty()).then(|| LabelSelector::parse(labels).unwrap()),
                field_selector: (!fields.is_empty())
                    .then(|| FieldSelector::parse(kind, fields).unwrap()),
                ..Default::default()
            };
            let projection = params.projection();
            let (mut matched, mut seen) = (0, 0);
            for obj in objects.iter().filter(|o| o["kind"] == kind) {
                seen += 1;
                let bytes = serde_json::to_vec(obj).unwrap();
                let whole = params.matches(obj);
                let projected = projection.decode(&bytes).unwrap();
                assert_eq!(
                    params.matches(&projected),
                    whole,
                    "{labels} {fields} on {obj}"
                );
                matched += usize::from(whole);
            }
            // Every selector here matches some object and misses another, or it tests little.
            assert!(
                matched > 0 && matched < seen,
                "{labels} {fields} matches {matched} of {seen}"
            );
        }
    }

    #[tokio::test]
    async fn a_pods_qos_class_survives_status_writes_that_leave_it_out_and_cannot_change() {
        let (api, _dir) = fake_agent::api().await;
        let pods = resources::find_kind("v1", "Pod").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]}});
        let (created, _) = api
            .create(pods, Some("default"), pod, &WriteOptions::default())
            .await
            .unwrap();
        assert_eq!(created["status"]["qosClass"], "Guaranteed");
        // An agent's status (a replacement, with no qosClass) keeps the class.
        let mut whole = created.clone();
        whole["status"] = json!({"phase": "Running"});
        let (updated, _) = api
            .update(
                pods,
                Some("default"),
                "p",
                whole,
                Some(Subresource::Status),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            (
                updated["status"]["phase"].as_str(),
                updated["status"]["qosClass"].as_str()
            ),
            (Some("Running"), Some("Guaranteed"))
        );
        // Another class is refused.
        let err = api
            .patch(
                pods,
                Some("default"),
                "p",
                PatchType::Merge,
                br#"{"status": {"qosClass": "BestEffort"}}"#,
                Some(Subresource::Status),
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(
            (err.code, err.causes[0].field.as_str()),
            (422, "status.qosClass")
        );
    }

    #[tokio::test]
    async fn a_status_write_changes_only_status_and_a_main_write_leaves_status_alone() {
        let (api, _dir) = fake_agent::api().await;
        let deployments = resources::find_kind("apps/v1", "Deployment").unwrap();
        api.create(
            deployments,
            Some("default"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}}}),
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        let status = Some(Subresource::Status);
        // Spec, labels and an unknown field in the body of a status write are ignored.
        let body = json!({"metadata": {"labels": {"app": "other"}},
            "spec": {"replicas": 5, "bogus": 1}, "status": {"replicas": 1, "readyReplicas": 1}});
        let written = merge_patch(
            &api,
            deployments,
            "web",
            body.to_string().as_bytes(),
            status,
        )
        .await;
        let stored = api.get(deployments, Some("default"), "web").await.unwrap();
        assert_eq!(written, stored);
        assert_eq!(stored["spec"]["replicas"], 1);
        assert_eq!(stored["metadata"]["labels"]["app"], "web");
        assert_eq!(stored["status"]["readyReplicas"], 1);
        assert_eq!(
            stored["metadata"]["generation"], 1,
            "status writes keep the generation"
        );

        // A write to the main resource leaves status alone and bumps the generation.
        let main = merge_patch(
            &api,
            deployments,
            "web",
            br#"{"spec": {"replicas": 3}, "status": {"readyReplicas": 9}}"#,
            None,
        )
        .await;
        assert_eq!(main["spec"]["replicas"], 3);
        assert_eq!(main["status"]["readyReplicas"], 1);
        assert_eq!(main["metadata"]["generation"], 2);

        // Clearing status through the subresource removes it.
        let cleared = merge_patch(&api, deployments, "web", br#"{"status": null}"#, status).await;
        assert!(cleared.get("status").is_none(), "{cleared}");
        assert_eq!(cleared["spec"]["replicas"], 3);
    }

    #[tokio::test]
    async fn pod_writes_start_from_the_decoded_copy_only_at_its_stored_revision() {
        use std::sync::Mutex;
        let (api, _dir) = fake_agent::api().await;
        let pods = resources::find_kind("v1", "Pod").unwrap();
        let created = fake_agent::create(
            &api,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web"},
                "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}}),
        )
        .await;
        // A "cache" whose copy carries a mark the stored bytes do not: a write that started
        // from the copy keeps the mark.
        let copy: Arc<Mutex<Option<Arc<Value>>>> = Arc::default();
        let mark = |pod: &Value| {
            let mut pod = pod.clone();
            pod["metadata"]["annotations"] = json!({"copy": "cached"});
            Some(Arc::new(pod))
        };
        *copy.lock().unwrap() = mark(&created);
        let served = copy.clone();
        api.decoded_pods()
            .serve_from(Box::new(move |_, _| served.lock().unwrap().clone()));
        let status = br#"{"status":{"phase":"Running"}}"#;
        let patched = merge_patch(&api, pods, "web", status, Some(Subresource::Status)).await;
        assert_eq!(patched["status"]["phase"], "Running");
        assert_eq!(patched["metadata"]["annotations"]["copy"], "cached");

        // The copy is now a revision behind: the write decodes the stored pod instead.
        *copy.lock().unwrap() = mark(&created);
        let binding = json!({"target": {"name": "node-1"}});
        api.bind("default", "web", &binding).await.unwrap();
        let bound = api.get(pods, Some("default"), "web").await.unwrap();
        assert_eq!(bound["spec"]["nodeName"], "node-1");
        assert_eq!(bound["status"]["phase"], "Running");
        assert_eq!(
            bound["metadata"]["annotations"]["copy"], "cached",
            "the mark came with the stored pod, not from the stale copy"
        );
        *copy.lock().unwrap() = None;
        let unmark = br#"{"metadata":{"annotations":null}}"#;
        let unmarked = merge_patch(&api, pods, "web", unmark, None).await;
        assert!(unmarked["metadata"].get("annotations").is_none());
        *copy.lock().unwrap() = mark(&unmarked);
        api.bind("default", "web", &json!({"target": {"name": "node-2"}}))
            .await
            .expect_err("already bound");
        let relabel = br#"{"metadata":{"labels":{"a":"b"}}}"#;
        let relabelled = merge_patch(&api, pods, "web", relabel, None).await;
        assert_eq!(relabelled["metadata"]["labels"]["a"], "b");
        assert_eq!(relabelled["metadata"]["annotations"]["copy"], "cached");
    }

    #[tokio::test]
    async fn a_typed_create_stores_what_a_client_body_of_the_same_object_stores() {
        use k8s_openapi::api::core::v1::{Event, ObjectReference};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
        let (api, _dir) = fake_agent::api().await;
        let events = resources::find_kind("v1", "Event").unwrap();
        let event = |name: &str| Event {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..ObjectReference::default()
            },
            reason: Some("Scheduled".into()),
            message: Some("placed".into()),
            count: Some(1),
            first_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            ..Event::default()
        };
        let opts = WriteOptions::default();
        let (typed, warnings) = api
            .create_typed(events, Some("default"), &event("typed"), &opts)
            .await
            .unwrap();
        assert!(warnings.is_empty());
        let body = serde_json::to_value(event("body")).unwrap();
        let (client, _) = api
            .create_written(events, Some("default"), body, &opts)
            .await
            .unwrap();
        // Apart from what the server sets per object, the two are the same, stored and served.
        let comparable = |written: &Written| {
            let mut v: Value = serde_json::from_slice(&written.to_json()).unwrap();
            for k in ["name", "uid", "creationTimestamp", "resourceVersion"] {
                v["metadata"].as_object_mut().unwrap().remove(k);
            }
            v
        };
        assert_eq!(comparable(&typed), comparable(&client));
        let stored = api.get(events, Some("default"), "typed").await.unwrap();
        assert_eq!(stored, *typed.object);

        // The type must be the resource's.
        let pods = resources::find_kind("v1", "Pod").unwrap();
        let err = api
            .create_typed(pods, Some("default"), &event("wrong"), &opts)
            .await
            .unwrap_err();
        assert_eq!(err.code, 500);
        assert!(api.get(pods, Some("default"), "wrong").await.is_err());
    }

    #[tokio::test]
    async fn a_generated_name_that_is_taken_is_generated_again_up_to_eight_times() {
        let (api, _dir) = fake_agent::api().await;
        let pods = resources::find_kind("v1", "Pod").unwrap();
        let services = resources::find_kind("v1", "Service").unwrap();
        let pod = |meta: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"containers": [{"name": "c", "image": "hello:v1"}]}})
        };
        let service = |meta: Value| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"ports": [{"port": 80}]}})
        };
        fake_agent::create(&api, pod(json!({"name": "web-taken"}))).await;
        let svc = fake_agent::create(&api, service(json!({"name": "db-taken"}))).await;
        let taken_ip = svc["spec"]["clusterIP"].clone();
        let opts = WriteOptions::default();

        // Two clashes, then a free name: the create succeeds under it.
        MADE.store(0, Ordering::SeqCst);
        let api = api.with_name_generator(taken_three_times);
        let (made, _) = api
            .create(
                pods,
                Some("default"),
                pod(json!({"generateName": "web-"})),
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(made["metadata"]["name"], "web-free");
        assert_eq!(made["metadata"]["generateName"], "web-");

        // A Service's addresses move to its new name: the taken one keeps its address, the
        // new one gets another, and deleting the new one frees only its own.
        MADE.store(0, Ordering::SeqCst);
        let (made, _) = api
            .create(
                services,
                Some("default"),
                service(json!({"generateName": "db-"})),
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(made["metadata"]["name"], "db-free");
        assert!(made["spec"]["clusterIP"].is_string());
        assert_ne!(made["spec"]["clusterIP"], taken_ip);
        let ip = |v: &Value| v["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        let mut lock = api.lock_services().await.unwrap();
        assert_eq!(lock.get().owner_of(ip(&made)), Some("default/db-free"));
        assert_eq!(lock.get().owner_of(ip(&svc)), Some("default/db-taken"));
        drop(lock);

        // Every name taken: 409 AlreadyExists after eight names, and nothing written.
        MADE.store(0, Ordering::SeqCst);
        let api = api.with_name_generator(always_taken);
        let err = api
            .create(
                pods,
                Some("default"),
                pod(json!({"generateName": "web-"})),
                &opts,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(err.reason, "AlreadyExists");
        assert_eq!(MADE.load(Ordering::SeqCst), 8);

        // A name given by the client is never replaced.
        MADE.store(0, Ordering::SeqCst);
        let err = api
            .create(
                pods,
                Some("default"),
                pod(json!({"name": "web-taken", "generateName": "web-"})),
                &opts,
            )
            .await
            .unwrap_err();
        assert_eq!(err.reason, "AlreadyExists");
        assert_eq!(MADE.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_namespace_is_terminating_with_a_deletion_timestamp_or_the_terminating_phase() {
        let t = |s: &str| NamespaceView::terminating(s.as_bytes());
        assert!(!t(
            r#"{"metadata":{"name":"a"},"status":{"phase":"Active"}}"#
        ));
        assert!(!t(r#"{"metadata":{"name":"a","deletionTimestamp":null}}"#));
        assert!(t(
            r#"{"metadata":{"name":"a","deletionTimestamp":"2026-12-02T04:00:00Z"}}"#
        ));
        assert!(t(
            r#"{"metadata":{"name":"a"},"status":{"phase":"Terminating"}}"#
        ));
        assert!(!t("not json"));
    }
}
