//! Network checks of a probed package's services, run from the host: probe containers
//! share the host's network, so `localhost:PORT` reaches the container's service; on a
//! private network a loopback target is sent to the container's address instead
//! ([`Target::on`]).
//!
//! A freshly started service needs a moment before it listens, so a check retries
//! connection-level failures (refused, reset) every [`RETRY_INTERVAL`] until its timeout.
//! An answer is final: an HTTP 503 is the service's verdict, not a reason to wait.

use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::time::{Duration, Instant};

use racker::http::{ClientOptions, Redirects};

/// How long a check waits between attempts while the service does not listen yet.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(50);

/// What a network check reaches: a TCP port, or an HTTP(S) URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `tcp://HOST:PORT`: passes when a connection is accepted.
    Tcp { host: String, port: u16 },
    /// `http://…` or `https://…`: passes on any status below 500.
    Http { url: reqwest::Url },
}

/// A check target that is not one of the accepted forms.
#[derive(Debug, thiserror::Error)]
#[error(
    "network check target {value:?} is not understood ({reason}); \
     use tcp://HOST:PORT, http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH"
)]
pub struct InvalidTarget {
    pub value: String,
    pub reason: String,
}

impl Target {
    /// Parses `tcp://HOST:PORT`, `http://HOST[:PORT]/PATH` or `https://HOST[:PORT]/PATH`.
    pub fn parse(value: &str) -> Result<Target, InvalidTarget> {
        let invalid = |reason: &str| InvalidTarget { value: value.to_owned(), reason: reason.to_owned() };
        let Some((scheme, rest)) = value.split_once("://") else {
            return Err(invalid("no scheme"));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "tcp" => {
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                if rest.contains('/') {
                    return Err(invalid("a tcp target has no path"));
                }
                let Some((host, port)) = rest.rsplit_once(':') else {
                    return Err(invalid("a tcp target needs a port"));
                };
                // `[::1]:80`: the brackets belong to the URL form, not to the address.
                let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
                if host.is_empty() {
                    return Err(invalid("no host"));
                }
                match port.parse::<u16>() {
                    Ok(0) | Err(_) => Err(invalid("the port must be a number from 1 to 65535")),
                    Ok(port) => Ok(Target::Tcp { host: host.to_owned(), port }),
                }
            }
            "http" | "https" => {
                let url = reqwest::Url::parse(value).map_err(|e| invalid(&e.to_string()))?;
                if url.host_str().is_none_or(str::is_empty) {
                    return Err(invalid("no host"));
                }
                Ok(Target::Http { url })
            }
            _ => Err(invalid(&format!("unknown scheme {scheme:?}"))),
        }
    }
}

impl Target {
    /// The target with a loopback host (`localhost`, `127.0.0.1`, `::1`) replaced by
    /// `address`: the container's own, when it has a network of its own.
    pub fn on(&self, address: std::net::IpAddr) -> Target {
        let loopback = |host: &str| {
            host.eq_ignore_ascii_case("localhost")
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        };
        match self {
            Target::Tcp { host, port } if loopback(host) => Target::Tcp { host: address.to_string(), port: *port },
            Target::Http { url } if url.host_str().is_some_and(loopback) => {
                let mut url = url.clone();
                match url.set_ip_host(address) {
                    Ok(()) => Target::Http { url },
                    Err(()) => self.clone(),
                }
            }
            other => other.clone(),
        }
    }
}

impl FromStr for Target {
    type Err = InvalidTarget;
    fn from_str(s: &str) -> Result<Target, InvalidTarget> {
        Target::parse(s)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } if host.contains(':') => write!(f, "tcp://[{host}]:{port}"),
            Target::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Target::Http { url } => f.write_str(url.as_str()),
        }
    }
}

/// How a check runs.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// How long to keep trying while the service does not listen yet.
    pub timeout: Duration,
    /// Verify HTTPS certificates against the system's roots. Off by default: a service
    /// in a throw-away container serves a certificate made at install time (a snakeoil
    /// or self-signed one), and the check asks whether the service answers, not
    /// whether a client would trust it.
    pub verify_tls: bool,
}

impl CheckOptions {
    pub fn new(timeout: Duration) -> CheckOptions {
        CheckOptions { timeout, verify_tls: false }
    }
}

