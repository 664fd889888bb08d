//! The classroom exercise tool: blank a piece of the real code, let the learner rewrite
//! it, check it with the chapter's tests, and put the reference back.
//!
//! `cargo run -q -p exercise -- list | start NAME | check NAME | reset NAME | reset --all
//! | verify [NAME...]`. The exercises themselves are the table in `registry.rs`.

mod region;
mod registry;
mod run;

use std::fs;
use std::io::{self, Write};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use registry::{Exercise, EXERCISES};
use run::Verdict;

const USAGE: &str = "\
The exercises of Cluster from Scratch: rewrite a piece of the real code, check it with
the chapter's tests.

usage: cargo run -q -p exercise -- COMMAND

  list            every exercise, its chapter and whether you have started it
  start NAME      replace the reference code of NAME with a todo!() for you to fill in
  check NAME      run NAME's tests against your code: passed, or not yet
  reset NAME      put the reference code back (your version is kept in target/exercises/)
  reset --all     the same for every started exercise
  verify [NAME]   for teachers and CI: prove each exercise passes on the reference code,
                  fails once started, and resets byte for byte
";

/// How a command went: `Ok(true)` success, `Ok(false)` a clear "no" already printed,
/// `Err` a problem to print.
type Outcome = Result<bool, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let ws = Workspace::new();
    let outcome = match words.as_slice() {
        [] | ["help" | "--help" | "-h"] => {
            print!("{USAGE}");
            Ok(true)
        }
        ["list"] => ws.list(),
        ["start", name] => lookup(name).and_then(|e| ws.start_command(e)),
        ["check", name] => lookup(name).and_then(|e| ws.check_command(e)),
        ["reset", "--all"] => ws.reset_all(),
        ["reset", name] => lookup(name).and_then(|e| ws.reset_command(e)),
        ["verify"] => ws.verify(EXERCISES.iter().collect()),
        ["verify", names @ ..] => names
            .iter()
            .map(|name| lookup(name))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|chosen| ws.verify(chosen)),
        _ => {
            eprint!(
                "error: I do not understand '{}'.\n\n{USAGE}",
                words.join(" ")
            );
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn lookup(name: &str) -> Result<&'static Exercise, String> {
    registry::find(name).ok_or_else(|| {
        let names: Vec<&str> = EXERCISES.iter().map(|e| e.name).collect();
        format!(
            "there is no exercise called '{name}'. The exercises are: {}.",
            names.join(", ")
        )
    })
}

/// Where an exercise stands.
#[derive(Debug, PartialEq, Eq)]
enum Status {
    /// The file holds the reference code.
    Reference,
    /// Started: the reference is saved in the backup (if `backup`) and the file holds the
    /// starter line or the learner's own code.
    Started { backup: bool },
}

/// The workspace the tool works on: the one it was built from.
struct Workspace {
    root: PathBuf,
}

/// An exercise's file, read, with its region located.
struct Source {
    text: String,
    region: region::Region,
}

impl Source {
    fn inner(&self) -> &str {
        &self.text[self.region.inner.clone()]
    }
}

impl Workspace {
    fn new() -> Workspace {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest.parent().unwrap_or(manifest).to_path_buf();
        Workspace { root }
    }

    fn path(&self, e: &Exercise) -> PathBuf {
        self.root.join(e.file)
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("target").join("exercises")
    }

    /// Where `start` saves the reference region.
    fn backup(&self, e: &Exercise) -> PathBuf {
        self.state_dir().join(format!("{}.orig", e.name))
    }

    /// Where `reset` saves the learner's region, so resetting never loses work.
    fn yours(&self, e: &Exercise) -> PathBuf {
        self.state_dir().join(format!("{}.yours", e.name))
    }

    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn read(&self, e: &Exercise) -> Result<Source, String> {
        let text = fs::read_to_string(self.path(e))
            .map_err(|err| format!("cannot read {}: {err}", e.file))?;
        let region = region::find(&text, e.anchor).map_err(|err| {
            format!(
                "{}: {err} in {}. The markers must stay as they are; \
                 `git checkout -- {}` brings them back.",
                e.name, e.file, e.file
            )
        })?;
        Ok(Source { text, region })
    }

    fn write(&self, e: &Exercise, text: &str) -> Result<(), String> {
        fs::write(self.path(e), text).map_err(|err| format!("cannot write {}: {err}", e.file))
    }

