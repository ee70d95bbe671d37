//! What to run: the user's `racker run` options merged with the image config the way
//! docker merges them (Env, Entrypoint, Cmd, WorkingDir, User).

use std::path::PathBuf;

use super::flags::RunFlags;
use super::network::PortMapping;
use super::{Result, RuntimeError};
use crate::store::ContainerRecord;

/// docker's PATH for images that do not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `--network`: what network a container has. Stored as its name (`host`, `none`,
/// or a private network's).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Network {
    /// The host's network (systemd-nspawn's default).
    #[default]
    Host,
    /// Only a loopback interface.
    None,
    /// A private network of racker's (`private`, the default one, or one of
    /// `racker network create`): see network/mod.rs.
    Named(String),
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let valid = !s.is_empty()
            && s.len() <= 64
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        match s {
            "host" => Ok(Network::Host),
            "none" => Ok(Network::None),
            // docker's name for its default network.
            "bridge" | "private" => Ok(Network::Named(super::network::DEFAULT_NETWORK.into())),
            name if valid => Ok(Network::Named(name.to_owned())),
            other => Err(format!("network {other:?} is not valid: use host, none, private or a network's name")),
        }
    }
}

impl From<Network> for String {
    fn from(n: Network) -> String {
        match n {
            Network::Host => "host".into(),
            Network::None => "none".into(),
            Network::Named(name) => name,
        }
    }
}

impl TryFrom<String> for Network {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// What a boot starts: the image's own default target, racker's minimal target (the
/// journal and nothing else, for probes that start what they need themselves), or a
/// unit of the caller's choice.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootTarget {
    #[default]
    Default,
    Minimal,
    Unit(String),
}

impl BootTarget {
    /// The unit systemd is told to start instead of `default.target`, if any.
    pub fn unit(&self) -> Option<&str> {
        match self {
            BootTarget::Default => None,
            BootTarget::Minimal => Some(MINIMAL_TARGET),
            BootTarget::Unit(unit) => Some(unit),
        }
    }
}

/// The unit racker writes into a container's own writable layer for a minimal boot.
pub const MINIMAL_TARGET: &str = "racker-minimal.target";

impl std::str::FromStr for BootTarget {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "default" => Ok(BootTarget::Default),
            "minimal" => Ok(BootTarget::Minimal),
            unit if unit.contains('.') && !unit.contains(['/', ' ']) => Ok(BootTarget::Unit(unit.to_owned())),
            other => Err(format!(
                "boot target {other:?} is not valid: use default, minimal or a unit name such as multi-user.target"
            )),
        }
    }
}

/// A bind mount `-v SRC:DST[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl std::str::FromStr for Bind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (source, target, read_only) = match parts.as_slice() {
            [src, dst] => (*src, *dst, false),
            [src, dst, "ro"] => (*src, *dst, true),
            [src, dst, "rw"] => (*src, *dst, false),
            _ => return Err(format!("invalid volume {s:?}: expected SRC:DST[:ro|rw]")),
        };
        if !source.starts_with('/') || !target.starts_with('/') {
            return Err(format!("invalid volume {s:?}: both paths must be absolute"));
        }
        Ok(Bind { source: source.into(), target: target.to_owned(), read_only })
    }
}

/// Everything that decides how a container runs; stored with the container.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RunSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub workdir: String,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub binds: Vec<Bind>,
    pub network: Network,
    /// `-p` and `-P`: ports published on a private network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// The network namespace nspawn joins, for one start (set by the machine).
    #[serde(skip)]
    pub netns: Option<PathBuf>,
    /// Boot systemd as PID 1 and run `argv` inside the booted system.
    pub boot: bool,
    /// What the boot starts.
    #[serde(default)]
    pub boot_target: BootTarget,
    /// `--security-opt seccomp=unconfined`: no system call filter (systemd-nspawn's
    /// filter costs each start tens of milliseconds to compile).
    #[serde(default)]
    pub seccomp_unconfined: bool,
    /// `--security-opt no-new-privileges`.
    #[serde(default)]
    pub no_new_privileges: bool,
    pub tty: bool,
    pub interactive: bool,
    /// `--rm`: the container goes when it ends.
    #[serde(default)]
    pub remove: bool,
    /// Where the console is logged (booted and detached containers).
    #[serde(default)]
    pub console: Option<PathBuf>,
    /// The prepared root file system (the snapshot's).
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    /// `create` left the root unmounted: what a start needs in it ([`ready_root`]) waits
    /// for the first start.
    ///
    /// [`ready_root`]: super::run::ready_root
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub root_pending: bool,
    /// Seconds a boot may take before it counts as failed.
    #[serde(default)]
    pub boot_timeout: Option<u64>,
    /// The container's own cgroup, one directory per hierarchy (`racker-<id>`; none with
    /// machined): where every process of the container is found, by any racker process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cgroup: Vec<PathBuf>,
    /// Its machine name (nspawn's `--machine`), fixed when it is made: a container renamed
    /// later is still found by machined, and with machined its cgroup is that machine's
    /// scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// docker's common run flags (capabilities, limits, ...): see flags.rs.
    #[serde(default)]
    pub flags: RunFlags,
}

