//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`).
//!
//! kubectl and client-go send built-in kinds as protobuf, with no fallback to JSON. A body is
//! the magic `k8s\0` and a `runtime.Unknown` envelope: `typeMeta {apiVersion, kind}` and `raw`,
//! the object's own message. [`decode`] walks the wire format with the generated `schema`
//! (one entry per Go struct) and builds the JSON that Go's `encoding/json` writes for the
//! decoded struct, so the rest of the server sees exactly what a JSON client sends:
//!
//! - a plain scalar with `omitempty` is dropped when zero, a pointer is kept when set (an
//!   explicit `replicas: 0` survives, an unset `nodePort` does not);
//! - structs are always written (`"resources": {}`), a zero `metav1.Time` as `null`;
//! - `json:",inline"` structs are merged into their parent;
//! - `Time` and `MicroTime` become RFC 3339 strings, `IntOrString` a number or a string,
//!   `Quantity` its string, `[]byte` base64, `FieldsV1` its embedded JSON.

use base64::Engine as _;
use serde_json::{Map, Value};

mod schema;

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Every Kubernetes protobuf body starts with these four bytes.
const MAGIC: &[u8] = b"k8s\0";

/// Deepest message nesting accepted; the schema has no recursive types, so this only stops
/// hostile input, far above any real object.
const MAX_DEPTH: usize = 64;

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    /// The body does not start with `k8s\0`.
    #[error("not a kubernetes protobuf body: missing the k8s\\0 magic prefix")]
    MissingMagic,
    /// The envelope names a kind this server has no schema for.
    #[error("unsupported protobuf kind {api_version} {kind}")]
    UnsupportedKind {
        /// The envelope's `apiVersion`.
        api_version: String,
        /// The envelope's `kind`.
        kind: String,
    },
    /// The envelope's `raw` is compressed or otherwise encoded.
    #[error("unsupported protobuf content encoding {0:?}")]
    UnsupportedEncoding(String),
    /// The bytes are not a valid message of the named kind.
    #[error("malformed protobuf: {0}")]
    Malformed(String),
}

/// Decodes a Kubernetes protobuf body (`k8s\0` magic and a `runtime.Unknown` envelope with
/// `typeMeta {apiVersion, kind}` and `raw`) into the object's JSON form, including `apiVersion`
/// and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or(ProtobufError::MissingMagic)?;
    let unknown = Unknown::parse(envelope)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::UnsupportedEncoding(unknown.content_encoding));
    }
    let def = schema::KINDS
        .iter()
        .find(|k| k.api_version == unknown.api_version && k.kind == unknown.kind)
        .ok_or_else(|| ProtobufError::UnsupportedKind {
            api_version: unknown.api_version.clone(),
            kind: unknown.kind.clone(),
        })?;
    // Go writes TypeMeta first: kind, then apiVersion.
    let mut object = Map::new();
    object.insert("kind".into(), Value::String(unknown.kind));
    object.insert("apiVersion".into(), Value::String(unknown.api_version));
    object.extend(message(def.message, &[unknown.raw], 0)?);
    Ok(Value::Object(object))
}

/// A top-level kind: the envelope's `apiVersion` and `kind` and the message of its object.
struct KindDef {
    api_version: &'static str,
    kind: &'static str,
    message: usize,
}

/// One Go struct: its fields in declaration order, which is the order Go writes JSON keys in.
struct MessageDef {
    /// `group/version.Type`, for error messages.
    name: &'static str,
    fields: &'static [Field],
}

/// One serialized field of a Go struct.
struct Field {
    tag: u32,
    /// The JSON key; empty for a `json:",inline"` struct whose fields join the parent's.
    json: &'static str,
    shape: Shape,
    /// `omitempty` in the JSON tag: a zero scalar or an empty slice or map is left out.
    omitempty: bool,
    ty: Type,
}

/// Builds a [`KindDef`]; keeps the generated table short.
const fn k(api_version: &'static str, kind: &'static str, message: usize) -> KindDef {
    KindDef {
        api_version,
        kind,
        message,
    }
}

/// Builds a [`MessageDef`]; keeps the generated table short.
const fn m(name: &'static str, fields: &'static [Field]) -> MessageDef {
    MessageDef { name, fields }
}