    fn status(&self, e: &Exercise) -> Result<Status, String> {
        let source = self.read(e)?;
        let backup = fs::read_to_string(self.backup(e)).ok();
        Ok(match backup {
            // A backup equal to the file's region is stale (the file was put back by
            // hand, e.g. with git): the exercise is not started.
            Some(saved) if saved == source.inner() => Status::Reference,
            Some(_) => Status::Started { backup: true },
            None if region::is_starter(source.inner(), e.name) => Status::Started { backup: false },
            None => Status::Reference,
        })
    }

    fn list(&self) -> Outcome {
        // Built as one string and written once, ignoring a closed pipe (`list | head`).
        let mut out = format!(
            "{:<16}{:<23}{:<11}WHAT YOU WRITE\n",
            "EXERCISE", "CHAPTER", "STATUS"
        );
        let mut problems = Vec::new();
        for e in EXERCISES {
            let status = match self.status(e) {
                Ok(Status::Reference) => "reference",
                Ok(Status::Started { .. }) => "started",
                Err(message) => {
                    problems.push(message);
                    "broken"
                }
            };
            out += &format!("{:<16}{:<23}{:<11}{}\n", e.name, e.chapter, status, e.about);
        }
        out += "\nStart one with `cargo run -q -p exercise -- start NAME`; \
                `reset NAME` puts the reference code back.\n";
        let _ = io::stdout().write_all(out.as_bytes());
        for problem in &problems {
            eprintln!("error: {problem}");
        }
        Ok(problems.is_empty())
    }

    /// Saves the region to the backup, then replaces it with the starter line. Returns
    /// the line number of the starter line.
    fn start(&self, e: &Exercise) -> Result<usize, String> {
        let source = self.read(e)?;
        if let Status::Started { .. } = self.status(e)? {
            return Err(format!(
                "{} is already started: your code is in {}, function {} (line {}). \
                 To start over: cargo run -q -p exercise -- reset {}",
                e.name, e.file, e.function, source.region.first_line, e.name
            ));
        }
        let backup = self.backup(e);
        fs::create_dir_all(self.state_dir())
            .and_then(|()| fs::write(&backup, source.inner()))
            .map_err(|err| format!("cannot save the reference code to {backup:?}: {err}"))?;
        let starter = region::starter(&source.region.indent, e.name, e.hint);
        let started = region::replace(&source.text, &source.region, &starter);
        if let Err(err) = self.write(e, &started) {
            let _ = fs::remove_file(&backup);
            return Err(err);
        }
        Ok(source.region.first_line)
    }

    fn start_command(&self, e: &Exercise) -> Outcome {
        let line = self.start(e)?;
        println!(
            "Started {name}: {about}.\n\
             The reference code is saved in {backup}.\n\n\
             1. Edit {file}:{line}, function {function}: replace the todo!() with your code.\n\
             \x20  Hint: {hint}.\n\
             2. Check it:     cargo run -q -p exercise -- check {name}\n\
             \x20  (it runs:    {command})\n\
             3. Start over:   cargo run -q -p exercise -- reset {name}",
            name = e.name,
            about = e.about,
            backup = self.show(&self.backup(e)),
            file = e.file,
            function = e.function,
            hint = e.hint,
            command = e.test_command(),
        );
        Ok(true)
    }

    fn check_command(&self, e: &Exercise) -> Outcome {
        println!("== check {}: {}", e.name, e.test_command());
        let run = run::tests(&self.root, e, true)?;
        let still_todo = self
            .read(e)
            .map(|s| region::is_starter(s.inner(), e.name))
            .unwrap_or(false);
        println!();
        match run.verdict {
            Verdict::Passed { tests } => {
                println!("{}: passed ({}).", e.name, run::tests_word(tests));
                if self.status(e)? == Status::Reference {
                    println!("(This is the reference code: `start {}` first.)", e.name);
                }
                return Ok(true);
            }
            Verdict::Failed { failed, tests } => {
                println!("{}: not yet: {failed} of {tests} tests failed.", e.name)
            }
            Verdict::Crashed => println!(
                "{}: not yet: the tests stopped before the end (see above).",
                e.name
            ),
            Verdict::DidNotBuild => {
                println!(
                    "{}: not yet: the code does not build. Fix the first error above \
                     (in {}, function {}) and check again.",
                    e.name, e.file, e.function
                );
                return Ok(false);
            }
            Verdict::NoTests => {
                return Err(format!(
                    "{}: no test ran: '{}' matches no test. The exercise table is wrong; \
                     please report it.",
                    e.name,
                    e.test_command()
                ))
            }
        }
        if still_todo {
            println!(
                "The todo!() is still in {} (function {}): that is where your code goes.",
                e.file, e.function
            );
        } else {
            println!(
                "Read the first failure above, change {} (function {}) and check again.",
                e.file, e.function
            );
        }
        Ok(false)
    }

