//! Container lifecycle hooks: `postStart` runs once a container has started (it counts as
//! started only when the hook succeeded) and `preStop` runs before a container is stopped,
//! within its grace period, as kubelet runs them. A handler is `exec` (through the runtime
//! plugin, so container pods only), `httpGet` against the pod's address, or `sleep`;
//! `tcpSocket` is refused, as kubelet refuses it.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe as ProbeSpec};

use super::probe::{Action, Exec, Probe};

/// One hook handler, ready to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hook {
    /// An `exec`, `httpGet` (as a probe's single attempt).
    Check(Action),
    /// `sleep`: wait so long.
    Sleep(Duration),
}

/// The container's `postStart` hook, if any (`Err` when it cannot be run).
pub fn post_start(container: &Container, ip: IpAddr) -> Option<Result<Hook, String>> {
    let handler = container.lifecycle.as_ref()?.post_start.as_ref()?;
    Some(Hook::from_spec(handler, container, ip))
}

/// The container's `preStop` hook, if any (`Err` when it cannot be run).
pub fn pre_stop(container: &Container, ip: IpAddr) -> Option<Result<Hook, String>> {
    let handler = container.lifecycle.as_ref()?.pre_stop.as_ref()?;
    Some(Hook::from_spec(handler, container, ip))
}

impl Hook {
    /// Builds a hook from its handler; `ip` is the pod's address.
    pub fn from_spec(
        handler: &LifecycleHandler,
        container: &Container,
        ip: IpAddr,
    ) -> Result<Hook, String> {
        if let Some(sleep) = &handler.sleep {
            return Ok(Hook::Sleep(
                Duration::from_secs(sleep.seconds.max(0) as u64),
            ));
        }
        if handler.tcp_socket.is_some() {
            return Err("tcpSocket is not supported as a lifecycle handler".into());
        }
        let as_probe = ProbeSpec {
            exec: handler.exec.clone(),
            http_get: handler.http_get.clone(),
            ..ProbeSpec::default()
        };
        Probe::from_spec(&as_probe, container, ip).map(|p| Hook::Check(p.action))
    }

    /// Runs the hook, for at most `limit`; `Ok` or why it failed.
    pub async fn run(&self, exec: Option<&dyn Exec>, limit: Duration) -> Result<(), String> {
        match self {
            Hook::Sleep(d) => {
                tokio::time::sleep((*d).min(limit)).await;
                Ok(())
            }
            Hook::Check(action) => {
                let probe = Probe {
                    action: action.clone(),
                    initial_delay: Duration::ZERO,
                    period: limit,
                    timeout: limit,
                    success_threshold: 1,
                    failure_threshold: 1,
                };
                probe.check(exec).await
            }
        }
    }

    /// How kubelet's events name the handler: `Exec lifecycle hook ([cmd])`,
    /// `HTTP lifecycle hook (/path)`, `Sleep lifecycle hook (5s)`.
    pub fn describe(&self) -> String {
        match self {
            Hook::Sleep(d) => format!("Sleep lifecycle hook ({}s)", d.as_secs()),
            Hook::Check(Action::Exec { command }) => {
                format!("Exec lifecycle hook ({command:?})")
            }
            Hook::Check(Action::Http { path, .. }) => format!("HTTP lifecycle hook ({path})"),
            Hook::Check(Action::Tcp { addr }) => format!("TCP lifecycle hook ({addr})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(lifecycle: serde_json::Value) -> Container {
        serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
            "lifecycle": lifecycle}),
        )
        .unwrap()
    }

    #[test]
    fn handlers_become_hooks_and_tcp_socket_is_refused() {
        let ip: IpAddr = "127.1.0.4".parse().unwrap();
        let c = container(json!({
            "postStart": {"httpGet": {"path": "/warm", "port": "http"}},
            "preStop": {"sleep": {"seconds": 3}}}));
        let start = post_start(&c, ip).unwrap().unwrap();
        assert_eq!(
            start,
            Hook::Check(Action::Http {
                addr: "127.1.0.4:8080".parse().unwrap(),
                path: "/warm".into(),
                host: "127.1.0.4:8080".into()
            })
        );
        assert_eq!(start.describe(), "HTTP lifecycle hook (/warm)");
        assert_eq!(
            pre_stop(&c, ip).unwrap().unwrap(),
            Hook::Sleep(Duration::from_secs(3))
        );
        let c = container(json!({"preStop": {"exec": {"command": ["nginx", "-s", "quit"]}}}));
        assert_eq!(
            pre_stop(&c, ip).unwrap().unwrap().describe(),
            "Exec lifecycle hook ([\"nginx\", \"-s\", \"quit\"])"
        );
        let c = container(json!({"preStop": {"tcpSocket": {"port": 80}}}));
        assert_eq!(
            pre_stop(&c, ip).unwrap().unwrap_err(),
            "tcpSocket is not supported as a lifecycle handler"
        );
        assert!(post_start(&c, ip).is_none());
    }

    #[tokio::test]
    async fn a_sleep_is_cut_short_by_the_limit_and_exec_needs_a_runtime_that_can() {
        let started = tokio::time::Instant::now();
        Hook::Sleep(Duration::from_secs(60))
            .run(None, Duration::from_millis(50))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        let exec = Hook::Check(Action::Exec {
            command: vec!["true".into()],
        });
        let err = exec.run(None, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(
            err,
            "exec needs a container runtime that can run commands in the container; a Wasm container cannot"
        );
    }
}
