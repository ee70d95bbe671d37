//! racker's nftables rules, all in its own table `ip racker`, each set in base chains
//! of its own so that it comes and goes whole (one `nft -f` transaction), without
//! rule handles:
//!
//! - per network `rk-<net>-post` (postrouting): masquerade what leaves the subnet, what
//!   the host sends from 127.0.0.0/8 to a published port (its replies must come back to
//!   the host, not to the container's own loopback), and what a container of the subnet
//!   sends to a published port of another (hairpin: the reply must come back through
//!   the host, whose address the sender talked to);
//! - per container with published ports `rk-<net>-<ctr>-pre` and `-out` (prerouting for
//!   what arrives, output for what the host itself sends): DNAT to the container.
//!
//! Chain names carry the network's id, so a store's leftovers are found by name.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use super::ports::Published;
use super::NetworkError;

const TABLE: &str = "ip racker";

fn run(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::Spawn { program: "nft (install the nftables package)".into(), source })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(script.as_bytes());
    }
    let output = child.wait_with_output().map_err(|source| NetworkError::Spawn { program: "nft".into(), source })?;
    if output.status.success() {
        return Ok(());
    }
    Err(NetworkError::Command {
        what: "nft".into(),
        message: String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or("").trim().to_owned(),
    })
}

/// A base chain of its own, with `rules` (replacing any it had).
fn chain(name: &str, hook: &str, priority: i32, rules: &[String]) -> String {
    let mut script = format!(
        "add table {TABLE}\nadd chain {TABLE} {name} {{ type nat hook {hook} priority {priority}; }}\nflush chain {TABLE} {name}\n"
    );
    for rule in rules {
        script.push_str(&format!("add rule {TABLE} {name} {rule}\n"));
    }
    script
}

/// Removes chains, whether or not they exist.
fn delete(names: &[String]) -> Result<(), NetworkError> {
    let mut script = format!("add table {TABLE}\n");
    for name in names {
        script
            .push_str(&format!("add chain {TABLE} {name}\nflush chain {TABLE} {name}\ndelete chain {TABLE} {name}\n"));
    }
    run(&script)
}

fn network_chain(net: &str) -> String {
    format!("rk-{net}-post")
}

fn container_chains(net: &str, ctr: &str) -> [String; 2] {
    [format!("rk-{net}-{ctr}-pre"), format!("rk-{net}-{ctr}-out")]
}

/// The network's NAT: its subnet masqueraded on the way out.
pub fn add_network(net: &str, bridge: &str, subnet: &str) -> Result<(), NetworkError> {
    run(&chain(
        &network_chain(net),
        "postrouting",
        100,
        &[
            format!("ip saddr {subnet} ip daddr != {subnet} masquerade"),
            format!("ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade"),
            format!("ip saddr {subnet} ip daddr {subnet} ct status dnat masquerade"),
        ],
    ))
}

/// Removes the network's NAT, and racker's table once no network has chains in it
/// (callers hold the network lock: nothing adds one meanwhile).
pub fn remove_network(net: &str) -> Result<(), NetworkError> {
    delete(&[network_chain(net)])?;
    let listing = Command::new("nft").args(["list", "table", TABLE]).output();
    if listing.is_ok_and(|o| o.status.success() && !String::from_utf8_lossy(&o.stdout).contains("chain ")) {
        run(&format!("delete table {TABLE}\n"))?;
    }
    Ok(())
}

/// DNAT of the container's published ports to `address`.
pub fn add_container(net: &str, ctr: &str, address: Ipv4Addr, ports: &[Published]) -> Result<(), NetworkError> {
    if ports.is_empty() {
        return Ok(());
    }
    let rules: Vec<String> = ports
        .iter()
        .map(|p| {
            let to = if p.host_ip.is_unspecified() {
                "fib daddr type local".to_owned()
            } else {
                format!("ip daddr {}", p.host_ip)
            };
            format!("{to} {} dport {} dnat to {address}:{}", p.protocol, p.host_port, p.container_port)
        })
        .collect();
    let [pre, out] = container_chains(net, ctr);
    run(&(chain(&pre, "prerouting", -100, &rules) + &chain(&out, "output", -100, &rules)))
}

pub fn remove_container(net: &str, ctr: &str) -> Result<(), NetworkError> {
    delete(&container_chains(net, ctr))
}
