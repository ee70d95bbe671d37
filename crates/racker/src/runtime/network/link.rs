//! The links of a private network, made with iproute2's `ip`: one bridge per network
//! (its gateway address on it), and per container a network namespace
//! (`/run/netns/NAME`, which systemd-nspawn joins) holding one end of a veth pair as
//! `eth0`, its address and default route set, `lo` up; the other end on the bridge.
//! Shelling out keeps racker free of an async netlink stack; each step is one short
//! `ip -batch` run.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::NetworkError;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Runs `ip [global...] -batch -` with `lines`; `-force` goes on past a failing line
/// (teardown of whatever exists).
fn batch(global: &[&str], lines: &[String], force: bool) -> Result<(), NetworkError> {
    let mut cmd = Command::new("ip");
    cmd.args(global);
    if force {
        cmd.arg("-force");
    }
    cmd.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| NetworkError::Spawn { program: "ip".into(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(lines.join("\n").as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| NetworkError::Spawn { program: "ip".into(), source })?;
    if output.status.success() || force {
        return Ok(());
    }
    Err(batch_failure(lines, &String::from_utf8_lossy(&output.stderr)))
}

/// One line for a failed batch: the command that failed (`ip` names its number in
/// "Command failed -:N") and what `ip` said about it.
fn batch_failure(lines: &[String], stderr: &str) -> NetworkError {
    let failed = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Command failed -:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .and_then(|n| lines.get(n.checked_sub(1)?))
        .or(lines.first());
    let message: Vec<&str> =
        stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("Command failed")).collect();
    NetworkError::Command {
        what: format!("ip {}", failed.map(String::as_str).unwrap_or("")),
        message: message.join("; "),
    }
}

/// Whether a link of that name exists.
pub fn exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Makes the bridge with `gateway/prefix` on it, up, and lets it forward: IPv4
/// forwarding on (the host's switch; racker never turns it off again) and
/// `route_localnet`, so that ports published on 127.0.0.1 reach the container.
pub fn create_bridge(bridge: &str, gateway: Ipv4Addr, prefix: u8) -> Result<(), NetworkError> {
    if !exists(bridge) {
        batch(
            &[],
            &[
                format!("link add {bridge} type bridge"),
                format!("addr add {gateway}/{prefix} dev {bridge}"),
                format!("link set {bridge} up"),
            ],
            false,
        )
        .inspect_err(|_| {
            let _ = remove_bridge(bridge);
        })?;
    }
    sysctl("net/ipv4/ip_forward", "1")?;
    sysctl(&format!("net/ipv4/conf/{bridge}/route_localnet"), "1")
}

pub fn remove_bridge(bridge: &str) -> Result<(), NetworkError> {
    if !exists(bridge) {
        return Ok(());
    }
    batch(&[], &[format!("link del {bridge}")], false)
}

fn sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    let path = PathBuf::from("/proc/sys").join(key);
    if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|source| NetworkError::Io { path, source })
}

/// A container's end of the network.
pub struct Endpoint<'a> {
    pub netns: &'a str,
    /// The host's end of the veth pair, on the bridge.
    pub veth: &'a str,
    pub bridge: &'a str,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// Shown as the host end's alias: what finds a store's leftovers.
    pub alias: &'a str,
}

/// Makes the namespace and the veth pair, configured. On failure, what was made goes.
pub fn create_endpoint(e: &Endpoint) -> Result<(), NetworkError> {
    let peer = format!("{}p", &e.veth[..e.veth.len().min(14)]);
    let made = batch(
        &[],
        &[
            format!("netns add {}", e.netns),
            format!("link add {} type veth peer name {peer}", e.veth),
            format!("link set {} alias {}", e.veth, e.alias),
            format!("link set {peer} netns {}", e.netns),
            format!("link set {} master {} up", e.veth, e.bridge),
        ],
        false,
    )
    .and_then(|()| {
        batch(
            &["-n", e.netns],
            &[
                format!("link set {peer} name eth0"),
                format!("addr add {}/{} dev eth0", e.address, e.prefix),
                "link set eth0 up".into(),
                "link set lo up".into(),
                format!("route add default via {}", e.gateway),
            ],
            false,
        )
    });
    if made.is_err() {
        remove_endpoint(e.netns, e.veth);
    }
    made
}

/// Removes a container's namespace (its `eth0` and so the veth pair go with it) and
/// the host end, where either is left. Best effort: what exists goes.
pub fn remove_endpoint(netns: &str, veth: &str) {
    // The host end first: the kernel destroys a deleted namespace (and the veth in it)
    // later, in the background; deleting one end removes the pair at once.
    let mut lines = Vec::new();
    if exists(veth) {
        lines.push(format!("link del {veth}"));
    }
    if netns_path(netns).exists() {
        lines.push(format!("netns del {netns}"));
    }
    if !lines.is_empty() {
        let _ = batch(&[], &lines, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_batch_names_its_failing_command_on_one_line() {
        let lines = ["link add rk-1 type bridge".to_owned(), "addr add 10.0.0.1/24 dev rk-1".to_owned()];
        let stderr = "RTNETLINK answers: File exists\nCommand failed -:2\n";
        let NetworkError::Command { what, message } = batch_failure(&lines, stderr) else {
            panic!("not a command error")
        };
        assert_eq!(
            (what.as_str(), message.as_str()),
            ("ip addr add 10.0.0.1/24 dev rk-1", "RTNETLINK answers: File exists")
        );
        let NetworkError::Command { what, .. } = batch_failure(&lines, "Cannot find device\n") else { panic!() };
        assert_eq!(what, "ip link add rk-1 type bridge", "without a line number, the batch's first");
    }
}
