//! Private networks: containers on a Linux bridge of their network, each in a network
//! namespace racker makes and configures before systemd-nspawn starts (so a command
//! sees its network from its first instruction, and a booted systemd finds `eth0`
//! up), outgoing traffic masqueraded and published ports DNATed by nftables, names
//! resolved through `/etc/hosts` files racker keeps.
//!
//! ```text
//! $ROOT/networks/NAME.json   the network (bridge, subnet, gateway) and the containers
//!                            attached to it now (address, namespace, veth, ports)
//! /run/racker/network.lock   flock: every change of any store's networks (bridges,
//!                            subnets and nftables are the host's, shared by stores)
//! ```
//!
//! A network's bridge and NAT exist while a container is attached: the first one
//! brings them up, the last one's teardown removes them, so a host without running
//! containers holds nothing of racker's.

mod hosts;
mod link;
mod nft;
mod ports;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

pub use ports::{exposed, PortMapping, Protocol, Published};

use super::spec::{Bind, Network, RunSpec};
use super::{Result, RuntimeError};
use crate::store::Store;

/// The network `--network=private` names, made on first use.
pub const DEFAULT_NETWORK: &str = "private";
/// Where subnets come from when none is given: 10.89.0.0/24, 10.89.1.0/24, ...
const POOL: [u8; 2] = [10, 89];

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("starting {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{what} failed: {message}")]
    Command { what: String, message: String },
    #[error("cannot publish port {port}: {source}")]
    PortTaken { port: String, source: std::io::Error },
    #[error("network {0} not found: create it with racker network create {0}")]
    NotFound(String),
    #[error("network {0} already exists")]
    Exists(String),
    #[error("network {name} is in use by container {container}")]
    InUse { name: String, container: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("subnet {subnet} overlaps {with} on the host")]
    Overlap { subnet: Subnet, with: String },
    #[error("no free subnet left in 10.89.0.0/16: give one with --subnet")]
    Exhausted,
    #[error("network {0}: {1}")]
    Record(String, String),
}

/// An IPv4 subnet, `A.B.C.D/P`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0)
    }

    fn overlaps(&self, other: &Subnet) -> bool {
        let mask = self.mask() & other.mask();
        u32::from(self.base) & mask == u32::from(other.base) & mask
    }

    /// Host number `n` of the subnet (1: the gateway).
    fn host(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size - 1).then(|| Ipv4Addr::from(u32::from(self.base) + n))
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("invalid subnet {s:?}: expected an IPv4 CIDR such as 10.90.0.0/24 (prefix 8 to 28)");
        let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
        let (ip, prefix): (Ipv4Addr, u8) = (ip.parse().map_err(|_| bad())?, prefix.parse().map_err(|_| bad())?);
        if !(8..=28).contains(&prefix) {
            return Err(bad());
        }
        let subnet = Subnet { base: ip, prefix };
        let base = Ipv4Addr::from(u32::from(ip) & subnet.mask());
        Ok(Subnet { base, prefix })
    }
}

impl serde::Serialize for Subnet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A network as its record keeps it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    /// Ten hex digits: the bridge's, chains' and namespaces' names carry it.
    pub id: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    /// racker chose the subnet: it may choose another when the host took this one.
    #[serde(default)]
    pub auto_subnet: bool,
    pub created: String,
    /// The containers attached now, by id.
    #[serde(default)]
    pub containers: BTreeMap<String, Attached>,
}

/// A running container's place on its network.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    /// The container's name.
    pub name: String,
    /// What other containers call it (its name, machine name and host name).
    pub names: Vec<String>,
    pub address: Ipv4Addr,
    pub netns: String,
    pub veth: String,
    #[serde(default)]
    pub ports: Vec<Published>,
    /// Its hosts file (bound in as `/etc/hosts`), rewritten as others come and go.
    pub hosts: PathBuf,
    #[serde(default)]
    pub extra_hosts: Vec<(String, IpAddr)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io { path: path.to_owned(), source }
}

