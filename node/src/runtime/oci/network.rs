//! Pod networks for container pods when the agent runs as root: each pod gets a network
//! namespace of its own (`/run/netns/flotilla-<pod uid>`), with `lo` and an `eth0` that is one
//! end of a veth pair whose other end is a port of the node's bridge (`flotilla0` by default).
//! The pod's address comes from the bridge's range (the bridge holds the first address, the
//! pods' default gateway), so the node (its proxy, its probes) reaches every pod on its own
//! address through the bridge, and pods reach each other.
//!
//! The work is done by iproute2's `ip`, in two batch invocations per pod (host side, then inside
//! the namespace): a few milliseconds. Deleting the namespace and the host end of the veth pair
//! takes the pod's network away; a small file per pod under the agent's data directory
//! (`oci/network/<uid>`, holding the address) lets a restarted agent find the namespaces of the
//! containers it adopts, and remove those of pods deleted while it was down.
//!
//! What it does not do (yet): forwarding and masquerading to the world outside the node
//! (`net.ipv4.ip_forward` and NAT rules are the host's business), and ClusterIPs from inside a
//! pod namespace (the proxy listens on the node's loopback range; a container pod with its own
//! network reaches Services through pod addresses only).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::pod::{AddressPool, Cidr};

/// Where `ip netns` keeps named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// How long one `ip` invocation may take.
const IP_TIMEOUT: Duration = Duration::from_secs(10);
/// The pool owner of the bridge's own address.
const GATEWAY_OWNER: &str = "<bridge>";

/// The node's pod bridge and the addresses of the pods on it; shared by the OCI runtimes.
#[derive(Debug)]
pub struct BridgeNetwork {
    bridge: String,
    range: Cidr,
    gateway: Ipv4Addr,
    pool: AddressPool,
    state_dir: PathBuf,
    // A std mutex: set operations only.
    attached: Mutex<HashSet<String>>,
}

/// A pod's own network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The pod's address (on its `eth0`).
    pub ip: Ipv4Addr,
    /// The namespace its containers join.
    pub netns: PathBuf,
}

/// Whether this process may create network namespaces (it is root) and `ip` is there; the
/// reason why not otherwise.
pub fn usable() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("the agent does not run as root".into());
    }
    let ip = std::process::Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Err("the ip command (iproute2) is not installed".into());
    }
    Ok(())
}

impl BridgeNetwork {
    /// Sets up (or finds) bridge `bridge` with the first address of `range`, keeping per-pod
    /// records under `state_dir`; records of earlier pods are kept for adoption.
    pub async fn new(bridge: &str, range: Cidr, state_dir: &Path) -> Result<BridgeNetwork, String> {
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
            return Err(format!("{bridge:?} is not a valid interface name"));
        }
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create {}: {e}", state_dir.display()))?;
        let pool = AddressPool::new(range);
        let gateway = pool
            .allocate(GATEWAY_OWNER, None)
            .ok_or_else(|| format!("range {range} has no usable address"))?;
        let exists = Command::new("ip")
            .args(["link", "show", bridge])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !exists {
            run_ip(&["link", "add", bridge, "type", "bridge"], None).await?;
        }
        let address = format!("{gateway}/{}", range.prefix);
        run_ip(&["addr", "replace", &address, "dev", bridge], None).await?;
        run_ip(&["link", "set", bridge, "up"], None).await?;
        Ok(BridgeNetwork {
            bridge: bridge.to_string(),
            range,
            gateway,
            pool,
            state_dir: state_dir.to_path_buf(),
            attached: Mutex::default(),
        })
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The pods' range.
    pub fn range(&self) -> Cidr {
        self.range
    }

