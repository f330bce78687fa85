//! Kubelet's atomic writer: the files of a `configMap`, `secret`, `downwardAPI` or `projected`
//! volume change all at once, so a container never reads half of an update.
//!
//! The layout is Kubernetes' own. Each version of the files is written into a new hidden
//! directory named after the time (`..2026_12_07_03_40_00.123456789`). The symlink `..data`
//! points at the current one, and each top-level name the user sees is a symlink into
//! `..data` (`app.conf -> ..data/app.conf`). An update writes the new version beside the old,
//! points a temporary link at it and renames that link over `..data` (one atomic `rename`),
//! then adds and removes the user-visible links and deletes the old version. A container that
//! opened the volume directory (a WASI preopen, or a bind mount) sees the new files from its
//! next lookup on; the links are relative, so they resolve inside the volume wherever it is
//! mounted.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

/// The link to the current version.
const DATA_DIR: &str = "..data";
/// The link renamed over [`DATA_DIR`].
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a volume: its content and its mode (`defaultMode` or the item's `mode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The bytes.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Relative path inside the volume → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Makes `target` hold exactly `payload`; `Ok(false)` when it already did (nothing written).
///
/// Paths must be relative, free of `..`, and must not start with `..` (the names the writer
/// keeps for itself); the API server refuses others, and so does this.
pub fn write(target: &Path, payload: &Payload) -> io::Result<bool> {
    for path in payload.keys() {
        check_path(path)?;
    }
    std::fs::create_dir_all(target)?;
    let current = std::fs::read_link(target.join(DATA_DIR)).ok();
    if let Some(old) = &current
        && matches(&target.join(old), payload)?
    {
        return Ok(false);
    }

    let version = new_version_dir(target)?;
    let written = (|| {
        for (path, file) in payload {
            let dest = version.join(path);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&dest, &file.data)?;
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(file.mode))?;
        }
        let tmp = target.join(DATA_DIR_TMP);
        let _ = std::fs::remove_file(&tmp);
        symlink(version.file_name().expect("a version has a name"), &tmp)?;
        std::fs::rename(&tmp, target.join(DATA_DIR))
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&version);
        return Err(e);
    }

    // The names the user sees: each top-level entry of the payload, as a link into `..data`.
    let wanted: BTreeSet<String> = payload.keys().map(|p| top_level(p)).collect();
    for name in &wanted {
        let link = target.join(name);
        let into_data = Path::new(DATA_DIR).join(name);
        if std::fs::read_link(&link).ok().as_deref() == Some(into_data.as_path()) {
            continue;
        }
        // Whatever else holds the name (a file an older agent wrote in place) gives way.
        remove_entry(&link)?;
        symlink(into_data, &link)?;
    }
    for entry in std::fs::read_dir(target)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || wanted.contains(&name) {
            continue;
        }
        // A link of a key that is gone, or a file an older layout left.
        remove_entry(&entry.path())?;
    }
    // Versions other than the current one (the previous, or one an interrupted write left).
    for entry in std::fs::read_dir(target)? {
        let entry = entry?;
        let name = entry.file_name();
        let is_version = name.to_string_lossy().starts_with("..")
            && name != DATA_DIR
            && name != DATA_DIR_TMP
            && entry.file_type()?.is_dir();
        if is_version && Some(name.as_os_str()) != version.file_name() {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(true)
}

/// Removes whatever is at `path`: a directory with its contents, a file or a link (not its
/// target); nothing there is fine.
pub(crate) fn remove_entry(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuses a path that is absolute, climbs out, or starts with `..`.
fn check_path(path: &str) -> io::Result<()> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && !path.starts_with("..")
        && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "invalid path {path:?}: it must be relative, must not contain '..' and must not start with '..'"
            ),
        ))
    }
}

/// The first component of a checked path.
fn top_level(path: &str) -> String {
    path.split('/')
        .find(|c| !c.is_empty() && *c != ".")
        .unwrap_or(path)
        .to_string()
}

