//! `ownerReferences`: who controls an object, and the references controllers write when they
//! create, adopt or release dependents.

use serde_json::{Value, json};

use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::patch::PatchType;
use crate::apiserver::resources::ResourceInfo;

/// The owner reference with `controller: true`, if any.
pub fn controller_ref(obj: &Value) -> Option<&Value> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"] == true)
}

/// Whether `obj` is controlled by the object with `uid`.
pub fn is_controlled_by(obj: &Value, uid: &str) -> bool {
    controller_ref(obj).is_some_and(|r| r["uid"] == uid)
}

/// `metadata.uid`.
pub fn uid(obj: &Value) -> &str {
    obj["metadata"]["uid"].as_str().unwrap_or("")
}

/// The controller reference a controller puts on what it creates or adopts.
pub fn reference_to(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": objects::name(owner), "uid": uid(owner),
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// Adopts an orphan: adds `owner`'s controller reference, pinned to the dependent's
/// resourceVersion so a concurrent adoption by another controller fails with a conflict.
/// Returns the dependent as written.
pub async fn adopt(
    api: &Api,
    res: &ResourceInfo,
    dependent: &Value,
    owner: &Value,
) -> ApiResult<Value> {
    let mut refs = dependent["metadata"]["ownerReferences"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    refs.push(reference_to(owner));
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": dependent["metadata"]["resourceVersion"]}});
    let (out, _) = api
        .patch(
            res,
            objects::namespace(dependent),
            objects::name(dependent),
            PatchType::Merge,
            patch.to_string().as_bytes(),
            None,
            &WriteOptions::default(),
        )
        .await?;
    Ok(out)
}

/// Removes every owner reference to one of `owner_uids` from a dependent (release,
/// orphaning, dropping references to owners that are gone), in one write that fails with a
/// conflict if the dependent changed since it was read.
pub async fn release(
    api: &Api,
    res: &ResourceInfo,
    dependent: &Value,
    owner_uids: &[&str],
) -> ApiResult<()> {
    let refs: Vec<Value> = dependent["metadata"]["ownerReferences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| !owner_uids.iter().any(|u| r["uid"] == *u))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let refs = if refs.is_empty() {
        Value::Null
    } else {
        json!(refs)
    };
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": dependent["metadata"]["resourceVersion"]}});
    api.patch(
        res,
        objects::namespace(dependent),
        objects::name(dependent),
        PatchType::Merge,
        patch.to_string().as_bytes(),
        None,
        &WriteOptions::default(),
    )
    .await?;
    Ok(())
}

/// The dependents of `owner` among `candidates` (objects of `res` in its namespace), as
/// Kubernetes' `ClaimObject` decides: its own that match its selector stay (even while
/// being deleted); its own that stopped matching are released; matching orphans are adopted
/// (unless being deleted). A release that conflicts or finds the object gone is skipped (the
/// next pass sees it again); an adoption that conflicts fails the pass, to be retried.
pub async fn claim(
    api: &Api,
    res: &ResourceInfo,
    owner: &Value,
    candidates: Vec<Value>,
) -> ApiResult<Vec<Value>> {
    let owner_uid = uid(owner);
    let sel = selector(owner);
    let mut mine = Vec::new();
    for obj in candidates {
        let matches = sel.as_ref().is_some_and(|s| s.matches_object(&obj));
        let deleting = objects::is_deleting(&obj);
        let outcome = match controller_ref(&obj) {
            Some(r) if r["uid"] == owner_uid => {
                if matches {
                    mine.push(obj);
                    continue;
                }
                if deleting {
                    continue;
                }
                release(api, res, &obj, &[owner_uid]).await
            }
            None if matches && !deleting && !objects::is_deleting(owner) => {
                match adopt(api, res, &obj, owner).await {
                    Ok(adopted) => {
                        mine.push(adopted);
                        continue;
                    }
                    // Gone: nothing to adopt. Anything else (a conflict with a concurrent
                    // write, say) fails the pass, as in Kubernetes: a controller that went on
                    // without a dependent it should own would make a second one.
                    Err(e) if e.code == 404 => continue,
                    Err(e) => return Err(e),
                }
            }
            _ => continue,
        };
        match outcome {
            Ok(()) => {}
            Err(e) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(mine)
}

/// The `ObjectReference` events about `obj` name.
pub fn object_reference(obj: &Value) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: obj["apiVersion"].as_str().map(String::from),
        kind: obj["kind"].as_str().map(String::from),
        name: Some(objects::name(obj).to_string()),
        namespace: objects::namespace(obj).map(String::from),
        uid: Some(uid(obj).to_string()),
        resource_version: obj["metadata"]["resourceVersion"]
            .as_str()
            .map(String::from),
        ..Default::default()
    }
}

/// `spec.selector` of a workload, parsed; `None` (select nothing) when absent, empty or invalid.
pub fn selector(obj: &Value) -> Option<crate::apiserver::selector::LabelSelector> {
    let sel: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(obj["spec"]["selector"].clone()).ok()?;
    crate::apiserver::selector::LabelSelector::from_k8s(&sel)
        .ok()
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controller_reference_is_the_one_marked_controller() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"kind": "Other", "uid": "a"},
            {"kind": "ReplicaSet", "uid": "b", "controller": true},
        ]}});
        assert_eq!(controller_ref(&pod).unwrap()["uid"], "b");
        assert!(is_controlled_by(&pod, "b"));
        assert!(!is_controlled_by(&pod, "a"));
        assert!(controller_ref(&json!({"metadata": {}})).is_none());
    }

    #[tokio::test]
    async fn an_adoption_that_conflicts_fails_the_pass_instead_of_dropping_the_orphan() {
        use crate::apiserver::api::ApiConfig;
        use crate::apiserver::resources;
        use crate::store::redb::{RedbStore, RedbStoreConfig};

        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(RedbStoreConfig::new(dir.path().join("s.redb"))).unwrap();
        let api = Api::new(std::sync::Arc::new(store), ApiConfig::default());
        let opts = WriteOptions::default();
        let namespaces = resources::find("", "v1", "namespaces").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        api.create(namespaces, None, ns, &opts).await.unwrap();
        let configmaps = resources::find("", "v1", "configmaps").unwrap();
        let cm = |name: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "labels": {"app": "a"}}})
        };
        let (owner, _) = api
            .create(configmaps, Some("default"), cm("owner"), &opts)
            .await
            .unwrap();
        let mut owner = owner;
        owner["spec"] = json!({"selector": {"matchLabels": {"app": "a"}}});
        let (orphan, _) = api
            .create(configmaps, Some("default"), cm("orphan"), &opts)
            .await
            .unwrap();
        // Someone else writes the orphan after the controller read it.
        let mut newer = orphan.clone();
        newer["data"] = json!({"k": "v"});
        api.update(configmaps, Some("default"), "orphan", newer, None, &opts)
            .await
            .unwrap();

        let err = claim(&api, configmaps, &owner, vec![orphan.clone()])
            .await
            .expect_err("a stale adoption must not be skipped");
        assert_eq!(err.code, 409);
        // The next pass, with what is stored now, adopts it.
        let fresh = api
            .get(configmaps, Some("default"), "orphan")
            .await
            .unwrap();
        let mine = claim(&api, configmaps, &owner, vec![fresh]).await.unwrap();
        assert_eq!(mine.len(), 1);
        assert!(is_controlled_by(&mine[0], uid(&owner)));
    }
}