    /// Gives pod `uid` its network: the one an earlier agent made for it when it still exists,
    /// else a new namespace and veth pair with an address (`wanted` when free).
    pub async fn attach(&self, uid: &str, wanted: Option<Ipv4Addr>) -> Result<Attached, String> {
        let (netns, veth) = (netns_name(uid), veth_name(uid));
        let path = Path::new(NETNS_DIR).join(&netns);
        let record = self.state_dir.join(uid);
        if let Some(ip) = read_record(&record)
            && path.exists()
            && self.pool.allocate(uid, Some(ip)) == Some(ip)
        {
            lock(&self.attached).insert(uid.to_string());
            return Ok(Attached { ip, netns: path });
        }
        let ip = self
            .pool
            .allocate(uid, wanted)
            .ok_or_else(|| format!("no free address in the pod bridge's range {}", self.range))?;
        lock(&self.attached).insert(uid.to_string());
        if path.exists() {
            self.remove_links(uid).await;
        }
        let host_side = format!(
            "netns add {netns}\nlink add {veth} type veth peer name eth0 netns {netns}\n\
             link set {veth} master {} up\n",
            self.bridge
        );
        let pod_side = format!(
            "link set lo up\naddr add {ip}/{} dev eth0\nlink set eth0 up\n\
             route add default via {}\n",
            self.range.prefix, self.gateway
        );
        let made = async {
            run_ip(&["-batch", "-"], Some(&host_side)).await?;
            run_ip(&["-n", &netns, "-batch", "-"], Some(&pod_side)).await?;
            std::fs::write(&record, ip.to_string())
                .map_err(|e| format!("cannot write {}: {e}", record.display()))
        }
        .await;
        if let Err(e) = made {
            self.detach(uid).await;
            return Err(format!("pod network: {e}"));
        }
        Ok(Attached { ip, netns: path })
    }

    /// Takes pod `uid`'s network away (its namespace, its veth pair, its address).
    pub async fn detach(&self, uid: &str) {
        let record = self.state_dir.join(uid);
        if !lock(&self.attached).contains(uid) && !record.exists() {
            return;
        }
        self.remove_links(uid).await;
        let _ = std::fs::remove_file(self.state_dir.join(uid));
        self.pool.release(uid);
        lock(&self.attached).remove(uid);
    }

    async fn remove_links(&self, uid: &str) {
        let batch = format!(
            "netns del {}\nlink del {}\n",
            netns_name(uid),
            veth_name(uid)
        );
        // `-force`: go on after the first error (the veth pair usually went with the
        // namespace already).
        let _ = run_ip(&["-force", "-batch", "-"], Some(&batch)).await;
    }

    /// Removes the networks of pods recorded by an earlier agent that no pod attached since.
    pub async fn remove_unattached(&self) {
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return;
        };
        let uids: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for uid in uids {
            if !lock(&self.attached).contains(&uid) {
                tracing::info!(pod_uid = %uid, "removing the network of a pod that is gone");
                self.remove_links(&uid).await;
                let _ = std::fs::remove_file(self.state_dir.join(&uid));
            }
        }
    }
}

/// The namespace name of pod `uid`.
pub fn netns_name(uid: &str) -> String {
    format!("flotilla-{uid}")
}

/// The host end of pod `uid`'s veth pair: `fl` and 12 hex digits of a hash of the uid (an
/// interface name has at most 15 bytes).
pub fn veth_name(uid: &str) -> String {
    // FNV-1a: stable across builds, so a restarted agent finds the names it gave.
    let hash = uid.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("fl{:012x}", hash & 0xffff_ffff_ffff)
}

fn read_record(path: &Path) -> Option<Ipv4Addr> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Runs `ip ARGS` (with `input` on stdin for batches); the error names what `ip` said.
async fn run_ip(args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut c = Command::new("ip");
    c.args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = async {
        let mut child = c.spawn().map_err(|e| format!("cannot run ip: {e}"))?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(text.as_bytes())
                .await
                .map_err(|e| format!("ip: cannot write its input: {e}"))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| format!("ip: {e}"))
    };
    let out = tokio::time::timeout(IP_TIMEOUT, run)
        .await
        .map_err(|_| format!("ip {} timed out", args.join(" ")))??;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits_and_are_stable() {
        let uid = "0b6f1c3e-5d7a-4c1e-9f00-123456789abc";
        let veth = veth_name(uid);
        assert_eq!(veth.len(), 14);
        assert!(veth.starts_with("fl"));
        assert_eq!(veth, veth_name(uid), "the same uid, the same name");
        assert_ne!(veth, veth_name("0b6f1c3e-5d7a-4c1e-9f00-123456789abd"));
        assert_eq!(netns_name("u"), "flotilla-u");
    }
}
