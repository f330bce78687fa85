//! `ControllerRevision`s: the revision history of a DaemonSet (Kubernetes'
//! `controller_history`), what `kubectl rollout history ds/X` lists and `kubectl rollout undo
//! ds/X` patches back. Each revision holds the patch that restores its pod template
//! (`{"spec": {"template": {..., "$patch": "replace"}}}`, as Kubernetes writes it), is named
//! `<owner>-<hash>`, carries the template's labels plus `controller-revision-hash`, and is
//! controlled by its owner. The current template's revision has the highest number: a
//! rollback to an old template renumbers that old revision instead of adding one.

use serde_json::{Map, Value, json};

use super::owner;
use crate::apiserver::api::{Api, DeleteOptions, ListParams, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::{self, ResourceInfo};

/// The label naming the revision a pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The `controllerrevisions` resource.
pub fn controller_revisions() -> &'static ResourceInfo {
    resources::find("apps", "v1", "controllerrevisions").expect("controllerrevisions served")
}

/// The `data` of a revision for `template`: the patch that puts it back, keys sorted as Go's
/// `json.Marshal` of a map writes them.
pub fn revision_data(template: &Value) -> Value {
    let mut t = sorted(template);
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    sorted(&json!({"spec": {"template": t}}))
}

/// The pod template a revision restores.
pub fn template_of(revision: &Value) -> Value {
    let mut t = revision["data"]["spec"]["template"].clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("$patch");
    }
    t
}

/// A revision's number.
pub fn number(revision: &Value) -> i64 {
    revision["revision"].as_i64().unwrap_or(0)
}

fn sorted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let out: Map<String, Value> = keys
                .into_iter()
                .map(|k| (k.clone(), sorted(&m[k])))
                .collect();
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// What to do with an owner's history for its current template (pure; see [`sync`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryStep {
    /// The revision at this index of the history is current and has the highest number.
    Current(usize),
    /// The revision at this index is the current template but an older number: renumber it.
    Renumber(usize, i64),
    /// No revision holds the current template: make one with this number.
    Create(i64),
}

/// Finds the current template's revision in `history`.
pub fn step(template: &Value, history: &[Value]) -> HistoryStep {
    let max = history.iter().map(number).max().unwrap_or(0);
    let current = history
        .iter()
        .enumerate()
        .filter(|(_, r)| super::rollout::templates_equal(&template_of(r), template))
        .max_by_key(|(_, r)| number(r));
    match current {
        Some((i, r)) if number(r) >= max => HistoryStep::Current(i),
        Some((i, _)) => HistoryStep::Renumber(i, max + 1),
        None => HistoryStep::Create(max + 1),
    }
}

/// The revisions of `history` to delete: the oldest beyond `limit` among those neither current
/// nor the revision of a live pod (`live_hashes`).
pub fn to_prune<'a>(
    history: &'a [Value],
    current: &str,
    live_hashes: &[&str],
    limit: usize,
) -> Vec<&'a Value> {
    let mut unused: Vec<&Value> = history
        .iter()
        .filter(|r| {
            let hash = r["metadata"]["labels"][REVISION_HASH_LABEL]
                .as_str()
                .unwrap_or("");
            objects::name(r) != current && !live_hashes.contains(&hash)
        })
        .collect();
    unused.sort_by_key(|r| number(r));
    let extra = unused.len().saturating_sub(limit);
    unused.truncate(extra);
    unused
}

/// The revisions controlled by `owner`, oldest first, adopting orphans its selector matches
/// (the history of a DaemonSet deleted with `--cascade=orphan` and made again).
pub async fn list(api: &Api, owner: &Value) -> ApiResult<Vec<Value>> {
    let (items, _, _) = api
        .list(
            controller_revisions(),
            objects::namespace(owner),
            &ListParams::default(),
        )
        .await?;
    let mut mine: Vec<Value> = owner::claim(api, controller_revisions(), owner, items)
        .await?
        .into_iter()
        .filter(|r| !objects::is_deleting(r))
        .collect();
    mine.sort_by_key(number);
    Ok(mine)
}

