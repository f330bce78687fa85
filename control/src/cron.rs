//! A CronJob's schedule: the five-field cron syntax Kubernetes accepts (minute, hour, day of
//! month, month, day of week, with ranges, steps, lists, names, and the `@yearly`, `@monthly`,
//! `@weekly`, `@daily` and `@hourly` macros; a day of month and a day of week both restricted
//! match either, as in Vixie cron; and `@every <duration>`, a fixed interval from the last
//! start time, as the cron library Kubernetes uses reads it), evaluated in the CronJob's
//! `timeZone` (UTC when unset, the control plane's own zone), and the start times a CronJob
//! has missed.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// More missed start times than this is reported as too many (kube-controller-manager's
/// threshold for its `TooManyMissedTimes` warning).
pub const MANY_MISSED: i64 = 100;

/// A parsed schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    times: Times,
    tz: TimeZone,
}

/// When a schedule fires.
#[derive(Debug, Clone)]
enum Times {
    /// At the times a cron expression matches.
    Cron(Box<Cron>),
    /// `@every <duration>`: this long after the previous time, counted in whole seconds
    /// (robfig/cron's `ConstantDelaySchedule`).
    Every(jiff::SignedDuration),
}

/// The duration of `@every <duration>`, in Go's syntax (`90s`, `1h30m`, `1.5h`), at least one
/// second and truncated to whole seconds, as robfig/cron's `Every`.
fn every(spec: &str) -> Result<jiff::SignedDuration, String> {
    let bad = || format!("failed to parse duration @every {spec}");
    let mut total = 0f64;
    let mut rest = spec.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > i64::MAX as f64 / 2.0 {
        return Err(bad());
    }
    Ok(jiff::SignedDuration::from_secs((total as i64).max(1)))
}

/// The start times between the last one and now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The latest start time not after now, if any came since the earliest time considered.
    pub most_recent: Option<Timestamp>,
    /// About how many start times came (kube-controller-manager's estimate from the interval).
    pub count: i64,
}

