//! Removing a finalizer a controller holds, once what it waited for is done.

use serde_json::{Value, json};

use crate::apiserver::api::{Api, WriteOptions};
use crate::apiserver::error::ApiResult;
use crate::apiserver::objects;
use crate::apiserver::resources::ResourceInfo;

/// Whether `obj` carries `finalizer`.
pub fn has(obj: &Value, finalizer: &str) -> bool {
    objects::finalizers(obj).iter().any(|f| f == finalizer)
}

/// Writes `obj` without `finalizer`. An object gone (404) or changed meanwhile (409) is left
/// alone: its next watch event brings it back to the controller.
pub async fn remove(api: &Api, res: &ResourceInfo, obj: &Value, finalizer: &str) -> ApiResult<()> {
    let mut updated = obj.clone();
    let left: Vec<String> = objects::finalizers(obj)
        .into_iter()
        .filter(|f| f != finalizer)
        .collect();
    objects::meta_mut(&mut updated).insert("finalizers".into(), json!(left));
    let written = api
        .update(
            res,
            objects::namespace(obj),
            objects::name(obj),
            updated,
            None,
            &WriteOptions::default(),
        )
        .await;
    match written {
        Ok(_) => Ok(()),
        Err(e) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
