//! `postroj submit`: a pkgprobe matrix as a Slurm job array, one shard per array task,
//! and a merge job that runs after them all (`--dependency=afterany`) and writes the
//! merged report. The job directory keeps the scripts, each task's output and report,
//! the merged report, and the job ids `status` and `wait` follow.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use postroj::report::Report;
use serde::{Deserialize, Serialize};

/// Where `submit` records the jobs it submitted, in the job directory.
const JOBS_FILE: &str = "jobs.json";
/// The merged reports the merge job writes.
const REPORT_JSON: &str = "report.json";
const REPORT_JUNIT: &str = "report.xml";

#[derive(clap::Subcommand)]
pub enum SubmitCommand {
    /// Submit a pkgprobe matrix to Slurm as a job array of shards and a merge job
    Slurm(SlurmArgs),
    /// Show the state of a submitted matrix: each shard, and the merge
    Status(StatusArgs),
    /// Wait until a submitted matrix is merged; exits as pkgprobe would have (0 passed,
    /// 1 failed or a shard missing)
    Wait(WaitArgs),
}

#[derive(clap::Args)]
pub struct SlurmArgs {
    /// Shards of the matrix: one array task each
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    shards: u32,
    /// The partition the jobs run in (default: the cluster's default partition)
    #[arg(long, value_name = "P")]
    partition: Option<String>,
    /// The time limit of each task and of the merge (sbatch --time: MINUTES, HH:MM:SS, D-HH)
    #[arg(long, value_name = "T")]
    time: Option<String>,
    /// Another option for sbatch (--account=A, --qos=Q, --constraint=C, ...); repeatable
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// The job directory: scripts, outputs, shard reports and the merged report (default:
    /// ./postroj-jobs/TIMESTAMP); it must be on a file system every node shares
    #[arg(long, value_name = "DIR")]
    job_dir: Option<PathBuf>,
    /// Submit the jobs held (scontrol release JOBID starts them)
    #[arg(long)]
    hold: bool,
    /// Print the scripts and submit nothing
    #[arg(long)]
    dry_run: bool,
    /// The pkgprobe arguments, after `--` (without --shard, --format and --output)
    #[arg(last = true, required = true, value_name = "PKGPROBE ARGS")]
    pkgprobe: Vec<String>,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The job directory `postroj submit slurm` printed
    #[arg(value_name = "JOBDIR")]
    job_dir: PathBuf,
    /// Output format: table, or json
    #[arg(long, value_enum, default_value_t)]
    format: StatusFormat,
}

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum StatusFormat {
    #[default]
    Table,
    Json,
}

#[derive(clap::Args)]
pub struct WaitArgs {
    /// The job directory `postroj submit slurm` printed
    #[arg(value_name = "JOBDIR")]
    job_dir: PathBuf,
    /// Give up after this long (e.g. 90m, 2h); by default wait as long as it takes
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print nothing; the exit status says it
    #[arg(short, long)]
    quiet: bool,
}

/// The jobs of one submitted matrix (`jobs.json`).
#[derive(Serialize, Deserialize)]
struct Jobs {
    /// The array job: one task per shard.
    array: String,
    /// The merge job.
    merge: String,
    shards: u32,
}

/// What runs postroj on the nodes: this binary, at the same path, with the same store
/// and apt cache (each node's own, by default).
pub struct Postroj<'a> {
    pub root: &'a Path,
    pub apt_cache: &'a Path,
}

pub fn run(command: &SubmitCommand, postroj: &Postroj) -> Result<i32> {
    match command {
        SubmitCommand::Slurm(args) => submit(args, postroj).map(|()| 0),
        SubmitCommand::Status(args) => status(args).map(|()| 0),
        SubmitCommand::Wait(args) => wait(args),
    }
}