    /// Puts the reference back. Returns a sentence saying what happened.
    fn reset(&self, e: &Exercise) -> Result<Option<String>, String> {
        let source = self.read(e)?;
        let Ok(saved) = fs::read_to_string(self.backup(e)) else {
            if region::is_starter(source.inner(), e.name) {
                return Err(format!(
                    "{} is started but its backup in {} is gone (cargo clean?). \
                     Put the reference back with git: git checkout -- {} \
                     (that also undoes any other change to that file).",
                    e.name,
                    self.show(&self.state_dir()),
                    e.file
                ));
            }
            return Ok(None);
        };
        if saved == source.inner() {
            let _ = fs::remove_file(self.backup(e));
            return Ok(None);
        }
        let mut kept = String::new();
        if !region::is_starter(source.inner(), e.name) {
            let yours = self.yours(e);
            fs::write(&yours, source.inner())
                .map_err(|err| format!("cannot save your code to {yours:?}: {err}"))?;
            kept = format!(" Your version is kept in {}.", self.show(&yours));
        }
        self.write(e, &region::replace(&source.text, &source.region, &saved))?;
        let _ = fs::remove_file(self.backup(e));
        Ok(Some(format!(
            "{}: {} is back to the reference code.{kept}",
            e.name, e.file
        )))
    }

    fn reset_command(&self, e: &Exercise) -> Outcome {
        match self.reset(e)? {
            Some(done) => println!("{done}"),
            None => println!(
                "{} is not started: {} already holds the reference code.",
                e.name, e.file
            ),
        }
        Ok(true)
    }

    fn reset_all(&self) -> Outcome {
        let mut all_ok = true;
        let mut any = false;
        for e in EXERCISES {
            match self.reset(e) {
                Ok(Some(done)) => {
                    println!("{done}");
                    any = true;
                }
                Ok(None) => {}
                Err(message) => {
                    eprintln!("error: {message}");
                    all_ok = false;
                }
            }
        }
        if !any && all_ok {
            println!("No exercise is started: every file holds the reference code.");
        }
        Ok(all_ok)
    }

