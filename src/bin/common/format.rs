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
    let text = match secs {
        s if s < 1 => "Less than a second".to_owned(),
        s if s < 60 => format!("{s} seconds"),
        s if s < 120 => "About a minute".to_owned(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if s < 7200 => "About an hour".to_owned(),
        s if s < 48 * 3600 => format!("{} hours", s / 3600),
        s if s < 14 * 86400 => format!("{} days", s / 86400),
        s if s < 60 * 86400 => format!("{} weeks", s / (7 * 86400)),
        s if s < 730 * 86400 => format!("{} months", s / (30 * 86400)),
        s => format!("{} years", s / (365 * 86400)),
    };
    format!("{text} ago")
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
}
