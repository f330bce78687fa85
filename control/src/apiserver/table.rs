//! Server-side `meta.k8s.io/v1` `Table` rendering: what `kubectl get` shows.
//!
//! kubectl asks for `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints the
//! cells as they come, hiding columns with `priority > 0` unless `-o wide`. The columns and
//! cell formats follow Kubernetes' printers (`pkg/printers/internalversion/printers.go`, as of
//! 1.32/1.33), which the server always runs in wide mode; kinds without a printer get the
//! generic `NAME`, `CREATED AT` table of the Kubernetes API server.
//!
//! The functions are pure: objects are the stored JSON, and `now` is passed in so ages are
//! deterministic in tests. Where a printer reads a field the API server always defaults
//! (`spec.replicas`, a Service's `type`, a Secret's `type`, a Namespace's `phase`, a port's
//! `protocol`), the default is assumed when the field is absent.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::resources::ResourceInfo;

/// What each row's `object` holds (`?includeObject=` on the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object (`"object": null`).
    None,
    /// A `PartialObjectMetadata` with the object's metadata (Kubernetes' default); kubectl
    /// reads namespaces and labels from it.
    #[default]
    Metadata,
    /// The whole object (kubectl asks for it with `--sort-by`).
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value (`None`, `Metadata`, `Object`).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "None" => Some(IncludeObject::None),
            "Metadata" => Some(IncludeObject::Metadata),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

/// How to render a table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableOptions {
    /// What each row carries besides its cells.
    pub include_object: IncludeObject,
    /// Leave out the column definitions.
    pub no_headers: bool,
}

/// Renders `objects` (all of the kind `res`) as a `Table`. The caller adds
/// `metadata.resourceVersion` and `metadata.continue`.
pub fn table(
    res: &ResourceInfo,
    objects: &[Value],
    opts: &TableOptions,
    now: DateTime<Utc>,
) -> Value {
    let printer = printer_for(res);
    let columns: Vec<Value> = if opts.no_headers {
        Vec::new()
    } else {
        printer.columns.iter().map(Column::to_json).collect()
    };
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            let (cells, conditions) = (printer.cells)(obj, now);
            row.insert("cells".into(), Value::Array(cells));
            if let Some(conditions) = conditions {
                row.insert("conditions".into(), conditions);
            }
            let object = match opts.include_object {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => json!({
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                }),
                IncludeObject::Object => obj.clone(),
            };
            row.insert("object".into(), object);
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// Kubernetes' short human duration (`duration.HumanDuration`): `5s`, `3m2s`, `10m`, `5h3m`,
/// `2d3h`, `400d`, `3y20d`; `<invalid>` for more than a second in the future.
pub fn human_duration(d: chrono::Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    } else if hours < 48 {
        return format!("{hours}h");
    } else if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    } else if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The age of a timestamp (`translateTimestampSince`), `<unknown>` when absent or unparsable.
pub fn age(timestamp: Option<&str>, now: DateTime<Utc>) -> String {
    match timestamp.and_then(parse_time) {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

// ---------------------------------------------------------------------------------------------
// Columns and printers.

/// One column definition.
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    priority: i64,
    description: &'static str,
}

impl Column {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.ty,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// A column shown by default.
const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        priority: 0,
        description,
    }
}

/// A column shown only with `-o wide`.
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        priority: 1,
        description,
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.";
const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    priority: 0,
    description: NAME_DOC,
};
const AGE: Column = col("Age", "string", AGE_DOC);
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide(
    "Selector",
    "string",
    "A label query over pods that should match the replica count.",
);

/// Builds a row's cells (and row conditions) from an object.
type Cells = fn(&Value, DateTime<Utc>) -> (Vec<Value>, Option<Value>);

struct Printer {
    columns: &'static [Column],
    cells: Cells,
}

fn printer_for(res: &ResourceInfo) -> Printer {
    let p = |columns: &'static [Column], cells: Cells| Printer { columns, cells };
    match (res.group, res.kind) {
        ("", "Pod") => p(POD_COLUMNS, pod_row),
        ("", "Node") => p(NODE_COLUMNS, node_row),
        ("", "Service") => p(SERVICE_COLUMNS, service_row),
        ("", "Endpoints") => p(ENDPOINTS_COLUMNS, endpoints_row),
        ("", "ConfigMap") => p(CONFIGMAP_COLUMNS, configmap_row),
        ("", "Secret") => p(SECRET_COLUMNS, secret_row),
        ("", "Namespace") => p(NAMESPACE_COLUMNS, namespace_row),
        ("", "Event") => p(EVENT_COLUMNS, event_row),
        ("", "ServiceAccount") => p(SERVICEACCOUNT_COLUMNS, serviceaccount_row),
        ("apps", "Deployment") => p(DEPLOYMENT_COLUMNS, deployment_row),
        ("apps", "ReplicaSet") => p(REPLICASET_COLUMNS, replicaset_row),
        ("apps", "DaemonSet") => p(DAEMONSET_COLUMNS, daemonset_row),
        ("apps", "StatefulSet") => p(STATEFULSET_COLUMNS, statefulset_row),
        ("", "PersistentVolumeClaim") => p(PVC_COLUMNS, pvc_row),
        ("", "ResourceQuota") => p(RESOURCEQUOTA_COLUMNS, resourcequota_row),
        ("", "PersistentVolume") => p(PV_COLUMNS, pv_row),
        ("storage.k8s.io", "StorageClass") => p(STORAGECLASS_COLUMNS, storageclass_row),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            p(ROLEBINDING_COLUMNS, rolebinding_row)
        }
        ("networking.k8s.io", "Ingress") => p(INGRESS_COLUMNS, ingress_row),
        ("networking.k8s.io", "IngressClass") => p(INGRESSCLASS_COLUMNS, ingressclass_row),
        ("networking.k8s.io", "NetworkPolicy") => p(NETWORKPOLICY_COLUMNS, networkpolicy_row),
        ("apps", "ControllerRevision") => p(CONTROLLERREVISION_COLUMNS, controllerrevision_row),
        ("batch", "Job") => p(JOB_COLUMNS, job_row),
        ("batch", "CronJob") => p(CRONJOB_COLUMNS, cronjob_row),
        ("discovery.k8s.io", "EndpointSlice") => p(ENDPOINTSLICE_COLUMNS, endpointslice_row),
        ("node.k8s.io", "RuntimeClass") => p(RUNTIMECLASS_COLUMNS, runtimeclass_row),
        ("coordination.k8s.io", "Lease") => p(LEASE_COLUMNS, lease_row),
        ("autoscaling", "HorizontalPodAutoscaler") => p(HPA_COLUMNS, hpa_row),
        ("policy", "PodDisruptionBudget") => p(PDB_COLUMNS, pdb_row),
        ("scheduling.k8s.io", "PriorityClass") => p(PRIORITYCLASS_COLUMNS, priorityclass_row),
        _ => p(DEFAULT_COLUMNS, default_row),
    }
}

const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", AGE_DOC)];

fn default_row(obj: &Value, _now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let created = str_at(obj, "/metadata/creationTimestamp");
    (vec![name(obj), created.into()], None)
}

