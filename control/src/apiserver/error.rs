//! The one mapping from API errors to HTTP status codes and Kubernetes `Status` objects.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::store::StoreError;

use super::resources::ResourceInfo;

/// One reason an object is invalid: a `details.causes[]` entry of a `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// Machine-readable reason, e.g. `FieldValueRequired`.
    pub reason: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The offending field path, e.g. `spec.containers[0].image`.
    pub field: String,
}

/// A field's value as Kubernetes' field errors print it: a string quoted, a number or a
/// boolean bare, nothing as `null` (apimachinery's `field.Error`).
pub trait FieldValue {
    /// The value as it appears after `Invalid value: `.
    fn render(&self) -> String;
}

impl FieldValue for str {
    fn render(&self) -> String {
        format!("{self:?}")
    }
}

impl FieldValue for String {
    fn render(&self) -> String {
        self.as_str().render()
    }
}

impl<T: FieldValue + ?Sized> FieldValue for &T {
    fn render(&self) -> String {
        (**self).render()
    }
}

macro_rules! bare_field_values {
    ($($t:ty),*) => {$(
        impl FieldValue for $t {
            fn render(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
bare_field_values!(
    i32,
    i64,
    u16,
    u32,
    u64,
    usize,
    f64,
    bool,
    serde_json::Number
);

impl FieldValue for serde_json::Value {
    fn render(&self) -> String {
        match self {
            serde_json::Value::String(s) => s.render(),
            other => other.to_string(),
        }
    }
}

impl Cause {
    /// `FieldValueRequired`.
    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            message: "Required value".into(),
            field: field.into(),
        }
    }

    /// `FieldValueInvalid` with the offending value and why.
    pub fn invalid(
        field: impl Into<String>,
        value: impl FieldValue,
        why: impl std::fmt::Display,
    ) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {why}", value.render()),
            field: field.into(),
        }
    }

    /// `FieldValueNotSupported`: the value is not one of the allowed ones.
    pub fn not_supported(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        allowed: &[&str],
    ) -> Self {
        let allowed: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{value}\": supported values: {}",
                allowed.join(", ")
            ),
            field: field.into(),
        }
    }

    /// `FieldValueDuplicate`.
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            message: format!("Duplicate value: \"{value}\""),
            field: field.into(),
        }
    }

    /// `FieldValueNotFound`: the value names something that does not exist (a volume, a
    /// container).
    pub fn not_found(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause {
            reason: "FieldValueNotFound",
            message: format!("Not found: \"{value}\""),
            field: field.into(),
        }
    }

    /// `FieldValueForbidden`, e.g. a change to an immutable field.
    pub fn forbidden(field: impl Into<String>, why: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            message: format!("Forbidden: {}", why.into()),
            field: field.into(),
        }
    }

    /// `FieldValueTypeInvalid` or an unknown field in strict decoding.
    pub fn unknown_field(field: impl Into<String>) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("unknown field \"{field}\""),
            field,
        }
    }

    /// The `details.causes[]` entry. Its message leaves the field out, as Kubernetes' causes
    /// do: clients put the two together (kubectl prints `* FIELD: MESSAGE`).
    fn to_json(&self) -> Value {
        let mut cause = json!({"reason": self.reason, "message": self.message});
        if !self.field.is_empty() {
            cause["field"] = json!(self.field);
        }
        cause
    }
}

/// An error answered to an API client as a Kubernetes `Status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub code: u16,
    /// The `Status.reason`, e.g. `NotFound`.
    pub reason: &'static str,
    /// The `Status.message`.
    pub message: String,
    /// `details.name`.
    pub name: Option<String>,
    /// `details.group`.
    pub group: Option<String>,
    /// `details.kind` (the resource plural for most errors, the kind for `Invalid`).
    pub kind: Option<String>,
    /// `details.causes`.
    pub causes: Vec<Cause>,
    /// `metadata.continue`: on a 410 for a continue token too old for a consistent list, the
    /// token that lists the rest from the present state instead.
    pub continue_token: Option<String>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

