//! Label and field selectors, as in `?labelSelector=` / `?fieldSelector=` and in object specs.
//!
//! - [`LabelSelector`] parses the Kubernetes label selector syntax (`app=web,tier in (a,b),!canary`)
//!   and converts `metav1.LabelSelector` (`matchLabels` + `matchExpressions`); both validate keys
//!   and values like Kubernetes does and match against an object's `metadata.labels`.
//! - [`FieldSelector`] parses `f=v`, `f==v` and `f!=v` terms and accepts only the fields Kubernetes
//!   makes selectable for the kind, so `kubectl get pods --field-selector spec.nodeName=n1`
//!   behaves as it does against Kubernetes.
//!
//! Both are pure: they read `serde_json::Value` objects and never touch the store.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::Value;

use super::resources::ResourceInfo;

/// Why a selector was rejected. The REST handler answers 400 Bad Request for all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector string that does not follow the grammar.
    #[error("unable to parse label selector {selector:?}: {reason}")]
    LabelSyntax {
        /// The selector as given.
        selector: String,
        /// Where parsing stopped and why.
        reason: String,
    },
    /// A label key that is not a qualified name (`[prefix/]name`).
    #[error("invalid label key {key:?}: {reason}")]
    InvalidLabelKey {
        /// The key as given.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A label value that is too long or has characters labels cannot hold.
    #[error("invalid label value {value:?} for key {key:?}: {reason}")]
    InvalidLabelValue {
        /// The key the value belongs to.
        key: String,
        /// The value as given.
        value: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// A requirement whose operator and values do not fit together (e.g. `In` with no values,
    /// `Exists` with values, an unknown `matchExpressions` operator).
    #[error("invalid requirement on label {key:?}: {reason}")]
    InvalidRequirement {
        /// The key of the requirement.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field selector string that does not follow the grammar.
    #[error("invalid field selector {selector:?}: {reason}")]
    FieldSyntax {
        /// The selector as given.
        selector: String,
        /// What could not be understood.
        reason: String,
    },
    /// A field that is not selectable for the kind; the message is Kubernetes' own.
    #[error("field label not supported: {field}")]
    FieldNotSupported {
        /// The field as given.
        field: String,
    },
}

/// A label selector: a conjunction of requirements on an object's labels.
///
/// An empty selector (no requirements) matches every object, as `metav1.LabelSelector{}` and
/// `?labelSelector=` do in Kubernetes. A *missing* selector is the caller's business: Kubernetes
/// controllers treat a nil `spec.selector` as matching nothing, and a Service with no
/// `spec.selector` gets no endpoints managed for it; callers holding an `Option` should keep
/// that distinction rather than build an empty selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    /// Sorted by key (stable), as Kubernetes does, so [`fmt::Display`] is canonical.
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    /// Sorted and deduplicated; one value for the exact-match and comparison operators, none
    /// for `Exists`/`DoesNotExist`.
    values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

impl LabelSelector {
    /// Parses the Kubernetes label selector syntax: comma-separated (AND) requirements of the
    /// forms `k=v`, `k==v`, `k!=v`, `k in (v1,v2)`, `k notin (v1,v2)`, `k` (exists), `!k` (does
    /// not exist), and `k>n` / `k<n` (integer comparison). Whitespace between tokens is ignored;
    /// an empty or blank string is the empty selector.
    pub fn parse(s: &str) -> Result<LabelSelector, SelectorError> {
        let syntax = |reason: String| SelectorError::LabelSyntax {
            selector: s.to_owned(),
            reason,
        };
        let tokens = lex(s);
        let mut parser = Parser { tokens, pos: 0 };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(LabelSelector::default());
        }
        loop {
            let (key, op, values) = parser.requirement().map_err(syntax)?;
            requirements.push(Requirement::new(key, op, values)?);
            match parser.next() {
                None => break,
                Some(Token::Comma) => match parser.peek() {
                    Some(Token::Ident(_) | Token::Not) => {}
                    other => {
                        return Err(syntax(format!(
                            "found '{}', expected: identifier after ','",
                            show(other)
                        )));
                    }
                },
                Some(other) => {
                    return Err(syntax(format!(
                        "found '{other}', expected: ',' or end of string"
                    )));
                }
            }
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// Converts a `metav1.LabelSelector`: each `matchLabels` entry is an equality requirement,
    /// each `matchExpressions` entry an `In`/`NotIn`/`Exists`/`DoesNotExist` requirement. A
    /// selector with neither matches everything (see the type's docs for a nil selector).
    pub fn from_k8s(sel: &metav1::LabelSelector) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                key.clone(),
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        for expr in sel.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(SelectorError::InvalidRequirement {
                        key: expr.key.clone(),
                        reason: format!("{other:?} is not a valid label selector operator"),
                    });
                }
            };
            let values = expr.values.clone().unwrap_or_default();
            requirements.push(Requirement::new(expr.key.clone(), op, values)?);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    /// A selector requiring every given label to have the given value: the map form used by
    /// `Service.spec.selector` and `ReplicationController.spec.selector`. An empty map gives the
    /// empty selector, which matches everything; a Service with an empty selector selects no
    /// pods in Kubernetes, so check for that before calling.
    pub fn from_match_labels(
        labels: &BTreeMap<String, String>,
    ) -> Result<LabelSelector, SelectorError> {
        let mut requirements = Vec::with_capacity(labels.len());
        for (key, value) in labels {
            requirements.push(Requirement::new(
                key.clone(),
                Operator::Equals,
                vec![value.clone()],
            )?);
        }
        Ok(LabelSelector::from_requirements(requirements))
    }

    fn from_requirements(mut requirements: Vec<Requirement>) -> LabelSelector {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        LabelSelector { requirements }
    }

    /// Whether every requirement holds for `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_with(|key| labels.get(key).map(String::as_str))
    }

    /// Whether every requirement holds for the object's `metadata.labels` (a missing label map
    /// counts as empty; non-string label values are ignored).
    pub fn matches_object(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.matches_with(|key| labels.and_then(|l| l.get(key)).and_then(Value::as_str))
    }

    fn matches_with<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.requirements.iter().all(|r| r.matches(get(&r.key)))
    }

    /// Whether the selector has no requirements and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    /// The canonical form: requirements sorted by key, joined by `,`, equality written `=`, set
    /// values sorted (`a=b,env in (dev,prod),!canary`). It parses back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let first = r.values.first().map(String::as_str).unwrap_or_default();
            match r.op {
                Operator::Equals => write!(f, "{}={first}", r.key)?,
                Operator::NotEquals => write!(f, "{}!={first}", r.key)?,
                Operator::In => write!(f, "{} in ({})", r.key, r.values.join(","))?,
                Operator::NotIn => write!(f, "{} notin ({})", r.key, r.values.join(","))?,
                Operator::Exists => f.write_str(&r.key)?,
                Operator::DoesNotExist => write!(f, "!{}", r.key)?,
                Operator::GreaterThan => write!(f, "{}>{first}", r.key)?,
                Operator::LessThan => write!(f, "{}<{first}", r.key)?,
            }
        }
        Ok(())
    }
}

