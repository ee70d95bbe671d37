//! How long and how often a pull keeps trying: a hostile or broken registry must end a
//! pull within bounded time and space. The defaults follow docker (5 attempts per
//! layer); the environment may shorten them (the test suite does).

use std::time::Duration;

/// Environment variable: milliseconds before the first retry of a broken download;
/// each further retry waits twice as long.
pub const RETRY_DELAY_ENV: &str = "RACKER_REGISTRY_RETRY_DELAY_MS";

/// JSON documents held in memory whole (manifests, indexes, image configs) larger than
/// this are refused before they are read: distribution and containerd cap manifests at
/// 4 MiB, and real configs are a few KiB.
pub const MAX_DOCUMENT_BYTES: u64 = 4 << 20;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// No byte for this long: the request fails.
    pub idle: Duration,
    /// Requests for one blob, the first included.
    pub attempts_per_blob: u32,
    /// Retries over all blobs of one pull.
    pub retries_per_pull: u32,
    /// Before the first retry; doubled for each further one.
    pub retry_delay: Duration,
}

impl Limits {
    pub fn from_env() -> Limits {
        let number = |key: &str| std::env::var(key).ok().and_then(|v| v.trim().parse::<u64>().ok());
        Limits {
            idle: crate::http::idle_timeout(),
            attempts_per_blob: 5,
            retries_per_pull: 20,
            retry_delay: Duration::from_millis(number(RETRY_DELAY_ENV).unwrap_or(500)),
        }
    }

    /// The wait before retry number `retry` (1 for the first).
    pub fn backoff(&self, retry: u32) -> Duration {
        self.retry_delay.saturating_mul(1 << retry.saturating_sub(1).min(10))
    }
}
