//! Container commands: run, ps, exec, stop, kill, rm, logs, commit.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use racker::reference::familiar_name;
use racker::reference::Reference;
use racker::registry::{self, PullOptions};
use racker::runtime::{self, BootTarget, ExecOptions, Network, RunOptions, RunRequest, SecurityOpt};
use racker::store::ContainerState;
use rustix::process::Signal;

use crate::filters::{label_matches, Filters};
use crate::format::{human_size, since, table};
use crate::template::{go_time, UsageError};
use crate::Format;
use racker::snapshot::Driver;
use racker::store::Store;

#[derive(clap::Args)]
#[command(trailing_var_arg = true)]
pub struct RunArgs {
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Run in the background and print the container id
    #[arg(short, long)]
    detach: bool,
    /// Assign a name to the container
    #[arg(long)]
    name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to pass racker's own)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind mount a host path or a named volume (made if missing), SRC:DST[:ro]
    #[arg(short, long = "volume", value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long)]
    workdir: Option<String>,
    /// Container host name
    #[arg(long)]
    hostname: Option<String>,
    /// User to run as: name|uid[:group|gid]
    #[arg(short, long)]
    user: Option<String>,
    /// Overwrite the image's entrypoint
    #[arg(long)]
    entrypoint: Option<String>,
    /// host (default without -p), none, private (the default network; the default with
    /// -p or -P) or a network of `racker network create`
    #[arg(long, value_name = "NETWORK")]
    network: Option<Network>,
    /// Publish a container's port on the host, [IP:][HOST:]CONTAINER[/tcp|udp]
    #[arg(short = 'p', long = "publish", value_name = "[IP:][HOST:]CONTAINER")]
    publish: Vec<runtime::PortMapping>,
    /// Publish every port the image exposes, on random host ports
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// seccomp=unconfined (no system call filter: faster start) or no-new-privileges
    #[arg(long = "security-opt", value_name = "OPT")]
    security_opt: Vec<SecurityOpt>,
    /// Boot systemd as PID 1 and run the command inside (default: when the image has systemd)
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    boot: Option<bool>,
    /// What a boot starts: default (the image's default.target), minimal (the journal
    /// only; units started later pull in what they need) or a unit name
    #[arg(long, default_value = "default", value_name = "TARGET")]
    boot_target: BootTarget,
    /// Seconds to wait for a booted container to become ready
    #[arg(long, default_value_t = 60)]
    boot_timeout: u64,
    /// overlay or btrfs (default: by the store's file system)
    #[arg(long)]
    storage_driver: Option<Driver>,
    #[command(flatten)]
    flags: Box<crate::runflags::RunFlagArgs>,
    /// Image to run
    image: String,
    /// Command and arguments (everything after the image, options included)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Finds the image, pulling it from its registry as docker does when the store does not have it.
pub fn ensure_image(store: &Store, image: &str) -> Result<String> {
    let curated = crate::curated::resolve(store, image)?;
    let image = curated.as_deref().unwrap_or(image);
    let ids = store.resolve_or_pull(&[image], |_| {
        let reference = Reference::parse(image).with_context(|| format!("no image {image:?} in the store"))?;
        errln!(
            "Unable to find image '{}' locally",
            reference.familiar_name() + reference.tag().map(|t| format!(":{t}")).as_deref().unwrap_or("")
        );
        let pulled = registry::pull(store, &reference, &PullOptions::default(), crate::progress::for_stderr(false))?;
        anyhow::Ok(vec![pulled.id])
    })?;
    Ok(ids[0].to_string())
}

pub fn run(store: &Store, root: &std::path::Path, args: RunArgs) -> Result<i32> {
    let detach = args.detach;
    let (image, request) = run_request(store, args)?;
    if !detach && request.options.flags.restart != runtime::RestartPolicy::No {
        errln!("warning: --restart applies to detached containers (run -d, start): this run ends with its command");
    }
    if detach {
        let record = runtime::run_detached(store, &image, &request, monitor_command(root)?)?;
        outln!("{}", record.id)?;
        return Ok(0);
    }
    Ok(runtime::run(store, &image, &request)?)
}

/// The racker that owns a detached container (`container-monitor`; the id is added).
pub fn monitor_command(root: &std::path::Path) -> Result<std::process::Command> {
    let mut monitor = std::process::Command::new(std::env::current_exe().context("finding the racker binary")?);
    monitor.arg("--root").arg(root).arg("container-monitor");
    Ok(monitor)
}

/// The image (pulled if missing) and what `run` and `create` make of `args`.
pub fn run_request(store: &Store, args: RunArgs) -> Result<(String, RunRequest)> {
    // Flag values first: a bad one makes nothing (no pull, no container).
    let mut flags = args.flags.parse()?;
    if args.rm && flags.restart != runtime::RestartPolicy::No {
        anyhow::bail!("conflicting options --restart and --rm: a container that restarts is not removed when it ends");
    }
    let binds = args.flags.mounts(&args.volume, &mut flags)?;
    let publishing = !args.publish.is_empty() || args.publish_all;
    // Publishing ports asks for a network of the container's own, as it has in docker.
    let network = args.network.unwrap_or(if publishing { Network::Named("private".into()) } else { Network::Host });
    if network == Network::Host && publishing {
        errln!("WARNING: Published ports are discarded when using host network mode");
    }
    let image = ensure_image(store, &args.image)?;
    let request = RunRequest {
        options: RunOptions {
            command: args.command,
            entrypoint: args.entrypoint,
            env: args.env,
            env_files: args.env_file,
            workdir: args.workdir,
            user: args.user,
            hostname: args
                .hostname
                .as_deref()
                .map(|h| runtime::parse_hostname("--hostname", h))
                .transpose()
                .map_err(anyhow::Error::msg)?,
            binds,
            network,
            ports: args.publish,
            publish_all: args.publish_all,
            security: args.security_opt,
            tty: args.tty,
            interactive: args.interactive,
            flags,
        },
        name: args.name,
        remove: args.rm,
        boot: args.boot,
        boot_target: args.boot_target,
        driver: args.storage_driver,
        boot_timeout: Duration::from_secs(args.boot_timeout),
        output: runtime::Console::Inherit,
    };
    Ok((image, request))
}

#[derive(clap::Args)]
pub struct PsArgs {
    /// Show all containers (default: only running ones)
    #[arg(short, long)]
    all: bool,
    /// Only show ids
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids and commands
    #[arg(long)]
    no_trunc: bool,
    /// status=, name=REGEX, id=PREFIX, ancestor=IMAGE, label=KEY[=VALUE], exited=CODE,
    /// before=CONTAINER, since=CONTAINER, network=NAME, volume=NAME, publish=PORT[/PROTO],
    /// expose=PORT[/PROTO]
    /// (repeat: the same key is any of, different keys all of)
    #[arg(short, long = "filter", value_name = "FILTER")]
    filter: Vec<String>,
    /// Show the N last created containers (in every state)
    #[arg(short = 'n', long = "last", value_name = "N")]
    last: Option<usize>,
    /// Show the latest created container (in every state)
    #[arg(short, long)]
    latest: bool,
    /// Show the SIZE column: what the container wrote (and with its image, the virtual size)
    #[arg(short, long)]
    size: bool,
    /// table, json, or a Go template: '{{.Names}}', 'table {{.ID}}\t{{.Status}}' (see the README)
    #[arg(long, default_value = "table", value_name = "FORMAT")]
    format: Format,
}

/// docker's `ps --filter` keys, and the states `status=` takes.
const PS_FILTERS: [&str; 12] = [
    "ancestor", "before", "exited", "expose", "id", "label", "name", "network", "publish", "since", "status", "volume",
];

/// The ports an image exposes (its config's `ExposedPorts`); none when it cannot be read.
fn image_exposed(store: &Store, image: &racker::digest::Digest) -> Vec<runtime::PortMapping> {
    let config = store
        .image(image)
        .ok()
        .and_then(|i| store.read_blob(&i.config_digest).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    config.map(|c| runtime::network::exposed(&c)).unwrap_or_default()
}

/// Whether any of `ports` is in one of `ranges` (none given: every container passes).
fn in_ranges(ranges: &[(u16, u16, runtime::Protocol)], ports: &[runtime::PortMapping]) -> bool {
    ranges.is_empty()
        || ports.iter().any(|p| {
            ranges.iter().any(|(start, end, proto)| p.protocol == *proto && (*start..=*end).contains(&p.container_port))
        })
}

/// `before=`/`since=`: the named container's creation time (an unknown one is an error).
fn created_of(store: &Store, filters: &Filters, key: &str) -> Result<Vec<String>, UsageError> {
    filters
        .values(key)
        .iter()
        .map(|name| {
            store.container(name).map(|c| c.created).map_err(|_| UsageError(format!("No such container: {name}")))
        })
        .collect()
}

/// `publish=PORT[/PROTO]` or `START-END[/PROTO]`: the container ports and protocol.
fn port_filter(key: &str, value: &str) -> Result<(u16, u16, runtime::Protocol), UsageError> {
    let bad = || UsageError(format!("invalid filter '{key}={value}': expected PORT[/tcp|udp] or START-END[/tcp|udp]"));
    let (ports, proto) = value.split_once('/').unwrap_or((value, "tcp"));
    let proto: runtime::Protocol = proto.parse().map_err(|_| bad())?;
    let (start, end) = ports.split_once('-').unwrap_or((ports, ports));
    let (start, end) = (start.parse().map_err(|_| bad())?, end.parse().map_err(|_| bad())?);
    Ok((start, end, proto))
}
const STATES: [&str; 7] = ["created", "restarting", "running", "removing", "paused", "exited", "dead"];

/// docker's column names of the `ps` fields, for `--format 'table …'`.
const PS_HEADERS: [(&str, &str); 12] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Size", "SIZE"),
];

pub fn status_text(c: &runtime::ContainerStatus) -> String {
    let r = &c.record;
    match (c.running, r.state) {
        (true, _) if c.paused => format!("Up {} (Paused)", since(Some(&r.created)).trim_end_matches(" ago")),
        (true, _) => format!("Up {}", since(Some(&r.created)).trim_end_matches(" ago")),
        (false, ContainerState::Created) => "Created".into(),
        (false, ContainerState::Restarting) => {
            format!("Restarting ({}) {}", r.exit_code.unwrap_or(0), since(r.finished.as_deref()))
        }
        (false, _) => match (r.exit_code, &r.finished) {
            (Some(code), finished) => format!("Exited ({code}) {}", since(finished.as_deref())),
            (None, _) => "Exited (unknown)".into(),
        },
    }
}

pub fn ps(store: &Store, args: &PsArgs) -> Result<()> {
    let filters = Filters::parse(&args.filter, &PS_FILTERS)?;
    for status in filters.values("status") {
        if !STATES.contains(&status.as_str()) {
            return Err(UsageError(format!(
                "invalid filter 'status={status}': valid states are {}",
                STATES.join(", ")
            ))
            .into());
        }
    }
    let names = filters
        .values("name")
        .iter()
        .map(|n| regex::Regex::new(n).map_err(|e| UsageError(format!("invalid filter 'name={n}': {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let exited = filters
        .values("exited")
        .iter()
        .map(|c| c.parse::<i32>().map_err(|_| UsageError(format!("invalid filter 'exited={c}': not an exit code"))))
        .collect::<Result<Vec<_>, _>>()?;
    let before = created_of(store, &filters, "before")?;
    let since_created = created_of(store, &filters, "since")?;
    let published =
        filters.values("publish").iter().map(|p| port_filter("publish", p)).collect::<Result<Vec<_>, _>>()?;
    let exposed = filters.values("expose").iter().map(|p| port_filter("expose", p)).collect::<Result<Vec<_>, _>>()?;
    let mut image_ports: std::collections::HashMap<String, Vec<runtime::PortMapping>> = Default::default();
    // network=: a network's name or ID; docker's `bridge` is racker's default network.
    let networks: Vec<String> = filters
        .values("network")
        .iter()
        .map(|n| {
            if n == "bridge" {
                runtime::network::DEFAULT_NETWORK.to_owned()
            } else {
                crate::network::name_of(store, n)
            }
        })
        .collect();
    // ancestor=: the images named (an unknown one matches no container).
    let ancestors: Vec<_> = filters.values("ancestor").iter().filter_map(|a| store.resolve(a).ok()).collect();
    let summaries = store.images()?;
    let images: std::collections::HashMap<String, (String, u64)> = summaries
        .into_iter()
        .map(|i| {
            let shown = i
                .tags
                .first()
                .map(|(r, t)| format!("{}:{t}", familiar_name(r)))
                .unwrap_or_else(|| i.id.short().to_owned());
            (i.id.to_string(), (shown, i.size))
        })
        .collect();
    // -n and -l show stopped containers too, as a state filter does.
    let limit = if args.latest { Some(1) } else { args.last };
    let all = args.all || limit.is_some() || filters.has("status") || filters.has("exited");
    // SIZE costs a walk of each container's writes: only when asked for.
    let sizes = args.size || matches!(&args.format, Format::Template { text, .. } if text.contains(".Size"));
    let mut rows = Vec::new();
    let mut json = Vec::new();
    let mut shown = 0;
    for c in runtime::list(store, all)? {
        let r = &c.record;
        let spec = runtime::spec_of(r).unwrap_or_default();
        let state = match (c.running, c.paused, r.state) {
            (true, true, _) => "paused",
            (true, false, _) => "running",
            (false, _, ContainerState::Created) => "created",
            (false, _, ContainerState::Restarting) => "restarting",
            (false, _, _) => "exited",
        };
        // expose=: what the image exposes and what the container publishes, as docker's.
        let exposes: Vec<runtime::PortMapping> = if exposed.is_empty() {
            Vec::new()
        } else {
            let image =
                image_ports.entry(r.image_id.to_string()).or_insert_with(|| image_exposed(store, &r.image_id)).clone();
            image.into_iter().chain(spec.ports.iter().cloned()).collect()
        };
        let keep = filters.pass("status", |s| s == state)
            && filters.pass("id", |p| r.id.starts_with(p))
            && (names.is_empty() || names.iter().any(|n| n.is_match(&r.name) || n.is_match(&format!("/{}", r.name))))
            && (!filters.has("ancestor") || ancestors.contains(&r.image_id))
            && filters.pass("label", |l| label_matches(l, &spec.flags.labels))
            && (before.is_empty() || before.iter().any(|t| r.created < *t))
            && (since_created.is_empty() || since_created.iter().any(|t| r.created > *t))
            && (networks.is_empty() || networks.contains(&String::from(spec.network.clone())))
            && filters.pass("volume", |v| {
                spec.flags.volumes.iter().any(|m| m.name == v || m.target == v)
                    || spec.binds.iter().any(|b| b.target == v)
            })
            && in_ranges(&published, &spec.ports)
            && in_ranges(&exposed, &exposes)
            && (exited.is_empty() || (state == "exited" && r.exit_code.is_some_and(|code| exited.contains(&code))));
        if !keep || limit.is_some_and(|n| shown >= n) {
            continue;
        }
        shown += 1;
        let id = if args.no_trunc { r.id.clone() } else { r.id[..12.min(r.id.len())].to_owned() };
        if args.quiet {
            outln!("{id}")?;
            continue;
        }
        let mut command = spec.command_line();
        if spec.boot {
            command = if command.is_empty() { "(booted)".into() } else { format!("(booted) {command}") };
        }
        if !args.no_trunc && command.chars().count() > 20 {
            command = command.chars().take(19).collect::<String>() + "…";
        }
        let (image, image_size) =
            images.get(&r.image_id.to_string()).cloned().unwrap_or_else(|| (r.image_id.short().to_owned(), 0));
        // docker's PORTS: `127.0.0.1:8080->80/tcp, …` while it is on a network.
        let ports = runtime::network::ports_of(store, &r.id)
            .unwrap_or_default()
            .iter()
            .map(|p| format!("{}:{}->{}/{}", p.host_ip, p.host_port, p.container_port, p.protocol))
            .collect::<Vec<_>>()
            .join(", ");
        // docker's `2B (virtual 5MB)`: the container's writes, then with its image.
        let size = if sizes {
            let writes = runtime::writes_size(store, &r.id).unwrap_or(0);
            format!("{} (virtual {})", human_size(writes), human_size(writes + image_size))
        } else {
            "0B".to_owned()
        };
        let labels = spec.flags.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        let mounts = spec.binds.iter().map(|b| b.source.display().to_string()).collect::<Vec<_>>().join(",");
        json.push(serde_json::json!({"ID": id, "Image": image, "Command": format!("\"{command}\""),
            "CreatedAt": go_time(Some(&r.created)), "RunningFor": since(Some(&r.created)),
            "Status": status_text(&c), "State": state, "Ports": ports, "Names": r.name,
            "Labels": labels, "Mounts": mounts, "Size": size, "Networks": String::from(spec.network.clone()),
            "Boot": spec.boot, "Pid": r.leader.map(|l| l.pid)}));
        let mut row =
            vec![id, image, format!("\"{command}\""), since(Some(&r.created)), status_text(&c), ports, r.name.clone()];
        if args.size {
            row.push(size);
        }
        rows.push(row);
    }
    if args.quiet {
        return Ok(());
    }
    crate::template::print_rows(&args.format, &PS_HEADERS, &json, || {
        let mut header = vec!["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"];
        if args.size {
            header.push("SIZE");
        }
        table(&header, &rows)
    })
}

#[derive(clap::Args)]
#[command(trailing_var_arg = true)]
pub struct ExecArgs {
    /// Keep standard input open
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-terminal
    #[arg(short, long)]
    tty: bool,
    /// Start the command in the background
    #[arg(short, long)]
    detach: bool,
    /// Set an environment variable (KEY alone takes racker's own value)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Working directory of the command in the container (it must exist)
    #[arg(short, long)]
    workdir: Option<String>,
    /// User to run the command as: NAME|UID[:GROUP|GID]
    #[arg(short, long)]
    user: Option<String>,
    /// Container name or id
    container: String,
    /// Command and arguments (everything after the container, options included)
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub fn exec(store: &Store, args: ExecArgs) -> Result<i32> {
    let opts = ExecOptions {
        argv: args.command,
        env: args.env,
        workdir: args.workdir,
        user: args.user,
        tty: args.tty,
        interactive: args.interactive,
        detach: args.detach,
    };
    Ok(runtime::exec(store, &args.container, &opts)?)
}

pub fn stop(store: &Store, names: &[String], timeout: Option<u64>) -> Result<()> {
    each(names, |n| runtime::stop(store, n, timeout.map(Duration::from_secs)))
}

/// Parses `-s`: a name (`TERM`, `SIGTERM`) or a number.
pub fn parse_signal(s: &str) -> std::result::Result<Signal, String> {
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let sig = match name.as_str() {
        "KILL" => Signal::KILL,
        "TERM" => Signal::TERM,
        "INT" => Signal::INT,
        "HUP" => Signal::HUP,
        "QUIT" => Signal::QUIT,
        "USR1" => Signal::USR1,
        "USR2" => Signal::USR2,
        "STOP" => Signal::STOP,
        "CONT" => Signal::CONT,
        other => {
            other.parse::<i32>().ok().and_then(Signal::from_named_raw).ok_or_else(|| format!("unknown signal {s:?}"))?
        }
    };
    Ok(sig)
}

pub fn kill(store: &Store, names: &[String], signal: Signal) -> Result<()> {
    each(names, |n| runtime::kill(store, n, signal))
}

pub fn remove(store: &Store, names: &[String], force: bool) -> Result<()> {
    each(names, |n| runtime::remove(store, n, force))
}

/// [`each_of`] for containers.
pub fn each(names: &[String], f: impl Fn(&str) -> racker::runtime::Result<()>) -> Result<()> {
    each_of("containers", names, f)
}

/// Applies `f` to every name of `kind` ("volumes", ...), printing each as docker does;
/// fails if any failed. One name's failure is the error itself: one line.
pub fn each_of(kind: &str, names: &[String], f: impl Fn(&str) -> racker::runtime::Result<()>) -> Result<()> {
    if let [name] = names {
        f(name)?;
        outln!("{name}")?;
        return Ok(());
    }
    let mut failed = 0;
    for name in names {
        match f(name) {
            Ok(()) => outln!("{name}")?,
            Err(e) => {
                errln!("Error: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} {kind} failed", names.len());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct CommitArgs {
    /// Commit message (the new history entry's comment)
    #[arg(short, long)]
    message: Option<String>,
    /// Author, e.g. "Jane Doe <jane@example.com>"
    #[arg(short, long)]
    author: Option<String>,
    /// Apply a Dockerfile instruction to the image config (ENV, LABEL, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE)
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    change: Vec<String>,
    /// Suppress the progress output
    #[arg(short, long)]
    quiet: bool,
    /// Container name or id (stopped)
    container: String,
    /// Name for the new image, REPOSITORY[:TAG]
    reference: Option<String>,
}

pub fn commit(store: &Store, args: CommitArgs) -> Result<()> {
    let tags = args.reference.as_deref().map(Reference::parse).transpose().context("invalid image name")?;
    let opts = runtime::CommitOptions {
        message: args.message,
        author: args.author,
        changes: args.change,
        tags: tags.into_iter().collect(),
        progress: crate::progress::for_stderr(args.quiet),
        ..runtime::CommitOptions::default()
    };
    let id =
        runtime::commit(store, &args.container, &opts).with_context(|| format!("committing {}", args.container))?;
    outln!("{id}")?;
    Ok(())
}