impl Requirement {
    /// Validates the key, the values and their number for the operator, as Kubernetes'
    /// `NewRequirement` does.
    fn new(
        key: String,
        op: Operator,
        mut values: Vec<String>,
    ) -> Result<Requirement, SelectorError> {
        if let Err(reason) = validate_qualified_name(&key) {
            return Err(SelectorError::InvalidLabelKey { key, reason });
        }
        let invalid = |key: &str, reason: &str| SelectorError::InvalidRequirement {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(invalid(
                    &key,
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::NotEquals if values.len() != 1 => {
                return Err(invalid(
                    &key,
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(invalid(
                    &key,
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(invalid(
                        &key,
                        "for 'gt', 'lt' operators, exactly one value is required",
                    ));
                }
                if values.iter().any(|v| v.parse::<i64>().is_err()) {
                    return Err(invalid(
                        &key,
                        "for 'gt', 'lt' operators, the value must be an integer",
                    ));
                }
            }
            _ => {}
        }
        for value in &values {
            if let Err(reason) = validate_label_value(value) {
                return Err(SelectorError::InvalidLabelValue {
                    key,
                    value: value.clone(),
                    reason,
                });
            }
        }
        values.sort();
        values.dedup();
        Ok(Requirement { key, op, values })
    }

    fn matches(&self, label: Option<&str>) -> bool {
        let listed = |v: &str| self.values.iter().any(|x| x == v);
        let compare = |v: &str, wanted: fn(i64, i64) -> bool| {
            let bound = self.values.first().and_then(|b| b.parse::<i64>().ok());
            match (v.parse::<i64>().ok(), bound) {
                (Some(v), Some(bound)) => wanted(v, bound),
                _ => false,
            }
        };
        match self.op {
            Operator::Equals | Operator::In => label.is_some_and(listed),
            Operator::NotEquals | Operator::NotIn => !label.is_some_and(listed),
            Operator::Exists => label.is_some(),
            Operator::DoesNotExist => label.is_none(),
            Operator::GreaterThan => label.is_some_and(|v| compare(v, |v, b| v > b)),
            Operator::LessThan => label.is_some_and(|v| compare(v, |v, b| v < b)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    Not,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    Comma,
    Open,
    Close,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Token::Ident(s) => s,
            Token::Not => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::GreaterThan => ">",
            Token::LessThan => "<",
            Token::Comma => ",",
            Token::Open => "(",
            Token::Close => ")",
        })
    }
}

fn show(token: Option<&Token>) -> String {
    token.map(Token::to_string).unwrap_or_default()
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | ',' | '(' | ')' | '<' | '>')
}

/// Splits a label selector into tokens. Identifiers are runs of anything but whitespace and the
/// special characters; `in`/`notin` stay identifiers and the parser reads them by position.
fn lex(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' | '=' if chars.peek().is_some_and(|&(_, n)| n == '=') => {
                chars.next();
                if c == '!' {
                    Token::NotEquals
                } else {
                    Token::DoubleEquals
                }
            }
            '!' => Token::Not,
            '=' => Token::Equals,
            '>' => Token::GreaterThan,
            '<' => Token::LessThan,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            _ => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, n)) = chars.peek() {
                    if n.is_whitespace() || is_special(n) {
                        break;
                    }
                    end = i + n.len_utf8();
                    chars.next();
                }
                Token::Ident(s.get(start..end).unwrap_or_default().to_owned())
            }
        };
        tokens.push(token);
    }
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    /// One requirement: `[!]key [op value | in (values) | notin (values)]`.
    fn requirement(&mut self) -> Result<(String, Operator, Vec<String>), String> {
        let negated = self.peek() == Some(&Token::Not);
        if negated {
            self.pos += 1;
        }
        let key = match self.next() {
            Some(Token::Ident(key)) => key,
            other => {
                return Err(format!(
                    "found '{}', expected: identifier",
                    show(other.as_ref())
                ));
            }
        };
        if negated {
            return Ok((key, Operator::DoesNotExist, Vec::new()));
        }
        let op = match self.peek() {
            None | Some(Token::Comma) => return Ok((key, Operator::Exists, Vec::new())),
            Some(Token::Equals | Token::DoubleEquals) => Operator::Equals,
            Some(Token::NotEquals) => Operator::NotEquals,
            Some(Token::GreaterThan) => Operator::GreaterThan,
            Some(Token::LessThan) => Operator::LessThan,
            Some(Token::Ident(word)) if word == "in" => Operator::In,
            Some(Token::Ident(word)) if word == "notin" => Operator::NotIn,
            Some(other) => {
                return Err(format!(
                    "found '{other}', expected: '=', '!=', '==', 'in', 'notin', '>' or '<'"
                ));
            }
        };
        self.pos += 1;
        let values = match op {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Ok((key, op, values))
    }

    /// The value after `=`, `!=`, `>` or `<`; nothing before `,` or the end means `""`.
    fn exact_value(&mut self) -> Result<String, String> {
        match self.peek() {
            None | Some(Token::Comma) => Ok(String::new()),
            Some(Token::Ident(value)) => {
                let value = value.clone();
                self.pos += 1;
                Ok(value)
            }
            Some(other) => Err(format!("found '{other}', expected: identifier")),
        }
    }

    /// `( v1, v2, … )`; an empty slot (`()`, `(a,)`) is the empty value, as in Kubernetes.
    fn value_set(&mut self) -> Result<Vec<String>, String> {
        match self.next() {
            Some(Token::Open) => {}
            other => return Err(format!("found '{}', expected: '('", show(other.as_ref()))),
        }
        let mut values = Vec::new();
        let mut current: Option<String> = None;
        loop {
            match self.next() {
                Some(Token::Ident(value)) if current.is_none() => current = Some(value),
                Some(Token::Comma) => values.push(current.take().unwrap_or_default()),
                Some(Token::Close) => {
                    values.push(current.take().unwrap_or_default());
                    return Ok(values);
                }
                other => {
                    return Err(format!(
                        "found '{}', expected: ',', ')' or identifier",
                        show(other.as_ref())
                    ));
                }
            }
        }
    }
}

const NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must \
                         start and end with an alphanumeric character";

/// A label key: `name` or `prefix/name`, the name at most 63 characters of the label
/// alphabet, the prefix a DNS subdomain of at most 253 characters.
fn validate_qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if prefix.is_empty() {
            return Err("prefix part must be non-empty".to_owned());
        }
        if prefix.len() > 253 {
            return Err("prefix part must be no more than 253 characters".to_owned());
        }
        if !is_dns_subdomain(prefix) {
            return Err(
                "prefix part must be a lowercase RFC 1123 subdomain: lower case \
                        alphanumeric characters, '-' or '.', starting and ending with an \
                        alphanumeric character"
                    .to_owned(),
            );
        }
        if name.contains('/') {
            return Err(
                "a qualified name has at most one '/' (e.g. 'example.com/MyName')".to_owned(),
            );
        }
    }
    if name.is_empty() {
        return Err("name part must be non-empty".to_owned());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".to_owned());
    }
    if !is_label_name(name) {
        return Err(format!("name part {NAME_RULE}"));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters of the label alphabet.
fn validate_label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("must be no more than 63 characters".to_owned());
    }
    if !value.is_empty() && !is_label_name(value) {
        return Err(format!("a valid label value {NAME_RULE}"));
    }
    Ok(())
}

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let bytes = label.as_bytes();
        let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
            return false;
        };
        let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        ok(first) && ok(last) && bytes.iter().all(|b| ok(b) || *b == b'-')
    })
}

