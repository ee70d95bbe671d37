//! Observing containers (`top`, `stats`, `diff`, `export`), `inspect` of containers and
//! images, `container prune`, and docker's `container` command group.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use racker::runtime::{self, Usage};
use racker::store::Store;

use crate::format::{human_size, table};
use crate::Format;

#[derive(clap::Args)]
pub struct TopArgs {
    /// Container, by name or id (prefix)
    container: String,
    /// Options for ps (default -ef); they must show the PID column
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "PS OPTIONS")]
    ps_options: Vec<String>,
}

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Print one sample and exit instead of refreshing every second
    #[arg(long)]
    no_stream: bool,
    /// Show full container ids
    #[arg(long)]
    no_trunc: bool,
    /// table, json, or a Go template: '{{.ID}}', 'table {{.ID}}\t{{.Name}}' (see the README)
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
    /// Containers (default: every running one)
    containers: Vec<String>,
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// Container, by name or id (prefix)
    container: String,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Write to a file (mode 0600) instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Container, by name or id (prefix)
    container: String,
}

/// The verbs that look at a container, flattened into racker's command list.
#[derive(clap::Subcommand)]
pub enum ObserveCommand {
    /// Show the running processes of a container (the host's ps, its rows for the container)
    Top(TopArgs),
    /// Show containers' CPU, memory, network, block I/O and task use, refreshed every second
    Stats(StatsArgs),
    /// Show the files a container added (A), changed (C) and deleted (D)
    Diff(DiffArgs),
    /// Write a container's root file system as a tar archive
    Export(ExportArgs),
}

/// What a lookup by name may find (`inspect --type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectType {
    Container,
    Image,
    Network,
    Volume,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// Only this kind of object (default: a container, else an image, a network, a
    /// volume, in docker's order)
    #[arg(long = "type", value_enum)]
    kind: Option<ObjectType>,
    /// A Go template rendered for each object ('{{.State.Status}}', '{{json .Config}}')
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Containers, images, networks or volumes, by name (or id prefix)
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(clap::Args)]
pub struct ContainerInspectArgs {
    /// A Go template rendered for each container ('{{.State.Status}}', '{{json .Config}}')
    #[arg(short, long, value_name = "TEMPLATE")]
    format: Option<String>,
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    force: bool,
    /// until=TIMESTAMP|DURATION, label=KEY[=VALUE], label!=KEY[=VALUE]
    #[arg(long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
}

