//! Building an exercise and running its tests, as `check` and `verify` both do.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::registry::{Exercise, Target, TestRun};
use crate::report::{self, Diagnostic};
use crate::run::{self, Ended, Output};

/// How long one test command may run. Every wait in the chapter tests has a deadline of
/// its own (20 s at most), so only an endless loop in the code under test gets near this.
pub fn timeout(run: &TestRun) -> Duration {
    match run.target {
        Target::Lib | Target::Bin(_) => Duration::from_secs(60),
        Target::Test(_) => Duration::from_secs(600),
    }
}

/// What building printed, and whether it worked.
pub struct Build {
    pub ok: bool,
    /// Set when the build was stopped (Ctrl-C) rather than finished.
    pub stopped: bool,
    pub diagnostics: Vec<Diagnostic>,
    /// Everything cargo printed, for `--verbose` and for logs.
    pub stderr: String,
}

impl Build {
    /// The first compiler error, and how many more there are.
    pub fn first_error(&self) -> Option<(&Diagnostic, usize)> {
        let mut errors = self.diagnostics.iter().filter(|d| d.error);
        let first = errors.next()?;
        Some((first, errors.count()))
    }
}

/// Builds what `runs` need: the chapter's binary (black-box tests start it) and each
/// test target, in as few cargo calls as the targets allow.
pub fn build(root: &Path, e: &Exercise, runs: &[&TestRun], echo: bool) -> Result<Build, String> {
    let quiet = if echo { None } else { Some("-q".to_string()) };
    let mut commands: Vec<Vec<String>> = Vec::new();
    if runs.iter().any(|r| r.is_black_box()) {
        let mut args: Vec<String> = ["build", "-p", e.chapter, "--bin", e.chapter]
            .map(String::from)
            .to_vec();
        args.extend(quiet.clone());
        commands.push(args);
    }
    let mut seen = BTreeSet::new();
    for run in runs {
        let mut args = run.target_args();
        if seen.insert(args.clone()) {
            args.push("--no-run".into());
            args.extend(quiet.clone());
            commands.push(args);
        }
    }
    let mut stderr = String::new();
    for args in commands {
        let out = run::cargo(root, &args, None, echo)?;
        stderr += &out.stderr;
        if !out.success() {
            return Ok(Build {
                ok: false,
                stopped: out.ended == Ended::Interrupted,
                diagnostics: report::diagnostics(&stderr),
                stderr,
            });
        }
    }
    Ok(Build {
        ok: true,
        stopped: false,
        diagnostics: report::diagnostics(&stderr),
        stderr,
    })
}

/// One test command, run.
pub struct Ran {
    /// The run's label, as tests are named in reports: `ch04_proxy`, `ch02-ipc-messaging`.
    pub label: &'static str,
    pub command: String,
    pub tests: report::Tests,
    pub output: Output,
}

impl Ran {
    /// A sentence on how it ended when it did not end by itself, or crashed.
    pub fn trouble(&self) -> Option<String> {
        match self.output.ended {
            Ended::Interrupted => Some("stopped by Ctrl-C".into()),
            Ended::TimedOut(after) => Some(format!(
                "stopped after {}s: a test never finished (an endless loop?)",
                after.as_secs()
            )),
            Ended::FirstFailure => None,
            Ended::Exited { .. } if !self.tests.finished => Some(format!(
                "the test program stopped before the end{}",
                report::crash_reason(&self.output.stderr)
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            )),
            Ended::Exited { .. } => None,
        }
    }
}

/// Runs `run`'s tests: those its filters select, or exactly the tests `only` names; with
/// `first_failure`, stops at the first failed test (and reports only the tests that
/// finished by then).
pub fn test_until(
    root: &Path,
    run: &TestRun,
    only: Option<&[String]>,
    echo: bool,
    first_failure: bool,
) -> Result<Ran, String> {
    let args = match only {
        Some(names) => {
            let mut args = run.target_args();
            args.push("--".into());
            args.extend(names.iter().cloned());
            args.push("--exact".into());
            args
        }
        None => run.args(),
    };
    let command = format!("cargo {}", args.join(" "));
    let output = run::cargo_until(root, &args, Some(timeout(run)), echo, first_failure)?;
    Ok(Ran {
        label: run.label(),
        command,
        tests: report::tests(&output.stdout),
        output,
    })
}

/// What a check says about the code.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed {
        tests: usize,
    },
    Failed {
        failed: usize,
        tests: usize,
    },
    DidNotBuild,
    /// The commands ran, but no test matched.
    NoTests,
    Interrupted,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Passed { tests } => write!(f, "passes ({})", tests_word(*tests)),
            Verdict::Failed { failed, tests } => write!(f, "fails ({failed} of {tests})"),
            Verdict::DidNotBuild => write!(f, "does not build"),
            Verdict::NoTests => write!(f, "no test ran"),
            Verdict::Interrupted => write!(f, "interrupted"),
        }
    }
}

/// "1 test", "3 tests".
pub fn tests_word(n: usize) -> String {
    match n {
        1 => "1 test".into(),
        n => format!("{n} tests"),
    }
}

/// The verdict on a build and the test commands that followed it.
pub fn verdict(build: &Build, ran: &[Ran]) -> Verdict {
    if build.stopped || ran.iter().any(|r| r.output.ended == Ended::Interrupted) {
        return Verdict::Interrupted;
    }
    if !build.ok {
        return Verdict::DidNotBuild;
    }
    let tests: usize = ran.iter().map(|r| r.tests.results.len()).sum();
    let failed: usize = ran.iter().map(|r| r.tests.failed()).sum();
    // A run that stopped early counts as one failure more, even if none was reported.
    let stopped = ran.iter().filter(|r| r.trouble().is_some()).count();
    match (tests, failed + stopped) {
        (0, 0) => Verdict::NoTests,
        (tests, 0) => Verdict::Passed { tests },
        (tests, failed) => Verdict::Failed {
            failed,
            tests: tests.max(failed),
        },
    }
}

/// Builds, then runs every test command of `e`, stopping early on Ctrl-C, and with
/// `first_failure` at the first failed test.
pub fn all(
    root: &Path,
    e: &Exercise,
    echo: bool,
    first_failure: bool,
) -> Result<(Build, Vec<Ran>), String> {
    let runs: Vec<&TestRun> = e.tests.iter().collect();
    let build = build(root, e, &runs, echo)?;
    let mut ran = Vec::new();
    if build.ok {
        for run in e.tests {
            let done = test_until(root, run, None, echo, first_failure)?;
            let stop = matches!(done.output.ended, Ended::Interrupted | Ended::FirstFailure);
            ran.push(done);
            if stop {
                break;
            }
        }
    }
    Ok((build, ran))
}
