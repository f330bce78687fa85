//! A container's environment and argv, resolved the Kubernetes way: `envFrom` first, then `env`
//! (later entries win), values from ConfigMaps, Secrets and pod fields, and `$(VAR)` references
//! expanded in values, `command` and `args` (`$$` escapes a `$`).

use k8s_openapi::api::core::v1::{Container, Service};

use super::sources::{ConfigError, PodFields, Sources};

/// Resolves `container`'s environment, in order, without duplicates.
pub fn resolve_env(
    container: &Container,
    sources: &Sources,
    fields: &PodFields<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    resolve_env_over(Vec::new(), container, sources, fields)
}

/// [`resolve_env`] over `base` (the Service variables): the container's own variables
/// override it, and may reference it with `$(VAR)`.
pub fn resolve_env_over(
    base: Vec<(String, String)>,
    container: &Container,
    sources: &Sources,
    fields: &PodFields<'_>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = base;
    let set = |env: &mut Vec<(String, String)>, name: String, value: String| match env
        .iter_mut()
        .find(|(n, _)| *n == name)
    {
        Some(slot) => slot.1 = value,
        None => env.push((name, value)),
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, optional, what, name) = if let Some(r) = &from.config_map_ref {
            (
                sources.config_maps.get(&r.name),
                r.optional,
                "configmap",
                &r.name,
            )
        } else if let Some(r) = &from.secret_ref {
            (sources.secrets.get(&r.name), r.optional, "secret", &r.name)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    let name = format!("{prefix}{k}");
                    if is_env_name(&name) {
                        set(&mut env, name, String::from_utf8_lossy(v).into_owned());
                    }
                }
            }
            None if optional == Some(true) => {}
            None => return Err(ConfigError(format!("{what} \"{name}\" not found"))),
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => Some(expand(var.value.as_deref().unwrap_or(""), &env)),
            Some(from) => {
                if let Some(r) = &from.config_map_key_ref {
                    optional_value(sources.config_map_key(&r.name, &r.key), r.optional)?
                } else if let Some(r) = &from.secret_key_ref {
                    optional_value(sources.secret_key(&r.name, &r.key), r.optional)?
                } else if let Some(r) = &from.field_ref {
                    Some(fields.get(&r.field_path)?)
                } else if let Some(r) = &from.resource_field_ref {
                    let of = r.container_name.as_deref().filter(|n| !n.is_empty());
                    let divisor = r.divisor.as_ref().map(|d| d.0.as_str());
                    Some(
                        fields
                            .resource(of.unwrap_or(&container.name), &r.resource, divisor)
                            .map_err(|e| ConfigError(format!("env {}: {e}", var.name)))?,
                    )
                } else {
                    None
                }
            }
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// The variables kubelet gives a container for each Service of its namespace that has a
/// ClusterIP: `{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT`, `{SVC}_SERVICE_PORT_{PORT}` and the
/// docker-link style `{SVC}_PORT`, `{SVC}_PORT_{port}_{PROTO}[_PROTO|_PORT|_ADDR]`.
pub fn service_env(services: &[Service]) -> Vec<(String, String)> {
    let mut sorted: Vec<&Service> = services.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut env = Vec::new();
    for svc in sorted {
        let Some(spec) = &svc.spec else { continue };
        let ip = spec.cluster_ip.as_deref().unwrap_or("");
        if ip.is_empty() || ip == "None" {
            continue;
        }
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or("")
            .to_ascii_uppercase()
            .replace('-', "_");
        env.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let pn = pn.to_ascii_uppercase().replace('-', "_");
                env.push((format!("{name}_SERVICE_PORT_{pn}"), p.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_string()
        };
        env.push((
            format!("{name}_PORT"),
            format!(
                "{}://{ip}:{}",
                proto(first).to_ascii_lowercase(),
                first.port
            ),
        ));
        for p in &ports {
            let (up, low) = (proto(p), proto(p).to_ascii_lowercase());
            let prefix = format!("{name}_PORT_{}_{up}", p.port);
            env.push((prefix.clone(), format!("{low}://{ip}:{}", p.port)));
            env.push((format!("{prefix}_PROTO"), low));
            env.push((format!("{prefix}_PORT"), p.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    env
}

fn optional_value(
    found: Result<Option<&[u8]>, ConfigError>,
    optional: Option<bool>,
) -> Result<Option<String>, ConfigError> {
    match found {
        Ok(v) => Ok(v.map(|b| String::from_utf8_lossy(b).into_owned())),
        Err(_) if optional == Some(true) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The container's argv: the image's program name, then `command` and `args`, expanded.
///
/// A Wasm image has no entrypoint beyond its own `_start`, so `command[0]` (when given) is the
/// program name the guest sees as `argv[0]`.
pub fn argv(container: &Container, env: &[(String, String)]) -> Vec<String> {
    let command = container.command.clone().unwrap_or_default();
    let args = container.args.clone().unwrap_or_default();
    let mut argv: Vec<String> = Vec::new();
    if command.is_empty() {
        argv.push(format!("{}.wasm", container.name));
    }
    argv.extend(command.iter().chain(args.iter()).map(|a| expand(a, env)));
    argv
}

/// Expands `$(NAME)` with earlier variables; unknown references stay as written, `$$` is `$`.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, v)) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::sources::Allocatable;
    use k8s_openapi::api::core::v1::Pod;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u-1", "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources {
            namespace: "ns".into(),
            ..Sources::default()
        };
        s.config_maps.insert(
            "cm".into(),
            [
                ("greeting".to_string(), b"hello".to_vec()),
                ("bad key".to_string(), b"x".to_vec()),
            ]
            .into(),
        );
        s.secrets.insert(
            "sec".into(),
            [("token".to_string(), b"s3cr3t".to_vec())].into(),
        );
        s
    }

    fn container(spec: serde_json::Value) -> Container {
        serde_json::from_value(spec).unwrap()
    }

    /// The pod's fields on a test node (4 CPUs, 8 GiB, 10 GiB of ephemeral storage).
    fn fields_of(pod: &Pod) -> PodFields<'_> {
        PodFields {
            pod,
            pod_ip: "127.1.0.7",
            host_ip: "127.0.0.1",
            node_name: "n1",
            allocatable: Allocatable {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                ephemeral_storage_bytes: 10 << 30,
            },
        }
    }

    fn resolve(c: &Container) -> Result<Vec<(String, String)>, ConfigError> {
        let pod = pod();
        let fields = fields_of(&pod);
        resolve_env(c, &sources(), &fields)
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn resource_field_refs_read_limits_and_requests_in_units_of_their_divisor() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [
                {"name": "c", "resources": {
                    "limits": {"cpu": "500m", "memory": "64Mi"},
                    "requests": {"memory": "32Mi"}}},
                {"name": "side"}]}
        }))
        .unwrap();
        let fields = fields_of(&pod);
        let r = |name: &str, resource: &str, divisor: Option<&str>| {
            let mut from = json!({"resource": resource});
            if name != "c" {
                from["containerName"] = json!(name);
            }
            if let Some(d) = divisor {
                from["divisor"] = json!(d);
            }
            let c = container(json!({"name": "c", "env": [
                {"name": "V", "valueFrom": {"resourceFieldRef": from}}]}));
            resolve_env(&c, &sources(), &fields).map(|env| env[0].1.clone())
        };
        let table = [
            ("c", "limits.cpu", None, "1"),
            ("c", "limits.cpu", Some("1m"), "500"),
            ("c", "limits.memory", None, "67108864"),
            ("c", "limits.memory", Some("1Mi"), "64"),
            ("c", "limits.memory", Some("1G"), "1"),
            ("c", "requests.memory", Some("1Mi"), "32"),
            ("c", "requests.cpu", None, "0"),
            ("c", "limits.ephemeral-storage", Some("1Gi"), "10"),
            ("side", "limits.cpu", None, "4"),
            ("side", "limits.memory", Some("1Gi"), "8"),
        ];
        for (name, resource, divisor, want) in table {
            assert_eq!(
                r(name, resource, divisor).unwrap(),
                want,
                "{name} {resource} {divisor:?}"
            );
        }
        let err = r("c", "limits.nvidia.com/gpu", None).unwrap_err();
        assert!(
            err.0
                .starts_with("env V: resourceFieldRef: unsupported resource"),
            "{err}"
        );
        let err = r("nope", "limits.cpu", None).unwrap_err();
        assert_eq!(
            err.0,
            "env V: resourceFieldRef limits.cpu: no container named \"nope\""
        );
        let err = r("c", "limits.cpu", Some("lots")).unwrap_err();
        assert_eq!(
            err.0,
            "env V: resourceFieldRef limits.cpu: invalid divisor \"lots\""
        );
    }

    #[test]
    fn env_comes_from_values_config_maps_secrets_and_fields() {
        let c = container(json!({"name": "c", "env": [
            {"name": "A", "value": "1"},
            {"name": "G", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
            {"name": "T", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(IP):80/$(MISSING)/$$(IP)"},
        ]}));
        let want = pairs(&[
            ("A", "1"),
            ("G", "hello"),
            ("T", "s3cr3t"),
            ("N", "p"),
            ("NS", "ns"),
            ("UID", "u-1"),
            ("IP", "127.1.0.7"),
            ("NODE", "n1"),
            ("APP", "x"),
            ("URL", "http://127.1.0.7:80/$(MISSING)/$(IP)"),
        ]);
        assert_eq!(resolve(&c).unwrap(), want);
    }

    #[test]
    fn env_from_comes_first_with_prefixes_and_env_overrides_it() {
        let c = container(json!({"name": "c",
            "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}, {"secretRef": {"name": "sec"}}],
            "env": [{"name": "token", "value": "override"}]}));
        assert_eq!(
            resolve(&c).unwrap(),
            pairs(&[("CM_greeting", "hello"), ("token", "override")]),
            "a key that is no valid variable name is skipped"
        );
    }

    #[test]
    fn missing_objects_and_keys_are_errors_unless_optional() {
        let table = [
            (
                json!({"configMapKeyRef": {"name": "cm", "key": "nope"}}),
                Some("couldn't find key nope in ConfigMap ns/cm"),
            ),
            (
                json!({"configMapKeyRef": {"name": "gone", "key": "k"}}),
                Some("configmap \"gone\" not found"),
            ),
            (
                json!({"secretKeyRef": {"name": "sec", "key": "nope"}}),
                Some("couldn't find key nope in Secret ns/sec"),
            ),
            (
                json!({"secretKeyRef": {"name": "gone", "key": "k"}}),
                Some("secret \"gone\" not found"),
            ),
            (
                json!({"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}),
                None,
            ),
            (
                json!({"fieldRef": {"fieldPath": "spec.bogus"}}),
                Some("unsupported fieldRef fieldPath \"spec.bogus\""),
            ),
        ];
        for (from, want) in table {
            let c = container(json!({"name": "c", "env": [{"name": "X", "valueFrom": from}]}));
            match (resolve(&c), want) {
                (Err(e), Some(msg)) => assert_eq!(e.0, msg),
                (Ok(env), None) => assert!(env.is_empty()),
                (got, want) => panic!("{from}: got {got:?}, want {want:?}"),
            }
        }
        let c = container(json!({"name": "c", "envFrom": [{"configMapRef": {"name": "gone"}}]}));
        assert_eq!(resolve(&c).unwrap_err().0, "configmap \"gone\" not found");
    }

    #[test]
    fn services_give_kubernetes_and_docker_link_variables() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "redis-primary"},
            "spec": {"clusterIP": "127.2.0.9", "ports": [
                {"name": "main", "port": 6379, "protocol": "TCP"}, {"name": "metrics", "port": 9121}]}
        }))
        .unwrap();
        let headless: Service = serde_json::from_value(json!({
            "metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}
        }))
        .unwrap();
        let env = service_env(&[headless, svc]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("REDIS_PRIMARY_SERVICE_HOST"), Some("127.2.0.9"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT_METRICS"), Some("9121"));
        assert_eq!(get("REDIS_PRIMARY_PORT"), Some("tcp://127.2.0.9:6379"));
        assert_eq!(
            get("REDIS_PRIMARY_PORT_9121_TCP"),
            Some("tcp://127.2.0.9:9121")
        );
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_PORT"), Some("6379"));
        assert_eq!(get("REDIS_PRIMARY_PORT_6379_TCP_ADDR"), Some("127.2.0.9"));
        assert!(
            get("H_SERVICE_HOST").is_none(),
            "headless Services have no variables"
        );
        // The container's own variables override them and may use them.
        let c = container(json!({"name": "c", "env": [
            {"name": "URL", "value": "http://$(REDIS_PRIMARY_SERVICE_HOST):6379"},
            {"name": "REDIS_PRIMARY_SERVICE_PORT", "value": "1"}]}));
        let pod = pod();
        let fields = fields_of(&pod);
        let out = resolve_env_over(env.clone(), &c, &sources(), &fields).unwrap();
        let get = |k: &str| out.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("URL").as_deref(), Some("http://127.2.0.9:6379"));
        assert_eq!(get("REDIS_PRIMARY_SERVICE_PORT").as_deref(), Some("1"));
    }

    #[test]
    fn argv_is_command_then_args_expanded() {
        let env = pairs(&[("WHO", "world")]);
        let c = container(json!({"name": "c", "args": ["hi", "$(WHO)"]}));
        assert_eq!(argv(&c, &env), ["c.wasm", "hi", "world"]);
        let c = container(json!({"name": "c", "command": ["prog", "-v"], "args": ["x"]}));
        assert_eq!(argv(&c, &env), ["prog", "-v", "x"]);
    }
}
