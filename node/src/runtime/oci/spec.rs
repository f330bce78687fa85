//! The OCI runtime spec (`config.json`) of a container: the image config merged with the pod's
//! container the Kubernetes way, namespaces, mounts and cgroup limits.
//!
//! - argv: the pod's `command` replaces the image's `Entrypoint` (and drops its `Cmd`); the
//!   pod's `args` replace `Cmd`. Neither anywhere is an error the pod reports.
//! - env: the image's `Env`, then the pod's (a pod variable wins), `PATH` and `HOSTNAME` set.
//! - cwd: the pod's `workingDir`, else the image's `WorkingDir`, else `/`.
//! - user: the image's `User` (`uid[:gid]`, or names looked up in the rootfs' `/etc/passwd` and
//!   `/etc/group`).
//! - namespaces: pid, ipc, uts and mount of its own; the pod's network namespace when it has
//!   one (see [`super::network`]), else the host's (the pod's address is one of the host's, see
//!   `pod::address`).
//! - mounts: the defaults (`/proc`, `/dev`, `/sys`...), volumes as binds, `/etc/hosts` and
//!   `/etc/resolv.conf`.
//! - cgroups: under `/flotilla/<id>`, `limits.memory` as the memory limit and `limits.cpu` as a
//!   CFS quota.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespace,
    LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, UserBuilder,
};

use crate::runtime::{ContainerSpec, RuntimeError};

/// The CFS period the CPU quota is expressed in (µs).
const CPU_PERIOD: u64 = 100_000;
/// Used when neither the image nor the pod sets `PATH`.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cgroup (relative to each hierarchy's root) of container `id`.
pub fn cgroup_path(id: &str) -> String {
    format!("/flotilla/{id}")
}

/// The process a container runs: argv by Kubernetes' rules over the image config.
pub fn argv(config: &serde_json::Value, spec: &ContainerSpec) -> Result<Vec<String>, String> {
    let list = |key: &str| -> Vec<String> {
        config["config"][key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let argv: Vec<String> = match (&spec.command, &spec.command_args) {
        (Some(command), Some(args)) => command.iter().chain(args).cloned().collect(),
        (Some(command), None) => command.clone(),
        (None, Some(args)) => list("Entrypoint").into_iter().chain(args.clone()).collect(),
        (None, None) => list("Entrypoint").into_iter().chain(list("Cmd")).collect(),
    };
    if argv.is_empty() {
        return Err(format!(
            "image {} has no entrypoint or command, and the container sets no command: \
             nothing to run",
            spec.image.image
        ));
    }
    Ok(argv)
}

/// The environment: the image's, overridden by the pod's.
fn env(config: &serde_json::Value, spec: &ContainerSpec, hostname: &str) -> Vec<String> {
    let mut vars: Vec<(String, String)> = config["config"]["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
        })
        .collect();
    let mut set = |k: &str, v: &str| match vars.iter_mut().find(|(n, _)| n == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => vars.push((k.to_string(), v.to_string())),
    };
    set("HOSTNAME", hostname);
    if spec.stdio.tty {
        // As containerd's `WithTTY`: a terminal's programs learn what it is from `TERM`.
        set("TERM", "xterm");
    }
    for (k, v) in &spec.env {
        set(k, v);
    }
    let mut out: Vec<String> = vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

/// `uid[:gid]` from the image's `User`, names resolved in the rootfs.
fn user(config: &serde_json::Value, rootfs: &Path) -> Result<(u32, u32), String> {
    let text = config["config"]["User"].as_str().unwrap_or_default();
    if text.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let content = std::fs::read_to_string(rootfs.join(file)).ok()?;
        content.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[0] == name)
                .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
        })
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(uid) => (uid, lookup_gid_of_uid(rootfs, uid).unwrap_or(0)),
        Err(_) => lookup("etc/passwd", u)
            .ok_or_else(|| format!("user {u:?} of the image is not in its /etc/passwd"))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let content = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
                content
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok())?
                    })
                    .ok_or_else(|| format!("group {g:?} of the image is not in its /etc/group"))?
            }
        },
    };
    Ok((uid, gid))
}

