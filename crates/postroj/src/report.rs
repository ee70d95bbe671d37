//! What a probe found, and its three renderings: a summary table for people, JSON for
//! scripts and JUnit XML for CI systems (one `<testsuite>` per image).
//!
//! A [`Report`] has one [`Suite`] per image; a suite has one [`Case`] per step or check
//! (`pull`, `boot`, `install foo_1.0_all.deb`, `unit foo.service`, `network
//! http://localhost:8080/`, `teardown`), each timed: a suite's [`phases`](Suite::phases)
//! sum them by kind. A suite may carry the install's [`Effects`] and the name of the
//! container kept for inspection.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use quick_xml::events::{BytesDecl, BytesText, Event};
use quick_xml::Writer;
use serde::{Deserialize, Serialize};

use super::check::CheckOutcome;
use super::effects::Effects;
use super::matrix::{Cell, Shard};

/// Everything one `pkgprobe` run found (read back by `report merge`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The host the probe ran on (JUnit's `hostname`).
    pub hostname: String,
    pub timestamp: DateTime<Utc>,
    pub suites: Vec<Suite>,
    /// The part of the matrix this run was (`--shard`), none for a whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// The whole matrix a shard was split from, so that a merge can name what a missing
    /// shard would have run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matrix: Vec<Cell>,
}

/// The checks of one cell of the matrix: an image, and the package probed in it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Suite {
    /// The image's label (`debian-bookworm`).
    pub image: String,
    /// The probed package's file name, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    /// What was done with it (`install`, `purge`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The host that ran it, where it differs from the report's (a merged report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// When the image's checks started.
    pub timestamp: DateTime<Utc>,
    pub cases: Vec<Case>,
    /// What the install did (`--effects`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub effects: Option<Effects>,
    /// The container left running after a failure (`--keep-on-failure`), by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<String>,
}

/// One check and how it went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Case {
    /// What was checked: `boot`, `unit foo.service`, …; its first word is the check's kind.
    pub name: String,
    #[serde(rename = "time", serialize_with = "serialize_secs", deserialize_with = "deserialize_secs")]
    pub duration: Duration,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// What the check saw beyond its outcome (response headers, say): JUnit's `<system-out>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// How a check went. In JSON, `result` names the variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Outcome {
    /// The check passed; `detail` says what was seen (`HTTP 200 OK`).
    Passed { detail: String },
    /// The package does not do what it should: `message` is one line, `details` the
    /// evidence (`systemctl status`, the unit's last journal lines).
    Failed { message: String, details: String },
    /// The check did not run, for `reason` (the install before it failed, say).
    Skipped { reason: String },
    /// The probe itself failed (the container did not boot), so nothing is known.
    Error { message: String, details: String },
}

impl Outcome {
    fn word(&self) -> &'static str {
        match self {
            Outcome::Passed { .. } => "passed",
            Outcome::Failed { .. } => "FAILED",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Error { .. } => "ERROR",
        }
    }
}

impl Case {
    pub fn passed(name: impl Into<String>, duration: Duration, detail: impl Into<String>) -> Case {
        Case { name: name.into(), duration, outcome: Outcome::Passed { detail: detail.into() }, output: None }
    }

    pub fn failed(
        name: impl Into<String>,
        duration: Duration,
        message: impl Into<String>,
        details: impl Into<String>,
    ) -> Case {
        let outcome = Outcome::Failed { message: message.into(), details: details.into() };
        Case { name: name.into(), duration, outcome, output: None }
    }

    pub fn skipped(name: impl Into<String>, reason: impl Into<String>) -> Case {
        let outcome = Outcome::Skipped { reason: reason.into() };
        Case { name: name.into(), duration: Duration::ZERO, outcome, output: None }
    }

    pub fn error(
        name: impl Into<String>,
        duration: Duration,
        message: impl Into<String>,
        details: impl Into<String>,
    ) -> Case {
        let outcome = Outcome::Error { message: message.into(), details: details.into() };
        Case { name: name.into(), duration, outcome, output: None }
    }

