//! `verify`: for teachers and CI, proof that every exercise works as the learner will
//! meet it. The reference code passes its tests; blanked to a `todo!()`, it fails them;
//! every wrong answer in `exercises/wrong/` fails the tests it names; and after each of
//! those, the file is back byte for byte.
//!
//! Each version of the code (the reference, each exercise's `todo!()`, each wrong answer)
//! is built once: the source is rewritten, cargo builds the chapter binaries its tests
//! start and its test executables, those are copied aside ([`crate::snapshot`]), and the
//! source is put back at once. The tests then run from the copies, up to `--jobs` runs
//! side by side, while the next version builds: most of a test's time is spent waiting
//! (for a worker to start, for a timeout that proves a stall), not computing. Each run
//! is the one `check` makes (the same executable, the same tests), and the reference's
//! runs go through the same copies, so a copy that lacks something fails the reference
//! first.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::check::{self, Build, Ran, Verdict};
use crate::registry::{Exercise, TestRun};
use crate::run::{self, Ended};
use crate::snapshot::{self, Snapshot};
use crate::workspace::{Status, Workspace};
use crate::wrong::{self, WrongAnswer};

/// How many test runs go side by side when `--jobs` does not say.
pub fn default_jobs() -> usize {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (2 * cpus).clamp(2, 8)
}

/// One exercise's line in the report, and what went wrong.
struct Row {
    e: &'static Exercise,
    wrong: Vec<WrongAnswer>,
    problems: Vec<String>,
    warnings: Vec<String>,
    /// Whether its versions are built (or will not be: a problem came first).
    built: bool,
    /// Whether the reference's runs have been judged for it, and what they proved:
    /// `reference passes (7 tests)`.
    reference_judged: bool,
    reference: Option<String>,
    /// The `todo!()`: its build, then its runs once they are done.
    starter_build: Option<Build>,
    starter: Option<Result<Vec<Ran>, String>>,
    /// Each wrong answer's verdict, once its tests have run.
    judged: Vec<Option<Judged>>,
    /// Whether every put-back gave the file back byte for byte.
    reset_exact: bool,
    /// Test runs not finished yet.
    pending: usize,
    /// `--steps` lines: (version, order, text); version 0 is the `todo!()`, n the n-th
    /// wrong answer.
    steps: Vec<(usize, usize, String)>,
    build_seconds: f64,
    test_seconds: f64,
    printed: bool,
}

impl Row {
    fn new(e: &'static Exercise) -> Row {
        Row {
            e,
            wrong: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            built: false,
            reference_judged: false,
            reference: None,
            starter_build: None,
            starter: None,
            judged: Vec::new(),
            reset_exact: true,
            pending: 0,
            steps: Vec::new(),
            build_seconds: 0.0,
            test_seconds: 0.0,
            printed: false,
        }
    }

    fn step(&mut self, version: usize, text: String) {
        let order = self.steps.len();
        self.steps.push((version, order, text));
    }
}

/// Puts a file back as it was, whatever happens (an error, an early return, a panic),
/// and drops the exercise's saved reference with it.
struct Restore {
    path: PathBuf,
    original: Vec<u8>,
    backup: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if fs::read(&self.path).ok().as_ref() != Some(&self.original) {
            match fs::write(&self.path, &self.original) {
                Ok(()) => tell!("(put {} back as it was)", self.path.display()),
                Err(err) => tell!(
                    "error: could not put back {}: {err}. Run: git checkout -- {}",
                    self.path.display(),
                    self.path.display()
                ),
            }
        }
        let _ = fs::remove_file(&self.backup);
    }
}

/// What a test job found.
enum Done {
    /// The reference's run of one test target, whole.
    Reference {
        key: Vec<String>,
        result: Result<Ran, String>,
    },
    /// Row `row`'s `todo!()`: its runs, up to the first failure.
    Starter {
        row: usize,
        result: Result<Vec<Ran>, String>,
    },
    /// Row `row`'s wrong answer `index` (in `Row::wrong`).
    Wrong {
        row: usize,
        index: usize,
        judged: Judged,
        /// `--steps` lines, with the seconds each run took.
        runs: Vec<(String, f64)>,
    },
}