#[derive(clap::Args)]
pub struct StopArgs {
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Seconds to wait before killing (default: the container's --stop-timeout, or 10)
    #[arg(short, long)]
    pub time: Option<u64>,
}

#[derive(clap::Args)]
pub struct KillArgs {
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Signal to send, by name (KILL, SIGTERM, HUP) or number
    #[arg(short, long, default_value = "KILL", value_parser = crate::containers::parse_signal)]
    pub signal: rustix::process::Signal,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Containers, by name or id (prefix)
    #[arg(required = true)]
    pub containers: Vec<String>,
    /// Kill running containers first
    #[arg(short, long)]
    pub force: bool,
}

/// docker's `container` group: the container verbs again under one name, and the
/// ones only it has (`prune`; `inspect` that finds containers only).
#[derive(clap::Subcommand)]
pub enum ContainerCommand {
    /// List containers
    #[command(visible_aliases = ["ps", "list"])]
    Ls(crate::containers::PsArgs),
    /// Run a command in a new container
    Run(Box<crate::containers::RunArgs>),
    /// Run a command in a running container
    Exec(crate::containers::ExecArgs),
    /// Stop containers
    Stop(StopArgs),
    /// Send a signal to containers
    Kill(KillArgs),
    /// Remove containers
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Show a container's output
    Logs(crate::logs::LogsArgs),
    /// Create a new image from a stopped container's changes
    Commit(crate::containers::CommitArgs),
    /// Show containers as JSON
    Inspect(ContainerInspectArgs),
    /// Remove all stopped containers
    Prune(PruneArgs),
    #[command(flatten)]
    Lifecycle(crate::lifecycle::LifecycleCommand),
    #[command(flatten)]
    Observe(ObserveCommand),
}

/// Runs an observing verb; returns racker's exit status.
pub fn run(store: &Store, command: ObserveCommand) -> Result<i32> {
    match command {
        ObserveCommand::Top(args) => {
            let rows = runtime::top(store, &args.container, &args.ps_options)?;
            crate::cli::print(&(rows.join("\n") + "\n"))?;
        }
        ObserveCommand::Stats(args) => stats(store, &args)?,
        ObserveCommand::Diff(args) => {
            let changes = runtime::diff(store, &args.container)?;
            let text: String = changes.iter().map(|c| format!("{} {}\n", c.kind, c.path)).collect();
            crate::cli::print(&text)?;
        }
        ObserveCommand::Export(args) => export(store, &args)?,
    }
    Ok(0)
}

/// The verbs only the `container` group has.
pub fn run_group(store: &Store, command: ContainerCommand) -> Result<i32> {
    match command {
        ContainerCommand::Inspect(args) => inspect(
            store,
            &InspectArgs { kind: Some(ObjectType::Container), format: args.format, names: args.containers },
        ),
        ContainerCommand::Prune(args) => prune(store, &args).map(|()| 0),
        _ => bail!("this container verb is handled as its top-level one"),
    }
}

fn export(store: &Store, args: &ExportArgs) -> Result<()> {
    let Some(path) = &args.output else {
        if std::io::stdout().is_terminal() {
            bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
        }
        let mut out = std::io::BufWriter::new(crate::cli::CheckedStdout::default());
        let result = runtime::export(store, &args.container, &mut out);
        let flushed = out.flush();
        let stdout_failed = out.into_inner().ok().and_then(|o| o.failed);
        if let Some(e) = stdout_failed {
            return Err(crate::cli::StdoutError(e).into());
        }
        result?;
        return flushed.map_err(|e| crate::cli::StdoutError(e).into());
    };
    // The container first: a name that is none must not cost the file its contents.
    store.container(&args.container)?;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow!("{}: {e}", path.display()))?;
    // An existing file keeps its mode on open: the container's files are no one else's.
    file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let written = runtime::export(store, &args.container, &mut out)
        .map_err(anyhow::Error::from)
        .and_then(|()| out.flush().map_err(|e| anyhow!("{}: {e}", path.display())));
    if written.is_err() {
        let _ = std::fs::remove_file(path);
    }
    written
}

/// One container's sample: when, and its use then.
struct Sample {
    at: Instant,
    usage: Usage,
}

fn sample_all(store: &Store, names: &[String]) -> Result<Vec<(runtime::ContainerStatus, Sample)>> {
    let all = runtime::list(store, true)?;
    let mut samples = Vec::new();
    if names.is_empty() {
        for status in all.into_iter().filter(|s| s.running) {
            // One that stopped meanwhile is simply not shown.
            if let Ok(usage) = runtime::usage(store, &status.record.id) {
                samples.push((status, Sample { at: Instant::now(), usage }));
            }
        }
        return Ok(samples);
    }
    for name in names {
        let record = store.container(name)?;
        let status =
            all.iter().find(|s| s.record.id == record.id).cloned().ok_or_else(|| anyhow!("no container {name}"))?;
        let usage = runtime::usage(store, &record.id)?;
        samples.push((status, Sample { at: Instant::now(), usage }));
    }
    Ok(samples)
}