fn submit(args: &SlurmArgs, postroj: &Postroj) -> Result<()> {
    let probes = check_pkgprobe_args(&args.pkgprobe)?;
    if probes < args.shards as usize {
        errln!(
            "warning: {probes} probes in {} shards: {} tasks have nothing to do",
            args.shards,
            args.shards as usize - probes
        );
    }
    let dir = match &args.job_dir {
        Some(dir) => dir.clone(),
        None => PathBuf::from("postroj-jobs").join(chrono::Utc::now().format("%Y%m%d-%H%M%S%.3f").to_string()),
    };
    let dir = std::path::absolute(&dir).with_context(|| format!("job directory {}", dir.display()))?;
    let exe = std::env::current_exe().context("finding this postroj binary")?;
    let scripts = Scripts::new(args, postroj, &exe, &dir)?;
    if args.dry_run {
        outln!(
            "# {}\n{}\n# {}\n{}",
            dir.join("pkgprobe.sbatch").display(),
            scripts.array,
            dir.join("merge.sbatch").display(),
            scripts.merge
        )?;
        return Ok(());
    }
    if dir.join(JOBS_FILE).exists() {
        bail!("{} holds a submitted matrix already: give another --job-dir", dir.display());
    }
    // The reports hold journal lines and package details: root's, as racker's files are.
    racker::private::dir(&dir).with_context(|| format!("creating the job directory {}", dir.display()))?;
    let array_script = dir.join("pkgprobe.sbatch");
    let merge_script = dir.join("merge.sbatch");
    std::fs::write(&array_script, &scripts.array).with_context(|| format!("writing {}", array_script.display()))?;
    std::fs::write(&merge_script, &scripts.merge).with_context(|| format!("writing {}", merge_script.display()))?;
    let hold: &[&str] = if args.hold { &["--hold"] } else { &[] };
    let array = sbatch(&[hold, &[path_str(&array_script)?]].concat())?;
    let dependency = format!("--dependency=afterany:{array}");
    let merge = sbatch(&[hold, &[dependency.as_str(), path_str(&merge_script)?]].concat())?;
    let jobs = Jobs { array: array.clone(), merge: merge.clone(), shards: args.shards };
    let file = dir.join(JOBS_FILE);
    std::fs::write(&file, serde_json::to_vec_pretty(&jobs)?).with_context(|| format!("writing {}", file.display()))?;
    errln!(
        "Submitted array job {array} ({} shards) and merge job {merge}: postroj submit wait {}",
        args.shards,
        dir.display()
    );
    outln!("{}", dir.display())?;
    Ok(())
}

/// Refuses arguments pkgprobe would refuse, before anything is submitted, and those the
/// scripts set themselves.
fn check_pkgprobe_args(args: &[String]) -> Result<usize> {
    for arg in args {
        let flag = arg.split('=').next().unwrap_or(arg);
        if matches!(flag, "--shard" | "--format" | "--output" | "-o") {
            bail!("{flag} is set for each task by postroj submit: leave it out of the pkgprobe arguments");
        }
    }
    let argv = ["postroj", "pkgprobe"].into_iter().map(String::from).chain(args.iter().cloned());
    use clap::Parser as _;
    let cli = crate::Cli::try_parse_from(argv).map_err(|e| {
        let text = e.render().to_string();
        anyhow::anyhow!(
            "pkgprobe arguments: {}",
            text.lines().next().unwrap_or("invalid").trim_start_matches("error: ")
        )
    })?;
    match &cli.command {
        crate::Command::Pkgprobe(pkgprobe) => crate::probe::check(pkgprobe).context("pkgprobe arguments"),
        _ => bail!("pkgprobe arguments: not a pkgprobe command line"),
    }
}

/// The two batch scripts of a matrix.
struct Scripts {
    array: String,
    merge: String,
}