/// The user's side of `racker run`, before the image config is applied.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub command: Vec<String>,
    pub entrypoint: Option<String>,
    pub env: Vec<String>,
    pub env_files: Vec<PathBuf>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub binds: Vec<Bind>,
    pub network: Network,
    /// `-p`: ports to publish.
    pub ports: Vec<PortMapping>,
    /// `-P`: publish the image's `ExposedPorts` too, on random host ports.
    pub publish_all: bool,
    pub security: Vec<SecurityOpt>,
    pub tty: bool,
    pub interactive: bool,
    /// docker's common run flags, checked when parsed.
    pub flags: RunFlags,
}

/// A `--security-opt` value racker understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `seccomp=unconfined`: run without systemd-nspawn's system call filter.
    SeccompUnconfined,
    /// `no-new-privileges` (and `=true`): the command cannot gain privileges (setuid).
    NoNewPrivileges,
}

impl std::str::FromStr for SecurityOpt {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "seccomp=unconfined" | "seccomp:unconfined" => Ok(SecurityOpt::SeccompUnconfined),
            "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                Ok(SecurityOpt::NoNewPrivileges)
            }
            other => Err(format!(
                "security option {other:?} is not supported: racker knows seccomp=unconfined and no-new-privileges"
            )),
        }
    }
}

/// The ports `-p` and `-P` publish: none on the host's network (where the container's
/// ports are the host's already; the caller warns), an error with `--network none`.
fn publishable(opts: &RunOptions, config: &serde_json::Value) -> Result<Vec<PortMapping>> {
    let mut ports = opts.ports.clone();
    if opts.publish_all {
        for exposed in super::network::exposed(config) {
            let mapped = |p: &PortMapping| p.container_port == exposed.container_port && p.protocol == exposed.protocol;
            if !ports.iter().any(mapped) {
                ports.push(exposed);
            }
        }
    }
    match opts.network {
        Network::Host => Ok(Vec::new()),
        Network::None if !ports.is_empty() => Err(RuntimeError::Invalid {
            what: "-p".into(),
            reason: "a container with --network none has no network to publish ports on".into(),
        }),
        _ => Ok(ports),
    }
}

fn set_env(env: &mut Vec<(String, String)>, key: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => env.push((key.to_owned(), value)),
    }
}

/// Parses `K=V` (or `K`, taking the value from racker's own environment, as docker does).
fn env_entry(entry: &str) -> Option<(String, String)> {
    match entry.split_once('=') {
        Some((k, v)) if !k.is_empty() => Some((k.to_owned(), v.to_owned())),
        Some(_) => None,
        None => std::env::var(entry).ok().map(|v| (entry.to_owned(), v)),
    }
}