fn stats(store: &Store, args: &StatsArgs) -> Result<()> {
    let mut before = sample_all(store, &args.containers)?;
    let interval = if args.no_stream { Duration::from_millis(500) } else { Duration::from_secs(1) };
    loop {
        std::thread::sleep(interval);
        let now = sample_all(store, &args.containers)?;
        let rows: Vec<StatsRow> = now
            .iter()
            .map(|(status, sample)| {
                let earlier = before.iter().find(|(s, _)| s.record.id == status.record.id).map(|(_, e)| e);
                StatsRow::new(status, sample, earlier, args.no_trunc)
            })
            .collect();
        let text = match &args.format {
            Format::Json => rows.iter().map(|r| r.json().to_string() + "\n").collect(),
            Format::Table => table(
                &["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"],
                &rows.iter().map(StatsRow::cells).collect::<Vec<_>>(),
            ),
            Format::Template { table, text } => {
                let json: Vec<serde_json::Value> = rows.iter().map(StatsRow::json).collect();
                crate::template::render_rows(&crate::template::compile(text)?, *table, &STATS_HEADERS, &json)?
            }
        };
        if args.no_stream {
            crate::cli::print(&text)?;
            return Ok(());
        }
        // docker's redraw: clear the screen, then the table from the top.
        let clear = if std::io::stdout().is_terminal() { "\x1b[2J\x1b[H" } else { "" };
        crate::cli::print(&format!("{clear}{text}"))?;
        before = now;
    }
}

/// docker's column names of the `stats` fields, for `--format 'table …'`.
const STATS_HEADERS: [(&str, &str); 9] = [
    ("ID", "CONTAINER ID"),
    ("Container", "CONTAINER"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// One line of `stats`, formatted as docker formats it.
struct StatsRow {
    id: String,
    name: String,
    cpu: String,
    mem_usage: String,
    mem_perc: String,
    net: String,
    block: String,
    pids: String,
}

impl StatsRow {
    fn new(status: &runtime::ContainerStatus, now: &Sample, before: Option<&Sample>, no_trunc: bool) -> StatsRow {
        let r = &status.record;
        let u = &now.usage;
        let cpu = before
            .map(|b| {
                let wall = now.at.duration_since(b.at).as_nanos().max(1) as f64;
                u.cpu_ns.saturating_sub(b.usage.cpu_ns) as f64 / wall * 100.0
            })
            .unwrap_or(0.0);
        let mem_perc = if u.memory_limit > 0 { u.memory as f64 / u.memory_limit as f64 * 100.0 } else { 0.0 };
        StatsRow {
            id: if no_trunc { r.id.clone() } else { r.id[..12.min(r.id.len())].to_owned() },
            name: r.name.clone(),
            cpu: format!("{cpu:.2}%"),
            mem_usage: format!("{} / {}", binary_size(u.memory), binary_size(u.memory_limit)),
            mem_perc: format!("{mem_perc:.2}%"),
            net: u.net.map_or_else(|| "--".to_owned(), |(rx, tx)| format!("{} / {}", human_size(rx), human_size(tx))),
            block: format!("{} / {}", human_size(u.block.0), human_size(u.block.1)),
            pids: u.pids.to_string(),
        }
    }

    fn cells(&self) -> Vec<String> {
        [&self.id, &self.name, &self.cpu, &self.mem_usage, &self.mem_perc, &self.net, &self.block, &self.pids]
            .map(String::clone)
            .to_vec()
    }

    /// docker's `--format json` line.
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "BlockIO": self.block, "CPUPerc": self.cpu, "Container": self.name, "ID": self.id,
            "MemPerc": self.mem_perc, "MemUsage": self.mem_usage, "Name": self.name,
            "NetIO": self.net, "PIDs": self.pids,
        })
    }
}

/// Binary units with up to four significant digits, as docker's memory column:
/// `1.59MiB`, `7.668GiB`, `64MiB`.
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let int_len = (value.trunc() as u64).to_string().len();
    let decimals = 4usize.saturating_sub(int_len);
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text };
    format!("{text}{}", UNITS[unit])
}

fn prune(store: &Store, args: &PruneArgs) -> Result<()> {
    let filter = runtime::PruneFilter::parse(&args.filters, chrono::Utc::now())?;
    if !args.force {
        crate::cli::print(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue? [y/N] ",
        )?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).map_err(|e| anyhow!("reading the answer: {e}"))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Ok(());
        }
    }
    let removed = runtime::prune(store, &filter)?;
    let mut text = String::new();
    if !removed.is_empty() {
        text.push_str("Deleted Containers:\n");
        for (id, _) in &removed {
            text.push_str(id);
            text.push('\n');
        }
        text.push('\n');
    }
    text.push_str(&format!("Total reclaimed space: {}\n", human_size(removed.iter().map(|(_, size)| size).sum())));
    crate::cli::print(&text)?;
    Ok(())
}

