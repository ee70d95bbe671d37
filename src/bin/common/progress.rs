//! Drawing the library's progress events: bars on a terminal, plain lines otherwise,
//! nothing with `--quiet`.

use std::io::{self, Write};

use racker::progress::{Progress, Silent};

/// Bars per item on a terminal (indicatif), as docker draws pulls.
pub struct Bars {
    multi: indicatif::MultiProgress,
    bars: std::sync::Mutex<std::collections::HashMap<String, indicatif::ProgressBar>>,
}

impl Default for Bars {
    fn default() -> Self {
        Bars { multi: indicatif::MultiProgress::new(), bars: Default::default() }
    }
}

impl Bars {
    fn bar(&self, id: &str) -> indicatif::ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|p| p.into_inner());
        bars.entry(id.to_owned()).or_insert_with(|| self.multi.add(indicatif::ProgressBar::new(0))).clone()
    }
}

impl Progress for Bars {
    fn begin(&self, id: &str, action: &str, total: Option<u64>) {
        let bar = self.bar(id);
        let template = if total.is_some() {
            "{prefix}: {msg:12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}"
        } else {
            "{prefix}: {msg:12} {bytes} {bytes_per_sec}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_length(total.unwrap_or(0));
        bar.set_prefix(id.to_owned());
        bar.set_message(action.to_owned());
    }
    fn advance(&self, id: &str, bytes: u64) {
        self.bar(id).inc(bytes);
    }
    fn end(&self, id: &str, status: &str) {
        let bar = self.bar(id);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{prefix}: {msg}") {
            bar.set_style(style);
        }
        bar.set_prefix(id.to_owned());
        bar.finish_with_message(status.to_owned());
    }
}

/// One line per finished item, for logs and pipes (docker's non-terminal output).
pub struct Lines;

impl Progress for Lines {
    fn end(&self, id: &str, status: &str) {
        // A closed standard error is no reason to stop (or panic in) the work.
        let _ = writeln!(io::stderr(), "{id}: {status}");
    }
}

/// Bars on a terminal, lines otherwise, nothing when quiet.
pub fn for_stderr(quiet: bool) -> std::sync::Arc<dyn Progress> {
    use std::io::IsTerminal;
    if quiet {
        std::sync::Arc::new(Silent)
    } else if io::stderr().is_terminal() {
        std::sync::Arc::new(Bars::default())
    } else {
        std::sync::Arc::new(Lines)
    }
}
