//! One scrape of an agent's `/metrics/resource`: kubelet's resource metrics in the Prometheus
//! text format 0.0.4, read into the node's and each container's cumulative CPU time and
//! working-set memory, the series metrics-server reads.
//!
//! Other series (`pod_*`, `scrape_error`, anything new) are skipped, as metrics-server skips
//! them; so are comments. A series without a timestamp is taken to be as of the scrape.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// The node's cumulative CPU time, in core-seconds.
const NODE_CPU: &str = "node_cpu_usage_seconds_total";
/// The node's working set, in bytes.
const NODE_MEMORY: &str = "node_memory_working_set_bytes";
/// A container's cumulative CPU time, in core-seconds.
const CONTAINER_CPU: &str = "container_cpu_usage_seconds_total";
/// A container's working set, in bytes.
const CONTAINER_MEMORY: &str = "container_memory_working_set_bytes";
/// When a container started, in seconds since the epoch.
const CONTAINER_START: &str = "container_start_time_seconds";

/// A line of the scrape that is not valid text format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub why: String,
}

/// The usage of a node or a container at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Cumulative CPU time, in core-seconds.
    pub cpu_seconds: f64,
    /// Working-set memory, in bytes.
    pub memory_bytes: f64,
    /// When the CPU reading was taken (the series timestamp, or the scrape's time).
    pub time: DateTime<Utc>,
    /// When the container started (seconds since the epoch); `None` for the node, or when the
    /// agent does not say.
    pub start_time: Option<f64>,
}

/// Which container a point belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerKey {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
}

/// Everything one scrape said: the node's point and every container's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// The node's usage, when the scrape had both of its series.
    pub node: Option<Point>,
    /// Each container's usage, for containers that had both CPU and memory series.
    pub containers: BTreeMap<ContainerKey, Point>,
}

/// Readings gathered before they are paired into [`Point`]s.
#[derive(Default)]
struct Partial {
    cpu: Option<(f64, DateTime<Utc>)>,
    memory: Option<f64>,
    start_time: Option<f64>,
}

impl Partial {
    fn point(self) -> Option<Point> {
        let (cpu_seconds, time) = self.cpu?;
        Some(Point {
            cpu_seconds,
            memory_bytes: self.memory?,
            time,
            start_time: self.start_time,
        })
    }
}

/// Parses the text of one scrape taken at `scraped_at`.
pub fn parse(text: &str, scraped_at: DateTime<Utc>) -> Result<Sample, ParseError> {
    let mut node = Partial::default();
    let mut containers: BTreeMap<ContainerKey, Partial> = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let series = parse_line(line).map_err(|why| ParseError { line: i + 1, why })?;
        // Negative, infinite or NaN readings are not usage; leave the series out.
        if !series.value.is_finite() || series.value < 0.0 {
            continue;
        }
        let time = match series.timestamp_ms {
            Some(ms) => DateTime::from_timestamp_millis(ms).ok_or_else(|| ParseError {
                line: i + 1,
                why: format!("timestamp {ms} out of range"),
            })?,
            None => scraped_at,
        };
        match series.name {
            NODE_CPU => node.cpu = Some((series.value, time)),
            NODE_MEMORY => node.memory = Some(series.value),
            CONTAINER_CPU | CONTAINER_MEMORY | CONTAINER_START => {
                let label = |k: &str| {
                    series
                        .labels
                        .iter()
                        .find(|(name, _)| name == k)
                        .map(|(_, v)| v.clone())
                        .filter(|v| !v.is_empty())
                };
                let (Some(namespace), Some(pod), Some(container)) =
                    (label("namespace"), label("pod"), label("container"))
                else {
                    continue;
                };
                let entry = containers
                    .entry(ContainerKey {
                        namespace,
                        pod,
                        container,
                    })
                    .or_default();
                match series.name {
                    CONTAINER_CPU => entry.cpu = Some((series.value, time)),
                    CONTAINER_MEMORY => entry.memory = Some(series.value),
                    _ => entry.start_time = Some(series.value),
                }
            }
            _ => {}
        }
    }
    Ok(Sample {
        node: node.point(),
        containers: containers
            .into_iter()
            .filter_map(|(k, p)| Some((k, p.point()?)))
            .collect(),
    })
}

/// A series' labels, in the order given.
type Labels = Vec<(String, String)>;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, PartialEq)]
struct Series<'a> {
    name: &'a str,
    labels: Labels,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn parse_line(line: &str) -> Result<Series<'_>, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_ascii_whitespace())
        .ok_or_else(|| format!("no value after the metric name in {line:?}"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = line[name_end..].trim_start();
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, tail) = parse_labels(after)?;
        labels = parsed;
        rest = tail;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("no value for {name}"))?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value {value:?} for {name}"))?;
    let timestamp_ms = match fields.next() {
        Some(t) => Some(
            t.parse::<i64>()
                .map_err(|_| format!("invalid timestamp {t:?} for {name}"))?,
        ),
        None => None,
    };
    if let Some(extra) = fields.next() {
        return Err(format!(
            "unexpected {extra:?} after the timestamp of {name}"
        ));
    }
    Ok(Series {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parses the labels after `{` up to and including `}`; returns them and the rest of the line.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s
            .find('=')
            .ok_or_else(|| "a label without a value".to_string())?;
        let key = s[..eq].trim();
        if !is_metric_name(key) || key.contains(':') {
            return Err(format!("invalid label name {key:?}"));
        }
        s = s[eq + 1..].trim_start();
        let mut chars = s
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label {key} is not quoted"))?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("unterminated value of label {key}")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        return Err(format!("invalid escape \\{c} in the value of label {key}"));
                    }
                    None => return Err(format!("unterminated value of label {key}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[1 + end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err(format!("expected , or }} after label {key}"));
        }
    }
}

