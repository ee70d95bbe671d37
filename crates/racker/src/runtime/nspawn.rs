//! The systemd-nspawn command line for a container, in both modes.
// unsafe: pre_exec, to hand nsenter the working directory's descriptor.
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::host::Registration;
use super::spec::{Network, RunSpec};
use super::{flags, rootfs, Result, RuntimeError};

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
    match (&spec.network, &spec.netns) {
        (Network::Host, _) => {}
        (Network::Named(_), Some(netns)) => {
            // racker made and configured the namespace, and writes resolv.conf itself.
            cmd.arg(format!("--network-namespace-path={}", netns.display()));
            cmd.arg("--resolv-conf=off");
        }
        (Network::None | Network::Named(_), _) => {
            cmd.arg("--private-network");
        }
    }
    if let Some(hostname) = &spec.hostname {
        cmd.arg(format!("--hostname={hostname}"));
    }
    for bind in &spec.binds {
        let flag = if bind.read_only { "--bind-ro" } else { "--bind" };
        cmd.arg(format!("{flag}={}:{}", bind.source.display(), bind.target));
    }
    cmd.args(flags::nspawn_args(spec, registration));
    flags::nspawn_env(spec, &mut cmd);
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
        pass_env(&mut cmd, &spec.env);
        if let Some(user) = &spec.user {
            cmd.arg(format!("--user={user}"));
        }
        cmd.arg("--").args(flags::init_argv(spec)).args(&spec.argv);
    }
    cmd.env_remove("NOTIFY_SOCKET");
    cmd
}

/// `cmd` as a line for the debug log, without the values of `--setenv=NAME=VALUE`: an
/// environment may carry secrets, and a log is read by more eyes than `ps`.
pub fn loggable(cmd: &Command) -> String {
    let args = cmd.get_args().map(|a| {
        let a = a.to_string_lossy();
        match a.strip_prefix("--setenv=").and_then(|kv| kv.split_once('=')) {
            Some((name, _)) => format!("--setenv={name}=…"),
            None => a.into_owned(),
        }
    });
    std::iter::once(cmd.get_program().to_string_lossy().into_owned()).chain(args).collect::<Vec<_>>().join(" ")
}

/// Gives the container `env` without putting values on nspawn's command line, which
/// every local user can read (`ps`): `--setenv=NAME` makes nspawn take the value from its
/// own environment. Names the host's nspawn would itself obey ([`host_side`]) still go
/// as `--setenv=NAME=VALUE`: an image must not steer root's loader or nspawn.
fn pass_env(cmd: &mut Command, env: &[(String, String)]) {
    for (k, v) in env {
        if host_side(k) {
            cmd.arg(format!("--setenv={k}={v}"));
        } else {
            cmd.arg(format!("--setenv={k}")).env(k, v);
        }
    }
}

/// Variables that systemd-nspawn's dynamic loader, glibc or systemd's libraries act on
/// in the nspawn process itself (glibc's list of those unsafe for privileged programs,
/// `SYSTEMD_*`, the bus and socket-activation ones), and `PATH`, by which racker finds
/// systemd-nspawn.
pub(crate) fn host_side(name: &str) -> bool {
    const NAMES: [&str; 13] = [
        "PATH",
        "NOTIFY_SOCKET",
        "GCONV_PATH",
        "GETCONF_DIR",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "LOCPATH",
        "NIS_PATH",
        "NLSPATH",
        "RESOLV_HOST_CONF",
        "RES_OPTIONS",
        "TMPDIR",
        "TZDIR",
    ];
    const PREFIXES: [&str; 6] = ["LD_", "GLIBC_", "MALLOC_", "SYSTEMD_", "DBUS_", "LISTEN_"];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Enters a booted container (through its leader's namespaces) to run `spec.argv`.
///
/// nsenter runs as root on the host before it enters, so nothing of the image may steer
/// it: it is found on racker's own `PATH`, never the image's; variables that the host's
/// loader and libc act on ([`host_side`]) reach the command through the container's
/// `env`, not through nsenter's environment; and the working directory is resolved
/// inside the container's root (an image's symlink must not name a host directory) and
/// handed to nsenter open.
pub fn enter(spec: &RunSpec, leader: i32, ids: Option<(u32, u32)>) -> Result<Command> {
    let root = format!("/proc/{leader}/root");
    let workdir = rootfs::open_dir(Path::new(&root), &spec.workdir).map_err(|source| match source.kind() {
        // docker's exec does not make it either (its run does: see run.rs).
        std::io::ErrorKind::NotFound => RuntimeError::Missing {
            what: format!("working directory {}", spec.workdir),
            reason: "no such directory in the container".into(),
        },
        _ => RuntimeError::Io { path: format!("{root}{}", spec.workdir).into(), source },
    })?;
    let mut cmd = Command::new(host_program("nsenter"));
    cmd.arg(format!("--target={leader}")).args(["--all", &format!("--root={root}")]);
    cmd.arg(format!("--wd=/proc/self/fd/{}", workdir.as_raw_fd()));
    // SAFETY: fcntl(2) is async-signal-safe; the descriptor lives in the closure.
    unsafe {
        cmd.pre_exec(move || {
            rustix::io::fcntl_setfd(&workdir, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    if let Some((uid, gid)) = ids {
        cmd.arg(format!("--setuid={uid}")).arg(format!("--setgid={gid}"));
    }
    let (for_loader, plain): (Vec<_>, Vec<_>) = spec.env.iter().partition(|(k, _)| k != "PATH" && host_side(k));
    cmd.arg("--");
    if !for_loader.is_empty() {
        match rootfs::find_executable(Path::new(&root), "env", spec.path_env(), "/") {
            rootfs::Lookup::Found(_) => {
                cmd.arg("env").args(for_loader.iter().map(|(k, v)| format!("{k}={v}")));
            }
            _ => {
                let names: Vec<&str> = for_loader.iter().map(|(k, _)| k.as_str()).collect();
                tracing::warn!("the container has no env program: not passing {}", names.join(", "));
            }
        }
    }
    cmd.args(&spec.argv);
    // The command, not the whole line: `env NAME=VALUE` may carry secrets.
    tracing::debug!("entering the container of PID {leader} in {}: {:?}", spec.workdir, spec.argv);
    super::limits::join_on_spawn(spec, &mut cmd);
    cmd.env_clear().envs(plain.into_iter().map(|(k, v)| (k, v)));
    Ok(cmd)
}

/// `name` on racker's own `PATH`: a command whose environment is the container's would
/// otherwise be looked up on the image's `PATH`, host directories an image may name.
fn host_program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| Path::new("/usr/bin").join(name))
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
            env: vec![("PATH".into(), "/bin".into()), ("DB_PASSWORD".into(), "s3cret".into())],
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
            "--setenv=DB_PASSWORD",
            "--user=app",
        ] {
            assert!(a.contains(&want.to_owned()), "{want} missing from {a:?}");
        }
        assert!(!a.iter().any(|a| a.contains("s3cret")), "a value in nspawn's argv: {a:?}");
        let cmd = command(&spec, Path::new("/r"), "m", id, Registration::Direct);
        let envs: Vec<_> = cmd.get_envs().map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned()))).collect();
        assert!(envs.contains(&("DB_PASSWORD".into(), Some("s3cret".into()))), "{envs:?}");
        assert!(!envs.iter().any(|(k, _)| k == "PATH"), "the image's PATH must not be nspawn's: {envs:?}");
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
