//! Container root filesystems: an image's layers unpacked once (whiteouts applied), and a
//! per-container view of it — an overlay mount (the image read-only below, the container's
//! writes in its own upper directory) where the host allows, a copy otherwise.

use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use flate2::read::GzDecoder;

use crate::image::LayerBlob;

/// Unpacks `layers` (bottom first) into `dest` unless already done; the result is atomic (a
/// temporary directory renamed into place), so a crash never leaves a half-unpacked image.
pub fn unpack_image(layers: &[LayerBlob], dest: &Path) -> io::Result<()> {
    if dest.is_dir() {
        return Ok(());
    }
    let parent = dest.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.unpacking-{}",
        dest.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("rootfs"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for layer in layers {
        if let Err(e) = open_layer(layer).and_then(|l| apply_layer(l, &tmp)) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io::Error::new(
                e.kind(),
                format!("layer {}: {e}", layer.digest),
            ));
        }
    }
    match std::fs::rename(&tmp, dest) {
        Ok(()) => Ok(()),
        // Someone else finished first.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// A layer's uncompressed tar stream (gzip detected by its magic number).
fn open_layer(layer: &LayerBlob) -> io::Result<Box<dyn Read>> {
    if layer.media_type.ends_with("zstd") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd-compressed layers are not supported",
        ));
    }
    let mut file = std::fs::File::open(&layer.path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = io::Cursor::new(magic[..n].to_vec()).chain(file);
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// Applies one layer onto `root` with the image spec's overlay rules: `.wh.<name>` deletes
/// `<name>` from the layers below, `.wh..wh..opq` empties its directory of them; everything
/// else is unpacked (owners, modes and links kept), paths never escaping `root`.
fn apply_layer(layer: Box<dyn Read>, root: &Path) -> io::Result<()> {
    let mut archive = tar::Archive::new(layer);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let Some(rel) = clean(&path) else {
            continue;
        };
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let dir = root.join(rel.parent().unwrap_or(Path::new("")));
        if name == ".wh..wh..opq" {
            if let Ok(children) = std::fs::read_dir(&dir) {
                for child in children.flatten() {
                    remove(&child.path())?;
                }
            }
            continue;
        }
        if let Some(deleted) = name.strip_prefix(".wh.") {
            remove(&dir.join(deleted))?;
            continue;
        }
        let target = root.join(&rel);
        // A later layer may replace a directory with a file or a link, or the other way round.
        if let Ok(meta) = std::fs::symlink_metadata(&target) {
            let is_dir_entry = entry.header().entry_type().is_dir();
            if meta.is_dir() != is_dir_entry || meta.file_type().is_symlink() {
                remove(&target)?;
            }
        }
        entry.unpack_in(root).map_err(|e| {
            let source = std::error::Error::source(&e).map(|s| s.to_string());
            io::Error::new(e.kind(), format!("{e}: {}", source.unwrap_or_default()))
        })?;
    }
    Ok(())
}

/// `a/./b/c` stays; `../x`, `/x` and empty paths are made relative or dropped.
fn clean(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// How a container's rootfs was made (and so how it is undone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootfsKind {
    /// An overlay mount over the image.
    Overlay,
    /// A copy of the image.
    Copy,
}

/// Makes `<dir>/rootfs` for a container from the unpacked `image`: an overlay mount when the
/// host allows (root, overlayfs), else a copy.
pub fn make_container_rootfs(image: &Path, dir: &Path) -> io::Result<RootfsKind> {
    let rootfs = dir.join("rootfs");
    let (upper, work) = (dir.join("upper"), dir.join("work"));
    for d in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(d)?;
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        image.display(),
        upper.display(),
        work.display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&rootfs)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if mounted {
        return Ok(RootfsKind::Overlay);
    }
    let _ = std::fs::remove_dir(&upper);
    let _ = std::fs::remove_dir(&work);
    std::fs::remove_dir(&rootfs)?;
    let copied = Command::new("cp")
        .arg("-a")
        .arg(image)
        .arg(&rootfs)
        .status()?;
    if !copied.success() {
        return Err(io::Error::other(format!(
            "cannot copy {} to {}",
            image.display(),
            rootfs.display()
        )));
    }
    Ok(RootfsKind::Copy)
}

/// Undoes [`make_container_rootfs`] and deletes the container's directory: unmounts the rootfs
/// if it is a mount point (lazily, should something still hold it), then removes everything.
pub fn remove_container_dir(dir: &Path) -> io::Result<()> {
    let rootfs = dir.join("rootfs");
    if is_mount_point(&rootfs) {
        let _ = Command::new("umount").arg(&rootfs).status();
        if is_mount_point(&rootfs) {
            let _ = Command::new("umount").arg("-l").arg(&rootfs).status();
        }
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `path` is listed in `/proc/self/mountinfo`.
pub fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> LayerBlob {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let path = dir.join(name);
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        LayerBlob {
            path,
            digest: format!("sha256:{name}"),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        }
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    }

    #[test]
    fn layers_stack_and_whiteouts_delete_what_lies_below() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let base = layer(d, "base", |b| {
            file(b, "bin/app", b"v1");
            file(b, "etc/old.conf", b"x");
            file(b, "data/a", b"a");
            file(b, "data/b", b"b");
        });
        let top = layer(d, "top", |b| {
            file(b, "bin/app", b"v2");
            file(b, "etc/.wh.old.conf", b"");
            file(b, "data/.wh..wh..opq", b"");
            file(b, "data/c", b"c");
        });
        let root = d.join("img/rootfs");
        unpack_image(&[base, top], &root).unwrap();
        assert_eq!(std::fs::read(root.join("bin/app")).unwrap(), b"v2");
        assert!(!root.join("etc/old.conf").exists());
        assert!(root.join("etc").is_dir());
        assert!(!root.join("data/a").exists() && !root.join("data/b").exists());
        assert_eq!(std::fs::read(root.join("data/c")).unwrap(), b"c");
        // Done once: a second call leaves it alone.
        unpack_image(&[], &root).unwrap();
        assert!(root.join("bin/app").exists());
    }

    #[test]
    fn a_container_rootfs_is_a_view_of_the_image_and_goes_away_completely() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("image");
        std::fs::create_dir_all(image.join("bin")).unwrap();
        std::fs::write(image.join("bin/app"), b"x").unwrap();
        let dir = tmp.path().join("c1");
        make_container_rootfs(&image, &dir).unwrap();
        assert_eq!(std::fs::read(dir.join("rootfs/bin/app")).unwrap(), b"x");
        std::fs::write(dir.join("rootfs/new"), b"y").unwrap();
        assert!(!image.join("new").exists(), "writes stay in the container");
        remove_container_dir(&dir).unwrap();
        assert!(!dir.exists());
        assert!(!is_mount_point(&dir.join("rootfs")));
    }
}