/// Makes sure `owner`'s current template (`spec.template`) has the newest revision, creating
/// or renumbering one; returns that revision and the whole history. `hash` names a new
/// revision; a name taken by something else is a conflict (the caller bumps
/// `status.collisionCount` and retries).
pub async fn sync(api: &Api, owner: &Value, hash: &str) -> ApiResult<(Value, Vec<Value>)> {
    let mut history = list(api, owner).await?;
    let template = &owner["spec"]["template"];
    let current = match step(template, &history) {
        HistoryStep::Current(i) => history[i].clone(),
        HistoryStep::Renumber(i, n) => {
            let mut r = history[i].clone();
            r["revision"] = json!(n);
            let name = objects::name(&r).to_string();
            let (out, _) = api
                .update(
                    controller_revisions(),
                    objects::namespace(owner),
                    &name,
                    r,
                    None,
                    &WriteOptions::default(),
                )
                .await?;
            history[i] = out.clone();
            out
        }
        HistoryStep::Create(n) => {
            let mut labels = template["metadata"]["labels"].clone();
            if !labels.is_object() {
                labels = json!({});
            }
            labels[REVISION_HASH_LABEL] = json!(hash);
            let mut meta = json!({
                "name": format!("{}-{hash}", objects::name(owner)),
                "namespace": objects::namespace(owner),
                "labels": labels,
                "ownerReferences": [owner::reference_to(owner)],
            });
            if owner["metadata"]["annotations"].is_object() {
                // Kubernetes copies the owner's annotations (kubernetes.io/change-cause is
                // what `rollout history` shows).
                meta["annotations"] = owner["metadata"]["annotations"].clone();
            }
            let r = json!({
                "apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": meta,
                "data": revision_data(template), "revision": n,
            });
            let (out, _) = api
                .create(
                    controller_revisions(),
                    objects::namespace(owner),
                    r,
                    &WriteOptions::default(),
                )
                .await?;
            history.push(out.clone());
            out
        }
    };
    Ok((current, history))
}

/// [`sync`] with the revision named by the hash of the owner's template and its
/// `status.collisionCount`. When another object has that name, the count goes up by one (so the
/// next pass hashes anew) and the conflict is returned.
pub async fn sync_hashed(
    api: &Api,
    res: &ResourceInfo,
    owner: &Value,
) -> ApiResult<(Value, Vec<Value>)> {
    let collisions = owner["status"]["collisionCount"].as_i64().unwrap_or(0);
    let hash = super::rollout::template_hash(&owner["spec"]["template"], collisions);
    match sync(api, owner, &hash).await {
        Err(e) if e.code == 409 => {
            let mut status = owner["status"].clone();
            if !status.is_object() {
                status = json!({});
            }
            status["collisionCount"] = json!(collisions + 1);
            super::replicaset::write_status(api, res, owner, status).await?;
            Err(e)
        }
        other => other,
    }
}

/// Deletes `owner`'s unused revisions beyond its `spec.revisionHistoryLimit` (default 10).
pub async fn prune(
    api: &Api,
    owner: &Value,
    history: &[Value],
    current: &str,
    live_hashes: &[&str],
) -> ApiResult<()> {
    let limit = owner["spec"]["revisionHistoryLimit"]
        .as_i64()
        .unwrap_or(10)
        .max(0) as usize;
    for r in to_prune(history, current, live_hashes, limit) {
        let opts = DeleteOptions {
            precondition_uid: Some(owner::uid(r).to_string()),
            ..Default::default()
        };
        match api
            .delete(
                controller_revisions(),
                objects::namespace(r),
                objects::name(r),
                &opts,
            )
            .await
        {
            Ok(_) => {}
            Err(e) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(name: &str, n: i64, image: &str) -> Value {
        let t = json!({"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": image}]}});
        json!({"metadata": {"name": name, "labels": {REVISION_HASH_LABEL: name}}, "revision": n, "data": revision_data(&t)})
    }

    fn template(image: &str) -> Value {
        json!({"spec": {"containers": [{"image": image, "name": "c"}]}, "metadata": {"labels": {"app": "d"}}})
    }

    #[test]
    fn revision_data_is_the_replacing_patch_kubectl_applies_with_sorted_keys() {
        let d = revision_data(&template("v1"));
        assert_eq!(
            d.to_string(),
            r#"{"spec":{"template":{"$patch":"replace","metadata":{"labels":{"app":"d"}},"spec":{"containers":[{"image":"v1","name":"c"}]}}}}"#
        );
        assert!(super::super::rollout::templates_equal(
            &template_of(&json!({ "data": d })),
            &template("v1")
        ));
    }

    #[test]
    fn the_current_template_gets_the_newest_revision() {
        let history = [rev("a", 1, "v1"), rev("b", 2, "v2")];
        assert_eq!(step(&template("v2"), &history), HistoryStep::Current(1));
        // A rollback to v1 renumbers its revision.
        assert_eq!(step(&template("v1"), &history), HistoryStep::Renumber(0, 3));
        assert_eq!(step(&template("v3"), &history), HistoryStep::Create(3));
        assert_eq!(step(&template("v1"), &[]), HistoryStep::Create(1));
    }

    #[test]
    fn pruning_keeps_the_current_the_live_and_the_newest_revisions() {
        let history = [
            rev("a", 1, "v1"),
            rev("b", 2, "v2"),
            rev("c", 3, "v3"),
            rev("d", 4, "v4"),
        ];
        let names = |v: Vec<&Value>| {
            v.iter()
                .map(|r| objects::name(r).to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(to_prune(&history, "d", &[], 1)), ["a", "b"]);
        assert_eq!(names(to_prune(&history, "d", &["a"], 1)), ["b"]);
        assert!(to_prune(&history, "d", &[], 10).is_empty());
        assert_eq!(names(to_prune(&history, "d", &[], 0)), ["a", "b", "c"]);
    }
}
