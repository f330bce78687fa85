//! Pod volumes materialised as host directories under the pod's directory, mounted into
//! containers as WASI preopens at their `mountPath`.
//!
//! `configMap`, `secret` and `downwardAPI` volumes are written once when the pod starts (with
//! `items` choosing keys and paths) and are always read-only; `emptyDir` lives as long as the
//! pod; `hostPath` is the host directory itself (`DirectoryOrCreate` creates it). Preopens are
//! directories, so a `hostPath` of a single file is refused, as is any other volume type.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, Volume};

use super::sources::{ConfigError, PodFields, Sources};
use crate::runtime::Mount;

/// Volume name → its directory on the host, and whether the volume is read-only by nature.
pub type VolumeDirs = BTreeMap<String, (PathBuf, bool)>;

/// Writes the pod's volumes under `dir` (one folder per volume).
pub fn materialise(
    pod: &Pod,
    sources: &Sources,
    fields: &PodFields<'_>,
    dir: &Path,
) -> Result<VolumeDirs, ConfigError> {
    let mut out = VolumeDirs::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for v in &volumes {
        let target = dir.join(&v.name);
        let (path, read_only) = materialise_one(v, sources, fields, &target)?;
        out.insert(v.name.clone(), (path, read_only));
    }
    Ok(out)
}

fn materialise_one(
    v: &Volume,
    sources: &Sources,
    fields: &PodFields<'_>,
    target: &Path,
) -> Result<(PathBuf, bool), ConfigError> {
    let name = &v.name;
    let io = |e: std::io::Error| ConfigError(format!("volume {name}: {e}"));
    if v.empty_dir.is_some() {
        std::fs::create_dir_all(target).map_err(io)?;
        return Ok((target.to_path_buf(), false));
    }
    if let Some(host) = &v.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(io)?,
            "" | "Directory" if path.is_dir() => {}
            "" | "Directory" => {
                return Err(ConfigError(format!(
                    "volume {name}: hostPath {} is not an existing directory",
                    host.path
                )));
            }
            other => {
                return Err(ConfigError(format!(
                    "volume {name}: hostPath type {other} is not supported: Wasm volumes are \
                     directories (use Directory or DirectoryOrCreate)"
                )));
            }
        }
        return Ok((path, false));
    }
    let files: Vec<(String, Vec<u8>)> = if let Some(cm) = &v.config_map {
        match sources.config_maps.get(&cm.name) {
            Some(data) => pick(
                name,
                data,
                cm.items.as_deref(),
                "ConfigMap",
                &sources.namespace,
                &cm.name,
            )?,
            None if cm.optional == Some(true) => Vec::new(),
            None => return Err(ConfigError(format!("configmap \"{}\" not found", cm.name))),
        }
    } else if let Some(secret) = &v.secret {
        let secret_name = secret.secret_name.clone().unwrap_or_default();
        match sources.secrets.get(&secret_name) {
            Some(data) => pick(
                name,
                data,
                secret.items.as_deref(),
                "Secret",
                &sources.namespace,
                &secret_name,
            )?,
            None if secret.optional == Some(true) => Vec::new(),
            None => return Err(ConfigError(format!("secret \"{secret_name}\" not found"))),
        }
    } else if let Some(downward) = &v.downward_api {
        let mut files = Vec::new();
        for item in downward.items.iter().flatten() {
            let Some(field) = &item.field_ref else {
                return Err(ConfigError(format!(
                    "volume {name}: item {}: only fieldRef items are supported",
                    item.path
                )));
            };
            files.push((
                item.path.clone(),
                fields.get(&field.field_path)?.into_bytes(),
            ));
        }
        files
    } else {
        return Err(ConfigError(format!(
            "volume {name}: this volume type is not supported on this node (supported: \
             configMap, secret, emptyDir, hostPath, downwardAPI)"
        )));
    };
    write_files(name, target, &files)?;
    Ok((target.to_path_buf(), true))
}

