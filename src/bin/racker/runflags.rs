//! docker's common `run` (and `create`) flags: privileges, devices, mounts, labels,
//! name resolution, resource limits, init and stopping. Values are taken as text and
//! checked by the library's parsers in [`RunFlagArgs::parse`], so that a bad one is
//! racker's failure (exit 125, one line naming the flag) before anything is made.

use anyhow::Result;
use racker::runtime::{self, RunFlags};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct RunFlagArgs {
    /// All capabilities and no system call filter
    #[arg(long)]
    privileged: bool,
    /// Add a capability (NET_ADMIN, CAP_NET_ADMIN or ALL)
    #[arg(long = "cap-add", value_name = "CAP")]
    cap_add: Vec<String>,
    /// Drop a capability (NET_RAW, CAP_NET_RAW or ALL)
    #[arg(long = "cap-drop", value_name = "CAP")]
    cap_drop: Vec<String>,
    /// Add a host device, HOST[:CONTAINER][:PERMS] (PERMS a subset of rwm)
    #[arg(long, value_name = "DEVICE")]
    device: Vec<String>,
    /// Mount the container's root file system read-only
    #[arg(long)]
    read_only: bool,
    /// Mount a tmpfs, PATH[:OPTIONS] (e.g. /run:size=64m)
    #[arg(long, value_name = "PATH[:OPTIONS]")]
    tmpfs: Vec<String>,
    /// Mount a bind, tmpfs or named volume: type=bind|tmpfs|volume,source=…,target=…[,readonly]
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// Set a label on the container, KEY=VALUE
    #[arg(short = 'l', long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Add a line to /etc/hosts, NAME:IP
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Set a name server in /etc/resolv.conf
    #[arg(long, value_name = "IP")]
    dns: Vec<String>,
    /// Memory limit (e.g. 64m, 1g); no swap beyond it
    #[arg(short = 'm', long, value_name = "SIZE")]
    memory: Option<String>,
    /// Number of CPUs (e.g. 0.5)
    #[arg(long, value_name = "CPUS")]
    cpus: Option<String>,
    /// Most tasks the container may have at once (-1: no limit)
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    /// Run an init (tini) as PID 1 that reaps zombies and forwards signals (command mode)
    #[arg(long)]
    init: bool,
    /// Signal `racker stop` sends first (command mode; default SIGTERM)
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Seconds `racker stop` waits before SIGKILL (default 10)
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    stop_timeout: Option<String>,
    /// Start a detached container again when it ends: no, on-failure[:N], always or
    /// unless-stopped
    #[arg(long, value_name = "POLICY", default_value = "no")]
    restart: String,
}

impl RunFlagArgs {
    /// Checks every value; the first bad one is the error.
    pub fn parse(&self) -> Result<RunFlags> {
        fn each<T>(flag: &str, values: &[String], parse: impl Fn(&str, &str) -> Result<T, String>) -> Result<Vec<T>> {
            values.iter().map(|v| parse(flag, v).map_err(anyhow::Error::msg)).collect()
        }
        let stop_timeout = match &self.stop_timeout {
            Some(v) => Some(v.trim().parse::<u64>().map_err(|_| {
                anyhow::anyhow!("invalid --stop-timeout {v:?}: expected a whole number of seconds, such as 30")
            })?),
            None => None,
        };
        let one = |flag: &str, value: &Option<String>, parse: fn(&str, &str) -> Result<u64, String>| {
            value.as_deref().map(|v| parse(flag, v)).transpose().map_err(anyhow::Error::msg)
        };
        Ok(RunFlags {
            privileged: self.privileged,
            cap_add: each("--cap-add", &self.cap_add, runtime::parse_capability)?,
            cap_drop: each("--cap-drop", &self.cap_drop, runtime::parse_capability)?,
            devices: each("--device", &self.device, runtime::parse_device)?,
            read_only: self.read_only,
            tmpfs: each("--tmpfs", &self.tmpfs, runtime::parse_tmpfs)?,
            volumes: Vec::new(),
            labels: each("--label", &self.label, runtime::parse_label)?.into_iter().collect(),
            add_hosts: each("--add-host", &self.add_host, runtime::parse_add_host)?,
            dns: each("--dns", &self.dns, runtime::parse_dns)?,
            limits: runtime::Limits {
                memory: one("--memory", &self.memory, runtime::parse_memory)?,
                cpus: one("--cpus", &self.cpus, runtime::parse_cpus)?,
                pids: self
                    .pids_limit
                    .as_deref()
                    .map(|v| runtime::parse_pids_limit("--pids-limit", v))
                    .transpose()
                    .map_err(anyhow::Error::msg)?
                    .flatten(),
            },
            init: self.init,
            stop_signal: self
                .stop_signal
                .as_deref()
                .map(|v| runtime::parse_signal("--stop-signal", v))
                .transpose()
                .map_err(anyhow::Error::msg)?,
            stop_timeout,
            restart: runtime::parse_restart("--restart", &self.restart).map_err(anyhow::Error::msg)?,
        })
    }
}