/// Builds a [`Field`]; keeps the generated table to one short line per field.
const fn f(tag: u32, json: &'static str, shape: Shape, omitempty: bool, ty: Type) -> Field {
    Field {
        tag,
        json,
        shape,
        omitempty,
        ty,
    }
}

/// How a Go field holds its type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// A plain value: always on the wire when sent by Go, zero when absent.
    Value,
    /// A pointer: on the wire only when set, so presence is meaningful.
    Pointer,
    /// A slice: a repeated field.
    Slice,
    /// A `map[string]T`: repeated `{key = 1, value = 2}` entries.
    Map,
}

/// A field's element type.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Type {
    String,
    Bool,
    Int32,
    Int64,
    /// `[]byte`, written as base64.
    Bytes,
    /// A nested struct, by index into the schema's messages.
    Message(usize),
    /// `metav1.Time`: `{seconds = 1, nanos = 2}`, written as RFC 3339 seconds.
    Time,
    /// `metav1.MicroTime`: like [`Type::Time`], written with microseconds.
    MicroTime,
    /// `intstr.IntOrString`: `{type = 1, intVal = 2, strVal = 3}`, written as a number or string.
    IntOrString,
    /// `resource.Quantity`: `{string = 1}`, written as the string.
    Quantity,
    /// `metav1.FieldsV1`: `{raw = 1}`, raw JSON written as is.
    FieldsV1,
    /// A named `[]string` the .proto wraps in a message, `{items = 1}` (authentication/v1
    /// `ExtraValue`), written as a JSON list of strings.
    StringList,
}

/// One field value as it appears on the wire.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Fixed32,
    Bytes(&'a [u8]),
}

impl Wire<'_> {
    fn name(&self) -> &'static str {
        match self {
            Wire::Varint(_) => "varint",
            Wire::Fixed64 => "fixed64",
            Wire::Fixed32 => "fixed32",
            Wire::Bytes(_) => "length-delimited",
        }
    }
}

/// A cursor over the fields of one message.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for i in 0..10 {
            let (&byte, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("truncated field".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field's tag and value, or `None` at the end of the message.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag =
            u32::try_from(key >> 3).map_err(|_| format!("field number {} too large", key >> 3))?;
        if tag == 0 {
            return Err("field number 0".into());
        }
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| "length too large".to_string())?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            other => return Err(format!("unsupported wire type {other} for field {tag}")),
        };
        Ok(Some((tag, wire)))
    }
}

/// The `runtime.Unknown` envelope.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Unknown<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, ProtobufError> {
        let malformed = |e: String| ProtobufError::Malformed(format!("runtime.Unknown: {e}"));
        let mut unknown = Unknown {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        let mut reader = Reader { buf };
        while let Some((tag, wire)) = reader.next().map_err(malformed)? {
            match (tag, wire) {
                (1, Wire::Bytes(type_meta)) => {
                    let mut reader = Reader { buf: type_meta };
                    while let Some((tag, wire)) = reader.next().map_err(malformed)? {
                        match (tag, wire) {
                            (1, Wire::Bytes(b)) => unknown.api_version = lossy(b),
                            (2, Wire::Bytes(b)) => unknown.kind = lossy(b),
                            (1 | 2, _) => {
                                return Err(malformed("typeMeta: wrong wire type".into()));
                            }
                            _ => {}
                        }
                    }
                }
                (2, Wire::Bytes(raw)) => unknown.raw = raw,
                (3, Wire::Bytes(b)) => unknown.content_encoding = lossy(b),
                (4, Wire::Bytes(_)) => {}
                (1..=4, _) => return Err(malformed(format!("field {tag}: wrong wire type"))),
                _ => {}
            }
        }
        if unknown.kind.is_empty() {
            return Err(malformed("no typeMeta.kind".into()));
        }
        Ok(unknown)
    }
}