    fn verify(&self, chosen: Vec<&'static Exercise>) -> Outcome {
        println!(
            "Verifying {} exercise(s). This rewrites source files while it runs; if it is \
             interrupted, run: cargo run -q -p exercise -- reset --all",
            chosen.len()
        );
        let mut rows = Vec::new();
        for (i, e) in chosen.iter().enumerate() {
            println!(
                "\n[{}/{}] {} ({})",
                i + 1,
                chosen.len(),
                e.name,
                e.test_command()
            );
            let mut row = Row::new(e.name);
            if panic::catch_unwind(AssertUnwindSafe(|| self.verify_one(e, &mut row))).is_err() {
                // The guard inside verify_one has put the file back while unwinding.
                row.problem("the verifier panicked (see above)");
            }
            rows.push(row);
        }
        println!();
        println!(
            "{:<16}{:<22}{:<22}{:<14}RESULT",
            "EXERCISE", "REFERENCE", "STARTER", "RESET"
        );
        for row in &rows {
            println!(
                "{:<16}{:<22}{:<22}{:<14}{}",
                row.name,
                row.reference,
                row.starter,
                row.reset,
                if row.problems.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                }
            );
        }
        let failed: Vec<&Row> = rows.iter().filter(|r| !r.problems.is_empty()).collect();
        for row in &failed {
            for problem in &row.problems {
                println!("{}: {problem}", row.name);
            }
        }
        println!(
            "{} passed, {} failed",
            rows.len() - failed.len(),
            failed.len()
        );
        Ok(failed.is_empty())
    }

    fn verify_one(&self, e: &Exercise, row: &mut Row) {
        let path = self.path(e);
        let test_file = self.root.join("tests/tests").join(format!("{}.rs", e.test));
        if !test_file.exists() {
            row.problem(&format!(
                "its test file {} does not exist",
                self.show(&test_file)
            ));
            return;
        }
        let original = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) => {
                row.problem(&format!("cannot read {}: {err}", e.file));
                return;
            }
        };
        match self.status(e) {
            Ok(Status::Reference) => {}
            Ok(Status::Started { .. }) => {
                row.problem(&format!(
                    "it is started; reset it first (cargo run -q -p exercise -- reset {})",
                    e.name
                ));
                return;
            }
            Err(message) => {
                row.problem(&message);
                return;
            }
        }
        let _guard = Restore {
            path: path.clone(),
            original: original.clone(),
            backup: self.backup(e),
        };
        let logs = self.state_dir().join("verify");

        // 1. The reference code passes.
        print!("  reference code: ");
        match run::tests(&self.root, e, false) {
            Ok(run) => {
                let log = run.save(&logs, e.name, "reference");
                println!("{} ({:.1}s)", run.verdict, run.seconds);
                row.reference = run.verdict.to_string();
                let problem = match run.verdict {
                    Verdict::Passed { .. } => None,
                    Verdict::NoTests => Some(no_test(e)),
                    _ => Some("the reference code fails its tests".to_string()),
                };
                if let Some(problem) = problem {
                    row.problem(&format!("{problem}; log: {log}"));
                    run.print_tail();
                }
            }
            Err(message) => row.problem(&message),
        }

        // 2. The started exercise builds and fails.
        print!("  started (todo!): ");
        match self.start(e).and_then(|_| run::tests(&self.root, e, false)) {
            Ok(run) => {
                let log = run.save(&logs, e.name, "starter");
                println!("{} ({:.1}s)", run.verdict, run.seconds);
                row.starter = run.verdict.to_string();
                let problem = match run.verdict {
                    Verdict::Failed { .. } | Verdict::Crashed => None,
                    Verdict::NoTests => Some(no_test(e)),
                    Verdict::Passed { .. } => Some(
                        "the tests still pass with the todo!() in place: they do not exercise \
                         this region"
                            .to_string(),
                    ),
                    Verdict::DidNotBuild => Some(
                        "the started exercise does not build: the region must compile when \
                         it is only a todo!()"
                            .to_string(),
                    ),
                };
                if let Some(problem) = problem {
                    row.problem(&format!("{problem}; log: {log}"));
                    run.print_tail();
                }
            }
            Err(message) => {
                println!("error");
                row.problem(&message);
            }
        }

        // 3. Reset gives back the same bytes.
        print!("  reset: ");
        let reset = self.reset(e);
        let now = fs::read(&path).unwrap_or_default();
        if let Err(message) = reset {
            row.problem(&message);
        }
        if now == original {
            println!("byte-identical");
            row.reset = "identical".into();
        } else {
            println!("DIFFERENT");
            row.reset = "different".into();
            row.problem(&format!("after reset, {} differs from before", e.file));
        }
    }
}

fn no_test(e: &Exercise) -> String {
    format!(
        "no test ran: `{}` matches no test in tests/tests/{}.rs",
        e.test_command(),
        e.test
    )
}

/// One line of verify's table.
struct Row {
    name: &'static str,
    reference: String,
    starter: String,
    reset: String,
    problems: Vec<String>,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row {
            name,
            reference: "-".into(),
            starter: "-".into(),
            reset: "-".into(),
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, text: &str) {
        self.problems.push(text.to_string());
    }
}

/// Puts a file back as it was, whatever happens (error, early return, panic), and drops
/// the exercise's backup with it.
struct Restore {
    path: PathBuf,
    original: Vec<u8>,
    backup: PathBuf,
}

impl Drop for Restore {
    fn drop(&mut self) {
        if fs::read(&self.path).ok().as_ref() != Some(&self.original) {
            match fs::write(&self.path, &self.original) {
                Ok(()) => eprintln!("(restored {} to the reference code)", self.path.display()),
                Err(err) => eprintln!(
                    "error: could not restore {}: {err}. Run: git checkout -- {}",
                    self.path.display(),
                    self.path.display()
                ),
            }
        }
        let _ = fs::remove_file(&self.backup);
    }
}
