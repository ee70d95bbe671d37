//! Debian images built from a Debian mirror with mmdebstrap, with systemd included, so
//! that they boot as they are: no registry involved, and no provisioning layer.
//!
//! The mirror is the host's: mmdebstrap without a mirror argument would use
//! deb.debian.org whatever the host's apt configuration says, so the apt sources of the
//! host (`/etc/apt/sources.list`, `sources.list.d/*.list` and deb822 `*.sources`) are
//! read and given to it as explicit `deb URI SUITE COMPONENTS` lines for the wanted
//! suite, with its `-updates` and `-security` counterparts when the host uses those.
//!
//! mmdebstrap writes its tar to a pipe that the store reads as it comes (one pass,
//! no temporary tarball); the image is committed only if mmdebstrap exits cleanly.
//! SIGINT, SIGTERM and SIGHUP during the build stop mmdebstrap (which removes its own
//! work directory) and leave the store as it was.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use racker::digest::Digest;
use racker::progress::{Progress, ProgressReader};
use racker::reference::Reference;
use racker::source::{self, History, SourceError};
use racker::store::Store;

/// The packages a mirror-built image gets beyond minbase: what boots and what probes use.
pub const INCLUDE: &str = "systemd,systemd-sysv,dbus,curl,ca-certificates";

const APT_DIR: &str = "/etc/apt";

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("starting mmdebstrap: {source} (scripts/prerequisites installs it)")]
    Spawn { source: io::Error },
    #[error("mmdebstrap {suite} failed ({status}):\n{tail}")]
    Failed { suite: String, status: String, tail: String },
    #[error("interrupted: the mmdebstrap build of {suite} was stopped; the store is unchanged")]
    Interrupted { suite: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("importing the mmdebstrap build of {suite}: {source}")]
    Import { suite: String, source: SourceError },
}

/// One `deb` source of the host's apt configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

/// The `deb` sources configured on the host (none if there is no apt).
pub fn host_sources() -> Vec<AptSource> {
    sources_in(Path::new(APT_DIR))
}

fn sources_in(apt: &Path) -> Vec<AptSource> {
    let mut files = vec![apt.join("sources.list")];
    if let Ok(entries) = std::fs::read_dir(apt.join("sources.list.d")) {
        let mut more: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut sources = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else { continue };
        match file.extension().and_then(|e| e.to_str()) {
            Some("list") => sources.extend(parse_one_line(&text)),
            Some("sources") => sources.extend(parse_deb822(&text)),
            _ => {}
        }
    }
    sources
}

/// `deb [options] URI SUITE COMPONENT...` lines.
fn parse_one_line(text: &str) -> Vec<AptSource> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("").trim();
            let rest = line.strip_prefix("deb ")?.trim_start();
            // Drop `[arch=amd64 signed-by=...]`.
            let rest = match rest.strip_prefix('[') {
                Some(options) => options.split_once(']')?.1,
                None => rest,
            };
            let mut words = rest.split_whitespace();
            let uri = words.next()?.to_owned();
            let suite = words.next()?.to_owned();
            Some(AptSource { uri, suites: vec![suite], components: words.map(str::to_owned).collect() })
        })
        .collect()
}

/// deb822 stanzas (`Types: deb`, `URIs:`, `Suites:`, `Components:`), `Enabled: no` skipped.
fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut sources = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| -> Vec<String> {
            stanza
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case(name)))
                .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default()
        };
        let enabled = field("Enabled").first().is_none_or(|v| v != "no");
        if !enabled || !field("Types").iter().any(|t| t == "deb") {
            continue;
        }
        for uri in field("URIs") {
            sources.push(AptSource { uri, suites: field("Suites"), components: field("Components") });
        }
    }
    sources
}

/// The sources.list lines for `suite` from the host's sources: the main archive (a
/// source with a plain release suite), plus `-updates` and `-security` where the host
/// has them and the suite has them (not sid). Empty: the host has no Debian source.
pub fn mirror_lines(sources: &[AptSource], suite: &str) -> Vec<String> {
    let is_plain = |s: &str| !s.contains(['-', '/']);
    let components = |s: &AptSource| if s.components.is_empty() { "main".to_owned() } else { s.components.join(" ") };
    let Some(main) = sources
        .iter()
        .find(|s| s.suites.iter().any(|x| is_plain(x)) && s.uri.trim_end_matches('/').ends_with("/debian"))
        .or_else(|| sources.iter().find(|s| s.suites.iter().any(|x| is_plain(x))))
    else {
        return Vec::new();
    };
    let mut lines = vec![format!("deb {} {suite} {}", main.uri, components(main))];
    let rolling = matches!(suite, "sid" | "unstable" | "experimental");
    if !rolling {
        if main.suites.iter().any(|s| s.ends_with("-updates")) {
            lines.push(format!("deb {} {suite}-updates {}", main.uri, components(main)));
        }
        if let Some(security) = sources.iter().find(|s| s.suites.iter().any(|x| x.ends_with("-security"))) {
            lines.push(format!("deb {} {suite}-security {}", security.uri, components(security)));
        }
    }
    lines
}

