//! The ConfigMaps and Secrets a pod refers to (from env, envFrom and volumes), fetched at each
//! container start and each volume refresh, and the fields of the pod the downward API exposes.
//!
//! Resolution against them is pure ([`super::env`], [`super::volumes`]); only [`Sources::fetch`]
//! talks to the API server. A missing object or key is a [`ConfigError`], which the pod worker
//! reports as `CreateContainerConfigError` and retries with backoff.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

/// Why a container's configuration cannot be resolved; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The referenced ConfigMaps and Secrets that exist (absent ones are missing from the maps).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// ConfigMap name → key → value (`data` and `binaryData`).
    pub config_maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// Secret name → key → decoded value.
    pub secrets: HashMap<String, BTreeMap<String, Vec<u8>>>,
    /// The namespace, for messages.
    pub namespace: String,
    /// The directory of each PersistentVolumeClaim the pod mounts (see `claims`).
    pub claims: HashMap<String, std::path::PathBuf>,
}

impl Sources {
    /// The ConfigMap's key, or why not.
    pub fn config_map_key(&self, name: &str, key: &str) -> Result<Option<&[u8]>, ConfigError> {
        let ns = &self.namespace;
        let map = self
            .config_maps
            .get(name)
            .ok_or_else(|| ConfigError(format!("configmap \"{name}\" not found")))?;
        match map.get(key) {
            Some(v) => Ok(Some(v)),
            None => Err(ConfigError(format!(
                "couldn't find key {key} in ConfigMap {ns}/{name}"
            ))),
        }
    }

    /// The Secret's key, or why not.
    pub fn secret_key(&self, name: &str, key: &str) -> Result<Option<&[u8]>, ConfigError> {
        let ns = &self.namespace;
        let map = self
            .secrets
            .get(name)
            .ok_or_else(|| ConfigError(format!("secret \"{name}\" not found")))?;
        match map.get(key) {
            Some(v) => Ok(Some(v)),
            None => Err(ConfigError(format!(
                "couldn't find key {key} in Secret {ns}/{name}"
            ))),
        }
    }

    /// Reads every ConfigMap and Secret `pod` refers to; absent ones are left out.
    pub async fn fetch(client: &kube::Client, pod: &Pod) -> Result<Sources, ConfigError> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let (cms, secrets) = referenced(pod);
        let mut sources = Sources {
            namespace: ns.clone(),
            ..Sources::default()
        };
        let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        for name in cms {
            let found = cm_api
                .get_opt(&name)
                .await
                .map_err(|e| ConfigError(format!("cannot read configmap \"{name}\": {e}")))?;
            if let Some(cm) = found {
                let mut data: BTreeMap<String, Vec<u8>> = cm
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, v.0);
                }
                sources.config_maps.insert(name, data);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(client.clone(), &ns);
        for name in secrets {
            let found = secret_api
                .get_opt(&name)
                .await
                .map_err(|e| ConfigError(format!("cannot read secret \"{name}\": {e}")))?;
            if let Some(secret) = found {
                let mut data: BTreeMap<String, Vec<u8>> = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in secret.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                sources.secrets.insert(name, data);
            }
        }
        Ok(sources)
    }
}

