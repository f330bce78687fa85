//! `events.k8s.io/v1` Events: a second view of the `core/v1` Events the store holds, as
//! kube-apiserver serves them (one storage, each request converted on the way in and out).
//!
//! client-go's `tools/events` library (kube-scheduler's and newer controllers' recorder) and
//! kube-rs's `Recorder` write this version; `kubectl describe` and `kubectl get events` read
//! the core one. Both see the same objects.
//!
//! The two versions hold the same fields under other names: `regarding` is `involvedObject`,
//! `note` is `message`, `reportingController` is `reportingComponent`, and the core fields the
//! new API retired are `deprecatedSource`, `deprecatedFirstTimestamp`,
//! `deprecatedLastTimestamp` and `deprecatedCount`. What this version adds is its validation:
//! a new Event must say when, who reported it and what was done, and once written only its
//! `series` (and metadata) may change.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::events::v1 as events;
use serde_json::Value;

use super::api::{Api, WriteOptions};
use super::error::{ApiError, ApiResult, Cause};
use super::objects;
use super::patch::PatchType;
use super::resources::{self, ResourceInfo};
use super::validation as v;
use crate::store::Revision;

/// The API group of this view.
pub const GROUP: &str = "events.k8s.io";

/// Longest `reportingInstance`, `action` and `reason` (kube-apiserver's limits).
const SHORT_FIELD_LIMIT: usize = 128;

/// Longest `note` a new Event may carry, in bytes.
const NOTE_LIMIT: usize = 1024;

/// Whether `res` is this view.
pub fn is_view(res: &ResourceInfo) -> bool {
    res.group == GROUP && res.kind == "Event"
}

/// The resource the view's objects are stored as: `core/v1` Events.
pub fn storage() -> &'static ResourceInfo {
    resources::find("", "v1", "events").expect("core/v1 events are served")
}

