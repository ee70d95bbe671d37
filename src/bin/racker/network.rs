//! `racker network create|ls|rm|inspect` and `racker port`.

use anyhow::Result;
use racker::runtime::network::{self, NetworkRecord};
use racker::runtime::Protocol;
use racker::store::Store;

use crate::filters::Filters;
use crate::format::table;
use crate::template::UsageError;
use crate::Format;

#[derive(clap::Subcommand)]
pub enum NetworkCommand {
    /// Create a private network (a bridge with NAT, brought up with its first container)
    Create {
        /// IPv4 subnet, e.g. 10.90.0.0/24 (default: a free /24 of 10.89.0.0/16)
        #[arg(long)]
        subnet: Option<String>,
        /// Name of the network
        name: String,
    },
    /// List networks
    #[command(alias = "list")]
    Ls {
        /// table, json, or a Go template: '{{.ID}}', 'table {{.ID}}\t{{.Name}}' (see the README)
        #[arg(long, default_value = "table", value_name = "FORMAT")]
        format: Format,
        /// Only show IDs
        #[arg(short, long)]
        quiet: bool,
        /// Do not truncate IDs (racker's are ten digits: always whole)
        #[arg(long)]
        no_trunc: bool,
        /// name=PART, id=PART, driver=bridge, type=custom|builtin (repeat: the same key is
        /// any of, different keys all of)
        #[arg(short, long = "filter", value_name = "FILTER")]
        filter: Vec<String>,
    },
    /// Remove networks (refused while a container uses one)
    #[command(alias = "remove")]
    Rm {
        /// Networks, by name
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Show networks as JSON, with their containers
    Inspect {
        /// A Go template rendered for each network ('{{.Name}}', '{{json .IPAM}}')
        #[arg(short, long, value_name = "TEMPLATE")]
        format: Option<String>,
        /// Networks, by name
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every network no container uses (the default network stays)
    Prune {
        /// Do not ask for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

/// A network as docker's `network inspect` shows one (the fields that apply).
pub fn network_json(r: &NetworkRecord) -> serde_json::Value {
    let containers: serde_json::Map<String, serde_json::Value> = r
        .containers
        .iter()
        .map(|(id, a)| {
            let ports: Vec<String> = a.ports.iter().map(ToString::to_string).collect();
            (
                id.clone(),
                serde_json::json!({
                    "Name": a.name,
                    "IPv4Address": format!("{}/{}", a.address, r.subnet.prefix),
                    "Ports": ports,
                }),
            )
        })
        .collect();
    serde_json::json!({
        "Name": r.name,
        "Id": r.id,
        "Created": r.created,
        "Driver": "bridge",
        "IPAM": { "Config": [{ "Subnet": r.subnet.to_string(), "Gateway": r.gateway.to_string() }] },
        "Options": { "com.docker.network.bridge.name": r.bridge },
        "Containers": containers,
    })
}

/// A network's name from its name or its ID (as `network ls -q` prints them): a name
/// wins, then the one network whose ID starts with `name`; else `name` itself, for the
/// library to say it is not found.
pub fn name_of(store: &Store, name: &str) -> String {
    let Ok(all) = network::list(store) else { return name.to_owned() };
    if all.iter().any(|r| r.name == name) {
        return name.to_owned();
    }
    match all.iter().filter(|r| r.id.starts_with(name)).collect::<Vec<_>>()[..] {
        [one] if !name.is_empty() => one.name.clone(),
        _ => name.to_owned(),
    }
}

pub fn run(store: &Store, command: NetworkCommand) -> Result<()> {
    match command {
        NetworkCommand::Create { subnet, name } => {
            let record = network::create(store, &name, subnet.as_deref())?;
            outln!("{}", record.id)?;
        }
        NetworkCommand::Ls { format, quiet, no_trunc: _, filter } => {
            let filters = Filters::parse(&filter, &["driver", "id", "name", "type"])?;
            for kind in filters.values("type") {
                if kind != "custom" && kind != "builtin" {
                    return Err(
                        UsageError(format!("invalid filter 'type={kind}': valid types are custom, builtin")).into()
                    );
                }
            }
            let all: Vec<NetworkRecord> = network::list(store)?
                .into_iter()
                .filter(|r| {
                    let kind = if r.name == network::DEFAULT_NETWORK { "builtin" } else { "custom" };
                    filters.pass("name", |n| r.name.contains(n))
                        && filters.pass("id", |i| r.id.contains(i))
                        && filters.pass("driver", |d| d == "bridge")
                        && filters.pass("type", |t| t == kind)
                })
                .collect();
            if quiet {
                for r in &all {
                    outln!("{}", r.id)?;
                }
            } else {
                let json: Vec<serde_json::Value> = all
                    .iter()
                    .map(|r| {
                        serde_json::json!({"ID": r.id, "Name": r.name, "Driver": "bridge", "Scope": "local",
                            "Subnet": r.subnet.to_string(), "Gateway": r.gateway.to_string(), "Bridge": r.bridge,
                            "Containers": r.containers.len(), "CreatedAt": r.created, "Internal": false,
                            "IPv6": false, "Labels": ""})
                    })
                    .collect();
                let headers = [("ID", "NETWORK ID")];
                crate::template::print_rows(&format, &headers, &json, || {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|r| vec![r.id.clone(), r.name.clone(), "bridge".into(), "local".into()])
                        .collect();
                    table(&["NETWORK ID", "NAME", "DRIVER", "SCOPE"], &rows)
                })?;
            }
        }
        NetworkCommand::Rm { networks } => {
            crate::containers::each_of("networks", &networks, |name| network::remove(store, &name_of(store, name)))?;
        }
        NetworkCommand::Prune { force } => {
            let warning = "WARNING! This will remove all custom networks not used by at least one container.";
            if !force && !crate::prune::confirmed(warning)? {
                return Ok(());
            }
            let removed = network::prune(store)?;
            if !removed.is_empty() {
                outln!("Deleted Networks:\n{}", removed.join("\n"))?;
            }
        }
        NetworkCommand::Inspect { format, networks } => {
            let template = crate::template::inspect_template(format.as_deref())?;
            let records =
                networks.iter().map(|n| network::inspect(store, &name_of(store, n))).collect::<Result<Vec<_>, _>>()?;
            let json: Vec<serde_json::Value> = records.iter().map(network_json).collect();
            crate::template::print_objects(template.as_ref(), &json)?;
        }
    }
    Ok(())
}

/// `racker port CONTAINER [PORT[/PROTO]]`: docker's lines, `80/tcp -> 0.0.0.0:8080`
/// (only the host side, `0.0.0.0:8080`, when a port is given).
pub fn port(store: &Store, container: &str, port: Option<&str>) -> Result<()> {
    let published = network::ports_of(store, container)?;
    let Some(wanted) = port else {
        for p in &published {
            outln!("{p}")?;
        }
        return Ok(());
    };
    let (number, proto) = wanted.split_once('/').unwrap_or((wanted, "tcp"));
    let number: u16 =
        number.parse().map_err(|_| anyhow::anyhow!("invalid port {wanted:?}: expected PORT[/tcp|udp]"))?;
    let proto: Protocol = proto.parse().map_err(anyhow::Error::msg)?;
    let matching: Vec<_> = published.iter().filter(|p| p.container_port == number && p.protocol == proto).collect();
    if matching.is_empty() {
        anyhow::bail!("no public port '{number}/{proto}' published for {container}");
    }
    for p in matching {
        outln!("{}:{}", p.host_ip, p.host_port)?;
    }
    Ok(())
}

/// A container's network in `inspect`, where docker has it: `HostConfig.NetworkMode`
/// and `PortBindings` (as asked), `NetworkSettings` (while it runs: its address and
/// published ports).
pub fn add_to_inspect(
    store: &Store,
    record: &racker::store::ContainerRecord,
    json: &mut serde_json::Value,
) -> Result<()> {
    let spec = racker::runtime::spec_of(record).unwrap_or_default();
    let mut bindings = serde_json::Map::new();
    for p in &spec.ports {
        let key = format!("{}/{}", p.container_port, p.protocol);
        let host_ip = p.host_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let host_port = if p.host_port == 0 { String::new() } else { p.host_port.to_string() };
        let entry = serde_json::json!({"HostIp": host_ip, "HostPort": host_port});
        if let Some(list) = bindings.entry(key).or_insert_with(|| serde_json::json!([])).as_array_mut() {
            list.push(entry);
        }
    }
    json["HostConfig"]["NetworkMode"] = serde_json::Value::String(spec.network.clone().into());
    json["HostConfig"]["PortBindings"] = serde_json::Value::Object(bindings);
    let mut settings = serde_json::json!({"Networks": {}, "Ports": {}});
    if let Some((net, attached)) = network::endpoint(store, &record.id)? {
        let mut ports = serde_json::Map::new();
        for p in &attached.ports {
            let entry = serde_json::json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()});
            let key = format!("{}/{}", p.container_port, p.protocol);
            if let Some(list) = ports.entry(key).or_insert_with(|| serde_json::json!([])).as_array_mut() {
                list.push(entry);
            }
        }
        settings["Ports"] = serde_json::Value::Object(ports);
        settings["IPAddress"] = serde_json::Value::String(attached.address.to_string());
        settings["Networks"][&net.name] = serde_json::json!({
            "NetworkID": net.id,
            "IPAddress": attached.address.to_string(),
            "IPPrefixLen": net.subnet.prefix,
            "Gateway": net.gateway.to_string(),
            "Aliases": attached.names,
        });
    }
    json["NetworkSettings"] = settings;
    Ok(())
}
