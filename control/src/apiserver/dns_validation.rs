//! What kube-apiserver 1.32 checks in a pod spec's `dnsPolicy` and `dnsConfig`
//! (`pkg/apis/core/validation`: `validateDNSPolicy` and `validatePodDNSConfig`), with its
//! messages and field paths: a known policy, a `dnsConfig` with a nameserver under `None`, at
//! most 3 nameservers that are IP addresses, at most 32 search domains (2048 characters joined)
//! that are DNS subdomains, and named resolver options.

use serde_json::Value;

use super::error::{Cause, FieldValue};
use super::validation::{dns1123_subdomain, items};

/// The policies kube-apiserver accepts, as its `NotSupported` error lists them.
const POLICIES: &[&str] = &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"];
/// At most this many nameservers (libc's `MAXNS`).
const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains.
const MAX_SEARCH_PATHS: usize = 32;
/// At most this many characters in the search domains joined with spaces.
const MAX_SEARCH_LIST_CHARS: usize = 2048;

/// A `[]string` as Go's `%#v` prints it, which is how a field error shows a list value.
struct GoStrings<'a>(&'a [&'a str]);

impl FieldValue for GoStrings<'_> {
    fn render(&self) -> String {
        let quoted: Vec<String> = self.0.iter().map(|s| format!("{s:?}")).collect();
        format!("[]string{{{}}}", quoted.join(", "))
    }
}

/// The strings of a JSON list (anything else in it counts as empty, as it cannot decode).
fn strings(list: &Value) -> Vec<&str> {
    items(list)
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect()
}

/// An IP address as Go's `netutils.ParseIPSloppy` reads one: also IPv4 with leading zeros.
fn is_ip(s: &str) -> bool {
    if s.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.trim_start_matches('0').len() <= 3
                && p.trim_start_matches('0').parse::<u16>().unwrap_or(0) <= 255
        })
}

/// A `Required value` cause with kube's detail after it.
fn required(field: String, detail: &str) -> Cause {
    Cause {
        message: format!("Required value: {detail}"),
        ..Cause::required(field)
    }
}

