//! docker's common `run` flags beyond the command itself: privileges and capabilities,
//! devices, a read-only root with tmpfs mounts, labels, `/etc/hosts` and DNS entries,
//! resource limits ([`Limits`]), an init as PID 1, and how `stop` ends the container.
//! Values are checked when they are parsed, before anything of a container is made.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::limits::Limits;
use super::restart::RestartPolicy;
use super::spec::RunSpec;
use super::{rootfs, Registration, Result, RuntimeError};

/// Where the host's init for `--init` comes from: Debian's `tini` package ships it
/// statically linked, so it runs in any image.
pub const INIT_BINARY: &str = "/usr/bin/tini-static";
/// Where `--init` puts it in the container (docker's path).
pub const INIT_PATH: &str = "/dev/init";

/// Seconds a stop waits between SIGTERM and SIGKILL without `--stop-timeout`, as docker.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// The flags as stored with the container (every field defaults: older records load).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct RunFlags {
    pub privileged: bool,
    /// Capability names as the kernel spells them (`CAP_NET_ADMIN`), or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub devices: Vec<Device>,
    pub read_only: bool,
    pub tmpfs: Vec<Tmpfs>,
    /// Named volumes (`--mount type=volume`, `-v NAME:/path`), bound in as `-v` binds.
    pub volumes: Vec<super::volumes::VolumeMount>,
    pub labels: BTreeMap<String, String>,
    pub add_hosts: Vec<(String, IpAddr)>,
    pub dns: Vec<IpAddr>,
    pub limits: Limits,
    pub init: bool,
    /// The signal `racker stop` sends first (command mode), by number.
    pub stop_signal: Option<i32>,
    /// Seconds `racker stop` waits before SIGKILL, unless its `-t` says otherwise.
    pub stop_timeout: Option<u64>,
    /// What the monitor of a detached container does when it ends.
    pub restart: RestartPolicy,
}

/// `--device HOST[:CONTAINER][:PERMS]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Device {
    pub host: PathBuf,
    pub container: String,
    /// docker's cgroup permissions: a subset of `rwm`.
    pub permissions: String,
    /// `c` or `b`, with the node's major and minor numbers (for the devices cgroup).
    pub kind: char,
    pub major: u32,
    pub minor: u32,
}

/// `--tmpfs PATH[:OPTIONS]`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tmpfs {
    pub path: String,
    pub options: String,
}

/// A flag's value that cannot be used: the message names the flag and what it takes.
fn invalid(flag: &str, value: &str, fix: &str) -> String {
    format!("invalid {flag} {value:?}: {fix}")
}

/// `--hostname`: a host name as RFC 1123 spells one (it goes into `/etc/hosts` of the
/// container and of every other one on its network, so nothing else may pass).
pub fn parse_hostname(flag: &str, value: &str) -> std::result::Result<String, String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    match value.len() <= 253 && value.split('.').all(label_ok) {
        true => Ok(value.to_owned()),
        false => Err(invalid(flag, value, "use letters, digits and '-', in labels joined by '.'")),
    }
}

/// The capabilities Linux knows, by number (`CAP_` prefix left off).
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// `--cap-add`/`--cap-drop`'s value as nspawn takes it: `ALL`, or `CAP_NAME` (given
/// with or without the prefix, in any case, as docker accepts it).
pub fn parse_capability(flag: &str, value: &str) -> std::result::Result<String, String> {
    let upper = value.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    match CAPABILITIES.contains(&bare) {
        true => Ok(format!("CAP_{bare}")),
        false => Err(invalid(flag, value, "not a capability: use a name such as NET_ADMIN or CAP_NET_ADMIN, or ALL")),
    }
}