type Job = Box<dyn FnOnce() -> Done + Send>;

/// Threads that run test jobs, `n` at a time. `submit` waits while `n` jobs are queued
/// besides the running ones, so that copies do not pile up on disk.
struct Pool {
    queue: Option<mpsc::SyncSender<Job>>,
    results: mpsc::Receiver<Done>,
    threads: Vec<JoinHandle<()>>,
    outstanding: usize,
}

impl Pool {
    fn new(n: usize) -> Pool {
        let (queue, jobs) = mpsc::sync_channel::<Job>(n);
        let jobs = Arc::new(Mutex::new(jobs));
        let (done, results) = mpsc::channel();
        let threads = (0..n)
            .map(|_| {
                let (jobs, done) = (Arc::clone(&jobs), done.clone());
                std::thread::spawn(move || loop {
                    let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => {
                            if done.send(job()).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                })
            })
            .collect();
        Pool {
            queue: Some(queue),
            results,
            threads,
            outstanding: 0,
        }
    }

    fn submit(&mut self, job: Job) {
        if let Some(queue) = &self.queue {
            if queue.send(job).is_ok() {
                self.outstanding += 1;
            }
        }
    }

    /// A finished job, if one is there.
    fn try_next(&mut self) -> Option<Done> {
        let done = self.results.try_recv().ok()?;
        self.outstanding -= 1;
        Some(done)
    }

    /// The next finished job; `None` once every job submitted is done.
    fn next(&mut self) -> Option<Done> {
        if self.outstanding == 0 {
            return None;
        }
        let done = self.results.recv().ok()?;
        self.outstanding -= 1;
        Some(done)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.queue = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The reference's test runs, by their command without filters.
type Reference = BTreeMap<Vec<String>, Result<Ran, String>>;

/// Everything `verify` keeps while it runs.
struct Verifier<'a> {
    ws: &'a Workspace,
    steps: bool,
    logs: PathBuf,
    rows: Vec<Row>,
    pool: Pool,
    /// The reference's runs, once all are in; the keys it waits for.
    reference: Reference,
    reference_keys: usize,
    reference_problem: Option<String>,
    /// Copies to delete, by their number.
    snapshots: usize,
}

pub fn verify(ws: &Workspace, chosen: &[&'static Exercise], steps: bool, jobs: usize) -> bool {
    let started = Instant::now();
    run::side_by_side();
    say!(
        "verify: {} exercise(s), up to {jobs} test runs at a time. Source files are rewritten \
         while it builds and put back after each build (Ctrl-C puts them back too).",
        chosen.len()
    );
    let logs = ws.state_dir().join("verify");
    let _ = fs::remove_dir_all(logs.join("copies"));
    let mut v = Verifier {
        ws,
        steps,
        logs: logs.clone(),
        rows: chosen.iter().map(|e| Row::new(e)).collect(),
        pool: Pool::new(jobs.max(1)),
        reference: Reference::new(),
        reference_keys: 0,
        reference_problem: None,
        snapshots: 0,
    };
    for row in &mut v.rows {
        preflight(ws, row);
    }
    v.start_reference();
    // The exercises whose tests take longest are built first, so that their runs go on
    // while the others build; the report keeps the table's order.
    let mut order: Vec<usize> = (0..v.rows.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(black_box_versions(&v.rows[i])));
    for (n, &i) in order.iter().enumerate() {
        if run::interrupted() {
            break;
        }
        if std::io::stderr().is_terminal() && !steps {
            tell!(
                "[{}/{}] building {}...",
                n + 1,
                v.rows.len(),
                v.rows[i].e.name
            );
        }
        if !v.rows[i].built {
            v.versions(i);
            v.rows[i].built = true;
        }
        while let Some(done) = v.pool.try_next() {
            v.take(done);
        }
        v.print_ready();
    }
    while let Some(done) = v.pool.next() {
        v.take(done);
        v.print_ready();
    }
    run::sweep_orphans();
    let _ = fs::remove_dir_all(logs.join("copies"));
    if run::interrupted() {
        say!("verify: interrupted; every source file is as it was before.");
        return false;
    }
    v.print_ready();

    let rows = &v.rows;
    let count = |f: fn(&Row) -> usize| rows.iter().map(f).sum::<usize>();
    let broken = count(|r| {
        r.judged
            .iter()
            .filter(|j| matches!(j, Some(Judged::Broken(_))))
            .count()
    });
    say!();
    say!(
        "wrong answers: {} rejected, {} survived{}",
        count(|r| r
            .judged
            .iter()
            .filter(|j| matches!(j, Some(Judged::Rejected { .. })))
            .count()),
        count(|r| r
            .judged
            .iter()
            .filter(|j| matches!(j, Some(Judged::Survived { .. })))
            .count()),
        match broken {
            0 => String::new(),
            n => format!(", {n} broken"),
        }
    );
    for row in rows.iter().filter(|r| !r.warnings.is_empty()) {
        for warning in &row.warnings {
            say!("warning: {}: {warning}", row.e.name);
        }
    }
    let failed = rows.iter().filter(|r| !r.problems.is_empty()).count();
    let secs = started.elapsed().as_secs();
    say!(
        "verify: {} passed, {failed} failed ({}m{:02}s)",
        rows.len() - failed,
        secs / 60,
        secs % 60
    );
    failed == 0
}

/// How many of a row's versions run black-box tests (which start processes and wait for
/// them; unit tests take a moment): a rough measure of how long its tests take.
fn black_box_versions(row: &Row) -> usize {
    let starter = usize::from(row.e.tests.iter().any(TestRun::is_black_box));
    let wrong = row
        .wrong
        .iter()
        .filter(|answer| {
            answer.caught_by.iter().any(|test| {
                row.e
                    .run_labelled(&test.label)
                    .is_some_and(TestRun::is_black_box)
            })
        })
        .count();
    starter + wrong
}

/// What can be known before building anything.
fn preflight(ws: &Workspace, row: &mut Row) {
    let e = row.e;
    match ws.status(e) {
        Ok(Status::Reference) => {}
        Ok(Status::Started) => row.problems.push(format!(
            "it is started; reset it first: cargo run -q -p exercise -- reset {}",
            e.name
        )),
        Err(message) => row.problems.push(message),
    }
    match wrong::load(&ws.root, e) {
        Ok(answers) => row.wrong = answers,
        Err(message) => row.problems.push(message),
    }
    let n = row.wrong.len();
    if n < 2 && row.problems.is_empty() {
        row.problems.push(format!(
            "{n} wrong answer(s) in {}/; write at least two a learner would plausibly write",
            wrong::folder(e)
        ))
    }
    row.judged = row.wrong.iter().map(|_| None).collect();
    // A row with a problem already is not built, and its tests do not run.
    row.built = !row.problems.is_empty();
    row.reference_judged = row.built;
}

impl Verifier<'_> {
    /// A fresh directory for a copy.
    fn copy_dir(&mut self, what: &str) -> PathBuf {
        self.snapshots += 1;
        self.logs
            .join("copies")
            .join(format!("{}-{what}", self.snapshots))
    }

    /// Builds the reference once, and queues one run of each test target it needs, whole.
    fn start_reference(&mut self) {
        let mut runs: Vec<&'static TestRun> = Vec::new();
        for row in self.rows.iter().filter(|r| r.problems.is_empty()) {
            for run in row.e.tests {
                if !runs.iter().any(|r| r.target_args() == run.target_args()) {
                    runs.push(run);
                }
            }
        }
        if runs.is_empty() {
            return;
        }
        let clock = Instant::now();
        let dir = self.copy_dir("reference");
        // Each test target runs whole: it needs what every one of its tests starts.
        let whole: Vec<TestRun> = runs
            .iter()
            .map(|run| TestRun {
                package: run.package,
                target: run.target,
                filters: &[],
            })
            .collect();
        let all: Vec<(&TestRun, Option<&[String]>)> = whole.iter().map(|r| (r, None)).collect();
        let built = snapshot::build(&self.ws.root, &all, &dir);
        let seconds = clock.elapsed().as_secs_f64();
        let snapshot = match built {
            Ok((_, Some(snapshot))) => snapshot,
            Ok((build, None)) => {
                self.reference_problem = Some(format!(
                    "the reference does not build: {}",
                    first_error_or_tail(&build.stderr)
                ));
                return;
            }
            Err(message) => {
                self.reference_problem = Some(message);
                return;
            }
        };
        say!(
            "reference: built once ({seconds:.1}s); {} test command(s) queued",
            runs.len()
        );
        let snapshot = Arc::new(snapshot);
        self.reference_keys = runs.len();
        for run in runs {
            let snapshot = Arc::clone(&snapshot);
            let logs = self.logs.clone();
            self.pool.submit(Box::new(move || {
                let whole = TestRun {
                    package: run.package,
                    target: run.target,
                    filters: &[],
                };
                let result = snapshot.test(&whole, None, false);
                if let Ok(ran) = &result {
                    if ran.tests.failed() > 0 || ran.trouble().is_some() {
                        save(
                            &logs,
                            &run.label().replace('/', "_"),
                            "reference",
                            &ran.output.both(),
                        );
                    }
                }
                // The last job to hold the copy deletes it.
                if let Some(snapshot) = Arc::into_inner(snapshot) {
                    snapshot.remove();
                }
                Done::Reference {
                    key: run.target_args(),
                    result,
                }
            }));
        }
    }

    /// Row `i`'s versions, each built in turn and queued to be tested: the `todo!()`, then
    /// every wrong answer.
    fn versions(&mut self, i: usize) {
        let e = self.rows[i].e;
        let path = self.ws.path(e);
        let original = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) => {
                self.rows[i]
                    .problems
                    .push(format!("cannot read {}: {err}", e.file));
                return;
            }
        };
        let _guard = Restore {
            path: path.clone(),
            original: original.clone(),
            backup: self.ws.backup(e),
        };

        // 1. The todo!() builds and fails the tests.
        let dir = self.copy_dir(&format!("{}-todo", e.name));
        let clock = Instant::now();
        let runs: Vec<(&TestRun, Option<&[String]>)> = e.tests.iter().map(|r| (r, None)).collect();
        let built = self
            .ws
            .start(e)
            .and_then(|_| snapshot::build(&self.ws.root, &runs, &dir));
        let seconds = clock.elapsed().as_secs_f64();
        let exact = self.put_back(i, &original, "the todo!()");
        let row = &mut self.rows[i];
        row.build_seconds += seconds;
        row.step(0, format!("todo!(): build ({seconds:.1}s)"));
        match built {
            Ok((build, snapshot)) => {
                let stopped = build.stopped;
                row.starter_build = Some(build);
                match snapshot {
                    Some(snapshot) if exact => {
                        row.pending += 1;
                        self.pool.submit(Box::new(move || {
                            let result = starter_runs(&snapshot, e);
                            snapshot.remove();
                            Done::Starter { row: i, result }
                        }));
                    }
                    snapshot => {
                        if let Some(snapshot) = snapshot {
                            snapshot.remove();
                        }
                        row.starter = Some(Ok(Vec::new()));
                        if stopped {
                            return;
                        }
                    }
                }
            }
            Err(message) => row.starter = Some(Err(message)),
        }
        if !exact || run::interrupted() {
            return;
        }

        // 2. Every wrong answer builds, and the tests it names reject it.
        for index in 0..self.rows[i].wrong.len() {
            let number = self.rows[i].wrong[index].number;
            let dir = self.copy_dir(&format!("{}-wrong{number}", e.name));
            let clock = Instant::now();
            let prepared = self.build_wrong(i, index, &dir);
            let seconds = clock.elapsed().as_secs_f64();
            let exact = self.put_back(i, &original, &format!("wrong answer {number}"));
            let row = &mut self.rows[i];
            row.build_seconds += seconds;
            row.step(
                index + 1,
                format!("wrong answer {number}: build ({seconds:.1}s)"),
            );
            match prepared {
                Prepared::Judged(judged) => row.judged[index] = Some(judged),
                Prepared::Built(snapshot, by_run) => {
                    row.pending += 1;
                    let logs = self.logs.clone();
                    let phase = format!("wrong{number}");
                    self.pool.submit(Box::new(move || {
                        let (judged, runs) = wrong_runs(&snapshot, e, &by_run, &logs, &phase);
                        snapshot.remove();
                        Done::Wrong {
                            row: i,
                            index,
                            judged,
                            runs,
                        }
                    }));
                }
            }
            if !exact || run::interrupted() {
                return;
            }
        }
    }