impl Scripts {
    fn new(args: &SlurmArgs, postroj: &Postroj, exe: &Path, dir: &Path) -> Result<Scripts> {
        let q = |text: &str| shlex::try_quote(text).map(|q| q.into_owned()).context("a NUL byte in an argument");
        let exe = q(path_str(exe)?)?;
        let common =
            format!("{exe} --root {} --apt-cache {}", q(path_str(postroj.root)?)?, q(path_str(postroj.apt_cache)?)?);
        let dir_q = q(path_str(dir)?)?;
        // Each option is a `#SBATCH` line of its own: a line break would start a command.
        let one_line = |what: &str, value: &str| match value.contains(['\n', '\r']) {
            true => Err(anyhow::anyhow!(
                "{what} {value:?}: a line break in it would end the #SBATCH line; give it on one line"
            )),
            false => Ok(()),
        };
        one_line("--job-dir", path_str(dir)?)?;
        let mut options = Vec::new();
        if let Some(partition) = &args.partition {
            options.push(format!("--partition={partition}"));
        }
        if let Some(time) = &args.time {
            options.push(format!("--time={time}"));
        }
        options.extend(args.sbatch_args.iter().cloned());
        for option in &options {
            one_line("sbatch option", option)?;
        }
        let directives = |name: &str, output: &str| {
            let mut lines =
                vec![format!("#SBATCH --job-name={name}"), format!("#SBATCH --output={}", dir.join(output).display())];
            lines.extend(options.iter().map(|o| format!("#SBATCH {o}")));
            lines.join("\n")
        };
        let pkgprobe: Vec<String> = args.pkgprobe.iter().map(|a| q(a)).collect::<Result<_>>()?;
        let n = args.shards;
        let array = format!(
            "#!/bin/bash\n\
             # postroj pkgprobe, shard $SLURM_ARRAY_TASK_ID of {n}: written by postroj submit slurm.\n\
             {}\n#SBATCH --array=1-{n}\n\
             set -u\n\
             k=$SLURM_ARRAY_TASK_ID\n\
             # pkgprobe exits 1 when a probe of the shard failed: its report says which.\n\
             exec {common} pkgprobe {} --shard \"$k/{n}\" --format json --output {dir_q}/shard-\"$k\".json\n",
            directives("postroj-pkgprobe", "shard-%a.out"),
            pkgprobe.join(" "),
        );
        let merge = format!(
            "#!/bin/bash\n\
             # The merged report of the {n} shards, after all of them ended: written by postroj submit slurm.\n\
             {}\n\
             set -u\n\
             shards=({dir_q}/shard-{{1..{n}}}.json)\n\
             {common} report merge --shards {n} --format junit --output {dir_q}/{REPORT_JUNIT} \"${{shards[@]}}\" 2>/dev/null\n\
             exec {common} report merge --shards {n} --format json --output {dir_q}/{REPORT_JSON} \"${{shards[@]}}\"\n",
            directives("postroj-merge", "merge.out"),
        );
        Ok(Scripts { array, merge })
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().with_context(|| format!("{}: not UTF-8; give a job directory whose path is", path.display()))
}

/// Submits with `sbatch --parsable`; the job id.
fn sbatch(args: &[&str]) -> Result<String> {
    let out = slurm("sbatch", &[&["--parsable"], args].concat())?;
    // `ID` or `ID;CLUSTER`.
    let id = out.trim().split(';').next().unwrap_or_default().to_owned();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("sbatch answered {:?}, not a job id", out.trim());
    }
    Ok(id)
}

