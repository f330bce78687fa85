//! How a container's init process ended.
//!
//! The agent makes itself a child subreaper, so once `runc create` has exited the container's
//! init process is the agent's child: a pidfd tells when it ends and `waitpid` gives its exit
//! code (or the signal, as 128 + n). A container adopted from an earlier agent is not a child:
//! its end is still seen through the pidfd, but its exit code is unknown. The OOM killer is
//! recognised by the cgroup's `oom_kill` counter.

use std::path::PathBuf;
use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, WaitOptions};
use tokio::io::unix::AsyncFd;

/// Makes this process the reaper of its orphaned descendants (container init processes).
pub fn become_subreaper() -> std::io::Result<()> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(std::io::Error::from)
}

/// How the process ended: its exit code (128 + signal when killed), `None` when it was not
/// this process's child and its code is unknown.
pub async fn wait_pid(pid: i32) -> Option<i32> {
    let p = Pid::from_raw(pid)?;
    match rustix::process::pidfd_open(p, PidfdFlags::empty()) {
        // `AsyncFd::new` is deprecated for fds it cannot prove are owned; this one is an
        // `OwnedFd` moved into it (its replacement, `register`, is `unsafe`, forbidden here).
        #[allow(deprecated)]
        Ok(fd) => match AsyncFd::new(fd) {
            Ok(fd) => {
                let _ = fd.readable().await;
            }
            Err(_) => poll_gone(pid).await,
        },
        // Gone (and reaped) already, or pidfds unavailable.
        Err(_) => poll_gone(pid).await,
    }
    for _ in 0..50 {
        match rustix::process::waitpid(Some(p), WaitOptions::NOHANG) {
            Ok(Some((_, status))) => {
                return status
                    .exit_status()
                    .or_else(|| status.terminating_signal().map(|s| 128 + s));
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return None,
        }
    }
    None
}

async fn poll_gone(pid: i32) {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    while proc.exists() {
        // A zombie child still has its /proc entry until reaped.
        if let Ok(stat) = std::fs::read_to_string(proc.join("stat"))
            && stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the OOM killer killed something in the container's cgroup (`cgroup` as in the spec,
/// `/flotilla/<id>`), under cgroup v1 or v2.
pub fn oom_killed(cgroup: &str) -> bool {
    let rel = cgroup.trim_start_matches('/');
    let candidates = [
        format!("/sys/fs/cgroup/memory/{rel}/memory.oom_control"),
        format!("/sys/fs/cgroup/{rel}/memory.events"),
    ];
    candidates.iter().any(|file| {
        std::fs::read_to_string(file).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0)
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // `wait_pid` reaps the children (waitpid), which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    #[tokio::test]
    async fn a_childs_exit_code_and_signal_are_seen() {
        let child = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .spawn()
            .unwrap();
        assert_eq!(wait_pid(child.id() as i32).await, Some(7));
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        assert_eq!(wait_pid(pid).await, Some(137));
        assert!(!oom_killed("/flotilla/no-such-container"));
    }
}
