//! A container's security context as a runtime applies it: the pod's `securityContext` merged
//! with the container's, as kubelet's `DetermineEffectiveSecurityContext` does (the container's
//! `runAsUser`, `runAsGroup` and `runAsNonRoot` win over the pod's), and the capability set
//! containerd derives from it.
//!
//! Container runtimes apply it; a Wasm guest has no user, capabilities or root filesystem of
//! its own, and the Wasm runtime ignores it.

use k8s_openapi::api::core::v1::{PodSecurityContext, SecurityContext};
use oci_spec::runtime::Capability;

/// Every capability the kernel has (as of Linux 6.x), by number: `CAP_CHOWN` is bit 0.
const BY_BIT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities in a `/proc/*/status` mask (`CapBnd:` and the like, in hex).
fn of_mask(mask: u64) -> Vec<&'static str> {
    BY_BIT
        .iter()
        .enumerate()
        .filter(|(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The capabilities the agent itself may hand out (its bounding set): what "every
/// capability" means for a privileged container, as containerd's `WithAllCurrentCapabilities`
/// (a machine or sandbox may withhold some, e.g. `SYS_RESOURCE`). Every one the kernel has
/// when the set cannot be read.
pub fn current() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok());
    of_mask(mask.unwrap_or(u64::MAX))
}

/// The effective security context of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// `runAsUser`: the uid its process runs as, instead of the image's user.
    pub run_as_user: Option<i64>,
    /// `runAsGroup`: its primary gid, instead of the image's.
    pub run_as_group: Option<i64>,
    /// `runAsNonRoot`: refuse to start it as uid 0.
    pub run_as_non_root: bool,
    /// The pod's `supplementalGroups`, then its `fsGroup`.
    pub supplemental_groups: Vec<i64>,
    /// `privileged`: every capability, and no masked or read-only kernel paths.
    pub privileged: bool,
    /// `capabilities.add`, as written (`NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`).
    pub add: Vec<String>,
    /// `capabilities.drop`, as written.
    pub drop: Vec<String>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// `allowPrivilegeEscalation`: `Some(false)` sets no_new_privs.
    pub allow_privilege_escalation: Option<bool>,
}

impl Security {
    /// The effective context of a container with `container`'s context in a pod with `pod`'s.
    pub fn of(pod: Option<&PodSecurityContext>, container: Option<&SecurityContext>) -> Security {
        let caps = container.and_then(|c| c.capabilities.as_ref());
        Security {
            run_as_user: container
                .and_then(|c| c.run_as_user)
                .or_else(|| pod.and_then(|p| p.run_as_user)),
            run_as_group: container
                .and_then(|c| c.run_as_group)
                .or_else(|| pod.and_then(|p| p.run_as_group)),
            run_as_non_root: container
                .and_then(|c| c.run_as_non_root)
                .or_else(|| pod.and_then(|p| p.run_as_non_root))
                .unwrap_or(false),
            supplemental_groups: pod
                .into_iter()
                .flat_map(|p| p.supplemental_groups.iter().flatten().chain(&p.fs_group))
                .copied()
                .collect(),
            privileged: container.and_then(|c| c.privileged).unwrap_or(false),
            add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
            drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
            read_only_root_filesystem: container
                .and_then(|c| c.read_only_root_filesystem)
                .unwrap_or(false),
            allow_privilege_escalation: container.and_then(|c| c.allow_privilege_escalation),
        }
    }

    /// The capabilities its process gets, as containerd computes them: every one the agent
    /// has ([`current`]) when privileged; else `defaults`, none of them if `drop` has `ALL`,
    /// every one the agent has if `add` has `ALL`, then `add`, less `drop`. An unknown name is
    /// an error.
    pub fn capabilities(&self, defaults: &[Capability]) -> Result<Vec<Capability>, String> {
        let all = || {
            current()
                .into_iter()
                .map(parse)
                .collect::<Result<Vec<_>, _>>()
        };
        if self.privileged {
            return all();
        }
        let is_all = |n: &String| n.eq_ignore_ascii_case("ALL");
        let mut caps: Vec<Capability> = if self.drop.iter().any(is_all) {
            Vec::new()
        } else {
            defaults.to_vec()
        };
        if self.add.iter().any(is_all) {
            caps = all()?;
        }
        for name in self.add.iter().filter(|n| !is_all(n)) {
            let cap = parse(name)?;
            if !caps.contains(&cap) {
                caps.push(cap);
            }
        }
        for name in self.drop.iter().filter(|n| !is_all(n)) {
            let cap = parse(name)?;
            caps.retain(|c| *c != cap);
        }
        Ok(caps)
    }

    /// Whether its process may not gain privileges (`allowPrivilegeEscalation: false`).
    pub fn no_new_privileges(&self) -> bool {
        self.allow_privilege_escalation == Some(false)
    }

