//! Self reviews, which ask the API server about the caller:
//!
//! - `authorization.k8s.io/v1` `SelfSubjectAccessReview` (what `kubectl auth can-i VERB
//!   RESOURCE` asks) and `SelfSubjectRulesReview` (`kubectl auth can-i --list`);
//! - `authentication.k8s.io/v1` `SelfSubjectReview` (`kubectl auth whoami`).
//!
//! Flotilla has no authentication or authorization: whoever reaches the API server is
//! anonymous and may do everything, as a kube-apiserver with anonymous requests enabled and
//! `--authorization-mode=AlwaysAllow` would say. These reviews say so truthfully instead of
//! answering 404, which tools that check who they are or what they may do first (kubectl,
//! Helm, dashboards) would take for an error. Like kube-apiserver's, they are create-only and
//! stored nowhere; the answer is the request with its `status` filled in.

use serde_json::{Value, json};

use super::error::{ApiError, ApiResult, Cause};
use super::resources::ResourceInfo;

/// The reviews as discovery lists them (they are not in the storage table,
/// [`RESOURCES`](super::resources::RESOURCES)): cluster-scoped and create-only ([`VERBS`]).
pub static RESOURCES: [ResourceInfo; 3] = [
    review_info(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
    ),
    review_info(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
    ),
    review_info(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
    ),
];

/// The only verb the reviews take.
pub const VERBS: &[&str] = &["create"];

const fn review_info(
    group: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
) -> ResourceInfo {
    ResourceInfo {
        group,
        version: "v1",
        kind,
        plural,
        singular,
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
    }
}

/// Why every review is allowed.
const REASON: &str = "flotilla has no authorization configured: every request is allowed";

/// Who every caller is: with no authentication, everyone is anonymous.
const ANONYMOUS: &str = "system:anonymous";

/// The groups of an anonymous caller.
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// A review kind served here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Review {
    /// `selfsubjectaccessreviews` (`RESOURCES[0]`).
    Access = 0,
    /// `selfsubjectrulesreviews` (`RESOURCES[1]`).
    Rules = 1,
    /// `selfsubjectreviews` (`RESOURCES[2]`).
    Subject = 2,
}

impl Review {
    /// The review a request path names, if any.
    pub fn from_path(path: &str) -> Option<Review> {
        let rest = path.trim_end_matches('/').strip_prefix("/apis/")?;
        [Review::Access, Review::Rules, Review::Subject]
            .into_iter()
            .find(|r| {
                let info = r.info();
                rest.strip_prefix(info.group)
                    .and_then(|p| p.strip_prefix('/'))
                    .and_then(|p| p.strip_prefix(info.version))
                    .and_then(|p| p.strip_prefix('/'))
                    == Some(info.plural)
            })
    }

    /// Its entry in [`RESOURCES`].
    fn info(self) -> &'static ResourceInfo {
        &RESOURCES[self as usize]
    }

    fn kind(self) -> &'static str {
        self.info().kind
    }
}

/// Answers a review: the request back with `status` filled in, or 400/422 for a body that is
/// not a valid review of that kind.
pub fn answer(review: Review, mut body: Value) -> ApiResult<Value> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "{} body must be a JSON object",
            review.kind()
        )));
    };
    let api_version = review.info().api_version();
    for (field, want) in [
        ("apiVersion", api_version.as_str()),
        ("kind", review.kind()),
    ] {
        match obj.get(field).and_then(Value::as_str) {
            None | Some("") => {
                obj.insert(field.into(), json!(want));
            }
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "the {field} of the body is \"{got}\", but this endpoint takes {want}"
                )));
            }
        }
    }
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let status = match review {
        Review::Access => {
            let resource = spec.get("resourceAttributes").filter(|v| !v.is_null());
            let non_resource = spec.get("nonResourceAttributes").filter(|v| !v.is_null());
            if resource.is_some() == non_resource.is_some() {
                return Err(ApiError::invalid(
                    review.info(),
                    "",
                    vec![Cause::invalid(
                        "spec.resourceAttributes",
                        "null",
                        "exactly one of nonResourceAttributes or resourceAttributes must be specified",
                    )],
                ));
            }
            json!({"allowed": true, "reason": REASON})
        }
        Review::Rules => {
            if spec
                .get("namespace")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
            {
                return Err(ApiError::invalid(
                    review.info(),
                    "",
                    vec![Cause::required("spec.namespace")],
                ));
            }
            json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            })
        }
        Review::Subject => json!({
            "userInfo": {"username": ANONYMOUS, "groups": [UNAUTHENTICATED]}
        }),
    };
    obj.insert("status".into(), status);
    obj.entry("metadata").or_insert_with(|| json!({}));
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_three_reviews_and_nothing_else() {
        assert_eq!(
            Review::from_path("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some(Review::Access)
        );
        assert_eq!(
            Review::from_path("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews/"),
            Some(Review::Rules)
        );
        assert_eq!(
            Review::from_path("/apis/authentication.k8s.io/v1/selfsubjectreviews"),
            Some(Review::Subject)
        );
        assert_eq!(
            Review::from_path("/apis/authorization.k8s.io/v1/subjectaccessreviews"),
            None
        );
        assert_eq!(
            Review::from_path("/apis/authorization.k8s.io/v1/selfsubjectreviews"),
            None
        );
        assert_eq!(
            Review::from_path("/apis/authentication.k8s.io/v1beta1/selfsubjectreviews"),
            None
        );
    }

    #[test]
    fn an_access_review_is_allowed_and_echoes_its_spec() {
        let spec = json!({"resourceAttributes": {"verb": "create", "resource": "pods", "namespace": "default"}});
        let out = answer(Review::Access, json!({"spec": spec})).unwrap();
        assert_eq!(out["status"]["allowed"], true);
        assert_eq!(out["spec"], spec);
        assert_eq!(out["kind"], "SelfSubjectAccessReview");
        assert_eq!(out["apiVersion"], "authorization.k8s.io/v1");
    }

    #[test]
    fn a_subject_review_says_the_caller_is_anonymous() {
        let out = answer(Review::Subject, json!({})).unwrap();
        assert_eq!(out["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(out["kind"], "SelfSubjectReview");
        assert_eq!(out["status"]["userInfo"]["username"], "system:anonymous");
        assert_eq!(
            out["status"]["userInfo"]["groups"],
            json!(["system:unauthenticated"])
        );
        let e = answer(
            Review::Subject,
            json!({"apiVersion": "authorization.k8s.io/v1"}),
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn an_access_review_needs_exactly_one_kind_of_attributes() {
        for spec in [
            json!({}),
            json!({"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": {"verb": "get", "path": "/"}}),
        ] {
            let e = answer(Review::Access, json!({"spec": spec})).unwrap_err();
            assert_eq!(e.code, 422);
            assert_eq!(e.causes[0].field, "spec.resourceAttributes");
        }
    }

    #[test]
    fn a_rules_review_needs_a_namespace_and_lists_everything() {
        let e = answer(Review::Rules, json!({"spec": {}})).unwrap_err();
        assert_eq!(
            (e.code, e.causes[0].field.as_str()),
            (422, "spec.namespace")
        );
        let out = answer(Review::Rules, json!({"spec": {"namespace": "default"}})).unwrap();
        assert_eq!(out["status"]["resourceRules"][0]["verbs"], json!(["*"]));
        assert_eq!(out["status"]["incomplete"], false);
    }

    #[test]
    fn a_body_of_another_kind_is_refused() {
        let e = answer(Review::Access, json!({"kind": "Pod", "spec": {}})).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(answer(Review::Rules, json!([1])).is_err());
    }
}
