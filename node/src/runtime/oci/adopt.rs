//! Containers that outlive the agent.
//!
//! Container ids are `<pod uid>-<container>-<attempt>`, the same a restarted agent computes for
//! a running container from the pod's status, so when the new agent asks to start a container
//! that the runtime (under the agent's own `--root`) still runs, it is adopted instead of being
//! started twice. What the restarted agent finds at start-up and nobody claims within
//! [`ORPHAN_GRACE`] (its pod was deleted meanwhile) is removed, as are container directories
//! the runtime no longer knows (a crash between steps).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use super::rootfs::remove_container_dir;
use super::runc::{RuntimeBinary, State};

/// How long containers found at start-up wait for their pods to claim them.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(60);

/// What to do with a container the runtime already has when asked to start it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// None with that id: create it.
    Nothing,
    /// Running (or paused): adopt its init process.
    Running {
        /// The init process.
        pid: i32,
    },
    /// Created but never started, or stopped: remove it, then create it afresh.
    Stale,
}

/// Sorts a `state` answer.
pub fn classify(state: Option<&State>) -> Found {
    match state {
        None => Found::Nothing,
        Some(s) if (s.status == "running" || s.status == "paused") && s.pid > 0 => {
            Found::Running { pid: s.pid }
        }
        Some(_) => Found::Stale,
    }
}

/// The containers the runtime has at start-up.
pub async fn found_at_start(binary: &RuntimeBinary) -> HashSet<String> {
    match binary.list().await {
        Ok(list) => list.into_iter().map(|s| s.id).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the containers of an earlier agent");
            HashSet::new()
        }
    }
}

/// Removes the containers in `orphans` that are not `claimed`, and container directories under
/// `dir` that are neither claimed nor known to the runtime.
pub async fn remove_unclaimed(
    binary: &RuntimeBinary,
    dir: &Path,
    orphans: &HashSet<String>,
    claimed: &HashSet<String>,
) {
    for id in orphans.difference(claimed) {
        tracing::info!(container = %id, "removing a container no pod claimed");
        if let Err(e) = binary.delete(id).await {
            tracing::warn!(container = %id, error = %e, "cannot remove an unclaimed container");
        }
        let _ = tokio::task::spawn_blocking({
            let d = dir.join(id);
            move || remove_container_dir(&d)
        })
        .await;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        // A spare root filesystem is the live agent's own (see `super::SPARE_PREFIX`).
        if claimed.contains(&id) || id.starts_with(super::SPARE_PREFIX) {
            continue;
        }
        if matches!(binary.state(&id).await, Ok(None)) {
            let path = entry.path();
            let _ = tokio::task::spawn_blocking(move || remove_container_dir(&path)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(status: &str, pid: i32) -> State {
        State {
            id: "c".into(),
            pid,
            status: status.into(),
            bundle: String::new(),
        }
    }

    #[test]
    fn running_containers_are_adopted_and_others_recreated() {
        let table = [
            (None, Found::Nothing),
            (Some(state("running", 42)), Found::Running { pid: 42 }),
            (Some(state("paused", 42)), Found::Running { pid: 42 }),
            (Some(state("created", 42)), Found::Stale),
            (Some(state("stopped", 0)), Found::Stale),
            (Some(state("running", 0)), Found::Stale),
        ];
        for (s, want) in table {
            assert_eq!(classify(s.as_ref()), want, "{s:?}");
        }
    }
}
