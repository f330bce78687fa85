//! What the node is: host name, CPUs, memory, OS and architecture as Kubernetes spells them.

/// The machine facts a Node reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The host name.
    pub hostname: String,
    /// Logical CPUs.
    pub cpus: u64,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// `linux`, `darwin`...
    pub os: &'static str,
    /// `amd64`, `arm64`...
    pub arch: &'static str,
    /// The kernel version, when known.
    pub kernel: String,
    /// The OS image (`PRETTY_NAME`), when known.
    pub os_image: String,
    /// The machine id, when known.
    pub machine_id: String,
    /// The boot id, when known.
    pub boot_id: String,
}

impl Machine {
    /// Reads the facts of this machine.
    pub fn detect() -> Machine {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let hostname = Some(read("/proc/sys/kernel/hostname"))
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        Machine {
            hostname: hostname.to_lowercase(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory_bytes: meminfo_total(&read("/proc/meminfo")).unwrap_or(1 << 30),
            os: kube_os(std::env::consts::OS),
            arch: kube_arch(std::env::consts::ARCH),
            kernel: read("/proc/sys/kernel/osrelease"),
            os_image,
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
pub fn meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Rust's OS name as `kubernetes.io/os` spells it.
pub fn kube_os(os: &'static str) -> &'static str {
    match os {
        "macos" => "darwin",
        other => other,
    }
}

/// Rust's architecture name as `kubernetes.io/arch` spells it.
pub fn kube_arch(arch: &'static str) -> &'static str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_use_kubernetes_spellings() {
        assert_eq!(kube_arch("x86_64"), "amd64");
        assert_eq!(kube_arch("aarch64"), "arm64");
        assert_eq!(kube_os("linux"), "linux");
        assert_eq!(
            meminfo_total("MemTotal:       16384 kB\nMemFree: 1 kB\n"),
            Some(16 << 20)
        );
        let m = Machine::detect();
        assert!(m.cpus >= 1 && m.memory_bytes > 0 && !m.hostname.is_empty());
    }
}
