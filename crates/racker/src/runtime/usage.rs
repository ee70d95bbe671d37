//! What a running container is and uses: its processes (`top`) and their resources
//! (`stats`). The container's own cgroup (`racker-<id>`, see cgroup.rs) holds its
//! processes; its PID namespace also holds what `exec` entered into it. Resources come
//! from the cgroup's files where a controller gives them (cgroup v2 `cpu.stat`,
//! `memory.current`, `io.stat`, `pids.current`, or the v1 hierarchies of the
//! container's limits), and otherwise from the processes' own `/proc` entries, summed:
//! on hybrid hosts the unified hierarchy has no memory, io or pids controller.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::lifecycle::is_running;
use super::run::cgroup_of;
use super::{Result, RuntimeError};
use crate::store::{ContainerRecord, Store};

/// A container's resource use at one moment. CPU is a running total: a rate needs two.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// CPU time used since it started, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use, in bytes, without the page cache the kernel may drop (as docker).
    pub memory: u64,
    /// Its memory limit (`--memory`), or the host's memory.
    pub memory_limit: u64,
    /// Tasks (processes and threads).
    pub pids: u64,
    /// Bytes received and sent on its own network interfaces; None where it shares the
    /// host's network.
    pub net: Option<(u64, u64)>,
    /// Bytes read from and written to block devices.
    pub block: (u64, u64),
}

/// The host pids of the processes of running container `name`, sorted: what its
/// cgroup holds and what runs in its PID namespace (nspawn, which runs beside the
/// container in its cgroup, is not the container's, as docker's shim is not).
pub fn processes(store: &Store, name: &str) -> Result<Vec<i32>> {
    members(&store.container(name)?)
}

fn members(record: &ContainerRecord) -> Result<Vec<i32>> {
    let cgroup = cgroup_of(record);
    let leader = record.leader.filter(|_| is_running(record)).map(|l| l.pid as i32);
    if leader.is_none() && !cgroup.populated() {
        return Err(RuntimeError::NotRunning { name: record.name.clone() });
    }
    let mut pids = cgroup.pids();
    if let Some(ns) = leader.and_then(pid_namespace) {
        pids.extend(all_pids().into_iter().filter(|p| pid_namespace(*p) == Some(ns)));
        pids.retain(|p| pid_namespace(*p) == Some(ns));
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// The inode of the PID namespace `pid` is in.
fn pid_namespace(pid: i32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/pid")).ok().map(|m| m.ino())
}

fn all_pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// `racker top`: the host's `ps` with `ps_args` (docker's default `-ef`), its header
/// and the rows of container `name`'s processes, as ps printed them. The rows are
/// picked by the column ps heads `PID`, so the options must show it.
pub fn top(store: &Store, name: &str, ps_args: &[String]) -> Result<Vec<String>> {
    let pids = processes(store, name)?;
    let default = ["-ef".to_owned()];
    let args = if ps_args.is_empty() { &default[..] } else { ps_args };
    let output = Command::new("ps")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RuntimeError::Spawn { program: "ps".into(), source })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let reason = String::from_utf8_lossy(&output.stderr).lines().next().unwrap_or_default().to_owned();
        return Err(RuntimeError::Invalid { what: format!("ps options {}", args.join(" ")), reason });
    }
    select_rows(&text, &pids).ok_or_else(|| RuntimeError::Invalid {
        what: format!("ps options {}", args.join(" ")),
        reason: "ps printed no PID column (add it, e.g. -o pid,args)".into(),
    })
}

/// The header of ps's `output` and its rows whose PID column is one of `pids`; None
/// without a PID column.
fn select_rows(output: &str, pids: &[i32]) -> Option<Vec<String>> {
    let mut lines = output.lines();
    let header = lines.next()?;
    let column = header.split_whitespace().position(|title| title == "PID")?;
    let mut rows = vec![header.to_owned()];
    rows.extend(
        lines
            .filter(|l| {
                l.split_whitespace().nth(column).and_then(|p| p.parse().ok()).is_some_and(|p| pids.contains(&p))
            })
            .map(str::to_owned),
    );
    Some(rows)
}

/// `racker stats`: container `name`'s resource use now; nothing at all for one that is
/// not running, which docker shows as a row of zeros.
pub fn usage(store: &Store, name: &str) -> Result<Usage> {
    let record = store.container(name)?;
    let pids = match members(&record) {
        Err(RuntimeError::NotRunning { .. }) => return Ok(Usage { net: Some((0, 0)), ..Usage::default() }),
        other => other?,
    };
    let dirs = cgroup_of(&record).dirs().to_vec();
    let file = |name: &str| dirs.iter().map(|d| d.join(name)).find(|f| f.exists());
    let read = |name: &str| file(name).and_then(|f| std::fs::read_to_string(f).ok());

    let host_memory = meminfo("MemTotal:").unwrap_or(u64::MAX);
    let cpu_ns = read("cpu.stat")
        .and_then(|t| field(&t, "usage_usec"))
        .map(|us| us * 1000)
        .or_else(|| read("cpuacct.usage").and_then(|t| t.trim().parse().ok()))
        .unwrap_or_else(|| pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>() * NS_PER_TICK);
    let memory = match (read("memory.current"), read("memory.usage_in_bytes")) {
        (Some(v2), _) => {
            number(&v2).saturating_sub(read("memory.stat").and_then(|s| field(&s, "inactive_file")).unwrap_or(0))
        }
        (None, Some(v1)) => {
            number(&v1).saturating_sub(read("memory.stat").and_then(|s| field(&s, "total_inactive_file")).unwrap_or(0))
        }
        (None, None) => pids.iter().filter_map(|p| resident(*p)).sum(),
    };
    let memory_limit = read("memory.max")
        .or_else(|| read("memory.limit_in_bytes"))
        .and_then(|t| t.trim().parse::<u64>().ok())
        .unwrap_or(host_memory)
        .min(host_memory);
    let tasks = read("pids.current").map(|t| number(&t)).unwrap_or_else(|| {
        pids.iter().map(|p| std::fs::read_dir(format!("/proc/{p}/task")).map_or(0, |d| d.count() as u64)).sum()
    });
    let block = read("io.stat")
        .map(|t| io_stat(&t))
        .or_else(|| read("blkio.throttle.io_service_bytes").map(|t| blkio(&t)))
        .unwrap_or_else(|| pids.iter().filter_map(|p| proc_io(*p)).fold((0, 0), |(r, w), (pr, pw)| (r + pr, w + pw)));
    let leader = record.leader.filter(|_| is_running(&record)).map(|l| l.pid as i32);
    Ok(Usage { cpu_ns, memory, memory_limit, pids: tasks, net: leader.and_then(network), block })
}

