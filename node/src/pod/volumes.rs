//! Pod volumes materialised as host directories under the pod's directory, mounted into
//! containers as WASI preopens (or bind mounts) at their `mountPath`.
//!
//! `configMap`, `secret`, `downwardAPI` and `projected` volumes hold files computed from the
//! API objects (with `items` choosing keys and paths, and `defaultMode` and `mode` the
//! permissions). They are written by kubelet's atomic writer ([`super::atomic_writer`]) and are
//! always read-only. [`refresh`] brings them up to date while the pod runs, as kubelet's
//! periodic sync does: a changed ConfigMap or Secret, or changed labels and annotations, reach
//! the running containers. `emptyDir` lives as long as the pod; `hostPath` is the host
//! directory itself (`DirectoryOrCreate` creates it). Preopens are directories, so a
//! `hostPath` of a single file is refused, as is any other volume type. A
//! `persistentVolumeClaim` is its bound volume's directory on this node (see
//! [`super::claims`]).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::atomic_writer::{self, FileProjection, Payload};
use super::sources::{ConfigError, PodFields, Sources};
use crate::runtime::Mount;

/// Volume name → its directory on the host, and whether the volume is read-only by nature.
pub type VolumeDirs = BTreeMap<String, (PathBuf, bool)>;

/// The mode of a projected file when neither `defaultMode` nor the item's `mode` says (0644).
const DEFAULT_MODE: i32 = 0o644;

/// Writes the pod's volumes under `dir` (one folder per volume).
pub fn materialise(
    pod: &Pod,
    sources: &Sources,
    fields: &PodFields<'_>,
    dir: &Path,
) -> Result<VolumeDirs, ConfigError> {
    let mut out = VolumeDirs::new();
    for v in volumes(pod) {
        let target = dir.join(&v.name);
        let (path, read_only) = materialise_one(v, sources, fields, &target)?;
        apply_fs_group(pod, v, &path, read_only, false);
        out.insert(v.name.clone(), (path, read_only));
    }
    Ok(out)
}

/// The pod's `fsGroup` on one set-up or rewritten volume, for the kinds kubelet manages the
/// ownership of (not `hostPath`). Best effort: an agent that is not root cannot give files a
/// group it is not in, and a Wasm guest, which all volumes are for then, does not need it.
fn apply_fs_group(pod: &Pod, v: &Volume, path: &Path, read_only: bool, rewritten: bool) {
    let Some(sc) = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()) else {
        return;
    };
    let Some(gid) = sc.fs_group.and_then(|g| u32::try_from(g).ok()) else {
        return;
    };
    let managed = v.empty_dir.is_some()
        || v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
        || v.persistent_volume_claim.is_some();
    if !managed {
        return;
    }
    // A rewrite made new files: the root alone would not tell.
    let policy = match rewritten {
        true => super::fs_group::ChangePolicy::Always,
        false => super::fs_group::ChangePolicy::parse(sc.fs_group_change_policy.as_deref()),
    };
    if let Err(e) = super::fs_group::set_ownership(path, gid, read_only, policy) {
        let level_is_debug = e.kind() == std::io::ErrorKind::PermissionDenied;
        if level_is_debug {
            tracing::debug!(volume = %v.name, error = %e, "cannot apply the pod's fsGroup");
        } else {
            tracing::warn!(volume = %v.name, error = %e, "cannot apply the pod's fsGroup");
        }
    }
}

