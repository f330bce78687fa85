//! Pod priority, as kube-apiserver's Priority admission plugin sets it: a new pod's
//! `spec.priority` (and `preemptionPolicy`) comes from the PriorityClass it names in
//! `priorityClassName`, or from the class marked `globalDefault` (whose name it then gets),
//! or is 0. A pod naming a class that does not exist, or giving a priority of its own that
//! differs, is refused with 403 Forbidden. At most one class may be the global default.
//!
//! The scheduler takes pods in priority order (see `scheduler::queue`); it does not preempt.

use serde_json::{Value, json};

use super::api::Api;
use super::error::{ApiError, ApiResult};
use super::objects;
use super::resources::{self, ResourceInfo};

/// The built-in classes every cluster has: name, value, description.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    (
        "system-node-critical",
        2_000_001_000,
        "Used for system critical pods that must not be moved from their current node.",
    ),
    (
        "system-cluster-critical",
        2_000_000_000,
        "Used for system critical pods that must run in the cluster, but can be moved to another \
         node if necessary.",
    ),
];

/// The highest value a class users create may have (`HighestUserDefinablePriority`).
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

/// The PriorityClass resource.
pub fn classes() -> &'static ResourceInfo {
    resources::find("scheduling.k8s.io", "v1", "priorityclasses").expect("priority classes")
}

fn pods() -> &'static ResourceInfo {
    resources::find("", "v1", "pods").expect("pods are served")
}

/// The classes marked `globalDefault` (only those are decoded).
async fn global_defaults(api: &Api) -> ApiResult<Vec<Value>> {
    let entries = api
        .store()
        .list(&classes().key_prefix(), Default::default())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(entries
        .entries
        .iter()
        .filter(|e| memchr::memmem::find(&e.value, b"\"globalDefault\":true").is_some())
        .map(objects::from_entry)
        .filter(|c| c["globalDefault"] == true)
        .collect())
}

/// The global default class, read once and kept until a PriorityClass is written: a pod
/// created without a class costs one lock, not a read of every class.
pub type DefaultClass = super::epoch_cache::EpochCache<Option<Value>>;

/// The lowest of the global defaults, should there be several.
async fn default_class(api: &Api) -> ApiResult<Option<Value>> {
    Ok(global_defaults(api)
        .await?
        .into_iter()
        .min_by_key(|c| c["value"].as_i64().unwrap_or(0)))
}

/// Sets the priority of pod `name`, about to be created, from its class.
pub async fn admit_pod(api: &Api, name: &str, pod: &mut Value) -> ApiResult<()> {
    let spec = &pod["spec"];
    let named = spec["priorityClassName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(String::from);
    let class = match &named {
        Some(class) => match api.get(classes(), None, class).await {
            Ok(c) => Some(c),
            Err(e) if e.code == 404 => {
                return Err(ApiError::forbidden(
                    pods(),
                    name,
                    &format!("no PriorityClass with name {class} was found"),
                ));
            }
            Err(e) => return Err(e),
        },
        None => {
            api.default_class()
                .get_or_load(|| default_class(api))
                .await?
        }
    };
    let value = class
        .as_ref()
        .map_or(0, |c| c["value"].as_i64().unwrap_or(0));
    let policy = class
        .as_ref()
        .and_then(|c| c["preemptionPolicy"].as_str())
        .unwrap_or("PreemptLowerPriority")
        .to_string();
    if let Some(given) = spec["priority"].as_i64()
        && given != value
    {
        return Err(ApiError::forbidden(
            pods(),
            name,
            &format!(
                "the integer value of priority ({given}) must not be provided in pod spec; \
                 priority admission controller computed {value} from the given PriorityClass \
                 name"
            ),
        ));
    }
    if let Some(given) = spec["preemptionPolicy"].as_str()
        && given != policy
    {
        return Err(ApiError::forbidden(
            pods(),
            name,
            &format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod \
                 spec; priority admission controller computed {policy} from the given \
                 PriorityClass name"
            ),
        ));
    }
    let spec = &mut pod["spec"];
    spec["priority"] = json!(value);
    spec["preemptionPolicy"] = json!(policy);
    if named.is_none()
        && let Some(c) = &class
    {
        spec["priorityClassName"] = json!(objects::name(c));
    }
    Ok(())
}