/// USER_HZ is 100 on Linux: a clock tick of `/proc/PID/stat` is 10 ms.
const NS_PER_TICK: u64 = 10_000_000;

fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// `KEY VALUE` lines (`cpu.stat`, `memory.stat`).
fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

fn meminfo(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text.lines().find_map(|l| l.strip_prefix(key))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system time of process `pid` and its threads, in clock ticks.
fn cpu_ticks(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    Some(fields.next()?.parse::<u64>().ok()? + fields.next()?.parse::<u64>().ok()?)
}

/// Resident bytes of process `pid`.
fn resident(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

fn proc_io(pid: i32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let get = |key| text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok());
    Some((get("read_bytes:")?, get("write_bytes:")?))
}

/// `MAJ:MIN rbytes=N wbytes=N ...` lines of cgroup v2 `io.stat`, summed.
fn io_stat(text: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for word in text.split_whitespace() {
        if let Some(n) = word.strip_prefix("rbytes=") {
            total.0 += number(n);
        } else if let Some(n) = word.strip_prefix("wbytes=") {
            total.1 += number(n);
        }
    }
    total
}

/// `MAJ:MIN Read N` lines of cgroup v1 `blkio.throttle.io_service_bytes`, summed.
fn blkio(text: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for line in text.lines() {
        match line.split_whitespace().collect::<Vec<_>>()[..] {
            [_, "Read", n] => total.0 += number(n),
            [_, "Write", n] => total.1 += number(n),
            _ => {}
        }
    }
    total
}

/// Bytes received and sent on the interfaces (loopback aside) of the network
/// namespace `leader` is in, unless that is this process's (the host's).
fn network(leader: i32) -> Option<(u64, u64)> {
    let ns = |path: PathBuf| std::fs::metadata(path).ok().map(|m| m.ino());
    let theirs = ns(PathBuf::from(format!("/proc/{leader}/ns/net")))?;
    if Some(theirs) == ns(Path::new("/proc/self/ns/net").to_owned()) {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{leader}/net/dev")).ok()?;
    Some(net_dev(&text))
}

/// `/proc/net/dev`: `IFACE: rx_bytes ... (8 receive fields) tx_bytes ...`.
fn net_dev(text: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for line in text.lines().skip(2) {
        let Some((iface, counters)) = line.split_once(':') else { continue };
        if iface.trim() == "lo" {
            continue;
        }
        let counters: Vec<u64> = counters.split_whitespace().map(number).collect();
        if counters.len() >= 9 {
            total.0 += counters[0];
            total.1 += counters[8];
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_picked_by_the_pid_column_ps_printed() {
        let ps = "UID          PID    PPID  C STIME TTY          TIME CMD\n\
                  root           1       0  0 12:00 ?        00:00:01 /sbin/init\n\
                  root          42       1  0 12:00 ?        00:00:00 sleep 42\n";
        assert_eq!(select_rows(ps, &[42]).unwrap().len(), 2);
        assert!(select_rows(ps, &[42]).unwrap()[1].ends_with("sleep 42"));
        let args = "    PID COMMAND\n      1 init\n     42 sleep 1\n";
        assert_eq!(select_rows(args, &[1]).unwrap(), ["    PID COMMAND", "      1 init"]);
        assert_eq!(select_rows("COMMAND\ninit\n", &[1]), None);
    }

    #[test]
    fn counters_parse_as_the_kernel_writes_them() {
        assert_eq!(io_stat("8:0 rbytes=4096 wbytes=10 rios=1 wios=1\n8:16 rbytes=1 wbytes=2\n"), (4097, 12));
        assert_eq!(blkio("8:0 Read 100\n8:0 Write 7\n8:0 Sync 3\nTotal 107\n"), (100, 7));
        let dev = "Inter-|   Receive\n face |bytes\n    lo: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n  \
                   host0: 100 2 0 0 0 0 0 0 200 3 0 0 0 0 0 0\n";
        assert_eq!(net_dev(dev), (100, 200));
        assert_eq!(field("usage_usec 1500\nuser_usec 1000\n", "usage_usec"), Some(1500));
        assert_eq!(field("total_inactive_file 7\ninactive_file 3\n", "inactive_file"), Some(3));
    }
}
