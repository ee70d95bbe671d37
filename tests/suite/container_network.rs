//! Private networks (`--network=private|NAME`, `racker network`, `-p`, `-P`, `racker
//! port`) on real containers: a busybox httpd serves the host through a published
//! port, containers on one network reach each other by name, and every test ends with
//! no veth, namespace, nftables chain or bridge of the store left on the host.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;

use serde_json::json;

use crate::common::images;
use crate::common::{self, debian_store, err, out, require_root, TempStore};

/// Turns br_netfilter's `bridge-nf-call-iptables` off while it lives (where the module
/// is loaded) and back as it was when dropped: bridged frames then skip the host's
/// conntrack, as on hosts without the module.
struct BridgeNetfilterOff(Option<String>);

const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

impl BridgeNetfilterOff {
    fn new() -> BridgeNetfilterOff {
        let was = std::fs::read_to_string(BRIDGE_NF).ok();
        if was.is_some() {
            std::fs::write(BRIDGE_NF, "0").expect("switching bridge-nf-call-iptables off");
        }
        BridgeNetfilterOff(was)
    }
}

impl Drop for BridgeNetfilterOff {
    fn drop(&mut self) {
        if let Some(was) = &self.0 {
            let _ = std::fs::write(BRIDGE_NF, was.trim());
        }
    }
}

/// A store with the busybox image as `bb`, exposing 80/tcp (for `-P`).
fn store_exposing_80() -> (TempStore, tempfile::TempDir) {
    require_root();
    let store = TempStore::new();
    let mut config = images::busybox_config();
    config["ExposedPorts"] = json!({"80/tcp": {}});
    let dir = images::add_busybox_with(&store, config, &[images::busybox_layer()]);
    (store, dir)
}

/// A port nothing listens on now (the kernel's choice), for a test to publish on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("binding port 0").local_addr().expect("address").port()
}

/// busybox's httpd serving `text` as `/index.html` on port 80, in the foreground.
fn httpd(text: &str) -> String {
    format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 80 -h /www")
}

/// `GET /` on the host's `127.0.0.1:port`, retried until the server in the container
/// listens; returns the response body.
fn http_get(port: u16) -> String {
    let mut body = String::new();
    common::wait_until(20, &format!("nothing answered HTTP on 127.0.0.1:{port}"), || {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
        let mut response = String::new();
        let asked = stream.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").is_ok();
        if !asked || stream.read_to_string(&mut response).is_err() || !response.starts_with("HTTP/1") {
            return false;
        }
        body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        true
    });
    body
}

