//! Registry credentials from `imagePullSecrets` of type `kubernetes.io/dockerconfigjson`.

use std::collections::BTreeMap;

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::ImageError;

/// Credentials for registries, keyed as in a `.dockerconfigjson` (`host`, `host/path`, or a
/// URL such as `https://index.docker.io/v1/`). `Default` is anonymous everywhere.
#[derive(Clone, Default)]
pub struct PullSecrets {
    entries: Vec<(String, String, String)>,
}

impl std::fmt::Debug for PullSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.entries.iter().map(|(k, _, _)| k.as_str()).collect();
        f.debug_struct("PullSecrets")
            .field("registries", &keys)
            .finish()
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: Option<BTreeMap<String, DockerAuth>>,
    #[serde(flatten)]
    legacy: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

impl PullSecrets {
    /// Adds the credentials of one secret's `.dockerconfigjson` (or legacy `.dockercfg`) data.
    pub fn add_docker_config_json(&mut self, data: &[u8]) -> Result<(), ImageError> {
        let invalid = |reason: String| ImageError::InvalidPullSecret(reason);
        let config: DockerConfig = serde_json::from_slice(data)
            .map_err(|e| invalid(format!("not a dockerconfigjson document: {e}")))?;
        let auths = match config.auths {
            Some(auths) => auths,
            None => config
                .legacy
                .into_iter()
                .map(|(k, v)| serde_json::from_value(v).map(|a| (k, a)))
                .collect::<Result<_, _>>()
                .map_err(|e| invalid(format!("not a dockercfg document: {e}")))?,
        };
        for (key, auth) in auths {
            let (username, password) = match (auth.username, auth.password, auth.auth) {
                (Some(u), Some(p), _) => (u, p),
                (_, _, Some(encoded)) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|e| invalid(format!("{key}: auth is not base64: {e}")))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| invalid(format!("{key}: auth is not text")))?;
                    let (u, p) = text
                        .split_once(':')
                        .ok_or_else(|| invalid(format!("{key}: auth is not user:password")))?;
                    (u.to_string(), p.to_string())
                }
                _ => return Err(invalid(format!("{key}: no username/password or auth"))),
            };
            self.entries.push((normalize_key(&key), username, password));
        }
        Ok(())
    }

    /// Parses one `.dockerconfigjson`.
    pub fn from_docker_config_json(data: &[u8]) -> Result<PullSecrets, ImageError> {
        let mut secrets = PullSecrets::default();
        secrets.add_docker_config_json(data)?;
        Ok(secrets)
    }

    /// Adds one username and password for a registry host.
    pub fn add_basic(&mut self, registry: &str, username: &str, password: &str) {
        self.entries
            .push((normalize_key(registry), username.into(), password.into()));
    }

    /// The credentials for `registry`/`repository`: the entry whose key is the longest prefix of
    /// `registry/repository` on component boundaries, else anonymous.
    pub fn auth_for(&self, registry: &str, repository: &str) -> RegistryAuth {
        let target = format!("{}/{repository}", normalize_host(registry));
        self.entries
            .iter()
            .filter(|(key, _, _)| target == *key || target.starts_with(&format!("{key}/")))
            .max_by_key(|(key, _, _)| key.len())
            .map(|(_, u, p)| RegistryAuth::Basic(u.clone(), p.clone()))
            .unwrap_or(RegistryAuth::Anonymous)
    }
}

/// Docker Hub answers to several names; the rest are kept as they are.
fn normalize_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io",
        other => other,
    }
}

/// `https://host/v1/` → `host`; `host/path/` → `host/path`.
fn normalize_key(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    match key.split_once('/') {
        Some((host, path)) => format!("{}/{path}", normalize_host(host)),
        None => normalize_host(key).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> RegistryAuth {
        RegistryAuth::Basic(u.into(), p.into())
    }

    #[test]
    fn dockerconfigjson_entries_match_by_host_and_path_prefix() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:secret");
        let doc = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}"}},
                "reg.example:5000": {{"username": "bob", "password": "pw"}},
                "reg.example:5000/team": {{"username": "carol", "password": "pw2"}}
            }}}}"#
        );
        let secrets = PullSecrets::from_docker_config_json(doc.as_bytes()).unwrap();
        assert_eq!(
            secrets.auth_for("index.docker.io", "library/busybox"),
            basic("alice", "secret")
        );
        assert_eq!(
            secrets.auth_for("docker.io", "x/y"),
            basic("alice", "secret")
        );
        assert_eq!(
            secrets.auth_for("reg.example:5000", "other/app"),
            basic("bob", "pw")
        );
        assert_eq!(
            secrets.auth_for("reg.example:5000", "team/app"),
            basic("carol", "pw2")
        );
        assert_eq!(
            secrets.auth_for("reg.example:5000", "teamx/app"),
            basic("bob", "pw")
        );
        assert_eq!(secrets.auth_for("ghcr.io", "a/b"), RegistryAuth::Anonymous);
    }

    #[test]
    fn legacy_dockercfg_is_accepted_and_garbage_is_refused() {
        let secrets = PullSecrets::from_docker_config_json(
            br#"{"r.io": {"username": "u", "password": "p"}}"#,
        )
        .unwrap();
        assert_eq!(secrets.auth_for("r.io", "a"), basic("u", "p"));
        for bad in [
            &b"nope"[..],
            br#"{"auths": {"r.io": {"auth": "!!"}}}"#,
            br#"{"auths": {"r.io": {}}}"#,
        ] {
            assert!(PullSecrets::from_docker_config_json(bad).is_err());
        }
    }
}