/// docker's rule for names, and none of the modes' names.
/// Whether `name` is spelled as a network name may be (so that it can name no other file).
fn well_formed(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

fn check_name(name: &str) -> std::result::Result<(), NetworkError> {
    if !well_formed(name) {
        return Err(NetworkError::Invalid {
            what: format!("network name {name:?}"),
            reason: "use letters, digits, '_', '.' and '-', starting with a letter or digit".into(),
        });
    }
    if ["host", "none", "bridge", "default"].contains(&name) {
        return Err(NetworkError::Invalid {
            what: format!("network name {name:?}"),
            reason: "it names a network mode: choose another name".into(),
        });
    }
    Ok(())
}

/// The store's network records, and the host-wide lock that every change holds.
struct Networks {
    dir: PathBuf,
}

/// Held while networks change.
struct Lock(#[allow(dead_code)] std::fs::File);

impl Networks {
    fn of(root: &Path) -> Networks {
        Networks { dir: root.join("networks") }
    }

    fn lock() -> Result<Lock> {
        let path = super::runtime_dir()?.join("network.lock");
        let file = crate::private::create_file(&path, false).map_err(io(&path))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| NetworkError::Io { path: path.clone(), source: e.into() })?;
        Ok(Lock(file))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// The record of network `name`; None where there is none, or `name` could be no
    /// network's (`../x`, `/etc/x`: whatever a user typed names no file outside).
    fn load(&self, name: &str) -> std::result::Result<Option<NetworkRecord>, NetworkError> {
        if !well_formed(name) {
            return Ok(None);
        }
        let path = self.path(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NetworkError::Record(name.to_owned(), format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(NetworkError::Io { path, source }),
        }
    }

    fn all(&self) -> std::result::Result<Vec<NetworkRecord>, NetworkError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(NetworkError::Io { path: self.dir.clone(), source }),
        };
        let mut all = Vec::new();
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(name) = file.strip_suffix(".json") {
                // One unreadable record must not stop every container's teardown.
                match self.load(name) {
                    Ok(Some(record)) => all.push(record),
                    Ok(None) => {}
                    Err(e) => tracing::warn!("{e}: fix or remove it"),
                }
            }
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// Writes a record whole: a new file renamed over the old one (mode 0600).
    fn save(&self, record: &NetworkRecord) -> std::result::Result<(), NetworkError> {
        crate::private::dir(&self.dir).map_err(io(&self.dir))?;
        let path = self.path(&record.name);
        let partial = self.dir.join(format!(".{}.json.partial", record.name));
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| NetworkError::Record(record.name.clone(), format!("serialising: {e}")))?;
        let mut file = crate::private::create_file(&partial, true).map_err(io(&partial))?;
        std::io::Write::write_all(&mut file, &bytes).map_err(io(&partial))?;
        file.sync_all().map_err(io(&partial))?;
        std::fs::rename(&partial, &path).map_err(io(&path))
    }

    /// A new network's record, its subnet `subnet` or the first free one of the pool.
    fn create(&self, name: &str, subnet: Option<Subnet>) -> std::result::Result<NetworkRecord, NetworkError> {
        if self.load(name)?.is_some() {
            return Err(NetworkError::Exists(name.to_owned()));
        }
        let others: Vec<Subnet> = self.all()?.iter().map(|r| r.subnet).collect();
        let (subnet, auto_subnet) = match subnet {
            Some(subnet) => {
                if let Some(other) = self.all()?.into_iter().find(|r| r.subnet.overlaps(&subnet)) {
                    return Err(NetworkError::Invalid {
                        what: format!("subnet {subnet}"),
                        reason: format!("it overlaps network {}'s {}", other.name, other.subnet),
                    });
                }
                (subnet, false)
            }
            None => (free_subnet(&others, None)?, true),
        };
        let id = format!("{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let record = NetworkRecord {
            name: name.to_owned(),
            bridge: format!("rk-{id}"),
            id,
            gateway: subnet.host(1).ok_or(NetworkError::Exhausted)?,
            subnet,
            auto_subnet,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            containers: BTreeMap::new(),
        };
        self.save(&record)?;
        Ok(record)
    }

    /// The record of `name`; the default network is made when first asked for.
    fn get(&self, name: &str) -> std::result::Result<NetworkRecord, NetworkError> {
        match self.load(name)? {
            Some(record) => Ok(record),
            None if name == DEFAULT_NETWORK => self.create(name, None),
            None => Err(NetworkError::NotFound(name.to_owned())),
        }
    }
}

/// The host's IPv4 subnets (addresses and routes), but those on `except` (a bridge
/// of the network being brought up).
fn host_subnets(except: Option<&str>) -> Vec<(Subnet, String)> {
    let mut found = Vec::new();
    let lines = |args: &[&str]| -> Vec<String> {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    for line in lines(&["-o", "-4", "addr", "show"]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dev = fields.get(1).copied().unwrap_or("");
        if let Some(cidr) = fields.iter().position(|f| *f == "inet").and_then(|i| fields.get(i + 1)) {
            if let (Ok(subnet), false) = (cidr.parse::<Subnet>(), Some(dev) == except) {
                found.push((subnet, format!("{cidr} on {dev}")));
            }
        }
    }
    for line in lines(&["-o", "-4", "route", "show"]) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dev = fields.iter().position(|f| *f == "dev").and_then(|i| fields.get(i + 1)).copied();
        if let (Some(Ok(subnet)), false) = (fields.first().map(|f| f.parse::<Subnet>()), dev == except) {
            found.push((subnet, format!("the route to {}", fields[0])));
        }
    }
    found
}

/// The first /24 of the pool that overlaps neither `taken` nor the host's subnets.
fn free_subnet(taken: &[Subnet], except: Option<&str>) -> std::result::Result<Subnet, NetworkError> {
    let host = host_subnets(except);
    (0..=255u8)
        .map(|n| Subnet { base: Ipv4Addr::new(POOL[0], POOL[1], n, 0), prefix: 24 })
        .find(|s| !taken.iter().any(|t| t.overlaps(s)) && !host.iter().any(|(h, _)| h.overlaps(s)))
        .ok_or(NetworkError::Exhausted)
}

/// `racker network create [--subnet CIDR] NAME`.
pub fn create(store: &Store, name: &str, subnet: Option<&str>) -> Result<NetworkRecord> {
    check_name(name)?;
    let subnet = subnet
        .map(|s| s.parse::<Subnet>())
        .transpose()
        .map_err(|reason| NetworkError::Invalid { what: "--subnet".into(), reason })?;
    let _lock = Networks::lock()?;
    Ok(Networks::of(store.root()).create(name, subnet)?)
}

/// The networks the store has records of, without making the default one (`racker info`).
pub fn recorded(store: &Store) -> Result<Vec<NetworkRecord>> {
    Ok(Networks::of(store.root()).all()?)
}

/// `racker network ls`: every network of the store, the default one included.
pub fn list(store: &Store) -> Result<Vec<NetworkRecord>> {
    let networks = Networks::of(store.root());
    if networks.load(DEFAULT_NETWORK)?.is_none() {
        let _lock = Networks::lock()?;
        networks.get(DEFAULT_NETWORK)?;
    }
    Ok(networks.all()?)
}

/// `racker network inspect NAME`.
pub fn inspect(store: &Store, name: &str) -> Result<NetworkRecord> {
    let networks = Networks::of(store.root());
    match networks.load(name)? {
        Some(record) => Ok(record),
        None if name == DEFAULT_NETWORK => {
            let _lock = Networks::lock()?;
            Ok(networks.get(name)?)
        }
        None => Err(NetworkError::NotFound(name.to_owned()).into()),
    }
}

/// `racker network rm NAME`: refused while any container (running or not) is on it,
/// and for the default network.
pub fn remove(store: &Store, name: &str) -> Result<()> {
    if name == DEFAULT_NETWORK {
        return Err(NetworkError::Invalid {
            what: format!("network {name}"),
            reason: "it is the default private network, which cannot be removed".into(),
        }
        .into());
    }
    let _lock = Networks::lock()?;
    let networks = Networks::of(store.root());
    let record = networks.load(name)?.ok_or_else(|| NetworkError::NotFound(name.to_owned()))?;
    if let Some(attached) = record.containers.values().next() {
        return Err(NetworkError::InUse { name: name.to_owned(), container: attached.name.clone() }.into());
    }
    for container in store.containers()? {
        if super::spec_of(&container).is_some_and(|s| s.network == Network::Named(name.to_owned())) {
            return Err(NetworkError::InUse { name: name.to_owned(), container: container.name }.into());
        }
    }
    nft::remove_network(&record.id)?;
    link::remove_bridge(&record.bridge)?;
    let path = networks.path(name);
    std::fs::remove_file(&path).map_err(io(&path))?;
    Ok(())
}

/// `racker network prune` (and `system prune`): removes every network but the default
/// one that no container, running or not, is on. Returns the names removed.
pub fn prune(store: &Store) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for record in recorded(store)? {
        if record.name == DEFAULT_NETWORK {
            continue;
        }
        match remove(store, &record.name) {
            Ok(()) => removed.push(record.name),
            Err(RuntimeError::Network(e)) if matches!(*e, NetworkError::InUse { .. } | NetworkError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// Fails unless the network `spec` names exists (or is the default one, made on use).
pub(crate) fn check(store: &Store, network: &Network) -> Result<()> {
    if let Network::Named(name) = network {
        if name != DEFAULT_NETWORK && Networks::of(store.root()).load(name)?.is_none() {
            return Err(NetworkError::NotFound(name.clone()).into());
        }
    }
    Ok(())
}

/// The network and place of a running container, if it is on a private network.
pub fn endpoint(store: &Store, id: &str) -> Result<Option<(NetworkRecord, Attached)>> {
    for record in Networks::of(store.root()).all()? {
        if let Some(attached) = record.containers.get(id).cloned() {
            return Ok(Some((record, attached)));
        }
    }
    Ok(None)
}

/// A container attached to its network for one start: dropped, it is detached again
/// (addresses, namespace, veth, rules, the bridge with the last container), unless
/// [`keep`](Self::keep) hands it to whoever removes the container later.
pub struct Attachment {
    root: PathBuf,
    id: String,
    /// The namespace nspawn joins.
    pub netns: PathBuf,
    /// The hosts and resolv.conf files to bind in.
    pub binds: Vec<Bind>,
    /// The published ports' sockets: the host ports stay the container's while held.
    _held: Vec<OwnedFd>,
    kept: bool,
}

impl Attachment {
    /// Leaves the container attached after this handle (its owner goes away while the
    /// container runs on: `rm -f` or `gc` detaches it).
    pub fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if !self.kept {
            if let Err(e) = release(&self.root, &self.id) {
                tracing::warn!("{e}");
            }
        }
    }
}

/// The names a container is known by on its network.
fn names_of(name: &str, id: &str, spec: &RunSpec) -> Vec<String> {
    let mut names = vec![name.to_owned(), super::nspawn::machine_name(name, id)];
    names.extend(spec.hostname.clone());
    names.push(id[..12.min(id.len())].to_owned());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// Attaches container `id` to the network its spec names (None for host and none):
/// host ports reserved, the network's bridge and NAT up, an address allocated, the
/// namespace and veth made, ports published, hosts files written.
pub(crate) fn attach(root: &Path, spec: &RunSpec, name: &str, id: &str) -> Result<Option<Attachment>> {
    let Network::Named(network) = &spec.network else { return Ok(None) };
    let runtime = super::runtime_dir()?;
    let (published, held) = ports::reserve(&spec.ports)?;
    let _lock = Networks::lock()?;
    let networks = Networks::of(root);
    // Left by an owner that died before its teardown: start from nothing.
    release_locked(&networks, id)?;
    let mut record = networks.get(network)?;
    if record.containers.is_empty() {
        bring_up(&networks, &mut record)?;
    }
    let taken: Vec<Ipv4Addr> = record.containers.values().map(|a| a.address).collect();
    let address = (2..).map_while(|n| record.subnet.host(n)).find(|ip| !taken.contains(ip)).ok_or_else(|| {
        NetworkError::Invalid { what: format!("network {network}"), reason: "no address left".into() }
    })?;
    let short = &id[..12.min(id.len())];
    let attached = Attached {
        name: name.to_owned(),
        names: names_of(name, id, spec),
        address,
        netns: format!("rk-{}-{short}", record.id),
        veth: format!("rkv{short}"),
        ports: published,
        hosts: hosts::hosts_path(&runtime, id),
        extra_hosts: spec.flags.add_hosts.clone(),
    };
    // Recorded before anything is made: whatever follows, release finds it.
    record.containers.insert(id.to_owned(), attached.clone());
    if let Err(e) = networks.save(&record) {
        if record.containers.len() == 1 {
            let _ = nft::remove_network(&record.id);
            let _ = link::remove_bridge(&record.bridge);
        }
        return Err(e.into());
    }
    let made = link::create_endpoint(&link::Endpoint {
        netns: &attached.netns,
        veth: &attached.veth,
        bridge: &record.bridge,
        address,
        prefix: record.subnet.prefix,
        gateway: record.gateway,
        alias: &attached.netns,
    })
    .and_then(|()| nft::add_container(&record.id, short, address, &attached.ports))
    .and_then(|()| hosts::write_in_place(&hosts::resolv_path(&runtime, id), &hosts::resolv_text(&spec.flags.dns)))
    .and_then(|()| write_hosts(&record));
    if let Err(e) = made {
        if let Err(undo) = release_locked(&networks, id) {
            tracing::warn!("{undo}");
        }
        return Err(e.into());
    }
    Ok(Some(Attachment {
        root: root.to_owned(),
        id: id.to_owned(),
        netns: link::netns_path(&attached.netns),
        binds: vec![
            Bind { source: attached.hosts.clone(), target: "/etc/hosts".into(), read_only: false },
            Bind { source: hosts::resolv_path(&runtime, id), target: "/etc/resolv.conf".into(), read_only: true },
        ],
        _held: held,
        kept: false,
    }))
}

/// Brings the network's bridge and NAT up (its first container joins), on a subnet
/// the host does not use: racker's own choice moves to a free one.
fn bring_up(networks: &Networks, record: &mut NetworkRecord) -> std::result::Result<(), NetworkError> {
    if !link::exists(&record.bridge) {
        let host = host_subnets(Some(&record.bridge));
        if let Some((_, with)) = host.iter().find(|(h, _)| h.overlaps(&record.subnet)) {
            if !record.auto_subnet {
                return Err(NetworkError::Overlap { subnet: record.subnet, with: with.clone() });
            }
            let others: Vec<Subnet> =
                networks.all()?.into_iter().filter(|r| r.name != record.name).map(|r| r.subnet).collect();
            record.subnet = free_subnet(&others, Some(&record.bridge))?;
            record.gateway = record.subnet.host(1).ok_or(NetworkError::Exhausted)?;
            networks.save(record)?;
        }
    }
    link::create_bridge(&record.bridge, record.gateway, record.subnet.prefix)?;
    nft::add_network(&record.id, &record.bridge, &record.subnet.to_string()).inspect_err(|_| {
        let _ = link::remove_bridge(&record.bridge);
    })
}

/// Rewrites the hosts file of every container on the network (in place).
fn write_hosts(record: &NetworkRecord) -> std::result::Result<(), NetworkError> {
    let members: Vec<(&String, hosts::Member)> = record
        .containers
        .iter()
        .map(|(id, a)| (id, hosts::Member { address: a.address, names: a.names.iter().map(String::as_str).collect() }))
        .collect();
    for (id, attached) in &record.containers {
        let Some((_, own)) = members.iter().find(|(m, _)| *m == id) else { continue };
        let others: Vec<hosts::Member> = members
            .iter()
            .filter(|(m, _)| *m != id)
            .map(|(_, m)| hosts::Member { address: m.address, names: m.names.clone() })
            .collect();
        let own = hosts::Member { address: own.address, names: own.names.clone() };
        let text = hosts::hosts_text(&own, &others, &attached.extra_hosts);
        hosts::write_in_place(&attached.hosts, &text)?;
    }
    Ok(())
}

/// Detaches container `id` from whatever network it is on: its rules, veth, namespace
/// and address go, the others' hosts files forget it, and the bridge and NAT go with
/// the network's last container. Idempotent: the owner's teardown, `rm -f` and `gc`
/// may all call it.
pub(crate) fn release(root: &Path, id: &str) -> Result<()> {
    let networks = Networks::of(root);
    if !networks.all()?.iter().any(|r| r.containers.contains_key(id)) {
        return Ok(());
    }
    let _lock = Networks::lock()?;
    Ok(release_locked(&networks, id)?)
}

/// [`release`], the lock held.
fn release_locked(networks: &Networks, id: &str) -> std::result::Result<(), NetworkError> {
    for mut record in networks.all()? {
        let Some(attached) = record.containers.get(id).cloned() else { continue };
        let short = &id[..12.min(id.len())];
        if !attached.ports.is_empty() {
            nft::remove_container(&record.id, short)?;
        }
        link::remove_endpoint(&attached.netns, &attached.veth);
        let _ = std::fs::remove_file(&attached.hosts);
        if let Some(dir) = attached.hosts.parent() {
            let _ = std::fs::remove_file(hosts::resolv_path(dir, id));
        }
        record.containers.remove(id);
        if record.containers.is_empty() {
            nft::remove_network(&record.id)?;
            link::remove_bridge(&record.bridge)?;
        }
        networks.save(&record)?;
        write_hosts(&record)?;
    }
    Ok(())
}

/// The published ports of a running container, as `racker port` shows them.
pub fn ports_of(store: &Store, name: &str) -> Result<Vec<Published>> {
    let record = store.container(name)?;
    Ok(endpoint(store, &record.id)?.map(|(_, a)| a.ports).unwrap_or_default())
}

impl From<NetworkError> for RuntimeError {
    fn from(e: NetworkError) -> Self {
        RuntimeError::Network(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_and_overlap() {
        let s: Subnet = "10.89.3.7/24".parse().expect("subnet");
        assert_eq!(s.to_string(), "10.89.3.0/24");
        assert_eq!(s.host(1), Some(Ipv4Addr::new(10, 89, 3, 1)));
        assert_eq!(s.host(254), Some(Ipv4Addr::new(10, 89, 3, 254)));
        assert_eq!(s.host(255), None, "the broadcast address is no host");
        assert!(s.overlaps(&"10.89.0.0/16".parse().expect("subnet")));
        assert!(!s.overlaps(&"10.89.4.0/24".parse().expect("subnet")));
        assert!("10.89.0.0/33".parse::<Subnet>().is_err());
        assert!("10.89.0.0".parse::<Subnet>().is_err());
        assert!(check_name("host").is_err() && check_name("-x").is_err() && check_name("web_1.a").is_ok());
    }
}
