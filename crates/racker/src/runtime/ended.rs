//! How a command-mode container ended, in docker's numbers. systemd-nspawn exits 1 both
//! when the command exits 1 and when the command is killed by a signal (it then logs
//! "Container NAME terminated by signal SIG."), so racker tells them apart itself: a
//! SIGKILL racker delivered (`kill`, `stop` after its timeout) is noted beside the
//! container, and a logged console is read for nspawn's line; either makes the status
//! 128+N, as docker reports it (137 for SIGKILL).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::run::exit_code;
use super::runtime_dir;

/// Where racker notes the signal it killed container `id` with.
fn note_path(id: &str) -> Option<PathBuf> {
    runtime_dir().ok().map(|dir| dir.join(format!("{id}.killed")))
}

/// Notes that racker sends `signal` to container `id`'s leader: only SIGKILL, which the
/// command cannot catch, so an exit status 1 after it means the kill.
pub(super) fn note_kill(id: &str, signal: i32) {
    if signal != 9 {
        return;
    }
    if let Some(path) = note_path(id) {
        let written = crate::private::create_file(&path, true)
            .and_then(|mut f| std::io::Write::write_all(&mut f, signal.to_string().as_bytes()));
        if let Err(e) = written {
            tracing::debug!("noting the kill of {id}: {}: {e}", path.display());
        }
    }
}

/// Forgets a noted kill (a new start, or the container's removal).
pub(super) fn forget(id: &str) {
    if let Some(path) = note_path(id) {
        let _ = std::fs::remove_file(path);
    }
}

/// The exit status of a command-mode container whose nspawn ended with `status`.
pub(super) fn command_code(status: ExitStatus, id: &str, console: Option<&Path>) -> i32 {
    let code = exit_code(status);
    let noted = note_path(id).and_then(|p| std::fs::read_to_string(p).ok());
    forget(id);
    if code != 1 {
        return code;
    }
    if let Some(signal) = noted.and_then(|s| s.trim().parse::<i32>().ok()) {
        return 128 + signal;
    }
    console.and_then(signal_in_console).map_or(code, |signal| 128 + signal)
}

/// The signal nspawn's last console line names ("Container web terminated by signal
/// KILL."), if that is what the log ends with: a plain console log, or the json log of a
/// command-mode container (its last record's text).
fn signal_in_console(console: &Path) -> Option<i32> {
    let text = std::fs::read(console).ok()?;
    let tail = &text[text.len().saturating_sub(1024)..];
    let last = String::from_utf8_lossy(tail).lines().last()?.to_owned();
    let last = match serde_json::from_str::<super::LogRecord>(&last) {
        Ok(record) => record.log.trim_end().to_owned(),
        Err(_) => last,
    };
    let name = last.strip_prefix("Container ")?.split_once(" terminated by signal ")?.1.strip_suffix('.')?;
    signal_number(name)
}

/// Signal numbers (x86 and arm) by the names nspawn prints.
fn signal_number(name: &str) -> Option<i32> {
    const NAMES: [&str; 31] = [
        "HUP", "INT", "QUIT", "ILL", "TRAP", "ABRT", "BUS", "FPE", "KILL", "USR1", "SEGV", "USR2", "PIPE", "ALRM",
        "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN", "TTOU", "URG", "XCPU", "XFSZ", "VTALRM", "PROF",
        "WINCH", "IO", "PWR", "SYS",
    ];
    let name = name.trim_start_matches("SIG");
    NAMES.iter().position(|n| *n == name).map(|i| i as i32 + 1)
}

#[cfg(test)]
mod tests {
    use super::signal_number;

    #[test]
    fn nspawn_signal_names_map_to_numbers() {
        assert_eq!(signal_number("KILL"), Some(9));
        assert_eq!(signal_number("TERM"), Some(15));
        assert_eq!(signal_number("SIGSEGV"), Some(11));
        assert_eq!(signal_number("SYS"), Some(31));
        assert_eq!(signal_number("NOPE"), None);
    }
}