const POD_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide(
        "IP",
        "string",
        "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    ),
    wide(
        "Node",
        "string",
        "NodeName indicates in which node this pod is scheduled.",
    ),
    wide(
        "Nominated Node",
        "string",
        "nominatedNodeName is set only when this pod preempts other pods on the node.",
    ),
    wide(
        "Readiness Gates",
        "string",
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

/// `printPod`: READY counts, the STATUS reason (init progress, waiting/terminated reasons,
/// `Completed`, `Terminating`), restarts with the age of the last one.
fn pod_row(pod: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let spec_init = arr(pod, "/spec/initContainers");
    let init_statuses = arr(pod, "/status/initContainerStatuses");
    let statuses = arr(pod, "/status/containerStatuses");
    let conditions = arr(pod, "/status/conditions");
    let phase = str_at(pod, "/status/phase");
    let status_reason = str_at(pod, "/status/reason");

    let mut restarts: i64 = 0;
    let mut restartable_restarts: i64 = 0;
    let mut total = arr(pod, "/spec/containers").len();
    let mut ready = 0usize;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;

    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };
    if conditions
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".into();
    }
    let row_conditions = match phase {
        "Succeeded" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Succeeded",
            "message": "The pod has completed successfully."
        }])),
        "Failed" => Some(json!([{
            "type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."
        }])),
        _ => None,
    };

    let restartable = |name: &str| {
        spec_init
            .iter()
            .any(|c| str_at(c, "/name") == name && str_at(c, "/restartPolicy") == "Always")
    };
    total += spec_init
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .count();

    let mut initializing = false;
    for (i, c) in init_statuses.iter().enumerate() {
        let count = int_at(c, "/restartCount");
        restarts += count;
        let finished = time_at(c, "/lastState/terminated/finishedAt");
        last_restart = later(last_restart, finished);
        let is_restartable = restartable(str_at(c, "/name"));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = c.pointer("/state/terminated");
        let waiting_reason = str_at(c, "/state/waiting/reason");
        if terminated.is_some() && int_at(c, "/state/terminated/exitCode") == 0 {
            continue;
        }
        if is_restartable && bool_at(c, "/started") {
            if bool_at(c, "/ready") {
                ready += 1;
            }
            continue;
        }
        if let Some(t) = terminated {
            let r = str_at(t, "/reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if int_at(t, "/signal") != 0 {
                format!("Init:Signal:{}", int_at(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", int_at(t, "/exitCode"))
            };
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            reason = format!("Init:{waiting_reason}");
        } else {
            reason = format!("Init:{i}/{}", spec_init.len());
        }
        initializing = true;
        break;
    }

    let initialized = conditions
        .iter()
        .any(|c| str_at(c, "/type") == "Initialized" && str_at(c, "/status") == "True");
    if !initializing || initialized {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for c in statuses.iter().rev() {
            restarts += int_at(c, "/restartCount");
            last_restart = later(last_restart, time_at(c, "/lastState/terminated/finishedAt"));
            let waiting_reason = str_at(c, "/state/waiting/reason");
            let terminated = c.pointer("/state/terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if int_at(t, "/signal") != 0 {
                    format!("Signal:{}", int_at(t, "/signal"))
                } else {
                    format!("ExitCode:{}", int_at(t, "/exitCode"))
                };
            } else if bool_at(c, "/ready") && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = conditions
                .iter()
                .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True");
            reason = if pod_ready { "Running" } else { "NotReady" }.into();
        }
    }

    if pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
    {
        if status_reason == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let mut ip = arr(pod, "/status/podIPs")
        .first()
        .map(|p| str_at(p, "/ip"))
        .unwrap_or("");
    if ip.is_empty() {
        ip = str_at(pod, "/status/podIP");
    }
    let gates = arr(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| {
                let ty = str_at(g, "/conditionType");
                conditions
                    .iter()
                    .find(|c| str_at(c, "/type") == ty)
                    .is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    let cells = vec![
        name(pod),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts_cell.into(),
        age_at(pod, now),
        or_none(ip),
        or_none(str_at(pod, "/spec/nodeName")),
        or_none(str_at(pod, "/status/nominatedNodeName")),
        readiness_gates.into(),
    ];
    (cells, row_conditions)
}

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide(
        "Internal-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "External-IP",
        "string",
        "List of addresses reachable to the node.",
    ),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

fn node_row(node: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let mut status: Vec<String> = Vec::new();
    if let Some(c) = arr(node, "/status/conditions")
        .iter()
        .rev()
        .find(|c| str_at(c, "/type") == "Ready")
    {
        status.push(if str_at(c, "/status") == "True" {
            "Ready".into()
        } else {
            "NotReady".into()
        });
    }
    if status.is_empty() {
        status.push("Unknown".into());
    }
    if bool_at(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled".into());
    }
    let mut roles: Vec<&str> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let role = match k.strip_prefix("node-role.kubernetes.io/") {
                Some(role) => role,
                None if k == "kubernetes.io/role" => v.as_str().unwrap_or(""),
                None => "",
            };
            if !role.is_empty() {
                roles.push(role);
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();
    let address = |ty: &str| {
        arr(node, "/status/addresses")
            .iter()
            .find(|a| str_at(a, "/type") == ty)
            .map(|a| str_at(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    let unknown = |v: &str| {
        if v.is_empty() {
            "<unknown>".to_string()
        } else {
            v.to_string()
        }
    };
    let cells = vec![
        name(node),
        status.join(",").into(),
        if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }
        .into(),
        age_at(node, now),
        str_at(node, "/status/nodeInfo/kubeletVersion").into(),
        address("InternalIP").into(),
        address("ExternalIP").into(),
        unknown(str_at(node, "/status/nodeInfo/osImage")).into(),
        unknown(str_at(node, "/status/nodeInfo/kernelVersion")).into(),
        unknown(str_at(node, "/status/nodeInfo/containerRuntimeVersion")).into(),
    ];
    (cells, None)
}

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "type determines how the Service is exposed.",
    ),
    col(
        "Cluster-IP",
        "string",
        "clusterIP is the IP address of the service and is usually assigned randomly.",
    ),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    wide(
        "Selector",
        "string",
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

fn service_row(svc: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let ty = non_empty(str_at(svc, "/spec/type"), "ClusterIP");
    let mut cluster_ip = arr(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .unwrap_or("");
    if cluster_ip.is_empty() {
        cluster_ip = str_at(svc, "/spec/clusterIP");
    }
    let external_ips: Vec<&str> = arr(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external = match ty {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = arr(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| non_empty(str_at(i, "/ip"), str_at(i, "/hostname")))
                .filter(|s| !s.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external_ips.iter().copied());
            if ingress.is_empty() {
                "<pending>".to_string()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    };
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = non_empty(str_at(p, "/protocol"), "TCP");
            match int_at(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let cells = vec![
        name(svc),
        ty.into(),
        or_none(cluster_ip),
        external.into(),
        if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }
        .into(),
        age_at(svc, now),
        format_labels(svc.pointer("/spec/selector")).into(),
    ];
    (cells, None)
}

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

fn endpoints_row(ep: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let subsets = arr(ep, "/subsets");
    let formatted = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        const MAX: usize = 3;
        let mut list: Vec<String> = Vec::new();
        let mut more = false;
        let mut count = 0usize;
        for ss in subsets {
            let addresses = arr(ss, "/addresses");
            let ports = arr(ss, "/ports");
            if ports.is_empty() {
                count += addresses.len();
                for a in addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(str_at(a, "/ip").to_string());
                }
                continue;
            }
            for port in ports {
                count += addresses.len();
                for a in addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(join_host_port(str_at(a, "/ip"), int_at(port, "/port")));
                }
            }
        }
        let joined = list.join(",");
        if more {
            format!("{joined} + {} more...", count - MAX)
        } else {
            joined
        }
    };
    (vec![name(ep), formatted.into(), age_at(ep, now)], None)
}

const ENDPOINTSLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

fn endpointslice_row(slice: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    const MAX: usize = 3;
    let ports: Vec<String> = arr(slice, "/ports")
        .iter()
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(n) => n.to_string(),
            None => p
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_string(),
        })
        .collect();
    let addresses: Vec<String> = arr(slice, "/endpoints")
        .iter()
        .flat_map(|e| {
            arr(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let cells = vec![
        name(slice),
        str_at(slice, "/addressType").into(),
        list_with_more(&ports, MAX).into(),
        list_with_more(&addresses, MAX).into(),
        age_at(slice, now),
    ];
    (cells, None)
}

/// `listWithMoreString`: the first `max` items, `+ N more...`, or `<unset>` when empty.
fn list_with_more(items: &[String], max: usize) -> String {
    let shown = items[..items.len().min(max)].join(",");
    if items.len() > max {
        format!("{shown} + {} more...", items.len() - max)
    } else if shown.is_empty() {
        "<unset>".into()
    } else {
        shown
    }
}

const CONFIGMAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data."),
    AGE,
];

fn configmap_row(cm: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let count = obj_len(cm, "/data") + obj_len(cm, "/binaryData");
    (vec![name(cm), count.into(), age_at(cm, now)], None)
}

const RESOURCEQUOTA_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col(
        "Request",
        "string",
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    col(
        "Limit",
        "string",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
];

/// `name: used/hard` for each resource of the quota's `status.hard`, `limits.*` in the Limit
/// column and the rest in Request (kubectl's `printResourceQuota`).
fn resourcequota_row(q: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    let mut hard: Vec<(&String, &Value)> = q["status"]["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .collect();
    hard.sort_by_key(|(k, _)| *k);
    for (resource, hard) in hard {
        let used = q["status"]["used"][resource].as_str().unwrap_or("0");
        let cell = format!("{resource}: {used}/{}", hard.as_str().unwrap_or("0"));
        if resource.split('.').next() == Some("limits") && resource.contains('.') {
            limit.push(cell);
        } else {
            request.push(cell);
        }
    }
    let cells = vec![
        name(q),
        age_at(q, now),
        request.join(", ").into(),
        limit.join(", ").into(),
    ];
    (cells, None)
}

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

fn secret_row(secret: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let ty = non_empty(str_at(secret, "/type"), "Opaque");
    (
        vec![
            name(secret),
            ty.into(),
            obj_len(secret, "/data").into(),
            age_at(secret, now),
        ],
        None,
    )
}

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

fn namespace_row(ns: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let phase = non_empty(str_at(ns, "/status/phase"), "Active");
    (vec![name(ns), phase.into(), age_at(ns, now)], None)
}

const SERVICEACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.",
    ),
    AGE,
];

fn serviceaccount_row(sa: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    (
        vec![name(sa), arr(sa, "/secrets").len().into(), age_at(sa, now)],
        None,
    )
}

const EVENT_COLUMNS: &[Column] = &[
    col(
        "Last Seen",
        "string",
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
    ),
    wide(
        "Source",
        "string",
        "The component reporting this event. Should be a short machine understandable string.",
    ),
    col(
        "Message",
        "string",
        "A human-readable description of the status of this operation.",
    ),
    wide(
        "First Seen",
        "string",
        "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    ),
    wide(
        "Count",
        "string",
        "The number of times this event has occurred.",
    ),
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        priority: 1,
        description: NAME_DOC,
    },
];

fn event_row(ev: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let first = match time_at(ev, "/firstTimestamp") {
        Some(t) => human_duration(now - t),
        None => age(ev.pointer("/eventTime").and_then(Value::as_str), now),
    };
    let mut last = match time_at(ev, "/lastTimestamp") {
        Some(t) => human_duration(now - t),
        None => first.clone(),
    };
    let mut count = int_at(ev, "/count");
    if ev.pointer("/series").is_some_and(|s| !s.is_null()) {
        last = age(
            ev.pointer("/series/lastObservedTime")
                .and_then(Value::as_str),
            now,
        );
        count = int_at(ev, "/series/count");
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(ev, "/involvedObject/kind").to_lowercase();
    let object_name = str_at(ev, "/involvedObject/name");
    let target = if object_name.is_empty() {
        kind
    } else {
        format!("{kind}/{object_name}")
    };
    let component = non_empty(
        str_at(ev, "/source/component"),
        str_at(ev, "/reportingComponent"),
    );
    let instance = non_empty(str_at(ev, "/source/host"), str_at(ev, "/reportingInstance"));
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    let cells = vec![
        last.into(),
        str_at(ev, "/type").into(),
        str_at(ev, "/reason").into(),
        target.into(),
        str_at(ev, "/involvedObject/fieldPath").into(),
        source.into(),
        str_at(ev, "/message").trim().into(),
        first.into(),
        count.into(),
        name(ev),
    ];
    (cells, None)
}

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment_row(d: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let desired = d
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = container_cells(d);
    let cells = vec![
        name(d),
        format!("{}/{desired}", int_at(d, "/status/readyReplicas")).into(),
        int_at(d, "/status/updatedReplicas").into(),
        int_at(d, "/status/availableReplicas").into(),
        age_at(d, now),
        containers,
        images,
        selector_string(d.pointer("/spec/selector")).into(),
    ];
    (cells, None)
}

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired pods.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of non-terminating pods.",
    ),
    col(
        "Ready",
        "integer",
        "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replicaset_row(rs: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let desired = rs
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = container_cells(rs);
    let cells = vec![
        name(rs),
        desired.into(),
        int_at(rs, "/status/replicas").into(),
        int_at(rs, "/status/readyReplicas").into(),
        age_at(rs, now),
        containers,
        images,
        format_label_selector(rs.pointer("/spec/selector")).into(),
    ];
    (cells, None)
}

const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemonset_row(ds: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let (containers, images) = container_cells(ds);
    let cells = vec![
        name(ds),
        int_at(ds, "/status/desiredNumberScheduled").into(),
        int_at(ds, "/status/currentNumberScheduled").into(),
        int_at(ds, "/status/numberReady").into(),
        int_at(ds, "/status/updatedNumberScheduled").into(),
        int_at(ds, "/status/numberAvailable").into(),
        format_labels(ds.pointer("/spec/template/spec/nodeSelector")).into(),
        age_at(ds, now),
        containers,
        images,
        format_label_selector(ds.pointer("/spec/selector")).into(),
    ];
    (cells, None)
}

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| match m.as_str()? {
            "ReadWriteOnce" => Some("RWO"),
            "ReadOnlyMany" => Some("ROX"),
            "ReadWriteMany" => Some("RWX"),
            "ReadWriteOncePod" => Some("RWOP"),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(",")
}

const VOLUME_ATTRIBUTES_CLASS: Column = col(
    "VolumeAttributesClass",
    "string",
    "VolumeAttributesClass of the volume",
);

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "Phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        "VolumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        "Capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        "AccessModes contains the desired access modes the volume should have.",
    ),
    col(
        "StorageClass",
        "string",
        "StorageClassName is the name of the StorageClass required by the claim.",
    ),
    VOLUME_ATTRIBUTES_CLASS,
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

fn pvc_row(pvc: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let phase = if pvc.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        str_at(pvc, "/status/phase")
    };
    let cells = vec![
        name(pvc),
        phase.into(),
        str_at(pvc, "/spec/volumeName").into(),
        str_at(pvc, "/status/capacity/storage").into(),
        access_modes(pvc.pointer("/status/accessModes")).into(),
        str_at(pvc, "/spec/storageClassName").into(),
        "<unset>".into(),
        age_at(pvc, now),
        str_at(pvc, "/spec/volumeMode").into(),
    ];
    (cells, None)
}

const PV_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Capacity",
        "string",
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains all ways the volume can be mounted.",
    ),
    col(
        "Reclaim Policy",
        "string",
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
    ),
    col(
        "Status",
        "string",
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    col(
        "Claim",
        "string",
        "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
    ),
    col(
        "StorageClass",
        "string",
        "storageClassName is the name of StorageClass to which this persistent volume belongs.",
    ),
    VOLUME_ATTRIBUTES_CLASS,
    col(
        "Reason",
        "string",
        "reason is a brief CamelCase string that describes any failure.",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
    ),
];

fn pv_row(pv: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let claim = match (
        str_at(pv, "/spec/claimRef/namespace"),
        str_at(pv, "/spec/claimRef/name"),
    ) {
        (_, "") => String::new(),
        (ns, n) => format!("{ns}/{n}"),
    };
    let phase = if pv.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        str_at(pv, "/status/phase")
    };
    let cells = vec![
        name(pv),
        str_at(pv, "/spec/capacity/storage").into(),
        access_modes(pv.pointer("/spec/accessModes")).into(),
        str_at(pv, "/spec/persistentVolumeReclaimPolicy").into(),
        phase.into(),
        claim.into(),
        str_at(pv, "/spec/storageClassName").into(),
        "<unset>".into(),
        str_at(pv, "/status/reason").into(),
        age_at(pv, now),
        str_at(pv, "/spec/volumeMode").into(),
    ];
    (cells, None)
}

const STORAGECLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        "provisioner indicates the type of the provisioner.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

fn storageclass_row(sc: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let mut shown = str_at(sc, "/metadata/name").to_string();
    if crate::apiserver::storage_class::is_default(sc) {
        shown.push_str(" (default)");
    }
    let cells = vec![
        shown.into(),
        str_at(sc, "/provisioner").into(),
        str_at(sc, "/reclaimPolicy").into(),
        str_at(sc, "/volumeBindingMode").into(),
        bool_at(sc, "/allowVolumeExpansion").to_string().into(),
        age_at(sc, now),
    ];
    (cells, None)
}

const ROLEBINDING_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        "RoleRef references the Role or ClusterRole being bound.",
    ),
    AGE,
    wide("Users", "string", "Users in the binding"),
    wide("Groups", "string", "Groups in the binding"),
    wide(
        "ServiceAccounts",
        "string",
        "ServiceAccounts in the binding",
    ),
];