fn lookup_gid_of_uid(rootfs: &Path, uid: u32) -> Option<u32> {
    let content = std::fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    content.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok())?
    })
}

fn bind(destination: &str, source: &Path, read_only: bool) -> Result<Mount, String> {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    options.push(if read_only { "ro" } else { "rw" }.to_string());
    MountBuilder::default()
        .destination(PathBuf::from(destination))
        .typ("bind")
        .source(source.to_path_buf())
        .options(options)
        .build()
        .map_err(|e| e.to_string())
}

/// The capabilities a container gets by default (containerd's and Docker's set).
const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Where the files the spec mounts live on the host.
#[derive(Clone, Debug)]
pub struct HostFiles {
    /// The container's rootfs.
    pub rootfs: PathBuf,
    /// Its `/etc/hosts`.
    pub hosts: PathBuf,
    /// Its `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
    /// The process namespace to join (`/proc/<pid>/ns/pid` of the container it shares
    /// processes with), else it gets one of its own.
    pub pid_namespace: Option<PathBuf>,
}

/// The `/etc/hosts` of a pod with `hostname` at `ip`, and its `hostAliases`.
pub fn hosts_file(
    hostname: &str,
    ip: Option<std::net::IpAddr>,
    aliases: &crate::pod::host_aliases::HostAliases,
) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file (flotilla).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    if let Some(ip) = ip {
        s.push_str(&format!("{ip}\t{hostname}\n"));
    }
    s.push_str(&crate::pod::host_aliases::hosts_entries(aliases));
    s
}

/// Builds the spec of container `spec` from the image `config`. A container its
/// `runAsNonRoot` refuses is a [`RuntimeError::Config`]; anything else that cannot be built, an
/// [`RuntimeError::InvalidImage`].
pub fn build(
    config: &serde_json::Value,
    spec: &ContainerSpec,
    hostname: &str,
    files: &HostFiles,
) -> Result<Spec, RuntimeError> {
    let image_user = user(config, &files.rootfs).map_err(RuntimeError::InvalidImage)?;
    spec.security
        .verify_non_root(image_user.0)
        .map_err(RuntimeError::Config)?;
    assemble(config, spec, hostname, files, image_user).map_err(RuntimeError::InvalidImage)
}