impl RunFlagArgs {
    /// `-v` values and `--mount`: the binds (host paths, as `-v` binds them), with
    /// tmpfs mounts and named volumes added to `flags`.
    pub fn mounts(&self, volume: &[String], flags: &mut RunFlags) -> Result<Vec<runtime::Bind>> {
        let mut binds = Vec::new();
        let parsed = volume
            .iter()
            .map(|v| runtime::parse_volume_flag("-v", v))
            .chain(self.mount.iter().map(|v| runtime::parse_mount("--mount", v)));
        for mount in parsed {
            match mount.map_err(anyhow::Error::msg)? {
                runtime::MountArg::Bind(bind) => binds.push(bind),
                runtime::MountArg::Tmpfs(tmpfs) => flags.tmpfs.push(tmpfs),
                runtime::MountArg::Volume(volume) => flags.volumes.push(volume),
            }
        }
        Ok(binds)
    }
}

/// A container as `inspect` shows it: its record, and its flags where docker's
/// `inspect` has them (`Config` and `HostConfig`).
pub fn container_json(record: &racker::store::ContainerRecord) -> serde_json::Value {
    let spec = runtime::spec_of(record).unwrap_or_default();
    let flags = &spec.flags;
    let l = &flags.limits;
    serde_json::json!({
        "Id": record.id,
        "Name": record.name,
        "Image": record.image_id.to_string(),
        "Created": record.created,
        "State": { "Status": format!("{:?}", record.state).to_lowercase(), "ExitCode": record.exit_code },
        "RestartCount": record.restart_count,
        "Config": {
            "Cmd": spec.argv,
            "Labels": flags.labels,
            "StopSignal": flags.stop_signal,
            "StopTimeout": flags.stop_timeout,
        },
        "HostConfig": {
            "Privileged": flags.privileged,
            "CapAdd": flags.cap_add,
            "CapDrop": flags.cap_drop,
            "Devices": flags.devices.iter().map(|d| serde_json::json!({
                "PathOnHost": d.host, "PathInContainer": d.container, "CgroupPermissions": d.permissions,
            })).collect::<Vec<_>>(),
            "ReadonlyRootfs": flags.read_only,
            "Mounts": flags.volumes.iter().map(|v| serde_json::json!({
                "Type": "volume", "Name": v.name, "Destination": v.target, "RW": !v.read_only,
            })).chain(spec.binds.iter().filter(|b| !flags.volumes.iter().any(|v| v.target == b.target)).map(|b| serde_json::json!({
                "Type": "bind", "Source": b.source, "Destination": b.target, "RW": !b.read_only,
            }))).collect::<Vec<_>>(),
            "Tmpfs": flags.tmpfs.iter().map(|t| (t.path.clone(), t.options.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "ExtraHosts": flags.add_hosts.iter().map(|(n, ip)| format!("{n}:{ip}")).collect::<Vec<_>>(),
            "Dns": flags.dns,
            "Memory": l.memory.unwrap_or(0),
            "NanoCpus": l.cpus.unwrap_or(0) * 1000,
            "PidsLimit": l.pids,
            "Init": flags.init,
            "RestartPolicy": { "Name": flags.restart.name(), "MaximumRetryCount": flags.restart.max_retries() },
        },
    })
}