/// Checks the `dnsPolicy` and `dnsConfig` of the pod spec `spec` at `path` (e.g. `spec` or
/// `spec.template.spec`) as kube-apiserver does, pushing one cause per problem. An absent or
/// empty `dnsPolicy` counts as `ClusterFirst`, the default kube-apiserver gives it.
pub fn pod_dns(spec: &Value, path: &str, causes: &mut Vec<Cause>) {
    let policy = match &spec["dnsPolicy"] {
        Value::Null => "",
        Value::String(s) => s.as_str(),
        other => {
            let value = other.to_string();
            causes.push(Cause::not_supported(
                format!("{path}.dnsPolicy"),
                value,
                POLICIES,
            ));
            ""
        }
    };
    if !policy.is_empty() && !POLICIES.contains(&policy) {
        causes.push(Cause::not_supported(
            format!("{path}.dnsPolicy"),
            policy,
            POLICIES,
        ));
    }

    let at = format!("{path}.dnsConfig");
    let config = &spec["dnsConfig"];
    let nameservers = strings(&config["nameservers"]);
    if policy == "None" {
        if config.is_null() {
            causes.push(required(
                at,
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ));
            return;
        }
        if nameservers.is_empty() {
            causes.push(required(
                format!("{at}.nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ));
            return;
        }
    }
    if config.is_null() {
        return;
    }

    if nameservers.len() > MAX_NAMESERVERS {
        causes.push(Cause::invalid(
            format!("{at}.nameservers"),
            GoStrings(&nameservers),
            format!("must not have more than {MAX_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if !is_ip(ns) {
            causes.push(Cause::invalid(
                format!("{at}.nameservers[{i}]"),
                *ns,
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
        }
    }

    let searches = strings(&config["searches"]);
    if searches.len() > MAX_SEARCH_PATHS {
        causes.push(Cause::invalid(
            format!("{at}.searches"),
            GoStrings(&searches),
            format!("must not have more than {MAX_SEARCH_PATHS} search paths"),
        ));
    }
    if searches.join(" ").len() > MAX_SEARCH_LIST_CHARS {
        causes.push(Cause::invalid(
            format!("{at}.searches"),
            GoStrings(&searches),
            format!(
                "must not have more than {MAX_SEARCH_LIST_CHARS} characters (including spaces) \
                 in the search list"
            ),
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        // One trailing dot is fine; a lone "." is not (kube 1.32 without the alpha
        // RelaxedDNSSearchValidation gate).
        let search = search.strip_suffix('.').unwrap_or(search);
        if let Some(why) = dns1123_subdomain(search) {
            causes.push(Cause::invalid(format!("{at}.searches[{i}]"), search, why));
        }
    }

    for (i, option) in items(&config["options"]).iter().enumerate() {
        if option["name"].as_str().is_none_or(str::is_empty) {
            causes.push(required(format!("{at}.options[{i}]"), "must not be empty"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(spec: Value) -> Vec<Cause> {
        let mut causes = vec![];
        pod_dns(&spec, "spec", &mut causes);
        causes
    }

    /// Each cause's field and reason.
    fn fields(causes: &[Cause]) -> Vec<(&str, &'static str)> {
        causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason))
            .collect()
    }

    fn fields_and_reasons(spec: Value) -> Vec<(String, &'static str)> {
        check(spec)
            .into_iter()
            .map(|c| (c.field, c.reason))
            .collect()
    }

    #[test]
    fn valid_dns_settings_give_no_causes() {
        for spec in [
            json!({}),
            json!({"dnsPolicy": "ClusterFirst"}),
            json!({"dnsPolicy": ""}),
            json!({"dnsPolicy": "Default"}),
            json!({"dnsPolicy": "ClusterFirstWithHostNet", "dnsConfig": {}}),
            json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.2.3.4"]}}),
            json!({"dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["10.0.0.10", "2001:db8::1", "010.000.000.001"],
                "searches": ["ns1.svc.cluster.local.", "example.com"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
            }}),
            json!({"dnsConfig": {"searches": vec!["a"; 32]}}),
        ] {
            assert_eq!(check(spec.clone()), vec![], "{spec}");
        }
    }

    #[test]
    fn an_unknown_policy_is_not_supported() {
        let causes = check(json!({"dnsPolicy": "Cluster"}));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.dnsPolicy");
        assert_eq!(causes[0].reason, "FieldValueNotSupported");
        assert_eq!(
            causes[0].message,
            "Unsupported value: \"Cluster\": supported values: \"ClusterFirst\", \
             \"ClusterFirstWithHostNet\", \"Default\", \"None\""
        );
    }

    #[test]
    fn policy_none_needs_a_config_with_a_nameserver() {
        let causes = check(json!({"dnsPolicy": "None"}));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.dnsConfig");
        assert_eq!(causes[0].reason, "FieldValueRequired");
        assert_eq!(
            causes[0].message,
            "Required value: must provide `dnsConfig` when `dnsPolicy` is None"
        );
        let mut causes = vec![];
        pod_dns(
            &json!({"dnsPolicy": "None", "dnsConfig": {"searches": ["a."]}}),
            "spec.template.spec",
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.template.spec.dnsConfig.nameservers");
        assert_eq!(causes[0].reason, "FieldValueRequired");
        assert_eq!(
            causes[0].message,
            "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
        );
    }

    #[test]
    fn nameservers_are_at_most_three_ip_addresses() {
        let causes = check(json!({"dnsConfig": {
            "nameservers": ["1.1.1.1", "8.8.8.8", "dns.example", "9.9.9.9"]}}));
        let got = fields(&causes);
        assert_eq!(
            got,
            [
                ("spec.dnsConfig.nameservers", "FieldValueInvalid"),
                ("spec.dnsConfig.nameservers[2]", "FieldValueInvalid"),
            ]
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: []string{\"1.1.1.1\", \"8.8.8.8\", \"dns.example\", \"9.9.9.9\"}: \
             must not have more than 3 nameservers"
        );
        assert_eq!(
            causes[1].message,
            "Invalid value: \"dns.example\": must be a valid IP address, (e.g. 10.9.8.7 or \
             2001:db8::ffff)"
        );
    }

    #[test]
    fn searches_are_limited_in_number_and_length() {
        let many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
        assert_eq!(
            fields_and_reasons(json!({"dnsConfig": {"searches": many}})),
            [("spec.dnsConfig.searches".into(), "FieldValueInvalid")]
        );
        let causes = check(json!({"dnsConfig": {"searches": many}}));
        assert!(
            causes[0]
                .message
                .ends_with(": must not have more than 32 search paths"),
            "{}",
            causes[0].message
        );

        // 9 domains of 233 characters and their 8 spaces: 2105 characters.
        let label = "a".repeat(57);
        let long = [label.as_str(); 4].join(".") + ".b";
        assert_eq!(long.len(), 233);
        let causes = check(json!({"dnsConfig": {"searches": vec![long; 9]}}));
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.dnsConfig.searches");
        assert_eq!(causes[0].reason, "FieldValueInvalid");
        assert!(causes[0].message.ends_with(
            ": must not have more than 2048 characters (including spaces) in the search list"
        ));
    }

    #[test]
    fn each_search_is_a_subdomain_with_an_optional_trailing_dot() {
        let causes = check(json!({"dnsConfig": {
            "searches": ["ok.example.", "Bad_Domain", ".", "two.."]}}));
        let got = fields(&causes);
        assert_eq!(
            got,
            [
                ("spec.dnsConfig.searches[1]", "FieldValueInvalid"),
                ("spec.dnsConfig.searches[2]", "FieldValueInvalid"),
                ("spec.dnsConfig.searches[3]", "FieldValueInvalid"),
            ]
        );
        let why = dns1123_subdomain("Bad_Domain").unwrap();
        assert_eq!(
            causes[0].message,
            format!("Invalid value: \"Bad_Domain\": {why}")
        );
        assert_eq!(causes[1].message, format!("Invalid value: \"\": {why}"));
        assert_eq!(causes[2].message, format!("Invalid value: \"two.\": {why}"));
    }

    #[test]
    fn options_need_a_name() {
        let causes = check(json!({"dnsConfig": {
            "options": [{"name": "ndots", "value": "1"}, {"value": "2"}, {"name": ""}]}}));
        let got: Vec<(&str, &str, &str)> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason, c.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "spec.dnsConfig.options[1]",
                    "FieldValueRequired",
                    "Required value: must not be empty"
                ),
                (
                    "spec.dnsConfig.options[2]",
                    "FieldValueRequired",
                    "Required value: must not be empty"
                ),
            ]
        );
    }
}
