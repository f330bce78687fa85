//! Image references the Kubernetes way, resolved against the cluster's registry.
//!
//! A reference with no registry host (`hello:v1`, `team/app@sha256:..`) names an image in the
//! cluster's own registry when the node has one, else on Docker Hub as Kubernetes does. A first
//! path component is a host when it contains `.` or `:` or is `localhost` (Docker's rule).

use oci_client::Reference;

use super::ImageError;

/// A parsed, fully qualified image reference and how to reach its registry.
#[derive(Clone, Debug)]
pub struct ImageRef {
    /// The `oci-client` reference (registry, repository, tag and/or digest).
    pub reference: Reference,
    /// Whether the registry is spoken to over plain HTTP.
    pub plain_http: bool,
}

impl ImageRef {
    /// The canonical text of the reference, e.g. `127.0.0.1:6443/hello:v1`; the cache's key.
    pub fn whole(&self) -> String {
        self.reference.whole()
    }

    /// The registry host (and port).
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }
}

/// A registry address as configured: `host[:port]`, optionally with an `http://` or `https://`
/// scheme; returns the host part and whether it is plain HTTP.
pub fn parse_registry(address: &str) -> (String, bool) {
    let address = address.trim().trim_end_matches('/');
    if let Some(host) = address.strip_prefix("http://") {
        (host.to_string(), true)
    } else if let Some(host) = address.strip_prefix("https://") {
        (host.to_string(), false)
    } else {
        (address.to_string(), is_loopback(address))
    }
}

/// Whether a registry host is on this machine (plain HTTP is used for those).
pub fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name == "localhost" || name.starts_with("127.") || name == "::1"
}

/// Whether the first component of a reference is a registry host.
fn has_registry_host(reference: &str) -> bool {
    match reference.split_once('/') {
        Some((first, _)) => first.contains('.') || first.contains(':') || first == "localhost",
        None => false,
    }
}

/// Resolves `text` against the cluster registry `default_registry` (`host:port`), marking
/// loopback registries, the cluster registry when configured as `http://`, and `insecure` hosts
/// as plain HTTP.
pub fn resolve(
    text: &str,
    default_registry: Option<&(String, bool)>,
    insecure: &[String],
) -> Result<ImageRef, ImageError> {
    let invalid = |reason: String| ImageError::InvalidReference {
        reference: text.to_string(),
        reason,
    };
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty".into()));
    }
    let qualified = match default_registry {
        Some((host, _)) if !has_registry_host(trimmed) => format!("{host}/{trimmed}"),
        _ => trimmed.to_string(),
    };
    let reference: Reference = qualified
        .parse()
        .map_err(|e: oci_client::ParseError| invalid(e.to_string()))?;
    let registry = reference.registry().to_string();
    let plain_http = match default_registry {
        Some((host, plain)) if *host == registry => *plain,
        _ => is_loopback(&registry) || insecure.contains(&registry),
    };
    Ok(ImageRef {
        reference,
        plain_http,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_against_the_cluster_registry() {
        let cluster = parse_registry("http://127.0.0.1:6443");
        let cases = [
            ("hello:v1", "127.0.0.1:6443/hello:v1", true),
            ("team/app", "127.0.0.1:6443/team/app:latest", true),
            ("localhost:5000/x:1", "localhost:5000/x:1", true),
            ("ghcr.io/org/app:2", "ghcr.io/org/app:2", false),
        ];
        for (text, whole, http) in cases {
            let r = resolve(text, Some(&cluster), &[]).unwrap();
            assert_eq!((r.whole().as_str(), r.plain_http), (whole, http), "{text}");
        }
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = resolve(
            &format!("registry.example/ns/app@{digest}"),
            Some(&cluster),
            &[],
        )
        .unwrap();
        assert_eq!(r.reference.digest(), Some(digest.as_str()));
        assert_eq!(r.reference.repository(), "ns/app");
    }

    #[test]
    fn without_a_cluster_registry_names_mean_docker_hub() {
        let r = resolve("busybox", None, &[]).unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
        assert!(!r.plain_http);
        let r = resolve("reg.local:5000/a:1", None, &["reg.local:5000".into()]).unwrap();
        assert!(r.plain_http);
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["", "a b", "a@sha256:short", "a:b:c"] {
            assert!(resolve(bad, None, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:6443",
            "127.5.0.1",
            "[::1]:5000",
        ] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["example.com", "10.0.0.1:5000", "localhost.example.com"] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
