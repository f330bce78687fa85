//! Pods already decoded in this process (by the in-process pod cache), for the API's writes that
//! start from the stored object: a binding, a patch, an update. Reading the current pod from
//! there spares decoding its stored bytes again, the largest cost of a pod's status patch and
//! binding after the write itself. A copy is used only at the stored revision; anything else
//! (no cache, a cache behind the store) decodes as before.

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::objects;
use crate::store::Revision;

/// Finds a decoded pod by namespace and name.
pub type PodLookup = dyn Fn(&str, &str) -> Option<Arc<Value>> + Send + Sync;

/// Where the API finds decoded pods, once a cache offers them.
#[derive(Default)]
pub struct DecodedPods {
    lookup: OnceLock<Box<PodLookup>>,
}

impl std::fmt::Debug for DecodedPods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedPods")
            .field("served", &self.lookup.get().is_some())
            .finish()
    }
}

impl DecodedPods {
    /// Serves decoded pods from `lookup` (the first caller wins; later ones are ignored).
    pub fn serve_from(&self, lookup: Box<PodLookup>) {
        let _ = self.lookup.set(lookup);
    }

    /// The pod `ns`/`name` as stored at `revision`, if a copy of exactly that revision is at hand.
    pub fn get(&self, ns: &str, name: &str, revision: Revision) -> Option<Arc<Value>> {
        let pod = (self.lookup.get()?)(ns, name)?;
        (objects::resource_version(&pod) == Some(Ok(revision))).then_some(pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_copy_is_given_only_at_the_revision_asked_for() {
        let decoded = DecodedPods::default();
        assert_eq!(decoded.get("default", "web", 7), None, "nothing served yet");
        let pod = Arc::new(json!({"metadata": {"name": "web", "resourceVersion": "7"}}));
        decoded.serve_from(Box::new(move |ns, name| {
            (ns == "default" && name == "web").then(|| pod.clone())
        }));
        assert!(decoded.get("default", "web", 7).is_some());
        assert_eq!(decoded.get("default", "web", 8), None, "the copy is behind");
        assert_eq!(decoded.get("other", "web", 7), None);
    }
}
