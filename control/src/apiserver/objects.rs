//! Helpers for objects as JSON values: metadata access, stored encoding, server-set fields.

use bytes::Bytes;
use rand::Rng;
use serde_json::{Value, json};

use crate::store::{Entry, Revision};

/// The object of an entry, with `metadata.resourceVersion` set to the entry's revision.
pub fn from_entry(entry: &Entry) -> Value {
    from_bytes(&entry.value, entry.mod_revision)
}

/// Decodes stored bytes and sets `metadata.resourceVersion`.
pub fn from_bytes(bytes: &[u8], revision: Revision) -> Value {
    let mut obj: Value = serde_json::from_slice(bytes).unwrap_or_else(|_| json!({}));
    set_resource_version(&mut obj, revision);
    obj
}

/// Sets `metadata.resourceVersion`.
pub fn set_resource_version(obj: &mut Value, revision: Revision) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// The bytes stored for an object: its JSON without `metadata.resourceVersion` (that is the
/// entry's revision).
pub fn to_bytes(obj: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(&Stored(obj)).unwrap_or_default())
}

/// Serialises an object as [`to_bytes`] stores it: as is, less `metadata.resourceVersion`,
/// without copying the object.
struct Stored<'a>(&'a Value);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(top) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(top.len()))?;
        for (k, v) in top {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    map.serialize_entry(k, &WithoutResourceVersion(meta))?;
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

/// Object metadata less `resourceVersion`.
struct WithoutResourceVersion<'a>(&'a serde_json::Map<String, Value>);

impl serde::Serialize for WithoutResourceVersion<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let fields = self.0.iter().filter(|(k, _)| *k != "resourceVersion");
        let mut map = serializer.serialize_map(None)?;
        for (k, v) in fields {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// The JSON of an object as the API serves it, made from its stored bytes (see [`to_bytes`])
/// by writing `"resourceVersion"` into the top-level `metadata` without decoding and
/// re-encoding the object. `None` when `stored` has no top-level `metadata` object, or is not
/// the compact JSON [`to_bytes`] writes; [`served_json`] then decodes ([`from_bytes`]).
fn json_with_resource_version(stored: &[u8], revision: Revision) -> Option<Vec<u8>> {
    let at = metadata_body_at(stored)?;
    let empty = stored.get(at) == Some(&b'}');
    let rv = revision.to_string();
    let mut out = Vec::with_capacity(stored.len() + rv.len() + 22);
    out.extend_from_slice(&stored[..at]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rv.as_bytes());
    out.push(b'"');
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&stored[at..]);
    Some(out)
}

/// The JSON the API serves for stored bytes at `revision`: the bytes with the
/// `resourceVersion` spliced into their `metadata`, or, when the bytes do not have that
/// layout, [`from_bytes`] encoded again.
pub fn served_json(stored: &[u8], revision: Revision) -> Vec<u8> {
    json_with_resource_version(stored, revision)
        .unwrap_or_else(|| serde_json::to_vec(&from_bytes(stored, revision)).unwrap_or_default())
}

/// The offset just after the `{` that opens the top-level `metadata` object of compact JSON
/// (no whitespace between tokens, as serde_json writes it).
fn metadata_body_at(json: &[u8]) -> Option<usize> {
    let mut i = 1;
    if json.first() != Some(&b'{') {
        return None;
    }
    loop {
        if json.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, i)?;
        let key = &json[i + 1..key_end - 1];
        if json.get(key_end) != Some(&b':') {
            return None;
        }
        let value = key_end + 1;
        if key == b"metadata" {
            return (json.get(value) == Some(&b'{')).then_some(value + 1);
        }
        i = value_end(json, value)?;
        match json.get(i) {
            Some(b',') => i += 1,
            _ => return None,
        }
    }
}

