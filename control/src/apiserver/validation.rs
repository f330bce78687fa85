//! Kubernetes validation rules: name formats and the field checks of the served kinds.
//!
//! Each name check returns `None` when valid, or the message Kubernetes gives.

use std::collections::HashSet;

use serde_json::{Value, json};

use super::error::Cause;
use super::selector::LabelSelector;

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', starting and ending alphanumeric.
pub fn dns1123_label(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    if ok {
        None
    } else if s.len() > 63 {
        Some("must be no more than 63 characters".into())
    } else {
        Some("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// RFC 1035 label (Service names): like an RFC 1123 label but starting with a letter.
pub fn dns1035_label(s: &str) -> Option<String> {
    if s.len() <= 63
        && !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.ends_with(is_alnum_lower)
    {
        None
    } else {
        Some("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".into())
    }
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated RFC 1123 labels.
pub fn dns1123_subdomain(s: &str) -> Option<String> {
    if s.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    let ok = !s.is_empty()
        && s.chars().all(|c| is_alnum_lower(c) || c == '-' || c == '.')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower);
    if ok {
        None
    } else {
        Some("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into())
    }
}

fn name_part_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A qualified name (label and annotation keys): an optional DNS subdomain prefix and '/', then
/// a name of at most 63 alphanumerics, '-', '_' or '.'.
pub fn qualified_name(s: &str) -> Option<String> {
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix
        && (p.is_empty() || dns1123_subdomain(p).is_some())
    {
        return Some("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".into());
    }
    if name_part_ok(name) {
        None
    } else if name.len() > 63 {
        Some("name part must be no more than 63 characters".into())
    } else {
        Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into())
    }
}

/// A label value: empty, or at most 63 alphanumerics, '-', '_' or '.', alphanumeric at the ends.
pub fn label_value(s: &str) -> Option<String> {
    if s.is_empty() || name_part_ok(s) {
        None
    } else if s.len() > 63 {
        Some("must be no more than 63 characters".into())
    } else {
        Some("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into())
    }
}

/// A ConfigMap or Secret key: alphanumerics, '-', '_' or '.', at most 253 characters.
pub fn config_key(s: &str) -> Option<String> {
    if !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        None
    } else {
        Some("a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')".into())
    }
}

/// The keys a Secret of a built-in `type` must hold (kube-apiserver's `ValidateSecret`): a
/// TLS Secret its certificate and key, a docker config Secret its (valid JSON) config, and so
/// on. Values are base64 on the wire; the JSON check decodes them.
pub fn secret_type(secret: &Value, causes: &mut Vec<Cause>) {
    let data = &secret["data"];
    let has = |k: &str| data[k].as_str().is_some();
    let non_empty = |k: &str| data[k].as_str().is_some_and(|v| !v.is_empty());
    let require =
        |causes: &mut Vec<Cause>, k: &str| causes.push(Cause::required(format!("data[{k}]")));
    match secret["type"].as_str().unwrap_or("Opaque") {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            if secret["metadata"]["annotations"][key]
                .as_str()
                .is_none_or(str::is_empty)
            {
                causes.push(Cause::required(format!("metadata.annotations[{key}]")));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let key = if t.ends_with("json") {
                ".dockerconfigjson"
            } else {
                ".dockercfg"
            };
            match data[key].as_str() {
                None => require(causes, key),
                Some(b64) => {
                    use base64::Engine;
                    let parsed = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| e.to_string())
                        .and_then(|b| {
                            serde_json::from_slice::<Value>(&b).map_err(|e| e.to_string())
                        });
                    if let Err(why) = parsed {
                        causes.push(Cause::invalid(
                            format!("data[{key}]"),
                            "<secret contents redacted>",
                            why,
                        ));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !non_empty("username") && !non_empty("password") => {
            require(causes, "username");
            require(causes, "password");
        }
        "kubernetes.io/ssh-auth" if !non_empty("ssh-privatekey") => {
            require(causes, "ssh-privatekey");
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    require(causes, k);
                }
            }
        }
        _ => {}
    }
}

/// Integer fields that must not be negative.
pub fn non_negative(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(n) = v.as_i64()
        && n < 0
    {
        causes.push(Cause::invalid(
            field,
            n,
            "must be greater than or equal to 0",
        ));
    }
}

fn port_number(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    match v.as_i64() {
        Some(p) if (1..=65535).contains(&p) => {}
        Some(p) => causes.push(Cause::invalid(
            field,
            p,
            "must be between 1 and 65535, inclusive",
        )),
        None => causes.push(Cause::required(field)),
    }
}

/// Validates a pod spec at `path`; `restart_policies` restricts the allowed restart policies
/// of a pod template (workloads), otherwise all three are allowed.
pub fn pod_spec(
    spec: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
    restart_policies: Option<&[&str]>,
) {
    if !spec.is_object() {
        causes.push(Cause::required(path));
        return;
    }
    let mut volumes = HashSet::new();
    if let Some(vs) = spec["volumes"].as_array() {
        for (i, vol) in vs.iter().enumerate() {
            let name = vol["name"].as_str().unwrap_or("");
            let field = format!("{path}.volumes[{i}].name");
            if name.is_empty() {
                causes.push(Cause::required(field));
            } else if let Some(why) = dns1123_label(name) {
                causes.push(Cause::invalid(field, name, why));
            } else if !volumes.insert(name.to_string()) {
                causes.push(Cause::duplicate(field, name));
            }
            super::volume_validation::volume(vol, &format!("{path}.volumes[{i}]"), causes);
        }
    }
    let mut names = HashSet::new();
    for list in ["initContainers", "containers"] {
        let containers = spec[list].as_array();
        if list == "containers" && containers.is_none_or(Vec::is_empty) {
            causes.push(Cause::required(format!("{path}.containers")));
        }
        for (i, c) in containers.into_iter().flatten().enumerate() {
            let cpath = format!("{path}.{list}[{i}]");
            container_name(c, &cpath, &mut names, causes);
            container(c, &cpath, &volumes, causes);
            container_restart_policy(c, &cpath, list == "initContainers", causes);
        }
    }
    super::ephemeral_containers::validate(spec, path, &volumes, &mut names, causes);
    if restart_policies.is_some() && !items(&spec["ephemeralContainers"]).is_empty() {
        // kube-apiserver's ValidatePodTemplateSpec: a template's pods are created, and a pod
        // is created without ephemeral containers.
        causes.push(Cause::forbidden(
            format!("{path}.ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    let allowed = restart_policies.unwrap_or(&["Always", "OnFailure", "Never"]);
    match spec["restartPolicy"].as_str() {
        Some(p) if allowed.contains(&p) => {}
        Some(p) => causes.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            p,
            allowed,
        )),
        None => causes.push(Cause::required(format!("{path}.restartPolicy"))),
    }
    non_negative(
        &spec["terminationGracePeriodSeconds"],
        &format!("{path}.terminationGracePeriodSeconds"),
        causes,
    );
    super::dns_validation::pod_dns(spec, path, causes);
    super::security_validation::pod(
        &spec["securityContext"],
        &format!("{path}.securityContext"),
        causes,
    );
    topology_spread_constraints(&spec["topologySpreadConstraints"], path, causes);
}

/// A container's `name` at `cpath`: given, a DNS-1123 label, and not in `names` (every
/// container of a pod has its own name, whatever its kind), which it is added to.
pub fn container_name(
    c: &Value,
    cpath: &str,
    names: &mut HashSet<String>,
    causes: &mut Vec<Cause>,
) {
    let name = c["name"].as_str().unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required(format!("{cpath}.name")));
    } else if let Some(why) = dns1123_label(name) {
        causes.push(Cause::invalid(format!("{cpath}.name"), name, why));
    } else if !names.insert(name.to_string()) {
        causes.push(Cause::duplicate(format!("{cpath}.name"), name));
    }
}

/// What every kind of container (app, init, ephemeral) at `cpath` is checked for, its name
/// aside (unique across the pod's containers, so the caller's): an image, well-formed ports,
/// env names, resources, volume mounts of the pod's `volumes`, and a known pull policy.
pub fn container(c: &Value, cpath: &str, volumes: &HashSet<String>, causes: &mut Vec<Cause>) {
    if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
        causes.push(Cause::required(format!("{cpath}.image")));
    }
    let mut port_names = HashSet::new();
    for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
        port_number(
            &p["containerPort"],
            &format!("{cpath}.ports[{j}].containerPort"),
            causes,
        );
        if let Some(n) = p["name"].as_str() {
            if n.len() > 15
                || dns1123_label(n).is_some()
                || !n.chars().any(|c| c.is_ascii_lowercase())
            {
                causes.push(Cause::invalid(format!("{cpath}.ports[{j}].name"), n, "must be no more than 15 characters, contain only lowercase alphanumerics and '-', and contain at least one letter"));
            } else if !port_names.insert(n.to_string()) {
                causes.push(Cause::duplicate(format!("{cpath}.ports[{j}].name"), n));
            }
        }
        if let Some(proto) = p["protocol"].as_str()
            && !matches!(proto, "TCP" | "UDP" | "SCTP")
        {
            causes.push(Cause::not_supported(
                format!("{cpath}.ports[{j}].protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
    }
    for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
        match e["name"].as_str() {
                None | Some("") => {
                    causes.push(Cause::required(format!("{cpath}.env[{j}].name")));
                }
                Some(n) if !env_var_name_ok(n) => causes.push(Cause::invalid(
                    format!("{cpath}.env[{j}].name"),
                    n,
                    "a valid environment variable name must consist only of printable ASCII characters other than '='",
                )),
                Some(_) => {}
            }
        super::volume_validation::env_value_from(e, &format!("{cpath}.env[{j}]"), causes);
    }
    container_resources(&c["resources"], &format!("{cpath}.resources"), causes);
    for (j, m) in c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let vname = m["name"].as_str().unwrap_or("");
        if !volumes.contains(vname) {
            causes.push(Cause::not_found(
                format!("{cpath}.volumeMounts[{j}].name"),
                vname,
            ));
        }
        if m["mountPath"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!(
                "{cpath}.volumeMounts[{j}].mountPath"
            )));
        }
    }
    super::security_validation::container(
        &c["securityContext"],
        &format!("{cpath}.securityContext"),
        causes,
    );
    if let Some(policy) = c["imagePullPolicy"].as_str()
        && !matches!(policy, "Always" | "IfNotPresent" | "Never")
    {
        causes.push(Cause::not_supported(
            format!("{cpath}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
}

/// A pod's `topologySpreadConstraints`, as kube-apiserver checks them: a positive `maxSkew`, a
/// qualified `topologyKey`, a known `whenUnsatisfiable`, a positive `minDomains` only with
/// `DoNotSchedule`, one constraint per key and kind, known node inclusion policies, and
/// `matchLabelKeys` that are qualified names beside a `labelSelector` that does not name them.
fn topology_spread_constraints(list: &Value, path: &str, causes: &mut Vec<Cause>) {
    let mut seen = HashSet::new();
    for (i, c) in list.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}.topologySpreadConstraints[{i}]");
        match c["maxSkew"].as_i64() {
            Some(n) if n > 0 => {}
            _ => causes.push(Cause::invalid(
                format!("{at}.maxSkew"),
                &c["maxSkew"],
                "must be greater than zero",
            )),
        }
        let key = c["topologyKey"].as_str().unwrap_or("");
        if key.is_empty() {
            causes.push(Cause {
                message: "Required value: can not be empty".into(),
                ..Cause::required(format!("{at}.topologyKey"))
            });
        } else if let Some(why) = qualified_name(key) {
            causes.push(Cause::invalid(format!("{at}.topologyKey"), key, why));
        }
        let when = c["whenUnsatisfiable"].as_str().unwrap_or("");
        const WHEN: &[&str] = &["DoNotSchedule", "ScheduleAnyway"];
        if !WHEN.contains(&when) {
            causes.push(Cause::not_supported(
                format!("{at}.whenUnsatisfiable"),
                when,
                WHEN,
            ));
        }
        if !c["minDomains"].is_null() {
            match c["minDomains"].as_i64() {
                Some(n) if n <= 0 => causes.push(Cause::invalid(
                    format!("{at}.minDomains"),
                    n,
                    "must be greater than 0",
                )),
                _ if when != "DoNotSchedule" => causes.push(Cause::invalid(
                    format!("{at}.minDomains"),
                    &c["minDomains"],
                    format!(
                        "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {when}"
                    ),
                )),
                _ => {}
            }
        }
        if !key.is_empty() && WHEN.contains(&when) && !seen.insert((key, when)) {
            causes.push(Cause::duplicate(
                format!("{at}.{{topologyKey, whenUnsatisfiable}}"),
                format!("{{{key}, {when}}}"),
            ));
        }
        for policy in ["nodeAffinityPolicy", "nodeTaintsPolicy"] {
            if let Some(p) = c[policy].as_str()
                && !["Honor", "Ignore"].contains(&p)
            {
                causes.push(Cause::not_supported(
                    format!("{at}.{policy}"),
                    p,
                    &["Honor", "Ignore"],
                ));
            }
        }
        let selector = &c["labelSelector"];
        optional_selector(selector, &format!("{at}.labelSelector"), causes);
        let keys = c["matchLabelKeys"].as_array().into_iter().flatten();
        for (j, k) in keys.enumerate() {
            let field = format!("{at}.matchLabelKeys[{j}]");
            let k = k.as_str().unwrap_or("");
            if selector.is_null() {
                causes.push(Cause::forbidden(
                    field,
                    "must not be specified when labelSelector is not set",
                ));
                continue;
            }
            if let Some(why) = qualified_name(k) {
                causes.push(Cause::invalid(field, k, why));
                continue;
            }
            let in_selector = selector["matchLabels"].get(k).is_some()
                || selector["matchExpressions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["key"] == k);
            if in_selector {
                causes.push(Cause::invalid(
                    field,
                    k,
                    "exists in both matchLabelKeys and labelSelector",
                ));
            }
        }
    }
}

/// A container's own `restartPolicy`, as kube-apiserver checks it: only an init container may
/// have one, and only `Always` (a sidecar); a plain init container runs once, so it may have no
/// probes and no lifecycle hooks.
fn container_restart_policy(c: &Value, path: &str, init: bool, causes: &mut Vec<Cause>) {
    let policy = c["restartPolicy"].as_str();
    match (init, policy) {
        (false, Some(_)) => causes.push(Cause::forbidden(
            format!("{path}.restartPolicy"),
            "may not be set for non-init containers",
        )),
        (true, Some(p)) if p != "Always" => causes.push(Cause::not_supported(
            format!("{path}.restartPolicy"),
            p,
            &["Always"],
        )),
        (true, None) => forbid_set(
            c,
            path,
            &[
                "lifecycle",
                "livenessProbe",
                "readinessProbe",
                "startupProbe",
            ],
            "may not be set for init containers without restartPolicy=Always",
            causes,
        ),
        _ => {}
    }
}

/// A label selector's JSON, parsed, or why it is not one.
fn parse_selector(v: &Value) -> Result<LabelSelector, String> {
    let parsed: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    LabelSelector::from_k8s(&parsed).map_err(|e| e.to_string())
}

/// A selector at `field`, when set, must parse.
fn optional_selector(v: &Value, field: &str, causes: &mut Vec<Cause>) {
    if !v.is_null()
        && let Err(e) = parse_selector(v)
    {
        causes.push(Cause::invalid(field, v, e));
    }
}

/// A value as a cause shows it: a string as it is, anything else as JSON.
pub fn shown(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), String::from)
}

/// The items of a JSON list, none for anything else.
pub fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// An environment variable name as Kubernetes accepts it since its relaxed validation (on by
/// default from 1.32): printable ASCII other than `=`.
fn env_var_name_ok(name: &str) -> bool {
    name.bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// A container's `resources` at `path`: every request and limit a well-formed, non-negative
/// quantity, and no request above its limit (Kubernetes' messages and field paths).
fn container_resources(resources: &Value, path: &str, causes: &mut Vec<Cause>) {
    use crate::scheduler::quantity::{Quantity, QuantityError};
    let mut parsed: [Vec<(&str, &Value, Quantity)>; 2] = [Vec::new(), Vec::new()];
    for (k, kind) in ["requests", "limits"].iter().enumerate() {
        for (name, v) in resources[kind].as_object().into_iter().flatten() {
            let field = format!("{path}.{kind}[{name}]");
            let text = shown(v);
            match Quantity::parse(&text) {
                Err(e @ QuantityError::Syntax(_)) => {
                    let why = e.to_string();
                    let why = why.split(": \"").next().unwrap_or(&why);
                    causes.push(Cause::invalid(field, &text, why));
                }
                Ok(q) if q.milli_value() < 0 => {
                    causes.push(Cause::invalid(
                        field,
                        &text,
                        "must be greater than or equal to 0",
                    ));
                }
                Ok(q) => parsed[k].push((name, v, q)),
            }
        }
    }
    let [requests, limits] = &parsed;
    for (name, request, q) in requests {
        if let Some((_, limit, l)) = limits.iter().find(|(n, _, _)| n == name)
            && q.milli_value() > l.milli_value()
        {
            causes.push(Cause::invalid(
                format!("{path}.requests"),
                shown(request),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    shown(limit)
                ),
            ));
        }
    }
}

/// An int-or-string that is a count or a percentage (`maxSurge`, `maxUnavailable`): whether it
/// is zero, or why it is invalid. A percentage above 100% is invalid where `at_most_100`.
fn int_or_percent(v: &Value, field: &str, at_most_100: bool, causes: &mut Vec<Cause>) -> bool {
    match v {
        Value::Number(n) => match n.as_i64() {
            Some(i) if i >= 0 => i == 0,
            _ => {
                causes.push(Cause::invalid(
                    field,
                    n,
                    "must be greater than or equal to 0",
                ));
                false
            }
        },
        Value::String(s) => {
            let pct = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u64>().ok());
            match pct {
                None => {
                    causes.push(Cause::invalid(field, s, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                    false
                }
                Some(p) if at_most_100 && p > 100 => {
                    causes.push(Cause::invalid(field, s, "must not be greater than 100%"));
                    false
                }
                Some(p) => p == 0,
            }
        }
        _ => false,
    }
}

/// A PodDisruptionBudget's spec, as kube-apiserver checks it: at most one of `minAvailable` and
/// `maxUnavailable`, each a count or a percentage of at most 100%; a valid selector; a known
/// `unhealthyPodEvictionPolicy`.
pub fn disruption_budget(spec: &Value, causes: &mut Vec<Cause>) {
    let (min, max) = (&spec["minAvailable"], &spec["maxUnavailable"]);
    if !min.is_null() && !max.is_null() {
        causes.push(Cause::invalid(
            "spec",
            shown(spec),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (value, field) in [(min, "spec.minAvailable"), (max, "spec.maxUnavailable")] {
        if !value.is_null() {
            int_or_percent(value, field, true, causes);
        }
    }
    optional_selector(&spec["selector"], "spec.selector", causes);
    if let Some(p) = spec["unhealthyPodEvictionPolicy"].as_str() {
        const POLICIES: &[&str] = &["AlwaysAllow", "IfHealthyBudget"];
        if !POLICIES.contains(&p) {
            causes.push(Cause::not_supported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                POLICIES,
            ));
        }
    }
}

/// A PriorityClass, as kube-apiserver checks it: the `system-` prefix is kept for the built-in
/// classes (with their values), other classes have a value of at most one billion, and a known
/// `preemptionPolicy`.
pub fn priority_class(class: &Value, causes: &mut Vec<Cause>) {
    use super::priority::{HIGHEST_USER_DEFINABLE, SYSTEM_CLASSES};
    let name = class["metadata"]["name"].as_str().unwrap_or("");
    let value = class["value"].as_i64();
    match SYSTEM_CLASSES.iter().find(|(n, _, _)| *n == name) {
        Some((_, v, _)) if value != Some(*v) => causes.push(Cause::forbidden(
            "metadata.name",
            format!("{name} is a system priority class, its value must be {v}"),
        )),
        Some(_) => {}
        None if name.starts_with("system-") => causes.push(Cause::forbidden(
            "metadata.name",
            "priority class names with 'system-' prefix are reserved",
        )),
        None => match value {
            None => causes.push(Cause::required("value")),
            Some(v) if v > HIGHEST_USER_DEFINABLE => causes.push(Cause::forbidden(
                "value",
                format!(
                    "maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"
                ),
            )),
            Some(_) => {}
        },
    }
    if let Some(p) = class["preemptionPolicy"].as_str() {
        const POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];
        if !POLICIES.contains(&p) {
            causes.push(Cause::not_supported("preemptionPolicy", p, POLICIES));
        }
    }
}

/// A Deployment's `spec.strategy` or a DaemonSet's `spec.updateStrategy` (at `path`): a known
/// type; no `rollingUpdate` unless the type is RollingUpdate; counts or percentages that do not
/// make the rollout stall (`maxUnavailable` and `maxSurge` both zero), as Kubernetes checks.
pub fn update_strategy(strategy: &Value, path: &str, types: &[&str], causes: &mut Vec<Cause>) {
    let kind = strategy["type"].as_str().unwrap_or("");
    if !types.contains(&kind) {
        causes.push(Cause::not_supported(format!("{path}.type"), kind, types));
        return;
    }
    let rolling = &strategy["rollingUpdate"];
    if kind != "RollingUpdate" {
        if !rolling.is_null() {
            causes.push(Cause::forbidden(
                format!("{path}.rollingUpdate"),
                format!("may not be specified when strategy `type` is '{kind}'"),
            ));
        }
        return;
    }
    let field = |f: &str| format!("{path}.rollingUpdate.{f}");
    let unavailable = &rolling["maxUnavailable"];
    let unavailable_zero = int_or_percent(unavailable, &field("maxUnavailable"), true, causes);
    let surge_zero = int_or_percent(&rolling["maxSurge"], &field("maxSurge"), false, causes);
    if unavailable_zero && surge_zero {
        causes.push(Cause::invalid(
            field("maxUnavailable"),
            shown(unavailable),
            "may not be 0 when `maxSurge` is 0",
        ));
    }
}

/// A HorizontalPodAutoscaler's replica bounds: `minReplicas` at least 1 and `maxReplicas` at
/// least `minReplicas` (and 1).
pub fn autoscaler_bounds(spec: &Value, causes: &mut Vec<Cause>) {
    let min = spec["minReplicas"].as_i64();
    if let Some(m) = min
        && m < 1
    {
        causes.push(Cause::invalid(
            "spec.minReplicas",
            m,
            "must be greater than or equal to 1",
        ));
    }
    match spec["maxReplicas"].as_i64() {
        None => causes.push(Cause::required("spec.maxReplicas")),
        Some(m) if m < 1 => {
            causes.push(Cause::invalid(
                "spec.maxReplicas",
                m,
                "must be greater than or equal to 1",
            ));
        }
        Some(m) if min.is_some_and(|min| m < min) => causes.push(Cause::invalid(
            "spec.maxReplicas",
            m,
            "must be greater than or equal to `minReplicas`",
        )),
        Some(_) => {}
    }
}

/// A Job's completion mode (an Indexed Job needs `completions`), and what of its spec the Job
/// controller does not do: refused with a message that says so, rather than stored and
/// silently not done. The per-index and per-failure policies are not implemented.
pub fn job_features(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    match spec["completionMode"].as_str() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec["completions"].is_null() {
                causes.push(Cause {
                    message: "Required value: when completion mode is Indexed".into(),
                    ..Cause::required(format!("{path}.completions"))
                });
            }
        }
        Some(other) => causes.push(Cause::not_supported(
            format!("{path}.completionMode"),
            other,
            &["Indexed", "NonIndexed"],
        )),
    }
    if spec["podFailurePolicy"].is_object() {
        pod_failure_policy(spec, path, causes);
    }
    if spec["successPolicy"].is_object() {
        success_policy(spec, path, causes);
    }
    per_index_limits(spec, path, causes);
}

/// `backoffLimitPerIndex` (an Indexed Job's) and `maxFailedIndexes` (which needs it, and is no
/// more than `completions`), as kube-apiserver checks them.
fn per_index_limits(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let per_index = &spec["backoffLimitPerIndex"];
    let max_failed = &spec["maxFailedIndexes"];
    for (field, v) in [
        ("backoffLimitPerIndex", per_index),
        ("maxFailedIndexes", max_failed),
    ] {
        non_negative(v, &format!("{path}.{field}"), causes);
    }
    if !per_index.is_null() && spec["completionMode"] != "Indexed" {
        causes.push(Cause::invalid(
            format!("{path}.backoffLimitPerIndex"),
            per_index,
            "requires indexed completion mode",
        ));
    }
    if max_failed.is_null() {
        return;
    }
    if per_index.is_null() {
        causes.push(Cause {
            message: "Required value: when maxFailedIndexes is specified".into(),
            ..Cause::required(format!("{path}.backoffLimitPerIndex"))
        });
    }
    if let (Some(m), Some(c)) = (max_failed.as_i64(), spec["completions"].as_i64())
        && m > c
    {
        causes.push(Cause::invalid(
            format!("{path}.maxFailedIndexes"),
            m,
            "must be less than or equal to completions",
        ));
    }
}

/// The indexes of a `succeededIndexes` list ("0,2-4"), or why it is not one.
fn index_list(list: &str) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let number = |n: &str| {
            n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                format!("error parsing succeededIndexes: cannot convert {n:?} to an integer")
            })
        };
        let (first, last) = (number(first)?, number(last)?);
        if first > last {
            return Err(format!(
                "error parsing succeededIndexes: range {part:?} has a first index greater than its last"
            ));
        }
        out.extend(first..=last);
    }
    Ok(out)
}

