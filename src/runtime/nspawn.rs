//! The systemd-nspawn command line for a container, in both modes.

use std::path::Path;
use std::process::Command;

use super::host::Registration;
use super::spec::{Network, RunSpec};

/// systemd-nspawn's machine names are host names: letters, digits, `-` and `.`.
pub fn machine_name(name: &str, id: &str) -> String {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    if valid {
        name.to_owned()
    } else {
        format!("racker-{}", &id[..12.min(id.len())])
    }
}

/// Builds `systemd-nspawn ...` for `spec` on `rootfs`. In boot mode the command is not
/// part of it (it is entered later); in command mode it is the container's PID 1.
pub fn command(spec: &RunSpec, rootfs: &Path, machine: &str, id: &str, registration: Registration) -> Command {
    let mut cmd = Command::new("systemd-nspawn");
    cmd.arg("--quiet").args(registration.nspawn_args());
    cmd.arg(format!("--directory={}", rootfs.display()));
    cmd.arg(format!("--machine={machine}"));
    // Two containers of one image must not share a machine id or a journal link.
    cmd.arg(format!("--uuid={}", &id[..32.min(id.len())]));
    cmd.arg("--link-journal=no");
    if spec.seccomp_unconfined {
        // systemd's switch for its seccomp use: nspawn then installs no filter.
        cmd.env("SYSTEMD_SECCOMP", "0");
    }
    if spec.no_new_privileges {
        cmd.arg("--no-new-privileges=yes");
    }
    if spec.network == Network::None {
        cmd.arg("--private-network");
    }
    if let Some(hostname) = &spec.hostname {
        cmd.arg(format!("--hostname={hostname}"));
    }
    for bind in &spec.binds {
        let flag = if bind.read_only { "--bind-ro" } else { "--bind" };
        cmd.arg(format!("{flag}={}:{}", bind.source.display(), bind.target));
    }
    if spec.boot {
        cmd.args(["--boot", "--notify-ready=yes", "--console=pipe"]);
        // Arguments after the options go to the container's init, as on a kernel command line.
        if let Some(unit) = spec.boot_target.unit() {
            cmd.arg(format!("systemd.unit={unit}"));
        }
    } else {
        cmd.arg(if spec.tty { "--console=interactive" } else { "--console=pipe" });
        // SIGTERM to nspawn reaches the command as SIGTERM, as `docker stop` would send.
        cmd.arg("--kill-signal=SIGTERM");
        cmd.arg(format!("--chdir={}", spec.workdir));
        for (k, v) in &spec.env {
            cmd.arg(format!("--setenv={k}={v}"));
        }
        if let Some(user) = &spec.user {
            cmd.arg(format!("--user={user}"));
        }
        cmd.arg("--").args(&spec.argv);
    }
    cmd.env_remove("NOTIFY_SOCKET");
    cmd
}

/// Enters a booted container (through its leader's namespaces) to run `spec.argv`.
pub fn enter(spec: &RunSpec, leader: i32, ids: Option<(u32, u32)>) -> Command {
    let mut cmd = Command::new("nsenter");
    // nsenter opens --root and --wd before it enters: name them through the leader's root.
    let root = format!("/proc/{leader}/root");
    let workdir = format!("{root}/{}", spec.workdir.trim_start_matches('/'));
    cmd.arg(format!("--target={leader}")).args(["--all", &format!("--root={root}"), &format!("--wd={workdir}")]);
    if let Some((uid, gid)) = ids {
        cmd.arg(format!("--setuid={uid}")).arg(format!("--setgid={gid}"));
    }
    cmd.arg("--").args(&spec.argv);
    cmd.env_clear().envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{Bind, BootTarget};

    fn args(cmd: &Command) -> Vec<String> {
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn command_mode_line() {
        let spec = RunSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), "exit 7".into()],
            env: vec![("PATH".into(), "/bin".into())],
            workdir: "/srv".into(),
            user: Some("app".into()),
            hostname: Some("h".into()),
            binds: vec![Bind { source: "/data".into(), target: "/mnt".into(), read_only: true }],
            network: Network::None,
            ..RunSpec::default()
        };
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let a = args(&command(&spec, Path::new("/r"), "m", id, Registration::Direct));
        for want in [
            "--register=no",
            "--keep-unit",
            "--directory=/r",
            "--uuid=0123456789abcdef0123456789abcdef",
            "--private-network",
            "--hostname=h",
            "--bind-ro=/data:/mnt",
            "--console=pipe",
            "--chdir=/srv",
            "--setenv=PATH=/bin",
            "--user=app",
        ] {
            assert!(a.contains(&want.to_owned()), "{want} missing from {a:?}");
        }
        assert_eq!(&a[a.len() - 4..], ["--", "/bin/sh", "-c", "exit 7"]);
        let booted = RunSpec { boot: true, ..spec };
        let boot = args(&command(&booted, Path::new("/r"), "m", id, Registration::Machined));
        assert!(boot.contains(&"--boot".to_owned()) && boot.contains(&"--notify-ready=yes".to_owned()));
        assert!(boot.contains(&"--register=yes".to_owned()) && !boot.contains(&"--".to_owned()));
        assert!(!boot.iter().any(|a| a.starts_with("systemd.unit=")), "the image's default target by default");
        let minimal = RunSpec { boot_target: BootTarget::Minimal, ..booted };
        let lean = args(&command(&minimal, Path::new("/r"), "m", id, Registration::Direct));
        assert_eq!(lean.last().map(String::as_str), Some("systemd.unit=racker-minimal.target"));
    }

    #[test]
    fn machine_names_are_host_names() {
        let id = "abcdef0123456789";
        assert_eq!(machine_name("web-1", id), "web-1");
        assert_eq!(machine_name("my_app", id), "racker-abcdef012345");
    }
}