/// Go strings hold any bytes; `encoding/json` writes invalid UTF-8 as U+FFFD, as this does.
fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Decodes one message, given as the chunks its bytes arrived in (protobuf merges repeated
/// occurrences of a singular message field), into a JSON object.
fn message(
    index: usize,
    chunks: &[&[u8]],
    depth: usize,
) -> Result<Map<String, Value>, ProtobufError> {
    let def = &schema::MESSAGES[index];
    if depth > MAX_DEPTH {
        return Err(ProtobufError::Malformed(format!(
            "{}: nested deeper than {MAX_DEPTH}",
            def.name
        )));
    }
    let mut values: Vec<Vec<Wire<'_>>> = vec![Vec::new(); def.fields.len()];
    for chunk in chunks {
        let mut reader = Reader { buf: chunk };
        while let Some((tag, wire)) = reader
            .next()
            .map_err(|e| ProtobufError::Malformed(format!("{}: {e}", def.name)))?
        {
            // Unknown fields are skipped, as Go's generated code does.
            if let Some(i) = def.fields.iter().position(|f| f.tag == tag) {
                values[i].push(wire);
            }
        }
    }
    let mut out = Map::new();
    for (field, wires) in def.fields.iter().zip(&values) {
        let at =
            |e: String| ProtobufError::Malformed(format!("{} field {}: {e}", def.name, field.tag));
        render(field, wires, &mut out, depth).map_err(|e| match e {
            Failure::Here(e) => at(e),
            Failure::Nested(e) => e,
        })?;
    }
    Ok(out)
}

/// An error from rendering one field: either about that field, or already located deeper.
enum Failure {
    Here(String),
    Nested(ProtobufError),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Here(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Failure::Here(e.into())
    }
}

impl From<ProtobufError> for Failure {
    fn from(e: ProtobufError) -> Self {
        Failure::Nested(e)
    }
}

/// Writes one field into `out` the way `encoding/json` writes the Go field.
fn render(
    field: &Field,
    wires: &[Wire<'_>],
    out: &mut Map<String, Value>,
    depth: usize,
) -> Result<(), Failure> {
    // What Go writes for a nil pointer, slice or map: nothing with omitempty, else null.
    let nil = if field.omitempty {
        None
    } else {
        Some(Value::Null)
    };
    let value = match field.shape {
        Shape::Value => match (field.ty, wires.last()) {
            (Type::Message(m), _) => {
                // Structs are always written, omitempty or not; inline ones merge into the parent.
                let object = message(m, &chunks(wires)?, depth + 1)?;
                if field.json.is_empty() {
                    out.extend(object);
                    return Ok(());
                }
                Some(Value::Object(object))
            }
            (ty, _) if is_struct(ty) => Some(special(ty, &chunks(wires)?)?),
            // A `[]byte` is a slice to Go: nil when absent.
            (Type::Bytes, None) => nil,
            (ty, None) => (!field.omitempty).then(|| zero(ty)),
            (ty, Some(wire)) => {
                let value = element(ty, *wire, depth)?;
                (!(field.omitempty && value == zero(ty))).then_some(value)
            }
        },
        Shape::Pointer => match (field.ty, wires.last()) {
            (_, None) => nil,
            (ty, Some(_)) if is_struct(ty) || matches!(ty, Type::Message(_)) => {
                Some(single(ty, &chunks(wires)?, depth)?)
            }
            (ty, Some(wire)) => Some(element(ty, *wire, depth)?),
        },
        Shape::Slice => {
            let mut items = Vec::new();
            for wire in wires {
                match (field.ty, *wire) {
                    // Repeated numbers may come packed.
                    (Type::Bool | Type::Int32 | Type::Int64, Wire::Bytes(packed)) => {
                        let mut reader = Reader { buf: packed };
                        while !reader.buf.is_empty() {
                            items.push(element(field.ty, Wire::Varint(reader.varint()?), depth)?);
                        }
                    }
                    (ty, wire) => items.push(element(ty, wire, depth)?),
                }
            }
            if items.is_empty() {
                nil
            } else {
                Some(Value::Array(items))
            }
        }
        Shape::Map => {
            let mut map = Map::new();
            for wire in wires {
                let Wire::Bytes(entry) = *wire else {
                    return Err("map entry with wrong wire type".into());
                };
                let (key, value) = map_entry(field.ty, entry, depth)?;
                map.insert(key, value);
            }
            if map.is_empty() {
                nil
            } else {
                Some(Value::Object(map))
            }
        }
    };
    if let Some(value) = value {
        out.insert(field.json.to_string(), value);
    }
    Ok(())
}

/// Go structs with their own wire and JSON forms.
fn is_struct(ty: Type) -> bool {
    matches!(
        ty,
        Type::Time
            | Type::MicroTime
            | Type::IntOrString
            | Type::Quantity
            | Type::FieldsV1
            | Type::StringList
    )
}

/// The bytes of a length-delimited field, for each of its occurrences.
fn chunks<'a>(wires: &[Wire<'a>]) -> Result<Vec<&'a [u8]>, Failure> {
    wires
        .iter()
        .map(|w| match w {
            Wire::Bytes(b) => Ok(*b),
            wire => Err(Failure::Here(format!("wrong wire type {}", wire.name()))),
        })
        .collect()
}