/// [`build`]'s spec, the image's user (uid, gid) resolved.
fn assemble(
    config: &serde_json::Value,
    spec: &ContainerSpec,
    hostname: &str,
    files: &HostFiles,
    (image_uid, image_gid): (u32, u32),
) -> Result<Spec, String> {
    let args = argv(config, spec)?;
    // `runAsUser` and `runAsGroup` replace the image's; a uid given alone takes its group from
    // the image's /etc/passwd, as containerd does.
    let security = &spec.security;
    let uid = security.run_as_user.map_or(image_uid, |u| u as u32);
    let gid = match (security.run_as_group, security.run_as_user) {
        (Some(g), _) => g as u32,
        (None, Some(u)) => lookup_gid_of_uid(&files.rootfs, u as u32).unwrap_or(0),
        (None, None) => image_gid,
    };
    let cwd = spec
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| {
            config["config"]["WorkingDir"]
                .as_str()
                .filter(|d| !d.is_empty())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "/".into());
    let caps: oci_spec::runtime::Capabilities = security
        .capabilities(DEFAULT_CAPABILITIES)?
        .into_iter()
        .collect();
    // No inheritable or ambient capabilities, as containerd gives none since CVE-2022-24769
    // (the builder's defaults hold three, and ambient ones outside the permitted set make
    // runc fail to apply them).
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(|e| e.to_string())?;
    let process = ProcessBuilder::default()
        .terminal(spec.stdio.tty)
        .args(args)
        .env(env(config, spec, hostname))
        .cwd(PathBuf::from(cwd))
        .user({
            let mut user = UserBuilder::default().uid(uid).gid(gid);
            if !security.supplemental_groups.is_empty() {
                let groups = security.supplemental_groups.iter().map(|g| *g as u32);
                user = user.additional_gids(groups.collect::<Vec<_>>());
            }
            user.build().map_err(|e| e.to_string())?
        })
        .capabilities(capabilities)
        .no_new_privileges(security.no_new_privileges())
        .build()
        .map_err(|e| e.to_string())?;
    let mut mounts = oci_spec::runtime::get_default_mounts();
    if security.privileged {
        // A privileged container's /sys is writable, as containerd mounts it.
        for m in mounts
            .iter_mut()
            .filter(|m| m.typ().as_deref() == Some("sysfs"))
        {
            let options = m.options().clone().unwrap_or_default();
            m.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    mounts.push(bind("/etc/hosts", &files.hosts, false)?);
    mounts.push(bind("/etc/resolv.conf", &files.resolv_conf, true)?);
    for m in &spec.mounts {
        mounts.push(bind(&m.container_path, &m.host_path, m.read_only)?);
    }
    let mut resources = LinuxResourcesBuilder::default();
    if let Some(bytes) = spec.memory_limit {
        let memory = LinuxMemoryBuilder::default()
            .limit(bytes as i64)
            .swap(bytes as i64)
            .build()
            .map_err(|e| e.to_string())?;
        resources = resources.memory(memory);
    }
    if let Some(millis) = spec.cpu_millis {
        let cpu = LinuxCpuBuilder::default()
            .quota((millis * CPU_PERIOD / 1000).max(1000) as i64)
            .period(CPU_PERIOD)
            .build()
            .map_err(|e| e.to_string())?;
        resources = resources.cpu(cpu);
    }
    let mut out = Spec::default();
    out.set_process(Some(process));
    out.set_hostname(Some(hostname.to_string()));
    out.set_root(Some(
        RootBuilder::default()
            .path(files.rootfs.clone())
            .readonly(security.read_only_root_filesystem)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    out.set_mounts(Some(mounts));
    if let Some(linux) = out.linux_mut() {
        let namespaces = linux.namespaces().clone().map(|ns| {
            let mut ns: Vec<LinuxNamespace> = ns
                .into_iter()
                .filter(|n| {
                    !matches!(
                        n.typ(),
                        LinuxNamespaceType::Network | LinuxNamespaceType::Cgroup
                    )
                })
                .collect();
            if let Some(path) = &spec.netns {
                let mut net = LinuxNamespace::default();
                net.set_typ(LinuxNamespaceType::Network);
                net.set_path(Some(path.clone()));
                ns.push(net);
            }
            // hostPID and hostIPC: no namespace of its own, the node's.
            let host = spec.host_namespaces;
            ns.retain(|n| {
                !(host.pid && n.typ() == LinuxNamespaceType::Pid
                    || host.ipc && n.typ() == LinuxNamespaceType::Ipc)
            });
            if let Some(path) = &files.pid_namespace {
                for n in ns.iter_mut().filter(|n| n.typ() == LinuxNamespaceType::Pid) {
                    n.set_path(Some(path.clone()));
                }
            }
            ns
        });
        linux.set_namespaces(namespaces);
        linux.set_cgroups_path(Some(PathBuf::from(cgroup_path(&spec.id.0))));
        if security.privileged {
            // Nothing of the kernel's is hidden or read-only for it.
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
        linux.set_resources(Some(resources.build().map_err(|e| e.to_string())?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ContainerId, ContainerOutput, Mount as VolumeMount, OutputStream};
    use crate::runtime::{PreparedImage, Workload};
    use serde_json::{Value, json};
    use std::sync::Arc;

    struct Discard;
    impl ContainerOutput for Discard {
        fn write(&self, _: OutputStream, _: &[u8]) {}
    }

    fn spec(command: Option<&[&str]>, args: Option<&[&str]>) -> ContainerSpec {
        let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        ContainerSpec {
            id: ContainerId("uid-main-0".into()),
            image: PreparedImage {
                image: "busybox:v1".into(),
                image_id: "busybox@sha256:1".into(),
                fetched: false,
                workload: Workload::Command,
            },
            args: vec![],
            command: command.map(owned),
            command_args: args.map(owned),
            working_dir: None,
            hostname: "web-1".into(),
            env: vec![
                ("GREETING".into(), "hi".into()),
                ("PATH".into(), "/bin".into()),
            ],
            mounts: vec![VolumeMount {
                container_path: "/data".into(),
                host_path: "/tmp/vol".into(),
                read_only: true,
            }],
            memory_limit: Some(64 << 20),
            cpu_millis: Some(500),
            listen: None,
            netns: None,
            output: Arc::new(Discard),
            resolver: None,
            host_aliases: Vec::new(),
            resolv_conf: None,
            stdio: Default::default(),
            share_processes_with: None,
            security: Default::default(),
            host_namespaces: Default::default(),
            adopt_only: false,
        }
    }

    #[test]
    fn argv_follows_kubernetes_rules_over_the_image() {
        let config = json!({"config": {"Entrypoint": ["/ep"], "Cmd": ["c1", "c2"]}});
        // (command, args, argv)
        type Row<'a> = (Option<&'a [&'a str]>, Option<&'a [&'a str]>, &'a [&'a str]);
        let table: [Row; 4] = [
            (None, None, &["/ep", "c1", "c2"]),
            (Some(&["/bin/x"]), None, &["/bin/x"]),
            (None, Some(&["a"]), &["/ep", "a"]),
            (Some(&["/bin/x"]), Some(&["a"]), &["/bin/x", "a"]),
        ];
        for (command, args, want) in table {
            assert_eq!(argv(&config, &spec(command, args)).unwrap(), want);
        }
        let err = argv(&json!({"config": {}}), &spec(None, None)).unwrap_err();
        assert!(err.contains("no entrypoint or command"), "{err}");
    }

    #[test]
    fn the_spec_merges_env_mounts_limits_and_keeps_the_host_network() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        let config = json!({"config": {"Cmd": ["/app"], "Env": ["PATH=/usr/bin", "A=1"],
            "WorkingDir": "/srv", "User": "app"}});
        let files = HostFiles {
            rootfs: rootfs.clone(),
            hosts: tmp.path().join("hosts"),
            resolv_conf: "/etc/resolv.conf".into(),
            pid_namespace: None,
        };
        let s = build(&config, &spec(None, None), "web-1", &files).unwrap();
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["process"]["args"], json!(["/app"]));
        assert_eq!(
            v["process"]["env"],
            json!(["PATH=/bin", "A=1", "HOSTNAME=web-1", "GREETING=hi"])
        );
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(v["process"]["user"]["gid"], 1001);
        assert_eq!(v["hostname"], "web-1");
        let ns: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network") && ns.contains(&"pid") && ns.contains(&"mount"));
        let mut in_pod_network = spec(None, None);
        in_pod_network.netns = Some("/run/netns/flotilla-uid".into());
        let v2 = serde_json::to_value(build(&config, &in_pod_network, "web-1", &files).unwrap())
            .unwrap();
        let net = v2["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == "network")
            .cloned();
        assert_eq!(
            net,
            Some(json!({"type": "network", "path": "/run/netns/flotilla-uid"}))
        );
        assert!(
            v["linux"]["namespaces"]
                .as_array()
                .unwrap()
                .contains(&json!({"type": "pid"}))
        );
        // An ephemeral container with a target joins the target's process namespace.
        let sharing = HostFiles {
            pid_namespace: Some("/proc/42/ns/pid".into()),
            ..files.clone()
        };
        let v3 =
            serde_json::to_value(build(&config, &spec(None, None), "web-1", &sharing).unwrap())
                .unwrap();
        let pids: Vec<&Value> = v3["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "pid")
            .collect();
        assert_eq!(pids, [&json!({"type": "pid", "path": "/proc/42/ns/pid"})]);
        // hostPID and hostIPC: the node's namespaces.
        let mut on_host = spec(None, None);
        on_host.host_namespaces = crate::runtime::HostNamespaces {
            pid: true,
            ipc: true,
        };
        let v4 = serde_json::to_value(build(&config, &on_host, "web-1", &files).unwrap()).unwrap();
        let kinds: Vec<&str> = v4["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(
            !kinds.contains(&"pid") && !kinds.contains(&"ipc"),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&"mount") && kinds.contains(&"uts"),
            "{kinds:?}"
        );
        assert_eq!(v["linux"]["cgroupsPath"], "/flotilla/uid-main-0");
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 50_000);
        let data = v["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/data")
            .unwrap();
        assert_eq!(data["source"], "/tmp/vol");
        assert!(data["options"].as_array().unwrap().contains(&json!("ro")));
        let bad = json!({"config": {"Cmd": ["/app"], "User": "nobody-here"}});
        assert!(build(&bad, &spec(None, None), "w", &files).is_err());
    }

    #[test]
    fn the_security_context_sets_user_groups_capabilities_and_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(
            rootfs.join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nweb:x:1000:1500::/:/bin/sh\n",
        )
        .unwrap();
        let files = HostFiles {
            rootfs,
            hosts: tmp.path().join("hosts"),
            resolv_conf: "/etc/resolv.conf".into(),
            pid_namespace: None,
        };
        let config = json!({"config": {"Cmd": ["/app"]}});
        let with = |security: crate::runtime::security::Security| {
            let mut s = spec(None, None);
            s.security = security;
            serde_json::to_value(build(&config, &s, "w", &files).unwrap()).unwrap()
        };
        let plain = with(Default::default());
        assert_eq!(plain["process"]["user"], json!({"uid": 0, "gid": 0}));
        assert_eq!(plain["root"]["readonly"], false);
        assert!(
            plain["linux"]["maskedPaths"]
                .as_array()
                .is_some_and(|p| !p.is_empty())
        );
        let v = with(crate::runtime::security::Security {
            run_as_user: Some(1000),
            supplemental_groups: vec![4000, 5000],
            drop: vec!["ALL".into()],
            add: vec!["NET_BIND_SERVICE".into()],
            read_only_root_filesystem: true,
            allow_privilege_escalation: Some(false),
            ..Default::default()
        });
        // A uid alone takes its group from the image's /etc/passwd.
        assert_eq!(
            v["process"]["user"],
            json!({"uid": 1000, "gid": 1500, "additionalGids": [4000, 5000]})
        );
        assert_eq!(
            v["process"]["capabilities"]["effective"],
            json!(["CAP_NET_BIND_SERVICE"])
        );
        assert_eq!(v["process"]["capabilities"]["ambient"], json!([]));
        assert_eq!(v["process"]["capabilities"]["inheritable"], json!([]));
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert_eq!(v["root"]["readonly"], true);
        let group = with(crate::runtime::security::Security {
            run_as_user: Some(7),
            run_as_group: Some(8),
            ..Default::default()
        });
        assert_eq!(group["process"]["user"], json!({"uid": 7, "gid": 8}));
        let privileged = with(crate::runtime::security::Security {
            privileged: true,
            ..Default::default()
        });
        let caps = privileged["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_SYS_ADMIN")), "{caps:?}");
        assert!(privileged["linux"]["maskedPaths"].is_null());
        assert!(privileged["linux"]["readonlyPaths"].is_null());
        let sys = privileged["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/sys")
            .unwrap();
        assert!(
            !sys["options"].as_array().unwrap().contains(&json!("ro")),
            "{sys}"
        );
        let unknown = crate::runtime::security::Security {
            add: vec!["FLY".into()],
            ..Default::default()
        };
        let mut s = spec(None, None);
        s.security = unknown;
        let err = build(&config, &s, "w", &files).unwrap_err();
        assert!(
            matches!(&err, RuntimeError::InvalidImage(m) if m.contains("FLY")),
            "{err:?}"
        );
        // runAsNonRoot refuses the image's root user: a configuration error, not the image's.
        s.security = crate::runtime::security::Security {
            run_as_non_root: true,
            ..Default::default()
        };
        let err = build(&config, &s, "w", &files).unwrap_err();
        assert!(matches!(err, RuntimeError::Config(_)), "{err:?}");
    }
}