fn rolebinding_row(b: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let of_kind = |kind: &str| -> String {
        b["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["kind"] == kind)
            .map(|s| {
                let name = s["name"].as_str().unwrap_or("");
                match s["namespace"].as_str() {
                    Some(ns) if kind == "ServiceAccount" => format!("{ns}/{name}"),
                    _ if kind == "ServiceAccount" => format!("/{name}"),
                    _ => name.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let role = format!(
        "{}/{}",
        str_at(b, "/roleRef/kind"),
        str_at(b, "/roleRef/name")
    );
    let cells = vec![
        name(b),
        role.into(),
        age_at(b, now),
        of_kind("User").into(),
        of_kind("Group").into(),
        of_kind("ServiceAccount").into(),
    ];
    (cells, None)
}

const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used by this Ingress.",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

fn ingress_row(ing: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let class = match str_at(ing, "/spec/ingressClassName") {
        "" => "<none>".to_string(),
        c => c.to_string(),
    };
    let hosts: Vec<&str> = ing["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["host"].as_str().filter(|h| !h.is_empty()).unwrap_or("*"))
        .collect();
    let hosts = match hosts.len() {
        0 => "*".to_string(),
        1..=3 => hosts.join(","),
        n => format!("{} + {} more...", hosts[..3].join(","), n - 3),
    };
    let address: Vec<&str> = ing["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
        .collect();
    let tls = ing["spec"]["tls"].as_array().is_some_and(|t| !t.is_empty());
    let cells = vec![
        name(ing),
        class.into(),
        hosts.into(),
        address.join(",").into(),
        if tls { "80, 443" } else { "80" }.into(),
        age_at(ing, now),
    ];
    (cells, None)
}

const INGRESSCLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

fn ingressclass_row(ic: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let p = &ic["spec"]["parameters"];
    let params = if p.is_null() {
        "<none>".to_string()
    } else {
        let kind = p["kind"].as_str().unwrap_or("");
        let name = p["name"].as_str().unwrap_or("");
        match p["apiGroup"].as_str() {
            Some(g) if !g.is_empty() => format!("{kind}.{g}/{name}"),
            _ => format!("{kind}/{name}"),
        }
    };
    let cells = vec![
        name(ic),
        str_at(ic, "/spec/controller").into(),
        params.into(),
        age_at(ic, now),
    ];
    (cells, None)
}

const NETWORKPOLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Select the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

fn networkpolicy_row(np: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let cells = vec![
        name(np),
        format_label_selector(np.pointer("/spec/podSelector")).into(),
        age_at(np, now),
    ];
    (cells, None)
}

const STATEFULSET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

fn statefulset_row(sts: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let (containers, images) = container_cells(sts);
    let desired = sts
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let ready = format!("{}/{desired}", int_at(sts, "/status/readyReplicas"));
    (
        vec![
            name(sts),
            ready.into(),
            age_at(sts, now),
            containers,
            images,
        ],
        None,
    )
}

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn job_row(job: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let succeeded = int_at(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_at(job, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(job, "/status/startTime"),
        time_at(job, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let conditions = arr(job, "/status/conditions");
    let has = |ty: &str| {
        conditions
            .iter()
            .find(|c| str_at(c, "/type") == ty)
            .is_some_and(|c| str_at(c, "/status") == "True")
    };
    let deleting = job
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null());
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (containers, images) = container_cells(job);
    let cells = vec![
        name(job),
        status.into(),
        completions.into(),
        duration.into(),
        age_at(job, now),
        containers,
        images,
        format_label_selector(job.pointer("/spec/selector")).into(),
    ];
    (cells, None)
}

const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format."),
    col("Timezone", "string", "The time zone of the schedule."),
    col(
        "Suspend",
        "boolean",
        "Whether subsequent executions are suspended.",
    ),
    col("Active", "integer", "The number of running jobs."),
    col(
        "Last Schedule",
        "date",
        "The last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cronjob_row(cj: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let last = match time_at(cj, "/status/lastScheduleTime") {
        Some(t) => human_duration(now - t),
        None => "<none>".into(),
    };
    let time_zone = match cj.pointer("/spec/timeZone").and_then(Value::as_str) {
        Some(tz) => tz.to_string(),
        None => "<none>".into(),
    };
    let suspend = match cj.pointer("/spec/suspend").and_then(Value::as_bool) {
        Some(b) => b.to_string(),
        None => "<unset>".into(),
    };
    let template = cj.pointer("/spec/jobTemplate").cloned().unwrap_or_default();
    let (containers, images) = container_cells(&template);
    let selector = format_label_selector(template.pointer("/spec/selector"));
    let cells = vec![
        name(cj),
        str_at(cj, "/spec/schedule").into(),
        time_zone.into(),
        suspend.into(),
        (arr(cj, "/status/active").len() as i64).into(),
        last.into(),
        age_at(cj, now),
        containers,
        images,
        selector.into(),
    ];
    (cells, None)
}

const RUNTIMECLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Handler",
        "string",
        "handler specifies the underlying runtime and configuration that the CRI implementation will use to handle pods of this class.",
    ),
    AGE,
];

fn runtimeclass_row(rc: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    (
        vec![name(rc), str_at(rc, "/handler").into(), age_at(rc, now)],
        None,
    )
}

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

fn lease_row(lease: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    (
        vec![
            name(lease),
            str_at(lease, "/spec/holderIdentity").into(),
            age_at(lease, now),
        ],
        None,
    )
}

const CONTROLLERREVISION_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller of the object, with the form <kind>.<group>/<name>.",
    ),
    col(
        "Revision",
        "integer",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

/// Kubernetes prints the controller as `daemonset.apps/name`.
fn controllerrevision_row(cr: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let controller = cr["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| refs.iter().find(|r| r["controller"] == true))
        .map(|r| {
            let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
            let group = r["apiVersion"]
                .as_str()
                .and_then(|v| v.split_once('/'))
                .map(|(g, _)| format!(".{g}"))
                .unwrap_or_default();
            format!("{kind}{group}/{}", r["name"].as_str().unwrap_or(""))
        })
        .unwrap_or_else(|| "<none>".into());
    (
        vec![
            name(cr),
            controller.into(),
            cr["revision"].as_i64().unwrap_or(0).into(),
            age_at(cr, now),
        ],
        None,
    )
}

const PRIORITYCLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Value",
        "integer",
        "value represents the integer value of this priority class.",
    ),
    col(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
    ),
    AGE,
    col(
        "PreemptionPolicy",
        "string",
        "preemptionPolicy is the Policy for preempting pods with lower priority.",
    ),
];

fn priorityclass_row(pc: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let cells = vec![
        name(pc),
        int_at(pc, "/value").into(),
        (pc.pointer("/globalDefault") == Some(&Value::Bool(true))).into(),
        age_at(pc, now),
        str_at(pc, "/preemptionPolicy").into(),
    ];
    (cells, None)
}

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

fn pdb_row(pdb: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let bound = |ptr: &str| match pdb.pointer(ptr) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "N/A".into(),
    };
    let cells = vec![
        name(pdb),
        bound("/spec/minAvailable").into(),
        bound("/spec/maxUnavailable").into(),
        int_at(pdb, "/status/disruptionsAllowed").into(),
        age_at(pdb, now),
    ];
    (cells, None)
}

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        "scaleTargetRef points to the target resource to scale.",
    ),
    col(
        "Targets",
        "string",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
    ),
    col(
        "MinPods",
        "string",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    col(
        "MaxPods",
        "string",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    col(
        "Replicas",
        "string",
        "currentReplicas is current number of replicas of pods managed by this autoscaler.",
    ),
    AGE,
];

fn hpa_row(hpa: &Value, now: DateTime<Utc>) -> (Vec<Value>, Option<Value>) {
    let reference = format!(
        "{}/{}",
        str_at(hpa, "/spec/scaleTargetRef/kind"),
        str_at(hpa, "/spec/scaleTargetRef/name")
    );
    let min = match hpa.pointer("/spec/minReplicas").and_then(Value::as_i64) {
        Some(n) => n.to_string(),
        None => "<unset>".into(),
    };
    let cells = vec![
        name(hpa),
        reference.into(),
        hpa_metrics(
            arr(hpa, "/spec/metrics"),
            arr(hpa, "/status/currentMetrics"),
        )
        .into(),
        min.into(),
        int_at(hpa, "/spec/maxReplicas").into(),
        int_at(hpa, "/status/currentReplicas").into(),
        age_at(hpa, now),
    ];
    (cells, None)
}

/// `formatHPAMetrics` for `autoscaling/v2`: `cpu: 40%/80%`, `<unknown>/10 (avg)`, at most two
/// then `+ N more...`.
fn hpa_metrics(specs: &[Value], statuses: &[Value]) -> String {
    if specs.is_empty() {
        return "<none>".into();
    }
    const MAX: usize = 2;
    let unknown = || "<unknown>".to_string();
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i);
            let current = |ptr: &str| status.and_then(|s| s.pointer(ptr)).and_then(quantity);
            match str_at(spec, "/type") {
                "External" | "Object" => {
                    let key = if str_at(spec, "/type") == "External" {
                        "external"
                    } else {
                        "object"
                    };
                    match spec
                        .pointer(&format!("/{key}/target/averageValue"))
                        .and_then(quantity)
                    {
                        Some(target) => format!(
                            "{}/{target} (avg)",
                            current(&format!("/{key}/current/averageValue"))
                                .unwrap_or_else(unknown)
                        ),
                        None => format!(
                            "{}/{}",
                            current(&format!("/{key}/current/value")).unwrap_or_else(unknown),
                            spec.pointer(&format!("/{key}/target/value"))
                                .and_then(quantity)
                                .unwrap_or_default()
                        ),
                    }
                }
                "Pods" => format!(
                    "{}/{}",
                    current("/pods/current/averageValue").unwrap_or_else(unknown),
                    spec.pointer("/pods/target/averageValue")
                        .and_then(quantity)
                        .unwrap_or_default()
                ),
                ty @ ("Resource" | "ContainerResource") => {
                    let key = if ty == "Resource" {
                        "resource"
                    } else {
                        "containerResource"
                    };
                    let resource = str_at(spec, &format!("/{key}/name"));
                    match spec
                        .pointer(&format!("/{key}/target/averageValue"))
                        .and_then(quantity)
                    {
                        Some(target) => format!(
                            "{resource}: {}/{target}",
                            current(&format!("/{key}/current/averageValue"))
                                .unwrap_or_else(unknown)
                        ),
                        None => {
                            let current = status
                                .and_then(|s| {
                                    s.pointer(&format!("/{key}/current/averageUtilization"))
                                })
                                .and_then(Value::as_i64)
                                .map(|u| format!("{u}%"))
                                .unwrap_or_else(unknown);
                            let target = spec
                                .pointer(&format!("/{key}/target/averageUtilization"))
                                .and_then(Value::as_i64)
                                .map(|u| format!("{u}%"))
                                .unwrap_or_else(|| "<auto>".into());
                            format!("{resource}: {current}/{target}")
                        }
                    }
                }
                _ => "<unknown type>".into(),
            }
        })
        .collect();
    let shown = list[..list.len().min(MAX)].join(", ");
    if list.len() > MAX {
        format!("{shown} + {} more...", list.len() - MAX)
    } else {
        shown
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn name(obj: &Value) -> Value {
    str_at(obj, "/metadata/name").into()
}

fn age_at(obj: &Value, now: DateTime<Utc>) -> Value {
    age(
        obj.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
        now,
    )
    .into()
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int_at(v: &Value, ptr: &str) -> i64 {
    v.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn bool_at(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn obj_len(v: &Value, ptr: &str) -> usize {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .map_or(0, Map::len)
}

fn time_at(v: &Value, ptr: &str) -> Option<DateTime<Utc>> {
    v.pointer(ptr).and_then(Value::as_str).and_then(parse_time)
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// A quantity as printed (`"500m"`); numbers are printed as they are.
fn quantity(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn non_empty<'a>(v: &'a str, default: &'a str) -> &'a str {
    if v.is_empty() { default } else { v }
}

fn or_none(v: &str) -> Value {
    non_empty(v, "<none>").into()
}

fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `layoutContainerCells` over `spec.template.spec.containers`: names and images, each joined
/// with commas.
fn container_cells(obj: &Value) -> (Value, Value) {
    let containers = arr(obj, "/spec/template/spec/containers");
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(",").into(), images.join(",").into())
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let Some(map) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// `metav1.FormatLabelSelector`: the selector string, `<none>` when it selects everything.
fn format_label_selector(selector: Option<&Value>) -> String {
    let s = selector_string(selector);
    if s.is_empty() { "<none>".into() } else { s }
}

/// `LabelSelectorAsSelector(s).String()`: requirements sorted by key; `k=v`, `k in (a,b)`,
/// `k notin (a,b)`, `k`, `!k`.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector.filter(|s| s.is_object()) else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            requirements.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or_default())));
        }
    }
    for expr in arr(selector, "/matchExpressions") {
        let key = str_at(expr, "/key");
        let mut values: Vec<&str> = arr(expr, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let text = match str_at(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => continue,
        };
        requirements.push((key.to_string(), text));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find_kind;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap()
    }

    /// RFC 3339 time `secs` seconds before [`now`].
    fn ago(secs: i64) -> String {
        (now() - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn render(api_version: &str, kind: &str, objects: &[Value], opts: TableOptions) -> Value {
        let res = find_kind(api_version, kind).unwrap();
        table(res, objects, &opts, now())
    }

    fn cells(api_version: &str, kind: &str, obj: Value) -> Vec<Value> {
        let t = render(api_version, kind, &[obj], TableOptions::default());
        t["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn headers(api_version: &str, kind: &str) -> Vec<(String, i64)> {
        let t = render(api_version, kind, &[], TableOptions::default());
        t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_uppercase(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn human_durations_match_kubernetes() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (182, "3m2s"),
            (600, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 3 * 60, "5h3m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 3 * 3600, "2d3h"),
            (3 * 86400, "3d"),
            (8 * 86400, "8d"),
            (400 * 86400, "400d"),
            (3 * 365 * 86400 + 20 * 86400, "3y20d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(
                human_duration(chrono::Duration::seconds(secs)),
                want,
                "{secs}s"
            );
        }
        assert_eq!(age(None, now()), "<unknown>");
    }

    #[test]
    fn columns_match_kubectl_get() {
        let names = |api: &str, kind: &str, priority: i64| -> Vec<String> {
            headers(api, kind)
                .into_iter()
                .filter(|(_, p)| *p == priority)
                .map(|(n, _)| n)
                .collect()
        };
        let cases: &[(&str, &str, &[&str], &[&str])] = &[
            (
                "v1",
                "Pod",
                &["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
                &["IP", "NODE", "NOMINATED NODE", "READINESS GATES"],
            ),
            (
                "apps/v1",
                "Deployment",
                &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
                &["CONTAINERS", "IMAGES", "SELECTOR"],
            ),
            (
                "apps/v1",
                "ReplicaSet",
                &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
                &["CONTAINERS", "IMAGES", "SELECTOR"],
            ),
            (
                "apps/v1",
                "StatefulSet",
                &["NAME", "READY", "AGE"],
                &["CONTAINERS", "IMAGES"],
            ),
            (
                "apps/v1",
                "DaemonSet",
                &[
                    "NAME",
                    "DESIRED",
                    "CURRENT",
                    "READY",
                    "UP-TO-DATE",
                    "AVAILABLE",
                    "NODE SELECTOR",
                    "AGE",
                ],
                &["CONTAINERS", "IMAGES", "SELECTOR"],
            ),
            (
                "batch/v1",
                "Job",
                &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
                &["CONTAINERS", "IMAGES", "SELECTOR"],
            ),
            (
                "v1",
                "Node",
                &["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
                &[
                    "INTERNAL-IP",
                    "EXTERNAL-IP",
                    "OS-IMAGE",
                    "KERNEL-VERSION",
                    "CONTAINER-RUNTIME",
                ],
            ),
            (
                "v1",
                "Service",
                &[
                    "NAME",
                    "TYPE",
                    "CLUSTER-IP",
                    "EXTERNAL-IP",
                    "PORT(S)",
                    "AGE",
                ],
                &["SELECTOR"],
            ),
            ("v1", "Endpoints", &["NAME", "ENDPOINTS", "AGE"], &[]),
            (
                "discovery.k8s.io/v1",
                "EndpointSlice",
                &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
                &[],
            ),
            ("v1", "ConfigMap", &["NAME", "DATA", "AGE"], &[]),
            ("v1", "Secret", &["NAME", "TYPE", "DATA", "AGE"], &[]),
            ("v1", "Namespace", &["NAME", "STATUS", "AGE"], &[]),
            (
                "v1",
                "Event",
                &["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
                &["SUBOBJECT", "SOURCE", "FIRST SEEN", "COUNT", "NAME"],
            ),
            ("v1", "ServiceAccount", &["NAME", "SECRETS", "AGE"], &[]),
            (
                "node.k8s.io/v1",
                "RuntimeClass",
                &["NAME", "HANDLER", "AGE"],
                &[],
            ),
            (
                "coordination.k8s.io/v1",
                "Lease",
                &["NAME", "HOLDER", "AGE"],
                &[],
            ),
            (
                "autoscaling/v2",
                "HorizontalPodAutoscaler",
                &[
                    "NAME",
                    "REFERENCE",
                    "TARGETS",
                    "MINPODS",
                    "MAXPODS",
                    "REPLICAS",
                    "AGE",
                ],
                &[],
            ),
            (
                "batch/v1",
                "CronJob",
                &[
                    "NAME",
                    "SCHEDULE",
                    "TIMEZONE",
                    "SUSPEND",
                    "ACTIVE",
                    "LAST SCHEDULE",
                    "AGE",
                ],
                &["CONTAINERS", "IMAGES", "SELECTOR"],
            ),
            (
                "scheduling.k8s.io/v1",
                "PriorityClass",
                &["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"],
                &[],
            ),
            (
                "policy/v1",
                "PodDisruptionBudget",
                &[
                    "NAME",
                    "MIN AVAILABLE",
                    "MAX UNAVAILABLE",
                    "ALLOWED DISRUPTIONS",
                    "AGE",
                ],
                &[],
            ),
        ];
        for (api, kind, default, wide) in cases {
            assert_eq!(names(api, kind, 0), *default, "{kind}");
            assert_eq!(names(api, kind, 1), *wide, "{kind} wide");
        }
    }

    #[test]
    fn every_row_has_one_cell_per_column() {
        for r in crate::apiserver::resources::RESOURCES {
            let obj = json!({ "metadata": { "name": "x", "creationTimestamp": ago(10) } });
            let t = table(r, &[obj], &TableOptions::default(), now());
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                t["columnDefinitions"].as_array().unwrap().len(),
                "{}",
                r.kind
            );
        }
    }

    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "web", "namespace": "default", "creationTimestamp": ago(3600), "labels": { "app": "web" } },
            "spec": { "nodeName": "node-1", "containers": [{ "name": "app", "image": "nginx" }] },
            "status": status,
        })
    }

    #[test]
    fn pod_status_column_follows_print_pod() {
        let running = pod(json!({
            "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{ "ip": "10.0.0.5" }],
            "conditions": [{ "type": "Ready", "status": "True" }, { "type": "Initialized", "status": "True" }],
            "containerStatuses": [{ "name": "app", "ready": true, "restartCount": 0, "state": { "running": { "startedAt": ago(3000) } } }]
        }));
        let crash = pod(json!({
            "phase": "Running",
            "containerStatuses": [{
                "name": "app", "ready": false, "restartCount": 5,
                "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                "lastState": { "terminated": { "exitCode": 1, "reason": "Error", "finishedAt": ago(300) } }
            }]
        }));
        let mut terminating = running.clone();
        terminating["metadata"]["deletionTimestamp"] = ago(5).into();
        let mut init = pod(json!({
            "phase": "Pending",
            "initContainerStatuses": [
                { "name": "setup", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } },
                { "name": "migrate", "ready": false, "restartCount": 0, "state": { "running": { "startedAt": ago(10) } } }
            ],
            "containerStatuses": [{ "name": "app", "ready": false, "restartCount": 0, "state": { "waiting": { "reason": "PodInitializing" } } }]
        }));
        init["spec"]["initContainers"] = json!([{ "name": "setup", "image": "busybox" }, { "name": "migrate", "image": "busybox" }]);
        let mut init_crash = init.clone();
        init_crash["status"]["initContainerStatuses"][1]["state"] =
            json!({ "waiting": { "reason": "CrashLoopBackOff" } });
        let completed = pod(json!({
            "phase": "Succeeded",
            "containerStatuses": [{ "name": "app", "ready": false, "restartCount": 0, "state": { "terminated": { "exitCode": 0, "reason": "Completed" } } }]
        }));
        let mut completed_deleting = completed.clone();
        completed_deleting["metadata"]["deletionTimestamp"] = ago(5).into();
        let oom = pod(json!({
            "phase": "Running",
            "containerStatuses": [{ "name": "app", "restartCount": 0, "state": { "terminated": { "exitCode": 137 } } }]
        }));
        let pending = pod(json!({ "phase": "Pending" }));
        let gated = pod(
            json!({ "phase": "Pending", "conditions": [{ "type": "PodScheduled", "status": "False", "reason": "SchedulingGated" }] }),
        );
        let mut sidecar = pod(json!({
            "phase": "Running",
            "conditions": [{ "type": "Ready", "status": "True" }, { "type": "Initialized", "status": "True" }],
            "initContainerStatuses": [{ "name": "proxy", "ready": true, "started": true, "restartCount": 2, "state": { "running": {} },
                "lastState": { "terminated": { "exitCode": 1, "finishedAt": ago(90) } } }],
            "containerStatuses": [{ "name": "app", "ready": true, "restartCount": 0, "state": { "running": {} } }]
        }));
        sidecar["spec"]["initContainers"] =
            json!([{ "name": "proxy", "image": "envoy", "restartPolicy": "Always" }]);

        let cases: &[(&str, &Value, &str, &str, &str)] = &[
            ("running", &running, "1/1", "Running", "0"),
            (
                "crash loop",
                &crash,
                "0/1",
                "CrashLoopBackOff",
                "5 (5m ago)",
            ),
            ("terminating", &terminating, "1/1", "Terminating", "0"),
            ("init", &init, "0/1", "Init:1/2", "0"),
            (
                "init crash",
                &init_crash,
                "0/1",
                "Init:CrashLoopBackOff",
                "0",
            ),
            ("completed", &completed, "0/1", "Completed", "0"),
            (
                "completed while deleting",
                &completed_deleting,
                "0/1",
                "Completed",
                "0",
            ),
            ("killed without reason", &oom, "0/1", "ExitCode:137", "0"),
            ("pending", &pending, "0/1", "Pending", "0"),
            ("gated", &gated, "0/1", "SchedulingGated", "0"),
            ("sidecar", &sidecar, "2/2", "Running", "2 (90s ago)"),
        ];
        for (what, obj, ready, status, restarts) in cases {
            let c = cells("v1", "Pod", (*obj).clone());
            assert_eq!(
                (
                    c[1].as_str().unwrap(),
                    c[2].as_str().unwrap(),
                    c[3].as_str().unwrap()
                ),
                (*ready, *status, *restarts),
                "{what}"
            );
            assert_eq!(c[4], "60m", "{what}");
        }
        let c = cells("v1", "Pod", running);
        assert_eq!(
            c[5..],
            [
                json!("10.0.0.5"),
                json!("node-1"),
                json!("<none>"),
                json!("<none>")
            ]
        );
        let c = cells("v1", "Pod", pending);
        assert_eq!(c[5], "<none>");
    }

    #[test]
    fn finished_pods_carry_a_completed_row_condition() {
        let t = render(
            "v1",
            "Pod",
            &[pod(json!({ "phase": "Succeeded" }))],
            TableOptions::default(),
        );
        assert_eq!(t["rows"][0]["conditions"][0]["type"], "Completed");
        let t = render(
            "v1",
            "Pod",
            &[pod(json!({ "phase": "Running" }))],
            TableOptions::default(),
        );
        assert!(t["rows"][0].get("conditions").is_none());
    }

    #[test]
    fn include_object_selects_the_row_object() {
        let p = pod(json!({ "phase": "Running" }));
        let objects = [p.clone()];
        let meta = render("v1", "Pod", &objects, TableOptions::default());
        assert_eq!(meta["kind"], "Table");
        assert_eq!(meta["apiVersion"], "meta.k8s.io/v1");
        let row = &meta["rows"][0]["object"];
        assert_eq!(row["kind"], "PartialObjectMetadata");
        assert_eq!(row["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(row["metadata"], p["metadata"]);
        let whole = render(
            "v1",
            "Pod",
            &objects,
            TableOptions {
                include_object: IncludeObject::Object,
                no_headers: false,
            },
        );
        assert_eq!(whole["rows"][0]["object"], p);
        let none = render(
            "v1",
            "Pod",
            &objects,
            TableOptions {
                include_object: IncludeObject::None,
                no_headers: true,
            },
        );
        assert!(none["rows"][0]["object"].is_null());
        assert_eq!(none["columnDefinitions"], json!([]));
        assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::parse("bogus"), None);
    }

    #[test]
    fn nodes_show_readiness_roles_and_addresses() {
        let node = |ready: &str, unschedulable: bool| {
            json!({
                "metadata": { "name": "n1", "creationTimestamp": ago(2 * 86400 + 3 * 3600),
                    "labels": { "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge" } },
                "spec": { "unschedulable": unschedulable },
                "status": {
                    "conditions": [{ "type": "MemoryPressure", "status": "False" }, { "type": "Ready", "status": ready }],
                    "addresses": [{ "type": "Hostname", "address": "n1" }, { "type": "InternalIP", "address": "192.168.1.10" }],
                    "nodeInfo": { "kubeletVersion": "v1.33.0-flotilla", "osImage": "Debian", "kernelVersion": "6.1.0", "containerRuntimeVersion": "" }
                }
            })
        };
        let c = cells("v1", "Node", node("True", false));
        assert_eq!(
            c,
            vec![
                json!("n1"),
                json!("Ready"),
                json!("control-plane,edge,worker"),
                json!("2d3h"),
                json!("v1.33.0-flotilla"),
                json!("192.168.1.10"),
                json!("<none>"),
                json!("Debian"),
                json!("6.1.0"),
                json!("<unknown>"),
            ]
        );
        assert_eq!(
            cells("v1", "Node", node("Unknown", true))[1],
            "NotReady,SchedulingDisabled"
        );
        assert_eq!(
            cells("v1", "Node", json!({ "metadata": { "name": "n2" } }))[1..3],
            [json!("Unknown"), json!("<none>")]
        );
    }

    #[test]
    fn services_show_type_ips_and_ports() {
        let svc = |spec: Value, status: Value| json!({ "metadata": { "name": "web", "creationTimestamp": ago(45) }, "spec": spec, "status": status });
        let node_port = svc(
            json!({ "type": "NodePort", "clusterIP": "10.96.0.12", "clusterIPs": ["10.96.0.12"],
                "ports": [{ "port": 80, "nodePort": 30080, "protocol": "TCP" }, { "port": 53, "protocol": "UDP" }],
                "selector": { "tier": "front", "app": "web" } }),
            json!({}),
        );
        assert_eq!(
            cells("v1", "Service", node_port),
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.12"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("45s"),
                json!("app=web,tier=front"),
            ]
        );
        let headless = svc(
            json!({ "clusterIP": "None", "ports": [{ "port": 8080 }] }),
            json!({}),
        );
        assert_eq!(
            cells("v1", "Service", headless)[1..5],
            [
                json!("ClusterIP"),
                json!("None"),
                json!("<none>"),
                json!("8080/TCP")
            ]
        );
        let lb = svc(
            json!({ "type": "LoadBalancer", "clusterIPs": ["10.96.0.7"], "ports": [] }),
            json!({ "loadBalancer": {} }),
        );
        assert_eq!(
            cells("v1", "Service", lb.clone())[3..5],
            [json!("<pending>"), json!("<none>")]
        );
        let mut lb_ready = lb;
        lb_ready["status"]["loadBalancer"]["ingress"] = json!([{ "ip": "203.0.113.9" }]);
        lb_ready["spec"]["externalIPs"] = json!(["198.51.100.1"]);
        assert_eq!(
            cells("v1", "Service", lb_ready)[3],
            "203.0.113.9,198.51.100.1"
        );
        let ext = svc(
            json!({ "type": "ExternalName", "externalName": "db.example.com" }),
            json!({}),
        );
        assert_eq!(
            cells("v1", "Service", ext)[2..4],
            [json!("<none>"), json!("db.example.com")]
        );
    }

    #[test]
    fn workloads_show_replicas_containers_and_selectors() {
        let template = json!({ "spec": { "containers": [{ "name": "web", "image": "nginx:1.27" }, { "name": "log", "image": "fluentbit" }] } });
        let selector = json!({ "matchLabels": { "app": "web" }, "matchExpressions": [
            { "key": "tier", "operator": "In", "values": ["front", "back"] }, { "key": "canary", "operator": "DoesNotExist" } ] });
        let deploy = json!({
            "metadata": { "name": "web", "creationTimestamp": ago(600) },
            "spec": { "replicas": 3, "selector": selector, "template": template },
            "status": { "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2 }
        });
        assert_eq!(
            cells("apps/v1", "Deployment", deploy),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("10m"),
                json!("web,log"),
                json!("nginx:1.27,fluentbit"),
                json!("app=web,!canary,tier in (back,front)"),
            ]
        );
        let rs = json!({ "metadata": { "name": "web-5d4" }, "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "web" } }, "template": template }, "status": { "replicas": 2 } });
        assert_eq!(
            cells("apps/v1", "ReplicaSet", rs)[1..5],
            [json!(2), json!(2), json!(0), json!("<unknown>")]
        );
        let sts = json!({ "metadata": { "name": "db" }, "spec": { "replicas": 3, "template": template }, "status": { "readyReplicas": 2 } });
        assert_eq!(
            cells("apps/v1", "StatefulSet", sts)[..3],
            [json!("db"), json!("2/3"), json!("<unknown>")]
        );
        let ds = json!({
            "metadata": { "name": "agent", "creationTimestamp": ago(30) },
            "spec": { "selector": {}, "template": { "spec": { "nodeSelector": { "kubernetes.io/os": "linux" }, "containers": [] } } },
            "status": { "desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1 }
        });
        assert_eq!(
            cells("apps/v1", "DaemonSet", ds),
            vec![
                json!("agent"),
                json!(2),
                json!(2),
                json!(1),
                json!(2),
                json!(1),
                json!("kubernetes.io/os=linux"),
                json!("30s"),
                json!(""),
                json!(""),
                json!("<none>"),
            ]
        );
    }

    #[test]
    fn jobs_show_status_completions_and_duration() {
        let job = |spec: Value, status: Value| json!({ "metadata": { "name": "pi", "creationTimestamp": ago(200) }, "spec": spec, "status": status });
        let done = job(
            json!({ "completions": 1, "selector": { "matchLabels": { "batch.kubernetes.io/controller-uid": "u1" } }, "template": { "spec": { "containers": [{ "name": "pi", "image": "perl" }] } } }),
            json!({ "succeeded": 1, "startTime": ago(200), "completionTime": ago(158), "conditions": [{ "type": "Complete", "status": "True" }] }),
        );
        assert_eq!(
            cells("batch/v1", "Job", done),
            vec![
                json!("pi"),
                json!("Complete"),
                json!("1/1"),
                json!("42s"),
                json!("3m20s"),
                json!("pi"),
                json!("perl"),
                json!("batch.kubernetes.io/controller-uid=u1"),
            ]
        );
        let running = job(json!({ "parallelism": 3 }), json!({ "startTime": ago(65) }));
        assert_eq!(
            cells("batch/v1", "Job", running)[1..4],
            [json!("Running"), json!("0/1 of 3"), json!("65s")]
        );
        let failed = job(
            json!({ "completions": 2 }),
            json!({ "succeeded": 1, "conditions": [{ "type": "Failed", "status": "True" }] }),
        );
        assert_eq!(
            cells("batch/v1", "Job", failed)[1..4],
            [json!("Failed"), json!("1/2"), json!("")]
        );
    }

    #[test]
    fn endpoints_and_slices_list_three_addresses_then_more() {
        let ep = json!({ "metadata": { "name": "web" }, "subsets": [{
            "addresses": [{ "ip": "10.0.0.1" }, { "ip": "10.0.0.2" }, { "ip": "fd00::3" }, { "ip": "10.0.0.4" }],
            "ports": [{ "port": 8080 }]
        }] });
        assert_eq!(
            cells("v1", "Endpoints", ep)[1],
            "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more..."
        );
        assert_eq!(
            cells("v1", "Endpoints", json!({ "metadata": { "name": "e" } }))[1],
            "<none>"
        );
        let slice = json!({ "metadata": { "name": "web-abc" }, "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080 }, { "name": "metrics" }],
            "endpoints": [{ "addresses": ["10.0.0.1"] }, { "addresses": ["10.0.0.2"] }] });
        assert_eq!(
            cells("discovery.k8s.io/v1", "EndpointSlice", slice)[1..4],
            [
                json!("IPv4"),
                json!("8080,metrics"),
                json!("10.0.0.1,10.0.0.2")
            ]
        );
        let empty = json!({ "metadata": { "name": "e" }, "addressType": "IPv4" });
        assert_eq!(
            cells("discovery.k8s.io/v1", "EndpointSlice", empty)[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn small_kinds() {
        let cm = json!({ "metadata": { "name": "cfg" }, "data": { "a": "1", "b": "2" }, "binaryData": { "c": "AA==" } });
        assert_eq!(cells("v1", "ConfigMap", cm)[1], 3);
        let secret = json!({ "metadata": { "name": "s" }, "data": { "k": "dg==" } });
        assert_eq!(
            cells("v1", "Secret", secret)[1..3],
            [json!("Opaque"), json!(1)]
        );
        let ns = json!({ "metadata": { "name": "default" }, "status": { "phase": "Terminating" } });
        assert_eq!(cells("v1", "Namespace", ns)[1], "Terminating");
        let sa = json!({ "metadata": { "name": "default" } });
        assert_eq!(cells("v1", "ServiceAccount", sa)[1], 0);
        let rc = json!({ "metadata": { "name": "wasm" }, "handler": "wasmtime" });
        assert_eq!(cells("node.k8s.io/v1", "RuntimeClass", rc)[1], "wasmtime");
        let lease = json!({ "metadata": { "name": "n1" }, "spec": { "holderIdentity": "n1" } });
        assert_eq!(cells("coordination.k8s.io/v1", "Lease", lease)[1], "n1");
    }

    #[test]
    fn events_show_age_object_and_source() {
        let ev = json!({
            "metadata": { "name": "web.17f", "namespace": "default" },
            "involvedObject": { "kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}" },
            "reason": "Pulled", "type": "Normal", "message": "  Successfully pulled image \"nginx\"\n",
            "firstTimestamp": ago(600), "lastTimestamp": ago(120), "count": 3,
            "source": { "component": "kubelet", "host": "node-1" }
        });
        assert_eq!(
            cells("v1", "Event", ev),
            vec![
                json!("2m"),
                json!("Normal"),
                json!("Pulled"),
                json!("pod/web"),
                json!("spec.containers{app}"),
                json!("kubelet, node-1"),
                json!("Successfully pulled image \"nginx\""),
                json!("10m"),
                json!(3),
                json!("web.17f"),
            ]
        );
        let new_api = json!({
            "metadata": { "name": "e2" }, "involvedObject": { "kind": "Node" }, "eventTime": "2025-06-01T11:59:30.000000Z",
            "reportingComponent": "flotilla-scheduler"
        });
        let c = cells("v1", "Event", new_api);
        assert_eq!(
            (c[0].clone(), c[3].clone(), c[5].clone(), c[8].clone()),
            (
                json!("30s"),
                json!("node"),
                json!("flotilla-scheduler"),
                json!(1)
            )
        );
    }

    #[test]
    fn hpa_targets_follow_format_hpa_metrics() {
        let hpa = json!({
            "metadata": { "name": "web" },
            "spec": { "scaleTargetRef": { "kind": "Deployment", "name": "web" }, "minReplicas": 1, "maxReplicas": 10,
                "metrics": [
                    { "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 80 } } },
                    { "type": "Resource", "resource": { "name": "memory", "target": { "type": "AverageValue", "averageValue": "500Mi" } } },
                    { "type": "Pods", "pods": { "metric": { "name": "qps" }, "target": { "type": "AverageValue", "averageValue": "10" } } }
                ] },
            "status": { "currentReplicas": 2, "currentMetrics": [
                { "type": "Resource", "resource": { "name": "cpu", "current": { "averageUtilization": 40, "averageValue": "120m" } } }
            ] }
        });
        assert_eq!(
            cells("autoscaling/v2", "HorizontalPodAutoscaler", hpa),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 40%/80%, memory: <unknown>/500Mi + 1 more..."),
                json!("1"),
                json!(10),
                json!(2),
                json!("<unknown>"),
            ]
        );
        let bare = json!({ "metadata": { "name": "h" }, "spec": { "scaleTargetRef": { "kind": "Deployment", "name": "x" }, "maxReplicas": 3 } });
        assert_eq!(
            cells("autoscaling/v2", "HorizontalPodAutoscaler", bare)[2..4],
            [json!("<none>"), json!("<unset>")]
        );
    }
}