/// `inspect`: containers and images as one JSON array; a name both have is the
/// container's unless `--type` says otherwise, as in docker. Names that match nothing
/// are reported and make the status 1, after the others are printed.
pub fn inspect(store: &Store, args: &InspectArgs) -> Result<i32> {
    // A bad template fails before anything is looked up, as docker's.
    let template = crate::template::inspect_template(args.format.as_deref())?;
    let mut found = Vec::new();
    let mut missing = 0;
    for name in &args.names {
        let object = match args.kind {
            Some(ObjectType::Container) => match store.container(name) {
                Ok(record) => inspect_container(store, &record),
                Err(_) => Err(format!("No such container: {name}")),
            },
            Some(ObjectType::Image) => crate::images::image_json(store, name).map_err(|e| format!("{e:#}")),
            Some(ObjectType::Network) => runtime::network::inspect(store, &crate::network::name_of(store, name))
                .map(|r| crate::network::network_json(&r))
                .map_err(|e| format!("{e:#}")),
            Some(ObjectType::Volume) => {
                store.volume(name).map(|v| crate::volumes::json(&v)).map_err(|e| format!("{e:#}"))
            }
            None => inspect_any(store, name),
        };
        match object {
            Ok(json) => found.push(json),
            Err(message) => {
                crate::cli::eprint(&format!("Error: {message}\n"));
                missing += 1;
            }
        }
    }
    crate::template::print_objects(template.as_ref(), &found)?;
    Ok(if missing > 0 { 1 } else { 0 })
}

/// A container's inspect JSON, with its network.
fn inspect_container(store: &Store, record: &racker::store::ContainerRecord) -> Result<serde_json::Value, String> {
    let mut json = container_json(store, record);
    crate::network::add_to_inspect(store, record, &mut json).map(|()| json).map_err(|e| format!("{e:#}"))
}

/// The first object named `name` in docker's order: a container, an image, a network,
/// a volume; an image that exists but cannot be read says why.
fn inspect_any(store: &Store, name: &str) -> Result<serde_json::Value, String> {
    if let Ok(record) = store.container(name) {
        return inspect_container(store, &record);
    }
    if !matches!(store.resolve(name), Err(racker::store::StoreError::ImageNotFound(_))) {
        return crate::images::image_json(store, name).map_err(|e| format!("{e:#}"));
    }
    if let Ok(record) = runtime::network::inspect(store, &crate::network::name_of(store, name)) {
        return Ok(crate::network::network_json(&record));
    }
    if let Ok(volume) = store.volume(name) {
        return Ok(crate::volumes::json(&volume));
    }
    Err(format!("No such object: {name}"))
}

