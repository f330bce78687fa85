//! An object as a write left it: the object itself and, when it was stored, the bytes the store
//! holds, so the API server can answer with them instead of encoding the object a second time.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::objects;
use crate::store::Revision;

/// The result of a write.
#[derive(Debug, Clone)]
pub struct Written {
    /// The object, with its `metadata.resourceVersion` (shared with the pod cache's hand-off,
    /// [`super::recent_writes`]).
    pub object: Arc<Value>,
    /// The stored bytes and their revision; `None` when the write stored nothing.
    stored: Option<(Bytes, Revision)>,
}

impl Written {
    /// An object stored as `bytes` at `revision`.
    pub fn stored(object: Arc<Value>, bytes: Bytes, revision: Revision) -> Written {
        Written {
            object,
            stored: Some((bytes, revision)),
        }
    }

    /// An object as a write left it without storing it: a dry run, an update that changed
    /// nothing, or the last state of an object whose deletion the write completed.
    pub fn unstored(object: Value) -> Written {
        Written {
            object: Arc::new(object),
            stored: None,
        }
    }

    /// The object's JSON as the API serves it.
    pub fn to_json(&self) -> Vec<u8> {
        match &self.stored {
            Some((bytes, rev)) => objects::served_json(bytes, *rev),
            None => serde_json::to_vec(&*self.object).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_served_json_is_the_object_whether_stored_or_a_dry_run() {
        let object = json!({"kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "5"}, "data": {"k": "v"}});
        let stored = Written::stored(Arc::new(object.clone()), objects::to_bytes(&object), 5);
        let served: Value = serde_json::from_slice(&stored.to_json()).unwrap();
        assert_eq!(served, object);
        let dry: Value =
            serde_json::from_slice(&Written::unstored(object.clone()).to_json()).unwrap();
        assert_eq!(dry, object);
    }
}
