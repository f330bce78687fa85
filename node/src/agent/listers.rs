//! Caches of the cluster objects that every pod start reads — Services (for the Service
//! environment variables) and RuntimeClasses (for the runtime handler) — kept current by
//! watches, as kubelet's listers are, so starting a pod costs the API server no list and no get.
//! Until a cache has synced, and for a RuntimeClass it does not hold yet, callers ask the API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One watched cache and whether its first list has arrived.
#[derive(Clone)]
struct Cache<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    synced: Arc<AtomicBool>,
}

impl<K> Cache<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    fn start(api: Api<K>, tasks: &TaskTracker, shutdown: CancellationToken) -> Cache<K> {
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let stream = reflector::reflector(
            writer,
            watcher::watcher(api, watcher::Config::default()).default_backoff(),
        );
        tasks.spawn({
            let shutdown = shutdown.clone();
            async move {
                futures::pin_mut!(stream);
                loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Err(e)) => tracing::debug!(error = %e, "lister watch failed; retrying"),
                            Some(Ok(_)) => {}
                            None => return,
                        },
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        });
        tasks.spawn({
            let (store, synced) = (store.clone(), synced.clone());
            async move {
                tokio::select! {
                    ready = store.wait_until_ready() => if ready.is_ok() {
                        synced.store(true, Ordering::Release);
                    },
                    _ = shutdown.cancelled() => {}
                }
            }
        });
        Cache { store, synced }
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}

/// The agent's listers.
#[derive(Clone)]
pub struct Listers {
    services: Cache<Service>,
    runtime_classes: Cache<RuntimeClass>,
}

impl std::fmt::Debug for Listers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listers")
            .field("services_synced", &self.services.synced())
            .field("runtime_classes_synced", &self.runtime_classes.synced())
            .finish()
    }
}

impl Listers {
    /// Starts the watches on `tasks`; they end with `shutdown`.
    pub fn start(
        client: &kube::Client,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Listers {
        Listers {
            services: Cache::start(Api::all(client.clone()), tasks, shutdown.child_token()),
            runtime_classes: Cache::start(Api::all(client.clone()), tasks, shutdown.child_token()),
        }
    }

    /// The Services of `namespace`, or `None` before the cache has synced.
    pub fn services(&self, namespace: &str) -> Option<Vec<Service>> {
        if !self.services.synced() {
            return None;
        }
        Some(
            self.services
                .store
                .state()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(namespace))
                .map(|s| Service::clone(s))
                .collect(),
        )
    }

    /// The RuntimeClass `name` if the cache holds it (a class created a moment ago may not be
    /// there yet: ask the API then).
    pub fn runtime_class(&self, name: &str) -> Option<Arc<RuntimeClass>> {
        self.runtime_classes.store.get(&ObjectRef::new(name))
    }
}