/// docker's container JSON: the run flags (`runflags::container_json`), and the
/// state, configuration, mounts and storage of the container.
fn container_json(store: &Store, record: &racker::store::ContainerRecord) -> serde_json::Value {
    let spec = runtime::spec_of(record).unwrap_or_default();
    let status = runtime::list(store, true).ok().and_then(|all| all.into_iter().find(|s| s.record.id == record.id));
    let (running, paused) = status.as_ref().map_or((false, false), |s| (s.running, s.paused));
    let state = match (running, paused, record.state) {
        (true, true, _) => "paused",
        (true, false, _) => "running",
        (false, _, racker::store::ContainerState::Created) => "created",
        (false, _, racker::store::ContainerState::Restarting) => "restarting",
        _ => "exited",
    };
    const NEVER: &str = "0001-01-01T00:00:00Z";
    let started = record.leader.filter(|_| running).and_then(|l| started_at(l.start));
    let mut json = crate::runflags::container_json(record);
    let graph = graph_driver(store, record, &spec);
    let binds: Vec<String> = spec
        .binds
        .iter()
        .map(|b| format!("{}:{}{}", b.source.display(), b.target, if b.read_only { ":ro" } else { "" }))
        .collect();
    let mounts: Vec<serde_json::Value> = spec
        .binds
        .iter()
        .map(|b| {
            serde_json::json!({"Type": "bind", "Source": b.source, "Destination": b.target,
                "Mode": if b.read_only { "ro" } else { "" }, "RW": !b.read_only, "Propagation": "rprivate"})
        })
        .collect();
    let extra = serde_json::json!({
        "Name": format!("/{}", record.name),
        "Path": spec.argv.first().cloned().unwrap_or_default(),
        "Args": spec.argv.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": state,
            "Running": running,
            "Paused": paused,
            "Restarting": state == "restarting",
            "OOMKilled": false,
            "Dead": false,
            "Pid": record.leader.filter(|_| running).map_or(0, |l| l.pid),
            "ExitCode": record.exit_code.unwrap_or(0),
            "Error": "",
            "StartedAt": started.as_deref().unwrap_or(NEVER),
            "FinishedAt": record.finished.as_deref().unwrap_or(NEVER),
        },
        "Image": record.image_id.to_string(),
        "Driver": record.snapshotter,
        "Platform": "linux",
        "Mounts": mounts,
        "GraphDriver": graph,
        "Boot": spec.boot,
    });
    merge(&mut json, extra);
    let config = serde_json::json!({
        "Hostname": spec.hostname.clone().unwrap_or_default(),
        "User": spec.user.clone().unwrap_or_default(),
        "Env": spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "Cmd": spec.argv,
        "WorkingDir": spec.workdir,
        "Tty": spec.tty,
        "OpenStdin": spec.interactive,
    });
    merge(&mut json["Config"], config);
    merge(&mut json["HostConfig"], serde_json::json!({ "Binds": binds, "AutoRemove": spec.remove }));
    json
}

/// Sets every key of `extra` in `json` (objects merged key by key).
fn merge(json: &mut serde_json::Value, extra: serde_json::Value) {
    match (json, extra) {
        (serde_json::Value::Object(into), serde_json::Value::Object(from)) => {
            for (k, v) in from {
                merge(into.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot, value) => *slot = value,
    }
}

/// When a process started, from its start time in clock ticks after boot.
fn started_at(ticks: i64) -> Option<String> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let boot: i64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    let at = chrono::DateTime::from_timestamp(boot + ticks / 100, ((ticks % 100) * 10_000_000) as u32)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

/// docker's `GraphDriver`: the storage driver and where the container's files are.
fn graph_driver(store: &Store, record: &racker::store::ContainerRecord, spec: &runtime::RunSpec) -> serde_json::Value {
    let merged = spec.rootfs.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let snapshotter = racker::snapshot::open(store, record.snapshotter.parse().ok()).ok();
    let upper = snapshotter.as_ref().and_then(|s| s.upper_dir(&record.id).ok());
    let data = match upper {
        Some(upper) => {
            let lower: Vec<String> = store
                .image(&record.image_id)
                .map(|image| {
                    image.layers.iter().rev().map(|l| store.layer_dir(l.layer_id).display().to_string()).collect()
                })
                .unwrap_or_default();
            let work = upper.with_file_name("work");
            serde_json::json!({"LowerDir": lower.join(":"), "MergedDir": merged, "UpperDir": upper, "WorkDir": work})
        }
        None => serde_json::json!({"MergedDir": merged}),
    };
    serde_json::json!({"Name": record.snapshotter, "Data": data})
}

#[cfg(test)]
mod tests {
    use super::binary_size;

    #[test]
    fn memory_sizes_read_as_dockers() {
        assert_eq!(binary_size(64 * 1024 * 1024), "64MiB");
        assert_eq!(binary_size(1_667_000), "1.59MiB");
        assert_eq!(binary_size(512), "512B");
        assert_eq!(binary_size(8_233_000_000), "7.668GiB");
    }
}
