//! `--restart`: what a detached container's monitor does when the container ends, as
//! docker's restart policies say. The monitor starts it again on the same snapshot
//! (its writes survive), after docker's delay, unless the user stopped it (`stop`,
//! `kill`, `rm -f`): a stop is noted beside the container and ends the policy until
//! the next `start`. Nothing restarts containers after the host reboots; a unit from
//! `racker generate systemd` does that.

use std::path::PathBuf;
use std::time::Duration;

use super::runtime_dir;

/// docker's restart policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Again after a non-zero exit, at most `max_retries` times (None: without end).
    OnFailure {
        max_retries: Option<u32>,
    },
    Always,
    UnlessStopped,
}

impl RestartPolicy {
    /// The policy's name as docker's `inspect` shows it (`HostConfig.RestartPolicy.Name`).
    pub fn name(self) -> &'static str {
        match self {
            RestartPolicy::No => "no",
            RestartPolicy::OnFailure { .. } => "on-failure",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
        }
    }

    /// `HostConfig.RestartPolicy.MaximumRetryCount` (0: no limit).
    pub fn max_retries(self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => max_retries.unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether a container that ended with `code` after `restarts` restarts is started
    /// again (a stop by the user aside, which the caller checks).
    pub(super) fn restarts_after(self, code: i32, restarts: u32) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::OnFailure { max_retries } => code != 0 && max_retries.is_none_or(|max| restarts < max),
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        }
    }
}

/// `--restart`'s value: `no`, `on-failure[:N]`, `always` or `unless-stopped`.
pub fn parse_restart(flag: &str, value: &str) -> std::result::Result<RestartPolicy, String> {
    let bad = |fix: &str| format!("invalid {flag} {value:?}: {fix}");
    let (name, count) = match value.split_once(':') {
        Some((name, count)) => (name, Some(count)),
        None => (value, None),
    };
    let policy = match name {
        "no" | "" => RestartPolicy::No,
        "always" => RestartPolicy::Always,
        "unless-stopped" => RestartPolicy::UnlessStopped,
        "on-failure" => {
            let max_retries = count
                .map(|c| c.parse::<u32>().map_err(|_| bad("the retry count is a whole number, as in on-failure:3")))
                .transpose()?
                .filter(|max| *max > 0); // docker's 0: no limit
            return Ok(RestartPolicy::OnFailure { max_retries });
        }
        _ => return Err(bad("use no, on-failure[:N], always or unless-stopped")),
    };
    match count {
        Some(_) => Err(bad("only on-failure takes a retry count, as in on-failure:3")),
        None => Ok(policy),
    }
}

/// docker's delay before the next start: 100 ms, doubled after each restart, at most a
/// minute, and back to 100 ms after a run of 10 s or more.
#[derive(Debug)]
pub(super) struct Backoff {
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MOST: Duration = Duration::from_secs(60);
    const STEADY_RUN: Duration = Duration::from_secs(10);

    pub(super) fn new() -> Backoff {
        Backoff { delay: Duration::ZERO }
    }

    /// The delay before starting again a container that ran for `ran`.
    pub(super) fn next(&mut self, ran: Duration) -> Duration {
        self.delay = if ran >= Self::STEADY_RUN || self.delay.is_zero() {
            Self::FIRST
        } else {
            (self.delay * 2).min(Self::MOST)
        };
        self.delay
    }
}

/// Where racker notes that the user stopped container `id`.
fn stop_note(id: &str) -> Option<PathBuf> {
    runtime_dir().ok().map(|dir| dir.join(format!("{id}.stopped")))
}

/// Notes that the user stops container `id`: its monitor does not start it again.
pub(super) fn note_stop(id: &str) {
    if let Some(path) = stop_note(id) {
        if let Err(e) = crate::private::create_file(&path, true) {
            tracing::debug!("noting the stop of {id}: {}: {e}", path.display());
        }
    }
}

/// Whether the user stopped container `id` since its last start.
pub(super) fn stopped_by_user(id: &str) -> bool {
    stop_note(id).is_some_and(|p| p.exists())
}

/// Forgets a noted stop (a new start, or the container's removal).
pub(super) fn forget_stop(id: &str) {
    if let Some(path) = stop_note(id) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_as_docker_spells_them() {
        assert_eq!(parse_restart("--restart", "no"), Ok(RestartPolicy::No));
        assert_eq!(parse_restart("--restart", "always"), Ok(RestartPolicy::Always));
        assert_eq!(parse_restart("--restart", "unless-stopped"), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(parse_restart("--restart", "on-failure"), Ok(RestartPolicy::OnFailure { max_retries: None }));
        assert_eq!(parse_restart("--restart", "on-failure:3"), Ok(RestartPolicy::OnFailure { max_retries: Some(3) }));
        for bad in ["sometimes", "on-failure:x", "always:2", "on-failure:-1"] {
            let err = parse_restart("--restart", bad).expect_err(bad);
            assert!(err.contains("--restart") && err.contains(bad), "{err}");
        }
    }

    #[test]
    fn on_failure_counts_and_ignores_success() {
        let three = RestartPolicy::OnFailure { max_retries: Some(3) };
        assert!(three.restarts_after(1, 0) && three.restarts_after(137, 2));
        assert!(!three.restarts_after(1, 3));
        assert!(!three.restarts_after(0, 0));
        assert!(RestartPolicy::Always.restarts_after(0, 1000));
        assert!(!RestartPolicy::No.restarts_after(1, 0));
    }

    #[test]
    fn the_delay_doubles_up_to_a_minute_and_resets_after_a_steady_run() {
        let mut b = Backoff::new();
        let quick = Duration::from_millis(5);
        let delays: Vec<_> = (0..4).map(|_| b.next(quick).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800]);
        for _ in 0..20 {
            b.next(quick);
        }
        assert_eq!(b.next(quick), Duration::from_secs(60));
        assert_eq!(b.next(Duration::from_secs(11)), Duration::from_millis(100));
    }
}
