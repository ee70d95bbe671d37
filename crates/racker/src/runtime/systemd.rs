//! The host's systemd and machined, spoken to over the system bus (zbus) instead of
//! through systemctl and machinectl processes. Only on a host whose PID 1 is systemd
//! ([`Registration::Machined`](super::Registration)); elsewhere nothing here is called.

use std::time::{Duration, Instant};

use zbus::blocking::{Connection, Proxy};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

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
const MACHINED: Service = ("org.freedesktop.machine1", "/org/freedesktop/machine1", "org.freedesktop.machine1.Manager");

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

    /// Ends machine `name` when it is container `id` (nspawn's `--uuid` is the id's first
    /// 32 digits; a machine of that name with another UUID is someone else's and left
    /// alone): SIGKILL to every process in its scope (`KillMachine`, as `machinectl kill
    /// -s KILL`), then waits, at most `timeout`, until machined has let it go. Returns
    /// whether there was such a machine. On a systemd host the machine's scope is the
    /// container's cgroup: this ends what a killed nspawn or racker left behind.
    pub fn kill_machine(&self, name: &str, id: &str, timeout: Duration) -> Result<bool, BusError> {
        let ours = || -> Result<bool, BusError> {
            Ok(self.machine_id(name)?.is_some_and(|m| m.len() == 32 && id.starts_with(&m)))
        };
        if !ours()? {
            return Ok(false);
        }
        let sigkill = rustix::process::Signal::KILL.as_raw();
        let killed = self.manager(MACHINED)?.call::<_, _, ()>("KillMachine", &(name, "all", sigkill));
        match killed {
            Err(e) if is_no_such_machine(&e) => return Ok(true),
            other => other.map_err(BusError::of("KillMachine"))?,
        }
        let deadline = Instant::now() + timeout;
        while ours()? {
            if Instant::now() >= deadline {
                let still = format!("machine {name} still registered {}s after SIGKILL", timeout.as_secs());
                return Err(BusError::of("KillMachine")(zbus::Error::Failure(still)));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(true)
    }

    /// The UUID of machine `name` in hex digits, None if machined knows no such machine.
    fn machine_id(&self, name: &str) -> Result<Option<String>, BusError> {
        let path: OwnedObjectPath = match self.manager(MACHINED)?.call("GetMachine", &(name,)) {
            Ok(path) => path,
            Err(e) if is_no_such_machine(&e) => return Ok(None),
            Err(e) => return Err(BusError::of("GetMachine")(e)),
        };
        // Properties.Get itself: a proxy's property cache would watch a machine that may
        // be gone a moment later.
        let properties = Proxy::new(&self.connection, MACHINED.0, path, "org.freedesktop.DBus.Properties")
            .map_err(BusError::of("org.freedesktop.DBus.Properties"))?;
        match properties.call::<_, _, OwnedValue>("Get", &("org.freedesktop.machine1.Machine", "Id")) {
            Ok(uuid) => {
                let bytes = Vec::<u8>::try_from(uuid).unwrap_or_default();
                Ok(Some(bytes.iter().map(|b| format!("{b:02x}")).collect()))
            }
            // Gone between the two questions.
            Err(e) if is_error(&e, "org.freedesktop.DBus.Error.UnknownObject") => Ok(None),
            Err(e) => Err(BusError::of("the machine's Id")(e)),
        }
    }
}

/// Whether `e` is D-Bus error `name`.
fn is_error(e: &zbus::Error, name: &str) -> bool {
    match e {
        zbus::Error::MethodError(error, ..) => error.as_str() == name,
        zbus::Error::FDO(fdo) => zbus::DBusError::name(fdo.as_ref()).as_str() == name,
        _ => false,
    }
}

/// machined's answer for a name it does not know.
fn is_no_such_machine(e: &zbus::Error) -> bool {
    is_error(e, "org.freedesktop.machine1.NoSuchMachine")
}

/// The scope of a detached container's monitor: `racker-<id>.scope`, beside the
/// `machine-<name>.scope` machined makes for the container's own processes.
pub fn monitor_scope(id: &str) -> String {
    format!("racker-{}.scope", &id[..32.min(id.len())])
}