/// Refuses a class marked `globalDefault` while another one is.
pub async fn admit_class(api: &Api, class: &Value) -> ApiResult<()> {
    if class["globalDefault"] != true {
        return Ok(());
    }
    let name = objects::name(class);
    if let Some(other) = global_defaults(api)
        .await?
        .iter()
        .find(|c| objects::name(c) != name)
    {
        return Err(ApiError::forbidden(
            classes(),
            name,
            &format!(
                "PriorityClass {} is already marked as default. Only one default can exist",
                objects::name(other)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::api::{ApiConfig, WriteOptions};
    use crate::server::bootstrap;
    use crate::store::{RedbStore, RedbStoreConfig};
    use std::sync::Arc;

    async fn api() -> (tempfile::TempDir, Api) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let api = Api::new(Arc::new(store), ApiConfig::default());
        bootstrap(&api).await.unwrap();
        (dir, api)
    }

    async fn create_pod(api: &Api, name: &str, spec: Value) -> ApiResult<Value> {
        let mut spec = spec;
        spec["containers"] = json!([{"name": "c", "image": "i"}]);
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name}, "spec": spec});
        let (created, _) = api
            .create(pods(), Some("default"), pod, &WriteOptions::default())
            .await?;
        Ok(created)
    }

    async fn create_class(api: &Api, name: &str, value: i64, default: bool) -> ApiResult<()> {
        let class = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "globalDefault": default});
        api.create(classes(), None, class, &WriteOptions::default())
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_pods_priority_comes_from_its_class_or_the_global_default() {
        let (_dir, api) = api().await;
        let critical = create_pod(
            &api,
            "a",
            json!({"priorityClassName": "system-cluster-critical"}),
        )
        .await
        .unwrap();
        assert_eq!(critical["spec"]["priority"], 2_000_000_000);
        assert_eq!(critical["spec"]["preemptionPolicy"], "PreemptLowerPriority");
        let plain = create_pod(&api, "b", json!({})).await.unwrap();
        assert_eq!(plain["spec"]["priority"], 0);
        assert!(plain["spec"]["priorityClassName"].is_null());

        create_class(&api, "batch", 100, true).await.unwrap();
        let defaulted = create_pod(&api, "c", json!({})).await.unwrap();
        assert_eq!(defaulted["spec"]["priority"], 100);
        assert_eq!(defaulted["spec"]["priorityClassName"], "batch");
        // One global default only.
        let err = create_class(&api, "other", 5, true).await.unwrap_err();
        assert_eq!((err.code, err.reason), (403, "Forbidden"));
        assert!(
            err.message
                .contains("PriorityClass batch is already marked as default")
        );

        let err = create_pod(&api, "d", json!({"priorityClassName": "nope"}))
            .await
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "pods \"d\" is forbidden: no PriorityClass with name nope was found"
        );
        let err = create_pod(
            &api,
            "e",
            json!({"priorityClassName": "batch", "priority": 7}),
        )
        .await
        .unwrap_err();
        assert!(
            err.message
                .contains("the integer value of priority (7) must not be provided")
        );
        // Nothing was stored for the refused pods.
        assert!(api.get(pods(), Some("default"), "d").await.is_err());
    }

    #[tokio::test]
    async fn system_names_are_reserved_user_values_bounded_and_values_fixed() {
        let (_dir, api) = api().await;
        let err = create_class(&api, "system-mine", 1, false)
            .await
            .unwrap_err();
        assert_eq!(err.code, 422, "{err}");
        let err = create_class(&api, "huge", HIGHEST_USER_DEFINABLE + 1, false)
            .await
            .unwrap_err();
        assert!(err.message.contains("maximum allowed value"), "{err}");
        create_class(&api, "low", 10, false).await.unwrap();
        let mut changed = api.get(classes(), None, "low").await.unwrap();
        changed["value"] = json!(20);
        let err = api
            .update(
                classes(),
                None,
                "low",
                changed,
                None,
                &WriteOptions::default(),
            )
            .await
            .unwrap_err();
        assert!(
            err.message.contains("value: Forbidden: may not be changed"),
            "{err}"
        );
    }
}
