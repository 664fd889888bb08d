//! `verify`: for teachers and CI, proof that every exercise works as the learner will
//! meet it. The reference code passes its tests; blanked to a `todo!()`, it fails them;
//! every wrong answer in `exercises/wrong/` fails the tests it names; and after each of
//! those, the file is back byte for byte.
//!
//! It builds the reference once and runs each test file once for all the exercises; after
//! that, each variant rebuilds only what it touched and runs only the tests it needs.

use std::collections::BTreeMap;
use std::fs;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use crate::check::{self, Ran, Verdict};
use crate::registry::{Exercise, TestRun};
use crate::run::{self, Ended};
use crate::workspace::{Status, Workspace};
use crate::wrong::{self, WrongAnswer};

static STEPS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With `verify --steps`: one line per build and test command, with its time.
fn step(what: &str, seconds: f64) {
    if STEPS.load(std::sync::atomic::Ordering::Relaxed) {
        say!("    {what} ({seconds:.1}s)");
    }
}

/// One exercise's line in the report, and what went wrong.
struct Row {
    e: &'static Exercise,
    wrong: Vec<WrongAnswer>,
    /// What was proven, in order: `reference passes (7 tests)`, ...
    done: Vec<String>,
    problems: Vec<String>,
    warnings: Vec<String>,
    rejected: usize,
    survived: usize,
    broken: usize,
    seconds: f64,
}

