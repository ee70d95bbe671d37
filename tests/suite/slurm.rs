//! The Slurm harness (common/slurm.rs) on a real one-node cluster: batch arrays,
//! dependencies, held and cancelled tasks run as on a site's cluster, and the guard
//! leaves no daemon, job step or file behind.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::slurm::{processes_of, Slurm};

/// The job id `sbatch --parsable` printed (`id` or `id;cluster`).
fn job_id(parsable: &str) -> String {
    parsable.trim().split(';').next().unwrap_or_default().to_owned()
}

/// Polls squeue every 200 ms until the cluster has no job pending, running or
/// completing; fails with the queue and the daemons' logs after `secs` seconds.
fn wait_until_queue_empty(slurm: &Slurm, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let queue = slurm.ok("squeue", &["-h", "-o", "%i %T %r"]);
        if queue.trim().is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "jobs still queued after {secs} s:\n{queue}\n{}", slurm.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Field `name` of every job `scontrol show job -o id` lists (one per array task).
fn job_field(slurm: &Slurm, id: &str, name: &str) -> Vec<String> {
    let shown = slurm.ok("scontrol", &["show", "job", "-o", id]);
    let prefix = format!("{name}=");
    let field = |l: &str| l.split_whitespace().find_map(|f| f.strip_prefix(&prefix)).map(str::to_owned);
    shown.lines().map(|l| field(l).unwrap_or_else(|| panic!("no {name} in {l}"))).collect()
}

/// The processes of the cluster in `dir` that run `program` (by command line: slurmctld's
/// helper slurmscriptd is `slurmctld: slurmscriptd`, a job's step `slurmstepd: [1.batch]`).
fn running(dir: &Path, program: &str) -> Vec<String> {
    processes_of(dir).into_iter().map(|(_, cmd)| cmd).filter(|c| c.contains(program)).collect()
}

/// Drops the cluster and checks that the guard left nothing: no daemon or job step of
/// it runs and its directory is gone.
fn drop_and_assert_gone(slurm: Slurm) {
    let dir = slurm.dir().to_owned();
    drop(slurm);
    let left = processes_of(&dir);
    assert!(left.is_empty(), "processes of the cluster left behind: {left:#?}");
    assert!(!dir.exists(), "the cluster's directory {} is left behind", dir.display());
}

#[test]
fn a_one_node_cluster_runs_a_batch_array_and_its_dependent_job() {
    let slurm = Slurm::start();
    let dir = slurm.dir().to_owned();
    for daemon in ["munged", "slurmctld", "slurmd"] {
        assert!(!running(&dir, daemon).is_empty(), "no {daemon} of the cluster in {:#?}", processes_of(&dir));
    }
    let jobs = tempfile::Builder::new().prefix("racker-slurm-jobs-").tempdir().expect("tempdir");
    let out = jobs.path().display();

    let array = job_id(&slurm.ok(
        "sbatch",
        &[
            "--parsable",
            "--array=1-3",
            &format!("--output={out}/task-%a.out"),
            "--wrap",
            "echo task $SLURM_ARRAY_TASK_ID",
        ],
    ));
    let after = job_id(&slurm.ok(
        "sbatch",
        &[
            "--parsable",
            &format!("--dependency=afterany:{array}"),
            &format!("--output={out}/after.out"),
            "--wrap",
            &format!("echo after $SLURM_JOB_ID > {out}/after.txt"),
        ],
    ));
    wait_until_queue_empty(&slurm, 120);

    for task in 1..=3 {
        let output = std::fs::read_to_string(jobs.path().join(format!("task-{task}.out")))
            .unwrap_or_else(|e| panic!("task {task}'s output: {e}\n{}", slurm.logs()));
        assert_eq!(output, format!("task {task}\n"));
    }
    let written = std::fs::read_to_string(jobs.path().join("after.txt")).expect("the dependent job's file");
    assert_eq!(written, format!("after {after}\n"));
    assert_eq!(job_field(&slurm, &array, "JobState"), ["COMPLETED"; 3]);
    assert_eq!(job_field(&slurm, &after, "JobState"), ["COMPLETED"]);
    // afterany: the dependent job starts only once every task has ended (to the second).
    let started = &job_field(&slurm, &after, "StartTime")[0];
    for ended in job_field(&slurm, &array, "EndTime") {
        assert!(&ended <= started, "the dependent job started at {started}, before a task ended at {ended}");
    }

    drop_and_assert_gone(slurm);
}

#[test]
fn a_task_cancelled_while_its_array_is_held_never_runs() {
    let slurm = Slurm::start();
    let jobs = tempfile::Builder::new().prefix("racker-slurm-jobs-").tempdir().expect("tempdir");
    let out = jobs.path().display();

    let array = job_id(&slurm.ok(
        "sbatch",
        &[
            "--parsable",
            "--hold",
            "--array=1-3",
            &format!("--output={out}/task-%a.out"),
            "--wrap",
            "echo task $SLURM_ARRAY_TASK_ID",
        ],
    ));
    slurm.ok("scancel", &[&format!("{array}_2")]);
    // A pending task cancelled is struck from its array: no job of its own, no record.
    let pending = slurm.ok("squeue", &["-h", "-r", "-o", "%K", "-j", &array]);
    assert_eq!(pending.split_whitespace().collect::<Vec<_>>(), ["1", "3"], "the held tasks after the cancel");
    slurm.ok("scontrol", &["release", &array]);
    wait_until_queue_empty(&slurm, 120);

    for task in [1, 3] {
        let output = std::fs::read_to_string(jobs.path().join(format!("task-{task}.out")))
            .unwrap_or_else(|e| panic!("task {task}'s output: {e}\n{}", slurm.logs()));
        assert_eq!(output, format!("task {task}\n"));
    }
    assert!(!jobs.path().join("task-2.out").exists(), "the cancelled task ran");
    let mut ran = job_field(&slurm, &array, "ArrayTaskId");
    ran.sort();
    assert_eq!(ran, ["1", "3"]);
    assert_eq!(job_field(&slurm, &array, "JobState"), ["COMPLETED"; 2]);

    // A job still running at the drop: the guard cancels it and its step goes with it.
    let sleeper = job_id(&slurm.ok("sbatch", &["--parsable", "--output=/dev/null", "--wrap", "sleep 600"]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while running(slurm.dir(), "slurmstepd").is_empty() || job_field(&slurm, &sleeper, "JobState") != ["RUNNING"] {
        assert!(Instant::now() < deadline, "job {sleeper} did not start in 60 s\n{}", slurm.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop_and_assert_gone(slurm);
}
