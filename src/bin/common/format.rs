//! Sizes and times printed the way docker prints them.

use chrono::{DateTime, Utc};
pub use racker::table::table;

/// Decimal units with three significant digits: `5.59MB`, `117MB`, `1.2kB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let digits: String = {
        // Keep three significant digits, drop trailing zeros.
        let int_len = (value.trunc() as u64).to_string().len();
        let decimals = 3usize.saturating_sub(int_len);
        let t = format!("{value:.decimals$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            t
        }
    };
    format!("{digits}{}", UNITS[unit])
}

/// "3 days ago", as docker's CREATED column.
pub fn since(created: Option<&str>) -> String {
    let Some(then) = created.and_then(|c| DateTime::parse_from_rfc3339(c).ok()) else {
        return "N/A".into();
    };
    let secs = (Utc::now() - then.with_timezone(&Utc)).num_seconds().max(0);
    format!("{} ago", human_duration(secs))
}

/// docker's `units.HumanDuration`: whole seconds and minutes, hours rounded.
fn human_duration(secs: i64) -> String {
    let minutes = secs / 60;
    let hours = (secs + 1800) / 3600;
    match secs {
        s if s < 1 => "Less than a second".to_owned(),
        1 => "1 second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".to_owned(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".to_owned(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        s => format!("{} years", s / (365 * 86400)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1200), "1.2kB");
        assert_eq!(human_size(5_590_000), "5.59MB");
        assert_eq!(human_size(117_000_000), "117MB");
    }

    #[test]
    fn durations_like_docker() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86400, "2 weeks"),
            (60 * 86400, "2 months"),
            (730 * 86400, "2 years"),
        ];
        for (secs, text) in cases {
            assert_eq!(human_duration(secs), text, "{secs} s");
        }
    }
}
