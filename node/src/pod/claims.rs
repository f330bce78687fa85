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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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
