//! The pods this agent's workers run right now, with their live state: what the agent's
//! metrics endpoints (`/metrics`, `/metrics/resource`) report on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{PodState, SharedState};

/// Every pod worker's entry, by pod uid; cheap to clone.
#[derive(Clone, Default)]
pub struct PodRegistry(Arc<Mutex<HashMap<String, Entry>>>);

impl std::fmt::Debug for PodRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodRegistry")
            .field("pods", &self.lock().len())
            .finish()
    }
}

struct Entry {
    namespace: String,
    name: String,
    state: Arc<SharedState>,
}

/// One pod as the registry last saw it.
#[derive(Clone, Debug)]
pub struct PodSnapshot {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// Its containers' states.
    pub state: PodState,
}

/// Keeps a pod in the registry; dropping it takes the pod out.
#[derive(Debug)]
pub struct Registration {
    registry: PodRegistry,
    uid: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.uid);
    }
}

impl PodRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the pod `uid` while the returned registration lives.
    pub fn register(
        &self,
        uid: &str,
        namespace: &str,
        name: &str,
        state: Arc<SharedState>,
    ) -> Registration {
        self.lock().insert(
            uid.to_string(),
            Entry {
                namespace: namespace.to_string(),
                name: name.to_string(),
                state,
            },
        );
        Registration {
            registry: self.clone(),
            uid: uid.to_string(),
        }
    }

    /// Every registered pod's current state, sorted by namespace and name.
    pub fn snapshot(&self) -> Vec<PodSnapshot> {
        let entries: Vec<(String, String, Arc<SharedState>)> = self
            .lock()
            .values()
            .map(|e| (e.namespace.clone(), e.name.clone(), e.state.clone()))
            .collect();
        let mut pods: Vec<PodSnapshot> = entries
            .into_iter()
            .map(|(namespace, name, state)| PodSnapshot {
                namespace,
                name,
                state: state.snapshot(),
            })
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        pods
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::state::{ContainerRecord, RestartPolicy};

    #[test]
    fn a_pod_is_listed_while_its_registration_lives() {
        let registry = PodRegistry::default();
        let state = SharedState::new(PodState::new(
            RestartPolicy::Always,
            vec![],
            vec![ContainerRecord::new("app", "hello:v1")],
            "127.0.0.1",
        ));
        let b = registry.register("uid-b", "default", "b", state.clone());
        let a = registry.register("uid-a", "default", "a", state);
        let names: Vec<String> = registry.snapshot().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["a", "b"]);
        drop(a);
        let left: Vec<String> = registry.snapshot().into_iter().map(|p| p.name).collect();
        assert_eq!(left, ["b"]);
        drop(b);
        assert!(registry.snapshot().is_empty());
    }
}
