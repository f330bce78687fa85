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
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A timestamp `secs` seconds from now.
pub fn rfc3339_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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
    fn generated_names_keep_the_prefix_and_add_five_characters() {
        let n = generate_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9);
        assert_ne!(generate_name("x-"), generate_name("x-"));
    }
}