    /// The case `network TARGET` for a network check's outcome. The response's status
    /// line and headers are the failure's details, or a passed case's output.
    pub fn from_check(target: &super::check::Target, outcome: &CheckOutcome) -> Case {
        let name = format!("network {target}");
        let response = outcome.status.map(|_| {
            let headers: String = outcome.headers.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            format!("{}\n{headers}", outcome.detail)
        });
        if outcome.passed {
            let case = Case::passed(name, outcome.duration, &outcome.detail);
            Case { output: response, ..case }
        } else {
            Case::failed(name, outcome.duration, &outcome.detail, response.unwrap_or_default())
        }
    }

    /// Attaches what the check saw beyond its outcome.
    pub fn with_output(mut self, output: impl Into<String>) -> Case {
        self.output = Some(output.into());
        self
    }

    /// The check's kind, the first word of its name: JUnit's failure `type`.
    fn kind(&self) -> &str {
        self.name.split_whitespace().next().unwrap_or("check")
    }

    /// The phase of the probe the case belongs to: its kind, with the checks of units,
    /// commands and network services together as `checks`.
    pub fn phase(&self) -> &str {
        match self.kind() {
            "unit" | "command" | "network" => "checks",
            kind => kind,
        }
    }
}

/// Counts of cases by outcome. JSON carries JUnit's four (`passed` there is the verdict).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub tests: usize,
    #[serde(skip)]
    pub passed: usize,
    pub failures: usize,
    pub errors: usize,
    pub skipped: usize,
}

impl Counts {
    fn of<'a>(cases: impl IntoIterator<Item = &'a Case>) -> Counts {
        let mut counts = Counts::default();
        for case in cases {
            counts.tests += 1;
            match case.outcome {
                Outcome::Passed { .. } => counts.passed += 1,
                Outcome::Failed { .. } => counts.failures += 1,
                Outcome::Skipped { .. } => counts.skipped += 1,
                Outcome::Error { .. } => counts.errors += 1,
            }
        }
        counts
    }
}

impl Suite {
    pub fn new(image: impl Into<String>) -> Suite {
        Suite {
            image: image.into(),
            package: None,
            mode: None,
            hostname: None,
            timestamp: Utc::now(),
            cases: Vec::new(),
            effects: None,
            kept: None,
        }
    }

    /// The cell of the matrix this suite probed.
    pub fn cell(&self) -> Cell {
        Cell { image: self.image.clone(), package: self.package.clone(), mode: self.mode.clone() }
    }

    pub fn push(&mut self, case: Case) {
        self.cases.push(case);
    }

    /// Puts `case` first: a step that ran before the probe (`pull`).
    pub fn prepend(&mut self, case: Case) {
        self.cases.insert(0, case);
    }

    /// The time of each phase (`pull`, `boot`, `dependencies`, `install`, `checks`,
    /// `teardown`, …), in the order the phases first ran.
    pub fn phases(&self) -> Vec<(&str, Duration)> {
        let mut phases: Vec<(&str, Duration)> = Vec::new();
        for case in &self.cases {
            match phases.iter_mut().find(|(phase, _)| *phase == case.phase()) {
                Some((_, total)) => *total += case.duration,
                None => phases.push((case.phase(), case.duration)),
            }
        }
        phases
    }

    pub fn counts(&self) -> Counts {
        Counts::of(&self.cases)
    }

    /// The sum of the cases' durations.
    pub fn duration(&self) -> Duration {
        self.cases.iter().map(|c| c.duration).sum()
    }

    /// No case failed or erred (skipped cases do not fail a suite).
    pub fn passed(&self) -> bool {
        let counts = self.counts();
        counts.failures == 0 && counts.errors == 0
    }
}

impl Default for Report {
    fn default() -> Self {
        Report::new()
    }
}

impl Report {
    /// An empty report, stamped now, on this host.
    pub fn new() -> Report {
        Report { hostname: hostname(), timestamp: Utc::now(), suites: Vec::new(), shard: None, matrix: Vec::new() }
    }

    /// How each suite is named in tables and JUnit, in order: its image, and its package
    /// and mode where the matrix (or the report's suites) has several.
    pub fn titles(&self) -> Vec<String> {
        let cells: Vec<Cell> = match self.matrix.is_empty() {
            true => self.suites.iter().map(Suite::cell).collect(),
            false => self.matrix.clone(),
        };
        let varies = |part: fn(&Cell) -> Option<&String>| cells.iter().any(|c| part(c) != cells.first().and_then(part));
        let (package, mode) = (varies(|c| c.package.as_ref()), varies(|c| c.mode.as_ref()));
        self.suites.iter().map(|s| s.cell().title(package, mode)).collect()
    }

