//! Pod networks for container pods when the agent runs as root: each pod gets a network
//! namespace of its own (`/run/netns/<bridge>-<n>`), with `lo` and an `eth0` that is one end of
//! a veth pair whose other end is a port of the node's bridge (`flotilla0` by default). The
//! pod's address comes from the bridge's range (the bridge holds the first address, the pods'
//! default gateway), so the node (its proxy, its probes) reaches every pod on its own address
//! through the bridge, and pods reach each other.
//!
//! The work is done by iproute2's `ip`, in two batch invocations (host side, then inside the
//! namespace). To keep them off a pod's path to Running, once a container pod ran, one network
//! is kept ready (its address assigned, its links up): a pod takes it, and the next one is made
//! in the background. Deleting the namespace and the host end of the veth pair takes a pod's network
//! away. A small file per pod under the agent's data directory (`oci/network/<uid>`: address
//! and namespace) lets a restarted agent find the networks of the containers it adopts, and
//! remove those of pods deleted while it was down; namespaces of this bridge that no file names
//! (a spare an earlier agent left) are removed at start.
//!
//! Services: the node's proxy listens on ClusterIPs from a loopback range. Inside a pod's
//! namespace only 127.0.0.1 stays local; other loopback addresses take the default route to the
//! node (`route_localnet` on both ends of the link lets them cross it), so a container pod
//! reaches Services by ClusterIP as a Wasm pod does. The price: a container pod can reach what
//! the node serves on loopback addresses, as a host-network pod could.
//!
//! What it does not do (yet): forwarding and masquerading to the world outside the node
//! (`net.ipv4.ip_forward` and NAT rules are the host's business).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
    // std mutexes: map and option operations only, never held across an await.
    attached: Mutex<HashMap<String, Slot>>,
    spare: Mutex<Option<Slot>>,
    next: AtomicU64,
    /// The bridge is set up with the first pod network (an agent that runs no container pod
    /// leaves the host's interfaces alone); retried until it works.
    ready: tokio::sync::OnceCell<()>,
}

/// One network: a namespace with its address, and the host end of its veth pair.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot {
    ip: Ipv4Addr,
    netns: String,
}

impl Slot {
    fn veth(&self) -> String {
        veth_name(&self.netns)
    }

    fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.netns)
    }
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
    /// The network of bridge `bridge` (set up with the first pod network) with the first
    /// address of `range`, keeping per-pod records under `state_dir`; records of earlier pods
    /// are kept for adoption, namespaces of the bridge that no record names are removed.
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
        let first = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let network = BridgeNetwork {
            bridge: bridge.to_string(),
            range,
            gateway,
            pool,
            state_dir: state_dir.to_path_buf(),
            attached: Mutex::default(),
            spare: Mutex::default(),
            next: AtomicU64::new(first),
            ready: tokio::sync::OnceCell::new(),
        };
        network.remove_unrecorded().await;
        Ok(network)
    }

    /// Sets the bridge up (or finds it): up, the first address of the range, and
    /// `route_localnet`, so pods reach ClusterIPs (loopback addresses the node's proxy binds)
    /// through it.
    async fn ensure_bridge(&self) -> Result<(), String> {
        self.ready
            .get_or_try_init(|| async {
                let bridge = self.bridge.as_str();
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
                let address = format!("{}/{}", self.gateway, self.range.prefix);
                run_ip(&["addr", "replace", &address, "dev", bridge], None).await?;
                run_ip(&["link", "set", bridge, "up"], None).await?;
                let localnet = format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet");
                std::fs::write(&localnet, "1")
                    .map_err(|e| format!("cannot write {localnet}: {e}"))?;
                tracing::info!(bridge, range = %self.range, "pod bridge ready");
                Ok(())
            })
            .await
            .map(drop)
            .map_err(|e: String| format!("pod bridge {}: {e}", self.bridge))
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// The bridge's own address: the pods' default gateway, where the node's cluster DNS
    /// server listens.
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The range pod addresses come from.
    pub fn range(&self) -> Cidr {
        self.range
    }

    /// Gives pod `uid` its network: the one an earlier agent made for it when it still exists,
    /// else the spare one, else a new one.
    pub async fn attach(&self, uid: &str) -> Result<Attached, String> {
        if let Some(slot) = lock(&self.attached).get(uid).cloned() {
            return Ok(attached(&slot));
        }
        let record = self.state_dir.join(uid);
        if let Some(slot) = read_record(&record)
            && slot.path().exists()
            && self.pool.allocate(uid, Some(slot.ip)) == Some(slot.ip)
        {
            lock(&self.attached).insert(uid.to_string(), slot.clone());
            return Ok(attached(&slot));
        }
        let spare = lock(&self.spare).take();
        let slot = match spare {
            // (Another agent on a misconfigured shared bridge may have removed it.)
            Some(slot) if slot.path().exists() && self.pool.transfer(&spare_owner(&slot), uid) => {
                slot
            }
            other => {
                if let Some(slot) = other {
                    self.remove_links(&slot).await;
                    self.pool.release(&spare_owner(&slot));
                }
                self.make(uid).await?
            }
        };
        let line = format!("{} {}\n", slot.ip, slot.netns);
        if let Err(e) = std::fs::write(&record, line) {
            self.remove_links(&slot).await;
            self.pool.release(uid);
            return Err(format!(
                "pod network: cannot write {}: {e}",
                record.display()
            ));
        }
        lock(&self.attached).insert(uid.to_string(), slot.clone());
        Ok(attached(&slot))
    }

    /// Makes a spare network when there is none (after a pod took it, and at start).
    pub async fn refill(&self) {
        if lock(&self.spare).is_some() {
            return;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let owner = format!("spare:{n}");
        match self.make_as(&owner, n).await {
            Ok(slot) => {
                let extra = {
                    let mut spare = lock(&self.spare);
                    if spare.is_none() {
                        self.pool.transfer(&owner, &spare_owner(&slot));
                        *spare = Some(slot);
                        None
                    } else {
                        Some(slot)
                    }
                };
                if let Some(slot) = extra {
                    self.remove_links(&slot).await;
                    self.pool.release(&owner);
                }
            }
            Err(e) => {
                tracing::warn!(bridge = %self.bridge, error = %e, "cannot make a spare pod network")
            }
        }
    }

    /// Removes the spare network (when the agent stops).
    pub async fn drop_spare(&self) {
        let spare = lock(&self.spare).take();
        if let Some(slot) = spare {
            self.remove_links(&slot).await;
            self.pool.release(&spare_owner(&slot));
        }
    }

    async fn make(&self, owner: &str) -> Result<Slot, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.make_as(owner, n).await
    }

    /// A new namespace number `n` with its veth pair and an address held by `owner`.
    async fn make_as(&self, owner: &str, n: u64) -> Result<Slot, String> {
        self.ensure_bridge().await?;
        let ip = self
            .pool
            .allocate(owner, None)
            .ok_or_else(|| format!("no free address in the pod bridge's range {}", self.range))?;
        let slot = Slot {
            ip,
            netns: format!("{}-{n:x}", self.bridge),
        };
        let (netns, veth) = (&slot.netns, slot.veth());
        let host_side = format!(
            "netns add {netns}\nlink add {veth} type veth peer name eth0 netns {netns}\n\
             link set {veth} master {} up\n",
            self.bridge
        );
        // Loopback addresses other than 127.0.0.1 leave through eth0 (the default route), to
        // the node, whose proxy serves the ClusterIPs there.
        let pod_side = format!(
            "link set lo up\naddr add {ip}/{} dev eth0\nlink set eth0 up\n\
             route add default via {}\nroute del local 127.0.0.0/8 dev lo table local\n",
            self.range.prefix, self.gateway
        );
        let made = async {
            run_ip(&["-batch", "-"], Some(&host_side)).await?;
            run_ip(&["-n", netns, "-batch", "-"], Some(&pod_side)).await?;
            sysctl_in(
                netns,
                &[
                    "net.ipv4.conf.all.route_localnet=1",
                    "net.ipv4.conf.eth0.route_localnet=1",
                ],
            )
            .await
        }
        .await;
        if let Err(e) = made {
            self.remove_links(&slot).await;
            self.pool.release(owner);
            return Err(format!("pod network: {e}"));
        }
        Ok(slot)
    }

    /// Takes pod `uid`'s network away (its namespace, its veth pair, its address).
    pub async fn detach(&self, uid: &str) {
        let record = self.state_dir.join(uid);
        let slot = lock(&self.attached)
            .remove(uid)
            .or_else(|| read_record(&record));
        let Some(slot) = slot else {
            return;
        };
        self.remove_links(&slot).await;
        let _ = std::fs::remove_file(record);
        self.pool.release(uid);
    }

    async fn remove_links(&self, slot: &Slot) {
        let batch = format!("netns del {}\nlink del {}\n", slot.netns, slot.veth());
        // `-force`: go on after the first error (the veth pair usually went with the
        // namespace already).
        let _ = run_ip(&["-force", "-batch", "-"], Some(&batch)).await;
    }

    /// Removes the namespaces of this bridge no record names (spares an earlier agent left).
    async fn remove_unrecorded(&self) {
        let recorded: Vec<String> = std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_record(&e.path()))
            .map(|slot| slot.netns)
            .collect();
        let prefix = format!("{}-", self.bridge);
        let stale: Vec<String> = std::fs::read_dir(NETNS_DIR)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix) && !recorded.contains(n))
            .collect();
        for netns in stale {
            let slot = Slot {
                ip: Ipv4Addr::UNSPECIFIED,
                netns,
            };
            self.remove_links(&slot).await;
        }
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
            if !lock(&self.attached).contains_key(&uid) {
                tracing::info!(pod_uid = %uid, "removing the network of a pod that is gone");
                self.detach(&uid).await;
            }
        }
    }
}