/// Result alias of API handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    fn plain(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            causes: vec![],
            continue_token: None,
        }
    }

    fn about(mut self, res: &ResourceInfo, name: &str) -> Self {
        self.name = Some(name.to_string());
        self.group = Some(res.group.to_string());
        self.kind = Some(res.plural.to_string());
        self
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::plain(400, "BadRequest", message)
    }

    /// 403 Forbidden by an admission check: `pods "x" is forbidden: <why>`.
    pub fn forbidden(res: &ResourceInfo, name: &str, why: &str) -> Self {
        let mut err = Self::plain(
            403,
            "Forbidden",
            format!("{} \"{name}\" is forbidden: {why}", res.plural_qualified()),
        );
        err.name = Some(name.to_string());
        err.group = Some(res.group.to_string());
        err.kind = Some(res.plural.to_string());
        err
    }

    /// 404 for a path the server does not serve.
    pub fn no_route() -> Self {
        Self::plain(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 NotFound for one object.
    pub fn not_found(res: &ResourceInfo, name: &str) -> Self {
        Self::plain(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.plural_qualified(), name),
        )
        .about(res, name)
    }

    /// 409 AlreadyExists.
    pub fn already_exists(res: &ResourceInfo, name: &str) -> Self {
        Self::plain(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.plural_qualified(), name),
        )
        .about(res, name)
    }

    /// 409 Conflict for a stale `resourceVersion` or failed precondition.
    pub fn conflict(res: &ResourceInfo, name: &str, why: &str) -> Self {
        Self::plain(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                res.plural_qualified(),
                name,
                why
            ),
        )
        .about(res, name)
    }

    /// 409 Conflict of a server-side apply: `message` as Kubernetes words it ("Apply failed
    /// with 1 conflict: …") and one `FieldManagerConflict` cause per field.
    pub fn apply_conflict(
        res: &ResourceInfo,
        name: &str,
        message: String,
        causes: Vec<Cause>,
    ) -> Self {
        let mut err = Self::plain(409, "Conflict", message).about(res, name);
        err.causes = causes;
        err
    }

    /// 409 Conflict because the object changed since it was read.
    pub fn stale(res: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with field causes.
    pub fn invalid(res: &ResourceInfo, name: &str, causes: Vec<Cause>) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{}\" is invalid: {}", res.kind, name, summary),
            name: Some(name.to_string()),
            group: Some(res.group.to_string()),
            kind: Some(res.kind.to_string()),
            causes,
            continue_token: None,
        }
    }

    /// 429 TooManyRequests: the request may succeed later (an eviction a disruption budget
    /// does not allow now), with why in `causes`.
    pub fn too_many_requests(message: impl Into<String>, causes: Vec<Cause>) -> Self {
        ApiError {
            causes,
            ..Self::plain(429, "TooManyRequests", message)
        }
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed(what: &str) -> Self {
        Self::plain(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {what}"),
        )
    }

    /// 422 for list options kube-apiserver's `ValidateListOptions` refuses.
    pub fn invalid_list_options(cause: Cause) -> Self {
        let mut e = Self::plain(
            422,
            "Invalid",
            format!(
                "ListOptions.meta.k8s.io \"\" is invalid: {}: {}",
                cause.field, cause.message
            ),
        );
        e.group = Some("meta.k8s.io".into());
        e.kind = Some("ListOptions".into());
        e.causes = vec![cause];
        e
    }

    /// 504 for a read at a revision the store has not reached in time.
    pub fn resource_version_too_large(wanted: u64, current: u64) -> Self {
        let mut e = Self::plain(
            504,
            "Timeout",
            format!("Too large resource version: {wanted}, current: {current}"),
        );
        e.causes = vec![Cause {
            reason: "ResourceVersionTooLarge",
            message: "Too large resource version".into(),
            field: String::new(),
        }];
        e
    }

    /// 410 Expired: a watch or list asked for a compacted revision.
    pub fn expired(message: impl Into<String>) -> Self {
        Self::plain(410, "Expired", message)
    }

    /// 413 RequestEntityTooLarge.
    pub fn too_large(limit: usize) -> Self {
        Self::plain(
            413,
            "RequestEntityTooLarge",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 415 UnsupportedMediaType.
    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::plain(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got \"{ct}\")"
            ),
        )
    }

    /// 500 InternalError.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::plain(500, "InternalError", message)
    }

    /// 503 ServiceUnavailable.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::plain(503, "ServiceUnavailable", message)
    }

    /// Maps a store error about one object.
    pub fn from_store(e: StoreError, res: &ResourceInfo, name: &str) -> Self {
        match e {
            StoreError::NotFound(_) => Self::not_found(res, name),
            StoreError::AlreadyExists(_) => Self::already_exists(res, name),
            StoreError::Conflict { .. } => Self::stale(res, name),
            StoreError::Compacted {
                requested,
                compacted,
            } => Self::expired(format!(
                "too old resource version: {requested} ({compacted})"
            )),
            StoreError::Backend(m) => Self::internal(format!("storage error: {m}")),
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(token) = &self.continue_token {
            status["metadata"]["continue"] = json!(token);
        }
        // Kubernetes' NotFound always carries details, empty for a path it does not serve;
        // clients rely on that (`kubectl debug` reads `details.name` to tell a missing
        // ephemeralcontainers subresource from a missing pod).
        if self.code == 404 || self.name.is_some() || self.kind.is_some() || !self.causes.is_empty()
        {
            let mut details = serde_json::Map::new();
            if let Some(n) = &self.name {
                details.insert("name".into(), json!(n));
            }
            if let Some(g) = &self.group
                && !g.is_empty()
            {
                details.insert("group".into(), json!(g));
            }
            if let Some(k) = &self.kind {
                details.insert("kind".into(), json!(k));
            }
            if !self.causes.is_empty() {
                details.insert(
                    "causes".into(),
                    Value::Array(self.causes.iter().map(Cause::to_json).collect()),
                );
            }
            status["details"] = Value::Object(details);
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = (code, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp
    }
}

impl ResourceInfo {
    /// `plural` or `plural.group` as Kubernetes messages name a resource.
    pub fn plural_qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// The fields of the causes `check` records, in order (for validation tests).
#[cfg(test)]
pub fn cause_fields(check: impl Fn(&mut Vec<Cause>)) -> Vec<String> {
    let mut causes = Vec::new();
    check(&mut causes);
    causes.into_iter().map(|c| c.field).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::find;

    #[test]
    fn invalid_values_print_as_kubernetes_prints_them() {
        let msg = |c: Cause| c.message;
        assert_eq!(msg(Cause::invalid("f", 0, "x")), "Invalid value: 0: x");
        assert_eq!(msg(Cause::invalid("f", -1i64, "x")), "Invalid value: -1: x");
        assert_eq!(
            msg(Cause::invalid("f", "a\"b", "x")),
            "Invalid value: \"a\\\"b\": x"
        );
        assert_eq!(
            msg(Cause::invalid("f", "0", "x")),
            "Invalid value: \"0\": x"
        );
        assert_eq!(
            msg(Cause::invalid("f", serde_json::json!(3), "x")),
            "Invalid value: 3: x"
        );
        assert_eq!(
            msg(Cause::invalid("f", serde_json::json!("s"), "x")),
            "Invalid value: \"s\": x"
        );
        assert_eq!(
            msg(Cause::invalid("f", serde_json::Value::Null, "x")),
            "Invalid value: null: x"
        );
    }

    #[test]
    fn errors_map_to_kubernetes_status_objects() {
        let pods = find("", "v1", "pods").unwrap();
        let deploy = find("apps", "v1", "deployments").unwrap();
        let cases = [
            (
                ApiError::not_found(pods, "a"),
                404,
                "NotFound",
                "pods \"a\" not found",
            ),
            (
                ApiError::already_exists(deploy, "d"),
                409,
                "AlreadyExists",
                "deployments.apps \"d\" already exists",
            ),
            (ApiError::bad_request("x"), 400, "BadRequest", "x"),
            (ApiError::expired("too old"), 410, "Expired", "too old"),
            (
                ApiError::too_large(3),
                413,
                "RequestEntityTooLarge",
                "the request body is larger than the limit of 3 bytes",
            ),
        ];
        for (err, code, reason, message) in cases {
            let s = err.to_status();
            assert_eq!(
                (
                    s["code"].as_u64().unwrap() as u16,
                    s["reason"].as_str().unwrap()
                ),
                (code, reason)
            );
            assert_eq!(s["message"], message);
            assert_eq!(s["kind"], "Status");
        }
        let s = ApiError::invalid(pods, "p", vec![Cause::required("spec.containers")]).to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(
            s["message"],
            "Pod \"p\" is invalid: spec.containers: Required value"
        );
        assert_eq!(s["details"]["causes"][0]["field"], "spec.containers");
        assert_eq!(s["details"]["causes"][0]["message"], "Required value");
        assert_eq!(s["details"]["kind"], "Pod");
        let s = ApiError::from_store(
            StoreError::Conflict {
                key: "k".into(),
                expected: 1,
                actual: 2,
            },
            pods,
            "p",
        )
        .to_status();
        assert_eq!(s["reason"], "Conflict");
        // A 404 for a path nobody serves still has (empty) details, as Kubernetes sends it.
        let s = ApiError::no_route().to_status();
        assert_eq!(
            (s["code"].clone(), s["details"].clone()),
            (json!(404), json!({}))
        );
        assert!(
            ApiError::bad_request("x")
                .to_status()
                .get("details")
                .is_none()
        );
    }
}