/// A Job's `successPolicy`, as kube-apiserver checks it: an Indexed Job's, with 1 to 20 rules,
/// each naming indexes below `completions` or a count no larger than them.
fn success_policy(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let at = format!("{path}.successPolicy");
    if spec["completionMode"] != "Indexed" {
        causes.push(Cause::invalid(
            at.clone(),
            spec["completionMode"].as_str().unwrap_or("NonIndexed"),
            "requires indexed completion mode",
        ));
        return;
    }
    let completions = spec["completions"].as_i64().unwrap_or(0);
    let rules = spec["successPolicy"]["rules"].as_array();
    match rules.map_or(0, Vec::len) {
        0 => causes.push(Cause::required(format!("{at}.rules"))),
        n if n > 20 => causes.push(Cause::invalid(
            format!("{at}.rules"),
            n,
            "must have at most 20 items",
        )),
        _ => {}
    }
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = format!("{at}.rules[{i}]");
        let count = rule["succeededCount"].as_i64();
        let indexes = rule["succeededIndexes"].as_str();
        if count.is_none() && indexes.is_none() {
            causes.push(Cause {
                message: "Required value: at least one of succeededCount or succeededIndexes \
                          must be specified"
                    .into(),
                ..Cause::required(at.clone())
            });
        }
        let mut listed = None;
        if let Some(list) = indexes {
            match index_list(list) {
                Ok(l) if l.iter().any(|i| *i >= completions) => causes.push(Cause::invalid(
                    format!("{at}.succeededIndexes"),
                    list,
                    "must be less than completions",
                )),
                Ok(l) => listed = Some(l.len() as i64),
                Err(why) => {
                    causes.push(Cause::invalid(format!("{at}.succeededIndexes"), list, why))
                }
            }
        }
        if let Some(c) = count {
            let field = format!("{at}.succeededCount");
            if c <= 0 {
                causes.push(Cause::invalid(field, c, "must be greater than 0"));
            } else if c > completions {
                causes.push(Cause::invalid(
                    field,
                    c,
                    format!("must be less than or equal to {completions} (the number of specified completions)"),
                ));
            } else if let Some(n) = listed.filter(|n| c > *n) {
                causes.push(Cause::invalid(
                    field,
                    c,
                    format!("must be less than or equal to {n} (the number of indexes in the specified succeededIndexes field)"),
                ));
            }
        }
    }
}