/// The result of one check, with what a report shows of it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CheckOutcome {
    pub passed: bool,
    /// One line: `HTTP 200 OK`, `connected to 127.0.0.1:22`, `connection refused after 5.0 s`.
    pub detail: String,
    /// The HTTP status code, when the service answered HTTP.
    pub status: Option<u16>,
    /// The HTTP response headers, in the order the service sent them.
    pub headers: Vec<(String, String)>,
    /// From the first attempt to the outcome.
    #[serde(serialize_with = "crate::report::serialize_secs")]
    pub duration: Duration,
    /// How many connection attempts were made.
    pub attempts: u32,
}

/// Checks `target`, retrying for up to `timeout`, with HTTPS certificates not verified.
/// Blocks (reqwest's blocking client): call it from a thread, not from an async task.
pub fn check(target: &Target, timeout: Duration) -> CheckOutcome {
    check_with(target, &CheckOptions::new(timeout))
}

/// Checks `target` as `options` say.
pub fn check_with(target: &Target, options: &CheckOptions) -> CheckOutcome {
    let started = Instant::now();
    let deadline = started + options.timeout;
    let (passed, detail, status, headers, attempts) = match target {
        Target::Tcp { host, port } => {
            let (result, attempts) = retry(deadline, || connect(host, *port, deadline));
            match result {
                Ok(peer) => (true, format!("connected to {peer}"), None, Vec::new(), attempts),
                Err(e) => (false, failure_detail(&e, started), None, Vec::new(), attempts),
            }
        }
        Target::Http { url } => match http(url, options, deadline) {
            Ok((response, attempts)) => {
                let status = response.status();
                let headers = response
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                let detail = format!("HTTP {} {}", status.as_u16(), status.canonical_reason().unwrap_or(""))
                    .trim_end()
                    .to_owned();
                (status.as_u16() < 500, detail, Some(status.as_u16()), headers, attempts)
            }
            Err((e, attempts)) => (false, failure_detail(&e, started), None, Vec::new(), attempts),
        },
    };
    CheckOutcome { passed, detail, status, headers, duration: started.elapsed(), attempts }
}

/// Runs `attempt` until it succeeds, fails for good, or the deadline passes (the last
/// attempt is made at the deadline). A last attempt that the deadline cut short says
/// nothing about the service, so the failure reported is then the one seen before it
/// (a refused connection stays "refused" on a loaded host).
fn retry<T>(deadline: Instant, mut attempt: impl FnMut() -> io::Result<T>) -> (io::Result<T>, u32) {
    let mut attempts = 0;
    let mut seen: Option<io::Error> = None;
    loop {
        attempts += 1;
        let result = attempt();
        let left = deadline.saturating_duration_since(Instant::now());
        match result {
            Err(e) if is_transient(e.kind()) && !left.is_zero() => {
                seen = Some(e);
                std::thread::sleep(left.min(RETRY_INTERVAL));
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut && seen.is_some() => {
                return (Err(seen.unwrap_or(e)), attempts);
            }
            result => return (result, attempts),
        }
    }
}

/// Failures of a service that is still starting (or restarting).
fn is_transient(kind: io::ErrorKind) -> bool {
    use io::ErrorKind::*;
    matches!(kind, ConnectionRefused | ConnectionReset | ConnectionAborted | NotConnected | UnexpectedEof | BrokenPipe)
}

/// Connects to every address `host` resolves to (`localhost`: `::1` and `127.0.0.1`) until
/// one accepts; the error is the first address's, which is the one a client would report.
fn connect(host: &str, port: u16, deadline: Instant) -> io::Result<std::net::SocketAddr> {
    let addrs: Vec<_> = (host, port).to_socket_addrs()?.collect();
    let mut first_error = None;
    for addr in addrs {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        match TcpStream::connect_timeout(&addr, left) {
            Ok(_) => return Ok(addr),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))))
}

/// One GET, retried while the service refuses or drops connections. Redirects are not
/// followed (a 3xx is an answer) and proxies are ignored (the service is on this host).
fn http(
    url: &reqwest::Url,
    options: &CheckOptions,
    deadline: Instant,
) -> Result<(reqwest::blocking::Response, u32), (io::Error, u32)> {
    let client = racker::http::blocking_client(&ClientOptions {
        accept_invalid_certs: !options.verify_tls,
        redirects: Redirects::None,
        no_proxy: true,
        ..ClientOptions::default()
    })
    .map_err(|e| (io::Error::other(error_line(&e)), 0))?;
    let (result, attempts) = retry(deadline, || {
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        client.get(url.clone()).timeout(left).send().map_err(|e| {
            let kind =
                if e.is_timeout() { io::ErrorKind::TimedOut } else { io_kind(&e).unwrap_or(io::ErrorKind::Other) };
            io::Error::new(kind, error_line(&e))
        })
    });
    result.map(|r| (r, attempts)).map_err(|e| (e, attempts))
}