/// The `created_by` of a mirror-built image's history: what tells a later pull that the
/// store already has the build.
pub fn created_by(suite: &str) -> String {
    format!("mmdebstrap --variant=minbase --include={INCLUDE} {suite}")
}

/// Builds a minbase Debian `suite` with [`INCLUDE`] and imports it as an image named
/// `names`. Each line mmdebstrap prints goes to `on_line` as it comes.
pub fn build(
    store: &Store,
    suite: &str,
    names: Vec<Reference>,
    on_line: &(dyn Fn(&str) + Sync),
    progress: Arc<dyn Progress>,
) -> Result<Digest, MirrorError> {
    let mirrors = mirror_lines(&host_sources(), suite);
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", &format!("--include={INCLUDE}"), "--format=tar", suite, "-"]);
    cmd.args(&mirrors);
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    on_line(&format!(
        "mmdebstrap --variant=minbase --include={INCLUDE} {suite} from {}",
        if mirrors.is_empty() {
            "mmdebstrap's default mirror (the host configures none)".to_owned()
        } else {
            mirrors.join("; ")
        }
    ));
    let mut child = cmd.spawn().map_err(|source| MirrorError::Spawn { source })?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let child = Arc::new(Mutex::new(child));
    let interrupted = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])
    .map_err(|source| MirrorError::Io { path: "signal handlers".into(), source })?;
    let signal_handle = signals.handle();
    let tail = Mutex::new(std::collections::VecDeque::with_capacity(20));

    let result = std::thread::scope(|scope| {
        let watcher_child = child.clone();
        let watcher_flag = interrupted.clone();
        scope.spawn(move || {
            if signals.forever().next().is_some() {
                watcher_flag.store(true, Ordering::SeqCst);
                let _ = stop(&watcher_child);
            }
        });
        scope.spawn(|| {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                on_line(&line);
                let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        progress.begin(suite, "Importing", None);
        let mut reader = ProgressReader::new(Checked { out: stdout, child: &child }, suite, &*progress);
        let history = History {
            created_by: created_by(suite),
            comment: format!(
                "Built by postroj from {}",
                mirrors.first().map(String::as_str).unwrap_or("deb.debian.org")
            ),
        };
        let imported = source::import_rootfs_stream(store, &mut reader, &history, names, progress.clone());
        if imported.is_err() {
            let _ = stop(&child);
        }
        signal_handle.close();
        imported
    });
    let status = child.lock().unwrap_or_else(|p| p.into_inner()).wait();
    // A signal that came after the image was committed changes nothing any more.
    if result.is_err() && interrupted.load(Ordering::SeqCst) {
        return Err(MirrorError::Interrupted { suite: suite.to_owned() });
    }
    match (result, status) {
        (Ok(id), _) => {
            progress.end(suite, &format!("Imported {}", id.short()));
            Ok(id)
        }
        (Err(_), Ok(status)) if !status.success() => {
            let tail: Vec<String> = tail.into_inner().unwrap_or_else(|p| p.into_inner()).into();
            Err(MirrorError::Failed { suite: suite.to_owned(), status: status.to_string(), tail: tail.join("\n") })
        }
        (Err(source), _) => Err(MirrorError::Import { suite: suite.to_owned(), source }),
    }
}

/// Asks mmdebstrap to stop (SIGTERM: it cleans up its work directory), unless it has
/// exited: once reaped, its pid may belong to another process.
fn stop(child: &Mutex<Child>) -> io::Result<()> {
    let mut child = child.lock().unwrap_or_else(|p| p.into_inner());
    if child.try_wait()?.is_none() {
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
        }
    }
    Ok(())
}

/// mmdebstrap's standard output, which ends in an error unless mmdebstrap exited
/// cleanly: the store then never commits a tarball cut short.
struct Checked<'c> {
    out: ChildStdout,
    child: &'c Mutex<Child>,
}

impl Read for Checked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let status = self.child.lock().unwrap_or_else(|p| p.into_inner()).wait()?;
            if !status.success() {
                return Err(io::Error::other(format!("mmdebstrap {status}")));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sources_in_both_formats_become_mirror_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sources.list.d")).unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n\
             Types: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sources.list.d/other.list"),
            "# comment\ndeb [arch=amd64] https://packages.example/apt stable main\n",
        )
        .unwrap();
        let sources = sources_in(dir.path());
        assert_eq!(sources.len(), 3, "{sources:?}");
        assert_eq!(
            mirror_lines(&sources, "trixie"),
            [
                "deb http://mirror.example/debian trixie main",
                "deb http://mirror.example/debian trixie-updates main",
                "deb http://mirror.example/debian-security trixie-security main",
            ]
        );
        assert_eq!(mirror_lines(&sources, "sid"), ["deb http://mirror.example/debian sid main"]);
        assert!(mirror_lines(&[], "bookworm").is_empty());
    }
}