/// Rewrites the pod's `configMap`, `secret`, `downwardAPI` and `projected` volumes under `dir`
/// from `sources` and the pod as it is now; returns the names of those whose files changed. A
/// volume that cannot be computed keeps its files, and the first such error is returned after
/// the others were brought up to date.
pub fn refresh(
    pod: &Pod,
    sources: &Sources,
    fields: &PodFields<'_>,
    dir: &Path,
) -> Result<Vec<String>, ConfigError> {
    let mut changed = Vec::new();
    let mut first_error = None;
    for v in volumes(pod) {
        let Some(payload) = payload(v, sources, fields) else {
            continue;
        };
        let target = dir.join(&v.name);
        let written = payload.and_then(|p| write(&v.name, &target, &p));
        match written {
            Ok(true) => {
                apply_fs_group(pod, v, &target, true, true);
                changed.push(v.name.clone());
            }
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(changed),
    }
}

fn volumes(pod: &Pod) -> &[Volume] {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
}

fn materialise_one(
    v: &Volume,
    sources: &Sources,
    fields: &PodFields<'_>,
    target: &Path,
) -> Result<(PathBuf, bool), ConfigError> {
    let name = &v.name;
    let io = |e: std::io::Error| ConfigError(format!("volume {name}: {e}"));
    if let Some(payload) = payload(v, sources, fields) {
        write(name, target, &payload?)?;
        return Ok((target.to_path_buf(), true));
    }
    if v.empty_dir.is_some() {
        // World-writable, as kubelet makes it: a container running as any user can use it.
        std::fs::create_dir_all(target).map_err(io)?;
        let world_writable = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(target, world_writable).map_err(io)?;
        return Ok((target.to_path_buf(), false));
    }
    if let Some(claim) = &v.persistent_volume_claim {
        let dir = sources.claims.get(&claim.claim_name).ok_or_else(|| {
            ConfigError(format!(
                "volume {name}: persistentvolumeclaim \"{}\" is not resolved",
                claim.claim_name
            ))
        })?;
        return Ok((dir.clone(), claim.read_only.unwrap_or(false)));
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
    Err(ConfigError(format!(
        "volume {name}: this volume type is not supported on this node (supported: \
         configMap, secret, downwardAPI, projected, emptyDir, hostPath, persistentVolumeClaim)"
    )))
}

fn write(volume: &str, target: &Path, payload: &Payload) -> Result<bool, ConfigError> {
    atomic_writer::write(target, payload).map_err(|e| ConfigError(format!("volume {volume}: {e}")))
}

/// The files of a volume whose files come from the API (`None` for other volume types).
fn payload(
    v: &Volume,
    sources: &Sources,
    fields: &PodFields<'_>,
) -> Option<Result<Payload, ConfigError>> {
    let name = &v.name;
    let mut out = Payload::new();
    // With an fsGroup, the files are written as they will be once it is applied (group read
    // added), so the writer sees its own files as unchanged at the next sync.
    let fs_group = fields
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .is_some_and(|sc| sc.fs_group.is_some());
    let result = if let Some(cm) = &v.config_map {
        let mode = cm.default_mode.unwrap_or(DEFAULT_MODE);
        let source = ObjectSource::config_map(&cm.name, cm.items.as_deref(), cm.optional);
        object_files(name, sources, source, mode, &mut out)
    } else if let Some(secret) = &v.secret {
        let secret_name = secret.secret_name.as_deref().unwrap_or_default();
        let mode = secret.default_mode.unwrap_or(DEFAULT_MODE);
        let source = ObjectSource::secret(secret_name, secret.items.as_deref(), secret.optional);
        object_files(name, sources, source, mode, &mut out)
    } else if let Some(downward) = &v.downward_api {
        let mode = downward.default_mode.unwrap_or(DEFAULT_MODE);
        downward_files(name, fields, downward.items.as_deref(), mode, &mut out)
    } else if let Some(projected) = &v.projected {
        let mode = projected.default_mode.unwrap_or(DEFAULT_MODE);
        projected.sources.iter().flatten().try_for_each(|source| {
            if let Some(cm) = &source.config_map {
                let cm = ObjectSource::config_map(&cm.name, cm.items.as_deref(), cm.optional);
                object_files(name, sources, cm, mode, &mut out)
            } else if let Some(secret) = &source.secret {
                let secret =
                    ObjectSource::secret(&secret.name, secret.items.as_deref(), secret.optional);
                object_files(name, sources, secret, mode, &mut out)
            } else if let Some(downward) = &source.downward_api {
                downward_files(name, fields, downward.items.as_deref(), mode, &mut out)
            } else {
                let kind = if source.service_account_token.is_some() {
                    "serviceAccountToken"
                } else if source.cluster_trust_bundle.is_some() {
                    "clusterTrustBundle"
                } else {
                    "this"
                };
                Err(ConfigError(format!(
                    "volume {name}: projected source {kind} is not supported on this node \
                         (supported: configMap, secret, downwardAPI)"
                )))
            }
        })
    } else {
        return None;
    };
    if fs_group {
        for file in out.values_mut() {
            file.mode |= super::fs_group::RO_MASK;
        }
    }
    Some(result.map(|()| out))
}

/// A ConfigMap or Secret whose keys a volume (or a projected source) holds as files.
struct ObjectSource<'a> {
    /// `ConfigMap` or `Secret`.
    kind: &'static str,
    name: &'a str,
    items: Option<&'a [KeyToPath]>,
    optional: Option<bool>,
}

impl<'a> ObjectSource<'a> {
    fn config_map(name: &'a str, items: Option<&'a [KeyToPath]>, optional: Option<bool>) -> Self {
        ObjectSource {
            kind: "ConfigMap",
            name,
            items,
            optional,
        }
    }

    fn secret(name: &'a str, items: Option<&'a [KeyToPath]>, optional: Option<bool>) -> Self {
        ObjectSource {
            kind: "Secret",
            name,
            items,
            optional,
        }
    }
}

/// The files of a ConfigMap or Secret: every key, or the chosen `items`.
fn object_files(
    volume: &str,
    sources: &Sources,
    object: ObjectSource<'_>,
    mode: i32,
    out: &mut Payload,
) -> Result<(), ConfigError> {
    let ObjectSource {
        kind,
        name,
        items,
        optional,
    } = object;
    let found = if kind == "Secret" {
        sources.secrets.get(name)
    } else {
        sources.config_maps.get(name)
    };
    let Some(data) = found else {
        if optional == Some(true) {
            return Ok(());
        }
        let kind = kind.to_lowercase();
        return Err(ConfigError(format!(
            "volume {volume}: {kind} \"{name}\" not found"
        )));
    };
    match items {
        None | Some([]) => data
            .iter()
            .try_for_each(|(k, v)| add(volume, out, k, v.clone(), mode)),
        Some(items) => items.iter().try_for_each(|item| match data.get(&item.key) {
            Some(v) => add(
                volume,
                out,
                &item.path,
                v.clone(),
                item.mode.unwrap_or(mode),
            ),
            None => Err(ConfigError(format!(
                "volume {volume}: couldn't find key {} in {kind} {}/{name}",
                item.key, sources.namespace
            ))),
        }),
    }
}

fn downward_files(
    volume: &str,
    fields: &PodFields<'_>,
    items: Option<&[DownwardAPIVolumeFile]>,
    mode: i32,
    out: &mut Payload,
) -> Result<(), ConfigError> {
    for item in items.into_iter().flatten() {
        let data = if let Some(field) = &item.field_ref {
            fields.get(&field.field_path)?
        } else if let Some(r) = &item.resource_field_ref {
            let container = r.container_name.as_deref().unwrap_or_default();
            let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
            fields
                .resource(container, &r.resource, divisor)
                .map_err(|e| ConfigError(format!("volume {volume}: item {}: {e}", item.path)))?
        } else {
            return Err(ConfigError(format!(
                "volume {volume}: item {}: it names neither a fieldRef nor a resourceFieldRef",
                item.path
            )));
        };
        add(
            volume,
            out,
            &item.path,
            data.into_bytes(),
            item.mode.unwrap_or(mode),
        )?;
    }
    Ok(())
}

/// Adds one file; a path that climbs out, or a mode out of range, is the user's error.
fn add(
    volume: &str,
    out: &mut Payload,
    path: &str,
    data: Vec<u8>,
    mode: i32,
) -> Result<(), ConfigError> {
    if safe_relative(path).is_none() || path.starts_with("..") {
        return Err(ConfigError(format!(
            "volume {volume}: invalid path {path:?}"
        )));
    }
    if !(0..=0o777).contains(&mode) {
        return Err(ConfigError(format!(
            "volume {volume}: {path}: mode {mode} is not between 0 and 0777 (511)"
        )));
    }
    out.insert(
        path.to_string(),
        FileProjection {
            data,
            mode: mode as u32,
        },
    );
    Ok(())
}

/// `path` if it is relative and stays inside its folder.
fn safe_relative(path: &str) -> Option<&Path> {
    let p = Path::new(path);
    let ok = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then_some(p)
}

/// The container's mounts: each `volumeMount` as a directory at its `mountPath`.
///
/// A `subPath` into a volume whose files come from the API is a copy taken now, under
/// `subpaths` (kubelet's `volume-subpaths`): as in Kubernetes, it does not follow later
/// updates of the volume (a restarted container gets a fresh copy), and it outlives the
/// version of the files it was taken from.
pub fn mounts(
    container: &Container,
    volumes: &VolumeDirs,
    subpaths: &Path,
) -> Result<Vec<Mount>, ConfigError> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, m)| {
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
                    let fail = |e: std::io::Error| {
                        ConfigError(format!("volumeMount {}: subPath {sub}: {e}", m.name))
                    };
                    let p = dir.join(rel);
                    if *always_ro {
                        let copy = subpaths
                            .join(&m.name)
                            .join(&container.name)
                            .join(i.to_string());
                        snapshot(dir, &p, &copy).map_err(fail)?;
                        copy
                    } else {
                        std::fs::create_dir_all(&p).map_err(fail)?;
                        p
                    }
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

/// Copies `source` (a file or directory inside `volume`, links followed) to `copy`, replacing
/// an earlier copy.
fn snapshot(volume: &Path, source: &Path, copy: &Path) -> std::io::Result<()> {
    let resolved = source.canonicalize()?;
    if !resolved.starts_with(volume.canonicalize()?) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "it leads out of the volume",
        ));
    }
    atomic_writer::remove_entry(copy)?;
    if let Some(parent) = copy.parent() {
        std::fs::create_dir_all(parent)?;
    }
    copy_all(&resolved, copy)
}

