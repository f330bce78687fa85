//! Pod addresses: one IPv4 address per pod from the node's pod range.
//!
//! In rootless single-node mode the range is loopback (`127.1.0.0/16` by default): every address
//! of `127.0.0.0/8` binds without privileges, so each pod can serve on its own `podIP:port` and
//! Services can route to it. The allocator hands out the lowest free address, skipping the
//! range's network and broadcast addresses, and takes back an address when its pod is gone.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::Mutex;

/// An IPv4 range in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub network: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected an IPv4 CIDR like 127.1.0.0/16"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{s:?}: the prefix must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// Hands out pod addresses; shared by the pod workers.
#[derive(Debug)]
pub struct AddressPool {
    range: Cidr,
    // A std mutex: map operations only.
    taken: Mutex<HashMap<Ipv4Addr, String>>,
}

impl AddressPool {
    /// A pool over `range`.
    pub fn new(range: Cidr) -> AddressPool {
        AddressPool {
            range,
            taken: Mutex::default(),
        }
    }

    /// The address of pod `uid`: `wanted` when it is in range and free (a pod the agent finds
    /// already running keeps its address), else its existing one, else the lowest free one.
    pub fn allocate(&self, uid: &str, wanted: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ip, _)) = taken.iter().find(|(_, owner)| *owner == uid) {
            return Some(*ip);
        }
        let base = u32::from(self.range.network);
        let size = 1u32 << (32 - self.range.prefix);
        let usable = |ip: Ipv4Addr| {
            let n = u32::from(ip);
            n > base && n < base + size - 1
        };
        if let Some(ip) = wanted.filter(|ip| usable(*ip) && !taken.contains_key(ip)) {
            taken.insert(ip, uid.to_string());
            return Some(ip);
        }
        let ip = (1..size - 1)
            .map(|i| Ipv4Addr::from(base + i))
            .find(|ip| !taken.contains_key(ip))?;
        taken.insert(ip, uid.to_string());
        Some(ip)
    }

    /// Hands the address held by `from` to `to` (an address set up before its pod was known);
    /// `false` when `from` holds none.
    pub fn transfer(&self, from: &str, to: &str) -> bool {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        match taken.values_mut().find(|owner| *owner == from) {
            Some(owner) => {
                *owner = to.to_string();
                true
            }
            None => false,
        }
    }

    /// Takes back pod `uid`'s address.
    pub fn release(&self, uid: &str) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, owner| owner != uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_normalise() {
        let table = [
            ("127.1.0.0/16", Ok("127.1.0.0/16")),
            ("127.1.2.3/16", Ok("127.1.0.0/16")),
            ("127.1.0.0", Err(())),
            ("127.1.0.0/31", Err(())),
            ("nope/16", Err(())),
        ];
        for (input, want) in table {
            let got = input.parse::<Cidr>().map(|c| c.to_string()).map_err(|_| ());
            assert_eq!(got, want.map(str::to_string), "{input}");
        }
    }

    #[test]
    fn addresses_are_unique_reused_and_exhaustible() {
        let pool = AddressPool::new("127.1.0.0/30".parse().unwrap());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(pool.allocate("a", None), Some(ip("127.1.0.1")));
        assert_eq!(
            pool.allocate("a", None),
            Some(ip("127.1.0.1")),
            "one address per pod"
        );
        assert_eq!(
            pool.allocate("b", Some(ip("127.1.0.1"))),
            Some(ip("127.1.0.2")),
            "taken"
        );
        assert_eq!(
            pool.allocate("c", None),
            None,
            "a /30 has two usable addresses"
        );
        assert!(pool.transfer("b", "b2") && !pool.transfer("b", "b3"));
        assert_eq!(pool.allocate("b2", None), Some(ip("127.1.0.2")), "moved");
        pool.release("a");
        assert_eq!(
            pool.allocate("c", Some(ip("127.9.9.9"))),
            Some(ip("127.1.0.1")),
            "out of range"
        );
    }
}
