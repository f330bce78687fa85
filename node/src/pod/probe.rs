//! Liveness, readiness and startup probes: `httpGet` and `tcpSocket` against the pod's address.
//!
//! [`Probe::check`] runs one attempt; [`Tracker`] applies the success and failure thresholds
//! (pure, table-tested); the pod worker runs them on their periods and acts on the results.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe as ProbeSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `GET path` must answer 200–399.
    Http {
        /// Where.
        addr: SocketAddr,
        /// The path (with query).
        path: String,
        /// The `Host` header.
        host: String,
    },
    /// A TCP connection must open.
    Tcp {
        /// Where.
        addr: SocketAddr,
    },
    /// A command run inside the container must exit 0 (through the runtime plugin).
    Exec {
        /// argv.
        command: Vec<String>,
    },
}

/// A probe, with Kubernetes' timing and thresholds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The check.
    pub action: Action,
    /// Wait before the first check.
    pub initial_delay: Duration,
    /// Between checks.
    pub period: Duration,
    /// One check's limit.
    pub timeout: Duration,
    /// Consecutive successes that make it pass.
    pub success_threshold: u32,
    /// Consecutive failures that make it fail.
    pub failure_threshold: u32,
}

impl Probe {
    /// Builds a probe of `container` from its spec; `ip` is the pod's address.
    pub fn from_spec(spec: &ProbeSpec, container: &Container, ip: IpAddr) -> Result<Probe, String> {
        let port = |p: &IntOrString| -> Result<u16, String> {
            match p {
                IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name))
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .ok_or_else(|| format!("port {name:?} is not a named port of the container")),
            }
        };
        let action = if let Some(http) = &spec.http_get {
            if http
                .scheme
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("https"))
            {
                return Err("httpGet probes with scheme HTTPS are not supported".into());
            }
            let host = http.host.clone().filter(|h| !h.is_empty());
            let target = match &host {
                Some(h) => h
                    .parse()
                    .map_err(|_| format!("probe host {h:?} is not an IP"))?,
                None => ip,
            };
            let addr = SocketAddr::new(target, port(&http.port)?);
            let path = http
                .path
                .clone()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "/".into());
            Action::Http {
                addr,
                path,
                host: addr.to_string(),
            }
        } else if let Some(tcp) = &spec.tcp_socket {
            Action::Tcp {
                addr: SocketAddr::new(ip, port(&tcp.port)?),
            }
        } else if let Some(exec) = &spec.exec {
            let command = exec.command.clone().unwrap_or_default();
            if command.is_empty() {
                return Err("exec probe without a command".into());
            }
            Action::Exec { command }
        } else {
            return Err("the probe sets no httpGet, tcpSocket or exec action".into());
        };
        let secs = |v: Option<i32>, default: u64| {
            Duration::from_secs(v.map_or(default, |s| s.max(0) as u64))
        };
        Ok(Probe {
            action,
            initial_delay: secs(spec.initial_delay_seconds, 0),
            period: secs(spec.period_seconds, 10).max(Duration::from_millis(100)),
            timeout: secs(spec.timeout_seconds, 1).max(Duration::from_millis(100)),
            success_threshold: spec.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: spec.failure_threshold.unwrap_or(3).max(1) as u32,
        })
    }

    /// One attempt: `Ok` or why it failed. Exec probes run through `exec`, the container's
    /// runtime.
    pub async fn check(&self, exec: Option<&dyn Exec>) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.attempt(exec)).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {:?}", self.timeout)),
        }
    }

    async fn attempt(&self, exec: Option<&dyn Exec>) -> Result<(), String> {
        match &self.action {
            Action::Exec { command } => {
                let Some(exec) = exec else {
                    return Err("exec needs a container runtime that can run commands in the container; a Wasm container cannot".into());
                };
                let (code, output) = exec.exec(command, self.timeout).await?;
                if code == 0 {
                    Ok(())
                } else if output.is_empty() {
                    Err(format!("command {command:?} exited with {code}"))
                } else {
                    Err(format!("command {command:?} exited with {code}: {output}"))
                }
            }
            Action::Tcp { addr } => TcpStream::connect(addr)
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {addr}: {e}")),
            Action::Http { addr, path, host } => {
                let mut s = TcpStream::connect(addr)
                    .await
                    .map_err(|e| format!("Get \"http://{addr}{path}\": dial tcp {addr}: {e}"))?;
                let request = format!(
                    "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\n\
                     Accept: */*\r\nConnection: close\r\n\r\n"
                );
                s.write_all(request.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut head = [0u8; 32];
                let mut n = 0;
                while n < 12 {
                    let read = s.read(&mut head[n..]).await.map_err(|e| e.to_string())?;
                    if read == 0 {
                        break;
                    }
                    n += read;
                }
                let code = std::str::from_utf8(&head[..n])
                    .ok()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|c| c.parse::<u16>().ok())
                    .ok_or_else(|| {
                        format!("Get \"http://{addr}{path}\": malformed HTTP response")
                    })?;
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
        }
    }
}