/// The kind of the innermost I/O error below `err`, which tells refused from reset.
fn io_kind(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut found = None;
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            found = Some(io.kind());
        }
        next = e.source();
    }
    found
}

/// `err` and its causes on one line, without repeating a cause that its parent quotes;
/// reqwest's own top line (`error sending request for url (…)`) only repeats the URL,
/// which the caller names.
pub(crate) fn error_line(err: &(dyn std::error::Error + 'static)) -> String {
    let top = match (err.downcast_ref::<reqwest::Error>(), err.source()) {
        (Some(_), Some(cause)) => cause,
        _ => err,
    };
    racker::error::chain(top)
}

/// `connection refused after 5.0 s`; other failures keep their own words.
fn failure_detail(err: &io::Error, started: Instant) -> String {
    let after = format!("after {:.1} s", started.elapsed().as_secs_f64());
    match err.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused {after}"),
        io::ErrorKind::ConnectionReset => format!("connection reset {after}"),
        io::ErrorKind::TimedOut => format!("no answer {after} (timed out)"),
        _ => format!("{err} ({after})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_targets_go_to_the_container_s_address() {
        let ip: std::net::IpAddr = "10.89.0.7".parse().expect("ip");
        let on = |t: &str| Target::parse(t).expect("target").on(ip).to_string();
        assert_eq!(on("http://localhost:8080/x"), "http://10.89.0.7:8080/x");
        assert_eq!(on("tcp://127.0.0.1:22"), "tcp://10.89.0.7:22");
        assert_eq!(on("https://[::1]/"), "https://10.89.0.7/");
        assert_eq!(on("http://example.org/"), "http://example.org/", "other hosts stay");
    }

    #[test]
    fn a_last_attempt_cut_short_by_the_deadline_reports_the_failure_before_it() {
        let mut answers = vec![io::ErrorKind::TimedOut, io::ErrorKind::ConnectionRefused];
        let deadline = Instant::now() + Duration::from_millis(50);
        let (result, attempts) = retry(deadline, || {
            let kind = answers.pop().unwrap_or(io::ErrorKind::TimedOut);
            Err::<(), _>(io::Error::from(kind))
        });
        assert_eq!(result.err().map(|e| e.kind()), Some(io::ErrorKind::ConnectionRefused));
        assert_eq!(attempts, 2);
        // A service that never answered at all still times out.
        let (result, _) = retry(Instant::now(), || Err::<(), _>(io::Error::from(io::ErrorKind::TimedOut)));
        assert_eq!(result.err().map(|e| e.kind()), Some(io::ErrorKind::TimedOut));
    }

    #[test]
    fn parses_the_three_forms() {
        assert_eq!(Target::parse("tcp://localhost:22").ok(), Some(Target::Tcp { host: "localhost".into(), port: 22 }));
        assert_eq!(Target::parse("tcp://[::1]:8080/").ok(), Some(Target::Tcp { host: "::1".into(), port: 8080 }));
        let http = Target::parse("http://localhost:8080/health").ok().map(|t| t.to_string());
        assert_eq!(http.as_deref(), Some("http://localhost:8080/health"));
        assert!(matches!(Target::parse("https://localhost/"), Ok(Target::Http { .. })));
        assert_eq!(Target::parse("tcp://[::1]:80").ok().map(|t| t.to_string()).as_deref(), Some("tcp://[::1]:80"));
    }

    #[test]
    fn rejects_other_forms_naming_the_value_and_the_accepted_ones() {
        for (value, reason) in [
            ("localhost:80", "no scheme"),
            ("udp://localhost:53", "unknown scheme"),
            ("tcp://localhost", "needs a port"),
            ("tcp://localhost:http", "1 to 65535"),
            ("tcp://localhost:0", "1 to 65535"),
            ("tcp://:80", "no host"),
            ("tcp://localhost:80/path", "no path"),
            ("http://", "empty host"),
        ] {
            let err = Target::parse(value).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(&format!("{value:?}")) && err.contains(reason), "{value}: {err}");
            assert!(err.contains("tcp://HOST:PORT") && err.contains("https://"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }
}
