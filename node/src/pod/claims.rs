//! `persistentVolumeClaim` volumes: the claim's bound PersistentVolume, as a directory on this
//! node.
//!
//! - A volume of the CSI driver [`LOCAL_PATH_DRIVER`] (what the control plane's `local-path`
//!   provisioner makes) is the directory `<data-dir>/volumes/<volumeHandle>`, made on first use.
//!   It outlives the pods that mount it, so a StatefulSet pod made again finds its data.
//! - `hostPath` and `local` volumes are the directory they name.
//!
//! A claim that does not exist, is not bound yet, or is bound to a volume of another kind is a
//! mount failure the pod worker retries with backoff (a `FailedMount` event says which).
//!
//! Once a local-path volume's PersistentVolume is deleted (its claim was, with `reclaimPolicy:
//! Delete`), [`run_sweeper`] removes its directory, as the local-path provisioner's helper does.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;

use super::sources::ConfigError;

/// The CSI driver name of the control plane's `local-path` volumes.
pub const LOCAL_PATH_DRIVER: &str = "flotilla.dev/local-path";

/// The claims `pod` mounts.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// The directory a bound volume is on this node (`volumes_dir` holds the local-path ones),
/// made when it is a local-path one.
pub fn directory_of(volume: &PersistentVolume, volumes_dir: &Path) -> Result<PathBuf, ConfigError> {
    let name = volume.metadata.name.clone().unwrap_or_default();
    let spec = volume.spec.as_ref();
    if let Some(csi) = spec.and_then(|s| s.csi.as_ref())
        && csi.driver == LOCAL_PATH_DRIVER
    {
        let handle = &csi.volume_handle;
        let safe = !handle.is_empty()
            && handle
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && handle != "."
            && handle != "..";
        if !safe {
            return Err(ConfigError(format!(
                "persistentvolume \"{name}\": invalid volumeHandle {handle:?}"
            )));
        }
        let dir = volumes_dir.join(handle);
        std::fs::create_dir_all(&dir)
            .map_err(|e| ConfigError(format!("persistentvolume \"{name}\": {e}")))?;
        return Ok(dir);
    }
    if let Some(h) = spec.and_then(|s| s.host_path.as_ref()) {
        let dir = PathBuf::from(&h.path);
        if h.type_.as_deref() == Some("DirectoryOrCreate") {
            std::fs::create_dir_all(&dir)
                .map_err(|e| ConfigError(format!("persistentvolume \"{name}\": {e}")))?;
        }
        return Ok(dir);
    }
    if let Some(l) = spec.and_then(|s| s.local.as_ref()) {
        return Ok(PathBuf::from(&l.path));
    }
    Err(ConfigError(format!(
        "persistentvolume \"{name}\": this volume type is not supported on this node \
         (supported: the {LOCAL_PATH_DRIVER} CSI driver, hostPath, local)"
    )))
}

/// The directories under the volumes dir (`present`) whose volumes are not among `existing`.
pub fn stale<'a>(present: &'a [String], existing: &HashSet<String>) -> Vec<&'a str> {
    present
        .iter()
        .filter(|d| !existing.contains(*d))
        .map(String::as_str)
        .collect()
}

/// Removes the directories of deleted local-path volumes: those not in a list of the
/// PersistentVolumes and, read again one by one, gone (a volume made since the list keeps its
/// directory). Returns the names removed.
pub async fn sweep(client: &kube::Client, volumes_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(volumes_dir) else {
        return Vec::new();
    };
    let present: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    if present.is_empty() {
        return Vec::new();
    }
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let Ok(list) = api.list(&Default::default()).await else {
        return Vec::new();
    };
    let existing: HashSet<String> = list
        .items
        .into_iter()
        .filter_map(|v| v.metadata.name)
        .collect();
    let mut removed = Vec::new();
    for name in stale(&present, &existing) {
        if matches!(api.get_opt(name).await, Ok(None)) {
            match std::fs::remove_dir_all(volumes_dir.join(name)) {
                Ok(()) => removed.push(name.to_string()),
                Err(e) => {
                    tracing::warn!(volume = name, error = %e, "cannot remove a deleted volume's directory")
                }
            }
        }
    }
    removed
}

/// Sweeps every `every` until `shutdown`.
pub async fn run_sweeper(
    client: kube::Client,
    volumes_dir: PathBuf,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        for name in sweep(&client, &volumes_dir).await {
            tracing::info!(volume = %name, "removed the directory of a deleted volume");
        }
    }
}

/// The directory of each claim `pod` mounts, or why one cannot be mounted yet.
pub async fn resolve(
    client: &kube::Client,
    pod: &Pod,
    volumes_dir: &Path,
) -> Result<HashMap<String, PathBuf>, ConfigError> {
    let names = claim_names(pod);
    let mut out = HashMap::new();
    if names.is_empty() {
        return Ok(out);
    }
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for name in names {
        let claim = claims
            .get_opt(&name)
            .await
            .map_err(|e| ConfigError(format!("cannot read persistentvolumeclaim \"{name}\": {e}")))?
            .ok_or_else(|| ConfigError(format!("persistentvolumeclaim \"{name}\" not found")))?;
        let bound_to = claim
            .spec
            .and_then(|s| s.volume_name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ConfigError(format!("persistentvolumeclaim \"{name}\" is not bound")))?;
        let volume = volumes
            .get_opt(&bound_to)
            .await
            .map_err(|e| ConfigError(format!("cannot read persistentvolume \"{bound_to}\": {e}")))?
            .ok_or_else(|| {
                ConfigError(format!(
                    "persistentvolumeclaim \"{name}\" is bound to persistentvolume \"{bound_to}\", which does not exist"
                ))
            })?;
        out.insert(name, directory_of(&volume, volumes_dir)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn volume(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pv"}, "spec": spec})).unwrap()
    }

    #[test]
    fn a_local_path_volume_is_a_directory_under_the_volumes_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let v = volume(json!({"csi": {"driver": LOCAL_PATH_DRIVER, "volumeHandle": "pvc-1"}}));
        let dir = directory_of(&v, tmp.path()).unwrap();
        assert_eq!(dir, tmp.path().join("pvc-1"));
        assert!(dir.is_dir());
        for bad in ["", "..", "a/b", "../x"] {
            let v = volume(json!({"csi": {"driver": LOCAL_PATH_DRIVER, "volumeHandle": bad}}));
            assert!(directory_of(&v, tmp.path()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn directories_of_volumes_not_listed_are_stale() {
        let present = vec!["pvc-a".to_string(), "pvc-b".to_string()];
        let existing: HashSet<String> = ["pvc-a".to_string(), "other".to_string()].into();
        assert_eq!(stale(&present, &existing), ["pvc-b"]);
    }

    #[test]
    fn host_path_and_local_volumes_are_their_paths_and_others_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let made = tmp.path().join("made");
        let v = volume(json!({"hostPath": {"path": made, "type": "DirectoryOrCreate"}}));
        assert_eq!(directory_of(&v, tmp.path()).unwrap(), made);
        assert!(made.is_dir());
        let v = volume(json!({"local": {"path": "/srv/data"}}));
        assert_eq!(
            directory_of(&v, tmp.path()).unwrap(),
            PathBuf::from("/srv/data")
        );
        let v = volume(json!({"nfs": {"server": "s", "path": "/x"}}));
        assert!(
            directory_of(&v, tmp.path())
                .unwrap_err()
                .0
                .contains("not supported")
        );
    }
}
