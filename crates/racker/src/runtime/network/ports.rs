//! Published ports: `-p [IP:][HOST:]CONTAINER[/tcp|udp]` as docker parses it, and the
//! host ports a container holds while it runs. racker binds each host port itself (not
//! listening, without `SO_REUSEADDR`), as podman's conmon and docker's proxy hold
//! theirs: a port another program uses is refused before the container starts, a
//! random port (`-p 80`) is the kernel's choice, and no other program takes a
//! published port while the container has it. The traffic itself never reaches these
//! sockets: nftables rewrites it to the container first (see nft.rs).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, SocketType};

use super::NetworkError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            other => Err(format!("protocol {other:?} is not supported: use tcp or udp")),
        }
    }
}

/// One `-p` (or, from `-P`, one of the image's `ExposedPorts`): what the user asked for.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    /// The host address it is published on; None: every address (`0.0.0.0`).
    pub host_ip: Option<Ipv4Addr>,
    /// 0: a random free port, chosen at each start.
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

fn port(value: &str, what: &str, zero_ok: bool) -> Result<u16, String> {
    if value.contains('-') {
        return Err(format!("port ranges ({value}) are not supported: publish each port with its own -p"));
    }
    match value.parse::<u16>() {
        Ok(0) if zero_ok => Ok(0),
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("{what} port {value:?} is not a port number (1-65535)")),
    }
}

impl std::str::FromStr for PortMapping {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |reason: String| format!("invalid -p {s:?}: {reason}");
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((rest, proto)) => (rest, proto.parse().map_err(bad)?),
            None => (s, Protocol::Tcp),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [container] => ("", "", *container),
            [host, container] => ("", *host, *container),
            [ip, host, container] => (*ip, *host, *container),
            _ => return Err(bad("expected [IP:][HOST:]CONTAINER[/tcp|udp] (IPv4 addresses only)".into())),
        };
        let host_ip = match ip.trim_start_matches('[').trim_end_matches(']') {
            "" | "0.0.0.0" => None,
            ip => Some(
                ip.parse::<Ipv4Addr>()
                    .map_err(|_| bad(format!("{ip:?} is not an IPv4 address (racker publishes on IPv4 only)")))?,
            ),
        };
        let host_port = if host.is_empty() { 0 } else { port(host, "host", true).map_err(bad)? };
        Ok(PortMapping {
            host_ip,
            host_port,
            container_port: port(container, "container", false).map_err(bad)?,
            protocol,
        })
    }
}

/// The image's `ExposedPorts` (`{"80/tcp": {}}`) as `-P` publishes them: each on a
/// random host port on every address.
pub fn exposed(config: &serde_json::Value) -> Vec<PortMapping> {
    let Some(ports) = config.pointer("/config/ExposedPorts").and_then(|p| p.as_object()) else { return Vec::new() };
    ports
        .keys()
        .filter_map(|key| {
            let (number, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            Some(PortMapping {
                host_ip: None,
                host_port: 0,
                container_port: number.parse().ok().filter(|p| *p > 0)?,
                protocol: proto.parse().ok()?,
            })
        })
        .collect()
}

/// A port as it is published while the container runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Published {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for Published {
    /// docker's `racker port` line: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} -> {}:{}", self.container_port, self.protocol, self.host_ip, self.host_port)
    }
}

/// Binds every mapping's host port; the sockets hold them until dropped. A port that
/// is taken fails the whole set, naming it.
pub fn reserve(mappings: &[PortMapping]) -> Result<(Vec<Published>, Vec<OwnedFd>), NetworkError> {
    let mut published = Vec::new();
    let mut held = Vec::new();
    for m in mappings {
        let ip = m.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let taken = |source: std::io::Error| NetworkError::PortTaken {
            port: format!("{ip}:{}/{}", m.host_port, m.protocol),
            source,
        };
        let kind = match m.protocol {
            Protocol::Tcp => SocketType::STREAM,
            Protocol::Udp => SocketType::DGRAM,
        };
        let socket = rustix::net::socket_with(AddressFamily::INET, kind, rustix::net::SocketFlags::CLOEXEC, None)
            .map_err(|e| taken(e.into()))?;
        rustix::net::bind(&socket, &SocketAddrV4::new(ip, m.host_port)).map_err(|e| taken(e.into()))?;
        let bound = rustix::net::getsockname(&socket)
            .ok()
            .and_then(|a| SocketAddrV4::try_from(a).ok())
            .map(|a| a.port())
            .unwrap_or(m.host_port);
        published.push(Published {
            host_ip: ip,
            host_port: bound,
            container_port: m.container_port,
            protocol: m.protocol,
        });
        held.push(socket);
    }
    Ok((published, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_parse_as_docker_takes_them() {
        let p = |s: &str| s.parse::<PortMapping>();
        assert_eq!(
            p("127.0.0.1:8080:80/udp"),
            Ok(PortMapping {
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Udp
            })
        );
        assert_eq!(p("8080:80").map(|m| (m.host_ip, m.host_port, m.protocol)), Ok((None, 8080, Protocol::Tcp)));
        assert_eq!(p("80").map(|m| (m.host_port, m.container_port)), Ok((0, 80)));
        assert_eq!(p("127.0.0.1::80").map(|m| m.host_port), Ok(0));
        assert!(p("80-90:80").is_err_and(|e| e.contains("ranges")));
        assert!(p("x:80").is_err());
        assert!(p("80/sctp").is_err());
        assert!(p("::1:80:80").is_err());
        assert!(p("0").is_err());
        let config = serde_json::json!({"config": {"ExposedPorts": {"80/tcp": {}, "53/udp": {}, "bad": {}}}});
        let mut ports: Vec<_> = exposed(&config).into_iter().map(|m| (m.container_port, m.protocol)).collect();
        ports.sort();
        assert_eq!(ports, [(53, Protocol::Udp), (80, Protocol::Tcp)]);
    }

    #[test]
    fn a_reserved_port_is_held_until_dropped() {
        let (published, held) = reserve(&["127.0.0.1::80".parse().expect("mapping")]).expect("a free port");
        let port = published[0].host_port;
        assert_ne!(port, 0);
        assert_eq!(published[0].to_string(), format!("80/tcp -> 127.0.0.1:{port}"));
        let again = PortMapping { host_port: port, ..("127.0.0.1::80".parse().expect("mapping")) };
        assert!(matches!(reserve(std::slice::from_ref(&again)), Err(NetworkError::PortTaken { .. })));
        drop(held);
        assert!(reserve(&[again]).is_ok());
    }
}
