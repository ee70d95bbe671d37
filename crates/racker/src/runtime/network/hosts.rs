//! Names on a private network: each container gets an `/etc/hosts` that lists every
//! running container of its network (and its `--add-host` entries), and an
//! `/etc/resolv.conf` with the host's name servers (or `--dns`). Both are files in the
//! runtime directory, bound into the container; the hosts files are rewritten in place
//! (never replaced by a rename, which a bind mount would not see) when a container
//! joins or leaves.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::NetworkError;

pub fn hosts_path(runtime: &Path, id: &str) -> PathBuf {
    runtime.join(format!("{id}.hosts"))
}

pub fn resolv_path(runtime: &Path, id: &str) -> PathBuf {
    runtime.join(format!("{id}.resolv.conf"))
}

/// One container as the others see it.
pub struct Member<'a> {
    pub address: Ipv4Addr,
    pub names: Vec<&'a str>,
}

/// The hosts file of a container: localhost, its own names first, the others, then
/// its `--add-host` lines.
pub fn hosts_text(own: &Member, others: &[Member], extra: &[(String, IpAddr)]) -> String {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for member in std::iter::once(own).chain(others) {
        let mut names = member.names.clone();
        names.dedup();
        text.push_str(&format!("{}\t{}\n", member.address, names.join(" ")));
    }
    for (name, ip) in extra {
        text.push_str(&format!("{ip}\t{name}\n"));
    }
    text
}

/// The name servers a container on a private network uses: `--dns`, else the host's,
/// without loopback ones (a resolver on the host's 127.0.0.53 is not the container's);
/// systemd-resolved's upstream list stands in for its stub. Without any, none.
pub fn resolv_text(dns: &[IpAddr]) -> String {
    let servers: Vec<IpAddr> = if dns.is_empty() { host_nameservers() } else { dns.to_vec() };
    let mut text: String = servers.iter().map(|ip| format!("nameserver {ip}\n")).collect();
    if let Ok(host) = std::fs::read_to_string("/etc/resolv.conf") {
        for line in host.lines().filter(|l| l.starts_with("search ") || l.starts_with("options ")) {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

fn host_nameservers() -> Vec<IpAddr> {
    let parse = |path: &str| -> Vec<IpAddr> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix("nameserver"))
            .filter_map(|ip| ip.trim().parse().ok())
            .filter(|ip: &IpAddr| !ip.is_loopback())
            .collect()
    };
    let servers = parse("/etc/resolv.conf");
    if servers.is_empty() {
        parse("/run/systemd/resolve/resolv.conf")
    } else {
        servers
    }
}

/// Writes `text` into `path` in place (created 0644: the container's users read it;
/// the runtime directory keeps it from the host's).
pub fn write_in_place(path: &Path, text: &str) -> Result<(), NetworkError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| NetworkError::Io { path: path.to_owned(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o644).open(path).map_err(io)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644)).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_file_names_every_member() {
        let own = Member { address: Ipv4Addr::new(10, 89, 0, 2), names: vec!["web", "web"] };
        let other = Member { address: Ipv4Addr::new(10, 89, 0, 3), names: vec!["db"] };
        let text = hosts_text(&own, &[other], &[("x".into(), "192.0.2.1".parse().expect("ip"))]);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("10.89.0.2\tweb\n") && text.contains("10.89.0.3\tdb\n"), "{text}");
        assert!(text.ends_with("192.0.2.1\tx\n"));
        assert_eq!(resolv_text(&["9.9.9.9".parse().expect("ip")]).lines().next(), Some("nameserver 9.9.9.9"));
    }
}