impl RunSpec {
    /// Applies docker's rules: `-e` over `--env-file` over the image's Env; `--entrypoint`
    /// replaces the image's entrypoint and drops its Cmd; a command replaces Cmd.
    pub fn new(opts: &RunOptions, config: &serde_json::Value, boot: bool) -> Result<RunSpec> {
        let image = config.get("config").cloned().unwrap_or(serde_json::Value::Null);
        let strings = |key: &str| -> Vec<String> {
            image
                .get(key)
                .and_then(|v| v.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let text = |key: &str| image.get(key).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_owned);

        let mut env = Vec::new();
        for entry in strings("Env") {
            if let Some((k, v)) = env_entry(&entry) {
                set_env(&mut env, &k, v);
            }
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            set_env(&mut env, "PATH", DEFAULT_PATH.to_owned());
        }
        for file in &opts.env_files {
            let content = std::fs::read_to_string(file).map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => RuntimeError::Missing {
                    what: format!("--env-file {}", file.display()),
                    reason: "no such file".into(),
                },
                _ => RuntimeError::Io { path: file.clone(), source },
            })?;
            for line in content.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                let (k, v) = env_entry(line).ok_or_else(|| RuntimeError::Invalid {
                    what: format!("env file {}", file.display()),
                    reason: format!("line {line:?} is not KEY=VALUE"),
                })?;
                set_env(&mut env, &k, v);
            }
        }
        for entry in &opts.env {
            let (k, v) = env_entry(entry).ok_or_else(|| RuntimeError::Invalid {
                what: format!("-e {entry}"),
                reason: "expected KEY=VALUE".into(),
            })?;
            set_env(&mut env, &k, v);
        }

        let mut argv = match &opts.entrypoint {
            Some(e) if e.is_empty() => vec![],
            Some(e) => vec![e.clone()],
            None => strings("Entrypoint"),
        };
        if !opts.command.is_empty() {
            argv.extend(opts.command.iter().cloned());
        } else if opts.entrypoint.is_none() {
            argv.extend(strings("Cmd"));
        }
        // podman's rule, not docker's: a missing host path is refused rather than made
        // (as root, where a typo would put it).
        if let Some(bind) = opts.binds.iter().find(|b| !b.source.exists()) {
            return Err(RuntimeError::Missing {
                what: format!("bind source {}", bind.source.display()),
                reason: "no such file or directory on the host (racker does not make it; make it first)".into(),
            });
        }
        let ports = publishable(opts, config)?;
        // A booted system needs no command: it runs until stopped (`racker run -d`).
        opts.flags.check_mode(boot)?;
        if argv.is_empty() && !boot {
            return Err(RuntimeError::Invalid {
                what: "command".into(),
                reason: "no command specified: the image has no Entrypoint or Cmd; give one after the image name"
                    .into(),
            });
        }
        Ok(RunSpec {
            argv,
            env,
            workdir: opts.workdir.clone().or_else(|| text("WorkingDir")).unwrap_or_else(|| "/".into()),
            user: opts.user.clone().or_else(|| text("User")),
            hostname: opts.hostname.clone(),
            binds: opts.binds.clone(),
            network: opts.network.clone(),
            ports,
            netns: None,
            boot,
            boot_target: BootTarget::Default,
            seccomp_unconfined: opts.security.contains(&SecurityOpt::SeccompUnconfined),
            no_new_privileges: opts.security.contains(&SecurityOpt::NoNewPrivileges),
            tty: opts.tty,
            interactive: opts.interactive,
            remove: false,
            console: None,
            rootfs: None,
            root_pending: false,
            boot_timeout: None,
            cgroup: Vec::new(),
            machine: None,
            flags: opts.flags.clone(),
        })
    }

    /// The command as one line, for `racker ps`.
    pub fn command_line(&self) -> String {
        self.argv.join(" ")
    }

    pub fn path_env(&self) -> &str {
        self.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.as_str()).unwrap_or(DEFAULT_PATH)
    }
}

/// A container's record with its spec decoded.
pub fn spec_of(record: &ContainerRecord) -> Option<RunSpec> {
    serde_json::from_value(record.spec.clone()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> serde_json::Value {
        serde_json::json!({"config": {"Env": ["PATH=/bin", "A=1"], "Entrypoint": ["/bin/ep"], "Cmd": ["x", "y"], "WorkingDir": "/srv", "User": "app"}})
    }

    #[test]
    fn image_config_applies_as_docker_does() {
        let spec = RunSpec::new(&RunOptions::default(), &config(), false).expect("spec");
        assert_eq!(spec.argv, ["/bin/ep", "x", "y"]);
        assert_eq!(spec.workdir, "/srv");
        assert_eq!(spec.user.as_deref(), Some("app"));
        assert_eq!(spec.path_env(), "/bin");

        let opts =
            RunOptions { command: vec!["z".into()], env: vec!["A=2".into(), "B=3".into()], ..Default::default() };
        let spec = RunSpec::new(&opts, &config(), false).expect("spec");
        assert_eq!(spec.argv, ["/bin/ep", "z"], "a command replaces Cmd, keeps Entrypoint");
        assert_eq!(spec.env, [("PATH".into(), "/bin".into()), ("A".into(), "2".into()), ("B".into(), "3".into())]);

        let opts = RunOptions { entrypoint: Some("/bin/sh".into()), ..Default::default() };
        assert_eq!(RunSpec::new(&opts, &config(), false).expect("spec").argv, ["/bin/sh"], "--entrypoint drops Cmd");

        let empty = serde_json::json!({"config": {}});
        let err = RunSpec::new(&RunOptions::default(), &empty, false).expect_err("nothing to run");
        assert!(err.to_string().contains("no command specified"));
        assert_eq!(
            RunSpec::new(&RunOptions { command: vec!["sh".into()], ..Default::default() }, &empty, false)
                .expect("spec")
                .path_env(),
            DEFAULT_PATH
        );
    }

    #[test]
    fn volumes_parse() {
        assert_eq!("/a:/b:ro".parse::<Bind>(), Ok(Bind { source: "/a".into(), target: "/b".into(), read_only: true }));
        assert!("a:/b".parse::<Bind>().is_err());
        assert!("/a:/b:xx".parse::<Bind>().is_err());
    }
}