/// Names of the ConfigMaps and Secrets `pod` refers to.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cms = BTreeSet::new();
    let mut secrets = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return (cms, secrets);
    };
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    for c in containers {
        for e in c.env.iter().flatten() {
            if let Some(from) = &e.value_from {
                if let Some(r) = &from.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &from.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            cms.insert(cm.name.clone());
        }
        if let Some(s) = &v.secret
            && let Some(name) = &s.secret_name
        {
            secrets.insert(name.clone());
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                cms.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// What a node offers pods: a `resourceFieldRef` to a limit the container does not set reads
/// this instead, as in kubelet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allocatable {
    /// CPU in millicores.
    pub cpu_millis: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage_bytes: u64,
}

/// The pod fields a `fieldRef` or `resourceFieldRef` can name, with the values only the agent
/// knows.
#[derive(Debug, Clone, Copy)]
pub struct PodFields<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its address.
    pub pod_ip: &'a str,
    /// The node's address.
    pub host_ip: &'a str,
    /// The node's name.
    pub node_name: &'a str,
    /// The node's allocatable resources.
    pub allocatable: Allocatable,
}

impl PodFields<'_> {
    /// The value of `field_path`, as the downward API spells it.
    pub fn get(&self, field_path: &str) -> Result<String, ConfigError> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let value = match field_path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "status.podIP" => self.pod_ip.to_string(),
            "status.podIPs" => self.pod_ip.to_string(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.to_string(),
            "spec.nodeName" => self.node_name.to_string(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
            "metadata.labels" => format_map(meta.labels.as_ref()),
            "metadata.annotations" => format_map(meta.annotations.as_ref()),
            other => {
                let keyed = |prefix: &str| {
                    other
                        .strip_prefix(prefix)
                        .and_then(|k| k.strip_suffix("']"))
                        .map(str::to_string)
                };
                if let Some(key) = keyed("metadata.labels['") {
                    meta.labels
                        .as_ref()
                        .and_then(|l| l.get(&key).cloned())
                        .unwrap_or_default()
                } else if let Some(key) = keyed("metadata.annotations['") {
                    meta.annotations
                        .as_ref()
                        .and_then(|a| a.get(&key).cloned())
                        .unwrap_or_default()
                } else {
                    return Err(ConfigError(format!(
                        "unsupported fieldRef fieldPath {other:?}"
                    )));
                }
            }
        };
        Ok(value)
    }
}

impl PodFields<'_> {
    /// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) of
    /// `container`, in units of `divisor` (default 1) and rounded up, as kubelet gives it. An
    /// unset limit reads the node's allocatable amount; an unset request reads 0.
    pub fn resource(
        &self,
        container: &str,
        resource: &str,
        divisor: Option<&str>,
    ) -> Result<String, ConfigError> {
        let spec = self.pod.spec.as_ref();
        let c = spec
            .into_iter()
            .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
            .find(|c| c.name == container)
            .ok_or_else(|| {
                ConfigError(format!(
                    "resourceFieldRef {resource}: no container named {container:?}"
                ))
            })?;
        let (kind, name) = resource.split_once('.').unwrap_or(("", resource));
        let set = c.resources.as_ref().and_then(|r| match kind {
            "limits" => r.limits.as_ref(),
            "requests" => r.requests.as_ref(),
            _ => None,
        });
        let quantity = set.and_then(|m| m.get(name)).map(|q| q.0.as_str());
        let unsupported = || {
            ConfigError(format!(
                "resourceFieldRef: unsupported resource {resource:?} (supported: limits.cpu, \
                 limits.memory, limits.ephemeral-storage, requests.cpu, requests.memory, \
                 requests.ephemeral-storage)"
            ))
        };
        if !matches!(kind, "limits" | "requests") {
            return Err(unsupported());
        }
        let bad = |what: &str, q: &str| {
            ConfigError(format!("resourceFieldRef {resource}: invalid {what} {q:?}"))
        };
        let divisor = divisor.filter(|d| !d.is_empty() && *d != "0");
        // How the resource's quantities parse (to millicores or bytes), what an unset limit
        // reads, and the unit when no divisor is given (one core, one byte).
        let (parse, allocatable, one): (Parse, u64, u64) = match name {
            "cpu" => (
                super::quantity::cpu_millis,
                self.allocatable.cpu_millis,
                1000,
            ),
            "memory" => (
                super::quantity::memory_bytes,
                self.allocatable.memory_bytes,
                1,
            ),
            "ephemeral-storage" => (
                super::quantity::memory_bytes,
                self.allocatable.ephemeral_storage_bytes,
                1,
            ),
            _ => return Err(unsupported()),
        };
        let value = match quantity {
            Some(q) => parse(q).ok_or_else(|| bad("quantity", q))?,
            None if kind == "limits" => allocatable,
            None => 0,
        };
        let unit = match divisor {
            Some(d) => parse(d).ok_or_else(|| bad("divisor", d))?,
            None => one,
        };
        if unit == 0 {
            return Err(bad("divisor", divisor.unwrap_or_default()));
        }
        Ok(value.div_ceil(unit).to_string())
    }
}

/// Parses a quantity into the unit the agent counts a resource in (millicores, bytes).
type Parse = fn(&str) -> Option<u64>;

/// `key="value"` lines, sorted, as the downward API writes labels and annotations.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}