/// A message or special struct from its chunks.
fn single(ty: Type, chunks: &[&[u8]], depth: usize) -> Result<Value, Failure> {
    match ty {
        Type::Message(m) => Ok(Value::Object(message(m, chunks, depth + 1)?)),
        _ => special(ty, chunks),
    }
}

/// One occurrence of a field, as a slice element or a singular value.
fn element(ty: Type, wire: Wire<'_>, depth: usize) -> Result<Value, Failure> {
    Ok(match (ty, wire) {
        (Type::String, Wire::Bytes(b)) => Value::String(lossy(b)),
        (Type::Bytes, Wire::Bytes(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        (Type::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // Go's generated code truncates varints to the field's width.
        (Type::Int32, Wire::Varint(v)) => Value::from(v as i32),
        (Type::Int64, Wire::Varint(v)) => Value::from(v as i64),
        (
            Type::Message(_)
            | Type::Time
            | Type::MicroTime
            | Type::IntOrString
            | Type::Quantity
            | Type::FieldsV1
            | Type::StringList,
            Wire::Bytes(b),
        ) => single(ty, &[b], depth)?,
        (_, wire) => return Err(format!("wrong wire type {}", wire.name()).into()),
    })
}

/// Go's zero value of a scalar, as `encoding/json` writes it.
fn zero(ty: Type) -> Value {
    match ty {
        Type::Bool => Value::Bool(false),
        Type::Int32 | Type::Int64 => Value::from(0),
        _ => Value::String(String::new()),
    }
}

/// A `{key = 1, value = 2}` map entry; a missing value is the value type's zero.
fn map_entry(ty: Type, entry: &[u8], depth: usize) -> Result<(String, Value), Failure> {
    let mut key = String::new();
    let mut values = Vec::new();
    let mut reader = Reader { buf: entry };
    while let Some((tag, wire)) = reader.next()? {
        match (tag, wire) {
            (1, Wire::Bytes(b)) => key = lossy(b),
            (1, _) => return Err("map key with wrong wire type".into()),
            (2, wire) => values.push(wire),
            _ => {}
        }
    }
    let value = match ty {
        Type::Message(_)
        | Type::Time
        | Type::MicroTime
        | Type::IntOrString
        | Type::Quantity
        | Type::FieldsV1
        | Type::StringList => single(ty, &chunks(&values)?, depth)?,
        _ => match values.last() {
            Some(wire) => element(ty, *wire, depth)?,
            None => zero(ty),
        },
    };
    Ok((key, value))
}

/// The fields of a small fixed message (`Timestamp`, `IntOrString`, ...) by tag; later
/// occurrences win.
fn fields<'a>(chunks: &[&'a [u8]]) -> Result<Vec<(u32, Wire<'a>)>, String> {
    let mut out: Vec<(u32, Wire<'a>)> = Vec::new();
    for chunk in chunks {
        let mut reader = Reader { buf: chunk };
        while let Some((tag, wire)) = reader.next()? {
            out.retain(|(t, _)| *t != tag);
            out.push((tag, wire));
        }
    }
    Ok(out)
}

fn varint_field(fields: &[(u32, Wire<'_>)], tag: u32) -> Result<u64, String> {
    match fields.iter().find(|(t, _)| *t == tag) {
        None => Ok(0),
        Some((_, Wire::Varint(v))) => Ok(*v),
        Some(_) => Err(format!("field {tag}: expected a varint")),
    }
}

fn bytes_field<'a>(fields: &[(u32, Wire<'a>)], tag: u32) -> Result<Option<&'a [u8]>, String> {
    match fields.iter().find(|(t, _)| *t == tag) {
        None => Ok(None),
        Some((_, Wire::Bytes(b))) => Ok(Some(b)),
        Some(_) => Err(format!("field {tag}: expected length-delimited bytes")),
    }
}

