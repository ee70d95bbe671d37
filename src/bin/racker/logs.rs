//! `racker logs`: docker's flags over the container's json log (command mode) or its
//! console and journal (boot mode).

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use racker::runtime::{self, LogOptions};
use racker::store::Store;

#[derive(clap::Args)]
pub struct LogsArgs {
    /// Follow log output until the container ends
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs, or "all"
    #[arg(short = 'n', long, default_value = "all", value_name = "N|all")]
    tail: String,
    /// Show logs since a time (RFC 3339, Unix seconds) or a duration ago (10m, 1h30m)
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Show logs before a time (RFC 3339, Unix seconds) or a duration ago (10m, 1h30m)
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Show timestamps
    #[arg(short, long)]
    timestamps: bool,
    /// Container name or id
    container: String,
}

/// A point in time as docker's `--since`/`--until` take it.
fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    racker::timestamp::parse(text, now).with_context(|| {
        format!("{text:?} is no time: use RFC 3339, a date, Unix seconds or a duration such as 10m or 1h30m")
    })
}

fn parse_tail(text: &str) -> Result<Option<usize>> {
    match text {
        "all" => Ok(None),
        n => n.parse().map(Some).with_context(|| format!("--tail {n:?}: expected a number or \"all\"")),
    }
}

pub fn logs(store: &Store, args: &LogsArgs) -> Result<()> {
    let now = Utc::now();
    let opts = LogOptions {
        follow: args.follow,
        tail: parse_tail(&args.tail)?,
        since: args.since.as_deref().map(|t| parse_time(t, now)).transpose()?,
        until: args.until.as_deref().map(|t| parse_time(t, now)).transpose()?,
        timestamps: args.timestamps,
    };
    let mut out = crate::cli::CheckedStdout::default();
    let logged = runtime::container_logs(store, &args.container, &opts, &mut out, &mut crate::cli::Stderr);
    if let Some(closed) = out.failed {
        return Err(crate::cli::StdoutError(closed).into());
    }
    Ok(logged?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_unix_seconds_or_durations_ago() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").expect("time").with_timezone(&Utc);
        let at = |t: &str| parse_time(t, now).expect(t).to_rfc3339();
        assert_eq!(at("2026-01-02T03:00:00+01:00"), "2026-01-02T02:00:00+00:00");
        assert_eq!(at("10m"), "2026-01-02T02:54:05+00:00");
        assert_eq!(at("0"), "1970-01-01T00:00:00+00:00");
        assert!(parse_time("yesterday-ish", now).is_err());
        assert_eq!(parse_tail("all").expect("all"), None);
        assert_eq!(parse_tail("3").expect("3"), Some(3));
        assert!(parse_tail("-1").is_err());
    }
}