    /// Kubelet's `runAsNonRoot` check, given the uid the image's user resolves to: refuses a
    /// container that would run as root.
    pub fn verify_non_root(&self, image_uid: u32) -> Result<(), String> {
        if !self.run_as_non_root {
            return Ok(());
        }
        match self.run_as_user {
            Some(0) => Err("container's runAsUser breaks non-root policy".into()),
            Some(_) => Ok(()),
            None if image_uid == 0 => {
                Err("container has runAsNonRoot and image will run as root".into())
            }
            None => Ok(()),
        }
    }
}

/// A capability by its Kubernetes name (`NET_ADMIN` or `CAP_NET_ADMIN`, any case).
fn parse(name: &str) -> Result<Capability, String> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| format!("unknown capability {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Capabilities;

    const DEFAULTS: &[Capability] = &[Capability::Chown, Capability::Kill, Capability::NetRaw];

    fn with_caps(add: &[&str], drop: &[&str]) -> Security {
        let container = SecurityContext {
            capabilities: Some(Capabilities {
                add: Some(add.iter().map(|s| s.to_string()).collect()),
                drop: Some(drop.iter().map(|s| s.to_string()).collect()),
            }),
            ..SecurityContext::default()
        };
        Security::of(None, Some(&container))
    }

    #[test]
    fn the_containers_user_wins_over_the_pods_and_groups_add_up() {
        let pod = PodSecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(2000),
            run_as_non_root: Some(true),
            supplemental_groups: Some(vec![4000, 4001]),
            fs_group: Some(5000),
            ..PodSecurityContext::default()
        };
        let container = SecurityContext {
            run_as_user: Some(1001),
            ..SecurityContext::default()
        };
        let s = Security::of(Some(&pod), Some(&container));
        assert_eq!(s.run_as_user, Some(1001));
        assert_eq!(s.run_as_group, Some(2000));
        assert!(s.run_as_non_root);
        assert_eq!(s.supplemental_groups, [4000, 4001, 5000]);
        assert_eq!(Security::of(None, None), Security::default());
    }

    #[test]
    fn a_mask_names_its_capabilities_by_bit() {
        assert_eq!(of_mask(0x400), ["NET_BIND_SERVICE"]);
        assert_eq!(of_mask(0x1fffeffffff).len(), BY_BIT.len() - 1);
        assert!(!of_mask(0x1fffeffffff).contains(&"SYS_RESOURCE"));
        assert_eq!(of_mask(u64::MAX), BY_BIT);
        // Every name is one the runtime spec knows.
        for name in BY_BIT {
            parse(name).unwrap();
        }
    }

    #[test]
    fn capabilities_follow_containerds_rules() {
        assert_eq!(
            with_caps(&[], &[]).capabilities(DEFAULTS).unwrap(),
            DEFAULTS
        );
        assert_eq!(
            with_caps(&["NET_ADMIN", "CAP_SYS_TIME", "kill"], &["CHOWN"])
                .capabilities(DEFAULTS)
                .unwrap(),
            [
                Capability::Kill,
                Capability::NetRaw,
                Capability::NetAdmin,
                Capability::SysTime
            ]
        );
        assert_eq!(
            with_caps(&["NET_BIND_SERVICE"], &["ALL"])
                .capabilities(DEFAULTS)
                .unwrap(),
            [Capability::NetBindService]
        );
        let everything = with_caps(&["ALL"], &["SYS_ADMIN"])
            .capabilities(DEFAULTS)
            .unwrap();
        assert_eq!(everything.len(), current().len() - 1);
        assert!(!everything.contains(&Capability::SysAdmin));
        let privileged = Security {
            privileged: true,
            drop: vec!["ALL".into()],
            ..Security::default()
        };
        assert_eq!(
            privileged.capabilities(DEFAULTS).unwrap().len(),
            current().len()
        );
        let err = with_caps(&["FLY"], &[]).capabilities(DEFAULTS).unwrap_err();
        assert_eq!(err, "unknown capability \"FLY\"");
    }

    #[test]
    fn run_as_non_root_refuses_uid_zero_from_the_pod_or_the_image() {
        let s = |user: Option<i64>| Security {
            run_as_non_root: true,
            run_as_user: user,
            ..Security::default()
        };
        assert!(s(None).verify_non_root(1000).is_ok());
        assert!(s(Some(1000)).verify_non_root(0).is_ok());
        assert_eq!(
            s(None).verify_non_root(0).unwrap_err(),
            "container has runAsNonRoot and image will run as root"
        );
        assert_eq!(
            s(Some(0)).verify_non_root(1000).unwrap_err(),
            "container's runAsUser breaks non-root policy"
        );
        assert!(Security::default().verify_non_root(0).is_ok());
        let no_escalation = Security {
            allow_privilege_escalation: Some(false),
            ..Security::default()
        };
        assert!(no_escalation.no_new_privileges());
        assert!(!Security::default().no_new_privileges());
    }
}
