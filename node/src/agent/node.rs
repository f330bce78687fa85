//! The agent's Node object: registration, and the status it reports (capacity, allocatable,
//! addresses, the kubelet endpoint the API server proxies logs to, and the conditions with
//! their heartbeat).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::machine::Machine;
use crate::pod::sources::Allocatable;

/// The label listing the runtime handlers a node has, dot-separated (`wasmtime` or
/// `wasmtime.crun`); the scheduler places a pod only where its RuntimeClass handler is listed.
pub const RUNTIME_HANDLERS_LABEL: &str = "flotilla.dev/runtime-handlers";
/// Memory kept back from pods, as the kubelet's default hard eviction threshold.
const RESERVED_MEMORY: u64 = 100 << 20;
/// The ephemeral storage the node reports: 10 GiB.
const EPHEMERAL_STORAGE: u64 = 10 << 30;

/// What the Node says about this agent.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// The machine.
    pub machine: Machine,
    /// The node's address (`InternalIP`).
    pub internal_ip: String,
    /// The agent's HTTP port (`daemonEndpoints.kubeletEndpoint.Port`).
    pub port: u16,
    /// Runtime handlers this node has.
    pub handlers: Vec<String>,
    /// Most pods it accepts.
    pub max_pods: u32,
    /// The pod address range.
    pub pod_cidr: String,
}

impl NodeFacts {
    /// The Node's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("kubernetes.io/hostname".to_string(), self.name.clone()),
            ("kubernetes.io/os".to_string(), self.machine.os.to_string()),
            (
                "kubernetes.io/arch".to_string(),
                self.machine.arch.to_string(),
            ),
            (RUNTIME_HANDLERS_LABEL.to_string(), self.handlers.join(".")),
        ])
    }

    /// The Node to register.
    pub fn node(&self, since: Timestamp, ready: bool) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some(self.labels()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: Some(self.pod_cidr.clone()),
                pod_cidrs: Some(vec![self.pod_cidr.clone()]),
                ..NodeSpec::default()
            }),
            status: Some(self.status(since, Timestamp::now(), ready)),
        }
    }

    /// What pods may use of this node: its CPUs, its memory less the eviction reserve, and the
    /// ephemeral storage it reports.
    pub fn allocatable(&self) -> Allocatable {
        Allocatable {
            cpu_millis: self.machine.cpus * 1000,
            memory_bytes: self.machine.memory_bytes.saturating_sub(RESERVED_MEMORY),
            ephemeral_storage_bytes: EPHEMERAL_STORAGE,
        }
    }

    /// The Node's status: conditions changed at `since`, heartbeat at `now`.
    pub fn status(&self, since: Timestamp, now: Timestamp, ready: bool) -> NodeStatus {
        let m = &self.machine;
        let capacity = BTreeMap::from([
            ("cpu".to_string(), Quantity(m.cpus.to_string())),
            (
                "memory".to_string(),
                Quantity(format!("{}Ki", m.memory_bytes / 1024)),
            ),
            ("pods".to_string(), Quantity(self.max_pods.to_string())),
            (
                "ephemeral-storage".to_string(),
                Quantity(format!("{}Gi", EPHEMERAL_STORAGE >> 30)),
            ),
        ]);
        let mut allocatable = capacity.clone();
        allocatable.insert(
            "memory".into(),
            Quantity(format!("{}Ki", self.allocatable().memory_bytes / 1024)),
        );
        let condition = |kind: &str, status: bool, reason: &str, message: &str| NodeCondition {
            type_: kind.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(since)),
        };
        let (ready_reason, ready_message) = if ready {
            ("KubeletReady", "flotilla agent is posting ready status")
        } else {
            ("KubeletNotReady", "flotilla agent stopped")
        };
        NodeStatus {
            capacity: Some(capacity),
            allocatable: Some(allocatable),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    false,
                    "KubeletHasSufficientMemory",
                    "agent has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    false,
                    "KubeletHasNoDiskPressure",
                    "agent has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    false,
                    "KubeletHasSufficientPID",
                    "agent has sufficient PID available",
                ),
                condition("Ready", ready, ready_reason, ready_message),
            ]),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: self.internal_ip.clone(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: m.hostname.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint {
                    port: i32::from(self.port),
                }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: m.arch.into(),
                operating_system: m.os.into(),
                boot_id: m.boot_id.clone(),
                machine_id: m.machine_id.clone(),
                system_uuid: m.machine_id.clone(),
                kernel_version: m.kernel.clone(),
                os_image: m.os_image.clone(),
                container_runtime_version: format!("flotilla-wasm://{}", env!("CARGO_PKG_VERSION")),
                kubelet_version: format!("v1.33.0-flotilla.{}", env!("CARGO_PKG_VERSION")),
                kube_proxy_version: String::new(),
                ..NodeSystemInfo::default()
            }),
            ..NodeStatus::default()
        }
    }
}

/// Creates the Node, or takes over an existing one of the same name (labels, spec, status).
pub async fn register(
    client: &kube::Client,
    facts: &NodeFacts,
    since: Timestamp,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let node = facts.node(since, true);
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({"metadata": {"labels": facts.labels()}, "spec": node.spec});
            api.patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Err(e) => return Err(e),
    }
    report(client, facts, since, true).await
}

/// Patches the Node's status (the heartbeat).
pub async fn report(
    client: &kube::Client,
    facts: &NodeFacts,
    since: Timestamp,
    ready: bool,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"status": facts.status(since, Timestamp::now(), ready)});
    api.patch_status(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_reports_capacity_labels_and_its_endpoint() {
        let facts = NodeFacts {
            name: "n1".into(),
            machine: Machine {
                hostname: "n1".into(),
                cpus: 2,
                memory_bytes: 4 << 30,
                os: "linux",
                arch: "amd64",
                kernel: String::new(),
                os_image: String::new(),
                machine_id: String::new(),
                boot_id: String::new(),
            },
            internal_ip: "127.0.0.1".into(),
            port: 10250,
            handlers: vec!["wasmtime".into(), "crun".into()],
            max_pods: 110,
            pod_cidr: "127.1.0.0/16".into(),
        };
        let node = facts.node(Timestamp::UNIX_EPOCH, true);
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["flotilla.dev/runtime-handlers"], "wasmtime.crun");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        let status = node.status.unwrap();
        let capacity = status.capacity.unwrap();
        assert_eq!(capacity["cpu"].0, "2");
        assert_eq!(capacity["memory"].0, "4194304Ki");
        assert_eq!(capacity["pods"].0, "110");
        assert_eq!(status.allocatable.unwrap()["memory"].0, "4091904Ki");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("True", Some("KubeletReady"))
        );
    }
}