impl Schedule {
    /// Parses `schedule` for `time_zone` (an IANA name, e.g. `Europe/Paris`).
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, String> {
        let trimmed = schedule.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
        }
        let times = match trimmed.strip_prefix("@every ") {
            Some(spec) => Times::Every(every(spec)?),
            None => Times::Cron(Box::new(
                CronParser::builder()
                    .seconds(Seconds::Disallowed)
                    .year(Year::Disallowed)
                    .build()
                    .parse(trimmed)
                    .map_err(|e| e.to_string())?,
            )),
        };
        let tz = match time_zone {
            None => TimeZone::UTC,
            Some(name) => TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))?,
        };
        Ok(Schedule { times, tz })
    }

    /// The first start time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.times {
            Times::Cron(cron) => {
                let zoned = t.to_zoned(self.tz.clone());
                cron.find_next_occurrence(&zoned, false)
                    .ok()
                    .map(|z| z.timestamp())
            }
            Times::Every(d) => Timestamp::from_second(t.as_second())
                .ok()?
                .checked_add(*d)
                .ok(),
        }
    }

    /// `t` as an RFC 3339 time in the schedule's time zone (the Job's
    /// `batch.kubernetes.io/cronjob-scheduled-timestamp`).
    pub fn local_rfc3339(&self, t: Timestamp) -> String {
        let zoned = t.to_zoned(self.tz.clone());
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }

    /// The start times after `earliest` and not after `now` (kube-controller-manager's
    /// `mostRecentScheduleTime`: the count is estimated from the interval between the first
    /// two, so that a schedule missed for years costs no more than one missed for minutes).
    pub fn missed(&self, earliest: Timestamp, now: Timestamp) -> Result<Missed, String> {
        let none = Missed {
            most_recent: None,
            count: 0,
        };
        let Some(t1) = self.next_after(earliest) else {
            return Ok(none);
        };
        if now < t1 {
            return Ok(none);
        }
        let Some(t2) = self.next_after(t1) else {
            return Ok(Missed {
                most_recent: Some(t1),
                count: 1,
            });
        };
        if now < t2 {
            return Ok(Missed {
                most_recent: Some(t1),
                count: 1,
            });
        }
        let between = (t2 - t1).get_seconds();
        if between < 1 {
            return Err("time difference between two schedules is less than 1 second".into());
        }
        let count = (now - t1).get_seconds() / between + 1;
        // Start a little before the estimated last interval and walk to now: exact for
        // irregular schedules (`30 6-16/4 * * 1-5`) too.
        let back = jiff::SignedDuration::from_secs((count - 2).max(0) * between);
        let mut t = t1.checked_add(back).map_err(|e| e.to_string())?.min(now);
        let mut most_recent = None;
        if t == t1 {
            most_recent = Some(t1);
        }
        while let Some(next) = self.next_after(t) {
            if next > now {
                break;
            }
            most_recent = Some(next);
            t = next;
        }
        Ok(Missed { most_recent, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn standard_syntax_macros_and_time_zones() {
        let every_5 = Schedule::parse("*/5 * * * *", None).unwrap();
        assert_eq!(
            every_5.next_after(at("2026-12-07T06:31:10Z")),
            Some(at("2026-12-07T06:35:00Z"))
        );
        let hourly = Schedule::parse("@hourly", None).unwrap();
        assert_eq!(
            hourly.next_after(at("2026-12-07T06:31:10Z")),
            Some(at("2026-12-07T07:00:00Z"))
        );
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Schedule::parse("0 9 * * MON-FRI", Some("Europe/Paris")).unwrap();
        assert_eq!(
            paris.next_after(at("2026-12-07T06:31:10Z")),
            Some(at("2026-12-07T08:00:00Z"))
        );
        assert_eq!(
            paris.local_rfc3339(at("2026-12-07T08:00:00Z")),
            "2026-12-07T09:00:00+01:00"
        );
        // Day of month and day of week both restricted: either matches (the 1st, or a Sunday).
        let either = Schedule::parse("0 0 1 * SUN", None).unwrap();
        assert_eq!(
            either.next_after(at("2026-12-07T06:00:00Z")),
            Some(at("2026-12-13T00:00:00Z"))
        );
        for bad in [
            "",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "TZ=UTC * * * * *",
            "@every",
            "@every 5",
            "@every 5 minutes",
            "@every -5m",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad:?}");
        }
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus_Mons")).is_err());
    }

    #[test]
    fn every_is_a_fixed_interval_in_whole_seconds() {
        let s = Schedule::parse("@every 1h30m", Some("Europe/Paris")).unwrap();
        assert_eq!(
            s.next_after(at("2026-12-07T06:31:10.5Z")),
            Some(at("2026-12-07T08:01:10Z"))
        );
        let half = Schedule::parse("@every 1.5s", None).unwrap();
        assert_eq!(
            half.next_after(at("2026-12-07T06:31:10Z")),
            Some(at("2026-12-07T06:31:11Z"))
        );
        let tiny = Schedule::parse("@every 10ms", None).unwrap();
        assert_eq!(
            tiny.next_after(at("2026-12-07T06:31:10Z")),
            Some(at("2026-12-07T06:31:11Z"))
        );
        // Missed times count from the last one, every interval.
        let m = Schedule::parse("@every 90s", None).unwrap();
        assert_eq!(
            m.missed(at("2026-12-07T06:00:00Z"), at("2026-12-07T06:10:00Z")),
            Ok(Missed {
                most_recent: Some(at("2026-12-07T06:09:00Z")),
                count: 6
            })
        );
    }

    #[test]
    fn the_most_recent_missed_time_and_the_count() {
        let minutely = Schedule::parse("* * * * *", None).unwrap();
        let m = minutely
            .missed(at("2026-12-07T06:00:00Z"), at("2026-12-07T06:00:59Z"))
            .unwrap();
        assert_eq!(m.most_recent, None);
        let m = minutely
            .missed(at("2026-12-07T06:00:00Z"), at("2026-12-07T06:01:00Z"))
            .unwrap();
        assert_eq!(
            (m.most_recent, m.count),
            (Some(at("2026-12-07T06:01:00Z")), 1)
        );
        let m = minutely
            .missed(at("2026-12-07T06:00:00Z"), at("2026-12-07T06:10:30Z"))
            .unwrap();
        assert_eq!(
            (m.most_recent, m.count),
            (Some(at("2026-12-07T06:10:00Z")), 10)
        );
        // Years behind: the latest time, found without walking every minute.
        let m = minutely
            .missed(at("2020-01-01T00:00:00Z"), at("2026-12-07T06:10:30Z"))
            .unwrap();
        assert_eq!(m.most_recent, Some(at("2026-12-07T06:10:00Z")));
        assert!(m.count > MANY_MISSED);
        // An irregular schedule: every 4 hours from 06:30 to 14:30 on weekdays.
        let irregular = Schedule::parse("30 6-16/4 * * 1-5", None).unwrap();
        let m = irregular
            .missed(at("2026-12-04T00:00:00Z"), at("2026-12-07T12:00:00Z"))
            .unwrap();
        assert_eq!(m.most_recent, Some(at("2026-12-07T10:30:00Z")));
    }
}