/// A field selector: a conjunction of `field=value` / `field!=value` terms over fields the
/// kind makes selectable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    /// Sorted by their rendered form, as Kubernetes sorts terms, so [`fmt::Display`] is canonical.
    requirements: Vec<FieldRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    field: &'static SelectableField,
    negated: bool,
    value: String,
}

/// A field Kubernetes lets clients select on, and where its value lives in the object.
#[derive(Debug, PartialEq, Eq)]
struct SelectableField {
    name: &'static str,
    /// JSON paths tried in order; the first present one gives the value. Events try the
    /// `core/v1` field, then its `events.k8s.io/v1` counterpart.
    paths: &'static [&'static [&'static str]],
    /// The value of a missing field, as the Go zero value prints: `""`, `"false"` or `"0"`.
    default: &'static str,
}

const fn field(
    name: &'static str,
    paths: &'static [&'static [&'static str]],
    default: &'static str,
) -> SelectableField {
    SelectableField {
        name,
        paths,
        default,
    }
}

const OBJECT_META_FIELDS: &[SelectableField] = &[
    field("metadata.name", &[&["metadata", "name"]], ""),
    field("metadata.namespace", &[&["metadata", "namespace"]], ""),
];

const POD_FIELDS: &[SelectableField] = &[
    field("spec.nodeName", &[&["spec", "nodeName"]], ""),
    field("spec.restartPolicy", &[&["spec", "restartPolicy"]], ""),
    field("spec.schedulerName", &[&["spec", "schedulerName"]], ""),
    field(
        "spec.serviceAccountName",
        &[&["spec", "serviceAccountName"]],
        "",
    ),
    field("spec.hostNetwork", &[&["spec", "hostNetwork"]], "false"),
    field("status.phase", &[&["status", "phase"]], ""),
    field("status.podIP", &[&["status", "podIP"]], ""),
    field(
        "status.nominatedNodeName",
        &[&["status", "nominatedNodeName"]],
        "",
    ),
];

const EVENT_FIELDS: &[SelectableField] = &[
    field(
        "involvedObject.kind",
        &[&["involvedObject", "kind"], &["regarding", "kind"]],
        "",
    ),
    field(
        "involvedObject.namespace",
        &[
            &["involvedObject", "namespace"],
            &["regarding", "namespace"],
        ],
        "",
    ),
    field(
        "involvedObject.name",
        &[&["involvedObject", "name"], &["regarding", "name"]],
        "",
    ),
    field(
        "involvedObject.uid",
        &[&["involvedObject", "uid"], &["regarding", "uid"]],
        "",
    ),
    field(
        "involvedObject.apiVersion",
        &[
            &["involvedObject", "apiVersion"],
            &["regarding", "apiVersion"],
        ],
        "",
    ),
    field(
        "involvedObject.resourceVersion",
        &[
            &["involvedObject", "resourceVersion"],
            &["regarding", "resourceVersion"],
        ],
        "",
    ),
    field(
        "involvedObject.fieldPath",
        &[
            &["involvedObject", "fieldPath"],
            &["regarding", "fieldPath"],
        ],
        "",
    ),
    field("reason", &[&["reason"]], ""),
    field(
        "reportingComponent",
        &[&["reportingComponent"], &["reportingController"]],
        "",
    ),
    field(
        "source",
        &[&["source", "component"], &["deprecatedSource", "component"]],
        "",
    ),
    field("type", &[&["type"]], ""),
];

/// The fields of `events.k8s.io/v1` Events, under their names in that version, read from the
/// `core/v1` Events they are stored as (kube-apiserver's field label conversion for the group).
const EVENT_V1_FIELDS: &[SelectableField] = &[
    field("regarding.kind", &[&["involvedObject", "kind"]], ""),
    field(
        "regarding.namespace",
        &[&["involvedObject", "namespace"]],
        "",
    ),
    field("regarding.name", &[&["involvedObject", "name"]], ""),
    field("regarding.uid", &[&["involvedObject", "uid"]], ""),
    field(
        "regarding.apiVersion",
        &[&["involvedObject", "apiVersion"]],
        "",
    ),
    field(
        "regarding.resourceVersion",
        &[&["involvedObject", "resourceVersion"]],
        "",
    ),
    field(
        "regarding.fieldPath",
        &[&["involvedObject", "fieldPath"]],
        "",
    ),
    field("reason", &[&["reason"]], ""),
    field("reportingController", &[&["reportingComponent"]], ""),
    field("type", &[&["type"]], ""),
];

/// The key of [`EVENT_V1_FIELDS`] in [`kind_fields`].
const EVENT_V1_KIND: &str = "events.k8s.io/Event";

const SECRET_FIELDS: &[SelectableField] = &[field("type", &[&["type"]], "")];

const NODE_FIELDS: &[SelectableField] = &[field(
    "spec.unschedulable",
    &[&["spec", "unschedulable"]],
    "false",
)];

const NAMESPACE_FIELDS: &[SelectableField] = &[field("status.phase", &[&["status", "phase"]], "")];

const REPLICA_SET_FIELDS: &[SelectableField] =
    &[field("status.replicas", &[&["status", "replicas"]], "0")];

const JOB_FIELDS: &[SelectableField] =
    &[field("status.successful", &[&["status", "succeeded"]], "0")];

/// The fields selectable on `kind` beyond `metadata.name` and `metadata.namespace`, from
/// the field label conversion functions Kubernetes registers per kind.
fn kind_fields(kind: &str) -> &'static [SelectableField] {
    match kind {
        "Pod" => POD_FIELDS,
        "Event" => EVENT_FIELDS,
        EVENT_V1_KIND => EVENT_V1_FIELDS,
        "Secret" => SECRET_FIELDS,
        "Node" => NODE_FIELDS,
        "Namespace" => NAMESPACE_FIELDS,
        "ReplicaSet" | "ReplicationController" => REPLICA_SET_FIELDS,
        "Job" => JOB_FIELDS,
        _ => &[],
    }
}

fn selectable_field(kind: &str, name: &str) -> Option<&'static SelectableField> {
    OBJECT_META_FIELDS
        .iter()
        .chain(kind_fields(kind))
        .find(|f| f.name == name)
}

