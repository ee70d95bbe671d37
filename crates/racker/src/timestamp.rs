//! Times as docker's command lines take them.

use chrono::{DateTime, Utc};

/// A point in time as docker's `--since`, `--until` and `until=` filters take it: RFC 3339,
/// a date and time without zone (UTC), a date, Unix seconds (with a fraction), or a Go
/// duration (`10m`, `1h30m`) counted back from `now`. None for anything else, and for
/// times out of range.
pub fn parse(text: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S") {
        return Some(t.and_utc());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    if let Ok(secs) = text.parse::<f64>() {
        return DateTime::from_timestamp(secs.trunc() as i64, (secs.fract() * 1e9) as u32);
    }
    duration(text).and_then(|d| chrono::Duration::from_std(d).ok()).and_then(|d| now.checked_sub_signed(d))
}

/// A Go duration: `1h30m`, `10m`, `45s`, `1.5h`.
fn duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).filter(|&n| n > 0)?;
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_dates_unix_seconds_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T12:00:00Z").unwrap().with_timezone(&Utc);
        let at = |s: &str| parse(s, now).map(|t| t.to_rfc3339());
        assert_eq!(at("1h30m").as_deref(), Some("2026-01-02T10:30:00+00:00"));
        assert_eq!(at("2026-01-01").as_deref(), Some("2026-01-01T00:00:00+00:00"));
        assert_eq!(at("2026-01-01T05:00:00Z").as_deref(), Some("2026-01-01T05:00:00+00:00"));
        assert_eq!(at("0").as_deref(), Some("1970-01-01T00:00:00+00:00"));
        assert_eq!(at("soon"), None);
        assert_eq!(at("99999999999999999999h"), None, "an overflowing duration is no time, not a panic");
        assert_eq!(at("10000000000h"), None);
        assert_eq!(at("2026-01-02T03:00:00+01:00").as_deref(), Some("2026-01-02T02:00:00+00:00"));
        assert_eq!(at("1.5").as_deref(), Some("1970-01-01T00:00:01.500+00:00"));
    }
}
