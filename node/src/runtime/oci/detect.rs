//! Which OCI runtimes work on this host: each candidate runs a trial container (a fresh cgroup,
//! pid, ipc, uts and mount namespaces, `/bin/true` from the host's read-only `/usr`) to the end.
//! A runtime that is missing, or refuses the host (crun 1.8 on a hybrid cgroup v1 layout, any
//! runtime without root), is not offered as a RuntimeClass handler, and the reason is logged.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use oci_spec::runtime::{LinuxNamespaceType, MountBuilder, ProcessBuilder, RootBuilder, Spec};

use super::runc::{RuntimeBinary, last_error};
use super::spec::cgroup_path;

/// The runtimes tried, in order: RuntimeClass handler = binary name.
pub const CANDIDATES: &[&str] = &["runc", "crun"];

/// How long a trial may take.
const TRIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// Tries `program` with a trial container under `work`; the binary (with its state root under
/// `state_root`) when it works, else why not.
pub async fn probe(program: &str, work: &Path, state_root: &Path) -> Result<RuntimeBinary, String> {
    let version = tokio::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
    match version {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{program} is not installed"));
        }
        Err(e) => return Err(format!("cannot run {program}: {e}")),
        Ok(_) => {}
    }
    if !rustix::process::geteuid().is_root() {
        return Err(format!(
            "{program} needs root here (rootless containers are not supported)"
        ));
    }
    let bundle = work.join(format!("trial-{program}"));
    let _ = std::fs::remove_dir_all(&bundle);
    let result = trial(program, &bundle).await;
    let _ = std::fs::remove_dir_all(&bundle);
    result?;
    std::fs::create_dir_all(state_root)
        .map_err(|e| format!("cannot create {}: {e}", state_root.display()))?;
    Ok(RuntimeBinary {
        program: PathBuf::from(program),
        root: state_root.to_path_buf(),
    })
}

async fn trial(program: &str, bundle: &Path) -> Result<(), String> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
    let id = format!("flotilla-trial-{program}-{}", std::process::id());
    let spec = trial_spec(&rootfs, &id)?;
    spec.save(bundle.join("config.json"))
        .map_err(|e| e.to_string())?;
    let binary = RuntimeBinary {
        program: PathBuf::from(program),
        root: bundle.join("state"),
    };
    let log = bundle.join("runtime.log");
    let mut c = tokio::process::Command::new(program);
    c.arg("--root")
        .arg(&binary.root)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "run", "--bundle"])
        .arg(bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TRIAL_TIMEOUT, c.output()).await;
    let _ = binary.delete(&id).await;
    match out {
        Err(_) => Err(format!(
            "a trial container did not finish in {TRIAL_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("cannot run {program}: {e}")),
        Ok(Ok(out)) if out.status.success() => Ok(()),
        Ok(Ok(out)) => Err(format!(
            "a trial container failed: {}",
            last_error(&log)
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string())
        )),
    }
}

/// A container running the host's `/bin/true` with the host's `/usr` (and friends) read-only.
fn trial_spec(rootfs: &Path, id: &str) -> Result<Spec, String> {
    let mut mounts = oci_spec::runtime::get_default_mounts();
    for dir in ["/usr", "/bin", "/lib", "/lib64", "/sbin"] {
        if Path::new(dir).exists() {
            mounts.push(
                MountBuilder::default()
                    .destination(PathBuf::from(dir))
                    .typ("bind")
                    .source(PathBuf::from(dir))
                    .options(vec!["rbind".into(), "ro".into()])
                    .build()
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    let mut spec = Spec::default();
    spec.set_process(Some(
        ProcessBuilder::default()
            .args(vec!["/bin/true".to_string()])
            .cwd(PathBuf::from("/"))
            .no_new_privileges(true)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    spec.set_root(Some(
        RootBuilder::default()
            .path(rootfs.to_path_buf())
            .readonly(true)
            .build()
            .map_err(|e| e.to_string())?,
    ));
    spec.set_hostname(Some("trial".into()));
    spec.set_mounts(Some(mounts));
    if let Some(linux) = spec.linux_mut() {
        let namespaces = linux.namespaces().clone().map(|ns| {
            ns.into_iter()
                .filter(|n| {
                    !matches!(
                        n.typ(),
                        LinuxNamespaceType::Network | LinuxNamespaceType::Cgroup
                    )
                })
                .collect()
        });
        linux.set_namespaces(namespaces);
        linux.set_cgroups_path(Some(PathBuf::from(cgroup_path(id))));
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_runtime_is_not_usable_and_says_why() {
        let tmp = tempfile::tempdir().unwrap();
        let err = probe(
            "flotilla-no-such-runtime",
            tmp.path(),
            &tmp.path().join("s"),
        )
        .await
        .unwrap_err();
        assert_eq!(err, "flotilla-no-such-runtime is not installed");
    }
}
