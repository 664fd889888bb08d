//! Running an exercise's tests with cargo, and reading what happened.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use crate::registry::Exercise;

/// What a test run says about the code.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tests ran and all passed.
    Passed { tests: usize },
    /// Tests ran and some failed.
    Failed { failed: usize, tests: usize },
    /// cargo failed before any test ran: the code (or the test) does not compile.
    DidNotBuild,
    /// cargo succeeded but ran no test: the filter matches nothing.
    NoTests,
    /// The test binary stopped before printing its summary (killed, aborted).
    Crashed,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Passed { tests } => write!(f, "passes ({})", tests_word(*tests)),
            Verdict::Failed { failed, tests } => write!(f, "fails ({failed} of {tests})"),
            Verdict::DidNotBuild => write!(f, "does not build"),
            Verdict::NoTests => write!(f, "no test ran"),
            Verdict::Crashed => write!(f, "test run crashed"),
        }
    }
}

/// "1 test", "3 tests".
pub fn tests_word(n: usize) -> String {
    if n == 1 {
        "1 test".into()
    } else {
        format!("{n} tests")
    }
}

pub struct Run {
    pub verdict: Verdict,
    pub output: String,
    pub seconds: f64,
}

/// Runs `cargo test ...` for `e` in `root`. With `echo`, cargo's output is passed through
/// as it comes; without, it is only collected.
pub fn tests(root: &Path, e: &Exercise, echo: bool) -> Result<Run, String> {
    let _ = io::stdout().flush();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let started = Instant::now();
    let mut child = Command::new(cargo)
        .args(e.test_args())
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `{}`: {err}", e.test_command()))?;
    let collected = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tee(s, io::stdout(), echo, &collected)),
        child
            .stderr
            .take()
            .map(|s| tee(s, io::stderr(), echo, &collected)),
    ];
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .map_err(|err| format!("`{}` did not finish: {err}", e.test_command()))?;
    let output =
        String::from_utf8_lossy(&collected.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    Ok(Run {
        verdict: verdict(status.success(), &output),
        output,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Copies `from` into `collected` (and to `to` if `echo`) on a thread of its own.
fn tee(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
    echo: bool,
    collected: &Arc<Mutex<Vec<u8>>>,
) -> thread::JoinHandle<()> {
    let collected = Arc::clone(collected);
    thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if echo {
                        let _ = to.write_all(&buf[..n]);
                        let _ = to.flush();
                    }
                    collected
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .extend_from_slice(&buf[..n]);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    })
}

/// Reads libtest's `test result: ok. 3 passed; 0 failed; ...` lines.
pub fn verdict(success: bool, output: &str) -> Verdict {
    let (mut passed, mut failed, mut results) = (0, 0, 0);
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            continue;
        };
        results += 1;
        for piece in rest.split([';', '.']) {
            let mut words = piece.split_whitespace();
            if let (Some(n), Some(kind)) = (words.next(), words.next()) {
                match (n.parse::<usize>(), kind) {
                    (Ok(n), "passed") => passed += n,
                    (Ok(n), "failed") => failed += n,
                    _ => {}
                }
            }
        }
    }
    match (success, results) {
        (false, 0) if output.contains("could not compile") => Verdict::DidNotBuild,
        (false, 0) => Verdict::Crashed,
        (false, _) => Verdict::Failed {
            failed,
            tests: passed + failed,
        },
        (true, _) if passed == 0 => Verdict::NoTests,
        (true, _) => Verdict::Passed { tests: passed },
    }
}

impl Run {
    /// Writes the output to `dir/<name>.<phase>.log`; returns the path for the report.
    pub fn save(&self, dir: &Path, name: &str, phase: &str) -> String {
        let path = dir.join(format!("{name}.{phase}.log"));
        match fs::create_dir_all(dir).and_then(|()| fs::write(&path, &self.output)) {
            Ok(()) => path.display().to_string(),
            Err(err) => format!("(not saved: {err})"),
        }
    }

    /// The last lines of the output, for a run that went wrong.
    pub fn print_tail(&self) {
        let lines: Vec<&str> = self.output.lines().collect();
        let from = lines.len().saturating_sub(40);
        println!(
            "  --- last {} lines of cargo's output ---",
            lines.len() - from
        );
        for line in &lines[from..] {
            println!("  | {line}");
        }
        println!("  ---");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libtest_summaries() {
        let ok = "running 3 tests\ntest a ... ok\n\n\
                  test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; \
                  2 filtered out; finished in 1.52s\n";
        assert_eq!(verdict(true, ok), Verdict::Passed { tests: 3 });
        let bad = "test result: FAILED. 1 passed; 2 failed; 0 ignored; 0 measured; \
                   0 filtered out; finished in 0.30s\n";
        assert_eq!(
            verdict(false, bad),
            Verdict::Failed {
                failed: 2,
                tests: 3
            }
        );
        let none = "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; \
                    5 filtered out; finished in 0.00s\n";
        assert_eq!(verdict(true, none), Verdict::NoTests);
        let build = "error[E0308]: mismatched types\nerror: could not compile `shared`\n";
        assert_eq!(verdict(false, build), Verdict::DidNotBuild);
        let killed = "running 3 tests\nerror: test failed, to rerun pass `--test x`\n";
        assert_eq!(verdict(false, killed), Verdict::Crashed);
    }
}