    /// Resets row `i`'s file; false (and a problem) if it is not back byte for byte.
    fn put_back(&mut self, i: usize, original: &[u8], what: &str) -> bool {
        let e = self.rows[i].e;
        let row = &mut self.rows[i];
        if let Err(message) = self.ws.reset_keeping(e, false) {
            row.problems.push(message);
        }
        if fs::read(self.ws.path(e)).ok().as_deref() == Some(original) {
            return true;
        }
        row.reset_exact = false;
        row.problems.push(format!(
            "after {what}, reset did not give back {} byte for byte",
            e.file
        ));
        false
    }

    /// Puts wrong answer `index` of row `i` in place and builds it.
    fn build_wrong(&mut self, i: usize, index: usize, dir: &Path) -> Prepared {
        let e = self.rows[i].e;
        let answer = &self.rows[i].wrong[index];
        let reference = match self.ws.read(e) {
            Ok(source) => source.inner().to_string(),
            Err(message) => return Prepared::Judged(Judged::Broken(message)),
        };
        let inner = match answer.apply(&reference) {
            Ok(inner) => inner,
            Err(message) => return Prepared::Judged(Judged::Broken(message)),
        };
        if let Err(message) = self.ws.replace_reference(e, &inner) {
            return Prepared::Judged(Judged::Broken(message));
        }
        // The runs its `caught by` lines name, each with exactly those tests.
        let mut by_run: Vec<(&'static TestRun, Vec<String>)> = Vec::new();
        for test in &answer.caught_by {
            let Some(run) = e.run_labelled(&test.label) else {
                return Prepared::Judged(Judged::Broken(format!(
                    "no test command is labelled {}",
                    test.label
                )));
            };
            match by_run.iter_mut().find(|(r, _)| std::ptr::eq(*r, run)) {
                Some((_, names)) => names.push(test.name.clone()),
                None => by_run.push((run, vec![test.name.clone()])),
            }
        }
        let runs: Vec<(&TestRun, Option<&[String]>)> = by_run
            .iter()
            .map(|(run, names)| (*run, Some(names.as_slice())))
            .collect();
        let (build, snapshot) = match snapshot::build(&self.ws.root, &runs, dir) {
            Ok(built) => built,
            Err(message) => return Prepared::Judged(Judged::Broken(message)),
        };
        if build.stopped {
            return Prepared::Judged(Judged::Rejected {
                unproven: Vec::new(),
            });
        }
        match snapshot {
            Some(snapshot) => Prepared::Built(snapshot, by_run),
            None => {
                let first = build
                    .first_error()
                    .map(|(d, _)| d.text.clone())
                    .unwrap_or_else(|| first_error_or_tail(&build.stderr));
                let log = save(
                    &self.logs,
                    e.name,
                    &format!("wrong{}", answer.number),
                    &build.stderr,
                );
                Prepared::Judged(Judged::Broken(format!(
                    "does not build, so it proves nothing (a wrong answer must compile and \
                     fail its tests); log: {log}\n{}",
                    indent(&first, "      ")
                )))
            }
        }
    }

    /// Files what a job found with its row.
    fn take(&mut self, done: Done) {
        match done {
            Done::Reference { key, result } => {
                self.reference.insert(key, result);
                if self.reference.len() == self.reference_keys {
                    for row in self.rows.iter_mut().filter(|r| !r.reference_judged) {
                        judge_reference(row, &self.reference);
                        row.reference_judged = true;
                    }
                }
            }
            Done::Starter { row, result } => {
                let row = &mut self.rows[row];
                row.pending -= 1;
                if let Ok(ran) = &result {
                    let testing: f64 = ran.iter().map(|r| r.output.seconds).sum();
                    row.test_seconds += testing;
                    let verdict = match &row.starter_build {
                        Some(build) => check::verdict(build, ran).to_string(),
                        None => String::new(),
                    };
                    row.step(0, format!("todo!(): `check`: {verdict} ({testing:.1}s)"));
                }
                row.starter = Some(result);
            }
            Done::Wrong {
                row,
                index,
                judged,
                runs,
            } => {
                let row = &mut self.rows[row];
                row.pending -= 1;
                for (text, seconds) in runs {
                    row.test_seconds += seconds;
                    row.step(index + 1, text);
                }
                row.judged[index] = Some(judged);
            }
        }
    }

    /// Prints, in order, every row whose tests have all run, up to the first that is
    /// not done yet.
    fn print_ready(&mut self) {
        let reference_in = self.reference_problem.is_some()
            || self.reference_keys == 0
            || self.reference.len() == self.reference_keys;
        if !reference_in {
            return;
        }
        let interrupted = run::interrupted();
        for i in 0..self.rows.len() {
            if self.rows[i].printed {
                continue;
            }
            if self.rows[i].pending > 0 || !self.rows[i].built {
                if interrupted {
                    say!("{:<15} interrupted", self.rows[i].e.name);
                    self.rows[i].printed = true;
                }
                return;
            }
            if let Some(problem) = &self.reference_problem {
                if !self.rows[i].reference_judged {
                    self.rows[i].problems.push(problem.clone());
                    self.rows[i].reference_judged = true;
                }
            }
            self.finish(i);
            self.rows[i].printed = true;
        }
    }

    /// Judges row `i` from everything its runs found, and prints it.
    fn finish(&mut self, i: usize) {
        let logs = self.logs.clone();
        let steps = self.steps;
        let row = &mut self.rows[i];
        let e = row.e;
        let mut done: Vec<String> = Vec::new();
        if let Some(reference) = &row.reference {
            done.push(reference.clone());
        }
        if let (Some(build), Some(Ok(ran))) = (&row.starter_build, &row.starter) {
            let verdict = check::verdict(build, ran);
            let problem = match &verdict {
                Verdict::Failed { .. } => None,
                Verdict::Interrupted => None,
                Verdict::Passed { .. } => Some(
                    "the tests still pass with the todo!() in place: they do not exercise \
                     this region"
                        .to_string(),
                ),
                Verdict::NoTests => Some("no test ran with the todo!() in place".to_string()),
                Verdict::DidNotBuild => Some(format!(
                    "the todo!() version does not build, so a learner starts from an error: {}",
                    build
                        .first_error()
                        .map(|(d, _)| d.text.lines().take(3).collect::<Vec<_>>().join(" / "))
                        .unwrap_or_default()
                )),
            };
            let not_built = ran.iter().find_map(|r| missing_binary(&r.output));
            match (problem, not_built) {
                (_, Some(missing)) => row.problems.push(format!("todo!(): {missing}")),
                (Some(problem), None) => {
                    let mut log = build.stderr.clone();
                    for r in ran {
                        log += &r.output.both();
                    }
                    let path = save(&logs, e.name, "todo", &log);
                    row.problems.push(format!("{problem}; log: {path}"));
                }
                (None, None) if verdict != Verdict::Interrupted => {
                    done.push("todo!() fails".into())
                }
                (None, None) => {}
            }
        }
        if let Some(Err(message)) = &row.starter {
            row.problems.push(message.clone());
        }
        let mut rejected = 0;
        for (answer, judged) in row.wrong.iter().zip(&row.judged) {
            match judged {
                Some(Judged::Rejected { unproven }) => {
                    rejected += 1;
                    for claim in unproven {
                        row.problems.push(format!(
                            "{}: {claim} passed, though the file says it catches this mistake",
                            answer.file
                        ));
                    }
                }
                Some(Judged::Survived { log }) => row.problems.push(format!(
                    "SURVIVED: {} ({}): {} passed. Sharpen the test, or fix the file; \
                     log: {log}",
                    answer.file,
                    answer.mistake,
                    answer
                        .caught_by
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                Some(Judged::Broken(why)) => row.problems.push(format!("{}: {why}", answer.file)),
                None => {}
            }
        }
        if row.starter.is_some() {
            done.push(match row.wrong.len() {
                0 => "no wrong answers yet".into(),
                n => format!("{rejected} of {n} wrong answers rejected"),
            });
        }
        if row.problems.is_empty() && row.reset_exact {
            done.push("reset exact".into());
        }
        if steps {
            say!("{}:", e.name);
            row.steps
                .sort_by_key(|(version, order, _)| (*version, *order));
            for (_, _, text) in &row.steps {
                say!("    {text}");
            }
        }
        let result = if row.problems.is_empty() {
            "ok"
        } else {
            "FAILED"
        };
        let warn = if row.warnings.is_empty() {
            ""
        } else {
            " (warning below)"
        };
        say!(
            "{:<15} {:<7} {}{warn} (builds {:.1}s, tests {:.1}s)",
            e.name,
            result,
            done.join(", "),
            row.build_seconds,
            row.test_seconds
        );
        for problem in &row.problems {
            say!("{}", indent(problem, "    "));
        }
    }
}

/// What building a wrong answer gave: a verdict already (it does not apply, or does not
/// build), or a copy to test.
enum Prepared {
    Judged(Judged),
    Built(Snapshot, Vec<(&'static TestRun, Vec<String>)>),
}

/// The `todo!()`'s runs, in order, up to the first failed test.
fn starter_runs(snapshot: &Snapshot, e: &Exercise) -> Result<Vec<Ran>, String> {
    let mut ran = Vec::new();
    for run in e.tests {
        let done = snapshot.test(run, None, true)?;
        let stop = matches!(done.output.ended, Ended::Interrupted | Ended::FirstFailure);
        ran.push(done);
        if stop {
            break;
        }
    }
    Ok(ran)
}

fn judge_reference(row: &mut Row, reference: &Reference) {
    let mut tests = 0;
    let mut problems = Vec::new();
    for run in row.e.tests {
        let Some(result) = reference.get(&run.target_args()) else {
            problems.push(format!("`{}` was not run", run.command()));
            continue;
        };
        let ran = match result {
            Ok(ran) => ran,
            Err(message) => {
                problems.push(message.clone());
                continue;
            }
        };
        if let Some(missing) = missing_binary(&ran.output) {
            problems.push(format!("reference: {missing}"));
        }
        if let Some(trouble) = ran.trouble() {
            problems.push(format!("reference: `{}`: {trouble}", ran.command));
        }
        let selected: Vec<&(String, bool)> = ran
            .tests
            .results
            .iter()
            .filter(|(name, _)| run.selects(name))
            .collect();
        if selected.is_empty() {
            problems.push(format!(
                "`{}` matches no test: the exercise's filters are wrong",
                run.command()
            ));
        }
        for (name, passed) in &selected {
            if !passed {
                problems.push(format!(
                    "the reference code fails {}::{name}; log: \
                     target/exercises/verify/{}.reference.log",
                    run.label(),
                    run.label()
                ));
            }
        }
        tests += selected.len();
    }
    match problems.is_empty() {
        true => row.reference = Some(format!("reference passes ({})", check::tests_word(tests))),
        false => row.problems.extend(problems),
    }
}

enum Judged {
    /// At least one named test failed. `unproven`: named tests that passed anyway.
    Rejected {
        unproven: Vec<String>,
    },
    Survived {
        log: String,
    },
    /// It could not be judged: it does not apply, does not build, or a named test did not
    /// run.
    Broken(String),
}

/// Runs the tests a wrong answer names, from its copy, and judges it.
fn wrong_runs(
    snapshot: &Snapshot,
    e: &Exercise,
    by_run: &[(&'static TestRun, Vec<String>)],
    logs: &Path,
    phase: &str,
) -> (Judged, Vec<(String, f64)>) {
    let mut log = String::new();
    let mut failed = Vec::new();
    let mut passed = Vec::new();
    let mut steps = Vec::new();
    let number = phase.trim_start_matches("wrong");
    for (run, names) in by_run {
        let ran = match snapshot.test(run, Some(names), false) {
            Ok(ran) => ran,
            Err(message) => return (Judged::Broken(message), steps),
        };
        log += &ran.output.both();
        steps.push((
            format!(
                "wrong answer {number}: `{}`: {} failed of {} ({:.1}s)",
                ran.command,
                ran.tests.failed(),
                ran.tests.results.len(),
                ran.output.seconds
            ),
            ran.output.seconds,
        ));
        if ran.output.ended == Ended::Interrupted {
            return (
                Judged::Rejected {
                    unproven: Vec::new(),
                },
                steps,
            );
        }
        if let Some(missing) = missing_binary(&ran.output) {
            return (Judged::Broken(missing), steps);
        }
        for name in names {
            let id = format!("{}::{name}", run.label());
            match ran.tests.outcome(name) {
                Some(false) => failed.push(id),
                Some(true) => passed.push(id),
                // A run that timed out or crashed rejects what it was running.
                None if ran.trouble().is_some() => failed.push(id),
                None => {
                    return (
                        Judged::Broken(format!(
                            "{id} did not run: no test has that name (`{}`)",
                            ran.command
                        )),
                        steps,
                    )
                }
            }
        }
    }
    if failed.is_empty() {
        let log = save(logs, e.name, phase, &log);
        (Judged::Survived { log }, steps)
    } else {
        (Judged::Rejected { unproven: passed }, steps)
    }
}

/// If a test failed because it started a chapter binary `verify` did not build for it:
/// what to say. Such a failure proves nothing about the code.
fn missing_binary(output: &run::Output) -> Option<String> {
    let line = output
        .stdout
        .lines()
        .chain(output.stderr.lines())
        .find(|l| l.contains(snapshot::NOT_BUILT))?;
    Some(format!(
        "a test started a binary verify did not build for it ({}); verify finds the \
         chapters a test file starts by their names in it",
        line.trim()
    ))
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn first_error_or_tail(stderr: &str) -> String {
    let found = crate::report::diagnostics(stderr);
    match found.iter().find(|d| d.error) {
        Some(first) => first.text.clone(),
        None => {
            let lines: Vec<&str> = stderr.lines().collect();
            lines[lines.len().saturating_sub(10)..].join("\n")
        }
    }
}

/// Writes a log for a step that went wrong; returns its path as the report shows it.
fn save(dir: &Path, name: &str, phase: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.{phase}.log"));
    match fs::create_dir_all(dir).and_then(|()| fs::write(&path, text)) {
        Ok(()) => format!("target/exercises/verify/{name}.{phase}.log"),
        Err(err) => format!("(not saved: {err})"),
    }
}