/// A sample value as Go's `strconv.ParseFloat` reads it (`1.5`, `1.2345e+09`, `NaN`, `+Inf`).
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn key(ns: &str, pod: &str, c: &str) -> ContainerKey {
        ContainerKey {
            namespace: ns.into(),
            pod: pod.into(),
            container: c.into(),
        }
    }

    /// The example of kubelet's format the agent follows.
    const KUBELET: &str = r#"# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 1234.5 1764690000000
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.2345e+09 1764690000000
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="app",namespace="default",pod="web-1"} 0.012 1764690000000
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="app",namespace="default",pod="web-1"} 65536 1764690000000
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="app",namespace="default",pod="web-1"} 1764689000.5 1764690000000
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web-1"} 0.012 1764690000000
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web-1"} 65536 1764690000000
# TYPE scrape_error gauge
scrape_error 0
"#;

    #[test]
    fn kubelets_format_gives_the_node_and_its_containers() {
        let s = parse(KUBELET, at(0)).unwrap();
        assert_eq!(
            s.node,
            Some(Point {
                cpu_seconds: 1234.5,
                memory_bytes: 1.2345e9,
                time: at(1_764_690_000_000),
                start_time: None,
            })
        );
        assert_eq!(s.containers.len(), 1);
        let app = &s.containers[&key("default", "web-1", "app")];
        assert_eq!(app.cpu_seconds, 0.012);
        assert_eq!(app.memory_bytes, 65536.0);
        assert_eq!(app.start_time, Some(1_764_689_000.5));
        assert_eq!(app.time, at(1_764_690_000_000));
    }

    #[test]
    fn series_without_timestamps_are_as_of_the_scrape() {
        let text = "node_cpu_usage_seconds_total 10\nnode_memory_working_set_bytes 2048\n\
                    container_cpu_usage_seconds_total{pod=\"p\",namespace=\"n\",container=\"c\"} 1.5e-3\n\
                    container_memory_working_set_bytes{pod=\"p\",namespace=\"n\",container=\"c\",} 4096\n";
        let s = parse(text, at(42_000)).unwrap();
        assert_eq!(s.node.as_ref().unwrap().time, at(42_000));
        let c = &s.containers[&key("n", "p", "c")];
        assert_eq!((c.cpu_seconds, c.memory_bytes), (0.0015, 4096.0));
        assert_eq!((c.time, c.start_time), (at(42_000), None));
    }

    #[test]
    fn label_order_spacing_and_escapes_do_not_matter() {
        let text = "container_cpu_usage_seconds_total { namespace = \"a\\\"b\" , container=\"x\\\\y\",pod=\"p\\nq\" }  2E+0\t5000\n\
                    container_memory_working_set_bytes{container=\"x\\\\y\",pod=\"p\\nq\",namespace=\"a\\\"b\",extra=\"{,}\"} 1.0e3 5000\n";
        let s = parse(text, at(0)).unwrap();
        let c = &s.containers[&key("a\"b", "p\nq", "x\\y")];
        assert_eq!(
            (c.cpu_seconds, c.memory_bytes, c.time),
            (2.0, 1000.0, at(5000))
        );
    }

    #[test]
    fn incomplete_and_unusable_series_are_left_out() {
        let text = "node_cpu_usage_seconds_total 10\n\
                    container_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\",container=\"only-cpu\"} 1\n\
                    container_cpu_usage_seconds_total{namespace=\"n\",pod=\"p\",container=\"nan\"} NaN\n\
                    container_memory_working_set_bytes{namespace=\"n\",pod=\"p\",container=\"nan\"} 1\n\
                    container_cpu_usage_seconds_total{namespace=\"n\",container=\"no-pod\"} 1\n\
                    container_memory_working_set_bytes{namespace=\"n\",container=\"no-pod\"} 1\n\
                    some_other_metric{a=\"b\"} +Inf\n";
        let s = parse(text, at(0)).unwrap();
        assert_eq!(s.node, None);
        assert!(s.containers.is_empty(), "{:?}", s.containers);
    }

    #[test]
    fn malformed_lines_are_errors_naming_the_line() {
        for (text, line) in [
            ("# ok\nnode_cpu_usage_seconds_total\n", 2),
            ("node_cpu_usage_seconds_total abc\n", 1),
            ("node_cpu_usage_seconds_total 1 2 3\n", 1),
            ("node_cpu_usage_seconds_total 1 1.5\n", 1),
            ("x{a=b} 1\n", 1),
            ("x{a=\"b} 1\n", 1),
            ("x{a=\"b\" c=\"d\"} 1\n", 1),
            ("x{a=\"\\t\"} 1\n", 1),
            ("\n\n9x 1\n", 3),
        ] {
            let e = parse(text, at(0)).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }
}