/// The container's full id.
fn id_of(store: &TempStore, name: &str) -> String {
    let ps = store.ok(&["ps", "-a", "--no-trunc", "--format", "json"]);
    ps.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|c| c["Names"] == name)
        .and_then(|c| c["ID"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no container {name}: {ps}"))
}

fn listing(args: &[&str]) -> String {
    Command::new(args[0]).args(&args[1..]).output().map(|o| out(&o)).unwrap_or_default()
}

/// Whether anything of container `id`'s network is on the host: its veth, namespace
/// or nftables chains (all named with its id's first 12 digits).
fn network_pieces_of(id: &str) -> Vec<String> {
    let short = &id[..12];
    [listing(&["ip", "-o", "link"]), listing(&["ip", "netns", "list"]), listing(&["nft", "list", "ruleset"])]
        .iter()
        .flat_map(|l| l.lines().filter(|l| l.contains(short)).map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

#[test]
fn a_published_port_serves_http_from_a_command_mode_container() {
    let (store, _dir) = store_exposing_80();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    store.ok(&["run", "-d", "--name", "web", "-p", &publish, "bb", "sh", "-c", &httpd("hello-from-web")]);
    let id = id_of(&store, "web");
    assert_eq!(http_get(port), "hello-from-web\n");
    assert_eq!(store.ok(&["port", "web"]), format!("80/tcp -> 127.0.0.1:{port}\n"));
    assert_eq!(store.ok(&["port", "web", "80/tcp"]), format!("127.0.0.1:{port}\n"));
    let ps = store.ok(&["ps"]);
    assert!(ps.lines().next().is_some_and(|h| h.contains("STATUS") && h.contains("PORTS")), "{ps}");
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "ps shows docker's PORTS: {ps}");
    let e = store.fails(&["port", "web", "81"]);
    assert!(e.contains("no public port '81/tcp' published for web"), "{e}");
    assert!(!network_pieces_of(&id).is_empty(), "the running container has a veth, namespace and rules");
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["inspect", "web"])).expect("json");
    assert_eq!(inspect[0]["HostConfig"]["NetworkMode"], "private", "{inspect:#}");
    assert_eq!(inspect[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"], port.to_string(), "{inspect:#}");
    assert!(inspect[0]["NetworkSettings"]["IPAddress"].as_str().is_some_and(|ip| ip.starts_with("10.89.")));
    // The container sees the default private network, and its own name.
    let inside = store.ok(&["exec", "web", "sh", "-c", "ip -o -4 addr show eth0; ip route; cat /etc/hosts"]);
    assert!(inside.contains("inet 10.89.") && inside.contains("default via 10.89."), "{inside}");
    assert!(inside.lines().any(|l| l.contains("10.89.") && l.contains("web")), "{inside}");
    store.ok(&["stop", "-t", "1", "web"]);
    assert_eq!(network_pieces_of(&id), Vec::<String>::new(), "a stopped container holds no network");
    assert_eq!(store.ok(&["port", "web"]), "", "a stopped container publishes nothing");
    // Started again, it publishes the same port again.
    store.ok(&["start", "web"]);
    assert_eq!(http_get(port), "hello-from-web\n");
    store.ok(&["rm", "-f", "web"]);
    assert_eq!(network_pieces_of(&id), Vec::<String>::new());
    store.assert_clean();
}

#[test]
fn the_command_sees_its_network_from_its_first_instruction_and_random_ports_are_published() {
    let (store, _dir) = store_exposing_80();
    // A foreground --rm run: its first instruction finds eth0 configured.
    let o = store.run(&["run", "--rm", "--network", "private", "bb", "cat", "/sys/class/net/eth0/operstate"]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "up\n"), "{}", err(&o));
    // --add-host and --dns reach the files racker binds in.
    let files = store.ok(&[
        "run",
        "--rm",
        "--network",
        "private",
        "--hostname",
        "h1",
        "--add-host",
        "db:192.0.2.9",
        "--dns",
        "192.0.2.53",
        "bb",
        "cat",
        "/etc/hosts",
        "/etc/resolv.conf",
    ]);
    assert!(files.contains("192.0.2.9\tdb\n") && files.contains("nameserver 192.0.2.53\n"), "{files}");
    assert!(files.lines().any(|l| l.starts_with("10.89.") && l.contains(" h1")), "{files}");
    // -P publishes the image's ExposedPorts (80/tcp) on a random port; -p 8080 too.
    store.ok(&["run", "-d", "--name", "rnd", "-P", "-p", "8080", "bb", "sh", "-c", &httpd("random")]);
    let id = id_of(&store, "rnd");
    let ports = store.ok(&["port", "rnd"]);
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    assert!(lines.iter().any(|l| l.starts_with("8080/tcp -> 0.0.0.0:")), "{ports}");
    let host = store.ok(&["port", "rnd", "80"]);
    let port: u16 = host.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("a host port");
    assert!(port > 0 && host.starts_with("0.0.0.0:"), "{host}");
    // Published on every address: the host's loopback reaches it.
    assert_eq!(http_get(port), "random\n");
    // The container's network is gone with it, whatever the way it ends (rm -f here).
    store.ok(&["rm", "-f", "rnd"]);
    assert_eq!(network_pieces_of(&id), Vec::<String>::new());
    store.assert_clean();
}

#[test]
fn parallel_runs_on_one_network_get_addresses_of_their_own() {
    let (store, _dir) = store_exposing_80();
    // All six run at once: each reports its address, then waits for the test.
    let control = tempfile::tempdir().expect("a control directory");
    let volume = format!("{}:/control", control.path().display());
    let script = "ip -o -4 addr show eth0; touch /control/$(hostname); until [ -e /control/go ]; do sleep 0.05; done";
    let runs: Vec<std::process::Child> = (0..6)
        .map(|_| {
            store
                .cmd()
                .args(["run", "--rm", "--network", "private", "-p", "80", "-v", &volume, "bb", "sh", "-c", script])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    common::wait_until(60, "the six containers never all ran", || {
        std::fs::read_dir(control.path()).map(|d| d.count()).unwrap_or(0) == 6
    });
    std::fs::write(control.path().join("go"), "").expect("letting them end");
    let mut addresses = std::collections::BTreeSet::new();
    for run in runs {
        let o = run.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", err(&o));
        let text = out(&o);
        let address = text.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(str::to_owned);
        addresses.insert(address.unwrap_or_else(|| panic!("no address: {text}")));
    }
    assert_eq!(addresses.len(), 6, "six containers at once, six addresses: {addresses:?}");
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn containers_on_a_user_network_reach_each_other_by_name() {
    let (store, _dir) = store_exposing_80();
    let created = store.ok(&["network", "create", "--subnet", "10.91.7.0/24", "backend"]);
    assert_eq!(created.trim().len(), 10, "the network's id: {created}");
    let e = store.fails(&["network", "create", "backend"]);
    assert!(e.contains("network backend already exists"), "{e}");
    let ls = store.ok(&["network", "ls", "--format", "json"]);
    let rows: Vec<serde_json::Value> = ls.lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert!(rows.iter().any(|r| r["Name"] == "backend" && r["Subnet"] == "10.91.7.0/24"), "{ls}");
    assert!(rows.iter().any(|r| r["Name"] == "private"), "the default network is listed: {ls}");

    let port = free_port().to_string();
    store.ok(&[
        "run",
        "-d",
        "--name",
        "srv",
        "--network",
        "backend",
        "-p",
        &format!("{port}:80"),
        "bb",
        "sh",
        "-c",
        &httpd("by-name"),
    ]);
    store.ok(&["run", "-d", "--name", "peer", "--network", "backend", "bb", "sleep", "1000"]);
    // A peer reaches the server's published port through the host's address too (the
    // bridge's, here): hairpin NAT, as docker's. With br_netfilter's conntrack of bridged
    // frames off, as on a host without it: only racker's own rules make the reply return.
    let _plain_bridge = BridgeNetfilterOff::new();
    let hairpin = format!(
        "i=0; until timeout 2 wget -qO- http://10.91.7.1:{port}/ || [ $i -gt 20 ]; do sleep 0.1; i=$((i+1)); done"
    );
    assert_eq!(store.ok(&["exec", "peer", "sh", "-c", &hairpin]), "by-name\n");
    drop(_plain_bridge);
    // The client reaches the server by name; the server's hosts file lists the peer
    // that joined after it (rewritten in place, seen through its bind mount).
    let o = store.run(&[
        "run",
        "--rm",
        "--network",
        "backend",
        "bb",
        "sh",
        "-c",
        "until wget -qO- http://srv/; do sleep 0.1; done",
    ]);
    assert_eq!((o.status.code(), out(&o).as_str()), (Some(0), "by-name\n"), "{}", err(&o));
    let hosts = store.ok(&["exec", "srv", "cat", "/etc/hosts"]);
    assert!(hosts.lines().any(|l| l.starts_with("10.91.7.") && l.contains("peer")), "{hosts}");
    let ping = store.ok(&["exec", "peer", "ping", "-c1", "-W5", "srv"]);
    assert!(ping.contains("64 bytes from 10.91.7."), "{ping}");
    let inspect: serde_json::Value = serde_json::from_str(&store.ok(&["network", "inspect", "backend"])).expect("json");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.91.7.0/24");
    assert_eq!(inspect[0]["Containers"].as_object().map(|c| c.len()), Some(2), "{inspect}");
    let bridge = inspect[0]["Options"]["com.docker.network.bridge.name"].as_str().expect("bridge").to_owned();
    assert!(listing(&["ip", "-o", "link"]).contains(&bridge), "the bridge is up while containers use it");

    store.ok(&["rm", "-f", "peer"]);
    let hosts = store.ok(&["exec", "srv", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("peer"), "a container that left is forgotten: {hosts}");
    let e = store.fails(&["network", "rm", "backend"]);
    assert!(e.contains("network backend is in use by container srv"), "{e}");
    store.ok(&["stop", "-t", "1", "srv"]);
    assert!(!listing(&["ip", "-o", "link"]).contains(&bridge), "the bridge goes with the last container");
    let e = store.fails(&["network", "rm", "backend"]);
    assert!(e.contains("in use by container srv"), "a stopped container keeps its network: {e}");
    store.ok(&["rm", "srv"]);
    assert_eq!(store.ok(&["network", "rm", "backend"]), "backend\n");
    assert!(!store.ok(&["network", "ls", "--format", "{{.Name}}"]).contains("backend"));
    let e = store.fails(&["network", "rm", "private"]);
    assert!(e.contains("default private network"), "{e}");
    store.assert_clean();
}

#[test]
fn bad_network_requests_fail_clearly_and_leave_nothing() {
    let (store, _dir) = store_exposing_80();
    // A host port another program holds.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port();
    let o = store.run(&["run", "--rm", "-p", &format!("127.0.0.1:{port}:80"), "bb", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert!(err(&o).contains(&format!("cannot publish port 127.0.0.1:{port}/tcp")), "{}", err(&o));
    let o = store.run(&["run", "-d", "--name", "x", "-p", &format!("127.0.0.1:{port}:80"), "bb", "sleep", "100"]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    assert_eq!(store.ok(&["ps", "-aq"]), "", "nothing is left of the refused containers");
    drop(taken);
    for (args, message) in [
        (&["run", "--rm", "--network", "none", "-p", "80", "bb", "true"][..], "--network none"),
        (&["run", "--rm", "--network", "nosuch", "bb", "true"], "network nosuch not found"),
        (&["run", "--rm", "-p", "70000:80", "bb", "true"], "not a port number"),
        (&["network", "create", "--subnet", "10.0.0.0/40", "n"], "invalid subnet"),
        (&["network", "create", "host"], "names a network mode"),
        // A name that could be a path names no network, and no file outside the store.
        (&["network", "rm", "../../etc/x"], "not found"),
        (&["network", "inspect", "/etc/passwd"], "not found"),
        // A host name goes into other containers' /etc/hosts: only a real one passes.
        (&["run", "--rm", "--network", "private", "--hostname", "x db", "bb", "true"], "invalid --hostname"),
    ] {
        let o = store.run(args);
        assert!(!o.status.success() && err(&o).contains(message), "{args:?}: {}", err(&o));
        if args[0] == "run" {
            assert_eq!(o.status.code(), Some(125), "{args:?}");
        }
    }
    // nspawn fails after the network was made (a bind source that does not exist):
    // racker's failure, and the network is undone with the container.
    let o = store.run(&[
        "run",
        "--rm",
        "--network",
        "private",
        "-p",
        "80",
        "-v",
        "/nonexistent-racker-src:/x",
        "bb",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(125), "{}", err(&o));
    store.assert_no_network_left();
    // On the host's network -p means nothing: docker's warning, and the command runs.
    let o = store.run(&["run", "--rm", "--network", "host", "-p", "80", "bb", "true"]);
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert!(err(&o).contains("Published ports are discarded when using host network mode"), "{}", err(&o));
    assert_eq!(store.ok(&["ps", "-aq"]), "");
    store.assert_clean();
}

#[test]
fn a_crashed_monitor_leaves_a_network_that_gc_removes() {
    let (store, _dir) = store_exposing_80();
    store.ok(&["run", "-d", "--name", "orphan", "-p", "80", "bb", "sleep", "1000"]);
    let id = id_of(&store, "orphan");
    let record =
        store.db().query_row("SELECT monitor_pid FROM containers WHERE id = ?1", [&id], |r| r.get::<_, i64>(0));
    let monitor = record.expect("the monitor's pid") as i32;
    rustix::process::kill_process(rustix::process::Pid::from_raw(monitor).expect("pid"), rustix::process::Signal::KILL)
        .expect("SIGKILL to the monitor");
    common::wait_until(10, "the monitor never ended", || {
        !std::path::Path::new(&format!("/proc/{monitor}/comm")).exists()
    });
    assert!(!network_pieces_of(&id).is_empty(), "its container runs on, attached");
    let gc = store.ok(&["gc"]);
    assert!(gc.contains("orphan"), "{gc}");
    assert_eq!(network_pieces_of(&id), Vec::<String>::new(), "gc ended it and detached it");
    store.ok(&["rm", "orphan"]);
    store.assert_clean();
}

#[test]
fn a_booted_debian_serves_a_published_port() {
    let store = debian_store();
    let port = free_port();
    store.ok(&[
        "run",
        "-d",
        "--name",
        "vm",
        "-p",
        &format!("127.0.0.1:{port}:8000"),
        "-v",
        "/bin/busybox:/usr/local/bin/busybox:ro",
        "debian:bookworm-systemd",
    ]);
    let id = id_of(&store, "vm");
    // The booted system found eth0 configured, and nothing took it over.
    let addr = store.ok(&["exec", "vm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("inet 10.89."), "{addr}");
    // A service of the booted system's: a transient unit of its systemd.
    store.ok(&["exec", "vm", "sh", "-c", "mkdir -p /srv/www && echo booted > /srv/www/index.html"]);
    store.ok(&[
        "exec",
        "vm",
        "systemd-run",
        "--unit=web",
        "/usr/local/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "8000",
        "-h",
        "/srv/www",
    ]);
    assert_eq!(http_get(port), "booted\n");
    store.ok(&["stop", "vm"]);
    assert_eq!(network_pieces_of(&id), Vec::<String>::new());
    store.ok(&["rm", "vm"]);
    store.assert_clean();
}

#[test]
fn pkgprobe_on_a_private_network_probes_a_fixed_port_service_in_parallel() {
    use crate::common::postroj::{build_deb, postroj, probe_store, FileServer};
    let store = probe_store();
    let cache = tempfile::tempdir().expect("cache");
    let served = tempfile::tempdir().expect("served");
    // A service on one fixed port of every address, as most are: on the host's network
    // two probes at once would fight over it.
    let port = free_port();
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static");
    let unit = format!(
        "[Unit]\nDescription=fixed port\n\n[Service]\n\
         ExecStart=/usr/lib/fixed-port/busybox httpd -f -p {port} -h /usr/share/fixed-port\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    );
    build_deb(
        served.path(),
        "fixed-port",
        "busybox httpd on one fixed port",
        &[
            ("usr/lib/fixed-port/busybox", &busybox, 0o755),
            ("usr/share/fixed-port/index.html", b"fixed\n", 0o644),
            ("lib/systemd/system/fixed-port.service", unit.as_bytes(), 0o644),
        ],
    );
    let server = FileServer::start(served.path());
    let service = format!("http://localhost:{port}/");
    let o = postroj(
        &store,
        cache.path(),
        &[
            "pkgprobe",
            "--image=debian-bookworm",
            "--image=debian-trixie",
            "-j",
            "2",
            "--network=private",
            &format!("--package={}", server.url("fixed-port_1.0_all.deb")),
            "--check-unit=fixed-port",
            &format!("--check-network={service}"),
            "--format=json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}\n{}", out(&o), err(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
    for suite in report["suites"].as_array().expect("suites") {
        let check =
            suite["cases"].as_array().and_then(|c| c.iter().find(|c| c["name"] == format!("network {service}")));
        let check = check.unwrap_or_else(|| panic!("no network check in {suite:#}"));
        assert_eq!(check["result"], "passed", "{check:#}");
        // Reached at the container's own address: nothing listens on the host's port.
        assert!(check["detail"].as_str().is_some_and(|d| d.contains("200")), "{check:#}");
    }
    store.assert_clean();
}