/// The offset after the string that opens at `start` (a `"`).
fn string_end(json: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < json.len() {
        match json[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The offset after the value that starts at `start`.
fn value_end(json: &[u8], start: usize) -> Option<usize> {
    match json.get(start)? {
        b'"' => string_end(json, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < json.len() {
                match json[i] {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        _ => {
            let len = json[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))?;
            Some(start + len)
        }
    }
}

/// `metadata.name`.
pub fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

/// `metadata.namespace`.
pub fn namespace(obj: &Value) -> Option<&str> {
    obj["metadata"]["namespace"]
        .as_str()
        .filter(|s| !s.is_empty())
}

/// `metadata.resourceVersion` parsed, if set.
pub fn resource_version(obj: &Value) -> Option<Result<Revision, String>> {
    match &obj["metadata"]["resourceVersion"] {
        Value::String(s) if !s.is_empty() => Some(s.parse().map_err(|_| s.clone())),
        _ => None,
    }
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `metadata.deletionTimestamp` is set.
pub fn is_deleting(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string()
}

/// `metadata` as a mutable map (created if missing).
pub fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, `Z`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A timestamp `secs` seconds from now.
pub fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A name from `generateName`: the prefix plus five random characters, as Kubernetes does.
pub fn generate_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    let prefix = if prefix.len() > 58 {
        &prefix[..58]
    } else {
        prefix
    };
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// The labels of an object as a map.
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_leave_out_the_resource_version_and_reading_puts_it_back() {
        let obj = json!({"metadata": {"name": "a", "resourceVersion": "7"}, "data": {"k": "v"}});
        let bytes = to_bytes(&obj);
        assert!(!String::from_utf8_lossy(&bytes).contains("resourceVersion"));
        let back = from_bytes(&bytes, 9);
        assert_eq!(back["metadata"]["resourceVersion"], "9");
        assert_eq!(back["data"]["k"], "v");
        // Everything else is stored as it was, in its order.
        let expected = json!({"metadata": {"name": "a"}, "data": {"k": "v"}});
        assert_eq!(bytes, serde_json::to_vec(&expected).unwrap());
    }

    #[test]
    fn the_served_json_is_the_stored_bytes_with_the_resource_version_written_in() {
        let objs = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "labels": {"x": "}{\"metadata\":{"}}, "spec": {}}),
            json!({"data": {"metadata": [1, {"a": "\\\""}], "n": -1.5e3, "t": true, "z": null}, "metadata": {"name": "b"}}),
            json!({"kind": "Namespace", "metadata": {}}),
        ];
        for obj in objs {
            let stored = to_bytes(&obj);
            let served = json_with_resource_version(&stored, 42).expect("spliced");
            let served: Value = serde_json::from_slice(&served).expect("valid JSON");
            assert_eq!(served, from_bytes(&stored, 42));
            assert_eq!(served["metadata"]["resourceVersion"], "42");
        }
        // No top-level metadata object (or not an object at all): the caller decodes instead.
        for odd in [
            json!({"spec": {"metadata": {}}}),
            json!({"metadata": "x"}),
            json!([1]),
        ] {
            assert_eq!(json_with_resource_version(&to_bytes(&odd), 1), None);
            let served: Value = serde_json::from_slice(&served_json(&to_bytes(&odd), 1)).unwrap();
            assert_eq!(served, from_bytes(&to_bytes(&odd), 1));
        }
        assert_eq!(json_with_resource_version(b"{\"a\":", 1), None);
        assert_eq!(json_with_resource_version(b"", 1), None);
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_second_in_utc() {
        for t in [now_rfc3339(), rfc3339_in(90)] {
            assert_eq!(t.len(), "2026-12-06T21:35:00Z".len(), "{t}");
            assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
            assert!(chrono::DateTime::parse_from_rfc3339(&t).is_ok(), "{t}");
        }
    }

    #[test]
    fn generated_names_keep_the_prefix_and_add_five_characters() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
        assert_ne!(generate_name("x-"), generate_name("x-"));
    }
}