/// A Job's `podFailurePolicy`, as kube-apiserver checks it: pods that restart `Never`, and
/// rules with a supported action and exactly one requirement.
fn pod_failure_policy(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let restart = &spec["template"]["spec"]["restartPolicy"];
    if restart.as_str().is_some_and(|r| r != "Never") {
        causes.push(Cause::invalid(
            format!("{path}.template.spec.restartPolicy"),
            restart,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    let rules = spec["podFailurePolicy"]["rules"].as_array();
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let at = format!("{path}.podFailurePolicy.rules[{i}]");
        let action = rule["action"].as_str().unwrap_or("");
        let per_index = !spec["backoffLimitPerIndex"].is_null();
        if action == "FailIndex" && !per_index {
            causes.push(Cause::invalid(
                format!("{at}.action"),
                action,
                "requires the backoffLimitPerIndex to be set",
            ));
        } else if !matches!(action, "Count" | "FailIndex" | "FailJob" | "Ignore") {
            causes.push(Cause::not_supported(
                format!("{at}.action"),
                action,
                &["Count", "FailIndex", "FailJob", "Ignore"],
            ));
        }
        let codes = &rule["onExitCodes"];
        match (codes.is_object(), rule["onPodConditions"].is_array()) {
            (true, true) => causes.push(Cause::invalid(
                at.clone(),
                "",
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            (false, false) => causes.push(Cause::invalid(
                at.clone(),
                "",
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            _ => {}
        }
        if !codes.is_object() {
            continue;
        }
        let operator = codes["operator"].as_str().unwrap_or("");
        if !matches!(operator, "In" | "NotIn") {
            causes.push(Cause::not_supported(
                format!("{at}.onExitCodes.operator"),
                operator,
                &["In", "NotIn"],
            ));
        }
        let values = codes["values"].as_array();
        if values.is_none_or(Vec::is_empty) {
            causes.push(Cause::required(format!("{at}.onExitCodes.values")));
        }
        for (j, v) in values.into_iter().flatten().enumerate() {
            if operator == "In" && v.as_i64() == Some(0) {
                causes.push(Cause::invalid(
                    format!("{at}.onExitCodes.values[{j}]"),
                    0,
                    "must not be 0 for the In operator",
                ));
            }
        }
    }
}

/// A `Forbidden` cause with `why` for each of `fields` of `obj` (at `path`) that is set.
fn forbid_set(obj: &Value, path: &str, fields: &[&str], why: &str, causes: &mut Vec<Cause>) {
    for field in fields {
        if !obj[*field].is_null() {
            causes.push(Cause::forbidden(format!("{path}.{field}"), why));
        }
    }
}

/// A Job spec at `path` (a Job's `spec`, a CronJob's `spec.jobTemplate.spec`): counts that
/// are not negative, the features the Job controller has, a pod template that restarts
/// `OnFailure` or `Never`.
pub fn job_spec(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    for f in ["parallelism", "completions", "backoffLimit"] {
        non_negative(&spec[f], &format!("{path}.{f}"), causes);
    }
    job_features(spec, path, causes);
    pod_spec(
        &spec["template"]["spec"],
        &format!("{path}.template.spec"),
        causes,
        Some(&["OnFailure", "Never"]),
    );
}

/// A StatefulSet's spec, as kube-apiserver's `ValidateStatefulSetSpec` checks it.
pub fn stateful_set_spec(spec: &Value, causes: &mut Vec<Cause>) {
    workload_selector(spec, "statefulset", causes);
    for (f, path) in [
        (&spec["replicas"], "spec.replicas"),
        (&spec["minReadySeconds"], "spec.minReadySeconds"),
        (&spec["revisionHistoryLimit"], "spec.revisionHistoryLimit"),
        (&spec["ordinals"]["start"], "spec.ordinals.start"),
    ] {
        non_negative(f, path, causes);
    }
    const POLICIES: &[&str] = &["OrderedReady", "Parallel"];
    let policy = spec["podManagementPolicy"].as_str().unwrap_or("");
    if !POLICIES.contains(&policy) {
        causes.push(Cause::not_supported(
            "spec.podManagementPolicy",
            policy,
            POLICIES,
        ));
    }
    const STRATEGIES: &[&str] = &["RollingUpdate", "OnDelete"];
    let strategy = &spec["updateStrategy"];
    match strategy["type"].as_str().unwrap_or("") {
        "RollingUpdate" => {
            let rolling = &strategy["rollingUpdate"];
            non_negative(
                &rolling["partition"],
                "spec.updateStrategy.rollingUpdate.partition",
                causes,
            );
        }
        "OnDelete" => {
            if !strategy["rollingUpdate"].is_null() {
                causes.push(Cause::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    shown(&strategy["rollingUpdate"]),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        other => causes.push(Cause::not_supported(
            "spec.updateStrategy.type",
            other,
            STRATEGIES,
        )),
    }
    const RETENTION: &[&str] = &["Retain", "Delete"];
    for f in ["whenDeleted", "whenScaled"] {
        let v = &spec["persistentVolumeClaimRetentionPolicy"][f];
        if let Some(p) = v.as_str()
            && !RETENTION.contains(&p)
        {
            causes.push(Cause::not_supported(
                format!("spec.persistentVolumeClaimRetentionPolicy.{f}"),
                p,
                RETENTION,
            ));
        }
    }
    for (i, t) in spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("spec.volumeClaimTemplates[{i}]");
        match t["metadata"]["name"].as_str() {
            None | Some("") => causes.push(Cause::required(format!("{path}.metadata.name"))),
            Some(n) => {
                if let Some(why) = dns1123_subdomain(n) {
                    causes.push(Cause::invalid(format!("{path}.metadata.name"), n, why));
                }
            }
        }
        super::storage_validation::claim_spec(&t["spec"], &format!("{path}.spec"), causes);
    }
    // The pods' spec: the template's, with a volume for each claim template (as the
    // controller makes them), so mounts of the claims resolve.
    let mut template = spec["template"]["spec"].clone();
    if !template["activeDeadlineSeconds"].is_null() {
        causes.push(Cause::forbidden(
            "spec.template.spec.activeDeadlineSeconds",
            "activeDeadlineSeconds in StatefulSet is not Supported",
        ));
    }
    let claims: Vec<&str> = spec["volumeClaimTemplates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    if !claims.is_empty() && template.is_object() {
        let mut volumes = template["volumes"].as_array().cloned().unwrap_or_default();
        for name in claims {
            volumes.retain(|v| v["name"] != name);
            volumes.push(json!({"name": name, "persistentVolumeClaim": {"claimName": name}}));
        }
        template["volumes"] = json!(volumes);
    }
    pod_spec(&template, "spec.template.spec", causes, Some(&["Always"]));
}

/// A LimitRange's items, as kube-apiserver's `ValidateLimitRange` checks them: a known type,
/// well-formed quantities, no defaults for a Pod item, and `min` ≤ `defaultRequest` ≤
/// `default` ≤ `max`.
pub fn limit_range(spec: &Value, causes: &mut Vec<Cause>) {
    use crate::scheduler::quantity::Quantity;
    const TYPES: &[&str] = &["Container", "PersistentVolumeClaim", "Pod"];
    for (i, item) in spec["limits"].as_array().into_iter().flatten().enumerate() {
        let path = format!("spec.limits[{i}]");
        let ty = item["type"].as_str().unwrap_or("");
        if !TYPES.contains(&ty) {
            causes.push(Cause::not_supported(format!("{path}.type"), ty, TYPES));
        }
        let value = |section: &str, k: &str| -> Option<i64> {
            Quantity::parse(&shown(&item[section][k]))
                .ok()
                .map(|q| q.milli_value())
        };
        for section in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (k, q) in item[section].as_object().into_iter().flatten() {
                if Quantity::parse(&shown(q)).is_err() {
                    causes.push(Cause::invalid(
                        format!("{path}.{section}[{k}]"),
                        shown(q),
                        "must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
                    ));
                }
            }
        }
        if ty == "Pod" {
            for section in ["default", "defaultRequest"] {
                if item[section].as_object().is_some_and(|m| !m.is_empty()) {
                    causes.push(Cause::forbidden(
                        format!("{path}.{section}"),
                        "may not be specified when `type` is 'Pod'",
                    ));
                }
            }
        }
        // Each pair that must be ordered, with kube-apiserver's words.
        let order = [
            ("min", "max", "min value {a} is greater than max value {b}"),
            (
                "defaultRequest",
                "max",
                "default request value {a} is greater than max value {b}",
            ),
            (
                "min",
                "defaultRequest",
                "min value {a} is greater than default request value {b}",
            ),
            (
                "defaultRequest",
                "default",
                "default request value {a} is greater than default limit value {b}",
            ),
            (
                "default",
                "max",
                "default value {a} is greater than max value {b}",
            ),
            (
                "min",
                "default",
                "min value {a} is greater than default value {b}",
            ),
        ];
        for (low, high, words) in order {
            for (k, a) in item[low].as_object().into_iter().flatten() {
                if let (Some(x), Some(y)) = (value(low, k), value(high, k))
                    && x > y
                {
                    let message = words
                        .replace("{a}", &shown(a))
                        .replace("{b}", &shown(&item[high][k]));
                    causes.push(Cause::invalid(
                        format!("{path}.{low}[{k}]"),
                        shown(a),
                        message,
                    ));
                }
            }
        }
    }
}

/// What a StatefulSet update may change: kube-apiserver refuses a change to any field of
/// its spec but these.
pub fn stateful_set_update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    const MUTABLE: &[&str] = &[
        "replicas",
        "ordinals",
        "template",
        "updateStrategy",
        "revisionHistoryLimit",
        "persistentVolumeClaimRetentionPolicy",
        "minReadySeconds",
    ];
    let rest = |spec: &Value| -> Value {
        let mut s = spec.clone();
        if let Some(m) = s.as_object_mut() {
            m.retain(|k, v| !MUTABLE.contains(&k.as_str()) && !v.is_null());
        }
        s
    };
    if rest(new) != rest(old) {
        causes.push(Cause::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', \
             'template', 'updateStrategy', 'revisionHistoryLimit', \
             'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

/// The longest CronJob name: its Jobs add `-` and eleven digits, and a Job's name becomes a
/// label value (63 characters).
const CRONJOB_NAME_LIMIT: usize = 52;

/// A CronJob, as kube-apiserver checks it: a name its Jobs can be named after, a schedule that
/// parses in its time zone (which must exist, and not be given inside the schedule), a known
/// `concurrencyPolicy`, counts that are not negative, and a valid Job template.
pub fn cron_job(obj: &Value, causes: &mut Vec<Cause>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.len() > CRONJOB_NAME_LIMIT {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            format!("must be no more than {CRONJOB_NAME_LIMIT} characters"),
        ));
    }
    let spec = &obj["spec"];
    let time_zone = spec["timeZone"].as_str();
    match spec["schedule"].as_str().unwrap_or("") {
        "" => causes.push(Cause::required("spec.schedule")),
        schedule => {
            if let Err(why) = crate::cron::Schedule::parse(schedule, None) {
                causes.push(Cause::invalid("spec.schedule", schedule, why));
            }
        }
    }
    if let Some(tz) = time_zone
        && crate::cron::Schedule::parse("* * * * *", Some(tz)).is_err()
    {
        causes.push(Cause::invalid("spec.timeZone", tz, "unknown time zone"));
    }
    if let Some(p) = spec["concurrencyPolicy"].as_str() {
        const POLICIES: &[&str] = &["Allow", "Forbid", "Replace"];
        if !POLICIES.contains(&p) {
            causes.push(Cause::not_supported("spec.concurrencyPolicy", p, POLICIES));
        }
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(&spec[f], &format!("spec.{f}"), causes);
    }
    job_spec(
        &spec["jobTemplate"]["spec"],
        "spec.jobTemplate.spec",
        causes,
    );
}

/// The most data a ConfigMap or a Secret may hold (1 MiB, Kubernetes' `MaxSecretSize`).
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// A Deployment, ReplicaSet, DaemonSet or StatefulSet must have a non-empty selector matching
/// its template; `kind` names it in the message as Kubernetes does (`deployment` for a
/// ReplicaSet too).
pub fn workload_selector(spec: &Value, kind: &str, causes: &mut Vec<Cause>) {
    let sel = &spec["selector"];
    if sel.is_null() {
        causes.push(Cause::required("spec.selector"));
        return;
    }
    let selector = match parse_selector(sel) {
        Ok(s) => s,
        Err(e) => {
            causes.push(Cause::invalid("spec.selector", sel, e));
            return;
        }
    };
    if selector.is_empty() {
        causes.push(Cause::invalid(
            "spec.selector",
            sel,
            format!("empty selector is invalid for {kind}"),
        ));
        return;
    }
    let labels: std::collections::BTreeMap<String, String> = spec["template"]["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    if !selector.matches(&labels) {
        let shown = serde_json::to_string(&labels).unwrap_or_default();
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            shown,
            "`selector` does not match template `labels`",
        ));
    }
}

/// Service spec rules: ports, types, node ports, cluster IPs.
pub fn service_spec(spec: &Value, causes: &mut Vec<Cause>) {
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(
        ty,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(Cause::not_supported(
            "spec.type",
            ty,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    if ty == "ExternalName" && spec["externalName"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.externalName"));
    }
    let headless = spec["clusterIP"].as_str() == Some("None");
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && !headless && ty != "ExternalName" {
        causes.push(Cause::required("spec.ports"));
    }
    let mut names = HashSet::new();
    let mut pairs = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        port_number(&p["port"], &format!("{path}.port"), causes);
        let name = p["name"].as_str().unwrap_or("");
        if ports.len() > 1 && name.is_empty() {
            causes.push(Cause::required(format!("{path}.name")));
        } else if !name.is_empty() {
            if let Some(why) = dns1123_label(name) {
                causes.push(Cause::invalid(format!("{path}.name"), name, why));
            } else if !names.insert(name.to_string()) {
                causes.push(Cause::duplicate(format!("{path}.name"), name));
            }
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            causes.push(Cause::not_supported(
                format!("{path}.protocol"),
                proto,
                &["SCTP", "TCP", "UDP"],
            ));
        }
        if !pairs.insert((p["port"].as_i64(), proto.to_string())) {
            causes.push(Cause::duplicate(
                path.to_string(),
                format!("{}/{proto}", p["port"]),
            ));
        }
        if let Some(np) = p["nodePort"].as_i64() {
            if ty == "ClusterIP" && np != 0 {
                causes.push(Cause::forbidden(
                    format!("{path}.nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !(0..=65535).contains(&np) {
                // The configured NodePort range is checked where NodePorts are allocated.
                causes.push(Cause::invalid(
                    format!("{path}.nodePort"),
                    np,
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
        match &p["targetPort"] {
            Value::Number(n) if !(1..=65535).contains(&n.as_i64().unwrap_or(0)) => {
                causes.push(Cause::invalid(
                    format!("{path}.targetPort"),
                    n,
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Value::String(s) if (s.len() > 15 || dns1123_label(s).is_some()) => {
                causes.push(Cause::invalid(format!("{path}.targetPort"), s, "must contain only lowercase alphanumerics and '-' and be at most 15 characters"));
            }
            _ => {}
        }
    }
    if let Some(ip) = spec["clusterIP"].as_str()
        && !ip.is_empty()
        && ip != "None"
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        causes.push(Cause::invalid(
            "spec.clusterIP",
            ip,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        ));
    }
    if let Some(aff) = spec["sessionAffinity"].as_str()
        && !matches!(aff, "None" | "ClientIP")
    {
        causes.push(Cause::not_supported(
            "spec.sessionAffinity",
            aff,
            &["ClientIP", "None"],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_kubernetes_formats() {
        for ok in ["a", "web-1", "0abc"] {
            assert_eq!(dns1123_label(ok), None, "{ok}");
        }
        for bad in ["", "Web", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(dns1123_label(bad).is_some(), "{bad}");
        }
        assert!(dns1035_label("1abc").is_some());
        assert_eq!(dns1123_subdomain("a.b-c.d"), None);
        assert!(dns1123_subdomain("a..b").is_none() || dns1123_subdomain("a_b").is_some());
        assert_eq!(qualified_name("app.kubernetes.io/name"), None);
        assert!(qualified_name("/x").is_some());
        assert!(qualified_name("a b").is_some());
        assert_eq!(label_value(""), None);
        assert!(label_value("-x").is_some());
        assert_eq!(
            label_value(&"a".repeat(64)).as_deref(),
            Some("must be no more than 63 characters")
        );
        assert_eq!(
            qualified_name(&format!("example.com/{}", "a".repeat(64))).as_deref(),
            Some("name part must be no more than 63 characters")
        );
        assert!(config_key("a/b").is_some());
    }

    #[test]
    fn a_pod_without_containers_or_images_is_invalid() {
        let mut causes = vec![];
        pod_spec(
            &serde_json::json!({"restartPolicy": "Always"}),
            "spec",
            &mut causes,
            None,
        );
        assert_eq!(causes[0].field, "spec.containers");
        let mut causes = vec![];
        let spec = serde_json::json!({"restartPolicy": "Sometimes", "containers": [{"name": "a"}, {"name": "a", "image": "x"}]});
        pod_spec(&spec, "spec", &mut causes, None);
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].image",
                "spec.containers[1].name",
                "spec.restartPolicy"
            ]
        );
    }

    #[test]
    fn only_init_containers_restart_on_their_own_and_plain_ones_have_no_probes() {
        let spec = serde_json::json!({"restartPolicy": "Never",
            "initContainers": [
                {"name": "proxy", "image": "x", "restartPolicy": "Always",
                    "readinessProbe": {"tcpSocket": {"port": 80}}},
                {"name": "setup", "image": "x", "livenessProbe": {"tcpSocket": {"port": 80}}},
                {"name": "odd", "image": "x", "restartPolicy": "OnFailure"}],
            "containers": [{"name": "app", "image": "x", "restartPolicy": "Always"}]});
        let mut causes = vec![];
        pod_spec(&spec, "spec", &mut causes, None);
        let got: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "spec.initContainers[1].livenessProbe",
                    "FieldValueForbidden"
                ),
                (
                    "spec.initContainers[2].restartPolicy",
                    "FieldValueNotSupported"
                ),
                ("spec.containers[0].restartPolicy", "FieldValueForbidden"),
            ]
        );
    }

    #[test]
    fn a_disruption_budget_has_one_bound_within_range_and_a_known_policy() {
        let mut causes = vec![];
        disruption_budget(
            &serde_json::json!({"minAvailable": "50%", "selector": {"matchLabels": {"a": "b"}}}),
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
        disruption_budget(
            &serde_json::json!({"minAvailable": -1, "maxUnavailable": "150%",
                "selector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]},
                "unhealthyPodEvictionPolicy": "Never"}),
            &mut causes,
        );
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec",
                "spec.minAvailable",
                "spec.maxUnavailable",
                "spec.selector",
                "spec.unhealthyPodEvictionPolicy"
            ]
        );
        assert!(causes[0].message.contains("cannot be both set"));
        assert!(causes[2].message.contains("must not be greater than 100%"));
    }

    #[test]
    fn topology_spread_constraints_are_checked_as_kube_apiserver_does() {
        let good = serde_json::json!({"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "minDomains": 2,
            "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["pod-template-hash"]});
        let bad = serde_json::json!([
            good,
            {"maxSkew": 0, "topologyKey": "", "whenUnsatisfiable": "Sometimes"},
            {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 0},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
                "minDomains": 2, "nodeTaintsPolicy": "Always",
                "labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["app"]},
            {"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "ScheduleAnyway",
                "matchLabelKeys": ["app"]},
        ]);
        let spec = serde_json::json!({"restartPolicy": "Always",
            "containers": [{"name": "a", "image": "x"}], "topologySpreadConstraints": bad});
        let mut causes = vec![];
        pod_spec(&spec, "spec", &mut causes, None);
        let got: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason))
            .collect();
        let at = |i: usize, f: &str| format!("spec.topologySpreadConstraints[{i}].{f}");
        let want = [
            (at(1, "maxSkew"), "FieldValueInvalid"),
            (at(1, "topologyKey"), "FieldValueRequired"),
            (at(1, "whenUnsatisfiable"), "FieldValueNotSupported"),
            (at(2, "minDomains"), "FieldValueInvalid"),
            (
                at(2, "{topologyKey, whenUnsatisfiable}"),
                "FieldValueDuplicate",
            ),
            (at(3, "minDomains"), "FieldValueInvalid"),
            (at(3, "nodeTaintsPolicy"), "FieldValueNotSupported"),
            (at(3, "matchLabelKeys[0]"), "FieldValueInvalid"),
            (at(4, "matchLabelKeys[0]"), "FieldValueForbidden"),
        ];
        let want: Vec<(&str, &str)> = want.iter().map(|(f, r)| (f.as_str(), *r)).collect();
        assert_eq!(got, want);
        assert!(
            causes[5].message.contains("not ScheduleAnyway"),
            "{:?}",
            causes[5]
        );
        assert!(
            causes[7].message.contains("exists in both"),
            "{:?}",
            causes[7]
        );
    }

    #[test]
    fn resources_must_be_quantities_with_requests_within_limits_and_env_names_printable() {
        let mut causes = vec![];
        let spec = serde_json::json!({"restartPolicy": "Always", "containers": [{
            "name": "a", "image": "i",
            "env": [{"name": "GOOD_1", "value": "x"}, {"name": "1=x", "value": "y"},
                    {"name": "my.var-2", "value": "z"}],
            "resources": {
                "requests": {"cpu": "2", "memory": "64Mi", "ephemeral-storage": "-1"},
                "limits": {"cpu": "1", "memory": "abc", "pods": 3}
            }
        }]});
        pod_spec(&spec, "spec", &mut causes, None);
        let got: Vec<(&str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "spec.containers[0].env[1].name",
                    "Invalid value: \"1=x\": a valid environment variable name must consist only of printable ASCII characters other than '='"
                ),
                (
                    "spec.containers[0].resources.requests[ephemeral-storage]",
                    "Invalid value: \"-1\": must be greater than or equal to 0"
                ),
                (
                    "spec.containers[0].resources.limits[memory]",
                    "Invalid value: \"abc\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
                ),
                (
                    "spec.containers[0].resources.requests",
                    "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
                ),
            ]
        );
    }

    #[test]
    fn update_strategies_and_autoscaler_bounds_follow_kubernetes_rules() {
        let check = |strategy: Value| -> Vec<String> {
            let mut causes = vec![];
            update_strategy(
                &strategy,
                "spec.strategy",
                &["Recreate", "RollingUpdate"],
                &mut causes,
            );
            causes
                .into_iter()
                .map(|c| format!("{}: {}", c.field, c.message))
                .collect()
        };
        let rolling = |surge: Value, unavailable: Value| {
            serde_json::json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
        };
        assert!(check(rolling("25%".into(), "25%".into())).is_empty());
        assert!(check(rolling(1.into(), 0.into())).is_empty());
        assert!(check(serde_json::json!({"type": "Recreate"})).is_empty());
        assert_eq!(
            check(rolling(0.into(), "0%".into())),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"
            ]
        );
        assert_eq!(
            check(rolling("150%".into(), "101%".into())),
            [
                "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"101%\": must not be greater than 100%"
            ]
        );
        assert_eq!(
            check(rolling("x%".into(), (-1).into())).len(),
            2,
            "a bad percent and a negative count"
        );
        assert_eq!(
            check(serde_json::json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})),
            [
                "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"
            ]
        );
        assert_eq!(
            check(serde_json::json!({"type": "Sideways"})),
            [
                "spec.strategy.type: Unsupported value: \"Sideways\": supported values: \"Recreate\", \"RollingUpdate\""
            ]
        );

        let bounds = |spec: Value| -> Vec<String> {
            let mut causes = vec![];
            autoscaler_bounds(&spec, &mut causes);
            causes.into_iter().map(|c| c.message).collect()
        };
        assert!(bounds(serde_json::json!({"minReplicas": 1, "maxReplicas": 1})).is_empty());
        assert_eq!(
            bounds(serde_json::json!({"minReplicas": 5, "maxReplicas": 2})),
            ["Invalid value: 2: must be greater than or equal to `minReplicas`"]
        );
        assert_eq!(
            bounds(serde_json::json!({"minReplicas": 0})),
            [
                "Invalid value: 0: must be greater than or equal to 1",
                "Required value"
            ]
        );
    }

    #[test]
    fn job_features_the_controller_lacks_are_refused_by_name() {
        let fields = |spec: Value| -> Vec<String> {
            let mut causes = vec![];
            job_features(&spec, "spec", &mut causes);
            causes.into_iter().map(|c| c.field).collect()
        };
        assert!(
            fields(serde_json::json!({"completionMode": "NonIndexed", "backoffLimit": 2}))
                .is_empty()
        );
        assert_eq!(
            fields(
                serde_json::json!({"completionMode": "Indexed", "completions": 3,
                "backoffLimitPerIndex": 1, "maxFailedIndexes": 2})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(
                serde_json::json!({"completions": 3, "backoffLimitPerIndex": -1,
                "maxFailedIndexes": 4})
            ),
            [
                "spec.backoffLimitPerIndex",
                "spec.backoffLimitPerIndex",
                "spec.maxFailedIndexes"
            ]
        );
        assert_eq!(
            fields(
                serde_json::json!({"completionMode": "Indexed", "completions": 3,
                "maxFailedIndexes": 1})
            ),
            ["spec.backoffLimitPerIndex"]
        );
        let success = |mode: &str, rules: Value| {
            serde_json::json!({"completionMode": mode, "completions": 5,
                "successPolicy": {"rules": rules}})
        };
        assert!(
            fields(success(
                "Indexed",
                serde_json::json!([{"succeededIndexes": "0,2-4", "succeededCount": 2}, {"succeededCount": 5}])
            ))
            .is_empty()
        );
        assert_eq!(
            fields(success(
                "NonIndexed",
                serde_json::json!([{"succeededCount": 1}])
            )),
            ["spec.successPolicy"]
        );
        assert_eq!(
            fields(success(
                "Indexed",
                serde_json::json!([{}, {"succeededIndexes": "3-1"}, {"succeededIndexes": "4-5"},
                    {"succeededCount": 6}, {"succeededIndexes": "1", "succeededCount": 2}])
            )),
            [
                "spec.successPolicy.rules[0]",
                "spec.successPolicy.rules[1].succeededIndexes",
                "spec.successPolicy.rules[2].succeededIndexes",
                "spec.successPolicy.rules[3].succeededCount",
                "spec.successPolicy.rules[4].succeededCount",
            ]
        );
        assert_eq!(
            fields(success("Indexed", serde_json::json!([]))),
            ["spec.successPolicy.rules"]
        );
        let policy = |rules: Value, restart: &str| {
            serde_json::json!({"podFailurePolicy": {"rules": rules},
                "template": {"spec": {"restartPolicy": restart}}})
        };
        let good = serde_json::json!([
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]);
        assert!(fields(policy(good.clone(), "Never")).is_empty());
        assert_eq!(
            fields(policy(good, "OnFailure")),
            ["spec.template.spec.restartPolicy"]
        );
        let bad = serde_json::json!([
            {"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [0, 1]}},
            {"action": "Count", "onExitCodes": {"operator": "Is", "values": []},
                "onPodConditions": []},
            {"action": "Ignore"}]);
        assert_eq!(
            fields(policy(bad, "Never")),
            [
                "spec.podFailurePolicy.rules[0].action",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]",
                "spec.podFailurePolicy.rules[1]",
                "spec.podFailurePolicy.rules[1].onExitCodes.operator",
                "spec.podFailurePolicy.rules[1].onExitCodes.values",
                "spec.podFailurePolicy.rules[2]",
            ]
        );
        assert!(
            fields(serde_json::json!({"completionMode": "Indexed", "completions": 3})).is_empty()
        );
        assert_eq!(
            fields(serde_json::json!({"completionMode": "Sometimes"})),
            ["spec.completionMode"]
        );
    }

    #[test]
    fn a_deployment_selector_must_match_its_template() {
        let mut causes = vec![];
        let spec = serde_json::json!({"selector": {"matchLabels": {"app": "a"}}, "template": {"metadata": {"labels": {"app": "b"}}}});
        workload_selector(&spec, "deployment", &mut causes);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }
}
