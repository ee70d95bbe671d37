//! The host's systemd and machined, spoken to over the system bus (zbus) instead of
//! through systemctl and machinectl processes. Only on a host whose PID 1 is systemd
//! ([`Registration::Machined`](super::Registration)); elsewhere nothing here is called.

use std::time::{Duration, Instant};

use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::{OwnedObjectPath, Value};

/// A call on the system bus that failed: which call, and D-Bus's answer.
#[derive(Debug, thiserror::Error)]
#[error("{call} on the system bus: {source}")]
pub struct BusError {
    call: &'static str,
    #[source]
    source: Box<zbus::Error>,
}

impl BusError {
    fn of(call: &'static str) -> impl FnOnce(zbus::Error) -> BusError {
        move |source| BusError { call, source: Box::new(source) }
    }
}

/// `(destination, object path, interface)` of a service's manager object.
type Service = (&'static str, &'static str, &'static str);

const SYSTEMD: Service = ("org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager");

/// How long systemd may take to move a process into a new scope.
const SCOPE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to the system bus.
pub struct SystemBus {
    connection: Connection,
}

impl SystemBus {
    pub fn connect() -> Result<SystemBus, BusError> {
        let connection = Connection::system().map_err(BusError::of("connecting"))?;
        Ok(SystemBus { connection })
    }

    fn manager(&self, (destination, path, interface): Service) -> Result<Proxy<'_>, BusError> {
        Proxy::new(&self.connection, destination, path, interface).map_err(BusError::of(interface))
    }

    /// Moves process `pid`, and what it starts from then on, into a new transient scope
    /// `unit` (collected once empty), as podman places conmon: a unit that started racker
    /// may end, and systemd then stops what is left in its cgroup, but not this.
    pub fn enter_new_scope(&self, unit: &str, pid: u32, description: &str) -> Result<(), BusError> {
        let properties: Vec<(&str, Value<'_>)> = vec![
            ("PIDs", Value::from(vec![pid])),
            ("Description", Value::from(description)),
            ("CollectMode", Value::from("inactive-or-failed")),
        ];
        let auxiliary: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        let _job: OwnedObjectPath = self
            .manager(SYSTEMD)?
            .call("StartTransientUnit", &(unit, "fail", properties, auxiliary))
            .map_err(BusError::of("StartTransientUnit"))?;
        // The job moves the process when it runs, right after the call: wait for it, so
        // that whatever the process starts next lands in the scope too.
        let cgroup = format!("/proc/{pid}/cgroup");
        let deadline = Instant::now() + SCOPE_TIMEOUT;
        while Instant::now() < deadline {
            let now = std::fs::read_to_string(&cgroup).unwrap_or_default();
            if now.lines().any(|l| l.ends_with(&format!("/{unit}"))) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Err(BusError::of("StartTransientUnit")(zbus::Error::Failure(format!("{unit} never held {pid}"))))
    }
}

/// The scope of a detached container's monitor: `racker-<id>.scope`, beside the
/// `machine-<name>.scope` machined makes for the container's own processes.
pub fn monitor_scope(id: &str) -> String {
    format!("racker-{}.scope", &id[..32.min(id.len())])
}