/// docker's size syntax: a number with an optional unit b, k, m, g or t (any case, an
/// optional trailing `b` or `ib` as in `64mb`, `64MiB`; all binary), in bytes.
pub fn parse_size(flag: &str, value: &str) -> std::result::Result<u64, String> {
    let bad = || invalid(flag, value, "expected a size such as 64m (a number with b, k, m or g)");
    let lower = value.trim().to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    let factor: u64 = match unit {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let number: f64 = digits.parse().map_err(|_| bad())?;
    let bytes = number * factor as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `--memory`: a size of at least 6 MiB, docker's minimum (less would not start a
/// container: systemd-nspawn shares the limit).
pub fn parse_memory(flag: &str, value: &str) -> std::result::Result<u64, String> {
    let bytes = parse_size(flag, value)?;
    match bytes >= 6 << 20 {
        true => Ok(bytes),
        false => Err(invalid(flag, value, "expected at least 6m, the smallest memory limit")),
    }
}

/// `--cpus`: a positive decimal, kept as millionths of a CPU (docker keeps nano-CPUs;
/// cgroup quotas are in microseconds, so finer parts would be lost anyway).
pub fn parse_cpus(flag: &str, value: &str) -> std::result::Result<u64, String> {
    let bad = || invalid(flag, value, "expected a number of CPUs from 0.01 up, such as 0.5 or 2");
    let cpus: f64 = value.trim().parse().map_err(|_| bad())?;
    let micro = (cpus * 1_000_000.0).round();
    if !cpus.is_finite() || !(10_000.0..=1e12).contains(&micro) {
        return Err(bad());
    }
    Ok(micro as u64)
}

/// `--pids-limit`: a positive number; 0 or -1 mean no limit, as in docker.
pub fn parse_pids_limit(flag: &str, value: &str) -> std::result::Result<Option<u64>, String> {
    match value.trim().parse::<i64>() {
        Ok(n) if n > 0 => Ok(Some(n as u64)),
        Ok(0 | -1) => Ok(None),
        _ => Err(invalid(flag, value, "expected a positive number of processes (or -1 for no limit)")),
    }
}

/// `--label KEY=VALUE` (or `KEY`, an empty value, as docker takes it).
pub fn parse_label(flag: &str, value: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = value.split_once('=').unwrap_or((value, ""));
    if k.trim().is_empty() {
        return Err(invalid(flag, value, "expected KEY=VALUE"));
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// `--add-host NAME:IP` (docker also takes `NAME=IP`; an IPv6 address has colons of
/// its own, so the name ends at the first separator).
pub fn parse_add_host(flag: &str, value: &str) -> std::result::Result<(String, IpAddr), String> {
    let bad = || invalid(flag, value, "expected NAME:IP, such as db:10.0.0.5");
    let (name, ip) = value.split_once(['=', ':']).ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    let valid_name = !name.is_empty()
        && name.len() <= 253
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    match (valid_name, ip.parse()) {
        (true, Ok(ip)) => Ok((name.to_owned(), ip)),
        _ => Err(bad()),
    }
}

/// `--dns IP`.
pub fn parse_dns(flag: &str, value: &str) -> std::result::Result<IpAddr, String> {
    value.trim().parse().map_err(|_| invalid(flag, value, "expected a name server's IP address, such as 9.9.9.9"))
}

/// `--tmpfs PATH[:OPTIONS]`; without options docker's defaults (a world-writable,
/// sticky directory without setuid or device files).
pub fn parse_tmpfs(flag: &str, value: &str) -> std::result::Result<Tmpfs, String> {
    let (path, options) = value.split_once(':').unwrap_or((value, ""));
    if !path.starts_with('/') || path == "/" || path.contains(',') {
        return Err(invalid(
            flag,
            value,
            "expected an absolute path other than /, then :OPTIONS if any (size=64m,mode=1777)",
        ));
    }
    if options.contains([':', ' ']) {
        return Err(invalid(flag, value, "options are comma-separated mount options such as size=64m,mode=1777"));
    }
    let options = if options.is_empty() { "mode=1777,nosuid,nodev".to_owned() } else { options.to_owned() };
    Ok(Tmpfs { path: path.to_owned(), options })
}

/// `--device HOST[:CONTAINER][:PERMS]`: the host path must be a device node.
pub fn parse_device(flag: &str, value: &str) -> std::result::Result<Device, String> {
    let parts: Vec<&str> = value.split(':').collect();
    let is_perms = |s: &str| !s.is_empty() && s.chars().all(|c| "rwm".contains(c));
    let (host, container, permissions) = match parts.as_slice() {
        [host] => (*host, *host, "rwm"),
        [host, perms] if is_perms(perms) => (*host, *host, *perms),
        [host, container] => (*host, *container, "rwm"),
        [host, container, perms] if is_perms(perms) => (*host, *container, *perms),
        _ => return Err(invalid(flag, value, "expected HOST[:CONTAINER][:PERMS], PERMS a subset of rwm")),
    };
    if !host.starts_with('/') || !container.starts_with('/') {
        return Err(invalid(flag, value, "both device paths must be absolute, such as /dev/fuse"));
    }
    let meta = std::fs::metadata(host).map_err(|e| invalid(flag, value, &format!("{host}: {e}")))?;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let kind = match meta.file_type() {
        t if t.is_char_device() => 'c',
        t if t.is_block_device() => 'b',
        _ => return Err(invalid(flag, value, &format!("{host} is not a device node"))),
    };
    let rdev = meta.rdev();
    Ok(Device {
        host: host.into(),
        container: container.to_owned(),
        permissions: permissions.to_owned(),
        kind,
        major: rustix::fs::major(rdev),
        minor: rustix::fs::minor(rdev),
    })
}

/// `--stop-signal`: a name (`SIGTERM`, `TERM`, `SIGRTMIN+3`) or a number.
pub fn parse_signal(flag: &str, value: &str) -> std::result::Result<i32, String> {
    const NAMES: [(&str, i32); 31] = [
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("ILL", 4),
        ("TRAP", 5),
        ("ABRT", 6),
        ("IOT", 6),
        ("BUS", 7),
        ("FPE", 8),
        ("KILL", 9),
        ("USR1", 10),
        ("SEGV", 11),
        ("USR2", 12),
        ("PIPE", 13),
        ("ALRM", 14),
        ("TERM", 15),
        ("STKFLT", 16),
        ("CHLD", 17),
        ("CONT", 18),
        ("STOP", 19),
        ("TSTP", 20),
        ("TTIN", 21),
        ("TTOU", 22),
        ("URG", 23),
        ("XCPU", 24),
        ("XFSZ", 25),
        ("VTALRM", 26),
        ("PROF", 27),
        ("WINCH", 28),
        ("IO", 29),
        ("PWR", 30),
    ];
    let upper = value.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number = if let Ok(n) = name.parse::<i32>() {
        Some(n)
    } else if let Some(&(_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        Some(n)
    } else if let Some(rest) = name.strip_prefix("RTMIN") {
        // glibc's SIGRTMIN is 34; SIGRTMAX 64.
        match rest.strip_prefix('+') {
            Some(n) => n.parse::<i32>().ok().map(|n| 34 + n),
            None => rest.is_empty().then_some(34),
        }
    } else {
        None
    };
    match number {
        Some(n) if (1..=64).contains(&n) => Ok(n),
        _ => Err(invalid(flag, value, "expected a signal name or number, such as SIGTERM, SIGINT or 15")),
    }
}

impl RunFlags {
    /// What cannot work in the chosen mode: a booted container's PID 1 is systemd.
    pub fn check_mode(&self, boot: bool) -> Result<()> {
        if self.init && boot {
            return Err(RuntimeError::Invalid {
                what: "--init".into(),
                reason: "a booted container's PID 1 is systemd: use --init with --boot=false".into(),
            });
        }
        if self.init && !Path::new(INIT_BINARY).is_file() {
            return Err(RuntimeError::Invalid {
                what: "--init".into(),
                reason: format!("{INIT_BINARY} is missing: install Debian's tini package"),
            });
        }
        Ok(())
    }

    /// The capabilities nspawn adds and drops: docker's `--cap-drop ALL --cap-add X`
    /// keeps X, where nspawn would apply the drop last, so ALL is spelled out here.
    fn capabilities(&self) -> (Vec<String>, Vec<String>) {
        let all = || CAPABILITIES.iter().map(|c| format!("CAP_{c}")).collect::<Vec<_>>();
        let expand = |list: &[String]| if list.iter().any(|c| c == "ALL") { all() } else { list.to_vec() };
        let (mut add, mut drop) = (expand(&self.cap_add), expand(&self.cap_drop));
        if self.privileged {
            add = all();
        }
        if self.cap_drop.iter().any(|c| c == "ALL") {
            drop.retain(|c| !add.contains(c));
        } else {
            add.retain(|c| !drop.contains(c));
        }
        (add, drop)
    }
}

/// systemd-nspawn's options for the flags.
pub(crate) fn nspawn_args(spec: &RunSpec, registration: Registration) -> Vec<String> {
    let flags = &spec.flags;
    let mut args = Vec::new();
    let (add, drop) = flags.capabilities();
    if !add.is_empty() {
        args.push(format!("--capability={}", add.join(",")));
    }
    if !drop.is_empty() {
        args.push(format!("--drop-capability={}", drop.join(",")));
    }
    if flags.read_only {
        args.push("--read-only".into());
    }
    for tmpfs in &flags.tmpfs {
        args.push(format!("--tmpfs={}:{}", tmpfs.path, tmpfs.options));
    }
    for device in &flags.devices {
        args.push(format!("--bind={}:{}", device.host.display(), device.container));
    }
    if !flags.dns.is_empty() {
        // racker wrote the container's resolv.conf: nspawn must leave it alone.
        args.push("--resolv-conf=off".into());
    }
    if flags.init && !spec.boot {
        args.push(format!("--bind-ro={INIT_BINARY}:{INIT_PATH}"));
    }
    if registration == Registration::Machined {
        args.extend(flags.limits.unit_properties());
        // `machinectl terminate` and the host's shutdown stop the machine's scope as
        // `racker stop` would: SIGTERM, then SIGKILL after the container's stop timeout
        // (systemd's own default, 90 s, is not docker's).
        args.push(format!("--property=TimeoutStopSec={}", flags.stop_timeout.unwrap_or(DEFAULT_STOP_TIMEOUT)));
        // machined's scope has a device allowlist: the node and its permissions join it.
        for device in &flags.devices {
            args.push(format!("--property=DeviceAllow={} {}", device.host.display(), device.permissions));
        }
    }
    args
}

/// What nspawn runs before the command: the init, which then runs it.
pub(crate) fn init_argv(spec: &RunSpec) -> Vec<String> {
    match spec.flags.init && !spec.boot {
        true => vec![INIT_PATH.into(), "--".into()],
        false => Vec::new(),
    }
}

/// Sets `SYSTEMD_SECCOMP=0` for a privileged container: docker's `--privileged` runs
/// without a system call filter.
pub(crate) fn nspawn_env(spec: &RunSpec, cmd: &mut Command) {
    if spec.flags.privileged {
        cmd.env("SYSTEMD_SECCOMP", "0");
    }
}

/// Writes what the flags put into the container's own writable layer before it starts:
/// `/etc/hosts` entries, `/etc/resolv.conf`, and mount points a read-only root lacks
/// (volumes' too).
pub(crate) fn prepare_rootfs(rootfs: &Path, flags: &RunFlags) -> Result<()> {
    let io = |path: &str| {
        let path = rootfs.join(path.trim_start_matches('/'));
        move |source| RuntimeError::Io { path, source }
    };
    if !flags.add_hosts.is_empty() {
        let mut hosts = rootfs::read_file(rootfs, "/etc/hosts")
            .unwrap_or_else(|| "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".into());
        if !hosts.is_empty() && !hosts.ends_with('\n') {
            hosts.push('\n');
        }
        for (name, ip) in &flags.add_hosts {
            hosts.push_str(&format!("{ip}\t{name}\n"));
        }
        rootfs::unlink_symlink(rootfs, "/etc", "hosts").map_err(io("/etc/hosts"))?;
        rootfs::write_file(rootfs, "/etc", "hosts", hosts.as_bytes(), 0o644).map_err(io("/etc/hosts"))?;
    }
    if !flags.dns.is_empty() {
        let text: String = flags.dns.iter().map(|ip| format!("nameserver {ip}\n")).collect();
        rootfs::unlink_symlink(rootfs, "/etc", "resolv.conf").map_err(io("/etc/resolv.conf"))?;
        rootfs::write_file(rootfs, "/etc", "resolv.conf", text.as_bytes(), 0o644).map_err(io("/etc/resolv.conf"))?;
    }
    // nspawn makes its own mount points where the root is writable; a read-only one
    // must have them already (the snapshot's writable layer takes them).
    let nspawn_mounts: &[&str] = if flags.read_only { &["/dev", "/proc", "/sys", "/run", "/tmp"] } else { &[] };
    let targets = flags.tmpfs.iter().map(|t| t.path.as_str()).chain(flags.volumes.iter().map(|v| v.target.as_str()));
    for dir in nspawn_mounts.iter().copied().chain(targets) {
        rootfs::make_dir(rootfs, dir).map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_as_docker_takes_them() {
        assert_eq!(parse_size("--memory", "64m"), Ok(64 << 20));
        assert_eq!(parse_size("--memory", "1G"), Ok(1 << 30));
        assert_eq!(parse_size("--memory", "512kb"), Ok(512 << 10));
        assert_eq!(parse_size("--memory", "4096"), Ok(4096));
        assert_eq!(parse_size("--memory", "64MiB"), Ok(64 << 20));
        assert!(parse_size("--memory", "64ib").is_err());
        assert!(parse_memory("--memory", "1m").is_err_and(|e| e.contains("6m")));
        assert!(parse_size("--memory", "64x").is_err_and(|e| e.contains("--memory")));
        assert!(parse_size("--memory", "-1m").is_err());
        assert_eq!(parse_cpus("--cpus", "0.5"), Ok(500_000));
        assert!(parse_cpus("--cpus", "0").is_err());
        assert_eq!(parse_pids_limit("--pids-limit", "-1"), Ok(None));
        assert_eq!(parse_capability("--cap-add", "net_admin"), Ok("CAP_NET_ADMIN".into()));
        assert_eq!(parse_capability("--cap-add", "CAP_SYS_ADMIN"), Ok("CAP_SYS_ADMIN".into()));
        assert!(parse_capability("--cap-add", "FLY").is_err());
        assert_eq!(parse_add_host("--add-host", "v6:fd00::1"), Ok(("v6".into(), "fd00::1".parse().expect("ip"))));
        assert_eq!(parse_signal("--stop-signal", "SIGUSR1"), Ok(10));
        assert_eq!(parse_signal("--stop-signal", "RTMIN+3"), Ok(37));
        assert!(parse_signal("--stop-signal", "99").is_err());
        assert_eq!(parse_tmpfs("--tmpfs", "/run:size=1m").map(|t| t.options), Ok("size=1m".into()));
    }

    #[test]
    fn drop_all_then_add_keeps_what_is_added() {
        let flags =
            RunFlags { cap_drop: vec!["ALL".into()], cap_add: vec!["CAP_NET_ADMIN".into()], ..RunFlags::default() };
        let (add, drop) = flags.capabilities();
        assert_eq!(add, ["CAP_NET_ADMIN"]);
        assert_eq!(drop.len(), CAPABILITIES.len() - 1);
        assert!(!drop.contains(&"CAP_NET_ADMIN".to_owned()));
    }

    #[test]
    fn nspawn_gets_the_flags_and_old_records_load_without_them() {
        let flags = RunFlags {
            privileged: true,
            read_only: true,
            tmpfs: vec![Tmpfs { path: "/run".into(), options: "size=1m".into() }],
            dns: vec!["192.0.2.1".parse().expect("ip")],
            init: true,
            limits: Limits { memory: Some(1 << 26), ..Limits::default() },
            ..RunFlags::default()
        };
        let spec = RunSpec { argv: vec!["sh".into()], flags, ..RunSpec::default() };
        let direct = nspawn_args(&spec, Registration::Direct);
        for want in
            ["--read-only", "--tmpfs=/run:size=1m", "--resolv-conf=off", "--bind-ro=/usr/bin/tini-static:/dev/init"]
        {
            assert!(direct.contains(&want.to_owned()), "{want} missing from {direct:?}");
        }
        assert!(direct.iter().any(|a| a.starts_with("--capability=CAP_CHOWN,")), "{direct:?}");
        assert!(!direct.iter().any(|a| a.starts_with("--property=")), "limits are racker's own cgroup's: {direct:?}");
        let machined = nspawn_args(&spec, Registration::Machined);
        assert!(machined.contains(&"--property=MemoryMax=67108864".to_owned()), "{machined:?}");
        assert!(machined.contains(&"--property=TimeoutStopSec=10".to_owned()), "{machined:?}");
        assert_eq!(init_argv(&spec), ["/dev/init", "--"]);
        let booted = RunSpec { boot: true, ..spec };
        assert!(init_argv(&booted).is_empty());

        let old: RunSpec = serde_json::from_value(serde_json::json!({
            "argv": ["sh"], "env": [], "workdir": "/", "user": null, "hostname": null, "binds": [],
            "network": "host", "boot": false, "tty": false, "interactive": false,
        }))
        .expect("a record from before the flags");
        assert_eq!(old.flags, RunFlags::default());
    }
}