/// Runs a probe's command inside its container.
pub trait Exec: Send + Sync {
    /// Runs `command`; its exit code and output, or why it could not run.
    fn exec<'a>(
        &'a self,
        command: &'a [String],
        timeout: Duration,
    ) -> futures::future::BoxFuture<'a, Result<(i32, String), String>>;
}

/// Consecutive results against the thresholds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tracker {
    successes: u32,
    failures: u32,
    /// The probe's current verdict; `None` until a threshold is first reached.
    pub passing: Option<bool>,
}

impl Tracker {
    /// Records one result; returns the new verdict when it changed.
    pub fn observe(
        &mut self,
        ok: bool,
        success_threshold: u32,
        failure_threshold: u32,
    ) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = if self.successes >= success_threshold {
            Some(true)
        } else if self.failures >= failure_threshold {
            Some(false)
        } else {
            None
        };
        match verdict {
            Some(v) if self.passing != Some(v) => {
                self.passing = Some(v);
                Some(v)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn thresholds_decide_the_verdict() {
        // (success threshold, failure threshold, results, verdict changes)
        type Row<'a> = (u32, u32, &'a [bool], &'a [Option<bool>]);
        let table: [Row; 4] = [
            (1, 3, &[true], &[Some(true)]),
            (
                1,
                3,
                &[false, false, false, false],
                &[None, None, Some(false), None],
            ),
            (
                2,
                1,
                &[true, false, true, true],
                &[None, Some(false), None, Some(true)],
            ),
            (
                1,
                2,
                &[true, false, true, false, false],
                &[Some(true), None, None, None, Some(false)],
            ),
        ];
        for (s, f, results, want) in table {
            let mut t = Tracker::default();
            let got: Vec<Option<bool>> = results.iter().map(|ok| t.observe(*ok, s, f)).collect();
            assert_eq!(got, want, "success {s} failure {f} results {results:?}");
        }
    }

    #[test]
    fn probes_resolve_named_ports_and_defaults() {
        let c: Container = serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        let spec: ProbeSpec =
            serde_json::from_value(json!({"httpGet": {"port": "http", "path": "/healthz"}}))
                .unwrap();
        let p = Probe::from_spec(&spec, &c, "127.1.0.5".parse().unwrap()).unwrap();
        assert_eq!(
            p.action,
            Action::Http {
                addr: "127.1.0.5:8080".parse().unwrap(),
                path: "/healthz".into(),
                host: "127.1.0.5:8080".into()
            }
        );
        assert_eq!(
            (
                p.period,
                p.timeout,
                p.success_threshold,
                p.failure_threshold
            ),
            (Duration::from_secs(10), Duration::from_secs(1), 1, 3)
        );
        let bad: ProbeSpec =
            serde_json::from_value(json!({"tcpSocket": {"port": "nope"}})).unwrap();
        assert!(Probe::from_spec(&bad, &c, "127.1.0.5".parse().unwrap()).is_err());
        let exec: ProbeSpec =
            serde_json::from_value(json!({"exec": {"command": ["true"]}})).unwrap();
        assert_eq!(
            Probe::from_spec(&exec, &c, "127.1.0.5".parse().unwrap())
                .unwrap()
                .action,
            Action::Exec {
                command: vec!["true".into()]
            }
        );
        let empty: ProbeSpec = serde_json::from_value(json!({})).unwrap();
        assert!(Probe::from_spec(&empty, &c, "127.1.0.5".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn http_and_tcp_checks_hit_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for code in [200, 500] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let probe = |action| Probe {
            action,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            success_threshold: 1,
            failure_threshold: 1,
        };
        let http = probe(Action::Http {
            addr,
            path: "/".into(),
            host: addr.to_string(),
        });
        assert_eq!(http.check(None).await, Ok(()));
        assert_eq!(
            http.check(None).await,
            Err("HTTP probe failed with statuscode: 500".into())
        );
        let closed = probe(Action::Tcp {
            addr: "127.0.0.1:1".parse().unwrap(),
        });
        assert!(closed.check(None).await.is_err());
        struct Fake;
        impl Exec for Fake {
            fn exec<'a>(
                &'a self,
                command: &'a [String],
                _: Duration,
            ) -> futures::future::BoxFuture<'a, Result<(i32, String), String>> {
                Box::pin(async move {
                    match command[0].as_str() {
                        "ok" => Ok((0, String::new())),
                        "fail" => Ok((1, "no good".into())),
                        _ => Err("exec: \"nope\": executable file not found in $PATH".into()),
                    }
                })
            }
        }
        let exec = |c: &str| {
            probe(Action::Exec {
                command: vec![c.into()],
            })
        };
        assert_eq!(exec("ok").check(Some(&Fake)).await, Ok(()));
        assert_eq!(
            exec("fail").check(Some(&Fake)).await,
            Err("command [\"fail\"] exited with 1: no good".into())
        );
        assert!(
            exec("nope")
                .check(Some(&Fake))
                .await
                .unwrap_err()
                .contains("not found")
        );
        assert!(exec("ok").check(None).await.is_err());
    }
}