/// The resource that holds `res`'s objects in the store: itself, except for this view.
pub fn stored_as(res: &'static ResourceInfo) -> &'static ResourceInfo {
    if is_view(res) { storage() } else { res }
}

/// A `core/v1` Event as an `events.k8s.io/v1` one.
pub fn from_core(e: core::Event) -> events::Event {
    events::Event {
        metadata: e.metadata,
        event_time: e.event_time,
        series: e.series.map(|s| events::EventSeries {
            count: s.count.unwrap_or_default(),
            last_observed_time: s.last_observed_time.unwrap_or(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            ),
        }),
        reporting_controller: e.reporting_component,
        reporting_instance: e.reporting_instance,
        action: e.action,
        reason: e.reason,
        regarding: Some(e.involved_object),
        related: e.related,
        note: e.message,
        type_: e.type_,
        deprecated_source: e.source,
        deprecated_first_timestamp: e.first_timestamp,
        deprecated_last_timestamp: e.last_timestamp,
        deprecated_count: e.count.filter(|c| *c != 0),
    }
}

/// An `events.k8s.io/v1` Event as the `core/v1` one it is stored as.
pub fn to_core(e: events::Event) -> core::Event {
    core::Event {
        metadata: e.metadata,
        event_time: e.event_time,
        series: e.series.map(|s| core::EventSeries {
            count: Some(s.count),
            last_observed_time: Some(s.last_observed_time),
        }),
        reporting_component: e.reporting_controller,
        reporting_instance: e.reporting_instance,
        action: e.action,
        reason: e.reason,
        involved_object: e.regarding.unwrap_or_default(),
        related: e.related,
        message: e.note,
        type_: e.type_,
        source: e.deprecated_source,
        first_timestamp: e.deprecated_first_timestamp,
        last_timestamp: e.deprecated_last_timestamp,
        count: e.deprecated_count,
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(format!("converting an Event to events.k8s.io/v1: {e}"))
}

/// A stored `core/v1` Event (as the API serves it, with its `resourceVersion`) in this view.
pub fn served(obj: Value) -> ApiResult<Value> {
    let core: core::Event = serde_json::from_value(obj).map_err(internal)?;
    serde_json::to_value(from_core(core)).map_err(internal)
}

/// [`served`] of stored bytes at `revision`, encoded.
pub fn served_bytes(stored: &[u8], revision: Revision) -> ApiResult<Vec<u8>> {
    let value = objects::from_bytes(stored, revision);
    serde_json::to_vec(&served(value)?).map_err(internal)
}

/// A client's `events.k8s.io/v1` Event decoded: the typed Event and the paths of the fields
/// this version does not have (the core names, `message` say, among them).
pub fn decode(obj: Value) -> ApiResult<(events::Event, Vec<String>)> {
    super::strategy::decode_typed::<events::Event>(obj).map_err(|e| {
        ApiError::bad_request(format!(
            "Event in version \"v1\" cannot be handled as a Event: {e}"
        ))
    })
}

/// The `core/v1` JSON a write stores for `e`, with `apiVersion` and `kind`.
pub fn core_json(e: events::Event) -> ApiResult<Value> {
    let mut obj = serde_json::to_value(to_core(e)).map_err(internal)?;
    obj["apiVersion"] = Value::from("v1");
    obj["kind"] = Value::from("Event");
    Ok(obj)
}

fn is_set(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

fn series_causes(e: &events::Event, causes: &mut Vec<Cause>) {
    if let Some(series) = &e.series
        && series.count < 2
    {
        causes.push(Cause::invalid(
            "series.count",
            series.count,
            "should be at least 2",
        ));
    }
}

fn length_cause(field: &str, value: &Option<String>, limit: usize, causes: &mut Vec<Cause>) {
    if value.as_deref().is_some_and(|s| s.len() > limit) {
        causes.push(Cause::invalid(
            field,
            "",
            format!("can have at most {limit} characters"),
        ));
    }
}

/// What kube-apiserver checks of an Event created through `events.k8s.io/v1`: it says when it
/// happened, who reported it (a controller named as a qualified name, and its instance), what
/// was done and why, with a `Normal` or `Warning` type, a `note` of at most 1 KiB, none of the
/// deprecated core fields, and a `series` only from its second occurrence.
pub fn validate_create(e: &events::Event) -> Vec<Cause> {
    let mut causes = Vec::new();
    series_causes(e, &mut causes);
    if e.event_time.is_none() {
        causes.push(Cause::required("eventTime"));
    }
    match e.type_.as_deref() {
        Some("Normal" | "Warning") => {}
        other => causes.push(Cause::invalid(
            "type",
            "",
            format!("has invalid value: {}", other.unwrap_or("")),
        )),
    }
    if e.deprecated_first_timestamp.is_some() {
        causes.push(Cause::invalid(
            "deprecatedFirstTimestamp",
            "",
            "needs to be unset",
        ));
    }
    if e.deprecated_last_timestamp.is_some() {
        causes.push(Cause::invalid(
            "deprecatedLastTimestamp",
            "",
            "needs to be unset",
        ));
    }
    if e.deprecated_count.is_some_and(|c| c != 0) {
        causes.push(Cause::invalid("deprecatedCount", "", "needs to be unset"));
    }
    if e.deprecated_source
        .as_ref()
        .is_some_and(|s| is_set(&s.component) || is_set(&s.host))
    {
        causes.push(Cause::invalid("deprecatedSource", "", "needs to be unset"));
    }
    match e.reporting_controller.as_deref().unwrap_or("") {
        "" => causes.push(Cause::required("reportingController")),
        controller => {
            if let Some(why) = v::qualified_name(controller) {
                causes.push(Cause::invalid("reportingController", controller, why));
            }
        }
    }
    if !is_set(&e.reporting_instance) {
        causes.push(Cause::required("reportingInstance"));
    }
    length_cause(
        "reportingInstance",
        &e.reporting_instance,
        SHORT_FIELD_LIMIT,
        &mut causes,
    );
    if !is_set(&e.action) {
        causes.push(Cause::required("action"));
    }
    length_cause("action", &e.action, SHORT_FIELD_LIMIT, &mut causes);
    if !is_set(&e.reason) {
        causes.push(Cause::required("reason"));
    }
    length_cause("reason", &e.reason, SHORT_FIELD_LIMIT, &mut causes);
    length_cause("note", &e.note, NOTE_LIMIT, &mut causes);
    causes
}

/// What an update through `events.k8s.io/v1` may change: the `series` (a repeat of the Event)
/// and metadata; every other field is immutable, as kube-apiserver has it.
pub fn validate_update(new: &events::Event, old: &events::Event) -> Vec<Cause> {
    let mut causes = Vec::new();
    series_causes(new, &mut causes);
    let mut immutable = |field: &str, same: bool| {
        if !same {
            causes.push(Cause::invalid(field, "", "field is immutable"));
        }
    };
    immutable("regarding", new.regarding == old.regarding);
    immutable("related", new.related == old.related);
    immutable("reason", new.reason == old.reason);
    immutable("note", new.note == old.note);
    immutable("type", new.type_ == old.type_);
    immutable("action", new.action == old.action);
    immutable("eventTime", new.event_time == old.event_time);
    immutable(
        "reportingController",
        new.reporting_controller == old.reporting_controller,
    );
    immutable(
        "reportingInstance",
        new.reporting_instance == old.reporting_instance,
    );
    immutable(
        "deprecatedSource",
        new.deprecated_source == old.deprecated_source,
    );
    immutable(
        "deprecatedFirstTimestamp",
        new.deprecated_first_timestamp == old.deprecated_first_timestamp,
    );
    immutable(
        "deprecatedLastTimestamp",
        new.deprecated_last_timestamp == old.deprecated_last_timestamp,
    );
    immutable(
        "deprecatedCount",
        new.deprecated_count == old.deprecated_count,
    );
    causes
}

/// An error of a write to the stored `core/v1` Events, named as this view's (group
/// `events.k8s.io`), as a client of this version is told.
pub fn relabel(mut e: ApiError) -> ApiError {
    if e.group.as_deref() == Some("") {
        e.group = Some(GROUP.to_string());
    }
    e
}

/// This view's entry in the resource table.
pub fn view() -> &'static ResourceInfo {
    resources::find(GROUP, "v1", "events").expect("events.k8s.io/v1 events are served")
}

/// Creates an Event sent as `events.k8s.io/v1`: checked as this version requires, stored as
/// the `core/v1` Event it converts to, and answered in this version.
pub async fn create(
    api: &Api,
    ns: Option<&str>,
    mut obj: Value,
    opts: &WriteOptions,
) -> ApiResult<(Value, Vec<String>)> {
    Api::check_body(view(), ns, &mut obj)?;
    let (event, unknown) = decode(obj)?;
    let mut warnings = Api::unknown_fields(&unknown, opts)?;
    let causes = validate_create(&event);
    if !causes.is_empty() {
        let name = event.metadata.name.clone().unwrap_or_default();
        return Err(ApiError::invalid(view(), &name, causes));
    }
    let (written, more) = api
        .create_written(storage(), ns, core_json(event)?, opts)
        .await
        .map_err(relabel)?;
    warnings.extend(more);
    Ok((served((*written.object).clone())?, warnings))
}

/// How a change to an existing Event is made from the Event as it stands (in this version).
pub enum Change<'a> {
    /// A replacement (PUT).
    Replace(Value),
    /// A JSON, merge or strategic merge patch.
    Patch(PatchType, &'a [u8]),
}

/// Replaces or patches an Event through `events.k8s.io/v1`. The new Event is made from the
/// current one as this version shows it, validated as an update of it, and stored with
/// compare-and-swap on the revision it was made from; a write that lost a race with another
/// writer is made again, unless the client named the `resourceVersion` it expects.
pub async fn change(
    api: &Api,
    ns: Option<&str>,
    name: &str,
    change: Change<'_>,
    opts: &WriteOptions,
) -> ApiResult<(Value, Vec<String>)> {
    let view = view();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = api.get(storage(), ns, name).await.map_err(relabel)?;
        let current_rv = objects::resource_version(&current)
            .and_then(Result::ok)
            .unwrap_or(0);
        let old = served(current)?;
        let (mut new, pinned) = match &change {
            Change::Replace(body) => {
                let mut body = body.clone();
                Api::check_body(view, ns, &mut body)?;
                let pinned = objects::resource_version(&body).is_some();
                (body, pinned)
            }
            Change::Patch(ty, patch) => {
                let patched = super::patch::apply_patch("Event", &old, patch, *ty)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                let pinned = serde_json::from_slice::<Value>(patch)
                    .ok()
                    .and_then(|p| objects::resource_version(&p))
                    .is_some();
                (patched, pinned)
            }
        };
        Api::check_body(view, ns, &mut new)?;
        match objects::resource_version(&new) {
            Some(Ok(rv)) if rv == current_rv => {}
            None => objects::set_resource_version(&mut new, current_rv),
            Some(_) => return Err(ApiError::stale(view, name)),
        }
        match objects::name(&new) {
            "" => {
                objects::meta_mut(&mut new).insert("name".into(), Value::from(name));
            }
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        let (event, unknown) = decode(new)?;
        let mut warnings = Api::unknown_fields(&unknown, opts)?;
        let (before, _) = decode(old)?;
        let causes = validate_update(&event, &before);
        if !causes.is_empty() {
            return Err(ApiError::invalid(view, name, causes));
        }
        match api
            .update_written(storage(), ns, name, core_json(event)?, None, opts)
            .await
        {
            Err(e) if e.reason == "Conflict" && !pinned && attempt < WRITE_ATTEMPTS => continue,
            Err(e) => return Err(relabel(e)),
            Ok((written, more)) => {
                warnings.extend(more);
                return Ok((served((*written.object).clone())?, warnings));
            }
        }
    }
}

/// Times a change that lost a race is made again (as a patch is in [`Api::patch`]).
const WRITE_ATTEMPTS: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new_style() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "eventTime": "2026-12-07T06:00:00.123456Z",
            "reportingController": "example.com/operator",
            "reportingInstance": "operator-0",
            "action": "Reconciling",
            "reason": "Scaled",
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default", "apiVersion": "apps/v1"},
            "related": {"kind": "ReplicaSet", "name": "web-1", "namespace": "default"},
            "note": "scaled to 3",
            "type": "Normal",
            "series": {"count": 2, "lastObservedTime": "2026-12-07T06:00:01.000000Z"},
        })
    }

    #[test]
    fn an_event_survives_the_trip_through_its_stored_core_form() {
        let (event, unknown) = decode(new_style()).unwrap();
        assert!(unknown.is_empty());
        let core = core_json(event.clone()).unwrap();
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "scaled to 3");
        assert_eq!(core["reportingComponent"], "example.com/operator");
        assert_eq!(core["series"]["count"], 2);
        let mut back = served(core).unwrap();
        back["apiVersion"] = json!("events.k8s.io/v1");
        back["kind"] = json!("Event");
        assert_eq!(back, new_style());
    }

    #[test]
    fn a_core_events_old_fields_show_under_their_deprecated_names() {
        let core = json!({
            "metadata": {"name": "p.1", "namespace": "default", "resourceVersion": "7"},
            "involvedObject": {"kind": "Pod", "name": "p"},
            "message": "Started container",
            "source": {"component": "kubelet", "host": "n1"},
            "firstTimestamp": "2026-12-07T06:00:00Z",
            "lastTimestamp": "2026-12-07T06:00:05Z",
            "count": 3,
            "type": "Normal",
            "reason": "Started",
        });
        let e = served(core).unwrap();
        assert_eq!(e["regarding"]["name"], "p");
        assert_eq!(e["note"], "Started container");
        assert_eq!(e["deprecatedSource"]["host"], "n1");
        assert_eq!(e["deprecatedFirstTimestamp"], "2026-12-07T06:00:00Z");
        assert_eq!(e["deprecatedLastTimestamp"], "2026-12-07T06:00:05Z");
        assert_eq!(e["deprecatedCount"], 3);
        assert_eq!(e["metadata"]["resourceVersion"], "7");
        assert!(e.get("message").is_none() && e.get("involvedObject").is_none());
    }

    #[test]
    fn core_field_names_are_unknown_fields_in_this_version() {
        let mut obj = new_style();
        obj["message"] = json!("not a field here");
        let (event, unknown) = decode(obj).unwrap();
        assert_eq!(unknown, vec!["message".to_string()]);
        assert_eq!(event.note.as_deref(), Some("scaled to 3"));
    }

    fn fields(causes: &[Cause]) -> Vec<&str> {
        causes.iter().map(|c| c.field.as_str()).collect()
    }

    #[test]
    fn a_new_event_must_say_when_who_what_and_why() {
        let (ok, _) = decode(new_style()).unwrap();
        assert!(validate_create(&ok).is_empty());
        let (bare, _) = decode(json!({"metadata": {"name": "x"}})).unwrap();
        assert_eq!(
            fields(&validate_create(&bare)),
            [
                "eventTime",
                "type",
                "reportingController",
                "reportingInstance",
                "action",
                "reason"
            ]
        );
        let mut bad = new_style();
        bad["reportingController"] = json!("not a/qualified/name");
        bad["type"] = json!("Info");
        bad["series"]["count"] = json!(1);
        bad["deprecatedCount"] = json!(4);
        bad["deprecatedSource"] = json!({"component": "kubelet"});
        bad["action"] = json!("a".repeat(129));
        bad["note"] = json!("n".repeat(1025));
        let (bad, _) = decode(bad).unwrap();
        let causes = validate_create(&bad);
        assert_eq!(
            fields(&causes),
            [
                "series.count",
                "type",
                "deprecatedCount",
                "deprecatedSource",
                "reportingController",
                "action",
                "note"
            ]
        );
        assert!(causes[1].message.contains("has invalid value: Info"));
        assert!(causes[5].message.contains("at most 128 characters"));
    }

    #[test]
    fn an_update_may_change_the_series_and_nothing_else() {
        let (old, _) = decode(new_style()).unwrap();
        let mut repeat = old.clone();
        repeat.series.as_mut().unwrap().count = 3;
        repeat.metadata.labels = Some([("a".to_string(), "b".to_string())].into());
        assert!(validate_update(&repeat, &old).is_empty());
        let mut changed = old.clone();
        changed.note = Some("something else".into());
        changed.reason = None;
        assert_eq!(fields(&validate_update(&changed, &old)), ["reason", "note"]);
    }
}
