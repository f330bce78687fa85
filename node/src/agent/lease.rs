//! The node's Lease in `kube-node-lease`: renewed every few seconds so the control plane can
//! tell a live agent from a dead one cheaply.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// The namespace of node leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How long a lease stays valid without renewal, in seconds (the kubelet's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;

/// Creates or renews the Lease of node `name` (owned by its Node, whose uid is `node_uid`).
pub async fn renew(
    client: &kube::Client,
    name: &str,
    node_uid: Option<&str>,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    if api.get_opt(name).await?.is_some() {
        let patch = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        return Ok(());
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.into(),
                    uid: uid.into(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now.clone()),
            acquire_time: Some(now),
            ..LeaseSpec::default()
        }),
    };
    match api.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