    pub fn push(&mut self, suite: Suite) {
        self.suites.push(suite);
    }

    pub fn counts(&self) -> Counts {
        Counts::of(self.suites.iter().flat_map(|s| &s.cases))
    }

    pub fn duration(&self) -> Duration {
        self.suites.iter().map(Suite::duration).sum()
    }

    /// Whether the probe passed, which decides the exit status: every suite passed and
    /// at least one check ran (an empty report proves nothing, but for a shard that was
    /// dealt no cell of its matrix).
    pub fn passed(&self) -> bool {
        let nothing_to_do = self.shard.is_some() && self.suites.is_empty();
        (self.counts().tests > 0 || nothing_to_do) && self.suites.iter().all(Suite::passed)
    }

    /// The summary for people: a table of image, check, result and time, then the
    /// reasons of every failure and error, then one line of counts.
    pub fn render_text(&self) -> String {
        let titles = self.titles();
        let mut rows = Vec::new();
        for (suite, title) in self.suites.iter().zip(&titles) {
            for case in &suite.cases {
                let result = match &case.outcome {
                    Outcome::Passed { detail } if !detail.is_empty() => format!("passed ({})", one_line(detail)),
                    Outcome::Skipped { reason } => format!("skipped ({})", one_line(reason)),
                    outcome => outcome.word().to_owned(),
                };
                rows.push(vec![title.clone(), case.name.clone(), result, format!("{:.1} s", secs(case.duration))]);
            }
        }
        let mut out = racker::table::table(&["IMAGE", "CHECK", "RESULT", "TIME"], &rows);
        for (suite, title) in self.suites.iter().zip(&titles) {
            let phases: Vec<String> =
                suite.phases().iter().map(|(phase, time)| format!("{phase} {:.2} s", secs(*time))).collect();
            let _ = writeln!(out, "\n{} phases: {}", title, phases.join(", "));
            if let Some(effects) = &suite.effects {
                let _ = writeln!(out, "\n{} effects of {}:", title, effects.step);
                for line in effects.render_text().lines() {
                    let _ = writeln!(out, "  {line}");
                }
            }
            if let Some(name) = &suite.kept {
                let _ = writeln!(
                    out,
                    "\n{}: container {name} kept running: racker exec {name} COMMAND to look into it, \
                     racker rm -f {name} to remove it",
                    title
                );
            }
        }
        for (suite, title) in self.suites.iter().zip(&titles) {
            for case in &suite.cases {
                let (Outcome::Failed { message, details } | Outcome::Error { message, details }) = &case.outcome else {
                    continue;
                };
                let _ = writeln!(out, "\n{} / {}: {}", title, case.name, message);
                for line in details.lines() {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        let c = self.counts();
        let _ = writeln!(
            out,
            "\n{} on {}: {} passed, {} failed, {} errors, {} skipped in {:.1} s",
            plural(c.tests, "check"),
            plural(self.suites.len(), "image"),
            c.passed,
            c.failures,
            c.errors,
            c.skipped,
            secs(self.duration())
        );
        out
    }

    /// `--format json`: the report with its counts and overall result; times in seconds.
    pub fn render_json(&self) -> String {
        #[derive(Serialize)]
        struct SuiteView<'a> {
            image: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            package: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            mode: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            hostname: Option<&'a str>,
            timestamp: &'a DateTime<Utc>,
            passed: bool,
            #[serde(serialize_with = "serialize_secs")]
            time: Duration,
            #[serde(flatten)]
            counts: Counts,
            #[serde(serialize_with = "serialize_phases")]
            phases: Vec<(&'a str, Duration)>,
            cases: &'a [Case],
            #[serde(skip_serializing_if = "Option::is_none")]
            effects: Option<&'a Effects>,
            #[serde(skip_serializing_if = "Option::is_none")]
            kept: Option<&'a str>,
        }
        #[derive(Serialize)]
        struct ReportView<'a> {
            passed: bool,
            hostname: &'a str,
            timestamp: &'a DateTime<Utc>,
            #[serde(serialize_with = "serialize_secs")]
            time: Duration,
            #[serde(flatten)]
            counts: Counts,
            #[serde(skip_serializing_if = "Option::is_none")]
            shard: Option<Shard>,
            #[serde(skip_serializing_if = "<[Cell]>::is_empty")]
            matrix: &'a [Cell],
            suites: Vec<SuiteView<'a>>,
        }
        let view = ReportView {
            passed: self.passed(),
            hostname: &self.hostname,
            timestamp: &self.timestamp,
            time: self.duration(),
            counts: self.counts(),
            shard: self.shard,
            matrix: &self.matrix,
            suites: self
                .suites
                .iter()
                .map(|suite| SuiteView {
                    image: &suite.image,
                    package: suite.package.as_deref(),
                    mode: suite.mode.as_deref(),
                    hostname: suite.hostname.as_deref(),
                    timestamp: &suite.timestamp,
                    cases: &suite.cases,
                    passed: suite.passed(),
                    time: suite.duration(),
                    counts: suite.counts(),
                    phases: suite.phases(),
                    effects: suite.effects.as_ref(),
                    kept: suite.kept.as_deref(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&view).expect("a report always serialises")
    }

    /// `--format junit`: JUnit XML as CI systems read it (Jenkins, GitLab, GitHub
    /// actions): `<testsuites>` ⊃ `<testsuite name=IMAGE>` ⊃ `<testcase>` with
    /// `<failure>`, `<error>` or `<skipped>`. Characters that XML 1.0 forbids (journal
    /// lines carry terminal escapes) are written as `\xNN`.
    pub fn render_junit(&self) -> String {
        let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
        self.write_junit(&mut writer).expect("writing XML to memory cannot fail");
        let mut xml = String::from_utf8(writer.into_inner()).expect("the writer writes the UTF-8 it is given");
        xml.push('\n');
        xml
    }

    fn write_junit(&self, w: &mut Writer<Vec<u8>>) -> std::io::Result<()> {
        w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
        let c = self.counts();
        let (tests, failures, errors, skipped) =
            (c.tests.to_string(), c.failures.to_string(), c.errors.to_string(), c.skipped.to_string());
        let time = format!("{:.3}", secs(self.duration()));
        let timestamp = junit_timestamp(&self.timestamp);
        w.create_element("testsuites")
            .with_attributes([
                ("name", "postroj pkgprobe"),
                ("tests", tests.as_str()),
                ("failures", failures.as_str()),
                ("errors", errors.as_str()),
                ("skipped", skipped.as_str()),
                ("time", time.as_str()),
                ("timestamp", timestamp.as_str()),
            ])
            .write_inner_content(|w| {
                let titles = self.titles();
                self.suites.iter().zip(&titles).try_for_each(|(suite, title)| self.write_suite(w, suite, title))
            })?;
        Ok(())
    }

    fn write_suite(&self, w: &mut Writer<Vec<u8>>, suite: &Suite, title: &str) -> std::io::Result<()> {
        let c = suite.counts();
        let (tests, failures, errors, skipped) =
            (c.tests.to_string(), c.failures.to_string(), c.errors.to_string(), c.skipped.to_string());
        let time = format!("{:.3}", secs(suite.duration()));
        let timestamp = junit_timestamp(&suite.timestamp);
        let name = xml_safe(title);
        let hostname = xml_safe(suite.hostname.as_deref().unwrap_or(&self.hostname));
        let classname = format!("postroj.pkgprobe.{name}");
        let element = w.create_element("testsuite").with_attributes([
            ("name", name.as_str()),
            ("tests", tests.as_str()),
            ("failures", failures.as_str()),
            ("errors", errors.as_str()),
            ("skipped", skipped.as_str()),
            ("time", time.as_str()),
            ("timestamp", timestamp.as_str()),
            ("hostname", hostname.as_str()),
        ]);
        let mut properties: Vec<(String, String)> = suite
            .phases()
            .iter()
            .map(|(phase, time)| (format!("phase.{phase}"), format!("{:.3}", secs(*time))))
            .collect();
        if let Some(name) = &suite.kept {
            properties.push(("kept-container".into(), name.clone()));
        }
        if suite.cases.is_empty() && properties.is_empty() && suite.effects.is_none() {
            element.write_empty()?;
            return Ok(());
        }
        element.write_inner_content(|w| {
            if !properties.is_empty() {
                w.create_element("properties").write_inner_content(|w| {
                    properties.iter().try_for_each(|(name, value)| {
                        w.create_element("property")
                            .with_attributes([("name", xml_safe(name).as_str()), ("value", xml_safe(value).as_str())])
                            .write_empty()
                            .map(|_| ())
                    })
                })?;
            }
            suite.cases.iter().try_for_each(|case| write_case(w, &classname, case))?;
            if let Some(effects) = &suite.effects {
                let text = format!("effects of {}:\n{}", effects.step, effects.render_text());
                w.create_element("system-out").write_text_content(BytesText::new(&xml_safe(&text)))?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

fn write_case(w: &mut Writer<Vec<u8>>, classname: &str, case: &Case) -> std::io::Result<()> {
    let name = xml_safe(&case.name);
    let time = format!("{:.3}", secs(case.duration));
    let element = w.create_element("testcase").with_attributes([
        ("classname", classname),
        ("name", name.as_str()),
        ("time", time.as_str()),
    ]);
    let output = match (&case.outcome, &case.output) {
        (_, Some(output)) => Some(output.clone()),
        (Outcome::Passed { detail }, None) if !detail.is_empty() => Some(detail.clone()),
        _ => None,
    };
    if matches!(case.outcome, Outcome::Passed { .. }) && output.is_none() {
        element.write_empty()?;
        return Ok(());
    }
    element.write_inner_content(|w| {
        match &case.outcome {
            Outcome::Passed { .. } => {}
            Outcome::Failed { message, details } | Outcome::Error { message, details } => {
                let tag = if matches!(case.outcome, Outcome::Failed { .. }) { "failure" } else { "error" };
                let message = xml_safe(&one_line(message));
                let element = w
                    .create_element(tag)
                    .with_attributes([("message", message.as_str()), ("type", &xml_safe(case.kind()))]);
                if details.is_empty() {
                    element.write_empty()?;
                } else {
                    element.write_text_content(BytesText::new(&xml_safe(details)))?;
                }
            }
            Outcome::Skipped { reason } => {
                w.create_element("skipped")
                    .with_attribute(("message", xml_safe(&one_line(reason)).as_str()))
                    .write_empty()?;
            }
        }
        if let Some(output) = &output {
            w.create_element("system-out").write_text_content(BytesText::new(&xml_safe(output)))?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `text` with the characters XML 1.0 forbids (controls other than tab, newline and
/// carriage return; U+FFFE, U+FFFF) written as `\xNN` or `\u{FFFE}`, so that the
/// document stays well-formed and the reader still sees that something was there.
pub fn xml_safe(text: &str) -> String {
    let allowed = |c: char| matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}');
    if text.chars().all(allowed) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if allowed(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02X}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:X}}}", c as u32);
        }
    }
    out
}

/// The first line of `text`, for attributes and table cells.
fn one_line(text: &str) -> String {
    let mut lines = text.trim().lines();
    let first = lines.next().unwrap_or("").to_owned();
    if lines.next().is_some() {
        format!("{first} …")
    } else {
        first
    }
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// JUnit's timestamp: ISO 8601 without a zone suffix (the XSD's `xs:dateTime` pattern
/// that Jenkins reads), in UTC.
fn junit_timestamp(t: &DateTime<Utc>) -> String {
    t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string()
}

/// Durations as seconds (a float), as JUnit and most JSON consumers expect.
pub(crate) fn serialize_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Seconds (a float) back into a duration; what is not a number of seconds is refused.
fn deserialize_secs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let secs = f64::deserialize(d)?;
    Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
}

/// Phases as a JSON object of seconds, in the order they ran.
fn serialize_phases<S: serde::Serializer>(phases: &[(&str, Duration)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(phases.len()))?;
    for (phase, time) in phases {
        map.serialize_entry(phase, &((time.as_secs_f64() * 1000.0).round() / 1000.0))?;
    }
    map.end()
}

/// This host's name, for JUnit's `hostname`.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        let mut report = Report::new();
        let mut suite = Suite::new("debian-bookworm");
        suite.push(Case::passed("boot", Duration::from_millis(812), "running"));
        suite.push(Case::passed("install foo_1.0_all.deb", Duration::from_millis(2500), ""));
        suite.push(Case::failed(
            "unit foo.service",
            Duration::from_millis(1200),
            "foo.service is failed, not active",
            "\u{1b}[0;1;31m\u{25cf}\u{1b}[0m foo.service - Foo <&\"'>\nMain PID: 42 (code=exited, status=1/FAILURE)\u{7}",
        ));
        suite.push(Case::skipped("network http://localhost:8080/", "the unit did not start"));
        report.push(suite);
        let mut other = Suite::new("fedora-42");
        other.push(Case::error("boot", Duration::from_secs(30), "no READY=1 within 30 s", "console:\n..."));
        report.push(other);
        report
    }

    #[test]
    fn counts_and_verdict() {
        let report = sample();
        assert_eq!(report.counts(), Counts { tests: 5, passed: 2, failures: 1, errors: 1, skipped: 1 });
        assert!(!report.passed());
        assert!(!Report::new().passed(), "an empty report proves nothing");
        let mut ok = Report::new();
        let mut suite = Suite::new("debian-bookworm");
        suite.push(Case::passed("boot", Duration::ZERO, ""));
        suite.push(Case::skipped("network tcp://localhost:1", "none asked"));
        ok.push(suite);
        assert!(ok.passed());
    }

    #[test]
    fn junit_is_well_formed_and_counts() {
        let xml = sample().render_junit();
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "testsuites");
        let attr = |n: roxmltree::Node, a: &str| n.attribute(a).unwrap_or_default().to_owned();
        assert_eq!(
            [attr(root, "tests"), attr(root, "failures"), attr(root, "errors"), attr(root, "skipped")],
            ["5", "1", "1", "1"]
        );
        let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
        assert_eq!(suites.len(), 2);
        assert_eq!(attr(suites[0], "name"), "debian-bookworm");
        assert_eq!(attr(suites[0], "tests"), "4");
        assert!(!attr(suites[0], "hostname").is_empty() && !attr(suites[0], "timestamp").is_empty());
        let cases: Vec<_> = suites[0].children().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(cases.len(), 4);
        assert_eq!(attr(cases[0], "classname"), "postroj.pkgprobe.debian-bookworm");
        assert_eq!(attr(cases[0], "time"), "0.812");
        let failure = cases[2].children().find(|n| n.has_tag_name("failure")).expect("a failure element");
        assert_eq!(attr(failure, "type"), "unit");
        assert_eq!(attr(failure, "message"), "foo.service is failed, not active");
        let text = failure.text().unwrap_or_default();
        assert!(
            text.contains("Foo <&\"'>") && text.contains("\\x1B[0;1;31m\u{25cf}") && text.ends_with("\\x07"),
            "{text}"
        );
        assert!(cases[3].children().any(|n| n.has_tag_name("skipped")));
        assert!(suites[1].descendants().any(|n| n.has_tag_name("error")));
    }

    #[test]
    fn json_has_stable_fields_and_seconds() {
        let json: serde_json::Value = serde_json::from_str(&sample().render_json()).expect("JSON");
        assert_eq!(json["passed"], false);
        assert_eq!(json["tests"], 5);
        let case = &json["suites"][0]["cases"][2];
        assert_eq!(case["name"], "unit foo.service");
        assert_eq!(case["result"], "failed");
        assert_eq!(case["time"], 1.2);
        assert!(case["details"].as_str().is_some_and(|d| d.contains("Main PID")));
        assert_eq!(json["suites"][0]["cases"][3]["reason"], "the unit did not start");
        assert_eq!(json["suites"][1]["errors"], 1);
    }

    #[test]
    fn text_lists_every_check_and_the_reasons_below() {
        let text = sample().render_text();
        assert!(text.starts_with("IMAGE"), "{text}");
        assert!(text.contains("unit foo.service") && text.contains("FAILED") && text.contains("skipped (the unit"));
        assert!(text.contains("debian-bookworm / unit foo.service: foo.service is failed, not active"), "{text}");
        assert!(text.contains("    Main PID: 42"), "{text}");
        assert!(text.contains("5 checks on 2 images: 2 passed, 1 failed, 1 errors, 1 skipped"), "{text}");
    }

    /// A suite with a pull, effects and a kept container, as `--effects --keep-on-failure` makes it.
    fn with_effects() -> Report {
        let mut report = Report::new();
        let mut suite = Suite::new("debian-bookworm");
        suite.push(Case::passed("boot", Duration::from_millis(100), "booted"));
        suite.push(Case::passed("install fx_1.0_all.deb", Duration::from_millis(700), "installed"));
        suite.push(Case::passed("effects", Duration::from_millis(10), "1 file added"));
        suite.push(Case::passed("unit fx (after install)", Duration::from_millis(200), "active"));
        suite.push(Case::failed(
            "network tcp://localhost:1 (after install)",
            Duration::from_millis(300),
            "refused",
            "",
        ));
        suite.push(Case::skipped("teardown", "kept"));
        suite.prepend(Case::passed("pull", Duration::from_secs(20), "pulled"));
        suite.effects = Some(Effects {
            step: "install fx_1.0_all.deb".into(),
            added: vec![crate::effects::FileEffect {
                path: "/etc/fx.conf".into(),
                kind: crate::effects::Kind::File,
                mode: "0644".into(),
                size: 3,
                target: None,
            }],
            units_enabled: vec!["fx.service (multi-user.target.wants)".into()],
            users_created: vec![crate::effects::Account { name: "fx".into(), id: 999 }],
            conffiles: vec!["/etc/fx.conf".into()],
            ..Effects::default()
        });
        suite.kept = Some("racker-0123456789ab".into());
        report.push(suite);
        report
    }

    #[test]
    fn phases_sum_the_cases_by_kind_in_the_order_they_ran() {
        let report = with_effects();
        let phases = report.suites[0].phases();
        let names: Vec<&str> = phases.iter().map(|(p, _)| *p).collect();
        assert_eq!(names, ["pull", "boot", "install", "effects", "checks", "teardown"]);
        assert_eq!(phases[4].1, Duration::from_millis(500), "the unit and the network check");
    }

    #[test]
    fn effects_phases_and_the_kept_container_are_in_every_format() {
        let report = with_effects();
        let json: serde_json::Value = serde_json::from_str(&report.render_json()).expect("JSON");
        let suite = &json["suites"][0];
        assert_eq!(suite["phases"]["pull"], 20.0);
        assert_eq!(suite["phases"]["checks"], 0.5);
        assert_eq!(suite["effects"]["added"][0]["path"], "/etc/fx.conf");
        assert_eq!(suite["effects"]["added"][0]["type"], "file");
        assert_eq!(suite["effects"]["users_created"][0]["name"], "fx");
        assert_eq!(suite["effects"]["conffiles"][0], "/etc/fx.conf");
        assert_eq!(suite["kept"], "racker-0123456789ab");
        assert_eq!(suite["cases"][0]["name"], "pull");

        let text = report.render_text();
        assert!(text.contains("debian-bookworm phases: pull 20.00 s, boot 0.10 s, install 0.70 s"), "{text}");
        assert!(text.contains("debian-bookworm effects of install fx_1.0_all.deb:"), "{text}");
        assert!(text.contains("      /etc/fx.conf (3 bytes, 0644)"), "{text}");
        assert!(text.contains("fx.service (multi-user.target.wants)") && text.contains("fx (999)"), "{text}");
        assert!(text.contains("racker exec racker-0123456789ab") && text.contains("racker rm -f racker-0123456789ab"));

        let xml = report.render_junit();
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"));
        let suite = doc.descendants().find(|n| n.has_tag_name("testsuite")).expect("a testsuite");
        let property = |name: &str| {
            suite
                .descendants()
                .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(name))
                .and_then(|n| n.attribute("value").map(str::to_owned))
        };
        assert_eq!(property("phase.install").as_deref(), Some("0.700"));
        assert_eq!(property("kept-container").as_deref(), Some("racker-0123456789ab"));
        let out = suite.children().find(|n| n.has_tag_name("system-out")).and_then(|n| n.text()).unwrap_or_default();
        assert!(out.contains("effects of install fx_1.0_all.deb") && out.contains("/etc/fx.conf"), "{xml}");
        assert_eq!(suite.children().filter(|n| n.has_tag_name("testcase")).count(), 7);
    }

    #[test]
    fn xml_safe_keeps_text_and_marks_forbidden_characters() {
        assert_eq!(xml_safe("a\tb\nc"), "a\tb\nc");
        assert_eq!(xml_safe("\u{1b}[0m\u{0}\u{FFFE}"), "\\x1B[0m\\x00\\u{FFFE}");
    }
}