/// A fresh version directory inside `target`, named after the time as kubelet's are.
fn new_version_dir(target: &Path) -> io::Result<PathBuf> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let stamp = now.strftime("%Y_%m_%d_%H_%M_%S").to_string();
    for attempt in 0u32.. {
        let dir = target.join(format!(
            "..{stamp}.{:09}{}",
            now.subsec_nanosecond(),
            if attempt == 0 {
                String::new()
            } else {
                format!("-{attempt}")
            }
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("some attempt finds a free name")
}

/// Whether the version at `dir` holds exactly `payload` (contents and modes).
fn matches(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut found = BTreeSet::new();
    if !collect(dir, dir, &mut found)? {
        return Ok(false);
    }
    if found.len() != payload.len() {
        return Ok(false);
    }
    for (path, file) in payload {
        if !found.contains(path) {
            return Ok(false);
        }
        let p = dir.join(path);
        let meta = std::fs::metadata(&p)?;
        if meta.permissions().mode() & 0o7777 != file.mode || std::fs::read(&p)? != file.data {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The relative paths of the files under `dir` into `out`; `false` if `dir` is not a directory.
fn collect(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<bool> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn files_are_links_into_the_current_version_and_updates_swap_it_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        let first = payload(&[("a.conf", "A1", 0o644), ("sub/b", "B1", 0o600)]);
        assert!(write(&vol, &first).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a.conf")).unwrap(), "A1");
        assert_eq!(std::fs::read_to_string(vol.join("sub/b")).unwrap(), "B1");
        assert_eq!(
            std::fs::read_link(vol.join("a.conf")).unwrap(),
            Path::new("..data/a.conf"),
            "kubelet's layout: a relative link into ..data"
        );
        let mode = std::fs::metadata(vol.join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let v1 = std::fs::read_link(vol.join(DATA_DIR)).unwrap();
        assert!(v1.to_string_lossy().starts_with(".."));

        // The same payload writes nothing.
        assert!(!write(&vol, &first).unwrap());
        assert_eq!(std::fs::read_link(vol.join(DATA_DIR)).unwrap(), v1);

        // A changed value, a removed key and a new key arrive together.
        let second = payload(&[("a.conf", "A2", 0o644), ("c", "C", 0o644)]);
        assert!(write(&vol, &second).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a.conf")).unwrap(), "A2");
        assert_eq!(std::fs::read_to_string(vol.join("c")).unwrap(), "C");
        assert!(
            std::fs::symlink_metadata(vol.join("sub")).is_err(),
            "a gone key's link goes"
        );
        let v2 = std::fs::read_link(vol.join(DATA_DIR)).unwrap();
        assert_ne!(v1, v2);
        assert!(!vol.join(&v1).exists(), "the old version is removed");
        let listed = names(&vol);
        assert_eq!(listed.len(), 4, "{listed:?}");
        assert!(listed.contains(&"..data".to_string()) && listed.contains(&"a.conf".to_string()));

        // A mode change alone is a change.
        let third = payload(&[("a.conf", "A2", 0o755), ("c", "C", 0o644)]);
        assert!(write(&vol, &third).unwrap());
        let mode = std::fs::metadata(vol.join("a.conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);

        // Empty: only the writer's own names are left.
        assert!(write(&vol, &Payload::new()).unwrap());
        assert_eq!(names(&vol).len(), 2, "..data and its version");
    }

    #[test]
    fn a_directory_a_pod_held_before_becomes_the_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("old/dir")).unwrap();
        std::fs::write(vol.join("a"), "plain file").unwrap();
        assert!(write(&vol, &payload(&[("a", "new", 0o644)])).unwrap());
        assert_eq!(std::fs::read_to_string(vol.join("a")).unwrap(), "new");
        assert!(
            std::fs::read_link(vol.join("a")).is_ok(),
            "the file became a link"
        );
        assert!(
            !vol.join("old").exists(),
            "what the payload does not name goes"
        );
        assert!(!write(&vol, &payload(&[("a", "new", 0o644)])).unwrap());
    }

    #[test]
    fn paths_that_climb_out_or_clash_with_the_layout_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/passwd", "a/../../b", "..data", "..x", ""] {
            let err = write(&tmp.path().join("v"), &payload(&[(bad, "x", 0o644)])).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
            assert!(err.to_string().contains("invalid path"), "{err}");
        }
    }
}
