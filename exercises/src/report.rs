//! Reading what cargo, rustc and libtest print, to tell a learner the few lines that
//! matter: the first compiler error, the warnings in their own code, which tests failed
//! and the first assertion message of each.

use std::ops::RangeInclusive;

/// One compiler diagnostic, as rustc renders it: the header line and what follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub error: bool,
    pub text: String,
    /// Where it points (`--> file:line:col`): the file and the line.
    pub at: Option<(String, usize)>,
}

/// Splits cargo's stderr into rustc's diagnostics, leaving out cargo's own summary lines
/// (`could not compile`, `generated 3 warnings`).
pub fn diagnostics(stderr: &str) -> Vec<Diagnostic> {
    let mut found: Vec<Diagnostic> = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    let finish = |lines: Vec<&str>, found: &mut Vec<Diagnostic>| {
        let header = lines[0];
        let summary = header.starts_with("error: could not compile")
            || header.starts_with("error: aborting due to")
            || header.starts_with("warning: build failed")
            || (header.starts_with("warning: `") && header.contains(" generated "));
        if summary {
            return;
        }
        let text = lines.join("\n").trim_end().to_string();
        let at = lines.iter().find_map(|l| {
            let place = l.trim_start().strip_prefix("--> ")?;
            let mut parts = place.rsplitn(3, ':');
            let (_col, line, file) = (parts.next()?, parts.next()?, parts.next()?);
            Some((file.to_string(), line.parse().ok()?))
        });
        found.push(Diagnostic {
            error: header.starts_with("error"),
            text,
            at,
        });
    };
    for line in stderr.lines() {
        let starts = ["error:", "error[", "warning:", "warning["]
            .iter()
            .any(|p| line.starts_with(p));
        if starts {
            if let Some(lines) = current.take() {
                finish(lines, &mut found);
            }
            current = Some(vec![line]);
        } else if let Some(lines) = current.as_mut() {
            lines.push(line);
        }
    }
    if let Some(lines) = current {
        finish(lines, &mut found);
    }
    found
}

/// The warnings that point into lines `lines` of `file`: the learner's own code.
pub fn warnings_in<'a>(
    found: &'a [Diagnostic],
    file: &str,
    lines: &RangeInclusive<usize>,
) -> Vec<&'a Diagnostic> {
    found
        .iter()
        .filter(|d| !d.error)
        .filter(|d| matches!(&d.at, Some((f, l)) if f == file && lines.contains(l)))
        .collect()
}

/// A test that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub name: String,
    /// `tests/tests/ch04_proxy.rs:231:5`, where it panicked.
    pub location: Option<String>,
    /// The panic message (the assertion's text), as printed.
    pub message: Vec<String>,
}

/// What one test binary reported.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tests {
    /// Each test that finished, and whether it passed.
    pub results: Vec<(String, bool)>,
    pub failures: Vec<Failure>,
    /// Whether libtest printed its `test result:` line, i.e. ran to the end.
    pub finished: bool,
}

impl Tests {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|(_, ok)| *ok).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Whether `name` ran, and passed.
    pub fn outcome(&self, name: &str) -> Option<bool> {
        self.results
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ok)| *ok)
    }
}

/// Reads libtest's stdout: `test NAME ... ok|FAILED`, the `---- NAME stdout ----`
/// sections, and the `test result:` line.
pub fn tests(stdout: &str) -> Tests {
    let mut report = Tests::default();
    let lines: Vec<&str> = stdout.lines().collect();
    for line in &lines {
        if let Some(rest) = line.strip_prefix("test ") {
            if let Some(name) = rest.strip_suffix(" ... ok") {
                report.results.push((name.to_string(), true));
            } else if let Some(name) = rest.strip_suffix(" ... FAILED") {
                report.results.push((name.to_string(), false));
            }
        }
        if line.starts_with("test result: ") {
            report.finished = true;
        }
    }
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = lines[i]
            .strip_prefix("---- ")
            .and_then(|l| l.strip_suffix(" stdout ----"))
        else {
            i += 1;
            continue;
        };
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && !lines[end].starts_with("---- ") && lines[end] != "failures:" {
            end += 1;
        }
        let (location, message) = panic_in(&lines[start..end], name);
        report.failures.push(Failure {
            name: name.to_string(),
            location,
            message,
        });
        i = end;
    }
    report
}

/// The panic of the test's own thread in a failure section (another thread's, if the
/// test's own is not there): where, and its message.
fn panic_in(section: &[&str], test: &str) -> (Option<String>, Vec<String>) {
    let mut panics: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut i = 0;
    while i < section.len() {
        let Some((thread, location)) = panic_header(section[i]) else {
            i += 1;
            continue;
        };
        let mut message = Vec::new();
        i += 1;
        while i < section.len() {
            let line = section[i];
            if line.starts_with("note: run with `RUST_BACKTRACE")
                || line.starts_with("stack backtrace:")
                || panic_header(line).is_some()
                || is_echoed_output(line)
            {
                break;
            }
            message.push(line.to_string());
            i += 1;
        }
        while message.last().is_some_and(|l| l.trim().is_empty()) {
            message.pop();
        }
        panics.push((thread, location, message));
    }
    let own = panics.iter().position(|(thread, _, _)| thread == test);
    match own.or(if panics.is_empty() { None } else { Some(0) }) {
        Some(at) => {
            let (_, location, message) = panics.swap_remove(at);
            (Some(location), message)
        }
        None => (None, Vec::new()),
    }
}