impl Row {
    fn new(e: &'static Exercise) -> Row {
        Row {
            e,
            wrong: Vec::new(),
            done: Vec::new(),
            problems: Vec::new(),
            warnings: Vec::new(),
            rejected: 0,
            survived: 0,
            broken: 0,
            seconds: 0.0,
        }
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

pub fn verify(ws: &Workspace, chosen: &[&'static Exercise], steps: bool) -> bool {
    STEPS.store(steps, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    say!(
        "verify: {} exercise(s). Source files are rewritten while it runs and put back \
         after each step (Ctrl-C puts them back too).",
        chosen.len()
    );
    let logs = ws.state_dir().join("verify");
    let mut rows: Vec<Row> = chosen.iter().map(|e| Row::new(e)).collect();
    for row in &mut rows {
        preflight(ws, row);
    }

    // The reference code, built once; each test file it needs run once, whole.
    let ready: Vec<&'static Exercise> = rows
        .iter()
        .filter(|r| r.problems.is_empty())
        .map(|r| r.e)
        .collect();
    let reference = reference_runs(ws, &ready, &logs);
    for row in rows.iter_mut().filter(|r| r.problems.is_empty()) {
        judge_reference(row, &reference);
    }

    let total = rows.len();
    for (i, row) in rows.iter_mut().enumerate() {
        if run::interrupted() {
            break;
        }
        if steps {
            say!("{}:", row.e.name);
        } else if std::io::stderr().is_terminal() {
            tell!("[{}/{total}] {}...", i + 1, row.e.name);
        }
        let clock = Instant::now();
        if row.problems.is_empty() {
            variants(ws, row, &logs);
        }
        row.seconds = clock.elapsed().as_secs_f64();
        if run::interrupted() {
            say!("{:<15} interrupted", row.e.name);
            break;
        }
        print_row(row);
    }
    if run::interrupted() {
        say!("verify: interrupted; every source file is as it was before.");
        return false;
    }

    let count = |f: fn(&Row) -> usize| rows.iter().map(f).sum::<usize>();
    let broken = count(|r| r.broken);
    say!();
    say!(
        "wrong answers: {} rejected, {} survived{}",
        count(|r| r.rejected),
        count(|r| r.survived),
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
}

/// The reference's test runs, by their command without filters.
type Reference = BTreeMap<Vec<String>, Result<Ran, String>>;

fn reference_runs(
    ws: &Workspace,
    ready: &[&'static Exercise],
    logs: &std::path::Path,
) -> Reference {
    let mut runs: Vec<&'static TestRun> = Vec::new();
    let mut chapters: Vec<&'static str> = Vec::new();
    for e in ready {
        for run in e.tests {
            if !runs.iter().any(|r| r.target_args() == run.target_args()) {
                runs.push(run);
            }
            if run.is_black_box() && !chapters.contains(&e.chapter) {
                chapters.push(e.chapter);
            }
        }
    }
    let mut results = Reference::new();
    if runs.is_empty() {
        return results;
    }
    let clock = Instant::now();
    let mut build_args: Vec<String> = vec!["build".into(), "-q".into()];
    for chapter in &chapters {
        build_args.extend(["-p".to_string(), chapter.to_string()]);
    }
    let mut failure = None;
    if !chapters.is_empty() {
        match run::cargo(&ws.root, &build_args, None, false) {
            Ok(out) if out.success() => {}
            Ok(out) => failure = Some(first_error_or_tail(&out.stderr)),
            Err(message) => failure = Some(message),
        }
    }
    for run in &runs {
        let key = run.target_args();
        if let Some(why) = &failure {
            results.insert(key, Err(format!("the reference does not build: {why}")));
            continue;
        }
        let mut build = key.clone();
        build.extend(["--no-run".to_string(), "-q".to_string()]);
        let result = match run::cargo(&ws.root, &build, None, false) {
            Ok(out) if out.success() => {
                let whole = TestRun {
                    package: run.package,
                    target: run.target,
                    filters: &[],
                };
                check::test(&ws.root, &whole, None, false)
            }
            Ok(out) => Err(format!(
                "the reference does not build: {}",
                first_error_or_tail(&out.stderr)
            )),
            Err(message) => Err(message),
        };
        if let Ok(ran) = &result {
            if ran.tests.failed() > 0 || ran.trouble().is_some() {
                save(
                    logs,
                    &run.label().replace('/', "_"),
                    "reference",
                    &ran.output.both(),
                );
            }
        }
        results.insert(key, result);
    }
    let tests: usize = results
        .values()
        .flatten()
        .map(|r| r.tests.results.len())
        .sum();
    say!(
        "reference: built once; {} test command(s), {tests} tests ({:.1}s)",
        runs.len(),
        clock.elapsed().as_secs_f64()
    );
    results
}

fn judge_reference(row: &mut Row, reference: &Reference) {
    let mut tests = 0;
    for run in row.e.tests {
        let Some(result) = reference.get(&run.target_args()) else {
            row.problems
                .push(format!("`{}` was not run", run.command()));
            continue;
        };
        let ran = match result {
            Ok(ran) => ran,
            Err(message) => {
                row.problems.push(message.clone());
                continue;
            }
        };
        if let Some(trouble) = ran.trouble() {
            row.problems
                .push(format!("reference: `{}`: {trouble}", ran.command));
        }
        let selected: Vec<&(String, bool)> = ran
            .tests
            .results
            .iter()
            .filter(|(name, _)| run.selects(name))
            .collect();
        if selected.is_empty() {
            row.problems.push(format!(
                "`{}` matches no test: the exercise's filters are wrong",
                run.command()
            ));
        }
        for (name, passed) in &selected {
            if !passed {
                row.problems.push(format!(
                    "the reference code fails {}::{name}; log: \
                     target/exercises/verify/{}.reference.log",
                    run.label(),
                    run.label()
                ));
            }
        }
        tests += selected.len();
    }
    if row.problems.is_empty() {
        row.done
            .push(format!("reference passes ({})", check::tests_word(tests)));
    }
}

/// The starter and every wrong answer, each in place of the reference in turn.
fn variants(ws: &Workspace, row: &mut Row, logs: &std::path::Path) {
    let e = row.e;
    let path = ws.path(e);
    let original = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(err) => {
            row.problems.push(format!("cannot read {}: {err}", e.file));
            return;
        }
    };
    let _guard = Restore {
        path: path.clone(),
        original: original.clone(),
        backup: ws.backup(e),
    };
    let put_back = |row: &mut Row, what: &str| -> bool {
        let reset = ws.reset_keeping(e, false);
        if let Err(message) = reset {
            row.problems.push(message);
        }
        if fs::read(&path).ok().as_ref() == Some(&original) {
            true
        } else {
            row.problems.push(format!(
                "after {what}, reset did not give back {} byte for byte",
                e.file
            ));
            false
        }
    };

    // 1. The todo!() builds and fails the tests.
    let clock = Instant::now();
    // One failed test is proof enough: stop there.
    let starter = ws
        .start(e)
        .and_then(|_| check::all(&ws.root, e, false, true));
    match starter {
        Ok((build, ran)) => {
            let verdict = check::verdict(&build, &ran);
            let testing: f64 = ran.iter().map(|r| r.output.seconds).sum();
            step(
                &format!("todo!(): build and `check`: {verdict}; tests took {testing:.1}s"),
                clock.elapsed().as_secs_f64(),
            );
            let problem = match &verdict {
                Verdict::Failed { .. } => None,
                Verdict::Interrupted => return,
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
            match problem {
                Some(problem) => {
                    let mut log = build.stderr.clone();
                    for r in &ran {
                        log += &r.output.both();
                    }
                    let path = save(logs, e.name, "todo", &log);
                    row.problems.push(format!("{problem}; log: {path}"));
                }
                None => row.done.push("todo!() fails".into()),
            }
        }
        Err(message) => row.problems.push(message),
    }
    if !put_back(row, "the todo!()") || run::interrupted() {
        return;
    }

    // 2. Every wrong answer builds, and the tests it names reject it.
    let wrong = std::mem::take(&mut row.wrong);
    for answer in &wrong {
        let outcome = try_wrong_answer(ws, e, answer, logs);
        if !put_back(row, &format!("wrong answer {}", answer.number)) {
            return;
        }
        match outcome {
            Judged::Rejected { .. } if run::interrupted() => return,
            Judged::Rejected { unproven } => {
                row.rejected += 1;
                for claim in unproven {
                    row.problems.push(format!(
                        "{}: {claim} passed, though the file says it catches this mistake",
                        answer.file
                    ));
                }
            }
            Judged::Survived { log } => {
                row.survived += 1;
                row.problems.push(format!(
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
                ));
            }
            Judged::Broken(why) => {
                row.broken += 1;
                row.problems.push(format!("{}: {why}", answer.file));
            }
        }
    }
    row.done.push(match wrong.len() {
        0 => "no wrong answers yet".into(),
        n => format!("{} of {n} wrong answers rejected", row.rejected),
    });
    row.wrong = wrong;
    if row.problems.is_empty() {
        row.done.push("reset exact".into());
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

fn try_wrong_answer(
    ws: &Workspace,
    e: &Exercise,
    answer: &WrongAnswer,
    logs: &std::path::Path,
) -> Judged {
    let phase = format!("wrong{}", answer.number);
    let reference = match ws.read(e) {
        Ok(source) => source.inner().to_string(),
        Err(message) => return Judged::Broken(message),
    };
    let inner = match answer.apply(&reference) {
        Ok(inner) => inner,
        Err(message) => return Judged::Broken(message),
    };
    if let Err(message) = ws.replace_reference(e, &inner) {
        return Judged::Broken(message);
    }
    // The runs its `caught by` lines name, each with exactly those tests.
    let mut by_run: Vec<(&'static TestRun, Vec<String>)> = Vec::new();
    for test in &answer.caught_by {
        let Some(run) = e.run_labelled(&test.label) else {
            return Judged::Broken(format!("no test command is labelled {}", test.label));
        };
        match by_run.iter_mut().find(|(r, _)| std::ptr::eq(*r, run)) {
            Some((_, names)) => names.push(test.name.clone()),
            None => by_run.push((run, vec![test.name.clone()])),
        }
    }
    let runs: Vec<&TestRun> = by_run.iter().map(|(r, _)| *r).collect();
    let clock = Instant::now();
    let build = match check::build(&ws.root, e, &runs, false) {
        Ok(build) => build,
        Err(message) => return Judged::Broken(message),
    };
    step(
        &format!("wrong answer {}: build", answer.number),
        clock.elapsed().as_secs_f64(),
    );
    if build.stopped {
        return Judged::Rejected {
            unproven: Vec::new(),
        };
    }
    if !build.ok {
        let first = build
            .first_error()
            .map(|(d, _)| d.text.clone())
            .unwrap_or_else(|| first_error_or_tail(&build.stderr));
        let log = save(logs, e.name, &phase, &build.stderr);
        return Judged::Broken(format!(
            "does not build, so it proves nothing (a wrong answer must compile and fail \
             its tests); log: {log}\n{}",
            indent(&first, "      ")
        ));
    }
    let mut log = String::new();
    let mut failed = Vec::new();
    let mut passed = Vec::new();
    for (run, names) in &by_run {
        let ran = match check::test(&ws.root, run, Some(names), false) {
            Ok(ran) => ran,
            Err(message) => return Judged::Broken(message),
        };
        log += &ran.output.both();
        step(
            &format!(
                "wrong answer {}: `{}`: {} failed of {}",
                answer.number,
                ran.command,
                ran.tests.failed(),
                ran.tests.results.len()
            ),
            ran.output.seconds,
        );
        if ran.output.ended == Ended::Interrupted {
            return Judged::Rejected {
                unproven: Vec::new(),
            };
        }
        for name in names {
            let id = format!("{}::{name}", run.label());
            match ran.tests.outcome(name) {
                Some(false) => failed.push(id),
                Some(true) => passed.push(id),
                // A run that timed out or crashed rejects what it was running.
                None if ran.trouble().is_some() => failed.push(id),
                None => {
                    return Judged::Broken(format!(
                        "{id} did not run: no test has that name (`{}`)",
                        ran.command
                    ))
                }
            }
        }
    }
    if failed.is_empty() {
        let log = save(logs, e.name, &phase, &log);
        Judged::Survived { log }
    } else {
        Judged::Rejected { unproven: passed }
    }
}

fn print_row(row: &Row) {
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
        "{:<15} {:<7} {}{warn} ({:.1}s)",
        row.e.name,
        result,
        row.done.join(", "),
        row.seconds
    );
    for problem in &row.problems {
        say!("{}", indent(problem, "    "));
    }
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
fn save(dir: &std::path::Path, name: &str, phase: &str, text: &str) -> String {
    let path = dir.join(format!("{name}.{phase}.log"));
    match fs::create_dir_all(dir).and_then(|()| fs::write(&path, text)) {
        Ok(()) => format!("target/exercises/verify/{name}.{phase}.log"),
        Err(err) => format!("(not saved: {err})"),
    }
}