fn attached(slot: &Slot) -> Attached {
    Attached {
        ip: slot.ip,
        netns: slot.path(),
    }
}

fn spare_owner(slot: &Slot) -> String {
    format!("spare:{}", slot.netns)
}

/// The host end of the veth pair of namespace `netns`: `fl` and 12 hex digits of a hash of
/// its name (an interface name has at most 15 bytes).
pub fn veth_name(netns: &str) -> String {
    // FNV-1a: stable across builds, so a restarted agent finds the names it gave.
    let hash = netns.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("fl{:012x}", hash & 0xffff_ffff_ffff)
}

/// A pod's record: `<ip> <namespace>`.
fn read_record(path: &Path) -> Option<Slot> {
    let text = std::fs::read_to_string(path).ok()?;
    let (ip, netns) = text.trim().split_once(' ')?;
    Some(Slot {
        ip: ip.parse().ok()?,
        netns: netns.to_string(),
    })
}

/// Sets `settings` (`key=value`) in network namespace `netns`.
async fn sysctl_in(netns: &str, settings: &[&str]) -> Result<(), String> {
    let mut args = vec!["netns", "exec", netns, "sysctl", "-q", "-w"];
    args.extend_from_slice(settings);
    run_ip(&args, None).await
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
        let veth = veth_name("flotilla0-18c2f3a4b5");
        assert_eq!(veth.len(), 14);
        assert!(veth.starts_with("fl"));
        assert_eq!(
            veth,
            veth_name("flotilla0-18c2f3a4b5"),
            "the same name, the same veth"
        );
        assert_ne!(veth, veth_name("flotilla0-18c2f3a4b6"));
    }

    #[test]
    fn records_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("uid");
        std::fs::write(&path, "10.244.0.7 flotilla0-1a\n").unwrap();
        assert_eq!(
            read_record(&path),
            Some(Slot {
                ip: "10.244.0.7".parse().unwrap(),
                netns: "flotilla0-1a".into()
            })
        );
        std::fs::write(&path, "garbage").unwrap();
        assert_eq!(read_record(&path), None);
    }
}