/// Seconds of Go's zero `time.Time` (January 1, year 1) since the Unix epoch; metav1.Time
/// writes it as `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;

/// The Go structs with hand-written wire and JSON forms.
fn special(ty: Type, chunks: &[&[u8]]) -> Result<Value, Failure> {
    if ty == Type::StringList {
        // Every occurrence of field 1 is one more item.
        let mut items = Vec::new();
        for chunk in chunks {
            let mut reader = Reader { buf: chunk };
            while let Some((tag, wire)) = reader.next()? {
                match (tag, wire) {
                    (1, Wire::Bytes(b)) => items.push(Value::String(lossy(b))),
                    (1, wire) => {
                        return Err(
                            format!("list item with wrong wire type {}", wire.name()).into()
                        );
                    }
                    _ => {}
                }
            }
        }
        return Ok(Value::Array(items));
    }
    let fields = fields(chunks)?;
    match ty {
        Type::Time | Type::MicroTime => {
            // An empty message is the zero time (metav1.Time writes nothing for it).
            if chunks.iter().all(|c| c.is_empty()) {
                return Ok(Value::Null);
            }
            let seconds = varint_field(&fields, 1)? as i64;
            let nanos = i64::from(varint_field(&fields, 2)? as i32);
            let seconds = seconds
                .checked_add(nanos.div_euclid(1_000_000_000))
                .ok_or("timestamp out of range")?;
            let nanos = nanos.rem_euclid(1_000_000_000) as u32;
            if seconds == GO_ZERO_TIME && nanos == 0 {
                return Ok(Value::Null);
            }
            let time =
                chrono::DateTime::from_timestamp(seconds, nanos).ok_or("timestamp out of range")?;
            let format = if ty == Type::Time {
                "%Y-%m-%dT%H:%M:%SZ"
            } else {
                "%Y-%m-%dT%H:%M:%S%.6fZ"
            };
            Ok(Value::String(time.format(format).to_string()))
        }
        Type::IntOrString => match varint_field(&fields, 1)? {
            0 => Ok(Value::from(varint_field(&fields, 2)? as i32)),
            1 => Ok(Value::String(
                bytes_field(&fields, 3)?.map(lossy).unwrap_or_default(),
            )),
            other => Err(format!("IntOrString type {other}").into()),
        },
        Type::Quantity => match bytes_field(&fields, 1)? {
            Some(s) if !s.is_empty() => Ok(Value::String(lossy(s))),
            _ => Ok(Value::String("0".into())),
        },
        Type::FieldsV1 => match bytes_field(&fields, 1)? {
            Some(raw) if !raw.is_empty() => serde_json::from_slice(raw)
                .map_err(|e| Failure::Here(format!("FieldsV1 is not JSON: {e}"))),
            _ => Ok(Value::Null),
        },
        _ => Err(format!("{ty:?} is not a special struct").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Bodies captured from kubectl v1.32 with, beside each, the same command's
    /// `--dry-run=client -o json` output: the JSON kubectl would have sent. `kubectl debug`
    /// (the pods) and the autoscaling/v1 fallback of `kubectl autoscale` have no dry run; their
    /// JSON is reviewed decoder output, checked against k8s-openapi below.
    macro_rules! captured {
        ($($name:literal),* $(,)?) => {
            [$((
                $name,
                include_bytes!(concat!("protobuf/testdata/", $name, ".pb")).as_slice(),
                include_str!(concat!("protobuf/testdata/", $name, ".json")),
            )),*]
        };
    }

    const CAPTURED: [(&str, &[u8], &str); 17] = captured!(
        "configmap",
        "deployment",
        "deployment-zero-replicas",
        "job",
        "cronjob",
        "hpa-v2",
        "hpa-v1",
        "pod-debug-copy",
        "pod-debug-node",
        "namespace",
        "secret-docker-registry",
        "secret-generic",
        "service-clusterip-headless",
        "service-externalname",
        "service-nodeport",
        "serviceaccount",
        "resourcequota",
    );

    fn captured(name: &str) -> &'static [u8] {
        CAPTURED
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, body, _)| *body)
            .unwrap()
    }

    #[test]
    fn kubectl_bodies_decode_to_the_json_kubectl_would_send() {
        for (name, body, expected) in CAPTURED {
            let decoded = decode(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let expected: Value = serde_json::from_str(expected).unwrap();
            assert_eq!(decoded, expected, "{name}");
        }
    }

    #[test]
    fn explicit_zero_replicas_survive_and_unset_node_ports_do_not() {
        let deployment = decode(captured("deployment-zero-replicas")).unwrap();
        assert_eq!(deployment["spec"]["replicas"], json!(0));
        let service = decode(captured("service-nodeport")).unwrap();
        assert!(service["spec"]["ports"][0].get("nodePort").is_none());
        assert!(service["metadata"].get("namespace").is_none());
    }

    /// Decoded objects deserialize into the k8s-openapi type and serialize back to the same
    /// JSON (less the nulls Go writes for unset fields), so every key and value is understood.
    #[test]
    fn decoded_objects_round_trip_through_k8s_openapi_types() {
        use k8s_openapi::api::{
            apps::v1 as apps, autoscaling, batch::v1 as batch, core::v1 as core,
        };
        fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Value {
            serde_json::to_value(serde_json::from_value::<T>(v.clone()).unwrap()).unwrap()
        }
        for (name, body, _) in CAPTURED {
            let decoded = decode(body).unwrap();
            let typed = match (
                decoded["apiVersion"].as_str().unwrap(),
                decoded["kind"].as_str().unwrap(),
            ) {
                ("v1", "ConfigMap") => round_trip::<core::ConfigMap>(&decoded),
                ("v1", "Namespace") => round_trip::<core::Namespace>(&decoded),
                ("v1", "Pod") => round_trip::<core::Pod>(&decoded),
                ("v1", "Secret") => round_trip::<core::Secret>(&decoded),
                ("v1", "Service") => round_trip::<core::Service>(&decoded),
                ("v1", "ServiceAccount") => round_trip::<core::ServiceAccount>(&decoded),
                ("v1", "ResourceQuota") => round_trip::<core::ResourceQuota>(&decoded),
                ("apps/v1", "Deployment") => round_trip::<apps::Deployment>(&decoded),
                ("batch/v1", "Job") => round_trip::<batch::Job>(&decoded),
                ("batch/v1", "CronJob") => round_trip::<batch::CronJob>(&decoded),
                ("autoscaling/v1", "HorizontalPodAutoscaler") => {
                    round_trip::<autoscaling::v1::HorizontalPodAutoscaler>(&decoded)
                }
                ("autoscaling/v2", "HorizontalPodAutoscaler") => {
                    round_trip::<autoscaling::v2::HorizontalPodAutoscaler>(&decoded)
                }
                other => panic!("{name}: no typed check for {other:?}"),
            };
            assert_eq!(typed, without_nulls(decoded), "{name}");
        }
    }

    fn without_nulls(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k, without_nulls(v)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
            other => other,
        }
    }

    #[test]
    fn secret_and_binary_config_map_data_are_base64() {
        let secret = decode(captured("secret-generic")).unwrap();
        assert_eq!(secret["data"], json!({"a": "Yg=="}));
        let config_map = decode(captured("configmap")).unwrap();
        assert_eq!(config_map["binaryData"], json!({"blob": "Ymlu/wAB"}));
    }

    #[test]
    fn unknown_kinds_are_refused_by_name() {
        let controller = body_with("v1", "ReplicationController", &[], None);
        let err = decode(&controller).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unsupported protobuf kind v1 ReplicationController"
        );
    }

    #[test]
    fn bodies_without_the_magic_or_with_an_encoding_are_refused() {
        assert!(matches!(
            decode(b"{\"kind\":\"Pod\"}"),
            Err(ProtobufError::MissingMagic)
        ));
        let gzip = body_with("v1", "ConfigMap", &[], Some("gzip"));
        assert_eq!(
            decode(&gzip).unwrap_err().to_string(),
            "unsupported protobuf content encoding \"gzip\""
        );
    }

    /// Every prefix of every captured body, and every single-byte corruption of it, decodes or
    /// fails with an error; none panics.
    #[test]
    fn truncated_and_corrupted_bodies_return_errors() {
        for (name, body, _) in CAPTURED {
            for end in 0..body.len() {
                if let Ok(v) = decode(&body[..end]) {
                    // Only cutting whole fields off the end of the envelope can still decode.
                    assert!(v.is_object(), "{name} cut at {end}");
                }
            }
            let mut copy = body.to_vec();
            for i in 0..copy.len() {
                for byte in [0x00, 0x02, 0x08, 0x7f, 0x80, 0xff] {
                    let saved = copy[i];
                    copy[i] = byte;
                    let _ = decode(&copy);
                    copy[i] = saved;
                }
            }
        }
        assert!(matches!(
            decode(b"k8s\0\x0a\xff\xff\xff\xff\x0f"),
            Err(ProtobufError::Malformed(_))
        ));
        let err = decode(&body_with("v1", "Pod", &[0x0a, 0x05, 0x0a], None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed protobuf: core/v1.Pod: truncated field"
        );
    }

    // A tiny protobuf writer for hand-built bodies.

    fn key(tag: u32, wire: u64, out: &mut Vec<u8>) {
        varint_into((u64::from(tag) << 3) | wire, out);
    }

    fn varint_into(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key(tag, 2, &mut out);
        varint_into(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }

    fn varint(tag: u32, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        key(tag, 0, &mut out);
        varint_into(v, &mut out);
        out
    }

    fn text(tag: u32, s: &str) -> Vec<u8> {
        bytes(tag, s.as_bytes())
    }

    fn body_with(api_version: &str, kind: &str, raw: &[u8], encoding: Option<&str>) -> Vec<u8> {
        let mut unknown = bytes(1, &[text(1, api_version), text(2, kind)].concat());
        unknown.extend(bytes(2, raw));
        if let Some(encoding) = encoding {
            unknown.extend(text(3, encoding));
        }
        [MAGIC, &unknown].concat()
    }

    fn timestamp(seconds: i64, nanos: i32) -> Vec<u8> {
        [varint(1, seconds as u64), varint(2, nanos as i64 as u64)].concat()
    }

    #[test]
    fn self_subject_review_user_extra_values_are_lists_of_strings() {
        let extra = [
            text(1, "scopes"),
            bytes(2, &[text(1, "read"), text(1, "write")].concat()),
        ]
        .concat();
        let user = [text(1, "alice"), text(3, "devs"), bytes(4, &extra)].concat();
        let raw = [bytes(1, &[]), bytes(2, &bytes(1, &user))].concat();
        let review = decode(&body_with(
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            &raw,
            None,
        ))
        .unwrap();
        assert_eq!(
            review["status"]["userInfo"],
            json!({"username": "alice", "groups": ["devs"], "extra": {"scopes": ["read", "write"]}})
        );
        let wrong = [text(1, "k"), bytes(2, &varint(1, 7))].concat();
        let user = [text(1, "bob"), bytes(4, &wrong)].concat();
        let raw = [bytes(1, &[]), bytes(2, &bytes(1, &user))].concat();
        assert!(
            decode(&body_with(
                "authentication.k8s.io/v1",
                "SelfSubjectReview",
                &raw,
                None
            ))
            .is_err()
        );
    }

    #[test]
    fn lease_keeps_pointer_zeros_and_writes_micro_times() {
        let spec = [
            text(1, "node-a"),
            varint(2, 0),
            bytes(3, &timestamp(1_704_164_645, 123_456_789)),
            bytes(4, &[]),
        ]
        .concat();
        let raw = [bytes(1, &text(1, "node-a")), bytes(2, &spec)].concat();
        let lease = decode(&body_with("coordination.k8s.io/v1", "Lease", &raw, None)).unwrap();
        assert_eq!(
            lease,
            json!({
                "kind": "Lease",
                "apiVersion": "coordination.k8s.io/v1",
                "metadata": {"name": "node-a", "creationTimestamp": null},
                "spec": {
                    "holderIdentity": "node-a",
                    "leaseDurationSeconds": 0,
                    "acquireTime": "2024-01-02T03:04:05.123456Z",
                    "renewTime": null,
                }
            })
        );
        serde_json::from_value::<k8s_openapi::api::coordination::v1::Lease>(lease).unwrap();
    }

    #[test]
    fn pod_probes_inline_their_handler_and_quantities_and_named_ports_are_strings() {
        let port = [varint(1, 1), text(3, "http")].concat();
        let probe = [
            bytes(
                1,
                &bytes(2, &[text(1, "/healthz"), bytes(2, &port)].concat()),
            ),
            varint(3, 5),
        ]
        .concat();
        let limit = [text(1, "memory"), bytes(2, &text(1, "64Mi"))].concat();
        let container = [
            text(1, "app"),
            text(2, "busybox"),
            bytes(8, &bytes(1, &limit)),
            bytes(10, &probe),
            varint(16, 1),
        ]
        .concat();
        let security = [varint(4, 1), varint(4, 2), bytes(4, &[3, 4])].concat();
        let spec = [
            bytes(2, &container),
            bytes(14, &security),
            varint(4, u64::MAX),
        ]
        .concat();
        let created = timestamp(1_704_164_645, 999_000_000);
        let raw = [
            bytes(1, &[text(1, "p"), bytes(8, &created)].concat()),
            bytes(2, &spec),
        ]
        .concat();
        let pod = decode(&body_with("v1", "Pod", &raw, None)).unwrap();
        assert_eq!(
            pod["metadata"]["creationTimestamp"],
            json!("2024-01-02T03:04:05Z")
        );
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], json!(-1));
        assert_eq!(
            pod["spec"]["securityContext"],
            json!({"supplementalGroups": [1, 2, 3, 4]})
        );
        let container = &pod["spec"]["containers"][0];
        assert_eq!(
            container["resources"],
            json!({"limits": {"memory": "64Mi"}})
        );
        assert_eq!(container["stdin"], json!(true));
        assert_eq!(
            container["livenessProbe"],
            json!({"httpGet": {"path": "/healthz", "port": "http"}, "timeoutSeconds": 5})
        );
        assert_eq!(pod["status"], json!({}));
        serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(pod).unwrap();
    }

    #[test]
    fn events_write_both_time_forms_and_keep_required_empty_strings() {
        let raw = [
            bytes(1, &text(1, "e")),
            bytes(2, &text(2, "Pod")),
            text(3, "Started"),
            bytes(6, &timestamp(0, 0)),
            varint(8, 3),
            bytes(10, &timestamp(1_704_164_645, 5_000)),
        ]
        .concat();
        let event = decode(&body_with("v1", "Event", &raw, None)).unwrap();
        assert_eq!(event["firstTimestamp"], json!("1970-01-01T00:00:00Z"));
        assert_eq!(event["lastTimestamp"], Value::Null);
        assert_eq!(event["eventTime"], json!("2024-01-02T03:04:05.000005Z"));
        assert_eq!(event["reportingComponent"], json!(""));
        assert_eq!(event["count"], json!(3));
        serde_json::from_value::<k8s_openapi::api::core::v1::Event>(event).unwrap();
    }

    #[test]
    fn an_events_k8s_io_event_decodes_as_client_go_writes_it() {
        let raw = [
            bytes(1, &[text(1, "web.1"), text(3, "default")].concat()),
            bytes(2, &timestamp(1_704_164_645, 123_000)),
            bytes(
                3,
                &[varint(1, 2), bytes(2, &timestamp(1_704_164_646, 0))].concat(),
            ),
            text(4, "example.com/operator"),
            text(5, "operator-0"),
            text(6, "Reconcile"),
            text(7, "Reconciled"),
            bytes(8, &[text(1, "Deployment"), text(3, "web")].concat()),
            text(10, "configured web"),
            text(11, "Normal"),
        ]
        .concat();
        let event = decode(&body_with("events.k8s.io/v1", "Event", &raw, None)).unwrap();
        assert_eq!(event["apiVersion"], json!("events.k8s.io/v1"));
        assert_eq!(event["eventTime"], json!("2024-01-02T03:04:05.000123Z"));
        assert_eq!(event["series"]["count"], json!(2));
        assert_eq!(event["reportingController"], json!("example.com/operator"));
        assert_eq!(event["regarding"]["name"], json!("web"));
        assert_eq!(event["note"], json!("configured web"));
        assert_eq!(event["deprecatedSource"], json!({}));
        let typed: k8s_openapi::api::events::v1::Event = serde_json::from_value(event).unwrap();
        assert!(crate::apiserver::events_v1::validate_create(&typed).is_empty());
    }

    #[test]
    fn wrong_wire_types_name_the_message_and_field() {
        let raw = bytes(2, &varint(2, 7));
        let err = decode(&body_with("v1", "Pod", &raw, None)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed protobuf: core/v1.PodSpec field 2: wrong wire type varint"
        );
    }
}
