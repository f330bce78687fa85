//! Decoding only the parts of a stored object that a selector reads.
//!
//! A watch or list with a label or field selector has to look at every object to match it,
//! but the selector reads a handful of fields (`metadata.labels`, `spec.nodeName`, ...). A
//! [`Projection`] names those fields as JSON paths and decodes an object's bytes into a
//! [`Value`] that holds only them: everything else is skipped by the parser without being
//! built, which is several times cheaper than decoding the whole object. Matching the
//! projected value gives the same answer as matching the whole object, because a selector
//! only ever reads the projected paths.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The JSON paths to keep when decoding an object, as a tree of keys.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Projection {
    /// Keep this whole subtree.
    whole: bool,
    children: BTreeMap<&'static str, Projection>,
}

impl Projection {
    /// Nothing kept yet.
    pub fn new() -> Projection {
        Projection::default()
    }

    /// Keeps the value at `path` (the whole object for an empty path), with all that is under
    /// it.
    pub fn keep(&mut self, path: &[&'static str]) {
        match path.split_first() {
            None => {
                self.whole = true;
                self.children.clear();
            }
            Some(_) if self.whole => {}
            Some((first, rest)) => self.children.entry(first).or_default().keep(rest),
        }
    }

    /// The projected object decoded from JSON `bytes`; `None` if they are not JSON.
    pub fn decode(&self, bytes: &[u8]) -> Option<Value> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = self.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(value)
    }
}

impl<'de> DeserializeSeed<'de> for &Projection {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.whole {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(ProjectionVisitor(self))
        }
    }
}

/// Builds the kept keys of a map; anything that is not a map, where the projection goes
/// deeper, reads as `null` (a selector finds no field there, as in the whole object).
struct ProjectionVisitor<'a>(&'a Projection);

impl<'de> Visitor<'de> for ProjectionVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match self.0.children.get(key.as_ref()) {
                Some(child) => {
                    let value = map.next_value_seed(child)?;
                    out.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A map key, borrowed from the input unless it had escapes to undo.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(KeySeed)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default",
                "labels": {"app": "web", "tier": "front"},
                "annotations": {"note": "a \"quoted\" \\ value"},
                "ownerReferences": [{"kind": "ReplicaSet", "name": "web"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "hello:v1",
                "args": ["x", 1, 2.5, true, null, {"deep": [1]}]}], "unschedulable": false},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]}
        })
    }

    #[test]
    fn only_the_kept_paths_are_decoded_and_they_equal_the_whole_objects() {
        let bytes = serde_json::to_vec(&pod()).unwrap();
        let mut p = Projection::new();
        p.keep(&["metadata", "labels"]);
        p.keep(&["metadata", "name"]);
        p.keep(&["spec", "nodeName"]);
        p.keep(&["spec", "unschedulable"]);
        p.keep(&["status", "phase"]);
        p.keep(&["status", "missing"]);
        assert_eq!(
            p.decode(&bytes).unwrap(),
            json!({
                "metadata": {"name": "web-1", "labels": {"app": "web", "tier": "front"}},
                "spec": {"nodeName": "n1", "unschedulable": false},
                "status": {"phase": "Running"}
            })
        );
    }

    #[test]
    fn a_path_through_something_that_is_not_an_object_reads_as_null() {
        let bytes = br#"{"spec": "oops", "status": [1, 2], "metadata": {"labels": null}}"#;
        let mut p = Projection::new();
        p.keep(&["spec", "nodeName"]);
        p.keep(&["status", "phase"]);
        p.keep(&["metadata", "labels", "app"]);
        assert_eq!(
            p.decode(bytes).unwrap(),
            json!({"spec": null, "status": null, "metadata": {"labels": null}})
        );
    }

    #[test]
    fn keeping_a_parent_keeps_all_under_it_and_the_empty_path_keeps_everything() {
        let bytes = serde_json::to_vec(&pod()).unwrap();
        let mut p = Projection::new();
        p.keep(&["metadata", "labels", "app"]);
        p.keep(&["metadata"]);
        p.keep(&["metadata", "name"]);
        assert_eq!(
            p.decode(&bytes).unwrap(),
            json!({"metadata": pod()["metadata"]})
        );
        let mut all = Projection::new();
        all.keep(&["spec"]);
        all.keep(&[]);
        assert_eq!(all.decode(&bytes).unwrap(), pod());
    }

    #[test]
    fn keys_with_escapes_are_matched_by_their_text() {
        let bytes = br#"{"meta\u0064ata": {"na\"me": "x", "name": "y"}}"#;
        let mut p = Projection::new();
        p.keep(&["metadata", "name"]);
        assert_eq!(p.decode(bytes).unwrap(), json!({"metadata": {"name": "y"}}));
    }

    #[test]
    fn bytes_that_are_not_json_decode_to_none() {
        let p = Projection::new();
        assert!(p.decode(b"{\"a\": ").is_none());
        assert!(p.decode(b"{} trailing").is_none());
        assert_eq!(p.decode(b"{\"a\": 1}"), Some(json!({})));
    }
}
