//! TEMPORARY STUB by the lead so the crate compiles; the helper writing openapi.rs replaces it.
#![allow(missing_docs, unused)]
use serde_json::{Value, json};
pub fn v2() -> Value { json!({}) }
pub fn v3_index() -> Value { json!({"paths":{}}) }
pub fn v3_group_version(path: &str) -> Option<Value> { None }