impl SelectableField {
    /// The field's value in `obj` as Kubernetes formats it for comparison.
    fn value(&self, obj: &Value) -> String {
        for path in self.paths {
            let found = path.iter().try_fold(obj, |v, segment| v.get(segment));
            match found {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => return s.clone(),
                Some(other) => return other.to_string(),
            }
        }
        self.default.to_owned()
    }
}

impl FieldSelector {
    /// Parses a field selector for objects of `kind`: comma-separated (AND) terms `f=v`, `f==v`
    /// or `f!=v`, where `\,`, `\=` and `\\` escape those characters in values. Empty terms are
    /// skipped, so `""` is the empty selector. A field the kind does not make selectable is
    /// rejected with Kubernetes' `field label not supported: <field>`.
    pub fn parse(kind: &str, s: &str) -> Result<FieldSelector, SelectorError> {
        let syntax = |reason: String| SelectorError::FieldSyntax {
            selector: s.to_owned(),
            reason,
        };
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            if term.is_empty() {
                continue;
            }
            let Some((name, negated, raw)) = split_term(term) else {
                return Err(syntax(format!("can't understand '{term}'")));
            };
            let value = unescape(raw).map_err(syntax)?;
            let name = name.trim();
            let Some(field) = selectable_field(kind, name) else {
                return Err(SelectorError::FieldNotSupported {
                    field: name.to_owned(),
                });
            };
            requirements.push(FieldRequirement {
                field,
                negated,
                value,
            });
        }
        requirements.sort_by_cached_key(FieldRequirement::to_string);
        Ok(FieldSelector { requirements })
    }

    /// [`FieldSelector::parse`] for the objects of `res`: `events.k8s.io/v1` Events select on
    /// that version's field names (`regarding.name`, `reportingController`).
    pub fn parse_for(res: &ResourceInfo, s: &str) -> Result<FieldSelector, SelectorError> {
        if super::events_v1::is_view(res) {
            Self::parse(EVENT_V1_KIND, s)
        } else {
            Self::parse(res.kind, s)
        }
    }

    /// Whether every term holds for `obj`. A missing field compares as its Go zero value: `""`
    /// for strings (so `spec.nodeName=` matches unscheduled pods), `"false"` for booleans,
    /// `"0"` for counts; booleans and numbers compare in their JSON spelling.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements
            .iter()
            .all(|r| (r.field.value(obj) == r.value) != r.negated)
    }

    /// The JSON paths the terms read (each field's alternatives), for a [`Projection`].
    ///
    /// [`Projection`]: super::projection::Projection
    pub fn paths(&self) -> impl Iterator<Item = &'static [&'static str]> + '_ {
        self.requirements
            .iter()
            .flat_map(|r| r.field.paths.iter().copied())
    }

    /// The value an equality term requires of `field`, if there is one, e.g. `Some("n1")` for
    /// `spec.nodeName=n1`: lets a caller answer from an index instead of scanning.
    pub fn exact_value(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| !r.negated && r.field.name == field)
            .map(|r| r.value.as_str())
    }

    /// Whether the selector has no terms and so matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl fmt::Display for FieldRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = if self.negated { "!=" } else { "=" };
        write!(f, "{}{op}", self.field.name)?;
        for c in self.value.chars() {
            if matches!(c, '\\' | ',' | '=') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical form: terms sorted, joined by `,`, equality written `=`, `\`, `,` and `=`
    /// in values escaped. It parses back to an equal selector.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Splits on commas not escaped by a backslash.
fn split_terms(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(s.get(start..i).unwrap_or_default());
            start = i + 1;
        }
    }
    terms.push(s.get(start..).unwrap_or_default());
    terms
}

/// Splits a term at its first operator (`!=`, `==` or `=`): `(field, negated, raw value)`.
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = term.get(i..)?;
        let lhs = term.get(..i)?;
        for (op, negated) in [("!=", true), ("==", false), ("=", false)] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((lhs, negated, value));
            }
        }
    }
    None
}

/// Undoes `\\`, `\,` and `\=`; any other escape, and an unescaped `,` or `=`, is an error.
fn unescape(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence '\\{e}'")),
                None => return Err("invalid escape sequence '\\' at end of value".to_owned()),
            },
            ',' | '=' => return Err(format!("unescaped '{c}' in value {raw:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_selectors_parse_to_canonical_form() {
        let long_value = "v".repeat(63);
        let cases = [
            ("", ""),
            ("   ", ""),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            (" a = b ", "a=b"),
            ("a!=b", "a!=b"),
            ("a=", "a="),
            ("a in (y, x)", "a in (x,y)"),
            ("a in (x,x)", "a in (x)"),
            ("a notin (x)", "a notin (x)"),
            ("a in ()", "a in ()"),
            ("a", "a"),
            ("!a", "!a"),
            ("! a", "!a"),
            ("b=1,a=2", "a=2,b=1"),
            ("x>5", "x>5"),
            ("app.kubernetes.io/name=web", "app.kubernetes.io/name=web"),
            ("in=notin", "in=notin"),
            ("tier in (a),!canary,env", "!canary,env,tier in (a)"),
        ];
        for (input, want) in cases {
            let sel = LabelSelector::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.to_string(), want, "{input}");
            assert_eq!(
                LabelSelector::parse(want).as_ref(),
                Ok(&sel),
                "round trip of {input}"
            );
        }
        let ok = LabelSelector::parse(&format!("a={long_value}"));
        assert!(ok.is_ok());
    }

    #[test]
    fn bad_label_selectors_are_rejected_with_the_reason() {
        let too_long = format!("a={}", "v".repeat(64));
        let cases: Vec<(&str, &str)> = vec![
            ("a=b,", "expected: identifier after ','"),
            (",a", "expected: identifier"),
            ("a in x", "expected: '('"),
            ("a in (x", "expected: ',', ')' or identifier"),
            ("a in (x y)", "expected: ',', ')' or identifier"),
            ("a b", "expected: '=', '!=', '==', 'in', 'notin'"),
            ("!a=b", "expected: ',' or end of string"),
            ("a=b c", "expected: ',' or end of string"),
            ("a=b=c", "expected: ',' or end of string"),
            ("a=(", "expected: identifier"),
            ("-a=b", "invalid label key \"-a\": name part must consist"),
            ("a/b/c=d", "at most one '/'"),
            (
                "Example.com/a=b",
                "prefix part must be a lowercase RFC 1123 subdomain",
            ),
            ("/a=b", "prefix part must be non-empty"),
            ("a/=b", "name part must be non-empty"),
            (&too_long, "must be no more than 63 characters"),
            ("a=b!c", "expected: ',' or end of string"),
            ("a=-b", "invalid label value \"-b\""),
            ("a>x", "the value must be an integer"),
            ("a in (x,-y)", "invalid label value \"-y\""),
        ];
        for (input, want) in cases {
            let err = LabelSelector::parse(input).expect_err(input);
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
    }

    #[test]
    fn label_selectors_match_labels() {
        /// Selector, labels, whether it matches.
        type LabelCase = (&'static str, &'static [(&'static str, &'static str)], bool);
        let cases: &[LabelCase] = &[
            ("", &[], true),
            ("", &[("a", "b")], true),
            ("a=b", &[("a", "b")], true),
            ("a=b", &[("a", "c")], false),
            ("a=b", &[], false),
            ("a=", &[("a", "")], true),
            ("a!=b", &[], true),
            ("a!=b", &[("a", "c")], true),
            ("a!=b", &[("a", "b")], false),
            ("a in (x,y)", &[("a", "y")], true),
            ("a in (x,y)", &[("a", "z")], false),
            ("a in (x,y)", &[], false),
            ("a notin (x)", &[], true),
            ("a notin (x)", &[("a", "x")], false),
            ("a", &[("a", "")], true),
            ("a", &[("b", "")], false),
            ("!a", &[], true),
            ("!a", &[("a", "x")], false),
            ("a>5", &[("a", "6")], true),
            ("a>5", &[("a", "5")], false),
            ("a<5", &[("a", "4")], true),
            ("a>5", &[("a", "x")], false),
            ("a=b,c", &[("a", "b"), ("c", "d")], true),
            ("a=b,c", &[("a", "b")], false),
        ];
        for (selector, pairs, want) in cases {
            let sel = LabelSelector::parse(selector).unwrap();
            let labels = labels(pairs);
            assert_eq!(sel.matches(&labels), *want, "{selector} on {labels:?}");
            let obj = json!({"metadata": {"labels": labels}});
            assert_eq!(sel.matches_object(&obj), *want, "{selector} on object");
        }
    }

    #[test]
    fn objects_without_labels_have_no_labels() {
        let obj = json!({"metadata": {"name": "x"}});
        assert!(LabelSelector::parse("!a").unwrap().matches_object(&obj));
        assert!(!LabelSelector::parse("a").unwrap().matches_object(&obj));
        assert!(LabelSelector::parse("").unwrap().matches_object(&json!({})));
    }

    fn expr(
        key: &str,
        operator: &str,
        values: Option<&[&str]>,
    ) -> metav1::LabelSelectorRequirement {
        metav1::LabelSelectorRequirement {
            key: key.to_owned(),
            operator: operator.to_owned(),
            values: values.map(|v| v.iter().map(|s| (*s).to_owned()).collect()),
        }
    }

    #[test]
    fn kubernetes_label_selectors_convert() {
        let sel = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                expr("tier", "In", Some(&["fe", "be"])),
                expr("canary", "DoesNotExist", None),
                expr("env", "NotIn", Some(&["dev"])),
                expr("zone", "Exists", Some(&[])),
            ]),
        };
        let sel = LabelSelector::from_k8s(&sel).unwrap();
        assert_eq!(
            sel.to_string(),
            "app=web,!canary,env notin (dev),tier in (be,fe),zone"
        );
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "fe"), ("zone", "z")])));
        assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!sel.matches(&labels(&[
            ("app", "web"),
            ("tier", "fe"),
            ("zone", "z"),
            ("canary", "1")
        ])));

        let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&labels(&[("any", "thing")])));

        let bad: &[(metav1::LabelSelectorRequirement, &str)] = &[
            (
                expr("a", "Equals", Some(&["x"])),
                "\"Equals\" is not a valid label selector operator",
            ),
            (expr("a", "In", None), "values set can't be empty"),
            (expr("a", "NotIn", Some(&[])), "values set can't be empty"),
            (
                expr("a", "Exists", Some(&["x"])),
                "values set must be empty",
            ),
            (expr("a b", "Exists", None), "invalid label key"),
            (
                expr("a", "In", Some(&["ok", "not ok"])),
                "invalid label value",
            ),
        ];
        for (requirement, want) in bad {
            let sel = metav1::LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![requirement.clone()]),
            };
            let err = LabelSelector::from_k8s(&sel).expect_err(want);
            assert!(err.to_string().contains(want), "{err}");
        }
        let bad_label = metav1::LabelSelector {
            match_labels: Some(labels(&[("a", "-x")])),
            match_expressions: None,
        };
        assert!(LabelSelector::from_k8s(&bad_label).is_err());
    }

    #[test]
    fn match_label_maps_convert() {
        let sel = LabelSelector::from_match_labels(&labels(&[("b", "2"), ("a", "1")])).unwrap();
        assert_eq!(sel.to_string(), "a=1,b=2");
        assert!(
            LabelSelector::from_match_labels(&BTreeMap::new())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn field_selectors_parse_or_name_the_problem() {
        let ok = [
            ("Pod", "", ""),
            ("Pod", "spec.nodeName=n1", "spec.nodeName=n1"),
            ("Pod", "spec.nodeName==n1", "spec.nodeName=n1"),
            (
                "Pod",
                "status.phase!=Running,metadata.name=x",
                "metadata.name=x,status.phase!=Running",
            ),
            ("Pod", "spec.nodeName=", "spec.nodeName="),
            (
                "Pod",
                "metadata.name=a\\,b\\=c\\\\",
                "metadata.name=a\\,b\\=c\\\\",
            ),
            ("Pod", "metadata.name=x,,", "metadata.name=x"),
            (
                "ConfigMap",
                "metadata.namespace=default",
                "metadata.namespace=default",
            ),
            (
                "Event",
                "involvedObject.name=web,type=Warning",
                "involvedObject.name=web,type=Warning",
            ),
            ("Secret", "type=kubernetes.io/tls", "type=kubernetes.io/tls"),
            (
                "Node",
                "spec.unschedulable=false",
                "spec.unschedulable=false",
            ),
            ("Namespace", "status.phase=Active", "status.phase=Active"),
            ("ReplicaSet", "status.replicas=0", "status.replicas=0"),
            ("Job", "status.successful=1", "status.successful=1"),
        ];
        for (kind, input, want) in ok {
            let sel = FieldSelector::parse(kind, input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(sel.to_string(), want, "{input}");
            assert_eq!(
                FieldSelector::parse(kind, want).as_ref(),
                Ok(&sel),
                "round trip of {input}"
            );
        }

        let bad = [
            ("Pod", "spec.foo=x", "field label not supported: spec.foo"),
            (
                "ConfigMap",
                "spec.nodeName=x",
                "field label not supported: spec.nodeName",
            ),
            (
                "Secret",
                "status.phase=x",
                "field label not supported: status.phase",
            ),
            ("Pod", "nodeName", "can't understand 'nodeName'"),
            ("Pod", "metadata.name=a=b", "unescaped '='"),
            ("Pod", "metadata.name=a\\x", "invalid escape sequence '\\x'"),
            ("Pod", "metadata.name=a\\", "invalid escape sequence"),
        ];
        for (kind, input, want) in bad {
            let err = FieldSelector::parse(kind, input).expect_err(input);
            assert!(err.to_string().contains(want), "{input}: {err}");
        }
        let err = FieldSelector::parse("Pod", "spec.foo=x").unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
    }

    #[test]
    fn field_selectors_match_objects() {
        let unscheduled = json!({
            "metadata": {"name": "a", "namespace": "default"},
            "spec": {"containers": []},
            "status": {"phase": "Pending"}
        });
        let running = json!({
            "metadata": {"name": "b", "namespace": "kube-system"},
            "spec": {"nodeName": "n1", "hostNetwork": true, "restartPolicy": "Always"},
            "status": {"phase": "Running", "podIP": "10.0.0.2"}
        });
        let cases = [
            ("spec.nodeName=", true, false),
            ("spec.nodeName=n1", false, true),
            ("spec.nodeName!=n1", true, false),
            ("spec.hostNetwork=false", true, false),
            ("spec.hostNetwork=true", false, true),
            ("status.phase=Running", false, true),
            ("status.phase!=Running,status.phase!=Succeeded", true, false),
            ("metadata.namespace=default", true, false),
            ("metadata.name=b,spec.restartPolicy=Always", false, true),
            ("status.podIP=10.0.0.2", false, true),
            ("", true, true),
        ];
        for (input, want_unscheduled, want_running) in cases {
            let sel = FieldSelector::parse("Pod", input).unwrap();
            assert_eq!(
                sel.matches(&unscheduled),
                want_unscheduled,
                "{input} on unscheduled"
            );
            assert_eq!(sel.matches(&running), want_running, "{input} on running");
        }
    }

    #[test]
    fn field_selectors_read_kind_specific_fields() {
        let cases = [
            (
                "Event",
                "involvedObject.kind=Pod,involvedObject.name=web,source=kubelet,reason=Pulled",
                json!({
                    "involvedObject": {"kind": "Pod", "name": "web"},
                    "source": {"component": "kubelet"},
                    "reason": "Pulled"
                }),
                true,
            ),
            (
                "Event",
                "involvedObject.name=web,reportingComponent=sched",
                json!({"regarding": {"name": "web"}, "reportingController": "sched"}),
                true,
            ),
            ("Event", "involvedObject.uid=", json!({}), true),
            ("Secret", "type=Opaque", json!({"type": "Opaque"}), true),
            (
                "Node",
                "spec.unschedulable=false",
                json!({"spec": {}}),
                true,
            ),
            (
                "Node",
                "spec.unschedulable=true",
                json!({"spec": {"unschedulable": true}}),
                true,
            ),
            (
                "Namespace",
                "status.phase=Terminating",
                json!({"status": {"phase": "Active"}}),
                false,
            ),
            (
                "ReplicaSet",
                "status.replicas=0",
                json!({"status": {}}),
                true,
            ),
            (
                "ReplicaSet",
                "status.replicas=3",
                json!({"status": {"replicas": 3}}),
                true,
            ),
            (
                "Job",
                "status.successful=1",
                json!({"status": {"succeeded": 1}}),
                true,
            ),
        ];
        for (kind, input, obj, want) in cases {
            let sel = FieldSelector::parse(kind, input).unwrap();
            assert_eq!(sel.matches(&obj), want, "{kind} {input}");
        }
    }

    #[test]
    fn exact_values_come_from_equality_terms_only() {
        let sel = FieldSelector::parse("Pod", "status.phase!=Failed,spec.nodeName=n1").unwrap();
        assert_eq!(sel.exact_value("spec.nodeName"), Some("n1"));
        assert_eq!(sel.exact_value("status.phase"), None);
        assert_eq!(sel.exact_value("metadata.name"), None);
        let unscheduled = FieldSelector::parse("Pod", "spec.nodeName=").unwrap();
        assert_eq!(unscheduled.exact_value("spec.nodeName"), Some(""));
        assert!(FieldSelector::parse("Pod", "").unwrap().is_empty());
    }
}
