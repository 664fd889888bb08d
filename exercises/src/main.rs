//! The classroom exercise tool: blank a piece of the real code, let the learner rewrite
//! it, check it with the chapter's tests, give hints one at a time, and put the
//! reference back.
//!
//! `cargo run -q -p exercise -- list | start NAME | check NAME | hint NAME | reset NAME
//! | verify`. The exercises are the table in `registry.rs`; their wrong answers, which
//! `verify` proves the tests reject, are in `exercises/wrong/`.

#[macro_use]
mod out;
mod check;
mod region;
mod registry;
mod report;
mod run;
mod snapshot;
mod verify;
mod workspace;
mod wrong;

use std::process::ExitCode;

use check::Verdict;
use registry::{Exercise, EXERCISES};
use workspace::{Status, Workspace};

const USAGE: &str = "\
The exercises of Cluster from Scratch: rewrite a piece of the real code, check it with
the chapter's tests.

usage: cargo run -q -p exercise -- COMMAND

  list              every exercise, its chapter, and whether you have started it
  start NAME        replace the reference code of NAME with a todo!() for you to fill in
  check NAME        build your code and run its tests: which fail, and why
  check NAME -v     the same, with everything cargo and the tests print (--verbose)
  hint NAME         the next hint for NAME, one level at a time (hint NAME 2: level 2)
  reset NAME        put the reference code back (your version is kept in target/exercises/)
  reset --all       the same for every started exercise
  verify [NAME...]  for teachers and CI: prove the reference passes, the todo!() fails,
                    every wrong answer in exercises/wrong/ is caught, and reset is exact
                    (--steps: every build and test command, with its time; --jobs N:
                    N test runs side by side, default twice the CPUs, at most 8)
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    List,
    Start(&'static Exercise),
    Check {
        e: &'static Exercise,
        verbose: bool,
    },
    Hint {
        e: &'static Exercise,
        level: Option<usize>,
    },
    Reset(&'static Exercise),
    ResetAll,
    Verify {
        chosen: Vec<&'static Exercise>,
        steps: bool,
        /// How many test runs go side by side; `None`: [`verify::default_jobs`].
        jobs: Option<usize>,
    },
}

impl std::fmt::Debug for Exercise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq for Exercise {
    fn eq(&self, other: &Exercise) -> bool {
        self.name == other.name
    }
}

impl Eq for Exercise {}

/// Reads the command line; an error is a sentence saying what is wrong with it.
fn parse(words: &[&str]) -> Result<Command, String> {
    let exercise = |command: &str, name: Option<&&str>| -> Result<&'static Exercise, String> {
        let Some(name) = name else {
            return Err(format!(
                "`{command}` needs the name of an exercise, e.g. `{command} {}`. \
                 The exercises: {}.",
                EXERCISES[0].name,
                registry::names()
            ));
        };
        registry::find(name).ok_or_else(|| {
            format!(
                "there is no exercise called '{name}'. The exercises: {}.",
                registry::names()
            )
        })
    };
    let too_many = |command: &str, extra: &[&str]| {
        format!(
            "`{command}` does not take '{}'. See `cargo run -q -p exercise -- help`.",
            extra.join(" ")
        )
    };
    match words {
        [] | ["help" | "--help" | "-h"] => Ok(Command::Help),
        ["list"] => Ok(Command::List),
        ["start", rest @ ..] | ["reset", rest @ ..] if rest.len() > 1 => {
            Err(too_many(words[0], &rest[1..]))
        }
        ["start", rest @ ..] => exercise("start", rest.first()).map(Command::Start),
        ["reset", "--all"] => Ok(Command::ResetAll),
        ["reset", rest @ ..] => exercise("reset", rest.first()).map(Command::Reset),
        ["check", rest @ ..] => {
            let verbose = rest.iter().any(|w| matches!(*w, "-v" | "--verbose"));
            let names: Vec<&&str> = rest
                .iter()
                .filter(|w| !matches!(**w, "-v" | "--verbose"))
                .collect();
            match names.as_slice() {
                [_, extra @ ..] if !extra.is_empty() => Err(too_many(
                    "check",
                    &extra.iter().map(|w| **w).collect::<Vec<_>>(),
                )),
                _ => {
                    exercise("check", names.first().copied()).map(|e| Command::Check { e, verbose })
                }
            }
        }
        ["hint", rest @ ..] => {
            let e = exercise("hint", rest.first())?;
            match rest.get(1..).unwrap_or_default() {
                [] => Ok(Command::Hint { e, level: None }),
                [level] => match level.parse::<usize>() {
                    Ok(n) if (1..=e.hints.len()).contains(&n) => {
                        Ok(Command::Hint { e, level: Some(n) })
                    }
                    _ => Err(format!(
                        "{} has hints 1 to {}, not '{level}'",
                        e.name,
                        e.hints.len()
                    )),
                },
                [_, extra @ ..] => Err(too_many("hint", extra)),
            }
        }
        ["verify", rest @ ..] => {
            let steps = rest.contains(&"--steps");
            let mut jobs = None;
            let mut names: Vec<&str> = Vec::new();
            let mut words = rest.iter().copied().filter(|w| *w != "--steps");
            while let Some(word) = words.next() {
                if word != "--jobs" {
                    names.push(word);
                    continue;
                }
                match words.next().map(str::parse::<usize>) {
                    Some(Ok(n)) if n > 0 => jobs = Some(n),
                    _ => return Err("`--jobs` takes a number above 0, e.g. `--jobs 4`".into()),
                }
            }
            let chosen = match names.is_empty() {
                true => EXERCISES.iter().collect(),
                false => names
                    .iter()
                    .map(|name| exercise("verify", Some(name)))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            Ok(Command::Verify {
                chosen,
                steps,
                jobs,
            })
        }
        [other, ..] => Err(format!(
            "there is no command '{other}'. The commands: list, start, check, hint, reset, \
             verify, help."
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    let command = match parse(&words) {
        Ok(command) => command,
        Err(message) => {
            tell!("error: {message}");
            tell!("usage: cargo run -q -p exercise -- list | start NAME | check NAME | hint NAME | reset NAME | verify");
            return ExitCode::from(2);
        }
    };
    let ws = Workspace::new();
    let outcome = match command {
        Command::Help => {
            out::stdout(USAGE);
            Ok(true)
        }
        Command::List => list(&ws),
        Command::Start(e) => start(&ws, e),
        Command::Check { e, verbose } => {
            run::on_interrupt_stop();
            check(&ws, e, verbose)
        }
        Command::Hint { e, level } => hint(&ws, e, level),
        Command::Reset(e) => reset(&ws, e),
        Command::ResetAll => reset_all(&ws),
        Command::Verify {
            chosen,
            steps,
            jobs,
        } => {
            run::on_interrupt_stop();
            let jobs = jobs.unwrap_or_else(verify::default_jobs);
            Ok(verify::verify(&ws, &chosen, steps, jobs))
        }
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            tell!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// How a command went: `Ok(true)` success, `Ok(false)` a clear "no" already printed,
/// `Err` a problem to print.
type Done = Result<bool, String>;

fn list(ws: &Workspace) -> Done {
    let mut text = format!(
        "{:<15} {:<22} {:<10} WHAT YOU WRITE\n",
        "EXERCISE", "CHAPTER", "STATUS"
    );
    let mut problems = Vec::new();
    for e in EXERCISES {
        let status = match ws.status(e) {
            Ok(Status::Reference) => "reference",
            Ok(Status::Started) => "started",
            Err(message) => {
                problems.push(message);
                "broken"
            }
        };
        text += &format!(
            "{:<15} {:<22} {:<10} {}\n",
            e.name, e.chapter, status, e.about
        );
    }
    text += "\nStart one with `cargo run -q -p exercise -- start NAME`; `hint NAME` helps, \
             `check NAME` judges, `reset NAME` puts the reference code back.\n";
    out::stdout(&text);
    for problem in &problems {
        tell!("error: {problem}");
    }
    Ok(problems.is_empty())
}

fn start(ws: &Workspace, e: &Exercise) -> Done {
    let line = ws.start(e)?;
    ws.forget_hints(e);
    let commands = e.commands().join("\n                ");
    say!(
        "Started {name}: {about}.\n\
         The reference code is saved in {backup}; `git diff` shows what was taken out.\n\n\
         1. Write your code in {file}, line {line} ({function}), in place of the todo!().\n\
         2. Check it:     cargo run -q -p exercise -- check {name}\n\
         \x20  which runs:  {commands}\n\
         3. Stuck?        cargo run -q -p exercise -- hint {name}   ({hints} hints, one at a time)\n\
         4. Start over:   cargo run -q -p exercise -- reset {name}",
        name = e.name,
        about = e.about,
        backup = ws.show(&ws.backup(e)),
        file = e.file,
        function = e.function,
        hints = e.hints.len(),
    );
    Ok(true)
}

fn hint(ws: &Workspace, e: &Exercise, level: Option<usize>) -> Done {
    let count = e.hints.len();
    let level = level.unwrap_or_else(|| (ws.hint_level(e) + 1).min(count));
    ws.remember_hint(e, level);
    say!(
        "Hint {level} of {count} for {} ({} in {}):\n",
        e.name,
        e.function,
        e.file
    );
    out::stdout(&out::wrap(e.hints[level - 1], "  ", 90));
    say!();
    if level < count {
        say!(
            "Run `cargo run -q -p exercise -- hint {}` again for hint {} of {count}.",
            e.name,
            level + 1
        );
    } else {
        say!(
            "That is the last hint. `hint {} 1` shows the first again; `git diff` and \
             `reset {}` show the reference itself.",
            e.name,
            e.name
        );
    }
    Ok(true)
}

fn reset(ws: &Workspace, e: &Exercise) -> Done {
    ws.forget_hints(e);
    match ws.reset(e)? {
        Some(done) => say!("{done}"),
        None => say!(
            "{} is not started: {} already holds the reference code.",
            e.name,
            e.file
        ),
    }
    Ok(true)
}

fn reset_all(ws: &Workspace) -> Done {
    let mut all_ok = true;
    let mut any = false;
    for e in EXERCISES {
        ws.forget_hints(e);
        match ws.reset(e) {
            Ok(Some(done)) => {
                say!("{done}");
                any = true;
            }
            Ok(None) => {}
            Err(message) => {
                tell!("error: {message}");
                all_ok = false;
            }
        }
    }
    if !any && all_ok {
        say!("No exercise is started: every file holds the reference code.");
    }
    Ok(all_ok)
}

/// How many lines of an assertion message `check` shows (`--verbose` shows all).
const MESSAGE_LINES: usize = 12;

fn check(ws: &Workspace, e: &Exercise, verbose: bool) -> Done {
    let source = ws.read(e)?;
    let still_todo = region::is_starter(source.inner(), e.name);
    let lines = region::lines(&source.region, source.inner());
    say!(
        "Checking {} ({} in {}): building, then running {}...",
        e.name,
        e.function,
        e.file,
        match e.tests.len() {
            1 => "its tests".to_string(),
            n => format!("{n} test commands"),
        }
    );
    let (build, ran) = check::all(&ws.root, e, verbose, false)?;
    let verdict = check::verdict(&build, &ran);
    if verbose {
        say!();
    }

    // Warnings in the learner's own lines matter; the rest is noise.
    let mine = report::warnings_in(&build.diagnostics, e.file, &lines);
    if !verbose && !mine.is_empty() {
        say!("\nThe compiler warns about your code:\n");
        for warning in mine.iter().take(3) {
            say!("{}\n", warning.text);
        }
    }
    if verdict == Verdict::DidNotBuild && !verbose {
        match build.first_error() {
            Some((first, more)) => {
                say!("\nYour code does not build. The first error:\n");
                say!("{}\n", first.text);
                if more > 0 {
                    say!("(and {more} more; fixing the first often fixes the others)");
                }
            }
            None => {
                say!("\nThe build failed. What cargo said:\n");
                say!("{}", build.stderr.trim_end());
            }
        }
    }
    for r in &ran {
        let mut line = format!(
            "  ran `{}`: {} passed, {} failed ({:.1}s)",
            r.command,
            r.tests.passed(),
            r.tests.failed(),
            r.output.seconds
        );
        if let Some(trouble) = r.trouble() {
            line += &format!("; {trouble}");
        }
        say!("{line}");
    }
    if !verbose {
        for r in &ran {
            for failure in &r.tests.failures {
                say!("\nFAILED {}::{}", r.label, failure.name);
                if let Some(at) = &failure.location {
                    say!("  at {at}");
                }
                for text in failure.message.iter().take(MESSAGE_LINES) {
                    say!("  | {text}");
                }
                if failure.message.len() > MESSAGE_LINES {
                    say!(
                        "  | ... ({} more lines: check {} --verbose)",
                        failure.message.len() - MESSAGE_LINES,
                        e.name
                    );
                }
            }
        }
    }
    say!();
    let place = format!("{} ({})", e.file, e.function);
    match verdict {
        Verdict::Passed { tests } => {
            say!("{}: passed ({}).", e.name, check::tests_word(tests));
            if ws.status(e)? == Status::Reference {
                say!("(This is the reference code: `start {}` first.)", e.name);
            }
            return Ok(true);
        }
        Verdict::Interrupted => {
            say!("{}: interrupted.", e.name);
            return Ok(false);
        }
        Verdict::NoTests => {
            return Err(format!(
                "{}: no test ran: the exercise's test commands match no test. \
                 The exercise table is wrong; please report it.",
                e.name
            ))
        }
        Verdict::DidNotBuild => say!(
            "{}: not yet: the code does not build. Fix the first error, in {place}, and \
             check again.",
            e.name
        ),
        Verdict::Failed { failed, tests } => {
            say!("{}: not yet: {failed} of {tests} tests failed.", e.name);
            if still_todo {
                say!("The todo!() is still in {place}: that is where your code goes.");
            } else {
                say!("Read the first failure above, change {place}, and check again.");
            }
        }
    }
    say!(
        "Stuck? `cargo run -q -p exercise -- hint {}`. Everything cargo printed: \
         `check {} --verbose`.",
        e.name,
        e.name
    );
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Result<Command, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        parse(&words)
    }

    fn ex(name: &str) -> &'static Exercise {
        registry::find(name).unwrap()
    }

    #[test]
    fn reads_every_command() {
        assert_eq!(parsed(""), Ok(Command::Help));
        assert_eq!(parsed("list"), Ok(Command::List));
        assert_eq!(
            parsed("start ch01-spawn"),
            Ok(Command::Start(ex("ch01-spawn")))
        );
        assert_eq!(
            parsed("check ch04-flush --verbose"),
            Ok(Command::Check {
                e: ex("ch04-flush"),
                verbose: true
            })
        );
        assert_eq!(
            parsed("check -v ch04-flush"),
            Ok(Command::Check {
                e: ex("ch04-flush"),
                verbose: true
            })
        );
        assert_eq!(
            parsed("hint ch04-flush"),
            Ok(Command::Hint {
                e: ex("ch04-flush"),
                level: None
            })
        );
        assert_eq!(
            parsed("hint ch04-flush 2"),
            Ok(Command::Hint {
                e: ex("ch04-flush"),
                level: Some(2)
            })
        );
        assert_eq!(parsed("reset --all"), Ok(Command::ResetAll));
        assert_eq!(
            parsed("verify ch01-spawn ch04-limit"),
            Ok(Command::Verify {
                chosen: vec![ex("ch01-spawn"), ex("ch04-limit")],
                steps: false,
                jobs: None
            })
        );
        assert_eq!(
            parsed("verify --steps --jobs 3"),
            Ok(Command::Verify {
                chosen: EXERCISES.iter().collect(),
                steps: true,
                jobs: Some(3)
            })
        );
        assert!(parsed("verify --jobs 0").is_err());
        assert!(parsed("verify --jobs").is_err());
    }

    #[test]
    fn usage_errors_say_what_to_type() {
        for command in ["start", "check", "hint", "reset"] {
            let err = parsed(command).unwrap_err();
            assert!(err.contains("needs the name of an exercise"), "{err}");
            assert!(err.contains("ch01-spawn, ch01-percent"), "{err}");
        }
        let err = parsed("start ch99-nope").unwrap_err();
        assert!(err.contains("no exercise called 'ch99-nope'"), "{err}");
        assert!(parsed("start ch01-spawn extra")
            .unwrap_err()
            .contains("does not take 'extra'"));
        assert!(parsed("hint ch01-spawn 9")
            .unwrap_err()
            .contains("hints 1 to 3"));
        assert!(parsed("hint ch01-spawn x").unwrap_err().contains("not 'x'"));
        assert!(parsed("frobnicate")
            .unwrap_err()
            .contains("no command 'frobnicate'"));
        assert!(parsed("verify ch01-spawn nope")
            .unwrap_err()
            .contains("'nope'"));
    }
}