/// `thread 'NAME' (123) panicked at FILE:LINE:COL:` (the id is newer Rust): the thread's
/// name and the place.
fn panic_header(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("thread '")?;
    let (thread, rest) = rest.split_once('\'')?;
    let (_, place) = rest.split_once("panicked at ")?;
    let place = place.strip_suffix(':').unwrap_or(place);
    Some((thread.to_string(), place.to_string()))
}

/// A line the test harness echoed from a chapter binary: `ch04-proxy[123]| ...` or
/// `ch02-ipc-messaging (worker)[45] stderr| ...`.
fn is_echoed_output(line: &str) -> bool {
    let Some((label, _)) = line.split_once("| ") else {
        return false;
    };
    let label = label.strip_suffix(" stderr").unwrap_or(label);
    !label.starts_with(' ') && label.ends_with(']') && label.contains('[')
}

/// The line cargo prints when a test program itself died (a signal, an abort), e.g.
/// `process didn't exit successfully: ... (signal: 6, SIGABRT: process abort signal)`.
pub fn crash_reason(stderr: &str) -> Option<String> {
    stderr
        .lines()
        .find(|l| l.contains("process didn't exit successfully"))
        .map(|l| l.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: &str = "\
warning: unused import: `IoSlice`
  --> shared/src/channel.rs:15:15
   |
15 | use std::io::{self, IoSlice, IoSliceMut};
   |                     ^^^^^^^
   |
   = note: `#[warn(unused_imports)]` on by default

error[E0308]: mismatched types
   --> shared/src/channel.rs:140:20
    |
140 |         let x: u32 = \"no\";
    |                ---   ^^^^ expected `u32`, found `&str`

warning: unused variable: `fds`
   --> shared/src/channel.rs:141:13
    |
141 |         let fds = 1;
    |             ^^^ help: prefix it with an underscore: `_fds`

error: cannot find value `y` in this scope
   --> shared/src/channel.rs:150:9

warning: `shared` (lib) generated 2 warnings
error: could not compile `shared` (lib) due to 2 previous errors; 2 warnings emitted
";

    #[test]
    fn finds_the_first_error_and_the_warnings_in_a_region() {
        let found = diagnostics(BUILD);
        assert_eq!(found.len(), 4, "{found:#?}");
        let first = found.iter().find(|d| d.error).unwrap();
        assert!(first.text.starts_with("error[E0308]: mismatched types\n"));
        assert!(first.text.ends_with("expected `u32`, found `&str`"));
        assert_eq!(first.at, Some(("shared/src/channel.rs".into(), 140)));
        assert_eq!(found.iter().filter(|d| d.error).count(), 2);
        // The unused import (line 15) is outside the region; the unused variable is in.
        let mine = warnings_in(&found, "shared/src/channel.rs", &(138..=152));
        assert_eq!(mine.len(), 1);
        assert!(mine[0].text.starts_with("warning: unused variable: `fds`"));
        assert!(warnings_in(&found, "shared/src/net.rs", &(138..=152)).is_empty());
    }

    const RUN: &str = "
running 3 tests
test a_passes ... ok
test a_fails ... FAILED
test b_fails ... FAILED

failures:

---- a_fails stdout ----
ch04-proxy[123]| 12:00:00.000 master[123] forked worker 1 (pid 124)
thread '<unnamed>' (77) panicked at tests/tests/x.rs:9:9:
a helper thread gave up
thread 'a_fails' (70) panicked at tests/tests/x.rs:20:5:
assertion `left == right` failed: the answers
  left: 1
 right: 2
note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace
ch04-proxy[123]| 12:00:00.100 master[123] stopping 1 worker

---- b_fails stdout ----
thread 'b_fails' panicked at tests/tests/x.rs:30:5:
no answer

ch04-proxy (worker)[9] stderr| late line


failures:
    a_fails
    b_fails

test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.31s
";

    #[test]
    fn reads_which_tests_failed_and_why() {
        let report = tests(RUN);
        assert!(report.finished);
        assert_eq!((report.passed(), report.failed()), (1, 2));
        assert_eq!(report.outcome("a_passes"), Some(true));
        assert_eq!(report.outcome("b_fails"), Some(false));
        assert_eq!(report.outcome("c"), None);
        assert_eq!(
            report.failures[0],
            Failure {
                name: "a_fails".into(),
                location: Some("tests/tests/x.rs:20:5".into()),
                message: vec![
                    "assertion `left == right` failed: the answers".into(),
                    "  left: 1".into(),
                    " right: 2".into(),
                ],
            }
        );
        assert_eq!(report.failures[1].message, ["no answer"]);
        assert_eq!(
            report.failures[1].location.as_deref(),
            Some("tests/tests/x.rs:30:5")
        );
    }

    #[test]
    fn a_run_that_stopped_has_no_result_line() {
        let report = tests("running 2 tests\ntest a ... ok\n");
        assert!(!report.finished);
        assert_eq!(report.results, [("a".to_string(), true)]);
        let stderr = "error: test failed, to rerun pass `--lib`\n\nCaused by:\n  \
                      process didn't exit successfully: `x` (signal: 6, SIGABRT)\n";
        assert!(crash_reason(stderr).unwrap().contains("SIGABRT"));
    }
}
