//! A pod's `fsGroup`: kubelet's `SetVolumeOwnership`. The files of the volumes that support
//! ownership management (emptyDir, configMap, secret, downwardAPI, projected, and persistent
//! volumes) get the group, group read (and write, unless the volume is read-only) permission,
//! and their directories the setgid bit, so that files made in them later inherit the group.
//! `fsGroupChangePolicy: OnRootMismatch` skips a volume whose root already has them.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Group read and write, for a writable volume.
const RW_MASK: u32 = 0o660;
/// Group read, for a read-only one.
pub const RO_MASK: u32 = 0o440;
/// Group (and owner) search, for directories.
const EXEC_MASK: u32 = 0o110;
/// The setgid bit.
const SETGID: u32 = 0o2000;

/// The pod's `fsGroupChangePolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangePolicy {
    /// Every file, at every set-up (the default).
    Always,
    /// Only when the volume's root does not have the group and permissions yet.
    OnRootMismatch,
}

impl ChangePolicy {
    /// The policy a pod's `securityContext.fsGroupChangePolicy` names (`Always` when unset).
    pub fn parse(policy: Option<&str>) -> ChangePolicy {
        match policy {
            Some("OnRootMismatch") => ChangePolicy::OnRootMismatch,
            _ => ChangePolicy::Always,
        }
    }
}

/// The mask a file or directory needs.
fn mask(is_dir: bool, read_only: bool) -> u32 {
    let mask = if read_only { RO_MASK } else { RW_MASK };
    if is_dir {
        mask | EXEC_MASK | SETGID
    } else {
        mask
    }
}

/// Whether `meta` already has group `gid` and `mask`'s permissions.
fn has(meta: &std::fs::Metadata, gid: u32, mask: u32) -> bool {
    meta.gid() == gid && meta.mode() & mask == mask
}

/// Gives volume directory `dir` and everything in it (links themselves, not what they point
/// to) group `gid` and the permissions that go with it.
pub fn set_ownership(
    dir: &Path,
    gid: u32,
    read_only: bool,
    policy: ChangePolicy,
) -> io::Result<()> {
    let root = std::fs::metadata(dir)?;
    if policy == ChangePolicy::OnRootMismatch && has(&root, gid, mask(true, read_only)) {
        return Ok(());
    }
    own(dir, gid, read_only)
}

fn own(path: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mask = mask(meta.is_dir(), read_only);
    if meta.mode() & mask != mask {
        let mode = (meta.mode() & 0o7777) | mask;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            own(&entry?.path(), gid, read_only)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_and_gid(p: &Path) -> (u32, u32) {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.mode() & 0o7777, m.gid())
    }

    #[test]
    fn files_and_directories_get_the_group_and_its_permissions() {
        let tmp = tempfile::tempdir().unwrap();
        let vol = tmp.path().join("vol");
        std::fs::create_dir_all(vol.join("sub")).unwrap();
        std::fs::write(vol.join("sub/key"), "v").unwrap();
        std::fs::set_permissions(vol.join("sub/key"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        std::os::unix::fs::symlink("sub/key", vol.join("key")).unwrap();
        // The test's own group: a change any user may make to their own files.
        let gid = std::fs::metadata(tmp.path()).unwrap().gid();
        set_ownership(&vol, gid, true, ChangePolicy::Always).unwrap();
        assert_eq!(mode_and_gid(&vol.join("sub/key")), (0o440, gid));
        let (dir_mode, dir_gid) = mode_and_gid(&vol.join("sub"));
        assert_eq!(dir_gid, gid);
        assert_eq!(dir_mode & (SETGID | 0o550), SETGID | 0o550, "{dir_mode:o}");
        assert_eq!(
            std::fs::read_link(vol.join("key")).unwrap(),
            Path::new("sub/key")
        );
        // Writable volumes give the group write too.
        set_ownership(&vol, gid, false, ChangePolicy::Always).unwrap();
        assert_eq!(mode_and_gid(&vol.join("sub/key")).0, 0o660);
        // OnRootMismatch leaves a volume whose root is right alone.
        std::fs::set_permissions(vol.join("sub/key"), std::fs::Permissions::from_mode(0o400))
            .unwrap();
        set_ownership(&vol, gid, false, ChangePolicy::OnRootMismatch).unwrap();
        assert_eq!(mode_and_gid(&vol.join("sub/key")).0, 0o400);
        assert_eq!(
            ChangePolicy::parse(Some("OnRootMismatch")),
            ChangePolicy::OnRootMismatch
        );
        assert_eq!(ChangePolicy::parse(None), ChangePolicy::Always);
    }
}