/// The files of a ConfigMap or Secret volume: every key, or the chosen `items`.
fn pick(
    volume: &str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    kind: &str,
    namespace: &str,
    object: &str,
) -> Result<Vec<(String, Vec<u8>)>, ConfigError> {
    match items {
        None | Some([]) => Ok(data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(items) => items
            .iter()
            .map(|item| match data.get(&item.key) {
                Some(v) => Ok((item.path.clone(), v.clone())),
                None => Err(ConfigError(format!(
                    "volume {volume}: couldn't find key {} in {kind} {namespace}/{object}",
                    item.key
                ))),
            })
            .collect(),
    }
}

fn write_files(
    volume: &str,
    target: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<(), ConfigError> {
    let io = |e: std::io::Error| ConfigError(format!("volume {volume}: {e}"));
    if target.exists() {
        std::fs::remove_dir_all(target).map_err(io)?;
    }
    std::fs::create_dir_all(target).map_err(io)?;
    for (path, content) in files {
        let relative = safe_relative(path)
            .ok_or_else(|| ConfigError(format!("volume {volume}: invalid path {path:?}")))?;
        let file = target.join(relative);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&file, content).map_err(io)?;
    }
    Ok(())
}

/// `path` if it is relative and stays inside its folder.
fn safe_relative(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(p)
}

/// The container's mounts: each `volumeMount` as a directory at its `mountPath`.
pub fn mounts(container: &Container, volumes: &VolumeDirs) -> Result<Vec<Mount>, ConfigError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            let (dir, always_ro) = volumes.get(&m.name).ok_or_else(|| {
                ConfigError(format!(
                    "container {}: volumeMount {} names no volume of the pod",
                    container.name, m.name
                ))
            })?;
            let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => dir.clone(),
                Some(sub) => {
                    let rel = safe_relative(sub).ok_or_else(|| {
                        ConfigError(format!("volumeMount {}: invalid subPath {sub:?}", m.name))
                    })?;
                    let p = dir.join(rel);
                    if !*always_ro {
                        std::fs::create_dir_all(&p).map_err(|e| {
                            ConfigError(format!("volumeMount {}: subPath {sub}: {e}", m.name))
                        })?;
                    }
                    p
                }
            };
            Ok(Mount {
                container_path: m.mount_path.clone(),
                host_path,
                read_only: *always_ro || m.read_only == Some(true),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c"}], "volumes": volumes}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources {
            namespace: "ns".into(),
            ..Sources::default()
        };
        s.config_maps.insert(
            "cm".into(),
            [
                ("a.txt".to_string(), b"A".to_vec()),
                ("b.txt".to_string(), b"B".to_vec()),
            ]
            .into(),
        );
        s.secrets
            .insert("sec".into(), [("token".to_string(), b"T".to_vec())].into());
        s
    }

    fn run(pod: &Pod, dir: &Path) -> Result<VolumeDirs, ConfigError> {
        let fields = PodFields {
            pod,
            pod_ip: "127.1.0.2",
            host_ip: "127.0.0.1",
            node_name: "n",
        };
        materialise(pod, &sources(), &fields, dir)
    }

    #[test]
    fn volumes_become_directories_with_their_files() {
        let tmp = tempfile::tempdir().unwrap();
        let hostdir = tmp.path().join("host");
        let p = pod(json!([
            {"name": "all", "configMap": {"name": "cm"}},
            {"name": "some", "configMap": {"name": "cm", "items": [{"key": "b.txt", "path": "sub/bee"}]}},
            {"name": "sec", "secret": {"secretName": "sec"}},
            {"name": "scratch", "emptyDir": {}},
            {"name": "host", "hostPath": {"path": hostdir.to_str().unwrap(), "type": "DirectoryOrCreate"}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ]));
        let vols = run(&p, &tmp.path().join("vols")).unwrap();
        let read = |v: &str, f: &str| std::fs::read_to_string(vols[v].0.join(f)).unwrap();
        assert_eq!(read("all", "a.txt"), "A");
        assert_eq!(read("all", "b.txt"), "B");
        assert_eq!(read("some", "sub/bee"), "B");
        assert!(
            !vols["some"].0.join("a.txt").exists(),
            "items choose the keys"
        );
        assert_eq!(read("sec", "token"), "T");
        assert_eq!(read("info", "name"), "p");
        assert_eq!(read("info", "labels"), "app=\"x\"\n");
        assert!(vols["scratch"].0.is_dir() && !vols["scratch"].1);
        assert_eq!(vols["host"].0, hostdir);
        assert!(hostdir.is_dir());
        assert!(
            vols["all"].1 && vols["sec"].1 && vols["info"].1,
            "projected volumes are read-only"
        );

        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "all", "mountPath": "/cfg"},
            {"name": "scratch", "mountPath": "/tmp", "readOnly": true},
            {"name": "host", "mountPath": "/host"},
            {"name": "scratch", "mountPath": "/sub", "subPath": "x/y"}]}))
        .unwrap();
        let m = mounts(&c, &vols).unwrap();
        let flags: Vec<(&str, bool)> = m
            .iter()
            .map(|m| (m.container_path.as_str(), m.read_only))
            .collect();
        assert_eq!(
            flags,
            [
                ("/cfg", true),
                ("/tmp", true),
                ("/host", false),
                ("/sub", false)
            ]
        );
        assert!(m[3].host_path.ends_with("scratch/x/y") && m[3].host_path.is_dir());
    }

    #[test]
    fn missing_sources_keys_and_bad_paths_are_config_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let table = [
            (
                json!([{"name": "v", "configMap": {"name": "gone"}}]),
                "configmap \"gone\" not found",
            ),
            (
                json!([{"name": "v", "configMap": {"name": "cm", "items": [{"key": "zz", "path": "z"}]}}]),
                "volume v: couldn't find key zz in ConfigMap ns/cm",
            ),
            (
                json!([{"name": "v", "secret": {"secretName": "gone"}}]),
                "secret \"gone\" not found",
            ),
            (
                json!([{"name": "v", "configMap": {"name": "cm", "items": [{"key": "a.txt", "path": "../escape"}]}}]),
                "volume v: invalid path \"../escape\"",
            ),
            (
                json!([{"name": "v", "hostPath": {"path": "/definitely/not/here"}}]),
                "volume v: hostPath /definitely/not/here is not an existing directory",
            ),
            (
                json!([{"name": "v", "persistentVolumeClaim": {"claimName": "c"}}]),
                "volume v: this volume type is not supported on this node (supported: configMap, secret, emptyDir, hostPath, downwardAPI)",
            ),
        ];
        for (volumes, want) in table {
            let p = pod(volumes.clone());
            assert_eq!(run(&p, tmp.path()).unwrap_err().0, want, "{volumes}");
        }
        let p = pod(json!([{"name": "v", "configMap": {"name": "gone", "optional": true}}]));
        assert!(
            run(&p, tmp.path()).is_ok(),
            "an optional missing configmap is an empty volume"
        );
    }
}