/// Runs Slurm's `program`; its standard output.
fn slurm(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow::anyhow!(
                "{program} not found: run postroj submit on a Slurm submit host (Debian: apt install slurm-client)"
            )
        }
        _ => anyhow::anyhow!("running {program}: {e}"),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("{program} {}: {}", args.join(" "), err.trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The jobs recorded in `dir`.
fn jobs(dir: &Path) -> Result<Jobs> {
    let file = dir.join(JOBS_FILE);
    let bytes = std::fs::read(&file)
        .with_context(|| format!("{}: not a job directory of postroj submit slurm (no {JOBS_FILE})", dir.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not what postroj submit wrote", file.display()))
}

/// One row of `status`.
#[derive(Serialize)]
struct Row {
    job: String,
    /// `shard K/N` or `merge`.
    what: String,
    state: String,
    /// The report it wrote, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<String>,
}

/// The jobs of `dir` that Slurm still has queued or running: job id (`12_3` for an array
/// task) → state.
fn queued(jobs: &Jobs) -> Result<Vec<(String, String)>> {
    let list = format!("{},{}", jobs.array, jobs.merge);
    let out = slurm("squeue", &["--noheader", "--array", "--jobs", &list, "--format=%i %T"])
        // squeue refuses ids it no longer knows: then nothing is queued.
        .or_else(|e| if e.to_string().contains("Invalid job id") { Ok(String::new()) } else { Err(e) })?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(id, state)| (id.to_owned(), state.trim().to_owned()))
        .collect())
}

/// A report's verdict: `passed`, `failed`, or why it cannot be read.
fn verdict(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(match serde_json::from_slice::<Report>(&bytes) {
        Ok(report) if report.passed() => "passed".to_owned(),
        Ok(_) => "failed".to_owned(),
        Err(_) => "unreadable".to_owned(),
    })
}

fn rows(dir: &Path, jobs: &Jobs) -> Result<Vec<Row>> {
    let queued = queued(jobs)?;
    let state_of = |id: &str| queued.iter().find(|(q, _)| q == id).map(|(_, s)| s.clone());
    // A pending array shows as one line `ID_[1-4]` until its tasks start.
    let pending_array =
        queued.iter().find(|(q, _)| q.starts_with(&format!("{}_[", jobs.array))).map(|(_, s)| s.clone());
    let mut rows = Vec::new();
    for k in 1..=jobs.shards {
        let report = dir.join(format!("shard-{k}.json"));
        let id = format!("{}_{k}", jobs.array);
        let state = match (state_of(&id).or_else(|| pending_array.clone()), verdict(&report)) {
            (Some(state), _) => state,
            (None, Some(verdict)) => format!("ended: {verdict}"),
            (None, None) => "ended without a report".to_owned(),
        };
        let report = report.exists().then(|| report.display().to_string());
        rows.push(Row { job: id, what: format!("shard {k}/{}", jobs.shards), state, report });
    }
    let report = dir.join(REPORT_JSON);
    let state = match (state_of(&jobs.merge), verdict(&report)) {
        (Some(state), _) => state,
        (None, Some(verdict)) => format!("ended: {verdict}"),
        (None, None) => "ended without a report".to_owned(),
    };
    let report = report.exists().then(|| report.display().to_string());
    rows.push(Row { job: jobs.merge.clone(), what: "merge".into(), state, report });
    Ok(rows)
}

fn status(args: &StatusArgs) -> Result<()> {
    let jobs = jobs(&args.job_dir)?;
    let rows = rows(&args.job_dir, &jobs)?;
    match args.format {
        StatusFormat::Json => outln!("{}", serde_json::to_string_pretty(&rows)?)?,
        StatusFormat::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![r.job.clone(), r.what.clone(), r.state.clone(), r.report.clone().unwrap_or_else(|| "-".into())]
                })
                .collect();
            out!("{}", racker::table::table(&["JOB", "WHAT", "STATE", "REPORT"], &cells))?;
        }
    }
    Ok(())
}

fn wait(args: &WaitArgs) -> Result<i32> {
    let jobs = jobs(&args.job_dir)?;
    let deadline = args.timeout.map(|t| std::time::Instant::now() + t);
    while !queued(&jobs)?.is_empty() {
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            bail!(
                "{}: still queued or running after {}",
                args.job_dir.display(),
                humantime::format_duration(args.timeout.unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let file = args.job_dir.join(REPORT_JSON);
    let bytes = std::fs::read(&file).with_context(|| {
        format!(
            "merge job {} ended without writing {}: see {}",
            jobs.merge,
            file.display(),
            args.job_dir.join("merge.out").display()
        )
    })?;
    let report: Report =
        serde_json::from_slice(&bytes).with_context(|| format!("{}: not a pkgprobe report", file.display()))?;
    if !args.quiet {
        out!("{}", report.render_text())?;
    }
    Ok(if report.passed() { 0 } else { 1 })
}