fn copy_all(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::metadata(from)?.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_all(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::sources::Allocatable;
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
            allocatable: Allocatable {
                cpu_millis: 2000,
                memory_bytes: 1 << 30,
                ephemeral_storage_bytes: 0,
            },
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
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "mem", "resourceFieldRef": {"containerName": "c", "resource": "limits.memory", "divisor": "1Mi"}}]}},
            {"name": "mixed", "projected": {"defaultMode": 0o440, "sources": [
                {"configMap": {"name": "cm", "items": [{"key": "a.txt", "path": "conf/a", "mode": 0o755}]}},
                {"secret": {"name": "sec"}},
                {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                {"configMap": {"name": "gone", "optional": true}}]}},
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
        assert_eq!(
            read("info", "mem"),
            "1024",
            "no limit: the node's allocatable memory"
        );
        assert!(vols["scratch"].0.is_dir() && !vols["scratch"].1);
        assert_eq!(vols["host"].0, hostdir);
        assert!(hostdir.is_dir());
        assert_eq!(read("mixed", "conf/a"), "A");
        assert_eq!(read("mixed", "token"), "T");
        assert_eq!(read("mixed", "ns"), "ns");
        let mode = |v: &str, f: &str| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(vols[v].0.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            (
                mode("all", "a.txt"),
                mode("mixed", "conf/a"),
                mode("mixed", "token")
            ),
            (0o644, 0o755, 0o440),
            "the item's mode, else defaultMode, else 0644"
        );
        assert_eq!(mode("scratch", ""), 0o777, "an emptyDir is world-writable");
        assert!(
            vols["all"].1 && vols["sec"].1 && vols["info"].1 && vols["mixed"].1,
            "API-sourced volumes are read-only"
        );

        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "all", "mountPath": "/cfg"},
            {"name": "scratch", "mountPath": "/tmp", "readOnly": true},
            {"name": "host", "mountPath": "/host"},
            {"name": "scratch", "mountPath": "/sub", "subPath": "x/y"}]}))
        .unwrap();
        let m = mounts(&c, &vols, &tmp.path().join("subpaths")).unwrap();
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
    fn refresh_follows_the_sources_and_the_labels_but_a_sub_path_is_a_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vols");
        let mut p = pod(json!([
            {"name": "cfg", "configMap": {"name": "cm", "items": [{"key": "b.txt", "path": "sub/bee"}]}},
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
            {"name": "scratch", "emptyDir": {}},
        ]));
        let vols = run(&p, &dir).unwrap();
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "cfg", "mountPath": "/whole"},
            {"name": "cfg", "mountPath": "/part", "subPath": "sub"}]}))
        .unwrap();
        let m = mounts(&c, &vols, &tmp.path().join("subpaths")).unwrap();
        assert_eq!(m[0].host_path, dir.join("cfg"));
        assert!(m[1].host_path.starts_with(tmp.path().join("subpaths")));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&m[1].host_path.join("bee")), "B");

        let fields = |p: &Pod| {
            let p = p.clone();
            move |sources: &Sources, dir: &Path| {
                let fields = PodFields {
                    pod: &p,
                    pod_ip: "127.1.0.2",
                    host_ip: "127.0.0.1",
                    node_name: "n",
                    allocatable: Allocatable::default(),
                };
                refresh(&p, sources, &fields, dir)
            }
        };
        assert_eq!(fields(&p)(&sources(), &dir).unwrap(), Vec::<String>::new());

        let mut changed = sources();
        changed
            .config_maps
            .get_mut("cm")
            .unwrap()
            .insert("b.txt".into(), b"B2".to_vec());
        p.metadata.labels = Some([("app".to_string(), "y".to_string())].into());
        assert_eq!(
            fields(&p)(&changed, &dir).unwrap(),
            ["cfg", "info"],
            "both volumes changed"
        );
        assert_eq!(read(&dir.join("cfg/sub/bee")), "B2");
        assert_eq!(read(&dir.join("info/labels")), "app=\"y\"\n");
        assert_eq!(
            read(&m[1].host_path.join("bee")),
            "B",
            "a subPath keeps the copy it started with"
        );

        // The ConfigMap is gone: the error is reported and the files stay as they were.
        let mut gone = changed.clone();
        gone.config_maps.clear();
        let err = fields(&p)(&gone, &dir).unwrap_err();
        assert_eq!(err.0, "volume cfg: configmap \"cm\" not found");
        assert_eq!(read(&dir.join("cfg/sub/bee")), "B2");
    }

    #[test]
    fn missing_sources_keys_and_bad_paths_are_config_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let table = [
            (
                json!([{"name": "v", "configMap": {"name": "gone"}}]),
                "volume v: configmap \"gone\" not found",
            ),
            (
                json!([{"name": "v", "configMap": {"name": "cm", "items": [{"key": "zz", "path": "z"}]}}]),
                "volume v: couldn't find key zz in ConfigMap ns/cm",
            ),
            (
                json!([{"name": "v", "secret": {"secretName": "gone"}}]),
                "volume v: secret \"gone\" not found",
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
                "volume v: persistentvolumeclaim \"c\" is not resolved",
            ),
            (
                json!([{"name": "v", "nfs": {"server": "s", "path": "/x"}}]),
                "volume v: this volume type is not supported on this node (supported: configMap, secret, downwardAPI, projected, emptyDir, hostPath, persistentVolumeClaim)",
            ),
            (
                json!([{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}]),
                "volume v: projected source serviceAccountToken is not supported on this node (supported: configMap, secret, downwardAPI)",
            ),
            (
                json!([{"name": "v", "configMap": {"name": "cm", "defaultMode": 0o1777}}]),
                "volume v: a.txt: mode 1023 is not between 0 and 0777 (511)",
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
