//! The CRI log line format, and turning stored lines into what `kubectl logs` prints.

use chrono::{DateTime, SecondsFormat, Utc};

/// The query of a log request (`kubectl logs` flags).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the container ends (`-f`).
    pub follow: bool,
    /// The previous run instead of the current one (`--previous`).
    pub previous: bool,
    /// Only the last N lines (`--tail N`).
    pub tail_lines: Option<usize>,
    /// Prefix each line with its timestamp (`--timestamps`).
    pub timestamps: bool,
    /// Only lines newer than this many seconds (`--since`).
    pub since_seconds: Option<i64>,
    /// Only lines from this time on (`--since-time`, RFC 3339).
    pub since_time: Option<DateTime<Utc>>,
    /// Stop after this many bytes (`--limit-bytes`).
    pub limit_bytes: Option<usize>,
}

impl LogOptions {
    /// Parses the query string the API server passes on (percent-encoded); unknown keys are
    /// ignored.
    pub fn from_query(query: &str) -> Result<LogOptions, String> {
        let mut o = LogOptions::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let (k, v) = (k.as_ref(), v.as_ref());
            let flag = || v.is_empty() || v == "true" || v == "1";
            let num = |what: &str| {
                v.parse::<i64>()
                    .map_err(|_| format!("{what}: invalid value {v:?}"))
            };
            match k {
                "follow" => o.follow = flag(),
                "previous" => o.previous = flag(),
                "timestamps" => o.timestamps = flag(),
                "tailLines" => o.tail_lines = Some(num("tailLines")?.max(0) as usize),
                "sinceSeconds" => o.since_seconds = Some(num("sinceSeconds")?),
                "limitBytes" => o.limit_bytes = Some(num("limitBytes")?.max(0) as usize),
                "sinceTime" => {
                    let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
                        format!("sinceTime: invalid value {v:?}: not an RFC 3339 time")
                    })?;
                    o.since_time = Some(t.with_timezone(&Utc));
                }
                _ => {}
            }
        }
        if o.since_seconds.is_some() && o.since_time.is_some() {
            return Err("at most one of `sinceTime` or `sinceSeconds` may be specified".into());
        }
        Ok(o)
    }

    /// The earliest time a line may have to be shown (`sinceTime`, or `sinceSeconds` before
    /// `now`), if either is given.
    pub fn cutoff(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.since_time
            .or_else(|| Some(now - chrono::Duration::seconds(self.since_seconds?)))
    }
}

/// Formats one stored line: `full` says whether the text ended with a newline.
pub fn format_line(at: DateTime<Utc>, stream: &str, full: bool, text: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(text.len() + 48);
    line.extend_from_slice(at.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
    line.push(b' ');
    line.extend_from_slice(stream.as_bytes());
    line.extend_from_slice(if full { b" F " } else { b" P " });
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

/// One parsed stored line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line<'a> {
    /// The timestamp as stored.
    pub timestamp: &'a str,
    /// Whether the original text ended with a newline.
    pub full: bool,
    /// The text, without its newline.
    pub text: &'a [u8],
}

/// Parses a stored line (without its trailing newline).
pub fn parse_line(line: &[u8]) -> Option<Line<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let timestamp = std::str::from_utf8(parts.next()?).ok()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or(b"");
    Some(Line {
        timestamp,
        full: tag == b"F",
        text,
    })
}

/// Renders stored log bytes as `kubectl logs` output, honouring `tailLines`, `sinceSeconds`,
/// `sinceTime` and `timestamps`. Lines are whole stored lines; a trailing incomplete line is left for later.
/// Returns the output and how many input bytes were consumed.
pub fn render(stored: &[u8], options: &LogOptions, now: DateTime<Utc>) -> (Vec<u8>, usize) {
    let consumed = stored
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    let mut lines: Vec<Line<'_>> = stored[..consumed]
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(parse_line)
        .collect();
    if let Some(cutoff) = options.cutoff(now) {
        lines.retain(|l| {
            DateTime::parse_from_rfc3339(l.timestamp)
                .map_or(true, |t| t.with_timezone(&Utc) >= cutoff)
        });
    }
    if let Some(n) = options.tail_lines {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    let mut out = Vec::new();
    for l in lines {
        if options.timestamps {
            out.extend_from_slice(l.timestamp.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(l.text);
        if l.full {
            out.push(b'\n');
        }
    }
    (out, consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn lines_round_trip_and_render_with_tail_since_and_timestamps() {
        let mut stored = Vec::new();
        stored.extend(format_line(
            at("2025-01-01T00:00:00Z"),
            "stdout",
            true,
            b"one",
        ));
        stored.extend(format_line(
            at("2025-01-01T00:00:10Z"),
            "stderr",
            true,
            b"two",
        ));
        stored.extend(format_line(
            at("2025-01-01T00:00:20Z"),
            "stdout",
            false,
            b"thr",
        ));
        stored.extend(format_line(
            at("2025-01-01T00:00:20Z"),
            "stdout",
            true,
            b"ee",
        ));
        stored.extend_from_slice(b"2025-01-01T00:00:30Z stdout F incompl");
        let now = at("2025-01-01T00:00:25Z");
        let all = LogOptions::default();
        let (out, consumed) = render(&stored, &all, now);
        assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\n");
        assert_eq!(
            &stored[consumed..],
            b"2025-01-01T00:00:30Z stdout F incompl"
        );
        let tail = LogOptions {
            tail_lines: Some(1),
            timestamps: true,
            ..all.clone()
        };
        assert_eq!(
            String::from_utf8(render(&stored, &tail, now).0).unwrap(),
            "2025-01-01T00:00:20.000000000Z ee\n"
        );
        let since = LogOptions {
            since_seconds: Some(10),
            ..all.clone()
        };
        assert_eq!(
            String::from_utf8(render(&stored, &since, now).0).unwrap(),
            "three\n"
        );
        let since_time = LogOptions {
            since_time: Some(at("2025-01-01T00:00:10Z")),
            ..all
        };
        assert_eq!(
            String::from_utf8(render(&stored, &since_time, now).0).unwrap(),
            "two\nthree\n"
        );
    }

    #[test]
    fn the_query_parses_kubectl_flags() {
        let o = LogOptions::from_query(
            "container=c&follow=true&previous=true&tailLines=5&timestamps=true&limitBytes=9",
        )
        .unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: true,
                tail_lines: Some(5),
                timestamps: true,
                since_seconds: None,
                since_time: None,
                limit_bytes: Some(9)
            }
        );
        assert!(LogOptions::from_query("tailLines=x").is_err());
        // kubectl percent-encodes the time.
        let o = LogOptions::from_query("sinceTime=2030-01-01T00%3A00%3A00Z").unwrap();
        assert_eq!(o.since_time, Some(at("2030-01-01T00:00:00Z")));
        assert!(LogOptions::from_query("sinceTime=yesterday").is_err());
        assert!(LogOptions::from_query("sinceSeconds=5&sinceTime=2030-01-01T00:00:00Z").is_err());
    }
}
